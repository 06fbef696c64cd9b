"""Image references for clusters: the reference grammar, the pullability check, the push record
and the choice of image (`--image`, the config's `image`, the record's pinned digest)."""

import json
import os
import stat

import pytest

from pipelines import image_ref
from pipelines.image_ref import (
    ImageReference,
    ImageReferenceError,
    check_cluster_image,
    image_code_version,
    image_record_path,
    make_image_record,
    parse_image_reference,
    read_image_record,
    resolve_cluster_image,
    write_image_record,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4
OTHER_DIGEST = "sha256:" + "f" * 64
TAG = "us-docker.pkg.dev/proj/repo/vision-pipelines:0.1.0"
PINNED = f"us-docker.pkg.dev/proj/repo/vision-pipelines@{DIGEST}"


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("gcr.io/p/vision-pipelines:0.1.0", ("gcr.io", "p/vision-pipelines", "0.1.0", None)),
        (f"127.0.0.1:5000/vp@{DIGEST}", ("127.0.0.1:5000", "vp", None, DIGEST)),
        ("localhost:5000/vp:dev", ("localhost:5000", "vp", "dev", None)),
        (f"ghcr.io/org/vp:v1@{DIGEST}", ("ghcr.io", "org/vp", "v1", DIGEST)),
        ("Registry.Example:443/a/b__c/d-e.f:Tag_1.x", ("Registry.Example:443", "a/b__c/d-e.f",
                                                        "Tag_1.x", None)),
        ("[::1]:5000/vp:1", ("[::1]:5000", "vp", "1", None)),
        # No host: Docker Hub paths, which the grammar allows and the cluster check refuses.
        ("vision-pipelines:dev", (None, "vision-pipelines", "dev", None)),
        ("library/python:3.11", (None, "library/python", "3.11", None)),
        ("localhost/vision-pipelines:0.1.0", ("localhost", "vision-pipelines", "0.1.0", None)),
    ],
)  # fmt: skip
def test_valid_references_split_into_their_parts(ref, parts):
    parsed = parse_image_reference(ref)
    assert (parsed.registry, parsed.repository, parsed.tag, parsed.digest) == parts
    assert str(parsed) == ref


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("gcr.io/P/vp:1", "repository path component 'P'"),
        ("gcr.io/p/Vision:1", "repository path component 'Vision'"),
        ("gcr.io/p/vp@sha256:abc", "digest 'sha256:abc'"),
        (f"gcr.io/p/vp@sha256:{'A' * 64}", "64 lowercase hex"),
        (f"gcr.io/p/vp@md5:{'a' * 32}", "digest 'md5:"),
        ("gcr.io/p/vp:-dev", "tag '-dev'"),
        (f"gcr.io/p/vp:{'t' * 129}", "at most 128"),
        ("gcr.io/p/vp:", "tag ''"),
        ("gcr.io/p//vp:1", "repository path component ''"),
        ("gcr.io/p/vp-:1", "repository path component 'vp-'"),
        ("bad_host.io/p/vp:1", "registry host 'bad_host.io'"),
        ("gcr.io/p/vp:1 ", "white space"),
        ("", "empty"),
        (f"gcr.io/{'a' * 260}:1", "longer than 255"),
    ],
)
def test_malformed_references_say_which_part_is_wrong(ref, message):
    with pytest.raises(ImageReferenceError) as info:
        parse_image_reference(ref)
    assert message in str(info.value)
    # The cluster check names the field and shows what a valid reference looks like.
    with pytest.raises(ImageReferenceError) as info:
        check_cluster_image(ref, "--image")
    text = str(info.value)
    assert text.startswith("--image: ") and "is not a valid image reference" in text
    assert "us-docker.pkg.dev/PROJECT/REPO/vision-pipelines:0.1.0" in text


