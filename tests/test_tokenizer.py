"""The recipes' tokenizer resolves without the Hugging Face hub."""

import logging

import pytest

from mosaicbert.errors import RecipeError
from mosaicbert.tokenizer import load_tokenizer, offline_bert_uncased_dir


def test_offline_fallback_is_exactly_bert_base_uncased(offline_hub, caplog):
    with caplog.at_level(logging.WARNING, logger="mosaicbert.tokenizer"):
        tokenizer = load_tokenizer("bert-base-uncased")
    assert len(tokenizer) == 30522
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id] == [0, 100, 101, 102, 103]
    assert tokenizer("Hello, World!")["input_ids"] == [101, 7592, 1010, 2088, 999, 102]
    assert tokenizer.name_or_path == "bert-base-uncased"
    assert sum("offline bert-base-uncased files" in r.message for r in caplog.records) == 1


def test_local_directory_works(tmp_path):
    folder = offline_bert_uncased_dir()
    assert folder is not None
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    assert len(load_tokenizer(str(tmp_path))) == 30522


def test_unknown_tokenizer_is_a_clear_error(offline_hub):
    with pytest.raises(RecipeError, match="set tokenizer_name to a local folder"):
        load_tokenizer("someone/not-a-tokenizer")


def test_folder_without_tokenizer_files_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RecipeError, match="could not be loaded"):
        load_tokenizer(str(tmp_path))


def test_a_folder_with_a_vocabulary_that_is_not_one_is_a_clear_error(tmp_path):
    """It loads, but every sentence fails to encode (no [UNK] token): caught when loading, not mid-run."""
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "vocab.txt").write_text("hi\n")
    with pytest.raises(RecipeError, match=r"Tokenizer folder .* could not be loaded \(Exception: WordPiece error: "
                                          r"Missing \[UNK\] token"):
        load_tokenizer(str(tmp_path))


def test_hub_probe_connects_to_the_endpoints_host_and_port(monkeypatch):
    """A mirror such as HF_ENDPOINT=http://host:8080 is probed on its own port, not on 443."""
    import socket

    from mosaicbert.tokenizer import hub_reachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        for endpoint, expected in [(f"http://127.0.0.1:{port}", True), (f"http://127.0.0.1:{port}/", True),
                                   ("http://127.0.0.1:notaport", False), ("", False)]:
            monkeypatch.setenv("HF_ENDPOINT", endpoint)
            hub_reachable.cache_clear()
            assert hub_reachable(timeout=2.0) is expected, endpoint
    finally:
        server.close()
        hub_reachable.cache_clear()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert hub_reachable(timeout=2.0) is False  # nothing listens there any more
    hub_reachable.cache_clear()
