"""Load a YAML recipe plus ``key=value`` overrides and validate it before any work starts.

A recipe is a dataclass schema (:class:`PretrainConfig`, or the fine-tuning one) whose fields are the
top-level YAML keys. Sections that name a builder (``model``, ``train_loader``, ``optimizer``, ...) are
checked against that builder's signature through :mod:`mosaicbert.registry`. Every problem is a
:class:`RecipeError` naming the key, what was found and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from typing import Any, Literal, Optional, Union

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import RecipeError


# ----------------------------------------------------------------------------------------------
# Type checking against annotations
# ----------------------------------------------------------------------------------------------
def type_name(annotation: Any) -> str:
    """Readable name of an annotation, for error messages."""
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (list, tuple, typing.Sequence):
        args = typing.get_args(annotation)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def matches_type(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits an annotation. Classes we cannot check (e.g. Composer ``Time``) accept
    anything: the constructor that receives them will complain in its own words."""
    if annotation is Any or annotation is dataclasses.MISSING:
        return True
    if annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(matches_type(value, a) for a in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            return False
        return all(matches_type(v, args[0]) for v in value) if args else True
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def did_you_mean(name, choices) -> str:
    """`` Did you mean 'x'?`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_keys(given: dict, allowed: dict[str, Any], required: set[str], where: str) -> None:
    """Unknown keys, missing keys and wrong types, each a RecipeError naming the key."""
    for key in given:
        if key not in allowed:
            raise RecipeError(f"Unknown key {where}{key!r}.{did_you_mean(key, allowed)} "
                              f"Allowed keys here: {', '.join(sorted(allowed))}.")
    missing = sorted(required - set(given))
    if missing:
        raise RecipeError(f"Missing required key {where}{missing[0]!r}: add it to the YAML or pass "
                          f"{where}{missing[0]}=... on the command line.")
    for key, value in given.items():
        if not matches_type(value, allowed[key]):
            raise RecipeError(
                f"Key {where}{key!r} is {value!r} ({type(value).__name__}), but it must be "
                f"{type_name(allowed[key])}."
            )


# ----------------------------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------------------------
def _help(text: str) -> dict:
    return {"help": text}


@dataclasses.dataclass(kw_only=True)
class TrainerConfig:
    """Keys shared by pretraining and fine-tuning: how Composer runs, saves and logs."""

    variables: dict = dataclasses.field(default_factory=dict, metadata=_help(
        "Free-form values for ${variables.name} interpolation elsewhere in the YAML; not read otherwise."))
    run_name: Optional[str] = dataclasses.field(default=None, metadata=_help(
        "Name of the run (checkpoint and logger names); default: a generated name."))
    seed: int = dataclasses.field(default=17, metadata=_help("Seed for weights, dropout and data order."))
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = dataclasses.field(default="amp_bf16", metadata=_help(
        "Numerics: amp_bf16 on GPUs; fp32 on CPU (Composer allows only fp32 there)."))
    device: Optional[Literal["cpu", "gpu"]] = dataclasses.field(default=None, metadata=_help(
        "cpu or gpu; default: gpu when CUDA is available."))
    max_duration: Union[str, int] = dataclasses.field(default="1ep", metadata=_help(
        "Training length: '286720000sp' (samples), '70000ba' (batches), '1ep', or an int (epochs)."))
    eval_interval: Union[str, int] = dataclasses.field(default="1ep", metadata=_help(
        "How often to evaluate ('2000ba', '1ep'); set eval_loader: null for no evaluation."))
    eval_subset_num_batches: int = dataclasses.field(default=-1, metadata=_help(
        "Evaluate on at most this many batches (-1: the whole eval set)."))
    global_train_batch_size: int = dataclasses.field(default=256, metadata=_help(
        "Samples per optimizer step over all GPUs; must divide by world size x microbatch."))
    device_train_microbatch_size: Union[int, Literal["auto"]] = dataclasses.field(default="auto", metadata=_help(
        "Samples per forward/backward on one device; 'auto' lets Composer find the largest that fits (GPU)."))
    device_eval_batch_size: int = dataclasses.field(default=64, metadata=_help("Eval samples per device."))
    optimizer: dict = dataclasses.field(default_factory=lambda: {"name": "decoupled_adamw"}, metadata=_help(
        "Optimizer: name plus its arguments (see registry)."))
    scheduler: dict = dataclasses.field(default_factory=lambda: {"name": "constant_with_warmup", "t_warmup": "0ba"},
                                        metadata=_help("LR schedule: name plus its arguments."))
    algorithms: dict = dataclasses.field(default_factory=dict, metadata=_help(
        "Composer algorithms by name, e.g. {gradient_clipping: {clipping_type: norm, clipping_threshold: 1.0}}."))
    callbacks: dict = dataclasses.field(default_factory=dict, metadata=_help(
        "Callbacks by name, e.g. {speed_monitor: {window_size: 100}, lr_monitor: {}}."))
    loggers: dict = dataclasses.field(default_factory=dict, metadata=_help(
        "Loggers by name: wandb, jsonl (metrics file for plots), file."))
    save_folder: Optional[str] = dataclasses.field(default=None, metadata=_help(
        "Where checkpoints go: a local path or an object-store URI (s3://, gs://, oci://...); {run_name} expands."))
    save_interval: Union[str, int] = dataclasses.field(default="1ep", metadata=_help(
        "Checkpoint every '1000ba' / '1ep'."))
    save_num_checkpoints_to_keep: int = dataclasses.field(default=-1, metadata=_help(
        "Local checkpoints to keep (-1: all)."))
    save_overwrite: bool = dataclasses.field(default=False, metadata=_help(
        "Allow overwriting existing checkpoint files (off: an existing file is an error)."))
    load_path: Optional[str] = dataclasses.field(default=None, metadata=_help(
        "Composer checkpoint to resume from (local path or URI)."))
    load_weights_only: bool = dataclasses.field(default=False, metadata=_help(
        "Load only model weights from load_path (not optimizer, scheduler, data position)."))
    autoresume: bool = dataclasses.field(default=False, metadata=_help(
        "Resume from the latest checkpoint in save_folder if one exists (needs run_name and save_folder)."))
    compile_config: Optional[dict] = dataclasses.field(default=None, metadata=_help(
        "torch.compile the model: {} for defaults, or torch.compile keyword arguments; null for eager."))
    fsdp_config: Optional[dict] = dataclasses.field(default=None, metadata=_help(
        "Composer FSDP settings (e.g. {sharding_strategy: FULL_SHARD}); null for DDP."))
    progress_bar: bool = dataclasses.field(default=True, metadata=_help("Composer's progress bar."))
    log_to_console: bool = dataclasses.field(default=False, metadata=_help("Print logged metrics."))
    console_log_interval: Union[str, int] = dataclasses.field(default="100ba", metadata=_help(
        "How often log_to_console prints."))
    dist_timeout: float = dataclasses.field(default=600.0, metadata=_help(
        "Seconds to wait for other ranks (multi-node start-up)."))
    python_log_level: Optional[str] = dataclasses.field(default="info", metadata=_help(
        "Log level of the composer and mosaicbert loggers."))


@dataclasses.dataclass(kw_only=True)
class PretrainConfig(TrainerConfig):
    """Top-level keys of a pretraining recipe (``main.py``)."""

    tokenizer_name: str = dataclasses.field(default=dataclasses.MISSING, metadata=_help(
        "Tokenizer: hub name (bert-base-uncased works offline) or a local folder."))
    max_seq_len: int = dataclasses.field(default=dataclasses.MISSING, metadata=_help(
        "Tokens per sample (truncation and padding length)."))
    model: dict = dataclasses.field(default=dataclasses.MISSING, metadata=_help(
        "Model: name (hf_bert | mosaic_bert) plus its arguments."))
    train_loader: dict = dataclasses.field(default=dataclasses.MISSING, metadata=_help(
        "Training data: name (text) plus its arguments."))
    eval_loader: Optional[dict] = dataclasses.field(default=None, metadata=_help(
        "Evaluation data (same form as train_loader); null for none."))


def schema_fields(schema: type) -> tuple[dict[str, Any], set[str]]:
    """(key -> annotation, required keys) of a dataclass schema."""
    hints = typing.get_type_hints(schema)
    fields = dataclasses.fields(schema)
    allowed = {f.name: hints[f.name] for f in fields}
    required = {f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return allowed, required


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
    from . import registry  # the registries import Composer and the model; keep config import light

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
