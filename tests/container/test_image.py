"""The built image, for real (`make test-image`): the shapes segmentation pipeline with every
step in the image through KFP's DockerRunner, Beam's portable runner with its SDK workers in the
image, and a push to a loopback registry whose digest compiled pipelines pin.

The image is VISION_PIPELINES_TEST_IMAGE (make test-image builds it first). Each test checks what
the steps wrote, never a status line alone: a runner can report a step that left nothing as a
success (see pipelines/docker_runner.py).
"""

import contextlib
import glob
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from pipelines.config import PROJECT_ROOT

pytestmark = [pytest.mark.image, pytest.mark.slow]

IMAGE = os.environ.get("VISION_PIPELINES_TEST_IMAGE", "")
if not IMAGE:
    pytest.skip("VISION_PIPELINES_TEST_IMAGE is not set (make test-image)", allow_module_level=True)

CLI = [sys.executable, "-m", "pipelines.cli"]
sys.path.insert(0, os.path.join(PROJECT_ROOT, "benchmarks"))
from container_run import SMALL as SMALL_RUN  # noqa: E402


@pytest.fixture(scope="module")
def api():
    from pipelines.docker_runner import docker_api

    with docker_api() as url:
        yield url


@pytest.fixture(scope="module")
def client(api):
    import docker

    c = docker.DockerClient(base_url=api)
    yield c
    c.close()


@pytest.fixture(scope="module")
def image(client):
    from pipelines.docker_runner import resolve_local_image

    tag, _ = resolve_local_image(client, IMAGE)
    return client.images.get(tag)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def test_image_knows_its_code_version_and_carries_each_file_once(client, image):
    labels = image.labels
    version = labels["org.opencontainers.image.version"]
    assert version.startswith("0.1.0+g"), version
    out = client.containers.run(
        image.id,
        [
            "python3",
            "-c",
            "import os, pipelines; print(os.environ['VISION_PIPELINES_CODE_VERSION'])",
        ],
        remove=True,
    )
    assert out.decode().strip() == version
    # The console script (installed under /staging, then copied) runs the venv's Python.
    usage = client.containers.run(image.id, ["vision-pipelines", "--help"], remove=True)
    assert usage.decode().startswith("usage: vision-pipelines")
    # No ENTRYPOINT: KFP's DockerRunner, Kubernetes and Vertex run the step's own command.
    assert not image.attrs["Config"].get("Entrypoint")
    assert image.attrs["Config"]["User"] == "1000"
    # Layers above the base: the dependencies (copied once), the project, the user, the configs.
    # Nothing is deleted by a later layer, so the image is the sum of its layers.
    base = client.images.get(labels["org.vision-pipelines.base"])
    layers = [entry for entry in image.history() if entry["Size"] > 0]
    base_layers = [entry for entry in base.history() if entry["Size"] > 0]
    added = layers[: len(layers) - len(base_layers)]
    assert len(added) == 4, [entry["CreatedBy"][:80] for entry in added]
    venv, project, *small = sorted(added, key=lambda e: -e["Size"])
    assert "/opt/venv" in venv["CreatedBy"] and venv["Size"] > 1e9
    assert project["Size"] < 50e6 and all(e["Size"] < 1e6 for e in small)
    assert abs(sum(e["Size"] for e in layers) - image.attrs["Size"]) < 0.01 * image.attrs["Size"]


