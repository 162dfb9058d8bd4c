"""Fine-tune one pretrained checkpoint on GLUE and custom TSV tasks: ``python glue.py <recipe.yaml>``.

The flow, in the order that fails fastest on a bad recipe:

1. :func:`prepare` validates the recipe (task names and per-task keys, each task's optimizer and
   scheduler, devices and batch sizes), checks every task's files parse (or that the hub answers), reads
   the pretrained checkpoint (model family, config and tokenizer from its ``RecipeMetadata``, or
   ``config.json`` of an exported folder) and builds each task's classifier config. Nothing trains
   before all of that passed.
2. Each (task, seed) is a :class:`Job`: the family's sequence classifier with ``num_labels`` of the task,
   encoder weights from the pretrained checkpoint (a missing encoder weight is an error; the pooler and
   the classifier are new for an MLM checkpoint), or from the fine-tuned checkpoint of the task named by
   ``init_from`` (RTE, MRPC, STS-B from MNLI in the paper; the classifier is re-initialised when the label
   count differs). Composer trains it and evaluates it on every evaluation split; the final model is
   always evaluated.
3. Jobs run one after another in this process (CPU, one GPU), or with ``parallel: true`` and several
   GPUs one per GPU at a time, each in a subprocess with ``CUDA_VISIBLE_DEVICES`` set and its output in
   ``<results_dir>/logs/``; a job that starts from another waits for it.
4. After every job, ``<results_dir>/results.json`` and ``results.md`` are rewritten: per-task means and
   standard deviations over seeds, per-task GLUE scores and the GLUE average
   (:func:`mosaicbert.finetune.metrics.glue_score`). A failed job is reported and left out; the run goes on
   with the others (except those that start from it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Optional

import numpy as np
import torch
from composer import Trainer
from composer.core import Callback, DataSpec, Evaluator, State
from composer.loggers import Logger
from composer.utils import dist, reproducibility
from torch.utils.data import DataLoader
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from ..checkpoints import Weights, load_weights, read_weights
from ..composer_models import (FAMILIES, RUN_ONLY_CONFIG_KEYS, TASK_LABEL_KEYS, ComposerClassifier,
                               check_config_keys, check_max_seq_len, make_config, padded_vocab_size)
from ..config import to_dict, validate
from ..data.mlm_collator import split_batch
from ..errors import RecipeError, describe
from ..tokenizer import hub_reachable, load_tokenizer
from ..training.callbacks import RecipeMetadata, latest_checkpoint
from ..training.cli import visible_gpu_ids
from ..training.trainer import (
    build_optimization,
    configure_logging,
    device_batch_sizes,
    resolve_device,
    trainer_kwargs,
)
from .config import FinetuneConfig, TaskPlan, check_task_configs, task_config, task_plans
from .data import ClassificationCollator, ClassificationDataset
from .metrics import build_torchmetrics, result_key
from .results import markdown, summarize, write_results
from .tasks import TaskSpec
from .tsv import load_hub_split, load_task_splits, task_folder

log = logging.getLogger(__name__)

# Weights a classifier may lack in an MLM checkpoint: BERT's pooler is trained by next-sentence
# prediction, which neither family's MLM pretraining has.
NEW_HEAD_PREFIXES = ("classifier", "bert.pooler")
# Config keys that describe a head, a file or a library version rather than the encoder.
_NOT_ENCODER_CONFIG = RUN_ONLY_CONFIG_KEYS | TASK_LABEL_KEYS | {"model_type"}
LATEST = "latest-rank0.pt"


# ----------------------------------------------------------------------------------------------
# The pretrained encoder
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Encoder:
    """The pretrained checkpoint: where it is, its weights, its family, config and tokenizer."""

    path: str
    family: str
    config: dict  # the encoder's Hugging Face config as a dict, recipe overrides not yet applied
    tokenizer_name: str
    weights: Weights


def read_encoder(cfg: FinetuneConfig) -> tuple[Encoder, PreTrainedTokenizerBase]:
    """Read ``pretrained_checkpoint`` and its tokenizer; family, config and tokenizer default to what the
    checkpoint says."""
    path = cfg.pretrained_checkpoint
    weights = read_weights(path)
    family = cfg.model_name or weights.model_family
    if family is None:
        raise RecipeError(f"pretrained_checkpoint {path!r} does not say which model family it holds (no recipe "
                          "metadata). Set model_name (hf_bert or mosaic_bert), tokenizer_name, and model_config "
                          "with the architecture (hidden_size, num_hidden_layers, ...).")
    if family not in FAMILIES:
        raise RecipeError(f"pretrained_checkpoint {path!r} holds a {family!r} model; glue.py fine-tunes "
                          f"{' and '.join(FAMILIES)}.")
    if cfg.model_name and weights.model_family and cfg.model_name != weights.model_family:
        raise RecipeError(f"model_name={cfg.model_name} but pretrained_checkpoint {path!r} holds a "
                          f"{weights.model_family} model; remove model_name (it defaults to the checkpoint's).")
    tokenizer_name = cfg.tokenizer_name or weights.tokenizer_name
    if not tokenizer_name:
        raise RecipeError(f"pretrained_checkpoint {path!r} does not name its tokenizer; set tokenizer_name "
                          "(e.g. bert-base-uncased, or a folder with tokenizer.json / vocab.txt).")
    tokenizer = load_tokenizer(tokenizer_name)
    if weights.model_config:
        config = dict(weights.model_config)
    else:  # no metadata: the architecture comes from model_config alone
        config = make_config(family, tokenizer, cfg.max_seq_len, cfg.model_config).to_dict()
    return Encoder(path, family, config, tokenizer_name, weights), tokenizer


def classifier_config(encoder: Encoder, spec: TaskSpec, overrides: dict, max_seq_len: int,
                      where: str = "model_config") -> PretrainedConfig:
    """The sequence-classification config of a task: the encoder's config, the recipe's overrides, the
    task's labels (``id2label`` from its label names, regression for one label)."""
    family = FAMILIES[encoder.family]
    check_config_keys(encoder.family, overrides, where, excluded=TASK_LABEL_KEYS,
                      note=" (num_labels comes from the task)")
    values = {k: v for k, v in encoder.config.items() if k not in _NOT_ENCODER_CONFIG}
    if "vocab_size" in values:  # an export trims the vocabulary to the tokenizer: pad it as training did
        values["vocab_size"] = padded_vocab_size(values["vocab_size"], {**values, **overrides})
    values.update(overrides)
    names = spec.label_names or tuple(f"LABEL_{i}" for i in range(spec.num_labels))
    values.update(id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)},
                  problem_type="regression" if spec.is_regression else "single_label_classification",
                  architectures=[family.classifier_class.__name__])
    try:
        config = family.config_class(**values)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{where} {overrides} does not make a valid {encoder.family} config: {err}") from None
    check_max_seq_len(config, max_seq_len)
    return config


