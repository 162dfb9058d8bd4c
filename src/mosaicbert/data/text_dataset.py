"""Streaming MDS text dataset and the pretraining dataloader built on it.

Annotations here are real objects (no ``from __future__ import annotations``): the config validator
reads ``build_text_dataloader``'s signature to type-check YAML keys.
"""

import logging
import os
import socket
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch
from composer.core import DataSpec
from streaming import Stream, StreamingDataLoader, StreamingDataset
from streaming.base.dataset import _ShardState  # streaming 0.13's shard states in shared memory
from streaming.base.shuffle import algos as SHUFFLE_ALGOS
from streaming.base.stream import streams_registry
from streaming.base.util import bytes_to_int

from .. import registry
from ..errors import RecipeError, describe
from ..validation import check_range
from .mds_check import REBUILD_DATA, check_mds_folder
from .mlm_collator import MLMCollator, check_masking_args, check_sample_length, row_lengths, split_batch

log = logging.getLogger(__name__)

# Text is cut to this many characters per wanted token before tokenizing, so a 200k-character
# document does not get tokenized in full to keep its first 128 tokens (English averages ~4.4
# characters per WordPiece token; if the cut yields too few tokens the full text is used).
_CHARS_PER_TOKEN_BUDGET = 12


class SharedFolderStream(Stream):
    """A streaming ``Stream`` whose local folder may be shared by several nodes (NFS, Lustre).

    With no ``remote``, ``local`` is the data itself and streaming decompresses each zstd shard next to
    its zip on first use: to ``<shard>.tmp``, then renamed to ``<shard>``. Every node does this on its
    own, so nodes reading one shared folder at once write the same ``.tmp`` file, and the rename of all
    but the first fails with FileNotFoundError. Here each process decompresses to a name of its own (host
    and pid) and moves the result into place atomically: the shard that appears is whole, whichever node
    is first.
    """

    def _decompress_shard_part(self, zip_info: Any, zip_filename: str, raw_filename: str,
                               compression: str | None) -> None:
        own = f"{raw_filename}.{socket.gethostname()}-{os.getpid()}"
        super()._decompress_shard_part(zip_info, zip_filename, own, compression)
        os.replace(own, raw_filename)


SHARED_FOLDER_STREAM = "mosaicbert_shared_folder"
streams_registry.register(SHARED_FOLDER_STREAM, func=SharedFolderStream)


