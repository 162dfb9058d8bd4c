"""Composer callbacks and a logger of this recipe.

* :class:`RecipeMetadata` puts the model family, its config and the tokenizer into every checkpoint,
  so fine-tuning and export need only the checkpoint.
* :class:`RestoreRNG` loads a checkpoint's RNG state before the first resumed batch.
* :class:`TrainingSummary` prints what a person wants at the end of a run.
* :class:`SampleLog` writes which samples each rank trained on, for auditing data order.
* :class:`JSONLinesLogger` writes every logged metric to a ``.jsonl`` file
  (:func:`mosaicbert.analysis.metrics_log.read_jsonl` reads it; ``scripts/plot.py metrics`` draws it).
* :class:`RunFile`, mixed into the last two: one file that tells one story across resumptions.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from typing import Any, Callable, Optional

import torch
from composer.callbacks import CheckpointSaver
from composer.core import Callback, State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist, reproducibility

log = logging.getLogger(__name__)


class RecipeMetadata(Callback):
    """Stores ``{model_family, model_config, tokenizer_name, recipe}`` in the checkpoint's callback state."""

    def __init__(self, model_family: str, model_config: dict, tokenizer_name: str, recipe: Optional[dict] = None):
        self.metadata = {"model_family": model_family, "model_config": model_config,
                         "tokenizer_name": tokenizer_name, "recipe": recipe or {}}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.metadata)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # the running recipe's own metadata stays authoritative


def keep_lines(path: str, keep: Callable[[int, bytes], bool]) -> int:
    """Keep the lines of the file at ``path`` for which ``keep(index, line)`` holds, in order; drop the rest,
    and a last line without its newline (a write cut off mid-line). Lines up to the first dropped one are
    not moved. Returns how many lines the file holds then."""
    with open(path, "rb+") as f:
        count = 0
        while True:
            start = f.tell()
            line = f.readline()
            if not line.endswith(b"\n") or not keep(count, line):
                break
            count += 1
        rest = ([line] if line else []) + f.readlines()
        kept = [text for index, text in enumerate(rest, count) if text.endswith(b"\n") and keep(index, text)]
        f.seek(start)
        f.truncate()
        f.writelines(kept)
    return count + len(kept)


def _json_row(line: bytes) -> dict:
    try:
        row = json.loads(line)
    except ValueError:
        return {}
    return row if isinstance(row, dict) else {}


