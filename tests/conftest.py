"""Shared fixtures: a small English-like corpus converted to MDS, made in a temp dir per session."""

import atexit
import gc
import importlib.util
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the hub

WORDS = (
    "the model reads text and learns to predict the missing words from their context while the "
    "optimizer updates every weight after each batch of samples so that the loss falls over time and "
    "a checkpoint keeps the state of the run for later use when training resumes from disk or cloud "
    "storage with the same order of samples across all ranks of the job"
).split()


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relative_path: str):
    """A script of this repo (``scripts/x.py``, ``benchmarks/x.py``) as a module, to call its functions."""
    name = os.path.splitext(os.path.basename(relative_path))[0]
    spec = importlib.util.spec_from_file_location(f"script_{name}", os.path.join(REPO, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_documents(n_docs: int, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English documents of varied length (so batches have real padding)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(1, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 18))]
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


@pytest.fixture(scope="session")
def tiny_mds(tmp_path_factory):
    """An MDS corpus with train / val / train_small / val_small splits (text column)."""
    import json

    from mosaicbert.data.convert import convert_text

    root = tmp_path_factory.mktemp("corpus")
    source = root / "docs.jsonl"
    with open(source, "w") as f:
        for doc in make_documents(600):
            f.write(json.dumps({"text": doc}) + "\n")
    out = root / "mds"
    convert_text([str(source)], str(out), val_fraction=0.1, train_small=200, val_small=50, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def tokenizer():
    """bert-base-uncased (the offline copy: tests never touch the hub)."""
    from mosaicbert.tokenizer import load_tokenizer

    return load_tokenizer("bert-base-uncased")


@pytest.fixture()
def fresh_shared_memory():
    """Streaming's shared memory from earlier tests released before, and datasets collected after.
    Opt in with ``pytestmark = pytest.mark.usefixtures("fresh_shared_memory")``."""
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def release_streaming_shared_memory(monkeypatch):
    """Streaming's shared memory made during a test is released after it.

    Streaming keeps every SharedMemory it makes alive until the process exits (an atexit handler holds
    it), one file descriptor each: a process that builds hundreds of datasets, as this suite does, runs
    out of descriptors. A dataset is meant to live as long as its process; tests make many.
    """
    from streaming.base.shared import memory

    made = []
    init = memory.SharedMemory.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(memory.SharedMemory, "__init__", recording_init)
    yield
    for shm in made:
        atexit.unregister(shm.cleanup)
        shm.cleanup()


@pytest.fixture()
def offline_hub(monkeypatch):
    """The hub counts as unreachable, and the cached reachability probe is forgotten."""
    from mosaicbert.tokenizer import hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()