def build_classifier(encoder: Encoder, config: PretrainedConfig, init_checkpoint: Optional[str] = None):
    """The family's classifier with encoder weights from the pretrained checkpoint, or every weight of a
    fine-tuned checkpoint (``init_checkpoint``) except a classifier of another shape."""
    model = FAMILIES[encoder.family].classifier_class(config)
    if init_checkpoint is None:
        load_weights(model, encoder.path, new_head_prefixes=NEW_HEAD_PREFIXES, weights=encoder.weights)
    else:
        load_weights(model, init_checkpoint, new_head_prefixes=("classifier",))
    return model


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def check_data(cfg: FinetuneConfig, plan: TaskPlan) -> None:
    """Before any job: the task's files exist and parse, or (data from the hub) the hub answers.

    The rows are dropped again: each task is read once more when it runs, which is cheaper than
    holding every task's rows for the whole run.
    """
    if task_folder(plan.spec, cfg.data_dir) is None:  # a GLUE task from the hub: downloaded when it runs
        if not hub_reachable():
            load_hub_split(plan.spec, "train")  # raises the error naming both ways to provide the data
        return
    load_task_splits(plan.spec, cfg.data_dir)


class Context:
    """What the jobs of one process share: the recipe, its plans, the encoder, the tokenizer, and the
    tokenized splits of the task that ran last (one task at a time: MNLI's are large)."""

    def __init__(self, cfg: FinetuneConfig, plans: dict[str, TaskPlan], encoder: Encoder,
                 tokenizer: PreTrainedTokenizerBase):
        self.cfg, self.plans, self.encoder, self.tokenizer = cfg, plans, encoder, tokenizer
        self._data: dict[tuple[str, int], dict[str, ClassificationDataset]] = {}

    def datasets(self, plan: TaskPlan, max_seq_len: int) -> dict[str, ClassificationDataset]:
        key = (plan.name, max_seq_len)
        if key not in self._data:
            self._data.clear()
            self._data[key] = {split: ClassificationDataset(rows, plan.spec, self.tokenizer, max_seq_len)
                               for split, rows in load_task_splits(plan.spec, self.cfg.data_dir).items()}
        return self._data[key]


