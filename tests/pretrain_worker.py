"""main.py's pretraining, for tests that kill a run from outside:

    python tests/pretrain_worker.py <progress_file> <hold_at_batch> <recipe.yaml> [key=value ...]

The same recipe loading, trainer and error handling as main.py. After every batch it writes the batch
count to <progress_file>; after batch <hold_at_batch> (0: never) it waits there until it is killed, while
its checkpoint uploads go on in Composer's upload processes. Waiting changes no number of the run.
"""

import os
import sys
import time

from composer.callbacks import CheckpointSaver
from composer.core import Callback

from mosaicbert.config import load_config
from mosaicbert.training.cli import run
from mosaicbert.training.trainer import build_pretraining_trainer


class Progress(Callback):
    def __init__(self, progress_file: str, hold_at: int):
        self.progress_file, self.hold_at = progress_file, hold_at

    def batch_end(self, state, logger):
        batch = int(state.timestamp.batch)
        with open(self.progress_file + ".tmp", "w") as f:
            f.write(str(batch))
        os.replace(self.progress_file + ".tmp", self.progress_file)
        while batch == self.hold_at:
            time.sleep(1)


def main(argv: list[str]) -> int:
    progress_file, hold_at = argv[0], int(argv[1])

    def pretrain(yaml_path: str, overrides: list[str]) -> None:
        trainer = build_pretraining_trainer(load_config(yaml_path, overrides))
        trainer.state.callbacks.append(Progress(progress_file, hold_at))
        for callback in trainer.state.callbacks:
            if isinstance(callback, CheckpointSaver):
                # Composer's own test hook: poll for an uploaded checkpoint (before publishing the latest
                # symlink) every second instead of every 30 s, so the run's end waits less.
                callback._symlink_upload_wait_before_next_try_in_seconds = 1.0
        trainer.fit()
        trainer.close()

    return run(argv[2:], "pretrain_worker.py", pretrain)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
