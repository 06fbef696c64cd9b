"""The Vertex AI Model Registry backend:
`vertex://PROJECT/REGION/MODEL_PREFIX?staging=gs://BUCKET/PREFIX`.

Cloud Storage is the source of truth. A `VertexRegistry` is a `GcsRegistry` on the staging
prefix, so version numbers, manifests, alias guards and history, `verify`, `download` and `gc`
are exactly the GCS backend's; in addition every version is published to the Vertex AI Model
Registry and every alias move is mirrored there, so the models show up in the console and can
be deployed by alias (`projects/P/locations/R/models/ID@champion`).

Mapping:

* registry model `seg` -> one Vertex model with the id `{MODEL_PREFIX}-seg-{digest}` (the
  digest, of the staging URI and the name, keeps two registries apart and makes the id a
  valid Vertex id whatever the model name) and the display name `{MODEL_PREFIX}-seg`;
* registry version n -> one Vertex version of it, uploaded with `artifact_uri` = the version's
  SavedModel folder in the staging bucket, the version alias `v{n}`, the labels
  `vision_pipelines_version=n` and `vision_pipelines_registry={digest}`, and the metrics in its
  version description. It never takes Vertex's `default` alias (the first version gets it, as
  Vertex requires; move it in the console to choose what an unversioned deployment serves);
* registry alias `champion` -> the Vertex version alias `champion` on that version.

Order and failures: the GCS write happens first and is the guard (a version number is
allocated, an alias moved with `expected=` checked); the Vertex call comes second. When it
fails, the GCS state stands and a `VertexSyncError` says so; `sync()` (also run by `gc()`)
publishes the versions and moves the aliases that Vertex is missing, from the GCS state.
Each publication is recorded under the staging prefix as `{model}/vertex/{n}.json`, which
is where `list_versions` / `get_version` take the `vertex_model` of their records from (so
reading needs no Vertex call). Two processes mirroring the same alias at once may apply
their updates out of order; each mirrors the alias's current GCS target, so this needs two
moves within a request's time, and `sync()` repairs it.

URI query parameters:

* `staging` (required): the `gs://` prefix holding the registry's files;
* `serving_image`: the serving container of the uploaded versions (default
  `DEFAULT_SERVING_IMAGE`, Vertex's prebuilt TF2 CPU image in the region's multi-region);
* `api_endpoint`: the Vertex API endpoint (e.g. a Private Service Connect one, or
  `http://127.0.0.1:PORT` for a local fake); else `$VISION_PIPELINES_VERTEX_API_ENDPOINT`, else
  the SDK's (the regional endpoint, unless the process set another with `aiplatform.init`:
  the SDK keeps these settings process-wide).

Credentials are Application Default Credentials; they are looked up before anything is
written, so a missing login fails before a push or move rather than half-way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from google.api_core import exceptions as gexc

from components.registry.base import (
    AliasMove,
    ModelVersion,
    RegistryError,
    validate_alias_name,
    validate_model_name,
)
from components.registry.documents import utc_now_iso
from components.registry.gcs import SAVED_MODEL_DIR, GcsRegistry

logger = logging.getLogger(__name__)

API_ENDPOINT_ENV = "VISION_PIPELINES_VERTEX_API_ENDPOINT"
# The newest prebuilt TensorFlow 2 CPU prediction image listed by google-cloud-aiplatform 2.7
# (google/cloud/aiplatform/constants/prediction.py); `{region}` is us, europe or asia.
DEFAULT_SERVING_IMAGE = "{region}-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
VERSION_LABEL = "vision_pipelines_version"
REGISTRY_LABEL = "vision_pipelines_registry"
MIRROR_DIR = "vertex"
INSTALL_HINT = "pip install 'vision-pipelines[vertex]'"
CREDENTIALS_HINT = (
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service account key file (on Google Cloud the attached service account is used)"
)
_QUERY_KEYS = ("staging", "serving_image", "api_endpoint")
_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# MergeVersionAliasesRequest: `[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]`; upper case is refused here too
# because the console and gcloud lower-case what users type.
_VERTEX_ALIAS_RE = re.compile(r"^[a-z][a-z0-9-]{0,126}[a-z0-9]$")
_RESERVED_ALIASES = ("default",)
_VERSION_ALIAS_RE = re.compile(r"^v([1-9][0-9]*)$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION_RE = re.compile(r"^[a-z]+(-[a-z0-9]+)+$")
# Short enough that prefix + name slug + digest fit Vertex's 63-character model ids.
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_URI_FORM = "vertex://PROJECT/REGION/MODEL_PREFIX?staging=gs://BUCKET/PREFIX"


class VertexSyncError(RegistryError):
    """Cloud Storage (the source of truth) was updated but mirroring to Vertex AI failed.

    Attributes:
      model_name: the model.
      version: the version that was pushed (None for an alias move).
    """

    def __init__(self, message: str, model_name: str, version: int | None = None):
        super().__init__(message)
        self.model_name = model_name
        self.version = version


@dataclasses.dataclass(frozen=True)
class VertexModelVersion(ModelVersion):
    """A `ModelVersion` with the Vertex model version it was published as.

    Attributes:
      vertex_model: `projects/P/locations/R/models/ID@VERSION_ID`, or None while the version
        is not published (a failed publication that `sync()` has not repaired yet).
    """

    vertex_model: str | None = None


@dataclasses.dataclass(frozen=True)
class VertexLocation:
    """A parsed vertex:// URI (see the module docstring)."""

    project: str
    region: str
    model_prefix: str
    staging: str
    serving_image: str | None = None
    api_endpoint: str | None = None


