"""GcsRegistry on a GCS emulator process: layout, concurrent pushes and alias moves, interrupted
pushes and gc, and requests retried after they had landed.

The emulator (tests/gcs_emulator.py) enforces generation preconditions like GCS, so the 412s
that allocate version numbers and serialise alias moves are the server's, not a mock's.
"""

import json
import multiprocessing
import os
import pathlib
import signal
import sys
import threading
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from gcs_emulator import emulator_fixture  # noqa: E402
from google.api_core import exceptions as gexc  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import storage  # noqa: E402

from components.registry import (  # noqa: E402
    AliasConflictError,
    ManifestError,
    RegistryError,
    gcs_io,
    open_registry,
)
from components.registry.gcs import GcsRegistry  # noqa: E402

gcs = emulator_fixture(scope="module", bucket="registry-bucket")

# Generous bound on child processes so a deadlock fails the test instead of hanging the run.
_JOIN_TIMEOUT_S = 120


@pytest.fixture
def uri(gcs):
    return f"gs://{gcs.bucket}/reg-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bucket(gcs):
    return gcs.client().bucket(gcs.bucket)


def _names(bucket, uri, under=""):
    prefix = uri.split("/", 3)[3] + "/" + under
    return sorted(b.name[len(prefix) :] for b in bucket.client.list_blobs(bucket, prefix=prefix))


def _push(registry, saved_model_dir, config_path, miou=0.5):
    return registry.push("seg", saved_model_dir, config_path, {"mean_iou": miou}, {})


def test_storage_client_targets_the_emulator_anonymously(gcs):
    client = gcs_io.make_storage_client()
    assert isinstance(client._credentials, AnonymousCredentials)
    assert client.project == gcs_io.EMULATOR_PROJECT
    assert gcs.url in client._connection.API_BASE_URL


def test_layout_one_sealed_manifest_per_version(uri, bucket, saved_model_dir, config_path):
    registry = open_registry(uri)
    v1 = _push(registry, saved_model_dir, config_path)
    upload_id = v1.uri.rsplit("/", 1)[1]
    assert _names(bucket, uri) == sorted(
        ["seg/versions/1/MANIFEST.json"]
        + [
            f"seg/uploads/{upload_id}/{rel}"
            for rel in (
                "config.yaml",
                "lineage.json",
                "metrics.json",
                "saved_model/assets/labels.txt",
                "saved_model/fingerprint.pb",
                "saved_model/saved_model.pb",
                "saved_model/variables/variables.data-00000-of-00001",
                "saved_model/variables/variables.index",
            )
        ]
    )  # and no lease left behind
    blob = bucket.get_blob(uri.split("/", 3)[3] + "/seg/versions/1/MANIFEST.json")
    assert blob.metadata == {"upload_id": upload_id}
    manifest = json.loads(blob.download_as_bytes())
    assert (manifest["version"], manifest["upload_id"]) == (1, upload_id)
    assert manifest["metrics"] == {"mean_iou": 0.5}
    # Each entry carries the crc32c GCS reports, so listing alone tells a damaged version.
    for entry in manifest["files"]:
        stored = bucket.get_blob(uri.split("/", 3)[3] + f"/seg/uploads/{upload_id}/{entry['path']}")
        assert (stored.size, stored.crc32c) == (entry["size"], entry["crc32c"])


def test_a_taken_number_is_skipped_not_overwritten(
    uri, bucket, saved_model_dir, config_path, monkeypatch
):
    registry = open_registry(uri)
    _push(registry, saved_model_dir, config_path)
    v1_manifest = bucket.get_blob(uri.split("/", 3)[3] + "/seg/versions/1/MANIFEST.json")
    # Pretend allocation saw no versions (as a push that listed just before another sealed):
    # creating versions/1/MANIFEST.json gets a 412 and the push takes 2.
    monkeypatch.setattr(GcsRegistry, "_manifest_blobs", lambda self, name: {})
    assert _push(registry, saved_model_dir, config_path).version == 2
    monkeypatch.undo()
    after = bucket.get_blob(v1_manifest.name)
    assert after.generation == v1_manifest.generation
    assert [v.version for v in registry.list_versions("seg")] == [1, 2]


