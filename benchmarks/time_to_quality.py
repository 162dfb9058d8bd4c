"""Time to quality: MosaicBERT-base against Hugging Face BERT-base at the same wall-clock budget, each
model at its best learning rate.

    python benchmarks/time_to_quality.py --train corpus/train.jsonl.gz --val corpus/val.jsonl.gz \\
        --task_dir downstream/rotten_tomatoes --out benchmarks/out/ttq --budget_s 150 --long_budget_s 600

1. Converts the text to MDS (``<out>/mds``, seq 128 chunks; reused if present), or takes ``--mds``.
2. The sweep: pretrains ``yamls/bert-base.yaml`` and ``yamls/mosaicbert-base.yaml`` through ``main.py``
   at every ``--lrs`` x ``--warmups`` setting, each run for ``--budget_s`` seconds of training time
   (``callbacks.time_budget``: evaluation and compilation are not counted). Both recipes are scaled to
   the budget identically (:data:`SCALED`: global batch 512, the schedule shape stretched over the
   budget); each keeps its own masking rate (BERT 15%, MosaicBERT 30%); both are evaluated on the val
   split at 15% masking every ``--eval_every_s`` seconds of training.
3. Each model is represented by its sweep run with the lowest final eval loss. With ``--long_budget_s``,
   those two settings are trained again for that longer budget. With ``--retrain_best``, a best run that
   has no final checkpoint (reused from a summary) is trained again at the sweep's budget, as
   ``<run>-again``, and that run stands for the model at that budget.
4. Fine-tunes each represented run's final checkpoint on a sentiment task (``yamls/glue/sentiment.yaml``,
   3 seeds), each retrained or longer run as soon as it has pretrained, and prints best against best for
   each budget: final eval loss and masked accuracy, when MosaicBERT reaches BERT's final eval loss,
   downstream accuracy.
5. Writes ``<out>/results.{json,md}``, a small ``--summary`` JSON (the numbers, the command, the commit,
   machine and versions) and a plot: every sweep run faint, the best of each model bold.

A rerun with the same ``--out`` continues: a stage that finished (``<run>/pretrain.DONE``,
``<run>/finetune.DONE``) is reused, an unfinished one is started again. A finished run's folder can come
from another machine: ``metrics.jsonl`` and ``pretrain.DONE`` are what the sweep needs; without its final
checkpoint it is not fine-tuned and reported without downstream accuracy. ``--summary`` is rewritten
after every stage that finishes and every minute while a run pretrains (its curve so far under
``unfinished``), and ``--reuse SUMMARY`` makes finished run folders from one (eval curves
and fine-tuning results), so the experiment can be run in pieces on machines that come and go: each
piece reuses the last piece's summary. ``--report_only`` trains nothing and tabulates the sweep runs that
have finished, naming the ones that have not. ``--overwrite`` redoes every run (the MDS folder is kept).
With several GPUs in ``--gpus``, runs go side by side, one per GPU.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Optional

import torch
import transformers
from tqdm import tqdm

from mosaicbert.analysis import time_to_quality as ttq
from mosaicbert.analysis.plots import plot_time_to_quality
from mosaicbert.data.convert import convert_text
from mosaicbert.data.mds_check import check_mds_folder
from mosaicbert.errors import RecipeError, report_errors
from mosaicbert.tokenizer import load_tokenizer
from mosaicbert.training.cli import log_tail, visible_gpu_ids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {  # name -> (pretraining recipe, label)
    "bert": ("yamls/bert-base.yaml", "BERT-base (Hugging Face)"),
    "mosaicbert": ("yamls/mosaicbert-base.yaml", "MosaicBERT-base"),
}
BASELINE, CANDIDATE = "bert", "mosaicbert"
TASK = "sentiment"

# The recipes scaled to a few minutes, identically for both models. At the recipes' batch of 4096, a
# few minutes would be a few hundred optimizer steps; 512 gives about 1,000 in 150 s. The learning rate
# and the warm-up are what the sweep varies (--lrs, --warmups).
SCALED = {
    "global_train_batch_size": 512,
    "device_train_microbatch_size": 256,
    "max_duration": "1000000ba",            # an upper bound: time_budget sets the real length
    "eval_subset_num_batches": -1,          # the whole val split
    "device_eval_batch_size": 256,
    "save_interval": "1000000ba",           # only the final checkpoint
    "save_num_checkpoints_to_keep": 1,
    "console_log_interval": "200ba",
}
# The training order and masks every published run saw, pinned so that new runs continue the published
# sweep (the loaders otherwise derive both from the recipe's seed). Both models use the same.
DATA_SEEDS = {"train_loader.shuffle_seed": 9176, "train_loader.mask_seed": 0}
# Likewise the attention layout of the published MosaicBERT runs: one row per sequence. `auto` packs
# padded rows, which makes steps faster; pinned, new runs stay comparable with the published ones, and the
# comparison if anything understates MosaicBERT. `--set` overrides it.
MODEL_PINS = {"mosaicbert": {"model.config.attention_backend": "sdpa"}}
# While a run pretrains, the summary is rewritten this often with the eval curve it has reached, so that
# a machine that goes mid-run still leaves that curve behind (under ``unfinished``).
PROGRESS_SAVE_S = 60.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="+", help="training text (files or folders; .txt/.jsonl[.gz])")
    parser.add_argument("--val", nargs="+", help="validation text, same forms")
    parser.add_argument("--mds", default=None, help="an MDS folder with train/ and val/ made by convert_text.py "
                                                    "(tokenized, seq 128) to use instead of --train/--val")
    parser.add_argument("--task_dir", default=None, help="downstream task folder with train.tsv and dev.tsv "
                                                         "(sentence<TAB>label, as GLUE SST-2); not needed with "
                                                         "--report_only")
    parser.add_argument("--out", default="benchmarks/out/time_to_quality", help="output folder")
    parser.add_argument("--budget_s", type=float, default=150.0, help="training seconds per sweep run (150)")
    parser.add_argument("--long_budget_s", type=float, default=0.0,
                        help="train each model's best setting again for this long (0: no long runs)")
    parser.add_argument("--eval_every_s", type=float, default=15.0,
                        help="evaluate every this many training seconds (15)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[2.0e-4, 5.0e-4, 1.0e-3],
                        help="peak learning rates of the sweep (2e-4 5e-4 1e-3)")
    parser.add_argument("--warmups", nargs="+", default=["0.06dur"],
                        help="warm-ups of the sweep: a fraction of the budget (0.06dur) and/or a fixed number of "
                             "steps (300ba)")
    parser.add_argument("--tokenizer", default="bert-base-uncased",
                        help="tokenizer for the MDS conversion and both models (default bert-base-uncased)")
    parser.add_argument("--gpus", default=None, help="GPU ids, e.g. 0,1 (default: all visible; none on CPU)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra pretraining overrides for both models")
    parser.add_argument("--finetune_jobs_per_gpu", type=int, default=1,
                        help="fine-tuning processes at once per GPU: a run's seeds side by side (fine-tuning at "
                             "batch 16 leaves a large GPU mostly idle; its results do not depend on it). "
                             "Pretraining is always one run per GPU (its clock counts).")
    parser.add_argument("--finetune_set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra fine-tuning overrides (yamls/glue/sentiment.yaml)")
    parser.add_argument("--plot", default=None, help="plot path (default <out>/time_to_quality.png)")
    parser.add_argument("--summary", default=None, help="also write the small published summary JSON here")
    parser.add_argument("--sweep_only", action="store_true",
                        help="stop after the sweep: print its table and each model's best setting (no long runs, "
                             "no fine-tuning, no comparison)")
    parser.add_argument("--retrain_best", action="store_true",
                        help="train each model's best sweep setting again when its run has no final checkpoint "
                             "(it came from --reuse or another machine), as <run>-again, and compare and fine-tune "
                             "that run at the sweep's budget (the sweep table keeps the sweep's runs)")
    parser.add_argument("--report_only", action="store_true",
                        help="train nothing: tabulate the sweep runs finished under --out (and --reuse's) as "
                             "--sweep_only does, and list the unfinished ones with how far their eval curve got "
                             "(a sweep run in pieces, or cut short)")
    parser.add_argument("--reuse", default=None, metavar="SUMMARY",
                        help="a --summary JSON of an earlier invocation (e.g. benchmarks/published/"
                             "time_to_quality_sweep.json): its finished runs count as finished here, from their eval "
                             "curves, and so do its fine-tuning results (there are no checkpoints, so runs it has "
                             "not fine-tuned cannot be); the recipe scaling and --eval_every_s must match")
    parser.add_argument("--overwrite", action="store_true", help="redo runs that finished earlier under --out")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------
def run_name(model: str, lr: float, warmup: str, budget_s: float) -> str:
    return f"{model}-lr{lr:g}-wu{warmup}-{budget_s:g}s"


def sweep_runs(args) -> dict[str, dict]:
    """Every sweep run: name -> {model, lr, warmup, budget_s}."""
    return {run_name(model, lr, warmup, args.budget_s): {"model": model, "lr": lr, "warmup": warmup,
                                                          "budget_s": args.budget_s}
            for model, lr, warmup in itertools.product(MODELS, args.lrs, args.warmups)}


def is_done(args, name: str, stage: str) -> bool:
    return os.path.isfile(os.path.join(args.out, name, f"{stage}.DONE"))


def reuse_summary(args) -> dict:
    """The finished runs of ``--reuse``'s summary that are not finished under ``--out`` become finished run
    folders: their eval curve (``metrics.jsonl``, ``pretrain.DONE``) and, where the summary has one, their
    fine-tuning result (``finetune/results.json``, ``finetune.DONE``). A sweep run is reused from its curve
    alone; a retrained or longer run only with its fine-tuning result, which is what it is trained for
    (without it, its machine went while it fine-tuned: it is trained again). So a summary written part-way
    (``--summary`` is rewritten after every finished stage) continues."""
    try:
        with open(args.reuse) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise RecipeError(f"--reuse {args.reuse!r} could not be read as a summary JSON ({err}).") from None
    if record.get("scaled_recipe") != SCALED or record.get("eval_every_s") != args.eval_every_s:
        raise RecipeError(f"--reuse {args.reuse!r} was made with another setup (scaled recipe "
                          f"{record.get('scaled_recipe')}, --eval_every_s {record.get('eval_every_s')}; here "
                          f"{SCALED}, {args.eval_every_s:g}): its runs are not comparable with new ones.")
    results = {name: result for name, result in record.get("downstream", {}).items() if result is not None}
    reused = [name for name in record.get("curves", {})
              if (name in record.get("sweep", {}) or name in results) and not is_done(args, name, "pretrain")]
    for name in reused:
        folder = os.path.join(args.out, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        ttq.write_eval_log(record["curves"][name], os.path.join(folder, "metrics.jsonl"))
        open(os.path.join(folder, "pretrain.DONE"), "w").close()
        if name in results:
            ttq.write_downstream(results[name], TASK, os.path.join(folder, "finetune", "results.json"))
            open(os.path.join(folder, "finetune.DONE"), "w").close()
    args.reused_record = record  # carried into every summary written here (write_summary)
    finetuned = [name for name in reused if name in results]
    print(f"[ttq] reusing {len(reused)} finished run(s) from {args.reuse}: {', '.join(reused) or 'none'}"
          + (f"; with the fine-tuning results of {', '.join(finetuned)}" if finetuned else ""), flush=True)
    return record


def reused_sweep(args, record: dict) -> dict[str, dict]:
    """A reused summary's finished sweep runs at this budget: they join this sweep, and the best is chosen
    among all of them."""
    return {name: {key: run[key] for key in ("model", "lr", "warmup", "budget_s")}
            for name, run in record.get("sweep", {}).items()
            if run.get("budget_s") == args.budget_s and is_done(args, name, "pretrain")}


def prepare_data(args) -> str:
    if args.mds is not None:
        for split in ("train", "val"):
            check_mds_folder(args.mds, split, remote=None)
        return args.mds
    if not args.train or not args.val:
        raise RecipeError("Give the corpus as --train FILES --val FILES (text to convert), or --mds FOLDER.")
    mds = os.path.join(args.out, "mds")
    if os.path.exists(mds):  # a rerun: the conversion's output, checked as the recipe's loaders will
        try:
            for split in ("train", "val"):
                check_mds_folder(mds, split, remote=None)
        except RecipeError as err:  # this script wrote the folder: an earlier conversion was cut short
            raise RecipeError(f"{mds} looks like an incomplete conversion from an earlier run ({err}). Delete "
                              "it and run again, or give converted data with --mds.") from None
        print(f"[ttq] reusing MDS data in {mds}", flush=True)
        return mds
    print(f"[ttq] converting {args.train} + {args.val} to MDS in {mds} (tokenized, seq 128)", flush=True)
    # Pre-tokenized once here, so that runs side by side do not tokenize at the same time.
    convert_text(args.train, mds, val_inputs=args.val, chunk_chars=600, tokenizer=load_tokenizer(args.tokenizer),
                 max_seq_len=128)
    return mds


def pretrain_command(name: str, run: dict, args, mds: str) -> list[str]:
    folder = os.path.join(args.out, name)
    # Each run reads its own copy: streaming writes decompressed shards beside the compressed ones, so the
    # source folder (--mds) stays as it was given, and a run's folder holds all it wrote.
    data = os.path.join(folder, "data")
    shutil.copytree(mds, data, ignore=shutil.ignore_patterns("*_small"))
    values = dict(SCALED)
    values.update(DATA_SEEDS)
    values.update(MODEL_PINS.get(run["model"], {}))
    values.update({
        "run_name": f"ttq-{name}",
        "tokenizer_name": args.tokenizer,
        "variables.data_local": data,
        "optimizer.lr": run["lr"],
        "scheduler.t_warmup": run["warmup"],
        "save_folder": os.path.join(folder, "checkpoints"),
        "loggers.jsonl.path": os.path.join(folder, "metrics.jsonl"),
        "callbacks.time_budget.train_seconds": run["budget_s"],
        "callbacks.time_budget.eval_every_seconds": args.eval_every_s,
    })
    recipe = MODELS[run["model"]][0]
    return ([sys.executable, os.path.join(REPO, "main.py"), os.path.join(REPO, recipe)]
            + [f"{k}={v}" for k, v in values.items()] + list(args.overrides))


def finetune_command(name: str, run: dict, args) -> list[str]:
    folder = os.path.join(args.out, name)
    values = {
        "run_name": f"ttq-{name}-{TASK}",
        "pretrained_checkpoint": os.path.join(folder, "checkpoints", "latest-rank0.pt"),
        "results_dir": os.path.join(folder, "finetune"),
        "variables.task_dir": args.task_dir,
    }
    if args.finetune_jobs_per_gpu > 1:
        values.update({"parallel": "true", "jobs_per_gpu": args.finetune_jobs_per_gpu})
    return ([sys.executable, os.path.join(REPO, "glue.py"), os.path.join(REPO, "yamls/glue/sentiment.yaml")]
            + [f"{k}={v}" for k, v in values.items()] + list(args.finetune_set))


def run_stages(stages: tuple[str, ...], runs: dict[str, dict], gpus: list[str], args, mds: Optional[str] = None,
               saved=None) -> None:
    """Takes every run through ``stages`` (pretrain, then finetune), one run per GPU at a time (in turn
    without GPUs): a run is fine-tuned on its GPU as soon as it has pretrained, so a machine lost part-way
    loses at most the run in progress. A stage done earlier is reused; a run without a final checkpoint is
    not fine-tuned. ``saved()`` is called after every stage that finishes (to rewrite the summary). A
    pretraining run shows its training clock; a failure shows its log's end, skips the run's later stages
    and, once the other runs are through, stops. While a run pretrains, ``saved()`` is also called every
    ``PROGRESS_SAVE_S`` seconds."""
    def next_stage(name: str, after: Optional[str] = None) -> Optional[str]:
        for stage in stages[stages.index(after) + 1 if after else 0:]:
            if is_done(args, name, stage):
                print(f"[ttq] {stage} {name}: done earlier, reused", flush=True)
            elif stage == "finetune" and not can_finetune(args, name):
                print(f"[ttq] {name}: no final checkpoint ({final_checkpoint(args, name)}), so it is not "
                      "fine-tuned and its downstream accuracy is left out", flush=True)
            else:
                return stage
        return None

    todo = [(name, stage) for name in runs if (stage := next_stage(name)) is not None]
    slots = gpus or [None]
    running: dict[int, tuple[str, str, subprocess.Popen, object]] = {}  # slot index -> run, stage
    failed = []
    last_saved = time.monotonic()
    try:
        while todo or running:
            for index in [i for i in range(len(slots)) if i not in running]:
                if todo:
                    running[index] = start_stage(*todo.pop(0), runs, slots[index], args, mds)
            time.sleep(min(2.0, PROGRESS_SAVE_S))
            pretraining = any(stage == "pretrain" for _, stage, _, _ in running.values())
            if saved is not None and pretraining and time.monotonic() - last_saved >= PROGRESS_SAVE_S:
                saved()
                last_saved = time.monotonic()
            for index, (name, stage, proc, bar) in list(running.items()):
                if bar is not None:
                    bar.n = min(bar.total, round(latest_clock(os.path.join(args.out, name, "metrics.jsonl"))))
                    bar.refresh()
                if proc.poll() is None:
                    continue
                del running[index]
                if bar is not None:
                    bar.close()
                log_path = os.path.join(args.out, name, f"{stage}.log")
                if proc.returncode != 0:
                    failed.append(name)
                    print(f"\n[ttq] {stage} of {name} failed (exit {proc.returncode}); end of {log_path}:\n"
                          f"{log_tail(log_path)}", file=sys.stderr, flush=True)
                    continue
                open(os.path.join(args.out, name, f"{stage}.DONE"), "w").close()
                if saved is not None:
                    saved()
                following = next_stage(name, after=stage)
                if following is not None:  # on the same GPU, before any other run
                    running[index] = start_stage(name, following, runs, slots[index], args, mds)
    except BaseException:  # Ctrl-C or an error here: no run goes on unsupervised
        for _, _, proc, _ in running.values():
            proc.terminate()
        raise
    if failed:
        raise SystemExit(1)


def start_stage(name: str, stage: str, runs: dict[str, dict], slot: Optional[str], args, mds: Optional[str]):
    """Starts ``stage`` of run ``name`` on GPU ``slot`` (None: no GPU); ``(name, stage, process, progress bar)``."""
    folder = os.path.join(args.out, name)
    if stage == "pretrain":
        shutil.rmtree(folder, ignore_errors=True)  # an unfinished earlier attempt starts afresh
        os.makedirs(folder)
        command = pretrain_command(name, runs[name], args, mds)
    else:
        shutil.rmtree(os.path.join(folder, "finetune"), ignore_errors=True)
        command = finetune_command(name, runs[name], args)
    env = dict(os.environ)
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    log_path = os.path.join(folder, f"{stage}.log")
    print(f"[ttq] {stage} {name}{'' if slot is None else ' on GPU ' + slot}: log in {log_path}", flush=True)
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    bar = None
    if stage == "pretrain":
        bar = tqdm(total=round(runs[name]["budget_s"]), desc=name, leave=True,
                   bar_format="{desc}: {n}/{total} s trained |{bar}| {elapsed} wall")
    return name, stage, proc, bar


def latest_clock(metrics_path: str) -> float:
    """The last ``time/train_seconds`` in a metrics log (0 before the first batch)."""
    try:
        with open(metrics_path, "rb") as f:
            f.seek(max(0, os.path.getsize(metrics_path) - 20000))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return 0.0
    for line in reversed(lines):
        if f'"{ttq.CLOCK_KEY}"' in line:
            try:
                return float(json.loads(line)[ttq.CLOCK_KEY])
            except (json.JSONDecodeError, KeyError):
                continue
    return 0.0


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def curves(args, runs: dict[str, dict]) -> dict[str, list[dict]]:
    return {name: ttq.eval_curve(os.path.join(args.out, name, "metrics.jsonl")) for name in runs}


def best_of_each_model(sweep: dict[str, dict], sweep_curves: dict[str, list[dict]]) -> dict[str, str]:
    """model -> the name of its sweep run with the lowest final eval loss."""
    return {model: ttq.best_run({name: sweep_curves[name] for name, run in sweep.items() if run["model"] == model})
            for model in MODELS}


def final_checkpoint(args, name: str) -> str:
    return os.path.join(args.out, name, "checkpoints", "latest-rank0.pt")


def can_finetune(args, name: str) -> bool:
    """Fine-tuned already, or has the final checkpoint to fine-tune (a run folder brought from another
    machine, or made by --reuse, has none)."""
    return is_done(args, name, "finetune") or os.path.exists(final_checkpoint(args, name))


def downstream(args, name: str) -> Optional[dict]:
    """A run's fine-tuning result; None for a run that could not be fine-tuned."""
    if not can_finetune(args, name):
        return None
    return ttq.downstream_accuracy(os.path.join(args.out, name, "finetune", "results.json"), TASK)


