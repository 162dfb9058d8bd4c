"""The recipe schemas, and loading a YAML recipe plus ``key=value`` overrides, validated before any work.

A recipe is a dataclass schema (:class:`PretrainConfig`, or the fine-tuning one) whose fields are the
top-level YAML keys. Sections that name a builder (``model``, ``train_loader``, ``optimizer``, ...) are
checked against that builder's signature through :mod:`mosaicbert.registry`. Every problem is a
:class:`RecipeError` naming the key, what was found and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Literal, Optional, Union

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import (
    components,  # noqa: F401  (fills the registry tables that validate() checks against)
    registry,
)
from .errors import RecipeError, describe
from .validation import (
    INTERVAL_UNITS,
    LENGTH_UNITS,
    TIME_UNITS,
    check_keys,
    check_values,
    did_you_mean,
    help_text,
    parse_time,
    schema_fields,
)


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
    seed: int = dataclasses.field(default=17, metadata=help_text(
        "Seed for weights, dropout and data order.", minimum=0, maximum=2**32 - 1))
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = dataclasses.field(default="amp_bf16", metadata=help_text(
        "Numerics: amp_bf16 on GPUs; fp32 on CPU (Composer allows only fp32 there)."))
    device: Optional[Literal["cpu", "gpu"]] = dataclasses.field(default=None, metadata=help_text(
        "cpu or gpu; default: gpu when CUDA is available."))
    max_duration: Union[str, int] = dataclasses.field(default="1ep", metadata=help_text(
        "Training length: '286720000sp' (samples), '70000ba' (batches), '1ep', or an int (epochs).",
        time_units=LENGTH_UNITS))
    eval_interval: Union[str, int] = dataclasses.field(default="1ep", metadata=help_text(
        "How often to evaluate ('2000ba', '1ep'; 0: not during training); set eval_loader: null for no evaluation.",
        time_units=INTERVAL_UNITS, zero_time=True))
    eval_subset_num_batches: int = dataclasses.field(default=-1, metadata=help_text(
        "Evaluate on at most this many batches (-1: the whole eval set).", minimum=1, also=(-1,)))
    global_train_batch_size: int = dataclasses.field(default=256, metadata=help_text(
        "Samples per optimizer step over all GPUs; each device's equal share is split into microbatches.",
        minimum=1))
    device_train_microbatch_size: Union[int, Literal["auto"]] = dataclasses.field(default="auto", metadata=help_text(
        "Samples per forward/backward on one device, at most (a smaller share of the batch is one microbatch); "
        "'auto' lets Composer find the largest that fits (GPU).",
        minimum=1))
    device_eval_batch_size: int = dataclasses.field(default=64, metadata=help_text("Eval samples per device.",
                                                                                   minimum=1))
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
        "Checkpoint every '1000ba' / '1ep'.", time_units=INTERVAL_UNITS))
    save_num_checkpoints_to_keep: int = dataclasses.field(default=-1, metadata=help_text(
        "Local checkpoints to keep (-1: all).", minimum=0, also=(-1,)))
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
        "How often log_to_console prints.", time_units=("ba", "ep")))
    dist_timeout: float = dataclasses.field(default=600.0, metadata=help_text(
        "Seconds any wait for other ranks may take: the rendezvous and every collective.", minimum=1.0))
    python_log_level: Optional[str] = dataclasses.field(default="info", metadata=help_text(
        "Log level of the composer, mosaicbert and streaming loggers."))


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
def yaml_problem(err: yaml.YAMLError) -> str:
    """``line 3, column 2: expected ',' or ']', but got ':' (in the flow sequence opened at line 1,
    column 4)`` from a PyYAML error, lines and columns counted from 1."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        text += f" ({context}, which starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return text


def check_variable_overrides(path: str, recipe, overrides: list[str]) -> None:
    """An override of ``variables.<name>`` that nothing refers to (``${variables.<name>}`` in a value of the
    recipe, comments aside, or in another override) would change nothing: most often a misspelt name, so it
    is refused."""
    values = json.dumps(OmegaConf.to_container(recipe, resolve=False))
    used = set(re.findall(r"\$\{variables\.(\w+)", values + "\n".join(overrides)))
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        if key.startswith("variables.") and key.split(".")[1] not in used:
            name = key.split(".")[1]
            raise RecipeError(f"Override {override!r} sets variables.{name}, which nothing in {path!r} refers to "
                              f"(as ${{variables.{name}}}), so it would change nothing.{did_you_mean(name, used)} "
                              f"The recipe's variables: {', '.join(sorted(used)) or 'none'}.")


def load_yaml(path: str, overrides: list[str]) -> dict:
    """Read a YAML file, apply ``a.b=c`` overrides, resolve ``${...}`` interpolations."""
    if not os.path.isfile(path):
        what = "is a folder, not a YAML file" if os.path.isdir(path) else "does not exist"
        raise RecipeError(f"Recipe file {path!r} {what}. Pass a YAML from yamls/, e.g. "
                          "`composer main.py yamls/mosaicbert-base.yaml`.")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise RecipeError(f"Override {bad[0]!r} is not of the form key=value (e.g. max_duration=100ba).")
    try:
        recipe = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise RecipeError(f"Recipe {path!r} is not valid YAML: {yaml_problem(err)}. Fix the file there: "
                          "often a bracket or quote left open, or an indentation that does not line up "
                          "with the keys above it.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"Could not read recipe {path!r} ({describe(err)}). Pass a YAML text file from "
                          "yamls/.") from None
    for override in overrides:  # one at a time first, so that an error names its override
        try:
            OmegaConf.from_dotlist([override])
        except yaml.YAMLError as err:
            raise RecipeError(f"Override {override!r} is not valid YAML after the '=': {yaml_problem(err)}. Quote "
                              "the whole argument for the shell and close every bracket, e.g. "
                              "'callbacks={speed_monitor: {window_size: 10}}'.") from None
        except OmegaConfBaseException as err:
            raise RecipeError(f"Override {override!r} could not be read: {str(err).splitlines()[0]}. A '${{...}}' "
                              "is an interpolation and must be closed, e.g. 'save_folder=${variables.root}/ckpt'; "
                              "quote the argument for the shell.") from None
    check_variable_overrides(path, recipe, overrides)
    try:
        # All at once: a later override may address into an earlier one (optimizer.betas=[..] then
        # optimizer.betas.1=..), which merging them one by one would refuse.
        merged = OmegaConf.merge(recipe, OmegaConf.from_dotlist(list(overrides)))
        raw = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as err:
        problem = str(err).splitlines()[0]
        if "ListConfig" in problem:
            problem += (". An override cannot address into a list by index (e.g. custom_tasks.0.lr=...) nor "
                        "replace a list with a mapping: set per-task values as tasks.<name>.<key>=..., give the "
                        "whole list, or edit the YAML")
        raise RecipeError(f"Could not read {path!r} with overrides {overrides}: {problem}.") from None
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


def _schedule_unit(value, max_duration_unit: str) -> str:
    """The unit Composer's warm-up schedules count a time in (its ``_convert_time``): a ``dur`` fraction
    in max_duration's unit, epochs in batches."""
    unit = parse_time(value)[1]
    if unit == "dur":
        unit = max_duration_unit
    return "ba" if unit == "ep" else unit


def check_schedule_units(scheduler: dict, max_duration, time_budget: bool = False) -> None:
    """A warm-up schedule's ``t_warmup`` and ``t_max`` must count the same unit once Composer converts them;
    otherwise it stops at the first batch. Composer checks that when the trainer is built, against
    ``max_duration``; with ``time_budget`` (the callback) the run's length is then set in batches while it
    trains, so the units must agree both ways. Call after the times themselves were checked."""
    if "t_warmup" not in scheduler:
        return
    t_max = scheduler.get("t_max", "1dur")
    lengths = [("ba", "callbacks.time_budget, which sets the length in batches while training")] if time_budget else []
    lengths.append((parse_time(max_duration)[1], f"max_duration={max_duration!r}"))
    for max_unit, length in lengths:
        warmup_unit = _schedule_unit(scheduler["t_warmup"], max_unit)
        max_unit_counted = _schedule_unit(t_max, max_unit)
        if warmup_unit != max_unit_counted:
            raise RecipeError(
                f"scheduler.t_warmup={scheduler['t_warmup']!r} counts {TIME_UNITS[warmup_unit][1]} but "
                f"scheduler.t_max={t_max!r} (with {length}) counts {TIME_UNITS[max_unit_counted][1]}; Composer "
                "needs both in one unit. Give t_warmup as a fraction of the run (e.g. 0.06dur)"
                + (", or max_duration in batches." if time_budget else " or in max_duration's unit."))


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def check_log_level(level: Optional[str]) -> None:
    if level is not None and level.lower() not in LOG_LEVELS:
        raise RecipeError(f"python_log_level={level!r} is not a log level. Use one of {', '.join(LOG_LEVELS)}, "
                          "or null to leave logging as it is.")


def validate(raw: dict, schema: type = PretrainConfig):
    """Check a raw recipe dict against a schema and the registries; return the schema instance."""
    allowed, required = schema_fields(schema)
    check_keys(raw, allowed, required, where="")
    check_values(raw, schema)
    cfg = schema(**raw)
    registry.validate_sections(cfg)
    check_schedule_units(cfg.scheduler, cfg.max_duration, time_budget="time_budget" in (cfg.callbacks or {}))
    check_compile_config(cfg.compile_config)
    check_log_level(cfg.python_log_level)
    return cfg


def load_config(path: str, overrides: list[str] = (), schema: type = PretrainConfig):
    """YAML + overrides -> validated config object."""
    return validate(load_yaml(path, list(overrides)), schema)


def to_dict(cfg) -> dict:
    """Plain dict of a config (for logging hyperparameters and storing in checkpoints)."""
    return dataclasses.asdict(cfg)
