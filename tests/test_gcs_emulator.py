"""The test GCS emulator: objects round-trip and preconditions give GCS's 412."""

import json
import os
import sys
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gcs_emulator import emulator_fixture  # noqa: E402
from google.api_core import exceptions  # noqa: E402

gcs = emulator_fixture(scope="module", bucket="emu-bucket")


@pytest.fixture
def bucket(gcs):
    gcs.wipe()
    return gcs.client().bucket(gcs.bucket)


def test_environment_points_at_the_emulator(gcs):
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs.url
    assert gcs.url.startswith("http://127.0.0.1:")


def test_upload_download_list(bucket):
    bucket.blob("a/x.txt").upload_from_string(b"hello")
    bucket.blob("a/y.txt").upload_from_string(b"world")
    assert bucket.blob("a/x.txt").download_as_bytes() == b"hello"
    assert sorted(b.name for b in bucket.client.list_blobs(bucket, prefix="a/")) == [
        "a/x.txt",
        "a/y.txt",
    ]


def test_create_only_upload_fails_the_second_time(bucket):
    bucket.blob("lock").upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed) as err:
        bucket.blob("lock").upload_from_string(b"second", if_generation_match=0)
    assert "pre-conditions" in str(err.value)
    assert bucket.blob("lock").download_as_bytes() == b"first"


def test_resumable_create_only_upload(bucket):
    # chunk_size forces a resumable session; the precondition must hold when it completes.
    first = bucket.blob("big", chunk_size=256 * 1024)
    first.upload_from_string(b"a" * 300_000, if_generation_match=0)
    second = bucket.blob("big", chunk_size=256 * 1024)
    with pytest.raises(exceptions.PreconditionFailed):
        second.upload_from_string(b"b" * 300_000, if_generation_match=0)
    assert bucket.blob("big").download_as_bytes() == b"a" * 300_000


def test_resumable_precondition_checked_when_the_upload_completes(gcs, bucket):
    # Another writer creates the object after the session started: the last chunk fails.
    start = urllib.request.Request(
        f"{gcs.url}/upload/storage/v1/b/{bucket.name}/o?uploadType=resumable&ifGenerationMatch=0",
        data=json.dumps({"name": "race"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(start) as reply:
        session = reply.headers["Location"]
    bucket.blob("race").upload_from_string(b"winner")
    finish = urllib.request.Request(
        session, data=b"c" * 10, headers={"Content-Range": "bytes 0-9/10"}, method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(finish)
    assert err.value.code == 412
    assert json.loads(err.value.read())["error"]["errors"][0]["reason"] == "conditionNotMet"
    assert bucket.blob("race").download_as_bytes() == b"winner"


def test_generation_match_on_overwrite_and_delete(bucket):
    blob = bucket.blob("obj")
    blob.upload_from_string(b"v1")
    blob.reload()
    generation = blob.generation
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("obj").upload_from_string(b"v2", if_generation_match=generation + 1)
    bucket.blob("obj").upload_from_string(b"v2", if_generation_match=generation)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("obj").upload_from_string(b"v3", if_generation_match=generation)
    current = bucket.get_blob("obj")
    assert current.generation != generation
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.delete_blob("obj", if_generation_match=generation)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.delete_blob("obj", if_generation_not_match=current.generation)
    bucket.delete_blob("obj", if_generation_match=current.generation)
    assert bucket.get_blob("obj") is None


def test_metadata_get_and_metageneration(bucket):
    bucket.blob("m").upload_from_string(b"x")
    current = bucket.get_blob("m")
    assert bucket.get_blob("m", if_generation_match=current.generation) is not None
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.get_blob("m", if_generation_match=current.generation + 1)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.get_blob("m", if_metageneration_match=current.metageneration + 1)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("m").download_as_bytes(if_generation_not_match=current.generation)
    # A missing object is still a 404, not a 412.
    assert bucket.get_blob("nope", if_generation_match=1) is None


def test_copy_and_compose_targets(bucket):
    source = bucket.blob("src")
    source.upload_from_string(b"data")
    bucket.blob("dst").upload_from_string(b"old")
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.copy_blob(source, bucket, "dst", if_generation_match=0)
    bucket.copy_blob(source, bucket, "fresh", if_generation_match=0)
    assert bucket.blob("fresh").download_as_bytes() == b"data"
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("dst").compose([source, source], if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("new").rewrite(source, if_source_generation_match=1)


def test_start_failure_reports_the_log(tmp_path, monkeypatch):
    import gcs_emulator

    broken = tmp_path / "broken_server.py"
    broken.write_text("import sys\nsys.exit('emulator exploded: port in use')\n")
    monkeypatch.setattr(gcs_emulator, "_SERVER", broken)
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    with pytest.raises(RuntimeError, match="emulator exploded"), gcs_emulator.gcs_emulator():
        pass
    assert os.environ.get("STORAGE_EMULATOR_HOST") == before
