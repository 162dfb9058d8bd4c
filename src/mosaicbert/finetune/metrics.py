"""Fine-tuning metrics: torchmetrics for Composer evaluation, the GLUE score, means over seeds.

Reported numbers come from the torchmetrics objects, which accumulate batch by batch inside Composer's
evaluation loop and take the classifier's raw logits (the tests check them against independent numpy
implementations). Values are fractions (0.85), not percentages.

GLUE score convention, checked against the original MosaicBERT code (mosaicml/examples,
``benchmarks/bert/glue.py`` and ``src/glue/finetuning_jobs.py``): each task's evaluators log only
MNLI: accuracy on matched and on mismatched; QQP and MRPC: accuracy and binary F1; STS-B: Spearman;
CoLA: Matthews correlation; QNLI, RTE, SST-2: accuracy. ``glue.py`` averages every logged value of a
task over its evaluators and seeds, then averages the tasks. So STS-B counts as **Spearman only** there,
whereas the GLUE leaderboard convention averages Pearson and Spearman; ``glue_score(..., stsb="mean")``
gives the latter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torchmetrics
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassMatthewsCorrCoef,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from .tasks import GLUE_TASKS, TaskSpec

log = logging.getLogger(__name__)


def result_key(task: TaskSpec, split: str, metric: str) -> str:
    """Name of a metric in a task's flat results: ``accuracy``, or ``accuracy_matched`` when the task
    has several evaluation splits (MNLI: validation_matched -> matched)."""
    if len(task.eval_files) == 1:
        return metric
    return f"{metric}_{split.removeprefix('validation_')}"


# ----------------------------------------------------------------------------------------------------
# torchmetrics, for Composer evaluation
# ----------------------------------------------------------------------------------------------------

class ArgmaxBinaryF1Score(BinaryF1Score):
    """BinaryF1Score (positive class 1) that also takes logits of shape (N, 2), as a classifier emits.

    Plain BinaryF1Score expects one score per example; the argmax turns two-class logits into class ids,
    which it counts as hard predictions.
    """

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=-1)
        super().update(preds, target.long())


class ZeroIfUndefinedMatthews(MulticlassMatthewsCorrCoef):
    """Matthews correlation (Gorodkin's R_K; the usual MCC for two classes), 0.0 where it is undefined.

    It is undefined when every prediction, or every label, falls in one class. torchmetrics' two-class rule
    adds eps to the counts there instead, which gives a small non-zero value for unbalanced labels (0.026 for
    a CoLA dev set when only "acceptable" is predicted), and 1.0 or -1.0 when all labels are one class.
    """

    def compute(self) -> torch.Tensor:
        confusion = self.confmat.double()  # rows: true class, columns: predicted
        true_counts, pred_counts = confusion.sum(dim=1), confusion.sum(dim=0)
        n, correct = confusion.sum(), confusion.trace()
        numerator = correct * n - true_counts @ pred_counts
        denominator = (n * n - pred_counts @ pred_counts) * (n * n - true_counts @ true_counts)
        if denominator == 0:
            return torch.tensor(0.0, device=confusion.device)
        return (numerator / denominator.sqrt()).float()


class _RegressionInputs:
    """Flattens (N, 1) outputs to (N,) and casts to float: correlation metrics want 1-D float inputs.

    A correlation with a constant side is undefined; torchmetrics' Pearson returns NaN for it (a regressor
    that collapsed to one value), which would turn the STS-B mean and the GLUE average into NaN. It counts
    as 0.0 here, as Matthews correlation does for one predicted class.
    """

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds.reshape(-1).float(), target.reshape(-1).float())  # type: ignore[misc]

    def compute(self) -> torch.Tensor:
        return torch.nan_to_num(super().compute(), nan=0.0)  # type: ignore[misc]


class FlatPearsonCorrCoef(_RegressionInputs, PearsonCorrCoef):
    """PearsonCorrCoef accepting (N, 1) regression outputs."""


class FlatSpearmanCorrCoef(_RegressionInputs, SpearmanCorrCoef):
    """SpearmanCorrCoef accepting (N, 1) regression outputs (ties get average ranks)."""


def build_torchmetrics(task: TaskSpec) -> dict[str, torchmetrics.Metric]:
    """Fresh torchmetrics objects for the task's metrics, keyed by metric name."""
    builders = {
        "accuracy": lambda: MulticlassAccuracy(num_classes=task.num_labels, average="micro"),
        "f1": ArgmaxBinaryF1Score,
        "matthews": lambda: ZeroIfUndefinedMatthews(num_classes=task.num_labels),
        "pearson": FlatPearsonCorrCoef,
        "spearman": FlatSpearmanCorrCoef,
    }
    return {name: builders[name]() for name in task.metrics}