def _lose_first_response(monkeypatch, suffix):
    """Makes the first upload of an object named `*suffix` land but report 412, as when a
    retried request finds the object its first attempt created."""
    original = storage.Blob.upload_from_string
    calls = []

    def upload(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if self.name.endswith(suffix) and not calls:
            calls.append(self.name)
            raise gexc.PreconditionFailed("simulated: the response of a request that landed")
        return result

    monkeypatch.setattr(storage.Blob, "upload_from_string", upload)
    return calls


def test_requests_that_landed_before_a_412_are_not_applied_twice(
    uri, bucket, saved_model_dir, config_path, monkeypatch
):
    registry = open_registry(uri)
    calls = _lose_first_response(monkeypatch, "/MANIFEST.json")
    assert _push(registry, saved_model_dir, config_path).version == 1
    assert calls and _names(bucket, uri, "seg/versions/") == ["1/MANIFEST.json"]
    monkeypatch.undo()

    calls = _lose_first_response(monkeypatch, "/aliases.json")
    assert registry.set_alias("seg", "champion", 1) is None
    assert calls
    assert [(e["from"], e["to"]) for e in registry.alias_history("seg")] == [(None, 1)]


def _push_in_child(uri, saved_model_dir, config_path, index, barrier, results):
    barrier.wait()  # start together so the pushes really overlap
    registry = open_registry(uri)
    version = _push(registry, saved_model_dir, config_path, index / 10).version
    registry.set_alias("seg", f"pusher{index}", version)
    results.put((index, version))


def test_concurrent_pushes_from_threads_and_processes(uri, bucket, saved_model_dir, config_path):
    ctx = multiprocessing.get_context("spawn")
    n_threads, n_procs = 4, 2
    barrier = ctx.Barrier(n_threads + n_procs)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_push_in_child,
            args=(uri, saved_model_dir, config_path, i, barrier, results),
        )
        for i in range(n_threads, n_threads + n_procs)
    ]
    for p in procs:
        p.start()
    errors = []

    def thread_push(index):
        try:
            _push_in_child(uri, saved_model_dir, config_path, index, barrier, results)
        except Exception as e:  # reported below; a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=thread_push, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(_JOIN_TIMEOUT_S)
    for p in procs:
        p.join(_JOIN_TIMEOUT_S)
    assert errors == [] and [p.exitcode for p in procs] == [0] * n_procs
    outcomes = dict(results.get(timeout=_JOIN_TIMEOUT_S) for _ in range(n_threads + n_procs))

    n = n_threads + n_procs
    assert sorted(outcomes.values()) == list(range(1, n + 1))
    registry = open_registry(uri)
    versions = {v.version: v for v in registry.list_versions("seg")}
    assert sorted(versions) == list(range(1, n + 1))
    # Each version holds what the push that was told that number pushed.
    for index, version in outcomes.items():
        assert versions[version].metrics == {"mean_iou": index / 10}
    # The alias index is intact: every pusher's alias and one history entry each.
    assert registry.aliases("seg") == {f"pusher{i}": v for i, v in outcomes.items()}
    assert len(registry.alias_history("seg")) == n
    for version in versions:
        registry.verify("seg", version)
    assert not [name for name in _names(bucket, uri, "seg/uploads/") if name.endswith(".lease")]


