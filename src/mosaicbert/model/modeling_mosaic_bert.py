"""MosaicBERT (Portes et al., NeurIPS 2023): a BERT encoder built for fast pretraining.

What differs from Hugging Face BERT, each switchable in :class:`MosaicBertConfig`:
  * ALiBi attention bias instead of position embeddings (any sequence length works);
  * unpadding: padding is dropped right after the input ids are read; every layer runs on a flat
    ``[total_tokens, hidden]`` tensor and padding comes back only where a caller needs ``[B, S, ...]``;
  * GeGLU feed-forward; LayerNorm in the autocast dtype; post-LN (pre-LN optional);
  * the MLM head runs only on masked positions when labels are given.

Attention backends: flash-attn's varlen kernel (optional package); PyTorch SDPA on q, k, v re-padded to
``[B, heads, S, head_dim]`` with one additive ALiBi + key-padding bias built per forward; SDPA on rows
that each hold several short sequences, with a block-diagonal bias (``sdpa_packed``: fewer rows to attend
over when rows are padded; the default without flash-attn when the caller plans the rows on the host, as
the Composer model does, else ``sdpa``); or PyTorch FlexAttention on the packed
tokens with a per-sequence block mask. All compute the same function; a checkpoint from one runs with any
other.

Layout of this file, top to bottom: ALiBi slopes, (un)padding, attention backends, layers, the
``PreTrainedModel`` classes. It imports only torch and transformers (flash_attn if present) so that it
ships verbatim inside exported Hugging Face folders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from .configuration_mosaic_bert import MosaicBertConfig

try:  # transformers 5 initialisers skip tensors already loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # transformers 4
    from torch.nn import init

try:  # optional fast path; never required
    from flash_attn import flash_attn_varlen_qkvpacked_func
except ImportError:
    flash_attn_varlen_qkvpacked_func = None

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:
    BlockMask = flex_attention = None

IGNORE_INDEX = -100
FLEX_BLOCK_SIZE = 128


# ----------------------------------------------------------------------------------------------
# ALiBi
# ----------------------------------------------------------------------------------------------
def alibi_slopes(num_heads: int) -> list[float]:
    """Per-head ALiBi slopes (Press et al. 2022).

    For n a power of two: the geometric sequence starting at and with ratio 2^(-8/n). Otherwise the
    slopes of the closest smaller power of two, then every other slope of twice that power.
    """
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


# ----------------------------------------------------------------------------------------------
# Unpadding
# ----------------------------------------------------------------------------------------------
def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along the first dimension."""
    return torch.index_select(x, 0, index)


