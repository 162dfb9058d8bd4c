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
