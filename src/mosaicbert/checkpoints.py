"""Read model weights from a Composer checkpoint (local path or object-store URI) or a Hugging Face
folder (for example one written by ``scripts/export_hf.py``), and load them into a model.

Composer checkpoints made by this recipe carry a ``RecipeMetadata`` entry (model family, its config,
tokenizer name) so that fine-tuning and export need nothing but the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Optional

import torch
from composer.utils import get_file
from huggingface_hub import snapshot_download
from safetensors.torch import load_file

from .errors import RecipeError, describe
from .families import family_name_of_model_type
from .object_store import LATEST_NAME, download_checkpoint, holds_torch_pickle, is_s3
from .tokenizer import hub_reachable

log = logging.getLogger(__name__)

METADATA_KEY = "RecipeMetadata"  # the callback's class name, under which Composer stores its state
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class Weights:
    """A state dict of a Hugging Face model (keys like ``bert.encoder...``) plus what made it."""

    state_dict: dict[str, torch.Tensor]
    model_family: Optional[str] = None  # hf_bert | mosaic_bert
    model_config: Optional[dict] = None  # the HF config as a dict
    tokenizer_name: Optional[str] = None
    source: str = ""
    extra: dict = field(default_factory=dict)


def is_hf_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, name)) for name in WEIGHT_FILES)


# Checkpoint kinds Composer writes besides torch's zip file: tar archives and compressed files (by suffix).
OTHER_CHECKPOINT_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.lzma", ".zst", ".gz", ".bz2", ".lz4",
                             ".lzma", ".xz", ".br")
SHARDED_METADATA = ".metadata"  # a torch.distributed (sharded FSDP) checkpoint is a folder with this file


def check_checkpoint_file(path: str, key: Optional[str] = None) -> None:
    """Raise a RecipeError unless the local ``path`` holds a complete Composer checkpoint, before anything
    loads it: it exists; a torch zip file has its central directory (a cut-off write or copy loses it) and
    every member matches its CRC; any other file is a tar or compressed checkpoint by its name, or a
    legacy pickle. A sharded checkpoint folder needs its ``.metadata``. ``key`` names the setting in
    messages (e.g. ``load_path``)."""
    what = f"{key}={path!r}" if key else f"Checkpoint {path!r}"
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, SHARDED_METADATA)):
            return
        raise RecipeError(f"{what} is a folder, not a checkpoint file. Give a checkpoint file such as "
                          "runs/<run>/checkpoints/latest-rank0.pt (or a sharded checkpoint folder with its .metadata).")
    if not os.path.isfile(path):
        raise RecipeError(f"{what} does not exist. Give a Composer checkpoint file such as "
                          "runs/<run>/checkpoints/latest-rank0.pt, or an object-store URI.")
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if size == 0:
        problem = "is empty (0 bytes): its write or copy never finished"
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                if not holds_torch_pickle(archive):
                    raise RecipeError(f"{what} is a zip file but not a PyTorch checkpoint (no data.pkl). Give a "
                                      "checkpoint written by main.py or glue.py.")
                damaged = archive.testzip()
        except (zipfile.BadZipFile, EOFError) as err:
            damaged = describe(err)
        except OSError as err:  # the file system failed to read it: not evidence of a damaged file
            raise RecipeError(f"{what} could not be read ({describe(err)}). Check the disk or network file "
                              "system it is on, then start again.") from None
        if damaged is None:
            return
        problem = f"is damaged: {damaged} does not match its checksum"
    elif head.startswith(b"PK"):
        problem = (f"is truncated ({size:,} bytes, its end is missing): a checkpoint write or copy was cut off")
    elif path.endswith(OTHER_CHECKPOINT_SUFFIXES) or head[:1] == b"\x80":  # tar/compressed; legacy torch pickle
        return
    else:
        problem = "is not a PyTorch checkpoint (it holds other data)"
    raise RecipeError(f"{what} {problem}. Nothing was loaded. Give a complete checkpoint written by main.py "
                      "(each run's checkpoints are in its save_folder; latest-rank0.pt points at the newest), or copy "
                      "the file again.")


def _local_copy(path: str, tmpdir: str) -> str:
    """A local file for ``path``: itself, or a download of an object-store URI through Composer."""
    if "://" not in path:
        if not os.path.isfile(path):
            raise RecipeError(f"Checkpoint {path!r} does not exist. Give a Composer checkpoint file "
                              "(e.g. runs/<run>/checkpoints/latest-rank0.pt), an object-store URI, or an "
                              "exported Hugging Face folder.")
        check_checkpoint_file(path)
        return path
    destination = os.path.join(tmpdir, os.path.basename(path.rstrip("/")) or "checkpoint.pt")
    get_file(path, destination)
    return destination


def read_composer_checkpoint(path: str) -> Weights:
    """Weights and metadata from a Composer checkpoint file or URI."""
    with tempfile.TemporaryDirectory() as tmpdir:
        # s3://: checked first (a clear error in seconds); a run's folder means its newest checkpoint
        local = download_checkpoint(path, tmpdir) if is_s3(path) else _local_copy(path, tmpdir)
        try:
            checkpoint = torch.load(local, map_location="cpu", weights_only=False)
        except Exception as err:
            raise RecipeError(f"Could not read checkpoint {path!r} ({type(err).__name__}: {err}). The file is "
                              "truncated or not a PyTorch checkpoint; use a complete checkpoint written by "
                              "Composer (or re-copy it).") from None
    state = checkpoint.get("state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "model" not in state:
        raise RecipeError(f"{path!r} is not a Composer checkpoint (no state.model); give a checkpoint "
                          "written by main.py/glue.py, or a Hugging Face folder.")
    prefix = "model."  # ComposerMaskedLM / ComposerClassifier keep the HF model at .model
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    meta = (state.get("callbacks") or {}).get(METADATA_KEY) or {}
    return Weights(weights, meta.get("model_family"), meta.get("model_config"), meta.get("tokenizer_name"),
                   source=path, extra=meta)


def read_hf_folder(path: str) -> Weights:
    """Weights and config of a Hugging Face model folder."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        safetensors_file = os.path.join(path, "model.safetensors")
        if os.path.isfile(safetensors_file):
            state_dict = load_file(safetensors_file)
        else:
            state_dict = torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated weights file or a broken config.json
        raise RecipeError(f"Could not read the Hugging Face folder {path!r} ({type(err).__name__}: "
                          f"{str(err)[:200]}). A file is truncated or damaged; export it again.") from None
    family = family_name_of_model_type(config.get("model_type"))
    return Weights(state_dict, family, config, tokenizer_name=path, source=path)