# ----------------------------------------------------------------------------------------------------
# GLUE score and seeds
# ----------------------------------------------------------------------------------------------------

GLUE_ORDER = ("mnli", "qnli", "qqp", "rte", "sst2", "mrpc", "cola", "stsb")

# The result keys averaged into each task's GLUE score (see the module docstring for the source).
GLUE_SCORE_METRICS: dict[str, tuple[str, ...]] = {
    "mnli": tuple(result_key(GLUE_TASKS["mnli"], split, "accuracy")
                  for split in GLUE_TASKS["mnli"].eval_splits),  # accuracy_matched, accuracy_mismatched
    "qnli": ("accuracy",),
    "qqp": ("accuracy", "f1"),
    "rte": ("accuracy",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "cola": ("matthews",),
    "stsb": ("spearman",),
}
STSB_CONVENTIONS = {"spearman": ("spearman",), "mean": ("pearson", "spearman")}


def _value(task: str, metrics: Mapping[str, object], key: str) -> float:
    """A metric as a float; accepts plain floats and mean_over_seeds' ``{"mean": ...}`` entries."""
    if key not in metrics:
        raise ValueError(f"GLUE score: task {task!r} lacks metric {key!r} (has {sorted(metrics)})")
    value = metrics[key]
    if isinstance(value, Mapping):
        value = value["mean"]
    return float(value)  # type: ignore[arg-type]


def glue_score(results: Mapping[str, Mapping[str, object]], stsb: str = "spearman") -> dict:
    """Per-task GLUE scores and their average over the GLUE tasks present.

    Args:
        results: task name -> flat metrics (``{result_key: value}``, or the output of
            :func:`mean_over_seeds`). MNLI needs ``accuracy_matched`` and ``accuracy_mismatched``.
        stsb: ``"spearman"`` (default; the original MosaicBERT code) or ``"mean"`` (mean of Pearson and
            Spearman, the GLUE leaderboard convention).

    Returns:
        ``{"tasks": {task: score}, "glue": average or None, "missing": [GLUE tasks absent],
        "ignored": [non-GLUE names in results], "stsb_metric": stsb}``.
    """
    if stsb not in STSB_CONVENTIONS:
        raise ValueError(f"stsb must be one of {list(STSB_CONVENTIONS)} (got {stsb!r})")
    rules = dict(GLUE_SCORE_METRICS, stsb=STSB_CONVENTIONS[stsb])
    scores = {
        task: float(np.mean([_value(task, results[task], key) for key in rules[task]]))
        for task in GLUE_ORDER if task in results
    }
    missing = [task for task in GLUE_ORDER if task not in results]
    if missing:
        log.info("GLUE average over %d tasks; missing: %s", len(scores), ", ".join(missing))
    return {
        "tasks": scores,
        "glue": float(np.mean(list(scores.values()))) if scores else None,
        "missing": missing,
        "ignored": sorted(name for name in results if name not in GLUE_SCORE_METRICS),
        "stsb_metric": stsb,
    }


def mean_over_seeds(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "std", "n"}}`` over runs that differ only in their seed.

    ``std`` is the sample standard deviation (ddof=1, the spread one expects of a further seed); 0.0 for
    a single run. Every run must report the same metrics, so that no mean silently covers fewer seeds.
    """
    if not runs:
        raise ValueError("mean_over_seeds needs at least one run")
    keys = set(runs[0])
    for i, run in enumerate(runs[1:], start=1):
        if set(run) != keys:
            raise ValueError(f"run {i} reports metrics {sorted(run)}, run 0 reports {sorted(keys)}")
    summary = {}
    for key in runs[0]:
        values = np.array([float(run[key]) for run in runs])
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary[key] = {"mean": float(values.mean()), "std": std, "n": len(values)}
    return summary
