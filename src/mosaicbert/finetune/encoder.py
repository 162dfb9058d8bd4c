"""The pretrained encoder that fine-tuning starts from, and the classifier built on it.

:func:`read_encoder` reads ``pretrained_checkpoint`` once (a Composer checkpoint with its recipe
metadata, or an exported Hugging Face folder): its family, config, tokenizer and weights.
:func:`classifier_config` makes a task's sequence-classification config from it, and
:func:`build_classifier` the model with the encoder's weights.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from transformers import PretrainedConfig, PreTrainedTokenizerBase

from ..checkpoints import Weights, load_weights, read_weights
from ..errors import RecipeError
from ..families import (
    FAMILIES,
    NEW_HEAD_PREFIXES,
    NOT_ENCODER_CONFIG_KEYS,
    TASK_LABEL_KEYS,
    check_config_keys,
    check_max_seq_len,
    make_config,
    padded_vocab_size,
    tokenizer_mismatch,
)
from ..tokenizer import load_tokenizer
from .config import FinetuneConfig
from .tasks import TaskSpec


@dataclasses.dataclass
class Encoder:
    """The pretrained checkpoint: where it is, its weights, its family, config and tokenizer."""

    path: str
    family: str
    config: dict  # the encoder's Hugging Face config as a dict, recipe overrides not yet applied
    tokenizer_name: str
    weights: Weights


def read_encoder(cfg: FinetuneConfig) -> tuple[Encoder, PreTrainedTokenizerBase]:
    """Read ``pretrained_checkpoint`` and its tokenizer; family, config and tokenizer default to what the
    checkpoint says."""
    path = cfg.pretrained_checkpoint
    weights = read_weights(path)
    family = cfg.model_name or weights.model_family
    if family is None:
        raise RecipeError(f"pretrained_checkpoint {path!r} does not say which model family it holds (no recipe "
                          "metadata). Set model_name (hf_bert or mosaic_bert), tokenizer_name, and model_config "
                          "with the architecture (hidden_size, num_hidden_layers, ...).")
    if family not in FAMILIES:
        raise RecipeError(f"pretrained_checkpoint {path!r} holds a {family!r} model; glue.py fine-tunes "
                          f"{' and '.join(FAMILIES)}.")
    if cfg.model_name and weights.model_family and cfg.model_name != weights.model_family:
        raise RecipeError(f"model_name={cfg.model_name} but pretrained_checkpoint {path!r} holds a "
                          f"{weights.model_family} model; remove model_name (it defaults to the checkpoint's).")
    tokenizer_name = cfg.tokenizer_name or weights.tokenizer_name
    if not tokenizer_name:
        raise RecipeError(f"pretrained_checkpoint {path!r} does not name its tokenizer; set tokenizer_name "
                          "(e.g. bert-base-uncased, or a folder with tokenizer.json / vocab.txt).")
    tokenizer = load_tokenizer(tokenizer_name)
    if weights.model_config:
        config = dict(weights.model_config)
    else:  # no metadata: the architecture comes from model_config alone
        config = make_config(family, tokenizer, cfg.max_seq_len, cfg.model_config).to_dict()
    vocab_size = config.get("vocab_size")
    # A larger tokenizer would be an IndexError inside the first job; a much smaller one trains on the wrong rows.
    # (The checkpoint's own tokenizer fits even a vocabulary set larger on purpose: model.config.vocab_size.)
    own = not cfg.tokenizer_name or cfg.tokenizer_name == weights.tokenizer_name
    mismatch = None if vocab_size is None else tokenizer_mismatch(len(tokenizer), vocab_size, config,
                                                                  check_padding=not own)
    if mismatch:
        raise RecipeError(f"Tokenizer {tokenizer_name!r} does not fit pretrained_checkpoint {path!r}: {mismatch}, "
                          "so it is not the tokenizer the model was pretrained with. Pass that one with "
                          "tokenizer_name" + (", or remove tokenizer_name to use the checkpoint's."
                                              if cfg.tokenizer_name and weights.tokenizer_name else "."))
    return Encoder(path, family, config, tokenizer_name, weights), tokenizer


def classifier_config(encoder: Encoder, spec: TaskSpec, overrides: dict, max_seq_len: int,
                      where: str = "model_config") -> PretrainedConfig:
    """The sequence-classification config of a task: the encoder's config, the recipe's overrides, the
    task's labels (``id2label`` from its label names, regression for one label)."""
    family = FAMILIES[encoder.family]
    check_config_keys(encoder.family, overrides, where, excluded=TASK_LABEL_KEYS,
                      note=" (num_labels comes from the task)")
    values = {k: v for k, v in encoder.config.items() if k not in NOT_ENCODER_CONFIG_KEYS}
    if "vocab_size" in values:  # an export trims the vocabulary to the tokenizer: pad it as training did
        values["vocab_size"] = padded_vocab_size(values["vocab_size"], {**values, **overrides})
    values.update(overrides)
    names = spec.label_names or tuple(f"LABEL_{i}" for i in range(spec.num_labels))
    values.update(id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)},
                  problem_type="regression" if spec.is_regression else "single_label_classification",
                  architectures=[family.classifier_class.__name__])
    try:
        config = family.config_class(**values)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{where} {overrides} does not make a valid {encoder.family} config: {err}") from None
    check_max_seq_len(config, max_seq_len)
    return config


def build_classifier(encoder: Encoder, config: PretrainedConfig, init_checkpoint: Optional[str] = None):
    """The family's classifier with encoder weights from the pretrained checkpoint, or every weight of a
    fine-tuned checkpoint (``init_checkpoint``) except a classifier of another shape."""
    model = FAMILIES[encoder.family].classifier_class(config)
    if init_checkpoint is None:
        load_weights(model, encoder.path, new_head_prefixes=NEW_HEAD_PREFIXES, weights=encoder.weights)
    else:
        load_weights(model, init_checkpoint, new_head_prefixes=("classifier",))
    return model
