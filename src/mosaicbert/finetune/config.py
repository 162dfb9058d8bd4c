"""The fine-tuning recipe (``glue.py``): :class:`FinetuneConfig`, per-task hyperparameters, and the checks
that turn a recipe into a validated plan before any job starts.

A recipe names one pretrained checkpoint and the tasks to fine-tune it on::

    pretrained_checkpoint: runs/demo/checkpoints/latest-rank0.pt
    optimizer: {name: decoupled_adamw, lr: 5.0e-5, ...}      # defaults for every task
    tasks:
      mnli: {seeds: [19], lr: 5.0e-5, batch_size: 48, max_duration: 3ep}
      rte:  {seeds: [19, 8364], lr: 1.0e-5, init_from: mnli}
    custom_tasks:
      - {name: word_order, data_dir: data/demo_task, text_columns: [sentence], label_column: label,
         num_labels: 2, lr: 5.0e-5}

Per-task keys (:class:`TaskHParams`) override the top-level trainer keys for that task's jobs: ``lr``,
``weight_decay``, ``betas``, ``eps`` go into ``optimizer``; ``warmup`` / ``alpha_f`` into ``scheduler``
(``t_warmup`` / ``alpha_f``); ``batch_size`` is ``global_train_batch_size``; ``max_duration``,
``eval_interval``, ``precision``, ``max_seq_len`` replace their top-level values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional, Union

from .. import registry
from ..config import TrainerConfig, check_schedule_units
from ..errors import RecipeError
from ..validation import INTERVAL_UNITS, LENGTH_UNITS, check_keys, check_values, did_you_mean, help_text, schema_fields
from .tasks import _OPTIONAL_KEYS as TASK_SPEC_OPTIONAL_KEYS
from .tasks import _REQUIRED_KEYS as TASK_SPEC_REQUIRED_KEYS
from .tasks import GLUE_TASKS, TaskSpec, get_task

TASK_SPEC_KEYS = TASK_SPEC_REQUIRED_KEYS + TASK_SPEC_OPTIONAL_KEYS
Precision = Literal["fp32", "amp_bf16", "amp_fp16"]


@dataclasses.dataclass(kw_only=True)
class TaskHParams:
    """Per-task keys under ``tasks.<name>`` (or inside a ``custom_tasks`` entry); unset keys inherit the
    top-level value."""

    seeds: Optional[list[int]] = dataclasses.field(default=None, metadata=help_text(
        "One job per seed; default: default_seeds."))
    lr: Optional[float] = dataclasses.field(default=None, metadata=help_text("optimizer.lr for this task."))
    weight_decay: Optional[float] = dataclasses.field(default=None, metadata=help_text(
        "optimizer.weight_decay (decoupled: the decay per step is weight_decay x lr / peak lr)."))
    betas: Optional[list[float]] = dataclasses.field(default=None, metadata=help_text("optimizer.betas."))
    eps: Optional[float] = dataclasses.field(default=None, metadata=help_text("optimizer.eps."))
    warmup: Optional[str] = dataclasses.field(default=None, metadata=help_text(
        "scheduler.t_warmup, e.g. 0.06dur.", time_units=INTERVAL_UNITS, zero_time=True, integer_epochs=False))
    alpha_f: Optional[float] = dataclasses.field(default=None, metadata=help_text(
        "scheduler.alpha_f: final lr as a fraction of the peak."))
    batch_size: Optional[int] = dataclasses.field(default=None, metadata=help_text(
        "global_train_batch_size for this task.", minimum=1))
    microbatch_size: Optional[Union[int, Literal["auto"]]] = dataclasses.field(default=None, metadata=help_text(
        "device_train_microbatch_size for this task.", minimum=1))
    eval_batch_size: Optional[int] = dataclasses.field(default=None, metadata=help_text(
        "device_eval_batch_size for this task.", minimum=1))
    max_duration: Optional[Union[str, int]] = dataclasses.field(default=None, metadata=help_text(
        "Training length, e.g. 3ep.", time_units=LENGTH_UNITS))
    eval_interval: Optional[Union[str, int]] = dataclasses.field(default=None, metadata=help_text(
        "Evaluation interval during training (the final model is always evaluated).", time_units=INTERVAL_UNITS,
        zero_time=True))
    precision: Optional[Precision] = dataclasses.field(default=None, metadata=help_text(
        "Precision for this task (STS-B: fp32 in the paper's recipe)."))
    max_seq_len: Optional[int] = dataclasses.field(default=None, metadata=help_text(
        "Tokens per example for this task.", minimum=1))
    model_config: Optional[dict] = dataclasses.field(default=None, metadata=help_text(
        "Model config overrides for this task, on top of the top-level model_config."))
    init_from: Optional[str] = dataclasses.field(default=None, metadata=help_text(
        "Start from this task's fine-tuned checkpoint (same seed when it ran that seed, else its first "
        "seed) instead of pretrained_checkpoint; the paper starts RTE, MRPC and STS-B from MNLI."))
    save: Optional[bool] = dataclasses.field(default=None, metadata=help_text(
        "Keep this task's fine-tuned checkpoints under save_folder (default true when save_folder is set)."))


@dataclasses.dataclass(kw_only=True)
class FinetuneConfig(TrainerConfig):
    """Top-level keys of a fine-tuning recipe (``glue.py``). Trainer keys are defaults for every task."""

    pretrained_checkpoint: str = dataclasses.field(default=dataclasses.MISSING, metadata=help_text(
        "The encoder to fine-tune: a Composer checkpoint of main.py (local path or object-store URI), an "
        "exported Hugging Face folder, or a hub model name (when the hub is reachable)."))
    model_name: Optional[Literal["hf_bert", "mosaic_bert"]] = dataclasses.field(default=None, metadata=help_text(
        "Model family; default: the checkpoint's (from its metadata or config.json)."))
    tokenizer_name: Optional[str] = dataclasses.field(default=None, metadata=help_text(
        "Tokenizer; default: the one the checkpoint was trained with."))
    model_config: dict = dataclasses.field(default_factory=dict, metadata=help_text(
        "Overrides of the checkpoint's model config, e.g. {attention_backend: sdpa, classifier_dropout: 0.1}."))
    max_seq_len: int = dataclasses.field(default=256, metadata=help_text(
        "Tokens per example (the paper fine-tunes at 256)."))
    data_dir: Optional[str] = dataclasses.field(default=None, metadata=help_text(
        "GLUE TSV root (holding MNLI/, RTE/, ...); null: download GLUE from the Hugging Face hub."))
    results_dir: str = dataclasses.field(default="./runs/{run_name}", metadata=help_text(
        "Where results.json, results.md (and worker logs) go; {run_name} expands."))
    parallel: bool = dataclasses.field(default=True, metadata=help_text(
        "With several GPUs (or jobs_per_gpu > 1): jobs side by side, each in its own process. Otherwise serial."))
    jobs_per_gpu: int = dataclasses.field(default=1, metadata=help_text(
        "With parallel: jobs run at once on each GPU. A small task at batch 16 leaves a large GPU mostly idle, "
        "so 2-4 jobs per GPU finish sooner; each job's results are unchanged."))
    default_seeds: Optional[list[int]] = dataclasses.field(default=None, metadata=help_text(
        "Seeds of tasks that set none; default: [seed]."))
    tasks: dict = dataclasses.field(default_factory=dict, metadata=help_text(
        "GLUE task name -> its keys (see TaskHParams); an empty value runs the task with the defaults."))
    custom_tasks: list[dict] = dataclasses.field(default_factory=list, metadata=help_text(
        "Extra TSV tasks: each a task description (name, data_dir, text_columns, label_column, num_labels, "
        "...) plus any per-task keys."))
    run_tasks: Optional[list[str]] = dataclasses.field(default=None, metadata=help_text(
        "Run only these of the recipe's tasks (e.g. [rte]); init_from then reuses saved checkpoints of "
        "tasks not run."))
    stsb_metric: Literal["spearman", "mean"] = dataclasses.field(default="spearman", metadata=help_text(
        "STS-B's GLUE score: spearman (the original MosaicBERT code) or mean of Pearson and Spearman."))
    num_workers: int = dataclasses.field(default=0, metadata=help_text("DataLoader worker processes per job.",
                                                                       minimum=0))

    # Trainer keys with fine-tuning defaults (the paper's GLUE settings).
    run_name: Optional[str] = dataclasses.field(default="glue", metadata=help_text(
        "Name of the fine-tuning run; jobs are named <run_name>-<task>-seed<seed>."))
    max_duration: Union[str, int] = dataclasses.field(default="3ep", metadata=help_text(
        "Training length per job.", time_units=LENGTH_UNITS))
    global_train_batch_size: int = dataclasses.field(default=32, metadata=help_text(
        "Samples per optimizer step.", minimum=1))
    optimizer: dict = dataclasses.field(default_factory=lambda: {
        "name": "decoupled_adamw", "lr": 5.0e-5, "betas": [0.9, 0.98], "eps": 1.0e-6, "weight_decay": 5.0e-6},
        metadata=help_text("Optimizer for every task (per-task lr, weight_decay, betas, eps override it)."))
    scheduler: dict = dataclasses.field(default_factory=lambda: {
        "name": "linear_decay_with_warmup", "t_warmup": "0.06dur", "alpha_f": 0.0},
        metadata=help_text("LR schedule for every task (per-task warmup, alpha_f override it)."))
    save_interval: Union[str, int] = dataclasses.field(default="1dur", metadata=help_text(
        "Checkpoint interval within a job; 1dur: only the final model.", time_units=INTERVAL_UNITS))
    save_overwrite: bool = dataclasses.field(default=False, metadata=help_text(
        "Replace checkpoints of an earlier run of the same task and seed (false: such a run is refused up "
        "front)."))


# ----------------------------------------------------------------------------------------------
# Per-task plans
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TaskPlan:
    """One task of a recipe: what it is, its hyperparameters, its seeds, where it starts from."""

    name: str
    spec: TaskSpec
    hparams: TaskHParams
    seeds: list[int]
    run: bool = True  # False: named by another task's init_from but left out by run_tasks

    @property
    def init_from(self) -> Optional[str]:
        return self.hparams.init_from

    def parent_seed(self, seed: int, parent: "TaskPlan") -> int:
        """The parent's seed a job of this task starts from: the same seed if the parent ran it, else
        the parent's first seed (the paper's recipe runs MNLI with one seed, RTE with five)."""
        return seed if seed in parent.seeds else parent.seeds[0]


def _hparams(raw: Any, where: str) -> TaskHParams:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where} must be a mapping of per-task keys (or empty), got {raw!r}. "
                          f"Allowed keys: {', '.join(sorted(schema_fields(TaskHParams)[0]))}.")
    allowed, required = schema_fields(TaskHParams)
    check_keys(raw, allowed, required, where=f"{where}.")
    check_values(raw, TaskHParams, where=f"{where}.")
    hparams = TaskHParams(**raw)
    if hparams.seeds is not None:
        check_seeds(hparams.seeds, f"{where}.seeds")
    return hparams


def check_seeds(seeds: list, where: str) -> None:
    if not seeds or len(set(seeds)) != len(seeds):
        raise RecipeError(f"{where} is {seeds!r}; give a non-empty list of distinct seeds.")


def _unknown_task(name: str, known: list[str], where: str) -> RecipeError:
    return RecipeError(f"Unknown task {name!r} in {where}.{did_you_mean(name, known)} GLUE tasks: {', '.join(GLUE_TASKS)}; custom tasks "
                       f"of this recipe: {', '.join(known[len(GLUE_TASKS):]) or 'none'} (describe other data "
                       "under custom_tasks).")


def task_plans(cfg: FinetuneConfig) -> dict[str, TaskPlan]:
    """Validate ``tasks``, ``custom_tasks``, ``run_tasks`` and every ``init_from``; return the plans in run
    order (a task after the task it starts from). Plans with ``run=False`` are parents kept for their
    saved checkpoints."""
    default_seeds = list(cfg.default_seeds) if cfg.default_seeds is not None else [cfg.seed]
    check_seeds(default_seeds, "default_seeds")
    plans: dict[str, TaskPlan] = {}

    for index, entry in enumerate(cfg.custom_tasks):
        where = f"custom_tasks[{index}]"
        if not isinstance(entry, dict):
            raise RecipeError(f"{where} must be a mapping (a task description plus per-task keys), got {entry!r}.")
        hparam_keys = schema_fields(TaskHParams)[0]
        unknown = [k for k in entry if k not in TASK_SPEC_KEYS and k not in hparam_keys]
        if unknown:
            allowed = list(TASK_SPEC_KEYS) + sorted(hparam_keys)
            raise RecipeError(f"Unknown key '{where}.{unknown[0]}'.{did_you_mean(unknown[0], allowed)} "
                              "Allowed: task keys "
                              f"{', '.join(TASK_SPEC_KEYS)}; per-task keys {', '.join(sorted(hparam_keys))}.")
        spec = TaskSpec.from_dict({k: v for k, v in entry.items() if k in TASK_SPEC_KEYS})
        if spec.name in plans:
            raise RecipeError(f"{where}: custom task name {spec.name!r} is used twice; names must be unique.")
        hparams = _hparams({k: v for k, v in entry.items() if k in hparam_keys}, f"{where} ({spec.name})")
        plans[spec.name] = TaskPlan(spec.name, spec, hparams, [])

    known = list(GLUE_TASKS) + list(plans)
    glue_plans: dict[str, TaskPlan] = {}
    for name, raw in cfg.tasks.items():
        if name in plans:  # a custom task's keys given (or overridden) under tasks:
            given = _hparams(raw, f"tasks.{name}")
            # Every key given wins, null included (tasks.<name>.init_from=null clears it); keys not given
            # keep the custom_tasks entry's values.
            plans[name].hparams = dataclasses.replace(plans[name].hparams,
                                                      **{key: getattr(given, key) for key in raw or {}})
            continue
        if name not in GLUE_TASKS:
            raise _unknown_task(str(name), known, "tasks")
        glue_plans[name] = TaskPlan(name, get_task(name), _hparams(raw, f"tasks.{name}"), [])
    plans = {**glue_plans, **plans}  # GLUE tasks first, in recipe order, then custom tasks
    if not plans:
        raise RecipeError("The recipe has no tasks: list GLUE tasks under tasks: (e.g. tasks: {rte: {}}) or "
                          "describe your own under custom_tasks.")
    for plan in plans.values():
        plan.seeds = list(plan.hparams.seeds) if plan.hparams.seeds is not None else list(default_seeds)

    if cfg.run_tasks is not None:
        for name in cfg.run_tasks:
            if name not in plans:
                raise _unknown_task(name, known, "run_tasks") if name not in GLUE_TASKS else RecipeError(
                    f"run_tasks names {name!r}, which is not among this recipe's tasks "
                    f"({', '.join(plans)}); add it under tasks: first.")
        for plan in plans.values():
            plan.run = plan.name in cfg.run_tasks

    for plan in plans.values():
        parent = plan.init_from
        if parent is None:
            continue
        if parent not in plans:
            raise RecipeError(f"tasks.{plan.name}.init_from is {parent!r}, which is not a task of this recipe "
                              f"({', '.join(plans)}). Add {parent!r} under tasks: (its fine-tuned checkpoint "
                              "is the starting point), or remove init_from.")
        seen, node = [plan.name], parent
        while node is not None:
            if node in seen:
                raise RecipeError(f"init_from forms a cycle: {' -> '.join(seen + [node])}.")
            seen.append(node)
            node = plans[node].init_from
    return {name: plans[name] for name in _run_order(plans)}


def _run_order(plans: dict[str, TaskPlan]) -> list[str]:
    """Tasks by depth in the init_from chains (parents first), recipe order within a depth."""
    def depth(name: str) -> int:
        parent = plans[name].init_from
        return 0 if parent is None else 1 + depth(parent)

    return sorted(plans, key=lambda name: depth(name))  # sorted() is stable


# ----------------------------------------------------------------------------------------------
# One job's trainer settings
# ----------------------------------------------------------------------------------------------
_TRAINER_KEYS = {"batch_size": "global_train_batch_size", "microbatch_size": "device_train_microbatch_size",
                 "eval_batch_size": "device_eval_batch_size", "max_duration": "max_duration",
                 "eval_interval": "eval_interval", "precision": "precision", "max_seq_len": "max_seq_len"}
_OPTIMIZER_KEYS = ("lr", "weight_decay", "betas", "eps")
_SCHEDULER_KEYS = {"warmup": "t_warmup", "alpha_f": "alpha_f"}


def task_config(cfg: FinetuneConfig, plan: TaskPlan) -> FinetuneConfig:
    """The recipe with a task's keys applied: what each of its jobs trains with."""
    h = plan.hparams
    changes: dict[str, Any] = {field: getattr(h, key) for key, field in _TRAINER_KEYS.items()
                               if getattr(h, key) is not None}
    optimizer = dict(cfg.optimizer)
    optimizer.update({key: getattr(h, key) for key in _OPTIMIZER_KEYS if getattr(h, key) is not None})
    scheduler = dict(cfg.scheduler)
    scheduler.update({arg: getattr(h, key) for key, arg in _SCHEDULER_KEYS.items() if getattr(h, key) is not None})
    model_config = {**cfg.model_config, **(h.model_config or {})}
    return dataclasses.replace(cfg, optimizer=optimizer, scheduler=scheduler, model_config=model_config, **changes)


