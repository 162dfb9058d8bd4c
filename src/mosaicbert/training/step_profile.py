"""``callbacks.step_profile``: where a training step's time goes, measured inside the real loop.

A model benchmark times the model's kernels; a training run also pays for the loop around them (data
loading, Composer's events and syncs, logging). This callback runs ``torch.profiler`` over ``batches``
training batches after the first ``skip`` (compilation and warm-up) and prints, on rank 0, a table:
wall time per batch, the time the GPU was busy (the union of its kernels, copies and memsets, so work
overlapping on several streams counts once) and the rest, when the GPU waited for the host, split into
gaps under 0.1 ms (the host launching kernels one after another no faster than they run) and longer
stalls (a sync, data loading, the loop's own work); then the kernels and host operations that took
longest. ``trace_path`` also writes a Chrome trace (open it in ``chrome://tracing`` or Perfetto), which
``python -m mosaicbert.training.step_profile TRACE --batches N`` summarizes again later (GPU side).

    python main.py yamls/mosaicbert-base.yaml callbacks.step_profile.skip=30 callbacks.step_profile.batches=5
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from typing import Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from ..errors import RecipeError


def check_step_profile(skip: int = 20, batches: int = 5, top: int = 12, where: str = "callbacks.step_profile") -> None:
    for name, value, least in (("skip", skip, 0), ("batches", batches, 1), ("top", top, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise RecipeError(f"{where}.{name}={value!r}: give a whole number of at least {least}.")


class StepProfile(Callback):
    """Profiles training batches ``skip`` .. ``skip + batches - 1`` (0-based) and prints the summary."""

    def __init__(self, skip: int = 20, batches: int = 5, top: int = 12, trace_path: Optional[str] = None):
        check_step_profile(skip, batches, top)
        self.skip, self.batches, self.top, self.trace_path = skip, batches, top, trace_path
        self._profiler: Optional[torch.profiler.profile] = None
        self._started = 0.0
        self.summary: Optional[dict] = None  # the printed figures, for callers and tests

    def batch_start(self, state: State, logger: Logger) -> None:
        if self._profiler is None and self.summary is None and int(state.timestamp.batch) == self.skip:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.__enter__()
            self._started = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._profiler is None or int(state.timestamp.batch) < self.skip + self.batches:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - self._started
        profiler, self._profiler = self._profiler, None
        profiler.__exit__(None, None, None)
        self.summary = summarize(profiler, wall, self.batches, self.top)
        if self.trace_path:
            path = self.trace_path.format(rank=dist.get_global_rank(), run_name=state.run_name)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            profiler.export_chrome_trace(path)
            self.summary["trace"] = path
        if dist.get_global_rank() == 0:
            print(report(self.summary), flush=True)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._profiler is not None:  # the run ended inside the window: nothing to report
            self._profiler.__exit__(None, None, None)
            self._profiler = None


SHORT_GAP_US = 100.0  # idle gaps shorter than this are launch-bound stretches, not stalls


def device_events(events) -> list[tuple[str, float, float]]:
    """``(name, start us, end us)`` of every GPU kernel, copy and memset in a profiler's ``events()``. Not
    the ranges that ``record_function`` (e.g. the optimizer's ``Optimizer.step#AdamW.step``) marks on the
    GPU timeline: they span the kernels inside them and would count those twice. Such a range is flagged
    as a user annotation, and so is its host-side twin, whose name is also left out for safety."""
    events = list(events)
    annotated = {e.name for e in events if getattr(e, "is_user_annotation", False)}
    return [(e.name, e.time_range.start, e.time_range.end) for e in events
            if e.device_type == torch.autograd.DeviceType.CUDA and e.name not in annotated
            and e.time_range.end > e.time_range.start]


def trace_device_events(path: str) -> list[tuple[str, float, float]]:
    """The same from a Chrome trace written by the profiler (``.json`` or ``.json.gz``)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    return [(e["name"], float(e["ts"]), float(e["ts"]) + float(e["dur"]))
            for e in (trace["traceEvents"] if isinstance(trace, dict) else trace)
            if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and float(e.get("dur", 0)) > 0]


def kernel_times(events: list[tuple[str, float, float]]) -> list[tuple[str, float]]:
    """``(name, total microseconds)`` per kernel name, longest first."""
    totals: dict[str, float] = {}
    for name, start, end in events:
        totals[name] = totals.get(name, 0.0) + end - start
    return sorted(totals.items(), key=lambda kv: -kv[1])


def gpu_timeline(events: list[tuple[str, float, float]]) -> dict[str, float]:
    """Busy microseconds (the union of the intervals) and the idle gaps between the first start and the
    last end, split at :data:`SHORT_GAP_US`."""
    busy = short = long = 0.0
    span_start = span_end = None
    for _, start, end in sorted(events, key=lambda e: e[1]):
        if span_end is None:
            span_start, span_end = start, end
            busy = end - start
            continue
        if start > span_end:
            gap = start - span_end
            if gap < SHORT_GAP_US:
                short += gap
            else:
                long += gap
        busy += max(0.0, end - max(start, span_end))
        span_end = max(span_end, end)
    span = 0.0 if span_end is None else span_end - span_start
    return {"busy_us": busy, "span_us": span, "short_gaps_us": short, "long_gaps_us": long}


def summarize_device(events: list[tuple[str, float, float]], wall_ms: Optional[float], batches: int,
                     top: int) -> dict:
    """Per-batch GPU figures of ``device_events``; ``wall_ms`` per batch, or None to take the span from the
    first kernel to the end of the last."""
    timeline = gpu_timeline(events)
    per_batch = 1e3 * batches
    wall_ms = timeline["span_us"] / per_batch if wall_ms is None else wall_ms
    busy_ms = timeline["busy_us"] / per_batch
    short_ms = timeline["short_gaps_us"] / per_batch
    return {"batches": batches, "wall_ms": wall_ms, "kernel_ms": busy_ms, "gpu_ops": len(events) / batches,
            "idle_ms": max(0.0, wall_ms - busy_ms),
            "idle_short_gaps_ms": short_ms, "idle_stalls_ms": max(0.0, wall_ms - busy_ms - short_ms),
            "top_kernels": [(name, us / per_batch) for name, us in kernel_times(events)[:top]], "top_host_ops": []}


def summarize(profiler: torch.profiler.profile, wall_s: float, batches: int, top: int) -> dict:
    """Per-batch wall, GPU busy and idle milliseconds, and the longest kernels and host operations."""
    events = profiler.events()
    wall_ms = 1e3 * wall_s / batches
    gpu = device_events(events)
    summary = summarize_device(gpu, wall_ms, batches, top) if gpu else {
        "batches": batches, "wall_ms": wall_ms, "kernel_ms": None, "gpu_ops": None, "idle_ms": None,
        "top_kernels": []}
    averages = profiler.key_averages()
    host = [(e.key, e.self_cpu_time_total / 1e3 / batches) for e in averages
            if e.device_type == torch.autograd.DeviceType.CPU and e.self_cpu_time_total > 0]
    summary["top_host_ops"] = sorted(host, key=lambda kv: -kv[1])[:top]
    return summary


def report(summary: dict) -> str:
    lines = ["", f"Step profile over {summary['batches']} batches (per batch, ms)",
             "| wall | GPU busy (kernels, copies) | GPU idle (waiting for the host) | of which in gaps < 0.1 ms | "
             "in longer stalls | GPU operations (kernels, copies, memsets) |", "|---:|---:|---:|---:|---:|---:|"]
    if summary["kernel_ms"] is None:
        lines.append(f"| {summary['wall_ms']:.1f} | - | - | - | - | - |")
    else:
        idle_share = 100 * summary["idle_ms"] / summary["wall_ms"] if summary["wall_ms"] else 0.0
        lines.append(f"| {summary['wall_ms']:.1f} | {summary['kernel_ms']:.1f} | "
                     f"{summary['idle_ms']:.1f} ({idle_share:.0f}%) | {summary['idle_short_gaps_ms']:.1f} | "
                     f"{summary['idle_stalls_ms']:.1f} | {summary['gpu_ops']:,.0f} |")
    for title, rows in (("kernels", summary["top_kernels"]), ("host operations (self time)",
                                                             summary["top_host_ops"])):
        if rows:
            lines += ["", f"| longest {title} | ms per batch |", "|---|---:|"]
            lines += [f"| {name[:90]} | {ms:.2f} |" for name, ms in rows]
    if summary.get("trace"):
        lines.append(f"\nChrome trace: {summary['trace']}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="The GPU side of a step profile, from a saved Chrome trace.")
    parser.add_argument("trace", help="a trace written by callbacks.step_profile.trace_path (.json or .json.gz)")
    parser.add_argument("--batches", type=int, required=True, help="batches the trace covers (step_profile.batches)")
    parser.add_argument("--top", type=int, default=12, help="longest kernels to list")
    args = parser.parse_args(argv)
    check_step_profile(batches=args.batches, top=args.top, where="step_profile")
    events = trace_device_events(args.trace)
    if not events:
        raise RecipeError(f"{args.trace!r} has no GPU kernels: profile a run on a GPU (step_profile on CPU records "
                          "host operations only).")
    summary = summarize_device(events, None, args.batches, args.top)
    print(report(summary).replace("(per batch, ms)", "(per batch, ms; wall = first kernel to last)"))


if __name__ == "__main__":
    import sys

    from ..errors import report_errors

    sys.exit(report_errors(main))
