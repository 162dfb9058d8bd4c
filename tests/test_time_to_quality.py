"""Time to quality (benchmarks/time_to_quality.py): the curve arithmetic, and the whole pipeline at toy size on CPU."""

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time

import pytest

from mosaicbert.analysis import time_to_quality as pareto
from mosaicbert.errors import RecipeError

from conftest import load_script, make_documents

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def curve(*points):
    return [{"step": i, "seconds": s, "loss": l, "accuracy": math.nan} for i, (s, l) in enumerate(points)]


def test_time_to_reach_interpolates_between_evaluations():
    c = curve((10, 8.0), (20, 6.0), (30, 5.0))
    assert pareto.time_to_reach(c, 7.0) == pytest.approx(15.0)
    assert pareto.time_to_reach(c, 6.0) == pytest.approx(20.0)
    assert pareto.time_to_reach(c, 9.0) == pytest.approx(10.0)  # already below at the first evaluation
    assert pareto.time_to_reach(c, 4.0) is None
    assert pareto.time_to_reach(c, 7.0, key="step") == pytest.approx(0.5)  # curve()'s steps are 0, 1, 2


def test_time_to_reach_takes_the_first_crossing():
    c = curve((10, 8.0), (20, 5.0), (30, 7.0), (40, 4.0))
    assert pareto.time_to_reach(c, 6.0) == pytest.approx(10 + 10 * 2 / 3)


def test_a_nan_evaluation_is_skipped_and_a_diverged_run_is_never_the_best():
    assert pareto.time_to_reach(curve((15, 6.5), (30, math.nan), (45, 5.0)), 6.0) == pytest.approx(25.0)
    runs = {"diverged": curve((10, 6.0), (20, math.nan)), "good": curve((10, 6.0), (20, 5.3)),
            "worse": curve((10, 6.0), (20, 5.8))}
    for order in (list(runs), list(reversed(list(runs)))):
        assert pareto.best_run({name: runs[name] for name in order}) == "good"


def test_compare_reports_the_fraction_of_the_baseline_time():
    runs = {"base": {"curve": curve((100, 7.0), (300, 6.0)), "downstream": {"mean": 0.7, "std": 0.01, "n": 3}},
            "fast": {"curve": curve((100, 6.5), (200, 5.5), (300, 5.0)), "downstream": None}}
    summary = pareto.compare(runs, "base", "fast")
    assert summary["target_loss"] == 6.0
    assert summary["candidate_seconds_to_target"] == pytest.approx(150.0)
    assert summary["fraction_of_baseline_time"] == pytest.approx(0.5)
    table = pareto.markdown(summary, {"base": "B", "fast": "F"})
    assert "| B | 300 | 1 | 6.0000 |" in table
    assert "70.00 ± 1.00 (n=3)" in table
    assert "50% of B's 300 s" in table


def test_eval_curve_pairs_each_evaluation_with_the_training_clock(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "time/train_seconds": 0.5, "loss/train/total": 9.0},
            {"step": 2, "time/train_seconds": 1.0},
            {"step": 2, "metrics/eval/LanguageCrossEntropy": 8.0, "metrics/eval/MaskedAccuracy": 0.1},
            {"step": 3, "time/train_seconds": 1.5}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"step\": 4, \"tim")  # a torn last line
    assert pareto.eval_curve(str(log)) == [{"step": 2, "seconds": 1.0, "loss": 8.0, "accuracy": 0.1}]


def test_an_eval_log_written_from_a_curve_reads_back_as_that_curve(tmp_path):
    curve = [{"step": 10, "seconds": 15.2, "loss": 6.9, "accuracy": 0.05},
             {"step": 21, "seconds": 30.1, "loss": 5.5, "accuracy": 0.2}]
    pareto.write_eval_log(curve, str(tmp_path / "metrics.jsonl"))
    assert pareto.eval_curve(str(tmp_path / "metrics.jsonl")) == curve


def test_a_run_without_the_time_budget_is_named(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"step": 2, "metrics/eval/LanguageCrossEntropy": 8.0}) + "\n")
    with pytest.raises(RecipeError, match="time_budget"):
        pareto.eval_curve(str(log))


