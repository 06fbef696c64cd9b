"""Runs pipeline steps in the project image through KFP's own `kfp.local.DockerRunner`.

The runner needs a Docker-compatible API. In order: `DOCKER_HOST` when set, the Docker daemon's
socket when it answers, else a podman API service (`podman system service`) started for the run
on a private socket and stopped after it, so a machine with podman and no Docker works as is.

Two things KFP's runner does not do and a real run needs:
- Paths outside the pipeline root that steps read or write (a local registry, a local dataset)
  are bind-mounted at the same path, as the pipeline root is.
- The exit code is read before the container is removed. KFP runs containers with auto-remove
  and counts a container that is gone by the time it asks as a success; podman also answers that
  question with a 500. A failed step must never pass, so `step_container` below keeps the
  container until its status is read, then removes it (also when the run is interrupted).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

DOCKER_SOCKET = "/var/run/docker.sock"
LABEL = "org.vision-pipelines.run"


class DockerRunnerError(RuntimeError):
    """No usable container API or image; the message says what to install or build."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def _pings(socket_path: str) -> bool:
    if not os.path.exists(socket_path):
        return False
    try:
        conn = _UnixHTTPConnection(socket_path)
        conn.request("GET", "/_ping")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


@contextlib.contextmanager
def docker_api() -> Iterator[str]:
    """Yields a `DOCKER_HOST` value for a Docker-compatible API that answers (see module doc)."""
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    if _pings(DOCKER_SOCKET):
        yield f"unix://{DOCKER_SOCKET}"
        return
    podman = shutil.which("podman")
    if podman is None:
        raise DockerRunnerError(
            "--runner docker needs a Docker-compatible API: set DOCKER_HOST, start the Docker "
            f"daemon ({DOCKER_SOCKET} did not answer), or install podman "
            "(apt-get install podman runc)"
        )
    env = dict(os.environ)
    conf = os.path.join(os.path.dirname(os.path.dirname(__file__)), "containers", "containers.conf")
    if os.path.exists(conf):
        env.setdefault("CONTAINERS_CONF", conf)
    with tempfile.TemporaryDirectory(prefix="vp-podman-") as tmp:
        path = os.path.join(tmp, "podman.sock")
        log = open(os.path.join(tmp, "service.log"), "w+")  # noqa: SIM115 (read on failure)
        service = subprocess.Popen(
            [podman, "system", "service", "--time=0", f"unix://{path}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while not _pings(path):
                if service.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise DockerRunnerError(
                        "the podman API service did not start: " + log.read()[-500:].strip()
                    )
                time.sleep(0.2)
            yield f"unix://{path}"
        finally:
            service.terminate()
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.kill()
            log.close()


def resolve_local_image(client: Any, image: str) -> tuple[str, str]:
    """(a tag the engine lists for `image`, its image ID); podman keeps `localhost/` tags."""
    import docker

    for candidate in (image, f"localhost/{image}"):
        try:
            found = client.images.get(candidate)
        except docker.errors.ImageNotFound:
            continue
        tags = found.tags or [candidate]
        tag = next((t for t in tags if t.endswith(image)), tags[0])
        return tag, found.id
    raise DockerRunnerError(
        f"image {image!r} is not in the local container engine; build it with `make image` "
        "(or pass --image with one that is)"
    )


def step_container(client, image: str, command: list, volumes: dict, **run_args) -> int:
    """KFP's `run_docker_container`, made reliable on Docker and podman alike.

    The exit code comes from waiting on the container, which is only removed after that (never
    from whether it still exists). The log is streamed live from another thread with no read
    timeout (a step may print nothing for minutes); a stream that ends early or hangs (podman
    4's follow on a container that already exited can hang) is closed once the container has
    exited, and whatever it had not printed yet is printed from the complete log.
    """
    container = client.containers.run(
        image=image,
        command=command,
        detach=True,
        stdout=True,
        stderr=True,
        volumes=volumes,
        **run_args,
    )
    try:
        log_api = _untimed_api(client)
        stream = log_api.logs(container.id, stream=True, follow=True)
        lock = threading.Lock()
        state = {"printed": 0, "stopped": False, "complete": False}

        def pump() -> None:
            with contextlib.suppress(Exception):
                for chunk in stream:
                    with lock:
                        if state["stopped"]:
                            return
                        print(chunk.decode(errors="replace"), end="", flush=True)
                        state["printed"] += len(chunk)
                state["complete"] = True

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        code = int(client.api.wait(container.id, timeout=None)["StatusCode"])
        reader.join(timeout=LOG_GRACE_SECONDS)
        with lock:
            state["stopped"] = True
            if not state["complete"]:
                stream.close()
                full = client.api.logs(container.id, stream=False)
                print(full[state["printed"] :].decode(errors="replace"), end="", flush=True)
        return code
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


# How long the log stream may take to end after its container has exited.
LOG_GRACE_SECONDS = 5.0


def _untimed_api(client: Any) -> Any:
    """An API client like `client`'s but without a read timeout, for following logs."""
    import docker

    if os.environ.get("DOCKER_HOST"):
        return docker.from_env(timeout=None).api
    return client.api


def make_runner(run_name: str, mounts: Iterable[tuple[str, bool]]) -> Any:
    """A DockerRunner whose containers run as this user, with `mounts` ((path, writable) pairs)
    bound at the same paths and the host's network (so gs:// works as it does for the host)."""
    import docker
    from kfp import local

    binds = [
        docker.types.Mount(target=path, source=path, type="bind", read_only=not writable)
        for path, writable in mounts
    ]
    return local.DockerRunner(
        # Files in the pipeline root and the registry stay owned by whoever ran the pipeline;
        # HOME moves to /tmp because that user has no home in the image.
        user=f"{os.getuid()}:{os.getgid()}",
        environment={"HOME": "/tmp"},
        mounts=binds,
        network_mode="host",
        labels={LABEL: run_name},
    )


@contextlib.contextmanager
def kfp_step_containers() -> Iterator[None]:
    """Makes KFP's DockerTaskHandler start containers with `step_container` while active."""
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = step_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def host_paths(config: Any) -> list[tuple[str, bool]]:
    """The local paths outside the pipeline root that steps use: (path, writable)."""
    paths: list[tuple[str, bool]] = []
    if "://" not in config.registry.uri:
        os.makedirs(config.registry.uri, exist_ok=True)
        paths.append((config.registry.uri, True))
    ds = config.dataset
    sources = [ds.source_dir, *ds.annotations.values(), *ds.images.values(), *ds.masks.values()]
    for path in sources:
        if path and "://" not in path and os.path.exists(path):
            paths.append((os.path.abspath(path), False))
    root = os.path.abspath(config.pipeline_root)
    unique: dict[str, bool] = {}
    for path, writable in paths:
        if path != root and not path.startswith(root + os.sep):
            unique[path] = unique.get(path, False) or writable
    return sorted(unique.items())
