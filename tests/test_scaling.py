"""benchmarks/scaling.py: the median-step throughput, and 1- and 2-process runs through the launcher on CPU."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from mosaicbert.errors import RecipeError

from test_train import DEMO, REPO

spec = importlib.util.spec_from_file_location("scaling", os.path.join(REPO, "benchmarks", "scaling.py"))
scaling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scaling)


def write_metrics(path, step_seconds, tokens_per_step=1000, samples_per_step=10, window=123.0):
    clock = 0.0
    with open(path, "w") as f:
        for step, seconds in enumerate(step_seconds, start=1):
            clock += seconds
            f.write(json.dumps({"step": step, "time/train": clock / 3600, "time/token": step * tokens_per_step,
                                "time/sample": step * samples_per_step}) + "\n")
        f.write(json.dumps({"step": len(step_seconds), "throughput/tokens_per_sec": window}) + "\n")


def test_a_one_off_stall_does_not_move_the_median(tmp_path):
    path = tmp_path / "m.jsonl"
    # 2 warm-up steps (compilation), then 0.5 s steps with one 3 s stall.
    write_metrics(path, [30.0, 5.0, 0.5, 0.5, 3.0, 0.5, 0.5], tokens_per_step=1000)
    row = scaling.throughput(str(path), steps=7, n=2, warmup=2)
    assert row["step_seconds"] == pytest.approx(0.5)
    assert row["tokens_per_s"] == pytest.approx(2000.0)
    assert row["tokens_per_s_per_gpu"] == pytest.approx(1000.0)
    assert row["slowest_step_seconds"] == pytest.approx(3.0)
    assert row["speed_monitor_tokens_per_s"] == 123.0
    assert "| 2 | 2,000 | 1,000 | 0.500 | 3.000 | 123 |" in scaling.table([row])


def test_a_short_run_is_named(tmp_path):
    path = tmp_path / "m.jsonl"
    write_metrics(path, [1.0, 1.0])
    with pytest.raises(RecipeError, match="cut short"):
        scaling.throughput(str(path), steps=5, n=1, warmup=2)


def test_scaling_runs_one_and_two_processes_on_cpu(tiny_mds, tmp_path):
    out = tmp_path / "out"
    overrides = [f"variables.data_local={tiny_mds}", "max_seq_len=32", "global_train_batch_size=16",
                 "device_train_microbatch_size=4", "train_loader.num_workers=0", "model.config.num_hidden_layers=1",
                 "model.config.hidden_size=32", "model.config.num_attention_heads=2",
                 "model.config.intermediate_size=48", "python_log_level=warning"]
    command = [sys.executable, os.path.join(REPO, "benchmarks", "scaling.py"), DEMO, "--gpus", "1", "2",
               "--steps", "6", "--warmup", "2", "--out", str(out),
               f"--launcher_args=--master_port {29500 + os.getpid() % 1000}", "--set", *overrides]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((out / "scaling.json").read_text())["results"]
    assert [r["gpus"] for r in rows] == [1, 2]
    for row in rows:
        assert len(row["step_seconds_each"]) == 4 and row["tokens_per_s"] > 0
        # Every step is 16 samples over all ranks, whatever the process count.
        assert row["samples_per_s"] * row["step_seconds"] == pytest.approx(16)
    assert "scaling efficiency" in result.stdout and (out / "scaling.png").is_file()


def test_saved_runs_carry_their_own_window():
    from types import SimpleNamespace

    defaults = SimpleNamespace(steps=20, warmup=8)
    assert scaling.saved_run("4=runs/a/metrics.jsonl:16:6", defaults) == ("runs/a/metrics.jsonl", 16, 4, 6)
    assert scaling.saved_run("1=runs/b/metrics.jsonl", defaults) == ("runs/b/metrics.jsonl", 20, 1, 8)
    with pytest.raises(RecipeError, match="N=PATH"):
        scaling.saved_run("four=runs/a/metrics.jsonl", defaults)


def test_visible_gpu_ids_follow_cuda_visible_devices(monkeypatch):
    from mosaicbert.training.cli import visible_gpu_ids

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert visible_gpu_ids() == ["2", "3"]  # not 0, 1: those would be other physical GPUs
