"""Time the two largest non-GEMM costs of a MosaicBERT step on their own: the GeGLU feed-forward block
(per dropout variant and projection layout, with its six GEMMs alone as a floor) and attention
(FlexAttention kernel options and layouts, SDPA backends for reference).

Each case is one layer's forward + backward under bf16 autocast and torch.compile, on ``--tokens``
unpadded tokens (the step's ``[T, hidden]`` tensor), timed with CUDA events after warm-up: the median of
``--steps`` samples, each the mean of 5 back-to-back runs. Attention runs on rows of ``--seq`` tokens,
``full`` (every row S long) and ``uniform`` (lengths uniform in [S/4, S]), packed as the model packs
them, also with a block mask of 64-token blocks. Prints one table, writes JSON.

    python benchmarks/microbench.py --tokens 32768 --seq 128 --json runs/microbench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import traceback

import torch

from mosaicbert.errors import describe
from mosaicbert.model.configuration_mosaic_bert import MosaicBertConfig
from mosaicbert.model.modeling_mosaic_bert import (
    FLEX_BLOCK_SIZE, MosaicBertGatedMLP, Unpadded, alibi_score_mod, alibi_slopes, attention, document_block_mask,
    prepare_attention,
)

FFN_VARIANTS = {  # MosaicBertConfig overrides
    "GLU dropout on the intermediate (paper), torch dropout": {"fast_dropout": False},
    "GLU dropout on the intermediate (paper), hash dropout": {},
    "dropout after wo, torch dropout": {"fast_dropout": False, "glu_dropout": "output"},
    "dropout after wo, hash dropout": {"glu_dropout": "output"},
    "no dropout (floor)": {"hidden_dropout_prob": 0.0},
    "GELU tanh approximation, hash dropout (not the paper's erf GELU)": {"hidden_act": "gelu_pytorch_tanh"},
}
FLEX_OPTIONS = {  # name -> FlexAttention kernel_options (None: torch's defaults). Unprefixed num_warps and
    # num_stages apply to the forward and the backward kernel alike.
    "flex, default options": None,
    "flex, fwd blocks 64x64": {"BLOCK_M": 64, "BLOCK_N": 64},
    "flex, fwd blocks 128x128, 8 warps (both passes)": {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8},
    "flex, fwd blocks 128x64, 4 warps, 3 stages (both passes)": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4,
                                                                 "num_stages": 3},
    "flex, bwd blocks 64/128": {"BLOCK_M1": 64, "BLOCK_N1": 128, "BLOCK_M2": 128, "BLOCK_N2": 64},
}
SMALL_BLOCK_OPTIONS = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_M1": 32, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 32}


def median_ms(fn, warmup: int, steps: int, repeats: int = 5) -> float:
    """Median over ``steps`` samples of the mean time of ``repeats`` back-to-back runs (the GPU stays
    busy between runs, so host-side launch work is hidden as it is in a training step)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / repeats)
    return statistics.median(times)


class OneGemmGatedMLP(MosaicBertGatedMLP):
    """The same parameters and function as the model's block (post-LN, dropout on the intermediate), with
    the input projection as one GEMM into ``[T, 2I]`` that is then split, as before session 4: the GELU·mul
    reads halves of one tensor and its backward concatenates the two gradients."""

    def forward(self, hidden):
        gate, value = self.gated_layers(hidden).split(self.intermediate_size, dim=-1)
        return self.LayerNorm(hidden + self.wo(self.dropout(self.act(gate) * value)))


