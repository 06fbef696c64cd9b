"""The behaviour every registry backend shares, run against the local folder, GCS and Vertex.

The GCS backend runs on a real emulator process on loopback (tests/gcs_emulator.py); each test
gets its own prefix in the emulator's bucket, so tests never see each other's objects. The
vertex:// backend keeps its files in the same emulator and mirrors to a loopback fake of the
Vertex AI API (tests/pipelines/fake_vertex_server.py); its cases are skipped without the
`vertex` extra.
"""

import hashlib
import json
import os
import pathlib
import sys
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "pipelines"))

from fake_vertex_server import FakeVertex  # noqa: E402
from gcs_emulator import emulator_fixture  # noqa: E402

from components.registry import (  # noqa: E402
    AliasConflictError,
    AliasNotFoundError,
    LocalRegistry,
    ManifestError,
    ModelNotFoundError,
    VersionNotFoundError,
    open_registry,
)

gcs = emulator_fixture(scope="module", bucket="contract-bucket")


class LocalBackend:
    """Reaches behind a LocalRegistry to read and damage its files, as a test must."""

    def __init__(self, tmp_path):
        self.uri = str(tmp_path / "registry")

    def manifest(self, record):
        with open(os.path.join(record.uri, "MANIFEST.json")) as f:
            return json.load(f)

    def snapshot(self, record):
        """{path: (bytes, mtime, mode)} of every file of the version, manifest included."""
        snap = {}
        for dirpath, _, filenames in os.walk(record.uri):
            for name in filenames:
                full = os.path.join(dirpath, name)
                with open(full, "rb") as f:
                    st = os.stat(full)
                    snap[os.path.relpath(full, record.uri)] = (f.read(), st.st_mtime_ns)
        return snap

    def read(self, record, rel):
        with open(os.path.join(record.uri, rel), "rb") as f:
            return f.read()

    def write(self, record, rel, data):
        path = os.path.join(record.uri, rel)
        if os.path.exists(path):
            os.chmod(path, 0o644)  # stored files are read-only
        with open(path, "wb") as f:
            f.write(data)

    def delete(self, record, rel):
        os.unlink(os.path.join(record.uri, rel))

    def is_empty(self):
        return not os.path.exists(self.uri) or not os.listdir(self.uri)


class GcsBackend:
    """Reaches the objects of a GcsRegistry through its own storage client."""

    def __init__(self, emulator):
        self.prefix = f"reg-{uuid.uuid4().hex[:8]}"
        self.uri = f"gs://{emulator.bucket}/{self.prefix}"
        self.bucket = emulator.client().bucket(emulator.bucket)

    def _name(self, record, rel):
        return record.uri.split("/", 3)[3] + "/" + rel

    def manifest(self, record):
        name = f"{self.prefix}/{record.model_name}/versions/{record.version}/MANIFEST.json"
        return json.loads(self.bucket.blob(name).download_as_bytes())

    def snapshot(self, record):
        snap = {}
        version_dir = f"{self.prefix}/{record.model_name}/versions/{record.version}/"
        for prefix in (record.uri.split("/", 3)[3] + "/", version_dir):
            for blob in self.bucket.client.list_blobs(self.bucket, prefix=prefix):
                snap[blob.name] = (blob.download_as_bytes(), blob.generation)
        return snap

    def read(self, record, rel):
        return self.bucket.blob(self._name(record, rel)).download_as_bytes()

    def write(self, record, rel, data):
        self.bucket.blob(self._name(record, rel)).upload_from_string(data)

    def delete(self, record, rel):
        self.bucket.blob(self._name(record, rel)).delete()

    def is_empty(self):
        return not list(self.bucket.client.list_blobs(self.bucket, prefix=self.prefix + "/"))


class VertexBackend(GcsBackend):
    """A GcsBackend whose registry is opened as vertex://, on the same staging prefix."""

    def __init__(self, emulator, fake):
        super().__init__(emulator)
        staging = self.uri
        self.uri = (
            f"vertex://{fake.project}/{fake.location}/contract?staging={staging}"
            f"&api_endpoint={fake.endpoint}"
        )


