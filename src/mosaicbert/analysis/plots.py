"""Plots people look at: throughput comparisons (benchmark JSON) and loss curves (metrics JSONL)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Optional

from ..errors import RecipeError
from .metrics_log import read_jsonl


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latest_results(paths: Sequence[str]) -> list[dict]:
    """Benchmark rows from several JSON files; a later file's row replaces an earlier one's."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        with open(path) as f:
            for row in json.load(f)["results"]:
                if "error" not in row:
                    rows[(row["variant"], row["seq"], row["batch"], row["lengths"])] = row
    return list(rows.values())


def plot_throughput(results: list[dict], path: str, title: str = "Pretraining step throughput") -> None:
    """Grouped bars: real tokens/s per variant, one group per (seq, batch, lengths)."""
    plt = _pyplot()
    ok = [r for r in results if "error" not in r]
    groups = sorted({(r["seq"], r["batch"], r["lengths"]) for r in ok})
    variants = sorted({r["variant"] for r in ok})
    fig, ax = plt.subplots(figsize=(max(8, 2.4 * len(groups)), 4.8))
    width = 0.8 / max(1, len(variants))
    for i, variant in enumerate(variants):
        values = [next((r["real_tokens_per_s"] / 1e3 for r in ok if r["variant"] == variant
                        and (r["seq"], r["batch"], r["lengths"]) == g), 0) for g in groups]
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=variant.replace(":model.config.", " "))
    ax.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"S={s} B={b}\n{lengths} rows" for s, b, lengths in groups])
    ax.set_ylabel("real (non-padding) tokens/s, thousands")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_metrics(paths: Sequence[str], path: str, keys: Sequence[str] = ("loss/train/total",
                 "metrics/eval/LanguageCrossEntropy")) -> None:
    """Loss curves from JSONLinesLogger files (one line per logged step)."""
    curves = {}
    for file in paths:
        rows = read_jsonl(file)
        for key in keys:
            points = [(r["step"], r[key]) for r in rows
                      if isinstance(r, dict) and key in r and r.get("step") is not None]
            if points:
                curves[file, key] = points
    if not curves:
        raise RecipeError(f"{', '.join(paths)}: no line holds {' or '.join(keys)}, so there is no curve to draw. "
                          "Give the metrics log a run writes (loggers.jsonl.path, e.g. runs/demo/metrics.jsonl).")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for file in paths:
        for key in keys:
            points = curves.get((file, key))
            if points:
                steps, values = zip(*points)
                style = "o-" if "eval" in key else "-"
                ax.plot(steps, values, style, label=f"{file.split('/')[-2] if '/' in file else file}: {key}",
                        markersize=3, linewidth=1)
    ax.set_xlabel("batch")
    ax.set_ylabel("masked-LM cross entropy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_time_to_quality(bold: Mapping[str, Sequence[Mapping]], faint: Mapping[str, Sequence[Mapping]], path: str,
                         target: Optional[float] = None, target_label: str = "",
                         title: str = "Eval loss against training time",
                         dashed: Optional[Mapping[str, Sequence[Mapping]]] = None) -> None:
    """Eval loss against training seconds (:func:`mosaicbert.analysis.time_to_quality.eval_curve` points):
    the ``bold`` curves labelled, the ``faint`` ones (the rest of a sweep) thin and grey, the ``dashed``
    ones labelled and dashed (a setting trained again), and a dashed black line at ``target`` (the
    baseline's final loss)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, curve in faint.items():
        ax.plot([p["seconds"] for p in curve], [p["loss"] for p in curve], "-", color="grey", alpha=0.35,
                linewidth=0.8, label="other sweep runs" if name == next(iter(faint)) else None)
    for label, curve in bold.items():
        ax.plot([p["seconds"] for p in curve], [p["loss"] for p in curve], "o-", markersize=3, linewidth=2,
                label=label)
    for label, curve in (dashed or {}).items():
        ax.plot([p["seconds"] for p in curve], [p["loss"] for p in curve], "s--", markersize=3, linewidth=1.5,
                label=label)
    if target is not None:
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=target_label or f"{target:.3f}")
    ax.set_xlabel("training time (s; evaluation and compilation excluded)")
    ax.set_ylabel("eval masked-LM cross entropy (15% masking)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scaling(rows: list[dict], path: str) -> None:
    """Per-GPU throughput for each GPU count (``benchmarks/scaling.py`` rows)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([str(r["gpus"]) for r in rows], [r["tokens_per_s_per_gpu"] / 1e3 for r in rows])
    ax.set_xlabel("GPUs")
    ax.set_ylabel("real tokens/s per GPU, thousands")
    ax.set_title("Data-parallel scaling (per-GPU throughput)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
