"""`make image`'s tool (pipelines/image.py) and the DockerRunner's plumbing, without building:
engine discovery and its message, the source digest that decides reuse, the CA bundle as a build
secret, and the local paths the step containers get mounted."""

import os
import stat
import subprocess
import sys

import pytest

from pipelines import docker_runner, image
from pipelines.config import PROJECT_ROOT, load_pipeline_config


def _fake_bin(folder, name, script):
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_no_engine_names_every_engine_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(image.ImageError) as err:
        image.find_engine()
    message = str(err.value)
    for name in ("docker (not on PATH)", "podman (not on PATH)", "buildah (not on PATH)"):
        assert name in message
    assert "apt-get install podman" in message


def test_a_docker_client_without_a_daemon_is_passed_over(tmp_path, monkeypatch):
    _fake_bin(tmp_path, "docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1")
    _fake_bin(tmp_path, "podman", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert image.find_engine().name == "podman"
    (tmp_path / "podman").unlink()
    with pytest.raises(image.ImageError, match="no daemon answered `docker info`"):
        image.find_engine()


def test_make_image_without_an_engine_exits_2_with_the_message(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.image", "build"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "no container engine found" in result.stderr


def test_source_digest_follows_contents_not_times(tmp_path):
    for name in image.SOURCES:
        if "." in name or name == "Dockerfile":
            (tmp_path / name).write_text(name)
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "a.py").write_text("x = 1\n")
    first = image.source_digest(str(tmp_path))
    os.utime(tmp_path / "pipelines" / "a.py", (1, 1))
    (tmp_path / "pipelines" / "__pycache__").mkdir()
    (tmp_path / "pipelines" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert image.source_digest(str(tmp_path)) == first
    (tmp_path / "pipelines" / "a.py").write_text("x = 2\n")
    assert image.source_digest(str(tmp_path)) != first


def test_the_ca_bundle_is_a_build_secret_never_a_file_of_the_repo(tmp_path, monkeypatch):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("VISION_PIPELINES_CA_BUNDLE", str(bundle))
    assert image.ca_bundle() == str(bundle)
    with open(f"{PROJECT_ROOT}/Dockerfile") as f:
        dockerfile = f.read()
    # Mounted for the RUNs that download, read from /run/secrets, never COPYd.
    assert dockerfile.count("--mount=type=secret,id=ca") == 2
    assert "PIP_CERT=/run/secrets/ca" in dockerfile
    # The build context admits only the listed sources: no certificate can ride along.
    with open(f"{PROJECT_ROOT}/.dockerignore") as f:
        patterns = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    assert {p.strip("!/") for p in patterns if p.startswith("!")} == set(image.SOURCES)


def test_code_version_is_the_commit_plus_a_digest_of_changes(tmp_path):
    assert image.git_code_version(str(tmp_path), "1.2.3") == "1.2.3"  # not a checkout
    version = image.git_code_version(PROJECT_ROOT, image.package_version())
    assert version.startswith(image.package_version() + "+g")


def test_steps_get_the_local_paths_outside_the_pipeline_root(tmp_path):
    config = load_pipeline_config(f"{PROJECT_ROOT}/configs/pipelines/shapes_segmentation.yaml")
    config.registry.uri = str(tmp_path / "registry")
    config.pipeline_root = str(tmp_path / "root")
    config.dataset.source_dir = str(tmp_path / "images")
    (tmp_path / "images").mkdir()
    paths = docker_runner.host_paths(config)
    assert paths == [(str(tmp_path / "images"), False), (str(tmp_path / "registry"), True)]
    assert (tmp_path / "registry").is_dir()  # a bind mount needs its source to exist
    config.registry.uri = "gs://bucket/registry"
    config.dataset.source_dir = str(tmp_path / "root" / "inside")
    assert docker_runner.host_paths(config) == []


def test_no_container_api_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(docker_runner, "DOCKER_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setenv("PATH", str(tmp_path))
    api = docker_runner.docker_api()
    with pytest.raises(docker_runner.DockerRunnerError, match="install podman"):
        api.__enter__()


def test_run_rejects_an_image_for_the_subprocess_runner(capsys):
    from pipelines.cli import main

    assert main(["run", "--image", "vision-pipelines:dev"]) == 2
    assert "--image applies to --runner docker" in capsys.readouterr().err
