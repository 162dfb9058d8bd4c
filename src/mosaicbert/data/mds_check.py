"""Checks of an MDS folder before training, in seconds: its index is readable and non-empty, and every shard
file it lists is present (without a remote) with the size the index records.

Hashes are not recomputed: that reads every byte of the dataset (hundreds of GB for C4) at each start;
a size mismatch is what a cut-off conversion, copy, download or decompression leaves.
"""

from __future__ import annotations

import json
import os
import urllib.parse

from streaming.base.storage.download import DOWNLOADER_MAPPINGS

from ..errors import RecipeError, describe

HOW_TO_MAKE_DATA = (
    "`make demo` builds a small offline demo corpus; `python scripts/convert_text.py --inputs FILES_OR_DIRS "
    "--out_root DIR` converts your own .txt/.jsonl/.jsonl.gz text; `python scripts/convert_c4.py "
    "--out_root DIR` converts C4 (needs the Hugging Face hub)")


REBUILD_DATA = (
    "rebuild the split with the command that made it and --overwrite (scripts/convert_text.py, "
    "scripts/convert_c4.py, or scripts/build_demo_corpus.py for data/demo), or copy the folder again")

# The file pairs of a shard in an MDS index.json: the data (and, for jsonl/xsv shards, a metadata file),
# each raw and optionally compressed.
_SHARD_FILE_PAIRS = (("raw_data", "zip_data"), ("raw_meta", "zip_meta"))


def read_mds_index(index_path: str) -> list[dict]:
    """The shard entries of an MDS ``index.json``, or a RecipeError saying it cannot be read."""
    try:
        with open(index_path) as handle:
            shards = json.load(handle)["shards"]
        if not isinstance(shards, list) or not all(isinstance(shard, dict) for shard in shards):
            raise TypeError("'shards' is not a list of shard entries")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise RecipeError(f"The MDS index {index_path!r} cannot be read ({describe(err)}): it is damaged or not an "
                          f"index.json written by streaming. Fix: {REBUILD_DATA}.") from None
    return shards


def shard_file_problems(folder: str, shards: list[dict], remote: str | None) -> list[str]:
    """Shard files in ``folder`` that do not match ``index.json``: a present file whose size differs from
    the size the index records (cut off by an interrupted conversion, copy, download or decompression),
    and, without a ``remote`` to download from, a shard with none of its files."""
    problems = []
    for shard in shards:
        for raw_key, zip_key in _SHARD_FILE_PAIRS:
            raw, packed = shard.get(raw_key), shard.get(zip_key)
            if not isinstance(raw, dict):
                continue
            present = []
            for info, kind in ((packed, "compressed"), (raw, "raw")):
                if not isinstance(info, dict) or "basename" not in info:
                    continue
                path = os.path.join(folder, info["basename"])
                if not os.path.isfile(path):
                    continue
                present.append(path)
                size, expected = os.path.getsize(path), info.get("bytes")
                if expected is not None and size != expected:
                    if kind == "raw" and isinstance(packed, dict):
                        fix = (f"delete {path} (streaming's decompressed copy of {packed.get('basename')}; it is "
                               f"decompressed again on the next start), or {REBUILD_DATA}")
                    elif remote is not None:
                        fix = (f"delete {path} (a cached copy; it is downloaded from {remote} again), or if the "
                               f"remote copy is damaged too, {REBUILD_DATA}")
                    else:
                        fix = REBUILD_DATA
                    problems.append(f"{path} is {size:,} bytes but index.json records {expected:,}: the file was cut "
                                    f"off or damaged. Fix: {fix}")
            if remote is None and not present:
                names = " / ".join(i["basename"] for i in (raw, packed) if isinstance(i, dict) and "basename" in i)
                problems.append(f"{folder} lacks shard {names}, which its index.json lists. Fix: {REBUILD_DATA}")
    return problems


def check_mds_folder(local: str, split: str | None, remote: str | None) -> None:
    """Before training, in seconds: without ``remote``, ``local`` (``/split``) must hold a readable, non-empty
    MDS index and every shard it lists with the recorded sizes; with ``remote``, the shards already cached
    locally must have their recorded sizes. Hashes are not recomputed: that reads every byte of the
    dataset (hundreds of GB for C4) at each start; a size mismatch is what a cut-off conversion, copy,
    download or decompression leaves. A RecipeError names the first bad file and the fix."""
    if remote is not None:
        check_remote(remote, split)
    folder = os.path.join(local, split) if split else local
    index = os.path.join(folder, "index.json")
    if remote is None and not os.path.isfile(index):
        _raise_missing_data(local, split, index)
    if not os.path.isfile(index):
        return  # streaming downloads the index from the remote
    shards = read_mds_index(index)
    if remote is None and sum(int(shard.get("samples", 0) or 0) for shard in shards) == 0:
        raise RecipeError(
            f"The MDS split {folder!r} is empty (its index.json lists no samples), so there is nothing to "
            "load. Fix: reconvert with more input text, a larger --val_fraction or explicit --val files "
            f"({HOW_TO_MAKE_DATA}), or point this dataloader at another split; an evaluation split can also "
            "be left out (eval_loader=null trains without evaluation).")
    problems = shard_file_problems(folder, shards, remote)
    if problems:
        more = f" ({len(problems) - 1} more shard file(s) of this split are wrong too.)" if len(problems) > 1 else ""
        raise RecipeError(f"The MDS split {folder!r} does not match its index.json: {problems[0]}.{more}")


def check_remote(remote: str, split: str | None) -> None:
    """A remote streaming can read: a scheme it has a downloader for, or a local folder that holds the split's
    ``index.json`` (object stores are checked further where their credentials are: ``s3://`` in
    :mod:`mosaicbert.object_store`)."""
    scheme = urllib.parse.urlparse(remote).scheme
    if scheme and scheme not in DOWNLOADER_MAPPINGS:
        known = ", ".join(f"{name}://" for name in sorted(DOWNLOADER_MAPPINGS) if name)
        raise RecipeError(f"remote={remote!r}: streaming cannot read '{scheme}://' remotes. Use one of {known}, "
                          "or a local folder; or leave remote null and point local at the data.")
    if not scheme:
        index = os.path.join(remote, split or "", "index.json")
        if not os.path.isfile(index):
            raise RecipeError(f"remote={remote!r} is a local path without {index}. Fix: point remote at the MDS "
                              f"folder that holds the split ({HOW_TO_MAKE_DATA}), or leave remote null.")


def _raise_missing_data(local: str, split: str | None, index: str) -> None:
    where = f"local={local!r}" + (f", split={split!r}" if split else "")
    if not os.path.isdir(local):
        problem = f"the folder {local!r} does not exist"
    else:
        found = sorted(d for d in os.listdir(local) if os.path.isfile(os.path.join(local, d, "index.json")))
        problem = f"there is no MDS index at {index!r}"
        if found:
            problem += f" (MDS splits present in {local!r}: {', '.join(found)})"
        elif split and os.path.isfile(os.path.join(local, "index.json")):
            problem += f" ({local!r} itself is an MDS folder: set split to null)"
    raise RecipeError(
        f"Training data not found ({where}, no remote set): {problem}. Fix: build the data first "
        f"({HOW_TO_MAKE_DATA}), or point local/split at an existing MDS folder, or set remote to "
        "stream it from object storage.")
