"""Fine-tuning data and metrics: GLUE and custom TSV tasks, tokenized datasets, scores.

``tasks`` describes each task, ``tsv`` reads its rows (local GLUE-layout TSV or the Hugging Face hub),
``data`` tokenizes and batches them, ``metrics`` scores predictions and computes the GLUE average.
``config`` (the recipe schema), ``runner`` (the jobs behind ``glue.py``), ``results`` (tables) and
``demo_task`` (the CPU demo's task) are imported by their users, not here (the runner imports Composer).
"""

from .data import ClassificationCollator, ClassificationDataset
from .metrics import (
    accuracy,
    build_torchmetrics,
    compute_metrics,
    compute_task_metrics,
    f1,
    glue_score,
    matthews_corrcoef,
    mean_over_seeds,
    pearson,
    result_key,
    spearman,
)
from .tasks import GLUE_TASKS, TaskSpec, get_task
from .tsv import load_task_split, load_task_splits

__all__ = [
    "GLUE_TASKS", "TaskSpec", "get_task",
    "load_task_split", "load_task_splits",
    "ClassificationDataset", "ClassificationCollator",
    "accuracy", "f1", "matthews_corrcoef", "pearson", "spearman",
    "compute_metrics", "compute_task_metrics", "result_key", "build_torchmetrics",
    "glue_score", "mean_over_seeds",
]