def _spread_rows(x: torch.Tensor, token_of: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``[T, ...]`` -> ``[B*S, ...]``: row p is ``x[token_of[p]]`` where ``keep[p]``, zeros elsewhere.

    A gather and a select, which Inductor fuses into one kernel that writes every output row once: no
    zero-filled buffer written first and then scattered into.
    """
    if x.shape[0] == 0:  # a batch of padding only: nothing to gather from
        return x.new_zeros(keep.shape[0], *x.shape[1:])
    rows = _gather_rows(x, token_of)
    return torch.where(keep.view(-1, *[1] * (x.dim() - 1)), rows, 0)


class _Unpad(torch.autograd.Function):
    """``[B*S, ...]`` -> ``[T, ...]``, whose backward spreads the gradient back with a gather. Autograd's
    own backward of ``index_select`` is an ``index_add``: a zero fill, then a scatter of atomic adds."""

    @staticmethod
    def forward(ctx, x, indices, token_of, keep):
        ctx.save_for_backward(token_of, keep)
        return _gather_rows(x, indices)

    @staticmethod
    def backward(ctx, grad):
        token_of, keep = ctx.saved_tensors
        return _spread_rows(grad, token_of, keep), None, None, None


class _Pad(torch.autograd.Function):
    """``[T, ...]`` -> ``[B*S, ...]`` with zeros at padding; backward gathers the real rows' gradient."""

    @staticmethod
    def forward(ctx, x, indices, token_of, keep):
        ctx.save_for_backward(indices)
        return _spread_rows(x, token_of, keep)

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        return _gather_rows(grad, indices), None, None, None


@dataclass
class Unpadded:
    """Where the real tokens of a right- (or left-) padded ``[B, S]`` batch live.

    indices: ``[T]`` positions of the real tokens in the flattened ``[B*S]`` batch (ascending, except in
        packed rows); None when every position is real (then (un)padding is a reshape).
    token_of: ``[B*S]`` for each position, the index of its token in ``[T]`` (at padding, that of the last
        real token before it, or 0; never read there); None when ``indices`` is.
    cu_seqlens: ``[B+1]`` int32 cumulative sequence lengths; sequence b is rows cu[b]:cu[b+1].
    seqlens: ``[B]`` int32 sequence lengths.
    mask: ``[B, S]`` bool, True at real tokens.
    batch, seqlen: B and S.
    num_tokens: T.
    segments: for a layout of rows holding several sequences (:meth:`packed`), ``[rows, S]``: the sequence
        each position holds, -1 at padding; None for one sequence per row.

    In a packed layout, ``indices``, ``token_of``, ``mask`` and ``batch`` describe the rows (``rows`` in
    place of B), while ``cu_seqlens`` and ``seqlens`` still describe the B sequences.
    """

    indices: Optional[torch.Tensor]
    token_of: Optional[torch.Tensor]
    cu_seqlens: torch.Tensor
    seqlens: torch.Tensor
    mask: torch.Tensor  # [B, S] bool
    batch: int
    seqlen: int
    num_tokens: int
    segments: Optional[torch.Tensor] = None

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor, num_tokens: Optional[int] = None) -> "Unpadded":
        """attention_mask: ``[B, S]`` of 1 (real token) / 0 (padding); real tokens must be contiguous.

        ``num_tokens`` (the mask's sum, known on the host, e.g. from the collator) avoids the one
        device-to-host sync that ``nonzero`` would otherwise cost: every later shape depends on it.
        """
        B, S = attention_mask.shape
        seqlens = attention_mask.sum(dim=-1, dtype=torch.int32)
        cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
        flat = attention_mask.flatten()
        if num_tokens is None:
            indices = torch.nonzero(flat, as_tuple=False).flatten()
            num_tokens = indices.numel()
        elif num_tokens == B * S:
            indices = None
        else:
            indices = torch.nonzero_static(flat, size=num_tokens).flatten()
        token_of = None
        if indices is not None:
            token_of = (torch.cumsum(flat != 0, dim=0) - 1).clamp_(min=0)
        return cls(indices, token_of, cu_seqlens, seqlens, attention_mask.bool(), B, S, num_tokens)

    def packed(self, row_starts: torch.Tensor, num_rows: int) -> "Unpadded":
        """The same tokens laid out in ``num_rows`` rows of S positions, several sequences to a row:
        sequence b occupies positions ``row_starts[b]`` onwards of the flattened ``[num_rows * S]`` layout
        (from :func:`pack_rows`). ``pad``/``unpad`` of the result move tokens into and out of that layout;
        its ``segments`` say which positions may attend to which."""
        S, T, device = self.seqlen, self.num_tokens, self.cu_seqlens.device
        token = torch.arange(T, device=device)
        # Each token's sequence: its row in the [B, S] batch.
        sequence = (self.indices if self.indices is not None else token) // S
        starts = row_starts.to(device=device, dtype=torch.long)
        position = starts[sequence] + token - self.cu_seqlens.long()[sequence]
        size = num_rows * S
        token_of = torch.zeros(size, dtype=torch.long, device=device).index_put_((position,), token)
        keep = torch.zeros(size, dtype=torch.bool, device=device).index_put_(
            (position,), torch.ones_like(token, dtype=torch.bool))
        segments = torch.full((size,), -1, dtype=torch.long, device=device).index_put_((position,), sequence)
        return Unpadded(position, token_of, self.cu_seqlens, self.seqlens, keep.view(num_rows, S), num_rows, S, T,
                        segments.view(num_rows, S))

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, ...]`` -> ``[T, ...]``."""
        if self.indices is None:
            return x.flatten(0, 1)
        return _Unpad.apply(x.flatten(0, 1), self.indices, self.token_of, self.mask.flatten())

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, ...]`` -> ``[B, S, ...]`` with zeros at padding."""
        if self.indices is None:
            return x.view(self.batch, self.seqlen, *x.shape[1:])
        out = _Pad.apply(x, self.indices, self.token_of, self.mask.flatten())
        return out.view(self.batch, self.seqlen, *x.shape[1:])


def pack_rows(lengths: list[int], seqlen: int) -> tuple[list[int], int]:
    """Places sequences of ``lengths`` (each at most ``seqlen``) into rows of ``seqlen`` positions, several
    to a row where they fit: the longest sequence left opens a row, which the shortest ones left then fill
    while they fit. Returns where each sequence starts in the flattened ``[rows * seqlen]`` layout, and the
    number of rows. One pass after a sort, on the host (the collator's ``row_lengths``); on lengths
    uniform in [S/4, S] it needs about 0.7 rows per sequence (docs/performance.md gives the command)."""
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])
    starts = [0] * len(lengths)
    first, last, rows = 0, len(order) - 1, 0
    while first <= last:
        opener = order[first]
        first += 1
        starts[opener], used = rows * seqlen, lengths[opener]
        while last >= first and used + lengths[order[last]] <= seqlen:
            starts[order[last]] = rows * seqlen + used
            used += lengths[order[last]]
            last -= 1
        rows += 1
    return starts, rows