def write_inputs(root):
    for split, n, seed in (("train", 300, 0), ("val", 30, 1)):
        with open(root / f"{split}.jsonl", "w") as f:
            for doc in make_documents(n, seed):
                f.write(json.dumps({"text": doc}) + "\n")
    task = root / "task"
    task.mkdir()
    rng = random.Random(0)
    for split, n in (("train", 64), ("dev", 32)):
        with open(task / f"{split}.tsv", "w") as f:
            f.write("sentence\tlabel\n")
            for _ in range(n):
                label = rng.randint(0, 1)
                words = rng.sample(["good", "fine", "great"] if label else ["bad", "dull", "poor"], 2)
                f.write(f"the film was {words[0]} and {words[1]}\t{label}\n")
    return task


TINY_PRETRAIN = [
    "device=cpu", "precision=fp32", "compile_config=null", "global_train_batch_size=8",
    "device_train_microbatch_size=8", "device_eval_batch_size=16", "max_seq_len=128",
    "train_loader.num_workers=0", "eval_loader.num_workers=0", "model.config.hidden_size=32",
    "model.config.num_attention_heads=2", "model.config.intermediate_size=48", "model.config.num_hidden_layers=1",
    "python_log_level=warning",
]
TINY_FINETUNE = ["device=cpu", "precision=fp32", "default_seeds=[1,2]", "tasks.sentiment.max_duration=1ep"]


def test_runs_keep_the_published_data_seeds_and_mosaicberts_attention_layout(tmp_path):
    """New runs continue the published sweep: its data order and masks, and MosaicBERT's one-row-per-sequence
    SDPA (``auto`` now packs rows); a user's ``--set`` comes last, so it can still change either."""
    import argparse

    script = load_script("benchmarks/time_to_quality.py")
    (tmp_path / "mds" / "train").mkdir(parents=True)
    args = argparse.Namespace(out=str(tmp_path / "out"), tokenizer="tok", eval_every_s=15.0,
                              overrides=["model.config.attention_backend=auto"])
    commands = {}
    for model in ("bert", "mosaicbert"):
        run = {"model": model, "lr": 5e-4, "warmup": "300ba", "budget_s": 150.0}
        commands[model] = script.pretrain_command(model, run, args, str(tmp_path / "mds"))
    for command in commands.values():
        assert "train_loader.shuffle_seed=9176" in command and "train_loader.mask_seed=0" in command
    pinned = "model.config.attention_backend=sdpa"
    assert pinned not in commands["bert"]
    mosaic = commands["mosaicbert"]
    assert mosaic.index(pinned) < mosaic.index("model.config.attention_backend=auto") == len(mosaic) - 1


