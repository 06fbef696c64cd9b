"""Container image references for clusters: parsing, the pullability check, the push record.

A compiled pipeline names the image every step runs in. A cluster pulls that name from a
registry, so `compile`, `submit` and `schedule` refuse, before any server is contacted, a name
that no cluster could pull. `make image-push IMAGE=REGISTRY/PATH:TAG` pushes the image and
writes a record of its digest (`image_record_path()`); a pipeline compiled for that tag names the
digest instead, so every step of every run gets exactly the pushed bytes.

Standard library only: the Makefile runs `python -m pipelines.image_ref` with whatever Python it
finds, before the project's environment needs to exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import sys
import tempfile
from typing import Any

# The same folder as pipelines.config.PROJECT_ROOT, computed here because importing that module
# pulls in the whole config system (see the module docstring).
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_RECORD_ENV = "VISION_PIPELINES_IMAGE_RECORD"
RECORD_KEYS = ("reference", "digest", "pinned", "code_version", "pushed_at")

VALID_EXAMPLES = (
    "us-docker.pkg.dev/PROJECT/REPO/vision-pipelines:0.1.0 or "
    "ghcr.io/ORG/vision-pipelines@sha256:<digest>"
)
PUSH_HINT = "make image-push IMAGE=REGISTRY/PATH:TAG"

# The Docker / OCI distribution reference grammar, piece by piece:
#   reference  := name [":" tag] ["@" digest]
#   name       := [host [":" port] "/"] path-component ("/" path-component)*
# A host is DNS labels joined by dots (letters of either case) or a bracketed IPv6 address;
# path components are lowercase alphanumerics joined by '.', '_', '__' or runs of '-'.
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
# ASCII: a Unicode letter is no tag character.
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# Registries refuse longer repository names (host included).
MAX_NAME_LENGTH = 255


class ImageReferenceError(ValueError):
    """An image reference that is malformed or that a cluster could not pull."""


@dataclasses.dataclass(frozen=True)
class ImageReference:
    """A parsed image reference.

    Attributes:
      registry: the registry host (with port), or None when the name has none (Docker Hub).
      repository: the path inside the registry, e.g. 'org/vision-pipelines'.
      tag: e.g. '0.1.0', or None.
      digest: 'sha256:<64 hex>', or None.
    """

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository with its registry host: what a tag or digest is appended to."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def pinned(self, digest: str) -> str:
        """This repository at `digest` (the tag dropped: the digest alone decides the bytes)."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def _is_registry_host(component: str) -> bool:
    # Docker's own rule: 'library/python' is a Docker Hub path, 'gcr.io/p' and 'host:5000/p'
    # start with a host.
    return "." in component or ":" in component or component == "localhost"


def parse_image_reference(ref: str) -> ImageReference:
    """Splits `ref` into registry host, repository path, tag and digest.

    Raises:
      ImageReferenceError: `ref` does not follow the reference grammar; the message says which
        part is wrong.
    """
    if not isinstance(ref, str) or not ref:
        raise ImageReferenceError("empty image reference")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise ImageReferenceError("white space in the image reference")
    rest, at, digest = ref.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        raise ImageReferenceError(
            f"digest {digest!r}: expected sha256: followed by 64 lowercase hex digits"
        )
    # A ':' after the last '/' starts the tag; one before it belongs to a host's port.
    tag = None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise ImageReferenceError(
                f"tag {tag!r}: expected letters, digits, '_', '.' and '-' (at most 128, not "
                "starting with '.' or '-')"
            )
    if len(rest) > MAX_NAME_LENGTH:
        raise ImageReferenceError(f"the name is longer than {MAX_NAME_LENGTH} characters")
    first, slash, path = rest.partition("/")
    registry = None
    if slash and _is_registry_host(first):
        if not _HOST_RE.fullmatch(first):
            raise ImageReferenceError(f"registry host {first!r} is not a host name[:port]")
        registry = first
    else:
        path = rest
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise ImageReferenceError(
                f"repository path component {component!r}: expected lowercase letters and "
                "digits, joined by '.', '_', '__' or '-'"
            )
    return ImageReference(registry, path, tag, digest or None)


def check_cluster_image(ref: str, field: str) -> ImageReference:
    """Parses `ref` and refuses it if a cluster could not pull it.

    Args:
      ref: the image reference.
      field: where it came from, named in errors (e.g. '--image', 'pipeline.yaml: image').

    Raises:
      ImageReferenceError: malformed, no registry host, podman's `localhost/` prefix, or
        neither tag nor digest.
    """
    try:
        parsed = parse_image_reference(ref)
    except ImageReferenceError as err:
        raise ImageReferenceError(
            f"{field}: {ref!r} is not a valid image reference ({err}); "
            f"expected e.g. {VALID_EXAMPLES}"
        ) from None
    push = (
        f"push it to a registry the cluster reads ({PUSH_HINT}) and name it there, "
        f"e.g. {VALID_EXAMPLES}"
    )
    problem = None
    if parsed.registry == "localhost":
        problem = (
            "'localhost/' is podman's prefix for an image that exists only on this machine; "
            f"no cluster can pull it; {push}"
        )
    elif parsed.registry is None:
        problem = (
            "it names no registry host, so a cluster would look for it on Docker Hub, where "
            f"this project's image is not; {push}"
        )
    elif not parsed.tag and not parsed.digest:
        problem = (
            "it has neither a tag nor a digest, so a cluster would pull ':latest', which "
            f"changes under it; add one, e.g. {VALID_EXAMPLES}"
        )
    if problem:
        raise ImageReferenceError(
            f"{field}: image {ref!r} cannot be pulled by a cluster: {problem}"
        )
    return parsed


