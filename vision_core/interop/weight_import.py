"""Imports a Model Garden weights bundle into the vision_core model of the same config.

The bundle (see `export_modelgarden_weights.py`) lists the source variables in their creation
order. vision_core builds its layers in Model Garden's order, so the two variable lists line
up; the importer still does not trust that blindly:

- trainable and non-trainable variables are aligned separately (Keras lists a nested layer's
  trainable variables before its non-trainable ones, and the two libraries nest differently);
- each list is aligned as a sequence of (kind, shape) signatures, where the kind is the last
  part of the variable name (`kernel`, `gamma`, `moving_mean`, ...). Runs that line up are
  copied; anything else is reported, never silently dropped or reshaped;
- a pair whose shapes agree but whose kinds differ (a layer that names its weight differently)
  is copied and listed under `renamed`, so a reader can check it.

The report names every unmatched variable on either side. With a sample input recorded in the
bundle, `verify` runs the imported module and gives the max abs difference per output.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from vision_core.interop.export_modelgarden_weights import BUNDLE_FORMAT, flatten_outputs

logger = logging.getLogger(__name__)


class BundleError(ValueError):
    """The bundle file is missing, unreadable or not in the expected format."""


@dataclasses.dataclass
class WeightsBundle:
    """A bundle read back: metadata, the variables in order, and the optional sample."""

    path: str
    meta: dict[str, Any]
    values: list[np.ndarray]
    sample_input: np.ndarray | None = None
    sample_outputs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.meta["variables"]

    @property
    def module(self) -> str:
        return self.meta.get("module", "backbone")


def read_bundle(path: str) -> WeightsBundle:
    """Reads and checks a bundle written by `export_modelgarden_weights.py`.

    Raises:
      BundleError: the file is missing, not an .npz, lacks `meta`, has another format tag, or
        its arrays disagree with the variable list.
    """
    if not tf.io.gfile.exists(path):
        raise BundleError(f"{path}: no such weights bundle")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise BundleError(f"{path}: not a readable .npz weights bundle ({err})") from err
    if "meta" not in arrays:
        raise BundleError(f"{path}: no 'meta' entry; was it written by export_modelgarden_weights?")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: 'meta' is not JSON ({err})") from err
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: format {meta.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    records = meta.get("variables")
    if not isinstance(records, list):
        raise BundleError(f"{path}: meta.variables must be a list")
    values = []
    for i, record in enumerate(records):
        key = f"weight_{i:05d}"
        if key not in arrays:
            raise BundleError(f"{path}: variable {i} ({record.get('name')}) has no array {key}")
        if list(arrays[key].shape) != list(record["shape"]):
            raise BundleError(
                f"{path}: variable {i} ({record.get('name')}) has shape "
                f"{list(arrays[key].shape)}, meta says {record['shape']}"
            )
        values.append(arrays[key])
    outputs = {
        key: arrays[f"sample_output_{key}"]
        for key in meta.get("sample_outputs", [])
        if f"sample_output_{key}" in arrays
    }
    return WeightsBundle(path, meta, values, arrays.get("sample_input"), outputs)


def variable_kind(name: str) -> str:
    """`block1/conv2d_3/kernel:0` → `kernel`."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


