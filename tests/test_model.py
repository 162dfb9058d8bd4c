"""MosaicBERT numerics: every attention backend against an independent float64 reference."""

import copy
import functools
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mosaicbert.model import (
    MosaicBertConfig,
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
    MosaicBertModel,
    alibi_slopes,
)
from mosaicbert.model.modeling_mosaic_bert import (
    Unpadded,
    document_block_mask,
    flash_attn_varlen_qkvpacked_func,
    flex_attention,
    pack_rows,
    sdpa_bias,
)

BACKENDS = ["sdpa", "sdpa_packed"] + (["flex"] if flex_attention is not None else [])


@functools.cache
def flex_trains_on_cpu() -> bool:
    """torch 2.7 runs FlexAttention's backward on CPU; newer torch (2.11) refuses CPU inputs that need
    gradients, so there flex is tested on CPU for its outputs only (on a GPU in full)."""
    q = torch.zeros(1, 1, 16, 16, requires_grad=True)
    try:
        flex_attention(q, q, q)
    except NotImplementedError:
        return False
    return True


def tiny_config(**overrides) -> MosaicBertConfig:
    values = dict(vocab_size=96, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                  intermediate_size=80, hidden_dropout_prob=0.0, attention_backend="sdpa")
    values.update(overrides)
    return MosaicBertConfig(**values)


def random_batch(batch=5, seqlen=23, vocab=96, min_len=1, generator=None):
    """Random ids with random right padding (lengths in [min_len, seqlen]); one row always full."""
    g = generator or torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (batch, seqlen), generator=g)
    lengths = torch.randint(min_len, seqlen + 1, (batch,), generator=g)
    lengths[0] = seqlen
    mask = (torch.arange(seqlen)[None, :] < lengths[:, None]).long()
    types = torch.randint(0, 2, (batch, seqlen), generator=g) * mask
    return ids * mask, mask, types


def published_slopes(n):
    """ALiBi slopes as Press et al. describe them, written out independently of the model code."""
    if n == 8:
        return [2 ** -(i + 1) for i in range(8)]  # 1/2, 1/4, ..., 1/256
    if n == 16:
        return [2 ** (-(i + 1) / 2) for i in range(16)]  # 2^-0.5, 2^-1, ..., 2^-8
    if n == 12:  # the 8-head slopes, then every other one of the 16-head slopes
        return [2 ** -(i + 1) for i in range(8)] + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5]
    raise ValueError(n)


def reference_encoder(model: MosaicBertModel, input_ids, attention_mask, token_type_ids, params=None):
    """Float64, one sequence at a time, no padding anywhere: a list of ``[L_b, H]`` tensors.

    ``params``: float64 copies of the model's parameters by name (leaves requiring grad, to compare
    gradients); by default detached copies."""
    cfg = model.config
    p = params if params is not None else {k: v.detach().double() for k, v in model.state_dict().items()}
    H, nh = cfg.hidden_size, cfg.num_attention_heads
    hd = H // nh
    slopes = torch.tensor(published_slopes(nh) if nh in (8, 12, 16) else alibi_slopes(nh), dtype=torch.float64)

    def ln(x, name):
        return F.layer_norm(x, (H,), p[name + ".weight"], p[name + ".bias"], cfg.layer_norm_eps)

    outputs = []
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b].bool()
        ids, types = input_ids[b][keep], token_type_ids[b][keep]
        L = ids.numel()
        x = p["embeddings.word_embeddings.weight"][ids] + p["embeddings.token_type_embeddings.weight"][types]
        x = ln(x, "embeddings.LayerNorm")
        pos = torch.arange(L, dtype=torch.float64)
        distance = (pos[:, None] - pos[None, :]).abs()
        for i in range(cfg.num_hidden_layers):
            a = f"encoder.layer.{i}.attention"
            inp = ln(x, a + ".LayerNorm") if cfg.prenorm else x
            qkv = inp @ p[a + ".Wqkv.weight"].T + p[a + ".Wqkv.bias"]
            q, k, v = (t.reshape(L, nh, hd).transpose(0, 1) for t in qkv.split(H, dim=-1))
            scores = q @ k.transpose(1, 2) / math.sqrt(hd) - slopes[:, None, None] * distance
            ctx = (scores.softmax(-1) @ v).transpose(0, 1).reshape(L, H)
            out = ctx @ p[a + ".out.weight"].T + p[a + ".out.bias"]
            x = x + out if cfg.prenorm else ln(x + out, a + ".LayerNorm")
            m = f"encoder.layer.{i}.mlp"
            inp = ln(x, m + ".LayerNorm") if cfg.prenorm else x
            h = inp @ p[m + ".gated_layers.weight"].T
            gate, value = h[:, : cfg.intermediate_size], h[:, cfg.intermediate_size:]
            out = (F.gelu(gate) * value) @ p[m + ".wo.weight"].T + p[m + ".wo.bias"]
            x = x + out if cfg.prenorm else ln(x + out, m + ".LayerNorm")
        if cfg.prenorm:
            x = ln(x, "encoder.final_layernorm")
        outputs.append(x)
    return outputs


def relative_error(outputs, refs, mask):
    got = torch.cat([outputs[b][mask[b].bool()].double() for b in range(len(refs))])
    want = torch.cat(refs)
    return ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize("n", [8, 12, 16])
def test_alibi_slopes_match_published_values(n):
    assert alibi_slopes(n) == pytest.approx(published_slopes(n), rel=1e-12)


