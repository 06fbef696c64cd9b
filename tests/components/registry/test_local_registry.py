"""LocalRegistry: numbering, immutability, crash safety, concurrency, aliases, manifests."""

import hashlib
import json
import multiprocessing
import os
import shutil
import signal

import pytest

from components.registry import (
    AliasConflictError,
    AliasNotFoundError,
    LocalRegistry,
    ManifestError,
    ModelNotFoundError,
    VersionNotFoundError,
    open_registry,
)
from components.registry import local as local_module

# Generous bound on child processes so a deadlock fails the test instead of hanging the run.
_JOIN_TIMEOUT_S = 120


def _snapshot(folder):
    """{relative path: (bytes, mtime_ns, mode)} of every file under `folder`."""
    snap = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                data = f.read()
            st = os.stat(full)
            snap[os.path.relpath(full, folder)] = (data, st.st_mtime_ns, st.st_mode)
    return snap


def _version_dirs(root, model="seg"):
    path = os.path.join(root, model, "versions")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _staging_entries(root, model="seg"):
    path = os.path.join(root, model, ".staging")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _push(registry, saved_model_dir, config_path, miou=0.5, **lineage):
    return registry.push(
        "seg", saved_model_dir, config_path, {"mean_iou": miou}, {"parent_run": "r", **lineage}
    )


def test_versions_are_numbered_one_then_two_with_all_files(root, saved_model_dir, config_path):
    registry = open_registry(root)
    assert isinstance(registry, LocalRegistry)
    assert registry.models() == []
    assert registry.list_versions("seg") == []

    v1 = _push(registry, saved_model_dir, config_path, 0.61, dataset_fingerprint="abc")
    v2 = _push(registry, saved_model_dir, config_path, 0.72)
    assert (v1.version, v2.version) == (1, 2)
    assert registry.models() == ["seg"]
    assert [v.version for v in registry.list_versions("seg")] == [1, 2]
    assert [v.metrics["mean_iou"] for v in registry.list_versions("seg")] == [0.61, 0.72]

    vdir = os.path.join(root, "seg", "versions", "1")
    assert v1.uri == vdir
    assert sorted(os.listdir(vdir)) == [
        "MANIFEST.json",
        "config.yaml",
        "lineage.json",
        "metrics.json",
        "saved_model",
    ]
    # The SavedModel is copied byte for byte and the config file is kept verbatim.
    for rel in ("saved_model.pb", os.path.join("variables", "variables.data-00000-of-00001")):
        stored = os.path.join(registry.path("seg", 1), rel)
        with open(os.path.join(saved_model_dir, rel), "rb") as a, open(stored, "rb") as b:
            assert a.read() == b.read()
    with open(config_path) as a, open(os.path.join(vdir, "config.yaml")) as b:
        assert a.read() == b.read()

    with open(config_path, "rb") as f:
        config_sha = hashlib.sha256(f.read()).hexdigest()
    lineage = v1.lineage
    assert lineage["dataset_fingerprint"] == "abc"
    assert lineage["parent_run"] == "r"
    assert lineage["config_hash"] == "sha256:" + config_sha
    assert lineage["code_version"]
    assert lineage["created_at"] == v1.created_at and v1.created_at.endswith("Z")
    assert v1.created_at <= v2.created_at


def test_manifest_lists_every_file_with_size_and_sha256(root, saved_model_dir, config_path):
    registry = open_registry(root)
    v1 = _push(registry, saved_model_dir, config_path)
    with open(os.path.join(v1.uri, "MANIFEST.json")) as f:
        manifest = json.load(f)
    entries = {e["path"]: e for e in manifest["files"]}
    expected_paths = {
        "config.yaml",
        "lineage.json",
        "metrics.json",
        "saved_model/saved_model.pb",
        "saved_model/fingerprint.pb",
        "saved_model/variables/variables.index",
        "saved_model/variables/variables.data-00000-of-00001",
        "saved_model/assets/labels.txt",
    }
    assert set(entries) == expected_paths
    # Digests of the source files computed here with hashlib, independently of the registry.
    for rel in ("saved_model.pb", "variables/variables.data-00000-of-00001", "assets/labels.txt"):
        with open(os.path.join(saved_model_dir, rel), "rb") as f:
            data = f.read()
        entry = entries["saved_model/" + rel]
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
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
def test_verify_detects_tampering(root, saved_model_dir, config_path, tamper, expected_problem):
    registry = open_registry(root)
    v1 = _push(registry, saved_model_dir, config_path)
    sm = os.path.join(v1.uri, "saved_model")
    if tamper == "flip_byte":  # same size, so only the digest can tell
        path = os.path.join(sm, "variables", "variables.data-00000-of-00001")
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0x01]))
    elif tamper == "truncate":
        path = os.path.join(sm, "saved_model.pb")
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.truncate(2047)
    elif tamper == "delete":
        os.unlink(os.path.join(v1.uri, "metrics.json"))
    else:
        with open(os.path.join(sm, "extra.bin"), "wb") as f:
            f.write(b"x")
    with pytest.raises(ManifestError) as excinfo:
        registry.verify("seg", 1)
    assert any(p.startswith(expected_problem) for p in excinfo.value.problems), excinfo.value
    assert "'seg' version 1" in str(excinfo.value)


