"""Measure pretraining steps of recipe models on real text and print one comparison table.

Each variant is ``model:backend:mode[:key=value,...]`` (e.g. ``mosaic_bert:flex:compile``,
``hf_bert:sdpa:eager``, ``mosaic_bert:flex:compile:model.config.glu_dropout=output``). Models
are built from the recipe YAMLs through the same registry as ``main.py`` (config, masking rate and
optimizer included). Batches are real tokenized text: ``full`` rows are S consecutive tokens; ``uniform``
rows have lengths uniform in [S/4, S] (heavy padding); ``dataset`` takes batches from the recipe's own
dataloader over ``--mds`` (the batches ``main.py`` trains on). Every variant sees the same batches.

Timing: warm-up steps first (compilation, autotuning), then CUDA events around each step
(forward + backward + optimizer step), median over the timed steps. Real tokens/s counts non-padding
tokens only. MFU uses ``mosaicbert.flops`` over a bf16 matmul rate measured in this run.

    python benchmarks/benchmark.py --corpus corpus/train.jsonl.gz --tokenizer bert-base-uncased \\
        --variants mosaic_bert:flex:compile hf_bert:sdpa:compile --shapes 128x256 512x64 \\
        --lengths full uniform --json benchmarks/out/run.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np
import torch

from mosaicbert.errors import describe
from mosaicbert.training.step_profile import kernel_times, profiler_trace, summarize_trace, trace_device_events
from mosaicbert.training.trainer import torch_compile_kwargs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = {"mosaic_bert": "yamls/mosaicbert-base.yaml", "hf_bert": "yamls/bert-base.yaml"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", nargs="+", required=True, help=".jsonl/.jsonl.gz/.txt files of real text")
    p.add_argument("--tokenizer", default="bert-base-uncased")
    p.add_argument("--variants", nargs="+", default=["mosaic_bert:auto:compile", "hf_bert:sdpa:compile"])
    p.add_argument("--shapes", nargs="+", default=["128x256"], help="SEQxBATCH per device")
    p.add_argument("--lengths", nargs="+", default=["full", "uniform"], choices=["full", "uniform", "dataset"])
    p.add_argument("--mds", default=None, help="MDS folder (with a train split) for --lengths dataset")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=8, help="untimed steps first (compilation happens here)")
    p.add_argument("--distinct-batches", type=int, default=6, help="batches rotated through (no constant data)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="recipe overrides applied to every model (e.g. model.config.num_hidden_layers=2)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-docs", type=int, default=4000, help="documents read from the corpus")
    p.add_argument("--profile", default=None, help="variant@SEQxBATCH@lengths to profile (kernel table)")
    p.add_argument("--json", default=None, help="write all results here")
    p.add_argument("--plot", default=None, help="write a bar chart (PNG) here")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Data: real text -> token stream -> rows -> MLM batches
# ----------------------------------------------------------------------------------------------
def token_stream(paths, tokenizer, max_docs: int) -> np.ndarray:
    from mosaicbert.data.convert import iter_documents

    ids = []
    for i, text in enumerate(iter_documents(paths)):
        if i >= max_docs:
            break
        ids.append(np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64))
    stream = np.concatenate(ids)
    if stream.size < 100_000:
        raise SystemExit(f"corpus too small for benchmarking ({stream.size} tokens); give more text")
    return stream


def make_rows(stream: np.ndarray, tokenizer, seq: int, batch: int, lengths: str, rng) -> list[np.ndarray]:
    """``batch`` rows of real text, each ``[CLS] ... [SEP]``, length S or uniform in [S/4, S]."""
    rows = []
    for _ in range(batch):
        n = seq if lengths == "full" else int(rng.integers(seq // 4, seq + 1))
        start = int(rng.integers(0, stream.size - n))
        body = stream[start:start + n - 2]
        rows.append(np.concatenate([[tokenizer.cls_token_id], body, [tokenizer.sep_token_id]]))
    return rows


def dataset_batches(mds, tokenizer, seq, batch, count, mlm_probability, device):
    """Batches exactly as main.py gets them: the recipe's streaming dataloader over an MDS folder, with the
    order and masks of MosaicBERT's recipe seed."""
    from mosaicbert.config import load_config
    from mosaicbert.data.text_dataset import build_text_dataloader

    run_seed = load_config(os.path.join(REPO, RECIPES["mosaic_bert"]), []).seed
    spec = build_text_dataloader(tokenizer=tokenizer, max_seq_len=seq, device_batch_size=batch, local=mds,
                                 split="train", shuffle=True, mlm_probability=mlm_probability, num_workers=4,
                                 run_seed=run_seed)
    batches = []
    for b in spec.dataloader:
        batches.append({k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in b.items()})
        if len(batches) == count:
            break
    return batches


