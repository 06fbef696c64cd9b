"""LocalRegistry: its folder layout, read-only files, crash safety and concurrency.

What every backend does (numbering, manifests, verify, aliases, history, rollback, resolve,
download, input checks) is tested on the local backend too, in test_registry_contract.py.
"""

import json
import multiprocessing
import os
import shutil
import signal

import pytest

from components.registry import (
    LocalRegistry,
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


def test_a_version_is_a_folder_holding_every_file(root, saved_model_dir, config_path):
    registry = open_registry(root)
    assert isinstance(registry, LocalRegistry)
    v1 = _push(registry, saved_model_dir, config_path)
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
    assert _snapshot(registry.path("seg", 1)).keys() == _snapshot(saved_model_dir).keys()
    for rel, (data, _, _) in _snapshot(saved_model_dir).items():
        with open(os.path.join(registry.path("seg", 1), rel), "rb") as f:
            assert f.read() == data
    with open(config_path) as a, open(os.path.join(vdir, "config.yaml")) as b:
        assert a.read() == b.read()


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


def test_aliases_are_replaced_atomically_in_one_file(root, saved_model_dir, config_path):
    registry = open_registry(root)
    _push(registry, saved_model_dir, config_path)
    _push(registry, saved_model_dir, config_path)
    registry.set_alias("seg", "champion", 1)
    registry.set_alias("seg", "staging", 2)
    registry.set_alias("seg", "champion", 2)
    with open(os.path.join(root, "seg", "aliases.json")) as f:
        assert json.load(f) == {"champion": 2, "staging": 2}
    # No temporary file is left beside aliases.json.
    assert not [n for n in os.listdir(os.path.join(root, "seg")) if n.endswith(".tmp")]


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