# ----------------------------------------------------------------------------------------------
# Jobs
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Job:
    """One (task, seed). ``parent``: the job of this run whose checkpoint it starts from;
    ``init_checkpoint``: a checkpoint it starts from (a parent saved by an earlier run)."""

    task: str
    seed: int
    parent: Optional[str] = None
    init_checkpoint: Optional[str] = None
    save_folder: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.task}-seed{self.seed}"


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if "://" in root else os.path.join(root, *parts)


def plan_jobs(cfg: FinetuneConfig, plans: dict[str, TaskPlan], save_root: Optional[str]) -> list[Job]:
    """The jobs of the tasks that run, parents first; where each saves and what it starts from."""
    needed = {(plan.init_from, plan.parent_seed(seed, plans[plan.init_from]))
              for plan in plans.values() if plan.run and plan.init_from for seed in plan.seeds}
    jobs = []
    for plan in plans.values():
        if not plan.run:
            continue
        for seed in plan.seeds:
            job = Job(plan.name, seed)
            keep = cfg.save_folder is not None and plan.hparams.save is not False
            if keep or (plan.name, seed) in needed:
                job.save_folder = _join(save_root, plan.name, f"seed{seed}")
            if plan.init_from:
                parent = plans[plan.init_from]
                parent_seed = plan.parent_seed(seed, parent)
                if parent.run:
                    job.parent = f"{parent.name}-seed{parent_seed}"
                else:
                    job.init_checkpoint = _saved_checkpoint(cfg, save_root, plan, parent.name, parent_seed)
            jobs.append(job)
    return jobs


def _saved_checkpoint(cfg: FinetuneConfig, save_root: Optional[str], plan: TaskPlan, parent: str, seed: int) -> str:
    """The checkpoint an earlier run saved for (parent, seed), for a task whose parent run_tasks leaves out."""
    if cfg.save_folder is None or save_root is None:
        raise RecipeError(f"Task {plan.name!r} starts from {parent!r} (init_from), which run_tasks leaves out, and "
                          "save_folder is not set, so there is no saved checkpoint to start from. Set save_folder "
                          f"to where an earlier run saved {parent}, or add {parent!r} to run_tasks.")
    folder = _join(save_root, parent, f"seed{seed}")
    if "://" in folder:
        return _join(folder, LATEST + ".symlink")  # Composer uploads the latest pointer as a .symlink file
    path = os.path.join(folder, LATEST)
    if not os.path.exists(path):
        raise RecipeError(f"Task {plan.name!r} starts from {parent!r} seed {seed} (init_from), which run_tasks "
                          f"leaves out, but {path} does not exist. Run {parent!r} first (add it to run_tasks), "
                          "or point save_folder at the run that saved it.")
    return path


class FinalEval(Callback):
    """Keeps each evaluation split's latest metric values and the batch they were computed at."""

    def __init__(self):
        self.latest: dict[str, tuple[int, dict[str, float]]] = {}

    def eval_end(self, state: State, logger: Logger) -> None:
        values = {name: float(value) for name, value in state.eval_metric_values.items()}
        self.latest[state.dataloader_label] = (int(state.timestamp.batch), values)


