"""Starting weights: names that are neither files nor folders."""

import pytest

from mosaicbert.checkpoints import read_weights
from mosaicbert.errors import RecipeError


def test_hub_name_without_the_hub_is_a_clear_error(offline_hub):
    with pytest.raises(RecipeError, match="hub is not reachable"):
        read_weights("bert-base-uncased")


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        read_weights(str(tmp_path / "ep0-ba10-rank0.pt"))
