"""The fine-tuning task table: what each task's files look like and how it is scored.

A :class:`TaskSpec` describes data and evaluation only (files, columns, labels, metrics, the Hugging
Face fallback). Hyperparameters belong in the YAML recipes, not here.

Split names are the Hugging Face ``glue`` split names (``train``, ``validation``,
``validation_matched``, ``validation_mismatched``) so one name selects the same data whether it is read
from local TSV files or from the hub; ``eval_files`` maps each evaluation split to its TSV file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from ..errors import RecipeError

CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews")
REGRESSION_METRICS = ("pearson", "spearman")
KNOWN_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS


@dataclass(frozen=True)
class TaskSpec:
    """How to read and score one fine-tuning task.

    Attributes:
        name: task name (``sst2``, ``mnli``, or a custom name).
        text_columns: one column (single sentence) or two (a sentence pair), by header name.
        label_column: the label's column, by header name.
        num_labels: number of classes; 1 means regression (STS-B).
        label_names: the label strings used in the files, in label-id order; ``None`` when the files
            hold integer ids ``0..num_labels-1`` (or floats, for regression).
        metrics: metric names from :data:`KNOWN_METRICS`, computed on every evaluation split.
        train_file: the training file's name inside the task folder.
        eval_files: evaluation split name -> file name inside the task folder.
        glue_dir: the task's folder name in the GLUE TSV layout (``SST-2``); ``None`` for custom tasks.
        data_dir: custom tasks only: the folder holding the files (may instead be given at load time).
        has_header: whether the files' first line names the columns.
        column_names: names of the columns of a headerless file, in file order.
        hf_path, hf_config: ``datasets.load_dataset(hf_path, hf_config)``; ``None`` when not on the hub.
        hf_text_columns: the hub dataset's text columns, aligned with ``text_columns``.
        hf_label_column: the hub dataset's label column (integer ids, or floats for regression).
    """

    name: str
    text_columns: tuple[str, ...]
    label_column: str
    num_labels: int
    metrics: tuple[str, ...]
    label_names: tuple[str, ...] | None = None
    train_file: str = "train.tsv"
    eval_files: Mapping[str, str] = field(default_factory=lambda: {"validation": "dev.tsv"})
    glue_dir: str | None = None
    data_dir: str | None = None
    has_header: bool = True
    column_names: tuple[str, ...] | None = None
    hf_path: str | None = None
    hf_config: str | None = None
    hf_text_columns: tuple[str, ...] | None = None
    hf_label_column: str = "label"

    @property
    def is_regression(self) -> bool:
        """True for a single real-valued target (num_labels == 1)."""
        return self.num_labels == 1

    @property
    def is_pair(self) -> bool:
        """True when each example is a sentence pair (fed to the model as two segments)."""
        return len(self.text_columns) == 2

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The evaluation split names, in table order."""
        return tuple(self.eval_files)

    @property
    def splits(self) -> tuple[str, ...]:
        """Every loadable split: ``train`` then the evaluation splits."""
        return ("train",) + self.eval_splits

    def file_for_split(self, split: str) -> str:
        """The TSV file name holding ``split``; RecipeError for a split the task does not have."""
        if split == "train":
            return self.train_file
        if split in self.eval_files:
            return self.eval_files[split]
        raise RecipeError(
            f"Task {self.name!r} has no split {split!r}. Fix: use one of {list(self.splits)}."
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskSpec:
        """Build a custom task from its YAML dict, validating every key (see :func:`_custom_task`)."""
        return _custom_task(d)


def _glue(name: str, glue_dir: str, text_columns: tuple[str, ...], label_column: str, num_labels: int,
          metrics: tuple[str, ...], hf_text_columns: tuple[str, ...], **kwargs: Any) -> TaskSpec:
    """One GLUE row of the table: the TSV layout of the official files plus the hub equivalent."""
    return TaskSpec(name=name, glue_dir=glue_dir, text_columns=text_columns, label_column=label_column,
                    num_labels=num_labels, metrics=metrics, hf_path="glue", hf_config=name,
                    hf_text_columns=hf_text_columns, **kwargs)


# Column names are those of the official GLUE distribution files. Label names are listed in the order
# of the hub's integer ids, so labels read from TSV and from the hub agree.
GLUE_TASKS: dict[str, TaskSpec] = {
    "mnli": _glue(
        "mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", 3, ("accuracy",),
        ("premise", "hypothesis"),
        label_names=("entailment", "neutral", "contradiction"),
        eval_files={"validation_matched": "dev_matched.tsv",
                    "validation_mismatched": "dev_mismatched.tsv"}),
    "qnli": _glue(
        "qnli", "QNLI", ("question", "sentence"), "label", 2, ("accuracy",), ("question", "sentence"),
        label_names=("entailment", "not_entailment")),
    "qqp": _glue(
        "qqp", "QQP", ("question1", "question2"), "is_duplicate", 2, ("accuracy", "f1"),
        ("question1", "question2")),
    "rte": _glue(
        "rte", "RTE", ("sentence1", "sentence2"), "label", 2, ("accuracy",), ("sentence1", "sentence2"),
        label_names=("entailment", "not_entailment")),
    "sst2": _glue(
        "sst2", "SST-2", ("sentence",), "label", 2, ("accuracy",), ("sentence",)),
    "mrpc": _glue(
        "mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", 2, ("accuracy", "f1"),
        ("sentence1", "sentence2")),
    # CoLA's train/dev files have no header: source code, label, the original author's mark, sentence.
    "cola": _glue(
        "cola", "CoLA", ("sentence",), "label", 2, ("matthews", "accuracy"), ("sentence",),
        has_header=False, column_names=("source", "label", "original_label", "sentence")),
    "stsb": _glue(
        "stsb", "STS-B", ("sentence1", "sentence2"), "score", 1, ("pearson", "spearman"),
        ("sentence1", "sentence2")),
}


# ----------------------------------------------------------------------------------------------------
# Custom tasks from YAML
# ----------------------------------------------------------------------------------------------------

_REQUIRED_KEYS = ("name", "text_columns", "label_column", "num_labels")
_OPTIONAL_KEYS = ("data_dir", "train_file", "eval_files", "label_names", "metrics", "has_header",
                  "column_names")


def _bad(task: str, key: str, problem: str, fix: str) -> RecipeError:
    """A RecipeError for one bad key of a custom task's YAML dict."""
    return RecipeError(f"Custom task {task!r}: key {key!r} {problem}. Fix: {fix}.")


def _is_list(value: Any) -> bool:
    """A YAML list (plain list or OmegaConf ListConfig), not a string."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _string_list(task: str, key: str, value: Any, fix: str) -> tuple[str, ...]:
    """A string or list of distinct non-empty strings, as a tuple."""
    items = [value] if isinstance(value, str) else list(value) if _is_list(value) else None
    if items is None or not all(isinstance(v, str) and v for v in items):
        raise _bad(task, key, f"must be a list of non-empty strings (got {value!r})", fix)
    if len(set(items)) != len(items):
        raise _bad(task, key, f"lists a name twice ({items!r})", fix)
    return tuple(items)


def _file_name(task: str, key: str, value: Any) -> str:
    """A file name relative to the task folder."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise _bad(task, key, f"must be a file name (got {value!r})",
                   f"set {key} to a file inside data_dir, e.g. 'train.tsv'")
    return str(value)


