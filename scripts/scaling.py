"""Data-parallel scaling: per-GPU throughput of a recipe on 1, 2, 4... GPUs of one node, through main.py.

    python scripts/scaling.py yamls/mosaicbert-base.yaml --gpus 1 2 4 --steps 24 --out runs/scaling \\
        --set variables.data_local=./data/c4

For each GPU count N it runs ``composer -n N main.py <recipe>`` for ``--steps`` optimizer steps at the
recipe's global batch (so N GPUs each take 1/N of it, in the recipe's microbatches), without evaluation or
checkpoints, and reads Composer's SpeedMonitor from the run's metrics log: the last window (the steps
after the first ``--warmup``, which include compilation). Scaling efficiency at N GPUs is
(throughput at N) / (N x throughput at 1). Prints a table, writes ``<out>/scaling.json`` and a plot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from mosaicbert.errors import RecipeError, report_errors

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
    parser.add_argument("--launcher_args", nargs="*", default=[], help="extra composer launcher arguments")
    args = parser.parse_args(argv)
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
    command = ([sys.executable, "-m", "composer.cli.launcher", "-n", str(n), *args.launcher_args,
                os.path.join(REPO, "main.py"), args.recipe]
               + [f"{k}={v}" for k, v in values.items()] + list(args.overrides))
    log_path = os.path.join(folder, "train.log")
    print(f"[scaling] {n} GPU(s): log in {log_path}", flush=True)
    with open(log_path, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        with open(log_path, errors="replace") as f:
            tail = f.read()[-3000:]
        raise RecipeError(f"The {n}-GPU run failed (exit {result.returncode}); end of {log_path}:\n{tail}")
    return throughput(metrics, args.steps, n)


def throughput(metrics_path: str, steps: int, n: int) -> dict:
    """SpeedMonitor's figures at the last step (its window covers the steps after the warm-up)."""
    last = {}
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            if row.get("step") == steps:
                last.update(row)
    keys = {"tokens_per_s": "throughput/tokens_per_sec", "samples_per_s": "throughput/samples_per_sec",
            "batches_per_s": "throughput/batches_per_sec"}
    missing = [k for k in keys.values() if k not in last]
    if missing:
        raise RecipeError(f"{metrics_path!r} lacks {missing} at step {steps}: the speed_monitor window did not fill.")
    record = {name: float(last[key]) for name, key in keys.items()}
    record.update(gpus=n, tokens_per_s_per_gpu=record["tokens_per_s"] / n)
    return record


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["gpus"] == 1), None)
    lines = ["| GPUs | real tokens/s | per GPU | samples/s | step s | scaling efficiency |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        eff = "–" if base is None else f"{100 * r['tokens_per_s'] / (r['gpus'] * base['tokens_per_s']):.1f}%"
        lines.append(f"| {r['gpus']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s_per_gpu']:,.0f} | "
                     f"{r['samples_per_s']:,.0f} | {1 / r['batches_per_s']:.3f} | {eff} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
    from mosaicbert.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    gpus = [r["gpus"] for r in rows]
    ax.bar([str(g) for g in gpus], [r["tokens_per_s_per_gpu"] / 1e3 for r in rows])
    ax.set_xlabel("GPUs")
    ax.set_ylabel("real tokens/s per GPU, thousands")
    ax.set_title("Data-parallel scaling (per-GPU throughput)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    for n in args.gpus:
        rows.append(run_one(n, args))
        print(table(rows), flush=True)
        with open(os.path.join(args.out, "scaling.json"), "w") as f:
            json.dump({"recipe": args.recipe, "steps": args.steps, "warmup": args.warmup,
                       "overrides": args.overrides, "results": rows}, f, indent=2)
    plot(rows, os.path.join(args.out, "scaling.png"))
    print(f"results: {os.path.join(args.out, 'scaling.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(report_errors(main))