def make_batches(stream, tokenizer, seq, batch, lengths, count, mlm_probability, device, seed=0, mds=None):
    from mosaicbert.data.mlm_collator import MLMCollator

    if lengths == "dataset":
        return dataset_batches(mds, tokenizer, seq, batch, count, mlm_probability, device)
    rng = np.random.default_rng(seed)
    collate = MLMCollator(tokenizer, mlm_probability=mlm_probability, max_seq_len=seq, seed=seed)
    batches = []
    for b in range(count):
        rows = make_rows(stream, tokenizer, seq, batch, lengths, rng)
        examples = [{"input_ids": r, "sample_idx": b * batch + i} for i, r in enumerate(rows)]
        batches.append({k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                        for k, v in collate(examples).items()})
    return batches


# ----------------------------------------------------------------------------------------------
# Models, steps, timing
# ----------------------------------------------------------------------------------------------
def bf16_matmul_tflops(device: str) -> float:
    """Measured bf16 GEMM rate (8192^3), the MFU denominator."""
    if device != "cuda":
        return float("nan")
    n = 8192
    a, b = torch.randn(n, n, device=device, dtype=torch.bfloat16), torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12


def variant_recipe(variant: str, seq: int, overrides: list[str]):
    """(mode, validated recipe) of ``model:backend:mode[:key=value,...]``: the backend is a
    model-config override, like every other setting of the variant."""
    from mosaicbert.config import load_config

    model_name, backend, mode, *extra = variant.split(":")
    key = "attention_backend" if model_name == "mosaic_bert" else "attn_implementation"
    sets = [f"max_seq_len={seq}", *overrides, f"model.config.{key}={backend}", *(extra[0].split(",") if extra else [])]
    return mode, load_config(os.path.join(REPO, RECIPES[model_name]), sets)


def run_variant(variant, cfg, mode, batch_sets, args, tokenizer, peak_tflops):
    from mosaicbert import registry

    seq, batch = cfg.max_seq_len, len(next(iter(batch_sets.values()))[0]["input_ids"])
    torch.manual_seed(0)
    model = registry.build_named(registry.MODELS, cfg.model, tokenizer=tokenizer, max_seq_len=seq)
    model.to(args.device).train()
    optimizer = registry.build_named(registry.OPTIMIZERS, cfg.optimizer, params=model.parameters())
    forward = model
    if mode == "compile":  # with the recipe's compile_config, as main.py compiles it (compile_config.options...)
        forward = torch.compile(model, **(torch_compile_kwargs(cfg.compile_config) or {}))
    amp = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda")

    def step(b):
        with amp:
            loss = forward(b).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    results = []
    for lengths, batches in batch_sets.items():
        # Counted once per distinct batch, outside the timed steps.
        tokens = [sum(b["row_lengths"]) for b in batches]
        step_flops = [model.flops_per_batch(b) for b in batches]
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for i in range(args.warmup):
            step(batches[i % len(batches)])
        if args.device == "cuda":
            torch.cuda.synchronize()
        warmup_s = time.perf_counter() - t0
        times = []
        for i in range(args.steps):
            b = batches[i % len(batches)]
            if args.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step(b)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                step(b)
                times.append(time.perf_counter() - t)
        median = statistics.median(times)
        real_tokens = statistics.mean(tokens[i % len(batches)] for i in range(args.steps))
        flops_per_step = statistics.mean(step_flops[i % len(batches)] for i in range(args.steps))
        row = dict(variant=variant, model=cfg.model["name"], backend=variant.split(":")[1], mode=mode, seq=seq,
                   batch=batch, lengths=lengths, step_ms=median * 1e3, step_ms_p10=np.percentile(times, 10) * 1e3,
                   step_ms_p90=np.percentile(times, 90) * 1e3, real_tokens_per_step=real_tokens,
                   real_tokens_per_s=real_tokens / median, samples_per_s=batch / median,
                   tflops=flops_per_step / median / 1e12, mfu=flops_per_step / median / 1e12 / peak_tflops,
                   peak_mem_gb=torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan"),
                   warmup_s=warmup_s, resolved_backend=_resolved_backend(model, args.device))
        results.append(row)
        print(f"  {variant:<28} S={seq:<4} B={batch:<4} {lengths:<8} {row['real_tokens_per_s']:>12,.0f} tok/s "
              f"{row['step_ms']:8.2f} ms  MFU {row['mfu']:.1%}  warm-up {warmup_s:.0f}s", flush=True)
    if mode == "compile":
        from torch._dynamo.utils import counters

        breaks = dict(counters["graph_break"])
        print(f"  graph breaks ({sum(breaks.values())}): {json.dumps(breaks)[:600]}", flush=True)
    if args.profile and args.profile.split("@")[0] == variant and args.profile.split("@")[1] == f"{seq}x{batch}":
        profile(step, batch_sets[args.profile.split("@")[2]], args)
    return results


