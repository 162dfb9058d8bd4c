"""Reading task data: local TSV files in the GLUE layout, or the Hugging Face hub.

GLUE files are tab-separated and *not* CSV-quoted: a sentence may start with ``"`` and contain
unbalanced quotes, so lines are split on tabs only (a csv reader with default quoting would silently
merge lines). Lines are split on ``\\n`` only, read as bytes, so a stray ``\\r`` inside a sentence does not
break a row in two and line numbers in error messages match what an editor shows.

Every problem a user can fix (missing file, wrong layout, bad label) raises RecipeError naming the file,
the line and the fix.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import RecipeError, describe
from ..tokenizer import hub_reachable
from .tasks import TaskSpec

log = logging.getLogger(__name__)

Row = dict[str, object]  # text columns by name (str) and "label" (int class id, or float for regression)
PathLike = str | os.PathLike


def load_task_split(task: TaskSpec, data_dir: PathLike | None, split: str) -> list[Row]:
    """Rows of one split: ``{<text column>: str, ..., "label": int | float}``.

    Args:
        task: the task (a GLUE entry of GLUE_TASKS, or a custom TaskSpec).
        data_dir: GLUE tasks: the folder in the GLUE TSV layout (``<data_dir>/SST-2/train.tsv``), or
            ``None`` to download from the Hugging Face hub. Custom tasks: the folder holding the task's
            files; ``None`` uses the task's own ``data_dir``.
        split: ``train`` or one of ``task.eval_splits``.

    Rows whose label is empty (unlabelled test files) are left out of evaluation splits.
    """
    file_name = task.file_for_split(split)  # validates the split name first
    folder = task_folder(task, data_dir)
    if folder is None:
        return load_hub_split(task, split)
    path = folder / file_name
    if not path.is_file():
        raise _missing_file_error(task, path)
    return read_task_tsv(task, path, is_train=(split == "train"))


def load_task_splits(task: TaskSpec, data_dir: PathLike | None) -> dict[str, list[Row]]:
    """Every split of the task (``train`` and the evaluation splits) by name."""
    return {split: load_task_split(task, data_dir, split) for split in task.splits}


def task_folder(task: TaskSpec, data_dir: PathLike | None) -> Path | None:
    """The folder holding the task's files, or ``None`` when a GLUE task should come from the hub."""
    if task.glue_dir is not None:
        return None if data_dir is None else Path(data_dir) / task.glue_dir
    folder = task.data_dir if task.data_dir is not None else data_dir  # the task's own folder first
    if folder is None:
        raise RecipeError(
            f"Custom task {task.name!r} has no data folder: neither the task's data_dir nor a data_dir "
            f"for the run is set. Fix: set data_dir in the task's YAML to the folder holding "
            f"{task.train_file} and {', '.join(task.eval_files.values()) or 'its eval files'}."
        )
    return Path(folder)


def _missing_file_error(task: TaskSpec, path: Path) -> RecipeError:
    """Name the expected path and the ways to provide the data."""
    if task.glue_dir is not None:
        names = (task.train_file, *task.eval_files.values())
        files = " and ".join(f"{task.glue_dir}/{name}" for name in names)
        return RecipeError(
            f"GLUE task {task.name!r}: file not found: {path}. Fix: either set data_dir to a folder in the "
            f"GLUE TSV layout (the folder holding {files}, as unpacked from the official GLUE download), "
            f"or leave data_dir unset with the Hugging Face hub reachable so the data is downloaded as "
            f"datasets.load_dataset({task.hf_path!r}, {task.hf_config!r})."
        )
    return RecipeError(
        f"Custom task {task.name!r}: file not found: {path}. Fix: set the task's data_dir to the folder "
        f"holding its files, and train_file / eval_files to their names in that folder."
    )


# ----------------------------------------------------------------------------------------------------
# Local TSV
# ----------------------------------------------------------------------------------------------------

