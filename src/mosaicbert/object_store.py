"""Object storage for checkpoints and data: ``s3://`` URIs on AWS S3 or any S3-compatible store (GCS
through its XML API, R2, MinIO, SeaweedFS, ...).

Where the store is: ``S3_ENDPOINT_URL`` (unset for AWS S3). Credentials: boto3's usual sources
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile, an instance role). Composer and
mosaicml-streaming read the same variables.

What this module adds to Composer and streaming:

- Up-front checks (:func:`check_pretraining_stores`, :func:`resolve_checkpoint`): every ``s3://`` URI of
  a recipe is tried once with short timeouts and no long retries before any work starts, and a
  failure is one :class:`RecipeError` naming the fix (credentials, bucket, endpoint, missing
  checkpoint or data index, damaged checkpoint).
- The checkpoint that autoresume loads (:func:`latest_checkpoint`): the newest *complete* checkpoint
  object of the run's prefix. Composer publishes ``latest-rank0.pt.symlink`` only after a process
  that polls for the checkpoint object every 30 s has seen it, so after a pre-emption the symlink is
  often one checkpoint behind or absent; and its own autoresume keeps a downloaded copy under
  ``./s3:/...`` in the working directory that later restarts in that directory load instead of the
  bucket's newest. Listing the checkpoint objects avoids both. A checkpoint is complete when its zip
  directory (at the end of the file) is whole: an upload cut off in the middle either never becomes an
  object (S3 publishes an object only when its single PUT or its multipart upload completes) or, on a
  store that exposes partial writes, lacks that directory and is skipped.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from typing import Optional
from urllib.parse import urlparse

import boto3
import botocore.exceptions as be
from botocore.config import Config
from composer.utils import format_name_with_dist

from .errors import RecipeError, describe

log = logging.getLogger(__name__)

# Composer's default checkpoint name (the recipes do not change it): ep{epoch}-ba{batch}-rank{rank}.pt.
# Without FSDP's sharded state dicts, rank 0 writes the whole checkpoint.
CHECKPOINT_NAME = re.compile(r"^ep(\d+)-ba(\d+)-rank0\.pt$")
SYMLINK_SUFFIX = ".symlink"
LATEST_NAME = "latest-rank0.pt"  # Composer's name for the run's newest checkpoint (an object or a .symlink)

# One try and one retry, a few seconds each: a wrong endpoint fails in seconds, not after minutes.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 5
ATTEMPTS = 2

HOW_TO_CONNECT = ("Set S3_ENDPOINT_URL to the store's address for an S3-compatible store (unset for AWS S3), and "
                  "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to its keys")


def run_save_folder(save_folder: Optional[str], run_name: Optional[str]) -> Optional[str]:
    """``save_folder`` with ``{run_name}`` (and Composer's other placeholders) filled in as Composer fills
    them; unchanged without a run name."""
    return format_name_with_dist(save_folder, run_name) if save_folder and run_name else save_folder


def is_s3(path: Optional[str]) -> bool:
    return isinstance(path, str) and path.lower().startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise RecipeError(f"{uri!r} names no bucket; write s3://<bucket>/<path>.")
    return parsed.netloc, parsed.path.lstrip("/")


def endpoint() -> str:
    return os.environ.get("S3_ENDPOINT_URL") or "AWS S3 (S3_ENDPOINT_URL is not set)"


def client(fast: bool = True):
    """A boto3 S3 client at ``S3_ENDPOINT_URL``: for the checks (``fast``) short timeouts and one retry, so a
    wrong endpoint fails in seconds; otherwise boto3's defaults, for downloads of large checkpoints."""
    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                    retries={"total_max_attempts": ATTEMPTS, "mode": "standard"}) if fast else None
    return boto3.session.Session().client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None, config=config)


