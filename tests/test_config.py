"""Recipe validation: every YAML in yamls/ loads; mistakes name the key and what is allowed."""

import glob
import os

import pytest

from mosaicbert.config import load_config
from mosaicbert.validation import matches_type
from mosaicbert.errors import RecipeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "yamls", "mosaicbert-base.yaml")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "yamls", "*.yaml"))))
def test_every_pretraining_recipe_validates(path):
    cfg = load_config(path)
    assert cfg.model["name"] in ("mosaic_bert", "hf_bert")


def test_paper_recipe_values():
    cfg = load_config(BASE)
    assert cfg.max_seq_len == 128 and cfg.global_train_batch_size == 4096
    assert cfg.max_duration.endswith("sp")
    assert int(cfg.max_duration[:-2]) == 70000 * cfg.global_train_batch_size  # the paper's 70k steps
    assert cfg.train_loader["mlm_probability"] == 0.3 and cfg.eval_loader["mlm_probability"] == 0.15
    assert cfg.optimizer == {"name": "decoupled_adamw", "lr": 5.0e-4, "betas": [0.9, 0.98], "eps": 1.0e-6,
                             "weight_decay": 1.0e-5, "fused": True}
    assert cfg.scheduler == {"name": "linear_decay_with_warmup", "t_warmup": "0.06dur", "alpha_f": 0.02}
    assert cfg.precision == "amp_bf16" and cfg.device_train_microbatch_size == 128
    assert load_config(os.path.join(REPO, "yamls", "bert-base.yaml")).train_loader["mlm_probability"] == 0.15


def test_overrides_and_interpolation():
    cfg = load_config(BASE, ["variables.data_local=/data/x", "max_duration=10ba", "optimizer.lr=1e-3"])
    assert cfg.train_loader["local"] == "/data/x" and cfg.eval_loader["local"] == "/data/x"
    assert cfg.max_duration == "10ba" and cfg.optimizer["lr"] == 1e-3


@pytest.mark.parametrize("overrides, message", [
    (["max_duraton=5ba"], "Unknown key 'max_duraton'. Did you mean 'max_duration'?"),
    (["model.name=gpt2"], "Valid model names: hf_bert, mosaic_bert"),
    (["train_loader.name=c4"], "Valid dataloader names: text"),
    (["optimizer.name=sgd"], "Valid optimizer names:"),
    (["optimizer.lr=fast"], "'lr' is 'fast' (str), but it must be float"),
    (["seed=1.5"], "'seed' is 1.5 (float), but it must be int"),
    (["precision=fp64"], "must be one of 'fp32', 'amp_bf16', 'amp_fp16'"),
    (["model.config.hiden_size=8"], "Did you mean 'hidden_size'?"),
    (["train_loader.mlm_prob=0.2"], "Did you mean 'mlm_probability'?"),
    (["optimizer.params=3"], "set by the recipe itself"),
    (["callbacks.speedmonitor={}"], "Valid callback names:"),
    (["scheduler.t_warmpu=1ba"], "Did you mean 't_warmup'?"),
    (["model.config.attention_backend=xformers"], "allowed: auto, flash_attn, flex, sdpa"),
    (["model.config.glu_dropout=both"], "glu_dropout='both' is not 'intermediate'"),
    (["model.config.hidden_size=50"], "must be divisible by num_attention_heads"),
    (["no_equals_sign"], "not of the form key=value"),
    (["train_loader.mlm_probability=1.5"], "mlm_probability=1.5 is outside (0, 1)"),
    (["optimizer.lr=0.0"], "the learning rate must be positive"),
    (["eval_loader.pad_to=shortest"], "is not a padding mode"),
])
def test_mistakes_are_named(overrides, message):
    with pytest.raises(RecipeError) as err:
        load_config(BASE, overrides)
    assert message in str(err.value)


def test_missing_required_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("tokenizer_name: bert-base-uncased\nmodel: {name: mosaic_bert}\ntrain_loader: {name: text, local: x}\n")
    with pytest.raises(RecipeError, match="Missing required key 'max_seq_len'"):
        load_config(str(path))


def test_missing_yaml_file():
    with pytest.raises(RecipeError, match="does not exist"):
        load_config("no/such/recipe.yaml")


def test_type_matching():
    assert matches_type(3, float) and not matches_type(True, int) and not matches_type("3", int)
    assert matches_type([0.9, 0.98], list[float]) and not matches_type([0.9, "a"], list[float])
    assert matches_type(None, int | None) and matches_type("auto", int | str)


def test_pad_vocab_multiple_sets_the_padded_vocabulary(tokenizer):
    from mosaicbert.families import make_config

    assert make_config("mosaic_bert", tokenizer, 128).vocab_size == 30528  # 30522 up to a multiple of 64
    assert make_config("mosaic_bert", tokenizer, 128, {"pad_vocab_multiple": 128}).vocab_size == 30592
