"""Run by tests/test_distributed.py under Composer's launcher: a time-budgeted run whose ranks have
clocks running at different speeds (rank r takes 0.5 x (r + 1) s per batch). Writes, per rank, the batch
it stopped at and the batches it evaluated at, to <out>/rank<r>.json."""

import json
import os
import sys

from composer.utils import dist

from mosaicbert.config import load_config
from mosaicbert.training.time_budget import TimeBudget
from mosaicbert.training.trainer import build_pretraining_trainer
from test_time_budget import FakeTime
from test_train import DEMO, tiny_overrides


def main(data: str, out: str) -> None:
    overrides = tiny_overrides(data, out, eval_subset_num_batches=1, max_duration="1000ba", eval_interval="1000ba",
                               dist_timeout=60)
    cfg = load_config(DEMO, overrides + ["save_folder=null", "callbacks.time_budget.train_seconds=10",
                                         "callbacks.time_budget.eval_every_seconds=3"])
    trainer = build_pretraining_trainer(cfg)
    rank = dist.get_global_rank()
    fake = FakeTime(step=0.5 * (rank + 1))
    budget = next(c for c in trainer.state.callbacks if isinstance(c, TimeBudget))
    budget.clock, budget.graph_count = (lambda: fake.now), (lambda: fake.graphs)
    trainer.state.callbacks.append(fake)
    trainer.fit()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"batches": int(trainer.state.timestamp.batch), "evals_at": fake.evals_at}, f)
    trainer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
