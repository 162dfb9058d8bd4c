"""The compiled-training check of session 4, call 4 (benchmarks/results/session4/call4_cuda_tests.txt), kept as it
ran: three compiled bf16 training steps of a tiny MosaicBertForMaskedLM with the flex backend on batches with
random padding (host-known num_tokens). Gradients accumulate across the steps (no zero_grad), as they did then.

    PYTHONPATH=src python benchmarks/flex_train_check_gpu.py     (on a CUDA machine, from the repository root)
"""
import sys, torch
sys.path.insert(0, "tests")
from test_model import tiny_config, random_batch
from mosaicbert.model.modeling_mosaic_bert import MosaicBertForMaskedLM
torch.manual_seed(0)
m = MosaicBertForMaskedLM(tiny_config(attention_backend="flex", hidden_size=64, num_attention_heads=4)).cuda().train()
run = torch.compile(m)
for seed in range(3):
    ids, mask, types = random_batch(batch=6, seqlen=200, generator=torch.Generator().manual_seed(seed))
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, -100) * 1
    labels[mask == 0] = -100
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = run(input_ids=ids.cuda(), attention_mask=mask.cuda(), token_type_ids=types.cuda(), labels=labels.cuda(),
                  num_tokens=int(mask.sum()))
    out.loss.backward()
    print("train step", seed, float(out.loss), "grad norm", float(sum(p.grad.norm() ** 2 for p in m.parameters() if p.grad is not None) ** 0.5))