# ----------------------------------------------------------------------------------------------
# Attention backends
# ----------------------------------------------------------------------------------------------
def reads_host_plan(requested: str) -> bool:
    """Whether attention ``requested`` uses a packing plan made on the host, when the caller makes one:
    ``sdpa_packed``, and ``auto`` where flash-attn (which needs none) is not installed. The caller decides
    before it knows the device and dtype, so with flash-attn installed ``auto`` gets no plan even where it
    falls back to SDPA (fp32, CPU): it then attends over one row per sequence."""
    return requested == "sdpa_packed" or (requested == "auto" and flash_attn_varlen_qkvpacked_func is None)


def resolve_attention_backend(requested: str, device: torch.device, dtype: torch.dtype,
                              host_plan: bool = False) -> str:
    """Map ``auto`` to the fastest backend available here; check an explicit request can run.

    ``auto``: flash-attn's varlen kernel when flash-attn provides it (CUDA, fp16/bf16), else SDPA, on packed
    rows (``sdpa_packed``) when the caller made the packing plan on the host (``host_plan``; the Composer
    model does, from the collator's row lengths), else one row per sequence (``sdpa``: planning here would
    wait for the device). On an H100 (torch 2.11, BERT-base, compiled; docs/performance.md) packed rows ran
    1.05x faster than ``sdpa`` at rows of 32-128 tokens (sequence 128, batch 256) and 1.07x at 128-512
    (sequence 512, batch 64), the same at full rows; ``sdpa`` beat FlexAttention at full and at padded
    rows (H200, sequence 128).
    """
    half = dtype in (torch.float16, torch.bfloat16)
    if requested == "auto":
        if device.type == "cuda" and flash_attn_varlen_qkvpacked_func is not None and half:
            return "flash_attn"
        return "sdpa_packed" if host_plan else "sdpa"
    if requested == "flash_attn":
        if flash_attn_varlen_qkvpacked_func is None or device.type != "cuda" or not half:
            raise RuntimeError(
                "attention_backend='flash_attn' needs flash-attn's flash_attn_varlen_qkvpacked_func "
                "(flash-attn 2; flash-attn 4's flash_attn.cute does not provide it), a CUDA device and "
                "fp16/bf16 activations (autocast). Install flash-attn 2, or set attention_backend to "
                "'auto', 'flex', 'sdpa' or 'sdpa_packed'."
            )
    if requested == "flex" and flex_attention is None:
        raise RuntimeError(
            "attention_backend='flex' needs torch>=2.5 (torch.nn.attention.flex_attention); "
            "use 'sdpa', 'sdpa_packed' or 'auto'."
        )
    return requested


@dataclass
class AttentionInputs:
    """Per-forward attention metadata, built once and shared by every layer."""

    backend: str
    unpadded: Unpadded
    slopes: torch.Tensor  # [heads] float32
    sdpa_rows: Optional[Unpadded] = None  # sdpa: the rows attended over (``unpadded``, or packed rows)
    sdpa_bias: Optional[torch.Tensor] = None  # [rows, heads, S, S] ALiBi + key padding, compute dtype
    block_mask: Optional["BlockMask"] = None  # flex: one block-diagonal mask over the packed tokens
    max_seqlen: int = 0  # flash_attn


