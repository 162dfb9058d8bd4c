"""Turn a validated recipe into a Composer ``Trainer`` (pretraining), and the pieces fine-tuning reuses."""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional

import torch
from composer import Trainer
from composer.utils import dist, reproducibility

from .. import registry
from ..checkpoints import check_checkpoint_file, read_composer_checkpoint
from ..config import PretrainConfig, TrainerConfig, to_dict
from ..errors import RecipeError, describe
from ..object_store import LATEST_NAME, pretraining_store_kwargs, run_save_folder
from ..tokenizer import load_tokenizer
from ..validation import check_folder_can_be_made
from .callbacks import RecipeMetadata, RestoreRNG
from .checkpointing import (
    local_checkpoints,
    prepare_autoresume,
    refuse_earlier_local_checkpoints,
    use_atomic_checkpoint_writes,
)
from .multinode import join_ranks, node_specific_signal_files
from .time_budget import eval_interval_for

log = logging.getLogger(__name__)


def configure_logging(level: Optional[str]) -> None:
    if not level:
        return
    logging.basicConfig(format=f"%(asctime)s: rank{dist.get_global_rank()}: %(levelname)s: %(name)s: %(message)s")
    for name in ("composer", "mosaicbert", "streaming"):
        logging.getLogger(name).setLevel(level.upper())


def resolve_device(cfg: TrainerConfig) -> str:
    device = cfg.device or ("gpu" if torch.cuda.is_available() else "cpu")
    if device == "gpu" and not torch.cuda.is_available():
        raise RecipeError("device=gpu but no CUDA GPU is visible. Run on a GPU machine or set device=cpu precision=fp32.")
    if device == "cpu" and cfg.fsdp_config is not None:
        raise RecipeError("fsdp_config is set, but Composer's FSDP runs only on CUDA GPUs. Remove fsdp_config "
                          "(fsdp_config=null) for a CPU run; DDP over CPU processes works without it.")
    if device == "cpu" and cfg.precision != "fp32":
        raise RecipeError(f"precision={cfg.precision} needs a GPU (Composer runs only fp32 on CPU). "
                          "Set precision=fp32 for CPU runs, or run on a GPU.")
    return device


def device_batch_sizes(cfg: TrainerConfig, device: str) -> tuple[int, int | str]:
    """(samples per device per step, microbatch size) after checking the batch divides evenly."""
    world = dist.get_world_size()
    micro = cfg.device_train_microbatch_size
    if cfg.global_train_batch_size % world != 0:
        raise RecipeError(f"global_train_batch_size={cfg.global_train_batch_size} does not divide by the "
                          f"{world} processes of this run. Choose a multiple of {world}.")
    per_device = cfg.global_train_batch_size // world
    if isinstance(micro, int):
        # The microbatch is a cap (what fits in memory): a share of the batch below it, as on more GPUs
        # than the recipe was sized for, is one microbatch.
        micro = min(micro, per_device)
        if micro <= 0 or per_device % micro != 0:
            raise RecipeError(
                f"global_train_batch_size={cfg.global_train_batch_size} over {world} device(s) is {per_device} per "
                f"device, which device_train_microbatch_size={micro} does not divide. Use a microbatch that "
                f"divides {per_device}, or a global batch that is a multiple of {world} x {micro}.")
    elif device == "cpu":
        micro = per_device  # Composer's 'auto' needs a GPU (it probes CUDA out-of-memory)
    return per_device, micro


def check_checkpointing(cfg: TrainerConfig) -> None:
    """autoresume's requirements and a save_folder that can be made (before any folder is made)."""
    if cfg.autoresume and not (cfg.save_folder and cfg.run_name):
        raise RecipeError("autoresume=true needs save_folder and a fixed run_name (it looks for "
                          "<save_folder>/latest-rank0.pt of that run). Set both, or autoresume=false.")
    if cfg.save_folder and "://" not in cfg.save_folder:
        folder = run_save_folder(cfg.save_folder, cfg.run_name)
        check_folder_can_be_made(folder, f"save_folder={cfg.save_folder!r}")


