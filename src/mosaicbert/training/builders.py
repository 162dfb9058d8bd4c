"""Builders of the training components a recipe names, registered in :mod:`mosaicbert.registry`:
optimizers, learning-rate schedules, Composer algorithms, callbacks and loggers."""

from __future__ import annotations

import importlib.util
import os
from typing import Optional

import torch
from composer.algorithms import GradientClipping, LowPrecisionLayerNorm
from composer.callbacks import (
    LRMonitor,
    MemoryMonitor,
    OptimizerMonitor,
    RuntimeEstimator,
    SpeedMonitor,
)
from composer.loggers import FileLogger, WandBLogger
from composer.optim import (
    ConstantWithWarmupScheduler,
    CosineAnnealingWithWarmupScheduler,
    DecoupledAdamW,
    LinearWithWarmupScheduler,
)

from .. import registry
from ..errors import RecipeError
from ..validation import INTERVAL_UNITS, check_folder_can_be_made, check_time
from .callbacks import JSONLinesLogger, SampleLog, TrainingSummary
from .step_profile import StepProfile, check_step_profile
from .time_budget import TimeBudget, check_time_budget


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


def check_adam_values(kwargs: dict, where: str = "optimizer") -> None:
    """The values torch's Adam checks only when the optimizer is built (after the model), or not at all:
    betas two numbers in [0, 1), eps and weight decay not negative, a learning rate not negative."""
    betas, lr = kwargs.get("betas"), kwargs.get("lr")  # absent: the builders' defaults
    if betas is not None and (len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas)):
        raise RecipeError(f"{where}.betas={list(betas)!r} must be two numbers in [0, 1), e.g. [0.9, 0.98].")
    for key in ("eps", "weight_decay"):
        if kwargs.get(key) is not None and kwargs[key] < 0:
            raise RecipeError(f"{where}.{key}={kwargs[key]!r} must not be negative.")
    if lr is not None and lr < 0:
        raise RecipeError(f"{where}.lr={lr!r} must not be negative.")


def check_positive_lr(kwargs: dict, where: str = "optimizer") -> None:
    """Adam's values, and a positive learning rate: the decoupled decay divides by the initial one."""
    check_adam_values(kwargs, where)
    lr = kwargs.get("lr")  # absent: the builders' positive default
    if lr is not None and not lr > 0:
        raise RecipeError(f"optimizer lr={lr!r}: the learning rate must be positive (decoupled weight decay is "
                          "scaled by lr / initial lr). Set e.g. lr: 5.0e-4.")


CLIPPING_TYPES = ("norm", "value", "adaptive")  # Composer's GradientClipping


def check_gradient_clipping(kwargs: dict, where: str = "algorithms.gradient_clipping") -> None:
    """Composer checks clipping_type only when it first clips, after the first batch's forward and backward."""
    kind, threshold = kwargs.get("clipping_type"), kwargs.get("clipping_threshold")
    if kind is not None and kind not in CLIPPING_TYPES:
        raise RecipeError(f"{where}.clipping_type={kind!r} is not one of {', '.join(CLIPPING_TYPES)} "
                          "(norm: clip the gradients' global norm, as BERT does).")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not threshold > 0):
        raise RecipeError(f"{where}.clipping_threshold={threshold!r} must be a positive number, e.g. 1.0.")


