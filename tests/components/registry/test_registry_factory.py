"""open_registry: URI schemes, and the shared validation helpers of the interface."""

import os

import pytest

from components.registry import (
    LocalRegistry,
    ModelRegistry,
    UnsupportedRegistryError,
    known_schemes,
    open_registry,
    register_registry_backend,
)
from components.registry.base import validate_model_name
from components.registry.documents import to_json_document


def test_plain_paths_and_file_uris_open_the_local_backend(tmp_path):
    expected = str(tmp_path / "reg")
    for uri in (expected, f"file://{expected}", f"file://localhost{expected}"):
        registry = open_registry(uri)
        assert isinstance(registry, LocalRegistry) and registry.root == expected
    relative = open_registry("some/relative")
    assert relative.root == os.path.abspath("some/relative")
    assert known_schemes() == ["", "file", "gs", "vertex"]


def test_gs_uris_open_the_gcs_backend_without_touching_the_network():
    from components.registry.gcs import GcsRegistry

    for uri in ("gs://bucket/some/prefix", "gs://bucket/some/prefix/"):
        registry = open_registry(uri)
        assert isinstance(registry, GcsRegistry) and registry.uri == "gs://bucket/some/prefix"
    assert open_registry("gs://bucket").uri == "gs://bucket"
    with pytest.raises(ValueError, match="expected gs://bucket"):
        open_registry("gs:///no-bucket")


def test_vertex_uris_open_the_vertex_backend_without_touching_the_network():
    from components.registry.vertex import VertexRegistry

    registry = open_registry("vertex://my-project/europe-west4/vision?staging=gs://bucket/reg/")
    assert isinstance(registry, VertexRegistry)
    assert registry.uri == "vertex://my-project/europe-west4/vision?staging=gs://bucket/reg"
    assert registry.staging_uri == "gs://bucket/reg"
    with pytest.raises(ValueError, match="staging=''"):
        open_registry("vertex://my-project/europe-west4/vision")


def test_planned_backends_raise_not_implemented_naming_the_scheme(monkeypatch):
    # No scheme is planned at the moment; the mechanism is tested with a made-up entry.
    from components.registry import factory

    monkeypatch.setitem(factory._PLANNED, "s3", "an S3 bucket, s3://bucket/prefix")
    with pytest.raises(UnsupportedRegistryError) as excinfo:
        open_registry("s3://bucket/x")
    assert isinstance(excinfo.value, NotImplementedError)
    message = str(excinfo.value)
    assert "the s3:// backend (an S3 bucket, s3://bucket/prefix) is not implemented" in message
    assert "implemented: a plain path, file://, gs://, vertex://" in message
    with pytest.raises(ValueError, match=r"unknown scheme 'hdfs'.*vertex://; planned: s3://"):
        open_registry("hdfs://namenode/x")


def test_unknown_schemes_and_bad_file_uris_are_errors():
    with pytest.raises(ValueError, match=r"unknown scheme 's3'; implemented: .*vertex://$"):
        open_registry("s3://bucket/x")
    with pytest.raises(ValueError, match="got host 'server'"):
        open_registry("file://server/share")
    with pytest.raises(ValueError, match="empty"):
        open_registry("")


def test_backends_register_in_one_table():
    with pytest.raises(ValueError, match="'file' already has a backend"):
        register_registry_backend("file", LocalRegistry)
    assert issubclass(LocalRegistry, ModelRegistry)


@pytest.mark.parametrize("name", ["seg", "deeplab_v3.plus-1", "A"])
def test_valid_model_names(name):
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", ["", ".staging", "a/b", "../up", "x" * 129, "sp ace"])
def test_invalid_model_names(name):
    with pytest.raises(ValueError, match="model_name"):
        validate_model_name(name)


def test_json_documents_are_strict_and_sorted():
    text = to_json_document({"b": 1, "a": [float("inf"), 0.5]}, "metrics")
    assert text == '{\n  "a": [\n    null,\n    0.5\n  ],\n  "b": 1\n}\n'
    with pytest.raises(TypeError, match="metrics: keys must be strings"):
        to_json_document({1: 0.5}, "metrics")
    with pytest.raises(TypeError, match="lineage: expected a mapping"):
        to_json_document([1], "lineage")


def test_each_backend_checks_alias_names_by_its_own_rules(tmp_path):
    # The push step asks the registry before pushing, so an alias Vertex AI would refuse cannot
    # leave a pushed but unpromoted version behind.
    pytest.importorskip("google.cloud.aiplatform")
    local = open_registry(str(tmp_path / "registry"))
    assert local.check_alias_name("Champion") == "Champion"
    vertex = open_registry("vertex://my-project/us-central1/vp?staging=gs://bucket/registry")
    assert vertex.check_alias_name("champion") == "champion"
    with pytest.raises(ValueError, match="lower-case letters"):
        vertex.check_alias_name("Champion")
