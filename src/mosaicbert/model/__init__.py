"""MosaicBERT model: plain PyTorch + Hugging Face classes. Imports neither Composer nor streaming."""

from .configuration_mosaic_bert import ATTENTION_BACKENDS, MosaicBertConfig
from .modeling_mosaic_bert import (
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
    MosaicBertModel,
    MosaicBertPreTrainedModel,
    alibi_slopes,
)

__all__ = [
    "ATTENTION_BACKENDS",
    "MosaicBertConfig",
    "MosaicBertForMaskedLM",
    "MosaicBertForSequenceClassification",
    "MosaicBertModel",
    "MosaicBertPreTrainedModel",
    "alibi_slopes",
]
