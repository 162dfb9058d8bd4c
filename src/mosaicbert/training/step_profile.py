"""``callbacks.step_profile``: where a training step's time goes, measured inside the real loop.

A model benchmark times the model's kernels; a training run also pays for the loop around them (data
loading, Composer's events and syncs, logging). This callback runs ``torch.profiler`` over ``batches``
training batches after the first ``skip`` (compilation and warm-up) and prints, on rank 0, a table:
wall time per batch, the time the GPU was busy (the union of its kernels, copies and memsets, so work
overlapping on several streams counts once) and the rest, when the GPU waited for the host, split into
gaps under 0.1 ms (the host launching kernels one after another no faster than they run) and longer
stalls (a sync, data loading, the loop's own work). Then the same per phase of the step, as Composer's
events delimit them (forward, loss, backward, and the rest: data, optimizer step, the loop's own work):
the host time each took, and the GPU operations launched in it with their GPU time. A phase whose host
time exceeds its GPU time kept the GPU waiting: the host could not launch its kernels as fast as they
ran. Last, the kernels and host operations that took longest. ``trace_path`` keeps the Chrome trace
(open it in ``chrome://tracing`` or Perfetto), which ``python -m mosaicbert.training.step_profile TRACE
--batches N`` summarizes again later (the GPU side and the phases).

    python main.py yamls/mosaicbert-base.yaml callbacks.step_profile.skip=30 callbacks.step_profile.batches=5
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import os
import tempfile
import time
from typing import Optional

import torch
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist

from ..errors import RecipeError


def check_step_profile(skip: int = 20, batches: int = 5, top: int = 12, where: str = "callbacks.step_profile") -> None:
    for name, value, least in (("skip", skip, 0), ("batches", batches, 1), ("top", top, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise RecipeError(f"{where}.{name}={value!r}: give a whole number of at least {least}.")


PHASE_PREFIX = "step_profile/"  # the record_function ranges that mark the phases in the trace
# The Composer event that opens a phase -> (the phase, the event that closes it). The rest of the step is
# whatever lies outside these ranges.
PHASE_EVENTS = {
    Event.BEFORE_FORWARD: ("forward", Event.AFTER_FORWARD),
    Event.BEFORE_LOSS: ("loss", Event.AFTER_LOSS),
    Event.BEFORE_BACKWARD: ("backward", Event.AFTER_BACKWARD),
}
REST_PHASE = "rest (data, optimizer step, loop)"
PHASES = [phase for phase, _ in PHASE_EVENTS.values()] + [REST_PHASE]


class StepProfile(Callback):
    """Profiles training batches ``skip`` .. ``skip + batches - 1`` (0-based) and prints the summary."""

    def __init__(self, skip: int = 20, batches: int = 5, top: int = 12, trace_path: Optional[str] = None):
        check_step_profile(skip, batches, top)
        self.skip, self.batches, self.top, self.trace_path = skip, batches, top, trace_path
        self._profiler: Optional[torch.profiler.profile] = None
        self._phase: Optional[tuple] = None  # (the open record_function range, the event that closes it)
        self._started = 0.0
        self.summary: Optional[dict] = None  # the printed figures, for callers and tests

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if self._profiler is not None:
            # A batch boundary closes a phase too: a microbatch retried after an out-of-memory error
            # (device_train_microbatch_size: auto) never reaches the event that would.
            if self._phase is not None and event in (self._phase[1], Event.BEFORE_TRAIN_BATCH,
                                                     Event.AFTER_TRAIN_BATCH):
                self._close_phase()
            if event in PHASE_EVENTS:
                self._close_phase()
                name, closing = PHASE_EVENTS[event]
                marker = torch.profiler.record_function(PHASE_PREFIX + name)
                marker.__enter__()
                self._phase = (marker, closing)
        super().run_event(event, state, logger)

    def _close_phase(self) -> None:
        if self._phase is not None:
            self._phase[0].__exit__(None, None, None)
            self._phase = None

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
        self._close_phase()
        profiler, self._profiler = self._profiler, None
        profiler.__exit__(None, None, None)
        path = self.trace_path and self.trace_path.format(rank=dist.get_global_rank(), run_name=state.run_name)
        self.summary = summarize_trace(profiler_trace(profiler, path), 1e3 * wall / self.batches, self.batches,
                                       self.top)
        averages = profiler.key_averages()
        host = [(e.key, e.self_cpu_time_total / 1e3 / self.batches) for e in averages
                if e.device_type == torch.autograd.DeviceType.CPU and e.self_cpu_time_total > 0
                and not e.key.startswith(PHASE_PREFIX)]
        self.summary["top_host_ops"] = sorted(host, key=lambda kv: -kv[1])[:self.top]
        if path:
            self.summary["trace"] = path
        if dist.get_global_rank() == 0:
            print(report(self.summary), flush=True)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._profiler is not None:  # the run ended inside the window: nothing to report
            self._close_phase()
            self._profiler.__exit__(None, None, None)
            self._profiler = None

    close = fit_end  # also when training raised inside the window (the trainer still closes)


SHORT_GAP_US = 100.0  # idle gaps shorter than this are launch-bound stretches, not stalls


GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")  # cudaLaunchKernel, cudaMemcpyAsync, cuLaunchKernel ...


def load_trace(path: str) -> list[dict]:
    """The events of a Chrome trace written by the profiler (``.json`` or ``.json.gz``)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def profiler_trace(profiler: torch.profiler.profile, path: Optional[str] = None) -> list[dict]:
    """The events of a finished profiler's Chrome trace, kept at ``path`` (made if missing) or, without one,
    written to a temporary file. The GPU side is read from the trace: it links each GPU operation to its
    launch, and files the ``record_function`` ranges on the GPU timeline apart from the kernels."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        profiler.export_chrome_trace(path)
        return load_trace(path)
    with tempfile.TemporaryDirectory() as folder:
        profiler.export_chrome_trace(os.path.join(folder, "trace.json"))
        return load_trace(os.path.join(folder, "trace.json"))


def _gpu_trace_events(trace: list[dict]) -> list[dict]:
    return [e for e in trace if e.get("cat") in GPU_CATEGORIES and float(e.get("dur", 0)) > 0]


def trace_device_events(trace: list[dict]) -> list[tuple[str, float, float]]:
    """``(name, start us, end us)`` of every GPU kernel, copy and memset in a loaded Chrome trace. Not the
    ranges that ``record_function`` (e.g. the optimizer's ``Optimizer.step#AdamW.step``) marks on the GPU
    timeline, which the trace files under another category: they span the kernels inside them and would
    count those twice."""
    return [(e["name"], float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in _gpu_trace_events(trace)]


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


def phase_times(trace: list[dict], batches: int) -> dict[str, dict]:
    """Per batch, for each phase that ``StepProfile`` marked in the trace: the host milliseconds spent in
    it (on the thread that ran the step) and the GPU operations launched meanwhile, from any thread (the
    backward pass launches from autograd's own), with their busy milliseconds (the union of their
    intervals). Operations launched outside the phases, or whose launch the trace lacks, belong to
    :data:`REST_PHASE`, whose host time is left to the caller (the wall time less the phases'). ``{}``
    when the trace has no phase ranges."""
    ranges = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"]), e["name"][len(PHASE_PREFIX):])
                    for e in trace if e.get("cat") == "user_annotation" and e.get("name", "").startswith(PHASE_PREFIX))
    if not ranges:
        return {}
    phases = {name: {"host_ms": 0.0, "ops": []} for name in PHASES}
    for start, end, name in ranges:
        phases.setdefault(name, {"host_ms": 0.0, "ops": []})["host_ms"] += (end - start) / 1e3 / batches
    phases[REST_PHASE]["host_ms"] = None
    launched_at = {e["args"]["correlation"]: float(e["ts"]) for e in trace
                   if e.get("cat") in LAUNCH_CATEGORIES and "correlation" in e.get("args", {})}
    starts = [start for start, _, _ in ranges]
    for e in _gpu_trace_events(trace):
        at = launched_at.get(e.get("args", {}).get("correlation"))
        i = -1 if at is None else bisect.bisect_right(starts, at) - 1
        name = ranges[i][2] if i >= 0 and at <= ranges[i][1] else REST_PHASE
        phases[name]["ops"].append((e["name"], float(e["ts"]), float(e["ts"]) + float(e["dur"])))
    return {name: {"host_ms": phase["host_ms"], "gpu_ops": len(phase["ops"]) / batches,
                   "gpu_ms": gpu_timeline(phase["ops"])["busy_us"] / 1e3 / batches}
            for name, phase in phases.items()}


def summarize_trace(trace: list[dict], wall_ms: Optional[float], batches: int, top: int) -> dict:
    """Per-batch figures of a step profile's Chrome trace: GPU busy and idle milliseconds (``None`` without
    GPU operations), the phases (:func:`phase_times`) and the longest kernels. ``wall_ms`` per batch (the
    host's), or None to take the span from the first GPU operation to the end of the last; the rest of the
    step's host time is then unknown (``None``), as the span is on the GPU's clock."""
    gpu = trace_device_events(trace)
    timeline = gpu_timeline(gpu)
    per_batch = 1e3 * batches
    host_wall = wall_ms is not None
    wall_ms = timeline["span_us"] / per_batch if wall_ms is None else wall_ms
    summary = {"batches": batches, "wall_ms": wall_ms, "kernel_ms": None, "gpu_ops": None, "idle_ms": None,
               "top_kernels": [], "top_host_ops": []}
    if gpu:
        busy_ms, short_ms = timeline["busy_us"] / per_batch, timeline["short_gaps_us"] / per_batch
        summary.update(kernel_ms=busy_ms, gpu_ops=len(gpu) / batches, idle_ms=max(0.0, wall_ms - busy_ms),
                       idle_short_gaps_ms=short_ms, idle_stalls_ms=max(0.0, wall_ms - busy_ms - short_ms),
                       top_kernels=[(name, us / per_batch) for name, us in kernel_times(gpu)[:top]])
    phases = phase_times(trace, batches)
    if phases and host_wall:  # the rest's host time is the host's wall time less the phases'
        marked = sum(p["host_ms"] for name, p in phases.items() if name != REST_PHASE)
        phases[REST_PHASE]["host_ms"] = max(0.0, wall_ms - marked)
    summary["phases"] = phases
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
    if summary.get("phases"):
        gpu = summary["kernel_ms"] is not None
        lines += ["", "| phase | host ms | GPU operations launched | their GPU busy ms |", "|---|---:|---:|---:|"]
        for name, phase in summary["phases"].items():
            host = "-" if phase["host_ms"] is None else f"{phase['host_ms']:.1f}"
            lines.append(f"| {name} | {host} | " + (
                f"{phase['gpu_ops']:,.0f} | {phase['gpu_ms']:.1f} |" if gpu else "- | - |"))
    for title, rows in (("kernels", summary["top_kernels"]), ("host operations (self time)",
                                                             summary["top_host_ops"])):
        if rows:
            lines += ["", f"| longest {title} | ms per batch |", "|---|---:|"]
            lines += [f"| {name[:90]} | {ms:.2f} |" for name, ms in rows]
    if summary.get("trace"):
        lines.append(f"\nChrome trace: {summary['trace']}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="The GPU side and the phases of a step profile, from a saved Chrome trace.")
    parser.add_argument("trace", help="a trace written by callbacks.step_profile.trace_path (.json or .json.gz)")
    parser.add_argument("--batches", type=int, required=True, help="batches the trace covers (step_profile.batches)")
    parser.add_argument("--top", type=int, default=12, help="longest kernels to list")
    args = parser.parse_args(argv)
    check_step_profile(batches=args.batches, top=args.top, where="step_profile")
    trace = load_trace(args.trace)
    if not trace_device_events(trace):
        raise RecipeError(f"{args.trace!r} has no GPU kernels: profile a run on a GPU (step_profile on CPU records "
                          "host operations only).")
    summary = summarize_trace(trace, None, args.batches, args.top)
    print(report(summary).replace("(per batch, ms)", "(per batch, ms; wall = first kernel to last)"))


if __name__ == "__main__":
    import sys

    from ..errors import report_errors

    sys.exit(report_errors(main))
