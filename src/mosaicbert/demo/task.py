"""Small GLUE-style classification tasks made from local text, for the fine-tuning demo.

Two kinds, both balanced, deterministic, in the GLUE TSV layout (header ``sentence<TAB>label``)::

    <out_dir>/train.tsv   <out_dir>/dev.tsv

* ``topic`` (the demo's default): is a sentence from the documentation of a mathematics / scientific
  computing package (1: sympy, numpy, scipy, networkx, pandas, torch, ...) or of a web / cloud / network
  package (0: azure, google, oci, botocore, aiohttp, urllib3, requests, paramiko, ...)? Needs the
  ``source`` field of the demo corpus (``data/demo/corpus.jsonl.gz`` of ``scripts/build_demo_corpus.py``).
  Train and dev sentences come from different source files, so dev asks about unseen text, not
  near-duplicates; telling the topics apart takes word meanings.
* ``word_order``: is a sentence in its original word order (1), or was a span of 3 to 5 words inside it
  shuffled (0)? Each sentence appears once, either way, so both classes have the same words, lengths and
  punctuation; the first word and the final period never move. A bag of words cannot solve it: it takes
  syntax, which a short CPU pretraining does not reach (docs/finetune.md has the numbers). Works on any
  ``.txt`` / ``.jsonl[.gz]`` English text.

Sentences are clean ordinary prose: MIN_WORDS..MAX_WORDS plain words ending with a period, deduplicated.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import RecipeError

KINDS = ("topic", "word_order")
MIN_WORDS, MAX_WORDS = 8, 30
# Top-level packages of the demo corpus' ``source`` paths, by topic (label 1 / label 0).
MATH_PACKAGES = frozenset({"sympy", "numpy", "scipy", "mpmath", "networkx", "pandas", "torch", "torchmetrics",
                           "torchvision", "sklearn", "statsmodels"})
WEB_PACKAGES = frozenset({"azure", "google", "oci", "botocore", "boto3", "s3transfer", "aiohttp", "urllib3",
                          "requests", "httpx", "httpcore", "websockets", "paramiko", "msal", "OpenSSL",
                          "huggingface_hub", "wandb", "sentry_sdk", "fsspec", "gql", "mcli"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"^[A-Za-z][a-z]*(?:['-][a-z]+)*[,;:]?$")  # plain words, lower case after the first letter


def read_records(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """(text, source) of each record of a ``.jsonl[.gz]`` file (``text`` and ``source`` fields), or
    (line, "") of each line of a ``.txt[.gz]`` file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Text source {path} does not exist. Build the demo corpus first (`python "
                          "scripts/build_demo_corpus.py --out_root data/demo --skip_existing`) or pass --source "
                          "with any .txt or .jsonl[.gz] file of English text.")
    opener = gzip.open if path.suffix == ".gz" else open
    is_jsonl = ".jsonl" in path.suffixes
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if is_jsonl:
                line = line.strip()
                if line:
                    record = json.loads(line)
                    yield str(record.get("text", "")), str(record.get("source", ""))
            else:
                yield line, ""


def read_texts(path: str | os.PathLike) -> Iterator[str]:
    """The texts of :func:`read_records`."""
    for text, _ in read_records(path):
        yield text


def sentences(texts: Iterable[str]) -> Iterator[str]:
    """Clean English sentences of MIN_WORDS..MAX_WORDS plain words, ending in '.', deduplicated."""
    seen: set[str] = set()
    for text in texts:
        for line in text.splitlines():
            for sentence in _SENTENCE_END.split(line.strip()):
                sentence = " ".join(sentence.split())
                if not sentence.endswith(".") or sentence in seen:
                    continue
                words = sentence[:-1].split(" ")
                if not MIN_WORDS <= len(words) <= MAX_WORDS or not words[0][:1].isupper():
                    continue
                if not all(_WORD.match(word) for word in words) or any(w[0].isupper() for w in words[1:]):
                    continue  # names, code, acronyms: keep ordinary lower-case prose
                seen.add(sentence)
                yield sentence


def shuffle_span(sentence: str, rng: random.Random) -> str:
    """The sentence with a span of 3-5 words (never the first word) in a different order."""
    words = sentence[:-1].split(" ")
    for _ in range(20):
        length = rng.randint(3, min(5, len(words) - 1))
        start = rng.randint(1, len(words) - length)
        span = words[start:start + length]
        shuffled = span[:]
        rng.shuffle(shuffled)
        if shuffled != span:
            return " ".join(words[:start] + shuffled + words[start + length:]) + "."
    raise ValueError(f"could not shuffle {sentence!r}")  # only if every word of the spans is the same