@pytest.mark.parametrize(
    "ref",
    ["gcr.io/p/vision-pipelines:0.1.0", f"127.0.0.1:5000/vp@{DIGEST}", "localhost:5000/vp:dev"],
)
def test_pullable_references_pass_the_cluster_check(ref):
    assert isinstance(check_cluster_image(ref, "--image"), ImageReference)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("vision-pipelines:dev", "names no registry host"),
        ("library/python:3.11", "names no registry host"),
        ("localhost/vision-pipelines:0.1.0", "'localhost/' is podman's prefix"),
        ("gcr.io/p/vp", "neither a tag nor a digest"),
    ],
)
@pytest.mark.parametrize("field", ["--image", "configs/pipelines/x.yaml: image"])
def test_unpullable_references_are_refused_naming_the_field(ref, reason, field):
    with pytest.raises(ImageReferenceError) as info:
        check_cluster_image(ref, field)
    text = str(info.value)
    assert text.startswith(f"{field}: image {ref!r} cannot be pulled by a cluster: ")
    assert reason in text
    assert "ghcr.io/ORG/vision-pipelines@sha256:<digest>" in text
    assert isinstance(info.value, ValueError)  # The CLI's exit-2 path.


def test_the_code_version_of_an_image_is_its_digest():
    assert image_code_version(PINNED) == f"image:{DIGEST}"
    assert image_code_version(f"{TAG}@{DIGEST}") == f"image:{DIGEST}"
    assert image_code_version(TAG) is None  # A tag can move: it identifies no code.


# --- the push record ------------------------------------------------------------------------


def test_the_record_lives_in_the_project_unless_the_environment_says(monkeypatch, tmp_path):
    from pipelines.config import PROJECT_ROOT

    assert image_ref.PROJECT_ROOT == PROJECT_ROOT
    monkeypatch.delenv("VISION_PIPELINES_IMAGE_RECORD")
    assert image_record_path() == os.path.join(PROJECT_ROOT, "artifacts", "image-push.json")
    monkeypatch.setenv("VISION_PIPELINES_IMAGE_RECORD", str(tmp_path / "r.json"))
    assert image_record_path() == str(tmp_path / "r.json")


def test_a_record_round_trips_and_is_written_whole(tmp_path, monkeypatch):
    path = tmp_path / "nested" / "image-push.json"
    monkeypatch.setenv("VISION_PIPELINES_IMAGE_RECORD", str(path))
    assert read_image_record() is None
    record = make_image_record(TAG, DIGEST, "0.1.0+gabc1234", pushed_at="2024-05-01T10:00:00Z")
    assert record == {
        "reference": TAG,
        "digest": DIGEST,
        "pinned": PINNED,
        "code_version": "0.1.0+gabc1234",
        "pushed_at": "2024-05-01T10:00:00Z",
    }
    assert write_image_record(record) == str(path)
    assert read_image_record() == record
    assert json.loads(path.read_text()) == record
    # Written under a temporary name and renamed: nothing else is left in the folder.
    assert os.listdir(path.parent) == ["image-push.json"]
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # Readable by others (not mkstemp's 0600).


def test_bad_records_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_PIPELINES_IMAGE_RECORD", str(tmp_path / "r.json"))
    with pytest.raises(ImageReferenceError, match="IMAGE: image 'vp:1'.*no registry host"):
        make_image_record("vp:1", DIGEST)
    with pytest.raises(ImageReferenceError, match="already has a digest"):
        make_image_record(PINNED, DIGEST)
    with pytest.raises(ImageReferenceError, match="digest 'sha256:12'"):
        make_image_record(TAG, "sha256:12")
    with pytest.raises(ImageReferenceError, match="does not end in the digest"):
        write_image_record({"reference": TAG, "digest": OTHER_DIGEST, "pinned": PINNED})
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON"),
        ("[]", "expected a JSON object"),
        (json.dumps({"reference": TAG, "digest": DIGEST}), "missing or not text: pinned"),
        (json.dumps({"reference": TAG, "digest": DIGEST, "pinned": "gcr.io/P"}), "pinned:"),
    ],
)
def test_a_corrupt_record_is_an_error_naming_the_file(tmp_path, monkeypatch, text, problem):
    path = tmp_path / "image-push.json"
    path.write_text(text)
    monkeypatch.setenv("VISION_PIPELINES_IMAGE_RECORD", str(path))
    with pytest.raises(ImageReferenceError) as info:
        read_image_record()
    message = str(info.value)
    assert message.startswith(f"{path}: not a valid image push record (")
    assert problem in message and "make image-push IMAGE=" in message


