"""Submission and scheduling against a loopback server speaking the KFP v2beta1 API."""

import os
import socket
import sys

import pytest
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from fake_kfp_server import FakeKfp  # noqa: E402

from pipelines.cli import main as cli_main
from pipelines.config import PROJECT_ROOT, load_pipeline_config
from pipelines.submit import cluster_warnings, kfp_cron

SEGMENTATION = f"{PROJECT_ROOT}/configs/pipelines/shapes_segmentation.yaml"


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
         "--set", "gate.min_value=0.9"]
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
    assert cli_main(["submit", SEGMENTATION, "--kfp-host", host]) == 0
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
    assert cli_main(["submit", SEGMENTATION, "--kfp-host", f"http://127.0.0.1:{port}"]) == 2
    assert f"--kfp-host http://127.0.0.1:{port}: cannot connect" in capsys.readouterr().err
    assert cli_main(["submit", SEGMENTATION, "--kfp-host", "localhost:8080"]) == 2
    assert "expected an http(s):// URL" in capsys.readouterr().err
    assert cli_main(["schedule", SEGMENTATION, "--kfp-host", "http://x", "--cron", "3 * *"]) == 2
    assert "--cron: expected 5 fields" in capsys.readouterr().err
    assert kfp_cron("*/15 * * * *") == "0 */15 * * * *"


def test_local_paths_a_cluster_cannot_see_are_warned_about(kfp_server, capsys):
    fake, host = kfp_server
    assert cli_main(["submit", SEGMENTATION, "--kfp-host", host]) == 0
    err = capsys.readouterr().err
    assert "warning: registry.uri" in err and "container filesystem" in err
    remote = ["--set", "registry.uri=gs://bucket/registry"]
    assert cli_main(["submit", SEGMENTATION, "--kfp-host", host, *remote]) == 0
    assert "warning: registry.uri" not in capsys.readouterr().err
    config = load_pipeline_config(
        SEGMENTATION, {"dataset": {"source": "folders", "source_dir": "/data/images"}}
    )
    (registry, source) = cluster_warnings(config)
    assert "registry.uri" in registry and "dataset.source_dir '/data/images'" in source


def test_schedule_no_cache_turns_caching_off(kfp_server, capsys):
    fake, host = kfp_server
    args = ["schedule", SEGMENTATION, "--kfp-host", host, "--cron", "0 3 * * 1", "--no-cache"]
    assert cli_main(args) == 0, capsys.readouterr().err
    (created,) = _calls(fake, "POST", "/apis/v2beta1/recurringruns")
    tasks = created["body"]["pipeline_spec"]["root"]["dag"]["tasks"]
    # Compiled without caching: no step carries enableCache (the default, off).
    assert not [n for n, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")]