def explain(err: Exception, uri: str, what: str) -> RecipeError:
    """One paragraph for a failed request about ``uri`` (``what``: what it was for, e.g. "save_folder")."""
    bucket = split_s3(uri)[0]
    if isinstance(err, StoreReadError):
        err = err.__cause__
    if isinstance(err, (be.NoCredentialsError, be.PartialCredentialsError)):
        return RecipeError(f"No credentials for {what} {uri!r}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                           "(or AWS_PROFILE) for the object store.")
    if isinstance(err, (be.EndpointConnectionError, be.ConnectTimeoutError, be.ReadTimeoutError,
                        be.ConnectionClosedError, be.ProxyConnectionError)):
        return RecipeError(f"The object store at {endpoint()} does not answer ({type(err).__name__}), so {what} "
                           f"{uri!r} cannot be reached. Check S3_ENDPOINT_URL (scheme, host and port of the "
                           "store; unset it for AWS S3) and that the store is up and reachable from this machine.")
    code = ""
    if isinstance(err, be.ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                "AuthorizationHeaderMalformed", "InvalidClientTokenId"):
        return RecipeError(f"The object store at {endpoint()} rejected the credentials ({code}) for {what} {uri!r}. "
                           "Fix AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN if you use one) "
                           "to keys of this store.")
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return RecipeError(f"The object store at {endpoint()} denied access ({code}) to bucket {bucket!r} for {what} "
                           f"{uri!r}. Use credentials that may list, read and write that bucket (AWS_ACCESS_KEY_ID / "
                           "AWS_SECRET_ACCESS_KEY), or another bucket.")
    if code in ("NoSuchBucket",):
        return RecipeError(f"Bucket {bucket!r} does not exist at {endpoint()} ({what} {uri!r}). Create it, or fix the "
                           "bucket name in the URI (or S3_ENDPOINT_URL, if the bucket lives in another store).")
    return RecipeError(f"Could not use {what} {uri!r} at {endpoint()} ({describe(err, 300)}). {HOW_TO_CONNECT}.")


def _list(s3, bucket: str, prefix: str, delimiter: bool = False) -> list[dict]:
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = "/"
    return [obj for page in s3.get_paginator("list_objects_v2").paginate(**kwargs) for obj in page.get("Contents", [])]


def check_bucket(uri: str, what: str, s3=None) -> None:
    """The bucket of ``uri`` exists and these credentials may list it; else a RecipeError."""
    bucket, key = split_s3(uri)
    s3 = s3 or client()
    try:
        s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except Exception as err:
        raise explain(err, uri, what) from None


# ----------------------------------------------------------------------------------------------
# Whole checkpoints
# ----------------------------------------------------------------------------------------------
class StoreReadError(Exception):
    """A request of :class:`_RangeReader` failed. Not an OSError (as botocore's timeouts are): zipfile turns
    those into BadZipFile, which would call a slow store's checkpoint damaged."""


class _RangeReader(io.RawIOBase):
    """A seekable read-only file over one object, read by HTTP range requests (for ``zipfile``)."""

    def __init__(self, s3, bucket: str, key: str, size: int):
        self.s3, self.bucket, self.key, self.size, self.pos = s3, bucket, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.pos}-{end - 1}")["Body"].read()
        except Exception as err:
            raise StoreReadError(err) from err
        self.pos += len(body)
        return body


def holds_torch_pickle(archive: zipfile.ZipFile) -> bool:
    """Whether a zip file is a torch checkpoint: it has a ``data.pkl`` record."""
    return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())


def zip_is_whole(fileobj) -> bool:
    """Whether a torch checkpoint (a zip file) ends with its complete directory of records, with a
    ``data.pkl``. Reads only the end of the file. A failure to read (a timeout, a refused request) is not
    an incomplete file: it propagates (:class:`StoreReadError`), so that the caller reports the store's
    problem instead of skipping to an older checkpoint."""
    try:
        with zipfile.ZipFile(fileobj) as archive:
            return holds_torch_pickle(archive)
    except (zipfile.BadZipFile, ValueError, EOFError):
        return False


def object_is_whole_checkpoint(s3, bucket: str, key: str, size: int) -> bool:
    return size > 0 and zip_is_whole(_RangeReader(s3, bucket, key, size))


def _checkpoints_in(s3, bucket: str, prefix: str) -> list[tuple[int, int, str, int]]:
    """(batch, epoch, key, size) of the checkpoint objects directly under ``prefix``, newest first."""
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    found = []
    for obj in _list(s3, bucket, prefix, delimiter=True):
        match = CHECKPOINT_NAME.match(obj["Key"][len(prefix):])
        if match:
            found.append((int(match.group(2)), int(match.group(1)), obj["Key"], int(obj["Size"])))
    return sorted(found, reverse=True)


def latest_checkpoint(folder_uri: str, what: str = "save_folder", s3=None) -> Optional[str]:
    """The URI of the newest complete checkpoint object directly under ``folder_uri`` (the highest batch),
    or None when there is none. Incomplete or damaged ones are skipped with a warning."""
    bucket, prefix = split_s3(folder_uri)
    s3 = s3 or client()
    try:
        candidates = _checkpoints_in(s3, bucket, prefix)
        for _, _, key, size in candidates:
            if object_is_whole_checkpoint(s3, bucket, key, size):
                return f"s3://{bucket}/{key}"
            log.warning("Skipping s3://%s/%s (%d bytes): not a complete checkpoint (an upload cut off, or a "
                        "damaged object); an earlier checkpoint is used.", bucket, key, size)
    except Exception as err:
        raise explain(err, folder_uri, what) from None
    return None