@dataclasses.dataclass
class ImportReport:
    """What `import_weights` did, variable by variable."""

    matched: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    renamed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    unmatched_source: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    unmatched_target: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ignored_config_fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_abs_diff: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every variable on both sides found its partner."""
        return not self.unmatched_source and not self.unmatched_target

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "num_matched": len(self.matched),
            "num_renamed": len(self.renamed),
            "num_unmatched_source": len(self.unmatched_source),
            "num_unmatched_target": len(self.unmatched_target),
            **dataclasses.asdict(self),
        }

    def to_markdown(self) -> str:
        lines = [
            "# Weight import report",
            "",
            f"- matched variables: {len(self.matched)} (of which renamed: {len(self.renamed)})",
            f"- unmatched in the bundle: {len(self.unmatched_source)}",
            f"- unmatched in the vision_core model: {len(self.unmatched_target)}",
        ]
        if self.max_abs_diff:
            lines += ["", "| output | max abs diff |", "|---|---|"]
            lines += [f"| {k} | {v:.3e} |" for k, v in sorted(self.max_abs_diff.items())]
        for title, rows in (
            ("Unmatched in the bundle", self.unmatched_source),
            ("Unmatched in the vision_core model", self.unmatched_target),
            ("Renamed (shapes agree, names differ)", self.renamed),
        ):
            if rows:
                lines += ["", f"## {title}", "", "| variable | shape | note |", "|---|---|---|"]
                for row in rows:
                    name = row.get("name") or f"{row['source']} → {row['target']}"
                    lines.append(f"| `{name}` | {row['shape']} | {row.get('reason', '')} |")
        if self.ignored_config_fields:
            lines += ["", "## Model Garden config fields vision_core does not read", ""]
            lines += [f"- `{k}`: {v!r}" for k, v in sorted(self.ignored_config_fields.items())]
        return "\n".join(lines) + "\n"


def _align(
    sources: Sequence[tuple[int, dict[str, Any]]],
    targets: Sequence[tf.Variable],
    report: ImportReport,
) -> list[tuple[int, tf.Variable]]:
    """Pairs source records with target variables; fills the report's lists."""
    src_sig = [(variable_kind(r["name"]), tuple(r["shape"])) for _, r in sources]
    tgt_sig = [(variable_kind(v.name), tuple(v.shape.as_list())) for v in targets]
    pairs: list[tuple[int, tf.Variable]] = []
    matcher = difflib.SequenceMatcher(a=src_sig, b=tgt_sig, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                pairs.append((sources[i][0], targets[j]))
                report.matched.append(
                    {
                        "source": sources[i][1]["name"],
                        "target": targets[j].name,
                        "shape": list(src_sig[i][1]),
                    }
                )
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            same_shapes = all(
                src_sig[i][1] == tgt_sig[j][1]
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            )
            if same_shapes:
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                    pairs.append((sources[i][0], targets[j]))
                    row = {
                        "source": sources[i][1]["name"],
                        "target": targets[j].name,
                        "shape": list(src_sig[i][1]),
                        "reason": "name differs",
                    }
                    report.matched.append(row)
                    report.renamed.append(row)
                continue
        for i in range(i1, i2):
            report.unmatched_source.append(
                {
                    "name": sources[i][1]["name"],
                    "shape": list(src_sig[i][1]),
                    "reason": "no vision_core variable of this kind and shape at this position",
                }
            )
        for j in range(j1, j2):
            report.unmatched_target.append(
                {
                    "name": targets[j].name,
                    "shape": list(tgt_sig[j][1]),
                    "reason": "no bundle variable of this kind and shape at this position",
                }
            )
    return pairs


def import_weights(
    bundle: WeightsBundle, module: tf_keras.layers.Layer, strict: bool = True
) -> ImportReport:
    """Copies the bundle's values into `module`'s variables.

    Args:
      bundle: a bundle from `read_bundle`.
      module: the vision_core model (or backbone) of the same configuration, already built.
      strict: raise if any variable on either side is left unmatched; nothing is assigned then.

    Returns:
      The report (matched, renamed and unmatched variables).

    Raises:
      ValueError: `strict` and the variables do not all match; the message lists them.
    """
    report = ImportReport()
    indexed = list(enumerate(bundle.records))
    pairs = []
    for trainable in (True, False):
        sources = [(i, r) for i, r in indexed if bool(r["trainable"]) == trainable]
        targets = [v for v in module.weights if bool(v.trainable) == trainable]
        pairs += _align(sources, targets, report)
    if strict and not report.complete:
        listing = [f"  bundle: {r['name']} {r['shape']}" for r in report.unmatched_source[:20]]
        listing += [f"  model:  {r['name']} {r['shape']}" for r in report.unmatched_target[:20]]
        raise ValueError(
            f"{bundle.path}: {len(report.unmatched_source)} bundle and "
            f"{len(report.unmatched_target)} model variables have no partner:\n"
            + "\n".join(listing)
        )
    for index, variable in pairs:
        variable.assign(bundle.values[index].astype(variable.dtype.as_numpy_dtype))
    logger.info("Imported %d variables from %s", len(pairs), bundle.path)
    return report


def verify(bundle: WeightsBundle, module: tf_keras.layers.Layer) -> dict[str, float]:
    """Max abs difference between `module`'s outputs and the bundle's recorded ones."""
    if bundle.sample_input is None:
        raise BundleError(f"{bundle.path}: no sample recorded (export with --sample)")
    ours = flatten_outputs(
        tf.nest.map_structure(
            lambda t: t.numpy() if hasattr(t, "numpy") else t,
            module(tf.constant(bundle.sample_input), training=False),
        )
    )
    diffs = {}
    for key, expected in bundle.sample_outputs.items():
        if key not in ours:
            raise BundleError(
                f"{bundle.path}: output {key!r} recorded in the bundle is not produced by the "
                f"vision_core module (it has {sorted(ours)})"
            )
        if ours[key].shape != expected.shape:
            raise BundleError(
                f"output {key!r}: vision_core shape {list(ours[key].shape)}, bundle "
                f"{list(expected.shape)}"
            )
        diffs[key] = float(np.max(np.abs(ours[key].astype(np.float64) - expected)))
    return diffs


# ----------------------------------------------------------- building ours from the bundle
def _known_fields(config_cls: Any, data: Mapping[str, Any], prefix: str, ignored: dict) -> dict:
    """The entries of `data` that `config_cls` has; the others are recorded in `ignored`."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    kept = {}
    for key, value in data.items():
        if key in names:
            kept[key] = value
        else:
            ignored[f"{prefix}{key}"] = value
    return kept


def backbone_configs_from_bundle(
    meta: Mapping[str, Any], report: ImportReport | None = None
) -> tuple[Any, Any]:
    """Our (backbone, norm_activation) configs for the Model Garden ones in `meta`.

    Model Garden's `as_dict()` holds every backbone type's sub-config; only the selected one is
    read. Fields vision_core does not have are listed in `report.ignored_config_fields`.
    """
    from vision_core.configs.backbones import Backbone
    from vision_core.configs.common import NormActivation

    ignored: dict[str, Any] = {}
    source = dict(meta.get("backbone") or {})
    kind = source.get("type")
    backbone_fields = {f.name: f for f in dataclasses.fields(Backbone)}
    if kind not in backbone_fields or kind == "type":
        known = sorted(k for k in backbone_fields if k != "type")
        raise BundleError(f"meta.backbone.type: {kind!r} is not one of {known}")
    sub_cls = backbone_fields[kind].default_factory().__class__
    sub = _known_fields(sub_cls, source.get(kind) or {}, f"backbone.{kind}.", ignored)
    backbone = Backbone.from_dict({"type": kind, kind: sub}, path="backbone")
    norm = NormActivation.from_dict(
        _known_fields(
            NormActivation, meta.get("norm_activation") or {}, "norm_activation.", ignored
        ),
        path="norm_activation",
    )
    if report is not None:
        report.ignored_config_fields.update(ignored)
    return backbone, norm


def build_backbone_from_bundle(
    bundle: WeightsBundle, report: ImportReport | None = None
) -> tf_keras.Model:
    """Builds the vision_core backbone of the bundle's Model Garden config."""
    from vision_core.modeling.backbones import factory

    backbone_cfg, norm_cfg = backbone_configs_from_bundle(bundle.meta, report)
    input_size = bundle.meta.get("input_size") or [None, None, 3]
    return factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, *input_size]),
        backbone_config=backbone_cfg,
        norm_activation_config=norm_cfg,
    )


