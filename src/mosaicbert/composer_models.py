"""The two model families (``hf_bert``, ``mosaic_bert``) as Composer models.

Each family is a Hugging Face config class plus masked-LM and sequence-classification classes. The
builders here make the config from the recipe (vocabulary padded to a multiple of 64), optionally load
starting weights, and wrap the model for Composer with masked-LM or classification metrics.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Optional

import torch
from composer.metrics.nlp import LanguageCrossEntropy, MaskedAccuracy
from composer.models import ComposerModel
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)

from . import flops
from .config import did_you_mean
from .errors import RecipeError
from .model import MosaicBertConfig, MosaicBertForMaskedLM, MosaicBertForSequenceClassification

log = logging.getLogger(__name__)

VOCAB_MULTIPLE = 64
# Config entries that describe a saved file or a run, not the architecture: dropped when a config
# read from a checkpoint or folder builds a new model.
RUN_ONLY_CONFIG_KEYS = frozenset({"_name_or_path", "transformers_version", "architectures", "auto_map",
                                  "_commit_hash", "_attn_implementation_autoset"})
# A classification head's entries: a task sets them, not a recipe's model_config.
TASK_LABEL_KEYS = frozenset({"num_labels", "problem_type", "id2label", "label2id"})


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    name: str
    config_class: type
    masked_lm_class: type
    classifier_class: type
    unpadded: bool  # computes only on real tokens (and its MLM head only on masked ones)

    def allowed_config_keys(self) -> set[str]:
        if self.config_class is MosaicBertConfig:
            keys = set(inspect.signature(MosaicBertConfig.__init__).parameters) - {"self", "kwargs"}
        else:  # BertConfig's fields, and the attention implementation HF models take ("sdpa", "eager")
            keys = set(self.config_class().to_dict()) | {"attn_implementation"}
        return keys | {"num_labels", "problem_type"}


FAMILIES = {
    "hf_bert": ModelFamily("hf_bert", BertConfig, BertForMaskedLM, BertForSequenceClassification, False),
    "mosaic_bert": ModelFamily("mosaic_bert", MosaicBertConfig, MosaicBertForMaskedLM,
                               MosaicBertForSequenceClassification, True),
}


def family_of(config: PretrainedConfig) -> ModelFamily:
    for family in FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    raise RecipeError(f"Model type {config.model_type!r} is neither hf_bert (BERT) nor mosaic_bert.")


def padded_vocab_size(vocab_size: int, config_values: Optional[dict] = None) -> int:
    """30522 -> 30528: matmuls over the vocabulary are faster on a multiple of 64, or of the config's
    ``pad_vocab_multiple`` (a MosaicBERT field) when ``config_values`` has one."""
    multiple = (config_values or {}).get("pad_vocab_multiple", VOCAB_MULTIPLE)
    return -(-vocab_size // multiple) * multiple


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
        raise RecipeError(f"Unknown key {where}.{unknown[0]!r} for {family_name}.{did_you_mean(unknown[0], allowed)} "
                          f"Allowed: {', '.join(sorted(allowed))}{note}.")


def check_model_section(family_name: str):
    """Validate ``model.config`` at recipe load: its keys against the family's config class, then its
    values by building that config (cheap: no weights), whose own checks give the messages."""
    def check(kwargs: dict) -> None:
        config = kwargs.get("config") or {}
        check_config_keys(family_name, config)
        try:
            FAMILIES[family_name].config_class(**config)
        except (ValueError, TypeError) as err:
            raise RecipeError(f"model.config: {err}") from None
    return check


# ----------------------------------------------------------------------------------------------
# Composer wrappers
# ----------------------------------------------------------------------------------------------
def _model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


@torch.compiler.disable
def host_sizes(batch: dict) -> dict:
    """Batch sizes an unpadding model needs, from the collator's host-side lists (no device sync).

    Kept out of torch.compile: the lists would otherwise be traced element by element.
    """
    if "row_lengths" not in batch:
        return {}
    sizes = {"num_tokens": int(sum(batch["row_lengths"])), "max_seqlen": int(max(batch["row_lengths"]))}
    if "row_masked" in batch:
        sizes["num_masked"] = int(sum(batch["row_masked"]))
    return sizes


class ComposerMaskedLM(ComposerModel):
    """Masked-LM training and evaluation with masked-token cross entropy and accuracy.

    ``self.model`` is the Hugging Face model (what export and fine-tuning read).
    """

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model
        self.family = family_of(model.config)
        # Train metrics stay empty: Composer would recompute them every step; the loss is logged anyway.
        self.train_metrics: dict = {}
        self.val_metrics = {"LanguageCrossEntropy": LanguageCrossEntropy(ignore_index=-100),
                            "MaskedAccuracy": MaskedAccuracy(ignore_index=-100)}

    def forward(self, batch: dict):
        sizes = host_sizes(batch) if self.family.unpadded else {}
        return self.model(**_model_inputs(batch), labels=batch["labels"], **sizes)

    def loss(self, outputs, batch: dict) -> torch.Tensor:
        return outputs.loss

    def eval_forward(self, batch: dict, outputs=None):
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict:
        return self.train_metrics if is_train else self.val_metrics

    def update_metric(self, batch: dict, outputs, metric) -> None:
        logits, labels = outputs.logits, batch["labels"]
        if logits.dim() == 2:  # MosaicBERT's head ran on masked tokens only, in row-major order
            labels = labels[labels != -100]
        metric.update(logits, labels)

    def flops_per_batch(self, batch: dict) -> float:
        return flops.batch_flops(self.model.config, unpadded=self.family.unpadded,
                                 masked_head=self.family.unpadded and self.model.config.mlm_only_masked,
                                 batch=batch)


class ComposerClassifier(ComposerModel):
    """Sequence classification / regression with task metrics (``metrics``: name -> torchmetrics Metric)."""

    def __init__(self, model: PreTrainedModel, metrics: dict):
        super().__init__()
        self.model = model
        self.family = family_of(model.config)
        self.train_metrics: dict = {}
        self.val_metrics = metrics

    def forward(self, batch: dict):
        sizes = host_sizes(batch) if self.family.unpadded else {}
        return self.model(**_model_inputs(batch), labels=batch.get("labels"), **sizes)

    def loss(self, outputs, batch: dict) -> torch.Tensor:
        return outputs.loss

    def eval_forward(self, batch: dict, outputs=None):
        return (outputs if outputs is not None else self.forward(batch)).logits

    def get_metrics(self, is_train: bool = False) -> dict:
        return self.train_metrics if is_train else self.val_metrics

    def update_metric(self, batch: dict, outputs, metric) -> None:
        # Raw logits: the task's metrics (finetune.metrics.build_torchmetrics) take [N, C] class logits or
        # [N, 1] regression outputs themselves, so the conversion lives in one place.
        metric.update(outputs.logits if hasattr(outputs, "logits") else outputs, batch["labels"])


# ----------------------------------------------------------------------------------------------
# Builders (registered under the family names)
# ----------------------------------------------------------------------------------------------
def build_masked_lm(family_name: str, *, tokenizer, max_seq_len: int, config: Optional[dict] = None,
                    pretrained_checkpoint: Optional[str] = None) -> ComposerMaskedLM:
    """A randomly initialised masked LM of the family; ``pretrained_checkpoint`` (a Composer checkpoint,
    local or URI, or a Hugging Face folder such as an export) loads starting weights."""
    family = FAMILIES[family_name]
    model_config = make_config(family_name, tokenizer, max_seq_len, config)
    model = family.masked_lm_class(model_config)
    if pretrained_checkpoint:
        from .checkpoints import load_weights

        load_weights(model, pretrained_checkpoint)
    return ComposerMaskedLM(model)


def register(models) -> None:
    import functools

    for name in FAMILIES:
        models.register(name, functools.partial(build_masked_lm, name), check=check_model_section(name))