def job_config(cfg: FinetuneConfig, plan: TaskPlan, job: Job) -> FinetuneConfig:
    return dataclasses.replace(task_config(cfg, plan), seed=job.seed, run_name=f"{cfg.run_name}-{job.name}",
                               save_folder=job.save_folder)


def _loader(dataset, batch_size: int, train: bool, seed: int, cfg: FinetuneConfig, collator, device: str):
    sampler = dist.get_sampler(dataset, shuffle=train, drop_last=train, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator, drop_last=train,
                        num_workers=cfg.num_workers, pin_memory=device == "gpu",
                        persistent_workers=cfg.num_workers > 0)
    return DataSpec(loader, split_batch=split_batch)


def run_job(ctx: Context, job: Job, init_checkpoint: Optional[str] = None) -> dict[str, Any]:
    """Fine-tune and evaluate one (task, seed); returns its record (metrics, checkpoint, timings)."""
    plan = ctx.plans[job.task]
    jcfg = job_config(ctx.cfg, plan, job)
    device = resolve_device(jcfg)
    per_device, microbatch = device_batch_sizes(jcfg, device)
    start = time.perf_counter()
    data = ctx.datasets(plan, jcfg.max_seq_len)
    if len(data["train"]) < per_device:
        raise RecipeError(f"Task {plan.name!r} has {len(data['train'])} training rows, fewer than one batch of "
                          f"{per_device}; lower its batch_size.")
    reproducibility.seed_all(job.seed)  # the new head's initial weights depend on the seed
    config = classifier_config(ctx.encoder, plan.spec, jcfg.model_config, jcfg.max_seq_len)
    model = ComposerClassifier(build_classifier(ctx.encoder, config, init_checkpoint), build_torchmetrics(plan.spec))

    collator = ClassificationCollator.for_tokenizer(ctx.tokenizer)
    train_loader = _loader(data["train"], per_device, True, job.seed, jcfg, collator, device)
    evaluators = [Evaluator(label=split, metric_names=list(model.val_metrics),
                            dataloader=_loader(data[split], jcfg.device_eval_batch_size, False, job.seed, jcfg,
                                               collator, device))
                  for split in plan.spec.eval_splits]
    optimizer, scheduler, algorithms, callbacks, loggers = build_optimization(jcfg, model)
    final_eval = FinalEval()
    callbacks += [final_eval, RecipeMetadata(ctx.encoder.family, config.to_dict(), ctx.encoder.tokenizer_name, recipe={
        "finetune": to_dict(jcfg), "task": plan.name, "seed": job.seed,
        "pretrained_checkpoint": ctx.cfg.pretrained_checkpoint, "init_checkpoint": init_checkpoint})]
    trainer = Trainer(model=model, train_dataloader=train_loader, eval_dataloader=evaluators, optimizers=optimizer,
                      schedulers=scheduler, algorithms=algorithms, callbacks=callbacks, loggers=loggers,
                      **trainer_kwargs(jcfg, device, microbatch))
    try:
        trainer.fit()
        batches = int(trainer.state.timestamp.batch)
        if any(final_eval.latest.get(split, (-1,))[0] != batches for split in plan.spec.eval_splits):
            trainer.eval()  # evaluation was off during training (eval_interval: 0)
        metrics = {result_key(plan.spec, split, name): value
                   for split in plan.spec.eval_splits for name, value in final_eval.latest[split][1].items()}
        checkpoint = _final_checkpoint(trainer, job)
    finally:
        trainer.close()
        del trainer, model, optimizer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"task": job.task, "seed": job.seed, "status": "ok", "metrics": metrics,
            "majority_baseline": majority_baseline(plan.spec, data), "checkpoint": checkpoint,
            "init_checkpoint": init_checkpoint, "batches": batches, "train_rows": len(data["train"]),
            "seconds": round(time.perf_counter() - start, 1)}


