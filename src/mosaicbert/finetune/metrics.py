"""Fine-tuning metrics: plain numpy functions, torchmetrics for Composer evaluation, the GLUE score.

Reported numbers come from the torchmetrics objects, which accumulate batch by batch inside Composer's
evaluation loop and take the classifier's raw logits. The numpy functions (no scipy / scikit-learn
needed) are the independent reference the tests check them against, through the same
``ComposerClassifier.update_metric`` call that evaluation makes.
Values are fractions (0.85), not percentages.

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
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torchmetrics
from torchmetrics.classification import BinaryF1Score, MatthewsCorrCoef, MulticlassAccuracy
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from .tasks import GLUE_TASKS, TaskSpec

log = logging.getLogger(__name__)

ArrayLike = np.ndarray | Sequence[float] | torch.Tensor


# ----------------------------------------------------------------------------------------------------
# Plain metrics on numpy arrays
# ----------------------------------------------------------------------------------------------------

def _pair(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D float64 arrays of the same, non-zero length."""
    p = np.asarray(_to_numpy(predictions), dtype=np.float64).reshape(-1)
    y = np.asarray(_to_numpy(labels), dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"predictions ({p.size}) and labels ({y.size}) differ in length")
    if p.size == 0:
        raise ValueError("metrics need at least one prediction")
    return p, y


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predicted class ids equal to the labels."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Binary F1 of the positive class 1: 2TP / (2TP + FP + FN); 0.0 when there are no positives at all."""
    p, y = _pair(predictions, labels)
    tp = np.sum((p == 1) & (y == 1))
    fp = np.sum((p == 1) & (y != 1))
    fn = np.sum((p != 1) & (y == 1))
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K; the usual MCC for two).

    0.0 when it is undefined (all predictions, or all labels, in one class), as scikit-learn does.
    """
    p, y = _pair(predictions, labels)
    classes, inverse = np.unique(np.concatenate([p, y]), return_inverse=True)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (inverse[p.size:], inverse[:p.size]), 1)  # rows: true class, columns: predicted
    true_counts, pred_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    numerator = correct * n - true_counts @ pred_counts
    denominator = math.sqrt((n * n - pred_counts @ pred_counts) * (n * n - true_counts @ true_counts))
    return float(numerator / denominator) if denominator else 0.0


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation; 0.0 (with a warning) when either side is constant, where it is undefined.

    A collapsed regressor (one value for every input) thus scores "no correlation" instead of NaN,
    which would otherwise poison every average it enters.
    """
    p, y = _pair(predictions, labels)
    p, y = p - p.mean(), y - y.mean()
    denominator = math.sqrt(float(p @ p) * float(y @ y))
    if denominator == 0.0:
        log.warning("Correlation undefined (constant predictions or labels); reporting 0.0")
        return 0.0
    return float(p @ y / denominator)


def average_ranks(values: ArrayLike) -> np.ndarray:
    """1-based ranks where tied values share the mean of the ranks they span (ranks 2,3 -> 2.5, 2.5)."""
    x = np.asarray(_to_numpy(values), dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts_run = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    run_id = np.cumsum(starts_run) - 1
    run_start = np.flatnonzero(starts_run)  # 0-based positions where each run of equal values starts
    run_end = np.append(run_start[1:], x.size)  # exclusive
    run_rank = (run_start + 1 + run_end) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty_like(x)
    ranks[order] = run_rank[run_id]
    return ranks


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks (ties handled)."""
    p, y = _pair(predictions, labels)
    return pearson(average_ranks(p), average_ranks(y))


METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def predictions_from_outputs(task: TaskSpec, outputs: ArrayLike) -> np.ndarray:
    """Class ids (argmax over logits of shape (N, C)) or regression values (shape (N,) or (N, 1))."""
    out = _to_numpy(outputs)
    if task.is_regression:
        return out.reshape(-1).astype(np.float64)
    if out.ndim == 2:
        return out.argmax(axis=-1)
    return out.reshape(-1)


def compute_metrics(task: TaskSpec, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """The task's metrics on one evaluation split; ``predictions`` may be logits, class ids or values."""
    preds = predictions_from_outputs(task, predictions)
    return {name: METRIC_FUNCTIONS[name](preds, labels) for name in task.metrics}


def result_key(task: TaskSpec, split: str, metric: str) -> str:
    """Name of a metric in a task's flat results: ``accuracy``, or ``accuracy_matched`` when the task
    has several evaluation splits (MNLI: validation_matched -> matched)."""
    if len(task.eval_files) == 1:
        return metric
    return f"{metric}_{split.removeprefix('validation_')}"


def compute_task_metrics(task: TaskSpec,
                         outputs_by_split: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> dict[str, float]:
    """All evaluation splits' metrics, flat: ``{split: (predictions, labels)}`` -> ``{result_key: value}``."""
    results: dict[str, float] = {}
    for split, (predictions, labels) in outputs_by_split.items():
        for metric, value in compute_metrics(task, predictions, labels).items():
            results[result_key(task, split, metric)] = value
    return results


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


class _RegressionInputs:
    """Flattens (N, 1) outputs to (N,) and casts to float: correlation metrics want 1-D float inputs."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds.reshape(-1).float(), target.reshape(-1).float())  # type: ignore[misc]


class FlatPearsonCorrCoef(_RegressionInputs, PearsonCorrCoef):
    """PearsonCorrCoef accepting (N, 1) regression outputs."""


class FlatSpearmanCorrCoef(_RegressionInputs, SpearmanCorrCoef):
    """SpearmanCorrCoef accepting (N, 1) regression outputs (ties get average ranks)."""


def build_torchmetrics(task: TaskSpec) -> dict[str, torchmetrics.Metric]:
    """Fresh torchmetrics objects for the task's metrics, keyed like :func:`compute_metrics`."""
    builders = {
        "accuracy": lambda: MulticlassAccuracy(num_classes=task.num_labels, average="micro"),
        "f1": ArgmaxBinaryF1Score,
        "matthews": lambda: MatthewsCorrCoef(task="multiclass", num_classes=task.num_labels),
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
        results: task name -> flat metrics (as from :func:`compute_task_metrics`, or the output of
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