def _resolved_backend(model, device):
    config = model.model.config
    if getattr(config, "model_type", "") != "mosaic_bert":
        return getattr(config, "_attn_implementation", "?")
    from mosaicbert.model.modeling_mosaic_bert import resolve_attention_backend

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return resolve_attention_backend(config.attention_backend, torch.device(device), dtype)


# Kernel groups of the profile summary, first match wins (substrings of the lower-cased kernel name).
KERNEL_GROUPS = (
    ("GEMMs", ("nvjet", "gemm", "cutlass")),
    ("attention", ("cudnn", "fmha", "attention", "flash", "sdpa")),
    ("GeGLU elementwise (GELU, mul, dropout)", ("gelu",)),
    ("LayerNorm (+ residual, dropout)", ("layer_norm",)),
    ("q/k/v copies, (un)padding gathers", ("clone", "permute", "index", "gather", "where", "cat")),
    ("optimizer", ("multi_tensor", "adam")),
)


def group_kernel_times(kernels, steps: int) -> dict[str, float]:
    """``(kernel name, self microseconds)`` pairs -> milliseconds per step in each of ``KERNEL_GROUPS``
    (and ``other``), largest first."""
    groups: dict[str, float] = {}
    for name, micros in kernels:
        lower = name.lower()
        label = next((label for label, keys in KERNEL_GROUPS if any(k in lower for k in keys)), "other")
        groups[label] = groups.get(label, 0.0) + micros / 1000 / steps
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


PROFILE_STEPS = 5


def profile(step, batches, args):
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for i in range(PROFILE_STEPS):
            step(batches[i % len(batches)])
        if args.device == "cuda":
            torch.cuda.synchronize()
    # Self time: each kernel once, not again inside every enclosing region.
    sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=90), flush=True)
    if args.device == "cuda":
        print("\nkernel time per step, grouped (all kernels):")
        trace = profiler_trace(prof)
        kernels = kernel_times(trace_device_events(trace))
        for label, ms in group_kernel_times(kernels, steps=PROFILE_STEPS).items():
            print(f"  {label:<42} {ms:7.2f} ms", flush=True)
        print(gpu_busy_line(trace, steps=PROFILE_STEPS), flush=True)


def gpu_busy_line(trace, steps: int) -> str:
    """Per step of a profiler trace (``step_profile.summarize_trace`` without a host clock): the span from
    the first GPU operation to the end of the last, the time the GPU was busy in it, and the idle rest
    (gaps under 0.1 ms, where kernels are launched no faster than they run, and longer stalls). The steps
    run back to back, so idle time is what launching and syncing cost the step: what CUDA graphs or fewer
    launches could win back at most."""
    t = summarize_trace(trace, None, steps, top=0)
    share = t["idle_ms"] / t["wall_ms"] if t["wall_ms"] else 0.0
    return (f"GPU per step: span {t['wall_ms']:.2f} ms, busy {t['kernel_ms']:.2f} ms, idle {t['idle_ms']:.2f} ms "
            f"({share:.1%}; gaps < 0.1 ms {t['idle_short_gaps_ms']:.2f}, longer {t['idle_stalls_ms']:.2f}), "
            f"{t['gpu_ops']:,.0f} GPU operations")