def check_on_some_ranks(check: Callable[[], object], run_here: bool) -> None:
    """Run ``check`` where ``run_here`` and stop every rank with the first RecipeError any of them raised.

    A check that reads a large file or changes a shared folder runs on one rank per node (or only rank
    0); the ranks that skip it would otherwise wait for the failed one until the dist timeout and then
    report a lost rank instead of the problem."""
    problem = None
    if run_here:
        try:
            check()
        except RecipeError as err:
            problem = str(err)
    if dist.get_world_size() > 1:
        problem = next((p for p in dist.all_gather_object(problem) if p is not None), None)
    if problem is not None:
        raise RecipeError(problem)


def check_starting_checkpoint(cfg: TrainerConfig, store_kwargs: dict) -> None:
    """With autoresume and a local save_folder, rank 0 tidies the folder and checks the checkpoint to resume
    (:func:`~mosaicbert.training.checkpointing.prepare_autoresume`); without autoresume, a new run refuses a
    local save_folder that holds an earlier run's checkpoints. A local load_path is then checked to be a
    complete checkpoint (once per node: it reads the whole file), unless autoresume found a checkpoint, which
    Composer loads instead. Every rank stops on a problem. ``store_kwargs``: what
    :func:`~mosaicbert.object_store.pretraining_store_kwargs` returned (an s3:// autoresume's checkpoint)."""
    local_folder = bool(cfg.save_folder) and "://" not in cfg.save_folder
    resumes = cfg.autoresume and "load_path" in store_kwargs
    if cfg.autoresume and local_folder:
        check_on_some_ranks(lambda: prepare_autoresume(cfg.save_folder, cfg.run_name),
                            run_here=dist.get_global_rank() == 0)
        resumes = bool(local_checkpoints(cfg.save_folder, cfg.run_name))
    elif local_folder and not cfg.save_overwrite and not cfg.load_path:
        # With load_path, Composer's own check compares names with the loaded checkpoint's batch count.
        check_on_some_ranks(lambda: refuse_earlier_local_checkpoints(cfg.save_folder, cfg.run_name),
                            run_here=dist.get_global_rank() == 0)
    if cfg.load_path and "://" not in cfg.load_path and not resumes:
        check_on_some_ranks(lambda: check_checkpoint_file(cfg.load_path, key="load_path"),
                            run_here=dist.get_local_rank() == 0)


def agree_with_rank_zero(store_kwargs: dict) -> dict:
    """Rank 0's object-store arguments on every rank. Each rank lists the bucket by itself, and the
    newest checkpoint can change in between (a pre-empted run's last upload finishing while the nodes
    start): ranks that resumed from different checkpoints would disagree on batch, data order and schedule."""
    if dist.get_world_size() == 1:
        return store_kwargs
    shared = [store_kwargs]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def build_optimization(cfg: TrainerConfig, model: torch.nn.Module):
    """(optimizer, scheduler, algorithms, callbacks, loggers) from the recipe's sections."""
    optimizer = registry.build_named(registry.OPTIMIZERS, cfg.optimizer, params=model.parameters())
    scheduler = registry.build_named(registry.SCHEDULERS, cfg.scheduler)
    algorithms = registry.build_mapped(registry.ALGORITHMS, cfg.algorithms)
    callbacks = registry.build_mapped(registry.CALLBACKS, cfg.callbacks)
    loggers = registry.build_mapped(registry.LOGGERS, cfg.loggers)
    return optimizer, scheduler, algorithms, callbacks, loggers


TORCH_OPTIMIZE_DDP = torch._dynamo.config.optimize_ddp  # torch's default, read before anything sets it


def torch_compile_kwargs(compile_config) -> Optional[dict]:
    """``torch.compile``'s arguments from the recipe's ``compile_config`` (None: no compilation). Its
    ``optimize_ddp`` is a dynamo setting rather than an argument (how compiled graphs meet DDP's buckets),
    and a process-wide one: it is set on every call, so a recipe without the key gets torch's default even
    after another build in the same process (fine-tuning jobs) set it."""
    kwargs = dict(compile_config) if compile_config is not None else None
    torch._dynamo.config.optimize_ddp = (kwargs or {}).pop("optimize_ddp", TORCH_OPTIMIZE_DDP)
    return kwargs


