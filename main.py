"""Pretrain a BERT-style encoder: `composer main.py yamls/<recipe>.yaml [key=value ...]`.

Thin by design: load and validate the recipe, let the builders make every component, hand them to
Composer. `python main.py ...` runs one process; `composer -n N main.py ...` runs N (see README).
"""

import sys

from composer.utils import dist

from mosaicbert.config import load_config
from mosaicbert.training.cli import run
from mosaicbert.training.multinode import explain_lost_ranks
from mosaicbert.training.trainer import build_pretraining_trainer, finished_run_message


def pretrain(yaml_path: str, overrides: list[str]) -> None:
    cfg = load_config(yaml_path, overrides)
    with explain_lost_ranks(cfg):
        trainer = build_pretraining_trainer(cfg)
        finished = finished_run_message(trainer)
        if finished:
            if dist.get_global_rank() == 0:
                print(finished, flush=True)
        else:
            trainer.fit()
    trainer.close()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], "main.py", pretrain,
                 resume_hint="the run continues from its last checkpoint with autoresume=true"))
