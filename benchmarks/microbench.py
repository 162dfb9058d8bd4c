"""Time the two largest non-GEMM costs of a MosaicBERT step on their own: the GeGLU feed-forward block
(per dropout variant and projection layout, with its six GEMMs alone as a floor, and its elementwise
work alone) and attention (FlexAttention kernel options and layouts; the SDPA path in variants that each
change one thing from the model's).

Each case is one layer's forward + backward under bf16 autocast and torch.compile, on ``--tokens``
unpadded tokens (the step's ``[T, hidden]`` tensor), timed with CUDA events after warm-up: the median of
``--steps`` samples, each the mean of 5 back-to-back runs. Attention runs on rows of ``--seq`` tokens,
``full`` (every row S long) and ``uniform`` (lengths uniform in [S/4, S]), ``--tokens`` real tokens in
all or, with ``--rows``, that many rows as benchmark.py's batches; packed as the model packs them, also
with a block mask of 64-token blocks. Every SDPA variant that computes the model's function
is first checked against the model's own ``attention()`` (output and gradient); one that disagrees is
reported as failed, not timed. Prints one table, writes JSON.

    python benchmarks/microbench.py --tokens 32768 --seq 128 --json benchmarks/out/microbench.json
    python benchmarks/microbench.py --only sdpa --seq 128 --rows 256 --json benchmarks/out/microbench_sdpa_s128.json
    python benchmarks/microbench.py --only sdpa --seq 512 --rows 64 --varlen-experiment \
        --json benchmarks/out/microbench_sdpa_s512.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import traceback

import torch
import torch.nn.functional as F

from mosaicbert.errors import describe
from mosaicbert.model.configuration_mosaic_bert import MosaicBertConfig
from mosaicbert.model.modeling_mosaic_bert import (
    FLEX_BLOCK_SIZE, MosaicBertDropout, MosaicBertGatedMLP, Unpadded, alibi_score_mod, alibi_slopes, attention,
    document_block_mask, prepare_attention,
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
    the input projection as one GEMM into ``[T, 2I]`` that is then split, as the model did before its two-GEMM GeGLU: the GELU·mul
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


def packed_row_lengths(tokens: int, seq: int, lengths: str, generator, rows: int | None = None) -> list[int]:
    """Row lengths adding up to ``tokens``: all ``seq`` (full) or uniform in [seq/4, seq]. With ``rows``:
    that many rows instead (as benchmark.py's batches: fewer real tokens at uniform lengths)."""
    if rows is not None:
        if lengths == "full":
            return [seq] * rows
        return torch.randint(seq // 4, seq + 1, (rows,), generator=generator).tolist()
    if lengths == "full":
        return [seq] * (tokens // seq)
    rows = []
    while sum(rows) < tokens - seq:
        rows.append(int(torch.randint(seq // 4, seq + 1, (1,), generator=generator)))
    return rows + [tokens - sum(rows)] if tokens > sum(rows) else rows


def row_batch(rows: list[int], heads: int, head_dim: int):
    """Unpadded rows as the model sees them: qkv ``[T, 3, heads, head_dim]`` (a leaf), an output gradient
    ``[T, heads, head_dim]``, the ALiBi slopes and the ``Unpadded`` of the padded ``[B, max(rows)]`` batch
    (with the host-known token count, as the collator gives it: full rows need no (un)padding)."""
    total, seq = sum(rows), max(rows)
    qkv = torch.randn(total, 3, heads, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(total, heads, head_dim, device="cuda", dtype=torch.bfloat16)
    slopes = torch.tensor(alibi_slopes(heads), device="cuda")
    lengths = torch.tensor(rows, device="cuda")
    unpadded = Unpadded.from_mask((torch.arange(seq, device="cuda")[None] < lengths[:, None]).long(), total)
    return qkv, grad, slopes, unpadded


def model_attention_inputs(backend: str, unpadded: Unpadded, slopes, heads: int, head_dim: int):
    config = MosaicBertConfig(num_attention_heads=heads, hidden_size=heads * head_dim, attention_backend=backend)
    return prepare_attention(config, unpadded, slopes, torch.bfloat16)


def attention_case(kind: str, options, rows: list[int], heads: int = 12, head_dim: int = 64,
                   block: int = FLEX_BLOCK_SIZE):
    """One layer's FlexAttention on ``rows`` packed as the model packs them. ``flex`` runs the model's own
    ``attention()`` (FlexAttention with its block mask), except with kernel options or another block
    size, which the model does not set; ``flex_dense`` is Flex on ``[B, heads, S, d]`` without a block
    mask (equal rows only)."""
    qkv, grad, slopes, unpadded = row_batch(rows, heads, head_dim)
    total, seq = sum(rows), max(rows)
    if kind == "flex_dense":
        from torch.nn.attention.flex_attention import flex_attention
        assert len(set(rows)) == 1, "the dense layout needs equal rows"

        def attend(qkv):
            q, k, v = qkv.view(len(rows), seq, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            out = flex_attention(q, k, v, score_mod=alibi_score_mod(slopes), kernel_options=options)
            return out.transpose(1, 2).flatten(0, 1)
    elif options is not None or block != FLEX_BLOCK_SIZE:
        from torch.nn.attention.flex_attention import flex_attention
        block_mask = document_block_mask(unpadded.cu_seqlens, total, block)

        def attend(qkv):
            q, k, v = qkv.permute(1, 2, 0, 3).unsqueeze(1).unbind(0)
            out = flex_attention(q, k, v, score_mod=alibi_score_mod(slopes), block_mask=block_mask,
                                 kernel_options=options)
            return out[0].transpose(0, 1)
    else:
        inputs = model_attention_inputs("flex", unpadded, slopes, heads, head_dim)

        def attend(qkv):
            return attention(qkv, inputs, 0.0)
    attend = torch.compile(attend)

    def step():
        torch.autograd.grad(attend(qkv), [qkv], grad)
    return step


# ----------------------------------------------------------------------------------------------
# SDPA variants. Each changes one thing from the model's sdpa path, so that a difference in time has
# one cause; "the earlier path" is the whole previous path.
# ----------------------------------------------------------------------------------------------
def pad_index_copy(u: Unpadded, x):
    """The previous ``Unpadded.pad``: a zero-filled ``[B*S, ...]`` buffer, then ``index_copy``."""
    if u.indices is None:
        return x.view(u.batch, u.seqlen, *x.shape[1:])
    out = x.new_zeros(u.batch * u.seqlen, *x.shape[1:])
    return out.index_copy(0, u.indices, x).view(u.batch, u.seqlen, *x.shape[1:])


def unpad_index_select(u: Unpadded, x):
    """The previous ``Unpadded.unpad``: ``index_select``, whose autograd backward is an ``index_add``."""
    if u.indices is None:
        return x.flatten(0, 1)
    return torch.index_select(x.flatten(0, 1), 0, u.indices)


def bias_materialised(u: Unpadded, slopes, dtype):
    """The previous ``sdpa_bias``: always a ``[B, heads, S, S]`` tensor, rows S wide (not padded to 8)."""
    S = u.seqlen
    pos = torch.arange(S, device=slopes.device)
    bias = -slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs()[None]
    bias = bias[None].expand(u.batch, -1, -1, -1).to(dtype)
    return bias.masked_fill(~u.mask[:, None, None, :], torch.finfo(dtype).min)


def padded_sdpa(qkv, u: Unpadded, bias, layout="interleaved", pad=None, unpad=None):
    """The model's sdpa path with its parts exchangeable. ``layout``: ``interleaved`` (the model: q, k, v
    are strided views of one ``[B, S, 3, heads, d]`` tensor), ``bhsd`` (copied into a contiguous
    ``[3, B, heads, S, d]``) or ``bshd`` (into ``[3, B, S, heads, d]``)."""
    pad = pad or (lambda u, x: u.pad(x))
    unpad = unpad or (lambda u, x: u.unpad(x))
    padded = pad(u, qkv)  # [B, S, 3, heads, d]
    if layout == "interleaved":
        q, k, v = padded.permute(2, 0, 3, 1, 4).unbind(0)
    elif layout == "bhsd":
        q, k, v = padded.permute(2, 0, 3, 1, 4).contiguous().unbind(0)
    else:
        q, k, v = padded.permute(2, 0, 1, 3, 4).contiguous().transpose(2, 3).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return unpad(u, out.transpose(1, 2))


class VarlenEfficientAlibi(torch.autograd.Function):
    """Experimental, not in the model: SDPA's memory-efficient kernel called directly on the packed
    tokens (``cu_seqlens``, as nested tensors use it), with the ALiBi bias given in sequence-local
    coordinates through a stride-0 batch dimension. No padding, no per-batch bias. Relies on private aten
    ops and on the kernel offsetting the bias per sequence; the correctness check decides."""

    @staticmethod
    def forward(ctx, qkv, cu_seqlens, max_seqlen, bias):
        q, k, v = qkv.unsqueeze(0).unbind(2)  # each [1, T, heads, d]
        out, lse, seed, offset, _, _ = torch.ops.aten._efficient_attention_forward(
            q, k, v, bias, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, 0.0, 0, compute_log_sumexp=True)
        ctx.save_for_backward(qkv, out, lse, seed, offset, cu_seqlens, bias)
        ctx.max_seqlen = max_seqlen
        return out[0]

    @staticmethod
    def backward(ctx, grad):
        qkv, out, lse, seed, offset, cu_seqlens, bias = ctx.saved_tensors
        q, k, v = qkv.unsqueeze(0).unbind(2)
        gq, gk, gv, _ = torch.ops.aten._efficient_attention_backward(
            grad.contiguous().unsqueeze(0), q, k, v, bias, out, cu_seqlens, cu_seqlens, ctx.max_seqlen,
            ctx.max_seqlen, lse, 0.0, seed, offset, 0, False)
        return torch.stack([gq[0], gk[0], gv[0]], dim=1), None, None, None


def varlen_alibi_bias(slopes, max_seqlen: int, total: int, dtype):
    """A ``[1, heads, T, T]`` view (the kernel checks these sizes) whose element ``[0, h, i, j]`` is
    -slope[h] * |i - j| for i, j < max_seqlen: rows ``width`` apart, heads ``max_seqlen * width`` apart,
    over storage just large enough for the view's extent (zeros past the ALiBi block)."""
    heads, width = len(slopes), -(-max_seqlen // 8) * 8
    pos = torch.arange(width, device=slopes.device)
    alibi = (-slopes[:, None, None] * (pos[None, :] - pos[:max_seqlen, None]).abs()).to(dtype)
    head_stride = max_seqlen * width
    storage = torch.zeros((heads - 1) * head_stride + (total - 1) * width + total, device=slopes.device, dtype=dtype)
    storage[: heads * head_stride] = alibi.flatten()
    return storage.as_strided((1, heads, total, total), (0, head_stride, width, 1))


SDPA_VARIANTS = {  # name -> (what it computes: "model" = the model's function, "floor" = not ALiBi)
    "sdpa, the model's attention()": "model",
    "sdpa_packed, the model's attention(): several sequences to a row, block-diagonal bias": "model",
    "sdpa, model path, efficient backend forced": "model",
    "sdpa, model path, cuDNN backend forced": "model",
    "sdpa, model path but pad = zeros + index_copy, unpad = index_select (index_add backward)": "model",
    "sdpa, model path but bias always materialised [B, heads, S, S], rows S wide": "model",
    "sdpa, model path but q/k/v copied into contiguous [3, B, heads, S, d]": "model",
    "sdpa, model path but q/k/v copied into [3, B, S, heads, d]": "model",
    "sdpa, the earlier path (index_copy pad, index_select unpad, materialised bias)": "model",
    "sdpa, model path but bias materialised, rows S wide, and q/k/v copied into contiguous [3, B, heads, S, d]": "model",
    "sdpa, model path but q/k/v strided views of the interleaved [B, S, 3, heads, d]": "model",
    "sdpa kernel alone: dense q/k/v leaves [B, heads, S, d], the model's bias, no (un)padding": "kernel",
    "sdpa, model path, no bias (not ALiBi: a floor)": "floor",
}
VARLEN_EXPERIMENT = "efficient kernel on packed tokens (cu_seqlens) + stride-0 ALiBi bias (experimental)"


def sdpa_case(name: str, rows: list[int], heads: int = 12, head_dim: int = 64):
    """One layer's attention through the SDPA variant ``name`` (see ``SDPA_VARIANTS``)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    qkv, grad, slopes, u = row_batch(rows, heads, head_dim)
    inputs = model_attention_inputs("sdpa", u, slopes, heads, head_dim)
    backend = None
    if "the model's attention()" in name:  # sdpa_packed's plan is made here, outside the timed steps
        model_inputs = model_attention_inputs(name.split(",")[0], u, slopes, heads, head_dim)

        def attend(qkv):
            return attention(qkv, model_inputs, 0.0)
    elif "backend forced" in name:
        backend = SDPBackend.EFFICIENT_ATTENTION if "efficient" in name else SDPBackend.CUDNN_ATTENTION

        def attend(qkv):
            return attention(qkv, inputs, 0.0)
    elif "index_copy, unpad" in name:
        def attend(qkv):
            return padded_sdpa(qkv, u, inputs.sdpa_bias, pad=pad_index_copy, unpad=unpad_index_select)
    elif "bias always materialised" in name:
        bias = bias_materialised(u, slopes, torch.bfloat16)

        def attend(qkv):
            return padded_sdpa(qkv, u, bias)
    elif "bias materialised, rows S wide, and q/k/v copied" in name:
        bias = bias_materialised(u, slopes, torch.bfloat16)

        def attend(qkv):
            return padded_sdpa(qkv, u, bias, layout="bhsd")
    elif "strided views of the interleaved" in name:
        def attend(qkv):
            return padded_sdpa(qkv, u, inputs.sdpa_bias, layout="interleaved")
    elif "copied into" in name:
        layout = "bhsd" if "[3, B, heads, S, d]" in name else "bshd"

        def attend(qkv):
            return padded_sdpa(qkv, u, inputs.sdpa_bias, layout=layout)
    elif "the earlier path" in name:
        bias = bias_materialised(u, slopes, torch.bfloat16)

        def attend(qkv):
            return padded_sdpa(qkv, u, bias, pad=pad_index_copy, unpad=unpad_index_select)
    elif "no bias" in name:
        def attend(qkv):
            return padded_sdpa(qkv, u, None)
    elif name == VARLEN_EXPERIMENT:
        bias = varlen_alibi_bias(slopes, max(rows), sum(rows), torch.bfloat16)

        def attend(qkv):
            return VarlenEfficientAlibi.apply(qkv, u.cu_seqlens, max(rows), bias)
    elif "kernel alone" in name:
        return dense_sdpa_step(u, heads, head_dim, inputs.sdpa_bias)
    else:
        raise ValueError(name)
    compiled = torch.compile(attend)
    if backend is not None:  # the backend is chosen when the function is traced
        def run(qkv):
            with sdpa_kernel(backend):
                return compiled(qkv)
    else:
        run = compiled
    if SDPA_VARIANTS.get(name, "model") == "model":
        check_against_model(run, qkv, grad, inputs)

    def step():
        torch.autograd.grad(run(qkv), [qkv], grad)
    return step


def dense_sdpa_step(u: Unpadded, heads: int, head_dim: int, bias):
    """SDPA alone on contiguous ``[B, heads, S, d]`` leaves with the model's bias: what the kernel costs
    without the (un)padding around it (a floor for the layout)."""
    def leaf():
        return torch.randn(u.batch, heads, u.seqlen, head_dim, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True)
    q, k, v = leaf(), leaf(), leaf()
    grad = torch.randn_like(q)
    sdpa = torch.compile(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=bias))

    def step():
        torch.autograd.grad(sdpa(q, k, v), [q, k, v], grad)
    return step


def check_against_model(run, qkv, grad, inputs, limit: float = 2e-2):
    """Output and qkv gradient of ``run`` against the model's eager ``attention()`` (bf16: relative error,
    by norm, below ``limit``). Raises, so that a variant computing something else is not timed."""
    def output_and_grad(fn):
        out = fn(qkv)
        (g,) = torch.autograd.grad(out, [qkv], grad)
        return out.float(), g.float()

    want = output_and_grad(lambda x: attention(x, inputs, 0.0))
    for what, got, ref in zip(("output", "gradient"), output_and_grad(run), want):
        err = ((got - ref).norm() / ref.norm()).item()
        if not err < limit:  # also catches NaN
            raise RuntimeError(f"wrong {what}: relative error {err:.2e} against the model's attention()")


# ----------------------------------------------------------------------------------------------
# GeGLU elementwise work alone
# ----------------------------------------------------------------------------------------------
def glu_elementwise_case(tokens: int, dropout: bool):
    """``gelu(gate) * value`` (and the paper's dropout on it, hash masks) forward and backward on the
    block's two ``[T, intermediate]`` projections, without the GEMMs around it: the memory-bound part of
    the GeGLU block (forward reads 2 and writes 1 such tensor, backward reads 3 and writes 2)."""
    config = MosaicBertConfig()
    act = torch.nn.GELU()
    drop = MosaicBertDropout(config.hidden_dropout_prob if dropout else 0.0).train()

    def rand():
        return torch.randn(tokens, config.intermediate_size, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True)
    gate, value = rand(), rand()
    grad = torch.randn_like(gate)
    glu = torch.compile(lambda g, v: drop(act(g) * v))

    def step():
        torch.autograd.grad(glu(gate, value), [gate, value], grad)
    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=32768, help="tokens per step (default 32768 = 256 x 128)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rows", type=int, default=None,
                   help="attention on this many rows (full: all --seq long; uniform: lengths uniform in "
                        "[seq/4, seq]) instead of --tokens real tokens, e.g. 256 at --seq 128 as benchmark.py")
    p.add_argument("--only", choices=["ffn", "attention", "sdpa"], default=None,
                   help="ffn: the GeGLU cases; attention: Flex and SDPA; sdpa: the SDPA variants alone")
    p.add_argument("--lengths", nargs="+", choices=["full", "uniform"], default=["full", "uniform"])
    p.add_argument("--match", nargs="+", default=None, metavar="TEXT",
                   help="time only the cases whose name contains one of these texts (e.g. 'model' 'before')")
    p.add_argument("--varlen-experiment", action="store_true",
                   help="also time SDPA's efficient kernel on the packed tokens with a stride-0 ALiBi bias "
                        "(private aten ops; last, since a kernel fault would end the run)")
    p.add_argument("--sweep-flex", action="store_true", help="time FlexAttention's kernel options on full rows")
    p.add_argument("--max-autotune", action="store_true",
                   help="also time the GeGLU block compiled with mode=max-autotune-no-cudagraphs (slow to compile)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch._dynamo.config.cache_size_limit = 64
    results = []

    def record(group: str, name: str, make):
        if args.match and not any(text in name for text in args.match):
            return
        torch._dynamo.reset()
        try:
            ms = median_ms(make(), args.warmup, args.steps)
        except Exception as err:  # one failing option must not lose the others
            traceback.print_exc()
            ms = None
            print(f"{group} | {name}: failed: {describe(err)}")
        results.append({"group": group, "case": name, "ms": ms})
        print(f"{group:32s} {name:90s} {'failed' if ms is None else f'{ms:8.3f} ms'}", flush=True)

    if args.only in (None, "ffn"):
        for name, overrides in FFN_VARIANTS.items():
            record(f"GeGLU block, T={args.tokens}", name, lambda o=overrides: ffn_case(o, args.tokens))
        record(f"GeGLU block, T={args.tokens}", "one [T, 2I] GEMM then split (the earlier layout), hash dropout",
               lambda: ffn_case({}, args.tokens, OneGemmGatedMLP))
        record(f"GeGLU block, T={args.tokens}", "its 6 GEMMs alone, eager (floor)", lambda: gemm_floor_case(args.tokens))
        for dropout in (True, False):
            record(f"GeGLU elementwise, T={args.tokens}",
                   f"gelu(gate) * value{', hash dropout' if dropout else ''} alone, no GEMMs",
                   lambda d=dropout: glu_elementwise_case(args.tokens, d))
    if args.only in (None, "attention", "sdpa"):
        generator = torch.Generator().manual_seed(0)
        for lengths in args.lengths:
            rows = packed_row_lengths(args.tokens, args.seq, lengths, generator, args.rows)
            group = f"attention, {lengths}, {len(rows)} rows <= {args.seq}, {sum(rows)} tokens"
            print(group, flush=True)
            if args.only != "sdpa":
                # Kernel options (--sweep-flex) on full rows only; compilation is the time cost here.
                sweep = FLEX_OPTIONS if lengths == "full" and args.sweep_flex else {"flex, default options": None}
                for name, options in sweep.items():
                    record(group, name, lambda o=options, r=rows: attention_case("flex", o, r))
                # Smaller mask blocks waste less work on blocks shared by two sequences (padded rows), at
                # the price of smaller kernel tiles.
                record(group, "flex, 64-token mask blocks, tiles 64x64 / bwd 32-64",
                       lambda r=rows: attention_case("flex", SMALL_BLOCK_OPTIONS, r, block=64))
                if lengths == "full":
                    record(group, "flex, dense [B, heads, S, d] layout, no block mask",
                           lambda r=rows: attention_case("flex_dense", None, r))
            for name in SDPA_VARIANTS:
                record(group, name, lambda n=name, r=rows: sdpa_case(n, r))
        if args.varlen_experiment:  # last: a fault in a private kernel leaves CUDA unusable
            for lengths in args.lengths:
                rows = packed_row_lengths(args.tokens, args.seq, lengths, torch.Generator().manual_seed(0), args.rows)
                record(f"attention, {lengths}, {len(rows)} rows <= {args.seq}, {sum(rows)} tokens", VARLEN_EXPERIMENT,
                       lambda r=rows: sdpa_case(VARLEN_EXPERIMENT, r))
    if args.max_autotune and args.only in (None, "ffn"):
        record(f"GeGLU block, T={args.tokens}", "paper, hash dropout, compile mode=max-autotune-no-cudagraphs",
               lambda: ffn_case({}, args.tokens, mode="max-autotune-no-cudagraphs"))

    print(f"\n{torch.cuda.get_device_name()} | torch {torch.__version__} | fwd+bwd per layer, median of {args.steps}")
    for r in results:
        ms = "failed" if r["ms"] is None else f"{r['ms']:.3f}"
        print(f"| {r['group']} | {r['case']} | {ms} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "tokens": args.tokens,
                       "rows": args.rows, "seq": args.seq, "steps": args.steps, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