def checkpoint_names(folder_uri: str, what: str = "save_folder", s3=None) -> list[str]:
    """The names of the checkpoint objects directly under an ``s3://`` folder, newest first."""
    bucket, prefix = split_s3(folder_uri)
    s3 = s3 or client()
    try:
        found = _checkpoints_in(s3, bucket, prefix)
    except Exception as err:
        raise explain(err, folder_uri, what) from None
    return [key.rsplit("/", 1)[-1] for _, _, key, _ in found]


def refuse_earlier_checkpoints(folder_uri: str, save_interval, s3=None, per_run: bool = True) -> None:
    """A RecipeError when ``folder_uri`` already holds checkpoint objects. A new run (no autoresume, no
    save_overwrite) would mix its checkpoints with them, and where a name repeats (the same save_interval)
    Composer stops only at that upload, one save_interval into training; for a local folder it checks
    before the first batch."""
    names = checkpoint_names(folder_uri, "save_folder", s3)
    if names:
        raise RecipeError(earlier_run_message(folder_uri, names, f"at the first name they share (with save_interval "
                                              f"{save_interval}) Composer would stop at that upload", per_run))


def earlier_run_message(folder: str, names: list[str], consequence: str, per_run: bool = True) -> str:
    """What a new run (no autoresume, no save_overwrite) is told when its save folder holds checkpoints.
    ``per_run``: the save_folder names ``{run_name}``, so another run_name gives another folder."""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    elsewhere = "another run_name or save_folder" if per_run else "another save_folder"
    return (f"save_folder {folder!r} already holds {len(names)} checkpoint(s) of an earlier run ({shown}); this run "
            f"would save among them, and {consequence}. Continue that run with autoresume=true, start a new one "
            f"under {elsewhere}, or replace them with save_overwrite=true.")


