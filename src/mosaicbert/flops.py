"""Model FLOPs of one training step (forward + backward), for MFU in Composer's SpeedMonitor and the benchmark.

FLOPs = 6 x (matmul parameters a token passes through) x (tokens computed on)
      + 12 x layers x hidden x sum over sequences of (length^2)          # attention scores and mixing
      + 6 x (head matmul parameters) x (tokens the MLM head is applied to)

Embedding lookups, norms, activations and the softmax are not counted (no matmuls). "Tokens computed
on" is what the model actually processes: every position of the padded batch for Hugging Face BERT,
only real tokens for MosaicBERT (unpadding). Likewise the MLM head: every position for HF BERT, only
the masked positions for MosaicBERT.
"""

from __future__ import annotations

from .data.mlm_collator import row_lengths, row_masked


def layer_matmul_params(hidden: int, intermediate: int, gated: bool) -> int:
    """Weights one token passes through in one encoder layer: QKV + output projection + feed-forward."""
    ffn = hidden * 2 * intermediate + intermediate * hidden if gated else 2 * hidden * intermediate
    return 4 * hidden * hidden + ffn


def training_flops(*, layers: int, hidden: int, intermediate: int, vocab: int, gated: bool,
                   tokens: float, sum_sq_lengths: float, head_tokens: float) -> float:
    """FLOPs of one forward + backward pass (see module docstring)."""
    encoder = 6.0 * layers * layer_matmul_params(hidden, intermediate, gated) * tokens
    attention = 12.0 * layers * hidden * sum_sq_lengths
    head = 6.0 * (hidden * hidden + hidden * vocab) * head_tokens
    return encoder + attention + head


def batch_flops(config, *, unpadded: bool, gated: bool, masked_head: bool, batch: dict) -> float:
    """FLOPs of one step of a BERT-like config on a batch (``attention_mask [B, S]``, ``labels``).

    Uses the collator's host-side ``row_lengths`` / ``row_masked`` when present, so that counting
    costs no device sync.
    """
    B, S = batch["attention_mask"].shape
    if unpadded:
        lengths = row_lengths(batch)
        tokens, sum_sq = float(sum(lengths)), float(sum(n * n for n in lengths))
    else:
        tokens, sum_sq = float(B * S), float(B * S * S)
    head_tokens = float(sum(row_masked(batch))) if masked_head else tokens
    return training_flops(layers=config.num_hidden_layers, hidden=config.hidden_size,
                          intermediate=config.intermediate_size, vocab=config.vocab_size, gated=gated,
                          tokens=tokens, sum_sq_lengths=sum_sq, head_tokens=head_tokens)
