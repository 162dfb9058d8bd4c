"""The results of a fine-tuning run: per-task means over seeds, GLUE scores, a JSON file and a markdown table.

``summarize(jobs)`` turns job records (one per task and seed: ``{"task", "seed", "status", "metrics"}``)
into ``{"tasks": {task: {metric: {mean, std, n}}}, "glue": glue_score(...), ...}``; ``markdown`` renders
it. Metric values are fractions in the JSON and percentages (x100) in the table, as the paper prints them.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from .metrics import GLUE_ORDER, GLUE_SCORE_METRICS, glue_score, mean_over_seeds
from .tasks import GLUE_TASKS


def summarize(jobs: Sequence[Mapping[str, Any]], task_order: Sequence[str], stsb_metric: str = "spearman") -> dict:
    """Means over seeds of every task whose jobs finished, per-task GLUE scores, and the GLUE average."""
    tasks: dict[str, dict] = {}
    seeds: dict[str, list[int]] = {}
    for task in task_order:
        done = [job for job in jobs if job["task"] == task and job.get("status") == "ok"]
        if done:
            tasks[task] = mean_over_seeds([job["metrics"] for job in done])
            seeds[task] = [job["seed"] for job in done]
    glue = glue_score({t: m for t, m in tasks.items() if t in GLUE_TASKS}, stsb=stsb_metric)
    baselines = {}
    for task in tasks:
        first = next(job for job in jobs if job["task"] == task and job.get("status") == "ok")
        if first.get("majority_baseline"):
            baselines[task] = first["majority_baseline"]
    failed = [{k: job.get(k) for k in ("task", "seed", "status", "error", "log")}
              for job in jobs if job.get("status") != "ok"]
    return {"tasks": tasks, "seeds": seeds, "glue": glue, "majority_baseline": baselines, "failed": failed}


def _pct(value: float) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _metric_cell(stats: Mapping[str, Mapping[str, float]]) -> str:
    parts = []
    for key, s in stats.items():
        spread = f" ± {_pct(s['std'])}" if s["n"] > 1 else ""
        parts.append(f"{key} {_pct(s['mean'])}{spread}")
    return ", ".join(parts)


def markdown(summary: Mapping[str, Any], title: Optional[str] = None) -> str:
    """The results table: per task its metrics (mean ± std over seeds), n, GLUE score; then the average."""
    glue = summary["glue"]
    lines = [f"## {title}", ""] if title else []
    lines += ["| task | n seeds | metrics (mean ± std over seeds, %) | majority class (acc %) | GLUE score (%) |",
              "|---|---:|---|---|---:|"]
    order = [t for t in GLUE_ORDER if t in summary["tasks"]] + [t for t in summary["tasks"] if t not in GLUE_TASKS]
    baselines = summary.get("majority_baseline", {})
    for task in order:
        stats = summary["tasks"][task]
        n = max(s["n"] for s in stats.values())
        score = _pct(glue["tasks"][task]) if task in glue["tasks"] else "– (not GLUE)"
        baseline = ", ".join(_pct(v) for v in baselines[task].values()) if task in baselines else "–"
        lines.append(f"| {task} | {n} | {_metric_cell(stats)} | {baseline} | {score} |")
    if glue["glue"] is not None:
        count = len(glue["tasks"])
        lines.append(f"| **GLUE average** | | over {count} of {len(GLUE_ORDER)} tasks | | **{_pct(glue['glue'])}** |")
    lines.append("")
    if glue["tasks"]:
        rule = "Spearman" if glue["stsb_metric"] == "spearman" else "mean of Pearson and Spearman"
        scored = ", ".join(f"{t}: {' & '.join(GLUE_SCORE_METRICS[t]) if t != 'stsb' else rule}"
                           for t in GLUE_ORDER)
        lines.append(f"GLUE score of a task: the mean of its scored metrics, each averaged over seeds ({scored}); "
                     "the GLUE average is the mean of the task scores present.")
        if glue["missing"]:
            lines.append(f"Missing from the GLUE average: {', '.join(glue['missing'])}.")
    if summary.get("failed"):
        lines.append("")
        lines.append("Jobs that did not finish (left out of the means): " + "; ".join(
            f"{f['task']} seed {f['seed']}: {f['status']}" + (f" ({f['error']})" if f.get("error") else "")
            for f in summary["failed"]))
    return "\n".join(lines) + "\n"


def write_results(results_dir: str, record: Mapping[str, Any], table: str) -> tuple[str, str]:
    """``results.json`` and ``results.md`` in ``results_dir`` (written to a temp name, then renamed)."""
    os.makedirs(results_dir, exist_ok=True)
    paths = (os.path.join(results_dir, "results.json"), os.path.join(results_dir, "results.md"))
    for path, text in zip(paths, (json.dumps(record, indent=2, default=str) + "\n", table)):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return paths


def keep_earlier_results(results_dir: str) -> Optional[str]:
    """Rename an earlier run's ``results.json`` / ``results.md`` in ``results_dir`` to
    ``results-<its time>.json`` / ``.md``, so a new run (e.g. of a few tasks with run_tasks) does not replace
    the earlier table. Returns the new name of the JSON file, or None when there was none."""
    json_path = os.path.join(results_dir, "results.json")
    if not os.path.exists(json_path):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(os.path.getmtime(json_path)))
    stem, n = os.path.join(results_dir, f"results-{stamp}"), 1
    while os.path.exists(stem + ".json") or os.path.exists(stem + ".md"):
        n += 1
        stem = os.path.join(results_dir, f"results-{stamp}-{n}")
    for ext in (".md", ".json"):  # the JSON last: it is what marks earlier results as present
        old = os.path.join(results_dir, "results" + ext)
        if os.path.exists(old):
            os.replace(old, stem + ext)
    return stem + ".json"