def test_pushing_never_changes_existing_versions(root, saved_model_dir, config_path):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path, 0.5)
    v1_dir = os.path.join(root, "seg", "versions", "1")
    before = _snapshot(v1_dir)
    # Stored files are read-only, so ordinary tools cannot rewrite a version by accident.
    assert all(mode & 0o222 == 0 for _, _, mode in before.values())

    # Push again from a modified export: v1 must not notice.
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "wb") as f:
        f.write(b"different graph")
    _push(registry, saved_model_dir, config_path, 0.9)
    registry.set_alias("seg", "champion", 2)
    assert _snapshot(v1_dir) == before
    with open(os.path.join(registry.path("seg", 2), "saved_model.pb"), "rb") as f:
        assert f.read() == b"different graph"


def test_commit_never_renames_over_an_existing_version(
    root, saved_model_dir, config_path, monkeypatch
):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path)
    before = _snapshot(os.path.join(root, "seg", "versions", "1"))
    # Pretend allocation saw no versions (as a racing writer that skipped the lock would):
    # rename(2) refuses the occupied number and the push moves on to the next one.
    monkeypatch.setattr(LocalRegistry, "_numbered_dirs", lambda self, name: [])
    assert _push(registry, saved_model_dir, config_path).version == 2
    assert _snapshot(os.path.join(root, "seg", "versions", "1")) == before


def test_set_alias_requires_an_existing_version(root, saved_model_dir, config_path):
    registry = open_registry(root)
    with pytest.raises(ModelNotFoundError, match="no model 'seg'"):
        registry.set_alias("seg", "champion", 1)
    _push(registry, saved_model_dir, config_path)
    _push(registry, saved_model_dir, config_path)
    with pytest.raises(VersionNotFoundError, match=r"no complete version 7; versions: 1, 2"):
        registry.set_alias("seg", "champion", 7)
    assert registry.aliases("seg") == {}
    with pytest.raises(AliasNotFoundError, match=r"no alias 'champion'; aliases: none"):
        registry.get_alias("seg", "champion")


def test_aliases_move_atomically_and_show_on_records(root, saved_model_dir, config_path):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path)
    _push(registry, saved_model_dir, config_path)
    assert registry.set_alias("seg", "champion", 1) is None
    assert registry.set_alias("seg", "staging", 2) is None
    assert registry.set_alias("seg", "champion", 2) == 1
    assert registry.get_alias("seg", "champion") == 2
    with open(os.path.join(root, "seg", "aliases.json")) as f:
        assert json.load(f) == {"champion": 2, "staging": 2}
    assert [v.aliases for v in registry.list_versions("seg")] == [(), ("champion", "staging")]
    # No temporary file is left beside aliases.json.
    assert not [n for n in os.listdir(os.path.join(root, "seg")) if n.endswith(".tmp")]

    assert registry.delete_alias("seg", "staging") == 2
    with pytest.raises(AliasNotFoundError, match=r"aliases: champion -> v2"):
        registry.get_alias("seg", "staging")
    for bad in ("3", "v3", "latest", ".hidden"):
        with pytest.raises(ValueError, match="alias"):
            registry.set_alias("seg", bad, 1)