def ffn_case(overrides: dict, tokens: int, module=MosaicBertGatedMLP, mode=None):
    config = MosaicBertConfig(**overrides)
    mlp = torch.compile(module(config).cuda().train(), mode=mode)
    x = torch.randn(tokens, config.hidden_size, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn_like(x)

    def step():  # gradients are returned, not accumulated into x.grad (the model never does that)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = mlp(x)
        torch.autograd.grad(out, [x, *mlp.parameters()], grad)
    return step


def gemm_floor_case(tokens: int):
    """The GeGLU block's six GEMMs alone, eager bf16: forward x·W1ᵀ and glu·Woᵀ; backward dy·Wo, dyᵀ·glu,
    dh·W1, dhᵀ·x. What the block would cost if every elementwise op were free."""
    config = MosaicBertConfig()
    hidden, intermediate = config.hidden_size, config.intermediate_size

    def rand(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)
    x, w1, wo = rand(tokens, hidden), rand(2 * intermediate, hidden), rand(hidden, intermediate)
    glu, dy, dh = rand(tokens, intermediate), rand(tokens, hidden), rand(tokens, 2 * intermediate)

    def step():
        x @ w1.T, glu @ wo.T, dy @ wo, dy.T @ glu, dh @ w1, dh.T @ x
    return step


def packed_row_lengths(tokens: int, seq: int, lengths: str, generator) -> list[int]:
    """Row lengths adding up to ``tokens``: all ``seq`` (full) or uniform in [seq/4, seq]."""
    if lengths == "full":
        return [seq] * (tokens // seq)
    rows = []
    while sum(rows) < tokens - seq:
        rows.append(int(torch.randint(seq // 4, seq + 1, (1,), generator=generator)))
    return rows + [tokens - sum(rows)] if tokens > sum(rows) else rows


def attention_case(kind: str, options, rows: list[int], heads: int = 12, head_dim: int = 64,
                   block: int = FLEX_BLOCK_SIZE):
    """One layer's attention on ``rows`` packed as the model packs them. ``flex`` and ``sdpa*`` run the
    model's own ``attention()`` (FlexAttention with its block mask; SDPA on the re-padded layout with the
    ALiBi bias, or with none as a floor), except Flex with kernel options or another block size, which
    the model does not set; ``flex_dense`` is Flex on ``[B, heads, S, d]`` without a block mask."""
    total, seq = sum(rows), max(rows)
    qkv = torch.randn(total, 3, heads, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(total, heads, head_dim, device="cuda", dtype=torch.bfloat16)
    slopes = torch.tensor(alibi_slopes(heads), device="cuda")
    lengths = torch.tensor(rows, device="cuda")
    unpadded = Unpadded.from_mask((torch.arange(seq, device="cuda")[None] < lengths[:, None]).long(), total)
    if kind == "flex_dense":
        from torch.nn.attention.flex_attention import flex_attention
        assert len(set(rows)) == 1, "the dense layout needs equal rows"

        def attend(qkv):
            q, k, v = qkv.view(len(rows), seq, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            out = flex_attention(q, k, v, score_mod=alibi_score_mod(slopes), kernel_options=options)
            return out.transpose(1, 2).flatten(0, 1)
    elif kind == "flex" and (options is not None or block != FLEX_BLOCK_SIZE):
        from torch.nn.attention.flex_attention import flex_attention
        block_mask = document_block_mask(unpadded.cu_seqlens, total, block)

        def attend(qkv):
            q, k, v = qkv.permute(1, 2, 0, 3).unsqueeze(1).unbind(0)
            out = flex_attention(q, k, v, score_mod=alibi_score_mod(slopes), block_mask=block_mask,
                                 kernel_options=options)
            return out[0].transpose(0, 1)
    else:
        config = MosaicBertConfig(num_attention_heads=heads, hidden_size=heads * head_dim,
                                  attention_backend="flex" if kind == "flex" else "sdpa")
        inputs = prepare_attention(config, unpadded, slopes, torch.bfloat16)
        if kind == "sdpa":
            inputs.sdpa_bias = None  # no bias: not ALiBi, a floor

        def attend(qkv):
            return attention(qkv, inputs, 0.0)
    attend = torch.compile(attend)
    if kind == "sdpa_alibi_cudnn":  # the backend is chosen when the call is traced
        from torch.nn.attention import SDPBackend, sdpa_kernel
        compiled = attend

        def attend(qkv):
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return compiled(qkv)

    def step():
        torch.autograd.grad(attend(qkv), [qkv], grad)
    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=32768, help="tokens per step (default 32768 = 256 x 128)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--only", choices=["ffn", "attention"], default=None)
    p.add_argument("--sweep-flex", action="store_true", help="time FlexAttention's kernel options on full rows")
    p.add_argument("--max-autotune", action="store_true",
                   help="also time the GeGLU block compiled with mode=max-autotune-no-cudagraphs (slow to compile)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch._dynamo.config.cache_size_limit = 64
    results = []

    def record(group: str, name: str, make):
        torch._dynamo.reset()
        try:
            ms = median_ms(make(), args.warmup, args.steps)
        except Exception as err:  # one failing option must not lose the others
            traceback.print_exc()
            ms = None
            print(f"{group} | {name}: failed: {describe(err)}")
        results.append({"group": group, "case": name, "ms": ms})
        print(f"{group:28s} {name:58s} {'failed' if ms is None else f'{ms:8.3f} ms'}", flush=True)

    if args.only in (None, "ffn"):
        for name, overrides in FFN_VARIANTS.items():
            record(f"GeGLU block, T={args.tokens}", name, lambda o=overrides: ffn_case(o, args.tokens))
        record(f"GeGLU block, T={args.tokens}", "one [T, 2I] GEMM then split (before session 4), hash dropout",
               lambda: ffn_case({}, args.tokens, OneGemmGatedMLP))
        record(f"GeGLU block, T={args.tokens}", "its 6 GEMMs alone, eager (floor)", lambda: gemm_floor_case(args.tokens))
    if args.only in (None, "attention"):
        generator = torch.Generator().manual_seed(0)
        for lengths in ("full", "uniform"):
            rows = packed_row_lengths(args.tokens, args.seq, lengths, generator)
            group = f"attention, {lengths} rows of <= {args.seq}"
            # Kernel options (--sweep-flex) on full rows only; compilation is the time cost here.
            sweep = FLEX_OPTIONS if lengths == "full" and args.sweep_flex else {"flex, default options": None}
            for name, options in sweep.items():
                record(group, name, lambda o=options: attention_case("flex", o, rows))
            # Smaller mask blocks waste less work on blocks shared by two sequences (padded rows), at the
            # price of smaller kernel tiles.
            record(group, "flex, 64-token mask blocks, tiles 64x64 / bwd 32-64",
                   lambda: attention_case("flex", SMALL_BLOCK_OPTIONS, rows, block=64))
            record(group, "sdpa, re-padded, ALiBi bias (model's sdpa backend)",
                   lambda: attention_case("sdpa_alibi", None, rows))
            record(group, "sdpa cuDNN backend, re-padded, ALiBi bias",
                   lambda: attention_case("sdpa_alibi_cudnn", None, rows))
            record(group, "sdpa, re-padded, no bias (not ALiBi: a floor)", lambda: attention_case("sdpa", None, rows))
            if lengths == "full":
                record(group, "flex, dense [B, heads, S, d] layout, no block mask",
                       lambda: attention_case("flex_dense", None, rows))
    if args.max_autotune and args.only in (None, "ffn"):
        record(f"GeGLU block, T={args.tokens}", "paper, hash dropout, compile mode=max-autotune-no-cudagraphs",
               lambda: ffn_case({}, args.tokens, mode="max-autotune-no-cudagraphs"))

    print(f"\n{torch.cuda.get_device_name()} | torch {torch.__version__} | fwd+bwd per layer, median of {args.steps}")
    for r in results:
        ms = "failed" if r["ms"] is None else f"{r['ms']:.3f}"
        print(f"| {r['group']} | {r['case']} | {ms} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "tokens": args.tokens,
                       "seq": args.seq, "steps": args.steps, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