class StreamingTextDataset(StreamingDataset):
    """MDS samples as token ids, ready for :class:`~mosaicbert.data.mlm_collator.MLMCollator`.

    A sample holds either a ``text`` column (``str``, tokenized here with ``[CLS] ... [SEP]`` and
    truncated to ``max_seq_len``) or a pre-tokenized ``input_ids`` column (``ndarray:int32`` or
    ``bytes`` of int32, already with ``[CLS] ... [SEP]``; truncated to ``max_seq_len`` keeping the final
    ``[SEP]``). If a sample has both, ``input_ids`` wins.

    ``__getitem__(idx)`` returns ``{"input_ids": int64 array [L], "sample_idx": idx}`` plus ``"epoch"``
    while iterating (the epoch streaming is serving, so masks are re-drawn every epoch yet still
    reproducible). Random access outside iteration (``dataset[i]``) has no epoch; the collator then
    uses epoch 0. With ``fixed_masks`` no epoch is given either: every pass masks a sample alike.

    Args:
        tokenizer: Hugging Face tokenizer (used for ``text`` samples and the ``[SEP]`` id).
        max_seq_len: Maximum tokens per sample, special tokens included.
        local, remote, split, shuffle: As in :class:`streaming.StreamingDataset`.
        fixed_masks: Give no epoch, so every pass draws the same masks (evaluation sets).
        **streaming_kwargs: Any other :class:`streaming.StreamingDataset` keyword.
    """

    def __init__(self, tokenizer: Any, max_seq_len: int, local: str, remote: str | None = None,
                 split: str | None = None, shuffle: bool = False, fixed_masks: bool = False,
                 **streaming_kwargs: Any) -> None:
        check_sample_length(max_seq_len)
        streaming_kwargs.setdefault("stream_name", SHARED_FOLDER_STREAM)
        super().__init__(local=local, remote=remote, split=split, shuffle=shuffle, **streaming_kwargs)
        self.tokenizer = tokenizer
        self.max_seq_len = int(max_seq_len)
        self._sep_id = tokenizer.sep_token_id
        self._vocab_size = len(tokenizer)
        self._epoch: int | None = None
        self.fixed_masks = bool(fixed_masks)

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        """Streaming's shard preparation (download, decompression), ending the epoch with a clear error
        instead of a hang when it fails.

        Streaming 0.13 prepares shards in background threads. When that fails (a cut-off or damaged shard:
        zstd's "Src size is incorrect"), the shard stays "preparing" in the shared memory of all processes,
        so another process waiting for it waits forever, and this one stops with "Background thread
        failed". Here the shard goes back to "remote" (anyone waiting retries and fails in the same way),
        and the reason is kept: ``__iter__`` raises it as a RecipeError when the epoch's threads stop."""
        try:
            super().prepare_shard(shard_id, blocking)
        except Exception as err:
            if self._shard_states[shard_id] == _ShardState.PREPARING:
                self._shard_states[shard_id] = _ShardState.REMOTE
            message = self._shard_failure(shard_id, err)
            if threading.current_thread() is threading.main_thread() or not hasattr(self, "_event"):
                raise RecipeError(message) from None
            self._prepare_error = message
            self._event.set()  # streaming's own signal: this epoch's threads and yield loop stop

    def _shard_files(self, shard_id: int) -> tuple[Any, str, Any, Any]:
        """A shard's stream, its local folder and its (raw, packed) file entries (packed: None when the
        shard is not compressed)."""
        stream = self.streams[self.stream_per_shard[shard_id]]
        raw, packed = self.shards[shard_id].file_pairs[0]
        return stream, os.path.join(stream.local, stream.split or ""), raw, packed

    def _shard_failure(self, shard_id: int, err: Exception) -> str:
        stream, folder, raw, packed = self._shard_files(shard_id)
        local = os.path.join(folder, (packed or raw).basename)
        if stream.remote:
            fix = (f"delete {local} if it is there, so that it is downloaded from {stream.remote} again; if the "
                   f"remote copy is damaged too, {REBUILD_DATA}")
        else:
            fix = REBUILD_DATA
        return (f"Shard {local} could not be prepared ({describe(err)}): it is cut off or damaged (a download, copy "
                f"or conversion that did not finish). Fix: {fix}.")

    def _damaged_sample(self, idx: int, err: Exception) -> str:
        """A shard whose file has its recorded size but not its content (a disk or copy that changed bytes):
        the size check before training cannot see it, so reading one of its samples fails."""
        stream, folder, raw, packed = self._shard_files(self.spanner[idx][0])
        path = os.path.join(folder, raw.basename)
        source = f"downloaded from {stream.remote}" if stream.remote else None
        if packed is not None:
            fix = f"delete it: it is decompressed again from {packed.basename}"
            fix += f" (if that is damaged too, delete both: they are {source} again)" if source else \
                f"; if that fails too, {REBUILD_DATA}"
        else:
            fix = f"delete it so that it is {source} again" if source else REBUILD_DATA
        return (f"Sample {idx} could not be read from shard {path} ({describe(err)}): the file has the size its "
                f"index records but not its content (damaged on disk or in a copy). Fix: {fix}.")

    def _get_work(self, epoch: int, sample_in_epoch: int) -> Any:
        # StreamingDataset.__iter__ calls this once per epoch in every worker, with the epoch it is
        # about to serve (restored from the checkpoint on resumption). Remember it for __getitem__.
        self._epoch = int(epoch)
        return super()._get_work(epoch, sample_in_epoch)

    def on_exception(self, future: Future) -> None:
        # Streaming's shard threads report a failure here and then end the epoch quietly: the rank's
        # iteration just stops. Keep the error so that __iter__ can raise it. (A failed download or
        # decompression does not get here: prepare_shard keeps its own message.)
        if future.exception() is not None:
            self._thread_error = future.exception()
        super().on_exception(future)

    def __iter__(self) -> Any:
        self._thread_error = None
        self._prepare_error = None
        yield from super().__iter__()
        if self._prepare_error is not None:
            raise RecipeError(self._prepare_error)
        if self._thread_error is not None:
            folder = os.path.join(self.streams[0].local, self.streams[0].split)
            raise RuntimeError(
                f"Streaming could not prepare a shard of {folder!r} ({describe(self._thread_error)}; its "
                "traceback is logged above), so this rank stopped its epoch before its last sample. Stopping the "
                "run here: it would otherwise go on with fewer batches than it should, or none, and end as if it "
                "had finished. Check that every shard in that folder is complete and readable from every node."
            ) from self._thread_error

    def tokenize(self, text: str) -> np.ndarray:
        """``[CLS] text [SEP]`` token ids, int64 ``[L]`` with ``L <= max_seq_len``."""
        budget = self.max_seq_len * _CHARS_PER_TOKEN_BUDGET
        if len(text) > budget:
            # Cut at a space: pre-tokenization (WordPiece, BPE) splits there, so the tokens of the cut
            # text are a prefix of the tokens of the full text. If they fill max_seq_len, they are
            # exactly what truncating the full text gives.
            cut = text.rfind(" ", 0, budget)
            if cut > 0:
                ids = self._encode(text[:cut])
                if len(ids) == self.max_seq_len:
                    return ids
        return self._encode(text)

    def _encode(self, text: str) -> np.ndarray:
        ids = self.tokenizer(text, truncation=True, max_length=self.max_seq_len,
                             add_special_tokens=True)["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    def truncate(self, ids: np.ndarray) -> np.ndarray:
        """Pre-tokenized ids cut to ``max_seq_len``, keeping a final ``[SEP]``; int64 ``[L]``."""
        ids = np.asarray(ids).astype(np.int64, copy=False).reshape(-1)
        if len(ids) <= self.max_seq_len:
            return ids
        if self._sep_id is not None and ids[-1] == self._sep_id:
            return np.concatenate([ids[:self.max_seq_len - 1], ids[-1:]])
        return ids[:self.max_seq_len]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        try:
            sample = super().__getitem__(idx)
        except (IndexError, ValueError, UnicodeDecodeError) as err:
            if not 0 <= idx < self.num_samples:
                raise
            raise RecipeError(self._damaged_sample(idx, err)) from None
        if "input_ids" in sample:
            ids = sample["input_ids"]
            if isinstance(ids, (bytes, bytearray, memoryview)):
                ids = np.frombuffer(ids, dtype=np.int32)
            ids = self.truncate(ids)
            if ids.size and (ids.max() >= self._vocab_size or ids.min() < 0):
                raise RecipeError(
                    f"MDS sample {idx} of {os.path.join(self.streams[0].local, self.streams[0].split or '')!r} "
                    f"holds token id {int(ids.max() if ids.max() >= self._vocab_size else ids.min())}, outside "
                    f"the tokenizer's {self._vocab_size} tokens: the data was tokenized with another tokenizer. "
                    "Fix: set tokenizer_name to the one the data was converted with, or convert the text again "
                    "with --tokenize --tokenizer <this recipe's tokenizer>.")
        elif "text" in sample:
            ids = self.tokenize(sample["text"])
        else:
            raise RecipeError(
                f"MDS sample {idx} has columns {sorted(sample)} but neither 'text' nor 'input_ids'. "
                "Fix: convert the data with scripts/convert_text.py or scripts/convert_c4.py, which write a "
                "'text' column (or 'input_ids' with --tokenize).")
        item = {"input_ids": ids, "sample_idx": int(idx)}
        if self._epoch is not None and not self.fixed_masks:
            item["epoch"] = self._epoch
        return item


def _num_tokens_in_batch(batch: dict) -> int:
    """Real (non-padding) tokens in a batch: from the collator's host-side row lengths when present
    (no device sync), else ``attention_mask [B, T]`` summed."""
    return int(sum(row_lengths(batch)))


def _num_samples_in_batch(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].shape[0])


