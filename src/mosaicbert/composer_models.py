"""The model families (:mod:`mosaicbert.families`) as Composer models, and the ``model`` builders.

The builders make the family's config from the recipe, optionally load starting weights, and wrap
the Hugging Face model for Composer with masked-LM or classification metrics. Importing this module
registers one builder per family in :data:`mosaicbert.registry.MODELS`.
"""

from __future__ import annotations

import functools
import logging
from typing import Optional

import torch
from composer.metrics.nlp import LanguageCrossEntropy, MaskedAccuracy
from composer.models import ComposerModel
from transformers import PreTrainedModel

from . import flops, registry
from .checkpoints import load_weights
from .families import FAMILIES, check_model_section, family_of, make_config
from .model.modeling_mosaic_bert import pack_rows, reads_host_plan

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Composer wrappers
# ----------------------------------------------------------------------------------------------
def _model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


@torch.compiler.disable
def host_sizes(batch: dict, pack_attention_rows: bool = False) -> dict:
    """Batch sizes an unpadding model needs, from the collator's host-side lists (no device sync); with
    ``pack_attention_rows`` (MosaicBERT's ``sdpa_packed``) also the plan of :func:`pack_rows` for a batch
    with padding, copied to the device without waiting for it.

    Kept out of torch.compile: the lists would otherwise be traced element by element.
    """
    if "row_lengths" not in batch:
        return {}
    lengths = [int(n) for n in batch["row_lengths"]]
    sizes = {"num_tokens": sum(lengths), "max_seqlen": max(lengths)}
    if "row_masked" in batch:
        sizes["num_masked"] = int(sum(batch["row_masked"]))
    ids = batch["input_ids"]
    if pack_attention_rows and sizes["num_tokens"] < ids.numel():
        starts, sizes["num_attention_rows"] = pack_rows(lengths, ids.shape[1])
        # From pinned memory the copy is asynchronous (the allocator keeps the block until it is done).
        starts = torch.tensor(starts, dtype=torch.long, pin_memory=ids.device.type == "cuda")
        sizes["attention_row_starts"] = starts.to(ids.device, non_blocking=True)
    return sizes


def packs_attention_rows(model: PreTrainedModel) -> bool:
    """Whether the model's attention reads a packing plan made here (see ``reads_host_plan``)."""
    return reads_host_plan(getattr(model.config, "attention_backend", None))


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
        sizes = host_sizes(batch, packs_attention_rows(self.model)) if self.family.unpadded else {}
        return self.model(**_model_inputs(batch), labels=batch["labels"], return_dict=True, **sizes)

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
        return flops.batch_flops(self.model.config, unpadded=self.family.unpadded, gated=self.family.gated,
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
        sizes = host_sizes(batch, packs_attention_rows(self.model)) if self.family.unpadded else {}
        return self.model(**_model_inputs(batch), labels=batch.get("labels"), return_dict=True, **sizes)

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
        load_weights(model, pretrained_checkpoint)
    return ComposerMaskedLM(model)


for _name in FAMILIES:
    registry.MODELS.register(_name, functools.partial(build_masked_lm, _name), check=check_model_section(_name))
