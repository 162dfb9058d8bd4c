"""Tokenized classification / regression datasets and their padding collator.

Rows come from :func:`mosaicbert.finetune.tsv.load_task_split`. Each row is tokenized once, up front,
as one sequence or a pair (``[CLS] a [SEP] b [SEP]`` with token_type_ids 1 on the second segment).
Token ids are kept in one flat int32 array with offsets rather than per-row Python lists, so MNLI's
393k training rows take ~100 MB instead of several GB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from ..errors import RecipeError
from .tasks import TaskSpec

_TOKENIZE_CHUNK = 2048  # rows per tokenizer call: fast batch tokenization with bounded peak memory


class ClassificationDataset(Dataset):
    """Rows of one task split, tokenized to at most ``max_seq_len`` tokens.

    Items are dicts of 1-D tensors ``input_ids``, ``attention_mask``, ``token_type_ids`` (unpadded) and a
    0-D ``labels`` tensor: int64 class ids, or float32 targets for regression. Pad them into batches
    with :class:`ClassificationCollator`.
    """

    def __init__(self, rows: Sequence[Mapping[str, object]], task: TaskSpec,
                 tokenizer: PreTrainedTokenizerBase, max_seq_len: int):
        min_len = 3 if task.is_pair else 2  # room for [CLS] ... [SEP] (and a second [SEP])
        if max_seq_len < min_len + 1:
            raise RecipeError(f"max_seq_len={max_seq_len} leaves no room for text in task {task.name!r}. "
                              f"Fix: set max_seq_len to a value such as 128 or 256.")
        self.task = task
        self.max_seq_len = max_seq_len
        ids, types, lengths = [], [], []
        for start in range(0, len(rows), _TOKENIZE_CHUNK):
            chunk = rows[start:start + _TOKENIZE_CHUNK]
            encoded = _tokenize(chunk, task, tokenizer, max_seq_len)
            for input_ids, token_type_ids in zip(encoded["input_ids"], encoded["token_type_ids"]):
                ids.append(np.asarray(input_ids, dtype=np.int32))
                types.append(np.asarray(token_type_ids, dtype=np.int8))
                lengths.append(len(input_ids))
        self._ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
        self._types = np.concatenate(types) if types else np.zeros(0, dtype=np.int8)
        self._offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        label_dtype = np.float32 if task.is_regression else np.int64
        self._labels = np.asarray([row["label"] for row in rows], dtype=label_dtype)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start, end = self._offsets[index], self._offsets[index + 1]
        input_ids = torch.from_numpy(self._ids[start:end].astype(np.int64))
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.from_numpy(self._types[start:end].astype(np.int64)),
            "labels": torch.tensor(self._labels[index]),
        }

    @property
    def labels(self) -> np.ndarray:
        """Every item's label: int64 class ids, or float32 targets for regression."""
        return self._labels

    @property
    def lengths(self) -> np.ndarray:
        """Token count of every item (e.g. for length statistics or bucketing)."""
        return np.diff(self._offsets)


def _tokenize(rows: Sequence[Mapping[str, object]], task: TaskSpec, tokenizer: PreTrainedTokenizerBase,
              max_seq_len: int):
    """Tokenize rows as single sequences or pairs; pairs are trimmed longest-first to fit."""
    first = [str(row[task.text_columns[0]]) for row in rows]
    second = [str(row[task.text_columns[1]]) for row in rows] if task.is_pair else None
    return tokenizer(first, second, truncation="longest_first", max_length=max_seq_len, padding=False,
                     return_attention_mask=False, return_token_type_ids=True)


class ClassificationCollator:
    """Pads a list of :class:`ClassificationDataset` items into a batch of tensors.

    Pads on the right to the longest item, or to ``pad_to`` (e.g. max_seq_len, for fixed shapes).
    A class rather than a closure so that DataLoader worker processes can pickle it.
    """

    def __init__(self, pad_token_id: int = 0, pad_to: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to

    @classmethod
    def for_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, pad_to: int | None = None):
        """A collator using the tokenizer's pad token."""
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(pad_token_id=pad_id, pad_to=pad_to)

    def __call__(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        width = longest if self.pad_to is None else self.pad_to
        if longest > width:
            raise ValueError(f"an item has {longest} tokens, more than pad_to={width}")
        batch = {
            "input_ids": torch.full((len(items), width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(items), width), dtype=torch.long),
            "token_type_ids": torch.zeros((len(items), width), dtype=torch.long),
        }
        for i, item in enumerate(items):
            for key in batch:
                batch[key][i, :len(item[key])] = item[key]
        batch["labels"] = torch.stack([item["labels"] for item in items])
        # Host-side sizes (Composer splits lists with the batch): unpadding models need no device sync.
        batch["row_lengths"] = [len(item["input_ids"]) for item in items]
        return batch
