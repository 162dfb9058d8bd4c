"""Pretraining data: MDS conversion, the streaming text dataset, MLM collation, the offline demo corpus.

Names are imported lazily, so ``import mosaicbert.data.demo_corpus`` (or ``.convert``) does not pay for
Composer's import time.
"""

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MLMCollator": "mlm_collator",
    "sample_generator": "mlm_collator",
    "StreamingTextDataset": "text_dataset",
    "build_text_dataloader": "text_dataset",
    "check_local_mds": "text_dataset",
    "chunk_text": "convert",
    "convert_text": "convert",
    "convert_c4": "convert",
    "write_mds_splits": "convert",
    "SplitTarget": "convert",
    "build_demo_corpus": "demo_corpus",
    "demo_corpus_exists": "demo_corpus",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .convert import SplitTarget, chunk_text, convert_c4, convert_text, write_mds_splits
    from .demo_corpus import build_demo_corpus, demo_corpus_exists
    from .mlm_collator import MLMCollator, sample_generator
    from .text_dataset import StreamingTextDataset, build_text_dataloader, check_local_mds


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
