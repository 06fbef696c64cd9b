"""Vertex AI submission and scheduling, up to the wire: the real google-cloud-aiplatform SDK
(REST transport) talks to a loopback fake of the Vertex API and the GCS emulator; the tests
assert the requests it made. Skipped when the `vertex` extra is not installed."""

import os
import sys
import tempfile

import pytest
import yaml

pytest.importorskip("google.cloud.aiplatform")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import vertex_fixtures  # noqa: E402
from fake_vertex_server import FakeVertex  # noqa: E402
from gcs_emulator import emulator_fixture  # noqa: E402

from pipelines.cli import main as cli_main  # noqa: E402
from pipelines.config import PROJECT_ROOT, load_pipeline_config  # noqa: E402
from pipelines.submit import compile_package  # noqa: E402
from pipelines.vertex import vertex_cron  # noqa: E402

SEGMENTATION = f"{PROJECT_ROOT}/configs/pipelines/shapes_segmentation.yaml"
BUCKET = "vision-bucket"
ROOT = f"gs://{BUCKET}/pipeline-root"
PROJECT = "test-project"
# A cluster pulls the steps' image: every submission names one it could pull.
IMAGE = "registry.example/vision-pipelines:test"
REGION = "us-central1"

gcs = emulator_fixture(scope="module", bucket=BUCKET)
# Module-level names are what pytest looks up; loopback_only is autouse, so it guards every test.
loopback_only, credentials, no_credentials = vertex_fixtures.FIXTURES


@pytest.fixture()
def vertex(gcs, credentials, monkeypatch):
    """The fake Vertex API, started; the pipeline root bucket lives in the GCS emulator."""
    from google.cloud.aiplatform.utils import resource_manager_utils

    # Before submitting, the SDK checks that the root's bucket belongs to the project, asking
    # the Resource Manager API for the project number: answer as the emulator's bucket says.
    number = gcs.client().get_bucket(BUCKET).project_number
    lookups = []

    def get_project_number(project, *args, **kwargs):
        lookups.append(project)
        return number

    monkeypatch.setattr(resource_manager_utils, "get_project_number", get_project_number)
    fake = FakeVertex(project=PROJECT, location=REGION)
    fake.project_number_lookups = lookups
    fake.start()
    yield fake
    fake.stop()


def _vertex_args(fake, project=PROJECT):
    return ["--vertex", "--project", project, "--region", REGION, "--api-endpoint", fake.endpoint]


def _create_args(fake, project=PROJECT):
    """`_vertex_args` for submit and schedule CONFIG, which also name the steps' image."""
    return [*_vertex_args(fake, project), "--image", IMAGE]


