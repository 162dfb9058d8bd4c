"""Data-parallel scaling: per-GPU throughput of a recipe on 1, 2, 4... GPUs of one node, through main.py.

    python benchmarks/scaling.py yamls/mosaicbert-base.yaml --gpus 1 2 4 --steps 24 --out runs/scaling \\
        --set variables.data_local=./data/c4

For each GPU count N it runs ``composer -n N main.py <recipe>`` for ``--steps`` optimizer steps at the
recipe's global batch (so N GPUs each take 1/N of it, in the recipe's microbatches), without evaluation or
checkpoints. From the run's metrics log it takes each step's wall time (Composer's ``time/train``) and
tokens (``time/token``, real tokens over all ranks), and reports the **median** per-step throughput over
the steps after the first ``--warmup`` (which include compilation): a one-off stall, such as a
recompilation, does not move it. SpeedMonitor's window over the same steps, which does include such
stalls, is reported beside it. Scaling efficiency at N GPUs is (median throughput at N) /
(N x median throughput at 1). Prints a table, writes ``<out>/scaling.json`` and a plot.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

from mosaicbert.errors import RecipeError, report_errors
from mosaicbert.analysis.plots import plot_scaling
from mosaicbert.training.cli import log_tail

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="pretraining recipe, e.g. yamls/mosaicbert-base.yaml")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4], help="GPU counts (default 1 2 4)")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per run (default 24)")
    parser.add_argument("--warmup", type=int, default=8, help="steps left out of the throughput (default 8)")
    parser.add_argument("--out", default="runs/scaling", help="output folder (default runs/scaling)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra main.py overrides (e.g. variables.data_local=...)")
    parser.add_argument("--launcher_args", default="", help="extra composer launcher arguments, as one string: "
                                                             "--launcher_args='--master_port 29600'")
    parser.add_argument("--from_metrics", nargs="+", default=None, metavar="N=PATH[:STEPS:WARMUP]",
                        help="no runs: build the table from existing metrics logs, e.g. 1=a/metrics.jsonl "
                             "4=b/metrics.jsonl:16:6 (a run's own steps and warm-up; default --steps, --warmup)")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        raise RecipeError(f"--warmup {args.warmup}: use at least 1. The first step includes compilation, and "
                          "Composer's SpeedMonitor needs one step before its window.")
    if args.warmup >= args.steps:
        raise RecipeError(f"--warmup {args.warmup} must be below --steps {args.steps}: the throughput is measured "
                          "over the steps after the warm-up.")
    return args


def run_one(n: int, args) -> dict:
    folder = os.path.join(args.out, f"gpus{n}")
    os.makedirs(folder, exist_ok=True)
    metrics = os.path.join(folder, "metrics.jsonl")
    window = args.steps - args.warmup
    values = {
        "run_name": f"scaling-{n}gpu", "max_duration": f"{args.steps}ba", "eval_loader": "null",
        "save_folder": "null", "progress_bar": "false", "console_log_interval": f"{args.steps}ba",
        "callbacks": f"{{speed_monitor: {{window_size: {window}}}, training_summary: {{}}}}",
        "loggers": f"{{jsonl: {{path: {metrics}}}}}",
    }
    command = ([sys.executable, "-m", "composer.cli.launcher", "-n", str(n), *shlex.split(args.launcher_args),
                os.path.join(REPO, "main.py"), args.recipe]
               + [f"{k}={v}" for k, v in values.items()] + list(args.overrides))
    log_path = os.path.join(folder, "train.log")
    print(f"[scaling] {n} GPU(s): log in {log_path}", flush=True)
    with open(log_path, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RecipeError(f"The {n}-GPU run failed (exit {result.returncode}); end of {log_path}:\n"
                          f"{log_tail(log_path)}")
    return throughput(metrics, args.steps, n, args.warmup)


def throughput(metrics_path: str, steps: int, n: int, warmup: int) -> dict:
    """Median per-step throughput after ``warmup`` steps, and SpeedMonitor's window at the last step."""
    import statistics

    from mosaicbert.analysis.metrics_log import read_jsonl

    clock, tokens, samples, last = {}, {}, {}, {}
    for row in read_jsonl(metrics_path):
        step = row.get("step")
        clock.update({step: row["time/train"] * 3600} if "time/train" in row else {})  # hours -> s
        tokens.update({step: row["time/token"]} if "time/token" in row else {})
        samples.update({step: row["time/sample"]} if "time/sample" in row else {})
        if step == steps:
            last.update(row)
    timed = [s for s in range(warmup + 1, steps + 1) if {s, s - 1} <= clock.keys() & tokens.keys() & samples.keys()]
    if not timed or "throughput/tokens_per_sec" not in last:
        raise RecipeError(f"{metrics_path!r} lacks per-step times or SpeedMonitor figures for steps {warmup + 1}-"
                          f"{steps}: was the run cut short?")
    seconds = {s: clock[s] - clock[s - 1] for s in timed}
    median_seconds = statistics.median(seconds.values())
    tokens_per_step = statistics.median(tokens[s] - tokens[s - 1] for s in timed)
    samples_per_step = statistics.median(samples[s] - samples[s - 1] for s in timed)
    return {
        "gpus": n,
        "tokens_per_s": tokens_per_step / median_seconds,
        "samples_per_s": samples_per_step / median_seconds,
        "step_seconds": median_seconds,
        "tokens_per_s_per_gpu": tokens_per_step / median_seconds / n,
        "slowest_step_seconds": max(seconds.values()),
        "speed_monitor_tokens_per_s": float(last["throughput/tokens_per_sec"]),
        "step_seconds_each": [round(seconds[s], 4) for s in timed],
    }


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["gpus"] == 1), None)
    lines = ["| GPUs | real tokens/s (median step) | per GPU | step s | slowest step s | SpeedMonitor window | "
             "scaling efficiency |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        eff = "–" if base is None else f"{100 * r['tokens_per_s'] / (r['gpus'] * base['tokens_per_s']):.1f}%"
        lines.append(f"| {r['gpus']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s_per_gpu']:,.0f} | "
                     f"{r['step_seconds']:.3f} | {r['slowest_step_seconds']:.3f} | "
                     f"{r['speed_monitor_tokens_per_s']:,.0f} | {eff} |")
    return "\n".join(lines) + "\n"


def saved_run(item: str, args) -> tuple[str, int, int, int]:
    """``N=PATH[:STEPS:WARMUP]`` -> (path, steps, GPUs, warm-up) for :func:`throughput`."""
    n, _, path = item.partition("=")
    steps, warmup = args.steps, args.warmup
    head, *window = path.rsplit(":", 2)
    if len(window) == 2 and all(w.isdigit() for w in window):
        path, steps, warmup = head, int(window[0]), int(window[1])
    if not n.isdigit() or not path:
        raise RecipeError(f"--from_metrics item {item!r} is not N=PATH or N=PATH:STEPS:WARMUP "
                          "(e.g. 4=runs/scaling/gpus4/metrics.jsonl:16:6).")
    return path, steps, int(n), warmup


def write(rows: list[dict], args) -> None:
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump({"recipe": args.recipe, "steps": args.steps, "warmup": args.warmup,
                   "overrides": args.overrides, "results": rows}, f, indent=2)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    if args.from_metrics:
        rows = [throughput(*saved_run(item, args)) for item in args.from_metrics]
    else:
        for n in args.gpus:
            rows.append(run_one(n, args))
            write(rows, args)  # after every run: a later failure keeps the earlier results
    write(rows, args)
    print(table(rows), flush=True)
    plot_scaling(rows, os.path.join(args.out, "scaling.png"))
    print(f"results: {os.path.join(args.out, 'scaling.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(report_errors(main))