@pytest.fixture
def vertex_api(monkeypatch):
    """A loopback fake of the Vertex AI API, and credentials that need no Google account."""
    pytest.importorskip("google.cloud.aiplatform")
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (AnonymousCredentials(), None))
    fake = FakeVertex()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(params=["local", "gcs", "vertex"])
def backend(request, tmp_path):
    if request.param == "local":
        return LocalBackend(tmp_path)
    if request.param == "gcs":
        return GcsBackend(request.getfixturevalue("gcs"))
    return VertexBackend(request.getfixturevalue("gcs"), request.getfixturevalue("vertex_api"))


@pytest.fixture
def registry(backend):
    return open_registry(backend.uri)


def _push(registry, saved_model_dir, config_path, miou=0.5, **lineage):
    return registry.push(
        "seg", saved_model_dir, config_path, {"mean_iou": miou}, {"parent_run": "r", **lineage}
    )


def _source_files(folder):
    files = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, folder)] = f.read()
    return files


def test_versions_are_numbered_and_hold_every_file(
    registry, backend, saved_model_dir, config_path, tmp_path
):
    assert registry.models() == []
    assert registry.list_versions("seg") == []
    v1 = _push(registry, saved_model_dir, config_path, 0.61, dataset_fingerprint="abc")
    v2 = _push(registry, saved_model_dir, config_path, 0.72)
    assert (v1.version, v2.version) == (1, 2)
    assert registry.models() == ["seg"]
    assert [v.version for v in registry.list_versions("seg")] == [1, 2]
    assert [v.metrics["mean_iou"] for v in registry.list_versions("seg")] == [0.61, 0.72]
    assert registry.get_version("seg", 1) == v1
    assert registry.path("seg", 1) == v1.uri + "/saved_model"

    # The SavedModel comes back byte for byte and the config file verbatim.
    registry.download("seg", 1, str(tmp_path / "copy"))
    assert _source_files(tmp_path / "copy") == _source_files(saved_model_dir)
    with open(config_path) as f:
        assert registry.get_config("seg", 1) == f.read()
    assert backend.read(v1, "config.yaml").decode() == registry.get_config("seg", 1)

    with open(config_path, "rb") as f:
        config_sha = hashlib.sha256(f.read()).hexdigest()
    assert v1.lineage["dataset_fingerprint"] == "abc"
    assert v1.lineage["parent_run"] == "r"
    assert v1.lineage["config_hash"] == "sha256:" + config_sha
    assert v1.lineage["code_version"]
    assert v1.lineage["created_at"] == v1.created_at and v1.created_at.endswith("Z")
    assert v1.created_at <= v2.created_at


def test_manifest_lists_every_file_with_size_and_sha256(
    registry, backend, saved_model_dir, config_path
):
    v1 = _push(registry, saved_model_dir, config_path)
    entries = {e["path"]: e for e in backend.manifest(v1)["files"]}
    assert set(entries) == {
        "config.yaml",
        "lineage.json",
        "metrics.json",
        "saved_model/saved_model.pb",
        "saved_model/fingerprint.pb",
        "saved_model/variables/variables.index",
        "saved_model/variables/variables.data-00000-of-00001",
        "saved_model/assets/labels.txt",
    }
    # Digests of the source files computed here with hashlib, independently of the registry.
    for rel in ("saved_model.pb", "variables/variables.data-00000-of-00001", "assets/labels.txt"):
        with open(os.path.join(saved_model_dir, rel), "rb") as f:
            data = f.read()
        assert entries["saved_model/" + rel]["size"] == len(data)
        assert entries["saved_model/" + rel]["sha256"] == hashlib.sha256(data).hexdigest()
    assert entries["saved_model/assets/labels.txt"]["sha256"] == hashlib.sha256(b"").hexdigest()
    registry.verify("seg", 1)  # an untouched version verifies