def sdpa_bias(unpadded: Unpadded, slopes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, heads, S, S]``: -slope * |i - j| on real keys, the dtype's minimum on padded keys. For packed
    rows (``unpadded.segments``), the minimum also wherever query and key belong to different sequences:
    within one sequence |i - j| is the in-sequence distance, as rows hold each sequence contiguously.

    Built once per forward and read by every layer. It is written out in full even without padding: one
    ``[heads, S, S]`` bias expanded over the batch (stride 0) did not make the step faster
    (docs/performance.md; benchmarks/microbench.py --only sdpa times both). Rows are allocated S rounded up to a
    multiple of 8 wide and then cut to S: SDPA needs the row stride aligned to 8 elements and would
    otherwise copy the bias into an aligned one in every layer.
    """
    S = unpadded.seqlen
    width = -(-S // 8) * 8
    pos = torch.arange(width, device=slopes.device)
    distance = (pos[None, :] - pos[:S, None]).abs()  # [S, width]
    alibi = (-slopes[:, None, None] * distance[None]).to(dtype)  # [heads, S, width]
    if unpadded.segments is None:
        hidden = F.pad(~unpadded.mask, (0, width - S), value=True)[:, None, None, :]  # [B, 1, 1, width]
    else:
        key = F.pad(unpadded.segments, (0, width - S), value=-1)[:, None, None, :]  # [rows, 1, 1, width]
        hidden = (key < 0) | (key != unpadded.segments[:, None, :, None])  # [rows, 1, S, width]
    return alibi.masked_fill(hidden, torch.finfo(dtype).min)[..., :S]


def document_block_mask(cu_seqlens: torch.Tensor, total: int, block: int = FLEX_BLOCK_SIZE) -> "BlockMask":
    """FlexAttention block mask letting each token attend only within its own sequence.

    Built directly from ``cu_seqlens`` in O(T / block) memory (``create_block_mask`` would evaluate the
    mask on every block pair). Blocks lying inside one sequence are marked full so the kernel skips
    the mask there; boundary blocks are partial and use ``mask_mod``.
    """
    device = cu_seqlens.device
    cu = cu_seqlens.long()
    # doc_ids[t] = the last sequence b with cu[b] <= t: the count of starts cu[1..B-1] at or before t (an
    # empty sequence shares its start with the next one, so it is counted and skipped). A cumsum, not
    # repeat_interleave: Inductor inlined repeat_interleave's pointwise result into the FlexAttention
    # kernel together with a buffer of unfixed layout, and compiled inference on CUDA failed ("convert
    # FlexibleLayout to FixedLayout first", torch 2.11); a scan's result is a real buffer. Starts at
    # `total` (trailing empty sequences) fall past the last token and add nothing.
    starts = cu[1:-1]
    doc_ids = torch.zeros(total, dtype=torch.long, device=device)
    if total > 0:
        doc_ids = doc_ids.index_put_((starts.clamp(max=total - 1),), (starts < total).long(),
                                     accumulate=True).cumsum(0)
    n = (total + block - 1) // block
    q_first = torch.arange(n, device=device) * block
    q_last = (q_first + block).clamp(max=total) - 1
    d_first, d_last = doc_ids[q_first], doc_ids[q_last]
    kv_lo = cu[d_first] // block  # first kv block any row of this q block can see
    kv_hi = (cu[d_last + 1] + block - 1) // block  # one past the last
    # Full blocks exist only when the whole q block lies in one sequence: the kv blocks inside it.
    one_doc = (d_first == d_last) & (q_first + block <= total)
    full_lo = torch.where(one_doc, (cu[d_first] + block - 1) // block, kv_hi)
    full_hi = torch.where(one_doc, cu[d_first + 1] // block, kv_hi).maximum(full_lo)
    n_left, n_right = full_lo - kv_lo, kv_hi - full_hi
    k = torch.arange(n, device=device)[None, :]
    partial_idx = torch.where(k < n_left[:, None], kv_lo[:, None] + k, full_hi[:, None] + k - n_left[:, None])
    full_idx = full_lo[:, None] + k

    def same_sequence(b, h, q_idx, kv_idx):
        return doc_ids[q_idx] == doc_ids[kv_idx]

    def as_mask(x):
        return x.clamp(0, n - 1).to(torch.int32)[None, None]

    return BlockMask.from_kv_blocks(
        (n_left + n_right).to(torch.int32)[None, None],
        as_mask(partial_idx),
        (full_hi - full_lo).to(torch.int32)[None, None],
        as_mask(full_idx),
        BLOCK_SIZE=block,
        mask_mod=same_sequence,
        seq_lengths=(total, total),
    )


def alibi_score_mod(slopes: torch.Tensor):
    """FlexAttention ``score_mod`` adding ALiBi's -slope[h] * |i - j|. On the packed layout the distance
    of two tokens of one sequence equals their in-sequence distance (the block mask keeps sequences apart)."""
    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    return alibi


_compiled_flex_attention = None


def _flex_attention_fn(device: torch.device):
    """FlexAttention must be compiled to use its fused kernel on CUDA (eager is a dense fallback)."""
    global _compiled_flex_attention
    if device.type != "cuda" or torch.compiler.is_compiling():
        return flex_attention
    if _compiled_flex_attention is None:
        _compiled_flex_attention = torch.compile(flex_attention)
    return _compiled_flex_attention


def attention(qkv: torch.Tensor, inputs: AttentionInputs, dropout_p: float) -> torch.Tensor:
    """Multi-head attention with ALiBi on unpadded tokens.

    qkv: ``[T, 3, heads, head_dim]``. Returns ``[T, heads, head_dim]``.
    """
    if inputs.backend == "flash_attn":
        return flash_attn_varlen_qkvpacked_func(
            qkv, inputs.unpadded.cu_seqlens, inputs.max_seqlen, dropout_p=dropout_p,
            causal=False, alibi_slopes=inputs.slopes,
        )
    if inputs.backend == "flex":
        if dropout_p > 0:
            raise ValueError("FlexAttention has no attention dropout; set attention_probs_dropout_prob=0.")
        q, k, v = qkv.permute(1, 2, 0, 3).unsqueeze(1).unbind(0)  # each [1, heads, T, head_dim]
        out = _flex_attention_fn(qkv.device)(q, k, v, score_mod=alibi_score_mod(inputs.slopes),
                                             block_mask=inputs.block_mask)
        return out[0].transpose(0, 1)
    # sdpa: restore padding, attend with an additive bias, drop padding again. q, k and v are copied out
    # of the padded [B, S, 3, heads, head_dim] tensor into one [3, B, S, heads, head_dim] tensor, so
    # that each is contiguous in SDPA's native [B, S, heads, head_dim] layout: on an H200 that ran faster
    # than SDPA on strided views of the interleaved tensor, at full and at padded rows
    # (benchmarks/microbench.py --only sdpa). Query rows at padding see the real keys of their row (a row
    # of padding only sees uniform weights over zero values): finite outputs, dropped by unpad, whose
    # zero gradient adds nothing to q, k or v. sdpa_packed runs the same on rows that hold several
    # sequences: fewer rows, a block-diagonal bias; a padding position there sees uniform weights.
    u = inputs.sdpa_rows
    q, k, v = u.pad(qkv).permute(2, 0, 1, 3, 4).contiguous().transpose(2, 3).unbind(0)  # each [B, heads, S, d]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=inputs.sdpa_bias, dropout_p=dropout_p)
    # The efficient and flash kernels write out as [B, S, heads, head_dim]: the transpose is a view.
    return u.unpad(out.transpose(1, 2))


def prepare_attention(config: MosaicBertConfig, unpadded: Unpadded, slopes: torch.Tensor,
                      dtype: torch.dtype, max_seqlen: Optional[int] = None,
                      attention_row_starts: Optional[torch.Tensor] = None,
                      num_attention_rows: Optional[int] = None) -> AttentionInputs:
    """The metadata every layer's attention reads. For ``sdpa_packed``, ``attention_row_starts`` and
    ``num_attention_rows`` are :func:`pack_rows`'s plan when the caller made it on the host; without them
    the plan is made here from the row lengths, a device sync."""
    if (attention_row_starts is None) != (num_attention_rows is None):
        raise ValueError("Give attention_row_starts and num_attention_rows together (pack_rows returns both), "
                         "or neither.")
    backend = resolve_attention_backend(config.attention_backend, slopes.device, dtype,
                                        host_plan=attention_row_starts is not None)
    inputs = AttentionInputs(backend, unpadded, slopes)
    if backend in ("sdpa", "sdpa_packed"):
        rows = unpadded
        if backend == "sdpa_packed" and unpadded.indices is not None:  # full rows have nothing to pack
            if attention_row_starts is None:
                starts, num_attention_rows = pack_rows(unpadded.seqlens.tolist(), unpadded.seqlen)
                attention_row_starts = torch.tensor(starts, device=slopes.device)
            if num_attention_rows < unpadded.batch:  # else packing saves nothing: no scatter, plain bias
                rows = unpadded.packed(attention_row_starts, num_attention_rows)
        inputs.sdpa_rows = rows
        inputs.sdpa_bias = sdpa_bias(rows, slopes, dtype)
    elif backend == "flex":
        inputs.block_mask = document_block_mask(unpadded.cu_seqlens, unpadded.num_tokens)
    else:
        inputs.max_seqlen = max_seqlen if max_seqlen is not None else int(unpadded.seqlens.max())
    return inputs


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in: the autocast dtype when autocast is on, else the tensor's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


# ----------------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------------
def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash on int32 tensors (xorshift-multiply with the constants of
    C. Wellons' "lowbias32"). Products wrap modulo 2^32; the masks make the right shifts logical."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x7FEB352D
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * -0x7B935975  # 0x846CA68B as a signed int32
    return x ^ ((x >> 16) & 0xFFFF)


def hash_keep_mask(shape: torch.Size, p: float, seed: torch.Tensor) -> torch.Tensor:
    """Bernoulli(1 - p) keep mask of ``shape``: a hash of each element's flat index and the two int32
    words of ``seed``. Keep when the hash, read as a uniform int32, lies at or above -2^31 + p * 2^32."""
    dropped = round(p * 2**32)  # how many of the 2^32 hash values drop an element
    if dropped >= 2**32:  # p within 2^-33 of 1: the threshold would not fit in an int32
        return torch.zeros(shape, dtype=torch.bool, device=seed.device)
    index = torch.arange(math.prod(shape), device=seed.device, dtype=torch.int32).view(shape)
    bits = _mix32(_mix32(index ^ seed[0]) ^ seed[1])
    return bits >= dropped - 2**31


def _recomputation_may_redraw_seeds() -> bool:
    """Whether AOTAutograd's partitioner may recompute random ops in backward (then the hash's seed would
    be drawn again there and backward would apply a different mask): only under non-default settings."""
    config = torch._functorch.config
    return bool(getattr(config, "aggressive_recomputation", False)) or \
        getattr(config, "activation_memory_budget", 1.0) < 1.0


class MosaicBertDropout(nn.Dropout):
    """Dropout whose mask, under torch.compile, is a hash of the element index and a per-call seed.

    Inductor makes each random number of ``F.dropout`` with a Philox round function, a few dozen integer
    operations per element. The hash costs about 25, fuses into the neighbouring kernel, and backward
    rebuilds the mask from the saved seed (benchmarks/microbench.py --only ffn times both dropouts). Seeds
    come from torch's generator, so runs stay reproducible under ``torch.manual_seed``. Eager mode,
    ``fast_dropout=False`` and partitioner settings that could recompute the seed use ``F.dropout``.
    """

    def __init__(self, p: float, fast: bool = True):
        super().__init__(p)
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.p > 0 and self.fast and torch.compiler.is_compiling()
                and 0 < x.numel() < 2**31) or _recomputation_may_redraw_seeds():
            return super().forward(x)
        if self.p >= 1:
            return x * 0.0  # as F.dropout: zeros that stay in the autograd graph
        seed = torch.randint(-2**31, 2**31, (2,), device=x.device, dtype=torch.int32)
        return torch.where(hash_keep_mask(x.shape, self.p, seed), x * (1.0 / (1.0 - self.p)), 0.0)


# ----------------------------------------------------------------------------------------------
# Layers (all on unpadded [T, hidden] tensors)
# ----------------------------------------------------------------------------------------------
class MosaicBertLayerNorm(nn.LayerNorm):
    """LayerNorm that runs in the autocast dtype (bf16) when ``low_precision`` is set.

    Autocast keeps layer_norm in fp32; the paper runs it in bf16 to halve its memory traffic.
    """

    def __init__(self, hidden_size: int, eps: float, low_precision: bool):
        super().__init__(hidden_size, eps=eps)
        self.low_precision = low_precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        if not (self.low_precision and torch.is_autocast_enabled(device)):
            return super().forward(x)
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device_type=device, enabled=False):
            return F.layer_norm(x.to(dtype), self.normalized_shape, self.weight.to(dtype),
                                self.bias.to(dtype), self.eps)


def _layer_norm(config: MosaicBertConfig) -> MosaicBertLayerNorm:
    return MosaicBertLayerNorm(config.hidden_size, config.layer_norm_eps, config.low_precision_layernorm)


class MosaicBertEmbeddings(nn.Module):
    """Word + token-type embeddings (no position embeddings: ALiBi), LayerNorm, dropout. ``[T] -> [T, H]``."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = _layer_norm(config)
        self.dropout = MosaicBertDropout(config.hidden_dropout_prob, config.fast_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class MosaicBertAttention(nn.Module):
    """Fused QKV projection, ALiBi attention, output projection, dropout, residual, LayerNorm."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = MosaicBertDropout(config.hidden_dropout_prob, config.fast_dropout)
        self.LayerNorm = _layer_norm(config)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.prenorm = config.prenorm

    def forward(self, hidden: torch.Tensor, inputs: AttentionInputs) -> torch.Tensor:
        """hidden: ``[T, H]`` -> ``[T, H]``."""
        x = self.LayerNorm(hidden) if self.prenorm else hidden
        qkv = self.Wqkv(x).view(-1, 3, self.num_heads, self.head_dim)
        context = attention(qkv, inputs, self.attention_dropout if self.training else 0.0)
        out = self.dropout(self.out(context.flatten(1)))
        return hidden + out if self.prenorm else self.LayerNorm(hidden + out)


class MosaicBertGatedMLP(nn.Module):
    """GeGLU feed-forward: ``wo(dropout(gelu(x W_gate) * x W_value))``, residual, LayerNorm.

    One input projection weight of 2 x intermediate rows (gate rows first) with no bias, as in the paper's
    code. It is applied as two GEMMs, one per half of the weight: the GELU·mul then reads two contiguous
    ``[T, I]`` tensors and its backward writes two, instead of slicing one ``[T, 2I]`` tensor forward and
    concatenating its gradient backward (benchmarks/microbench.py --only ffn times both layouts).
    ``glu_dropout="output"`` moves the dropout after ``wo`` (as BERT places it): 4x fewer masked
    elements.
    """

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.act = ACT2FN[config.hidden_act]
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = MosaicBertDropout(config.hidden_dropout_prob, config.fast_dropout)
        self.dropout_on_intermediate = config.glu_dropout == "intermediate"
        self.LayerNorm = _layer_norm(config)
        self.prenorm = config.prenorm

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: ``[T, H]`` -> ``[T, H]``."""
        x = self.LayerNorm(hidden) if self.prenorm else hidden
        gate_weight, value_weight = self.gated_layers.weight.split(self.intermediate_size, dim=0)
        glu = self.act(F.linear(x, gate_weight)) * F.linear(x, value_weight)  # [T, intermediate]
        if self.dropout_on_intermediate:
            out = self.wo(self.dropout(glu))
        else:
            out = self.dropout(self.wo(glu))
        return hidden + out if self.prenorm else self.LayerNorm(hidden + out)


class MosaicBertLayer(nn.Module):
    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.attention = MosaicBertAttention(config)
        self.mlp = MosaicBertGatedMLP(config)

    def forward(self, hidden: torch.Tensor, inputs: AttentionInputs) -> torch.Tensor:
        return self.mlp(self.attention(hidden, inputs))


class MosaicBertEncoder(nn.Module):
    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(MosaicBertLayer(config) for _ in range(config.num_hidden_layers))
        # Pre-LN leaves the residual stream un-normalised: normalise once at the end.
        self.final_layernorm = _layer_norm(config) if config.prenorm else None

    def forward(self, hidden: torch.Tensor, inputs: AttentionInputs) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, inputs)
        return self.final_layernorm(hidden) if self.final_layernorm is not None else hidden