SAMPLING_METHODS = ("balanced", "fixed")


def seeds_from_run(run_seed: int) -> tuple[int, int]:
    """``(shuffle_seed, mask_seed)`` of a loader whose section sets neither, from the run's seed.

    Hashed, not the seed itself: streaming shuffles epoch ``e`` with ``shuffle_seed + e``, so runs with seeds
    1 and 2 would otherwise see the same orders one epoch apart."""
    shuffle_seed, mask_seed = np.random.SeedSequence(run_seed).generate_state(2)
    return int(shuffle_seed), int(mask_seed)


def check_text_loader(kwargs: dict, where: str = "train_loader") -> None:
    """Recipe-time check of a ``text`` loader section (the registry calls it before anything is built): the
    values torch's DataLoader and streaming would otherwise reject with a traceback once training starts."""
    check_masking_args(kwargs.get("mlm_probability", 0.15), kwargs.get("pad_to", "max_seq_len"))
    for key, minimum in (("num_workers", 0), ("prefetch_factor", 1), ("timeout", 0), ("num_canonical_nodes", 1),
                         ("predownload", 0), ("shuffle_block_size", 1), ("download_timeout", 1)):
        value = kwargs.get(key)
        if value is not None:
            check_range(value, f"{where}.{key}", minimum)
    algo = kwargs.get("shuffle_algo", "py1e")
    if algo not in SHUFFLE_ALGOS:
        raise RecipeError(f"{where}.shuffle_algo={algo!r} is not a streaming shuffle. Use one of "
                          f"{', '.join(sorted(SHUFFLE_ALGOS))} (py1e is the default).")
    if kwargs.get("sampling_method", "balanced") not in SAMPLING_METHODS:
        raise RecipeError(f"{where}.sampling_method={kwargs['sampling_method']!r} is not one of "
                          f"{', '.join(SAMPLING_METHODS)}.")
    cache_limit = kwargs.get("cache_limit")
    if cache_limit is not None:
        try:
            bytes_to_int(cache_limit)
        except (ValueError, TypeError):
            raise RecipeError(f"{where}.cache_limit={cache_limit!r} is not a size. Use bytes (an integer) or a "
                              "string such as '50gb' or '500mb'.") from None