@pytest.mark.parametrize(
    "tamper, expected_problem",
    [
        ("flip_byte", "saved_model/variables/variables.data-00000-of-00001: sha256"),
        ("truncate", "saved_model/saved_model.pb: size 2047 bytes, manifest says 2048"),
        ("delete", "metrics.json: missing"),
        ("add", "saved_model/extra.bin: not listed in the manifest"),
    ],
)
def test_verify_detects_tampering(
    registry, backend, saved_model_dir, config_path, tamper, expected_problem
):
    v1 = _push(registry, saved_model_dir, config_path)
    if tamper == "flip_byte":  # same size, so only the digest can tell
        rel = "saved_model/variables/variables.data-00000-of-00001"
        data = bytearray(backend.read(v1, rel))
        data[100] ^= 0x01
        backend.write(v1, rel, bytes(data))
    elif tamper == "truncate":
        rel = "saved_model/saved_model.pb"
        backend.write(v1, rel, backend.read(v1, rel)[:-1])
    elif tamper == "delete":
        backend.delete(v1, "metrics.json")
    else:
        backend.write(v1, "saved_model/extra.bin", b"x")
    with pytest.raises(ManifestError) as excinfo:
        registry.verify("seg", 1)
    assert any(p.startswith(expected_problem) for p in excinfo.value.problems), excinfo.value
    assert "'seg' version 1" in str(excinfo.value)


def test_pushing_and_moving_aliases_never_change_a_version(
    registry, backend, saved_model_dir, config_path
):
    v1 = _push(registry, saved_model_dir, config_path, 0.5)
    before = backend.snapshot(v1)
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "wb") as f:
        f.write(b"different graph")
    v2 = _push(registry, saved_model_dir, config_path, 0.9)
    registry.set_alias("seg", "champion", 2)
    registry.set_alias("seg", "champion", 1)
    assert backend.snapshot(v1) == before
    assert backend.read(v2, "saved_model/saved_model.pb") == b"different graph"


def test_set_alias_requires_an_existing_version(registry, saved_model_dir, config_path):
    with pytest.raises(ModelNotFoundError, match="no model 'seg'"):
        registry.set_alias("seg", "champion", 1)
    _push(registry, saved_model_dir, config_path)
    _push(registry, saved_model_dir, config_path)
    with pytest.raises(VersionNotFoundError, match=r"no complete version 7; versions: 1, 2"):
        registry.set_alias("seg", "champion", 7)
    assert registry.aliases("seg") == {}
    assert registry.alias_history("seg") == []
    with pytest.raises(AliasNotFoundError, match=r"no alias 'champion'; aliases: none"):
        registry.get_alias("seg", "champion")


def test_aliases_move_and_show_on_records(registry, saved_model_dir, config_path):
    _push(registry, saved_model_dir, config_path)
    _push(registry, saved_model_dir, config_path)
    assert registry.set_alias("seg", "champion", 1) is None
    assert registry.set_alias("seg", "staging", 2) is None
    assert registry.set_alias("seg", "champion", 2) == 1
    assert registry.get_alias("seg", "champion") == 2
    assert registry.aliases("seg") == {"champion": 2, "staging": 2}
    assert [v.aliases for v in registry.list_versions("seg")] == [(), ("champion", "staging")]

    assert registry.delete_alias("seg", "staging") == 2
    with pytest.raises(AliasNotFoundError, match=r"aliases: champion -> v2"):
        registry.get_alias("seg", "staging")
    with pytest.raises(AliasNotFoundError, match=r"no alias 'staging'"):
        registry.delete_alias("seg", "staging")
    for bad in ("3", "v3", "latest", ".hidden"):
        with pytest.raises(ValueError, match="alias"):
            registry.set_alias("seg", bad, 1)


def test_guarded_alias_move_is_a_compare_and_swap(registry, saved_model_dir, config_path):
    for _ in range(3):
        _push(registry, saved_model_dir, config_path)
    assert registry.set_alias("seg", "champion", 1, expected=None) is None
    with pytest.raises(AliasConflictError, match="points at version 1, expected nothing"):
        registry.set_alias("seg", "champion", 2, expected=None)
    assert registry.set_alias("seg", "champion", 2, expected=1) == 1
    with pytest.raises(AliasConflictError, match="points at version 2, expected version 1"):
        registry.set_alias("seg", "champion", 3, expected=1)
    assert registry.get_alias("seg", "champion") == 2
    assert [(e["from"], e["to"]) for e in registry.alias_history("seg")] == [(None, 1), (1, 2)]


