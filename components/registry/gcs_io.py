"""Cloud Storage plumbing for the GCS registry: the client, digests, transfers and leases."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import google_crc32c
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from components.registry.base import RegistryError

logger = logging.getLogger(__name__)

# The project the client names when talking to an emulator (which ignores it).
EMULATOR_PROJECT = "emulator-project"
_CHUNK = 1 << 20


def make_storage_client(project: str | None = None) -> storage.Client:
    """A storage client for real GCS (application default credentials), or for the emulator
    named by STORAGE_EMULATOR_HOST (anonymous credentials and a placeholder project)."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=project or EMULATOR_PROJECT, credentials=AnonymousCredentials()
        )
    return storage.Client(project=project) if project else storage.Client()


def _crc32c_b64(checksum: google_crc32c.Checksum) -> str:
    # GCS reports crc32c as base64 of the big-endian 4 bytes; store it in the same form.
    return base64.b64encode(checksum.digest()).decode("ascii")


def digests(source: str | bytes) -> tuple[int, str, str]:
    """(size, sha256 hex, crc32c base64) of a file path or of bytes, in one pass."""
    sha, crc, size = hashlib.sha256(), google_crc32c.Checksum(), 0
    if isinstance(source, bytes):
        chunks: Iterable[bytes] = [source]
    else:
        chunks = _read_chunks(source)
    for chunk in chunks:
        sha.update(chunk)
        crc.update(chunk)
        size += len(chunk)
    return size, sha.hexdigest(), _crc32c_b64(crc)


def _read_chunks(path: str) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def upload_file(blob: storage.Blob, source: str | bytes) -> None:
    """Uploads one file (a path) or document (bytes); module level so tests can interrupt it."""
    # The upload prefix is unique to this push, so repeating a write is harmless: retry always.
    if isinstance(source, bytes):
        blob.upload_from_string(
            source, content_type="application/octet-stream", retry=DEFAULT_RETRY
        )
    else:
        blob.upload_from_filename(source, retry=DEFAULT_RETRY)


class HashingSink:
    """A write-only file object that hashes what is written (verify streams objects into it)."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return len(data)


class Lease:
    """The heartbeat object that tells `gc()` an upload is still being written."""

    def __init__(self, bucket: storage.Bucket, name: str, interval_s: float):
        self._bucket = bucket
        self._name = name
        self._interval_s = interval_s
        self._generation: int | None = None
        self._lock = threading.Lock()  # orders heartbeats against check()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner = {"host": socket.gethostname(), "pid": os.getpid()}

    def _write(self, generation: int) -> None:
        # A fresh token per write tells our own landed write from a 412 on its retry.
        body = json.dumps({**self._owner, "beat": uuid.uuid4().hex}).encode()
        blob = self._bucket.blob(self._name)
        try:
            blob.upload_from_string(
                body, content_type="application/json", if_generation_match=generation
            )
        except gexc.PreconditionFailed:
            data, current = read_object(self._bucket, self._name)
            if data != body:
                raise
            self._generation = current
            return
        self._generation = int(blob.generation)

    def acquire(self) -> None:
        self._write(0)
        self._thread = threading.Thread(target=self._beat, name="registry-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval_s):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Rewrites the lease under its generation; False once gc() has taken it."""
        with self._lock:
            try:
                self._write(self._generation)
            except (gexc.PreconditionFailed, gexc.NotFound):
                return False  # check() reports it before the push seals
            except Exception as e:  # noqa: BLE001 - a missed beat is retried at the next one
                logger.warning("Lease %s: heartbeat failed: %s", self._name, e)
            return True

    def check(self) -> None:
        """Raises RegistryError unless the lease is still ours (gc() may have taken it)."""
        with self._lock:
            current = self._bucket.get_blob(self._name)
            if current is None or int(current.generation) != self._generation:
                raise RegistryError(
                    f"lease gs://{self._bucket.name}/{self._name} was taken by gc() (the push "
                    "looked abandoned for longer than the lease timeout); not sealing an upload "
                    "that may have been deleted"
                )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._generation is not None:
            with contextlib.suppress(gexc.NotFound, gexc.PreconditionFailed):
                self._bucket.blob(self._name).delete(if_generation_match=self._generation)


def parallel_map(fn: Callable[[Any], Any], items: list[Any], max_workers: int) -> list[Any]:
    """fn over items on a thread pool, results in order; the first error cancels the rest."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                for other in futures:
                    other.cancel()
                raise future.exception()
        return [future.result() for future in futures]


def read_object(bucket: storage.Bucket, name: str) -> tuple[bytes | None, int]:
    """(content, generation) of one object read consistently, or (None, 0) if it is missing."""
    while True:
        blob = bucket.get_blob(name)
        if blob is None:
            return None, 0
        generation = int(blob.generation)  # taken first: a download rewrites the attribute
        try:
            # Pinned to the generation just read, so content and generation belong together.
            return blob.download_as_bytes(if_generation_match=generation), generation
        except (gexc.NotFound, gexc.PreconditionFailed):
            continue  # replaced in between: read the new one


def update_object(
    bucket: storage.Bucket,
    name: str,
    update: Callable[[bytes | None], tuple[bytes | None, Any]],
    attempts: int = 50,
) -> Any:
    """Read-modify-write of one object, exclusive through its generation.

    Args:
      bucket: the bucket.
      name: the object (created if missing).
      update: given the current content (None: missing), returns (new content or None to
        leave it as is, the result to return). It may raise to abort, and is called again
        with the newer content whenever another writer got in first.
      attempts: how many lost races to tolerate before giving up.

    Raises:
      RegistryError: every attempt lost a race.
    """
    for attempt in range(attempts):
        data, generation = read_object(bucket, name)
        new, result = update(data)
        if new is None:
            return result
        try:
            # 0 means "must not exist yet", so two first writers cannot both create it.
            bucket.blob(name).upload_from_string(
                new, content_type="application/json", if_generation_match=generation
            )
            return result
        except gexc.PreconditionFailed:
            # Back off a random, growing time so that racing writers spread out.
            time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
    raise RegistryError(f"gs://{bucket.name}/{name}: changed under every one of {attempts} updates")
