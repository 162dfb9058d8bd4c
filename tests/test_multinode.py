"""Two nodes on one host: each node is its own `composer` launcher with --world_size/--node_rank/--master_addr,
in its own IPC + mount namespace with a private tmpfs on /dev/shm and its own TMPDIR, rendezvousing over
loopback (gloo, CPU).

Streaming 0.13 names its shared memory per host (/dev/shm, prefixes 000000, 000001, ...) and keeps its file
locks in tempfile.gettempdir(); without the namespaces two nodes on one host race for the same names. With
them, each node sees what a separate host would: its own /dev/shm and temp folder, the data, checkpoints and
logs on a filesystem both share (as NFS or Lustre would be on a cluster).
"""

import contextlib
import functools
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import Future

import pytest
from streaming import Stream, StreamingDataset
from streaming.base.format import reader_from_json

from mosaicbert.data.text_dataset import SharedFolderStream, StreamingTextDataset
from mosaicbert.training.checkpointing import checkpoint_batch
from test_distributed import COMPOSER, read_samples, run_args, train_losses, write_launch_log
from test_train import DEMO, REPO

# A private /dev/shm per node; `exec` keeps the launcher in the process group the test kills.
IN_OWN_NAMESPACES = ["unshare", "--ipc", "--mount", "--fork", "--", "sh", "-c",
                     'mount -t tmpfs -o size=256m tmpfs /dev/shm && exec "$@"', "node"]

# Every run here: one epoch of train_small (200 samples, 25 batches of 8), saving every 3 batches. The sample
# order is fixed by num_canonical_nodes, not by the node count (streaming's default for py1e is the number of
# physical nodes, so runs on one node and on two would see other samples). 2 rather than the recipes' 64:
# streaming gives every canonical node as many samples, repeating a few, and 200 samples over 64 canonical
# nodes repeat 7 (and leave out 7) in every layout, one node of one process included.
RECIPE = {"max_duration": "1ep", "train_loader.split": "train_small", "train_loader.num_canonical_nodes": 2}
BATCHES = 25


