"""Checkpoints and data on a real S3-compatible server: SeaweedFS on loopback (tests/s3_server.py).

- A run killed with SIGKILL (its whole process group, as when a node disappears) while a checkpoint
  upload is in flight resumes, in a fresh folder, from the last complete checkpoint in the bucket, with
  the losses of an uninterrupted run bit for bit; also with the data streamed from the bucket through a
  local cache deleted in between.
- Autoresume picks the newest complete checkpoint object, whatever Composer's latest symlink says.
- glue.py, model.pretrained_checkpoint and scripts/export_hf.py read s3:// checkpoints.
- Bad stores and objects fail in seconds with one paragraph and exit status 2, leaving nothing behind.
- loggers.wandb in offline mode writes a run whose history has the train loss and the eval metrics.
"""

import io
import json
import logging
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import torch

from s3_server import SlowProxy, start_s3_server
from test_train import DEMO, REPO, assert_refused, run_main, tiny_overrides

from mosaicbert.config import load_config
from mosaicbert.errors import RecipeError
from mosaicbert.training.trainer import build_pretraining_trainer

WORKER = os.path.join(REPO, "tests", "pretrain_worker.py")
TRAIN_LOSS = "loss/train/total"
EVAL_LOSS = "metrics/eval/LanguageCrossEntropy"
# 16 batches, a checkpoint every 4 (about 12 MB each: boto3 uploads them in 8 MB parts) and an evaluation
# every 4.
RUN = {"max_duration": "16ba", "save_interval": "4ba", "eval_interval": "4ba"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = start_s3_server(str(tmp_path_factory.mktemp("seaweedfs")))
    yield server
    server.stop()


def store_env(s3, endpoint=None) -> dict:
    return dict(s3.env(endpoint), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")


@pytest.fixture()
def s3_env(s3, monkeypatch):
    """This process reaches the server through the usual environment variables."""
    for key, value in store_env(s3).items():
        monkeypatch.setenv(key, value)
    return s3


def new_bucket(s3) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


def rows(path) -> dict[int, dict]:
    """step -> the metrics logged at that step (train loss and eval metrics land in separate lines). The
    train loss of batch k is logged at step k - 1, an evaluation after k batches at step k."""
    by_step: dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            by_step.setdefault(row.pop("step"), {}).update(row)
    return by_step


def curve(by_step: dict[int, dict], keys=(TRAIN_LOSS, EVAL_LOSS)) -> dict[tuple[int, str], float]:
    return {(step, key): row[key] for step, row in by_step.items() for key in keys if key in row}


@pytest.fixture(scope="module")
def reference(tiny_mds, tmp_path_factory):
    """The uninterrupted run: its metrics and its local checkpoints (ba4, ba8, ba12, ba16)."""
    folder = tmp_path_factory.mktemp("reference")
    trainer = build_pretraining_trainer(load_config(DEMO, tiny_overrides(tiny_mds, str(folder), **RUN)))
    trainer.fit()
    trainer.close()
    by_step = rows(folder / "metrics.jsonl")
    assert all(TRAIN_LOSS in by_step[s] for s in range(16)) and TRAIN_LOSS not in by_step[16]
    assert all(EVAL_LOSS in by_step[s] for s in (4, 8, 12, 16))
    return {"curve": curve(by_step), "folder": folder}


# ----------------------------------------------------------------------------------------------
# Pre-emption: SIGKILL while an upload is in flight, resume elsewhere from the bucket
# ----------------------------------------------------------------------------------------------
def wait_for(condition, timeout: float, process: subprocess.Popen, log_path: str, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before {what}:\n"
                        f"{open(log_path, errors='replace').read()[-4000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}:\n{open(log_path, errors='replace').read()[-4000:]}")
        time.sleep(0.05)


@pytest.mark.parametrize("data", ["local", "s3"])
def test_sigkill_during_an_upload_resumes_from_the_last_complete_checkpoint_bit_for_bit(
        s3, tiny_mds, reference, tmp_path, data):
    bucket = new_bucket(s3)
    data_local = tiny_mds
    extra = {}
    if data == "s3":
        s3.upload_folder(tiny_mds, bucket, "corpus")
        data_local = str(tmp_path / "cache")  # streaming's local cache of the bucket's shards
        extra = {"train_loader.remote": f"s3://{bucket}/corpus", "eval_loader.remote": f"s3://{bucket}/corpus"}

    # The run reaches the store through a proxy that slows down the requests for ep0-ba8-rank0.pt to
    # 128 KB/s, so that it can be killed while that checkpoint's parts are being uploaded.
    proxy = SlowProxy(("127.0.0.1", int(s3.endpoint.rsplit(":", 1)[1])), rb"ep0-ba8-rank0\.pt", 128 * 1024)
    env = dict(os.environ, **store_env(s3, proxy.endpoint))

    def launch(workdir, hold_at: int):
        workdir.mkdir()
        args = tiny_overrides(data_local, f"s3://{bucket}/run", run_name="preempted", autoresume="true", **RUN,
                              **extra, **{"loggers.jsonl.path": str(workdir / "metrics.jsonl"),
                                          "python_log_level": "info"})
        log_path = str(workdir / "log.txt")
        process = subprocess.Popen([sys.executable, WORKER, str(workdir / "progress"), str(hold_at), DEMO, *args],
                                   cwd=workdir, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        return process, log_path

    # 1. A run that stays at batch 12 of 16 (as in a long step), killed there with its upload processes once
    #    ep0-ba4 is in the bucket and 256 KB of ep0-ba8 have gone out.
    first = tmp_path / "node1"
    process, log_path = launch(first, 12)
    try:
        wait_for(lambda: proxy.matched_bytes >= 256 * 1024 and "run/ep0-ba4-rank0.pt" in s3.keys(bucket, "run/"),
                 240, process, log_path, "ep0-ba4 in the bucket and the ep0-ba8 upload under way")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        proxy.close()
    assert process.returncode == -signal.SIGKILL
    assert int((first / "progress").read_text()) == 12, "killed mid-run"

    keys = s3.keys(bucket, "run/")
    assert "run/ep0-ba4-rank0.pt" in keys
    assert "run/ep0-ba8-rank0.pt" not in keys, "a cut-off upload must not become an object"
    uploads = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["run/ep0-ba8-rank0.pt"], "the upload was cut off in its parts"

    # 2. The same recipe on a "new node": a fresh working folder, no local checkpoint, no data cache, no
    #    shared memory left by the killed processes.
    if data == "s3":
        shutil.rmtree(data_local)
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    env["S3_ENDPOINT_URL"] = s3.endpoint
    second = tmp_path / "node2"
    process, log_path = launch(second, 0)
    assert process.wait(timeout=300) == 0, open(log_path, errors="replace").read()[-4000:]
    log_text = open(log_path).read()
    assert f"Autoresume: resuming from s3://{bucket}/run/ep0-ba4-rank0.pt" in log_text

    resumed = rows(second / "metrics.jsonl")
    assert min(resumed) == 4 and max(resumed) == 16, "continues after the ba4 checkpoint, to the end"
    expected = {(step, key): v for (step, key), v in reference["curve"].items()
                if step > 4 or (step == 4 and key == TRAIN_LOSS)}  # batches 5-16 and their evaluations
    assert curve(resumed) == expected, "resumed losses differ from the uninterrupted run's"
    if data == "s3":
        assert os.path.isfile(os.path.join(data_local, "train", "index.json")), "streamed through the cache"
    assert {"run/ep0-ba8-rank0.pt", "run/ep0-ba12-rank0.pt", "run/ep0-ba16-rank0.pt"} <= set(s3.keys(bucket, "run/"))
    assert not os.path.exists(second / "s3:"), "nothing of the bucket is kept in the working folder"


# ----------------------------------------------------------------------------------------------
# Which checkpoint autoresume loads
# ----------------------------------------------------------------------------------------------
def put(s3, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def checkpoint_bytes(reference, batch: int) -> bytes:
    return (reference["folder"] / f"ep0-ba{batch}-rank0.pt").read_bytes()


def test_autoresume_loads_the_newest_complete_checkpoint_whatever_the_symlink_says(
        s3_env, reference, tiny_mds, tmp_path, caplog, monkeypatch):
    s3, bucket = s3_env, new_bucket(s3_env)
    put(s3, bucket, "run/ep0-ba4-rank0.pt", checkpoint_bytes(reference, 4))
    put(s3, bucket, "run/ep0-ba8-rank0.pt", checkpoint_bytes(reference, 8))  # no symlink points to it
    whole = checkpoint_bytes(reference, 12)
    put(s3, bucket, "run/ep0-ba12-rank0.pt", whole[: len(whole) // 2])  # a store exposing a partial write
    put(s3, bucket, "run/ep0-ba16-rank0.pt", b"")
    put(s3, bucket, "run/latest-rank0.pt.symlink", b"run/ep0-ba4-rank0.pt")  # Composer's, one behind
    put(s3, bucket, "run/old/ep0-ba99-rank0.pt", checkpoint_bytes(reference, 16))  # another folder: ignored
    put(s3, bucket, "run/ep0-ba20-rank1.pt", checkpoint_bytes(reference, 16))  # not rank 0's: ignored

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with caplog.at_level(logging.WARNING, logger="mosaicbert.object_store"):
        trainer = build_pretraining_trainer(load_config(DEMO, tiny_overrides(
            tiny_mds, f"s3://{bucket}/run", run_name="r", autoresume="true", **RUN,
            **{"loggers.jsonl.path": str(tmp_path / "m.jsonl")})))
    assert int(trainer.state.timestamp.batch) == 8
    trainer.close()
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert "ep0-ba12-rank0.pt" in skipped and "ep0-ba16-rank0.pt" in skipped
    assert os.listdir(work) == [], "autoresume downloads nothing into the working folder"


def test_autoresume_with_an_empty_folder_starts_from_the_beginning(s3_env, tiny_mds, tmp_path):
    bucket = new_bucket(s3_env)
    trainer = build_pretraining_trainer(load_config(DEMO, tiny_overrides(
        tiny_mds, f"s3://{bucket}/run", run_name="r", autoresume="true", **RUN,
        **{"loggers.jsonl.path": str(tmp_path / "m.jsonl")})))
    assert int(trainer.state.timestamp.batch) == 0
    trainer.close()


def test_latest_without_its_symlink_means_the_folders_newest_complete_checkpoint(s3_env, reference):
    """After a pre-emption the .symlink may never have been uploaded."""
    from mosaicbert.object_store import resolve_checkpoint

    s3, bucket = s3_env, new_bucket(s3_env)
    put(s3, bucket, "run/ep0-ba4-rank0.pt", checkpoint_bytes(reference, 4))
    put(s3, bucket, "run/ep0-ba8-rank0.pt", checkpoint_bytes(reference, 8))
    for name in ("latest-rank0.pt", "latest-rank0.pt.symlink"):
        assert resolve_checkpoint(f"s3://{bucket}/run/{name}", "load_path") == f"s3://{bucket}/run/ep0-ba8-rank0.pt"
    with pytest.raises(RecipeError, match=re.escape(f"the run has no latest-rank0.pt (nor its .symlink) and "
                                                    f"s3://{bucket}/empty holds no complete checkpoint")):
        resolve_checkpoint(f"s3://{bucket}/empty/latest-rank0.pt.symlink", "load_path")


def test_continuing_an_s3_run_with_load_path_is_not_refused_as_an_earlier_run(s3_env, reference, tiny_mds, tmp_path):
    """What the lost-rank message advises without autoresume: load_path set to the folder's latest checkpoint."""
    s3, bucket = s3_env, new_bucket(s3_env)
    put(s3, bucket, "run/ep0-ba4-rank0.pt", checkpoint_bytes(reference, 4))
    base = tiny_overrides(tiny_mds, f"s3://{bucket}/run", run_name="r", save_overwrite="false", **RUN,
                          **{"loggers.jsonl.path": str(tmp_path / "m.jsonl")})
    with pytest.raises(RecipeError, match="already holds 1 checkpoint"):
        build_pretraining_trainer(load_config(DEMO, base))
    trainer = build_pretraining_trainer(load_config(DEMO, base + [f"load_path=s3://{bucket}/run"]))
    assert int(trainer.state.timestamp.batch) == 4
    trainer.close()


def test_autoresume_that_finds_a_checkpoint_does_not_need_the_local_load_path(s3_env, reference, tiny_mds, tmp_path):
    """A recipe that starts from local initial weights, relaunched on a machine that lacks them: Composer
    loads the autoresume checkpoint instead of load_path."""
    s3, bucket = s3_env, new_bucket(s3_env)
    put(s3, bucket, "run/ep0-ba4-rank0.pt", checkpoint_bytes(reference, 4))
    overrides = tiny_overrides(tiny_mds, f"s3://{bucket}/run", run_name="r", autoresume="true", **RUN,
                               **{"loggers.jsonl.path": str(tmp_path / "m.jsonl")})
    trainer = build_pretraining_trainer(load_config(DEMO, overrides + [f"load_path={tmp_path / 'absent.pt'}"]))
    assert int(trainer.state.timestamp.batch) == 4
    trainer.close()
    with pytest.raises(RecipeError, match="absent.pt"):  # with nothing to resume, load_path is what starts the run
        build_pretraining_trainer(load_config(DEMO, tiny_overrides(
            tiny_mds, f"s3://{new_bucket(s3)}/run", run_name="r", autoresume="true", **RUN,
            **{"loggers.jsonl.path": str(tmp_path / "m2.jsonl"), "load_path": str(tmp_path / "absent.pt")})))


def test_every_rank_takes_rank_zeros_object_store_arguments(monkeypatch):
    from composer.utils import dist

    from mosaicbert.training import trainer as trainer_module

    mine, rank_zeros = {"load_path": "s3://b/run/ep0-ba4-rank0.pt"}, {"load_path": "s3://b/run/ep0-ba8-rank0.pt"}

    def broadcast(objects, src):
        assert src == 0
        objects[0] = rank_zeros

    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    assert trainer_module.agree_with_rank_zero(mine) == rank_zeros


# ----------------------------------------------------------------------------------------------
# Readers of s3:// checkpoints: model.pretrained_checkpoint, scripts/export_hf.py, glue.py
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def stored_checkpoint(s3_env, reference):
    """The reference run's batch-16 checkpoint in a bucket, with Composer's symlink."""
    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "pre/ep0-ba16-rank0.pt", checkpoint_bytes(reference, 16))
    put(s3_env, bucket, "pre/latest-rank0.pt.symlink", b"pre/ep0-ba16-rank0.pt")
    expected = torch.load(reference["folder"] / "ep0-ba16-rank0.pt", map_location="cpu", weights_only=False)
    weights = {k[len("model."):]: v for k, v in expected["state"]["model"].items()}
    return bucket, weights


@pytest.mark.parametrize("name", ["pre/ep0-ba16-rank0.pt", "pre/latest-rank0.pt", "pre", "pre/"])
def test_pretrained_checkpoint_reads_an_s3_checkpoint(stored_checkpoint, tiny_mds, tmp_path, name):
    bucket, expected = stored_checkpoint
    trainer = build_pretraining_trainer(load_config(DEMO, tiny_overrides(
        tiny_mds, str(tmp_path), **{"model.pretrained_checkpoint": f"s3://{bucket}/{name}"})))
    got = trainer.state.model.model.state_dict()
    trainer.close()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_export_hf_reads_an_s3_checkpoint(stored_checkpoint, tmp_path):
    bucket, expected = stored_checkpoint
    export = runpy.run_path(os.path.join(REPO, "scripts", "export_hf.py"))
    out = tmp_path / "exported"
    assert export["main"]([f"s3://{bucket}/pre/latest-rank0.pt", str(out)]) == 0
    from safetensors.torch import load_file

    exported = load_file(out / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    stored = expected["bert.embeddings.word_embeddings.weight"]
    assert torch.equal(exported, stored[: len(exported)])  # the export drops the vocabulary's padding rows


def test_glue_reads_an_s3_checkpoint(stored_checkpoint, tmp_path, monkeypatch):
    bucket, _ = stored_checkpoint
    folder = tmp_path / "task"
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(
            f"{'a banana' if i % 2 else 'the model'} reads text {i}\t{i % 2}\n" for i in range(16)))
    recipe = tmp_path / "glue.yaml"
    recipe.write_text(json.dumps({
        "run_name": "glue-s3", "pretrained_checkpoint": f"s3://{bucket}/pre", "max_seq_len": 32, "device": "cpu",
        "precision": "fp32", "results_dir": str(tmp_path / "results"), "progress_bar": False,
        "python_log_level": "warning", "default_seeds": [1], "parallel": False,
        "save_folder": f"s3://{bucket}/finetuned/{{run_name}}",
        "custom_tasks": [{"name": "keyword", "data_dir": str(folder), "text_columns": ["sentence"],
                          "label_column": "label", "num_labels": 2, "metrics": ["accuracy"], "batch_size": 8,
                          "max_duration": "1ba", "eval_interval": 0}]}))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    glue = runpy.run_path(os.path.join(REPO, "glue.py"))
    assert glue["glue"](str(recipe), []) == 0
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["pretrained_checkpoint"] == f"s3://{bucket}/pre"
    assert "accuracy" in json.dumps(results)
    # Again into the same bucket folder: refused before anything loads (Composer's uploader would fail only
    # after the job trained), unless asked to replace them.
    with pytest.raises(RecipeError, match=r"save_folder 's3://.*/finetuned/glue-s3' already holds fine-tuned "
                                          r"checkpoints of an earlier run \(keyword/seed1/ep0-ba1-rank0\.pt\)"):
        glue["glue"](str(recipe), [])
    assert glue["glue"](str(recipe), ["save_overwrite=true"]) == 0


# ----------------------------------------------------------------------------------------------
# Bad stores and objects: one paragraph, exit status 2, in seconds, nothing written
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def silent_endpoint():
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def run_entry_point(which: str, args: list[str], cwd) -> tuple[int, str, float]:
    """(exit status, stderr, seconds) of main.py / glue.py / scripts/export_hf.py run in this process."""
    import contextlib

    err = io.StringIO()
    start = time.monotonic()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err):
            if which == "export":
                status = runpy.run_path(os.path.join(REPO, "scripts", "export_hf.py"))["main"](args)
            else:
                from mosaicbert.training.cli import run

                script = runpy.run_path(os.path.join(REPO, f"{which}.py"))
                status = run(args, f"{which}.py", script["pretrain" if which == "main" else "glue"])
    finally:
        os.chdir(old)
    return status, err.getvalue(), time.monotonic() - start


@pytest.mark.parametrize("case", ["credentials", "bucket", "endpoint", "no_checkpoint", "corrupted", "no_data",
                                  "earlier_run"])
def test_bad_stores_and_objects_fail_fast_with_one_paragraph(case, s3_env, tiny_mds, tmp_path, monkeypatch,
                                                             silent_endpoint):
    s3 = s3_env
    bucket = new_bucket(s3)
    put(s3, bucket, "bad/ep0-ba4-rank0.pt", b"PK\x03\x04" + os.urandom(4096))  # a zip's start, then noise
    put(s3, bucket, "empty/notes.txt", b"no checkpoint here")
    before = s3.keys(bucket)
    work = tmp_path / "work"
    work.mkdir()
    pretrain = tiny_overrides(tiny_mds, f"s3://{bucket}/run", **{"loggers.jsonl.path": str(work / "m.jsonl")})
    which, args = "main", [DEMO, *pretrain]
    if case == "credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        message = "rejected the credentials (SignatureDoesNotMatch)"
    elif case == "bucket":
        args = [DEMO, *tiny_overrides(tiny_mds, "s3://no-such-bucket/run",
                                      **{"loggers.jsonl.path": str(work / "m.jsonl")})]
        message = "Bucket 'no-such-bucket' does not exist"
    elif case == "endpoint":
        monkeypatch.setenv("S3_ENDPOINT_URL", silent_endpoint)
        message = f"The object store at {silent_endpoint} does not answer"
    elif case == "no_checkpoint":
        which, args = "export", [f"s3://{bucket}/empty", str(work / "exported")]
        message = "It holds: empty/notes.txt"
    elif case == "corrupted":
        args = [DEMO, *pretrain, f"load_path=s3://{bucket}/bad/ep0-ba4-rank0.pt"]
        message = "is not a complete PyTorch checkpoint"
    elif case == "earlier_run":  # a second run into a folder that holds checkpoints, without autoresume
        args = [DEMO, *tiny_overrides(tiny_mds, f"s3://{bucket}/bad", **{"loggers.jsonl.path": str(work / "m.jsonl")}),
                "save_overwrite=false"]
        message = f"save_folder 's3://{bucket}/bad' already holds 1 checkpoint(s) of an earlier run (ep0-ba4-rank0.pt)"
    else:
        args = [DEMO, *pretrain, f"train_loader.remote=s3://{bucket}/corpus"]
        message = f"no MDS index at 's3://{bucket}/corpus/train/index.json'"
    status, stderr, seconds = run_entry_point(which, args, work)
    assert status == 2, stderr
    assert message in stderr
    assert stderr.strip().startswith("error:") and "\n\n" not in stderr.strip() and "Traceback" not in stderr
    assert seconds < 30, f"took {seconds:.0f} s"
    assert os.listdir(work) == [], "nothing is written locally"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.env()["AWS_SECRET_ACCESS_KEY"])
    monkeypatch.setenv("S3_ENDPOINT_URL", s3.endpoint)
    assert s3.keys(bucket) == before, "nothing is written to the bucket"


def test_a_dead_endpoint_fails_main_py_in_seconds(s3, tiny_mds, tmp_path, silent_endpoint):
    """The same through the real command line: exit status 2 within seconds, not minutes of retries."""
    env = dict(os.environ, **store_env(s3, silent_endpoint))
    start = time.monotonic()
    result = run_main([DEMO, *tiny_overrides(tiny_mds, "s3://bucket/run", run_name="r", autoresume="true",
                                             **{"loggers.jsonl.path": str(tmp_path / "m.jsonl")})], tmp_path, env)
    seconds = time.monotonic() - start
    assert_refused(result, "does not answer")
    assert "S3_ENDPOINT_URL" in result.stderr
    assert seconds < 60, f"took {seconds:.0f} s"
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# wandb
# ----------------------------------------------------------------------------------------------
def wandb_history(run_file: str) -> list[dict]:
    """The history rows of an offline wandb run file (``run-<id>.wandb``)."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    store = DataStore()
    store.open_for_scan(run_file)
    history = []
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return history


def test_wandb_offline_run_holds_train_loss_and_eval_metrics(tiny_mds, tmp_path):
    pytest.importorskip("wandb")  # in requirements.txt; a machine without it gets the error below
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true")
    args = tiny_overrides(tiny_mds, str(tmp_path / "ckpt"), run_name="wandb-offline", max_duration="4ba",
                          eval_interval="2ba", **{"loggers.wandb": "{project: mosaicbert-test}"})
    result = run_main([DEMO, *args], tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    history = wandb_history(str(runs[0]))
    train = [row[TRAIN_LOSS] for row in history if TRAIN_LOSS in row]
    evals = [row for row in history if EVAL_LOSS in row]
    assert len(train) == 4 and all(isinstance(x, float) and x > 0 for x in train)
    assert len(evals) == 2 and all("metrics/eval/MaskedAccuracy" in row for row in evals)
    jsonl = rows(tmp_path / "ckpt" / "metrics.jsonl")
    assert train == [jsonl[step][TRAIN_LOSS] for step in range(4)], "wandb and the jsonl log agree"


def test_a_wandb_logger_without_wandb_installed_is_a_clear_error(tiny_mds, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what importing finds where wandb is not installed
    args = tiny_overrides(tiny_mds, str(tmp_path / "ckpt"), **{"loggers.wandb": "{project: mosaicbert-test}"})
    with pytest.raises(RecipeError, match="the wandb package is not installed here. Install it"):
        build_pretraining_trainer(load_config(DEMO, args))
    assert not (tmp_path / "ckpt").exists()


def test_a_cache_folder_registered_by_another_streaming_dataset_is_a_clear_error(
        s3_env, tiny_mds, tmp_path, tokenizer, fresh_shared_memory):
    """What a restart on the same machine meets when the killed run's shared memory was left behind (its
    whole process group killed, Python's resource tracker included): streaming's registration of the cache
    folder. A live registration looks the same to streaming, so the test holds one open."""
    from mosaicbert.data.text_dataset import build_text_dataloader

    bucket = new_bucket(s3_env)
    s3_env.upload_folder(os.path.join(tiny_mds, "val_small"), bucket, "corpus/val_small")
    args = dict(tokenizer=tokenizer, max_seq_len=32, device_batch_size=4, local=str(tmp_path / "cache"),
                remote=f"s3://{bucket}/corpus", split="val_small", num_workers=0)
    held = build_text_dataloader(**args)
    with pytest.raises(RecipeError, match="clean_stale_shared_memory"):
        build_text_dataloader(**args)
    del held


# ----------------------------------------------------------------------------------------------
# A slow store is not a damaged checkpoint
# ----------------------------------------------------------------------------------------------
class TimingOutStore:
    """An S3 client holding two checkpoint objects whose range reads of the newer one time out."""

    def __init__(self, newest_key: str, older_key: str):
        self.newest_key = newest_key
        self.sizes = {newest_key: 1000, older_key: 1000}

    def get_paginator(self, name):
        sizes = self.sizes

        class Pages:
            def paginate(self, **kwargs):
                return [{"Contents": [{"Key": key, "Size": size} for key, size in sizes.items()]}]
        return Pages()

    def get_object(self, Bucket, Key, Range=None):
        import botocore.exceptions as be

        if Key == self.newest_key:
            raise be.ReadTimeoutError(endpoint_url="http://store")
        raise AssertionError("the older checkpoint must not be considered while the newer one cannot be read")


def test_a_read_timeout_is_the_stores_problem_not_an_older_checkpoint():
    """A timeout while checking the newest checkpoint used to count as 'not a complete checkpoint', so
    autoresume resumed from an older one (and, overwriting, later replaced the newer objects)."""
    from mosaicbert.object_store import latest_checkpoint

    store = TimingOutStore("run/ep0-ba200-rank0.pt", "run/ep0-ba100-rank0.pt")
    with pytest.raises(RecipeError, match="does not answer"):
        latest_checkpoint("s3://bucket/run", s3=store)