def test_alibi_slopes_other_head_counts_interleave():
    # 6 heads: the 4-head slopes (2^-2, 2^-4, 2^-6, 2^-8) then 2^-1, 2^-5 from the 8-head ones.
    assert alibi_slopes(6) == pytest.approx([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("prenorm", [False, True])
def test_backend_matches_float64_reference_fp32(backend, prenorm):
    torch.manual_seed(0)
    model = MosaicBertModel(tiny_config(attention_backend=backend, prenorm=prenorm), add_pooling_layer=False).eval()
    for seed in range(3):  # fresh random inputs and padding each time
        ids, mask, types = random_batch(generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            out = model(ids, mask, types).last_hidden_state
        err = relative_error(out, reference_encoder(model, ids, mask, types), mask)
        assert err < 1e-5, f"{backend}: relative error {err:.2e}"
        assert torch.all(out[~mask.bool()] == 0), "padding positions must come back as zeros"


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_float64_reference_bf16_autocast(backend):
    torch.manual_seed(1)
    model = MosaicBertModel(tiny_config(attention_backend=backend), add_pooling_layer=False).eval()
    ids, mask, types = random_batch(generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask, types).last_hidden_state
    err = relative_error(out, reference_encoder(model, ids, mask, types), mask)
    assert err < 2e-2, f"{backend}: relative error {err:.2e} in bf16"


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_padding_and_heavy_padding(backend):
    torch.manual_seed(2)
    model = MosaicBertModel(tiny_config(attention_backend=backend), add_pooling_layer=False).eval()
    full = random_batch(batch=4, seqlen=16, min_len=16)
    heavy = random_batch(batch=6, seqlen=40, min_len=1)
    heavy[1][1:, 3:] = 0  # most rows almost all padding
    for ids, mask, types in (full, (heavy[0] * heavy[1], heavy[1], heavy[2] * heavy[1])):
        with torch.no_grad():
            out = model(ids, mask, types).last_hidden_state
        assert relative_error(out, reference_encoder(model, ids, mask, types), mask) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_equals_unpadded_and_no_leakage(backend):
    torch.manual_seed(3)
    model = MosaicBertModel(tiny_config(attention_backend=backend), add_pooling_layer=False).eval()
    ids, mask, types = random_batch(batch=4, seqlen=20)
    length = int(mask[2].sum())
    with torch.no_grad():
        batched = model(ids, mask, types).last_hidden_state[2, :length]
        alone = model(ids[2:3, :length], mask[2:3, :length], types[2:3, :length]).last_hidden_state[0]
        other_ids = ids.clone()
        other_ids[[0, 1, 3]] = torch.randint(1, 96, (3, 20))
        changed = model(other_ids * mask, mask, types).last_hidden_state[2, :length]
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched, changed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_left_padding_gives_the_same_states(backend):
    torch.manual_seed(4)
    model = MosaicBertModel(tiny_config(attention_backend=backend), add_pooling_layer=False).eval()
    ids, mask, types = random_batch(batch=3, seqlen=12)
    left_ids, left_mask = ids.clone(), mask.clone()
    for b in range(3):
        n = int(mask[b].sum())
        left_ids[b] = torch.cat([ids[b, n:], ids[b, :n]])
        left_mask[b] = torch.cat([mask[b, n:], mask[b, :n]])
    with torch.no_grad():
        right = model(ids, mask).last_hidden_state[mask.bool()]
        left = model(left_ids, left_mask).last_hidden_state[left_mask.bool()]
    torch.testing.assert_close(right, left, rtol=1e-5, atol=1e-5)


def test_sequences_longer_than_any_seen_work():
    torch.manual_seed(5)
    model = MosaicBertModel(tiny_config(alibi_starting_size=16), add_pooling_layer=False).eval()
    ids, mask, types = random_batch(batch=2, seqlen=300, min_len=250)
    with torch.no_grad():
        out = model(ids, mask, types).last_hidden_state
    assert out.shape == (2, 300, 48)
    assert relative_error(out, reference_encoder(model, ids, mask, types), mask) < 1e-5


def padding_case(layout: str, seed: int, seqlen: int = 24):
    """A batch for one padding layout: ids, mask, types (the mask of 1s and 0s the model is given)."""
    g = torch.Generator().manual_seed(seed)
    if layout == "none":
        return random_batch(batch=4, seqlen=seqlen, min_len=seqlen, generator=g)
    _, mask, _ = random_batch(batch=6, seqlen=seqlen, generator=g)
    if layout == "empty rows":  # rows of padding only, also the last one
        mask[[2, 5]] = 0
    elif layout == "left":  # real tokens at the end of each row
        mask = mask.flip(1)
    ids = torch.randint(1, 96, mask.shape, generator=g)  # no real token is the padding id 0
    return ids * mask, mask, torch.randint(0, 2, mask.shape, generator=g) * mask


PADDING_LAYOUTS = ["right", "empty rows", "left", "none"]


def check_outputs_and_gradients(backend, layout, bf16, device="cpu", compiled=False, grad_limit=1e-5, seqlen=24):
    """Forward and every parameter's gradient against the float64 reference, for one padding layout.

    The loss weights only real tokens, so padded query rows get a zero gradient from unpadding: their
    attention outputs must still be finite for that zero to stay zero through the attention backward.
    Sizes are given as the collator gives them, so full rows take the path without (un)padding."""
    torch.manual_seed(14)
    config = tiny_config(attention_backend=backend)
    if device == "cuda":  # heads of 16: a head size the GPU kernels take
        config = tiny_config(attention_backend=backend, hidden_size=64, num_attention_heads=4)
    model = MosaicBertModel(config, add_pooling_layer=False).train()
    ids, mask, types = padding_case(layout, seed=len(layout), seqlen=seqlen)
    weights = torch.randn(*ids.shape, config.hidden_size, generator=torch.Generator().manual_seed(1))
    params = {name: p.detach().double().requires_grad_() for name, p in model.named_parameters()}
    refs = reference_encoder(model, ids, mask, types, params)
    sum(((r * weights[b][mask[b].bool()].double()).sum() for b, r in enumerate(refs))).backward()

    model.to(device)
    run = torch.compile(model) if compiled else model
    gradients = not (backend == "flex" and device == "cpu" and not flex_trains_on_cpu())
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(gradients):
        out = run(ids.to(device), mask.to(device), types.to(device), num_tokens=int(mask.sum()),
                  max_seqlen=int(mask.sum(1).max())).last_hidden_state
    if gradients:
        (out.float() * (weights * mask[..., None]).to(device)).sum().backward()
    out = out.cpu()
    assert relative_error(out, refs, mask) < (2e-2 if bf16 else 1e-5)
    assert torch.all(out[~mask.bool()] == 0)
    if not gradients:
        pytest.skip(f"torch {torch.__version__} has no FlexAttention backward on CPU: outputs checked, "
                    "gradients only on a GPU")
    for name, p in model.named_parameters():
        got, want = p.grad.cpu().double(), params[name].grad
        assert torch.isfinite(got).all(), name
        if want.norm() == 0:  # e.g. the padding token's embedding row: no real token uses it
            assert got.norm() == 0, name
            continue
        err = ((got - want).norm() / want.norm()).item()
        assert err < (5e-2 if bf16 else grad_limit), f"{name}: gradient relative error {err:.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", PADDING_LAYOUTS)
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_outputs_and_gradients_match_float64_reference(backend, layout, bf16):
    check_outputs_and_gradients(backend, layout, bf16)


def test_sdpa_bias_is_alibi_plus_key_padding_with_aligned_rows():
    slopes = torch.tensor(alibi_slopes(6))
    i, j = torch.arange(13)[:, None], torch.arange(13)[None, :]
    alibi = -slopes[:, None, None] * (i - j).abs()  # [heads, 13, 13]
    full = Unpadded.from_mask(torch.ones(3, 13, dtype=torch.long), num_tokens=39)
    bias = sdpa_bias(full, slopes, torch.float32)
    assert bias.shape == (3, 6, 13, 13) and torch.equal(bias, alibi.expand(3, -1, -1, -1))
    mask = (torch.arange(13)[None, :] < torch.tensor([13, 4, 0])[:, None]).long()
    bias = sdpa_bias(Unpadded.from_mask(mask), slopes, torch.bfloat16)
    expected = alibi.to(torch.bfloat16).expand(3, -1, -1, -1).masked_fill(mask[:, None, None, :] == 0, -3.3895e38)
    assert torch.equal(bias, expected)
    # SDPA's kernels need rows aligned to 8 elements; an unaligned bias would be copied in every layer.
    for b in (sdpa_bias(full, slopes, torch.float32), bias):
        assert b.stride(-1) == 1 and all(s % 8 == 0 for s in b.stride()[:-1]), b.stride()


@pytest.mark.parametrize("lengths", [[5, 0, 3, 5], [0, 0], [5, 5, 5]], ids=["mixed", "all padding", "full"])
def test_pad_and_unpad_are_each_others_adjoint(lengths):
    """gradcheck in float64: unpad's backward is pad and pad's backward is unpad (both are gathers)."""
    for left in (False, True):
        pos = torch.arange(5)[None, :]
        n = torch.tensor(lengths)[:, None]
        mask = (pos >= 5 - n) if left else (pos < n)
        u = Unpadded.from_mask(mask.long())
        x = torch.randn(len(lengths), 5, 3, dtype=torch.float64, requires_grad=True)
        t = torch.randn(u.num_tokens, 3, dtype=torch.float64, requires_grad=True)
        torch.testing.assert_close(u.unpad(x), x[mask])
        padded = u.pad(t)
        assert torch.equal(padded[mask], t.detach()) and torch.all(padded[~mask] == 0)
        assert torch.autograd.gradcheck(u.unpad, (x,)) and torch.autograd.gradcheck(u.pad, (t,))


def test_pack_rows_fills_rows_with_the_shortest_sequences_that_fit():
    starts, rows = pack_rows([100, 30, 60, 60, 28, 128], 128)
    # 128 alone; 100 + 28; 60 + 30 (the other 60 does not fit); 60.
    assert rows == 4 and starts == [128, 316, 256, 384, 228, 0]


@pytest.mark.parametrize("seqlen", [8, 128, 512])
def test_pack_rows_places_every_sequence_whole_in_one_row_without_overlap(seqlen):
    g = torch.Generator().manual_seed(seqlen)
    for batch in (1, 7, 64):
        lengths = torch.randint(0, seqlen + 1, (batch,), generator=g).tolist()
        starts, rows = pack_rows(lengths, seqlen)
        used = torch.zeros(rows * seqlen, dtype=torch.long)
        for start, n in zip(starts, lengths):
            assert 0 <= start and start + n <= rows * seqlen
            assert n == 0 or start // seqlen == (start + n - 1) // seqlen  # one row
            used[start:start + n] += 1
        assert used.max() <= 1 and used.sum() == sum(lengths)
        assert rows <= batch


def packed_layout(lengths, seqlen, left=False):
    pos = torch.arange(seqlen)[None, :]
    n = torch.tensor(lengths)[:, None]
    u = Unpadded.from_mask(((pos >= seqlen - n) if left else (pos < n)).long())
    starts, rows = pack_rows(lengths, seqlen)
    return u, u.packed(torch.tensor(starts), rows), starts


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_packed_rows_hold_each_sequence_contiguously_and_pad_is_unpads_adjoint(left):
    lengths = [5, 0, 3, 8, 2, 4]
    u, p, starts = packed_layout(lengths, 8, left)
    assert p.batch == 3 and p.seqlen == 8 and p.num_tokens == u.num_tokens
    t = torch.randn(u.num_tokens, 3, dtype=torch.float64, requires_grad=True)
    flat = p.pad(t).flatten(0, 1)
    for b, (start, n) in enumerate(zip(starts, lengths)):
        rows_b = u.cu_seqlens[b].item()
        assert torch.equal(flat[start:start + n], t.detach()[rows_b:rows_b + n])  # in order, contiguous
        assert torch.all(p.segments.flatten()[start:start + n] == b)
    assert torch.all(flat[~p.mask.flatten()] == 0) and torch.all(p.segments[~p.mask] == -1)
    x = torch.randn(3, 8, 3, dtype=torch.float64, requires_grad=True)
    assert torch.equal(p.unpad(p.pad(t)), t)
    assert torch.autograd.gradcheck(p.unpad, (x,)) and torch.autograd.gradcheck(p.pad, (t,))


def test_sdpa_bias_of_packed_rows_is_alibi_within_each_sequence_only():
    slopes = torch.tensor(alibi_slopes(6))
    _, p, _ = packed_layout([5, 0, 3, 8, 2, 4], 8)
    bias = sdpa_bias(p, slopes, torch.float32)
    assert bias.shape == (3, 6, 8, 8)
    low = torch.finfo(torch.float32).min
    for r in range(3):
        for i in range(8):
            for j in range(8):
                same = p.segments[r, j] >= 0 and p.segments[r, i] == p.segments[r, j]
                want = -slopes * abs(i - j) if same else torch.full((6,), low)
                assert torch.equal(bias[r, :, i, j], want), (r, i, j)


def test_auto_backend_is_flash_attn_where_it_can_run_else_sdpa_packed_on_a_host_plan(monkeypatch):
    from mosaicbert.model import modeling_mosaic_bert as mb

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(mb, "flash_attn_varlen_qkvpacked_func", None)
    for device in (cuda, cpu):
        assert mb.resolve_attention_backend("auto", device, torch.bfloat16) == "sdpa"
        assert mb.resolve_attention_backend("auto", device, torch.bfloat16, host_plan=True) == "sdpa_packed"
    assert mb.reads_host_plan("auto") and mb.reads_host_plan("sdpa_packed") and not mb.reads_host_plan("sdpa")
    monkeypatch.setattr(mb, "flash_attn_varlen_qkvpacked_func", lambda *args, **kwargs: None)
    assert not mb.reads_host_plan("auto")  # flash-attn needs no plan
    assert mb.resolve_attention_backend("auto", cuda, torch.bfloat16) == "flash_attn"
    assert mb.resolve_attention_backend("auto", cuda, torch.bfloat16, host_plan=True) == "flash_attn"
    assert mb.resolve_attention_backend("sdpa", cuda, torch.bfloat16, host_plan=True) == "sdpa"  # as asked
    assert mb.resolve_attention_backend("auto", cuda, torch.float32) == "sdpa"  # flash-attn has no fp32
    assert mb.resolve_attention_backend("auto", cpu, torch.bfloat16) == "sdpa"
    assert mb.resolve_attention_backend("flex", cuda, torch.bfloat16) == "flex"  # still selectable


def test_flash_attn_4_alone_does_not_count_as_flash_attn(tmp_path):
    """flash-attn 4 installs an importable `flash_attn` package holding only `flash_attn.cute`. The model
    must not take that for flash-attn 2's varlen function, and `auto` must resolve to SDPA on CUDA."""
    (tmp_path / "flash_attn" / "cute").mkdir(parents=True)
    (tmp_path / "flash_attn" / "__init__.py").write_text("")
    (tmp_path / "flash_attn" / "cute" / "__init__.py").write_text("")
    import mosaicbert

    src = os.path.dirname(os.path.dirname(mosaicbert.__file__))
    code = ("import torch, flash_attn.cute\n"
            "from mosaicbert.model import modeling_mosaic_bert as m\n"
            "print(m.flash_attn_varlen_qkvpacked_func, "
            "m.resolve_attention_backend('auto', torch.device('cuda'), torch.bfloat16))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), src]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "sdpa"]


@pytest.mark.skipif(flex_attention is None, reason="needs FlexAttention")
def test_document_block_mask_matches_dense_sequence_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    g = torch.Generator().manual_seed(0)
    cases = ([128, 128, 128], [5, 300, 1, 77, 129], [1000], [127, 1, 129, 256, 3],
             [0, 5, 0, 130, 0, 0])  # all-padding rows: empty sequences, also at the start and the end
    for block, lengths in [(block, lengths) for block in (128, 64) for lengths in cases]:
        lengths = torch.tensor(lengths)
        cu = F.pad(lengths.cumsum(0), (1, 0)).int()
        total = int(lengths.sum())
        docs = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        ours = document_block_mask(cu, total, block=block)
        reference = create_block_mask(lambda b, h, q, k: docs[q] == docs[k], None, None, total, total,
                                      device="cpu", BLOCK_SIZE=block)
        dense = (docs[:, None] == docs[None, :])
        # Same blocks visited as the reference mask: none a sequence cannot see, none it needs skipped.
        assert torch.equal(ours.to_dense(), reference.to_dense()), (block, lengths.tolist())
        q = torch.randn(1, 2, total, 8, generator=g)
        out = flex_attention(q, q, q, block_mask=ours)
        ref = torch.softmax((q @ q.transpose(-1, -2) / math.sqrt(8)).masked_fill(~dense, float("-inf")), -1) @ q
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # A batch of padding only: no tokens, an empty mask.
    assert document_block_mask(torch.zeros(3, dtype=torch.int32), 0).to_dense().shape == (1, 1, 0, 0)


def test_masked_only_head_equals_full_head():
    torch.manual_seed(6)
    model = MosaicBertForMaskedLM(tiny_config()).eval()
    ids, mask, types = random_batch(batch=4, seqlen=18)
    labels = torch.full_like(ids, -100)
    chosen = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3) & mask.bool()
    labels[chosen] = ids[chosen]
    with torch.no_grad():
        sparse = model(ids, mask, types, labels=labels)
        model.config.mlm_only_masked = False
        full = model(ids, mask, types, labels=labels)
    assert sparse.logits.shape == (int(chosen.sum()), 96)
    assert full.logits.shape == (4, 18, 96)
    torch.testing.assert_close(sparse.logits, full.logits[labels != -100])
    torch.testing.assert_close(sparse.loss, full.loss)


@pytest.mark.parametrize("only_masked", [True, False])
def test_no_masked_tokens_gives_zero_loss_not_nan(only_masked):
    model = MosaicBertForMaskedLM(tiny_config(mlm_only_masked=only_masked))
    ids, mask, types = random_batch(batch=2, seqlen=8)
    out = model(ids, mask, types, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_return_dict_false_in_the_call_or_the_config_gives_tuples():
    ids, mask, types = random_batch(batch=2, seqlen=8)
    labels = torch.where(mask.bool(), ids, -100)
    for cls, extra in ((MosaicBertModel, {}), (MosaicBertForMaskedLM, {"labels": labels}),
                       (MosaicBertForSequenceClassification, {"labels": torch.tensor([0, 1])})):
        model = cls(tiny_config(num_labels=2)).eval()
        with torch.no_grad():
            as_object = model(ids, mask, types, **extra)
            as_tuple = model(ids, mask, types, return_dict=False, **extra)
            model.config.return_dict = False
            from_config = model(ids, mask, types, **extra)
            forced = model(ids, mask, types, return_dict=True, **extra)
        assert isinstance(as_tuple, tuple) and isinstance(from_config, tuple), cls
        assert not isinstance(forced, tuple), cls
        for got in (as_tuple, from_config):
            for mine, theirs in zip(got, as_object.to_tuple()):
                torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("field, value, message", [
    ("num_attention_heads", 0, "num_attention_heads=0 must be a positive integer"),
    ("num_hidden_layers", -1, "num_hidden_layers=-1 must be a positive integer"),
    ("pad_vocab_multiple", 0, "pad_vocab_multiple=0 must be a positive integer"),
    ("hidden_dropout_prob", 1.5, "hidden_dropout_prob=1.5 must be a probability"),
    ("hidden_act", "gleu", "hidden_act='gleu' is not an activation"),
    ("glu_dropout", "intermedaite", "glu_dropout='intermedaite' is not"),
    ("attention_backend", "flsh", "attention_backend='flsh'; allowed"),
])
def test_bad_config_values_are_refused_by_the_config_and_by_from_pretrained(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MosaicBertConfig(**{field: value})
    # from_pretrained sets its overrides without the config's __init__: the model checks them when built.
    MosaicBertForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=re.escape(message)):
        MosaicBertForMaskedLM.from_pretrained(tmp_path, **{field: value})


def test_flex_with_attention_dropout_is_refused_up_front():
    with pytest.raises(ValueError, match="'flex' has no attention dropout"):
        MosaicBertConfig(attention_backend="flex", attention_probs_dropout_prob=0.1)


def test_base_parameter_count_matches_paper():
    model = MosaicBertForMaskedLM(MosaicBertConfig())  # vocab 30528, 768 x 12, GeGLU 3072
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 137e6) / 137e6 < 0.01, count
    assert model.cls.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_init_is_bert_init():
    model = MosaicBertForMaskedLM(MosaicBertConfig(num_hidden_layers=2))
    w = model.bert.encoder.layer[0].mlp.gated_layers.weight
    assert abs(w.std().item() - 0.02) < 1e-3
    assert torch.all(model.bert.encoder.layer[0].attention.Wqkv.bias == 0)
    assert torch.all(model.bert.encoder.layer[1].mlp.LayerNorm.weight == 1)


def test_save_and_load_pretrained_round_trip_across_backends(tmp_path):
    torch.manual_seed(8)
    model = MosaicBertForMaskedLM(tiny_config(attention_backend="sdpa")).eval()
    model.save_pretrained(tmp_path)
    ids, mask, types = random_batch(batch=3, seqlen=10)
    for backend in BACKENDS:
        loaded = MosaicBertForMaskedLM.from_pretrained(tmp_path, attention_backend=backend).eval()
        assert loaded.config.attention_backend == backend
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids, mask, types).logits, model(ids, mask, types).logits)


