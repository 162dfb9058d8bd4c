"""Name -> builder tables shared by every entry point (pretraining, fine-tuning, benchmark).

This module only declares the tables; each package registers its own builders when imported
(:mod:`mosaicbert.composer_models` the models, :mod:`mosaicbert.data.text_dataset` the dataloader,
:mod:`mosaicbert.training.builders` optimizers, schedulers, algorithms, callbacks and loggers), and
:mod:`mosaicbert.components` imports them all.

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

from .errors import RecipeError
from .validation import check_keys


class Registry:
    """A table of builders for one kind of component (models, optimizers, ...)."""

    def __init__(self, kind: str, injected: tuple[str, ...] = ()):
        self.kind = kind
        self.injected = set(injected)
        self._builders: dict[str, Callable] = {}
        self._checks: dict[str, Callable[[dict, str], None]] = {}

    def register(self, name: str, builder: Callable, check: Optional[Callable[[dict, str], None]] = None) -> None:
        """Add a builder; ``check(kwargs, where)`` may validate argument values beyond their types (``where``:
        the section, e.g. ``train_loader``, for messages)."""
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
            self._checks[name](kwargs, where)

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
# The tables
# ----------------------------------------------------------------------------------------------
MODELS = Registry("model", injected=("tokenizer", "max_seq_len"))
DATALOADERS = Registry("dataloader", injected=("tokenizer", "max_seq_len", "device_batch_size", "run_seed"))
OPTIMIZERS = Registry("optimizer", injected=("params",))
SCHEDULERS = Registry("scheduler")
ALGORITHMS = Registry("algorithm")
CALLBACKS = Registry("callback")
LOGGERS = Registry("logger")

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