def test_alias_history_records_every_move(registry, saved_model_dir, config_path):
    _push(registry, saved_model_dir, config_path)
    _push(registry, saved_model_dir, config_path)
    registry.set_alias("seg", "champion", 1, by="alice")
    registry.set_alias("seg", "staging", 2)
    registry.set_alias("seg", "champion", 2, by="bob")
    registry.delete_alias("seg", "staging")
    history = registry.alias_history("seg")
    assert [(e["alias"], e["from"], e["to"], e["action"]) for e in history] == [
        ("champion", None, 1, "set"),
        ("staging", None, 2, "set"),
        ("champion", 1, 2, "set"),
        ("staging", 2, None, "delete"),
    ]
    assert [e["by"] for e in history if e["alias"] == "champion"] == ["alice", "bob"]
    assert "@" in history[1]["by"]  # user@host by default
    assert all(e["at"].endswith("Z") for e in history)
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)
    assert registry.alias_history("seg", "staging") == history[1::2]


def test_rollback_walks_back_through_promotions(registry, saved_model_dir, config_path):
    for _ in range(3):
        _push(registry, saved_model_dir, config_path)
    with pytest.raises(AliasNotFoundError):
        registry.rollback_alias("seg")
    for version in (1, 2, 3):
        registry.set_alias("seg", "champion", version)
    assert registry.rollback_alias("seg") == (3, 2)
    # A second rollback goes one more promotion back, not forward to the version undone.
    assert registry.rollback_alias("seg", "champion") == (2, 1)
    with pytest.raises(AliasConflictError, match="no earlier target"):
        registry.rollback_alias("seg")
    registry.set_alias("seg", "champion", 3)
    assert registry.rollback_alias("seg") == (3, 1)
    assert registry.rollback_alias("seg", to=2) == (1, 2)
    with pytest.raises(VersionNotFoundError, match="no complete version 9"):
        registry.rollback_alias("seg", to=9)
    assert registry.get_alias("seg") == 2
    actions = [(e["from"], e["to"], e["action"]) for e in registry.alias_history("seg")]
    assert actions[3:] == [(3, 2, "rollback"), (2, 1, "rollback"), (1, 3, "set"),
                           (3, 1, "rollback"), (1, 2, "rollback")]  # fmt: skip
    registry.set_alias("seg", "champion", 2)  # recorded, but not a step to go back over
    assert registry.rollback_alias("seg") == (2, 1)
    with pytest.raises(ValueError, match="already points there"):
        registry.rollback_alias("seg", to=1)


def test_rollback_refuses_when_the_alias_moved_meanwhile(
    registry, saved_model_dir, config_path, monkeypatch
):
    for _ in range(3):
        _push(registry, saved_model_dir, config_path)
    registry.set_alias("seg", "champion", 1)
    registry.set_alias("seg", "champion", 2)
    history = registry.alias_history
    other = open_registry(registry.uri)

    def history_then_someone_promotes(model_name, alias=None):
        entries = history(model_name, alias)
        other.set_alias("seg", "champion", 3)  # lands between rollback's read and its move
        return entries

    monkeypatch.setattr(registry, "alias_history", history_then_someone_promotes)
    with pytest.raises(AliasConflictError, match="points at version 3, expected version 2"):
        registry.rollback_alias("seg")
    assert registry.get_alias("seg") == 3


def test_resolve_and_latest(registry, saved_model_dir, config_path):
    for miou in (0.1, 0.2, 0.3):
        _push(registry, saved_model_dir, config_path, miou)
    registry.set_alias("seg", "champion", 2)
    assert registry.resolve("seg", 1).version == 1
    assert registry.resolve("seg", "3").version == 3
    assert registry.resolve("seg", "v2").metrics == {"mean_iou": 0.2}
    assert registry.resolve("seg", "latest").version == 3
    assert registry.resolve("seg", "champion").version == 2
    with pytest.raises(AliasNotFoundError):
        registry.resolve("seg", "best")
    with pytest.raises(ModelNotFoundError, match="models: seg"):
        registry.latest("other")


