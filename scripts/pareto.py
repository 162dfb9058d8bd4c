"""Time to quality: MosaicBERT-base against Hugging Face BERT-base at the same wall-clock budget.

    python scripts/pareto.py --train corpus/train.jsonl.gz --val corpus/val.jsonl.gz \\
        --task_dir downstream/rotten_tomatoes --out runs/pareto --plot docs/pareto.png

1. Converts the text to MDS (``<out>/mds``, seq 128 chunks; reused if present).
2. Pretrains ``yamls/bert-base.yaml`` and ``yamls/mosaicbert-base.yaml`` through ``main.py``, each for
   ``--budget_s`` seconds of training time (``callbacks.time_budget``: evaluation and compilation are not
   counted), with the recipes scaled to the budget in the same way for both (:data:`SCALED`): same
   global batch, learning rate and schedule shape (6% warm-up, linear decay) stretched over the budget;
   each keeps its own masking rate (BERT 15%, MosaicBERT 30%). Both are evaluated on the val split at 15%
   masking every ``--eval_every_s`` seconds of training.
3. Fine-tunes each final checkpoint on a sentiment task (``yamls/glue/sentiment.yaml``, 3 seeds).
4. Prints and writes the table (``<out>/results.{json,md}``) and plots eval loss against training time.

With two or more GPUs in ``--gpus``, the two models run side by side, one per GPU; with one, in turn.
``--set key=value`` adds a pretraining override for both models, ``--finetune_set`` one for fine-tuning.
Existing run folders under ``--out`` are an error unless ``--overwrite`` (the MDS folder is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from mosaicbert.errors import RecipeError, report_errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {  # name -> (pretraining recipe, label)
    "bert": ("yamls/bert-base.yaml", "BERT-base (Hugging Face)"),
    "mosaicbert": ("yamls/mosaicbert-base.yaml", "MosaicBERT-base"),
}
BASELINE, CANDIDATE = "bert", "mosaicbert"
TASK = "sentiment"

# The recipes scaled to a few minutes, identically for both models. At the recipes' batch of 4096, five
# minutes would be under 300 optimizer steps; 512 gives about 2,000. The learning rate follows the
# square-root rule for Adam: 5e-4 x sqrt(512 / 4096) = 1.8e-4, rounded to 2e-4.
SCALED = {
    "global_train_batch_size": 512,
    "device_train_microbatch_size": 256,
    "optimizer.lr": 2.0e-4,
    "max_duration": "1000000ba",            # an upper bound: time_budget sets the real length
    "eval_subset_num_batches": -1,          # the whole val split
    "device_eval_batch_size": 256,
    "save_interval": "1000000ba",           # only the final checkpoint
    "save_num_checkpoints_to_keep": 1,
    "console_log_interval": "200ba",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="+", help="training text (files or folders; .txt/.jsonl[.gz])")
    parser.add_argument("--val", nargs="+", help="validation text, same forms")
    parser.add_argument("--mds", default=None, help="an MDS folder with train/ and val/ made by convert_text.py "
                                                    "(tokenized, seq 128) to use instead of --train/--val")
    parser.add_argument("--task_dir", required=True, help="downstream task folder with train.tsv and dev.tsv "
                                                          "(sentence<TAB>label, as GLUE SST-2)")
    parser.add_argument("--out", default="runs/pareto", help="output folder (default runs/pareto)")
    parser.add_argument("--budget_s", type=float, default=300.0, help="training seconds per model (default 300)")
    parser.add_argument("--eval_every_s", type=float, default=30.0, help="evaluate every this many training "
                                                                         "seconds (default 30)")
    parser.add_argument("--tokenizer", default="bert-base-uncased",
                        help="tokenizer for the MDS conversion and both models (default bert-base-uncased)")
    parser.add_argument("--gpus", default=None, help="GPU ids, e.g. 0,1 (default: all visible; none on CPU)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra pretraining overrides for both models")
    parser.add_argument("--finetune_set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra fine-tuning overrides (yamls/glue/sentiment.yaml)")
    parser.add_argument("--plot", default=None, help="plot path (default <out>/pareto.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing run folders under --out")
    return parser.parse_args(argv)


def visible_gpus(spec: str | None) -> list[str]:
    from mosaicbert.training.cli import visible_gpu_ids

    return [g.strip() for g in spec.split(",") if g.strip()] if spec is not None else visible_gpu_ids()


def prepare_data(args) -> str:
    from mosaicbert.data.convert import convert_text
    from mosaicbert.data.text_dataset import check_local_mds
    from mosaicbert.tokenizer import load_tokenizer

    if args.mds is not None:
        for split in ("train", "val"):
            check_local_mds(args.mds, split)
        return args.mds
    if not args.train or not args.val:
        raise RecipeError("Give the corpus as --train FILES --val FILES (text to convert), or --mds FOLDER.")
    mds = os.path.join(args.out, "mds")
    if os.path.exists(mds):  # a rerun: the conversion's output, checked as the recipe's loaders will
        try:
            for split in ("train", "val"):
                check_local_mds(mds, split)
        except RecipeError as err:  # this script wrote the folder: an earlier conversion was cut short
            raise RecipeError(f"{mds} looks like an incomplete conversion from an earlier run ({err}). Delete "
                              "it and run again, or give converted data with --mds.") from None
        print(f"[pareto] reusing MDS data in {mds}", flush=True)
        return mds
    print(f"[pareto] converting {args.train} + {args.val} to MDS in {mds} (tokenized, seq 128)", flush=True)
    # Pre-tokenized once here, so the two runs' data loaders do not tokenize side by side.
    convert_text(args.train, mds, val_inputs=args.val, chunk_chars=600, tokenizer=load_tokenizer(args.tokenizer),
                 max_seq_len=128)
    return mds


def check_run_folders(args) -> None:
    existing = [os.path.join(args.out, name) for name in MODELS if os.path.exists(os.path.join(args.out, name))]
    if existing and not args.overwrite:
        raise RecipeError(f"Run folder(s) {', '.join(existing)} already exist. Pass --overwrite to replace them "
                          "(the MDS data is kept), or choose another --out.")
    for path in existing:
        shutil.rmtree(path)


def pretrain_command(name: str, args, mds: str) -> list[str]:
    recipe = MODELS[name][0]
    folder = os.path.join(args.out, name)
    # Each run reads its own copy: two jobs decompressing shards into one folder at once could collide.
    data = os.path.join(folder, "data")
    shutil.copytree(mds, data, ignore=shutil.ignore_patterns("*_small"))
    values = dict(SCALED)
    values.update({
        "run_name": f"pareto-{name}",
        "tokenizer_name": args.tokenizer,
        "variables.data_local": data,
        "save_folder": os.path.join(folder, "checkpoints"),
        "loggers.jsonl.path": os.path.join(folder, "metrics.jsonl"),
        "callbacks.time_budget.train_seconds": args.budget_s,
        "callbacks.time_budget.eval_every_seconds": args.eval_every_s,
    })
    return ([sys.executable, os.path.join(REPO, "main.py"), os.path.join(REPO, recipe)]
            + [f"{k}={v}" for k, v in values.items()] + list(args.overrides))


def finetune_command(name: str, args) -> list[str]:
    folder = os.path.join(args.out, name)
    values = {
        "run_name": f"pareto-{name}-{TASK}",
        "pretrained_checkpoint": os.path.join(folder, "checkpoints", "latest-rank0.pt"),
        "results_dir": os.path.join(folder, "finetune"),
        "variables.task_dir": args.task_dir,
    }
    return ([sys.executable, os.path.join(REPO, "glue.py"), os.path.join(REPO, "yamls/glue/sentiment.yaml")]
            + [f"{k}={v}" for k, v in values.items()] + list(args.finetune_set))


def run_all(stage: str, commands: dict[str, list[str]], gpus: list[str], args) -> None:
    """Runs one command per model: side by side on separate GPUs when there are enough, else in turn.
    Shows the pretraining clock of each run while it trains; a failure shows its log's end and stops."""
    from tqdm import tqdm

    from mosaicbert.training.cli import log_tail

    groups = [list(commands)] if len(gpus) >= len(commands) else [[name] for name in commands]
    for group in groups:
        procs, logs, bars = {}, {}, {}
        for i, name in enumerate(group):
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[i]
            os.makedirs(os.path.join(args.out, name), exist_ok=True)
            log_path = os.path.join(args.out, name, f"{stage}.log")
            logs[name] = log_path
            print(f"[pareto] {stage} {name}{' on GPU ' + gpus[i] if gpus else ''}: log in {log_path}", flush=True)
            with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
                procs[name] = subprocess.Popen(commands[name], stdout=log, stderr=subprocess.STDOUT, env=env)
            if stage == "pretrain":
                bars[name] = tqdm(total=round(args.budget_s), desc=f"{name} training", position=i,
                                   bar_format="{desc}: {n}/{total} s |{bar}| {elapsed} wall")
        while any(p.poll() is None for p in procs.values()):
            time.sleep(2)
            for name, bar in bars.items():
                bar.n = min(bar.total, round(latest_clock(os.path.join(args.out, name, "metrics.jsonl"))))
                bar.refresh()
        for bar in bars.values():
            bar.close()
        failed = [name for name, p in procs.items() if p.returncode != 0]
        if failed:
            for name in failed:
                print(f"\n[pareto] {stage} of {name} failed (exit {procs[name].returncode}); end of "
                      f"{logs[name]}:\n{log_tail(logs[name])}", file=sys.stderr)
            raise SystemExit(1)


