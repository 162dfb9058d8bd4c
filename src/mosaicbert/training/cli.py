"""Entry-point plumbing shared by main.py and glue.py: argument handling and clean user errors."""

from __future__ import annotations

from typing import Callable, Optional

from ..errors import report_errors

PRETRAIN_USAGE = """usage: {prog} <recipe.yaml> [key=value ...]

  {prog} yamls/mosaicbert-base.yaml                      one process
  composer -n 8 {prog} yamls/mosaicbert-base.yaml        8 GPUs on this node
  {prog} yamls/demo.yaml max_duration=50ba model.name=hf_bert

Overrides use dotted keys (train_loader.num_workers=2). See README.md for every key."""


def run(argv: list[str], prog: str, body: Callable[[str, list[str]], Optional[int]],
        usage: str = PRETRAIN_USAGE) -> int:
    """Call ``body(yaml_path, overrides)``: its int result (or 0) is the exit status; a RecipeError is
    printed as one paragraph with exit status 2. No arguments or ``-h`` print ``usage``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage.format(prog=prog))
        return 0 if argv else 2
    return report_errors(lambda: body(argv[0], argv[1:]))