def test_download_copies_and_verifies(registry, backend, saved_model_dir, config_path, tmp_path):
    v1 = _push(registry, saved_model_dir, config_path)
    dest = str(tmp_path / "dl" / "model")
    assert registry.download("seg", 1, dest) == dest
    assert _source_files(dest) == _source_files(saved_model_dir)
    for dirpath, _, filenames in os.walk(dest):
        for name in filenames:
            assert os.stat(os.path.join(dirpath, name)).st_mode & 0o200  # the caller's to edit
    with pytest.raises(FileExistsError, match="not an empty folder"):
        registry.download("seg", 1, dest)

    # A corrupted stored file is caught on the way out and no destination is created.
    data = bytearray(backend.read(v1, "saved_model/saved_model.pb"))
    data[:4] = b"\0\0\0\0"
    backend.write(v1, "saved_model/saved_model.pb", bytes(data))
    dest2 = str(tmp_path / "dl" / "model2")
    with pytest.raises(ManifestError, match="saved_model/saved_model.pb: "):
        registry.download("seg", 1, dest2)
    assert not os.path.exists(dest2)
    assert sorted(os.listdir(tmp_path / "dl")) == ["model"]


def test_push_rejects_bad_input_before_writing(
    registry, backend, saved_model_dir, config_path, tmp_path
):
    with pytest.raises(FileNotFoundError, match="saved_model_dir: no such folder"):
        registry.push("seg", str(tmp_path / "nope"), config_path)
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"not a SavedModel .*'readme.txt'"):
        registry.push("seg", str(not_a_model), config_path)
    with pytest.raises(FileNotFoundError, match="config: no such file"):
        registry.push("seg", saved_model_dir, str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="model_name '../x'"):
        registry.push("../x", saved_model_dir, config_path)
    with pytest.raises(ValueError, match="'created_at' is set by the registry"):
        registry.push("seg", saved_model_dir, config_path, {}, {"created_at": "yesterday"})
    with pytest.raises(TypeError, match="metrics: cannot be stored as JSON"):
        registry.push("seg", saved_model_dir, config_path, {"mean_iou": object()})
    assert backend.is_empty()


def test_config_mapping_and_numpy_like_metrics(registry, saved_model_dir):
    class FakeScalar:  # stands in for a NumPy scalar without importing NumPy
        def __init__(self, v):
            self.v = v

        def item(self):
            return self.v

    v1 = registry.push(
        "seg",
        saved_model_dir,
        {"task": {"model": {"num_classes": 3}}},
        {"mean_iou": FakeScalar(0.25), "iou/absent": float("nan")},
    )
    assert v1.metrics == {"mean_iou": 0.25, "iou/absent": None}
    assert registry.get_config("seg", 1) == "task:\n  model:\n    num_classes: 3\n"
    assert v1.lineage["parent_run"] is None and v1.lineage["dataset_fingerprint"] is None


def test_local_rollback_without_history_asks_for_a_version(root, saved_model_dir, config_path):
    # Registries written before the history existed have aliases but no history file.
    registry = LocalRegistry(root)
    _push(registry, saved_model_dir, config_path)
    _push(registry, saved_model_dir, config_path)
    registry.set_alias("seg", "champion", 2)
    os.unlink(os.path.join(root, "seg", "alias_history.jsonl"))
    with pytest.raises(AliasConflictError, match="no history.*give the version"):
        registry.rollback_alias("seg")
    assert registry.rollback_alias("seg", to=1) == (2, 1)
    with open(os.path.join(root, "seg", "alias_history.jsonl"), "a") as f:
        f.write('{"torn": ')  # a crash mid-append tears only the last line
    assert [e["to"] for e in registry.alias_history("seg")] == [1]