def majority_baseline(spec: TaskSpec, data: dict[str, ClassificationDataset]) -> Optional[dict[str, float]]:
    """Accuracy of always predicting the most frequent training class, on each evaluation split."""
    if spec.is_regression:
        return None
    majority = int(np.bincount(data["train"].labels, minlength=spec.num_labels).argmax())
    return {result_key(spec, split, "accuracy"): float(np.mean(data[split].labels == majority))
            for split in spec.eval_splits}


def _final_checkpoint(trainer: Trainer, job: Job) -> Optional[str]:
    """Where the job's final checkpoint can be read from (local path or URI), if it saved one."""
    saved = latest_checkpoint(trainer.state)
    if job.save_folder is None or saved is None:
        return None
    return _join(job.save_folder, os.path.basename(saved)) if "://" in job.save_folder else saved


def _failure(job: Job, status: str, error: str, log_path: Optional[str] = None) -> dict[str, Any]:
    return {"task": job.task, "seed": job.seed, "status": status, "error": error, "log": log_path}


def run_job_safely(ctx: Context, job: Job, init_checkpoint: Optional[str]) -> dict[str, Any]:
    """:func:`run_job`, with a failure turned into a record (the other jobs go on)."""
    try:
        return run_job(ctx, job, init_checkpoint)
    except KeyboardInterrupt:
        raise
    except RecipeError as err:
        log.error("Job %s failed: %s", job.name, err)
        return _failure(job, "failed", str(err))
    except Exception as err:
        log.error("Job %s failed:\n%s", job.name, traceback.format_exc())
        return _failure(job, "failed", describe(err, 300))


# ----------------------------------------------------------------------------------------------
# Scheduling: serial in this process, or one subprocess per GPU
# ----------------------------------------------------------------------------------------------
def gpu_slots(cfg: FinetuneConfig) -> list[str]:
    """GPU ids to spread jobs over (``CUDA_VISIBLE_DEVICES`` values); empty: run serially in-process."""
    if not cfg.parallel or cfg.device == "cpu" or not torch.cuda.is_available():
        return []
    ids = visible_gpu_ids()
    return ids if len(ids) > 1 else []


def _describe(ctx: Context, job: Job, init_checkpoint: Optional[str]) -> str:
    jcfg = task_config(ctx.cfg, ctx.plans[job.task])
    origin = job.parent or init_checkpoint
    start = f"from {origin}" if origin else "from the pretrained encoder"
    return (f"{job.name} ({start}; lr {jcfg.optimizer.get('lr')}, batch {jcfg.global_train_batch_size}, "
            f"{jcfg.max_duration}, {jcfg.precision})")


def _summary_line(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['status']}: {record.get('error')}" + (f" (log: {record['log']})" if record.get("log") else "")
    shown = ", ".join(f"{k}={100 * v:.2f}" for k, v in record["metrics"].items())
    return f"{shown} ({record['seconds']:.0f} s)"


