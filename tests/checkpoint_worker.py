"""Run by tests/test_interruptions.py: a tiny pretraining run (autoresume on, save_overwrite off) that is
killed with SIGKILL halfway through writing its second checkpoint, as a pre-emption would kill it."""

import io
import os
import signal
import sys

import torch

from mosaicbert.config import load_config
from mosaicbert.training.trainer import build_pretraining_trainer

from test_interruptions import autoresume_overrides
from test_train import DEMO

real_save = torch.save


def save_then_die_halfway(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and "state" in obj and int(obj["state"]["timestamp"]["Timestamp"]["batch"]) >= 6:
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)


def main(data: str, folder: str) -> None:
    torch.save = save_then_die_halfway
    trainer = build_pretraining_trainer(load_config(DEMO, autoresume_overrides(data, folder)))
    trainer.fit()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
