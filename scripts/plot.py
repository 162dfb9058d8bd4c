"""Draw the plots of this repo.

    python scripts/plot.py metrics runs/demo/metrics.jsonl --out runs/demo/loss.png
    python scripts/plot.py benchmark benchmarks/published/throughput.json --out docs/throughput.png
    python scripts/plot.py sweep benchmarks/published/time_to_quality_sweep.json --out docs/time_to_quality_sweep.png
"""

import argparse
import json
import os
import sys

from mosaicbert.analysis.plots import latest_results, plot_metrics, plot_throughput, plot_time_to_quality
from mosaicbert.analysis.time_to_quality import retrained_name
from mosaicbert.errors import RecipeError, report_errors


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
    baseline = next(iter(best))
    target = curves[best[baseline]][-1]["loss"]
    plot_time_to_quality(bold, faint, out, target=target, target_label=f"best {baseline} run's final loss",
                         title="Time-to-quality sweep: eval loss against training time", dashed=again)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["metrics", "benchmark", "sweep"])
    parser.add_argument("inputs", nargs="+", help="metrics .jsonl files, benchmark .json files (later ones win), or "
                                                  "one time_to_quality.py summary")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()

    def run() -> None:
        missing = [path for path in args.inputs if not os.path.isfile(path)]
        if missing:
            raise RecipeError(f"No such file: {', '.join(missing)}. Give the {args.kind} file(s) to plot "
                              "(see the usage at the top of scripts/plot.py).")
        if args.kind == "metrics":
            plot_metrics(args.inputs, args.out)
        elif args.kind == "sweep":
            plot_sweep(args.inputs[0], args.out)
        else:
            plot_throughput(latest_results(args.inputs), args.out)
        print(f"wrote {args.out}")

    return report_errors(run)


if __name__ == "__main__":
    sys.exit(main())