# torch 2.7's Inductor writes C++ that does not compile for the MLM loss's backward on CPU ("conflicting
# declaration 'float tmp_acc0_arr [2]'"); torch 2.11 compiles it. Versions between are not tested.
CPU_COMPILE_MIN_TORCH = (2, 11)


def torch_version() -> tuple[int, int]:
    return tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def device_compile_config(compile_config: Optional[dict], device: str) -> Optional[dict]:
    """The recipe's torch.compile arguments, or None (eager) on CPU with a torch whose Inductor fails there."""
    if compile_config is not None and device == "cpu" and torch_version() < CPU_COMPILE_MIN_TORCH:
        log.warning("torch %s cannot compile this recipe's models on CPU (an Inductor C++ code generation bug, "
                    "fixed by torch %d.%d): training without torch.compile. Compilation is for GPUs; on CPU "
                    "set compile_config=null to silence this.", torch.__version__, *CPU_COMPILE_MIN_TORCH)
        return None
    return compile_config


def trainer_kwargs(cfg: TrainerConfig, device: str, microbatch) -> dict:
    """Trainer arguments that come straight from the shared top-level keys."""
    parallelism = {"fsdp": cfg.fsdp_config} if cfg.fsdp_config is not None else None
    compile_config = device_compile_config(torch_compile_kwargs(cfg.compile_config), device)
    return dict(
        run_name=cfg.run_name, seed=cfg.seed, device=device, precision=cfg.precision,
        max_duration=cfg.max_duration, eval_interval=cfg.eval_interval,
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        device_train_microbatch_size=microbatch,
        save_folder=cfg.save_folder, save_interval=cfg.save_interval,
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep, save_overwrite=cfg.save_overwrite,
        load_path=cfg.load_path, load_weights_only=cfg.load_weights_only, autoresume=cfg.autoresume,
        compile_config=compile_config, parallelism_config=parallelism,
        progress_bar=cfg.progress_bar, log_to_console=cfg.log_to_console,
        console_log_interval=cfg.console_log_interval, dist_timeout=cfg.dist_timeout,
        python_log_level=None,
    )


def build_pretraining_trainer(cfg: PretrainConfig) -> Trainer:
    """Everything a pretraining run needs, in the order that fails fastest on a bad recipe."""
    configure_logging(cfg.python_log_level)
    device = resolve_device(cfg)
    per_device, microbatch = device_batch_sizes(cfg, device)
    check_checkpointing(cfg)
    store_kwargs = pretraining_store_kwargs(cfg)  # s3:// URIs checked, autoresume's checkpoint found
    join_ranks(device, cfg.dist_timeout)
    store_kwargs = agree_with_rank_zero(store_kwargs)
    check_starting_checkpoint(cfg, store_kwargs)
    tokenizer = load_tokenizer(cfg.tokenizer_name)

    reproducibility.seed_all(cfg.seed)  # same initial weights on every rank and every run
    model = registry.build_named(registry.MODELS, cfg.model, tokenizer=tokenizer, max_seq_len=cfg.max_seq_len)
    train_loader = registry.build_named(registry.DATALOADERS, cfg.train_loader, tokenizer=tokenizer,
                                        max_seq_len=cfg.max_seq_len, device_batch_size=per_device, run_seed=cfg.seed)
    eval_loader = None
    if cfg.eval_loader is not None:
        eval_loader = registry.build_named(registry.DATALOADERS, cfg.eval_loader, tokenizer=tokenizer,
                                           max_seq_len=cfg.max_seq_len, device_batch_size=cfg.device_eval_batch_size,
                                           run_seed=cfg.seed)
    optimizer, scheduler, algorithms, callbacks, loggers = build_optimization(cfg, model)
    callbacks.append(RecipeMetadata(model.family.name, model.model.config.to_dict(), cfg.tokenizer_name,
                                    recipe=to_dict(cfg)))
    kwargs = trainer_kwargs(cfg, device, microbatch)
    kwargs["eval_interval"] = eval_interval_for(callbacks, cfg.eval_interval)
    if eval_loader is None:  # eval_loader=null: the recipe's evaluation settings have nothing to act on
        kwargs.update(eval_interval=0, eval_subset_num_batches=-1)
    kwargs.update(store_kwargs)
    use_atomic_checkpoint_writes()
    node_specific_signal_files()  # before Trainer(): autoresume looks for checkpoints in its constructor
    try:
        trainer = Trainer(
            model=model, train_dataloader=train_loader, eval_dataloader=eval_loader,
            optimizers=optimizer, schedulers=scheduler, algorithms=algorithms, callbacks=callbacks,
            loggers=loggers, **kwargs,
        )
    except (KeyError, RuntimeError) as err:  # Composer loads the starting checkpoint in the constructor
        starting = starting_checkpoint(cfg, store_kwargs)
        if starting is None:
            raise
        differences = model_differences(starting, model.family.name, model.model.config.to_dict())
        # Where the metadata names no difference (or there is none to read), the error's own words decide.
        if differences is None and not any(marker in str(err) for marker in (
                "size mismatch", "Missing key", "Unexpected key", "Missing optimizer state")):
            raise
        raise RecipeError(f"The checkpoint this run starts from, {starting!r}, does not fit the recipe's model "
                          f"({describe(err)}).{differences or ''} Set model.name and model.config to the "
                          "checkpoint's, or start a new run (another run_name or save_folder, without "
                          "load_path).") from None
    restore_rng_mid_epoch(trainer)
    return trainer