def test_concurrent_guarded_moves_let_exactly_one_win(uri, saved_model_dir, config_path):
    registry = open_registry(uri)
    for _ in range(3):
        _push(registry, saved_model_dir, config_path)
    registry.set_alias("seg", "champion", 1)
    n = 6
    barrier = threading.Barrier(n)
    outcomes = [None] * n

    def promote(index):
        own = open_registry(uri)  # its own client, like another user
        barrier.wait()
        try:
            own.set_alias("seg", "champion", 2 + index % 2, expected=1)
            outcomes[index] = "moved"
        except AliasConflictError:
            outcomes[index] = "conflict"
        own.set_alias("seg", f"seen{index}", 1)  # unguarded moves: none may be lost

    threads = [threading.Thread(target=promote, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(_JOIN_TIMEOUT_S)
    assert sorted(outcomes) == ["conflict"] * (n - 1) + ["moved"]
    winner = 2 + outcomes.index("moved") % 2
    assert registry.get_alias("seg", "champion") == winner
    moves = [(e["from"], e["to"]) for e in registry.alias_history("seg", "champion")]
    assert moves == [(None, 1), (1, winner)]
    assert {a for a in registry.aliases("seg") if a.startswith("seen")} == {
        f"seen{i}" for i in range(n)
    }


def test_lease_renews_and_notices_when_gc_takes_it(bucket):
    name = f"lease-{uuid.uuid4().hex[:8]}/upload.lease"
    lease = gcs_io.Lease(bucket, name, interval_s=3600)  # renewed by hand below
    lease.acquire()
    first = bucket.get_blob(name).generation
    assert lease.renew()
    assert bucket.get_blob(name).generation != first
    lease.check()
    bucket.blob(name).delete()  # what gc() does to a lease it judges abandoned
    assert not lease.renew()
    with pytest.raises(RegistryError, match="taken by gc"):
        lease.check()
    lease.release()
    assert bucket.get_blob(name) is None


def _crash_midway(uri, saved_model_dir, config_path):
    """Child process: dies by SIGKILL after two files of its push were uploaded."""
    original = gcs_io.upload_file
    done = []
    lock = threading.Lock()

    def upload_then_die(blob, source):
        original(blob, source)
        with lock:
            done.append(blob.name)
            if len(done) == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    gcs_io.upload_file = upload_then_die
    GcsRegistry(uri, max_workers=2).push("seg", saved_model_dir, config_path, {}, {})


def test_a_killed_push_leaves_no_version_and_gc_collects_it(
    uri, bucket, saved_model_dir, config_path
):
    registry = open_registry(uri)
    v1 = _push(registry, saved_model_dir, config_path)
    listed_before = registry.list_versions("seg")

    proc = multiprocessing.get_context("spawn").Process(
        target=_crash_midway, args=(uri, saved_model_dir, config_path)
    )
    proc.start()
    proc.join(_JOIN_TIMEOUT_S)
    assert proc.exitcode == -signal.SIGKILL

    v1_upload = v1.uri.rsplit("/", 1)[1]
    debris = [n for n in _names(bucket, uri, "seg/uploads/") if not n.startswith(v1_upload)]
    leases = [n for n in debris if n.endswith(".lease")]
    assert len(leases) == 1 and len(debris) >= 3  # its lease and at least two files
    assert registry.list_versions("seg") == listed_before
    assert _names(bucket, uri, "seg/versions/") == ["1/MANIFEST.json"]
    # Its lease is fresh, so it looks like a live push: gc leaves it alone.
    assert registry.gc() == []
    # The next push takes the next number: the dead push never held one.
    assert _push(registry, saved_model_dir, config_path).version == 2

    dead_id = leases[0][: -len(".lease")]
    removed = GcsRegistry(uri, lease_timeout_s=0).gc("seg")
    prefix = uri + "/seg/uploads/"
    assert sorted(removed) == [prefix + dead_id + ".lease", prefix + dead_id + "/"]
    remaining = {n.split("/", 1)[0] for n in _names(bucket, uri, "seg/uploads/")}
    assert remaining == {v.uri.rsplit("/", 1)[1] for v in registry.list_versions("seg")}
    assert GcsRegistry(uri, lease_timeout_s=0).gc() == []
    for v in (1, 2):
        registry.verify("seg", v)


def _fail_after(monkeypatch, count, action):
    original = gcs_io.upload_file
    done = []

    def upload(blob, source):
        if len(done) == count:
            action()
        original(blob, source)
        done.append(blob.name)

    monkeypatch.setattr(gcs_io, "upload_file", upload)
    return done


def test_a_failing_push_removes_its_own_upload(
    uri, bucket, saved_model_dir, config_path, monkeypatch
):
    registry = GcsRegistry(uri, max_workers=1)
    _push(registry, saved_model_dir, config_path)
    before = _names(bucket, uri)

    def fail():
        raise OSError(28, "No space left on device (simulated)")

    done = _fail_after(monkeypatch, 2, fail)
    with pytest.raises(OSError, match="No space left"):
        _push(registry, saved_model_dir, config_path)
    assert len(done) == 2  # it really was interrupted midway
    assert _names(bucket, uri) == before
    monkeypatch.undo()
    assert _push(registry, saved_model_dir, config_path).version == 2


def test_a_push_whose_lease_gc_took_refuses_to_seal(
    uri, bucket, saved_model_dir, config_path, monkeypatch
):
    registry = GcsRegistry(uri, max_workers=1)
    collected = []

    def collect_as_if_abandoned():
        if not collected:
            # As gc() would after the push stalled for longer than the lease timeout.
            collected.extend(GcsRegistry(uri, lease_timeout_s=0).gc("seg"))

    _fail_after(monkeypatch, 1, collect_as_if_abandoned)
    with pytest.raises(RegistryError, match="taken by gc"):
        _push(registry, saved_model_dir, config_path)
    assert len(collected) == 2  # the lease and the one file uploaded so far
    assert registry.list_versions("seg") == []
    assert _names(bucket, uri) == []


def test_a_damaged_sealed_version_is_hidden_and_reported(uri, bucket, saved_model_dir, config_path):
    registry = open_registry(uri)
    v1 = _push(registry, saved_model_dir, config_path)
    _push(registry, saved_model_dir, config_path)
    bucket.blob(v1.uri.split("/", 3)[3] + "/saved_model/variables/variables.index").delete()
    assert [v.version for v in registry.list_versions("seg")] == [2]
    with pytest.raises(ManifestError, match="sealed but its files do not match"):
        registry.get_version("seg", 1)
    with pytest.raises(ManifestError, match="variables.index: missing"):
        registry.verify("seg", 1)
    # gc never deletes what a manifest references, even when it is damaged.
    assert GcsRegistry(uri, lease_timeout_s=0).gc() == []
    assert len(_names(bucket, uri, "seg/versions/")) == 2