# ----------------------------------------------------------------------------------------------
def environment(peak_tflops) -> dict:
    import transformers

    env = dict(torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version(),
               device=torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor(),
               bf16_matmul_tflops=peak_tflops)
    # Whether the model can use flash-attn is whether it found the function it uses: flash-attn 4
    # installs a `flash_attn` package (only `flash_attn.cute`, no `__version__`) without that function.
    from mosaicbert.model.modeling_mosaic_bert import flash_attn_varlen_qkvpacked_func

    env["flash_attn"] = None
    if flash_attn_varlen_qkvpacked_func is not None:
        env["flash_attn"] = getattr(sys.modules.get("flash_attn"), "__version__", "version unknown")
    return env


def print_table(results):
    baseline = {}
    for r in results:
        if r.get("variant") == "hf_bert:sdpa:compile" and "error" not in r:
            baseline[(r["seq"], r["batch"], r["lengths"])] = r["real_tokens_per_s"]
    width = max([28] + [len(r["variant"]) for r in results])
    head = f"{'variant':<{width}} {'S':>4} {'B':>4} {'lengths':<8} {'real tok/s':>12} {'samples/s':>10} " \
           f"{'step ms':>8} {'MFU':>6} {'TFLOP/s':>8} {'mem GB':>7} {'vs HF compiled':>14}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['variant']:<{width}} {r['seq']:>4} {r['batch']:>4}  FAILED: {r['error']}")
            continue
        base = baseline.get((r["seq"], r["batch"], r["lengths"]))
        ratio = f"{r['real_tokens_per_s'] / base:.2f}x" if base else "-"
        print(f"{r['variant']:<{width}} {r['seq']:>4} {r['batch']:>4} {r['lengths']:<8} {r['real_tokens_per_s']:>12,.0f} "
              f"{r['samples_per_s']:>10,.0f} {r['step_ms']:>8.2f} {r['mfu']:>6.1%} {r['tflops']:>8.1f} "
              f"{r['peak_mem_gb']:>7.1f} {ratio:>14}")


def main(argv=None):
    args = parse_args(argv)
    from mosaicbert.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    stream = token_stream(args.corpus, tokenizer, args.max_docs)
    peak = bf16_matmul_tflops(args.device)
    env = environment(peak)
    print(f"environment: {env}\ncorpus tokens: {stream.size:,}", flush=True)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    results = []
    for shape in args.shapes:
        seq, batch = (int(x) for x in shape.split("x"))
        cached_batches: dict[tuple, list] = {}  # (lengths, masking rate): every variant of a shape trains on the same batches
        for variant in args.variants:
            mode, cfg = variant_recipe(variant, seq, args.set)
            p = cfg.train_loader["mlm_probability"]
            batch_sets = {}
            for lengths in args.lengths:
                key = (lengths, p)
                if key not in cached_batches:
                    cached_batches[key] = make_batches(stream, tokenizer, seq, batch, lengths, args.distinct_batches,
                                                       p, args.device, mds=args.mds)
                batch_sets[lengths] = cached_batches[key]
            try:
                results.extend(run_variant(variant, cfg, mode, batch_sets, args, tokenizer, peak))
            except Exception as err:  # one failing variant must not lose the others' numbers
                traceback.print_exc()
                results.append(dict(variant=variant, seq=seq, batch=batch, error=describe(err, 300)))
            finally:
                gc.collect()
                torch._dynamo.reset()
                if args.device == "cuda":
                    torch.cuda.empty_cache()
            if args.json:  # after every variant, so a run cut short keeps what it measured
                os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
                with open(args.json, "w") as f:
                    json.dump({"environment": env, "args": vars(args), "results": results}, f, indent=1)
    print_table(results)
    if args.plot:
        from mosaicbert.analysis.plots import plot_throughput

        plot_throughput(results, args.plot)


if __name__ == "__main__":
    sys.exit(main())
