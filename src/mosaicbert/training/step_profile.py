"""``callbacks.step_profile``: where a training step's time goes, measured inside the real loop.

A model benchmark times the model's kernels; a training run also pays for the loop around them (data
loading, Composer's events and syncs, logging). This callback runs ``torch.profiler`` over ``batches``
training batches after the first ``skip`` (compilation and warm-up) and prints, on rank 0, a table:
wall time per batch, the time the GPU spent in kernels, and the rest, when the GPU waited for the host;
then the kernels and host operations that took longest. (Busy time is the sum of kernel and copy
times, so kernels that overlap on several streams would count twice.) ``trace_path`` also writes a Chrome trace
(open it in ``chrome://tracing`` or Perfetto) to see the gaps themselves.

    python main.py yamls/mosaicbert-base.yaml callbacks.step_profile.skip=30 callbacks.step_profile.batches=5
"""

from __future__ import annotations

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


def kernel_times(averages) -> list[tuple[str, float]]:
    """``(name, self microseconds)`` of every GPU kernel and copy in a profiler's ``key_averages()``: self
    time, so each kernel counts once and not again inside every region that encloses it."""
    return [(e.key, e.self_device_time_total) for e in averages
            if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]


def summarize(profiler: torch.profiler.profile, wall_s: float, batches: int, top: int) -> dict:
    """Per-batch wall, kernel and idle milliseconds, and the longest kernels and host operations."""
    averages = profiler.key_averages()
    kernels = [(name, micros / 1e3 / batches) for name, micros in kernel_times(averages)]
    host = [(e.key, e.self_cpu_time_total / 1e3 / batches) for e in averages
            if e.device_type == torch.autograd.DeviceType.CPU and e.self_cpu_time_total > 0]
    wall_ms = 1e3 * wall_s / batches
    kernel_ms = sum(ms for _, ms in kernels)
    return {"batches": batches, "wall_ms": wall_ms, "kernel_ms": kernel_ms if kernels else None,
            "idle_ms": max(0.0, wall_ms - kernel_ms) if kernels else None,
            "top_kernels": sorted(kernels, key=lambda kv: -kv[1])[:top],
            "top_host_ops": sorted(host, key=lambda kv: -kv[1])[:top]}


def report(summary: dict) -> str:
    lines = ["", f"Step profile over {summary['batches']} batches (per batch, ms)",
             "| wall | GPU busy (kernels, copies) | GPU idle (waiting for the host) |", "|---:|---:|---:|"]
    if summary["kernel_ms"] is None:
        lines.append(f"| {summary['wall_ms']:.1f} | - | - |")
    else:
        idle_share = 100 * summary["idle_ms"] / summary["wall_ms"] if summary["wall_ms"] else 0.0
        lines.append(f"| {summary['wall_ms']:.1f} | {summary['kernel_ms']:.1f} | "
                     f"{summary['idle_ms']:.1f} ({idle_share:.0f}%) |")
    for title, rows in (("kernels", summary["top_kernels"]), ("host operations (self time)",
                                                             summary["top_host_ops"])):
        if rows:
            lines += ["", f"| longest {title} | ms per batch |", "|---|---:|"]
            lines += [f"| {name[:90]} | {ms:.2f} |" for name, ms in rows]
    if summary.get("trace"):
        lines.append(f"\nChrome trace: {summary['trace']}")
    return "\n".join(lines)