def test_guarded_alias_move_is_a_compare_and_swap(root, saved_model_dir, config_path):
    registry = open_registry(root)
    for _ in range(3):
        _push(registry, saved_model_dir, config_path)
    assert registry.set_alias("seg", "champion", 1, expected=None) is None
    with pytest.raises(AliasConflictError, match="points at version 1, expected nothing"):
        registry.set_alias("seg", "champion", 2, expected=None)
    assert registry.set_alias("seg", "champion", 2, expected=1) == 1
    with pytest.raises(AliasConflictError, match="points at version 2, expected version 1"):
        registry.set_alias("seg", "champion", 3, expected=1)
    assert registry.get_alias("seg", "champion") == 2


def test_resolve_and_latest(root, saved_model_dir, config_path):
    registry = open_registry(root)
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


def test_a_copy_that_fails_midway_leaves_no_trace(root, saved_model_dir, config_path, monkeypatch):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path)
    registry.set_alias("seg", "champion", 1)
    listed_before = registry.list_versions("seg")
    copied = []

    def failing_copy(src, dst):
        if len(copied) == 2:
            raise OSError(28, "No space left on device (simulated)")
        copied.append(src)
        return shutil.copyfile(src, dst)

    monkeypatch.setattr(local_module, "_copy_file", failing_copy)
    with pytest.raises(OSError, match="No space left"):
        _push(registry, saved_model_dir, config_path)
    assert len(copied) == 2  # it really was interrupted midway
    assert registry.list_versions("seg") == listed_before
    assert _version_dirs(root) == ["1"]
    assert _staging_entries(root) == []
    assert registry.get_alias("seg", "champion") == 1

    monkeypatch.undo()
    assert _push(registry, saved_model_dir, config_path).version == 2


def test_staging_debris_is_ignored_and_collected(root, saved_model_dir, config_path):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path)
    listed_before = registry.list_versions("seg")
    # A push that died after sealing its staging folder but before the rename: even with a
    # manifest inside, it is not a version.
    debris = os.path.join(root, "seg", ".staging", "deadbeef")
    shutil.copytree(os.path.join(root, "seg", "versions", "1"), debris)
    # A numbered folder without a manifest (not something push creates) is not a version either.
    os.makedirs(os.path.join(root, "seg", "versions", "2", "saved_model"))

    assert registry.list_versions("seg") == listed_before
    with pytest.raises(VersionNotFoundError, match="versions: 1$"):
        registry.get_version("seg", 2)
    assert _push(registry, saved_model_dir, config_path).version == 3

    removed = registry.gc()
    assert removed == [debris]
    assert _staging_entries(root) == []
    assert os.path.isdir(os.path.join(root, "seg", "versions", "2"))  # left for a human
    assert [v.version for v in registry.list_versions("seg")] == [1, 3]


def test_gc_spares_a_push_in_progress(root, saved_model_dir, config_path):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path)
    staging = os.path.join(root, "seg", ".staging")
    live = os.path.join(staging, "0123abcd")
    os.makedirs(live)
    # Hold the staging lock as a live push does (flock conflicts across open file descriptions,
    # so holding it in this process is enough).
    fd = local_module._lock_path_exclusively(live + ".lock", blocking=True)
    try:
        assert registry.gc("seg") == []
        assert os.path.isdir(live)
    finally:
        os.close(fd)
    assert registry.gc("seg") == [live]
    assert _staging_entries(root) == []


def _crash_midway(root, saved_model_dir, config_path):
    """Child process: dies by SIGKILL while copying the SavedModel into staging."""
    copied = []

    def copy_then_die(src, dst):
        if len(copied) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        copied.append(src)
        return shutil.copyfile(src, dst)

    local_module._copy_file = copy_then_die
    LocalRegistry(root).push("seg", saved_model_dir, config_path, {"mean_iou": 0.9}, {})


def test_a_killed_push_leaves_only_collectable_debris(root, saved_model_dir, config_path):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path)
    listed_before = registry.list_versions("seg")

    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_crash_midway, args=(root, saved_model_dir, config_path))
    proc.start()
    proc.join(_JOIN_TIMEOUT_S)
    assert proc.exitcode == -signal.SIGKILL

    debris = _staging_entries(root)
    assert len(debris) == 2 and any(d.endswith(".lock") for d in debris)  # folder + its lock
    assert registry.list_versions("seg") == listed_before
    assert _version_dirs(root) == ["1"]
    assert len(registry.gc()) == 1
    assert _staging_entries(root) == []
    assert _push(registry, saved_model_dir, config_path).version == 2