@functools.cache
def namespaces_refused() -> str:
    """Why this machine cannot give a process its own IPC + mount namespace with a tmpfs on /dev/shm
    ('' when it can)."""
    if shutil.which("unshare") is None:
        return "util-linux's unshare is not installed"
    try:
        probe = subprocess.run([*IN_OWN_NAMESPACES, "true"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare failed: {err}"
    if probe.returncode != 0:
        return (f"unshare --ipc --mount with a tmpfs on /dev/shm was refused ({probe.stderr.strip()}); it needs root "
                "or CAP_SYS_ADMIN, and a container that permits namespaces")
    return ""


two_nodes_on_one_host = pytest.mark.skipif(
    bool(namespaces_refused()), reason=f"two nodes on one host need Linux namespaces: {namespaces_refused()}")


def free_ports(count: int) -> list[int]:
    """Distinct free ports, one per launch that runs at the same time (the launcher's own choice for a
    one-node run could take a port just handed to another launch)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Node:
    """One node's `composer` launcher, started in its own namespaces; its output goes to ``<folder>/<name>.log``."""

    running: list["Node"] = []  # killed at the end of each test, whatever its outcome

    def __init__(self, name: str, folder, args: list[str], nproc: int, nodes: int, node_rank: int, port: int):
        self.log = os.path.join(folder, f"{name}.log")
        self.tmp = os.path.join(folder, f"{name}-tmp")  # this node's TMPDIR
        os.makedirs(self.tmp)
        launcher = ["-n", str(nproc), "--master_port", str(port)]
        if nodes > 1:
            launcher += ["--world_size", str(nproc * nodes), "--node_rank", str(node_rank), "--master_addr", "127.0.0.1"]
        self.command = [*IN_OWN_NAMESPACES, *COMPOSER, *launcher, os.path.join(REPO, "main.py"), DEMO, *args]
        env = dict(os.environ, TMPDIR=self.tmp, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
                   GLOO_SOCKET_IFNAME="lo", NCCL_SOCKET_IFNAME="lo")
        self.output = open(self.log + ".out", "w+")
        # Its own process group, so that killing the node takes its launcher and ranks at once.
        self.process = subprocess.Popen(self.command, stdout=self.output, stderr=subprocess.STDOUT, cwd=folder,
                                        env=env, start_new_session=True)
        Node.running.append(self)

    def wait(self, timeout: float) -> int:
        """The node's exit status (-9 if it ran past ``timeout`` seconds and was killed); the log is written."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if not self.output.closed:
            self.output.seek(0)
            write_launch_log(self.log, self.command, self.output.read(), "")
            self.output.close()
            os.remove(self.log + ".out")
        return self.process.returncode

    def text(self) -> str:
        with open(self.log) as f:
            return f.read()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(autouse=True)
def no_node_left_running():
    yield
    while Node.running:
        Node.running.pop().wait(0)


def start_nodes(name: str, folder, args: list[str], port: int, nodes: int = 2, nproc: int = 1,
                node_ranks=None) -> list[Node]:
    return [Node(f"{name}-node{rank}", folder, args, nproc, nodes, rank, port)
            for rank in (range(nodes) if node_ranks is None else node_ranks)]


def finish(nodes: list[Node], timeout: float = 300) -> None:
    """Wait for every node; each must exit 0."""
    deadline = time.monotonic() + timeout
    codes = [node.wait(max(1.0, deadline - time.monotonic())) for node in nodes]
    for node, code in zip(nodes, codes):
        assert code == 0, f"{node.log} exited {code}:\n{node.text()[-6000:]}"


def args(tiny_data, folder, name, **extra) -> list[str]:
    return run_args(tiny_data, folder, name, **{**RECIPE, **extra})


def checkpoint(folder, name, batch) -> str:
    path = folder / name / "ckpt" / f"ep0-ba{batch}-rank0.pt"
    assert path.is_file(), f"{path} was not written"
    return str(path)


def assert_same_batches(got: dict, expected: dict, batches) -> None:
    """Per batch, all ranks together trained on the same samples (however the batch is split over ranks)."""
    for batch in batches:
        assert sorted(itertools.chain(*got[batch].values())) == sorted(itertools.chain(*expected[batch].values())), \
            f"batch {batch}"


def assert_same_losses(got: dict, expected: dict, steps) -> None:
    """Equal up to float rounding (the runs compared split each batch over ranks the same way: the loss is a
    mean over masked tokens per microbatch, so another split is another objective)."""
    for step in steps:
        assert got[step] == pytest.approx(expected[step], rel=1e-7), f"step {step}"


def compressed_copy(tiny_mds, root) -> str:
    """train_small as converted, in ``root``: index and zstd shards only, as if never read (the session's
    tiny_mds may have been decompressed by earlier tests)."""
    split = os.path.join(tiny_mds, "train_small")
    os.makedirs(os.path.join(root, "train_small"))
    for name in os.listdir(split):
        if name == "index.json" or name.endswith(".zstd"):
            shutil.copy(os.path.join(split, name), os.path.join(root, "train_small", name))
    return str(root)


@pytest.fixture(scope="module")
def fresh_data(tiny_mds, tmp_path_factory):
    """The data folder every node reads, with nothing decompressed yet."""
    return compressed_copy(tiny_mds, tmp_path_factory.mktemp("shared-data"))


@pytest.fixture(scope="module")
def first_runs(fresh_data, tmp_path_factory):
    """Two nodes of one process, and at the same time one node of two processes (the same global batch,
    split over ranks the same way), on the shared data folder that nothing has read yet."""
    folder = tmp_path_factory.mktemp("multinode")
    ports = free_ports(2)
    two = start_nodes("two", folder, args(fresh_data, folder, "two"), ports[0])
    one = start_nodes("one", folder, args(fresh_data, folder, "one"), ports[1], nodes=1, nproc=2)
    finish(two + one)
    return folder, two


@two_nodes_on_one_host
def test_two_nodes_train_the_epoch_with_the_losses_of_one_node(first_runs):
    folder, two = first_runs
    assert "batches trained          25 (200 samples)" in two[0].text()
    # Both nodes picked streaming's first shared-memory prefix: each saw only its own /dev/shm and TMPDIR.
    for node in two:
        assert sorted(n for n in os.listdir(node.tmp) if n.startswith("000000_")) == [
            "000000_barrier_filelock", "000000_cache_filelock"], node.tmp
    two_losses, one_losses = (train_losses(folder / name / "ckpt" / "metrics.jsonl") for name in ("two", "one"))
    assert sorted(two_losses) == sorted(one_losses) == list(range(BATCHES))
    assert two_losses[BATCHES - 1] < two_losses[0] - 0.5, "the loss must fall"
    assert_same_losses(two_losses, one_losses, range(BATCHES))


@two_nodes_on_one_host
def test_the_epoch_is_split_over_the_ranks_of_both_nodes(first_runs):
    folder, _ = first_runs
    two = read_samples(folder / "two" / "samples")
    assert sorted(two) == list(range(1, BATCHES + 1))
    seen = []
    for batch in two.values():
        assert sorted(batch) == [0, 1] and len(batch[0]) == len(batch[1]) == 4
        seen += batch[0] + batch[1]
    assert len(seen) == len(set(seen)) == 200, "no sample repeated or dropped within the epoch"
    one = read_samples(folder / "one" / "samples")
    assert all(one[b] == two[b] for b in two), "each rank gets the same samples on one node as on two"


@two_nodes_on_one_host
def test_checkpoints_move_between_two_nodes_and_one(first_runs, fresh_data):
    """At the same time: the two-node run's batch-12 checkpoint resumes on one node of one process, and the
    one-node run's on two nodes of two processes. Each continues with the samples of the run that wrote it."""
    folder, _ = first_runs
    ports = free_ports(2)
    to_one = start_nodes("to-one", folder, args(fresh_data, folder, "to-one", load_path=checkpoint(folder, "two", 12)),
                         ports[0], nodes=1)
    to_two = start_nodes("to-two", folder, args(fresh_data, folder, "to-two", load_path=checkpoint(folder, "one", 12),
                                                device_train_microbatch_size=2), ports[1], nproc=2)
    finish(to_one + to_two)
    resumed = range(13, BATCHES + 1)
    for run, source, ranks in (("to-one", "two", 1), ("to-two", "one", 4)):
        samples = read_samples(folder / run / "samples")
        assert sorted(samples) == list(resumed), f"{run} continues at batch 13"
        for batch in samples.values():
            assert sorted(batch) == list(range(ranks)) and {len(s) for s in batch.values()} == {8 // ranks}
        assert_same_batches(samples, read_samples(folder / source / "samples"), resumed)


@two_nodes_on_one_host
def test_a_killed_node_stops_the_other_and_autoresume_continues(first_runs, fresh_data):
    """SIGKILL node 0 (the rendezvous host and checkpoint writer) mid-run: node 1 exits non-zero within a bound
    and says what happened. Relaunching both nodes with the same command continues from the latest checkpoint
    with the uninterrupted run's samples and losses."""
    folder, _ = first_runs
    run = args(fresh_data, folder, "killed", autoresume="true", run_name="multinode")
    nodes = start_nodes("killed", folder, run, free_ports(1)[0])
    saved = folder / "killed" / "ckpt" / "ep0-ba6-rank0.pt"
    deadline = time.monotonic() + 180
    while not saved.exists():
        for node in nodes:
            if node.process.poll() is not None:
                node.wait(0)
                pytest.fail(f"{node.log} ended before the batch-6 checkpoint:\n{node.text()[-6000:]}")
        assert time.monotonic() < deadline, "no batch-6 checkpoint after 180 s"
        time.sleep(0.02)
    nodes[0].kill()
    killed_at = time.monotonic()
    code = nodes[1].wait(timeout=120)
    waited = time.monotonic() - killed_at
    nodes[0].wait(timeout=10)
    survivor = nodes[1].text()
    assert code != 0 and waited < 60, f"node 1 exited {code} after {waited:.0f} s"
    assert "lost contact with the other ranks" in survivor, survivor[-4000:]
    assert "autoresume=true continues from the latest checkpoint" in survivor

    # The relaunch continues from the newest complete checkpoint. Not from where latest-rank0.pt pointed at
    # the kill: node 0 may die between writing a checkpoint and moving the link to it (checkpoint files
    # appear whole or not at all, so the newest file is complete).
    ckpt = folder / "killed" / "ckpt"
    start = max(batch for name in os.listdir(ckpt) if (batch := checkpoint_batch(name)) is not None)
    assert start >= 6
    # The relaunch logs its samples and losses to files of its own (the killed node may have cut a line short).
    relaunch = [*run, f"callbacks.sample_log.path={folder / 'relaunch' / 'rank{rank}.jsonl'}",
                f"loggers.jsonl.path={folder / 'relaunch.jsonl'}"]
    finish(start_nodes("relaunch", folder, relaunch, free_ports(1)[0]))
    samples = read_samples(folder / "relaunch")
    assert sorted(samples) == list(range(start + 1, BATCHES + 1)), f"resumes after batch {start}"
    assert_same_batches(samples, read_samples(folder / "two" / "samples"), samples)
    losses = train_losses(folder / "relaunch.jsonl")
    assert sorted(losses) == list(range(start, BATCHES))
    assert_same_losses(losses, train_losses(folder / "two" / "ckpt" / "metrics.jsonl"), sorted(losses))


@two_nodes_on_one_host
def test_a_node_that_never_starts_stops_the_other_after_dist_timeout(fresh_data, tmp_path):
    """Only node 0 of two is launched: it gives up after dist_timeout (torch's default would be 30 minutes)."""
    node = start_nodes("alone", tmp_path, args(fresh_data, tmp_path, "alone", dist_timeout=5), free_ports(1)[0],
                       node_ranks=[0])[0]
    started = time.monotonic()
    code = node.wait(timeout=150)
    assert code != 0 and time.monotonic() - started < 90, f"exit {code} after {time.monotonic() - started:.0f} s"
    assert "lost contact with the other ranks" in node.text(), node.text()[-4000:]


# What the runs above found, checked in one process.

def decompress_while_another_node_does(stream_class, tiny_mds, folder, monkeypatch):
    """Node A (a ``stream_class``) decompresses the shard of a fresh copy of train_small in ``folder``; while A
    renames its result into place, node B (streaming's own Stream, in another process as a node on the same
    NFS folder is) decompresses the same shard, all of it. Returns the shard's (raw file path, raw size)."""
    root = compressed_copy(tiny_mds, folder)
    with open(os.path.join(root, "train_small", "index.json")) as f:
        shard = reader_from_json(root, "train_small", json.load(f)["shards"][0])
    (raw, zipped), = shard.file_pairs
    raw_path, zip_path = (os.path.join(root, "train_small", info.basename) for info in (raw, zipped))
    node_b = Stream(local=root, split="train_small", keep_zip=False)
    rename, renames = os.rename, []

    def rename_after_node_b(src, dst):
        if not renames:
            renames.append(src)
            node_b._decompress_shard_part(zipped, zip_path, raw_path, shard.compression)
        rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_after_node_b)
    stream_class(local=root, split="train_small", keep_zip=False)._decompress_shard_part(
        zipped, zip_path, raw_path, shard.compression)
    assert renames, "node B ran while node A was renaming"
    return raw_path, raw.bytes


def test_streaming_fails_when_two_nodes_decompress_one_shard_of_a_shared_folder(tiny_mds, tmp_path, monkeypatch):
    # Both write <shard>.tmp; B's rename takes A's file away.
    with pytest.raises(FileNotFoundError, match=r"shard\.00000\.mds\.tmp"):
        decompress_while_another_node_does(Stream, tiny_mds, tmp_path, monkeypatch)


def test_shared_folder_stream_survives_two_nodes_decompressing_one_shard(tiny_mds, tmp_path, monkeypatch):
    raw_path, size = decompress_while_another_node_does(SharedFolderStream, tiny_mds, tmp_path, monkeypatch)
    assert os.path.getsize(raw_path) == size
    assert sorted(os.listdir(os.path.dirname(raw_path))) == ["index.json", "shard.00000.mds", "shard.00000.mds.zstd"]


@pytest.mark.usefixtures("fresh_shared_memory")
def test_the_text_dataset_reads_through_shared_folder_stream(tiny_mds, tokenizer):
    dataset = StreamingTextDataset(tokenizer, 32, local=tiny_mds, split="train_small")
    assert [type(stream) for stream in dataset.streams] == [SharedFolderStream]


@pytest.mark.usefixtures("fresh_shared_memory")
def test_a_failed_shard_thread_stops_the_epoch_with_an_error(tiny_mds, tokenizer, monkeypatch):
    """When one of streaming's shard threads fails, streaming logs it and ends the epoch early without an error
    (in a two-node run whose nodes raced to decompress a shard, the run trained no batch and exited 0). The
    dataset raises instead. Streaming's iteration is replaced by one that does what it does then."""

    def epoch_after_a_failed_thread(dataset):
        dataset._event = threading.Event()  # streaming's signal to its threads, made in its __iter__
        failed = Future()
        failed.set_exception(FileNotFoundError("shard.00000.mds.tmp -> shard.00000.mds"))
        with contextlib.suppress(FileNotFoundError):  # streaming's callback re-raises into the thread pool's log
            dataset.on_exception(failed)
        yield from ()

    dataset = StreamingTextDataset(tokenizer, 32, local=tiny_mds, split="train_small", batch_size=4)
    monkeypatch.setattr(StreamingDataset, "__iter__", epoch_after_a_failed_thread)
    with pytest.raises(RuntimeError, match=r"could not prepare a shard of .*train_small.* \(FileNotFoundError: shard"):
        list(dataset)


GLOO_LOST = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                         "[127.0.0.1]:40123")


@pytest.mark.parametrize("keys, advice", [
    ({"autoresume": "true", "run_name": "r"}, "autoresume=true continues from the latest checkpoint in {folder}"),
    ({"autoresume": "false"}, "set load_path to the latest checkpoint in {folder}"),
    ({"save_folder": "null"}, "The run saves no checkpoints (save_folder is null)"),
])
def test_a_lost_rank_is_explained_with_how_to_continue(tmp_path, monkeypatch, keys, advice):
    """The message itself, without two nodes (the launches above need namespaces): a gloo transport error
    in a run of two ranks becomes one LostRankError that says what happened and how to continue."""
    from composer.utils import dist

    from mosaicbert.config import load_config
    from mosaicbert.training.multinode import LostRankError, explain_lost_ranks

    folder = tmp_path / "ckpt"
    overrides = [f"save_folder={folder}", "run_name=r", "dist_timeout=42", *(f"{k}={v}" for k, v in keys.items())]
    cfg = load_config(DEMO, overrides)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    with pytest.raises(LostRankError) as raised, explain_lost_ranks(cfg):
        raise GLOO_LOST
    message = str(raised.value)
    assert message.startswith("Rank 0 (node 0) lost contact with the other ranks of the run")
    assert "dist_timeout (42 s)" in message and advice.format(folder=f"{folder}") in message
    assert raised.value.__cause__ is GLOO_LOST


def test_other_errors_and_single_process_runs_pass_through(monkeypatch):
    from composer.utils import dist

    from mosaicbert.config import load_config
    from mosaicbert.training.multinode import explain_lost_ranks

    cfg = load_config(DEMO, [])
    with pytest.raises(RuntimeError) as raised, explain_lost_ranks(cfg):  # one process: nothing to explain
        raise GLOO_LOST
    assert raised.value is GLOO_LOST
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="unrelated"), explain_lost_ranks(cfg):
        raise ValueError("unrelated")
