"""The Google Cloud Storage registry backend: `gs://bucket/prefix`.

Layout under the prefix::

    {model}/uploads/{upload_id}/saved_model/...    a push's files, uploaded before it is sealed
                                config.yaml, metrics.json, lineage.json
    {model}/uploads/{upload_id}.lease               heartbeat of the live push writing that upload
    {model}/versions/{n}/MANIFEST.json              the seal of version n
    {model}/aliases.json                            {"aliases": {...}, "history": [...]}

GCS has no rename and no locks; what it has is object creation guarded by a generation
precondition, and that is enough:

* A push uploads every file under a fresh `uploads/{id}/` prefix, then seals it by creating
  `versions/{n}/MANIFEST.json` (file list with size, sha256 and crc32c; metrics; lineage; the
  upload id) with `if_generation_match=0`. Creation either succeeds — n is this push's — or fails
  with 412 because another push took n, and the push tries n + 1. One atomic object creation both
  allocates the number and publishes the version, so a push killed before it leaves no version
  and no gap in the numbering, and a number is never handed out twice.
* Readers only see versions whose manifest exists and whose upload holds exactly the listed
  files with the listed sizes and crc32c (checked from object metadata, without downloading);
  `verify` and `download` check sha256 against the manifest.
* Aliases and their history live in one index object, rewritten with
  `if_generation_match=<generation read>` and retried on 412, so concurrent moves are
  serialised and never lost; each history entry carries an id, so a request that was retried
  after it had in fact succeeded is recognised instead of applied twice.
* A live push keeps `uploads/{id}.lease` fresh (rewritten with a generation precondition every
  quarter of `lease_timeout_s`). `gc()` deletes an unsealed upload only when its lease is older
  than `lease_timeout_s` or gone, deleting the lease first (under its generation) so a push that
  was merely paused finds its lease taken and refuses to seal. (A push stalled for longer
  than the timeout exactly between that check and its seal could still seal an upload gc() is
  deleting; readers never see such a version, since its files do not match, and gc() logs it.)
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage

from components.registry import gcs_io
from components.registry import manifest as manifest_lib
from components.registry.base import (
    AliasMove,
    ManifestError,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    validate_model_name,
    validate_version_number,
)
from components.registry.documents import prepare_push

logger = logging.getLogger(__name__)

UPLOADS = "uploads"
VERSIONS = "versions"
INDEX_NAME = "aliases.json"
LEASE_SUFFIX = ".lease"
SAVED_MODEL_DIR = "saved_model"
CONFIG_FILE = "config.yaml"
_MAX_CLAIMS = 10_000
_MANIFEST_RE = re.compile(r"^([1-9][0-9]*)/" + re.escape(manifest_lib.MANIFEST_NAME) + "$")


class GcsRegistry(ModelRegistry):
    """A registry under a GCS prefix; see the module docstring for the layout and protocol.

    Args:
      uri: `gs://bucket` or `gs://bucket/prefix`.
      client: a `google.cloud.storage.Client`; default `gcs_io.make_storage_client()`.
      lease_timeout_s: how long an upload without a fresh lease heartbeat counts as alive;
        `gc()` only collects uploads whose lease is older.
      max_workers: parallel transfers per push, download or verify.
    """

    def __init__(
        self,
        uri: str,
        client: storage.Client | None = None,
        *,
        lease_timeout_s: float = 600.0,
        max_workers: int = 8,
    ):
        match = re.match(r"^(?i:gs)://([^/]+)/*(.*?)/*$", os.fspath(uri))
        if not match:
            raise ValueError(f"registry URI {uri!r}: expected gs://bucket or gs://bucket/prefix")
        if lease_timeout_s < 0 or max_workers < 1:
            raise ValueError(
                f"lease_timeout_s={lease_timeout_s!r}, max_workers={max_workers!r}: expected "
                "a timeout >= 0 and at least one worker"
            )
        self._bucket_name, prefix = match.group(1), match.group(2)
        self._prefix = prefix + "/" if prefix else ""
        self._client_arg = client
        self._bucket_obj: storage.Bucket | None = None
        self._lease_timeout_s = float(lease_timeout_s)
        self._max_workers = max_workers
        self._manifests: dict[tuple[str, int, int], dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"GcsRegistry({self.uri!r})"

    @property
    def _client(self) -> storage.Client:
        # Made on first use, so opening a registry needs neither credentials nor network.
        if self._client_arg is None:
            self._client_arg = gcs_io.make_storage_client()
        return self._client_arg

    @property
    def _bucket(self) -> storage.Bucket:
        if self._bucket_obj is None:
            self._bucket_obj = self._client.bucket(self._bucket_name)
        return self._bucket_obj

    @property
    def uri(self) -> str:
        return f"gs://{self._bucket_name}/{self._prefix}".rstrip("/")

    # ----------------------------------------------------------------------------- layout
    def _key(self, model_name: str, *parts: str) -> str:
        return self._prefix + "/".join((validate_model_name(model_name), *parts))

    def _manifest_key(self, model_name: str, version: int) -> str:
        return self._key(model_name, VERSIONS, str(version), manifest_lib.MANIFEST_NAME)

    def _upload_prefix(self, model_name: str, upload_id: str) -> str:
        return self._key(model_name, UPLOADS, upload_id) + "/"

    def _gs(self, name: str) -> str:
        return f"gs://{self._bucket_name}/{name}"

    def _list(self, prefix: str, delimiter: str | None = None) -> tuple[list[Any], list[str]]:
        pages = self._client.list_blobs(self._bucket, prefix=prefix, delimiter=delimiter)
        blobs = list(pages)
        return blobs, sorted(pages.prefixes)

    def _parallel(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return gcs_io.parallel_map(fn, items, self._max_workers)

    # ----------------------------------------------------------------------------- manifests
    def _manifest_blobs(self, model_name: str) -> dict[int, Any]:
        """{version: manifest blob} of every sealed number (complete or not)."""
        prefix = self._key(model_name, VERSIONS) + "/"
        found = {}
        for blob in self._list(prefix)[0]:
            match = _MANIFEST_RE.match(blob.name[len(prefix) :])
            if match:
                found[int(match.group(1))] = blob
        return found

    def _load_manifest(self, model_name: str, version: int, listed: Any = None) -> dict | None:
        """The parsed manifest of `version`, or None if the number is not sealed.

        Given the blob from a listing, reads that generation and caches the result: a manifest
        is created once and never rewritten.
        """
        key = None
        if listed is not None:
            key = (model_name, version, listed.generation)
            if key in self._manifests:
                return self._manifests[key]
        # A fresh blob object, because a download rewrites the object's properties.
        blob = self._bucket.blob(
            self._manifest_key(model_name, version),
            generation=listed.generation if listed is not None else None,
        )
        try:
            data = blob.download_as_bytes()
        except gexc.NotFound:
            return None
        manifest = manifest_lib.parse_manifest(data, self._gs(blob.name))
        if not isinstance(manifest.get("upload_id"), str):
            raise ManifestError(f"{self._gs(blob.name)}: no 'upload_id'")
        if key is not None:
            self._manifests[key] = manifest
        return manifest

    def _metadata_problems(self, model_name: str, manifest: dict, objects: list[Any]) -> list:
        """Mismatches between a manifest and its upload's listed objects (size, crc32c)."""
        prefix = self._upload_prefix(model_name, manifest["upload_id"])
        found = {blob.name[len(prefix) :]: blob for blob in objects}
        problems = []
        for entry in manifest["files"]:
            blob = found.pop(entry["path"], None)
            if blob is None:
                problems.append(manifest_lib.missing_problem(entry["path"]))
                continue
            problem = manifest_lib.entry_problem(entry["path"], entry, int(blob.size), None)
            if problem is None and entry.get("crc32c") and blob.crc32c != entry["crc32c"]:
                problem = f"{entry['path']}: crc32c {blob.crc32c}, manifest says {entry['crc32c']}"
            if problem:
                problems.append(problem)
        problems.extend(manifest_lib.unlisted_problem(rel) for rel in sorted(found))
        return problems

    def _record(
        self, model_name: str, version: int, manifest: dict, table: Mapping
    ) -> ModelVersion:
        return ModelVersion(
            model_name=model_name,
            version=version,
            uri=self._gs(self._upload_prefix(model_name, manifest["upload_id"]).rstrip("/")),
            created_at=str(manifest.get("created_at") or ""),
            metrics=dict(manifest.get("metrics") or {}),
            lineage=dict(manifest.get("lineage") or {}),
            aliases=tuple(sorted(a for a, v in table.items() if v == version)),
        )

    # ----------------------------------------------------------------------------- reading
    def models(self) -> list[str]:
        found = []
        for prefix in self._list(self._prefix, delimiter="/")[1]:
            name = prefix[len(self._prefix) :].rstrip("/")
            try:
                validate_model_name(name)
            except ValueError:
                continue
            if self._manifest_blobs(name):
                found.append(name)
        return found

    def list_versions(self, model_name: str) -> list[ModelVersion]:
        blobs = self._manifest_blobs(model_name)
        if not blobs:
            return []

        def load(item: tuple[int, Any]) -> tuple[int, dict | None | RegistryError]:
            try:
                return item[0], self._load_manifest(model_name, item[0], item[1])
            except RegistryError as e:
                return item[0], e

        loaded = self._parallel(load, sorted(blobs.items()))
        uploads: dict[str, list[Any]] = {}
        uploads_prefix = self._key(model_name, UPLOADS) + "/"
        for blob in self._list(uploads_prefix)[0]:
            upload_id, sep, _ = blob.name[len(uploads_prefix) :].partition("/")
            if sep:
                uploads.setdefault(upload_id, []).append(blob)
        table = self.aliases(model_name)
        records = []
        for version, manifest in loaded:
            if manifest is None:
                continue  # deleted between listing and reading
            if isinstance(manifest, RegistryError):
                logger.warning("Skipping model %r version %d: %s", model_name, version, manifest)
                continue
            objects = uploads.get(manifest["upload_id"], [])
            problems = self._metadata_problems(model_name, manifest, objects)
            if problems:
                # One damaged version must not hide the others; get_version/verify report it.
                logger.warning(
                    "Skipping model %r version %d: %s", model_name, version, "; ".join(problems)
                )
                continue
            records.append(self._record(model_name, version, manifest, table))
        return records

    def _complete_manifest(self, model_name: str, version: int) -> dict[str, Any]:
        """The manifest of a complete version; raises if unsealed or its files do not match."""
        validate_version_number(version)
        manifest = self._load_manifest(model_name, version)
        if manifest is None:
            raise self._not_found(model_name, version)
        prefix = self._upload_prefix(model_name, manifest["upload_id"])
        problems = self._metadata_problems(model_name, manifest, self._list(prefix)[0])
        if problems:
            raise ManifestError(
                f"model {model_name!r} version {version} in {self.uri} is sealed but its files "
                f"do not match its manifest: " + "; ".join(problems),
                problems,
            )
        return manifest

    def get_version(self, model_name: str, version: int) -> ModelVersion:
        manifest = self._complete_manifest(model_name, version)
        return self._record(model_name, version, manifest, self.aliases(model_name))

    def get_config(self, model_name: str, version: int) -> str:
        manifest = self._complete_manifest(model_name, version)
        entry = next((e for e in manifest["files"] if e["path"] == CONFIG_FILE), None)
        if entry is None:
            raise ManifestError(f"model {model_name!r} version {version}: no {CONFIG_FILE}")
        prefix = self._upload_prefix(model_name, manifest["upload_id"])
        data = self._bucket.blob(prefix + CONFIG_FILE).download_as_bytes()
        problem = manifest_lib.entry_problem(
            CONFIG_FILE, entry, len(data), hashlib.sha256(data).hexdigest()
        )
        if problem:
            raise ManifestError(f"model {model_name!r} version {version}: {problem}", [problem])
        return data.decode("utf-8")

    def path(self, model_name: str, version: int) -> str:
        return self.get_version(model_name, version).uri + "/" + SAVED_MODEL_DIR

    # ----------------------------------------------------------------------------- aliases
    def _parse_index(self, model_name: str, data: bytes | None) -> dict[str, Any]:
        """The alias index document ({"aliases": {...}, "history": [...]}), checked."""
        name = self._gs(self._key(model_name, INDEX_NAME))
        if data is None:
            return {"aliases": {}, "history": []}
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise RegistryError(f"{name}: unreadable JSON: {e}") from e
        table = doc.get("aliases") if isinstance(doc, dict) else None
        if not isinstance(table, dict) or not isinstance(doc.get("history", []), list):
            raise RegistryError(f"{name}: expected {{'aliases': {{}}, 'history': []}}")
        for alias, version in table.items():
            if isinstance(version, bool) or not isinstance(version, int):
                raise RegistryError(
                    f"{name}: alias {alias!r} maps to {version!r}; expected a version number"
                )
        doc.setdefault("history", [])
        return doc

    def _read_index(self, model_name: str) -> dict[str, Any]:
        data, _ = gcs_io.read_object(self._bucket, self._key(model_name, INDEX_NAME))
        return self._parse_index(model_name, data)

    def aliases(self, model_name: str) -> dict[str, int]:
        return dict(self._read_index(model_name)["aliases"])

    def alias_history(self, model_name: str, alias: str | None = None) -> list[dict[str, Any]]:
        history = self._read_index(model_name)["history"]
        return [e for e in history if alias is None or e.get("alias") == alias]

    def _store_alias_move(self, move: AliasMove) -> int | None:
        def update(data: bytes | None) -> tuple[bytes | None, int | None]:
            doc = self._parse_index(move.model_name, data)
            mine = [e for e in doc["history"] if e.get("id") == move.id]
            if mine:
                # A retried request of ours had in fact been applied before it reported 412.
                return None, mine[0]["from"]
            entry = self._apply_alias_move(doc["aliases"], move)
            doc["history"].append(entry)
            return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), entry["from"]

        return gcs_io.update_object(self._bucket, self._key(move.model_name, INDEX_NAME), update)

    # ----------------------------------------------------------------------------- push
    def push(
        self,
        model_name: str,
        saved_model_dir: str,
        config: str | os.PathLike | Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        validate_model_name(model_name)
        saved_model_dir = os.fspath(saved_model_dir)
        docs = prepare_push(saved_model_dir, config, metrics, lineage)
        sources: list[tuple[str, str | bytes]] = []
        for dirpath, dirnames, filenames in os.walk(saved_model_dir):
            dirnames.sort()
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                rel = os.path.relpath(full, saved_model_dir).replace(os.sep, "/")
                sources.append((f"{SAVED_MODEL_DIR}/{rel}", full))
        sources += [
            (CONFIG_FILE, docs.config),
            ("metrics.json", docs.metrics),
            ("lineage.json", docs.lineage),
        ]
        upload_id = uuid.uuid4().hex
        prefix = self._upload_prefix(model_name, upload_id)
        lease = gcs_io.Lease(
            self._bucket,
            self._key(model_name, UPLOADS, upload_id + LEASE_SUFFIX),
            interval_s=max(self._lease_timeout_s / 4, 1.0),
        )
        lease.acquire()
        sealing = False
        try:
            entries = self._parallel(lambda item: self._upload_one(prefix, *item), sources)
            lease.check()
            sealing = True
            manifest = {
                "format_version": manifest_lib.FORMAT_VERSION,
                "created_at": docs.created_at,
                "files": sorted(entries, key=lambda e: e["path"]),
                "upload_id": upload_id,
                "model_name": model_name,
                "metrics": json.loads(docs.metrics),
                "lineage": json.loads(docs.lineage),
            }
            version = self._seal(model_name, manifest)
        except BaseException:
            self._abandon(model_name, upload_id, sealing)
            raise
        finally:
            lease.release()
        logger.info("Pushed model %r version %d to %s", model_name, version, self.uri)
        return self.get_version(model_name, version)

    def _upload_one(self, prefix: str, rel: str, source: str | bytes) -> dict[str, Any]:
        size, sha256, crc32c = gcs_io.digests(source)
        blob = self._bucket.blob(prefix + rel)
        gcs_io.upload_file(blob, source)
        # The server's crc32c of what it stored must be that of the bytes that were hashed:
        # this catches a source file changed between hashing and uploading.
        if blob.crc32c is not None and blob.crc32c != crc32c:
            raise RegistryError(
                f"{self._gs(blob.name)}: stored crc32c {blob.crc32c} differs from {crc32c} of "
                f"the file that was hashed (changed while being pushed?)"
            )
        return {"path": rel, "size": size, "sha256": sha256, "crc32c": crc32c}

    def _seal(self, model_name: str, manifest: dict[str, Any]) -> int:
        """Claims the next free version number with the manifest itself; returns the number."""
        numbers = self._manifest_blobs(model_name)
        version = max(numbers, default=0) + 1
        for _ in range(_MAX_CLAIMS):
            blob = self._bucket.blob(self._manifest_key(model_name, version))
            blob.metadata = {"upload_id": manifest["upload_id"]}
            data = json.dumps({**manifest, "version": version}, indent=2, sort_keys=True)
            try:
                blob.upload_from_string(
                    data + "\n", content_type="application/json", if_generation_match=0
                )
                return version
            except gexc.PreconditionFailed:
                try:
                    existing = self._load_manifest(model_name, version)
                except RegistryError:
                    existing = None  # a damaged manifest still holds its number
                if existing is not None and existing["upload_id"] == manifest["upload_id"]:
                    return version  # a retried request of ours had already created it
                version += 1  # another push took this number
        raise RegistryError(f"model {model_name!r}: no free version number found")

    def _sealed_upload_ids(self, model_name: str) -> set[str]:
        ids = set()
        for version, blob in self._manifest_blobs(model_name).items():
            upload_id = (blob.metadata or {}).get("upload_id")
            if upload_id is None:
                with contextlib.suppress(RegistryError):
                    upload_id = (self._load_manifest(model_name, version, blob) or {}).get(
                        "upload_id"
                    )
            if upload_id:
                ids.add(upload_id)
        return ids

    def _abandon(self, model_name: str, upload_id: str, sealing: bool) -> None:
        """Best-effort removal of a failed push's files (never of a sealed version's)."""
        try:
            if sealing and upload_id in self._sealed_upload_ids(model_name):
                return  # the seal landed although its request reported an error
            self._delete_objects(self._list(self._upload_prefix(model_name, upload_id))[0])
        except Exception as e:  # noqa: BLE001 - the push's own error matters more; gc() cleans up
            logger.warning("Could not remove the failed upload %s: %s", upload_id, e)

    def _delete_objects(self, blobs: list[Any]) -> None:
        def delete(blob: Any) -> None:
            with contextlib.suppress(gexc.NotFound):
                blob.delete()

        self._parallel(delete, blobs)

    # ----------------------------------------------------------------------------- files
    def verify(self, model_name: str, version: int) -> None:
        validate_version_number(version)
        manifest = self._load_manifest(model_name, version)
        if manifest is None:
            raise self._not_found(model_name, version)
        prefix = self._upload_prefix(model_name, manifest["upload_id"])
        found = {blob.name[len(prefix) :]: blob for blob in self._list(prefix)[0]}

        def check(entry: dict[str, Any]) -> str | None:
            blob = found.get(entry["path"])
            if blob is None:
                return manifest_lib.missing_problem(entry["path"])
            sink = gcs_io.HashingSink()
            try:
                blob.download_to_file(sink)
            except gexc.NotFound:
                return manifest_lib.missing_problem(entry["path"])
            return manifest_lib.entry_problem(entry["path"], entry, sink.size, sink.sha.hexdigest())

        problems = [p for p in self._parallel(check, manifest["files"]) if p]
        listed = {e["path"] for e in manifest["files"]}
        problems += [manifest_lib.unlisted_problem(rel) for rel in sorted(found.keys() - listed)]
        if problems:
            raise ManifestError(
                f"model {model_name!r} version {version} at {self._gs(prefix)} does not match "
                f"its manifest ({len(problems)} problem(s)): " + "; ".join(problems),
                problems,
            )

    def download(self, model_name: str, version: int, destination: str) -> str:
        manifest = self._complete_manifest(model_name, version)
        wanted = SAVED_MODEL_DIR + "/"
        prefix = self._upload_prefix(model_name, manifest["upload_id"]) + wanted
        rels = [e["path"][len(wanted) :] for e in manifest["files"] if e["path"].startswith(wanted)]

        def fill(folder: str) -> None:
            def fetch(rel: str) -> None:
                target = os.path.join(folder, *rel.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                self._bucket.blob(prefix + rel).download_to_filename(target)

            os.makedirs(folder)
            self._parallel(fetch, rels)

        what = f"model {model_name!r} version {version}"
        return manifest_lib.install_checked_copy(destination, manifest, wanted, fill, what)

    # ----------------------------------------------------------------------------- gc
    def gc(self, model_name: str | None = None) -> list[str]:
        if model_name is not None:
            names = [validate_model_name(model_name)]
        else:
            names = []
            for prefix in self._list(self._prefix, delimiter="/")[1]:
                with contextlib.suppress(ValueError):
                    names.append(validate_model_name(prefix[len(self._prefix) :].rstrip("/")))
        removed: list[str] = []
        for name in names:
            removed.extend(self._gc_model(name))
        return removed

    def _lease_is_fresh(self, blob: Any) -> bool:
        age = datetime.datetime.now(datetime.UTC) - blob.updated
        return age.total_seconds() < self._lease_timeout_s

    def _gc_model(self, model_name: str) -> list[str]:
        uploads_prefix = self._key(model_name, UPLOADS) + "/"
        files: dict[str, list[Any]] = {}
        leases: set[str] = set()
        for blob in self._list(uploads_prefix)[0]:
            rest = blob.name[len(uploads_prefix) :]
            upload_id, sep, _ = rest.partition("/")
            if sep:
                files.setdefault(upload_id, []).append(blob)
            elif rest.endswith(LEASE_SUFFIX):
                leases.add(rest[: -len(LEASE_SUFFIX)])
        sealed = self._sealed_upload_ids(model_name)
        removed = []
        for upload_id in sorted(files.keys() | leases):
            lease_name = uploads_prefix + upload_id + LEASE_SUFFIX
            # Read now rather than trusted from the listing, which is not a snapshot.
            lease = self._bucket.get_blob(lease_name)
            if lease is not None and self._lease_is_fresh(lease):
                continue  # a live push owns it
            if lease is not None:
                try:
                    lease.delete(if_generation_match=lease.generation)
                except gexc.PreconditionFailed:
                    continue  # its owner renewed it just now: alive after all
                except gexc.NotFound:
                    pass
                removed.append(self._gs(lease_name))
            if upload_id in sealed or not files.get(upload_id):
                continue
            # The push may have sealed between the listing above and the lease check.
            if upload_id in self._sealed_upload_ids(model_name):
                continue
            self._delete_objects(self._list(uploads_prefix + upload_id + "/")[0])
            removed.append(self._gs(uploads_prefix + upload_id + "/"))
        for version, blob in sorted(self._manifest_blobs(model_name).items()):
            try:
                manifest = self._load_manifest(model_name, version, blob)
            except RegistryError as e:
                logger.warning("%s: %s; left for a human", self._gs(blob.name), e)
                continue
            if manifest is not None and manifest["upload_id"] not in files:
                logger.warning(
                    "Model %r version %d: sealed but its upload %s is gone; left for a human",
                    model_name,
                    version,
                    manifest["upload_id"],
                )
        if removed:
            logger.info("gc removed %d item(s) under %s", len(removed), self._gs(uploads_prefix))
        return removed
