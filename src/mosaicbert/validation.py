"""Generic recipe checks: a YAML value against a type annotation, a mapping's keys against a schema.

Nothing here knows a recipe: the schemas (:mod:`mosaicbert.config`), the builder tables
(:mod:`mosaicbert.registry`) and the model families (:mod:`mosaicbert.families`) all check with these.
Every problem is a :class:`RecipeError` naming the key, what was found and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

from .errors import RecipeError


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


def schema_fields(schema: type) -> tuple[dict[str, Any], set[str]]:
    """(key -> annotation, required keys) of a dataclass schema."""
    hints = typing.get_type_hints(schema)
    fields = dataclasses.fields(schema)
    allowed = {f.name: hints[f.name] for f in fields}
    required = {f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return allowed, required


def help_text(text: str) -> dict:
    """A schema field's ``metadata``: the one-line help shown for its key."""
    return {"help": text}