def keep_earlier_file(path: str) -> Optional[str]:
    """Move a non-empty file at ``path`` to the first free ``<root>.earlier-<n><ext>`` beside it, so that a
    new file there loses nothing; returns the new name (None when there was nothing to keep)."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return None
    root, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(f"{root}.earlier-{n}{ext}"):
        n += 1
    kept = f"{root}.earlier-{n}{ext}"
    os.replace(path, kept)
    log.warning("%s held an earlier run's lines; kept as %s. This run writes a new %s.", path, kept,
                os.path.basename(path))
    return kept


class RunFile:
    """A file of one line per event that tells one continuous story across resumptions (mixed into the
    metrics logger and :class:`SampleLog`).

    A run from batch 0 starts the file afresh; a non-empty file already at its path (an earlier run's, e.g.
    the same run_name launched again) is kept under the next free name ``<name>.earlier-<n><ext>``, with a
    warning. Its lines are on disk before every checkpoint is written
    (``state_dict``, which Composer calls on every rank while saving, flushes and syncs the file). A run
    resumed from a checkpoint first drops the lines its batches will write again (``_keep``: what was
    written after the checkpoint, or what a pre-emption cut off mid-line), then continues the file: no
    line twice, none missing.
    """

    _file = None
    _lines = 0  # lines in the file: those it held when opened, then one per write

    def _keep(self, state: State) -> Callable[[int, bytes], bool]:
        """Which lines of an existing file a run resuming at ``state`` keeps: ``keep(index, line)``."""
        raise NotImplementedError

    def _open(self, template: str, state: State, **fields) -> None:
        path = template.format(run_name=state.run_name, **fields)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if int(state.timestamp.batch) == 0 or not os.path.exists(path):
            keep_earlier_file(path)
            self._file, self._lines = open(path, "w"), 0
            return
        self._lines = keep_lines(path, self._keep(state))
        self._file = open(path, "a")

    def _write(self, line: str) -> None:
        self._file.write(line + "\n")
        self._lines += 1

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _sync(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def state_dict(self) -> dict[str, Any]:
        self._sync()
        return {}


class RestoreRNG(Callback):
    """Loads a checkpoint's RNG state right before the first resumed batch.

    Composer restores it only at an epoch boundary when the dataloader resumes by itself (streaming's
    mid-epoch resumption); without this, dropout after a mid-epoch resume would differ from an
    uninterrupted run.
    """

    def __init__(self, rng_state: list):
        self.rng_state = rng_state

    def batch_start(self, state: State, logger: Logger) -> None:
        if self.rng_state is not None:
            reproducibility.load_rng_state(self.rng_state)
            self.rng_state = None


class TrainingSummary(Callback):
    """Prints, when the trainer closes after ``fit``: first and last training loss, the last eval loss
    and masked accuracy, real (non-padding) tokens per second of training after the first ``window``
    batches (which include compilation), and the latest checkpoint. After a resume, the losses and
    tokens/s are those of this launch, and the summary says at which batch it resumed.

    It prints at ``close`` rather than ``fit_end`` because Composer's end-of-training evaluation runs
    after the ``fit_end`` callbacks."""

    def __init__(self, print_every_eval: bool = True, window: int = 20):
        self.print_every_eval = print_every_eval
        self.first_losses: list[torch.Tensor] = []
        self.last_losses: deque[torch.Tensor] = deque(maxlen=window)
        self.window = window
        self._tokens_at_window: Optional[int] = None  # Composer's token count (all ranks) when timing starts
        self.train_seconds = 0.0
        self._batch_start = 0.0
        self.eval_history: list[tuple[int, dict[str, float]]] = []
        self._fit_ended = False
        self._launch_start_batch: Optional[int] = None  # batches done before this launch's first (resume)

    def batch_start(self, state: State, logger: Logger) -> None:
        if self._launch_start_batch is None:
            self._launch_start_batch = int(state.timestamp.batch)
        self._batch_start = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        warming_up = len(self.first_losses) < self.window
        loss = state.loss.detach() if isinstance(state.loss, torch.Tensor) else torch.tensor(float(state.loss))
        (self.first_losses if warming_up else self.last_losses).append(loss)
        if warming_up:
            if len(self.first_losses) == self.window:
                self._tokens_at_window = int(state.timestamp.token)
            return
        self.train_seconds += time.perf_counter() - self._batch_start

    def eval_end(self, state: State, logger: Logger) -> None:
        values = {k: float(v) for k, v in state.eval_metric_values.items()}
        self.eval_history.append((int(state.timestamp.batch), values))
        if self.print_every_eval and dist.get_global_rank() == 0 and values:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in values.items())
            print(f"[eval @ batch {int(state.timestamp.batch)}] {shown}", flush=True)

    def fit_end(self, state: State, logger: Logger) -> None:
        self._fit_ended = True

    def close(self, state: State, logger: Logger) -> None:
        if not self._fit_ended or dist.get_global_rank() != 0:
            return
        self._fit_ended = False  # print once
        lines = ["", "=" * 72, f"Training summary: {state.run_name}", "-" * 72,
                 f"batches trained          {int(state.timestamp.batch)} ({int(state.timestamp.sample)} samples)"]
        resumed_at = self._launch_start_batch or 0
        if resumed_at:
            lines[-1] += f"; this launch resumed at batch {resumed_at}: losses and tokens/s below are its own"
        if self.first_losses:
            first = torch.stack(self.first_losses).float().mean().item()
            n = len(self.first_losses)
            first_label = f"batches {resumed_at + 1}-{resumed_at + n}" if resumed_at else f"first {n} batches"
            if self.last_losses:
                last = torch.stack(list(self.last_losses)).float().mean().item()
                lines.append(f"train loss               {first:.4f} ({first_label}) -> "
                             f"{last:.4f} (last {len(self.last_losses)})")
            else:  # a run no longer than the window has no later batches to compare with
                every = f"batches {resumed_at + 1}-{resumed_at + n}" if resumed_at else f"all {n} batches"
                lines.append(f"train loss               {first:.4f} (mean of {every})")
        if self.eval_history:
            step, values = self.eval_history[-1]
            for name, value in values.items():
                lines.append(f"{'eval ' + name:<24} {value:.4f} (at batch {step})")
        tokens = int(state.timestamp.token) - (self._tokens_at_window or 0)
        if self._tokens_at_window is not None and tokens > 0 and self.train_seconds > 0:
            lines.append(f"real tokens / s          {tokens / self.train_seconds:,.0f} "
                         f"({tokens:,.0f} tokens in {self.train_seconds:.1f} s of training steps, "
                         f"after the first {self.window} batches{' of this launch' if resumed_at else ''})")
        checkpoint = latest_checkpoint(state)
        lines.append(f"latest checkpoint        {checkpoint or '(none saved: set save_folder)'}")
        lines.append("=" * 72)
        print("\n".join(lines), flush=True)


class SampleLog(RunFile, Callback):
    """Writes which samples each rank trained on, one JSON line per batch per rank:
    ``{"batch": n, "rank": r, "samples": [...]}`` (from the collator's ``sample_idx``).

    For auditing data order: that ranks see disjoint samples, and that a resumed run (on the same or a
    different number of GPUs) continues with the samples an uninterrupted run would have seen.
    ``path`` may contain ``{run_name}`` and ``{rank}``. A resumed run keeps the lines of the batches up to
    the one it resumes at (:class:`RunFile`), whatever the number of ranks before.
    """

    def __init__(self, path: str = "runs/{run_name}/samples-rank{rank}.jsonl"):
        self.path_template = path

    def _keep(self, state: State) -> Callable[[int, bytes], bool]:
        resumed_at = int(state.timestamp.batch)  # batches after it run again
        return lambda index, line: _json_row(line).get("batch", resumed_at + 1) <= resumed_at

    def fit_start(self, state: State, logger: Logger) -> None:
        self._open(self.path_template, state, rank=dist.get_global_rank())

    def after_dataloader(self, state: State, logger: Logger) -> None:
        batch = state.batch if isinstance(state.batch, dict) else {}
        if self._file is not None and "sample_idx" in batch:
            row = {"batch": int(state.timestamp.batch) + 1, "rank": dist.get_global_rank(),
                   "samples": [int(i) for i in batch["sample_idx"]]}
            self._write(json.dumps(row))

    def fit_end(self, state: State, logger: Logger) -> None:
        self._close()


def latest_checkpoint(state: State) -> Optional[str]:
    for callback in state.callbacks:
        if isinstance(callback, CheckpointSaver) and callback.saved_checkpoints:
            return str(callback.saved_checkpoints[-1])
    return None


class JSONLinesLogger(RunFile, LoggerDestination):
    """Writes ``{"step": batch, metric: value, ...}`` lines to ``path`` (rank 0 only).

    ``path`` may contain ``{run_name}``. A run from batch 0 starts the file afresh; a resumed run
    continues it from the checkpoint it resumed (:class:`RunFile`), so the file holds one continuous
    curve. The step of a row does not say whether it was logged before the checkpoint of that step or
    after it (the next batch logs under the same step), so the checkpoint records how many lines the file
    held; of the lines after them, a resumed run keeps only evaluations of the checkpoint's step or
    earlier (the end-of-training evaluation, which it does not repeat).
    """

    def __init__(self, path: str = "runs/{run_name}/metrics.jsonl"):
        self.path_template = path
        self.path: Optional[str] = None
        self._run_name: Optional[str] = None
        self._resume: dict = {}  # this logger's part of the checkpoint the run resumed from

    def state_dict(self) -> dict[str, Any]:
        self._sync()
        return {"run_name": self._run_name, "lines": self._lines} if self._file is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)

    def _keep(self, state: State) -> Callable[[int, bytes], bool]:
        resume, self._resume = self._resume, {}  # used once: a later fit() continues its own file
        if resume.get("run_name") != state.run_name or not isinstance(resume.get("lines"), int):
            return lambda index, line: True  # no count for this file (another run's checkpoint): keep it all
        lines, resumed_at = resume["lines"], int(state.timestamp.batch)

        def keep(index: int, line: bytes) -> bool:
            if index < lines:
                return True
            row = _json_row(line)
            step = row.get("step")
            return isinstance(step, int) and step <= resumed_at and any(k.startswith("metrics/eval/") for k in row)
        return keep

    def fit_start(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0 or self._file is not None:
            return
        self._run_name = state.run_name
        self._open(self.path_template, state)
        self.path = self._file.name

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        if self._file is None:
            return
        row = {"step": step}
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.item() if value.numel() == 1 else value.tolist()
            if isinstance(value, (int, float, str, bool)) or value is None:
                row[key] = value
        self._write(json.dumps(row))

    def close(self, state: State, logger: Logger) -> None:
        self._close()

    def fit_end(self, state: State, logger: Logger) -> None:
        self._sync()