def comparison(args, runs: dict[str, dict], run_curves: dict[str, list[dict]]) -> dict:
    """Best against best at one budget: ``ttq.compare`` over ``runs``, one per model."""
    represented = {run["model"]: name for name, run in runs.items()}
    rows = {model: {"curve": run_curves[name], "downstream": downstream(args, name)}
            for model, name in represented.items()}
    summary = ttq.compare(rows, BASELINE, CANDIDATE)
    summary["settings"] = {model: {"run": name, "lr": runs[name]["lr"], "warmup": runs[name]["warmup"],
                                   "budget_s": runs[name]["budget_s"]} for model, name in represented.items()}
    return summary


def sweep_record(sweep: dict[str, dict], sweep_curves: dict[str, list[dict]], best: dict[str, str]) -> dict:
    return {"sweep": {name: {**run, "final": sweep_curves[name][-1]} for name, run in sweep.items()},
            "best": best, "curves": sweep_curves}


def unfinished_record(args, runs: dict[str, dict]) -> dict[str, dict]:
    """Runs that have not finished, each with the eval curve it got to (a later ``--reuse`` trains them)."""
    record = {}
    for name, run in runs.items():
        metrics = os.path.join(args.out, name, "metrics.jsonl")
        try:
            partial = ttq.eval_curve(metrics) if os.path.isfile(metrics) else []
        except RecipeError:  # stopped before its training clock was first logged (e.g. while compiling)
            partial = []
        record[name] = {**run, "curve": partial}
    return record