def read_task_tsv(task: TaskSpec, path: PathLike, is_train: bool = True) -> list[Row]:
    """Parse and validate one TSV file of ``task``.

    Rows with an empty label are skipped when ``is_train`` is False (unlabelled test rows) and are an
    error in training files, where a missing label means a broken file.
    """
    path = Path(path)
    lines = _split_lines(path)
    columns = _read_columns(task, path, lines)
    text_index = [_column_index(task, path, columns, name) for name in task.text_columns]
    label_index = _column_index(task, path, columns, task.label_column)

    rows: list[Row] = []
    unlabelled = 0
    for line_no, fields in lines:
        if len(fields) != len(columns):
            raise _field_count_error(task, path, line_no, len(fields), len(columns))
        raw_label = fields[label_index].strip()
        if not raw_label:
            if is_train:
                raise RecipeError(
                    f"{path}, line {line_no}: the label column {task.label_column!r} is empty in a training "
                    f"file. Fix: {_fix_line(task)}."
                )
            unlabelled += 1
            continue
        row: Row = {name: fields[i] for name, i in zip(task.text_columns, text_index)}
        row["label"] = parse_label(task, raw_label, path, line_no)
        rows.append(row)

    if not rows and not unlabelled:
        what = f"has a header ({columns!r}) but no data rows" if task.has_header else "is empty"
        raise RecipeError(f"{path} {what}. Fix: {_fix_file(task)}.")
    if not rows:
        raise RecipeError(
            f"{path} has no labelled rows (all {unlabelled} rows have an empty {task.label_column!r}). Fix: "
            f"evaluate on a file with labels (GLUE test files have none; use the dev files)."
        )
    if unlabelled:
        log.info("%s: skipped %d rows without a label", path, unlabelled)
    log.info("Task %s: read %d rows from %s", task.name, len(rows), path)
    return rows


def _split_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, tab-separated fields) for each non-blank line of a UTF-8 file."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise RecipeError(
                    f"{path}, line {line_no}: not valid UTF-8 ({err.reason} at byte {err.start}). Fix: "
                    f"re-save the file as UTF-8."
                ) from None
            if line_no == 1:
                text = text.removeprefix("\ufeff")  # MRPC's official files start with a byte-order mark
            text = text.rstrip("\r\n")
            if "\t" in text or text.strip():  # blank lines (e.g. a trailing one) carry no row; tabs make one
                yield line_no, text.split("\t")


def _read_columns(task: TaskSpec, path: Path, lines: Iterator[tuple[int, list[str]]]) -> list[str]:
    """Column names: the header line (consumed from ``lines``), or column_names for headerless files."""
    if not task.has_header:
        assert task.column_names is not None  # TaskSpec.from_dict and the GLUE table guarantee it
        return list(task.column_names)
    first = next(lines, None)
    if first is None:
        raise RecipeError(f"{path} is empty. Fix: {_fix_file(task)}.")
    return [name.strip() for name in first[1]]


def _column_index(task: TaskSpec, path: Path, columns: list[str], name: str) -> int:
    """Position of column ``name``; RecipeError naming the column and the header found."""
    if name in columns:
        return columns.index(name)
    if task.glue_dir is not None:
        fix = (f"use the official GLUE file {task.glue_dir}/{path.name}, whose header names "
               f"{name!r} (the file may belong to another task, or be a test file without labels)")
    else:
        fix = ("set text_columns / label_column in the task's YAML to names from that header, or, if "
               "the first line is data rather than a header, set has_header: false and column_names")
    raise RecipeError(f"{path}: column {name!r} not found; the header has {columns!r}. Fix: {fix}.")


def _field_count_error(task: TaskSpec, path: Path, line_no: int, found: int, expected: int) -> RecipeError:
    source = "the header" if task.has_header else "column_names"
    return RecipeError(
        f"{path}, line {line_no}: expected {expected} tab-separated fields (as in {source}) but found "
        f"{found}. Fix: {_fix_line(task)}; a sentence must not contain a tab or a line break."
    )


