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