def test_sequence_classification_and_regression():
    torch.manual_seed(9)
    ids, mask, types = random_batch(batch=4, seqlen=10)
    clf = MosaicBertForSequenceClassification(tiny_config(num_labels=3))
    labels = torch.tensor([0, 2, 1, 0])
    out = clf(ids, mask, types, labels=labels)
    assert out.logits.shape == (4, 3)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    multi = MosaicBertForSequenceClassification(tiny_config(num_labels=3,
                                                            problem_type="multi_label_classification"))
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    out = multi(ids, mask, types, labels=targets)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))
    reg = MosaicBertForSequenceClassification(tiny_config(num_labels=1))
    out = reg(ids, mask, types, labels=torch.tensor([0.5, 1.0, 4.0, 2.5]))
    expected = F.mse_loss(out.logits.squeeze(-1), torch.tensor([0.5, 1.0, 4.0, 2.5]))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("lengths", [[6, 0], [0, 4, 6], [0, 0]], ids=["last row empty", "first row empty", "all empty"])
def test_pooler_reads_each_rows_first_token_and_zeros_for_a_row_of_padding(lengths):
    """The pooler takes [CLS] of every row; a row of padding only (wherever it sits) gives the pooler of a
    zero vector instead of an index past the last token."""
    torch.manual_seed(11)
    model = MosaicBertForSequenceClassification(tiny_config(num_labels=2)).eval()
    ids = torch.randint(5, 90, (len(lengths), 6))
    mask = (torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]).long()
    with torch.no_grad():
        pooled = model.bert(ids, mask).pooler_output
        for row, n in enumerate(lengths):
            if n:
                alone = model.bert(ids[row:row + 1, :n]).pooler_output[0]
                torch.testing.assert_close(pooled[row], alone, rtol=1e-5, atol=1e-5)
            else:
                torch.testing.assert_close(pooled[row], model.bert.pooler(torch.zeros(1, pooled.shape[1]))[0])


