"""Draw the plots of this repo.

    python scripts/plot.py metrics runs/demo/metrics.jsonl --out runs/demo/loss.png
    python scripts/plot.py benchmark benchmarks/published/throughput.json --out docs/throughput.png
"""

import argparse

from mosaicbert.analysis.plots import latest_results, plot_metrics, plot_throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["metrics", "benchmark"])
    parser.add_argument("inputs", nargs="+", help="metrics .jsonl files, or benchmark .json files (later ones win)")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    if args.kind == "metrics":
        plot_metrics(args.inputs, args.out)
    else:
        plot_throughput(latest_results(args.inputs), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