def run_jobs(ctx: Context, jobs: list[Job], slots: list[str], work_dir: str,
             on_done: Callable[[dict], None]) -> list[dict]:
    """Run every job once its parent finished (a job whose parent failed is skipped)."""
    records: dict[str, dict] = {}
    pending = list(jobs)
    running: dict[str, tuple[Job, subprocess.Popen, str, str, Any]] = {}
    free = list(slots)
    total, finished = len(jobs), 0

    def start_point(job: Job) -> Optional[str]:
        """The checkpoint a job starts from: a saved parent's, a parent's from this run, or none."""
        return job.init_checkpoint or (records[job.parent]["checkpoint"] if job.parent else None)

    def finish(job: Job, record: dict) -> None:
        nonlocal finished
        finished += 1
        records[job.name] = record
        print(f"[{finished}/{total}] {job.name}: {_summary_line(record)}", flush=True)
        on_done(record)

    try:
        while pending or running:
            for job in list(pending):
                parent = records.get(job.parent) if job.parent else None
                if parent is not None and parent["status"] != "ok":
                    pending.remove(job)
                    finish(job, _failure(job, "skipped", f"{job.parent} did not finish"))
            ready = [job for job in pending if job.parent is None or job.parent in records]
            if not slots:  # serial, in this process; jobs are in dependency order
                if not ready:
                    break
                job = ready[0]
                pending.remove(job)
                init = start_point(job)
                print(f"\n[{finished + 1}/{total}] fine-tuning {_describe(ctx, job, init)}", flush=True)
                finish(job, run_job_safely(ctx, job, init))
                continue
            while free and ready:
                job = ready.pop(0)
                pending.remove(job)
                gpu = free.pop(0)
                init = start_point(job)
                running[gpu] = (job, *_launch(ctx, job, init, gpu, work_dir, len(slots)))
                print(f"started {_describe(ctx, job, init)} on GPU {gpu}; log: {running[gpu][3]}", flush=True)
            if not running and not ready:
                break
            time.sleep(1.0)
            for gpu, (job, proc, result_path, log_path, log_file) in list(running.items()):
                if proc.poll() is None:
                    continue
                log_file.close()
                del running[gpu]
                free.append(gpu)
                if proc.returncode == 0 and os.path.isfile(result_path):
                    with open(result_path) as f:
                        record = json.load(f)
                    record.setdefault("log", log_path)
                else:
                    record = _failure(job, "failed", f"worker exited with status {proc.returncode}", log_path)
                finish(job, record)
    finally:
        for job, proc, _, _, log_file in running.values():  # interrupted: stop the workers we started
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            log_file.close()
    for job in pending:  # only reachable if a parent never ran (should not happen)
        finish(job, _failure(job, "skipped", f"{job.parent} did not run"))
    return [records[job.name] for job in jobs if job.name in records]


def _launch(ctx: Context, job: Job, init_checkpoint: Optional[str], gpu: str, work_dir: str, n_workers: int):
    """Start a worker process for ``job`` on one GPU: (process, result path, log path, log file)."""
    os.makedirs(os.path.join(work_dir, "logs"), exist_ok=True)
    os.makedirs(os.path.join(work_dir, "jobs"), exist_ok=True)
    spec_path = os.path.join(work_dir, "jobs", f"{job.name}.json")
    result_path = os.path.join(work_dir, "jobs", f"{job.name}.result.json")
    log_path = os.path.join(work_dir, "logs", f"{job.name}.log")
    with contextlib.suppress(FileNotFoundError):
        os.remove(result_path)
    with open(spec_path, "w") as f:
        json.dump({"recipe": to_dict(ctx.cfg), "job": dataclasses.asdict(job), "init_checkpoint": init_checkpoint,
                   "result_path": result_path}, f, indent=2, default=str)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu, PYTHONUNBUFFERED="1")
    # CPU threads shared among the workers (as torchrun does), unless the user chose a number.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, n_workers))))
    log_file = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "mosaicbert.finetune.runner", "--worker", spec_path],
                            env=env, stdout=log_file, stderr=subprocess.STDOUT)
    return proc, result_path, log_path, log_file


