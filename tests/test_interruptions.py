"""Interruptions while a checkpoint is written, and checkpoints that are not what they claim to be.

A checkpoint name only ever holds a complete file (written under a partial name, then renamed), so a run
stopped at any moment (Ctrl-C, SIGKILL, a full disk) continues with autoresume from its last complete
checkpoint, bit for bit, with no file for a person to delete. A load_path that is missing, truncated or
not a checkpoint stops the run before anything is made.
"""

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from mosaicbert.config import load_config
from mosaicbert.errors import RecipeError
from mosaicbert.training import callbacks
from mosaicbert.training.trainer import build_pretraining_trainer

from test_train import DEMO, REPO, assert_refused, run_main, tiny_overrides, weights

REAL_SAVE = torch.save


def checkpoint_batch(obj) -> int:
    return int(obj["state"]["timestamp"]["Timestamp"]["batch"]) if isinstance(obj, dict) and "state" in obj else -1


class FailSaveAt:
    """torch.save that writes half of the checkpoint of batch ``batch`` and then raises ``error`` (Ctrl-C
    arrives as KeyboardInterrupt; a full disk as OSError ENOSPC)."""

    def __init__(self, batch: int, error: BaseException):
        self.batch, self.error = batch, error

    def __call__(self, obj, f, *args, **kwargs):
        if checkpoint_batch(obj) != self.batch:
            return REAL_SAVE(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        REAL_SAVE(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        raise self.error


def autoresume_overrides(data, folder, **extra):
    # save_overwrite false, as in every recipe but the demo's: Composer then refuses to start next to a
    # checkpoint file later than the one it resumes from. The sample log sits next to the checkpoint folder.
    return tiny_overrides(data, str(folder), run_name="preempted", autoresume="true", save_overwrite="false",
                          **{"callbacks.sample_log.path": f"{folder}-samples.jsonl"}, **extra)


def logged_story(folder) -> tuple[list, list]:
    """What the run's two line files tell: the metrics log's losses and evaluations in the order logged
    (``(step, key, value)``; wall-clock figures differ between runs), and the sample log's lines."""
    metrics = []
    for line in open(os.path.join(folder, "metrics.jsonl")):
        row = json.loads(line)
        metrics += [(row["step"], key, value) for key, value in row.items()
                    if key == "loss/train/total" or key.startswith("metrics/eval/")]
    return metrics, [json.loads(line) for line in open(f"{folder}-samples.jsonl")]


@pytest.fixture(scope="module")
def uninterrupted(tiny_mds, tmp_path_factory):
    """Weights and logs after 6 batches of the run the interrupted runs below continue."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    trainer = build_pretraining_trainer(load_config(DEMO, autoresume_overrides(tiny_mds, folder / "ckpt")))
    trainer.fit()
    expected = weights(trainer)
    trainer.close()
    return expected, str(folder / "ckpt" / "ep0-ba3-rank0.pt"), logged_story(folder / "ckpt")


def resume_and_compare(data, folder, uninterrupted) -> None:
    """Autoresume continues from batch 3 to 6 and ends with the uninterrupted run's weights, exactly, and
    with its metrics and sample logs: nothing lost to the interruption, nothing written twice."""
    expected, _, story = uninterrupted
    resumed = build_pretraining_trainer(load_config(DEMO, autoresume_overrides(data, folder)))
    assert int(resumed.state.timestamp.batch) == 3
    resumed.fit()
    assert int(resumed.state.timestamp.batch) == 6
    got = weights(resumed)
    resumed.close()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=f"{key} differs after resume")
    assert sorted(os.listdir(folder)) == ["ep0-ba3-rank0.pt", "ep0-ba6-rank0.pt", "latest-rank0.pt", "metrics.jsonl"]
    metrics, samples = logged_story(folder)
    assert [row["batch"] for row in samples] == [1, 2, 3, 4, 5, 6] and samples == story[1]
    assert [(step, key) for step, key, _ in metrics] == [(step, key) for step, key, _ in story[0]]
    assert metrics == story[0]


def assert_only_the_complete_checkpoint(folder) -> None:
    """What an interrupted second save leaves: the first checkpoint, latest pointing at it, nothing partial."""
    assert sorted(os.listdir(folder)) == ["ep0-ba3-rank0.pt", "latest-rank0.pt", "metrics.jsonl"]
    assert os.readlink(os.path.join(folder, "latest-rank0.pt")) == "ep0-ba3-rank0.pt"


# Ctrl-C is a KeyboardInterrupt in plain Python; once Composer is imported, its SIGINT/SIGTERM handler turns
# the signal into SystemExit(128 + signal number) instead.
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(130), SystemExit(143)],
                         ids=["KeyboardInterrupt", "SIGINT via Composer", "SIGTERM via Composer"])
def test_ctrl_c_while_a_checkpoint_is_written_then_autoresume_continues_exactly(
        tiny_mds, tmp_path, monkeypatch, uninterrupted, interrupt):
    folder = tmp_path / "ckpt"
    trainer = build_pretraining_trainer(load_config(DEMO, autoresume_overrides(tiny_mds, folder)))
    monkeypatch.setattr(torch, "save", FailSaveAt(6, interrupt))
    with pytest.raises(type(interrupt)):
        trainer.fit()
    trainer.close()
    monkeypatch.setattr(torch, "save", REAL_SAVE)
    assert_only_the_complete_checkpoint(folder)
    resume_and_compare(tiny_mds, folder, uninterrupted)


def test_sigkill_while_a_checkpoint_is_written_then_autoresume_continues_exactly(tiny_mds, tmp_path, uninterrupted):
    folder = tmp_path / "ckpt"
    worker = os.path.join(REPO, "tests", "checkpoint_worker.py")
    result = subprocess.run([sys.executable, worker, tiny_mds, str(folder)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == -9, result.stderr[-3000:]  # killed halfway through the batch-6 checkpoint
    names = sorted(os.listdir(folder))
    assert "ep0-ba6-rank0.pt" not in names, "a cut-off write must not sit under a checkpoint name"
    assert [n for n in names if n.startswith(".partial-")], names  # what SIGKILL leaves: a partial file ...
    resume_and_compare(tiny_mds, folder, uninterrupted)  # ... which the next start removes


def test_a_full_disk_while_saving_is_one_clear_error_and_autoresume_continues(
        tiny_mds, tmp_path, monkeypatch, uninterrupted):
    folder = tmp_path / "ckpt"
    trainer = build_pretraining_trainer(load_config(DEMO, autoresume_overrides(tiny_mds, folder)))
    monkeypatch.setattr(torch, "save", FailSaveAt(6, OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(RecipeError) as err:
        trainer.fit()
    trainer.close()
    monkeypatch.setattr(torch, "save", REAL_SAVE)
    message = str(err.value)
    assert f"No space left on the disk of {str(folder)!r} while writing checkpoint ep0-ba6-rank0.pt" in message
    assert f"the last complete checkpoint is {folder / 'ep0-ba3-rank0.pt'}" in message
    assert "autoresume: true it continues from the last complete checkpoint" in message
    assert_only_the_complete_checkpoint(folder)
    resume_and_compare(tiny_mds, folder, uninterrupted)


def mount_tmpfs(path, size: str) -> bool:
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_real_full_disk(tiny_mds, tmp_path):
    """The same on a small tmpfs that fills up during the second checkpoint (needs root to mount)."""
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "20m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        folder = disk / "ckpt"
        trainer = build_pretraining_trainer(load_config(DEMO, autoresume_overrides(tiny_mds, folder)))
        try:
            with pytest.raises(RecipeError, match="No space left on the disk of"):
                trainer.fit()  # the first checkpoint (about 12 MB) fits, the second does not
        finally:
            trainer.close()
        assert_only_the_complete_checkpoint(folder)
        assert os.path.getsize(folder / "ep0-ba3-rank0.pt") > 10_000_000  # so 20 MB holds only one
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


@pytest.mark.parametrize("points_at", ["the previous checkpoint", "nothing"])
def test_autoresume_continues_from_the_newest_complete_checkpoint(tiny_mds, tmp_path, points_at):
    """Killed after a checkpoint was renamed into place but before latest-rank0.pt pointed at it (or while
    Composer re-created that link): the next start still continues from the newest checkpoint."""
    folder = tmp_path / "ckpt"
    first = build_pretraining_trainer(load_config(DEMO, autoresume_overrides(tiny_mds, folder)))
    first.fit()
    first.close()
    latest = folder / "latest-rank0.pt"
    latest.unlink()
    if points_at == "the previous checkpoint":
        latest.symlink_to("ep0-ba3-rank0.pt")
    second = build_pretraining_trainer(load_config(DEMO, autoresume_overrides(tiny_mds, folder, max_duration="9ba")))
    assert int(second.state.timestamp.batch) == 6
    second.fit()
    assert int(second.state.timestamp.batch) == 9
    second.close()


def truncated_copy(source: str, destination) -> str:
    with open(source, "rb") as f:
        data = f.read()
    with open(destination, "wb") as f:
        f.write(data[: len(data) // 2])
    return str(destination)


def damaged_copy(source: str, destination) -> str:
    with open(source, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the stored weights
    with open(destination, "wb") as f:
        f.write(bytes(data))
    return str(destination)


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"),
    ("empty", "is empty (0 bytes)"),
    ("random bytes", "is not a PyTorch checkpoint"),
    ("truncated", "is truncated"),
    ("damaged", "is damaged"),
    ("folder", "is a folder, not a checkpoint file"),
])
def test_a_bad_load_path_stops_before_anything_is_made(tiny_mds, tmp_path, uninterrupted, kind, message):
    path = tmp_path / "given.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(os.urandom(3000))
    elif kind == "truncated":
        truncated_copy(uninterrupted[1], path)
    elif kind == "damaged":
        damaged_copy(uninterrupted[1], path)
    elif kind == "folder":
        path.mkdir()
    save_folder = tmp_path / "ckpt"
    cfg = load_config(DEMO, tiny_overrides(tiny_mds, str(save_folder), load_path=str(path)))
    with pytest.raises(RecipeError) as err:
        build_pretraining_trainer(cfg)
    assert f"load_path={str(path)!r} {message}" in str(err.value)
    assert not save_folder.exists()


def test_main_py_with_a_truncated_load_path_exits_2_without_a_traceback(tiny_mds, tmp_path, uninterrupted):
    path = truncated_copy(uninterrupted[1], tmp_path / "cut.pt")
    args = tiny_overrides(tiny_mds, str(tmp_path / "ckpt"), load_path=path)
    assert_refused(run_main([DEMO, *args], tmp_path), f"load_path={path!r} is truncated")
    assert sorted(os.listdir(tmp_path)) == ["cut.pt"]


def test_autoresume_follows_the_link_unless_a_later_checkpoint_was_written_after_it(uninterrupted, tmp_path):
    """A run started again from batch 0 with save_overwrite (ba2 rewritten, the link on it) leaves the earlier
    run's ba4 behind: autoresume continues the new run. A checkpoint written after the link's target, with
    more batches (stopped before the link moved), is the one to continue; without a link, the most batches."""
    from mosaicbert.training.checkpointing import prepare_autoresume

    folder = tmp_path / "ckpt"
    folder.mkdir()

    def put(name, mtime):
        shutil.copy(uninterrupted[1], folder / name)
        os.utime(folder / name, (mtime, mtime))

    put("ep0-ba4-rank0.pt", 1000)  # the earlier run's
    put("ep0-ba2-rank0.pt", 2000)  # the new run's, and the link moved onto it
    os.symlink("ep0-ba2-rank0.pt", folder / "latest-rank0.pt")
    assert prepare_autoresume(str(folder), "r") == str(folder / "ep0-ba2-rank0.pt")
    assert os.readlink(folder / "latest-rank0.pt") == "ep0-ba2-rank0.pt"
    put("ep0-ba6-rank0.pt", 3000)  # written, then stopped before the link moved
    assert prepare_autoresume(str(folder), "r") == str(folder / "ep0-ba6-rank0.pt")
    assert os.readlink(folder / "latest-rank0.pt") == "ep0-ba6-rank0.pt"
    os.remove(folder / "latest-rank0.pt")
    os.utime(folder / "ep0-ba6-rank0.pt", (500, 500))
    assert prepare_autoresume(str(folder), "r") == str(folder / "ep0-ba6-rank0.pt")


def test_the_complete_checkpoint_of_a_run_passes_the_check(uninterrupted, tmp_path):
    from mosaicbert.checkpoints import check_checkpoint_file

    check_checkpoint_file(uninterrupted[1], key="load_path")
    shutil.copy(uninterrupted[1], tmp_path / "copy.pt")
    check_checkpoint_file(str(tmp_path / "copy.pt"))


@pytest.mark.parametrize("stop, status, line", [(KeyboardInterrupt(), 130, "interrupted (Ctrl-C)."),
                                               (SystemExit(130), 130, "interrupted (Ctrl-C)."),
                                               (SystemExit(143), 143, "stopped by SIGTERM.")],
                         ids=["KeyboardInterrupt", "SIGINT via Composer", "SIGTERM via Composer"])
def test_ctrl_c_or_sigterm_in_a_command_is_one_line_and_its_status(capsys, stop, status, line):
    from mosaicbert.errors import report_errors

    def stopped():
        raise stop

    assert report_errors(stopped) == status
    err = capsys.readouterr().err
    assert err.strip().startswith(line) and "autoresume" not in err and "Traceback" not in err
    assert report_errors(stopped, resume_hint="continue with X") == status  # main.py's hint, only there
    assert capsys.readouterr().err.strip().endswith("half-written; continue with X.")
    with pytest.raises(SystemExit):  # any other exit status passes through untouched
        report_errors(lambda: sys.exit(3))


class StopOnWrite(io.FileIO):
    """A checkpoint file whose third write raises ``stop``: the signal landing while torch.save's zip
    writer is mid-record, so torch's own error (``unexpected pos``) comes out, raised while handling it."""

    def __init__(self, stop: BaseException, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop, self.writes = stop, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 3:
            raise self.stop
        return super().write(data)


@pytest.mark.parametrize("stop, status",
                         [(SystemExit(130), 130), (SystemExit(143), 143), (KeyboardInterrupt(), 130)],
                         ids=["SIGINT via Composer", "SIGTERM via Composer", "KeyboardInterrupt"])
def test_a_signal_inside_torch_save_is_still_one_line_and_leaves_no_file(capsys, tmp_path, monkeypatch, stop, status):
    from composer.utils import checkpoint as composer_checkpoint

    from mosaicbert.errors import report_errors
    from mosaicbert.training.checkpointing import write_checkpoint_atomically

    monkeypatch.setattr(composer_checkpoint, "open", lambda name, mode: StopOnWrite(stop, name, mode), raising=False)
    state = {"weights": torch.randn(64, 64), "more": torch.randn(1000)}
    target = tmp_path / "ep0-ba6-rank0.pt"
    with pytest.raises(RuntimeError, match="unexpected pos") as raised:  # what torch makes of it
        write_checkpoint_atomically(state, str(target))
    assert raised.value.__context__ is stop
    assert report_errors(lambda: write_checkpoint_atomically(state, str(target)), "continue with X") == status
    err = capsys.readouterr().err
    assert err.strip().endswith("half-written; continue with X.") and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # neither the checkpoint nor its partial file

    def fails():
        raise RuntimeError("not a stop")

    with pytest.raises(RuntimeError, match="not a stop"):  # an error with no signal behind it passes through
        report_errors(fails)


def test_ctrl_c_during_training_prints_one_line(tiny_mds, tmp_path):
    """A real SIGINT to ``main.py`` while it trains: Composer's handler exits with 130, and the user is told
    what was kept and how to continue."""
    import signal
    import time

    folder = tmp_path / "ckpt"
    args = autoresume_overrides(tiny_mds, folder, max_duration="100000ba", save_interval="1ba")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "main.py"), DEMO, *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (folder / "ep0-ba2-rank0.pt").exists():  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted (Ctrl-C). Outputs get their final names only when complete" in err, err[-3000:]
    assert "the run continues from its last checkpoint with autoresume=true" in err
    assert "Traceback" not in err


def test_a_new_run_keeps_an_earlier_runs_metrics_log_under_another_name(tiny_mds, tmp_path):
    """The same run_name launched again from batch 0 (no checkpoints kept): the earlier log is not lost."""
    log_path = tmp_path / "logs" / "metrics.jsonl"
    overrides = tiny_overrides(tiny_mds, "null", max_duration="2ba", **{"loggers.jsonl.path": str(log_path)})
    contents = []
    for _ in range(3):
        trainer = build_pretraining_trainer(load_config(DEMO, overrides))
        trainer.fit()
        trainer.close()
        contents.append(log_path.read_text())
    assert all('"loss/train/total"' in text for text in contents)
    assert sorted(os.listdir(log_path.parent)) == ["metrics.earlier-1.jsonl", "metrics.earlier-2.jsonl",
                                                   "metrics.jsonl"]
    assert (log_path.parent / "metrics.earlier-1.jsonl").read_text() == contents[0]
    assert (log_path.parent / "metrics.earlier-2.jsonl").read_text() == contents[1]
    assert callbacks.keep_earlier_file(str(tmp_path / "none.jsonl")) is None  # nothing there: nothing moved
    (tmp_path / "empty.jsonl").write_text("")
    assert callbacks.keep_earlier_file(str(tmp_path / "empty.jsonl")) is None


def test_keep_lines_filters_in_place_and_drops_a_line_cut_off_mid_write(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4}\n{"a": 5}\n{"a": ')
    kept = callbacks.keep_lines(str(path), lambda index, line: index < 2 or b'"a": 4' in line)
    assert kept == 3 and path.read_bytes() == b'{"a": 1}\n{"a": 2}\n{"a": 4}\n'
    path.write_bytes(b'{"a": 1}\n{"a": 2')
    assert callbacks.keep_lines(str(path), lambda index, line: True) == 1 and path.read_bytes() == b'{"a": 1}\n'


def test_a_resumed_metrics_log_keeps_its_checkpoints_lines_and_later_evaluations_of_that_step():
    """After the checkpoint's lines: a later batch's rows are dropped (they are logged again), the
    end-of-training evaluation of the checkpoint's step is kept (nothing logs it again)."""
    logger = callbacks.JSONLinesLogger()
    state = SimpleNamespace(run_name="run", timestamp=SimpleNamespace(batch=5))
    logger.load_state_dict({"run_name": "run", "lines": 2})
    keep = logger._keep(state)
    rows = [{"step": 4, "loss/train/total": 1.0}, {"step": 5, "metrics/eval/LanguageCrossEntropy": 2.0},
            {"step": 5, "metrics/eval/MaskedAccuracy": 0.3}, {"step": 5, "loss/train/total": 0.9},
            {"step": 6, "metrics/eval/MaskedAccuracy": 0.4}, {"step": 5, "time/train": 1.0}]
    assert [keep(i, json.dumps(row).encode() + b"\n") for i, row in enumerate(rows)] == \
        [True, True, True, False, False, False]
    assert logger._keep(state)(9, b'{"step": 9}\n')  # the checkpoint's count is used once, by the first fit
    other = callbacks.JSONLinesLogger()
    other.load_state_dict({"run_name": "another run", "lines": 0})
    assert other._keep(state)(9, b'{"step": 9}\n')  # another run's count says nothing about this file


def test_a_finished_run_extended_with_autoresume_keeps_its_end_of_training_evaluation(tiny_mds, tmp_path):
    folder = tmp_path / "ckpt"
    for duration in ("5ba", "6ba"):  # evaluations at 2, 4 and, at the end of the first run, 5
        trainer = build_pretraining_trainer(load_config(DEMO, autoresume_overrides(
            tiny_mds, folder, max_duration=duration, eval_interval="2ba", save_interval="5ba")))
        trainer.fit()
        trainer.close()
    metrics, samples = logged_story(folder)
    losses = [step for step, key, _ in metrics if key == "loss/train/total"]
    evaluations = sorted({step for step, key, _ in metrics if key.startswith("metrics/eval/")})
    assert losses == [0, 1, 2, 3, 4, 5] and evaluations == [2, 4, 5, 6]
    assert [row["batch"] for row in samples] == [1, 2, 3, 4, 5, 6]