def _looks_like_hub_name(path: str) -> bool:
    """``bert-base-uncased`` or ``org/model``: not a local path, not a URI, not a checkpoint file name."""
    return ("://" not in path and not os.path.exists(path) and not path.endswith((".pt", ".pth", ".bin"))
            and not path.startswith((".", "/", "~")) and path.count("/") <= 1)


def read_weights(path: str) -> Weights:
    """A Hugging Face folder, a Composer checkpoint (local or URI), or a hub model name when the hub is
    reachable (for example ``bert-base-uncased`` as starting weights for ``hf_bert``). Any failure, a
    download included, is a RecipeError naming ``path``."""
    try:
        return _read_weights(path)
    except RecipeError:
        raise
    except Exception as err:  # e.g. an object store or hub download that failed, a corrupt safetensors file
        raise RecipeError(f"Could not read weights from {path!r} ({describe(err, 300)}). Give a complete "
                          "Composer checkpoint (a file, or an object-store URI this machine can reach with its "
                          "credentials), an exported Hugging Face folder, or a hub name when the hub is "
                          "reachable.") from err


def _read_weights(path: str) -> Weights:
    if _looks_like_hub_name(path):
        if not hub_reachable():
            raise RecipeError(f"{path!r} is not a local checkpoint or folder, and the Hugging Face hub is not "
                              "reachable to download it. Give a Composer checkpoint, an exported folder, or a "
                              "local copy of the model folder.")
        folder = snapshot_download(path, allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin"])
        weights = read_hf_folder(folder)
        weights.tokenizer_name = weights.source = path  # a hub model's tokenizer has the model's name
        return weights
    if os.path.isdir(path):
        if is_hf_folder(path):
            return read_hf_folder(path)
        newest = newest_local_checkpoint(path)
        if newest is None:
            raise RecipeError(f"Folder {path!r} has no config.json + model.safetensors, and no {LATEST_NAME} (nor "
                              f"checkpoints/{LATEST_NAME}); give an exported Hugging Face folder, a run's folder "
                              "or save folder, or a Composer checkpoint file.")
        log.info("%s: the run's newest checkpoint, %s", path, newest)
        return read_composer_checkpoint(newest)
    return read_composer_checkpoint(path)


def newest_local_checkpoint(folder: str) -> Optional[str]:
    """The checkpoint file a local run's save folder (or the run folder holding ``checkpoints/``) points at
    as its newest, through Composer's ``latest-rank0.pt`` link; None when there is none. Like an ``s3://``
    folder, which means the run's newest checkpoint object."""
    for candidate in (os.path.join(folder, LATEST_NAME), os.path.join(folder, "checkpoints", LATEST_NAME)):
        if os.path.isfile(candidate):  # follows the link
            return os.path.realpath(candidate)
    return None


def _rename_hf_bert_keys(state_dict: dict) -> dict:
    """Older BERT checkpoints name LayerNorm parameters gamma/beta."""
    return {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
            for k, v in state_dict.items()}


def tied_keys(model: torch.nn.Module) -> dict[str, set[str]]:
    """Each state-dict key -> every key naming the same tensor (itself included)."""
    by_tensor: dict[int, set[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        by_tensor.setdefault(id(value), set()).add(key)
    return {key: keys for keys in by_tensor.values() for key in keys}


def load_weights(model: torch.nn.Module, path: str, new_head_prefixes: tuple[str, ...] = (),
                 weights: Optional[Weights] = None) -> Weights:
    """Load encoder weights from ``path`` into ``model``.

    Every parameter of ``model`` must be found, except those under ``new_head_prefixes`` (a freshly
    initialised task head): a missing encoder weight is an error naming the keys. Unexpected keys (an
    MLM head when fine-tuning) are listed in the log. A vocabulary padded to a larger multiple takes
    the checkpoint's rows and keeps its initialisation for the rest. A head weight (under
    ``new_head_prefixes``) whose shape differs from the model's (an MNLI head of 3 classes loaded into
    a 2-class model) is left out and keeps its fresh initialisation.

    ``weights``: the result of ``read_weights(path)`` when the caller already has it (fine-tuning
    loads one checkpoint into many models); ``path`` then only names it in messages.
    """
    weights = weights if weights is not None else read_weights(path)
    source = _rename_hf_bert_keys(weights.state_dict)
    target = model.state_dict()
    expected_family = getattr(model.config, "model_type", None)
    if weights.model_config and weights.model_config.get("model_type") not in (None, expected_family):
        raise RecipeError(f"{path!r} holds a {weights.model_config.get('model_type')!r} model but the recipe "
                          f"builds {expected_family!r}; set model.name to match the checkpoint.")
    # Tied weights (the MLM decoder and the word embeddings; BERT's two decoder-bias names) are one
    # tensor under several keys, and checkpoints store one of them: any of its keys will do.
    aliases = tied_keys(model)
    missing = [k for k in target if not k.startswith(new_head_prefixes) and not aliases[k] & source.keys()]
    if missing:
        raise RecipeError(f"{path!r} lacks {len(missing)} encoder weight(s) the model needs, e.g. "
                          f"{', '.join(missing[:5])}. It was made for a different architecture or size; "
                          "check model.name and model.config against the checkpoint.")
    loaded = {}
    for key, value in source.items():
        if key not in target:
            continue
        want = target[key]
        if value.shape != want.shape and key.startswith(new_head_prefixes) and new_head_prefixes:
            log.info("Re-initialised %s: the checkpoint's has shape %s, the model's %s", key,
                     tuple(value.shape), tuple(want.shape))
            continue
        if value.shape != want.shape:
            if value.dim() >= 1 and value.shape[1:] == want.shape[1:] and value.shape[0] < want.shape[0]:
                padded = want.clone()
                padded[: value.shape[0]] = value
                value = padded
            else:
                raise RecipeError(f"{path!r}: weight {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(want.shape)}; model.config does not match the checkpoint.")
        loaded[key] = value
    model.load_state_dict(loaded, strict=False)
    unexpected = sorted(k for k in source if k not in target)
    if unexpected:
        log.info("Not used from %s (%d keys): %s", path, len(unexpected), ", ".join(unexpected[:8]))
    fresh = sorted(k for k in target if k.startswith(new_head_prefixes) and k not in source)
    if fresh:
        log.info("Newly initialised: %s", ", ".join(fresh))
    return weights