def parse_label(task: TaskSpec, raw: str, path: PathLike, line_no: int) -> int | float:
    """The label id (or float target) of one cell; RecipeError naming file, line, value and allowed values."""
    where = f"{path}, line {line_no}: label {raw!r} in column {task.label_column!r}"
    if task.is_regression:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise RecipeError(f"{where} is not a finite number; allowed values: real numbers. "
                              f"Fix: {_fix_line(task)}.")
        return value
    if task.label_names is not None:
        if raw in task.label_names:
            return task.label_names.index(raw)
        allowed = ", ".join(repr(name) for name in task.label_names)
        raise RecipeError(f"{where} is unknown; allowed values: {allowed}. Fix: {_fix_line(task)}"
                          f"{_label_names_hint(task)}.")
    try:
        value = int(raw)
        problem = "is out of range"
    except ValueError:
        value, problem = -1, "is not an integer"
    if not 0 <= value < task.num_labels:
        raise RecipeError(f"{where} {problem}; allowed values: integers 0..{task.num_labels - 1} "
                          f"(num_labels={task.num_labels}). Fix: {_fix_line(task)}{_label_names_hint(task)}.")
    return value


def _label_names_hint(task: TaskSpec) -> str:
    if task.glue_dir is not None:
        return ""
    if task.label_names is None:
        return ", or list the file's label strings under label_names in the task's YAML"
    return ", or leave label_names out when the file holds integer ids 0..num_labels-1"


def _fix_line(task: TaskSpec) -> str:
    if task.glue_dir is not None:
        return f"correct or remove that line (the official GLUE {task.glue_dir} files have none such)"
    return "correct or remove that line, or change the task's YAML to match the file"


def _fix_file(task: TaskSpec) -> str:
    if task.glue_dir is not None:
        return (f"replace it with the official GLUE {task.glue_dir} file, or leave data_dir unset with the "
                f"Hugging Face hub reachable")
    return "fill it with a header line and tab-separated rows, or point the task at the right file"


# ----------------------------------------------------------------------------------------------------
# Hugging Face hub
# ----------------------------------------------------------------------------------------------------

def load_hub_split(task: TaskSpec, split: str) -> list[Row]:
    """Rows of one GLUE split from ``datasets.load_dataset``, with the TSV path's column names."""
    fix = (f"either set data_dir to a folder in the GLUE TSV layout (holding {task.glue_dir}/"
           f"{task.file_for_split(split)}), or leave data_dir unset on a machine that reaches the Hugging "
           f"Face hub")
    if task.hf_path is None or task.hf_text_columns is None:
        raise RecipeError(f"Task {task.name!r} has no data_dir and is not on the Hugging Face hub. "
                          f"Fix: set data_dir to the folder holding its files.")
    if not hub_reachable():
        raise RecipeError(f"GLUE task {task.name!r} ({split}): data_dir is unset and the Hugging Face hub "
                          f"cannot be reached. Fix: {fix}.")
    try:
        import datasets

        dataset = datasets.load_dataset(task.hf_path, task.hf_config, split=split)
        columns = {name: list(dataset[name]) for name in (*task.hf_text_columns, task.hf_label_column)}
    except ImportError:
        raise RecipeError(f"GLUE task {task.name!r}: data_dir is unset and the `datasets` package is not "
                          f"installed. Fix: `pip install datasets`, or {fix.removeprefix('either ')}."
                          ) from None
    except Exception as err:  # network, auth, cache or schema problems all end the same way for a user
        raise RecipeError(f"GLUE task {task.name!r} ({split}) could not be loaded from the Hugging Face hub "
                          f"({describe(err)}). Fix: {fix}.") from None

    rows: list[Row] = []
    for i, label in enumerate(columns[task.hf_label_column]):
        if label is None or (not task.is_regression and label < 0):  # hub test splits carry label -1
            continue
        row: Row = {name: columns[hf_name][i]
                    for name, hf_name in zip(task.text_columns, task.hf_text_columns)}
        row["label"] = float(label) if task.is_regression else int(label)
        rows.append(row)
    log.info("Task %s: read %d rows of %s/%s split %s from the hub", task.name, len(rows), task.hf_path,
             task.hf_config, split)
    return rows