def test_the_image_runs_this_checkouts_code(client, image):
    """Every module of the three packages in the image is the checkout's, byte for byte (a
    builder that reuses a stale layer would fail this)."""
    script = (
        "import hashlib, json, pathlib, components, pipelines, vision_core; "
        "print(json.dumps({str(p.relative_to(pathlib.Path(m.__file__).parent.parent)): "
        "hashlib.sha256(p.read_bytes()).hexdigest() for m in (components, pipelines, vision_core) "
        "for p in pathlib.Path(m.__file__).parent.rglob('*.py')}))"
    )
    inside = json.loads(client.containers.run(image.id, ["python3", "-c", script], remove=True))
    here = {
        str(p.relative_to(PROJECT_ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
        for package in ("components", "pipelines", "vision_core")
        for p in pathlib.Path(PROJECT_ROOT, package).rglob("*.py")
    }
    assert inside == here


def test_a_failing_step_fails_the_run_even_though_its_container_is_gone(
    tmp_path, api, client, image, monkeypatch, capsys
):
    from kfp import dsl, local

    from pipelines import docker_runner

    monkeypatch.setenv("DOCKER_HOST", api)
    # Quick exits (the container may be gone from the log stream's view before it opens), and a
    # step that pauses and writes to both streams: the exit code and every line arrive, in order.
    for _ in range(5):
        assert docker_runner.step_container(client, image.id, ["sh", "-c", "exit 3"], {}) == 3
        assert docker_runner.step_container(client, image.id, ["true"], {}) == 0
    script = "echo first; sleep 2; echo second >&2; exit 4"
    assert docker_runner.step_container(client, image.id, ["sh", "-c", script], {}) == 4
    out = capsys.readouterr().out
    assert out.index("first") < out.index("second")

    @dsl.component(base_image=image.tags[0], install_kfp_package=False)
    def fails() -> str:
        import sys

        sys.exit(3)

    # Through KFP's own runner: the exit code decides, not whether the container still exists.
    local.init(runner=local.DockerRunner(), pipeline_root=str(tmp_path), raise_on_error=True)
    with docker_runner.kfp_step_containers(), pytest.raises(RuntimeError, match="FAILURE"):
        fails()
    # Nothing is left behind: the step's container was removed after its status was read.
    assert not client.containers.list(all=True, filters={"ancestor": image.id})


def _run_shapes(tmp_path, *extra):
    # The shrunk shapes run the benchmark times (96 images, 40 steps), with a gate it must pass.
    overrides = {
        **SMALL_RUN,
        "gate.min_value": 0.2,
        "pipeline_root": str(tmp_path / "root"),
        "registry.uri": str(tmp_path / "registry"),
    }
    args = [*CLI, "run", f"{PROJECT_ROOT}/configs/pipelines/shapes_segmentation.yaml", "--json"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return subprocess.run(
        [*args, *extra], capture_output=True, text=True, timeout=1800, cwd=tmp_path, check=False
    )


def test_the_shapes_pipeline_runs_every_step_in_the_image(tmp_path, image):
    result = _run_shapes(tmp_path, "--runner", "docker", "--image", IMAGE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["image"]["id"] == image.id
    steps = sorted(os.listdir(summary["run_dir"]))
    assert [s.split("-")[0] for s in steps] == ["convert", "evaluate", "push", "train", "validate"]
    # The dataset: TFRecord shards and the converter's summary, written by the container.
    convert_dir = os.path.join(summary["run_dir"], steps[0])
    shards = glob.glob(f"{convert_dir}/**/train-*-of-00002.tfrecord", recursive=True)
    assert len(shards) == 2 and all(os.path.getsize(p) > 0 for p in shards)
    # The metrics and the gate's decision.
    assert 0.2 <= summary["metrics"]["mean_iou"] <= 1.0
    assert summary["gate"]["passed"] is True
    # A registry version with the SavedModel, and lineage that names the image and the code
    # version the image carries (read inside the step, so it proves where the step ran).
    assert summary["registry"]["version"] == 1
    version_dir = tmp_path / "registry" / "shapes-segmentation" / "versions" / "1"
    assert (version_dir / "saved_model" / "saved_model.pb").exists()
    lineage = json.loads((version_dir / "lineage.json").read_text())
    assert lineage["code_version"] == image.labels["org.opencontainers.image.version"]
    assert lineage["image"] == summary["image"]["tag"]


def test_beam_portable_runner_with_sdk_workers_in_the_image(tmp_path, client, image):
    """The conversion on Beam's portable job service with its SDK workers in the image's worker
    pool (the arrangement Flink and Spark on Kubernetes use): byte-identical to the direct run.
    The workers run as the image's user (1000), so the shards they write are owned by it."""
    from components.convert_dataset import pipeline as convert

    shared = tmp_path / "shared"

    def convert_shapes(output_dir, beam_args=()):
        convert.run(
            source="shapes",
            source_dir=str(shared / "src"),
            output_dir=str(output_dir),
            shapes_options={
                "num_train": 24,
                "num_validation": 8,
                "image_size": (48, 48),
                "seed": 5,
            },
            num_shards=2,
            progress=False,
            beam_args=list(beam_args),
        )

    shared.mkdir()
    os.chmod(shared, 0o777)
    port = _free_port()
    pool = client.containers.run(
        image.id,
        ["python3", "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        detach=True,
        network_mode="host",
        mounts=[_bind(str(shared))],
    )
    old_umask = os.umask(0)  # the launcher's folders must be writable by the workers' user
    try:
        _wait_for_port(port)
        convert_shapes(
            shared / "portable",
            beam_args=[
                "--runner=PortableRunner",
                "--job_endpoint=embed",
                "--environment_type=EXTERNAL",
                f"--environment_config=localhost:{port}",
            ],
        )
    finally:
        os.umask(old_umask)
        logs = pool.logs().decode(errors="replace")
        pool.remove(force=True)
    convert_shapes(tmp_path / "direct")
    portable = _files(shared / "portable")
    direct = _files(tmp_path / "direct")
    assert sorted(portable) == sorted(direct)
    shard_names = [name for name in portable if "-of-" in name]
    assert len(shard_names) == 4, portable
    # Shards, groundtruth, summary and report: the same bytes whichever runner wrote them.
    for name in portable:
        assert portable[name] == direct[name], name
    for name in shard_names:
        owner = os.stat(shared / "portable" / name).st_uid
        assert owner == 1000, f"{name} owned by {owner}: not written by the image's workers\n{logs}"


def _bind(path):
    import docker

    return docker.types.Mount(target=path, source=path, type="bind")


def _files(root):
    out = {}
    for path in glob.glob(f"{root}/**/*", recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture
def registry_server(tmp_path):
    """Distribution's registry (Debian's docker-registry) on a loopback port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "store")}},
                "http": {"addr": f"127.0.0.1:{port}"},
                "log": {"level": "warn"},
            }
        )
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_image_push_records_the_digest_and_compiled_pipelines_pin_it(
    tmp_path, registry_server, monkeypatch
):
    # A small image stands in for the 3 GB one: what is tested is the push, the digest record
    # and the pin, which do not depend on the image's size.
    engine = shutil.which("podman") or shutil.which("docker")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "hello.txt").write_text("a tiny image\n")
    small = "localhost/vp-push-test:1"
    subprocess.run(
        f"tar -C {rootfs} -c . | {engine} import -q - {small}",
        shell=True,
        check=True,
        capture_output=True,
    )
    record_path = tmp_path / "image-push.json"
    monkeypatch.setenv("VISION_PIPELINES_IMAGE_RECORD", str(record_path))
    reference = f"{registry_server}/team/vision-pipelines:test"
    push = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.image",
            "push",
            "--image",
            reference,
            "--source",
            small,
            "--tls-verify",
            "false",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert push.returncode == 0, push.stdout + push.stderr
    record = json.loads(record_path.read_text())
    # The digest the registry serves for the tag.
    request = urllib.request.Request(
        f"http://{registry_server}/v2/team/vision-pipelines/manifests/test",
        method="HEAD",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },
    )
    with urllib.request.urlopen(request) as response:
        served = response.headers["Docker-Content-Digest"]
    assert record["digest"] == served
    assert record["pinned"] == f"{registry_server}/team/vision-pipelines@{served}"
    out = tmp_path / "p.yaml"
    compile_run = subprocess.run(
        [
            *CLI,
            "compile",
            f"{PROJECT_ROOT}/configs/pipelines/shapes_segmentation.yaml",
            "-o",
            str(out),
            "--image",
            reference,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compile_run.returncode == 0, compile_run.stderr
    spec = next(yaml.safe_load_all(out.read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {record["pinned"]}
    subprocess.run([engine, "rmi", "-f", small, reference], capture_output=True, check=False)