def _kfp_tasks(config_path, overrides=None):
    config = load_pipeline_config(config_path, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_package(config, os.path.join(tmp, "p.yaml"))
        with open(path) as f:
            return set(yaml.safe_load(f)["root"]["dag"]["tasks"])


def _all_tasks(spec):
    dags = [spec["root"]] + list(spec["components"].values())
    return {name: task for c in dags if "dag" in c for name, task in c["dag"]["tasks"].items()}


def test_submit_sends_the_compiled_pipeline_and_run_settings(vertex, capsys):
    code = cli_main(
        ["submit", SEGMENTATION, *_create_args(vertex), "--pipeline-root", ROOT,
         "--run-name", "seg-1", "--set", "gate.min_value=0.9", "--label", "team=vision",
         "--label", "env=dev", "--service-account", "runner@test-project.iam.gserviceaccount.com",
         "--network", "projects/123/global/networks/vpc"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    (created,) = vertex.calls("POST", "/pipelineJobs")
    job_id = created["query"]["pipelineJobId"][0]
    assert job_id.startswith("shapes-segmentation-")
    assert f"Submitted Vertex AI pipeline job {job_id} ('seg-1') in {PROJECT}/{REGION}" in out
    assert f"locations/{REGION}/pipelines/runs/{job_id}?project={PROJECT}" in out
    # The registry in the config is a local folder: the push step's pod would keep the model.
    assert "warning: registry.uri" in err and "local path" in err

    body = created["body"]
    assert body["displayName"] == "seg-1"
    assert body["labels"] == {"team": "vision", "env": "dev"}
    assert body["serviceAccount"] == "runner@test-project.iam.gserviceaccount.com"
    assert body["network"] == "projects/123/global/networks/vpc"
    spec = body["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == "shapes-segmentation"
    assert set(spec["root"]["dag"]["tasks"]) == _kfp_tasks(SEGMENTATION)
    assert {"convert-dataset-op", "train-op", "evaluate-op", "validate-op"} <= set(
        spec["root"]["dag"]["tasks"]
    )
    runtime = body["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == ROOT
    values = runtime["parameterValues"]
    # Every parameter is sent, the --set override included.
    assert set(values) == set(spec["root"]["inputDefinitions"]["parameters"])
    assert values["gate_min_value"] == 0.9
    assert spec["root"]["inputDefinitions"]["parameters"]["gate_min_value"]["defaultValue"] == 0.9
    assert values["run_name"] == "seg-1"
    assert yaml.safe_load(values["experiment_yaml"])["task"]["name"] == "semantic_segmentation"
    # Caching is on in the config: convert and train may reuse outputs, the rest never do.
    tasks = _all_tasks(spec)
    cached = {n for n, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    assert cached == {"convert-dataset-op", "train-op"}
    assert vertex.pipeline_jobs[job_id]["state"] == "PIPELINE_STATE_PENDING"
    # The SDK found the root's bucket in the emulator and checked it belongs to the project.
    assert vertex.project_number_lookups == [PROJECT]


def test_no_cache_turns_caching_off_for_every_step(vertex, capsys):
    args = ["submit", SEGMENTATION, *_create_args(vertex), "--pipeline-root", ROOT]
    assert cli_main([*args, "--no-cache"]) == 0, capsys.readouterr().err
    (created,) = vertex.calls("POST", "/pipelineJobs")
    tasks = _all_tasks(created["body"]["pipelineSpec"])
    assert {"push-op", "condition-1"} <= set(tasks)
    assert [t["cachingOptions"] for t in tasks.values()] == [{"enableCache": False}] * len(tasks)


def test_submit_records_the_run_in_an_experiment(vertex, capsys):
    args = ["submit", SEGMENTATION, *_create_args(vertex), "--pipeline-root", ROOT]
    assert cli_main([*args, "--experiment", "nightly"]) == 0, capsys.readouterr().err
    assert "experiment 'nightly'" in capsys.readouterr().out
    (created,) = vertex.calls("POST", "/metadataStores/default/contexts")
    assert created["query"]["contextId"] == ["nightly"]
    assert created["body"]["schemaTitle"] == "system.Experiment"
    (job_id,) = vertex.pipeline_jobs
    run_context = vertex.pipeline_jobs[job_id]["jobDetail"]["pipelineRunContext"]["name"]
    assert vertex.context_children["nightly"] == [run_context]


def test_the_config_root_is_used_when_it_is_gs_and_refused_otherwise(vertex, capsys):
    args = ["submit", SEGMENTATION, *_create_args(vertex)]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "--pipeline-root: Vertex AI Pipelines writes every artifact to Cloud Storage" in err
    assert "the config's pipeline_root is '/" in err
    assert cli_main([*args, "--pipeline-root", "s3://bucket/root"]) == 2
    assert "--pipeline-root is 's3://bucket/root'" in capsys.readouterr().err
    assert vertex.requests == []
    assert cli_main([*args, "--set", f"pipeline_root={ROOT}/from-config"]) == 0
    (created,) = vertex.calls("POST", "/pipelineJobs")
    assert created["body"]["runtimeConfig"]["gcsOutputDirectory"] == f"{ROOT}/from-config"


def test_schedule_create_list_pause_resume_delete(vertex, capsys):
    code = cli_main(
        ["schedule", SEGMENTATION, *_create_args(vertex), "--pipeline-root", ROOT,
         "--cron", "0 3 * * 1", "--name", "weekly", "--max-concurrency", "2",
         "--label", "team=vision", "--service-account", "runner@x.iam.gserviceaccount.com",
         "--set", "gate.min_value=0.8"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    (created,) = vertex.calls("POST", "/schedules")
    (schedule_id,) = vertex.schedules
    assert f"Scheduled 'weekly' ({schedule_id}) with cron '0 3 * * 1'" in out
    body = created["body"]
    assert body["displayName"] == "weekly"
    assert body["cron"] == "0 3 * * 1"
    assert int(body["maxConcurrentRunCount"]) == 2
    request = body["createPipelineJobRequest"]
    assert request["parent"] == f"projects/{PROJECT}/locations/{REGION}"
    job = request["pipelineJob"]
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == "shapes-segmentation"
    assert set(job["pipelineSpec"]["root"]["dag"]["tasks"]) == _kfp_tasks(SEGMENTATION)
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT
    assert job["runtimeConfig"]["parameterValues"]["gate_min_value"] == 0.8
    assert job["labels"] == {"team": "vision"}
    assert job["serviceAccount"] == "runner@x.iam.gserviceaccount.com"
    assert _all_tasks(job["pipelineSpec"])["train-op"]["cachingOptions"] == {"enableCache": True}
    assert vertex.calls("POST", "/pipelineJobs") == []  # Scheduling starts no run itself.

    assert cli_main(["schedule", "list", *_vertex_args(vertex)]) == 0
    assert f"{schedule_id}  ACTIVE    0 3 * * 1        weekly" in capsys.readouterr().out
    assert cli_main(["schedule", "pause", schedule_id, *_vertex_args(vertex)]) == 0
    assert vertex.schedules[schedule_id]["state"] == "PAUSED"
    assert cli_main(["schedule", "pause", schedule_id, *_vertex_args(vertex)]) == 2
    assert f"refused schedule '{schedule_id}'" in capsys.readouterr().err
    assert cli_main(["schedule", "resume", schedule_id, *_vertex_args(vertex), "--catchup"]) == 0
    assert vertex.schedules[schedule_id]["state"] == "ACTIVE"
    (resumed,) = vertex.calls("POST", f"/schedules/{schedule_id}:resume")
    assert resumed["body"] == {"catchUp": True}
    assert cli_main(["schedule", "delete", schedule_id, *_vertex_args(vertex)]) == 0
    assert vertex.schedules == {}
    assert f"delete: schedule {schedule_id}" in capsys.readouterr().out
    assert cli_main(["schedule", "list", *_vertex_args(vertex)]) == 0
    assert "no schedules" in capsys.readouterr().out
    assert cli_main(["schedule", "delete", "999", *_vertex_args(vertex)]) == 2
    assert "schedule '999': not found" in capsys.readouterr().err


def test_a_schedule_without_cache_never_reuses_outputs(vertex, capsys):
    args = ["schedule", SEGMENTATION, *_create_args(vertex), "--pipeline-root", ROOT]
    assert cli_main([*args, "--cron", "0 3 * * *", "--no-cache"]) == 0, capsys.readouterr().err
    (created,) = vertex.calls("POST", "/schedules")
    tasks = _all_tasks(created["body"]["createPipelineJobRequest"]["pipelineJob"]["pipelineSpec"])
    assert [t["cachingOptions"] for t in tasks.values()] == [{"enableCache": False}] * len(tasks)


def test_api_refusals_name_what_to_check(vertex, capsys):
    args = ["submit", SEGMENTATION, *_create_args(vertex, project="other-project")]
    assert cli_main([*args, "--pipeline-root", ROOT]) == 2
    err = capsys.readouterr().err
    assert "Vertex AI in other-project/us-central1: permission denied for the pipeline run" in err
    assert "roles/aiplatform.user" in err and "Traceback" not in err


def test_missing_credentials_are_explained(gcs, no_credentials, capsys):
    args = ["submit", SEGMENTATION, "--vertex", "--project", PROJECT, "--region", REGION]
    assert cli_main([*args, "--pipeline-root", ROOT, "--image", IMAGE]) == 2
    err = capsys.readouterr().err
    assert "no Google Cloud credentials found" in err
    assert "gcloud auth application-default login" in err


def test_missing_extra_names_the_install_command(monkeypatch, capsys):
    import google.cloud

    monkeypatch.delattr(google.cloud, "aiplatform")
    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform", None)
    args = ["schedule", "list", "--vertex", "--project", PROJECT, "--region", REGION]
    assert cli_main(args) == 2
    assert "pip install 'vision-pipelines[vertex]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["schedule", SEGMENTATION, "--cron", "0 0 3 * * 1"], "Vertex AI schedules take 5 fields"),
        (["submit", SEGMENTATION, "--label", "Team=x"], "--label 'Team=x': keys and values"),
        (["submit", SEGMENTATION, "--label", "team"], "--label 'team': expected KEY=VALUE"),
        (["submit", SEGMENTATION, "--namespace", "ns"], "--namespace: only for Kubeflow"),
        (["schedule", SEGMENTATION, "--cron", "0 3 * * 1", "--catchup"], "catch up when resumed"),
        (["schedule", SEGMENTATION, "--cron", "0 3 * * 1", "--max-concurrency", "0"], ">= 1"),
    ],
)
def test_bad_vertex_arguments_fail_before_any_request(vertex, capsys, argv, message):
    assert cli_main([*argv, *_create_args(vertex), "--pipeline-root", ROOT]) == 2
    assert message in capsys.readouterr().err
    assert vertex.requests == []


@pytest.mark.parametrize("command", [["submit"], ["schedule", "--cron", "0 3 * * 1"]])
def test_an_unpullable_image_is_refused_before_any_request(vertex, capsys, command):
    argv = [command[0], SEGMENTATION, *command[1:], *_vertex_args(vertex), "--pipeline-root", ROOT]
    assert cli_main([*argv, "--image", "localhost/vision-pipelines:0.1.0"]) == 2
    err = capsys.readouterr().err
    assert "--image: image 'localhost/vision-pipelines:0.1.0' cannot be pulled" in err
    assert vertex.requests == [] and vertex.project_number_lookups == []


def test_a_vertex_job_runs_the_pushed_digest(vertex, capsys):
    from pipelines.image_ref import make_image_record, write_image_record

    digest = "sha256:" + "cd" * 32
    pinned = f"{IMAGE.rsplit(':', 1)[0]}@{digest}"
    write_image_record(make_image_record(IMAGE, digest))
    args = ["submit", SEGMENTATION, *_create_args(vertex), "--pipeline-root", ROOT]
    assert cli_main(args) == 0, capsys.readouterr().err
    assert f"image: {pinned}" in capsys.readouterr().out
    (created,) = vertex.calls("POST", "/pipelineJobs")
    spec = created["body"]["pipelineSpec"]
    executors = spec["deploymentSpec"]["executors"].values()
    assert [e["container"]["image"] for e in executors] == [pinned] * 5
    runtime = created["body"]["runtimeConfig"]["parameterValues"]
    assert runtime["code_version"] == f"image:{digest}"


def test_an_unknown_region_is_refused_before_any_request(vertex, capsys):
    args = ["submit", SEGMENTATION, "--vertex", "--project", PROJECT, "--region", "mars-1"]
    args += ["--image", IMAGE]
    assert cli_main([*args, "--api-endpoint", vertex.endpoint, "--pipeline-root", ROOT]) == 2
    assert "--region 'mars-1': Unsupported region for Vertex AI" in capsys.readouterr().err
    assert vertex.requests == []


def test_backend_choice_is_checked(capsys):
    assert cli_main(["submit", SEGMENTATION, "--vertex", "--region", REGION]) == 2
    assert "--vertex: give --project PROJECT_ID and --region REGION" in capsys.readouterr().err
    kfp = ["submit", SEGMENTATION, "--kfp-host", "http://127.0.0.1:9", "--image", IMAGE]
    assert cli_main([*kfp, "--label", "a=b", "--project", "p"]) == 2
    assert "--project, --label: only for Vertex AI (--vertex)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one of --kfp-host / --vertex is required
        cli_main(["submit", SEGMENTATION])
    with pytest.raises(SystemExit):
        cli_main([*kfp, "--vertex"])


def test_vertex_cron_accepts_a_time_zone_prefix():
    assert vertex_cron("TZ=Europe/Paris 0 3 * * 1") == "TZ=Europe/Paris 0 3 * * 1"
    assert vertex_cron(" */15  * * * * ") == "*/15 * * * *"