def _balanced(rng: random.Random, positives: list[str], negatives: list[str], n: int, split: str,
              source) -> list[tuple[str, int]]:
    half = n // 2
    if len(positives) < n - half or len(negatives) < half:
        raise RecipeError(f"{source} yields {len(positives)} / {len(negatives)} usable sentences of the two classes "
                          f"for {split}, fewer than the {n - half} / {half} asked for; lower --n_train / --n_dev or "
                          "give more text.")
    rows = [(s, 1) for s in positives[:n - half]] + [(s, 0) for s in negatives[:half]]
    rng.shuffle(rows)
    return rows


def _is_dev_source(source: str) -> bool:
    """One source file in five goes to dev (a stable hash, so the split does not depend on the order)."""
    return int(hashlib.md5(source.encode()).hexdigest(), 16) % 5 == 0


def topic_rows(source, n_train: int, n_dev: int, rng: random.Random) -> dict[str, list[tuple[str, int]]]:
    by_split = {"train": ([], []), "dev": ([], [])}  # (maths sentences, web sentences)
    seen: set[str] = set()
    any_source = False
    for text, origin in read_records(source):
        any_source = any_source or bool(origin)
        package = origin.split("/")[0]
        label = 1 if package in MATH_PACKAGES else 0 if package in WEB_PACKAGES else None
        if label is None:
            continue
        for sentence in sentences([text]):
            if sentence not in seen:
                seen.add(sentence)
                by_split["dev" if _is_dev_source(origin) else "train"][1 - label].append(sentence)
    if not any_source:
        raise RecipeError(f"{source} has no 'source' fields; the topic task needs the demo corpus "
                          "(data/demo/corpus.jsonl.gz). Use --kind word_order for other text.")
    rows = {}
    for split, n in (("train", n_train), ("dev", n_dev)):
        maths, web = by_split[split]
        rng.shuffle(maths)
        rng.shuffle(web)
        rows[split] = _balanced(rng, maths, web, n, split, source)
    return rows


def word_order_rows(source, n_train: int, n_dev: int, rng: random.Random) -> dict[str, list[tuple[str, int]]]:
    pool = list(sentences(read_texts(source)))
    needed = n_train + n_dev
    if len(pool) < needed:
        raise RecipeError(f"{source} yields {len(pool)} usable sentences, fewer than the {needed} asked for; "
                          "lower --n_train / --n_dev or give more text.")
    rng.shuffle(pool)
    rows = {}
    for split, chosen in (("train", pool[:n_train]), ("dev", pool[n_train:needed])):
        labels = [i % 2 for i in range(len(chosen))]  # balanced: half original (1), half shuffled (0)
        rng.shuffle(labels)
        rows[split] = [(s if label == 1 else shuffle_span(s, rng), label) for s, label in zip(chosen, labels)]
    return rows


def make_demo_task(source: str | os.PathLike, out_dir: str | os.PathLike, kind: str = "topic",
                   n_train: int = 4000, n_dev: int = 1000, seed: int = 0, overwrite: bool = False) -> dict:
    """Write ``train.tsv`` and ``dev.tsv`` of a task of ``kind`` to ``out_dir``; returns a summary."""
    if kind not in KINDS:
        raise RecipeError(f"Unknown demo task kind {kind!r}; choose one of {', '.join(KINDS)}.")
    out_dir = Path(out_dir)
    files = [out_dir / "train.tsv", out_dir / "dev.tsv"]
    if any(f.exists() for f in files) and not overwrite:
        raise RecipeError(f"{out_dir} already holds a task; pass --overwrite to rebuild it.")
    if n_train < 2 or n_dev < 2:
        raise RecipeError("n_train and n_dev must be at least 2 (one row of each class).")
    rng = random.Random(seed)
    rows = (topic_rows if kind == "topic" else word_order_rows)(source, n_train, n_dev, rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, split in zip(files, ("train", "dev")):
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            for sentence, label in rows[split]:
                f.write(f"{sentence}\t{label}\n")
        os.replace(tmp, path)
    return {"kind": kind, "out_dir": str(out_dir), "train": len(rows["train"]), "dev": len(rows["dev"]),
            "positive_fraction_dev": sum(label for _, label in rows["dev"]) / len(rows["dev"])}


def make_word_order_task(source, out_dir, **kwargs) -> dict:
    """:func:`make_demo_task` of kind ``word_order``."""
    return make_demo_task(source, out_dir, kind="word_order", **kwargs)


__all__ = ["KINDS", "make_demo_task", "make_word_order_task", "read_records", "read_texts", "sentences",
           "shuffle_span"]
