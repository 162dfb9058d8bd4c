"""Composer callbacks and a logger of this recipe.

* :class:`RecipeMetadata` puts the model family, its config and the tokenizer into every checkpoint,
  so fine-tuning and export need only the checkpoint.
* :class:`TrainingSummary` prints what a person wants at the end of a run.
* :class:`JSONLinesLogger` writes every logged metric to a ``.jsonl`` file (``scripts/plot_metrics.py``
  draws the loss curves from it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from typing import Any, Optional

import torch
from composer.core import Callback, Event, State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

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
            from composer.utils import reproducibility

            reproducibility.load_rng_state(self.rng_state)
            self.rng_state = None


class TrainingSummary(Callback):
    """Prints, at the end of ``fit``: first and last training loss, eval loss and masked accuracy,
    real (non-padding) tokens per second of training, and the latest checkpoint."""

    def __init__(self, print_every_eval: bool = True, window: int = 20):
        self.print_every_eval = print_every_eval
        self.first_losses: list[torch.Tensor] = []
        self.last_losses: deque[torch.Tensor] = deque(maxlen=window)
        self.window = window
        self.tokens: Optional[torch.Tensor] = None  # device-side running count: no sync per batch
        self.train_seconds = 0.0
        self._batch_start = 0.0
        self.eval_history: list[tuple[int, dict[str, float]]] = []

    def batch_start(self, state: State, logger: Logger) -> None:
        self._batch_start = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        self.train_seconds += time.perf_counter() - self._batch_start
        loss = state.loss.detach() if isinstance(state.loss, torch.Tensor) else torch.tensor(float(state.loss))
        (self.first_losses if len(self.first_losses) < self.window else self.last_losses).append(loss)
        mask = state.batch.get("attention_mask") if isinstance(state.batch, dict) else None
        if mask is not None:
            count = mask.sum()
            self.tokens = count if self.tokens is None else self.tokens + count

    def eval_end(self, state: State, logger: Logger) -> None:
        values = {k: float(v) for k, v in state.eval_metric_values.items()}
        self.eval_history.append((int(state.timestamp.batch), values))
        if self.print_every_eval and dist.get_global_rank() == 0 and values:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in values.items())
            print(f"[eval @ batch {int(state.timestamp.batch)}] {shown}", flush=True)

    def fit_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        lines = ["", "=" * 72, f"Training summary: {state.run_name}", "-" * 72,
                 f"batches trained          {int(state.timestamp.batch)} ({int(state.timestamp.sample)} samples)"]
        if self.first_losses:
            first = torch.stack(self.first_losses).float().mean().item()
            last = torch.stack(list(self.last_losses) or self.first_losses).float().mean().item()
            lines.append(f"train loss               {first:.4f} (first {len(self.first_losses)} batches) -> "
                         f"{last:.4f} (last {len(self.last_losses) or len(self.first_losses)})")
        if self.eval_history:
            step, values = self.eval_history[-1]
            for name, value in values.items():
                lines.append(f"{'eval ' + name:<25}{value:.4f} (at batch {step})")
        if self.tokens is not None and self.train_seconds > 0:
            tokens = float(self.tokens) * dist.get_world_size()
            lines.append(f"real tokens / s          {tokens / self.train_seconds:,.0f} "
                         f"({tokens:,.0f} tokens in {self.train_seconds:.1f} s of training steps)")
        checkpoint = latest_checkpoint(state)
        lines.append(f"latest checkpoint        {checkpoint or '(none saved: set save_folder)'}")
        lines.append("=" * 72)
        print("\n".join(lines), flush=True)


def latest_checkpoint(state: State) -> Optional[str]:
    from composer.callbacks import CheckpointSaver

    for callback in state.callbacks:
        if isinstance(callback, CheckpointSaver) and callback.saved_checkpoints:
            return str(callback.saved_checkpoints[-1])
    return None


class JSONLinesLogger(LoggerDestination):
    """Appends ``{"step": batch, metric: value, ...}`` lines to ``path`` (rank 0 only).

    ``path`` may contain ``{run_name}``.
    """

    def __init__(self, path: str = "runs/{run_name}/metrics.jsonl"):
        self.path_template = path
        self.path: Optional[str] = None
        self._file = None

    def init(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        self.path = self.path_template.format(run_name=state.run_name)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "a")

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        if self._file is None:
            return
        row = {"step": step}
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.item() if value.numel() == 1 else value.tolist()
            if isinstance(value, (int, float, str, bool)) or value is None:
                row[key] = value
        self._file.write(json.dumps(row) + "\n")

    def close(self, state: State, logger: Logger) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._file is not None:
            self._file.flush()
