"""Local checkpoint files that appear only when complete, and an autoresume that finds the newest one.

Composer 0.32 writes a checkpoint straight under its final name (``composer.utils.checkpoint.
_write_checkpoint_file``), then re-points ``latest-rank0.pt`` by deleting and re-creating the symlink. An
interruption at the wrong moment (Ctrl-C, a pre-emption's SIGKILL, a full disk) left:

* a partial ``ep0-ba600-rank0.pt``. With ``save_overwrite: false`` Composer's autoresume then refuses to
  start ("may conflict with a future checkpoint ... delete that file") until a person deletes it;
* no ``latest-rank0.pt``, or one pointing at an older checkpoint than the newest complete file, so that
  autoresume starts over or refuses in the same way.

:func:`use_atomic_checkpoint_writes` makes Composer write each checkpoint file to ``.partial-<pid>-<name>``
in the same folder, flush it to disk (fsync) and rename it to its name: a rename within a folder is atomic,
so a checkpoint name only ever holds a complete file. An interrupted or failed write removes its partial
file; a full disk is a RecipeError that says so. :func:`prepare_autoresume` runs before the Trainer looks
for the latest checkpoint: it removes partial files left by a killed process and points
``latest-rank0.pt`` at the newest complete checkpoint in the folder.

Object-store save folders are staged locally by Composer with the same writer and uploaded afterwards;
the upload side is Composer's. Sharded (``state_dict_type: sharded``) FSDP checkpoints are folders
written by ``torch.distributed.checkpoint`` and are not covered.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any, Optional

import composer.utils.checkpoint as composer_checkpoint

from ..checkpoints import check_checkpoint_file
from ..errors import RecipeError
from ..object_store import CHECKPOINT_NAME, LATEST_NAME, earlier_run_message, run_save_folder

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"

_composer_write = composer_checkpoint._write_checkpoint_file  # Composer's own writer, wrapped below


def _fsync(path: str) -> None:
    """Flush a file or a folder entry to disk (a folder: so that a rename in it survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint_atomically(state_dict: dict[str, Any], filename: str) -> None:
    """Composer's checkpoint writer, writing to a partial file that becomes ``filename`` only when complete.

    The partial file keeps the name's suffix, so Composer still picks tar or compression from it."""
    folder, name = os.path.split(os.path.abspath(filename))
    partial = os.path.join(folder, f"{PARTIAL_PREFIX}{os.getpid()}-{name}")
    try:
        _composer_write(state_dict, partial)
        _fsync(partial)
        os.replace(partial, filename)
        _fsync(folder)
    except BaseException as err:
        try:
            os.remove(partial)
        except FileNotFoundError:
            pass
        if _disk_full(err):
            latest = os.path.join(folder, LATEST_NAME)
            last = os.path.realpath(latest) if os.path.exists(latest) else None
            raise RecipeError(
                f"No space left on the disk of {folder!r} while writing checkpoint {name} ({describe_size(folder)}). "
                f"The partial file was removed; the last complete checkpoint is "
                f"{last or 'none (this was the first)'}. Fix: free space there, keep fewer checkpoints "
                "(save_num_checkpoints_to_keep) or point save_folder at a larger disk, then start the run again: "
                "with autoresume: true it continues from the last complete checkpoint.") from None
        raise


def _disk_full(err: BaseException) -> bool:
    """Whether ``err`` or an exception it arose from is "no space left" (torch.save turns the OSError of a
    full disk into a RuntimeError while closing its zip file)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


def describe_size(folder: str) -> str:
    """``'1.2 GB free'`` of the disk holding ``folder`` (for messages)."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return "free space unknown"
    return f"{stat.f_bavail * stat.f_frsize / 1e9:.1f} GB free"


def use_atomic_checkpoint_writes() -> None:
    """Make Composer write every monolithic checkpoint file through :func:`write_checkpoint_atomically`.

    Replaces ``composer.utils.checkpoint._write_checkpoint_file`` (Composer 0.32), which Composer's
    ``save_checkpoint`` calls by its module-level name; idempotent."""
    if getattr(composer_checkpoint, "_write_checkpoint_file", None) is None:
        raise RuntimeError("composer.utils.checkpoint._write_checkpoint_file is gone: this Composer version "
                           "writes checkpoints differently; update mosaicbert.training.checkpointing.")
    composer_checkpoint._write_checkpoint_file = write_checkpoint_atomically


def checkpoint_batch(name: str) -> Optional[int]:
    """The batch count in a checkpoint name of Composer's default pattern (``ep1-ba600-rank0.pt``)."""
    match = CHECKPOINT_NAME.match(name)
    return int(match.group(2)) if match else None


def refuse_earlier_local_checkpoints(save_folder: str, run_name: str) -> None:
    """A RecipeError, before anything is built, when a new run's local save folder holds checkpoints of an
    earlier run: Composer would otherwise refuse at fit start with a FileExistsError whose fix
    (``overwrite=True``) is not a recipe key."""
    names = local_checkpoints(save_folder, run_name)
    if names:
        raise RecipeError(earlier_run_message(run_save_folder(save_folder, run_name), names,
                                              "Composer would refuse to start", "{run_name}" in save_folder))


def local_checkpoints(save_folder: str, run_name: str) -> list[str]:
    """The checkpoint file names in the run's local save folder, oldest (fewest batches) first."""
    folder = run_save_folder(save_folder, run_name)
    if not os.path.isdir(folder):
        return []
    return sorted((name for name in os.listdir(folder) if checkpoint_batch(name) is not None), key=checkpoint_batch)


def _newest_checkpoint(folder: str, checkpoints: dict[str, int], latest: str) -> str:
    """The checkpoint a resumed run continues: the one ``latest`` links to, unless a checkpoint with more
    batches was written no earlier than it (a run stopped between writing a checkpoint and moving the
    link, or while Composer re-created the link); without a usable link, the one with the most batches.
    Trusting the link keeps a run started again from batch 0 with save_overwrite from resuming the earlier
    run's later checkpoints, which are older than what the new run wrote. (A copy that does not keep file
    times can make an older checkpoint look as new: it is then taken, as without a link.)"""
    target = os.path.basename(os.path.realpath(latest)) if os.path.islink(latest) else None
    if target not in checkpoints:
        return max(checkpoints, key=checkpoints.get)
    written_at = os.path.getmtime(os.path.join(folder, target))
    later = [name for name, batch in checkpoints.items()
             if batch > checkpoints[target] and os.path.getmtime(os.path.join(folder, name)) >= written_at]
    return max(later, key=checkpoints.get) if later else target


def prepare_autoresume(save_folder: str, run_name: str) -> Optional[str]:
    """Before an autoresume start, on the process of global rank 0, with a local ``save_folder``: remove
    partial checkpoint files of killed writes, and point ``latest-rank0.pt`` at the newest complete
    checkpoint (:func:`_newest_checkpoint`) if it points elsewhere or nowhere. The checkpoint it
    points at is checked to be complete (:func:`~mosaicbert.checkpoints.check_checkpoint_file`).
    Returns that checkpoint's path, or None when there is none (or ``latest-rank0.pt`` is a regular
    file, which Composer downloads from an object store and is left to it)."""
    folder = run_save_folder(save_folder, run_name)
    if not os.path.isdir(folder):
        return None
    checkpoints = {}
    for name in os.listdir(folder):
        if name.startswith(PARTIAL_PREFIX):
            log.info("Removing %s: a checkpoint write that did not finish", name)
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass
        elif (batch := checkpoint_batch(name)) is not None and os.path.isfile(os.path.join(folder, name)):
            checkpoints[name] = batch
    if not checkpoints:
        return None
    latest = os.path.join(folder, LATEST_NAME)
    if os.path.exists(latest) and not os.path.islink(latest):
        return None  # a file (Composer's download of an object-store latest checkpoint): Composer's to use
    newest = _newest_checkpoint(folder, checkpoints, latest)
    path = os.path.join(folder, newest)
    try:  # before the link is pointed at it
        check_checkpoint_file(path)
    except RecipeError as err:
        raise RecipeError(f"autoresume: the newest checkpoint of run {run_name!r} is not usable. {err} If it was "
                          "written by an older version of this recipe (which wrote checkpoints in place), delete it: "
                          "autoresume then continues from the checkpoint before it.") from None
    if not (os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(path)):
        log.info("Pointing %s at %s, the newest complete checkpoint", latest, newest)
        staged = os.path.join(folder, f"{PARTIAL_PREFIX}{os.getpid()}-{LATEST_NAME}")
        os.symlink(newest, staged)
        os.replace(staged, latest)  # atomic: the link is never missing
        _fsync(folder)
    return path
