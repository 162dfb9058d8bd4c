"""Starting weights: names that are neither files nor folders."""

import re

import pytest

from mosaicbert.checkpoints import read_weights
from mosaicbert.errors import RecipeError


def test_hub_name_without_the_hub_is_a_clear_error(offline_hub):
    with pytest.raises(RecipeError, match="hub is not reachable"):
        read_weights("bert-base-uncased")


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        read_weights(str(tmp_path / "ep0-ba10-rank0.pt"))


@pytest.mark.parametrize("uri, cause", [
    ("http://127.0.0.1:9/run/latest-rank0.pt", "ConnectionError"),  # nothing listens on port 9 (discard)
    ("foo://bucket/run/latest-rank0.pt", "NotImplementedError"),  # no object store of that scheme
])
def test_failed_download_is_a_clear_error_naming_the_uri(uri, cause, monkeypatch):
    """read_weights is the one reader of starting weights (fine-tuning, export): a download that fails is
    one RecipeError with the URI, the cause and what to give instead."""
    for name in ("NO_PROXY", "no_proxy"):  # a proxy in the environment would turn the refusal into ProxyError
        monkeypatch.setenv(name, "*")
    with pytest.raises(RecipeError, match=f"Could not read weights from {re.escape(repr(uri))} \\({cause}.*"
                                          "object-store URI"):
        read_weights(uri)


def _mosaic_mlm(**config):
    from mosaicbert.model.modeling_mosaic_bert import MosaicBertConfig, MosaicBertForMaskedLM

    values = dict(vocab_size=96, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                  pad_vocab_multiple=1)
    return MosaicBertForMaskedLM(MosaicBertConfig(**{**values, **config}))


def test_weights_of_another_size_are_refused_naming_the_weight(tmp_path):
    from mosaicbert.checkpoints import load_weights

    _mosaic_mlm().save_pretrained(tmp_path / "small")
    with pytest.raises(RecipeError, match=r"has shape \(\d+, 32\), the model expects \(\d+, 64\); model.config "
                                          "does not match the checkpoint"):
        load_weights(_mosaic_mlm(hidden_size=64, num_attention_heads=4), str(tmp_path / "small"))


def test_a_smaller_vocabulary_fills_the_first_rows_and_keeps_the_rest(tmp_path):
    import torch

    from mosaicbert.checkpoints import load_weights

    torch.manual_seed(0)
    small = _mosaic_mlm()
    small.save_pretrained(tmp_path / "small")
    big = _mosaic_mlm(vocab_size=128)
    fresh_rows = big.get_input_embeddings().weight[96:].detach().clone()
    load_weights(big, str(tmp_path / "small"))
    embeddings = big.get_input_embeddings().weight.detach()
    torch.testing.assert_close(embeddings[:96], small.get_input_embeddings().weight.detach())
    torch.testing.assert_close(embeddings[96:], fresh_rows)
