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
    assert known_schemes() == ["", "file", "gs"]


def test_gs_uris_open_the_gcs_backend_without_touching_the_network():
    from components.registry.gcs import GcsRegistry

    for uri in ("gs://bucket/some/prefix", "gs://bucket/some/prefix/"):
        registry = open_registry(uri)
        assert isinstance(registry, GcsRegistry) and registry.uri == "gs://bucket/some/prefix"
    assert open_registry("gs://bucket").uri == "gs://bucket"
    with pytest.raises(ValueError, match="expected gs://bucket"):
        open_registry("gs:///no-bucket")


@pytest.mark.parametrize("uri, scheme", [("vertex://proj/us", "vertex")])
def test_planned_backends_raise_not_implemented_naming_the_scheme(uri, scheme):
    with pytest.raises(UnsupportedRegistryError) as excinfo:
        open_registry(uri)
    assert isinstance(excinfo.value, NotImplementedError)
    message = str(excinfo.value)
    assert f"the {scheme}:// backend" in message
    assert "implemented: a plain path, file://, gs://" in message


def test_unknown_schemes_and_bad_file_uris_are_errors():
    with pytest.raises(ValueError, match=r"unknown scheme 's3'.*gs://; planned: vertex://"):
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
