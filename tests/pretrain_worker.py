"""main.py's pretraining at a walking pace, for tests that kill a run from outside:

    python tests/pretrain_worker.py <progress_file> <seconds_per_batch> <recipe.yaml> [key=value ...]

The same recipe loading, trainer and error handling as main.py. After every batch it writes the batch
count to <progress_file> (so the test knows where the run is) and sleeps: the sleep changes no number of
the run, it only leaves time to stop it mid-run.
"""

import os
import sys
import time

from composer.core import Callback

from mosaicbert.config import load_config
from mosaicbert.training.cli import run
from mosaicbert.training.trainer import build_pretraining_trainer


class Pace(Callback):
    def __init__(self, progress_file: str, seconds: float):
        self.progress_file, self.seconds = progress_file, seconds

    def batch_end(self, state, logger):
        with open(self.progress_file + ".tmp", "w") as f:
            f.write(str(int(state.timestamp.batch)))
        os.replace(self.progress_file + ".tmp", self.progress_file)
        time.sleep(self.seconds)


def main(argv: list[str]) -> int:
    progress_file, seconds = argv[0], float(argv[1])

    def pretrain(yaml_path: str, overrides: list[str]) -> None:
        trainer = build_pretraining_trainer(load_config(yaml_path, overrides))
        trainer.state.callbacks.append(Pace(progress_file, seconds))
        trainer.fit()
        trainer.close()

    return run(argv[2:], "pretrain_worker.py", pretrain)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
