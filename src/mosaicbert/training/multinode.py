"""Runs across several nodes: gaps in Composer 0.32's and streaming 0.13's handling, closed here.

* :func:`join_ranks`: the first rendezvous waits ``dist_timeout``, not torch's 30 minutes.
* :func:`node_specific_signal_files`: autoresume with a ``save_folder`` that all nodes share.
* :func:`explain_lost_ranks`: what a rank says when another rank of the run is gone.

``tests/test_multinode.py`` checks them with two nodes on one host, each in its own namespaces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch.distributed
from composer.utils import dist

from ..errors import describe
from ..object_store import run_save_folder

if TYPE_CHECKING:
    from ..config import TrainerConfig


def join_ranks(device: str, timeout: float) -> None:
    """Set up the process group of a run of several processes, waiting at most ``timeout`` seconds for any
    rank, before the datasets are built.

    Composer does this in ``Trainer()``, after the dataloaders exist. Streaming's dataset, built first, then
    sets up a process group of its own with torch's default timeout (30 minutes), so one node that failed
    to start kept the others waiting that long. Composer's ``Trainer`` and streaming use the group set up
    here (both skip their own when one exists)."""
    if dist.get_world_size() > 1:
        dist.initialize_dist(device, timeout)


def node_specific_signal_files() -> None:
    """Give each node its own name for the files through which its local ranks wait for local rank 0.

    Composer 0.32 broadcasts that name from global rank 0, so every node gets the same one. Autoresume
    writes the file into ``save_folder``: on a folder all nodes share (NFS, Lustre) every node's local
    rank 0 then writes and removes the same file, and every removal but the first fails with
    FileNotFoundError, so a multi-node run with autoresume could not start. The node's own rank is
    appended after the broadcast. Each use of the name waits within one node, so nothing expects the
    nodes to agree on it. Safe to call more than once.
    """
    original = dist.get_node_signal_file_name
    if getattr(original, "node_specific", False):
        return

    def get_node_signal_file_name(rng=None) -> str:
        return f"{original(rng)}.node{dist.get_node_rank()}"

    get_node_signal_file_name.node_specific = True
    dist.get_node_signal_file_name = get_node_signal_file_name


def is_lost_rank_error(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another rank stopped answering: torch's own
    distributed errors (NCCL, the rendezvous store) or a gloo transport error, which torch raises as a
    plain RuntimeError naming gloo's source file."""
    return isinstance(err, torch.distributed.DistError) or (
        isinstance(err, RuntimeError) and "/gloo/transport/" in str(err))


class LostRankError(RuntimeError):
    """Another rank of a distributed run stopped answering (its process ended or its node failed)."""


@contextlib.contextmanager
def explain_lost_ranks(cfg: TrainerConfig) -> Iterator[None]:
    """Turn a collective that failed because another rank is gone into one error that says so and how to
    continue. Other errors pass through unchanged."""
    try:
        yield
    except Exception as err:
        if dist.get_world_size() < 2 or not is_lost_rank_error(err):
            raise
        folder = run_save_folder(cfg.save_folder, cfg.run_name)
        if cfg.autoresume:
            resume = (f"Relaunch every node with the same command: autoresume=true continues from the latest "
                      f"checkpoint in {folder}, if there is one.")
        elif cfg.save_folder:
            resume = (f"Relaunch every node; to continue from where the run stopped, set load_path to the latest "
                      f"checkpoint in {folder}, or use autoresume=true with a fixed run_name.")
        else:
            resume = "The run saves no checkpoints (save_folder is null): a relaunch starts from the beginning."
        raise LostRankError(
            f"Rank {dist.get_global_rank()} (node {dist.get_node_rank()}) lost contact with the other ranks of the "
            f"run, or never reached them ({describe(err, 300)}). A process on another node ended, its node failed, "
            f"or it was not started with the same --world_size, --master_addr and --master_port; the other nodes' "
            f"logs say which. A node that stops answering without closing its connections is given up on after "
            f"dist_timeout ({cfg.dist_timeout:g} s). {resume}") from err
