"""Run by tests/test_distributed.py under Composer's launcher: a time-budgeted run whose ranks have
clocks running at different speeds (rank r takes 0.5 x (r + 1) s per batch). Writes, per rank, the batch
it stopped at and the batches it evaluated at, to <out>/rank<r>.json."""

import json
import os
import sys

from composer.utils import dist

from test_time_budget import FakeTime, budget_trainer


def main(data: str, out: str) -> None:
    rank = dist.get_global_rank()
    fake = FakeTime(step=0.5 * (rank + 1))
    trainer, _ = budget_trainer(data, out, fake, "dist_timeout=60")
    trainer.fit()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"batches": int(trainer.state.timestamp.batch), "evals_at": fake.evals_at}, f)
    trainer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