def worker_main(spec_path: str) -> int:
    """A subprocess running one job (``python -m mosaicbert.finetune.runner --worker <job.json>``)."""
    with open(spec_path) as f:
        spec = json.load(f)
    cfg = validate(spec["recipe"], FinetuneConfig)
    # A log file, not a terminal: periodic metric lines instead of progress bars.
    cfg = dataclasses.replace(cfg, progress_bar=False, log_to_console=True)
    configure_logging(cfg.python_log_level)
    plans = task_plans(cfg)
    encoder, tokenizer = read_encoder(cfg)
    job = Job(**spec["job"])
    record = run_job_safely(Context(cfg, plans, encoder, tokenizer), job, spec["init_checkpoint"])
    with open(spec["result_path"] + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(spec["result_path"] + ".tmp", spec["result_path"])
    return 0


# ----------------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Prepared:
    cfg: FinetuneConfig
    plans: dict[str, TaskPlan]
    context: Context
    results_dir: str


def prepare(cfg: FinetuneConfig) -> Prepared:
    """Every check that can fail before training, in the order that fails fastest."""
    configure_logging(cfg.python_log_level)
    if not cfg.run_name:
        cfg = dataclasses.replace(cfg, run_name="glue")
    if dist.get_world_size() > 1:
        raise RecipeError("Run glue.py with plain `python glue.py ...`, not a multi-process launcher: it runs one "
                          "job per GPU itself (parallel: true).")
    plans = task_plans(cfg)
    check_task_configs(cfg, plans)
    running = [plan for plan in plans.values() if plan.run]
    for plan in running:
        jcfg = task_config(cfg, plan)
        device_batch_sizes(jcfg, resolve_device(jcfg))
    encoder, tokenizer = read_encoder(cfg)
    check_config_keys(encoder.family, cfg.model_config, "model_config", excluded=TASK_LABEL_KEYS,
                      note=" (num_labels comes from the task)")
    for plan in running:
        jcfg = task_config(cfg, plan)
        classifier_config(encoder, plan.spec, jcfg.model_config, jcfg.max_seq_len,
                          where=f"tasks.{plan.name}.model_config" if plan.hparams.model_config else "model_config")
    for plan in running:
        check_data(cfg, plan)
    results_dir = cfg.results_dir.format(run_name=cfg.run_name)
    return Prepared(cfg, plans, Context(cfg, plans, encoder, tokenizer), results_dir)


def run_finetuning(cfg: FinetuneConfig) -> dict[str, Any]:
    """Prepare, run every job, write and print the results; returns the results record."""
    prepared = prepare(cfg)
    cfg, plans, ctx, results_dir = prepared.cfg, prepared.plans, prepared.context, prepared.results_dir
    os.makedirs(results_dir, exist_ok=True)
    needs_parent = any(plan.run and plan.init_from and plans[plan.init_from].run for plan in plans.values())
    scratch = None
    if cfg.save_folder is not None:
        save_root = cfg.save_folder.format(run_name=cfg.run_name)
    elif needs_parent:  # parents' checkpoints, kept until the run ends
        scratch = tempfile.mkdtemp(prefix=".init-checkpoints-", dir=results_dir)
        save_root = scratch
    else:
        save_root = None
    jobs = plan_jobs(cfg, plans, save_root)
    slots = gpu_slots(cfg)
    print(f"Fine-tuning {cfg.pretrained_checkpoint} ({ctx.encoder.family}): {len(jobs)} job(s) over "
          f"{', '.join(p.name for p in plans.values() if p.run)}; "
          + (f"one per GPU on {len(slots)} GPUs" if slots else "one at a time") + f"; results in {results_dir}",
          flush=True)

    done: list[dict] = []
    order = [name for name in plans if plans[name].run]

    def record(summary_jobs: list[dict]) -> dict:
        summary = summarize(summary_jobs, order, cfg.stsb_metric)
        return {"run_name": cfg.run_name, "pretrained_checkpoint": cfg.pretrained_checkpoint,
                "model_family": ctx.encoder.family, "tokenizer_name": ctx.encoder.tokenizer_name,
                "finished": len(summary_jobs), "planned": len(jobs), **summary, "jobs": summary_jobs,
                "recipe": to_dict(cfg)}

    def on_done(job_record: dict) -> None:
        done.append(job_record)
        rec = record(done)
        write_results(results_dir, rec, markdown(rec, title=f"{cfg.run_name}: {cfg.pretrained_checkpoint}"))

    try:
        run_jobs(ctx, jobs, slots, results_dir, on_done)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    final = record(done)
    for job in final["jobs"]:  # checkpoints in the scratch folder are gone
        if scratch is not None and job.get("checkpoint", "") and str(job["checkpoint"]).startswith(scratch):
            job["checkpoint"] = None
    table = markdown(final, title=f"{cfg.run_name}: {cfg.pretrained_checkpoint}")
    json_path, md_path = write_results(results_dir, final, table)
    print("\n" + table + f"\nResults: {json_path}, {md_path}", flush=True)
    return final


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="glue.py worker (internal)")
    parser.add_argument("--worker", required=True, help="job spec written by the parent process")
    args = parser.parse_args(argv)
    return worker_main(args.worker)


if __name__ == "__main__":
    sys.exit(main())