class MosaicBertPooler(nn.Module):
    """tanh(dense(first token)) as in BERT. ``[B, H] -> [B, H]``."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(first_token))


class MosaicBertPredictionHead(nn.Module):
    """MLM head: dense, GELU, LayerNorm, then the decoder tied to the word embeddings. ``[N, H] -> [N, V]``."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = _layer_norm(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden))))


# ----------------------------------------------------------------------------------------------
# Pretrained models
# ----------------------------------------------------------------------------------------------
class MosaicBertPreTrainedModel(PreTrainedModel):
    config_class = MosaicBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = False
    _no_split_modules = ["MosaicBertLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        """BERT init: weights N(0, initializer_range), zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class MosaicBertModel(MosaicBertPreTrainedModel):
    """The encoder. ``forward`` returns padded ``[B, S, H]`` states; ``encode`` the unpadded ``[T, H]``."""

    def __init__(self, config: MosaicBertConfig, add_pooling_layer: bool = True):
        config.check_values()  # again here: from_pretrained's overrides bypass the config's __init__
        super().__init__(config)
        self.embeddings = MosaicBertEmbeddings(config)
        self.encoder = MosaicBertEncoder(config)
        self.pooler = MosaicBertPooler(config) if add_pooling_layer else None
        # Not a buffer: buffers follow .to(dtype) and meta-device loading; slopes must stay exact fp32.
        self._slopes: dict[torch.device, torch.Tensor] = {}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
               token_type_ids: Optional[torch.Tensor] = None, num_tokens: Optional[int] = None,
               max_seqlen: Optional[int] = None, attention_row_starts: Optional[torch.Tensor] = None,
               num_attention_rows: Optional[int] = None) -> tuple[torch.Tensor, Unpadded]:
        """``[B, S]`` ids -> unpadded hidden states ``[T, H]`` and where those T tokens came from.

        ``num_tokens`` (real tokens in the batch) and ``max_seqlen`` (longest row), when the caller
        knows them on the host, spare the device syncs that would compute them; so do
        ``attention_row_starts`` (``[B]``) and ``num_attention_rows``, :func:`pack_rows`'s plan, for
        ``sdpa_packed``.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
            num_tokens = input_ids.numel()
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        unpadded = Unpadded.from_mask(attention_mask, num_tokens)
        hidden = self.embeddings(unpadded.unpad(input_ids), unpadded.unpad(token_type_ids))
        slopes = self._slopes.get(hidden.device)
        if slopes is None:
            slopes = torch.tensor(alibi_slopes(self.config.num_attention_heads), device=hidden.device)
            self._slopes[hidden.device] = slopes
        inputs = prepare_attention(self.config, unpadded, slopes, compute_dtype(hidden), max_seqlen,
                                   attention_row_starts, num_attention_rows)
        return self.encoder(hidden, inputs), unpadded

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, return_dict: Optional[bool] = None,
                num_tokens: Optional[int] = None, max_seqlen: Optional[int] = None,
                attention_row_starts: Optional[torch.Tensor] = None, num_attention_rows: Optional[int] = None,
                **kwargs) -> BaseModelOutputWithPooling:
        _reject_unsupported(kwargs)
        hidden, unpadded = self.encode(input_ids, attention_mask, token_type_ids, num_tokens, max_seqlen,
                                       attention_row_starts, num_attention_rows)
        pooled = self.pooler(first_tokens(hidden, unpadded)) if self.pooler is not None else None
        out = BaseModelOutputWithPooling(last_hidden_state=unpadded.pad(hidden), pooler_output=pooled)
        return _as_returned(out, return_dict, self.config)


def first_tokens(hidden: torch.Tensor, unpadded: Unpadded) -> torch.Tensor:
    """``[T, H]`` -> ``[B, H]``: each row's first real token ([CLS]); zeros for a row of padding only."""
    if hidden.shape[0] == 0:
        return hidden.new_zeros(unpadded.batch, hidden.shape[1])
    starts = unpadded.cu_seqlens[:-1].long().clamp(max=hidden.shape[0] - 1)  # an empty last row starts at T
    return torch.where((unpadded.seqlens > 0)[:, None], torch.index_select(hidden, 0, starts), 0.0)


