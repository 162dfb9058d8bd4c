"""Plain numpy implementations of the fine-tuning metrics (no scipy / scikit-learn): the independent
reference that tests check the reported torchmetrics values against."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from mosaicbert.finetune.metrics import result_key
from mosaicbert.finetune.tasks import TaskSpec

ArrayLike = np.ndarray | Sequence[float] | torch.Tensor


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


def compute_task_metrics(task: TaskSpec,
                         outputs_by_split: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> dict[str, float]:
    """All evaluation splits' metrics, flat: ``{split: (predictions, labels)}`` -> ``{result_key: value}``."""
    results: dict[str, float] = {}
    for split, (predictions, labels) in outputs_by_split.items():
        for metric, value in compute_metrics(task, predictions, labels).items():
            results[result_key(task, split, metric)] = value
    return results