def parse_vertex_uri(uri: str) -> VertexLocation:
    """Splits and checks `vertex://PROJECT/REGION/MODEL_PREFIX?staging=gs://...&...`.

    Raises:
      ValueError: naming the part that is missing or malformed.
    """
    parts = urllib.parse.urlsplit(os.fspath(uri))
    if parts.scheme.lower() != "vertex":
        raise ValueError(f"registry URI {uri!r}: expected {_URI_FORM}")
    segments = [s for s in parts.path.split("/") if s]
    if not parts.netloc or len(segments) != 2:
        raise ValueError(f"registry URI {uri!r}: expected {_URI_FORM}")
    project, (region, prefix) = parts.netloc, segments
    checks = (
        ("PROJECT", project, _PROJECT_RE, "a Google Cloud project id (6-30 of a-z, 0-9, '-')"),
        ("REGION", region, _REGION_RE, "a Vertex AI region such as us-central1"),
        ("MODEL_PREFIX", prefix, _PREFIX_RE, "1-20 of a-z, 0-9 and '-', starting with a letter"),
    )
    for what, value, pattern, expected in checks:
        if not pattern.match(value):
            raise ValueError(f"registry URI {uri!r}: {what} {value!r}: expected {expected}")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    repeated = sorted(k for k, v in query.items() if len(v) > 1)
    if unknown or repeated:
        raise ValueError(
            f"registry URI {uri!r}: query parameter(s) {', '.join(unknown + repeated)} unknown or "
            f"repeated; known: {', '.join(_QUERY_KEYS)}"
        )
    staging = query.get("staging", [""])[0]
    if not staging.lower().startswith("gs://") or not staging[5:].strip("/"):
        raise ValueError(
            f"registry URI {uri!r}: staging={staging!r}: expected the gs://BUCKET/PREFIX that "
            f"holds the registry's files, as in {_URI_FORM}"
        )
    return VertexLocation(
        project=project,
        region=region,
        model_prefix=prefix,
        staging=staging,
        serving_image=query.get("serving_image", [""])[0] or None,
        api_endpoint=query.get("api_endpoint", [""])[0] or None,
    )