def test_the_sweep_runs_end_to_end_on_cpu_and_a_rerun_reuses_finished_runs(tmp_path):
    task = write_inputs(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, os.path.join(REPO, "benchmarks", "time_to_quality.py"),
               "--train", str(tmp_path / "train.jsonl"), "--val", str(tmp_path / "val.jsonl"),
               "--task_dir", str(task), "--out", str(out), "--budget_s", "3", "--eval_every_s", "1",
               "--lrs", "1e-3", "3e-3", "--gpus", "", "--summary", str(tmp_path / "published.json"),
               "--finetune_jobs_per_gpu", "2", "--set", *TINY_PRETRAIN, "--finetune_set", *TINY_FINETUNE]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    record = json.loads((out / "results.json").read_text())
    assert len(record["sweep"]) == 4  # 2 models x 2 learning rates
    for model in ("bert", "mosaicbert"):
        runs = {name: run for name, run in record["sweep"].items() if run["model"] == model}
        assert {run["lr"] for run in runs.values()} == {1e-3, 3e-3}
        best = record["best"][model]
        assert record["sweep"][best]["final"]["loss"] == min(run["final"]["loss"] for run in runs.values())
    for name, curve in record["curves"].items():
        seconds = [p["seconds"] for p in curve]
        # Evaluated about every second of training, ending at the 3 s budget (within one batch).
        assert len(seconds) >= 3 and seconds == sorted(seconds), (name, seconds)
        assert 3.0 <= seconds[-1] < 4.5, (name, seconds)
    comparison = record["budgets"]["3s"]
    assert comparison["settings"]["bert"]["run"] == record["best"]["bert"]
    for model in ("bert", "mosaicbert"):
        down = comparison["runs"][model]["downstream"]
        assert down["n"] == 2 and 0.0 <= down["mean"] <= 1.0
    assert os.path.getsize(out / "time_to_quality.png") > 10_000
    assert "reaches" in result.stdout or "did not reach" in result.stdout
    assert (out / "results.md").read_text() in result.stdout
    published = json.loads((tmp_path / "published.json").read_text())
    assert published["budgets"]["3s"] == comparison and "machine" in published and "--lrs" in published["command"]
    assert published["baseline"] == "bert"
    # The published summary alone redraws the sweep's plot.
    plotted = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "plot.py"), "sweep",
                              str(tmp_path / "published.json"), "--out", str(tmp_path / "sweep.png")],
                             capture_output=True, text=True, timeout=120, env=env)
    assert plotted.returncode == 0, plotted.stderr[-2000:]
    assert os.path.getsize(tmp_path / "sweep.png") > 10_000

    # A second run continues the first: every finished run is reused, nothing trains again.
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier, reused") == 6  # 4 pretraining runs, 2 fine-tunings
    assert json.loads((out / "results.json").read_text())["sweep"] == record["sweep"]

    # Run folders brought from another machine hold the metrics but not the checkpoints: the sweep and the
    # comparison are rebuilt from them, and only runs with a final checkpoint are fine-tuned.
    best_bert = record["best"]["bert"]
    shutil.rmtree(out / best_bert / "checkpoints")
    shutil.rmtree(out / best_bert / "finetune")
    os.remove(out / best_bert / "finetune.DONE")
    moved = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert f"{best_bert}: no final checkpoint" in moved.stdout
    rebuilt = json.loads((out / "results.json").read_text())
    assert rebuilt["sweep"] == record["sweep"]
    assert rebuilt["budgets"]["3s"]["runs"]["bert"]["downstream"] is None
    assert rebuilt["budgets"]["3s"]["runs"]["mosaicbert"]["downstream"] == comparison["runs"]["mosaicbert"]["downstream"]

    # A published summary (the last one: BERT's best without a checkpoint) continues the experiment elsewhere:
    # its runs count as finished in a new --out, and so do its fine-tuning results; nothing trains again.
    def elsewhere_command(out_name, summary):
        at = command.index("--out")
        changed = [*command[:at + 1], str(tmp_path / out_name), *command[at + 2:]]
        at = changed.index("--summary")
        return [*changed[:at + 1], str(tmp_path / f"{out_name}.json"), *changed[at + 2:], "--reuse", str(summary)]

    continued = subprocess.run(elsewhere_command("continued", tmp_path / "published.json"), capture_output=True,
                               text=True, timeout=300, env=env, cwd=tmp_path)
    assert continued.returncode == 0, continued.stdout[-3000:] + continued.stderr[-3000:]
    assert "reusing 4 finished run(s)" in continued.stdout and "; with the fine-tuning results of" in continued.stdout
    assert "trained |" not in continued.stderr and "finetune.log" not in continued.stdout
    assert json.loads((tmp_path / "continued" / "results.json").read_text())["budgets"] == rebuilt["budgets"]

    # A summary without fine-tuning results (a sweep run alone): the runs have no checkpoint to fine-tune.
    sweep_summary = {key: value for key, value in published.items() if key != "downstream"}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep_summary))
    elsewhere = elsewhere_command("elsewhere", tmp_path / "sweep.json")
    reused = subprocess.run(elsewhere, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert reused.returncode == 0, reused.stderr[-3000:]
    assert "reusing 4 finished run(s)" in reused.stdout and "trained |" not in reused.stderr
    again_elsewhere = json.loads((tmp_path / "elsewhere" / "results.json").read_text())
    assert again_elsewhere["sweep"] == record["sweep"] and again_elsewhere["best"] == record["best"]
    assert all(r["downstream"] is None for r in again_elsewhere["budgets"]["3s"]["runs"].values())
    # --retrain_best trains the best settings again (their reused runs have no checkpoint), --long_budget_s
    # trains them for longer; each such run is fine-tuned as soon as it has pretrained, and the summary is
    # rewritten after every stage: here every fine-tuning fails (a bad override), and the summary still
    # holds the four pretraining runs.
    longer = [*elsewhere, "--retrain_best", "--long_budget_s", "4"]
    failing = subprocess.run([*longer, "--finetune_set", *TINY_FINETUNE, "tasks.sentiment.not_a_key=1"],
                             capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert failing.returncode == 1 and "finetune of" in failing.stderr, failing.stdout[-3000:] + failing.stderr[-3000:]
    new_runs = [record["best"][model] + "-again" for model in ("bert", "mosaicbert")] + [
        record["best"][model].replace("-3s", "-4s") for model in ("bert", "mosaicbert")]
    partial = json.loads((tmp_path / "elsewhere.json").read_text())
    assert set(new_runs) <= set(partial["curves"]) and partial["downstream"] == {}
    assert partial["earlier"][-1]["command"] == published["command"]
    # Reused elsewhere, that summary gives back the sweep, not the runs it lacks the fine-tuning of (their
    # checkpoints went with the machine; they are trained again).
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    partial_command = elsewhere_command("partial", tmp_path / "partial.json")
    at = partial_command.index("--task_dir")
    restarted = subprocess.run([*partial_command[:at], *partial_command[at + 2:], "--report_only"],
                               capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "reusing 4 finished run(s)" in restarted.stdout
    assert not any((tmp_path / "partial" / name).exists() for name in new_runs)
    retrained = subprocess.run(longer, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert retrained.returncode == 0, retrained.stdout[-3000:] + retrained.stderr[-3000:]
    assert "trained |" not in retrained.stderr and retrained.stdout.count("finetune.log") == 4
    with_again = json.loads((tmp_path / "elsewhere" / "results.json").read_text())
    assert with_again["sweep"] == record["sweep"] and with_again["best"] == record["best"]
    for model in ("bert", "mosaicbert"):
        again = with_again["budgets"]["3s"]["runs"][model]
        assert with_again["budgets"]["3s"]["settings"][model]["run"] == record["best"][model] + "-again"
        assert again["downstream"]["n"] == 2 and again["curve"] == with_again["curves"][record["best"][model] + "-again"]
        assert 3.0 <= again["curve"][-1]["seconds"] < 4.5
        long_run = with_again["budgets"]["4s"]["runs"][model]
        assert long_run["downstream"]["n"] == 2 and 4.0 <= long_run["curve"][-1]["seconds"] < 5.5
    # Best against best is also reported for the sweep's own best runs, which the retrained runs may not match.
    sweep_best = with_again["budgets"]["3s-sweep"]
    assert {m: s["run"] for m, s in sweep_best["settings"].items()} == record["best"]
    assert sweep_best["target_loss"] == record["sweep"][record["best"]["bert"]]["final"]["loss"]
    # The summary alone draws the longer runs.
    long_plot = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "plot.py"), "long",
                                str(tmp_path / "elsewhere.json"), "--out", str(tmp_path / "long.png")],
                               capture_output=True, text=True, timeout=120, env=env)
    assert long_plot.returncode == 0, long_plot.stderr[-2000:]
    assert os.path.getsize(tmp_path / "long.png") > 10_000
    results_md = (tmp_path / "elsewhere" / "results.md").read_text()
    assert "3 s of training each, the sweep's best runs" in results_md
    assert "3 s of training each, trained again" in results_md
    # ... and its summary continues the whole experiment in yet another place, with nothing left to do.
    final = subprocess.run([*elsewhere_command("final", tmp_path / "elsewhere.json"), "--retrain_best",
                            "--long_budget_s", "4"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert "reusing 8 finished run(s)" in final.stdout and "trained |" not in final.stderr
    assert "finetune.log" not in final.stdout
    assert json.loads((tmp_path / "final" / "results.json").read_text())["budgets"] == with_again["budgets"]
    mismatched = subprocess.run([*elsewhere, "--eval_every_s", "2"], capture_output=True, text=True, timeout=120,
                                env=env, cwd=tmp_path)
    assert mismatched.returncode == 2 and "was made with another setup" in mismatched.stderr, mismatched.stderr[-2000:]
    # --reuse with --overwrite is refused before anything is removed.
    both = subprocess.run([*elsewhere, "--overwrite"], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert both.returncode == 2 and "give one of them" in both.stderr, both.stderr[-2000:]
    assert all((tmp_path / "elsewhere" / name / "pretrain.DONE").is_file() for name in record["sweep"])

    # --report_only trains nothing: a run that did not finish (no pretrain.DONE; say the machine went away)
    # is named with how far it got and left out of the sweep and the choice of the best.
    cut = next(name for name in record["sweep"] if name != record["best"]["bert"] and name.startswith("bert"))
    os.remove(tmp_path / "elsewhere" / cut / "pretrain.DONE")
    # ... and one stopped before its clock was first logged (an empty log): named, with no evaluation.
    early = next(name for name in record["sweep"] if name != record["best"]["mosaicbert"] and name.startswith("mosaic"))
    os.remove(tmp_path / "elsewhere" / early / "pretrain.DONE")
    (tmp_path / "elsewhere" / early / "metrics.jsonl").write_text("")
    without_reuse = elsewhere[:elsewhere.index("--reuse")]  # --reuse would fill the cut run in again
    at = without_reuse.index("--task_dir")
    without_task = without_reuse[:at] + without_reuse[at + 2:]  # --report_only fine-tunes nothing
    report = subprocess.run([*without_task, "--report_only", "--summary", str(tmp_path / "report.json")],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "trained |" not in report.stderr and f"Unfinished, left out of the sweep: {cut}" in report.stdout
    reported = json.loads((tmp_path / "report.json").read_text())
    assert f"Unfinished, left out of the sweep: {early} (no evaluation)" in report.stdout
    assert reported["unfinished"][early]["curve"] == []
    assert set(reported["sweep"]) == set(record["sweep"]) - {cut, early} and reported["best"] == record["best"]
    assert reported["unfinished"][cut]["curve"] == record["curves"][cut] and reported["unfinished"][cut]["lr"] == record["sweep"][cut]["lr"]
    refused = subprocess.run([*without_reuse, "--report_only", "--overwrite"], capture_output=True, text=True,
                             timeout=120, env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "--report_only tabulates" in refused.stderr, refused.stderr[-2000:]
    assert (tmp_path / "elsewhere" / record["best"]["bert"] / "pretrain.DONE").is_file()


def test_a_cut_short_conversion_from_an_earlier_run_is_named(tmp_path):
    """The script converts into <out>/mds itself: a folder left there without its index is its own earlier,
    interrupted conversion, and the error says to delete it (not to build data elsewhere)."""
    script = load_script("benchmarks/time_to_quality.py")
    (tmp_path / "mds" / "train").mkdir(parents=True)  # shards never finished: no index.json
    args = script.parse_args(["--train", "t.txt", "--val", "v.txt", "--task_dir", "x", "--out", str(tmp_path)])
    with pytest.raises(RecipeError, match="incomplete conversion from an earlier run.*Delete it"):
        script.prepare_data(args)


def test_a_summary_continues_with_what_it_finished_and_forgets_nothing(tmp_path):
    """--reuse restores a sweep run from its curve and a later run only with its fine-tuning result, never
    gives a run finished here another machine's result, and joins the summary's sweep runs of this budget to
    this sweep; a summary written mid-sweep names no best and lists what is unfinished; every summary keeps
    what the reused one held, and is written whole."""
    script = load_script("benchmarks/time_to_quality.py")
    out = tmp_path / "out"
    args = script.parse_args(["--out", str(out), "--budget_s", "3", "--eval_every_s", "1", "--lrs", "1e-3",
                              "--reuse", str(tmp_path / "reused.json"), "--summary", str(tmp_path / "new.json")])
    point = [{"step": 5, "seconds": 3.1, "loss": 7.0, "accuracy": 0.1}]
    accuracy = {"mean": 0.7, "std": 0.01, "n": 3}
    sweep_run = {"model": "bert", "lr": 2e-3, "warmup": "0.06dur", "budget_s": 3.0, "final": point[0]}
    record = {"scaled_recipe": script.SCALED, "eval_every_s": 1.0, "command": "python earlier",
              "sweep": {"bert-lr0.002-wu0.06dur-3s": sweep_run,
                        "bert-lr0.002-wu0.06dur-9s": {**sweep_run, "budget_s": 9.0}},
              "curves": {name: point for name in ("bert-lr0.002-wu0.06dur-3s", "bert-lr0.002-wu0.06dur-9s",
                                                  "bert-lr0.001-wu0.06dur-3s-again", "bert-lr0.001-wu0.06dur-600s",
                                                  "mosaicbert-lr0.001-wu0.06dur-3s")},
              "downstream": {"bert-lr0.001-wu0.06dur-3s-again": accuracy, "mosaicbert-lr0.001-wu0.06dur-3s": accuracy},
              "unfinished": {"bert-lr0.0002-wu300ba-3s": {"model": "bert", "curve": []}},
              "other_runs": {"bert-lr0.001-wu0.06dur-3s-again": {"model": "bert", "lr": 1e-3, "warmup": "0.06dur",
                                                                 "budget_s": 3.0}},
              "budgets": {"3s": {"baseline": "bert", "target_loss": 7.0}}}
    (tmp_path / "reused.json").write_text(json.dumps(record))
    # A run finished here, whose fine-tuning failed: the summary's result is another run's, not this one's.
    local = out / "mosaicbert-lr0.001-wu0.06dur-3s"
    local.mkdir(parents=True)
    pareto.write_eval_log([{**point[0], "loss": 6.0}], str(local / "metrics.jsonl"))
    (local / "pretrain.DONE").touch()
    assert script.reuse_summary(args) == record
    done = {name for name in os.listdir(out) if (out / name / "pretrain.DONE").exists()}
    assert done == {"bert-lr0.002-wu0.06dur-3s", "bert-lr0.002-wu0.06dur-9s", "bert-lr0.001-wu0.06dur-3s-again",
                    "mosaicbert-lr0.001-wu0.06dur-3s"}  # the 600 s run has no fine-tuning result: trained again
    assert (out / "bert-lr0.001-wu0.06dur-3s-again" / "finetune.DONE").exists()
    assert script.downstream(args, "bert-lr0.001-wu0.06dur-3s-again") == accuracy
    assert not (local / "finetune.DONE").exists() and pareto.eval_curve(str(local / "metrics.jsonl"))[0]["loss"] == 6.0
    joined = script.reused_sweep(args, record)
    assert set(joined) == {"bert-lr0.002-wu0.06dur-3s"}  # the 9 s run is another budget's

    # Mid-sweep (the grid's BERT run at 1e-3 has not finished): no best, the unfinished runs named.
    sweep = {**script.sweep_runs(args), **joined}
    progress = script.progress_record(args, sweep, others={})
    assert progress["best"] == {} and "bert-lr0.001-wu0.06dur-3s" in progress["unfinished"]
    assert set(progress["sweep"]) == {"bert-lr0.002-wu0.06dur-3s", "mosaicbert-lr0.001-wu0.06dur-3s"}
    script.write_summary(args, progress)
    written = json.loads((tmp_path / "new.json").read_text())
    assert not (tmp_path / "new.json.tmp").exists()
    assert set(written["curves"]) == set(record["curves"])  # the 600 s and 9 s runs are carried
    assert written["curves"]["mosaicbert-lr0.001-wu0.06dur-3s"][0]["loss"] == 6.0  # this machine's run wins
    assert written["downstream"] == record["downstream"] and written["earlier"] == [{"command": "python earlier"}]
    assert set(written["unfinished"]) == {"bert-lr0.0002-wu300ba-3s", "bert-lr0.001-wu0.06dur-3s"}
    # The best-against-best tables and the later runs' settings stay until this invocation has newer ones.
    assert written["budgets"] == record["budgets"] and written["other_runs"] == record["other_runs"]
    again = {"bert-lr0.001-wu0.06dur-3s-again": {"model": "bert", "lr": 1e-3, "warmup": "0.06dur", "budget_s": 3.0}}
    assert script.progress_record(args, sweep, others=again)["other_runs"] == again  # finished: restored above
    assert script.progress_record(args, sweep, others={"bert-lr0.001-wu0.06dur-9s": {}})["other_runs"] == {}
    # A longer run still pretraining (no pretrain.DONE) is listed with the curve it has reached, until it ends.
    longer = {"model": "bert", "lr": 1e-3, "warmup": "0.06dur", "budget_s": 9.0}
    (out / "bert-lr0.001-wu0.06dur-9s").mkdir()
    pareto.write_eval_log(point, str(out / "bert-lr0.001-wu0.06dur-9s" / "metrics.jsonl"))
    running = script.progress_record(args, sweep, others={"bert-lr0.001-wu0.06dur-9s": longer})
    assert running["unfinished"]["bert-lr0.001-wu0.06dur-9s"] == {**longer, "curve": point}
    assert "bert-lr0.001-wu0.06dur-9s" not in running["curves"] and running["other_runs"] == {}
    plotted = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "plot.py"), "sweep",
                              str(tmp_path / "new.json"), "--out", str(tmp_path / "sweep.png")],
                             capture_output=True, text=True, timeout=120)
    assert plotted.returncode == 2 and "has not finished" in plotted.stderr and not (tmp_path / "sweep.png").exists()
    assert "Traceback" not in plotted.stderr
    missing = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "plot.py"), "sweep",
                              str(tmp_path / "no.json"), "--out", str(tmp_path / "sweep.png")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and f"No such file: {tmp_path / 'no.json'}" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_sweep_plot_draws_each_best_setting_trained_again_dashed(tmp_path, monkeypatch):
    plot_script = load_script("scripts/plot.py")
    drawn = {}
    monkeypatch.setattr(plot_script, "plot_time_to_quality",
                        lambda bold, faint, out, **kwargs: drawn.update(bold=bold, faint=faint, **kwargs))
    curves = {"b-1": curve((1, 7.0), (2, 6.0)), "b-2": curve((1, 7.0), (2, 6.9)), "m-1": curve((1, 5.0), (2, 3.0)),
              "b-1-again": curve((1, 7.0), (2, 6.8)), "m-1-600s": curve((1, 5.0), (4, 2.0))}
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"sweep": {"b-1": {}, "b-2": {}, "m-1": {}}, "best": {"b": "b-1", "m": "m-1"},
                                   "curves": curves}))
    plot_script.plot_sweep(str(summary), str(tmp_path / "sweep.png"))
    assert list(drawn["bold"]) == ["b-1 (best of b)", "m-1 (best of m)"]
    assert list(drawn["faint"]) == ["b-2"]  # neither the retrained nor the longer run is part of the sweep
    assert {label: [p["loss"] for p in c] for label, c in drawn["dashed"].items()} == {
        "b-1-again (the same setting trained again)": [7.0, 6.8]}
    assert drawn["target"] == 6.0
    # The baseline is the one the summary names, not the first model listed.
    summary.write_text(json.dumps({"sweep": {"b-1": {}, "b-2": {}, "m-1": {}}, "best": {"m": "m-1", "b": "b-1"},
                                   "curves": curves, "baseline": "b"}))
    plot_script.plot_sweep(str(summary), str(tmp_path / "sweep.png"))
    assert drawn["target"] == 6.0 and drawn["target_label"] == "best b run's final loss"