def save_checkpoint(
    module: tf_keras.layers.Layer,
    output_dir: str,
    key: str,
    extra_files: Mapping[str, str] | None = None,
) -> str:
    """Writes `tf.train.Checkpoint(**{key: module})` into a new `output_dir`, atomically.

    `key` is `backbone` (load with `task.init_checkpoint_modules: backbone`) or `model`.
    `extra_files` ({file name: text}) are written beside it before the folder appears.

    Returns:
      The checkpoint prefix.

    Raises:
      FileExistsError: `output_dir` exists already.
    """
    if tf.io.gfile.exists(output_dir):
        raise FileExistsError(f"{output_dir}: already exists; choose a new --output folder")
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-import-", dir=parent)
    try:
        prefix = tf.train.Checkpoint(**{key: module}).save(os.path.join(tmp, "ckpt"))
        for name, text in (extra_files or {}).items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(text)
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(output_dir, os.path.basename(prefix))


def run_import(
    bundle_path: str,
    output_dir: str,
    experiment: str | None = None,
    config_files: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    check: bool = False,
    allow_unmatched: bool = False,
) -> ImportReport:
    """Reads a bundle, builds the matching vision_core module, imports, checks and saves it.

    A `backbone` bundle builds the backbone from the Model Garden config recorded in the bundle
    and writes `tf.train.Checkpoint(backbone=...)` (train from it with
    `task.init_checkpoint=OUTPUT task.init_checkpoint_modules=backbone`). A `model` bundle needs
    the vision_core experiment of the same model (`experiment` / `config_files` / `overrides`)
    and writes `tf.train.Checkpoint(model=...)`. `report.json` and `report.md` go beside the
    checkpoint.

    Args:
      bundle_path: the .npz written by `export_modelgarden_weights.py`.
      output_dir: new folder for the checkpoint and the report.
      experiment: registered vision_core experiment (model bundles).
      config_files: experiment YAML files (model bundles).
      overrides: dotted overrides (model bundles).
      check: compare outputs on the bundle's recorded sample; report the max abs differences.
      allow_unmatched: save even if some variables found no partner (they are reported).

    Raises:
      BundleError: the bundle is unreadable, or a model bundle comes without an experiment.
      ValueError: variables are unmatched and `allow_unmatched` is False.
    """
    bundle = read_bundle(bundle_path)
    report = ImportReport()
    if bundle.module == "backbone":
        module = build_backbone_from_bundle(bundle, report)
    else:
        if not experiment and not config_files:
            raise BundleError(
                f"{bundle_path}: holds a whole Model Garden model; give the vision_core "
                "experiment of the same model (--experiment and/or --config-file)"
            )
        from vision_core.configs import load_experiment
        from vision_core.tasks.factory import get_task

        params = load_experiment(experiment, list(config_files), overrides)
        module = get_task(params.task).build_model()
    partial = import_weights(bundle, module, strict=not allow_unmatched)
    report.matched, report.renamed = partial.matched, partial.renamed
    report.unmatched_source, report.unmatched_target = (
        partial.unmatched_source,
        partial.unmatched_target,
    )
    if check:
        report.max_abs_diff = verify(bundle, module)
    key = "backbone" if bundle.module == "backbone" else "model"
    summary = {"bundle": bundle_path, "checkpoint_key": key, **report.to_dict()}
    save_checkpoint(
        module,
        output_dir,
        key,
        {"report.json": json.dumps(summary, indent=2) + "\n", "report.md": report.to_markdown()},
    )
    return report