def starting_checkpoint(cfg: TrainerConfig, store_kwargs: dict) -> Optional[str]:
    """The checkpoint the Trainer loads at construction: autoresume's, else load_path; None for none."""
    if cfg.autoresume and "load_path" in store_kwargs:
        return store_kwargs["load_path"]
    if cfg.autoresume and cfg.save_folder and "://" not in cfg.save_folder and \
            local_checkpoints(cfg.save_folder, cfg.run_name):
        return os.path.join(run_save_folder(cfg.save_folder, cfg.run_name), LATEST_NAME)
    return cfg.load_path


# The config keys that set a model's parameter shapes: where a checkpoint and a recipe may differ.
SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size")


def model_differences(path: str, family: str, config: dict) -> Optional[str]:
    """How a local checkpoint's model (its RecipeMetadata) differs from the recipe's: the families and the
    shape settings, as a sentence; None when they agree or there is no metadata to compare (an object-store
    URI, or a checkpoint without it)."""
    if "://" in path:
        return None
    try:
        weights = read_composer_checkpoint(path)
    except RecipeError:
        return None
    if not weights.model_family:
        return None
    theirs = weights.model_config or {}
    differ = [f"{key} {theirs[key]} (checkpoint) vs {config[key]} (recipe)" for key in SHAPE_KEYS
              if key in theirs and key in config and theirs[key] != config[key]]
    if weights.model_family == family and not differ:
        return None
    return (f" It holds a {weights.model_family} model, this recipe builds {family}"
            + (f"; {', '.join(differ)}" if differ else "") + ".")


def finished_run_message(trainer: Trainer) -> Optional[str]:
    """What to say when a resumed run has already trained for its whole max_duration (a scheduler that
    relaunches a job after it ended, with autoresume), or None. Composer's ``fit`` would raise a ValueError
    that names ``reset_time``, not a recipe key."""
    state = trainer.state
    if state.max_duration is None or state.timestamp.get(state.max_duration.unit) < state.max_duration:
        return None
    return (f"Run {state.run_name!r} has already trained for its max_duration ({state.max_duration}): "
            f"its checkpoint is at batch {int(state.timestamp.batch)}, so there is nothing to train. To train "
            "longer, raise max_duration (a schedule given in 'dur' then follows the new length); for a new run, "
            "give another run_name.")


def restore_rng_mid_epoch(trainer: Trainer) -> None:
    """Make a mid-epoch resume continue the RNG stream exactly (see :class:`RestoreRNG`).

    Reads Composer 0.32's private ``Trainer._rng_state`` (the loaded checkpoint's RNG), which it leaves
    unused until the next epoch when the dataloader resumes by itself.
    """
    rng_state = getattr(trainer, "_rng_state", None)
    if rng_state is not None and int(trainer.state.timestamp.batch_in_epoch) > 0:
        trainer.state.callbacks.append(RestoreRNG(rng_state))
        trainer._rng_state = None
