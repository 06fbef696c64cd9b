"""Per-step resources, retries and caching in the compiled pipeline, and their config errors."""

import pytest
import yaml

from components.train.step import checkpoint_dir_for
from pipelines.cli import main as cli_main
from pipelines.config import load_pipeline_config
from pipelines.resources import ResourcesConfig
from pipelines.training import code_version
from vision_core.hyperparams import ConfigError

# Compiling for a cluster needs an image it can pull.
IMAGE = "registry.example/vision-pipelines:test"

RESOURCES = {
    "default": {"cpu_request": "1", "memory_request": "2Gi"},
    "train": {
        "cpu_limit": "8",
        "memory_limit": "32Gi",
        "accelerator_type": "NVIDIA_TESLA_T4",
        "accelerator_count": 2,
        "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "retries": 3,
    },
    "evaluate": {"memory_limit": "500Mi"},
}


def _compile(tmp_path, *extra, resources=RESOURCES):
    config = tmp_path / "configs" / "pipelines" / "p.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"resources": resources}))
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", str(config), "-o", str(out), "--image", IMAGE, *extra]) == 0
    return list(yaml.safe_load_all(out.read_text()))


def test_step_resources_reach_the_compiled_spec(tmp_path):
    spec, platform = _compile(tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train-op"]["container"]["resources"]
    assert train["resourceCpuLimit"] == "8" and train["resourceMemoryLimit"] == "32Gi"
    # The default block fills what the step leaves unset.
    assert train["resourceCpuRequest"] == "1" and train["resourceMemoryRequest"] == "2Gi"
    assert train["accelerator"]["resourceType"] == "NVIDIA_TESLA_T4"
    assert train["accelerator"]["resourceCount"] == "2"
    evaluate = executors["exec-evaluate-op"]["container"]["resources"]
    assert evaluate["resourceMemoryLimit"] == "500Mi" and "accelerator" not in evaluate
    convert = executors["exec-convert-dataset-op"]["container"]["resources"]
    assert convert == {
        "cpuRequest": 1.0,
        "memoryRequest": 2.147483648,
        "resourceCpuRequest": "1",
        "resourceMemoryRequest": "2Gi",
    }
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["train-op"]["retryPolicy"]["maxRetryCount"] == 3
    assert "retryPolicy" not in tasks["convert-dataset-op"]
    # Node selectors and tolerations go through kfp-kubernetes into the platform spec.
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == {"exec-train-op"}
    assert k8s["exec-train-op"]["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-accelerator": "nvidia-tesla-t4"
    }
    assert k8s["exec-train-op"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def _caching(spec):
    """{task: cache enabled} over the root graph and the graphs nested in it (dsl.If)."""
    graphs = [spec["root"]] + list(spec["components"].values())
    tasks = {}
    for graph in graphs:
        tasks.update(graph.get("dag", {}).get("tasks", {}))
    return {
        name: task.get("cachingOptions", {}).get("enableCache", False)
        for name, task in tasks.items()
        if not name.startswith("condition")
    }


def test_caching_is_on_by_default_and_off_with_no_cache(tmp_path):
    spec, _ = _compile(tmp_path / "a")
    # Convert and train are cached; evaluate always reruns; the gate and the push read the
    # registry, whose state changes between runs.
    assert _caching(spec) == {
        "convert-dataset-op": True,
        "train-op": True,
        "evaluate-op": False,
        "validate-op": False,
        "push-op": False,
    }
    spec, _ = _compile(tmp_path / "b", "--no-cache")
    assert not any(_caching(spec).values())


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"train": {"cpu_limit": "8 cores"}}, "resources.train.cpu_limit: expected cores"),
        ({"default": {"memory_limit": "32GB"}}, "resources.default.memory_limit: expected"),
        ({"train": {"accelerator_count": 1}}, "resources.train.accelerator_type: required"),
        ({"push": {"retries": -1}}, "resources.push.retries: expected >= 0"),
        (
            {"train": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}},
            r"resources.train.tolerations\[0\].value: must be empty",
        ),
        (
            {"train": {"tolerations": [{"key": "gpu", "effect": "Sometimes"}]}},
            r"resources.train.tolerations\[0\].effect: expected one of",
        ),
        ({"train": {"gpus": 1}}, "resources.train.gpus: unknown key"),
        ({"trian": {}}, "resources.trian: unknown key.*train"),
    ],
)
def test_resource_config_errors_name_the_dotted_path(tmp_path, resources, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"resources": resources}))
    with pytest.raises(ConfigError, match=message):
        load_pipeline_config(str(path))


def test_step_blocks_override_the_default_field_by_field():
    config = ResourcesConfig.from_dict(
        {
            "default": {"cpu_limit": "2", "node_selector": {"pool": "cpu"}},
            "train": {"cpu_limit": "16", "node_selector": {"pool": "gpu"}},
        }
    )
    assert config.for_step("train").cpu_limit == "16"
    assert config.for_step("train").node_selector == {"pool": "gpu"}
    assert config.for_step("push").cpu_limit == "2"
    assert config.for_step("push").node_selector == {"pool": "cpu"}
    with pytest.raises(ValueError, match="step must be one of"):
        config.for_step("deploy")


def test_checkpoints_live_at_the_artifact_uri_when_tensorflow_can_write_it(tmp_path):
    # On a cluster the Model artifact's URI is under a gs:// pipeline root, identical across
    # retries of the step, so checkpoints written there survive a killed pod.
    assert (
        checkpoint_dir_for("gs://bucket/root/run-1/train-op/model", "/gcs/bucket/root/model")
        == "gs://bucket/root/run-1/train-op/model/checkpoints"
    )
    # minio:// (Kubeflow's default store) is not a TensorFlow filesystem: keep them local.
    assert checkpoint_dir_for("minio://mlpipeline/v2/x/model", "/minio/x/model") == (
        "/minio/x/model/checkpoints"
    )
    assert checkpoint_dir_for(str(tmp_path), str(tmp_path)) == str(tmp_path / "checkpoints")


def test_code_version_can_be_pinned(monkeypatch):
    monkeypatch.setenv("VISION_PIPELINES_CODE_VERSION", "1.2.3+build7")
    assert code_version() == "1.2.3+build7"
    monkeypatch.delenv("VISION_PIPELINES_CODE_VERSION")
    assert code_version().startswith("0.")
