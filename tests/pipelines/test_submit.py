"""Submission and scheduling against a loopback server speaking the KFP v2beta1 API."""

import os
import socket
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from fake_kfp_server import FakeKfp  # noqa: E402

from pipelines.cli import main as cli_main
from pipelines.config import PROJECT_ROOT, load_pipeline_config
from pipelines.submit import cluster_warnings, kfp_cron

SEGMENTATION = f"{PROJECT_ROOT}/configs/pipelines/shapes_segmentation.yaml"
# A cluster pulls the steps' image: every submission names one it could pull.
IMAGE = "registry.example/vision-pipelines:test"


@pytest.fixture()
def kfp_server():
    fake = FakeKfp()
    host = fake.start()
    yield fake, host
    fake.stop()


def _calls(fake, method, path):
    return [r for r in fake.requests if r["method"] == method and r["path"] == path]


def test_submit_uploads_the_compiled_pipeline_and_run_parameters(kfp_server, capsys):
    fake, host = kfp_server
    code = cli_main(
        ["submit", SEGMENTATION, "--kfp-host", host, "--experiment", "nightly",
         "--run-name", "seg-1", "--pipeline-root", "gs://bucket/root",
         "--set", "gate.min_value=0.9", "--image", IMAGE]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "Submitted run run-1 ('seg-1')" in capsys.readouterr().out
    (created,) = _calls(fake, "POST", "/apis/v2beta1/experiments")
    assert created["body"]["display_name"] == "nightly"
    (run,) = _calls(fake, "POST", "/apis/v2beta1/runs")
    body = run["body"]
    assert body["display_name"] == "seg-1"
    assert body["experiment_id"] == "exp-1"
    assert body["runtime_config"]["pipeline_root"] == "gs://bucket/root"
    spec = body["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "shapes-segmentation"
    tasks = spec["root"]["dag"]["tasks"]
    assert {"convert-dataset-op", "train-op", "evaluate-op", "validate-op"} <= set(tasks)
    # The --set override is baked into the uploaded pipeline's parameter defaults.
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gate_min_value"]["defaultValue"] == 0.9
    assert yaml.safe_load(params["experiment_yaml"]["defaultValue"])["task"]["name"] == (
        "semantic_segmentation"
    )


def test_a_local_pipeline_root_is_not_sent(kfp_server, capsys):
    fake, host = kfp_server
    assert cli_main(["submit", SEGMENTATION, "--kfp-host", host, "--image", IMAGE]) == 0
    assert "cluster's default root is used" in capsys.readouterr().out
    (run,) = _calls(fake, "POST", "/apis/v2beta1/runs")
    assert not (run["body"].get("runtime_config") or {}).get("pipeline_root")


def test_schedule_create_list_pause_resume_delete(kfp_server, capsys):
    fake, host = kfp_server
    assert (
        cli_main(
            [
                "schedule",
                SEGMENTATION,
                "--kfp-host",
                host,
                "--cron",
                "0 3 * * 1",
                "--name",
                "weekly",
                "--image",
                IMAGE,
            ]
        )
        == 0
    )
    assert "Scheduled 'weekly' (rr-1) with cron '0 0 3 * * 1'" in capsys.readouterr().out
    (created,) = _calls(fake, "POST", "/apis/v2beta1/recurringruns")
    body = created["body"]
    assert body["display_name"] == "weekly"
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert body["no_catchup"] is True
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "shapes-segmentation"

    assert cli_main(["schedule", "list", "--kfp-host", host]) == 0
    assert "rr-1  ENABLED" in capsys.readouterr().out
    assert cli_main(["schedule", "pause", "rr-1", "--kfp-host", host]) == 0
    assert fake.recurring["rr-1"]["status"] == "DISABLED"
    assert cli_main(["schedule", "resume", "rr-1", "--kfp-host", host]) == 0
    assert fake.recurring["rr-1"]["status"] == "ENABLED"
    assert cli_main(["schedule", "delete", "rr-1", "--kfp-host", host]) == 0
    assert fake.recurring == {}
    capsys.readouterr()
    assert cli_main(["schedule", "delete", "rr-9", "--kfp-host", host]) == 2
    assert "rr-9" in capsys.readouterr().err


def test_unreachable_host_and_bad_cron_fail_clearly(capsys):
    with socket.socket() as sock:  # A port nobody listens on.
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    submit = ["submit", SEGMENTATION, "--image", IMAGE]
    assert cli_main([*submit, "--kfp-host", f"http://127.0.0.1:{port}"]) == 2
    assert f"--kfp-host http://127.0.0.1:{port}: cannot connect" in capsys.readouterr().err
    assert cli_main([*submit, "--kfp-host", "localhost:8080"]) == 2
    assert "expected an http(s):// URL" in capsys.readouterr().err
    schedule = ["schedule", SEGMENTATION, "--image", IMAGE]
    assert cli_main([*schedule, "--kfp-host", "http://x", "--cron", "3 * *"]) == 2
    assert "--cron: expected 5 fields" in capsys.readouterr().err
    assert kfp_cron("*/15 * * * *") == "0 */15 * * * *"


def test_local_paths_a_cluster_cannot_see_are_warned_about(kfp_server, capsys):
    fake, host = kfp_server
    submit = ["submit", SEGMENTATION, "--kfp-host", host, "--image", IMAGE]
    assert cli_main(submit) == 0
    err = capsys.readouterr().err
    assert "warning: registry.uri" in err and "container filesystem" in err
    remote = ["--set", "registry.uri=gs://bucket/registry"]
    assert cli_main([*submit, *remote]) == 0
    assert "warning: registry.uri" not in capsys.readouterr().err
    config = load_pipeline_config(
        SEGMENTATION, {"dataset": {"source": "folders", "source_dir": "/data/images"}}
    )
    (registry, source) = cluster_warnings(config)
    assert "registry.uri" in registry and "dataset.source_dir '/data/images'" in source


def test_schedule_no_cache_turns_caching_off(kfp_server, capsys):
    fake, host = kfp_server
    args = ["schedule", SEGMENTATION, "--kfp-host", host, "--cron", "0 3 * * 1", "--no-cache"]
    assert cli_main([*args, "--image", IMAGE]) == 0, capsys.readouterr().err
    (created,) = _calls(fake, "POST", "/apis/v2beta1/recurringruns")
    tasks = created["body"]["pipeline_spec"]["root"]["dag"]["tasks"]
    # Compiled without caching: no step carries enableCache (the default, off).
    assert not [n for n, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")]


# --- the image: refused before any connection, pinned when pushed ----------------------------

UNPULLABLE = "vision-pipelines:dev"


def test_submit_refuses_an_unpullable_image_without_connecting():
    # The acceptance command, through the installed console script, against a port
    # that listens: a connection attempt would complete there and wait in the backlog.
    script = os.path.join(os.path.dirname(sys.executable), "vision-pipelines")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        proc = subprocess.run(
            [script, "submit", SEGMENTATION, "--kfp-host", host, "--image", UNPULLABLE],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        assert f"error: --image: image '{UNPULLABLE}' cannot be pulled by a cluster" in proc.stderr
        assert "Traceback" not in proc.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # Nobody connected.


@pytest.fixture
def no_connection(monkeypatch):
    """Fails the test if anything tries to reach a KFP host."""
    from pipelines import submit

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to connect: {args}")

    monkeypatch.setattr(submit, "client", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", SEGMENTATION, "--image", UNPULLABLE], f"--image: image '{UNPULLABLE}'"),
        (
            ["schedule", SEGMENTATION, "--cron", "0 3 * * 1", "--image", "gcr.io/p/vp"],
            "--image: image 'gcr.io/p/vp' cannot be pulled by a cluster: it has neither a tag",
        ),
        (
            ["submit", SEGMENTATION, "--set", "image=localhost/vp:1"],
            f"{SEGMENTATION}: image: image 'localhost/vp:1'",
        ),
        (["submit", SEGMENTATION], "no container image for the cluster: pass --image"),
        (["schedule", SEGMENTATION, "--cron", "0 3 * * 1"], "no container image"),
    ],
)
def test_bad_or_missing_images_fail_before_any_connection(no_connection, capsys, argv, message):
    assert cli_main([*argv, "--kfp-host", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_schedule_actions_take_no_image(no_connection, capsys):
    argv = ["schedule", "pause", "rr-1", "--kfp-host", "http://127.0.0.1:9", "--image", IMAGE]
    assert cli_main(argv) == 2
    assert "--image: schedule pause changes no pipeline" in capsys.readouterr().err


def test_a_submitted_pipeline_runs_the_pushed_digest(kfp_server, capsys):
    from pipelines.image_ref import make_image_record, write_image_record

    fake, host = kfp_server
    digest = "sha256:" + "ab" * 32
    pushed = "registry.example/vision-pipelines:0.2.0"
    pinned = f"registry.example/vision-pipelines@{digest}"
    write_image_record(make_image_record(pushed, digest))
    assert cli_main(["submit", SEGMENTATION, "--kfp-host", host, "--image", pushed]) == 0
    assert f"image: {pinned}" in capsys.readouterr().out
    assert cli_main(["schedule", SEGMENTATION, "--kfp-host", host, "--cron", "0 3 * * 1"]) == 0
    (run,) = _calls(fake, "POST", "/apis/v2beta1/runs")
    (recurring,) = _calls(fake, "POST", "/apis/v2beta1/recurringruns")
    for spec in (run["body"]["pipeline_spec"], recurring["body"]["pipeline_spec"]):
        executors = spec["deploymentSpec"]["executors"].values()
        assert [e["container"]["image"] for e in executors] == [pinned] * 5
        params = spec["root"]["inputDefinitions"]["parameters"]
        assert params["code_version"]["defaultValue"] == f"image:{digest}"
