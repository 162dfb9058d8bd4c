"""benchmarks/benchmark.py: the grouping of a profile's kernels (the rest of the tool needs a GPU)."""

import pytest
from conftest import load_script

benchmark = load_script("benchmarks/benchmark.py")


def test_kernel_times_are_grouped_per_step_first_match_wins():
    kernels = [  # names as the H200 profile printed them, self microseconds over 5 steps
        ("nvjet_sm90_tst_192x192_64x4_2x1_v_bz_coopB_TNN", 26_272.0),
        ("aten::_cudnn_attention_backward", 0.0),
        ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16", 16_293.0),
        ("triton_poi_fused_gelu_gelu_backward_mul_scalar_tensor_where_8", 15_437.0),  # gelu before where
        ("triton_per_fused__to_copy_add_mul_native_layer_norm_native_layer_norm_backward", 7_716.0),
        ("triton_poi_fused_clone_permute_view_5", 4_373.0),
        ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>", 5_461.0),
        ("void at::native::reduce_kernel<128, 4>", 3_161.0),
    ]
    groups = benchmark.group_kernel_times(kernels, steps=5)
    assert groups == pytest.approx({
        "GEMMs": 5.2544, "attention": 3.2586, "GeGLU elementwise (GELU, mul, dropout)": 3.0874,
        "LayerNorm (+ residual, dropout)": 1.5432, "optimizer": 1.0922, "q/k/v copies, (un)padding gathers": 0.8746,
        "other": 0.6322})
    assert list(groups) == sorted(groups, key=groups.get, reverse=True)


def test_a_variant_compiles_with_its_recipes_compile_config():
    """A variant's overrides reach torch.compile's arguments as main.py's would (optimize_ddp aside)."""
    from mosaicbert.training.trainer import torch_compile_kwargs

    mode, cfg = benchmark.variant_recipe("mosaic_bert:sdpa:compile:compile_config.options.combo_kernels=true", 128, [])
    assert mode == "compile" and cfg.model["config"]["attention_backend"] == "sdpa"
    assert torch_compile_kwargs(cfg.compile_config) == {"options": {"combo_kernels": True}}
    _, plain = benchmark.variant_recipe("mosaic_bert:sdpa:compile", 128, [])
    assert torch_compile_kwargs(plain.compile_config) == {}


def test_the_gpu_busy_line_sets_busy_time_against_the_span_per_step():
    events = [  # (name, start us, end us) over 2 steps: an overlap counts once, gaps split at 0.1 ms
        ("gemm", 0.0, 1000.0), ("copy", 500.0, 1200.0), ("gelu", 1260.0, 1500.0), ("gemm", 2500.0, 4000.0)]
    trace = [{"cat": "kernel", "name": name, "ts": start, "dur": end - start} for name, start, end in events]
    line = benchmark.gpu_busy_line(trace, steps=2)
    assert line == ("GPU per step: span 2.00 ms, busy 1.47 ms, idle 0.53 ms (26.5%; gaps < 0.1 ms 0.03, "
                    "longer 0.50), 2 GPU operations")