def build_text_dataloader(
    *,
    tokenizer: Any,
    max_seq_len: int,
    device_batch_size: int,
    local: str,
    remote: str | None = None,
    split: str | None = None,
    shuffle: bool = False,
    shuffle_seed: int | None = None,
    mlm_probability: float = 0.15,
    mask_seed: int | None = None,
    run_seed: int = 0,
    fixed_masks: bool = False,
    pad_to: str = "max_seq_len",
    num_workers: int = 8,
    prefetch_factor: int | None = 2,
    persistent_workers: bool = True,
    pin_memory: bool = True,
    timeout: float = 0,
    drop_last: bool = True,
    num_canonical_nodes: int | None = None,
    predownload: int | None = None,
    shuffle_algo: str = "py1e",
    shuffle_block_size: int | None = None,
    cache_limit: str | None = None,
    download_timeout: float = 60,
    keep_zip: bool = False,
    sampling_method: str = "balanced",
) -> DataSpec:
    """A resumable masked-LM dataloader over MDS text, wrapped in a Composer ``DataSpec``.

    Batches are dicts of int64 tensors ``[device_batch_size, T]`` (``T = max_seq_len`` unless
    ``pad_to="longest"``): ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``.
    Masking is deterministic per (``mask_seed``, epoch, sample), or per (``mask_seed``, sample) with
    ``fixed_masks`` (evaluation: every evaluation sees the same masks, so evaluations compare with each other
    and a resumed run evaluates exactly as an uninterrupted one). ``shuffle_seed`` and ``mask_seed`` left
    unset come from ``run_seed``, the recipe's ``seed`` (:func:`seeds_from_run`), except that fixed masks
    default to ``mask_seed`` 0 for every run; the ``StreamingDataLoader`` carries
    its position in ``state_dict`` so Composer resumes mid-epoch exactly. ``num_workers=0`` loads in
    the main process (prefetch/persistent workers are then switched off automatically).
    The DataSpec counts real (attention_mask) tokens for Composer's token-based time.
    """
    check_masking_args(mlm_probability, pad_to)
    if device_batch_size < 1:
        raise RecipeError(f"device_batch_size={device_batch_size!r} must be at least 1. Fix: set a positive "
                          "device batch size (global batch size divided by the number of devices).")
    if num_workers < 0:
        raise RecipeError(f"num_workers={num_workers!r} is negative. Fix: use 0 (load in the main process) "
                          "or a positive number of dataloader worker processes.")
    check_mds_folder(local, split, remote)
    run_shuffle_seed, run_mask_seed = seeds_from_run(run_seed)  # the same on every rank and on resumption
    shuffle_seed = run_shuffle_seed if shuffle_seed is None else shuffle_seed
    if mask_seed is None:
        # Fixed (evaluation) masks stay the same for every run, so that runs with different seeds are
        # evaluated on the same masked tokens.
        mask_seed = 0 if fixed_masks else run_mask_seed

    try:
        dataset = StreamingTextDataset(
            tokenizer=tokenizer,
            max_seq_len=max_seq_len,
            local=local,
            remote=remote,
            split=split,
            shuffle=shuffle,
            fixed_masks=fixed_masks,
            shuffle_seed=shuffle_seed,
            num_canonical_nodes=num_canonical_nodes,
            predownload=predownload,
            shuffle_algo=shuffle_algo,
            shuffle_block_size=shuffle_block_size,
            cache_limit=cache_limit,
            download_timeout=download_timeout,
            keep_zip=keep_zip,
            sampling_method=sampling_method,
            batch_size=device_batch_size,
        )
    except ValueError as err:
        if "Reused local directory" not in str(err):
            raise
        raise RecipeError(
            f"Streaming's shared memory already registers local={local!r} for a dataset with a remote: another "
            "run on this machine streams into it, or a run here was killed together with its resource tracker "
            "(e.g. SIGKILL to its whole process group) and left the registration behind. If no other run uses it, "
            "clear it with `python -c 'from streaming.base.util import clean_stale_shared_memory; "
            "clean_stale_shared_memory()'` and start again; otherwise give this run another local folder."
        ) from None
    collator = MLMCollator(tokenizer, mlm_probability=mlm_probability, max_seq_len=max_seq_len,
                           pad_to=pad_to, seed=mask_seed)
    # torch's DataLoader rejects prefetch_factor / persistent_workers without worker processes.
    workers = num_workers > 0
    dataloader = StreamingDataLoader(
        dataset,
        batch_size=device_batch_size,
        collate_fn=collator,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor if workers else None,
        persistent_workers=persistent_workers if workers else False,
        pin_memory=pin_memory and torch.cuda.is_available(),  # pinning without CUDA only warns
        timeout=timeout if workers else 0,
        drop_last=drop_last,
        # Every iter() of a torch DataLoader draws a worker base seed from its generator, by default
        # the global torch RNG. A private generator keeps data loading from shifting the global RNG
        # (dropout), so a run resumed from a checkpoint (new iter(), restored RNG) matches one that was
        # never interrupted. Nothing here uses worker RNG: masks come from per-sample generators.
        generator=torch.Generator(),
    )
    if drop_last and len(dataloader) == 0:
        # Composer would loop over empty epochs for ever, warning only "No batches were trained".
        raise RecipeError(
            f"The MDS split {split or ''!r} of {local!r} holds {dataset.size} sample(s), {len(dataset)} per process: "
            f"fewer than one batch of {device_batch_size} per process, and with drop_last an epoch of it has no "
            "batch, so training would never advance. Convert more text (or, for val, a larger --val_fraction), "
            "lower global_train_batch_size / device_eval_batch_size, or set drop_last: false in the loader section."
        )
    return DataSpec(dataloader, get_num_samples_in_batch=_num_samples_in_batch,
                    get_num_tokens_in_batch=_num_tokens_in_batch, split_batch=split_batch)


registry.DATALOADERS.register("text", build_text_dataloader, check=check_text_loader)
