"""The two model families, ``hf_bert`` and ``mosaic_bert``, and every fact the recipe keeps about them.

A family is a Hugging Face config class plus its masked-LM and sequence-classification classes. Here
too: how the vocabulary is padded, which config entries describe a run or a task head rather than the
architecture, and the checks of a recipe's ``model.config``. Pretraining, fine-tuning, export and the
checkpoint reader all ask this module; none of them keeps its own copy.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Optional

from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    PretrainedConfig,
)

from .errors import RecipeError
from .model import (
    MosaicBertConfig,
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
)
from .validation import did_you_mean

# Matmuls over the vocabulary are faster on a multiple of 64: 30522 -> 30528. A MosaicBERT config
# carries its own multiple (``pad_vocab_multiple``); this is the default and hf_bert's.
VOCAB_MULTIPLE = 64
# Config entries that describe a saved file or a run, not the architecture: dropped when a config
# read from a checkpoint or folder builds a new model.
RUN_ONLY_CONFIG_KEYS = frozenset({"_name_or_path", "transformers_version", "architectures", "auto_map",
                                  "_commit_hash", "_attn_implementation_autoset"})
# A classification head's entries: a task sets them, not a recipe's model_config.
TASK_LABEL_KEYS = frozenset({"num_labels", "problem_type", "id2label", "label2id"})
# Everything of a stored config that does not describe the encoder.
NOT_ENCODER_CONFIG_KEYS = RUN_ONLY_CONFIG_KEYS | TASK_LABEL_KEYS | {"model_type"}
# Weights a classifier may lack in an MLM checkpoint: BERT's pooler is trained by next-sentence
# prediction, which neither family's MLM pretraining has.
NEW_HEAD_PREFIXES = ("classifier", "bert.pooler")


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    name: str
    config_class: type
    masked_lm_class: type
    classifier_class: type
    unpadded: bool  # computes only on real tokens (and its MLM head only on masked ones)
    gated: bool  # GeGLU feed-forward (FLOPs count an input projection of twice the width)

    @property
    def model_type(self) -> str:
        """The ``model_type`` of the family's Hugging Face config (``bert``, ``mosaic_bert``)."""
        return self.config_class.model_type

    def allowed_config_keys(self) -> set[str]:
        if self.config_class is MosaicBertConfig:
            keys = set(inspect.signature(MosaicBertConfig.__init__).parameters) - {"self", "kwargs"}
        else:  # BertConfig's fields, and the attention implementation HF models take ("sdpa", "eager")
            keys = set(self.config_class().to_dict()) | {"attn_implementation"}
        return keys | {"num_labels", "problem_type"}


FAMILIES = {
    "hf_bert": ModelFamily("hf_bert", BertConfig, BertForMaskedLM, BertForSequenceClassification,
                           unpadded=False, gated=False),
    "mosaic_bert": ModelFamily("mosaic_bert", MosaicBertConfig, MosaicBertForMaskedLM,
                               MosaicBertForSequenceClassification, unpadded=True, gated=True),
}


def family_of(config: PretrainedConfig) -> ModelFamily:
    for family in FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    raise RecipeError(f"Model type {config.model_type!r} is neither hf_bert (BERT) nor mosaic_bert.")


def family_name_of_model_type(model_type: Optional[str]) -> Optional[str]:
    """``bert`` -> ``hf_bert``, ``mosaic_bert`` -> ``mosaic_bert``; None for any other model type."""
    return next((family.name for family in FAMILIES.values() if family.model_type == model_type), None)


def padded_vocab_size(vocab_size: int, config_values: Optional[dict] = None) -> int:
    """30522 -> 30528: the vocabulary rounded up to ``VOCAB_MULTIPLE``, or to the config's
    ``pad_vocab_multiple`` when ``config_values`` has one."""
    multiple = vocab_multiple(config_values)
    return -(-vocab_size // multiple) * multiple


def vocab_multiple(config_values: Optional[dict] = None) -> int:
    """The multiple a model's vocabulary was padded to: its config's ``pad_vocab_multiple``, else 64."""
    return (config_values or {}).get("pad_vocab_multiple", VOCAB_MULTIPLE)


def tokenizer_mismatch(tokenizer_size: int, vocab_size: int, config_values: Optional[dict] = None,
                       check_padding: bool = True) -> Optional[str]:
    """Why a tokenizer of ``tokenizer_size`` tokens is not the one a model of ``vocab_size`` embedding rows was
    trained with, or None: it has more tokens than rows, or (``check_padding``) fewer by more than the
    vocabulary's padding."""
    if tokenizer_size > vocab_size:
        return f"the tokenizer has {tokenizer_size} tokens but the model only {vocab_size} embedding rows"
    multiple = vocab_multiple(config_values)
    if check_padding and vocab_size - tokenizer_size >= multiple:
        return (f"the tokenizer has {tokenizer_size} tokens but the model {vocab_size} embedding rows (more than "
                f"a padding to a multiple of {multiple})")
    return None


def make_config(family_name: str, tokenizer, max_seq_len: int, overrides: Optional[dict] = None) -> PretrainedConfig:
    """A family's config from the recipe: defaults are the base model, ``overrides`` on top. The
    vocabulary is padded to ``pad_vocab_multiple`` (MosaicBERT's config field; 64 by default)."""
    family = FAMILIES[family_name]
    overrides = overrides or {}
    values = {"vocab_size": padded_vocab_size(len(tokenizer), overrides), "pad_token_id": tokenizer.pad_token_id}
    values.update(overrides)
    if values["vocab_size"] < len(tokenizer):
        raise RecipeError(f"model.config.vocab_size={values['vocab_size']} is smaller than the tokenizer's "
                          f"{len(tokenizer)} tokens; remove it to get {padded_vocab_size(len(tokenizer), overrides)}.")
    config = family.config_class(**values)
    check_max_seq_len(config, max_seq_len)
    return config


def check_max_seq_len(config: PretrainedConfig, max_seq_len: int) -> None:
    """hf_bert has a position table; MosaicBERT (ALiBi) takes any length."""
    limit = getattr(config, "max_position_embeddings", None) if family_of(config).name == "hf_bert" else None
    if limit is not None and max_seq_len > limit:
        raise RecipeError(
            f"max_seq_len={max_seq_len} is longer than hf_bert supports (max_position_embeddings={limit}). "
            f"Lower max_seq_len, raise model.config.max_position_embeddings, or use mosaic_bert (ALiBi: no limit)."
        )


def check_config_keys(family_name: str, config: dict, where: str = "model.config",
                      excluded: frozenset = frozenset(), note: str = "") -> None:
    """Every key of a model-config override must be a field of the family's config class."""
    allowed = FAMILIES[family_name].allowed_config_keys() - excluded
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise RecipeError(f"Unknown key '{where}.{unknown[0]}' for {family_name}.{did_you_mean(unknown[0], allowed)} "
                          f"Allowed: {', '.join(sorted(allowed))}{note}.")


def check_model_section(family_name: str):
    """Validate ``model.config`` at recipe load: its keys against the family's config class, then its
    values by building that config (cheap: no weights), whose own checks give the messages."""
    def check(kwargs: dict, where: str = "model") -> None:
        config = kwargs.get("config") or {}
        check_config_keys(family_name, config)
        try:
            FAMILIES[family_name].config_class(**config)
        except (ValueError, TypeError) as err:
            raise RecipeError(f"model.config: {err}") from None
    return check
