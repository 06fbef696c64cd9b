"""Fixtures for the registry tests: a fake SavedModel folder and a config file.

The registry treats a SavedModel as an opaque folder, so random bytes in the standard layout
exercise it exactly as a real export would, without TensorFlow.
"""

import os
import random

import pytest


def make_saved_model(path, seed=0):
    """Writes a SavedModel-shaped folder of random bytes; returns its path."""
    rng = random.Random(seed)
    files = {
        "saved_model.pb": 2048,
        "fingerprint.pb": 64,
        "variables/variables.index": 300,
        "variables/variables.data-00000-of-00001": 5000,
        "assets/labels.txt": 0,
    }
    for rel, size in files.items():
        full = os.path.join(path, *rel.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(bytes(rng.getrandbits(8) for _ in range(size)))
    return str(path)


@pytest.fixture
def saved_model_dir(tmp_path):
    return make_saved_model(tmp_path / "export" / "saved_model")


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(
        "# tiny experiment\ntask:\n  model:\n    num_classes: 4\n"
        "    backbone:\n      type: resnet\n"
    )
    return str(path)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "registry")
