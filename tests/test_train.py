"""End to end on CPU: a tiny pretraining run, its checkpoint, and an exact resume."""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings

import pytest
import torch
from composer.core import Callback

from mosaicbert.config import load_config
from mosaicbert.errors import RecipeError
from mosaicbert.training import step_profile
from mosaicbert.training.callbacks import TrainingSummary
from mosaicbert.training.step_profile import StepProfile
from mosaicbert.training.trainer import build_pretraining_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "yamls", "demo.yaml")


def tiny_overrides(data: str, save_folder: str, model: str = "mosaic_bert", **extra) -> list[str]:
    values = {
        "variables.data_local": data, "max_seq_len": 32, "global_train_batch_size": 8,
        "device_train_microbatch_size": 4, "device_eval_batch_size": 16, "max_duration": "6ba",
        "eval_interval": "3ba", "eval_subset_num_batches": 2, "save_folder": save_folder, "save_interval": "3ba",
        "save_num_checkpoints_to_keep": -1, "progress_bar": False, "train_loader.num_workers": 0,
        "eval_loader.num_workers": 0, "python_log_level": "warning",
        # Overriding a section with {} merges (keeps its keys): point the recipe's logger at the temp dir.
        "loggers.jsonl.path": os.path.join(save_folder, "metrics.jsonl"),
        "model.name": model,
    }
    if model == "mosaic_bert":
        values.update({"model.config.hidden_size": 32, "model.config.num_attention_heads": 2,
                       "model.config.intermediate_size": 48, "model.config.num_hidden_layers": 1})
    else:
        values.update({"model.config": "{hidden_size: 32, num_attention_heads: 2, intermediate_size: 48, "
                                       "num_hidden_layers: 1, max_position_embeddings: 64}"})
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


class CrashAt(Callback):
    """Kills a run at the start of a batch (after the previous batch's checkpoint was written)."""

    def __init__(self, batch: int):
        self.batch = batch

    def batch_start(self, state, logger):
        if int(state.timestamp.batch) == self.batch:
            raise KeyboardInterrupt("simulated crash")


def run_main(args: list[str], cwd, env=None) -> subprocess.CompletedProcess:
    """``python main.py ARGS`` as a user runs it, in ``cwd``."""
    return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def assert_refused(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 2 and one paragraph naming the problem, without a traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.state.model.model.state_dict().items()}


@pytest.mark.parametrize("model", ["mosaic_bert", "hf_bert"])
def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_mds, tmp_path, model):
    # Uninterrupted: 6 batches.
    full = build_pretraining_trainer(load_config(DEMO, tiny_overrides(tiny_mds, str(tmp_path / "full"), model)))
    full.fit()
    assert int(full.state.timestamp.batch) == 6
    expected = weights(full)
    full.close()

    # A run that dies at the start of its 4th batch (its batch-3 checkpoint is on disk) ...
    part = build_pretraining_trainer(load_config(DEMO, tiny_overrides(tiny_mds, str(tmp_path / "part"), model)))
    part.state.callbacks.append(CrashAt(3))
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    assert int(part.state.timestamp.batch) == 3
    halfway = weights(part)
    part.close()
    checkpoint = tmp_path / "part" / "ep0-ba3-rank0.pt"
    assert checkpoint.is_file()

    # ... then resumed from its checkpoint in a fresh trainer.
    resumed = build_pretraining_trainer(load_config(
        DEMO, tiny_overrides(tiny_mds, str(tmp_path / "resumed"), model, load_path=str(checkpoint))))
    assert int(resumed.state.timestamp.batch) == 3  # the batch counter continues
    resumed.fit()
    assert int(resumed.state.timestamp.batch) == 6
    got = weights(resumed)
    resumed.close()

    assert any(not torch.equal(halfway[k], expected[k]) for k in expected), "training must change weights"
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=f"{key} differs after resume")


