"""Masked-language-model batch collation with per-sample deterministic masking.

BERT masking: every ordinary token is selected independently with probability ``mlm_probability``;
a selected token becomes ``[MASK]`` 80% of the time, a random ordinary token 10% of the time and
stays unchanged 10% of the time. The loss is computed at selected positions only
(``labels == -100`` everywhere else).

Unlike Hugging Face's ``DataCollatorForLanguageModeling``, which draws from the global torch RNG of
whichever worker process happens to build the batch, the random numbers for one example come from a
generator keyed by ``(seed, epoch, sample_idx)``. A sample therefore gets the same mask whatever rank,
dataloader worker, batch or batch position it lands in: resuming from a checkpoint, or changing the
number of workers or devices, reproduces the masks exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from composer.core.data_spec import default_split_batch

from ..errors import RecipeError

PAD_TO_CHOICES = ("max_seq_len", "longest")

# Philox takes a 128-bit key: (seed, epoch << 40 | sample_idx). 2**40 samples (1.1e12) and 2**24 epochs
# are far beyond any pretraining run, and the packing is collision free inside those bounds.
_SAMPLE_BITS = 40
_EPOCH_BITS = 24


def sample_generator(seed: int, epoch: int, sample_idx: int) -> np.random.Generator:
    """The random generator that decides the masking of one sample.

    Philox is a counter-based generator built for exactly this (one independent stream per key) and
    is about twice as fast to construct as ``np.random.default_rng([seed, epoch, sample_idx])``, which
    matters at a few hundred samples per batch.
    """
    if not 0 <= sample_idx < 2**_SAMPLE_BITS:
        raise ValueError(f"sample_idx must be in [0, 2**{_SAMPLE_BITS}), got {sample_idx}")
    if not 0 <= epoch < 2**_EPOCH_BITS:
        raise ValueError(f"epoch must be in [0, 2**{_EPOCH_BITS}), got {epoch}")
    key = (int(seed) % 2**64, (int(epoch) << _SAMPLE_BITS) | int(sample_idx))
    return np.random.Generator(np.random.Philox(key=key))


def row_lengths(batch: dict) -> list[int]:
    """Real tokens per row: the collator's host-side list, else counted from ``attention_mask`` (a sync)."""
    if "row_lengths" in batch:
        return list(batch["row_lengths"])
    return batch["attention_mask"].sum(dim=1).tolist()


def row_masked(batch: dict) -> list[int]:
    """Masked (predicted) tokens per row, likewise from the host-side list when there is one."""
    if "row_masked" in batch:
        return list(batch["row_masked"])
    return (batch["labels"] != -100).sum(dim=1).tolist()


def split_batch(batch: dict, microbatch_size: int) -> list[dict]:
    """Composer's ``split_batch`` (tensors along dim 0, host-side lists such as ``row_lengths``,
    ``row_masked``, ``sample_idx`` alike). A batch no larger than a microbatch is
    returned whole, without Composer's warning (the last, short eval batch of every evaluation)."""
    if len(batch["input_ids"]) <= microbatch_size:
        return [batch]
    return default_split_batch(batch, microbatch_size)


def check_masking_args(mlm_probability: float, pad_to: str) -> None:
    """The collator's settings, checked in one place for the collator and for recipe validation."""
    if not 0.0 < float(mlm_probability) < 1.0:
        raise RecipeError(
            f"mlm_probability={mlm_probability!r} is outside (0, 1): it is the fraction of tokens the "
            "model learns to predict. Fix: set mlm_probability to a value such as 0.15 (BERT) or "
            "0.3 (MosaicBERT).")
    if pad_to not in PAD_TO_CHOICES:
        raise RecipeError(
            f"pad_to={pad_to!r} is not a padding mode. Fix: use 'max_seq_len' (fixed batch shapes, "
            "best with torch.compile) or 'longest' (pad to the longest sample in each batch).")


def check_sample_length(max_seq_len: int) -> None:
    if max_seq_len < 2:
        raise RecipeError(f"max_seq_len={max_seq_len!r} is too small to hold [CLS] and [SEP]. "
                          "Fix: set max_seq_len to at least 2 (MosaicBERT pretraining uses 128).")


