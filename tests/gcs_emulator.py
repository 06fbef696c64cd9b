"""A throwaway in-memory GCS emulator for tests (gcp-storage-emulator, preconditions enforced).

Usage from any test file (the tests run with --import-mode=importlib, so put this folder on
the path first):

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[N]))  # N up to tests/
    from gcs_emulator import emulator_fixture, gcs_emulator

    gcs = emulator_fixture(scope="module")        # a pytest fixture yielding an Emulator

    def test_x(gcs):
        client = gcs.client()                     # google.cloud.storage.Client
        path = f"gs://{gcs.bucket}/a.txt"         # Beam FileSystems reaches it too

or `with gcs_emulator() as emu: ...` outside pytest. While it runs, STORAGE_EMULATOR_HOST and
GOOGLE_CLOUD_PROJECT point at it (and NO_PROXY holds 127.0.0.1); all are restored when it
stops. tf.io.gfile does NOT honour STORAGE_EMULATOR_HOST: gs:// paths handled by TensorFlow
still go to Google.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

_SERVER = pathlib.Path(__file__).with_name("gcs_emulator_server.py")
_START_TIMEOUT_S = 20.0
PROJECT = "test-project"
_ENV_KEYS = ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "NO_PROXY", "no_proxy")


@dataclasses.dataclass(frozen=True)
class Emulator:
    """A running emulator: its base URL (`http://127.0.0.1:PORT`) and its bucket."""

    url: str
    port: int
    bucket: str
    project: str = PROJECT

    def client(self):
        """An anonymous google-cloud-storage client bound to the emulator."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def wipe(self) -> None:
        """Deletes every object (buckets stay)."""
        urllib.request.urlopen(f"{self.url}/wipe?keep-buckets=1", timeout=10).read()


def _read_ready_line(process: subprocess.Popen, timeout: float) -> str | None:
    """The first stdout line of `process`, or None if none comes within `timeout`."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _anonymous_beam_credentials() -> Iterator[None]:
    """Makes Beam's gs:// filesystem connect anonymously in this process, then undoes it.

    With google-auth-httplib2 installed (apache-beam[gcp]) Beam looks for application default
    credentials once per process and, finding none, retries with back-off for ~30 s; a
    developer's real credentials would be sent to the emulator. Beam keeps the outcome in a
    class-level cache (private API: if it moves, tests only get slower).
    """
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        yield
        return
    cache = getattr(auth, "_Credentials", None)
    if cache is None or not hasattr(cache, "_credentials_init"):
        yield
        return
    with cache._credentials_lock:
        saved = (cache._credentials_init, cache._credentials)
        cache._credentials_init, cache._credentials = True, None
    try:
        yield
    finally:
        with cache._credentials_lock:
            cache._credentials_init, cache._credentials = saved


@contextlib.contextmanager
def gcs_emulator(bucket: str = "test-bucket", project: str = PROJECT) -> Iterator[Emulator]:
    """Starts the emulator on a free loopback port with `bucket`, yields it, stops it.

    Raises:
        RuntimeError: if it does not answer within ~20 s (the message carries its log).
    """
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(_SERVER),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--bucket",
                bucket,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        saved = {k: os.environ.get(k) for k in _ENV_KEYS}
        # Loopback must never go through a proxy a developer may have configured.
        for key in ("NO_PROXY", "no_proxy"):
            os.environ[key] = ",".join(filter(None, [os.environ.get(key), "127.0.0.1"]))
        try:
            deadline = time.monotonic() + _START_TIMEOUT_S
            line = _read_ready_line(process, _START_TIMEOUT_S)
            port = int(line.split()[1]) if line and line.startswith("READY ") else None
            url = f"http://127.0.0.1:{port}"
            while port is not None and not _answers(url) and time.monotonic() < deadline:
                time.sleep(0.1)
            if port is None or not _answers(url):
                process.kill()
                process.wait(5)
                log.seek(0)
                raise RuntimeError(
                    f"GCS emulator did not start within {_START_TIMEOUT_S:.0f} s "
                    f"(exit code {process.returncode}); its log:\n{log.read()}"
                )
            os.environ["STORAGE_EMULATOR_HOST"] = url
            os.environ["GOOGLE_CLOUD_PROJECT"] = project
            with _anonymous_beam_credentials():
                yield Emulator(url=url, port=port, bucket=bucket, project=project)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            process.stdout.close()


def emulator_fixture(scope: str = "module", bucket: str = "test-bucket"):
    """A pytest fixture (assign it to a module-level name) yielding a running `Emulator`."""

    @pytest.fixture(scope=scope)
    def _fixture() -> Iterator[Emulator]:
        with gcs_emulator(bucket=bucket) as emulator:
            yield emulator

    return _fixture