def _reject_unsupported(kwargs: dict) -> None:
    """Accept the keyword arguments HF callers pass by habit; refuse the ones we cannot honour."""
    for key in ("output_attentions", "output_hidden_states"):
        if kwargs.get(key):
            raise NotImplementedError(f"MosaicBERT does not return {key.removeprefix('output_')}.")
    # position_ids: ALiBi has no positions to look up, ignoring them is correct.


def _loss_over(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over the targets that are not ``IGNORE_INDEX``; 0, not NaN, when there are none
    (a batch without masked tokens). Divides by the count clamped to 1 rather than branching on it,
    which would need a device sync."""
    if targets.numel() == 0 or logits.numel() == 0:
        return logits.sum() * 0.0
    total = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


def _as_returned(out, return_dict: Optional[bool], config: MosaicBertConfig):
    """The output object, or its tuple when ``return_dict`` (else the config's ``return_dict``) is False,
    as Hugging Face models do."""
    return out if (return_dict if return_dict is not None else config.return_dict) else out.to_tuple()


class MosaicBertForMaskedLM(MosaicBertPreTrainedModel):
    """Masked LM. With labels (and ``mlm_only_masked``), logits are ``[M, V]`` for the M masked tokens,
    in row-major order of the batch (= ``labels[labels != -100]``); otherwise ``[B, S, V]``."""

    _tied_weights_keys = {"cls.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def __init__(self, config: MosaicBertConfig):
        super().__init__(config)
        self.bert = MosaicBertModel(config, add_pooling_layer=False)
        self.cls = MosaicBertPredictionHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.cls.decoder = value

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                return_dict: Optional[bool] = None, num_tokens: Optional[int] = None,
                max_seqlen: Optional[int] = None, num_masked: Optional[int] = None,
                attention_row_starts: Optional[torch.Tensor] = None, num_attention_rows: Optional[int] = None,
                **kwargs) -> MaskedLMOutput:
        """``num_tokens`` / ``max_seqlen`` / ``num_masked`` (masked positions) and, for ``sdpa_packed``,
        ``attention_row_starts`` / ``num_attention_rows``, when known on the host, make the forward pass
        free of device syncs (the recipe's Composer model makes them from the collator's row lengths)."""
        _reject_unsupported(kwargs)
        hidden, unpadded = self.bert.encode(input_ids, attention_mask, token_type_ids, num_tokens, max_seqlen,
                                            attention_row_starts, num_attention_rows)
        if labels is not None and self.config.mlm_only_masked:
            token_labels = unpadded.unpad(labels)  # [T]
            is_masked = token_labels != IGNORE_INDEX
            if num_masked is None:
                masked = torch.nonzero(is_masked, as_tuple=False).flatten()
            else:
                masked = torch.nonzero_static(is_masked, size=num_masked).flatten()
            logits = self.cls(torch.index_select(hidden, 0, masked))  # [M, V]
            loss = _loss_over(logits, torch.index_select(token_labels, 0, masked))
        else:
            logits = unpadded.pad(self.cls(hidden))  # [B, S, V]
            loss = _loss_over(logits, labels) if labels is not None else None
        out = MaskedLMOutput(loss=loss, logits=logits)
        return _as_returned(out, return_dict, self.config)


class MosaicBertForSequenceClassification(MosaicBertPreTrainedModel):
    """Pooler + dropout + linear classifier. ``num_labels == 1`` is regression (MSE)."""

    def __init__(self, config: MosaicBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = MosaicBertModel(config, add_pooling_layer=True)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = MosaicBertDropout(dropout, config.fast_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                return_dict: Optional[bool] = None, **kwargs) -> SequenceClassifierOutput:
        pooled = self.bert(input_ids, attention_mask, token_type_ids, return_dict=True, **kwargs).pooler_output
        logits = self.classifier(self.dropout(pooled))  # [B, num_labels]
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            elif self.config.problem_type == "multi_label_classification":
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            else:
                loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        out = SequenceClassifierOutput(loss=loss, logits=logits)
        return _as_returned(out, return_dict, self.config)


__all__ = [
    "MosaicBertConfig",
    "MosaicBertModel",
    "MosaicBertForMaskedLM",
    "MosaicBertForSequenceClassification",
    "MosaicBertPreTrainedModel",
    "alibi_slopes",
]
