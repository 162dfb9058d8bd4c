"""Name -> builder tables shared by every entry point (pretraining, fine-tuning, benchmark).

A YAML section ``{name: X, **kwargs}`` picks builder X from its table; ``kwargs`` are checked against
the builder's signature (unknown keys, missing keys, wrong types) before anything is built. Arguments
the recipe supplies itself (the tokenizer, the model's parameters, ...) are "injected" and may not be
set in YAML.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable, Optional

import torch
from composer.algorithms import GradientClipping, LowPrecisionLayerNorm
from composer.callbacks import LRMonitor, MemoryMonitor, OptimizerMonitor, RuntimeEstimator, SpeedMonitor
from composer.optim import (
    ConstantWithWarmupScheduler,
    CosineAnnealingWithWarmupScheduler,
    DecoupledAdamW,
    LinearWithWarmupScheduler,
)

from .config import check_keys
from .errors import RecipeError


class Registry:
    """A table of builders for one kind of component (models, optimizers, ...)."""

    def __init__(self, kind: str, injected: tuple[str, ...] = ()):
        self.kind = kind
        self.injected = set(injected)
        self._builders: dict[str, Callable] = {}
        self._checks: dict[str, Callable[[dict], None]] = {}

    def register(self, name: str, builder: Callable, check: Optional[Callable[[dict], None]] = None) -> None:
        """Add a builder; ``check(kwargs)`` may validate argument values beyond their types."""
        self._builders[name] = builder
        if check is not None:
            self._checks[name] = check

    def names(self) -> list[str]:
        return sorted(self._builders)

    def get(self, name: str, where: str) -> Callable:
        if name not in self._builders:
            raise RecipeError(f"Unknown {self.kind} {name!r} at {where}. Valid {self.kind} names: "
                              f"{', '.join(self.names())}.")
        return self._builders[name]

    def parameters(self, name: str) -> tuple[dict[str, Any], set[str]]:
        """(argument -> annotation, required arguments) of a builder, injected ones left out."""
        builder = self._builders[name]
        target = builder.func if isinstance(builder, functools.partial) else builder
        signature = inspect.signature(builder)
        try:
            hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
        except Exception:  # annotations we cannot resolve: check names only
            hints = {}
        allowed, required = {}, set()
        for param in signature.parameters.values():
            if param.name in self.injected or param.name == "self":
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            allowed[param.name] = hints.get(param.name, Any)
            if param.default is param.empty:
                required.add(param.name)
        return allowed, required

    def validate(self, name: str, kwargs: dict, where: str) -> None:
        self.get(name, where)
        for key in kwargs:
            if key in self.injected:
                raise RecipeError(f"{where}.{key} is set by the recipe itself (from the top-level keys); "
                                  f"remove it from {where}.")
        allowed, required = self.parameters(name)
        check_keys(kwargs, allowed, required, where=f"{where}.")
        if name in self._checks:
            self._checks[name](kwargs)

    def build(self, name: str, kwargs: dict, **injected):
        builder = self.get(name, self.kind)
        accepted = inspect.signature(builder).parameters
        extra = {k: v for k, v in injected.items() if k in accepted}
        return builder(**kwargs, **extra)


def split_named(section: dict, where: str) -> tuple[str, dict]:
    """``{name: X, **kwargs}`` -> (X, kwargs)."""
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        raise RecipeError(f"{where} must be a mapping with a 'name' key (and that builder's arguments).")
    kwargs = dict(section)
    return kwargs.pop("name"), kwargs


# ----------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------
def build_decoupled_adamw(params, lr: float = 5.0e-4, betas: list[float] = (0.9, 0.98), eps: float = 1.0e-6,
                          weight_decay: float = 1.0e-5, fused: Optional[bool] = None) -> torch.optim.Optimizer:
    """Composer's DecoupledAdamW, computed by torch's (fused) AdamW.

    DecoupledAdamW decays by ``(lr / lr0) * weight_decay``; torch AdamW by ``lr * wd``. With
    ``wd = weight_decay / lr0`` the two are the same update, and torch's fused kernel is much faster
    than Composer's per-parameter loop.
    """
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay / lr, fused=fused)


def check_positive_lr(kwargs: dict) -> None:
    """The decoupled decay divides by the initial learning rate: it must be positive."""
    lr = kwargs.get("lr")  # absent: the builders' positive default
    if lr is not None and not lr > 0:
        raise RecipeError(f"optimizer lr={lr!r}: the learning rate must be positive (decoupled weight decay is "
                          "scaled by lr / initial lr). Set e.g. lr: 5.0e-4.")


def build_composer_decoupled_adamw(params, lr: float = 5.0e-4, betas: list[float] = (0.9, 0.98),
                                   eps: float = 1.0e-6, weight_decay: float = 1.0e-5) -> torch.optim.Optimizer:
    """Composer's own DecoupledAdamW (per-parameter loop), kept as a reference."""
    return DecoupledAdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def build_adamw(params, lr: float = 1.0e-4, betas: list[float] = (0.9, 0.999), eps: float = 1.0e-8,
                weight_decay: float = 0.01, fused: Optional[bool] = None) -> torch.optim.Optimizer:
    """torch.optim.AdamW (weight decay multiplied by the current learning rate)."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)


# ----------------------------------------------------------------------------------------------
# Loggers (imports kept lazy: wandb is optional)
# ----------------------------------------------------------------------------------------------
def build_wandb_logger(project: Optional[str] = None, entity: Optional[str] = None, group: Optional[str] = None,
                       name: Optional[str] = None, tags: Optional[list[str]] = None, log_artifacts: bool = False):
    from composer.loggers import WandBLogger

    return WandBLogger(project=project, entity=entity, group=group, name=name, tags=tags,
                       log_artifacts=log_artifacts)


def build_file_logger(filename: str = "{run_name}/logs-rank{rank}.txt", log_interval: int = 1):
    from composer.loggers import FileLogger

    return FileLogger(filename=filename, log_interval=log_interval)


def build_jsonl_logger(path: str = "runs/{run_name}/metrics.jsonl"):
    from .training.callbacks import JSONLinesLogger

    return JSONLinesLogger(path)


def build_sample_log(path: str = "runs/{run_name}/samples-rank{rank}.jsonl"):
    from .training.callbacks import SampleLog

    return SampleLog(path)


def build_time_budget(train_seconds: float, eval_every_seconds: Optional[float] = None):
    from .training.time_budget import TimeBudget

    return TimeBudget(train_seconds, eval_every_seconds)


def check_time_budget(kwargs: dict) -> None:
    from .training.time_budget import check_time_budget

    check_time_budget(kwargs.get("train_seconds"), kwargs.get("eval_every_seconds"))


def build_training_summary(print_every_eval: bool = True):
    from .training.callbacks import TrainingSummary

    return TrainingSummary(print_every_eval=print_every_eval)


# ----------------------------------------------------------------------------------------------
# The tables
# ----------------------------------------------------------------------------------------------
MODELS = Registry("model", injected=("tokenizer", "max_seq_len"))
DATALOADERS = Registry("dataloader", injected=("tokenizer", "max_seq_len", "device_batch_size"))
OPTIMIZERS = Registry("optimizer", injected=("params",))
SCHEDULERS = Registry("scheduler")
ALGORITHMS = Registry("algorithm")
CALLBACKS = Registry("callback")
LOGGERS = Registry("logger")

OPTIMIZERS.register("decoupled_adamw", build_decoupled_adamw, check=check_positive_lr)
OPTIMIZERS.register("composer_decoupled_adamw", build_composer_decoupled_adamw, check=check_positive_lr)
OPTIMIZERS.register("adamw", build_adamw)

SCHEDULERS.register("linear_decay_with_warmup", LinearWithWarmupScheduler)
SCHEDULERS.register("cosine_with_warmup", CosineAnnealingWithWarmupScheduler)
SCHEDULERS.register("constant_with_warmup", ConstantWithWarmupScheduler)

ALGORITHMS.register("gradient_clipping", GradientClipping)
ALGORITHMS.register("low_precision_layernorm", LowPrecisionLayerNorm)

CALLBACKS.register("speed_monitor", SpeedMonitor)
CALLBACKS.register("lr_monitor", LRMonitor)
CALLBACKS.register("memory_monitor", MemoryMonitor)
CALLBACKS.register("optimizer_monitor", OptimizerMonitor)
CALLBACKS.register("runtime_estimator", RuntimeEstimator)
CALLBACKS.register("training_summary", build_training_summary)
CALLBACKS.register("sample_log", build_sample_log)
CALLBACKS.register("time_budget", build_time_budget, check=check_time_budget)

LOGGERS.register("wandb", build_wandb_logger)
LOGGERS.register("file", build_file_logger)
LOGGERS.register("jsonl", build_jsonl_logger)


def _register_models_and_data() -> None:
    # Imported here so this module's tables exist before the builders (which use them) load.
    from . import composer_models
    from .data.text_dataset import build_text_dataloader, check_text_loader

    composer_models.register(MODELS)
    DATALOADERS.register("text", build_text_dataloader, check=check_text_loader)


_register_models_and_data()

# Sections of a recipe that name one builder, and sections that map several names to their kwargs.
NAMED_SECTIONS = {"model": MODELS, "train_loader": DATALOADERS, "eval_loader": DATALOADERS,
                  "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS}
MAPPED_SECTIONS = {"algorithms": ALGORITHMS, "callbacks": CALLBACKS, "loggers": LOGGERS}


def validate_sections(cfg) -> None:
    """Check every builder section present on a config object against its registry."""
    for section, table in NAMED_SECTIONS.items():
        value = getattr(cfg, section, None)
        if value is None:
            continue
        name, kwargs = split_named(value, section)
        table.validate(name, kwargs, where=section)
    for section, table in MAPPED_SECTIONS.items():
        value = getattr(cfg, section, None) or {}
        for name, kwargs in value.items():
            if kwargs is not None and not isinstance(kwargs, dict):
                raise RecipeError(f"{section}.{name} must be a mapping of arguments (or empty), got {kwargs!r}.")
            table.validate(name, kwargs or {}, where=f"{section}.{name}")


def build_named(table: Registry, section: dict, **injected):
    name, kwargs = split_named(section, table.kind)
    return table.build(name, kwargs, **injected)


def build_mapped(table: Registry, section: Optional[dict]) -> list:
    return [table.build(name, kwargs or {}) for name, kwargs in (section or {}).items()]
