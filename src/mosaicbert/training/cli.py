"""Entry-point plumbing shared by main.py, glue.py and the scripts that launch them: argument handling,
clean user errors, the GPUs a process may hand out, and the end of a child's log."""

from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from ..errors import report_errors

PRETRAIN_USAGE = """usage: {prog} <recipe.yaml> [key=value ...]

  {prog} yamls/mosaicbert-base.yaml                      one process
  composer -n 8 {prog} yamls/mosaicbert-base.yaml        8 GPUs on this node
  {prog} yamls/demo.yaml max_duration=50ba model.name=hf_bert

Overrides use dotted keys (train_loader.num_workers=2). See docs/config.md for every key."""


def run(argv: list[str], prog: str, body: Callable[[str, list[str]], Optional[int]],
        usage: str = PRETRAIN_USAGE, resume_hint: str = "") -> int:
    """Call ``body(yaml_path, overrides)``: its int result (or 0) is the exit status; a RecipeError is
    printed as one paragraph with exit status 2 (:func:`~mosaicbert.errors.report_errors`, which prints
    ``resume_hint`` after Ctrl-C). No arguments or ``-h`` print ``usage``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage.format(prog=prog))
        return 0 if argv else 2
    return report_errors(lambda: body(argv[0], argv[1:]), resume_hint)


def visible_gpu_ids() -> list[str]:
    """The GPU ids this process may give its children as ``CUDA_VISIBLE_DEVICES``: its own
    ``CUDA_VISIBLE_DEVICES`` entries when set (so 2,3 stays 2,3), else 0..count-1."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def log_tail(path: str, chars: int = 3000) -> str:
    """The last ``chars`` characters of a child process's log, to show when it failed."""
    with open(path, errors="replace") as f:
        return f.read()[-chars:]