def latest_clock(metrics_path: str) -> float:
    """The last ``time/train_seconds`` in a metrics log (0 before the first batch)."""
    from mosaicbert.pareto import CLOCK_KEY

    try:
        with open(metrics_path, "rb") as f:
            f.seek(max(0, os.path.getsize(metrics_path) - 20000))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return 0.0
    for line in reversed(lines):
        if f'"{CLOCK_KEY}"' in line:
            try:
                return float(json.loads(line)[CLOCK_KEY])
            except (json.JSONDecodeError, KeyError):
                continue
    return 0.0


def report(args) -> dict:
    from mosaicbert import pareto
    from mosaicbert.plots import plot_time_to_quality

    runs = {}
    for name in MODELS:
        folder = os.path.join(args.out, name)
        runs[name] = {"curve": pareto.eval_curve(os.path.join(folder, "metrics.jsonl")),
                      "downstream": pareto.downstream_accuracy(os.path.join(folder, "finetune", "results.json"),
                                                               TASK)}
    summary = pareto.compare(runs, BASELINE, CANDIDATE)
    summary["settings"] = {"budget_s": args.budget_s, "eval_every_s": args.eval_every_s, "scaled": SCALED,
                           "overrides": args.overrides, "finetune_overrides": args.finetune_set,
                           "recipes": {name: recipe for name, (recipe, _) in MODELS.items()}}
    labels = {name: label for name, (_, label) in MODELS.items()}
    table = pareto.markdown(summary, labels)
    plot = args.plot or os.path.join(args.out, "pareto.png")
    plot_time_to_quality(summary, plot, labels)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    print("\n" + table + f"\nplot: {plot}\nresults: {os.path.join(args.out, 'results.json')}", flush=True)
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isfile(os.path.join(args.task_dir, "train.tsv")):
        raise RecipeError(f"--task_dir {args.task_dir!r} has no train.tsv. Point it at a folder with train.tsv "
                          "and dev.tsv (sentence<TAB>label).")
    gpus = visible_gpus(args.gpus)
    check_run_folders(args)
    mds = prepare_data(args)
    run_all("pretrain", {name: pretrain_command(name, args, mds) for name in MODELS}, gpus, args)
    run_all("finetune", {name: finetune_command(name, args) for name in MODELS}, gpus, args)
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(report_errors(main))
