"""Export a checkpoint of this recipe as a self-contained Hugging Face model folder.

``export_hf(checkpoint, out_dir)`` reads a Composer checkpoint (local file or object-store URI, through
:func:`mosaicbert.checkpoints.read_weights`; its ``RecipeMetadata`` names the model family, config and
tokenizer) or an exported folder, and writes::

    out_dir/config.json                  the model config (+ auto_map for MosaicBERT)
    out_dir/model.safetensors            the weights (tied embeddings stored once)
    out_dir/configuration_mosaic_bert.py \\  MosaicBERT only: the model code, copied verbatim, so that
    out_dir/modeling_mosaic_bert.py      /  trust_remote_code=True works without this repository
    out_dir/tokenizer.json, vocab.txt, ...  the tokenizer the model was trained with
    out_dir/README.md                    a short model card

``hf_bert`` exports are stock ``BertForMaskedLM`` / ``BertForSequenceClassification`` folders (no custom
code). A checkpoint holding a classification head (``classifier.*``, from fine-tuning) is exported as
``*ForSequenceClassification`` with ``num_labels`` taken from the weights; otherwise as ``*ForMaskedLM``.

What the export changes relative to the training-time model, and why:

* **Vocabulary trimmed to the tokenizer.** The recipe pads the vocabulary to a multiple of 64 for speed
  (bert-base-uncased: 30522 -> 30528). The padding rows belong to no token: left in, ``fill-mask`` and
  any argmax over the logits could return ids the tokenizer cannot decode. The export keeps the first
  ``len(tokenizer)`` rows of the word embeddings, of the tied decoder and of its bias, so logits are
  exactly the checkpoint's logits restricted to real tokens. Loading an export back into the recipe
  (``pretrained_checkpoint``) pads the vocabulary again; the padding rows get fresh initialisation.
* **MosaicBERT** configs get ``attention_backend="auto"`` (flash-attn 2 on CUDA when installed, else
  SDPA: the export runs on CPU without CUDA or flash-attn) and
  ``mlm_only_masked=False`` (logits are always ``[batch, seq, vocab]`` as Hugging Face callers expect;
  the loss is unchanged).

The folder is written to a temporary sibling folder, checked (reloaded and compared with the model
built from the checkpoint), and only then renamed to ``out_dir``. An existing ``out_dir`` is replaced
only with ``overwrite=True``, and only when it is empty or a model folder (has ``config.json``, no
sub-folders) that does not contain the checkpoint being exported.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Optional

import torch
from transformers.utils import logging as hf_logging

from . import model as model_package
from .checkpoints import read_weights
from .errors import RecipeError, describe
from .families import FAMILIES, RUN_ONLY_CONFIG_KEYS, tokenizer_mismatch
from .tokenizer import load_tokenizer
from .validation import check_folder_can_be_made

log = logging.getLogger(__name__)

MODEL_SOURCE_FILES = ("configuration_mosaic_bert.py", "modeling_mosaic_bert.py")
MOSAIC_AUTO_MAP = {
    "AutoConfig": "configuration_mosaic_bert.MosaicBertConfig",
    "AutoModel": "modeling_mosaic_bert.MosaicBertModel",
    "AutoModelForMaskedLM": "modeling_mosaic_bert.MosaicBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_mosaic_bert.MosaicBertForSequenceClassification",
}


# ----------------------------------------------------------------------------------------------
# Output folder handling
# ----------------------------------------------------------------------------------------------
def _check_out_dir(out_dir: str, overwrite: bool, source: str) -> None:
    """Refuse to touch ``out_dir`` unless it is absent (and can be made), or ``overwrite`` and safe to
    replace."""
    if not os.path.lexists(out_dir):
        check_folder_can_be_made(out_dir, f"Output folder {out_dir!r}")
        return
    if not os.path.isdir(out_dir) or os.path.islink(out_dir):
        raise RecipeError(f"Output path {out_dir!r} exists and is not a folder; choose another out_dir.")
    if not overwrite:
        raise RecipeError(f"Output folder {out_dir!r} already exists; pass --overwrite (overwrite=True) to "
                          "replace it, or choose another out_dir.")
    entries = os.listdir(out_dir)
    if not entries:
        return
    real_out = os.path.realpath(out_dir)
    if "://" not in source:
        real_source = os.path.realpath(source)
        if real_source == real_out or real_source.startswith(real_out + os.sep):
            raise RecipeError(f"Output folder {out_dir!r} holds the checkpoint being exported ({source!r}); "
                              "replacing it would delete the source. Choose another out_dir.")
    subfolders = sorted(e for e in entries if os.path.isdir(os.path.join(out_dir, e)))
    if "config.json" not in entries or subfolders:
        why = f"it has sub-folders ({', '.join(subfolders[:3])})" if subfolders else "it has no config.json"
        raise RecipeError(f"Refusing to replace {out_dir!r} even with --overwrite: {why}, so it does not look "
                          "like an exported model folder. Remove it yourself or choose another out_dir.")


def _publish(tmp_dir: str, out_dir: str) -> None:
    """Move the finished ``tmp_dir`` to ``out_dir`` (replacing an existing, already-checked folder)."""
    if not os.path.lexists(out_dir):
        os.rename(tmp_dir, out_dir)
        return
    parent = os.path.dirname(os.path.abspath(out_dir))
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.old-", dir=parent)
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(tmp_dir, out_dir)
    except BaseException:
        os.rename(old, out_dir)  # put the previous folder back
        raise
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Building the model from the checkpoint
# ----------------------------------------------------------------------------------------------
def _task_of(state_dict: dict) -> str:
    if "classifier.weight" in state_dict:
        return "classification"
    if any(k.startswith("cls.") for k in state_dict):
        return "masked_lm"
    raise RecipeError("The checkpoint has neither a masked-LM head (cls.*) nor a classification head "
                      "(classifier.*): it is not a BERT/MosaicBERT model of this recipe.")


def _vocab_keys(state_dict: dict, vocab_size: int) -> list[str]:
    """Keys of the tensors with one row per vocabulary entry: word embeddings, decoder weight and bias."""
    return [k for k, v in state_dict.items()
            if v.dim() >= 1 and v.shape[0] == vocab_size
            and (k.endswith("embeddings.word_embeddings.weight") or k.startswith("cls."))]


def _check_recipe_weights(weights, source: str):
    """The model family of ``weights``; a RecipeError when they do not say (not made by this recipe)."""
    family = FAMILIES.get(weights.model_family or "")
    if family is None or not isinstance(weights.model_config, dict):
        found = f"model family {weights.model_family!r}" if weights.model_family else "no RecipeMetadata"
        raise RecipeError(f"{source or weights.source!r} is not a checkpoint of this recipe ({found}): export "
                          "needs the model family and config that main.py/glue.py store in every checkpoint "
                          "(state.callbacks.RecipeMetadata), or an exported folder of a bert/mosaic_bert model.")
    return family


def build_export_model(weights, tokenizer_size: int, source: str = ""):
    """The Hugging Face model an export holds, with the checkpoint's weights (vocabulary trimmed to
    ``tokenizer_size``), in eval mode. Returns ``(model, task)``."""
    family = _check_recipe_weights(weights, source)
    state_dict = dict(weights.state_dict)
    task = _task_of(state_dict)
    config_dict = {k: v for k, v in weights.model_config.items() if k not in RUN_ONLY_CONFIG_KEYS}
    try:
        config = family.config_class.from_dict(config_dict)
    except Exception as err:
        raise RecipeError(f"{source!r}: its stored model config is not a valid {family.name} config "
                          f"({type(err).__name__}: {err}).") from None

    vocab_size = config.vocab_size
    mismatch = tokenizer_mismatch(tokenizer_size, vocab_size, config_dict)
    if mismatch:
        raise RecipeError(f"{mismatch[0].upper()}{mismatch[1:]}: it is not the tokenizer the model was trained "
                          "with. Pass the right one with --tokenizer.")
    if tokenizer_size < vocab_size:  # drop the padding rows (see the module docstring)
        for key in _vocab_keys(state_dict, vocab_size):
            state_dict[key] = state_dict[key][:tokenizer_size].clone()
        config.vocab_size = tokenizer_size

    if family.name == "mosaic_bert":
        config.attention_backend = "auto"
        config.mlm_only_masked = False
    if task == "classification":
        num_labels = state_dict["classifier.weight"].shape[0]
        if config.num_labels != num_labels:
            config.num_labels = num_labels  # resets id2label / label2id to LABEL_i
        model_class = family.classifier_class
    else:
        model_class = family.masked_lm_class

    model = model_class(config)
    target = model.state_dict()
    # Stored once in exports: the decoder weight (tied to the word embeddings) and BERT's decoder bias
    # (the same parameter as cls.predictions.bias).
    tied = {k for k in target if k.endswith("decoder.weight")} if config.tie_word_embeddings else set()
    tied |= {"cls.predictions.decoder.bias"} & set(target)
    missing = sorted(k for k in target if k not in state_dict and k not in tied)
    unexpected = sorted(k for k in state_dict if k not in target)
    wrong = sorted(k for k in state_dict if k in target and state_dict[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(f"{what}: {', '.join(keys[:4])}" for what, keys in
                            (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys)
        raise RecipeError(f"{source!r}: the weights do not fit the {model_class.__name__} its config "
                          f"describes ({details}). The checkpoint is damaged or of another architecture.")
    with torch.no_grad():
        model.load_state_dict(state_dict, strict=False)
    if config.tie_word_embeddings and task == "masked_lm":
        out, inp = model.get_output_embeddings().weight, model.get_input_embeddings().weight
        if out.data_ptr() != inp.data_ptr():
            model.get_output_embeddings().weight = inp  # keep the decoder tied to the embeddings
        decoder_key = next(iter(k for k in tied if k in state_dict and k.endswith("decoder.weight")), None)
        if decoder_key is not None and not torch.equal(state_dict[decoder_key], inp):
            raise RecipeError(f"{source!r}: the config ties the decoder to the word embeddings, but the "
                              "checkpoint's decoder weight differs from them.")
    return model.eval(), task


# ----------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------
def _card_source(source: str) -> str:
    """The file the weights came from, for the model card, as given, except that a local link (such as
    ``latest-rank0.pt``) is resolved to the checkpoint it names, whose name says the batch."""
    return os.path.realpath(source) if "://" not in source and os.path.islink(source) else source


def _model_card(model, family: str, task: str, checkpoint: str, tokenizer_name: str, padded_vocab: int,
                recipe: dict) -> str:
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    name = "MosaicBERT" if family == "mosaic_bert" else "BERT"
    remote = family == "mosaic_bert"
    trc = ", trust_remote_code=True" if remote else ""
    auto = "AutoModelForSequenceClassification" if task == "classification" else "AutoModelForMaskedLM"
    pipeline_tag = "text-classification" if task == "classification" else "fill-mask"
    lines = [
        "---",
        "library_name: transformers",
        f"pipeline_tag: {pipeline_tag}",
        "tags:",
        f"- {family}",
        "- composer",
        "---",
        "",
        f"# {name} ({'sequence classification' if task == 'classification' else 'masked language model'})",
        "",
        f"A {name} encoder exported from a Composer checkpoint of the mosaicbert recipe.",
        "",
        f"- source checkpoint: `{checkpoint}`",
        f"- architecture: {model.__class__.__name__}, {config.num_hidden_layers} layers, hidden size "
        f"{config.hidden_size}, {config.num_attention_heads} heads, {n_params / 1e6:.1f}M parameters",
        f"- tokenizer: `{tokenizer_name}` ({config.vocab_size} tokens)",
    ]
    if recipe.get("max_seq_len"):
        lines.append(f"- trained with max_seq_len {recipe['max_seq_len']}"
                     + (f" (run `{recipe['run_name']}`)" if recipe.get("run_name") else ""))
    if task == "classification":
        lines.append(f"- labels: {config.num_labels} ({', '.join(str(v) for v in config.id2label.values())})")
    if remote:
        lines += [
            "",
            "MosaicBERT (Portes et al., 2023) uses ALiBi instead of position embeddings (no maximum length), "
            "a gated (GeGLU) feed-forward and computes only on real tokens. Its code ships in this folder "
            "(`configuration_mosaic_bert.py`, `modeling_mosaic_bert.py`), so loading needs "
            "`trust_remote_code=True`. It runs with PyTorch SDPA on CPU and GPU; on a CUDA GPU it uses flash-attn 2 "
            "when installed (set `attention_backend` to `flash_attn`, `flex`, `sdpa` or `sdpa_packed` to choose).",
        ]
    if padded_vocab != config.vocab_size:
        lines += ["", f"Training padded the vocabulary to {padded_vocab} rows; the export keeps the "
                      f"{config.vocab_size} rows of real tokens."]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        f"from transformers import AutoModel, AutoTokenizer, {auto}, pipeline",
        "",
        'folder = "path/to/this/folder"',
        f"tokenizer = AutoTokenizer.from_pretrained(folder{trc})",
    ]
    if task == "classification":
        lines += [f"model = {auto}.from_pretrained(folder{trc}).eval()",
                  'logits = model(**tokenizer(["a sentence"], return_tensors="pt")).logits']
    else:
        lines += [f'fill = pipeline("fill-mask", model=folder{trc})',
                  'print(fill("The capital of France is [MASK]."))']
    lines += [
        "",
        "# sentence embeddings: mean of the last hidden states over real tokens",
        f"encoder = AutoModel.from_pretrained(folder{trc}).eval()",
        'batch = tokenizer(["first sentence", "a second, longer sentence"], padding=True, return_tensors="pt")',
        "hidden = encoder(**batch).last_hidden_state",
        'mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)',
        "embeddings = (hidden * mask).sum(1) / mask.sum(1)",
        "```",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------
def _check_reload(model, folder: str, task: str, tokenizer) -> None:
    """Reload the written folder and compare logits with the in-memory model (catches save problems)."""
    reloaded = type(model).from_pretrained(folder).eval()
    if task == "masked_lm" and model.config.tie_word_embeddings:
        if reloaded.get_output_embeddings().weight.data_ptr() != reloaded.get_input_embeddings().weight.data_ptr():
            raise RecipeError("Export check failed: the reloaded decoder is not tied to the word embeddings.")
    batch = tokenizer(["the export reloads", "and gives the same logits as before, padding included"],
                      padding=True, return_tensors="pt")
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        expected, got = model(**inputs).logits, reloaded(**inputs).logits
    if not torch.allclose(expected, got, rtol=1e-5, atol=1e-5):
        raise RecipeError(f"Export check failed: the reloaded model's logits differ from the checkpoint's "
                          f"(max difference {(expected - got).abs().max().item():.3g}).")


def export_hf(checkpoint: str, out_dir: str, overwrite: bool = False, tokenizer: Optional[str] = None,
              check: bool = True) -> str:
    """Write a Hugging Face folder for ``checkpoint`` at ``out_dir``; returns ``out_dir``.

    Args:
        checkpoint: a Composer checkpoint of this recipe (local path, or an object-store URI such as
            ``s3://bucket/run/ep1-ba1000-rank0.pt``: ``s3://`` through boto3, other schemes with
            ``composer.utils.get_file``), or an exported folder.
        out_dir: the folder to create. It must not exist unless ``overwrite``.
        overwrite: replace an existing export at ``out_dir`` (only a model folder or an empty folder).
        tokenizer: tokenizer name or folder; default the checkpoint's ``tokenizer_name``.
        check: reload the written folder and compare its logits before publishing it.

    Raises:
        RecipeError: the checkpoint is missing, truncated, of another architecture or lacks the
            recipe's metadata; ``out_dir`` exists; the tokenizer does not match the model.
    """
    out_dir = os.path.normpath(os.fspath(out_dir))
    _check_out_dir(out_dir, overwrite, checkpoint)  # fail before any expensive work
    weights = read_weights(checkpoint)
    _check_recipe_weights(weights, checkpoint)  # before the tokenizer: a foreign checkpoint fails first
    tokenizer_name = tokenizer or weights.tokenizer_name
    if not tokenizer_name:
        raise RecipeError(f"{checkpoint!r} names no tokenizer; pass one with --tokenizer (e.g. bert-base-uncased).")
    tok = load_tokenizer(tokenizer_name)
    model, task = build_export_model(weights, len(tok), source=checkpoint)
    family = weights.model_family
    padded_vocab = int(weights.model_config.get("vocab_size", model.config.vocab_size))
    positions = getattr(model.config, "max_position_embeddings", None)  # hf_bert; ALiBi has no limit
    if positions is not None and (tok.model_max_length or 0) > positions:
        tok.model_max_length = positions  # so pipelines truncate instead of indexing past the table
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:  # padding/truncation left in tokenizer.json (the offline files fix both at 128)
        backend.no_padding()
        backend.no_truncation()

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.tmp-", dir=parent)
    progress_bars = _quiet_transformers()
    try:
        if family == "mosaic_bert":
            model.config.auto_map = dict(MOSAIC_AUTO_MAP)
        model.save_pretrained(tmp_dir)  # safetensors: the default of transformers 4.57 and 5
        if family == "mosaic_bert":
            source_dir = os.path.dirname(model_package.__file__)
            for name in MODEL_SOURCE_FILES:  # shipped verbatim: the folder loads without this repository
                shutil.copyfile(os.path.join(source_dir, name), os.path.join(tmp_dir, name))
        tok.save_pretrained(tmp_dir)
        _fix_tokenizer_config(tmp_dir, tokenizer_name)
        with open(os.path.join(tmp_dir, "README.md"), "w") as f:
            f.write(_model_card(model, family, task, _card_source(weights.source or checkpoint), tokenizer_name,
                                padded_vocab, (weights.extra or {}).get("recipe") or {}))
        if check:
            _check_reload(model, tmp_dir, task, tok)
        _make_readable(tmp_dir)
        _check_out_dir(out_dir, overwrite, checkpoint)  # again: it may have appeared meanwhile
        _publish(tmp_dir, out_dir)
    except BaseException as err:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if isinstance(err, OSError):  # a full disk, a folder that became unwritable
            raise RecipeError(f"Could not write the export next to {out_dir!r} ({describe(err)}); the partial "
                              "export was removed. Fix the cause (e.g. free disk space) and run the export "
                              "again.") from None
        raise
    finally:
        _quiet_transformers(progress_bars)
    log.info("Exported %s (%s, %s) to %s", checkpoint, family, task, out_dir)
    return out_dir


def _fix_tokenizer_config(folder: str, tokenizer_name: str) -> None:
    """Drop a stale ``name_or_path`` the tokenizer files may carry from where they were copied."""
    path = os.path.join(folder, "tokenizer_config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        config = json.load(f)
    if "name_or_path" in config:
        config["name_or_path"] = tokenizer_name
        with open(path, "w") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
            f.write("\n")


def _make_readable(folder: str) -> None:
    """mkdtemp makes a private (0700) folder; give the export the usual permissions (umask applies)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o666 & ~umask)


def _quiet_transformers(restore: Optional[bool] = None) -> bool:
    """Turn transformers' progress bars off (returns whether they were on); ``restore`` puts them back."""
    if restore is not None:
        if restore:
            hf_logging.enable_progress_bar()
        return restore
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    return enabled
