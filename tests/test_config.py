"""Recipe validation: every YAML in yamls/ loads; mistakes name the key and what is allowed."""

import glob
import os

import pytest

from mosaicbert.config import load_config
from mosaicbert.validation import matches_type
from mosaicbert.errors import RecipeError
from mosaicbert.training import trainer

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
    assert cfg.precision == "amp_bf16" and cfg.device_train_microbatch_size == 512
    assert load_config(os.path.join(REPO, "yamls", "bert-base.yaml")).train_loader["mlm_probability"] == 0.15


@pytest.mark.parametrize("gpus, expected", [(1, (4096, 512)), (8, (512, 512)), (16, (256, 256)), (64, (64, 64))])
def test_the_recipes_microbatch_caps_each_gpus_share(monkeypatch, gpus, expected):
    """The recipe is sized for 8 GPUs (one microbatch of 512 each); on more, a GPU's share is one microbatch."""
    monkeypatch.setattr(trainer.dist, "get_world_size", lambda: gpus)
    assert trainer.device_batch_sizes(load_config(BASE), "cuda") == expected


def test_a_microbatch_that_does_not_divide_a_gpus_share_is_refused(monkeypatch):
    monkeypatch.setattr(trainer.dist, "get_world_size", lambda: 8)
    cfg = load_config(BASE, ["global_train_batch_size=4000", "device_train_microbatch_size=128"])
    with pytest.raises(RecipeError, match="4000 over 8 device.* is 500 per device, which "
                                          "device_train_microbatch_size=128 does not divide"):
        trainer.device_batch_sizes(cfg, "cuda")


def test_a_recipe_path_that_is_not_a_file_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"Recipe file '.*nope.yaml' does not exist\. Pass a YAML from yamls/"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(RecipeError, match=r"Recipe file '.*' is a folder, not a YAML file\. Pass a YAML"):
        load_config(str(tmp_path))


def test_a_new_variable_used_by_another_override_is_accepted():
    cfg = load_config(BASE, ["variables.root=/data/run", "save_folder=${variables.root}/ckpt"])
    assert cfg.save_folder == "/data/run/ckpt"


def test_an_override_into_a_list_names_the_per_task_keys():
    from mosaicbert.finetune.config import FinetuneConfig

    with pytest.raises(RecipeError, match=r"cannot address into a list by index .* tasks\.<name>\.<key>=..."):
        load_config(os.path.join(REPO, "yamls", "glue", "sentiment.yaml"), ["custom_tasks.0.lr=1e-4"],
                    schema=FinetuneConfig)


def test_overrides_and_interpolation():
    cfg = load_config(BASE, ["variables.data_local=/data/x", "max_duration=10ba", "optimizer.lr=1e-3"])
    assert cfg.train_loader["local"] == "/data/x" and cfg.eval_loader["local"] == "/data/x"
    assert cfg.max_duration == "10ba" and cfg.optimizer["lr"] == 1e-3