def _eval_files(task: str, value: Any) -> dict[str, str]:
    """``eval_files`` as split name -> file: a list of files (split = file stem) or a mapping."""
    fix = "give eval_files as a list of file names (e.g. [dev.tsv, test.tsv]) or a mapping split: file"
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if isinstance(value, Mapping):
        pairs = [(str(k), _file_name(task, "eval_files", v)) for k, v in value.items()]
    elif _is_list(value):
        files = [_file_name(task, "eval_files", v) for v in value]
        pairs = [(PurePath(f).name.split(".")[0], f) for f in files]
    else:
        raise _bad(task, "eval_files", f"must be a list or a mapping (got {value!r})", fix)
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names) or "train" in names or not all(names):
        raise _bad(task, "eval_files", f"gives split names {names!r}, which must be distinct, non-empty "
                   "and not 'train'", fix)
    return dict(pairs)


def _num_labels(task: str, value: Any) -> int:
    """A positive int (bools are ints in Python, but ``num_labels: true`` is a typo)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(task, "num_labels", f"must be a positive integer (got {value!r})",
                   "set num_labels to the number of classes, or 1 for a regression task")
    return value


def _metrics(task: str, value: Any, num_labels: int) -> tuple[str, ...]:
    """Metric names that exist and suit the task type."""
    allowed = REGRESSION_METRICS if num_labels == 1 else CLASSIFICATION_METRICS
    if num_labels > 2:
        allowed = tuple(m for m in allowed if m != "f1")  # f1 here is binary F1 of class 1
    kind = "a regression task" if num_labels == 1 else f"a {num_labels}-class task"
    metrics = _string_list(task, "metrics", value, f"choose from {list(allowed)}")
    for metric in metrics:
        if metric not in allowed:
            raise _bad(task, "metrics", f"lists {metric!r}, which is not available for {kind}",
                       f"choose from {list(allowed)}")
    return metrics


def _label_names(task: str, value: Any, num_labels: int) -> tuple[str, ...] | None:
    """Optional label strings, one per class, in id order."""
    if value is None:
        return None
    fix = ("list the label strings the files use, one per class in id order, or leave label_names out "
           "when the files hold integer ids 0..num_labels-1")
    if num_labels == 1:
        raise _bad(task, "label_names", "is set but num_labels is 1 (regression has no label names)",
                   "remove label_names, or set num_labels to the number of classes")
    names = _string_list(task, "label_names", value, fix)
    if len(names) != num_labels:
        raise _bad(task, "label_names", f"has {len(names)} names but num_labels is {num_labels}", fix)
    return names


def _columns(task: str, d: Mapping[str, Any]) -> tuple[tuple[str, ...], str, tuple[str, ...] | None]:
    """text_columns, label_column and (for headerless files) column_names, checked together."""
    text_columns = _string_list(task, "text_columns", d["text_columns"],
                                "name one text column, or two for sentence pairs")
    if len(text_columns) not in (1, 2):
        raise _bad(task, "text_columns", f"has {len(text_columns)} columns",
                   "name one text column, or two for sentence pairs")
    if "label" in text_columns:  # loaded rows keep the label under "label", next to the text columns
        raise _bad(task, "text_columns", "names a text column 'label'",
                   "rename that column in the files' header, or use has_header: false with column_names")
    label_column = d["label_column"]
    if not isinstance(label_column, str) or not label_column or label_column in text_columns:
        raise _bad(task, "label_column", f"must be a column name not among text_columns "
                   f"(got {label_column!r})", "set label_column to the header name of the label column")
    has_header = d.get("has_header", True)
    if not isinstance(has_header, bool):
        raise _bad(task, "has_header", f"must be true or false (got {has_header!r})",
                   "set has_header: false for files without a header line")
    column_names = d.get("column_names")
    if has_header:
        if column_names is not None:
            raise _bad(task, "column_names", "is only for headerless files (has_header: false)",
                       "remove column_names; the header line names the columns")
        return text_columns, label_column, None
    fix = "with has_header: false, list every column of the files in order under column_names"
    if column_names is None:
        raise _bad(task, "column_names", "is missing", fix)
    column_names = _string_list(task, "column_names", column_names, fix)
    for column in text_columns + (label_column,):
        if column not in column_names:
            raise _bad(task, "column_names", f"does not contain {column!r} named by text_columns / "
                       "label_column", fix)
    return text_columns, label_column, column_names


def _custom_task(d: Mapping[str, Any]) -> TaskSpec:
    """Validate a custom task's YAML dict and build its TaskSpec."""
    if not isinstance(d, Mapping):
        raise RecipeError(f"A custom task must be a mapping of keys to values (got {d!r}). Fix: give it "
                          f"the keys {list(_REQUIRED_KEYS)} and optionally {list(_OPTIONAL_KEYS)}.")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise RecipeError(f"A custom task has no valid 'name' (got {name!r}). Fix: set name to a short "
                          "identifier such as 'rotten_tomatoes'.")
    if name in GLUE_TASKS:
        raise _bad(name, "name", "is the name of a built-in GLUE task",
                   "pick another name (GLUE tasks are configured by name alone, without a task dict)")
    unknown = [k for k in d if k not in _REQUIRED_KEYS + _OPTIONAL_KEYS]
    if unknown:
        raise _bad(name, str(unknown[0]), "is not a known key",
                   f"use only {list(_REQUIRED_KEYS + _OPTIONAL_KEYS)}")
    for key in _REQUIRED_KEYS:
        if d.get(key) is None:
            raise _bad(name, key, "is missing", f"add {key} (required keys: {list(_REQUIRED_KEYS)})")

    num_labels = _num_labels(name, d["num_labels"])
    text_columns, label_column, column_names = _columns(name, d)
    default_metrics = REGRESSION_METRICS if num_labels == 1 else ("accuracy",)
    data_dir = d.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise _bad(name, "data_dir", f"must be a folder path (got {data_dir!r})",
                   "set data_dir to the folder holding the task's TSV files")
    return TaskSpec(
        name=name,
        text_columns=text_columns,
        label_column=label_column,
        num_labels=num_labels,
        metrics=_metrics(name, d.get("metrics", default_metrics), num_labels),
        label_names=_label_names(name, d.get("label_names"), num_labels),
        train_file=_file_name(name, "train_file", d.get("train_file", "train.tsv")),
        eval_files=_eval_files(name, d.get("eval_files", ["dev.tsv"])),
        data_dir=None if data_dir is None else str(data_dir),
        has_header=d.get("has_header", True),
        column_names=column_names,
    )


def get_task(name_or_dict: str | Mapping[str, Any]) -> TaskSpec:
    """A GLUE task by name, or a custom task from its YAML dict."""
    if isinstance(name_or_dict, Mapping):
        return TaskSpec.from_dict(name_or_dict)
    if name_or_dict in GLUE_TASKS:
        return GLUE_TASKS[name_or_dict]
    raise RecipeError(f"Unknown task {name_or_dict!r}. Fix: use a GLUE task ({', '.join(GLUE_TASKS)}) "
                      "or describe a custom task as a mapping with name, data_dir, text_columns, "
                      "label_column and num_labels.")


__all__ = ["TaskSpec", "GLUE_TASKS", "KNOWN_METRICS", "get_task"]