def test_autoresume_picks_up_the_latest_checkpoint(tiny_mds, tmp_path, capsys):
    folder = str(tmp_path / "auto")
    overrides = tiny_overrides(tiny_mds, folder, run_name="auto-run", autoresume="true")
    first = build_pretraining_trainer(load_config(DEMO, overrides))
    first.state.callbacks.append(CrashAt(3))
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    first.close()
    second = build_pretraining_trainer(load_config(DEMO, overrides))
    assert int(second.state.timestamp.batch) == 3
    second.state.callbacks.append(TrainingSummary(print_every_eval=False, window=2))
    second.fit()
    assert int(second.state.timestamp.batch) == 6
    capsys.readouterr()
    second.close()
    # The summary counts the whole run's batches but says its losses are this launch's.
    printed = capsys.readouterr().out
    assert "batches trained          6 " in printed and "this launch resumed at batch 3" in printed
    assert "(batches 4-5) -> " in printed and "(last 1)" in printed


def test_autoresume_of_a_finished_run_says_so_and_trains_nothing(tiny_mds, tmp_path):
    """A scheduler that relaunches a job after it ended: one line, exit 0, the checkpoints untouched
    (Composer's fit would raise a ValueError naming reset_time)."""
    args = tiny_overrides(tiny_mds, str(tmp_path / "ckpt"), max_duration="2ba", run_name="done", autoresume="true")
    first = run_main([DEMO, *args], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    names = sorted(os.listdir(tmp_path / "ckpt"))
    again = run_main([DEMO, *args], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Run 'done' has already trained for its max_duration (2ba)" in again.stdout, again.stdout[-2000:]
    assert "raise max_duration" in again.stdout and "Traceback" not in again.stderr
    assert sorted(os.listdir(tmp_path / "ckpt")) == names


def test_a_starting_checkpoint_of_another_model_is_one_clear_error(tiny_mds, tmp_path):
    """load_path or autoresume with a recipe whose model differs from the checkpoint's: Composer's KeyError or
    size mismatch becomes a RecipeError naming the families and the settings that differ."""
    folder = tmp_path / "ckpt"
    trainer = build_pretraining_trainer(load_config(DEMO, tiny_overrides(tiny_mds, str(folder), max_duration="1ba",
                                                                         save_interval="1ba", run_name="shape")))
    trainer.fit()
    trainer.close()
    checkpoint = str(folder / "ep0-ba1-rank0.pt")
    for extra, expected in [
            ({"model.config.num_hidden_layers": 3},
             r"It holds a mosaic_bert model, this recipe builds mosaic_bert; num_hidden_layers 1 \(checkpoint\) "
             r"vs 3 \(recipe\)"),
            ({"model.config.hidden_size": 64, "model.config.intermediate_size": 64},
             r"hidden_size 32 \(checkpoint\) vs 64 \(recipe\)")]:
        overrides = tiny_overrides(tiny_mds, str(tmp_path / "other"), load_path=checkpoint, **extra)
        with pytest.raises(RecipeError, match=expected) as err:
            build_pretraining_trainer(load_config(DEMO, overrides))
        assert f"starts from, {checkpoint!r}, does not fit" in str(err.value)
    overrides = tiny_overrides(tiny_mds, str(folder), run_name="shape", autoresume="true",
                               **{"model.config.num_hidden_layers": 3})
    with pytest.raises(RecipeError, match=r"latest-rank0\.pt', does not fit.*num_hidden_layers 1"):
        build_pretraining_trainer(load_config(DEMO, overrides))
    overrides = tiny_overrides(tiny_mds, str(tmp_path / "hf"), model="hf_bert", load_path=checkpoint)
    with pytest.raises(RecipeError, match="It holds a mosaic_bert model, this recipe builds hf_bert"):
        build_pretraining_trainer(load_config(DEMO, overrides))


def test_the_run_seed_sets_the_data_order_and_masks(tiny_mds, tmp_path):
    def first_batch(seed):
        overrides = tiny_overrides(tiny_mds, str(tmp_path / f"s{seed}"), seed=seed) + ["save_folder=null"]
        trainer = build_pretraining_trainer(load_config(DEMO, overrides))
        batch = next(iter(trainer.state.train_dataloader))
        trainer.close()
        return [int(i) for i in batch["sample_idx"]], batch["labels"]

    order, labels = first_batch(1)
    again, same_labels = first_batch(1)
    other, _ = first_batch(2)
    assert order == again and torch.equal(labels, same_labels)
    assert order != other


def test_a_new_run_refuses_a_local_save_folder_with_an_earlier_runs_checkpoints(tiny_mds, tmp_path):
    folder = tmp_path / "ckpt"
    overrides = tiny_overrides(tiny_mds, str(folder), max_duration="3ba", save_overwrite="false")
    first = build_pretraining_trainer(load_config(DEMO, overrides))
    first.fit()
    first.close()
    written = (folder / "ep0-ba3-rank0.pt").read_bytes()
    # Composer itself would stop at fit start with a FileExistsError naming overwrite=True, not a recipe key.
    with pytest.raises(RecipeError, match=re.escape(f"save_folder '{folder}' already holds 1 checkpoint(s) of an "
                                                    "earlier run (ep0-ba3-rank0.pt)")) as err:
        build_pretraining_trainer(load_config(DEMO, overrides))
    assert "autoresume=true" in str(err.value) and "save_overwrite=true" in str(err.value)
    assert (folder / "ep0-ba3-rank0.pt").read_bytes() == written
    # A save_folder without {run_name}: another run_name would not move it, so the message does not offer one.
    with pytest.raises(RecipeError, match="start a new one under another save_folder, or replace") as err:
        build_pretraining_trainer(load_config(DEMO, overrides + ["run_name=other"]))
    # Each way out named in the message starts.
    for way_out in (["save_overwrite=true"], ["autoresume=true", "run_name=tiny"],
                    ["load_path=" + str(folder / "ep0-ba3-rank0.pt"), "max_duration=4ba"]):
        build_pretraining_trainer(load_config(DEMO, overrides + way_out)).close()


def test_main_py_trains_and_prints_a_summary(tiny_mds, tmp_path):
    args = tiny_overrides(tiny_mds, str(tmp_path / "ckpt"), max_duration="4ba", eval_interval="2ba",
                          callbacks="{training_summary: {}}",
                          loggers=f"{{jsonl: {{path: {tmp_path / 'metrics.jsonl'}}}}}")
    result = run_main([DEMO, *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Training summary" in result.stdout
    assert "(mean of all 4 batches)" in result.stdout  # no first -> last within the summary's window
    assert "eval MaskedAccuracy" in result.stdout
    assert (tmp_path / "ckpt" / "ep0-ba4-rank0.pt").is_file()
    assert "loss/train/total" in (tmp_path / "metrics.jsonl").read_text()


@pytest.mark.parametrize("override, message", [
    (["max_duraton=5ba"], "Did you mean 'max_duration'"),
    (["global_train_batch_size=10", "device_train_microbatch_size=4"], "does not divide"),
    (["variables.data_local=/nonexistent/data"], "/nonexistent/data"),
    (["tokenizer_name=/no/such/tokenizer"], "could not be loaded"),
    (["precision=amp_bf16"], "needs a GPU"),
    (["fsdp_config={sharding_strategy: FULL_SHARD}"], "FSDP runs only on CUDA GPUs"),
    (["compile_config.optimize_ddp=flase"], "optimize_ddp='flase' is not valid"),
    (["max_duration=banana"], "max_duration='banana' is not a time. Use one of: 10ba"),
    (["eval_interval=banana"], "eval_interval='banana' is not a time"),
    (["save_interval=xyz"], "save_interval='xyz' is not a time"),
    (["global_train_batch_size=-3"], "global_train_batch_size=-3 must be a positive integer"),
    ([f"save_folder={REPO}/README.md/ckpt"], f"save_folder='{REPO}/README.md/ckpt' cannot be made: '{REPO}/README.md' "
                                             "is a file, not a folder"),
    (["autoresume=true", "save_folder=null"], "autoresume=true needs save_folder and a fixed run_name"),
    pytest.param(["device=gpu"], "device=gpu but no CUDA GPU is visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")),
])
def test_bad_recipes_fail_with_one_clear_paragraph(tiny_mds, tmp_path, override, message):
    args = tiny_overrides(tiny_mds, str(tmp_path / "ckpt")) + override
    assert_refused(run_main([DEMO, *args], tmp_path), message)
    assert not (tmp_path / "ckpt").exists(), "a failed start must not write checkpoints"


def test_a_yaml_syntax_error_is_one_paragraph_with_line_and_column(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(open(DEMO).read().replace("betas: [0.9, 0.98]", "betas: [0.9, 0.98"))
    assert_refused(run_main([str(broken)], tmp_path), f"Recipe {str(broken)!r} is not valid YAML: line ")
    assert sorted(os.listdir(tmp_path)) == ["broken.yaml"]


def test_a_truncated_shard_stops_main_py_in_seconds_naming_it(tiny_mds, tmp_path):
    """Was a zstd "Src size is incorrect" traceback from streaming's thread, and with some timings a hang."""
    data = tmp_path / "data"
    shutil.copytree(tiny_mds, data, ignore=shutil.ignore_patterns("*.mds"))  # no decompressed copies
    shard = data / "train" / "shard.00000.mds.zstd"
    shard.write_bytes(shard.read_bytes()[:1000])
    args = tiny_overrides(str(data), str(tmp_path / "ckpt"))
    started = time.monotonic()
    result = run_main([DEMO, *args], tmp_path)
    assert time.monotonic() - started < 120
    assert_refused(result, f"{shard} is 1,000 bytes but index.json records")
    assert "--overwrite" in result.stderr
    assert not (tmp_path / "ckpt").exists()


def test_hf_bert_rejects_sequences_longer_than_its_position_table(tiny_mds, tmp_path):
    cfg = load_config(DEMO, tiny_overrides(tiny_mds, str(tmp_path), "hf_bert", max_seq_len=128))
    with pytest.raises(RecipeError, match="max_position_embeddings"):
        build_pretraining_trainer(cfg)


def test_compile_config_optimize_ddp_is_a_dynamo_setting_not_a_compile_argument(tiny_mds, tmp_path):
    import torch._dynamo

    from mosaicbert.training.trainer import TORCH_OPTIMIZE_DDP, trainer_kwargs

    cfg = load_config(DEMO, tiny_overrides(tiny_mds, str(tmp_path)) + ["compile_config.optimize_ddp=false",
                                                                       "compile_config.dynamic=true"])
    before = torch._dynamo.config.optimize_ddp
    try:
        torch._dynamo.config.optimize_ddp = True
        kwargs = trainer_kwargs(cfg, "gpu", 4)  # on CPU, older torch trains eagerly (the next test)
        assert kwargs["compile_config"] == {"dynamic": True}  # torch.compile would reject optimize_ddp
        assert torch._dynamo.config.optimize_ddp is False
        assert cfg.compile_config["optimize_ddp"] is False  # the recipe itself is left as written
        # A later build in the same process without the key (the next fine-tuning job) gets torch's default.
        trainer_kwargs(load_config(DEMO, tiny_overrides(tiny_mds, str(tmp_path))), "gpu", 4)
        assert torch._dynamo.config.optimize_ddp == TORCH_OPTIMIZE_DDP
    finally:
        torch._dynamo.config.optimize_ddp = before


def test_the_base_recipe_trains_on_cpu_as_the_readme_says(tiny_mds, tmp_path, caplog):
    """``main.py yamls/mosaicbert-base.yaml precision=fp32 device=cpu``, tiny: compiled where torch's Inductor can
    build the model's CPU kernels, eagerly (with a warning) where it cannot."""
    from mosaicbert.training.time_budget import compiled_graph_count
    from mosaicbert.training.trainer import CPU_COMPILE_MIN_TORCH, torch_version

    base = os.path.join(REPO, "yamls", "mosaicbert-base.yaml")
    overrides = tiny_overrides(tiny_mds, str(tmp_path), max_duration="2ba", precision="fp32", device="cpu",
                               eval_loader="null")
    graphs = compiled_graph_count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = build_pretraining_trainer(load_config(base, overrides + ["save_folder=null"]))
    # The recipe's eval_interval and eval_subset_num_batches have no eval loader to act on: not passed on.
    assert not [w for w in caught if "without an `eval_dataloader`" in str(w.message)]
    trainer.fit()
    assert int(trainer.state.timestamp.batch) == 2
    assert torch.isfinite(torch.as_tensor(trainer.state.loss)).all()
    eager = torch_version() < CPU_COMPILE_MIN_TORCH
    assert ("cannot compile this recipe's models on CPU" in caplog.text) == eager
    assert (compiled_graph_count() > graphs) != eager
    trainer.close()


def test_training_summary_counts_the_real_tokens_after_its_window(tiny_mds, tmp_path, capsys):
    from mosaicbert.data.mlm_collator import row_lengths

    class RealTokens(Callback):
        def __init__(self):
            self.per_batch = []

        def batch_end(self, state, logger):
            self.per_batch.append(sum(row_lengths(state.batch)))

    cfg = load_config(DEMO, tiny_overrides(tiny_mds, str(tmp_path), max_duration="24ba", eval_loader="null",
                                           callbacks="{training_summary: {}}") + ["save_folder=null"])
    trainer = build_pretraining_trainer(cfg)
    counter = RealTokens()
    trainer.state.callbacks.append(counter)
    trainer.fit()
    trainer.close()
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("real tokens / s"))
    counted = int(line.split("(")[1].split(" tokens")[0].replace(",", ""))
    assert counted == sum(counter.per_batch[20:])  # the batches after the 20-batch window


def test_step_profile_reports_the_profiled_batches(tiny_mds, tmp_path, capsys):
    """callbacks.step_profile profiles batches 2..4 of a real run: the wall time per batch is the loop's
    (the profiled batches' time divided by their number), the host operations include the model's matmuls,
    the phases that Composer's events delimit have their host time, and the Chrome trace is written. (On
    CPU there are no GPU columns.)"""
    trace = tmp_path / "trace-{rank}.json"
    overrides = tiny_overrides(tiny_mds, str(tmp_path / "run"), **{
        "callbacks.step_profile.skip": 2, "callbacks.step_profile.batches": 3,
        "callbacks.step_profile.trace_path": str(trace)})
    trainer = build_pretraining_trainer(load_config(DEMO, overrides))
    profile = next(cb for cb in trainer.state.callbacks if isinstance(cb, StepProfile))
    trainer.fit()
    trainer.close()
    summary = profile.summary
    assert summary is not None and summary["batches"] == 3 and summary["kernel_ms"] is None
    assert 0 < summary["wall_ms"] < 60_000
    assert any("mm" in name or "linear" in name for name, _ in summary["top_host_ops"]), summary["top_host_ops"]
    assert not any(name.startswith(step_profile.PHASE_PREFIX) for name, _ in summary["top_host_ops"])
    assert sum(ms for _, ms in summary["top_host_ops"]) <= summary["wall_ms"] * 1.05
    phases = summary["phases"]
    assert list(phases) == step_profile.PHASES
    assert phases["forward"]["host_ms"] > 0 and phases["backward"]["host_ms"] > 0
    # The marked phases take part of the wall time (the rest is data, optimizer, loop), never more.
    marked = sum(phases[name]["host_ms"] for name in ("forward", "loss", "backward"))
    assert 0 < marked < summary["wall_ms"]
    assert phases[step_profile.REST_PHASE]["host_ms"] == pytest.approx(summary["wall_ms"] - marked)
    assert all(p["gpu_ops"] == 0 for p in phases.values())
    # In the trace: one range per phase and microbatch (3 batches of 2 microbatches), in the step's order.
    events = step_profile.load_trace(str(tmp_path / "trace-0.json"))
    ranges = {name: sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                           if e.get("name") == step_profile.PHASE_PREFIX + name)
              for name in ("forward", "loss", "backward")}
    assert [len(r) for r in ranges.values()] == [6, 6, 6]
    for forward, loss, backward in zip(*ranges.values()):
        assert forward[1] <= loss[0] <= loss[1] <= backward[0] < backward[1]
    assert os.path.getsize(tmp_path / "trace-0.json") > 1000
    out = capsys.readouterr().out
    assert "Step profile over 3 batches" in out and f"| forward | {phases['forward']['host_ms']:.1f} | - | - |" in out
    # The saved trace can be summarized again later; a CPU trace has no GPU side, and says so.
    again = subprocess.run([sys.executable, "-m", "mosaicbert.training.step_profile", str(tmp_path / "trace-0.json"),
                            "--batches", "3"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "has no GPU kernels" in again.stderr, again.stderr[-2000:]


def test_gpu_busy_time_is_the_union_of_kernels_without_annotated_ranges(tmp_path, capsys):
    """Busy time counts overlapping kernels once and leaves out record_function ranges on the GPU timeline
    (the optimizer's step range spans its kernels); idle gaps are split at 0.1 ms; a saved Chrome trace
    gives the same figures from the command line."""
    trace = [{"cat": cat, "name": name, "ts": start, "dur": end - start} for cat, name, start, end in [
        ("kernel", "gemm", 0, 1000),
        ("kernel", "elementwise", 500, 1200),          # overlaps the gemm on another stream
        ("gpu_memset", "memset", 200, 300),            # inside the gemm's interval
        ("kernel", "gemm", 1250, 2000),                # after a 50 us gap: launch-bound
        ("gpu_user_annotation", "Optimizer.step#AdamW.step", 0, 5000),  # a record_function range on the GPU
        ("user_annotation", "microbatch#range", 0, 3000),               # ... and one on the host
        ("cpu_op", "aten::mm", 0, 3000),
        ("kernel", "adam", 4000, 4500),                # after a 2 ms stall
        ("kernel", "empty", 4600, 4600),               # no duration: nothing ran
    ]]
    gpu = step_profile.trace_device_events(trace)
    assert [name for name, _, _ in gpu] == ["gemm", "elementwise", "memset", "gemm", "adam"]
    timeline = {"busy_us": 2450.0, "span_us": 4500.0, "short_gaps_us": 50.0, "long_gaps_us": 2000.0}
    assert step_profile.gpu_timeline(gpu) == timeline
    assert step_profile.gpu_timeline(gpu[::-1]) == timeline  # in any order
    assert step_profile.kernel_times(gpu) == [("gemm", 1750.0), ("elementwise", 700.0), ("adam", 500.0),
                                              ("memset", 100.0)]
    summary = step_profile.summarize_trace(trace, wall_ms=5.0, batches=1, top=2)
    assert summary["kernel_ms"] == pytest.approx(2.45) and summary["idle_ms"] == pytest.approx(2.55)
    assert summary["idle_short_gaps_ms"] == pytest.approx(0.05) and summary["idle_stalls_ms"] == pytest.approx(2.5)
    assert summary["top_kernels"] == [("gemm", 1.75), ("elementwise", 0.7)]  # top=2
    assert summary["phases"] == {}  # no phase ranges in this trace
    with gzip.open(tmp_path / "trace.json.gz", "wt") as f:
        json.dump({"traceEvents": trace}, f)
    step_profile.main([str(tmp_path / "trace.json.gz"), "--batches", "1"])
    assert "| 4.5 | 2.5 | 2.0 (46%) | 0.1 | 2.0 | 5 |" in capsys.readouterr().out


def test_phases_own_the_gpu_operations_launched_inside_them(capsys):
    """Each GPU operation belongs to the phase whose host range holds its launch, whichever thread launched it
    (the backward pass launches from autograd's thread) and whenever it ran on the GPU; an operation launched
    between the phases, or without a launch in the trace, is the rest of the step's. Figures are per batch."""
    def annotation(name, ts, dur):
        return {"cat": "user_annotation", "name": step_profile.PHASE_PREFIX + name, "ts": ts, "dur": dur, "tid": 1}

    def launch(correlation, ts, tid=1, cat="cuda_runtime"):
        return {"cat": cat, "name": "cudaLaunchKernel", "ts": ts, "dur": 5, "tid": tid,
                "args": {"correlation": correlation}}

    def kernel(correlation, ts, dur, name="k"):
        return {"cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": {"correlation": correlation}}

    trace = [
        # two batches: forward 0-100 and 1000-1100, backward 200-500 and 1200-1500 on the main thread
        annotation("forward", 0, 100), annotation("backward", 200, 300),
        annotation("forward", 1000, 100), annotation("backward", 1200, 300),
        launch(1, 10), kernel(1, 20, 50),                    # forward, runs inside its phase
        launch(2, 90), kernel(2, 150, 80),                   # forward, runs after its host range ended
        launch(3, 250, tid=2, cat="cuda_driver"), kernel(3, 260, 100),  # backward, from autograd's thread
        launch(4, 1010), kernel(4, 1020, 70),
        launch(5, 1300, tid=2), kernel(5, 1310, 30), kernel(6, 1320, 30),  # 6: no launch in the trace
        launch(7, 600), kernel(7, 610, 40, name="adam"),     # between the phases: the optimizer step
        {"cat": "gpu_user_annotation", "name": step_profile.PHASE_PREFIX + "forward", "ts": 0, "dur": 100},
    ]
    phases = step_profile.phase_times(trace, batches=2)
    assert phases["forward"] == {"host_ms": pytest.approx(0.1), "gpu_ops": 1.5, "gpu_ms": pytest.approx(0.1)}
    assert phases["backward"] == {"host_ms": pytest.approx(0.3), "gpu_ops": 1.0, "gpu_ms": pytest.approx(0.065)}
    assert phases["loss"] == {"host_ms": 0.0, "gpu_ops": 0.0, "gpu_ms": 0.0}
    assert phases[step_profile.REST_PHASE] == {"host_ms": None, "gpu_ops": 1.0, "gpu_ms": pytest.approx(0.035)}
    summary = step_profile.summarize_trace(trace, wall_ms=1.0, batches=2, top=0)
    assert summary["phases"][step_profile.REST_PHASE]["host_ms"] == pytest.approx(1.0 - 0.1 - 0.3)
    print(step_profile.report(summary))
    out = capsys.readouterr().out
    assert "| forward | 0.1 | 2 | 0.1 |" in out and "| backward | 0.3 | 1 | 0.1 |" in out
    assert f"| {step_profile.REST_PHASE} | 0.6 | 1 | 0.0 |" in out
    # From a saved trace alone the wall time is the GPU's span, on another clock: the rest's host time is unknown.
    again = step_profile.summarize_trace(trace, wall_ms=None, batches=2, top=0)
    assert again["phases"][step_profile.REST_PHASE]["host_ms"] is None
    assert again["phases"]["forward"] == phases["forward"]
    assert f"| {step_profile.REST_PHASE} | - | 1 | 0.0 |" in step_profile.report(again)


@pytest.mark.parametrize("value, message", [
    ("callbacks.step_profile.batches=0", r"callbacks\.step_profile\.batches=0: give a whole number of at least 1"),
    ("callbacks.step_profile.skp=3", r"Did you mean 'skip'"),
])
def test_step_profile_settings_are_checked(tiny_mds, tmp_path, value, message):
    with pytest.raises(RecipeError, match=message):
        load_config(DEMO, tiny_overrides(tiny_mds, str(tmp_path / "run")) + [value])