def _head(s3, bucket: str, key: str) -> Optional[int]:
    """The object's size, or None when there is no such object."""
    try:
        return int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except be.ClientError as err:
        if str(err.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def resolve_checkpoint(uri: str, what: str = "checkpoint") -> str:
    """The object a checkpoint URI means, checked to be a complete checkpoint:

    - a checkpoint object (``.../ep0-ba100-rank0.pt``);
    - Composer's ``.../latest-rank0.pt`` (followed through its ``latest-rank0.pt.symlink`` object; where
      neither exists, as after a pre-emption that came before the link was uploaded, the folder's newest
      complete checkpoint);
    - a folder (``s3://bucket/run`` or ``s3://bucket/run/``): its newest complete checkpoint.

    Anything else is a RecipeError naming the fix: unreachable store, wrong credentials, missing bucket,
    a prefix without checkpoints, an object that is not a whole checkpoint.
    """
    bucket, key = split_s3(uri)
    s3 = client()
    try:
        latest = key.removesuffix(SYMLINK_SUFFIX)
        if (os.path.basename(latest) == LATEST_NAME and _head(s3, bucket, latest) is None
                and _head(s3, bucket, latest + SYMLINK_SUFFIX) is None):
            folder = f"s3://{bucket}/{os.path.dirname(key)}"
            found = latest_checkpoint(folder, what, s3)
            if found is None:
                raise RecipeError(f"{what} {uri!r}: the run has no {LATEST_NAME} (nor its {SYMLINK_SUFFIX}) and "
                                  f"{folder} holds no complete checkpoint (ep<E>-ba<B>-rank0.pt). Give the URI of "
                                  "a checkpoint, or the save_folder of a run that saved one.")
            log.info("%s: %s has no %s; using its newest complete checkpoint, %s", what, folder, LATEST_NAME, found)
            return found
        target = key
        if key.endswith(SYMLINK_SUFFIX) or (key and _head(s3, bucket, key) is None
                                            and _head(s3, bucket, key + SYMLINK_SUFFIX) is not None):
            link = key if key.endswith(SYMLINK_SUFFIX) else key + SYMLINK_SUFFIX
            target = s3.get_object(Bucket=bucket, Key=link)["Body"].read().decode("utf-8", "replace").strip()
        size = _head(s3, bucket, target) if target and not target.endswith("/") else None
        if size is None:
            if target != key:
                raise RecipeError(f"{what} {uri!r} points (through s3://{bucket}/{key}{'' if key.endswith(SYMLINK_SUFFIX) else SYMLINK_SUFFIX}) "
                                  f"to s3://{bucket}/{target}, which does not exist. Give a checkpoint object "
                                  f"(e.g. s3://{bucket}/{os.path.dirname(target)}/ep0-ba1000-rank0.pt) or the run's "
                                  "folder, whose newest checkpoint is then used.")
            # A prefix (or nothing there): listing needs list permission, which reading one object does not.
            check_bucket(uri, what, s3)
            found = latest_checkpoint(uri, what, s3)
            if found is None:
                listing = [o["Key"] for o in _list(s3, bucket, key.rstrip("/") + "/" if key else "")][:5]
                seen = f" It holds: {', '.join(listing)}." if listing else " Nothing is stored under it."
                raise RecipeError(f"{what} {uri!r}: there is no checkpoint object there, nor any complete "
                                  f"checkpoint (ep<E>-ba<B>-rank0.pt) under that prefix.{seen} Give the URI of a "
                                  "checkpoint, or the save_folder of a run that saved one.")
            return found
        if not object_is_whole_checkpoint(s3, bucket, target, size):
            raise RecipeError(f"{what} {uri!r}: s3://{bucket}/{target} ({size} bytes) is not a complete PyTorch "
                              "checkpoint (it is truncated or damaged). Upload it again, or give an earlier "
                              "checkpoint of the run (or its folder, whose newest complete checkpoint is used).")
        return f"s3://{bucket}/{target}"
    except RecipeError:
        raise
    except Exception as err:
        raise explain(err, uri, what) from None


def download_checkpoint(uri: str, folder: str, what: str = "checkpoint") -> str:
    """Resolve ``uri`` (see :func:`resolve_checkpoint`) and download it into ``folder``; the local path."""
    resolved = resolve_checkpoint(uri, what)
    if resolved != uri:
        log.info("%s %s resolves to %s", what, uri, resolved)
    bucket, key = split_s3(resolved)
    destination = os.path.join(folder, os.path.basename(key))
    try:
        client(fast=False).download_file(bucket, key, destination)  # checked just above: the store answers
    except Exception as err:
        raise explain(err, resolved, what) from None
    return destination


# ----------------------------------------------------------------------------------------------
# Pretraining recipes
# ----------------------------------------------------------------------------------------------
def _loader_remote(section: Optional[dict]) -> tuple[Optional[str], Optional[str]]:
    section = section or {}
    return section.get("remote"), section.get("split")


def check_data_remote(remote: str, split: Optional[str], where: str, s3=None) -> None:
    """An MDS index exists at ``remote[/split]/index.json``; else a RecipeError."""
    s3 = s3 or client()
    index = "/".join(p.strip("/") for p in (remote, split, "index.json") if p)
    bucket, key = split_s3(index)
    try:
        found = _head(s3, bucket, key)
    except Exception as err:
        raise explain(err, index, where) from None
    if found is None:
        check_bucket(remote, where, s3)  # names a missing bucket; streaming itself only reads objects
        raise RecipeError(f"{where}: no MDS index at {index!r}. Upload the folder that scripts/convert_text.py or "
                          "scripts/convert_c4.py wrote (its split folders hold index.json and the shards), e.g. "
                          f"`aws s3 cp --recursive ./data/c4 {remote.rstrip('/')}` (add --endpoint-url for an "
                          "S3-compatible store), or fix remote/split.")


def pretraining_store_kwargs(cfg) -> dict:
    """Check every ``s3://`` URI of a pretraining recipe before anything is built (data remotes, save_folder,
    load_path), and return the Composer ``Trainer`` arguments that replace the recipe's:

    - ``load_path``: the checkpoint object it resolves to (see :func:`resolve_checkpoint`);
    - with ``autoresume`` and an ``s3://`` save_folder, autoresume is done here (Composer's is switched
      off): the newest complete checkpoint of the folder replaces load_path in full, as in Composer. A run
      resumed from batch B saves only later batches; an object already there under such a name was left
      by the pre-empted run past its last complete checkpoint, so ``save_overwrite`` is on.
    """
    remotes = {name: _loader_remote(getattr(cfg, name, None)) for name in ("train_loader", "eval_loader")}
    if not (is_s3(cfg.save_folder) or is_s3(cfg.load_path) or any(is_s3(r) for r, _ in remotes.values())):
        return {}
    s3 = client()
    for name, (remote, split) in remotes.items():
        if is_s3(remote):
            check_data_remote(remote, split, f"{name}.remote", s3)
    kwargs: dict = {}
    if is_s3(cfg.save_folder):
        folder = run_save_folder(cfg.save_folder, cfg.run_name)
        check_bucket(folder, "save_folder", s3)
        if cfg.autoresume:
            kwargs.update(autoresume=False, save_overwrite=True)
            found = latest_checkpoint(folder, "save_folder", s3)
            if found is not None:
                log.info("Autoresume: resuming from %s", found)
                kwargs.update(load_path=found, load_weights_only=False)
                return kwargs
            log.info("Autoresume: no checkpoint in %s yet; starting from the beginning.", folder)
        elif not cfg.save_overwrite and not cfg.load_path:
            # With load_path (e.g. the latest checkpoint of this folder, to continue it) the run saves only
            # batches after the loaded one.
            refuse_earlier_checkpoints(folder, cfg.save_interval, s3, "{run_name}" in cfg.save_folder)
    if is_s3(cfg.load_path):
        kwargs["load_path"] = resolve_checkpoint(cfg.load_path, "load_path")
    return kwargs