def fine_tuned(args, runs: dict[str, dict]) -> dict[str, dict]:
    """run -> its downstream accuracy statistics, for the runs fine-tuned so far."""
    return {name: downstream(args, name) for name in runs if is_done(args, name, "finetune")}


def progress_record(args, sweep: dict[str, dict], others: dict[str, dict]) -> dict:
    """What has finished so far (the summary rewritten after every stage): the finished sweep runs, each
    model's best of them once the whole sweep has finished (``unfinished`` lists the rest until then), the
    eval curves of every finished run (the sweep's and ``others``, the retrained and longer runs; one of
    ``others`` still pretraining is under ``unfinished`` with the curve it has reached) and the
    fine-tuning results. ``other_runs`` gives the settings of the finished runs after the sweep (name ->
    model, lr, warmup, budget_s), so that a plot of the longer runs can tell them apart."""
    finished = {name: run for name, run in sweep.items() if is_done(args, name, "pretrain")}
    sweep_curves = curves(args, finished)
    complete = len(finished) == len(sweep)
    record = sweep_record(finished, sweep_curves, best_of_each_model(finished, sweep_curves) if complete else {})
    if not complete:
        record["unfinished"] = unfinished_record(args, {name: run for name, run in sweep.items()
                                                        if name not in finished})
    finished_others = {name: run for name, run in others.items() if is_done(args, name, "pretrain")}
    record["curves"].update(curves(args, finished_others))
    record["other_runs"] = finished_others
    # A retrained or longer run still pretraining (or whose machine went): the curve it has reached.
    started = unfinished_record(args, {name: run for name, run in others.items() if name not in finished_others})
    started = {name: run for name, run in started.items() if run["curve"]}
    if started:
        record["unfinished"] = {**record.get("unfinished", {}), **started}
    record["downstream"] = fine_tuned(args, {**sweep, **others})
    return record