def _concurrent_push(root, saved_model_dir, config_path, index, barrier, results):
    from components import push_model

    barrier.wait()  # start together so the pushes really overlap
    out = push_model.run(
        saved_model_dir,
        root,
        "seg",
        config_path,
        {"mean_iou": index / 10},
        {"parent_run": f"run-{index}"},
    )
    results.put((index, out["version"], out["alias_moved"]))


def _concurrent_alias(root, index, barrier):
    barrier.wait()
    LocalRegistry(root).set_alias("seg", f"alias{index}", 1)


def _run_all(ctx, target, args_list):
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join(_JOIN_TIMEOUT_S)
    assert [p.exitcode for p in procs] == [0] * len(procs)


def test_concurrent_pushes_get_distinct_consecutive_versions(root, saved_model_dir, config_path):
    n = 6
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    _run_all(
        ctx,
        _concurrent_push,
        [(root, saved_model_dir, config_path, i, barrier, results) for i in range(n)],
    )
    outcomes = [results.get(timeout=_JOIN_TIMEOUT_S) for _ in range(n)]

    assert sorted(v for _, v, _ in outcomes) == list(range(1, n + 1))
    assert all(moved for _, _, moved in outcomes)
    registry = open_registry(root)
    versions = registry.list_versions("seg")
    assert [v.version for v in versions] == list(range(1, n + 1))
    # Each version holds the metrics and lineage of the push that was told it got that number.
    by_version = {v.version: v for v in versions}
    for index, version, _ in outcomes:
        assert by_version[version].metrics == {"mean_iou": index / 10}
        assert by_version[version].lineage["parent_run"] == f"run-{index}"
    with open(os.path.join(root, "seg", "aliases.json")) as f:
        aliases = json.load(f)
    assert list(aliases) == ["champion"] and aliases["champion"] in range(1, n + 1)
    assert _staging_entries(root) == []
    for v in range(1, n + 1):
        registry.verify("seg", v)


def test_concurrent_alias_updates_are_not_lost(root, saved_model_dir, config_path):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path)
    n = 6
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    _run_all(ctx, _concurrent_alias, [(root, i, barrier) for i in range(n)])
    assert registry.aliases("seg") == {f"alias{i}": 1 for i in range(n)}


def test_download_copies_and_verifies(root, saved_model_dir, config_path, tmp_path):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path)
    dest = str(tmp_path / "dl" / "model")
    assert registry.download("seg", 1, dest) == dest
    assert _snapshot(dest).keys() == _snapshot(saved_model_dir).keys()
    for rel, (data, _, mode) in _snapshot(dest).items():
        assert data == _snapshot(saved_model_dir)[rel][0]
        assert mode & 0o200  # the caller's copy is writable
    with pytest.raises(FileExistsError, match="not an empty folder"):
        registry.download("seg", 1, dest)

    # A corrupted stored file is caught on the way out and no destination is created.
    stored = os.path.join(registry.path("seg", 1), "saved_model.pb")
    os.chmod(stored, 0o644)
    with open(stored, "r+b") as f:
        f.write(b"\0\0\0\0")
    dest2 = str(tmp_path / "dl" / "model2")
    with pytest.raises(ManifestError, match="saved_model/saved_model.pb: sha256"):
        registry.download("seg", 1, dest2)
    assert not os.path.exists(dest2)
    assert sorted(os.listdir(tmp_path / "dl")) == ["model"]


def test_push_rejects_bad_input_before_writing(root, saved_model_dir, config_path, tmp_path):
    registry = open_registry(root)
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
    assert not os.path.exists(os.path.join(root, "seg"))


def test_config_mapping_and_numpy_like_metrics(root, saved_model_dir):
    class FakeScalar:  # stands in for a NumPy scalar without importing NumPy
        def __init__(self, v):
            self.v = v

        def item(self):
            return self.v

    registry = open_registry(root)
    v1 = registry.push(
        "seg",
        saved_model_dir,
        {"task": {"model": {"num_classes": 3}}},
        {"mean_iou": FakeScalar(0.25), "iou/absent": float("nan")},
    )
    assert v1.metrics == {"mean_iou": 0.25, "iou/absent": None}
    with open(os.path.join(v1.uri, "config.yaml")) as f:
        assert f.read() == "task:\n  model:\n    num_classes: 3\n"
    assert v1.lineage["parent_run"] is None and v1.lineage["dataset_fingerprint"] is None
