"""Generic recipe checks: a YAML value against a type annotation, a mapping's keys against a schema, and
the value rules a schema field declares in its metadata (a numeric range, Composer time units).

Nothing here knows a recipe: the schemas (:mod:`mosaicbert.config`), the builder tables
(:mod:`mosaicbert.registry`) and the model families (:mod:`mosaicbert.families`) all check with these.
Every problem is a :class:`RecipeError` naming the key, what was found and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from typing import Any, Literal, Optional, Union

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


# Names other tools use for a key of these recipes (Hugging Face Trainer, PyTorch), for "Did you mean".
SYNONYMS = {"learning_rate": "lr", "num_train_epochs": "max_duration", "epochs": "max_duration",
            "max_steps": "max_duration", "batch": "batch_size", "train_batch_size": "batch_size",
            "per_device_train_batch_size": "batch_size", "seed": "seeds", "warmup_steps": "warmup",
            "warmup_ratio": "warmup", "wd": "weight_decay", "max_length": "max_seq_len",
            "optim": "optimizer", "lr_scheduler": "scheduler"}


def did_you_mean(name, choices) -> str:
    """`` Did you mean 'x'?`` for the closest choice (or the recipe's name for another tool's), or ""."""
    choices = [str(c) for c in choices]
    if SYNONYMS.get(str(name)) in choices:
        return f" Did you mean {SYNONYMS[str(name)]!r}?"
    close = difflib.get_close_matches(str(name), choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_keys(given: dict, allowed: dict[str, Any], required: set[str], where: str) -> None:
    """Unknown keys, missing keys and wrong types, each a RecipeError naming the key."""
    for key in given:
        if key not in allowed:
            raise RecipeError(f"Unknown key '{where}{key}'.{did_you_mean(key, allowed)} "
                              f"Allowed keys here: {', '.join(sorted(allowed))}.")
    missing = sorted(required - set(given))
    if missing:
        raise RecipeError(f"Missing required key '{where}{missing[0]}': add it to the YAML or pass "
                          f"{where}{missing[0]}=... on the command line.")
    for key, value in given.items():
        if not matches_type(value, allowed[key]):
            raise RecipeError(
                f"Key '{where}{key}' is {value!r} ({type(value).__name__}), but it must be "
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


def help_text(text: str, *, minimum: Optional[float] = None, maximum: Optional[float] = None, also: tuple = (),
              time_units: Optional[tuple[str, ...]] = None, zero_time: bool = False, integer_epochs: bool = True
              ) -> dict:
    """A schema field's ``metadata``: the one-line help shown for its key, and the value rules that
    :func:`check_values` applies to it.

    Args:
        minimum, maximum: the range of numbers allowed (``also`` lists extra allowed values such as -1); an
            int minimum of 0 or 1 is worded "a non-negative / positive integer", so give floats as floats.
        time_units: the value is a Composer time with one of these units (see ``TIME_UNITS``).
        zero_time: a time of zero is allowed (a warm-up of ``0ba``); otherwise times must be positive.
        integer_epochs: a bare integer counts as epochs (Composer's trainer times); False where Composer
            parses only strings (schedule times).
    """
    metadata: dict[str, Any] = {"help": text}
    if minimum is not None:
        metadata["range"] = (minimum, maximum, tuple(also))
    if time_units is not None:
        metadata["time_units"] = tuple(time_units)
        metadata["zero_time"] = zero_time
        metadata["integer_epochs"] = integer_epochs
    return metadata


# ----------------------------------------------------------------------------------------------
# Values: numeric ranges and Composer time strings
# ----------------------------------------------------------------------------------------------
# Composer time units a recipe may use, with an example and what they count.
TIME_UNITS = {"ba": ("10ba", "batches"), "ep": ("2ep", "epochs"), "sp": ("1000sp", "samples"),
              "tok": ("100000tok", "tokens"), "dur": ("0.5dur", "a fraction of max_duration")}
LENGTH_UNITS = ("ba", "ep", "sp", "tok")  # a training length (max_duration)
INTERVAL_UNITS = LENGTH_UNITS + ("dur",)  # an interval or a schedule point (eval_interval, t_warmup, ...)


def accepted_times(units: tuple[str, ...], integer_epochs: bool = True) -> str:
    """``10ba (batches), 2ep (epochs), ...`` for error messages (an integer as epochs where it is one)."""
    forms = [f"{TIME_UNITS[u][0]} ({TIME_UNITS[u][1]})" for u in units]
    if "ep" in units and integer_epochs:
        forms.append("an integer (epochs)")
    return ", ".join(forms)


# Composer's time-string grammar (composer.core.Time.from_timestring): a number, then a unit. Parsed here
# rather than with Composer so that this module (imported by the model families) stays free of Composer.
_TIME_STRING = re.compile(r"^(.+)(iter|ep|ba|sp|tok|dur|sec)$", re.IGNORECASE)


def parse_time(value: Any) -> tuple[float, str]:
    """``(number, unit)`` of a Composer time: ``'10ba'`` -> ``(10, 'ba')``, an int -> epochs. ValueError if
    it is not one; a counted unit (not ``dur``) needs a whole number."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value, "ep"
    match = _TIME_STRING.match(value)
    if match is None:
        raise ValueError(f"not a time: {value!r}")
    number, unit = float(match.group(1)), match.group(2).lower()  # float() raises ValueError itself
    if not math.isfinite(number):
        raise ValueError(f"not a time: {value!r}")
    if unit != "dur" and number != int(number):
        raise ValueError(f"{unit} counts whole numbers: {value!r}")
    return (number if unit == "dur" else int(number)), unit


def check_time(value: Any, where: str, units: tuple[str, ...] = INTERVAL_UNITS, zero: bool = False,
               integer_epochs: bool = True) -> None:
    """``value`` is a Composer time: ``<number><unit>`` with a unit of ``units``, or an int (epochs) when
    epochs are allowed and ``integer_epochs``. Positive (or zero with ``zero``); a ``dur`` fraction at most
    1. A RecipeError names ``where`` and the accepted forms otherwise."""
    accepted = accepted_times(units, integer_epochs)
    if not integer_epochs and not isinstance(value, str):
        raise RecipeError(f"{where}={value!r} needs its unit. Use one of: {accepted}.")
    try:
        number, unit = parse_time(value)
    except (ValueError, OverflowError) as err:
        whole = "whole numbers" in str(err)
        problem = ": batches, epochs, samples and tokens are whole numbers" if whole else " is not a time"
        raise RecipeError(f"{where}={value!r}{problem}. Use one of: {accepted}.") from None
    if unit not in units:
        raise RecipeError(f"{where}={value!r}: the unit {unit!r} is not accepted here. Use one of: {accepted}.")
    if number < 0 or (number == 0 and not zero):
        raise RecipeError(f"{where}={value!r} must be {'zero or more' if zero else 'more than zero'}. Use one of: "
                          f"{accepted}.")
    if unit == "dur" and number > 1:
        raise RecipeError(f"{where}={value!r}: a dur value is a fraction of max_duration, at most 1.0dur.")


def check_range(value: Any, where: str, minimum: float, maximum: Optional[float] = None, also: tuple = ()) -> None:
    """A number in ``[minimum, maximum]`` (or one of ``also``); other types pass (their type is checked
    elsewhere, e.g. ``'auto'``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if (value >= minimum and (maximum is None or value <= maximum)) or value in also:
        return
    if maximum is not None:
        wanted = f"between {minimum} and {maximum}"
    elif minimum in (0, 1) and isinstance(minimum, int):  # an int minimum: an integer key
        wanted = "a positive integer" if minimum == 1 else "a non-negative integer"
    else:
        wanted = f"at least {minimum}"
    if also:
        wanted = " or ".join(str(a) for a in also) + f" or {wanted}"
    raise RecipeError(f"{where}={value!r} must be {wanted}.")


def check_folder_can_be_made(folder: str, what: str) -> None:
    """A local folder a run will create or write into: its nearest existing part must be a writable folder,
    not a file. ``what`` names it in the message (``"save_folder='runs/x'"``). Placeholders such as
    ``{run_name}`` may stay in ``folder``: only what exists is looked at."""
    existing = os.path.abspath(folder)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise RecipeError(f"{what} cannot be made: {existing!r} is a file, not a folder. Choose a path in a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RecipeError(f"{what} cannot be made: {existing!r} is not writable. Choose a path where you can write.")


def check_values(given: dict, schema: type, where: str = "") -> None:
    """The value rules of a dataclass schema's fields (see :func:`help_text`) for the keys in ``given``."""
    for f in dataclasses.fields(schema):
        if f.name not in given or given[f.name] is None:
            continue
        value, key = given[f.name], f"{where}{f.name}"
        if "range" in f.metadata:
            minimum, maximum, also = f.metadata["range"]
            check_range(value, key, minimum, maximum, also)
        if "time_units" in f.metadata:
            check_time(value, key, f.metadata["time_units"], f.metadata["zero_time"], f.metadata["integer_epochs"])
