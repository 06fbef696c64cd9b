"""Runs gcp-storage-emulator in memory, with the GCS JSON API preconditions enforced.

The emulator package ignores `ifGenerationMatch` and friends (an upload with
`ifGenerationMatch=0` over an existing object succeeds), but code that relies on
create-only writes needs the 412 a real bucket returns. This launcher wraps the package's
route handlers with a precondition check before serving. The server is single-threaded
(`http.server.HTTPServer`), so the check and the write it guards cannot interleave with
another request: a check-then-write here is as atomic as GCS's own.

Enforced (query parameters of the JSON API; `x-goog-if-generation-match` /
`x-goog-if-metageneration-match` headers for XML uploads):
  * uploads (media, multipart, XML, and resumable both at initiation and at the final
    chunk), copy / rewrite / compose targets: `ifGenerationMatch`,
    `ifGenerationNotMatch`, `ifMetagenerationMatch`, `ifMetagenerationNotMatch` against the
    object currently at the destination (a missing object has generation 0);
  * copy / rewrite sources: `ifSourceGenerationMatch`, `ifSourceGenerationNotMatch`,
    `ifSourceMetagenerationMatch`, `ifSourceMetagenerationNotMatch`;
  * object metadata GET, media download, PATCH and DELETE: the four conditions against the
    existing object (a missing object stays a 404, as on GCS).
Not enforced: requests inside batch calls (the package drops their query strings).

Usage: python gcs_emulator_server.py --host 127.0.0.1 --port 0 --bucket NAME [--bucket ...]
Prints `READY <port>` on stdout once it listens (port 0 picks a free port).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import logging
import sys
from http import HTTPStatus
from urllib.parse import parse_qs, urlparse

from gcp_storage_emulator import server as emu_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import buckets as emu_buckets
from gcp_storage_emulator.handlers import objects as emu_objects
from gcp_storage_emulator.storage import Storage

# The message and reason GCS sends with a 412.
_PRECONDITION_MESSAGE = "At least one of the pre-conditions you specified did not hold."

# JSON API query parameter -> (which object property, whether it must match).
_TARGET_CONDITIONS = {
    "ifGenerationMatch": ("generation", True),
    "ifGenerationNotMatch": ("generation", False),
    "ifMetagenerationMatch": ("metageneration", True),
    "ifMetagenerationNotMatch": ("metageneration", False),
}
_SOURCE_CONDITIONS = {
    "ifSourceGenerationMatch": ("generation", True),
    "ifSourceGenerationNotMatch": ("generation", False),
    "ifSourceMetagenerationMatch": ("metageneration", True),
    "ifSourceMetagenerationNotMatch": ("metageneration", False),
}
# XML API headers (lower case: http.server's header lookup is case-insensitive).
_XML_HEADER_CONDITIONS = {
    "x-goog-if-generation-match": "ifGenerationMatch",
    "x-goog-if-metageneration-match": "ifMetagenerationMatch",
}

# Preconditions of resumable uploads, keyed by upload id: they arrive on the initiating
# request but must hold when the last chunk turns the upload into an object.
_RESUMABLE_CONDITIONS: dict[str, dict[str, str]] = {}


def _conditions(query: dict, names) -> dict[str, str]:
    return {name: query[name][0] for name in names if query.get(name)}


def _holds(storage, bucket: str, name: str, conditions: dict, table: dict) -> bool:
    """Whether every condition holds for the object `bucket/name` (missing: generation 0)."""
    try:
        obj = storage.get_file_obj(bucket, name)
    except NotFound:
        obj = None
    for param, value in conditions.items():
        prop, must_match = table[param]
        if obj is None:
            # A missing object has generation 0 and no metageneration: a metageneration
            # match can never hold, a mismatch always does.
            current = 0 if prop == "generation" else None
        else:
            current = int(obj[prop])
        equal = current is not None and current == int(value)
        if equal != must_match:
            return False
    return True


def _fail(response) -> None:
    response.status = HTTPStatus.PRECONDITION_FAILED
    response.json(
        {
            "error": {
                "code": 412,
                "message": _PRECONDITION_MESSAGE,
                "errors": [
                    {
                        "message": _PRECONDITION_MESSAGE,
                        "domain": "global",
                        "reason": "conditionNotMet",
                        "locationType": "header",
                        "location": "If-Match",
                    }
                ],
            }
        }
    )


def _exists(storage, bucket: str, name: str) -> bool:
    try:
        storage.get_file_obj(bucket, name)
    except NotFound:
        return False
    return True


def _upload_name(request) -> str | None:
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    if isinstance(data, dict):
        meta = data.get("meta", data) if "content" in data else data
        if isinstance(meta, dict):
            return meta.get("name")
    return None


def _wrap_insert(original):
    @functools.wraps(original)
    def insert(request, response, storage, *args, **kwargs):
        upload_type = (request.query.get("uploadType") or [""])[0]
        if "upload_id" in request.query:
            # A chunk POSTed to the session URL: checked when it finalises.
            return original(request, response, storage, *args, **kwargs)
        conditions = _conditions(request.query, _TARGET_CONDITIONS)
        bucket = request.params["bucket_name"]
        name = _upload_name(request)
        if (
            conditions
            and name
            and not _holds(storage, bucket, name, conditions, _TARGET_CONDITIONS)
        ):
            return _fail(response)
        result = original(request, response, storage, *args, **kwargs)
        if upload_type == "resumable" and conditions:
            try:
                location = response["Location"]
            except KeyError:
                return result
            upload_id = parse_qs(urlparse(location).query).get("upload_id", [None])[0]
            if upload_id:
                _RESUMABLE_CONDITIONS[upload_id] = conditions
        return result

    return insert


def _wrap_finalize(original):
    @functools.wraps(original)
    def finalize(response, storage, obj, data, upload_id):
        conditions = _RESUMABLE_CONDITIONS.pop(upload_id, None)
        if conditions and not _holds(
            storage, obj["bucket"], obj["name"], conditions, _TARGET_CONDITIONS
        ):
            # The session is over either way, as on GCS.
            with contextlib.suppress(NotFound):
                storage.delete_resumable_file_obj(upload_id)
            return _fail(response)
        return original(response, storage, obj, data, upload_id)

    return finalize


def _wrap_existing(original):
    """For requests on an existing object (GET, download, PATCH, DELETE)."""

    @functools.wraps(original)
    def handler(request, response, storage, *args, **kwargs):
        conditions = _conditions(request.query, _TARGET_CONDITIONS)
        bucket, name = request.params["bucket_name"], request.params["object_id"]
        if (
            conditions
            and _exists(storage, bucket, name)
            and not _holds(storage, bucket, name, conditions, _TARGET_CONDITIONS)
        ):
            return _fail(response)
        return original(request, response, storage, *args, **kwargs)

    return handler


def _wrap_xml_upload(original):
    @functools.wraps(original)
    def handler(request, response, storage, *args, **kwargs):
        conditions = {}
        for header, param in _XML_HEADER_CONDITIONS.items():
            value = request.get_header(header)
            if value is not None:
                conditions[param] = value
        bucket, name = request.params["bucket_name"], request.params["object_id"]
        if conditions and not _holds(storage, bucket, name, conditions, _TARGET_CONDITIONS):
            return _fail(response)
        return original(request, response, storage, *args, **kwargs)

    return handler


def _wrap_transfer(original, dest_keys: tuple[str, str]):
    """For copy / rewrite / compose: target conditions on the destination, source ones too."""

    @functools.wraps(original)
    def handler(request, response, storage, *args, **kwargs):
        params = request.params
        target = _conditions(request.query, _TARGET_CONDITIONS)
        dest_bucket, dest_name = params[dest_keys[0]], params[dest_keys[1]]
        if target and not _holds(storage, dest_bucket, dest_name, target, _TARGET_CONDITIONS):
            return _fail(response)
        source = _conditions(request.query, _SOURCE_CONDITIONS)
        if source and "dest_object_id" in params:
            bucket, name = params["bucket_name"], params["object_id"]
            if _exists(storage, bucket, name) and not _holds(
                storage, bucket, name, source, _SOURCE_CONDITIONS
            ):
                return _fail(response)
        return original(request, response, storage, *args, **kwargs)

    return handler


def install_preconditions() -> None:
    """Replaces the emulator's object handlers with precondition-checking wrappers."""
    wrapped = {
        emu_objects.insert: _wrap_insert(emu_objects.insert),
        emu_objects.get: _wrap_existing(emu_objects.get),
        emu_objects.download: _wrap_existing(emu_objects.download),
        emu_objects.patch: _wrap_existing(emu_objects.patch),
        emu_objects.delete: _wrap_existing(emu_objects.delete),
        emu_objects.xml_upload: _wrap_xml_upload(emu_objects.xml_upload),
        emu_objects.copy: _wrap_transfer(emu_objects.copy, ("dest_bucket_name", "dest_object_id")),
        emu_objects.rewrite: _wrap_transfer(
            emu_objects.rewrite, ("dest_bucket_name", "dest_object_id")
        ),
        emu_objects.compose: _wrap_transfer(emu_objects.compose, ("bucket_name", "object_id")),
    }
    # The route table maps methods to these functions; swap them in place.
    for _, methods in emu_server.HANDLERS:
        for method, func in list(methods.items()):
            if func in wrapped:
                methods[method] = wrapped[func]
    # The router falls back to `objects.insert` for uploads POSTed without /upload.
    emu_objects.insert = wrapped[emu_objects.insert]
    # Resumable uploads become objects here, called by name from the package's module.
    emu_objects._finalize_resumable_object = _wrap_finalize(emu_objects._finalize_resumable_object)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bucket", action="append", default=[])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    install_preconditions()
    storage = Storage(use_memory_fs=True)
    for bucket in args.bucket:
        emu_buckets.create_bucket(bucket, storage)
    # The default listen backlog (5) drops bursts of connections from parallel transfers
    # (the registry uses 8 threads), which clients then retry after a 1 s stall.
    http.server.HTTPServer.request_queue_size = 128
    httpd = http.server.HTTPServer(
        (args.host, args.port), functools.partial(emu_server.RequestHandler, storage)
    )
    print(f"READY {httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
