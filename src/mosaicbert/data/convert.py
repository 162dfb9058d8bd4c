"""Convert text (local files, or C4 from the Hugging Face hub) into MDS splits for streaming.

Output layout, the same as the MosaicBERT C4 recipe::

    <out_root>/train/index.json   <out_root>/train_small/index.json
    <out_root>/val/index.json     <out_root>/val_small/index.json

Samples have one column, ``text`` (``str``), or with a tokenizer ``input_ids`` (``ndarray:int32``,
``[CLS] ... [SEP]``); shards are zstd-compressed. A ``*_small`` split is the first K samples of its
parent split, for quick runs.

Each split is written to ``<out_root>/.<split>.tmp`` and renamed into place only when complete, so an
interrupted conversion never leaves a split that looks finished. Existing non-empty splits are only
replaced with ``overwrite=True``, and only once every new split is complete (see :func:`_swap_in`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from streaming import MDSWriter
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..errors import RecipeError, describe, report_errors
from ..tokenizer import load_tokenizer

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "train_small", "val_small")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
DEFAULT_TRAIN_SMALL = 100_000  # as in the MosaicBERT C4 recipe
DEFAULT_VAL_SMALL = 10_000
DEFAULT_COMPRESSION = "zstd"


# --------------------------------------------------------------------------------------------------
# Reading local text
# --------------------------------------------------------------------------------------------------

def _has_text_suffix(path: Path) -> bool:
    return path.name.lower().endswith(TEXT_SUFFIXES)


# A file is refused as "not text" when the start of it holds a NUL byte, or when more than this share of
# its first characters are undecodable (U+FFFD) or control characters. Random bytes score about 0.55;
# Latin-1 prose read as UTF-8 (each accented letter undecodable) stays well below (French: under 0.2).
_SNIFF_CHARS = 65536
_MAX_NON_TEXT_SHARE = 0.3
_CONTROL = {chr(c) for c in range(32)} - set("\t\n\r\f\v")


def check_is_text(path: Path) -> None:
    """Refuse (RecipeError) a file whose beginning is not UTF-8 text: binary data, a compressed file
    under a text name, or another encoding such as UTF-16. Text with a few undecodable bytes (prose in
    Latin-1, say) is kept, with a warning: those bytes become U+FFFD."""
    try:
        with _open_text(path) as handle:
            sample = handle.read(_SNIFF_CHARS)
    except (OSError, EOFError) as err:  # e.g. a .gz that is not gzip, or cut off
        raise RecipeError(f"Input file {str(path)!r} cannot be read ({describe(err)}). Fix: pass an intact "
                          f"{', '.join(TEXT_SUFFIXES)} file.") from None
    non_text = sum(1 for ch in sample if ch == "\ufffd" or ch in _CONTROL)
    if "\x00" in sample or (sample and non_text / len(sample) > _MAX_NON_TEXT_SHARE):
        raise RecipeError(
            f"Input file {str(path)!r} is not UTF-8 text: {non_text:,} of its first {len(sample):,} characters are "
            "undecodable or control characters. It looks like binary data, a compressed file under a text name, or "
            "text in another encoding (e.g. UTF-16). Nothing was written. Fix: convert it to UTF-8 text, or leave "
            "it out of --inputs / --val.")
    undecodable = sample.count("\ufffd")
    if undecodable:
        log.warning("Input file %r is not all UTF-8: %s of its first %s characters cannot be decoded and are stored "
                    "as U+FFFD. It may be in another encoding such as Latin-1. Fix, for exact text: convert it "
                    "to UTF-8 (e.g. iconv -f latin1 -t utf-8) and convert again with --overwrite.",
                    str(path), f"{undecodable:,}", f"{len(sample):,}")


def find_input_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and directories (recursively, sorted, hidden entries skipped) into text files, each
    checked to start with UTF-8 text (:func:`check_is_text`). A file reached more than once (a folder and a
    file in it, or a link) is kept once, where it first appears, so that no document is stored twice."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            visible = sorted(p for p in path.rglob("*")
                             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
            found = [p for p in visible if _has_text_suffix(p)]
            skipped = [str(p.relative_to(path)) for p in visible if not _has_text_suffix(p)]
            if found and skipped:
                log.warning("%s: reading %d text file(s); skipping %d that are not %s: %s%s", path, len(found),
                            len(skipped), "/".join(TEXT_SUFFIXES), ", ".join(skipped[:5]),
                            f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            if not found:
                raise RecipeError(f"Input directory {str(path)!r} holds no {', '.join(TEXT_SUFFIXES)} files. "
                                  "Fix: pass a directory (or files) with text in one of those formats.")
            files.extend(found)
        elif path.is_file():
            if not _has_text_suffix(path):
                raise RecipeError(f"Input file {str(path)!r} is not one of {', '.join(TEXT_SUFFIXES)}. Fix: "
                                  "convert it to plain text or JSON lines with a 'text' field first.")
            files.append(path)
        else:
            raise RecipeError(f"Input {str(path)!r} does not exist. Fix: pass existing text files or "
                              "directories to --inputs / --val.")
    unique: dict[Path, Path] = {}
    for path in files:
        unique.setdefault(path.resolve(), path)
    for path in unique.values():
        check_is_text(path)
    return list(unique.values())


def _open_text(path: Path):
    # utf-8-sig drops a leading byte-order mark (Notepad, PowerShell), which would otherwise start the first
    # document, or make the first JSON line unreadable; files without one read as plain UTF-8.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
    return open(path, encoding="utf-8-sig", errors="replace")


def read_documents(path: Path, text_field: str = "text", doc_per_line: bool = False) -> Iterator[str]:
    """Documents of one file, stripped, empty ones skipped.

    ``.txt``: the whole file is one document (or one per line with ``doc_per_line``).
    ``.jsonl``/``.jsonl.gz``: one JSON object per line, the document in ``text_field``.
    A file that cannot be read to its end (a cut-off ``.gz``) is a RecipeError naming it.
    """
    try:
        yield from _read_documents(path, text_field, doc_per_line)
    except (OSError, EOFError) as err:
        raise RecipeError(f"Input file {str(path)!r} cannot be read to its end ({describe(err)}): it is cut off or "
                          "damaged. Nothing was written. Fix: copy or compress it again, or leave it out.") from None


def _read_documents(path: Path, text_field: str, doc_per_line: bool) -> Iterator[str]:
    name = path.name.lower()
    with _open_text(path) as handle:
        if name.endswith((".jsonl", ".jsonl.gz")):
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[text_field]
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise RecipeError(
                        f"{path}:{line_no} is not a JSON object with a {text_field!r} field "
                        f"({type(err).__name__}). Fix: pass --text_field with the name of the field that "
                        "holds the text, or fix the file.") from None
                if isinstance(text, str) and text.strip():
                    yield text.strip()
        elif doc_per_line:
            for line in handle:
                if line.strip():
                    yield line.strip()
        else:
            text = handle.read().strip()
            if text:
                yield text


def iter_documents(inputs: Sequence[str | os.PathLike], text_field: str = "text",
                   doc_per_line: bool = False) -> Iterator[str]:
    """All documents of ``inputs`` (files or directories) in a deterministic order."""
    for path in find_input_files(inputs):
        yield from read_documents(path, text_field=text_field, doc_per_line=doc_per_line)


# --------------------------------------------------------------------------------------------------
# Chunking and splitting
# --------------------------------------------------------------------------------------------------

# Boundaries tried in order: paragraph (any whitespace run holding a newline), sentence end
# (whitespace after . ! ? possibly followed by a closing quote or bracket), any whitespace.
_BOUNDARIES = (
    re.compile(r"\s*\n\s*"),
    re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'\)\]\u201d\u2019]))\s+"),
    re.compile(r"\s+"),
)


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into pieces of at most ``max_chars`` characters, at the coarsest boundary possible.

    Paragraphs are packed greedily into chunks; a paragraph longer than ``max_chars`` is split at
    sentence ends, a sentence at whitespace, and a single longer word is cut hard. Each chunk is an
    exact substring of ``text`` (inner whitespace kept) without leading or trailing whitespace.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    text = text.strip()
    if not text:
        return []
    return [text[a:b] for a, b in _split_span(text, 0, len(text), max_chars, 0)]


def _split_span(text: str, start: int, end: int, max_chars: int, level: int) -> Iterator[tuple[int, int]]:
    """Chunk spans of ``text[start:end]`` using boundary ``level`` and finer ones."""
    if end - start <= max_chars:
        yield start, end
        return
    if level == len(_BOUNDARIES):  # one unbroken word longer than max_chars
        for a in range(start, end, max_chars):
            yield a, min(a + max_chars, end)
        return
    segments, pos = [], start
    for match in _BOUNDARIES[level].finditer(text, start, end):
        if match.start() > pos:
            segments.append((pos, match.start()))
        pos = match.end()
    if pos < end:
        segments.append((pos, end))

    current: tuple[int, int] | None = None
    for a, b in segments:
        if b - a > max_chars:  # too long on its own: flush, then split finer
            if current:
                yield current
                current = None
            yield from _split_span(text, a, b, max_chars, level + 1)
        elif current is None:
            current = (a, b)
        elif b - current[0] <= max_chars:  # still fits: extend (the boundary between stays inside)
            current = (current[0], b)
        else:
            yield current
            current = (a, b)
    if current:
        yield current


def is_val_document(text: str, val_fraction: float) -> bool:
    """Deterministic train/val assignment from a hash of the whole (unchunked) document."""
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


# --------------------------------------------------------------------------------------------------
# Writing MDS splits
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitTarget:
    """One output split: it takes the records of ``source``, at most ``limit`` of them (None: all)."""

    name: str
    source: str
    limit: int | None = None


def _non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


# Present in out_root while finished splits are moved into place (_swap_in): the .tmp folders then are complete.
_SWAP_MARKER = ".replacing"


def _swap_in(out_root: Path, names: Iterable[str]) -> None:
    """Move each finished ``.<name>.tmp`` folder to ``<name>``, replacing an old split there.

    Three passes, so that an interruption at any moment loses neither dataset: every old split is first
    renamed aside to ``.<name>.old``, then every new one is renamed into place, and only then are the old ones
    deleted. Until the deletions the old dataset is whole (aside, or still in place), and the new one is whole
    throughout (in place, or still in ``.<name>.tmp``); deleting each old split just before its replacement
    left a mix of old and new splits with one missing. The marker file tells a later call that the ``.tmp``
    folders are complete, so it finishes the move (:func:`finish_interrupted_swap`) rather than discarding
    them as an unfinished write. Each pass skips what is done, so the whole can run again from any point."""
    names = list(names)
    marker = out_root / _SWAP_MARKER
    marker.touch()
    for name in names:
        if (out_root / f".{name}.tmp").exists() and (out_root / name).exists():
            os.replace(out_root / name, out_root / f".{name}.old")
    for name in names:
        if (out_root / f".{name}.tmp").exists():
            os.replace(out_root / f".{name}.tmp", out_root / name)
    for name in names:
        if (out_root / f".{name}.old").exists():
            shutil.rmtree(out_root / f".{name}.old")
    marker.unlink()


def finish_interrupted_swap(out_root: str | os.PathLike) -> None:
    """Finish moving splits into place where an interruption stopped :func:`_swap_in` (its marker is still
    there). Those splits had been written in full by a conversion that was allowed to replace the old ones."""
    out_root = Path(out_root)
    if not (out_root / _SWAP_MARKER).exists():
        return
    names = sorted({p.name[1:].rsplit(".", 1)[0] for p in out_root.iterdir()
                    if p.is_dir() and p.name.startswith(".") and p.name.endswith((".tmp", ".old"))})
    log.warning("A conversion into %s was interrupted while it moved its finished splits (%s) into place; "
                "finishing that move now.", out_root, ", ".join(names) or "none left")
    _swap_in(out_root, names)


def check_outputs(out_root: str | os.PathLike, names: Iterable[str], overwrite: bool) -> None:
    """Refuse (RecipeError) to touch existing non-empty split folders unless ``overwrite``. A replacement of
    splits that an interruption cut short is finished first, so that the folder holds one whole dataset."""
    root = Path(out_root)
    if root.exists() and not root.is_dir():
        raise RecipeError(f"--out_root {str(root)!r} is a file, not a folder. Nothing was written. Fix: choose "
                          "a folder path for the dataset.")
    files = [str(root / name) for name in names if (root / name).exists() and not (root / name).is_dir()]
    if files:
        raise RecipeError(f"{', '.join(files)}: a file where a split folder goes. Nothing was written or moved, "
                          "even with --overwrite, since it is not a dataset. Fix: move the file, or choose another "
                          "--out_root.")
    finish_interrupted_swap(out_root)
    existing = [str(root / name) for name in names if _non_empty_dir(root / name)]
    if existing and not overwrite:
        raise RecipeError(
            f"Output already exists and is not empty: {', '.join(existing)}. Nothing was written or "
            "deleted. Fix: pass --overwrite to replace it (overwrite=True from Python), or choose another "
            "--out_root.")


def write_mds_splits(records: Iterable[tuple[str, dict[str, Any]]], out_root: str | os.PathLike,
                     targets: Sequence[SplitTarget], columns: dict[str, str], *,
                     overwrite: bool = False, compression: str | None = DEFAULT_COMPRESSION,
                     size_limit: int | str = 1 << 26) -> dict[str, int]:
    """Write ``(source, sample)`` records into every target split whose source matches.

    Stops reading ``records`` as soon as every target has a limit and is full (so the first 100k
    documents of C4 do not require reading all of it). Returns samples written per split.
    """

    out_root = Path(out_root)
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate split names in {names}")
    check_outputs(out_root, names, overwrite)
    made = [p for p in (out_root, *out_root.parents) if not p.exists()]  # folders this call creates
    out_root.mkdir(parents=True, exist_ok=True)

    tmp_dirs = {t.name: out_root / f".{t.name}.tmp" for t in targets}
    counts = {t.name: 0 for t in targets}
    by_source: dict[str, list[SplitTarget]] = {}
    for target in targets:
        by_source.setdefault(target.source, []).append(target)
    writers = {}
    try:
        for name, tmp in tmp_dirs.items():
            if tmp.exists():  # our own leftover from an interrupted run
                shutil.rmtree(tmp)
            writers[name] = MDSWriter(out=str(tmp), columns=columns, compression=compression,
                                      size_limit=size_limit)
        open_targets = len(targets)
        for source, sample in records:
            for target in by_source.get(source, ()):
                if target.limit is None or counts[target.name] < target.limit:
                    writers[target.name].write(sample)
                    counts[target.name] += 1
                    if target.limit is not None and counts[target.name] == target.limit:
                        open_targets -= 1
            if open_targets == 0 and all(t.limit is not None for t in targets):
                break
        for writer in writers.values():
            writer.finish()
    except BaseException:
        for tmp in tmp_dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # innermost first: nothing is left behind that was not there before
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    # Complete: move into place (replacing the old splits only now, when overwrite was asked for).
    _swap_in(out_root, tmp_dirs)
    for name, count in counts.items():
        if count == 0:
            log.warning("Split %s is empty: a dataloader cannot read it (more input text, a larger "
                        "val_fraction or explicit val inputs fill it)", out_root / name)
    return counts


def _tokenized(records: Iterable[tuple[str, str]], tokenizer: Any, max_seq_len: int | None,
               batch_size: int = 256) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(source, text)`` -> ``(source, {"input_ids": int32 [L]})``, tokenized in batches for speed."""
    def encode(batch: list[tuple[str, str]]) -> Iterator[tuple[str, dict[str, Any]]]:
        encoded = tokenizer([text for _, text in batch], add_special_tokens=True,
                            truncation=max_seq_len is not None, max_length=max_seq_len, verbose=False)
        for (source, _), ids in zip(batch, encoded["input_ids"]):
            yield source, {"input_ids": np.asarray(ids, dtype=np.int32)}

    batch: list[tuple[str, str]] = []
    for record in records:
        batch.append(record)
        if len(batch) == batch_size:
            yield from encode(batch)
            batch = []
    if batch:
        yield from encode(batch)


