"""The Model Garden weight converter on bundles this test exports itself.

The bundle format is what `export_modelgarden_weights.py` writes in a Model Garden environment
(the same `write_bundle` function); here the source network is a vision_core model with random
weights, so the test runs where the reference venv is absent. The side-by-side figures against
Model Garden itself are produced by `benchmarks/modelgarden_parity.py`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from pipelines.cli import main as cli_main
from vision_core.interop import export_modelgarden_weights as exporter
from vision_core.interop import weight_import
from vision_core.modeling.backbones import resnet

SIZE = [64, 64, 3]


def _resnet(model_id: int, seed: int) -> tf_keras.Model:
    tf_keras.utils.set_random_seed(seed)
    model = resnet.ResNet(model_id, input_specs=tf_keras.layers.InputSpec(shape=[None, *SIZE]))
    # Non-default batch-norm statistics, so a missed moving mean/variance shows in the outputs.
    rng = np.random.default_rng(seed)
    for v in model.non_trainable_weights:
        low, high = (-0.05, 0.05) if "moving_mean" in v.name else (0.5, 1.5)
        v.assign(rng.uniform(low, high, size=v.shape).astype(np.float32))
    return model


def _write(path: str, model: tf_keras.Model, model_id: int = 18, sample: bool = True) -> None:
    meta = {
        "module": "backbone",
        # Model Garden's `as_dict()` carries every backbone type and fields we may not read.
        "backbone": {
            "type": "resnet",
            "resnet": {"model_id": model_id, "depth_multiplier": 1.0, "future_field": 3},
            "revnet": {"model_id": 56},
        },
        "norm_activation": {"activation": "relu", "norm_momentum": 0.99, "norm_epsilon": 0.001},
        "input_size": SIZE,
    }
    pair = None
    if sample:
        inputs = exporter.sample_input(SIZE)
        pair = (inputs, exporter.flatten_outputs(model(inputs, training=False)))
    exporter.write_bundle(path, model, meta, pair)


def test_import_reproduces_the_source_outputs(tmp_path):
    source = _resnet(18, seed=1)
    bundle_path = str(tmp_path / "r18.npz")
    _write(bundle_path, source)

    report = weight_import.run_import(bundle_path, str(tmp_path / "out"), check=True)

    assert report.complete
    assert len(report.matched) == len(source.weights)
    assert report.renamed == []
    assert set(report.max_abs_diff) == {"2", "3", "4", "5"}
    assert max(report.max_abs_diff.values()) <= 1e-6
    assert report.ignored_config_fields == {"backbone.resnet.future_field": 3}

    # The checkpoint loads the way `task.init_checkpoint_modules: backbone` reads it.
    fresh = _resnet(18, seed=2)
    x = exporter.sample_input(SIZE)
    before = fresh(x, training=False)["5"].numpy()
    latest = tf.train.latest_checkpoint(str(tmp_path / "out"))
    tf.train.Checkpoint(backbone=fresh).read(latest).assert_existing_objects_matched()
    after = fresh(x, training=False)["5"].numpy()
    expected = source(x, training=False)["5"].numpy()
    assert np.abs(before - expected).max() > 1e-2  # the seeds really differ
    np.testing.assert_allclose(after, expected, atol=1e-6)
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    assert summary["complete"] and summary["checkpoint_key"] == "backbone"
    assert "| 5 |" in (tmp_path / "out" / "report.md").read_text()


def test_mismatched_architectures_are_reported_variable_by_variable(tmp_path):
    bundle_path = str(tmp_path / "r18.npz")
    _write(bundle_path, _resnet(18, seed=1), sample=False)
    bundle = weight_import.read_bundle(bundle_path)
    target = _resnet(34, seed=3)  # same blocks, more of them in groups 2-4
    before = [v.numpy().copy() for v in target.weights]

    with pytest.raises(ValueError, match="have no partner") as err:
        weight_import.import_weights(bundle, target, strict=True)
    assert "model:" in str(err.value)
    # Strict mode assigns nothing when it fails.
    for old, v in zip(before, target.weights, strict=True):
        np.testing.assert_array_equal(old, v.numpy())

    report = weight_import.import_weights(bundle, target, strict=False)
    assert not report.complete
    assert report.unmatched_source == []
    # ResNet-34 ([3, 4, 6, 3] blocks) has 1+2+4+1 = 8 more residual blocks than ResNet-18
    # ([2, 2, 2, 2]): 2 convs + 2 BNs each, i.e. 2 kernels + 2 gammas + 2 betas trainable and
    # 4 moving statistics per block.
    assert len(report.unmatched_target) == 8 * (6 + 4)
    assert all(row["reason"] for row in report.unmatched_target)
    md = report.to_markdown()
    assert "Unmatched in the vision_core model" in md


def test_a_weight_named_differently_is_copied_and_listed(tmp_path):
    source = _resnet(18, seed=1)
    bundle_path = str(tmp_path / "r18.npz")
    _write(bundle_path, source, sample=False)
    with np.load(bundle_path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["variables"][0]["name"] = "stem/conv/weights:0"  # another library's name for a kernel
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez(bundle_path, **arrays)

    target = _resnet(18, seed=2)
    report = weight_import.import_weights(weight_import.read_bundle(bundle_path), target)
    assert report.complete
    assert [r["source"] for r in report.renamed] == ["stem/conv/weights:0"]
    np.testing.assert_array_equal(target.weights[0].numpy(), source.weights[0].numpy())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a, m: m.update(format="other/9"), "format 'other/9'"),
        (lambda a, m: a.pop("weight_00003"), "has no array weight_00003"),
        (lambda a, m: m["variables"][2].update(shape=[1, 2]), "meta says \\[1, 2\\]"),
    ],
)
def test_corrupt_bundles_are_refused_with_the_reason(tmp_path, mutate, message):
    bundle_path = str(tmp_path / "b.npz")
    _write(bundle_path, _resnet(10, seed=1), model_id=10, sample=False)
    with np.load(bundle_path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    mutate(arrays, meta)
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez(bundle_path, **arrays)
    with pytest.raises(weight_import.BundleError, match=message):
        weight_import.read_bundle(bundle_path)


def test_not_a_bundle(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(weight_import.BundleError, match="junk.npz"):
        weight_import.read_bundle(str(path))
    with pytest.raises(weight_import.BundleError, match="no such weights bundle"):
        weight_import.read_bundle(str(tmp_path / "missing.npz"))


def test_cli_imports_checks_and_refuses_to_overwrite(tmp_path, capsys):
    bundle_path = str(tmp_path / "r10.npz")
    _write(bundle_path, _resnet(10, seed=5), model_id=10)
    out = str(tmp_path / "imported")

    assert cli_main(["import-weights", bundle_path, "--output", out, "--check"]) == 0
    printed = capsys.readouterr().out
    assert "unmatched: 0 in the bundle, 0 in the model" in printed
    assert "output 5: max abs diff" in printed
    assert tf.train.latest_checkpoint(out) is not None

    assert cli_main(["import-weights", bundle_path, "--output", out]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["imported", "r10.npz"]  # no temporary left over

    assert cli_main(["import-weights", str(tmp_path / "nope.npz"), "--output", out + "2"]) == 2
    assert "no such weights bundle" in capsys.readouterr().err


def test_whole_model_bundle_needs_and_uses_an_experiment(tmp_path, capsys):
    from vision_core.configs import load_experiment
    from vision_core.tasks.factory import get_task

    overrides = {"task": {"model": {"input_size": [32, 32, 3]}}}
    params = load_experiment("shapes_segmentation", [], overrides)
    tf_keras.utils.set_random_seed(7)
    source = get_task(params.task).build_model()
    inputs = exporter.sample_input([32, 32, 3])
    outputs = exporter.flatten_outputs(source(inputs, training=False))
    bundle_path = str(tmp_path / "seg.npz")
    exporter.write_bundle(
        bundle_path, source, {"module": "model", "input_size": [32, 32, 3]}, (inputs, outputs)
    )

    assert cli_main(["import-weights", bundle_path, "--output", str(tmp_path / "a")]) == 2
    assert "give the vision_core experiment" in capsys.readouterr().err

    code = cli_main(
        [
            "import-weights",
            bundle_path,
            "--output",
            str(tmp_path / "b"),
            "--experiment",
            "shapes_segmentation",
            "--set",
            "task.model.input_size=[32,32,3]",
            "--check",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "b" / "report.json").read_text())
    assert summary["complete"] and summary["checkpoint_key"] == "model"
    assert max(summary["max_abs_diff"].values()) <= 1e-5
