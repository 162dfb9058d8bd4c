"""Train for a wall-clock budget instead of a step count: ``callbacks: {time_budget: {train_seconds: 300}}``.

Composer's durations are steps, samples, tokens or epochs. :class:`TimeBudget` turns seconds into one:
after every batch it measures the training clock, estimates how many more batches fit in what is
left, and sets ``state.max_duration`` (in batches) to that. The recipe's schedule (``0.06dur`` warm-up,
linear decay) is relative to ``max_duration``, so it stretches over the budget whatever the step rate;
the estimate settles within the first few dozen batches. The recipe's own ``max_duration`` stays an
upper bound.

The training clock is wall-clock time since ``fit`` started, minus
  * evaluation (it is what a comparison at equal training time must leave out), and
  * the extra time of batches during which ``torch.compile`` compiled a new graph: such a batch is
    charged the median batch time instead, because compilation is a one-time cost that a long run
    amortises but a five-minute run would not.
Everything else counts: data loading, epoch boundaries, optimizer, logging.

With ``eval_every_seconds``, evaluation runs each time the clock passes a multiple of it (and at the
end), instead of at ``eval_interval``. The clock is logged as ``time/train_seconds`` every batch, so
eval metrics in the JSON-lines log can be plotted against training time (``benchmarks/time_to_quality.py`` does).

On several GPUs, rank 0's clock decides for all ranks (it is broadcast each batch), so every rank stops
and evaluates at the same batch. The clock and the batch estimate are saved in checkpoints: a resumed run
spends only what is left of the budget, with the learning rates the uninterrupted run would have used.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Callable, Optional

import torch
from composer.core import Callback, Event, State, Time, TimeUnit
from composer.loggers import Logger
from composer.utils import dist
from torch._dynamo.utils import counters

from ..errors import RecipeError


def compiled_graph_count() -> int:
    """Graphs torch.compile has captured in this process so far (goes up when it compiles)."""
    return int(counters["stats"]["unique_graphs"])


class TimeBudget(Callback):
    """Stops training after ``train_seconds`` of training time; see the module docstring.

    Args:
        train_seconds: the budget, in seconds of training time.
        eval_every_seconds: evaluate whenever the training clock passes a multiple of this (and at the
            end); ``None`` keeps the recipe's ``eval_interval``.
        window: batches in the running median of the batch time.
        clock: a ``() -> seconds`` function (tests pass a fake one).
        graph_count: a ``() -> int`` compile counter (tests pass a fake one).
    """

    def __init__(self, train_seconds: float, eval_every_seconds: Optional[float] = None, window: int = 50,
                 clock: Callable[[], float] = time.perf_counter,
                 graph_count: Callable[[], int] = compiled_graph_count):
        check_time_budget(train_seconds, eval_every_seconds)
        self.train_seconds = float(train_seconds)
        self.eval_every_seconds = None if eval_every_seconds is None else float(eval_every_seconds)
        self.clock = clock
        self.graph_count = graph_count
        self.batch_times: deque[float] = deque(maxlen=window)
        self.elapsed = 0.0          # the training clock, as of the last batch end (rank 0's)
        self.resumed_seconds = 0.0  # the clock at the checkpoint this run resumed from
        # Left out of the clock in this process (since fit started):
        self.compile_batches = 0    # batches charged the median instead of their own time
        self.compile_seconds = 0.0  # their own time, in total
        self.eval_seconds = 0.0
        self.upper_bound: Optional[Time] = None
        self.estimate: Optional[int] = None  # the batches max_duration was last set to
        self._device = None
        self._fit_start = 0.0
        self._batch_start = 0.0
        self._graphs_at_batch_start = 0
        self._eval_start = 0.0
        self._next_eval = self.eval_every_seconds
        self._last_eval_batch = -1
        self._eval_answer: tuple = (None, False)  # ((batch, event), answer): Composer asks once per evaluator
        self._reported = False

    # -- the clock -------------------------------------------------------------------------------
    def _now(self) -> float:
        if self._device.name == "gpu":
            torch.cuda.synchronize()  # the GPU's queued work belongs to the batch that queued it
        return self.clock()

    def typical_batch_seconds(self) -> Optional[float]:
        return statistics.median(self.batch_times) if self.batch_times else None

    def _training_clock(self, now: float) -> float:
        typical = self.typical_batch_seconds() or 0.0
        return (self.resumed_seconds + now - self._fit_start - self.eval_seconds - self.compile_seconds
                + self.compile_batches * typical)

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"elapsed": self.elapsed, "next_eval": self._next_eval, "last_eval_batch": self._last_eval_batch,
                "batch_times": list(self.batch_times), "estimate": self.estimate}

    def load_state_dict(self, state: dict) -> None:
        self.elapsed = self.resumed_seconds = float(state["elapsed"])
        self._next_eval = state["next_eval"] if self.eval_every_seconds is not None else None
        self._last_eval_batch = int(state["last_eval_batch"])
        self.batch_times.extend(state["batch_times"])
        self.estimate = state.get("estimate")  # absent from checkpoints written before it was saved

    # -- events ----------------------------------------------------------------------------------
    def fit_start(self, state: State, logger: Logger) -> None:
        self._device = state.device
        bound = state.max_duration
        if bound is not None and bound.unit == TimeUnit.EPOCH and state.dataloader_len is not None:
            # Epochs only count up after the last batch's events, too late to stop there: use batches.
            bound = Time(int(bound.value) * int(state.dataloader_len), TimeUnit.BATCH)
        self.upper_bound = bound
        if self.estimate is not None:
            # Composer does not checkpoint max_duration, and the scheduler steps before this callback's
            # first batch_end: without this, the first resumed batch would take its learning rate from a
            # schedule stretched over the recipe's upper bound.
            state.max_duration = self._capped(self.estimate)
        self._fit_start = self._now()

    def before_dataloader(self, state: State, logger: Logger) -> None:
        # No sync needed: the previous batch_end (or the evaluation after it) already waited for the GPU.
        self._batch_start = self.clock()
        self._graphs_at_batch_start = self.graph_count()

    def batch_end(self, state: State, logger: Logger) -> None:
        now = self._now()
        seconds = now - self._batch_start
        if self.graph_count() != self._graphs_at_batch_start:
            self.compile_batches += 1
            self.compile_seconds += seconds
        else:
            self.batch_times.append(seconds)
        typical = self.typical_batch_seconds()
        shared = _from_rank_zero([self._training_clock(now), typical if typical is not None else -1.0],
                                 self._device)
        self.elapsed, typical = shared[0], (shared[1] if shared[1] >= 0 else None)
        logger.log_metrics({"time/train_seconds": self.elapsed})

        batches = int(state.timestamp.batch)
        bound = self.upper_bound
        if self.elapsed >= self.train_seconds or (bound is not None and state.timestamp.get(bound.unit) >= bound):
            total = batches
        elif typical is None:
            return  # no batch time measured yet (only compilation so far): keep the upper bound
        else:
            total = batches + max(1, round((self.train_seconds - self.elapsed) / typical))
        self.estimate = total
        state.max_duration = self._capped(total)

    def _capped(self, batches: int) -> Time:
        bound = self.upper_bound  # in batches, the schedule ends there; in other units, training stops there
        if bound is not None and bound.unit == TimeUnit.BATCH and batches > bound.value:
            return bound
        return Time(batches, TimeUnit.BATCH)

    def eval_before_all(self, state: State, logger: Logger) -> None:
        self._eval_start = self._now()

    def eval_after_all(self, state: State, logger: Logger) -> None:
        self.eval_seconds += self._now() - self._eval_start
        self._last_eval_batch = int(state.timestamp.batch)

    def close(self, state: State, logger: Logger) -> None:
        # At close, not fit_end: Composer's end-of-training evaluation runs after fit_end.
        if int(state.timestamp.batch) > 0 and dist.get_global_rank() == 0 and not self._reported:
            self._reported = True
            resumed = f", {self.resumed_seconds:.1f} s of it before resuming" if self.resumed_seconds else ""
            print(f"[time_budget] {int(state.timestamp.batch)} batches in {self.elapsed:.1f} s of training{resumed} "
                  f"(budget {self.train_seconds:g} s; left out: {self.eval_seconds:.1f} s of evaluation, "
                  f"{self.compile_batches} batch(es) that compiled, {self.compile_seconds:.1f} s)", flush=True)

    # -- evaluation schedule (given to Composer as eval_interval) ----------------------------------
    def eval_due(self, state: State, event: Event) -> bool:
        """Composer's ``eval_interval`` callable: true when the clock passed the next multiple of
        ``eval_every_seconds``, and at the end of training unless that batch was just evaluated.
        Composer asks once per evaluator: every evaluator gets the same answer at a given batch."""
        key = (int(state.timestamp.batch), event)
        if self._eval_answer[0] == key:
            return self._eval_answer[1]
        if event == Event.FIT_END:
            due = key[0] != self._last_eval_batch
        elif event != Event.BATCH_END or self._next_eval is None or self.elapsed < self._next_eval:
            due = False
        else:
            while self._next_eval <= self.elapsed:
                self._next_eval += self.eval_every_seconds
            due = True
        self._eval_answer = (key, due)
        return due


def _from_rank_zero(values: list[float], device) -> list[float]:
    """Rank 0's values on every rank (so all ranks stop and evaluate at the same batch). ``device`` is
    Composer's device of the run (the tensor goes where the process group communicates)."""
    if dist.get_world_size() == 1:
        return values
    tensor = device.tensor_to_device(torch.tensor(values, dtype=torch.float64))
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def check_time_budget(train_seconds, eval_every_seconds=None) -> None:
    if not isinstance(train_seconds, (int, float)) or isinstance(train_seconds, bool) or train_seconds <= 0:
        raise RecipeError(f"callbacks.time_budget.train_seconds={train_seconds!r} must be a positive number of "
                          "seconds, e.g. train_seconds: 300 for five minutes of training.")
    if eval_every_seconds is not None and (not isinstance(eval_every_seconds, (int, float))
                                           or isinstance(eval_every_seconds, bool) or eval_every_seconds <= 0):
        raise RecipeError(f"callbacks.time_budget.eval_every_seconds={eval_every_seconds!r} must be a positive "
                          "number of seconds, or null to evaluate at eval_interval.")


def eval_interval_for(callbacks: list, default):
    """The ``eval_interval`` to give Composer: a time budget's schedule when it has one."""
    for callback in callbacks:
        if isinstance(callback, TimeBudget) and callback.eval_every_seconds is not None:
            return callback.eval_due
    return default