def test_a_short_training_run_lowers_the_loss():
    torch.manual_seed(10)
    model = MosaicBertForMaskedLM(tiny_config(hidden_dropout_prob=0.1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    # A learnable pattern: token t is followed by t + 1.
    start = torch.randint(5, 40, (64, 1), generator=g)
    ids = start + torch.arange(16)[None, :]
    mask = torch.ones_like(ids)
    losses = []
    for step in range(150):
        labels = torch.full_like(ids, -100)
        chosen = torch.rand(ids.shape, generator=g) < 0.3
        labels[chosen] = ids[chosen]
        inputs = ids.masked_fill(chosen, 3)
        loss = model(inputs, mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10, losses


# flash_attn only where the model found the function it uses: flash-attn 4 installs an importable
# `flash_attn` package (flash_attn.cute) without it.
CUDA_BACKENDS = ["sdpa", "sdpa_packed", "flex"] + (["flash_attn"] if flash_attn_varlen_qkvpacked_func is not None else [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_backends_match_float64_reference(backend, compiled):
    """On the GPU: eager and torch.compile'd, fp32 (where the kernel has it) and bf16 autocast."""
    torch.manual_seed(11)
    model = MosaicBertModel(tiny_config(attention_backend=backend, hidden_size=64, num_attention_heads=4),
                            add_pooling_layer=False).eval()
    cpu_copy = copy.deepcopy(model)
    gpu = model.to("cuda")
    run = torch.compile(gpu) if compiled else gpu
    for seed in range(3):
        ids, mask, types = random_batch(batch=6, seqlen=200, generator=torch.Generator().manual_seed(seed))
        refs = reference_encoder(cpu_copy, ids, mask, types)
        for dtype in ([torch.float32] if backend != "flash_attn" else []) + [torch.bfloat16]:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype != torch.float32):
                out = run(ids.cuda(), mask.cuda(), types.cuda()).last_hidden_state.cpu()
            err = relative_error(out, refs, mask)
            limit = 1e-5 if dtype == torch.float32 else 2e-2
            assert err < limit, f"{backend} compiled={compiled} {dtype}: relative error {err:.2e}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize(("compiled", "layout"), [(False, layout) for layout in PADDING_LAYOUTS]
                         + [(True, "empty rows"), (True, "none")])
def test_cuda_outputs_and_gradients_match_float64_reference(backend, compiled, layout):
    """On the GPU's kernels, whose handling of fully masked rows differs from the CPU's: rows of padding
    only must give finite outputs and gradients there too. Eager: every layout, fp32 (where the kernel
    has it) and bf16. Compiled (bf16, the training setting): the two layouts with their own code paths,
    rows of padding only and the broadcast bias of full rows; each compile takes a while."""
    for bf16 in ([False] if backend != "flash_attn" and not compiled else []) + [True]:
        torch._dynamo.reset()
        check_outputs_and_gradients(backend, layout, bf16, device="cuda", compiled=compiled, grad_limit=1e-4,
                                    seqlen=200)


@pytest.mark.parametrize("backend", BACKENDS)
def test_host_known_sizes_give_identical_outputs(backend):
    """The sync-free path (sizes from the collator, nonzero_static) computes the same as nonzero."""
    torch.manual_seed(12)
    model = MosaicBertForMaskedLM(tiny_config(attention_backend=backend)).eval()
    for lengths in ("random", "full"):
        ids, mask, types = random_batch(batch=5, seqlen=16, min_len=16 if lengths == "full" else 1)
        labels = torch.full_like(ids, -100)
        chosen = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(2)) < 0.3) & mask.bool()
        labels[chosen] = ids[chosen]
        sizes = dict(num_tokens=int(mask.sum()), max_seqlen=int(mask.sum(1).max()), num_masked=int(chosen.sum()))
        if backend == "sdpa_packed" and lengths == "random":  # the plan the Composer model makes on the host
            starts, sizes["num_attention_rows"] = pack_rows(mask.sum(1).tolist(), mask.shape[1])
            sizes["attention_row_starts"] = torch.tensor(starts)
            assert sizes["num_attention_rows"] < len(ids)  # rows were packed
        with torch.no_grad():
            synced = model(ids, mask, types, labels=labels)
            sync_free = model(ids, mask, types, labels=labels, **sizes)
            states = model.bert(ids, mask, types, num_tokens=sizes["num_tokens"]).last_hidden_state
            states_ref = model.bert(ids, mask, types).last_hidden_state
        assert torch.equal(synced.logits, sync_free.logits) and torch.equal(synced.loss, sync_free.loss)
        assert torch.equal(states, states_ref)


def test_glu_dropout_placement_is_a_config_choice():
    ids, mask, types = random_batch(batch=3, seqlen=12)
    outputs = {}
    for placement in ("intermediate", "output"):
        torch.manual_seed(13)
        model = MosaicBertModel(tiny_config(glu_dropout=placement), add_pooling_layer=False).eval()
        with torch.no_grad():  # identical without dropout active
            outputs[placement] = model(ids, mask, types).last_hidden_state
        assert model.encoder.layer[0].mlp.dropout_on_intermediate == (placement == "intermediate")
        # In training, the feed-forward dropout sees the GLU output (intermediate width) or wo's output.
        config = tiny_config(glu_dropout=placement, hidden_dropout_prob=0.1)
        mlp = MosaicBertModel(config, add_pooling_layer=False).train().encoder.layer[0].mlp
        widths = []
        mlp.dropout.register_forward_hook(lambda module, args, out: widths.append(args[0].shape[-1]))
        mlp(torch.randn(5, config.hidden_size))
        assert widths == [config.intermediate_size if placement == "intermediate" else config.hidden_size]
    torch.testing.assert_close(outputs["intermediate"], outputs["output"])
    with pytest.raises(ValueError, match="glu_dropout"):
        tiny_config(glu_dropout="both")


# ----------------------------------------------------------------------------------------------
# Hash dropout (the compiled path of MosaicBertDropout)
# ----------------------------------------------------------------------------------------------
def lowbias32(v: int) -> int:
    """The reference hash on Python ints (unsigned 32-bit), returned as a signed int32."""
    v &= 0xFFFFFFFF
    v ^= v >> 16
    v = (v * 0x7FEB352D) & 0xFFFFFFFF
    v ^= v >> 15
    v = (v * 0x846CA68B) & 0xFFFFFFFF
    v ^= v >> 16
    return v - 2**32 if v >= 2**31 else v


def test_mix32_is_lowbias32_with_wrapping_products_and_logical_shifts():
    from mosaicbert.model.modeling_mosaic_bert import _mix32

    values = torch.cat([torch.tensor([0, 1, -1, 2**31 - 1, -2**31], dtype=torch.int32),
                        torch.randint(-2**31, 2**31 - 1, (2000,), dtype=torch.int32)])
    assert _mix32(values).tolist() == [lowbias32(v) for v in values.tolist()]
    block = torch.arange(-2**16, 2**16, dtype=torch.int32)
    assert _mix32(block).unique().numel() == block.numel(), "a bijection maps distinct inputs apart"


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_hash_keep_mask_is_an_unbiased_uncorrelated_bernoulli(p):
    """Keep rate 1 - p; no correlation between neighbours, rows (768, 3072 apart) or seeds differing in one
    bit. Each statistic is a z-score (standard normal for an ideal Bernoulli mask), bounded at 5."""
    from mosaicbert.model.modeling_mosaic_bert import hash_keep_mask

    g = torch.Generator().manual_seed(0)
    n = 2**20
    for _ in range(4):
        seed = torch.randint(-2**31, 2**31 - 1, (2,), dtype=torch.int32, generator=g)
        keep = hash_keep_mask(torch.Size([n // 1024, 1024]), p, seed).flatten().double()
        assert abs(keep.mean() - (1 - p)) / math.sqrt(p * (1 - p) / n) < 5
        centred = (keep - (1 - p)) / math.sqrt(p * (1 - p))
        for lag in (1, 2, 768, 1024, 3072):
            assert abs((centred[lag:] * centred[:-lag]).mean()) * math.sqrt(n - lag) < 5, f"lag {lag}"
        # The second word is mixed in after the first hash round, so seeds one bit apart there give
        # unrelated masks. (A bit flipped in the first word only permutes the indices: the lag-1 test.)
        other = seed.clone()
        other[1] ^= 1
        centred_other = (hash_keep_mask(torch.Size([n]), p, other).double() - (1 - p)) / math.sqrt(p * (1 - p))
        assert abs((centred * centred_other).mean()) * math.sqrt(n) < 5, "seeds one bit apart"


def test_hash_keep_mask_threshold_is_exact(monkeypatch):
    """With the hash replaced by the identity and seed (-2^31, 0), the hash of index i is -2^31 + i: a mask
    for p = k / 2^32 drops exactly the first k elements; p = 0 drops none; p near 1 drops all."""
    from mosaicbert.model import modeling_mosaic_bert as mb

    monkeypatch.setattr(mb, "_mix32", lambda x: x)
    seed = torch.tensor([-2**31, 0], dtype=torch.int32)
    for k in (0, 1, 5, 300):
        keep = mb.hash_keep_mask(torch.Size([20, 50]), k / 2**32, seed)
        assert keep.flatten().tolist() == [False] * k + [True] * (1000 - k)
    assert not mb.hash_keep_mask(torch.Size([1000]), 1 - 1e-12, seed).any()


@pytest.fixture
def hash_calls(monkeypatch):
    """The dropout rate of every call of hash_keep_mask (calls made while torch.compile traces)."""
    from mosaicbert.model import modeling_mosaic_bert as mb

    calls = []
    real = mb.hash_keep_mask
    monkeypatch.setattr(mb, "hash_keep_mask", lambda *a: calls.append(a[1]) or real(*a))
    return calls


def test_compiled_dropout_uses_the_hash_and_backward_applies_the_same_mask(hash_calls):
    from mosaicbert.model import modeling_mosaic_bert as mb

    torch._dynamo.reset()
    dropout = mb.MosaicBertDropout(0.25).train()
    compiled = torch.compile(lambda t: dropout(t) * 3.0)
    x = torch.randn(96, 64, dtype=torch.float64, requires_grad=True)
    out = compiled(x)
    out.sum().backward()
    assert hash_calls == [0.25], "torch.compile traced the hash path"
    kept = out != 0
    assert 0.65 < kept.double().mean() < 0.85
    torch.testing.assert_close(out[kept], 3.0 * x[kept] / 0.75)
    torch.testing.assert_close(x.grad, kept.double() * 3.0 / 0.75)
    second = compiled(x)
    assert not torch.equal(second != 0, kept), "each call draws a new seed"
    # Eager: torch's dropout. Eval, compiled or not: the identity.
    hash_calls.clear()
    eager = dropout(x)
    assert ((eager == 0) | torch.isclose(eager, x / 0.75)).all()
    assert hash_calls == [], "eager mode did not use the hash"
    dropout.eval()
    assert torch.equal(dropout(x), x) and torch.equal(compiled(x), 3.0 * x)
    assert hash_calls == [], "evaluation did not use the hash"
    # fast_dropout=False: torch's dropout also when compiled (the benchmarks' "before" rows rely on it).
    torch._dynamo.reset()
    slow = mb.MosaicBertDropout(0.25, fast=False).train()
    out = torch.compile(lambda t: slow(t) * 3.0)(x)
    assert hash_calls == [] and 0.65 < (out != 0).double().mean() < 0.85
    torch._dynamo.reset()


def test_compiled_dropout_edge_cases_keep_gradients_right(hash_calls):
    from mosaicbert.model import modeling_mosaic_bert as mb

    torch._dynamo.reset()
    x = torch.randn(40, 30, dtype=torch.float64, requires_grad=True)
    # p = 1 and p within 2^-33 of 1: zeros, and a zero gradient rather than a graph cut.
    for p in (1.0, 1 - 1e-12):
        out = torch.compile(mb.MosaicBertDropout(p).train())(x)
        assert torch.equal(out, torch.zeros_like(x))
        out.sum().backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
        x.grad = None
        torch._dynamo.reset()
    # bf16 stays bf16; two dropouts in one graph draw different masks.
    first, second = mb.MosaicBertDropout(0.5).train(), mb.MosaicBertDropout(0.5).train()
    a, b = torch.compile(lambda t: (first(t), second(t)))(torch.ones(64, 64, dtype=torch.bfloat16))
    assert a.dtype == b.dtype == torch.bfloat16 and not torch.equal(a == 0, b == 0)
    torch._dynamo.reset()
    # A partitioner allowed to recompute random ops would redraw the seed in backward: use F.dropout.
    hash_calls.clear()  # the compiled calls above used the hash
    # torch's own patch: a monkeypatch's undo hides the option for good in recent torch (2.11).
    with torch._functorch.config.patch(aggressive_recomputation=True):
        out = torch.compile(mb.MosaicBertDropout(0.25).train())(x)
        out.sum().backward()
    assert hash_calls == []
    torch.testing.assert_close(x.grad, (out != 0).double() / 0.75)
    torch._dynamo.reset()


def test_fast_dropout_is_a_config_choice_for_every_dropout_of_the_model():
    for fast in (True, False):
        model = MosaicBertForSequenceClassification(tiny_config(fast_dropout=fast, hidden_dropout_prob=0.1))
        dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert len(dropouts) == 1 + 2 * model.config.num_hidden_layers + 1  # embeddings, 2 per layer, classifier
        assert all(type(m).__name__ == "MosaicBertDropout" and m.fast == fast for m in dropouts)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_hash_mask_on_cuda_equals_the_cpu_mask():
    """Triton's integer code (wrapping products, masked shifts) gives the CPU's bits, element for element."""
    from mosaicbert.model.modeling_mosaic_bert import hash_keep_mask

    seed = torch.tensor([123456789, -987654321], dtype=torch.int32)
    shape = torch.Size([3000, 1000])
    on_gpu = torch.compile(hash_keep_mask)(shape, 0.1, seed.cuda())
    assert torch.equal(on_gpu.cpu(), hash_keep_mask(shape, 0.1, seed))


def mlm_batch(lengths, seqlen=16, seed=0):
    """A batch as the recipe's collator gives it, host-side row lengths included."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(seqlen)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(1, 96, mask.shape, generator=g) * mask
    labels = torch.where((torch.rand(mask.shape, generator=g) < 0.3) & mask.bool(), ids, -100)
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), labels=labels,
                row_lengths=list(lengths), row_masked=(labels != -100).sum(1).tolist())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_compiled_sdpa_packed_trains_like_sdpa_on_the_host_made_plan(device):
    """The Composer model makes the packing plan on the host for batches with padding (none for full rows;
    on a GPU it is copied from pinned memory without waiting), and the compiled model, across batches that
    pack into different numbers of rows, gives sdpa's loss and gradients (fp32)."""
    from mosaicbert.composer_models import ComposerMaskedLM, host_sizes

    def on_device(batch):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    batches = [on_device(mlm_batch(lengths, seed=seed)) for seed, lengths in
               enumerate(([16, 3, 9, 5, 12, 2], [7, 16, 1, 4, 8, 6], [16] * 6))]
    rows = [host_sizes(b, pack_attention_rows=True).get("num_attention_rows") for b in batches]
    assert rows == [4, 3, None]  # a full batch has nothing to pack
    torch.manual_seed(3)
    config = tiny_config(attention_backend="sdpa_packed", hidden_size=64, num_attention_heads=4)  # GPU head size
    packed = ComposerMaskedLM(MosaicBertForMaskedLM(config)).to(device).train()
    plain = copy.deepcopy(packed)
    plain.model.config.attention_backend = "sdpa"
    compiled = torch.compile(packed)
    torch._dynamo.reset()
    for batch in batches:
        losses = []
        for model in (compiled, plain):
            loss = model(batch).loss
            loss.backward()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
        for (name, p), q in zip(packed.named_parameters(), plain.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
            p.grad = q.grad = None


@pytest.mark.parametrize("backend", ["sdpa_packed", "auto"])
def test_sdpa_packed_attends_over_the_host_plans_rows_and_plans_nothing_itself(monkeypatch, backend):
    """Eager, through the Composer model: SDPA runs on as many rows as the host's plan has (fewer than the
    batch's), the model does not plan again, and a plan that saves no row keeps the plain layout. ``auto``
    (without flash-attn) does the same; called without a plan it attends over one row per sequence."""
    import mosaicbert.model.modeling_mosaic_bert as modeling
    from mosaicbert.composer_models import ComposerMaskedLM, host_sizes

    rows_attended, packed_calls = [], []
    real_sdpa, real_packed = F.scaled_dot_product_attention, Unpadded.packed

    def spy_sdpa(q, *args, **kwargs):
        rows_attended.append(q.shape[0])
        return real_sdpa(q, *args, **kwargs)

    def spy_packed(self, *args):
        packed_calls.append(args[1])
        return real_packed(self, *args)

    def no_planning(*args):
        raise AssertionError("the model planned rows although the host gave a plan")

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy_sdpa)
    monkeypatch.setattr(Unpadded, "packed", spy_packed)
    monkeypatch.setattr(modeling, "pack_rows", no_planning)
    monkeypatch.setattr(modeling, "flash_attn_varlen_qkvpacked_func", None)  # auto plans without it
    model = ComposerMaskedLM(MosaicBertForMaskedLM(tiny_config(attention_backend=backend))).eval()
    layers = model.model.config.num_hidden_layers
    for lengths, rows, packed in (([16, 3, 9, 5, 12, 2], 4, [4]),  # packed: 4 rows for 6 sequences
                                  ([9, 10, 12, 16], 4, [])):  # no two fit in a row: the plain layout
        batch = mlm_batch(lengths)
        assert host_sizes(batch, pack_attention_rows=True)["num_attention_rows"] == rows
        rows_attended.clear(), packed_calls.clear()
        with torch.no_grad():
            model(batch)
        assert rows_attended == [rows] * layers and packed_calls == packed
    if backend == "auto":  # the Hugging Face model alone, given no plan: no planning, no packing
        batch = mlm_batch([16, 3, 9, 5, 12, 2])
        rows_attended.clear(), packed_calls.clear()
        with torch.no_grad():
            model.model(batch["input_ids"], batch["attention_mask"])
        assert rows_attended == [6] * layers and packed_calls == []


def test_a_packing_plan_needs_both_of_its_parts():
    model = MosaicBertModel(tiny_config(attention_backend="sdpa_packed"), add_pooling_layer=False)
    ids, mask, types = random_batch()
    with pytest.raises(ValueError, match="attention_row_starts and num_attention_rows together"):
        model(ids, mask, types, num_attention_rows=3)
