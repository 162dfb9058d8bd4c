"""The recipe schemas, and loading a YAML recipe plus ``key=value`` overrides, validated before any work.

A recipe is a dataclass schema (:class:`PretrainConfig`, or the fine-tuning one) whose fields are the
top-level YAML keys. Sections that name a builder (``model``, ``train_loader``, ``optimizer``, ...) are
checked against that builder's signature through :mod:`mosaicbert.registry`. Every problem is a
:class:`RecipeError` naming the key, what was found and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal, Optional, Union

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import (
    components,  # noqa: F401  (fills the registry tables that validate() checks against)
    registry,
)
from .errors import RecipeError
from .validation import check_keys, help_text, schema_fields


# ----------------------------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class TrainerConfig:
    """Keys shared by pretraining and fine-tuning: how Composer runs, saves and logs."""

    variables: dict = dataclasses.field(default_factory=dict, metadata=help_text(
        "Free-form values for ${variables.name} interpolation elsewhere in the YAML; not read otherwise."))
    run_name: Optional[str] = dataclasses.field(default=None, metadata=help_text(
        "Name of the run (checkpoint and logger names); default: a generated name."))
    seed: int = dataclasses.field(default=17, metadata=help_text("Seed for weights, dropout and data order."))
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = dataclasses.field(default="amp_bf16", metadata=help_text(
        "Numerics: amp_bf16 on GPUs; fp32 on CPU (Composer allows only fp32 there)."))
    device: Optional[Literal["cpu", "gpu"]] = dataclasses.field(default=None, metadata=help_text(
        "cpu or gpu; default: gpu when CUDA is available."))
    max_duration: Union[str, int] = dataclasses.field(default="1ep", metadata=help_text(
        "Training length: '286720000sp' (samples), '70000ba' (batches), '1ep', or an int (epochs)."))
    eval_interval: Union[str, int] = dataclasses.field(default="1ep", metadata=help_text(
        "How often to evaluate ('2000ba', '1ep'); set eval_loader: null for no evaluation."))
    eval_subset_num_batches: int = dataclasses.field(default=-1, metadata=help_text(
        "Evaluate on at most this many batches (-1: the whole eval set)."))
    global_train_batch_size: int = dataclasses.field(default=256, metadata=help_text(
        "Samples per optimizer step over all GPUs; must divide by world size x microbatch."))
    device_train_microbatch_size: Union[int, Literal["auto"]] = dataclasses.field(default="auto", metadata=help_text(
        "Samples per forward/backward on one device; 'auto' lets Composer find the largest that fits (GPU)."))
    device_eval_batch_size: int = dataclasses.field(default=64, metadata=help_text("Eval samples per device."))
    optimizer: dict = dataclasses.field(default_factory=lambda: {"name": "decoupled_adamw"}, metadata=help_text(
        "Optimizer: name plus its arguments (see registry)."))
    scheduler: dict = dataclasses.field(default_factory=lambda: {"name": "constant_with_warmup", "t_warmup": "0ba"},
                                        metadata=help_text("LR schedule: name plus its arguments."))
    algorithms: dict = dataclasses.field(default_factory=dict, metadata=help_text(
        "Composer algorithms by name, e.g. {gradient_clipping: {clipping_type: norm, clipping_threshold: 1.0}}."))
    callbacks: dict = dataclasses.field(default_factory=dict, metadata=help_text(
        "Callbacks by name, e.g. {speed_monitor: {window_size: 100}, lr_monitor: {}}."))
    loggers: dict = dataclasses.field(default_factory=dict, metadata=help_text(
        "Loggers by name: wandb, jsonl (metrics file for plots), file."))
    save_folder: Optional[str] = dataclasses.field(default=None, metadata=help_text(
        "Where checkpoints go: a local path or an object-store URI (s3://, gs://, oci://...); {run_name} expands."))
    save_interval: Union[str, int] = dataclasses.field(default="1ep", metadata=help_text(
        "Checkpoint every '1000ba' / '1ep'."))
    save_num_checkpoints_to_keep: int = dataclasses.field(default=-1, metadata=help_text(
        "Local checkpoints to keep (-1: all)."))
    save_overwrite: bool = dataclasses.field(default=False, metadata=help_text(
        "Allow overwriting existing checkpoint files (off: an existing file is an error)."))
    load_path: Optional[str] = dataclasses.field(default=None, metadata=help_text(
        "Composer checkpoint to resume from (local path or URI)."))
    load_weights_only: bool = dataclasses.field(default=False, metadata=help_text(
        "Load only model weights from load_path (not optimizer, scheduler, data position)."))
    autoresume: bool = dataclasses.field(default=False, metadata=help_text(
        "Resume from the latest checkpoint in save_folder if one exists (needs run_name and save_folder)."))
    compile_config: Optional[dict] = dataclasses.field(default=None, metadata=help_text(
        "torch.compile the model: {} for defaults, or torch.compile keyword arguments; null for eager."))
    fsdp_config: Optional[dict] = dataclasses.field(default=None, metadata=help_text(
        "Composer FSDP settings (e.g. {sharding_strategy: FULL_SHARD}); null for DDP."))
    progress_bar: bool = dataclasses.field(default=True, metadata=help_text("Composer's progress bar."))
    log_to_console: bool = dataclasses.field(default=False, metadata=help_text("Print logged metrics."))
    console_log_interval: Union[str, int] = dataclasses.field(default="100ba", metadata=help_text(
        "How often log_to_console prints."))
    dist_timeout: float = dataclasses.field(default=600.0, metadata=help_text(
        "Seconds to wait for other ranks (multi-node start-up)."))
    python_log_level: Optional[str] = dataclasses.field(default="info", metadata=help_text(
        "Log level of the composer and mosaicbert loggers."))


@dataclasses.dataclass(kw_only=True)
class PretrainConfig(TrainerConfig):
    """Top-level keys of a pretraining recipe (``main.py``)."""

    tokenizer_name: str = dataclasses.field(default=dataclasses.MISSING, metadata=help_text(
        "Tokenizer: hub name (bert-base-uncased works offline) or a local folder."))
    max_seq_len: int = dataclasses.field(default=dataclasses.MISSING, metadata=help_text(
        "Tokens per sample (truncation and padding length)."))
    model: dict = dataclasses.field(default=dataclasses.MISSING, metadata=help_text(
        "Model: name (hf_bert | mosaic_bert) plus its arguments."))
    train_loader: dict = dataclasses.field(default=dataclasses.MISSING, metadata=help_text(
        "Training data: name (text) plus its arguments."))
    eval_loader: Optional[dict] = dataclasses.field(default=None, metadata=help_text(
        "Evaluation data (same form as train_loader); null for none."))


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def load_yaml(path: str, overrides: list[str]) -> dict:
    """Read a YAML file, apply ``a.b=c`` overrides, resolve ``${...}`` interpolations."""
    if not os.path.isfile(path):
        raise RecipeError(f"Recipe file {path!r} does not exist. Pass a YAML from yamls/, e.g. "
                          "`composer main.py yamls/mosaicbert-base.yaml`.")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise RecipeError(f"Override {bad[0]!r} is not of the form key=value (e.g. max_duration=100ba).")
    try:
        merged = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
        raw = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as err:
        raise RecipeError(f"Could not read {path!r} with overrides {overrides}: {err}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"Recipe {path!r} must be a YAML mapping of keys to values.")
    return raw


# torch._dynamo.config.optimize_ddp's values (torch 2.6 to 2.11).
OPTIMIZE_DDP_MODES = ("ddp_optimizer", "python_reducer", "python_reducer_without_compiled_forward", "no_optimization")


def check_compile_config(compile_config: Optional[dict]) -> None:
    """``compile_config.optimize_ddp`` is ours (a dynamo setting, not a torch.compile argument): check it."""
    value = (compile_config or {}).get("optimize_ddp", True)
    if not isinstance(value, bool) and value not in OPTIMIZE_DDP_MODES:
        raise RecipeError(f"compile_config.optimize_ddp={value!r} is not valid. Use true, false, or one of "
                          f"{', '.join(OPTIMIZE_DDP_MODES)} (torch._dynamo.config.optimize_ddp); the recipes use "
                          "false.")


def validate(raw: dict, schema: type = PretrainConfig):
    """Check a raw recipe dict against a schema and the registries; return the schema instance."""
    allowed, required = schema_fields(schema)
    check_keys(raw, allowed, required, where="")
    cfg = schema(**raw)
    registry.validate_sections(cfg)
    check_compile_config(cfg.compile_config)
    return cfg


def load_config(path: str, overrides: list[str] = (), schema: type = PretrainConfig):
    """YAML + overrides -> validated config object."""
    return validate(load_yaml(path, list(overrides)), schema)


def to_dict(cfg) -> dict:
    """Plain dict of a config (for logging hyperparameters and storing in checkpoints)."""
    return dataclasses.asdict(cfg)