# --- choosing the image -------------------------------------------------------------------


@pytest.fixture
def pushed(tmp_path, monkeypatch):
    """A record of TAG pushed as DIGEST."""
    monkeypatch.setenv("VISION_PIPELINES_IMAGE_RECORD", str(tmp_path / "image-push.json"))
    write_image_record(make_image_record(TAG, DIGEST, "0.1.0"))


def test_image_flag_then_config_then_record(pushed):
    other = "ghcr.io/org/vp:2.0"
    assert resolve_cluster_image(other, "gcr.io/p/vp:1", "c.yaml") == other
    assert resolve_cluster_image(None, other, "c.yaml") == other
    # Nothing given: the pushed image, by digest.
    assert resolve_cluster_image(None, None, "c.yaml") == PINNED


def test_the_pushed_tag_is_pinned_to_its_digest(pushed):
    assert resolve_cluster_image(TAG, None, "c.yaml") == PINNED
    assert resolve_cluster_image(None, TAG, "c.yaml") == PINNED
    # A digest given outright is kept, even another one of the same repository.
    other = f"us-docker.pkg.dev/proj/repo/vision-pipelines@{OTHER_DIGEST}"
    assert resolve_cluster_image(other, None, "c.yaml") == other


def test_each_source_is_named_when_its_image_is_refused(pushed, tmp_path):
    with pytest.raises(ImageReferenceError, match=r"^--image: image 'vp:dev'"):
        resolve_cluster_image("vp:dev", "gcr.io/p/vp:1", "c.yaml")
    with pytest.raises(ImageReferenceError, match=r"^c\.yaml: image: image 'vp:dev'"):
        resolve_cluster_image(None, "vp:dev", "c.yaml")
    # A record edited by hand into something unpullable is named by its file.
    path = tmp_path / "image-push.json"
    path.write_text(
        json.dumps({"reference": "vp:1", "digest": DIGEST, "pinned": f"localhost/vp@{DIGEST}"})
    )
    with pytest.raises(ImageReferenceError) as info:
        resolve_cluster_image(None, None, "c.yaml")
    assert str(info.value).startswith(f"{path}: pinned: image 'localhost/vp@")


def test_no_image_anywhere_says_where_to_give_one():
    with pytest.raises(ImageReferenceError) as info:
        resolve_cluster_image(None, None, "configs/pipelines/x.yaml")
    message = str(info.value)
    assert "pass --image REGISTRY/PATH:TAG" in message
    assert "set image: in the pipeline config (configs/pipelines/x.yaml)" in message
    assert "make image-push IMAGE=REGISTRY/PATH:TAG" in message


def test_the_module_command_checks_and_records(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VISION_PIPELINES_IMAGE_RECORD", str(tmp_path / "r.json"))
    assert image_ref.main(["check", "vision-pipelines:dev"]) == 2
    assert "error: image: image 'vision-pipelines:dev'" in capsys.readouterr().err
    assert image_ref.main(["check", TAG]) == 0
    assert json.loads(capsys.readouterr().out)["tag"] == "0.1.0"
    assert image_ref.main(["record", TAG, DIGEST, "--code-version", "0.1.0+g1"]) == 0
    assert f"{PINNED} recorded in {tmp_path / 'r.json'}" in capsys.readouterr().out
    assert read_image_record()["code_version"] == "0.1.0+g1"


def test_the_module_needs_only_the_standard_library():
    # The Makefile runs it before the project's environment exists.
    import subprocess
    import sys

    from pipelines.config import PROJECT_ROOT

    probe = (
        "import sys; import pipelines.image_ref; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pipelines', 'components', 'vision_core', 'yaml', 'kfp')))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['pipelines', 'pipelines.image_ref']"
