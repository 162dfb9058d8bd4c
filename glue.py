"""Fine-tune a pretrained checkpoint on GLUE and custom TSV tasks.

    python glue.py yamls/glue/<recipe>.yaml [key=value ...]

Thin by design: load and validate the recipe, then :func:`mosaicbert.finetune.runner.run_finetuning` checks
everything up front, runs one job per (task, seed) -- one per GPU at a time when there are several -- and
writes <results_dir>/results.json and results.md. See docs/finetune.md.
"""

import sys

from mosaicbert.finetune.runner import load_finetune_config, run_finetuning
from mosaicbert.training.cli import run

USAGE = """usage: python glue.py <recipe.yaml> [key=value ...]

  python glue.py yamls/glue/demo.yaml
  python glue.py yamls/glue/mosaicbert-base.yaml data_dir=./data/glue \\
      pretrained_checkpoint=runs/mosaicbert-base/checkpoints/latest-rank0.pt
  python glue.py yamls/glue/mosaicbert-base.yaml run_tasks=[rte,mrpc] tasks.rte.seeds=[19]

Runs one job per GPU at a time when several GPUs are visible (parallel: true); use plain python, not
`composer -n`. Overrides use dotted keys (tasks.rte.lr=2e-5). See docs/finetune.md for every key."""


def glue(yaml_path: str, overrides: list[str]) -> None:
    cfg = load_finetune_config(yaml_path, overrides)
    results = run_finetuning(cfg)
    if results["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    if not sys.argv[1:] or sys.argv[1] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if sys.argv[1:] else 2)
    sys.exit(run(sys.argv[1:], "glue.py", glue))