def build_composer_decoupled_adamw(params, lr: float = 5.0e-4, betas: list[float] = (0.9, 0.98),
                                   eps: float = 1.0e-6, weight_decay: float = 1.0e-5) -> torch.optim.Optimizer:
    """Composer's own DecoupledAdamW (per-parameter loop), kept as a reference."""
    return DecoupledAdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def build_adamw(params, lr: float = 1.0e-4, betas: list[float] = (0.9, 0.999), eps: float = 1.0e-8,
                weight_decay: float = 0.01, fused: Optional[bool] = None) -> torch.optim.Optimizer:
    """torch.optim.AdamW (weight decay multiplied by the current learning rate)."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------
def check_schedule_times(kwargs: dict, where: str = "scheduler") -> None:
    """A schedule's warm-up (may be zero) and length are Composer time strings (Composer parses them only at
    the first batch, and only strings: a bare number would fail there)."""
    if "t_warmup" in kwargs:
        check_time(kwargs["t_warmup"], f"{where}.t_warmup", INTERVAL_UNITS, zero=True, integer_epochs=False)
    if "t_max" in kwargs:
        check_time(kwargs["t_max"], f"{where}.t_max", INTERVAL_UNITS, integer_epochs=False)


# ----------------------------------------------------------------------------------------------
# Loggers and callbacks of this recipe
# ----------------------------------------------------------------------------------------------
def build_wandb_logger(project: Optional[str] = None, entity: Optional[str] = None, group: Optional[str] = None,
                       name: Optional[str] = None, tags: Optional[list[str]] = None, log_artifacts: bool = False):
    if importlib.util.find_spec("wandb") is None:  # Composer's own error comes as a traceback
        raise RecipeError("loggers.wandb is set, but the wandb package is not installed here. Install it "
                          "(pip install wandb==0.22.3, the version requirements.txt pins) or remove loggers.wandb.")
    return WandBLogger(project=project, entity=entity, group=group, name=name, tags=tags,
                       log_artifacts=log_artifacts)


def build_file_logger(filename: str = "{run_name}/logs-rank{rank}.txt", log_interval: int = 1):
    return FileLogger(filename=filename, log_interval=log_interval)


def build_jsonl_logger(path: str = "runs/{run_name}/metrics.jsonl"):
    return JSONLinesLogger(path)


def build_sample_log(path: str = "runs/{run_name}/samples-rank{rank}.jsonl"):
    return SampleLog(path)


def check_file_path(kwargs: dict, where: str) -> None:
    """A ``path`` argument's folder can be made (checked before the run; the file opens at its start)."""
    if "path" in kwargs:
        check_folder_can_be_made(os.path.dirname(kwargs["path"]) or ".", f"{where}.path={kwargs['path']!r}")


def build_time_budget(train_seconds: float, eval_every_seconds: Optional[float] = None):
    return TimeBudget(train_seconds, eval_every_seconds)


def check_time_budget_section(kwargs: dict, where: str = "callbacks.time_budget") -> None:
    check_time_budget(kwargs.get("train_seconds"), kwargs.get("eval_every_seconds"))


def check_step_profile_section(kwargs: dict, where: str = "callbacks.step_profile") -> None:
    check_step_profile(**{k: kwargs[k] for k in ("skip", "batches", "top") if k in kwargs}, where=where)
    if kwargs.get("trace_path"):
        check_folder_can_be_made(os.path.dirname(kwargs["trace_path"]) or ".", f"{where}.trace_path")


def build_training_summary(print_every_eval: bool = True):
    return TrainingSummary(print_every_eval=print_every_eval)


# ----------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------
registry.OPTIMIZERS.register("decoupled_adamw", build_decoupled_adamw, check=check_positive_lr)
registry.OPTIMIZERS.register("composer_decoupled_adamw", build_composer_decoupled_adamw, check=check_positive_lr)
registry.OPTIMIZERS.register("adamw", build_adamw, check=check_adam_values)

registry.SCHEDULERS.register("linear_decay_with_warmup", LinearWithWarmupScheduler, check=check_schedule_times)
registry.SCHEDULERS.register("cosine_with_warmup", CosineAnnealingWithWarmupScheduler, check=check_schedule_times)
registry.SCHEDULERS.register("constant_with_warmup", ConstantWithWarmupScheduler, check=check_schedule_times)

registry.ALGORITHMS.register("gradient_clipping", GradientClipping, check=check_gradient_clipping)
registry.ALGORITHMS.register("low_precision_layernorm", LowPrecisionLayerNorm)

registry.CALLBACKS.register("speed_monitor", SpeedMonitor)
registry.CALLBACKS.register("lr_monitor", LRMonitor)
registry.CALLBACKS.register("memory_monitor", MemoryMonitor)
registry.CALLBACKS.register("optimizer_monitor", OptimizerMonitor)
registry.CALLBACKS.register("runtime_estimator", RuntimeEstimator)
registry.CALLBACKS.register("training_summary", build_training_summary)
registry.CALLBACKS.register("sample_log", build_sample_log, check=check_file_path)
registry.CALLBACKS.register("time_budget", build_time_budget, check=check_time_budget_section)
registry.CALLBACKS.register("step_profile", StepProfile, check=check_step_profile_section)

registry.LOGGERS.register("wandb", build_wandb_logger)
registry.LOGGERS.register("file", build_file_logger)
registry.LOGGERS.register("jsonl", build_jsonl_logger, check=check_file_path)
