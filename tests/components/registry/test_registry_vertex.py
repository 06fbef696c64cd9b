"""The vertex:// registry: GCS (the emulator) holds the registry, the real
google-cloud-aiplatform SDK publishes versions and mirrors aliases to a loopback fake of the
Vertex AI REST API, and the tests assert the requests it made. The shared behaviour is in
test_registry_contract.py; this file covers what only Vertex has. Skipped without the
`vertex` extra."""

import json
import pathlib
import sys
import uuid

import pytest

pytest.importorskip("google.cloud.aiplatform")

_TESTS = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_TESTS))
sys.path.insert(0, str(_TESTS / "pipelines"))

import vertex_fixtures  # noqa: E402
from fake_vertex_server import FakeVertex  # noqa: E402
from gcs_emulator import emulator_fixture  # noqa: E402

from components.registry import (  # noqa: E402
    AliasConflictError,
    RegistryError,
    open_registry,
)
from components.registry.vertex import (  # noqa: E402
    API_ENDPOINT_ENV,
    VertexModelVersion,
    VertexRegistry,
    VertexSyncError,
)
from pipelines.cli import main as cli_main  # noqa: E402

BUCKET = "vertex-bucket"
PROJECT = "test-project"
REGION = "us-central1"
TF2_CPU = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"

gcs = emulator_fixture(scope="module", bucket=BUCKET)
# Module-level names are what pytest looks up; loopback_only is autouse, so it guards every test.
loopback_only, credentials, no_credentials = vertex_fixtures.FIXTURES


@pytest.fixture()
def vertex(credentials):
    fake = FakeVertex(project=PROJECT, location=REGION)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture()
def staging(gcs):
    return f"gs://{BUCKET}/reg-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def uri(vertex, staging):
    return f"vertex://{PROJECT}/{REGION}/vision?staging={staging}&api_endpoint={vertex.endpoint}"


@pytest.fixture()
def registry(uri):
    return open_registry(uri)


def _push(registry, saved_model_dir, config_path, miou=0.5):
    return registry.push("seg", saved_model_dir, config_path, {"mean_iou": miou}, {})


def _uploads(vertex):
    return [r["body"] for r in vertex.calls("POST", "/models:upload")]


def _merges(vertex):
    return [
        (r["path"].rsplit("@", 1)[1].split(":")[0], r["body"]["versionAliases"])
        for r in vertex.calls("POST", ":mergeVersionAliases")
    ]


def test_each_push_uploads_a_version_of_one_vertex_model(
    registry, vertex, gcs, staging, saved_model_dir, config_path
):
    v1 = _push(registry, saved_model_dir, config_path, 0.61)
    v2 = _push(registry, saved_model_dir, config_path, 0.72)
    model_id = registry.vertex_model_id("seg")
    name = f"projects/{PROJECT}/locations/{REGION}/models/{model_id}"
    assert model_id.startswith("vision-seg-") and len(model_id) <= 63
    first, second = _uploads(vertex)
    # The first push creates the model under its own id; the next one adds a version to it.
    assert first["modelId"] == model_id and "parentModel" not in first
    assert second["parentModel"] == name and "modelId" not in second
    for body, record in ((first, v1), (second, v2)):
        model = body["model"]
        assert model["artifactUri"] == f"{record.uri}/saved_model"
        assert model["artifactUri"].startswith(f"{staging}/seg/uploads/")
        assert model["displayName"] == "vision-seg"
        assert model["containerSpec"] == {"imageUri": TF2_CPU}
        assert model["versionAliases"] == [f"v{record.version}"]
        assert model["labels"] == {
            "vision_pipelines_version": str(record.version),
            "vision_pipelines_registry": model_id.rsplit("-", 1)[1],
        }
        assert (
            f'metrics: {{"mean_iou":{record.metrics["mean_iou"]}}}' in model["versionDescription"]
        )
        assert staging in model["description"]
    # The artifact Vertex is pointed at is the pushed SavedModel, in the staging bucket.
    blob_name = first["model"]["artifactUri"][len(f"gs://{BUCKET}/") :] + "/saved_model.pb"
    bucket = gcs.client().bucket(BUCKET)
    with open(f"{saved_model_dir}/saved_model.pb", "rb") as f:
        assert bucket.blob(blob_name).download_as_bytes() == f.read()

    # Vertex made the first version its default; ours only carry v{n}.
    assert vertex.model_versions(model_id) == {"1": ["default", "v1"], "2": ["v2"]}
    assert isinstance(v1, VertexModelVersion)
    assert (v1.vertex_model, v2.vertex_model) == (f"{name}@1", f"{name}@2")
    listed = registry.list_versions("seg")
    assert [v.vertex_model for v in listed] == [f"{name}@1", f"{name}@2"]
    assert registry.get_version("seg", 2) == v2
    assert registry.get_version("seg", 2).to_dict()["vertex_model"] == f"{name}@2"
    # The same versions read through the plain GCS backend: GCS is the source of truth.
    plain = open_registry(staging)
    assert [(v.version, v.uri) for v in plain.list_versions("seg")] == [(1, v1.uri), (2, v2.uri)]


