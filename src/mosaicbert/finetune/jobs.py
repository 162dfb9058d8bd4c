"""One fine-tuning job: a (task, seed) pair, planned, built into a Composer trainer, run and recorded.

:func:`plan_jobs` turns the recipe's task plans into jobs, parents first (a task with ``init_from``
starts from its parent's fine-tuned checkpoint); :func:`run_job` fine-tunes and evaluates one job in
this process and returns its record; :class:`Context` holds what the jobs of one process share.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import time
import traceback
from typing import Any, Optional

import numpy as np
import torch
from composer import Trainer
from composer.core import Callback, DataSpec, Evaluator, State
from composer.loggers import Logger
from composer.utils import dist, reproducibility
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from ..composer_models import ComposerClassifier
from ..config import to_dict
from ..data.mlm_collator import split_batch
from ..errors import RecipeError, describe
from ..object_store import LATEST_NAME, SYMLINK_SUFFIX, checkpoint_names, is_s3
from ..training.callbacks import RecipeMetadata, latest_checkpoint
from ..training.checkpointing import local_checkpoints, use_atomic_checkpoint_writes
from ..training.trainer import (
    build_optimization,
    device_batch_sizes,
    resolve_device,
    trainer_kwargs,
)
from .config import FinetuneConfig, TaskPlan, task_config
from .data import ClassificationCollator, ClassificationDataset
from .encoder import Encoder, build_classifier, classifier_config
from .metrics import build_torchmetrics, result_key
from .tasks import TaskSpec
from .tsv import load_task_splits

log = logging.getLogger(__name__)



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


def keeps_checkpoints(cfg: FinetuneConfig, plan: TaskPlan) -> bool:
    """Whether a task's checkpoints stay under save_folder after the run."""
    return cfg.save_folder is not None and plan.hparams.save is not False


def parent_jobs(plans: dict[str, TaskPlan]) -> set[tuple[str, int]]:
    """(task, seed) of the jobs that a job of this run starts from."""
    return {(plan.init_from, plan.parent_seed(seed, plans[plan.init_from]))
            for plan in plans.values() if plan.run and plan.init_from and plans[plan.init_from].run
            for seed in plan.seeds}


def needs_scratch(cfg: FinetuneConfig, plans: dict[str, TaskPlan]) -> bool:
    """Whether a parent job must save where save_folder does not keep it (see :func:`plan_jobs`)."""
    return any(not keeps_checkpoints(cfg, plans[task]) for task, _ in parent_jobs(plans))


def plan_jobs(cfg: FinetuneConfig, plans: dict[str, TaskPlan], save_root: Optional[str],
              scratch_root: Optional[str] = None) -> list[Job]:
    """The jobs of the tasks that run, parents first; where each saves and what it starts from.

    A job saves under ``save_root`` when its task keeps checkpoints; a parent job of a task that keeps none
    (save_folder null, or save: false) saves under ``scratch_root``, which the caller removes after the run.
    """
    needed = parent_jobs(plans)
    jobs = []
    for plan in plans.values():
        if not plan.run:
            continue
        for seed in plan.seeds:
            job = Job(plan.name, seed)
            if keeps_checkpoints(cfg, plan):
                job.save_folder = _join(save_root, plan.name, f"seed{seed}")
            elif (plan.name, seed) in needed:
                if scratch_root is None:
                    raise ValueError(f"{job.name} is a parent job that keeps no checkpoint: pass a scratch_root")
                job.save_folder = _join(scratch_root, plan.name, f"seed{seed}")
            if plan.init_from:
                parent = plans[plan.init_from]
                parent_seed = plan.parent_seed(seed, parent)
                if parent.run:
                    job.parent = f"{parent.name}-seed{parent_seed}"
                else:
                    job.init_checkpoint = _saved_checkpoint(cfg, save_root, plan, parent.name, parent_seed)
            jobs.append(job)
    return jobs


def refuse_earlier_checkpoints(cfg: FinetuneConfig, plans: dict[str, TaskPlan]) -> None:
    """A RecipeError, before anything loads, when jobs of this run would save where an earlier run's
    checkpoints are and ``save_overwrite`` is off: Composer would stop such a job with a FileExistsError
    naming ``overwrite=True`` (not a recipe key), locally at its start and in a bucket after it trained.
    Local and ``s3://`` save folders (other stores are not listed)."""
    if cfg.save_overwrite or cfg.save_folder is None:
        return
    save_root = cfg.save_folder.format(run_name=cfg.run_name)
    earlier = []
    for plan in plans.values():
        if not (plan.run and keeps_checkpoints(cfg, plan)):
            continue
        for seed in plan.seeds:
            folder = _join(save_root, plan.name, f"seed{seed}")
            if is_s3(folder):
                names = checkpoint_names(folder, "save_folder")
            elif "://" not in folder:
                names = local_checkpoints(folder, cfg.run_name)
            else:
                names = []
            earlier += [f"{plan.name}/seed{seed}/{name}" for name in names]
    if not earlier:
        return
    shown = ", ".join(earlier[:3]) + (f" and {len(earlier) - 3} more" if len(earlier) > 3 else "")
    # Another run_name gives other folders only where save_folder names it, and tasks that start from a
    # parent this run leaves out look for the parent's checkpoint under this same folder.
    saved_parents = any(plan.run and plan.init_from and not plans[plan.init_from].run for plan in plans.values())
    elsewhere = ("another run_name (or save_folder) to keep them, "
                 if "{run_name}" in cfg.save_folder and not saved_parents else "")
    raise RecipeError(f"save_folder {save_root!r} already holds fine-tuned checkpoints of an earlier run ({shown}). "
                      f"Set save_overwrite=true to replace them (as running some tasks again with run_tasks does), "
                      f"{elsewhere}or save_folder=null to keep none.")


def _saved_checkpoint(cfg: FinetuneConfig, save_root: Optional[str], plan: TaskPlan, parent: str, seed: int) -> str:
    """The checkpoint an earlier run saved for (parent, seed), for a task whose parent run_tasks leaves out."""
    if cfg.save_folder is None or save_root is None:
        raise RecipeError(f"Task {plan.name!r} starts from {parent!r} (init_from), which run_tasks leaves out, and "
                          "save_folder is not set, so there is no saved checkpoint to start from. Set save_folder "
                          f"to where an earlier run saved {parent}, or add {parent!r} to run_tasks.")
    folder = _join(save_root, parent, f"seed{seed}")
    if "://" in folder:
        return _join(folder, LATEST_NAME + SYMLINK_SUFFIX)  # Composer uploads the latest pointer as a .symlink
    path = os.path.join(folder, LATEST_NAME)
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
    use_atomic_checkpoint_writes()
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


def failure(job: Job, status: str, error: str, log_path: Optional[str] = None) -> dict[str, Any]:
    return {"task": job.task, "seed": job.seed, "status": status, "error": error, "log": log_path}


def run_job_safely(ctx: Context, job: Job, init_checkpoint: Optional[str]) -> dict[str, Any]:
    """:func:`run_job`, with a failure turned into a record (the other jobs go on)."""
    try:
        return run_job(ctx, job, init_checkpoint)
    except KeyboardInterrupt:
        raise
    except RecipeError as err:
        log.error("Job %s failed: %s", job.name, err)
        return failure(job, "failed", str(err))
    except Exception as err:
        log.error("Job %s failed:\n%s", job.name, traceback.format_exc())
        return failure(job, "failed", describe(err, 300))
