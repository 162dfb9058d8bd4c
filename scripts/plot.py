"""Draw the plots of this repo.

    python scripts/plot.py metrics runs/demo/metrics.jsonl --out runs/demo/loss.png
    python scripts/plot.py benchmark benchmarks/published/throughput.json --out docs/throughput.png
    python scripts/plot.py sweep benchmarks/published/time_to_quality_sweep.json --out docs/time_to_quality_sweep.png
    python scripts/plot.py long benchmarks/published/time_to_quality_sweep.json --out docs/time_to_quality_600s.png
"""

import argparse
import json
import os
import sys

from mosaicbert.analysis.plots import latest_results, plot_metrics, plot_throughput, plot_time_to_quality
from mosaicbert.analysis.time_to_quality import retrained_name, time_to_reach
from mosaicbert.errors import RecipeError, report_errors


def baseline_of(record: dict) -> str | None:
    """The model the summary compares against (written as ``baseline``; earlier summaries list it first)."""
    return record.get("baseline") or next(iter(record.get("best") or {}), None)


def plot_sweep(summary_path: str, out: str) -> None:
    """A time_to_quality.py summary's sweep: each model's best run bold, the others faint, each best setting
    trained again (its ``retrained_name``, when the summary has it) dashed, the baseline's best final loss a
    dashed black line."""
    with open(summary_path) as f:
        record = json.load(f)
    curves, best = record["curves"], record["best"]
    if not best:
        raise RecipeError(f"{summary_path}: its sweep has not finished (no best run yet; 'unfinished' lists the "
                          "runs still to train), so there is no sweep to plot.")
    bold = {f"{name} (best of {model})": curves[name] for model, name in best.items()}
    faint = {name: curve for name, curve in curves.items() if name in record["sweep"] and name not in best.values()}
    again = {f"{retrained_name(name)} (the same setting trained again)": curves[retrained_name(name)]
             for name in best.values() if retrained_name(name) in curves}
    baseline = baseline_of(record)
    target = curves[best[baseline]][-1]["loss"]
    plot_time_to_quality(bold, faint, out, target=target, target_label=f"best {baseline} run's final loss",
                         title="Time-to-quality sweep: eval loss against training time", dashed=again)


def plot_long(summary_path: str, out: str) -> None:
    """A time_to_quality.py summary's runs longer than its sweep (``--long_budget_s``), at the longest such
    budget: each finished run bold, a run cut short (under ``unfinished``) dashed to where it got, the
    baseline's final loss a dashed black line once its run has finished. Prints what it drew: each run's
    last evaluation and steps per second, and when every other run reaches the baseline's final loss."""
    with open(summary_path) as f:
        record = json.load(f)
    sweep_budget = max((run["budget_s"] for run in record.get("sweep", {}).values()), default=0.0)
    finished = {name: run for name, run in record.get("other_runs", {}).items()
                if run["budget_s"] > sweep_budget and name in record["curves"]}
    cut_short = {name: run for name, run in record.get("unfinished", {}).items()
                 if run.get("budget_s", 0.0) > sweep_budget and run.get("curve")}
    if not finished and not cut_short:
        raise RecipeError(f"{summary_path}: no run longer than the sweep's {sweep_budget:g} s has an eval curve "
                          "(time_to_quality.py trains them with --long_budget_s).")
    budget = max(run["budget_s"] for run in {**finished, **cut_short}.values())
    bold = {name: record["curves"][name] for name, run in finished.items() if run["budget_s"] == budget}
    dashed = {f"{name} (cut short at {run['curve'][-1]['seconds']:.0f} s)": run["curve"]
              for name, run in cut_short.items() if run["budget_s"] == budget}
    baseline = baseline_of(record)
    ended = next((curve for name, curve in bold.items() if finished[name]["model"] == baseline), None)
    drawn = {**{name: (curve, "") for name, curve in bold.items()},
             **{name: (run["curve"], " (cut short)") for name, run in cut_short.items() if run["budget_s"] == budget}}
    for name, (curve, note) in drawn.items():
        last = curve[-1]
        print(f"{name}{note}: {last['step']} steps in {last['seconds']:.1f} s ({last['step'] / last['seconds']:.2f} "
              f"steps/s), eval loss {last['loss']:.4f}")
    target = ended[-1]["loss"] if ended else None
    for name, (curve, _) in drawn.items():
        seconds = None if target is None or curve is ended else time_to_reach(curve, target)
        if seconds is not None:
            end = ended[-1]
            print(f"{name} reaches {baseline}'s final loss {target:.4f} at {seconds:.1f} s "
                  f"({seconds / end['seconds']:.1%} of {end['seconds']:.1f} s), step "
                  f"{time_to_reach(curve, target, key='step'):.0f} (of {end['step']})")
    plot_time_to_quality(bold, {}, out, target=target,
                         target_label=f"{baseline}'s final loss at {budget:g} s",
                         title=f"Eval loss against training time, each model's best setting for {budget:g} s",
                         dashed=dashed)


EXPECTED = {
    "metrics": "Give the metrics log of a run (loggers.jsonl.path, e.g. runs/demo/metrics.jsonl).",
    "benchmark": "Give the JSON that benchmarks/benchmark.py writes (with a 'results' list).",
    "sweep": "Give the summary that benchmarks/time_to_quality.py writes.",
    "long": "Give the summary that benchmarks/time_to_quality.py writes.",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["metrics", "benchmark", "sweep", "long"])
    parser.add_argument("inputs", nargs="+", help="metrics .jsonl files, benchmark .json files (later ones win), or "
                                                  "one time_to_quality.py summary")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()

    def draw() -> None:
        try:
            if args.kind == "metrics":
                plot_metrics(args.inputs, args.out)
            elif args.kind == "sweep":
                plot_sweep(args.inputs[0], args.out)
            elif args.kind == "long":
                plot_long(args.inputs[0], args.out)
            else:
                plot_throughput(latest_results(args.inputs), args.out)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as err:
            raise RecipeError(f"{', '.join(args.inputs)}: not what '{args.kind}' plots ({type(err).__name__}: "
                              f"{err}). {EXPECTED[args.kind]}") from None

    def run() -> None:
        missing = [path for path in args.inputs if not os.path.isfile(path)]
        if missing:
            raise RecipeError(f"No such file: {', '.join(missing)}. Give the {args.kind} file(s) to plot "
                              "(see the usage at the top of scripts/plot.py).")
        out_dir = os.path.dirname(os.path.abspath(args.out))
        made, folder = [], out_dir  # folders made for --out, removed again if nothing is drawn
        while not os.path.exists(folder):
            made.append(folder)
            folder = os.path.dirname(folder)
        os.makedirs(out_dir, exist_ok=True)
        try:
            draw()
        except BaseException:
            for folder in made:  # deepest first
                try:
                    os.rmdir(folder)
                except OSError:
                    break
            raise
        print(f"wrote {args.out}")

    return report_errors(run)


if __name__ == "__main__":
    sys.exit(main())
