"""Entry-point plumbing shared by main.py and glue.py: argument handling and clean user errors."""

from __future__ import annotations

import sys
from typing import Callable

from ..errors import RecipeError

USAGE = """usage: {prog} <recipe.yaml> [key=value ...]

  {prog} yamls/mosaicbert-base.yaml                      one process
  composer -n 8 {prog} yamls/mosaicbert-base.yaml        8 GPUs on this node
  {prog} yamls/demo.yaml max_duration=50ba model.name=hf_bert

Overrides use dotted keys (train_loader.num_workers=2). See README.md for every key."""


def run(argv: list[str], prog: str, body: Callable[[str, list[str]], None]) -> int:
    """Call ``body(yaml_path, overrides)``; print a RecipeError as one paragraph, exit status 2."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.format(prog=prog))
        return 0 if argv else 2
    try:
        body(argv[0], argv[1:])
    except RecipeError as err:
        print(f"\nerror: {err}\n", file=sys.stderr, flush=True)
        return 2
    return 0