@pytest.mark.parametrize("overrides, message", [
    (["max_duraton=5ba"], "Unknown key 'max_duraton'. Did you mean 'max_duration'?"),
    (["model.name=gpt2"], "Valid model names: hf_bert, mosaic_bert"),
    (["train_loader.name=c4"], "Valid dataloader names: text"),
    (["optimizer.name=sgd"], "Valid optimizer names:"),
    (["optimizer.lr=fast"], "Key 'optimizer.lr' is 'fast' (str), but it must be float"),
    (["variables.data_locl=/x"], "sets variables.data_locl, which nothing in"),
    (["variables.data_locl=/x"], "Did you mean 'data_local'?"),
    (["variables.x=/x"], "The recipe's variables: data_local, data_remote."),  # not the x its comment names
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9] must be two numbers in [0, 1)"),
    (["optimizer.betas=[0.9,1.5]"], "optimizer.betas=[0.9, 1.5] must be two numbers in [0, 1)"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1 must not be negative"),
    (["optimizer.name=adamw", "optimizer.eps=-1e-8"], "optimizer.eps=-1e-08 must not be negative"),
    (["seed=1.5"], "'seed' is 1.5 (float), but it must be int"),
    (["precision=fp64"], "must be one of 'fp32', 'amp_bf16', 'amp_fp16'"),
    (["model.config.hiden_size=8"], "Did you mean 'hidden_size'?"),
    (["train_loader.mlm_prob=0.2"], "Did you mean 'mlm_probability'?"),
    (["optimizer.params=3"], "set by the recipe itself"),
    (["callbacks.speedmonitor={}"], "Valid callback names:"),
    (["scheduler.t_warmpu=1ba"], "Did you mean 't_warmup'?"),
    (["model.config.attention_backend=xformers"], "allowed: auto, flash_attn, flex, sdpa, sdpa_packed"),
    (["model.config.glu_dropout=both"], "glu_dropout='both' is not 'intermediate'"),
    (["model.config.hidden_size=50"], "must be divisible by num_attention_heads"),
    (["algorithms={gradient_clipping: {clipping_type: nrom, clipping_threshold: 1.0}}"],
     "algorithms.gradient_clipping.clipping_type='nrom' is not one of norm, value, adaptive"),
    (["algorithms={gradient_clipping: {clipping_type: norm, clipping_threshold: -1}}"],
     "algorithms.gradient_clipping.clipping_threshold=-1 must be a positive number"),
    (["model.config.num_attention_heads=0"], "model.config: num_attention_heads=0 must be a positive integer"),
    (["model.config.pad_vocab_multiple=0"], "model.config: pad_vocab_multiple=0 must be a positive integer"),
    (["model.config.attention_backend=flex", "model.config.attention_probs_dropout_prob=0.1"],
     "'flex' has no attention dropout"),
    (["no_equals_sign"], "not of the form key=value"),
    (["train_loader.mlm_probability=1.5"], "mlm_probability=1.5 is outside (0, 1)"),
    (["optimizer.lr=0.0"], "the learning rate must be positive"),
    (["eval_loader.pad_to=shortest"], "is not a padding mode"),
    # Composer times: named by key, with the accepted forms (Composer itself said only "Invalid time string").
    (["max_duration=banana"], "max_duration='banana' is not a time. Use one of: 10ba (batches), 2ep (epochs), "
                              "1000sp (samples)"),
    (["eval_interval=banana"], "eval_interval='banana' is not a time. Use one of: 10ba (batches), 2ep (epochs), "
                               "1000sp (samples), 100000tok (tokens), 0.5dur"),
    (["save_interval=xyz"], "save_interval='xyz' is not a time"),
    (["console_log_interval=10sp"], "console_log_interval='10sp': the unit 'sp' is not accepted here"),
    (["max_duration=0.5dur"], "max_duration='0.5dur': the unit 'dur' is not accepted here"),
    (["max_duration=1.5ba"], "max_duration='1.5ba': batches, epochs, samples and tokens are whole numbers"),
    (["max_duration=0ba"], "max_duration='0ba' must be more than zero"),
    (["eval_interval=-100ba"], "eval_interval='-100ba' must be zero or more"),
    (["scheduler.t_warmup=abc"], "scheduler.t_warmup='abc' is not a time"),
    (["scheduler.t_max=2dur"], "scheduler.t_max='2dur': a dur value is a fraction of max_duration"),
    (["scheduler.t_warmup=0"], "scheduler.t_warmup=0 needs its unit"),  # Composer parses strings only
    (["scheduler.t_warmup=abc"], "0.5dur (a fraction of max_duration)."),  # no bare integer offered: refused
    (["scheduler.t_warmup=100ba"], "scheduler.t_warmup='100ba' counts batches but scheduler.t_max='1dur' "
                                   "(with max_duration='286720000sp') counts samples"),
    (["scheduler.t_warmup=1000sp", "callbacks.time_budget.train_seconds=60"],
     "scheduler.t_warmup='1000sp' counts samples but scheduler.t_max='1dur' (with callbacks.time_budget"),
    # Composer checks against max_duration when the trainer is built, before the budget sets batches.
    (["max_duration=6400sp", "scheduler.t_warmup=10ba", "callbacks.time_budget.train_seconds=60"],
     "scheduler.t_warmup='10ba' counts batches but scheduler.t_max='1dur' (with max_duration='6400sp')"),
    # Numbers Composer or torch would take and fail on later (or silently misuse).
    (["global_train_batch_size=-3"], "global_train_batch_size=-3 must be a positive integer."),
    (["device_train_microbatch_size=0"], "device_train_microbatch_size=0 must be a positive integer."),
    (["device_eval_batch_size=0"], "device_eval_batch_size=0 must be a positive integer."),
    (["eval_subset_num_batches=0"], "eval_subset_num_batches=0 must be -1 or a positive integer."),
    (["save_num_checkpoints_to_keep=-5"], "must be -1 or a non-negative integer."),
    (["seed=-1"], "seed=-1 must be between 0 and 4294967295."),
    (["dist_timeout=0"], "dist_timeout=0 must be at least 1.0."),
    (["python_log_level=loud"], "python_log_level='loud' is not a log level"),
    # Dataloader values torch or streaming would reject once training starts, and files that cannot be made.
    (["train_loader.prefetch_factor=0"], "train_loader.prefetch_factor=0 must be a positive integer."),
    (["eval_loader.timeout=-1"], "eval_loader.timeout=-1 must be a non-negative integer."),
    (["train_loader.shuffle_algo=banana"], "train_loader.shuffle_algo='banana' is not a streaming shuffle. Use one "
                                           "of naive, py1br, py1e, py1s, py2s"),
    (["train_loader.sampling_method=bad"], "train_loader.sampling_method='bad' is not one of balanced, fixed."),
    (["train_loader.cache_limit=lots"], "train_loader.cache_limit='lots' is not a size."),
    (["train_loader.num_canonical_nodes=0"], "train_loader.num_canonical_nodes=0 must be a positive integer."),
    ([f"loggers.jsonl.path={REPO}/README.md/metrics.jsonl"],
     f"loggers.jsonl.path='{REPO}/README.md/metrics.jsonl' cannot be made: '{REPO}/README.md' is a file"),
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


@pytest.mark.parametrize("text, where", [
    ("tokenizer_name: bert-base-uncased\nmax_seq_len: [128, 256\nmodel: {name: mosaic_bert}\n", "line 3, column 6"),
    ("model:\n  name: mosaic_bert\n config: {}\n", "line 3, column 2"),
    ("model:\n\tname: mosaic_bert\n", "line 2, column 1"),
])
def test_yaml_syntax_errors_name_the_file_line_and_column(tmp_path, text, where):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_config(str(path))
    message = str(err.value)
    assert f"Recipe {str(path)!r} is not valid YAML: {where}" in message
    assert "\n" not in message  # one paragraph, not PyYAML's multi-line report


def test_an_override_that_is_not_yaml_is_named():
    with pytest.raises(RecipeError, match=r"Override 'callbacks=\{speed_monitor: \{\}' is not valid YAML after the "
                                          r"'='"):
        load_config(BASE, ["callbacks={speed_monitor: {}"])
    # An interpolation left open is not a YAML error but OmegaConf's own; it is named too (not a traceback).
    with pytest.raises(RecipeError, match=r"Override 'max_duration=\$\{x' could not be read: .*must be closed"):
        load_config(BASE, ["max_duration=${x"])
    # Overrides still apply in order, the last one winning, and a later one may address into an earlier one.
    assert load_config(BASE, ["max_duration=10ba", "max_duration=20ba"]).max_duration == "20ba"
    assert load_config(BASE, ["optimizer.betas=[0.9,0.99]", "optimizer.betas.1=0.95"]).optimizer["betas"] == [0.9, 0.95]


@pytest.mark.parametrize("text", ["10ba", "2ep", "1000sp", "100tok", "0.5dur", "1e3sp", "5 ba", "10BA", "0ba", "-3ba",
                                  "banana", "1.5ba", "ba", "3e", "2ep ", "1h0m0s", "7iter", "nandur", "infba", 4, 0])
def test_time_strings_parse_as_composer_parses_them(text):
    """The recipe check reads time strings without Composer: it must accept exactly what Composer accepts."""
    from composer.core import Time, TimeUnit

    from mosaicbert.validation import parse_time

    try:
        expected = Time.from_input(text, TimeUnit.EPOCH)
        expected = (expected.value, expected.unit.value)
    except (ValueError, TypeError, OverflowError):
        expected = None
    try:
        got = parse_time(text)
    except ValueError:
        got = None
    if expected is not None and expected[1] == "sec":
        assert got is None  # Composer's wall-clock form (1h0m0s) is no recipe unit
    elif expected is not None and expected[0] != expected[0]:  # nan: Composer takes it, the recipe does not
        assert got is None
    else:
        assert got == expected
