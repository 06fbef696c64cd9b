"""The push step: stores an exported SavedModel as a new registry version, optionally promoted.

The pipeline runs this only after the validate step passed; the step itself does not judge
the model, so it can also be used to register a model by hand.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from components.common import CODE_VERSION_ENV
from components.registry import DEFAULT_ALIAS, open_registry

logger = logging.getLogger(__name__)


def pipeline_lineage(lineage: Mapping[str, Any], image: str, code_version: str) -> dict[str, Any]:
    """`lineage` completed with what ran the step: the image and the code version.

    The code version is the one the running code reports, `$VISION_PIPELINES_CODE_VERSION`,
    which the image bakes in at build time; the compile-time value only stands in where that is
    unset (e.g. the local subprocess runner, which runs the checkout's code).

    Args:
      lineage: the pipeline's provenance (dataset fingerprint, config hash, parent run, ...).
      image: the image reference the pipeline was compiled with (a digest when pinned).
      code_version: the compile-time code version (the step cache's key).
    """
    out = dict(lineage)
    out["image"] = image or None
    out["code_version"] = os.environ.get(CODE_VERSION_ENV) or code_version or None
    return out


def run(
    saved_model_dir: str,
    registry_uri: str,
    model_name: str,
    config_path: str,
    metrics: Mapping[str, Any],
    lineage: Mapping[str, Any],
    promote: bool = True,
    alias: str = DEFAULT_ALIAS,
) -> dict[str, Any]:
    """Pushes a new immutable version and, when `promote`, moves `alias` to it.

    Args:
      saved_model_dir: the exported SavedModel folder.
      registry_uri: the registry (a folder path, file:// URI, gs://bucket/prefix or
        vertex://PROJECT/REGION/PREFIX?staging=gs://...).
      model_name: the registry model to add a version to.
      config_path: the YAML config the model was trained from, stored as config.yaml.
      metrics: the evaluation metrics, stored as metrics.json.
      lineage: provenance (dataset_fingerprint, parent_run, ...), stored as lineage.json.
      promote: whether to point `alias` at the new version.
      alias: the alias to move (the champion by default).

    Returns:
      {'version': int, 'uri': the version's location, 'alias_moved': bool}.
    """
    registry = open_registry(registry_uri)
    if promote:
        # Checked (by the registry's own rules) before pushing, so a bad alias cannot leave an
        # unpromoted version behind.
        registry.check_alias_name(alias)
    record = registry.push(model_name, saved_model_dir, config_path, metrics, lineage)
    alias_moved = False
    if promote:
        previous = registry.set_alias(model_name, alias, record.version)
        alias_moved = True
        logger.info(
            "Promoted %r version %d to %r (previously %s)",
            model_name,
            record.version,
            alias,
            f"version {previous}" if previous is not None else "unset",
        )
    return {"version": record.version, "uri": record.uri, "alias_moved": alias_moved}