def _samples(records: Iterable[tuple[str, str]], tokenizer: Any,
             max_seq_len: int | None) -> tuple[Iterable[tuple[str, dict[str, Any]]], dict[str, str]]:
    """Records as MDS samples plus the matching column spec (text, or token ids with a tokenizer)."""
    if tokenizer is None:
        return (((source, {"text": text}) for source, text in records)), {"text": "str"}
    return _tokenized(records, tokenizer, max_seq_len), {"input_ids": "ndarray:int32"}


# --------------------------------------------------------------------------------------------------
# Local text -> MDS
# --------------------------------------------------------------------------------------------------

def convert_text(inputs: Sequence[str | os.PathLike], out_root: str | os.PathLike, *,
                 val_inputs: Sequence[str | os.PathLike] | None = None, val_fraction: float = 0.01,
                 text_field: str = "text", doc_per_line: bool = False, chunk_chars: int | None = None,
                 train_small: int = DEFAULT_TRAIN_SMALL, val_small: int = DEFAULT_VAL_SMALL,
                 overwrite: bool = False, tokenizer: Any = None, max_seq_len: int | None = None,
                 compression: str | None = DEFAULT_COMPRESSION, progress: bool = True) -> dict[str, int]:
    """Convert local ``.txt``/``.jsonl``/``.jsonl.gz`` text into ``train/val/train_small/val_small``.

    Documents go to ``val`` when their hash falls in ``val_fraction`` (or, with ``val_inputs``, the
    documents of those inputs form ``val``). With ``chunk_chars`` each document is cut into pieces of
    at most that many characters (a document's pieces stay in one split). With a ``tokenizer`` the
    samples are pre-tokenized ``input_ids`` (truncated to ``max_seq_len`` when given).
    Returns the number of samples per split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise RecipeError(f"val_fraction={val_fraction!r} is outside [0, 1). Fix: use e.g. 0.01 (1% of "
                          "documents for validation), or pass explicit validation files with --val.")
    if chunk_chars is not None and chunk_chars < 1:
        raise RecipeError(f"chunk_chars={chunk_chars!r} must be positive. Fix: use e.g. 600 for 128-token "
                          "training, or leave it unset to keep documents whole.")
    if train_small < 0 or val_small < 0:
        raise RecipeError("train_small / val_small must be >= 0. Fix: pass sample counts such as 100000 / 10000.")
    targets = [SplitTarget("train", "train"), SplitTarget("val", "val"),
               SplitTarget("train_small", "train", train_small), SplitTarget("val_small", "val", val_small)]
    check_outputs(out_root, [t.name for t in targets], overwrite)
    # Resolve inputs now so a bad path fails before anything is written.
    train_files = find_input_files(inputs)
    val_files = find_input_files(val_inputs) if val_inputs else []
    training = {path.resolve() for path in train_files}
    replaced = [(Path(out_root) / t.name).resolve() for t in targets]
    for path in train_files + val_files:
        if any(folder in path.resolve().parents for folder in replaced):
            raise RecipeError(f"Input file {str(path)!r} lies inside a split folder of --out_root, which the "
                              "conversion replaces. Nothing was written. Fix: move the input out of "
                              f"{str(out_root)!r}, or choose another --out_root.")
    for path in val_files:
        if path.resolve() in training:
            raise RecipeError(
                f"Input file {str(path)!r} is both a training input (--inputs) and a validation input (--val): its "
                "documents would be in train and in val. Nothing was written. Fix: keep validation files out of "
                "the --inputs files and folders (e.g. move them to a folder of their own), or leave it out of --val.")

    def documents() -> Iterator[tuple[str, str]]:
        for path in train_files:
            for doc in read_documents(path, text_field, doc_per_line):
                yield ("val" if not val_files and is_val_document(doc, val_fraction) else "train"), doc
        for path in val_files:
            for doc in read_documents(path, text_field, doc_per_line):
                yield "val", doc

    def records() -> Iterator[tuple[str, str]]:
        for split, doc in tqdm(documents(), desc="documents", unit=" docs", disable=not progress):
            for piece in (chunk_text(doc, chunk_chars) if chunk_chars else [doc]):
                yield split, piece

    samples, columns = _samples(records(), tokenizer, max_seq_len)
    counts = write_mds_splits(samples, out_root, targets, columns, overwrite=overwrite,
                              compression=compression)
    log.info("Wrote %s to %s", counts, out_root)
    return counts


# --------------------------------------------------------------------------------------------------
# C4 (Hugging Face hub) -> MDS
# --------------------------------------------------------------------------------------------------

# Our split name -> (C4 split, number of documents; None = all). As in the MosaicBERT original.
C4_SPLITS: dict[str, tuple[str, int | None]] = {
    "train": ("train", None),
    "val": ("validation", None),
    "train_small": ("train", 100_000),
    "val_small": ("validation", 10_000),
}


def load_c4_split(hf_split: str) -> Iterable[dict[str, Any]]:
    """``allenai/c4`` (config ``en``) split as a streaming Hugging Face dataset (needs the hub)."""
    try:
        from datasets import load_dataset  # heavy, and only needed here
    except ImportError as err:
        raise RecipeError("Converting C4 needs the `datasets` package. Fix: `pip install datasets` "
                          "(it is in requirements.txt; `make install`).") from err
    try:
        return load_dataset("allenai/c4", "en", split=hf_split, streaming=True)
    except Exception as err:
        raise RecipeError(
            f"Could not open allenai/c4 (en, {hf_split}) on the Hugging Face hub ("
            f"{describe(err)}). Fix: run the conversion on a machine that "
            "can reach huggingface.co, or use scripts/convert_text.py on local text (or `make demo` for the "
            "offline demo corpus).") from err


def _rows(batch: list) -> list:
    """collate_fn that keeps rows as they are (module level so worker processes can pickle it)."""
    return batch


def iter_hf_texts(dataset: Iterable[dict[str, Any]], text_field: str = "text",
                  num_workers: int = 0, batch_size: int = 512) -> Iterator[str]:
    """Texts of a (streaming) Hugging Face dataset, read by ``num_workers`` processes if > 0.

    With workers, a torch DataLoader splits the dataset by shard (file) and interleaves the workers'
    batches round-robin, so the order is still deterministic.
    """
    if num_workers <= 0:
        for row in dataset:
            yield row[text_field]
        return

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_rows)
    for batch in loader:
        for row in batch:
            yield row[text_field]


def convert_c4(out_root: str | os.PathLike, splits: Sequence[str] = SPLIT_NAMES, *, overwrite: bool = False,
               num_workers: int = 0, tokenizer: Any = None, max_seq_len: int | None = None,
               compression: str | None = DEFAULT_COMPRESSION, progress: bool = True,
               load_split: Callable[[str], Iterable[dict[str, Any]]] = load_c4_split) -> dict[str, int]:
    """Convert C4 (``allenai/c4``, ``en``) into MDS splits under ``out_root``.

    ``train_small`` is the first 100k train documents and ``val_small`` the first 10k validation
    documents; ``train`` / ``val`` are everything (about 365M / 365k documents: hours). C4 splits are
    streamed once each, and only as far as the requested splits need. ``load_split`` maps a C4 split
    name to an iterable of ``{"text": ...}`` rows (tests pass a local dataset).
    """
    unknown = [s for s in splits if s not in C4_SPLITS]
    if unknown or not splits:
        raise RecipeError(f"Unknown C4 split(s) {unknown or list(splits)}. Fix: choose from "
                          f"{', '.join(C4_SPLITS)}.")
    check_outputs(out_root, splits, overwrite)
    counts: dict[str, int] = {}
    for hf_split in dict.fromkeys(C4_SPLITS[s][0] for s in splits):  # train first, then validation
        targets = [SplitTarget(s, hf_split, C4_SPLITS[s][1]) for s in splits if C4_SPLITS[s][0] == hf_split]
        texts = iter_hf_texts(load_split(hf_split), num_workers=num_workers)
        total = max((t.limit for t in targets), default=None) if all(t.limit for t in targets) else None
        records = ((hf_split, text) for text in tqdm(texts, desc=f"c4 {hf_split}", unit=" docs",
                                                     total=total, disable=not progress))
        samples, columns = _samples(records, tokenizer, max_seq_len)
        counts.update(write_mds_splits(samples, out_root, targets, columns, overwrite=overwrite,
                                       compression=compression))
    log.info("Wrote %s to %s", counts, out_root)
    return counts


# --------------------------------------------------------------------------------------------------
# Command-line plumbing shared by scripts/convert_text.py and scripts/convert_c4.py
# --------------------------------------------------------------------------------------------------

def add_output_arguments(parser) -> None:
    """The options every converter takes: tokenization, overwrite, progress."""
    parser.add_argument("--tokenize", action="store_true",
                        help="store pre-tokenized input_ids (int32) instead of text")
    parser.add_argument("--tokenizer", default="bert-base-uncased", help="tokenizer for --tokenize")
    parser.add_argument("--max_seq_len", type=int, default=None, help="with --tokenize: truncate to this many tokens")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output splits")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_converter(args, convert: Callable[..., dict[str, int]]) -> int:
    """Call ``convert(tokenizer=..., max_seq_len=..., overwrite=..., progress=...)`` and print the split
    sizes; a RecipeError is printed as one paragraph (exit status 2)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    def run() -> None:
        if args.max_seq_len is not None and not args.tokenize:
            raise RecipeError("--max_seq_len truncates pre-tokenized samples, so it needs --tokenize. Text samples "
                              "are cut to the recipe's max_seq_len when training reads them; leave it out.")
        if args.max_seq_len is not None and args.max_seq_len < 2:
            raise RecipeError(f"--max_seq_len {args.max_seq_len} leaves no room for [CLS] and [SEP]: use the "
                              "recipe's max_seq_len, e.g. 128.")
        tokenizer = None
        if args.tokenize:
            tokenizer = load_tokenizer(args.tokenizer)
        counts = convert(tokenizer=tokenizer, max_seq_len=args.max_seq_len, overwrite=args.overwrite,
                         progress=not args.quiet)
        print(f"Wrote {args.out_root}: " + ", ".join(f"{name} {n:,} samples" for name, n in counts.items()))

    return report_errors(run)
