"""Time to quality: read two time-budgeted pretraining runs and their fine-tuning results, and compare them.

``benchmarks/time_to_quality.py`` runs the experiment; this module turns its files into the comparison:

* :func:`eval_curve` reads ``(training seconds, eval loss, eval masked accuracy)`` points from a run's
  JSON-lines metrics log (``time/train_seconds`` comes from the ``time_budget`` callback), and
  :func:`write_eval_log` writes such a log back from the points; :func:`downstream_accuracy` and
  :func:`write_downstream` do the same for a fine-tuning result;
* :func:`time_to_reach` is when a curve first reaches a loss, interpolating linearly between evaluations;
* :func:`best_run` picks a sweep's representative (lowest final eval loss), and :func:`retrained_name`
  names the run that trains its setting again;
* :func:`compare` builds the summary record, :func:`markdown` the table, and
  :func:`mosaicbert.analysis.plots.plot_time_to_quality` the plot.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from ..errors import RecipeError
from .metrics_log import read_jsonl

LOSS_KEY = "metrics/eval/LanguageCrossEntropy"
ACCURACY_KEY = "metrics/eval/MaskedAccuracy"
CLOCK_KEY = "time/train_seconds"


def eval_curve(metrics_path: str) -> list[dict[str, float]]:
    """``[{"step", "seconds", "loss", "accuracy"}]`` for every evaluation in a metrics log, in order."""
    clock: dict[int, float] = {}
    evals: dict[int, dict[str, float]] = {}
    try:
        rows = read_jsonl(metrics_path)
    except FileNotFoundError:
        raise RecipeError(f"No metrics log at {metrics_path!r}: the pretraining run did not start or logs "
                          "elsewhere (loggers.jsonl.path).") from None
    for row in rows:
        step = row.get("step")
        if step is None:
            continue
        if CLOCK_KEY in row:
            clock[step] = row[CLOCK_KEY]
        if LOSS_KEY in row:
            evals.setdefault(step, {})["loss"] = row[LOSS_KEY]
        if ACCURACY_KEY in row:
            evals.setdefault(step, {})["accuracy"] = row[ACCURACY_KEY]
    if not clock:
        raise RecipeError(f"{metrics_path!r} has no {CLOCK_KEY!r}: the run was not made with the time_budget "
                          "callback (callbacks.time_budget.train_seconds=...).")
    return [{"step": step, "seconds": clock[step], "loss": values.get("loss", math.nan),
             "accuracy": values.get("accuracy", math.nan)}
            for step, values in sorted(evals.items()) if step in clock]


def write_eval_log(curve: Sequence[Mapping[str, float]], metrics_path: str) -> None:
    """A metrics log holding only ``curve``'s evaluations and their clock, which :func:`eval_curve` reads
    back as ``curve``: how a run published as a summary becomes a finished run again."""
    with open(metrics_path, "w") as f:
        for point in curve:
            f.write(json.dumps({"step": point["step"], CLOCK_KEY: point["seconds"]}) + "\n")
            f.write(json.dumps({"step": point["step"], LOSS_KEY: point["loss"], ACCURACY_KEY: point["accuracy"]})
                    + "\n")


def time_to_reach(curve: Sequence[Mapping[str, float]], loss: float, key: str = "seconds") -> Optional[float]:
    """Training seconds (or, with ``key="step"``, the step) at which ``curve`` first gets down to ``loss``
    (linear between evaluations); ``None`` if it never does. An evaluation whose loss is NaN is skipped."""
    previous = None
    for point in curve:
        if math.isnan(point["loss"]):
            continue
        if point["loss"] <= loss:
            if previous is None or previous["loss"] == point["loss"]:
                return point[key]
            fraction = (previous["loss"] - loss) / (previous["loss"] - point["loss"])
            return previous[key] + fraction * (point[key] - previous[key])
        previous = point
    return None


def retrained_name(name: str) -> str:
    """The run that trains run ``name``'s setting again at the same budget (a summary's sweep runs keep no
    checkpoint to fine-tune)."""
    return f"{name}-again"


def best_run(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """The name of the run whose last evaluation has the lowest loss (a sweep's representative); a run that
    ended at NaN (diverged) is never chosen over one that did not."""
    if not curves:
        raise RecipeError("No runs to choose the best of.")
    empty = [name for name, curve in curves.items() if not curve]
    if empty:
        raise RecipeError(f"Run {empty[0]!r} logged no evaluation; it needs eval_loader and eval_every_seconds.")
    return min(curves, key=lambda name: _finite_or_inf(curves[name][-1]["loss"]))


def _finite_or_inf(loss: float) -> float:
    return loss if math.isfinite(loss) else math.inf


def downstream_accuracy(results_path: str, task: str) -> dict[str, float]:
    """``{"mean", "std", "n"}`` of a task's accuracy over seeds from a ``glue.py`` results.json."""
    try:
        with open(results_path) as f:
            results = json.load(f)
    except FileNotFoundError:
        raise RecipeError(f"No fine-tuning results at {results_path!r}: glue.py did not finish.") from None
    stats = results.get("tasks", {}).get(task, {})
    if "accuracy" not in stats:
        raise RecipeError(f"{results_path!r} has no 'accuracy' for task {task!r} (it has {sorted(stats)}): the "
                          "task's metrics must include accuracy.")
    return dict(stats["accuracy"])


def write_downstream(accuracy: Mapping[str, float], task: str, results_path: str) -> None:
    """A results.json holding only ``task``'s accuracy statistics, which :func:`downstream_accuracy` reads
    back as ``accuracy``: how a published fine-tuning result counts as done again."""
    os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
    with open(results_path, "w") as f:
        json.dump({"tasks": {task: {"accuracy": dict(accuracy)}}}, f, indent=2)


def compare(runs: Mapping[str, Mapping[str, Any]], baseline: str, candidate: str) -> dict[str, Any]:
    """The summary: per run its curve, final loss/accuracy, downstream accuracy; and when ``candidate``
    reaches ``baseline``'s final eval loss, as seconds and as a fraction of the baseline's time."""
    rows = {}
    for name, run in runs.items():
        curve = run["curve"]
        if not curve:
            raise RecipeError(f"Run {name!r} logged no evaluation; it needs eval_loader and eval_every_seconds.")
        final = curve[-1]
        rows[name] = {"final_seconds": final["seconds"], "final_step": final["step"], "final_loss": final["loss"],
                      "final_accuracy": final["accuracy"], "downstream": run.get("downstream"), "curve": curve}
    target = rows[baseline]["final_loss"]
    reached = time_to_reach(rows[candidate]["curve"], target)
    base_time = rows[baseline]["final_seconds"]
    return {
        "baseline": baseline, "candidate": candidate, "runs": rows,
        "target_loss": target,
        "candidate_seconds_to_target": reached,
        "fraction_of_baseline_time": None if reached is None else reached / base_time,
    }


def markdown(summary: Mapping[str, Any], labels: Optional[Mapping[str, str]] = None) -> str:
    """The comparison table and the time-to-quality line, in markdown."""
    labels = labels or {}
    lines = ["| model | training time (s) | steps | final eval loss | final masked acc. (%) | downstream acc. (%) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in summary["runs"].items():
        down = row.get("downstream")
        down_cell = "–" if not down else (f"{100 * down['mean']:.2f} ± {100 * down['std']:.2f} (n={down['n']})")
        lines.append(f"| {labels.get(name, name)} | {row['final_seconds']:.0f} | {row['final_step']} | "
                     f"{row['final_loss']:.4f} | {100 * row['final_accuracy']:.2f} | {down_cell} |")
    base, cand = summary["baseline"], summary["candidate"]
    reached = summary["candidate_seconds_to_target"]
    lines.append("")
    if reached is None:
        lines.append(f"{labels.get(cand, cand)} did not reach {labels.get(base, base)}'s final eval loss "
                     f"({summary['target_loss']:.4f}) within its budget.")
    else:
        lines.append(f"{labels.get(cand, cand)} reaches {labels.get(base, base)}'s final eval loss "
                     f"({summary['target_loss']:.4f}) after {reached:.0f} s of training: "
                     f"{100 * summary['fraction_of_baseline_time']:.0f}% of {labels.get(base, base)}'s "
                     f"{summary['runs'][base]['final_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"
