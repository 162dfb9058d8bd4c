"""Running the jobs: one after another in this process, or one per GPU at a time in worker processes.

With ``parallel: true`` and several GPUs, each job runs in ``python -m mosaicbert.finetune.scheduler
--worker <job.json>`` with ``CUDA_VISIBLE_DEVICES`` set to its GPU and its output in
``<results_dir>/logs/``; a job that starts from another waits for it, and a failed job is recorded
while the others go on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Optional

import torch

from ..config import to_dict, validate
from ..training.cli import visible_gpu_ids
from ..training.trainer import configure_logging
from .config import FinetuneConfig, task_config, task_plans
from .encoder import read_encoder
from .jobs import Context, Job, failure, run_job_safely


def gpu_slots(cfg: FinetuneConfig) -> list[str]:
    """One ``CUDA_VISIBLE_DEVICES`` value per job that may run at once (a GPU id ``jobs_per_gpu`` times);
    empty: run serially in this process."""
    if not cfg.parallel or cfg.device == "cpu" or not torch.cuda.is_available():
        return []
    return slots_for(visible_gpu_ids(), cfg.jobs_per_gpu)


def slots_for(gpu_ids: list[str], jobs_per_gpu: int) -> list[str]:
    """Worker slots over ``gpu_ids``, GPUs interleaved so that jobs spread before they share; none (serial)
    when a single job would run at a time."""
    if len(gpu_ids) * jobs_per_gpu <= 1:
        return []
    return [gpu for _ in range(jobs_per_gpu) for gpu in gpu_ids]


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
    running: dict[int, tuple[Job, subprocess.Popen, str, str, Any]] = {}  # slot index -> job
    free = list(range(len(slots)))
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
                    finish(job, failure(job, "skipped", f"{job.parent} did not finish"))
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
                slot = free.pop(0)
                init = start_point(job)
                running[slot] = (job, *_launch(ctx, job, init, slots[slot], work_dir, len(slots)))
                print(f"started {_describe(ctx, job, init)} on GPU {slots[slot]}; log: {running[slot][3]}",
                      flush=True)
            if not running and not ready:
                break
            time.sleep(1.0)
            for slot, (job, proc, result_path, log_path, log_file) in list(running.items()):
                if proc.poll() is None:
                    continue
                log_file.close()
                del running[slot]
                free.append(slot)
                if proc.returncode == 0 and os.path.isfile(result_path):
                    with open(result_path) as f:
                        record = json.load(f)
                    record.setdefault("log", log_path)
                else:
                    record = failure(job, "failed", f"worker exited with status {proc.returncode}", log_path)
                finish(job, record)
    finally:
        for job, proc, _, _, log_file in running.values():  # interrupted: stop the workers we started
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            log_file.close()
    for job in pending:  # only reachable if a parent never ran (should not happen)
        finish(job, failure(job, "skipped", f"{job.parent} did not run"))
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
    proc = subprocess.Popen([sys.executable, "-m", "mosaicbert.finetune.scheduler", "--worker", spec_path],
                            env=env, stdout=log_file, stderr=subprocess.STDOUT)
    return proc, result_path, log_path, log_file


def worker_main(spec_path: str) -> int:
    """A subprocess running one job (``python -m mosaicbert.finetune.scheduler --worker <job.json>``)."""
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


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="glue.py worker (internal)")
    parser.add_argument("--worker", required=True, help="job spec written by the parent process")
    args = parser.parse_args(argv)
    return worker_main(args.worker)


if __name__ == "__main__":
    sys.exit(main())