def image_code_version(ref: str) -> str | None:
    """The code version a pipeline compiled for `ref` runs: 'image:<digest>', or None when the
    reference has no digest (a tag can be moved, so it identifies no code)."""
    digest = parse_image_reference(ref).digest
    return f"image:{digest}" if digest else None


# --- the push record ---------------------------------------------------------------------


def image_record_path() -> str:
    """Where `make image-push` records the pushed image: `$VISION_PIPELINES_IMAGE_RECORD`, else
    artifacts/image-push.json in the project."""
    return os.environ.get(IMAGE_RECORD_ENV) or os.path.join(
        PROJECT_ROOT, "artifacts", "image-push.json"
    )


def make_image_record(
    reference: str, digest: str, code_version: str = "", pushed_at: str | None = None
) -> dict[str, str]:
    """The record of `reference` (REGISTRY/PATH:TAG) pushed with `digest`.

    Raises:
      ImageReferenceError: the reference is not pullable or has a digest already, or the
        digest is malformed.
    """
    parsed = check_cluster_image(reference, "IMAGE")
    if parsed.digest:
        raise ImageReferenceError(
            f"IMAGE: {reference!r} already has a digest; push by tag (REGISTRY/PATH:TAG)"
        )
    if not _DIGEST_RE.fullmatch(digest):
        raise ImageReferenceError(
            f"digest {digest!r}: expected sha256: followed by 64 lowercase hex digits"
        )
    when = pushed_at or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "reference": reference,
        "digest": digest,
        "pinned": parsed.pinned(digest),
        "code_version": code_version,
        "pushed_at": when,
    }


def _check_record(record: Any) -> str | None:
    """What is wrong with a loaded record, or None."""
    if not isinstance(record, dict):
        return "expected a JSON object"
    missing = [k for k in ("reference", "digest", "pinned") if not isinstance(record.get(k), str)]
    if missing:
        return f"missing or not text: {', '.join(missing)}"
    try:
        pinned = parse_image_reference(record["pinned"])
    except ImageReferenceError as err:
        return f"pinned: {err}"
    if pinned.digest != record["digest"]:
        return f"pinned {record['pinned']!r} does not end in the digest {record['digest']!r}"
    return None


def read_image_record() -> dict[str, Any] | None:
    """The last `make image-push` record, or None when there is none.

    Raises:
      ImageReferenceError: the file exists but cannot be read as a record (named in the message).
    """
    path = image_record_path()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ImageReferenceError(f"{path}: cannot read the image push record ({err})") from None
    try:
        record = json.loads(text)
    except ValueError as err:
        problem: str | None = f"not JSON: {err}"
    else:
        problem = _check_record(record)
    if problem:
        raise ImageReferenceError(
            f"{path}: not a valid image push record ({problem}); push again with {PUSH_HINT} "
            "or delete the file"
        )
    return record


def write_image_record(record: dict[str, Any]) -> str:
    """Writes `record` to `image_record_path()` atomically (a reader never sees half a file).

    Returns:
      The path written.

    Raises:
      ImageReferenceError: the record is not valid (see `make_image_record`).
    """
    problem = _check_record(record)
    if problem:
        raise ImageReferenceError(f"image push record: {problem}")
    path = image_record_path()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".image-push-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")
        # mkstemp makes the file private; the record holds nothing secret.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def resolve_cluster_image(
    cli_image: str | None, config_image: str | None, config_path: str | None
) -> str:
    """The image reference a pipeline compiled for a cluster names.

    `--image` first, then the config's `image`, then the pushed image's pinned reference from
    the record. A tag equal to the record's `reference` becomes the record's pinned digest
    reference, so the compiled pipeline runs exactly the pushed image.

    Raises:
      ImageReferenceError: the chosen reference (named by its field) cannot be pulled, the
        record is corrupt, or no image is given anywhere.
    """
    if cli_image:
        chosen, field = cli_image, "--image"
    elif config_image:
        chosen, field = config_image, f"{config_path or 'the pipeline config'}: image"
    else:
        chosen, field = None, ""
    if chosen is not None:
        if check_cluster_image(chosen, field).digest:
            return chosen
        record = read_image_record()
        if record is None or record["reference"] != chosen:
            return chosen
    else:
        record = read_image_record()
        if record is None:
            where = f" ({config_path})" if config_path else ""
            raise ImageReferenceError(
                "no container image for the cluster: pass --image REGISTRY/PATH:TAG, set "
                f"image: in the pipeline config{where}, or push one with {PUSH_HINT} (its "
                f"record, {image_record_path()}, is then used); e.g. {VALID_EXAMPLES}"
            )
    check_cluster_image(record["pinned"], f"{image_record_path()}: pinned")
    return record["pinned"]


# --- python -m pipelines.image_ref ---------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`check REF` validates a reference for clusters; `record REF DIGEST` writes the push
    record (what `make image-push` runs after pushing)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.image_ref", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="exit 2 unless a cluster could pull REF")
    check.add_argument("reference")
    rec = sub.add_parser("record", help="record REF as pushed with DIGEST")
    rec.add_argument("reference", help="REGISTRY/PATH:TAG")
    rec.add_argument("digest", help="sha256:<hex>, as the registry reported it")
    rec.add_argument("--code-version", default="", help="the code version baked into the image")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            parsed = check_cluster_image(args.reference, "image")
            print(json.dumps(dataclasses.asdict(parsed)))
        else:
            record = make_image_record(args.reference, args.digest, args.code_version)
            path = write_image_record(record)
            print(f"{record['pinned']} recorded in {path}")
    except ImageReferenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
