"""The FLOPs formula behind every MFU figure, against counts done by hand."""

from types import SimpleNamespace

import torch

from mosaicbert.flops import batch_flops

# 1 layer, hidden 2, intermediate 4, vocabulary 10. Two rows of length 3 and 1 (padded to 4); one masked token.
BATCH = {"attention_mask": torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]),
         "labels": torch.tensor([[-100, 7, -100, -100], [-100, -100, -100, -100]])}


def config(model_type):
    return SimpleNamespace(model_type=model_type, num_hidden_layers=1, hidden_size=2, intermediate_size=4,
                           vocab_size=10)


def test_mosaic_bert_counts_real_tokens_gated_ffn_and_masked_head():
    # Layer weights per token: QKV + output 4*2*2 = 16, GeGLU 2*(2*4) + 4*2 = 24 -> 40.
    # 6 * 40 * 4 real tokens = 960; attention 12 * 2 * (3^2 + 1^2) = 240; head 6 * (2*2 + 2*10) * 1 = 144.
    assert batch_flops(config("mosaic_bert"), unpadded=True, masked_head=True, batch=BATCH) == 960 + 240 + 144


def test_hf_bert_counts_every_position():
    # Layer weights 16 + 2*2*4 = 32; 6 * 32 * 8 positions = 1536; attention 12 * 2 * (2 rows * 4^2) = 768;
    # head 6 * 24 * 8 = 1152.
    assert batch_flops(config("bert"), unpadded=False, masked_head=False, batch=BATCH) == 1536 + 768 + 1152


def test_host_side_counts_are_used_when_present():
    # The collator's lists win over the tensors (no device sync): lengths 2 and 2, two masked tokens.
    batch = dict(BATCH, row_lengths=[2, 2], row_masked=[1, 1])
    assert batch_flops(config("mosaic_bert"), unpadded=True, masked_head=True, batch=batch) == 960 + 192 + 288