def sweep_table(sweep: dict[str, dict], sweep_curves: dict[str, list[dict]], best: dict[str, str]) -> str:
    lines = ["| model | peak lr | warm-up | steps | final eval loss | final masked acc. (%) |",
             "|---|---:|---|---:|---:|---:|"]
    for name, run in sweep.items():
        final = sweep_curves[name][-1]
        mark = " **(best)**" if best[run["model"]] == name else ""
        lines.append(f"| {MODELS[run['model']][1]}{mark} | {run['lr']:g} | {run['warmup']} | {final['step']} | "
                     f"{final['loss']:.4f} | {100 * final['accuracy']:.2f} |")
    return "\n".join(lines) + "\n"


def report_sweep(args, sweep: dict[str, dict], unfinished: Optional[dict[str, dict]] = None) -> dict:
    """The sweep's table and each model's best run (``<out>/sweep.json``, ``--summary``); ``unfinished``
    runs are listed with the eval curve they got to, outside the sweep (a later ``--reuse`` trains them)."""
    sweep_curves = curves(args, sweep)
    best = best_of_each_model(sweep, sweep_curves)
    record = {**sweep_record(sweep, sweep_curves, best), "downstream": fine_tuned(args, sweep)}
    table = sweep_table(sweep, sweep_curves, best)
    if unfinished:
        record["unfinished"] = unfinished_record(args, unfinished)
        for name, run in record["unfinished"].items():
            partial = run["curve"]
            reached = (f"eval loss {partial[-1]['loss']:.4f} at {partial[-1]['seconds']:.0f} s (step "
                       f"{partial[-1]['step']})" if partial else "no evaluation")
            table += f"\nUnfinished, left out of the sweep: {name} ({reached}).\n"
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump(record, f, indent=2)
    if args.summary:
        write_summary(args, record)
    print("\n" + table, flush=True)
    return record