class MLMCollator:
    """Pads a list of tokenized samples into a batch and applies BERT masking.

    Args:
        tokenizer: A Hugging Face tokenizer; only its special token ids, pad/mask ids and vocabulary
            size are used (and kept), so the collator pickles cheaply into dataloader workers.
        mlm_probability: Probability that an ordinary token is selected for prediction, in (0, 1).
        max_seq_len: Longest allowed sample, and the padded length when ``pad_to="max_seq_len"``.
        pad_to: ``"max_seq_len"`` for fixed shapes ``[B, max_seq_len]`` (no recompiles under
            ``torch.compile``) or ``"longest"`` to pad only to the longest sample of the batch.
        seed: Masking seed; with the sample's epoch and global index it keys the sample's generator.

    Each example is a dict with ``input_ids`` (list or 1-D array, ``[CLS] ... [SEP]``, length at most
    ``max_seq_len``), ``sample_idx`` (global sample index), optionally ``epoch`` (default 0) and
    optionally ``token_type_ids`` (default zeros).
    """

    def __init__(self, tokenizer: Any, mlm_probability: float, max_seq_len: int,
                 pad_to: str = "max_seq_len", seed: int = 0) -> None:
        check_masking_args(mlm_probability, pad_to)
        check_sample_length(max_seq_len)
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise RecipeError(f"Tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no mask or "
                              "pad token, so it cannot be used for masked language modeling. Fix: use a "
                              "BERT-style tokenizer such as 'bert-base-uncased'.")
        self.mlm_probability = float(mlm_probability)
        self.max_seq_len = int(max_seq_len)
        self.pad_to = pad_to
        self.seed = int(seed)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.mask_token_id = int(tokenizer.mask_token_id)

        vocab_size = len(tokenizer)
        special = {int(i) for i in tokenizer.all_special_ids}
        special |= {int(i) for i in (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
                                     tokenizer.mask_token_id) if i is not None}
        self.special_ids = np.array(sorted(special), dtype=np.int64)
        # Lookup table: is_special[token_id] (ids are < vocab_size).
        self.is_special = np.zeros(max(vocab_size, int(self.special_ids.max()) + 1), dtype=bool)
        self.is_special[self.special_ids] = True
        # Random replacements are drawn uniformly from the ordinary (non-special) ids.
        self.replacement_ids = np.flatnonzero(~self.is_special[:vocab_size]).astype(np.int64)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``B`` examples.

        Returns:
            ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``: int64 tensors of shape
            ``[B, T]`` with ``T = max_seq_len`` (``pad_to="max_seq_len"``) or the longest example.
            ``labels`` holds the original id at selected positions and -100 elsewhere.
            ``row_lengths`` and ``row_masked``: plain lists (one int per row) of real and selected
            tokens. They stay on the host (Composer moves only tensors and splits lists along the batch
            like the tensors), so an unpadding model knows its shapes without a device sync.
            ``sample_idx``: the rows' global sample indices (a list), for auditing data order.
        """
        if not examples:
            raise ValueError("MLMCollator got an empty list of examples")
        ids_list = [np.asarray(ex["input_ids"], dtype=np.int64).reshape(-1) for ex in examples]
        lengths = np.array([len(ids) for ids in ids_list])
        if lengths.max() > self.max_seq_len:
            raise ValueError(f"An example has {lengths.max()} tokens, more than max_seq_len="
                             f"{self.max_seq_len}; truncate in the dataset (StreamingTextDataset does).")
        batch_size = len(examples)
        seq_len = self.max_seq_len if self.pad_to == "max_seq_len" else int(lengths.max())

        input_ids = np.full((batch_size, seq_len), self.pad_token_id, dtype=np.int64)
        token_type_ids = np.zeros((batch_size, seq_len), dtype=np.int64)
        # Uniform draws deciding selection (u < p) and, via u / p, which of the 80/10/10 actions.
        # Padding keeps 1.0 so it is never selected.
        uniform = np.ones((batch_size, seq_len), dtype=np.float64)
        # Second draw, scaled to an index into replacement_ids for positions that get a random token.
        uniform_pick = np.zeros((batch_size, seq_len), dtype=np.float64)

        for row, (example, ids) in enumerate(zip(examples, ids_list)):
            length = len(ids)
            input_ids[row, :length] = ids
            if example.get("token_type_ids") is not None:
                token_type_ids[row, :length] = np.asarray(example["token_type_ids"], dtype=np.int64)
            # Draw for every real position (specials included) so a position's draw depends only on
            # the sample and the position, never on padding or batch composition.
            rng = sample_generator(self.seed, int(example.get("epoch") or 0), int(example["sample_idx"]))
            # One (2, length) call: about 3x cheaper than separate random() and integers() calls.
            uniform[row, :length], uniform_pick[row, :length] = rng.random((2, length))

        attention_mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
        random_pick = (uniform_pick * len(self.replacement_ids)).astype(np.int64)
        masked_ids, labels = self._mask(input_ids, attention_mask.astype(bool), uniform, random_pick)
        return {
            "input_ids": torch.from_numpy(masked_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "token_type_ids": torch.from_numpy(token_type_ids),
            "labels": torch.from_numpy(labels),
            "row_lengths": lengths.tolist(),
            "row_masked": (labels != -100).sum(axis=1).tolist(),
            "sample_idx": [int(example["sample_idx"]) for example in examples],
        }

    def _mask(self, input_ids: np.ndarray, real: np.ndarray, uniform: np.ndarray,
              random_pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the 80/10/10 rule; all arrays are ``[B, T]``. Returns (masked input_ids, labels)."""
        p = self.mlm_probability
        selected = (uniform < p) & real & ~self.is_special[input_ids]
        labels = np.where(selected, input_ids, -100)
        # Conditional on u < p, u / p is uniform on [0, 1): the same draw picks the action.
        action = uniform / p
        to_mask = selected & (action < 0.8)
        to_random = selected & (action >= 0.8) & (action < 0.9)
        masked = input_ids.copy()
        masked[to_mask] = self.mask_token_id
        masked[to_random] = self.replacement_ids[random_pick[to_random]]
        return masked, labels