def test_alias_moves_are_mirrored_to_vertex_version_aliases(
    registry, vertex, saved_model_dir, config_path
):
    for miou in (0.1, 0.2, 0.3):
        _push(registry, saved_model_dir, config_path, miou)
    model_id = registry.vertex_model_id("seg")

    def vertex_aliases():
        return {vid: [a for a in aliases if a[0] != "v" or not a[1:].isdigit()]
                for vid, aliases in vertex.model_versions(model_id).items()}  # fmt: skip

    assert registry.set_alias("seg", "champion", 1, expected=None) is None
    registry.set_alias("seg", "staging", 3)
    assert vertex_aliases() == {"1": ["champion", "default"], "2": [], "3": ["staging"]}
    registry.set_alias("seg", "champion", 2, expected=1)
    assert vertex_aliases() == {"1": ["default"], "2": ["champion"], "3": ["staging"]}
    assert registry.rollback_alias("seg") == (2, 1)
    assert vertex_aliases() == {"1": ["champion", "default"], "2": [], "3": ["staging"]}
    registry.delete_alias("seg", "staging")
    assert vertex_aliases() == {"1": ["champion", "default"], "2": [], "3": []}
    assert _merges(vertex) == [
        ("1", ["champion"]), ("3", ["staging"]), ("2", ["champion"]), ("1", ["champion"]),
        ("3", ["-staging"]),
    ]  # fmt: skip

    # A failed guard moves nothing anywhere.
    with pytest.raises(AliasConflictError):
        registry.set_alias("seg", "champion", 3, expected=2)
    assert len(_merges(vertex)) == 5
    assert registry.get_version("seg", 1).aliases == ("champion",)


@pytest.mark.parametrize("alias", ["Champion", "prod_1", "a", "canary-", "default"])
def test_aliases_vertex_cannot_hold_are_refused_before_anything_moves(
    registry, vertex, saved_model_dir, config_path, alias
):
    _push(registry, saved_model_dir, config_path)
    with pytest.raises(ValueError, match=f"alias '{alias}': a vertex:// registry mirrors"):
        registry.set_alias("seg", alias, 1)
    assert registry.aliases("seg") == {}
    assert registry.alias_history("seg") == []
    assert _merges(vertex) == []


def test_a_failed_mirror_is_reported_and_repaired_by_sync_and_gc(
    registry, vertex, saved_model_dir, config_path
):
    model_id = registry.vertex_model_id("seg")
    name = f"projects/{PROJECT}/locations/{REGION}/models/{model_id}"
    vertex.fail_next("POST", "/models:upload")
    with pytest.raises(VertexSyncError) as excinfo:
        _push(registry, saved_model_dir, config_path, 0.1)
    assert excinfo.value.version == 1
    assert "version 1 is stored at gs://" in str(excinfo.value)
    assert "the service is unavailable" in str(excinfo.value)
    assert registry.get_version("seg", 1).vertex_model is None  # stored, not published

    # The next push publishes its own version, which becomes Vertex's first one.
    v2 = _push(registry, saved_model_dir, config_path, 0.2)
    assert v2.vertex_model == f"{name}@1"
    vertex.fail_next("POST", ":mergeVersionAliases")
    with pytest.raises(VertexSyncError, match="alias 'champion' points at version 2 in gs://"):
        registry.set_alias("seg", "champion", 2)
    assert registry.get_alias("seg", "champion") == 2  # GCS moved: it is the guard
    assert vertex.model_versions(model_id) == {"1": ["default", "v2"]}

    done = registry.gc()
    assert done == [
        f"seg: published v1 as {name}@2",
        "seg: Vertex alias 'champion' -> v2 (version id 1)",
    ]
    assert vertex.model_versions(model_id) == {"1": ["champion", "default", "v2"], "2": ["v1"]}
    assert [v.vertex_model for v in registry.list_versions("seg")] == [f"{name}@2", f"{name}@1"]
    assert _uploads(vertex)[-1]["parentModel"] == name
    assert _uploads(vertex)[-1]["model"]["versionAliases"] == ["v1"]

    # A removal that did not reach Vertex is repaired the same way.
    vertex.fail_next("POST", ":mergeVersionAliases")
    with pytest.raises(VertexSyncError, match="alias 'champion' is removed"):
        registry.delete_alias("seg", "champion")
    vertex.fail_next("GET", ":listVersions", 403, "PERMISSION_DENIED", "denied")
    with pytest.raises(RegistryError, match="syncing model 'seg' to Vertex AI failed: 403"):
        registry.sync()
    assert registry.sync("seg") == ["seg: removed Vertex alias 'champion'"]
    assert vertex.model_versions(model_id) == {"1": ["default", "v2"], "2": ["v1"]}
    assert registry.sync() == []  # idempotent