def check_task_configs(cfg: FinetuneConfig, plans: dict[str, TaskPlan]) -> None:
    """Every task's merged optimizer / scheduler against the registries, and trainer keys that
    fine-tuning does not use."""
    for key, hint in (("load_path", "set pretrained_checkpoint (fine-tuning always starts from it)"),
                      ("fsdp_config", "each job runs on one device; parallel: true spreads jobs over GPUs"),
                      ("autoresume", "re-run the tasks that did not finish with run_tasks")):
        if getattr(cfg, key):
            raise RecipeError(f"{key} is not used by glue.py; remove it ({hint}).")
    if cfg.jobs_per_gpu < 1:
        raise RecipeError(f"jobs_per_gpu is {cfg.jobs_per_gpu}; it counts jobs running at once on each GPU, so it "
                          "must be 1 or more.")
    for plan in plans.values():
        tcfg = task_config(cfg, plan)
        for section, table in (("optimizer", registry.OPTIMIZERS), ("scheduler", registry.SCHEDULERS)):
            name, kwargs = registry.split_named(getattr(tcfg, section), section)
            try:
                table.validate(name, kwargs, where=section)
            except RecipeError as err:
                raise RecipeError(f"Task {plan.name!r} (top-level {section} with its per-task keys): {err}") from None
        try:
            check_schedule_units(tcfg.scheduler, tcfg.max_duration)
        except RecipeError as err:
            raise RecipeError(f"Task {plan.name!r} (per-task warmup and max_duration applied): {err}") from None
        if tcfg.max_seq_len < 8:
            raise RecipeError(f"Task {plan.name!r}: max_seq_len={tcfg.max_seq_len} is too short; use e.g. 128 or 256.")