def installed_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "composer": installed_version("mosaicml"), "streaming": installed_version("mosaicml-streaming"),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "cpus": os.cpu_count()}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


def write_summary(args, record: dict) -> None:
    """The published summary: the record (a few KB: one curve point per evaluation), the command, the
    machine and versions; with ``--reuse``, ``earlier`` lists the invocations whose runs it reused."""
    published = {"command": " ".join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:]),
                 "machine": machine(), "scaled_recipe": SCALED, "eval_every_s": args.eval_every_s,
                 "baseline": BASELINE, **record}
    reused = getattr(args, "reused_record", None)
    if reused:
        published["earlier"] = reused.get("earlier", []) + [
            {key: reused[key] for key in ("what", "command", "commit", "machine") if key in reused}]
        # What the reused summary held stays, where this invocation has nothing newer (another grid, runs of
        # another budget, a sweep still running), so that the next piece can reuse it too.
        for key in ("curves", "downstream", "unfinished", "other_runs", "budgets"):
            published[key] = {**reused.get(key, {}), **published.get(key, {})}
        published["downstream"] = {name: result for name, result in published["downstream"].items()
                                   if result is not None}
        published["unfinished"] = {name: run for name, run in published["unfinished"].items()
                                   if name not in published["curves"]}
        if not published["unfinished"]:
            del published["unfinished"]
    # Written whole or not at all: the machine may go at any moment, and --summary may be --reuse's file.
    os.makedirs(os.path.dirname(os.path.abspath(args.summary)), exist_ok=True)
    with open(args.summary + ".tmp", "w") as f:
        json.dump(published, f, indent=1)
    os.replace(args.summary + ".tmp", args.summary)