def test_moving_an_alias_to_an_unpublished_version_publishes_it_first(
    registry, vertex, saved_model_dir, config_path
):
    _push(registry, saved_model_dir, config_path)
    vertex.fail_next("POST", "/models:upload")
    with pytest.raises(VertexSyncError):
        _push(registry, saved_model_dir, config_path)
    registry.set_alias("seg", "champion", 2)
    model_id = registry.vertex_model_id("seg")
    assert vertex.model_versions(model_id) == {"1": ["default", "v1"], "2": ["champion", "v2"]}
    assert registry.get_version("seg", 2).vertex_model.endswith(f"/{model_id}@2")


def test_a_concurrent_first_push_becomes_a_version_of_the_model(
    registry, vertex, saved_model_dir, config_path, monkeypatch
):
    from components.registry import vertex as vertex_module

    _push(registry, saved_model_dir, config_path)
    # As if another process created the model between this push's look-up and its upload.
    monkeypatch.setattr(registry, "_vertex_state", lambda *a: vertex_module._VertexState())
    v2 = _push(registry, saved_model_dir, config_path)
    attempts = vertex.calls("POST", "/models:upload")
    assert [("modelId" in r["body"], "parentModel" in r["body"]) for r in attempts] == [
        (True, False), (True, False), (False, True)
    ]  # fmt: skip
    assert v2.vertex_model.endswith("@2")
    assert vertex.model_versions(registry.vertex_model_id("seg"))["2"] == ["v2"]


def test_endpoint_from_the_environment_and_a_custom_serving_image(
    vertex, staging, saved_model_dir, config_path, monkeypatch
):
    monkeypatch.setenv(API_ENDPOINT_ENV, vertex.endpoint)
    image = "europe-docker.pkg.dev/my-project/serving/tf:2.21"
    uri = f"vertex://{PROJECT}/{REGION}/vision?staging={staging}&serving_image={image}"
    registry = open_registry(uri)
    assert open_registry(registry.uri).uri == registry.uri == uri
    _push(registry, saved_model_dir, config_path)
    (upload,) = _uploads(vertex)
    assert upload["model"]["containerSpec"] == {"imageUri": image}
    europe = VertexRegistry(f"vertex://{PROJECT}/europe-west4/vision?staging={staging}")
    assert europe.serving_image == TF2_CPU.replace("us-docker", "europe-docker")


def test_missing_credentials_fail_before_anything_is_written(
    gcs, staging, saved_model_dir, config_path, no_credentials
):
    registry = open_registry(f"vertex://{PROJECT}/{REGION}/vision?staging={staging}")
    with pytest.raises(RegistryError, match="no Google Cloud credentials found") as excinfo:
        _push(registry, saved_model_dir, config_path)
    assert "gcloud auth application-default login" in str(excinfo.value)
    assert open_registry(staging).models() == []


def test_a_region_vertex_does_not_serve_is_refused_before_anything_is_written(
    credentials, staging, saved_model_dir, config_path
):
    registry = open_registry(f"vertex://{PROJECT}/mars-north1/vision?staging={staging}")
    with pytest.raises(RegistryError, match="REGION 'mars-north1': Unsupported region"):
        _push(registry, saved_model_dir, config_path)
    assert open_registry(staging).models() == []


@pytest.mark.parametrize(
    "uri, message",
    [
        ("vertex://test-project/us-central1?staging=gs://b/p", "expected vertex://PROJECT/REGION"),
        ("vertex://test-project/us-central1/vision", "staging='': expected the gs://"),
        ("vertex://test-project/us-central1/vision?staging=/tmp/x", "staging='/tmp/x'"),
        ("vertex://Test/us-central1/vision?staging=gs://b/p", "PROJECT 'Test'"),
        ("vertex://test-project/us-central1/Vision?staging=gs://b/p", "MODEL_PREFIX 'Vision'"),
        ("vertex://test-project/us-central1/v?staging=gs://b/p&region=x", "region unknown"),
    ],
)
def test_malformed_uris_name_the_part(uri, message):
    with pytest.raises(ValueError, match=message):
        open_registry(uri)


def test_registry_cli_works_on_vertex_uris(
    registry, uri, vertex, saved_model_dir, config_path, capsys
):
    _push(registry, saved_model_dir, config_path, 0.61)
    _push(registry, saved_model_dir, config_path, 0.72)
    assert cli_main(["registry", "promote", uri, "seg", "v2"]) == 0
    assert "seg: champion (unset) -> v2" in capsys.readouterr().out
    assert vertex.model_versions(registry.vertex_model_id("seg"))["2"] == ["champion", "v2"]
    assert cli_main(["registry", "show", uri, "seg", "champion"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 2 and shown["vertex_model"].endswith("@2")
    vertex.fail_next("POST", ":mergeVersionAliases", 403, "PERMISSION_DENIED", "denied")
    assert cli_main(["registry", "promote", uri, "seg", "1"]) == 1
    err = capsys.readouterr().err
    assert "error: model 'seg': alias 'champion' points at version 1" in err
    assert "(the source of truth) but mirroring it to Vertex AI" in err and "Traceback" not in err