def validate_vertex_alias(alias: str) -> str:
    """Returns `alias` if Vertex AI accepts it as a version alias, else raises ValueError."""
    validate_alias_name(alias)
    if not _VERTEX_ALIAS_RE.match(alias) or alias in _RESERVED_ALIASES:
        raise ValueError(
            f"alias {alias!r}: a vertex:// registry mirrors aliases to Vertex AI, which takes "
            "2-128 characters of lower-case letters, digits and '-', starting with a letter and "
            "not ending with '-' ('default' is Vertex's own)"
        )
    return alias


@dataclasses.dataclass
class _VertexState:
    """What Vertex holds for one model: {registry version: Vertex version id} (from the `v{n}`
    aliases) and {alias: the Vertex version id holding it}."""

    exists: bool = False
    versions: dict[int, str] = dataclasses.field(default_factory=dict)
    holders: dict[str, str] = dataclasses.field(default_factory=dict)


class VertexRegistry(GcsRegistry):
    """A GCS registry mirrored to the Vertex AI Model Registry (see the module docstring).

    Args:
      uri: `vertex://PROJECT/REGION/MODEL_PREFIX?staging=gs://BUCKET/PREFIX[&...]`.
      client: a `google.cloud.storage.Client` for the staging bucket (default: made on use).
      lease_timeout_s, max_workers: as for `GcsRegistry`.

    Aliases must also be valid Vertex version aliases (`check_alias_name`); `set_alias`,
    `delete_alias` and `rollback_alias` raise VertexSyncError when the alias moved in GCS but
    Vertex could not be updated.
    """

    def check_alias_name(self, alias: str) -> str:
        return validate_vertex_alias(alias)

    def __init__(
        self,
        uri: str,
        client: Any = None,
        *,
        lease_timeout_s: float = 600.0,
        max_workers: int = 8,
    ):
        self._where = parse_vertex_uri(uri)
        super().__init__(
            self._where.staging, client, lease_timeout_s=lease_timeout_s, max_workers=max_workers
        )
        self._credentials: Any = None

    def __repr__(self) -> str:
        return f"VertexRegistry({self.uri!r})"

    @property
    def uri(self) -> str:
        where = self._where
        query = [("staging", self.staging_uri)]
        query += [
            (k, getattr(where, k)) for k in ("serving_image", "api_endpoint") if getattr(where, k)
        ]
        encoded = "&".join(f"{k}={urllib.parse.quote(v, safe=':/@')}" for k, v in query)
        return f"vertex://{where.project}/{where.region}/{where.model_prefix}?{encoded}"

    @property
    def staging_uri(self) -> str:
        """The `gs://` prefix that holds the registry (the source of truth)."""
        return GcsRegistry.uri.fget(self)

    @property
    def serving_image(self) -> str:
        """The serving container image of uploaded versions."""
        if self._where.serving_image:
            return self._where.serving_image
        area = self._where.region.split("-", 1)[0]
        return DEFAULT_SERVING_IMAGE.format(region=area if area in ("europe", "asia") else "us")

    # ----------------------------------------------------------------------------- naming
    def _digest(self, model_name: str) -> str:
        return hashlib.sha256(f"{self.staging_uri}\n{model_name}".encode()).hexdigest()[:8]

    def vertex_model_id(self, model_name: str) -> str:
        """The id of the Vertex model that mirrors `model_name`."""
        slug = re.sub(r"[^a-z0-9]+", "-", validate_model_name(model_name).lower())
        slug = slug.strip("-")[:32].rstrip("-")
        return f"{self._where.model_prefix}-{slug}-{self._digest(model_name)}"

    def vertex_model_name(self, model_name: str) -> str:
        """The resource name `projects/P/locations/R/models/ID` of the mirroring Vertex model."""
        where = self._where
        return (
            f"projects/{where.project}/locations/{where.region}/models/"
            f"{self.vertex_model_id(model_name)}"
        )

    def _display_name(self, model_name: str) -> str:
        return f"{self._where.model_prefix}-{model_name}"[:128]

    def _mirror_key(self, model_name: str, version: int) -> str:
        return self._key(model_name, MIRROR_DIR, f"{version}.json")

    # ----------------------------------------------------------------------------- the SDK
    def _connect(self) -> Any:
        """Checks the extra and the credentials and points the SDK at this registry's project
        and region (the SDK keeps these process-wide, so this runs before every Vertex use).

        Returns:
          The `google.cloud.aiplatform` module.
        """
        try:
            from google.cloud import aiplatform
        except ImportError as err:
            raise RegistryError(
                f"registry {self.uri}: the vertex:// backend needs the optional 'vertex' extra "
                f"({err}); {INSTALL_HINT}"
            ) from err
        if self._credentials is None:
            import google.auth
            from google.auth import exceptions as auth_exceptions

            try:
                self._credentials, _ = google.auth.default(scopes=list(_SCOPES))
            except auth_exceptions.DefaultCredentialsError as err:
                raise RegistryError(
                    f"registry {self.uri}: no Google Cloud credentials found for Vertex AI; "
                    f"{CREDENTIALS_HINT} ({err})"
                ) from err
        where = self._where
        try:
            aiplatform.init(
                project=where.project,
                location=where.region,
                credentials=self._credentials,
                api_endpoint=where.api_endpoint or os.environ.get(API_ENDPOINT_ENV) or None,
                api_transport="rest",
            )
        except ValueError as err:
            raise RegistryError(f"registry {self.uri}: REGION {where.region!r}: {err}") from err
        return aiplatform

    def _vertex_state(self, aiplatform: Any, model_name: str) -> _VertexState:
        registry = aiplatform.models.ModelRegistry(
            self.vertex_model_name(model_name), credentials=self._credentials
        )
        try:
            infos = registry.list_versions()
        except gexc.NotFound:
            return _VertexState()
        state = _VertexState(exists=True)
        for info in infos:
            for alias in info.version_aliases:
                match = _VERSION_ALIAS_RE.match(alias)
                if match:
                    state.versions[int(match.group(1))] = info.version_id
                else:
                    state.holders[alias] = info.version_id
        return state

    def _publish(
        self, aiplatform: Any, model_name: str, record: ModelVersion, state: _VertexState
    ) -> str:
        """Uploads `record` as a new version of the model's Vertex model; returns its id."""
        metrics = json.dumps(record.metrics, sort_keys=True, separators=(",", ":"))
        summary = f"v{record.version} of {model_name!r} ({record.uri}); metrics: {metrics}"
        kwargs = dict(
            display_name=self._display_name(model_name),
            artifact_uri=f"{record.uri}/{SAVED_MODEL_DIR}",
            serving_container_image_uri=self.serving_image,
            is_default_version=False,
            version_aliases=[f"v{record.version}"],
            version_description=summary if len(summary) <= 2000 else summary[:1997] + "...",
            description=f"vision-pipelines model {model_name!r}, staged under {self.staging_uri}",
            labels={VERSION_LABEL: str(record.version), REGISTRY_LABEL: self._digest(model_name)},
            project=self._where.project,
            location=self._where.region,
            credentials=self._credentials,
        )
        parent = self.vertex_model_name(model_name)
        if state.exists:
            model = aiplatform.Model.upload(parent_model=parent, **kwargs)
        else:
            try:
                model = aiplatform.Model.upload(model_id=self.vertex_model_id(model_name), **kwargs)
            except gexc.Conflict:
                # Another process created the model first: become a version of it.
                model = aiplatform.Model.upload(parent_model=parent, **kwargs)
        state.exists = True
        state.versions[record.version] = model.version_id
        self._record_publication(model_name, record.version, f"{parent}@{model.version_id}")
        logger.info(
            "Published model %r version %d to Vertex AI as %s@%s",
            model_name,
            record.version,
            parent,
            model.version_id,
        )
        return model.version_id

    def _record_publication(self, model_name: str, version: int, vertex_model: str) -> None:
        blob = self._bucket.blob(self._mirror_key(model_name, version))
        blob.metadata = {"vertex_model": vertex_model}
        doc = {"version": version, "vertex_model": vertex_model, "published_at": utc_now_iso()}
        # Unconditional: the record follows Vertex, which is where the version was just found.
        blob.upload_from_string(
            json.dumps(doc, indent=2, sort_keys=True) + "\n", content_type="application/json"
        )

    def _place_alias(
        self, aiplatform: Any, model_name: str, alias: str, target: int | None, state: _VertexState
    ) -> str | None:
        """Makes Vertex's `alias` match the GCS `target` (None: absent); returns what it did."""
        holder = state.holders.get(alias)
        registry = aiplatform.models.ModelRegistry(
            self.vertex_model_name(model_name), credentials=self._credentials
        )
        if target is None:
            if holder is None:
                return None
            registry.remove_version_aliases([alias], holder)
            del state.holders[alias]
            return f"{model_name}: removed Vertex alias {alias!r}"
        if target not in state.versions:
            # The version's own publication failed earlier: publish it now.
            self._publish(aiplatform, model_name, self.get_version(model_name, target), state)
        version_id = state.versions[target]
        if holder == version_id:
            return None
        # Vertex moves an alias that another version holds, in the same request.
        registry.add_version_aliases([alias], version_id)
        state.holders[alias] = version_id
        return f"{model_name}: Vertex alias {alias!r} -> v{target} (version id {version_id})"

    # ----------------------------------------------------------------------------- reading
    def _published(self, model_name: str) -> dict[int, str]:
        """{version: Vertex resource} of the publication records of a model."""
        prefix = self._key(model_name, MIRROR_DIR) + "/"
        found = {}
        for blob in self._list(prefix)[0]:
            match = re.fullmatch(r"([1-9][0-9]*)\.json", blob.name[len(prefix) :])
            vertex_model = (blob.metadata or {}).get("vertex_model")
            if match and vertex_model:
                found[int(match.group(1))] = vertex_model
        return found

    @staticmethod
    def _with_vertex(record: ModelVersion, vertex_model: str | None) -> VertexModelVersion:
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(ModelVersion)}
        return VertexModelVersion(**fields, vertex_model=vertex_model)

    def list_versions(self, model_name: str) -> list[ModelVersion]:
        records = super().list_versions(model_name)
        published = self._published(model_name) if records else {}
        return [self._with_vertex(r, published.get(r.version)) for r in records]

    def get_version(self, model_name: str, version: int) -> ModelVersion:
        record = super().get_version(model_name, version)
        blob = self._bucket.get_blob(self._mirror_key(model_name, version))
        return self._with_vertex(record, blob and (blob.metadata or {}).get("vertex_model"))

    # ----------------------------------------------------------------------------- writing
    def push(
        self,
        model_name: str,
        saved_model_dir: str,
        config: str | os.PathLike | Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Stores a new version in GCS, then publishes it to Vertex AI.

        Raises:
          VertexSyncError: the version is stored (its number is the error's `version`) but
            could not be published; `sync()` publishes it later.
        """
        validate_model_name(model_name)
        aiplatform = self._connect()
        record = super().push(model_name, saved_model_dir, config, metrics, lineage)
        try:
            state = self._vertex_state(aiplatform, model_name)
            if record.version not in state.versions:
                self._publish(aiplatform, model_name, record, state)
        except Exception as err:
            raise VertexSyncError(
                f"model {model_name!r} version {record.version} is stored at {record.uri} (the "
                f"source of truth) but publishing it to Vertex AI model "
                f"{self.vertex_model_name(model_name)} failed: {err}; sync() or gc() on "
                f"{self.uri} publishes it",
                model_name,
                record.version,
            ) from err
        return self.get_version(model_name, record.version)

    def _move_alias(self, move: AliasMove) -> int | None:
        """Moves the alias in GCS, then mirrors it to Vertex AI.

        Raises:
          VertexSyncError: the alias moved in GCS but Vertex could not be updated.
        """
        model_name, alias, version = move.model_name, move.alias, move.version
        if version is not None:
            validate_vertex_alias(alias)
        aiplatform = self._connect()
        previous = super()._move_alias(move)
        try:
            # The alias's current GCS target, which a concurrent move may have changed again.
            target = self.aliases(model_name).get(alias)
            state = self._vertex_state(aiplatform, model_name)
            self._place_alias(aiplatform, model_name, alias, target, state)
        except Exception as err:
            now = "is removed" if version is None else f"points at version {version}"
            raise VertexSyncError(
                f"model {model_name!r}: alias {alias!r} {now} in {self.staging_uri} (the source "
                f"of truth) but mirroring it to Vertex AI model "
                f"{self.vertex_model_name(model_name)} failed: {err}; sync() or gc() on "
                f"{self.uri} mirrors it",
                model_name,
            ) from err
        return previous

    # ----------------------------------------------------------------------------- repair
    def sync(self, model_name: str | None = None) -> list[str]:
        """Publishes the versions and mirrors the aliases that Vertex is missing.

        Works from the GCS state: every complete version without a Vertex version (found by
        its `v{n}` alias) is uploaded, publication records are rewritten where they disagree
        with Vertex, every alias is placed on its GCS target, and aliases this registry has
        deleted (they appear in the alias history) are removed from Vertex. Aliases that
        Vertex cannot hold are skipped with a warning. Idempotent.

        Returns:
          One line per change made.

        Raises:
          RegistryError: a Vertex request failed (the changes made before it stand).
        """
        from google.auth import exceptions as auth_exceptions

        aiplatform = self._connect()
        names = [validate_model_name(model_name)] if model_name is not None else self.models()
        done: list[str] = []
        for name in names:
            try:
                done.extend(self._sync_model(aiplatform, name))
            except (gexc.GoogleAPICallError, auth_exceptions.GoogleAuthError) as err:
                made = "; ".join(done) or "none"
                raise RegistryError(
                    f"registry {self.uri}: syncing model {name!r} to Vertex AI failed: {err} "
                    f"(changes made before: {made}); run sync() again"
                ) from err
        if done:
            logger.info("sync %s: %s", self.uri, "; ".join(done))
        return done

    def _sync_model(self, aiplatform: Any, model_name: str) -> list[str]:
        records = self.list_versions(model_name)
        if not records:
            return []
        state = self._vertex_state(aiplatform, model_name)
        parent = self.vertex_model_name(model_name)
        done = []
        for record in records:
            if record.version not in state.versions:
                version_id = self._publish(aiplatform, model_name, record, state)
                done.append(f"{model_name}: published v{record.version} as {parent}@{version_id}")
                continue
            actual = f"{parent}@{state.versions[record.version]}"
            if record.vertex_model != actual:
                self._record_publication(model_name, record.version, actual)
                done.append(f"{model_name}: recorded v{record.version} as {actual}")
        table = self.aliases(model_name)
        known = set(table) | {e.get("alias") for e in self.alias_history(model_name)}
        for alias in sorted(a for a in known if isinstance(a, str)):
            if not _VERTEX_ALIAS_RE.match(alias) or alias in _RESERVED_ALIASES:
                logger.warning(
                    "Model %r: alias %r is not a valid Vertex alias; not mirrored",
                    model_name,
                    alias,
                )
                continue
            change = self._place_alias(aiplatform, model_name, alias, table.get(alias), state)
            if change:
                done.append(change)
        return done

    def gc(self, model_name: str | None = None) -> list[str]:
        """The GCS backend's gc, then `sync()`; returns both's lines."""
        removed = super().gc(model_name)
        return removed + self.sync(model_name)