def test_the_long_plot_draws_the_longest_runs_and_one_cut_short_dashed(tmp_path, monkeypatch, capsys):
    plot_script = load_script("scripts/plot.py")
    drawn = {}
    monkeypatch.setattr(plot_script, "plot_time_to_quality",
                        lambda bold, faint, out, **kwargs: drawn.update(bold=bold, faint=faint, **kwargs))
    run = {"lr": 1e-3, "warmup": "300ba"}
    summary = {"sweep": {"b-1": {"budget_s": 2.0}, "m-1": {"budget_s": 2.0}}, "best": {"b": "b-1", "m": "m-1"},
               "curves": {"b-1": curve((1, 7.0), (2, 6.0)), "m-1": curve((1, 5.0), (2, 3.0)),
                          "b-1-again": curve((1, 7.0), (2, 6.5)),
                          "b-1-8s": [{"step": 40, "seconds": 4.0, "loss": 5.0}, {"step": 80, "seconds": 8.0, "loss": 4.0}],
                          "b-1-4s": curve((2, 6.0), (4, 5.5))},
               "other_runs": {"b-1-again": {**run, "model": "b", "budget_s": 2.0},
                              "b-1-4s": {**run, "model": "b", "budget_s": 4.0},
                              "b-1-8s": {**run, "model": "b", "budget_s": 8.0}},
               "unfinished": {"m-1-8s": {**run, "model": "m", "budget_s": 8.0,
                                         "curve": [{"step": 20, "seconds": 2.0, "loss": 4.5},
                                                   {"step": 30, "seconds": 3.0, "loss": 3.5}]},
                              "m-2": {**run, "model": "m", "budget_s": 2.0, "curve": curve((1, 6.0))}}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    plot_script.plot_long(str(path), str(tmp_path / "long.png"))
    assert list(drawn["bold"]) == ["b-1-8s"] and drawn["faint"] == {}  # the longest budget only
    assert list(drawn["dashed"]) == ["m-1-8s (cut short at 3 s)"]
    assert drawn["target"] == 4.0 and "8 s" in drawn["title"]
    printed = capsys.readouterr().out  # the figures a doc quotes, from the summary alone
    assert "b-1-8s: 80 steps in 8.0 s (10.00 steps/s), eval loss 4.0000" in printed
    assert "m-1-8s (cut short): 30 steps in 3.0 s (10.00 steps/s), eval loss 3.5000" in printed
    assert "m-1-8s reaches b's final loss 4.0000 at 2.5 s (31.2% of 8.0 s), step 25 (of 80)" in printed
    # The baseline's long run not finished yet: no target line.
    del summary["other_runs"]["b-1-8s"]
    path.write_text(json.dumps(summary))
    plot_script.plot_long(str(path), str(tmp_path / "long.png"))
    assert list(drawn["bold"]) == [] and drawn["target"] is None
    summary["unfinished"] = {}
    summary["other_runs"] = {"b-1-again": summary["other_runs"]["b-1-again"]}
    path.write_text(json.dumps(summary))
    with pytest.raises(RecipeError, match="no run longer than the sweep's 2 s.*--long_budget_s"):
        plot_script.plot_long(str(path), str(tmp_path / "long.png"))


def test_the_summary_is_rewritten_while_a_run_pretrains(tmp_path, monkeypatch):
    """A machine that goes mid-run still leaves the run's curve so far: run_stages calls saved() every
    PROGRESS_SAVE_S seconds while a run pretrains, not only when a stage ends."""
    script = load_script("benchmarks/time_to_quality.py")
    args = script.parse_args(["--out", str(tmp_path)])
    (tmp_path / "run").mkdir()

    def start_stage(name, stage, runs, slot, args, mds):
        return name, stage, subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"]), None

    monkeypatch.setattr(script, "start_stage", start_stage)
    monkeypatch.setattr(script, "PROGRESS_SAVE_S", 0.5)
    saves = []
    script.run_stages(("pretrain",), {"run": {}}, [], args, saved=lambda: saves.append(time.monotonic()))
    assert (tmp_path / "run" / "pretrain.DONE").exists()
    assert len(saves) >= 4, saves  # about every 0.5 s of the 3 s run, and once when it ended