def report(args, sweep, sweep_curves, best, represented, long_runs, long_curves) -> dict:
    """``represented``: the run compared for each model at the sweep's budget (its best, or that setting
    trained again by --retrain_best) -> its settings."""
    labels = {name: label for name, (_, label) in MODELS.items()}
    again_curves = curves(args, {name: run for name, run in represented.items() if name not in sweep})
    sweep_best = {name: sweep[name] for name in best.values()}
    budgets, titles = {}, {}
    if set(represented) != set(sweep_best):
        # The sweep's best runs themselves, next to those settings trained again (which is what is fine-tuned):
        # two runs of one setting can end far apart, and "best against best" means the sweep's.
        key = f"{args.budget_s:g}s-sweep"
        budgets[key] = comparison(args, sweep_best, sweep_curves)
        titles[key] = f"{args.budget_s:g} s of training each, the sweep's best runs"
    key = f"{args.budget_s:g}s"
    budgets[key] = comparison(args, represented, {**sweep_curves, **again_curves})
    titles[key] = f"{args.budget_s:g} s of training each" + (", trained again" if key + "-sweep" in budgets else "")
    if long_runs:
        key = f"{args.long_budget_s:g}s"
        budgets[key] = comparison(args, long_runs, long_curves)
        titles[key] = f"{args.long_budget_s:g} s of training each"
    parts = ["## The sweep\n", sweep_table(sweep, sweep_curves, best)]
    for budget, summary in budgets.items():
        settings = ", ".join(f"{labels[m]} lr {s['lr']:g}, warm-up {s['warmup']}" for m, s in summary["settings"].items())
        parts += [f"\n## Best against best, {titles[budget]} ({settings})\n", ttq.markdown(summary, labels)]
    table = "".join(parts)
    plot = args.plot or os.path.join(args.out, "time_to_quality.png")
    faint = {name: sweep_curves[name] for name in sweep if name not in represented and name not in sweep_best}
    bold = {f"{labels[model]}, {budget}": budgets[budget]["runs"][model]["curve"]
            for budget in budgets for model in MODELS}
    plot_time_to_quality(bold, faint, plot, target=budgets.get(f"{args.budget_s:g}s-sweep",
                                                               budgets[f"{args.budget_s:g}s"])["target_loss"],
                         target_label=f"{labels[BASELINE]}'s final loss at {args.budget_s:g} s")
    record = {**progress_record(args, sweep, {**represented, **long_runs}), "budgets": budgets}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(record, f, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    if args.summary:
        write_summary(args, record)
    print("\n" + table + f"\nplot: {plot}\nresults: {os.path.join(args.out, 'results.json')}", flush=True)
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.report_only and not os.path.isfile(os.path.join(args.task_dir or "", "train.tsv")):
        given = "is missing" if args.task_dir is None else f"{args.task_dir!r} has no train.tsv"
        raise RecipeError(f"--task_dir {given}. Point it at a folder with train.tsv and dev.tsv (sentence<TAB>label); "
                          "only --report_only does without one.")
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus is not None else visible_gpu_ids()
    os.makedirs(args.out, exist_ok=True)
    sweep = sweep_runs(args)
    if args.reuse and args.overwrite:
        raise RecipeError("--reuse counts an earlier sweep's runs as finished and --overwrite redoes finished runs: "
                          "give one of them.")
    if args.report_only and args.overwrite:
        raise RecipeError("--report_only tabulates the runs under --out and --overwrite removes them: give one of them.")
    if args.overwrite:
        for name in sweep:
            for folder in (name, ttq.retrained_name(name)):
                shutil.rmtree(os.path.join(args.out, folder), ignore_errors=True)
    if args.reuse:
        sweep.update({name: run for name, run in reused_sweep(args, reuse_summary(args)).items() if name not in sweep})
        sweep = dict(sorted(sweep.items(), key=lambda item: (list(MODELS).index(item[1]["model"]), item[1]["lr"],
                                                              item[1]["warmup"])))
    if args.report_only:
        finished = {name: run for name, run in sweep.items() if is_done(args, name, "pretrain")}
        unfinished = {name: run for name, run in sweep.items() if name not in finished}
        missing = sorted(set(MODELS) - {run["model"] for run in finished.values()})
        if missing:
            raise RecipeError(f"--report_only: no finished sweep run of {', '.join(missing)} under {args.out!r} (a "
                              "finished run's folder has pretrain.DONE). Train one first, or --reuse a summary.")
        report_sweep(args, finished, unfinished)
        return 0
    mds = prepare_data(args)
    others: dict[str, dict] = {}  # the runs after the sweep, for the summary rewritten after every stage

    def saved() -> None:
        if args.summary:
            try:
                write_summary(args, progress_record(args, sweep, others))
            except (OSError, RecipeError) as err:  # the runs go on; the final summary is written at the end
                print(f"[ttq] could not rewrite {args.summary}: {err}", file=sys.stderr, flush=True)

    run_stages(("pretrain",), sweep, gpus, args, mds, saved)
    if args.sweep_only:
        report_sweep(args, sweep)
        return 0
    sweep_curves = curves(args, sweep)
    best = best_of_each_model(sweep, sweep_curves)
    # The sweep budget's comparison: each model's best run, or with --retrain_best a fresh run of its setting
    # where the best has no checkpoint to fine-tune.
    represented = {name: sweep[name] for name in best.values()}
    if args.retrain_best:
        represented = {name if can_finetune(args, name) else ttq.retrained_name(name): run
                       for name, run in represented.items()}
    long_runs = {}
    if args.long_budget_s > 0:
        long_runs = {run_name(m, sweep[n]["lr"], sweep[n]["warmup"], args.long_budget_s):
                     {**sweep[n], "budget_s": args.long_budget_s} for m, n in best.items()}
        if args.overwrite:
            for name in long_runs:
                shutil.rmtree(os.path.join(args.out, name), ignore_errors=True)
    others.update(represented | long_runs)
    # The sweep's best runs are fine-tuned first (they need no training), then the retrained and the longer
    # runs are taken run by run: pretrained, then fine-tuned on the same GPU.
    run_stages(("finetune",), {name: run for name, run in represented.items() if name in sweep}, gpus, args,
               saved=saved)
    run_stages(("pretrain", "finetune"), {name: run for name, run in others.items() if name not in sweep}, gpus,
               args, mds, saved)
    report(args, sweep, sweep_curves, best, represented, long_runs, curves(args, long_runs))
    return 0


if __name__ == "__main__":
    sys.exit(report_errors(main))
