"""Fine-tune a pretrained checkpoint on GLUE and custom TSV tasks.

    python glue.py yamls/glue/<recipe>.yaml [key=value ...]

Thin by design: load and validate the recipe, then :func:`mosaicbert.finetune.runner.run_finetuning` checks
everything up front, runs one job per (task, seed) -- one per GPU at a time when there are several -- and
writes <results_dir>/results.json and results.md. See docs/finetune.md.
"""

import sys

from mosaicbert.config import load_config
from mosaicbert.finetune.config import FinetuneConfig
from mosaicbert.finetune.runner import run_finetuning
from mosaicbert.training.cli import run

USAGE = """usage: python {prog} <recipe.yaml> [key=value ...]

  python {prog} yamls/glue/demo.yaml
  python {prog} yamls/glue/mosaicbert-base.yaml data_dir=./data/glue \\
      pretrained_checkpoint=runs/mosaicbert-base/checkpoints/latest-rank0.pt
  python {prog} yamls/glue/mosaicbert-base.yaml run_tasks=[rte,mrpc] tasks.rte.seeds=[19]

Runs one job per GPU at a time when several GPUs are visible (parallel: true); use plain python, not
`composer -n`. Overrides use dotted keys (tasks.rte.lr=2e-5). See docs/finetune.md for every key."""


def glue(yaml_path: str, overrides: list[str]) -> int:
    results = run_finetuning(load_config(yaml_path, overrides, schema=FinetuneConfig))
    return 1 if results["failed"] else 0  # some jobs failed: reported in the table


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], "glue.py", glue, usage=USAGE))
