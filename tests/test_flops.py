"""The FLOPs formula behind every MFU figure, against counts done by hand."""

from types import SimpleNamespace

import torch

from mosaicbert.flops import batch_flops

# 2 layers, hidden 3, intermediate 5, vocabulary 10 (sizes chosen so that no two terms coincide: with hidden 2,
# H*H = 2*H and a formula missing the layer count still passed). Two rows of length 3 and 1 (padded to 4);
# one masked token.
BATCH = {"attention_mask": torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]),
         "labels": torch.tensor([[-100, 7, -100, -100], [-100, -100, -100, -100]])}


def config(model_type):
    return SimpleNamespace(model_type=model_type, num_hidden_layers=2, hidden_size=3, intermediate_size=5,
                           vocab_size=10)


def test_mosaic_bert_counts_real_tokens_gated_ffn_and_masked_head():
    # Layer weights per token: QKV + output 4*3*3 = 36, GeGLU 3*(2*5) + 5*3 = 45 -> 81.
    # 6 * 2 layers * 81 * 4 real tokens = 3888; attention 12 * 2 layers * 3 * (3^2 + 1^2) = 720;
    # head 6 * (3*3 + 3*10) * 1 = 234.
    assert batch_flops(config("mosaic_bert"), unpadded=True, gated=True, masked_head=True, batch=BATCH) == 3888 + 720 + 234


def test_hf_bert_counts_every_position():
    # Layer weights 36 + 2*3*5 = 66; 6 * 2 layers * 66 * 8 positions = 6336;
    # attention 12 * 2 layers * 3 * (2 rows * 4^2) = 2304; head 6 * 39 * 8 = 1872.
    assert batch_flops(config("bert"), unpadded=False, gated=False, masked_head=False, batch=BATCH) == 6336 + 2304 + 1872


def test_host_side_counts_are_used_when_present():
    # The collator's lists win over the tensors (no device sync): lengths 2 and 2, two masked tokens.
    # Attention 12 * 2 layers * 3 * (2^2 + 2^2) = 576; head 6 * 39 * 2 = 468.
    batch = dict(BATCH, row_lengths=[2, 2], row_masked=[1, 1])
    assert batch_flops(config("mosaic_bert"), unpadded=True, gated=True, masked_head=True, batch=batch) == 3888 + 576 + 468
