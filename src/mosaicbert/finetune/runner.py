"""Fine-tune one pretrained checkpoint on GLUE and custom TSV tasks: ``python glue.py <recipe.yaml>``.

The flow, in the order that fails fastest on a bad recipe:

1. :func:`prepare` validates the recipe (task names and per-task keys, each task's optimizer and
   scheduler, devices and batch sizes), checks every task's files parse (or that the hub answers), reads
   the pretrained checkpoint (model family, config and tokenizer from its ``RecipeMetadata``, or
   ``config.json`` of an exported folder) and builds each task's classifier config. Nothing trains
   before all of that passed.
2. Each (task, seed) is a :class:`~mosaicbert.finetune.jobs.Job`: the family's sequence classifier with ``num_labels`` of the task,
   encoder weights from the pretrained checkpoint (a missing encoder weight is an error; the pooler and
   the classifier are new for an MLM checkpoint), or from the fine-tuned checkpoint of the task named by
   ``init_from`` (RTE, MRPC, STS-B from MNLI in the paper; the classifier is re-initialised when the label
   count differs). Composer trains it and evaluates it on every evaluation split; the final model is
   always evaluated.
3. Jobs run one after another in this process (CPU, one GPU), or with ``parallel: true`` on several
   GPUs (or ``jobs_per_gpu`` > 1) side by side, ``jobs_per_gpu`` per GPU, each in a subprocess
   (:mod:`mosaicbert.finetune.scheduler`); a job that starts from another waits for it.
4. After every job, ``<results_dir>/results.json`` and ``results.md`` are rewritten: per-task means and
   standard deviations over seeds, per-task GLUE scores and the GLUE average
   (:func:`mosaicbert.finetune.metrics.glue_score`). A failed job is reported and left out; the run goes on
   with the others (except those that start from it). An earlier run's results in the same folder are
   first renamed ``results-<their time>.json`` / ``.md`` (:func:`~mosaicbert.finetune.results.keep_earlier_results`).

The package, one job per module: ``config`` (the recipe schema and task plans), ``tasks`` (what each
task is), ``tsv`` (reading its rows), ``data`` (tokenized datasets), ``encoder`` (the pretrained
checkpoint and the classifier on it), ``jobs`` (one job), ``scheduler`` (running jobs), ``metrics`` and
``results`` (scores and tables), and this module (the whole run).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Any

from composer.utils import dist

from ..config import to_dict
from ..errors import RecipeError
from ..families import TASK_LABEL_KEYS, check_config_keys
from ..tokenizer import hub_reachable
from ..training.trainer import configure_logging, device_batch_sizes, resolve_device
from ..validation import check_folder_can_be_made
from .config import (
    FinetuneConfig,
    TaskPlan,
    check_task_configs,
    task_config,
    task_plans,
)
from .encoder import classifier_config, read_encoder
from .jobs import Context, needs_scratch, plan_jobs, refuse_earlier_checkpoints
from .results import keep_earlier_results, markdown, summarize, write_results
from .scheduler import gpu_slots, run_jobs
from .tsv import load_hub_split, load_task_splits, task_folder


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
    check_folder_can_be_made(cfg.results_dir.format(run_name=cfg.run_name), f"results_dir={cfg.results_dir!r}")
    if cfg.save_folder is not None and "://" not in cfg.save_folder:
        check_folder_can_be_made(cfg.save_folder.format(run_name=cfg.run_name), f"save_folder={cfg.save_folder!r}")
    refuse_earlier_checkpoints(cfg, plans)
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
    kept = keep_earlier_results(results_dir)
    if kept:
        print(f"The earlier results in {results_dir} are kept as {os.path.basename(kept)} (and .md).", flush=True)
    save_root = cfg.save_folder.format(run_name=cfg.run_name) if cfg.save_folder is not None else None
    scratch = None
    if needs_scratch(cfg, plans):  # checkpoints of parents that keep none, until the run ends
        scratch = tempfile.mkdtemp(prefix=".init-checkpoints-", dir=results_dir)
    jobs = plan_jobs(cfg, plans, save_root, scratch)
    slots = gpu_slots(cfg)
    print(f"Fine-tuning {cfg.pretrained_checkpoint} ({ctx.encoder.family}): {len(jobs)} job(s) over "
          f"{', '.join(p.name for p in plans.values() if p.run)}; "
          + (f"{cfg.jobs_per_gpu} per GPU on {len(set(slots))} GPU(s)" if slots else "one at a time")
          + f"; results in {results_dir}",
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
