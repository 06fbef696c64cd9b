"""Builds and pushes the project image with whichever container engine the machine has.

    python3 -m pipelines.image build [--image TAG] [--base IMAGE] [--gpu] [--extras vertex]
    python3 -m pipelines.image push --image REGISTRY/PATH:TAG [--source LOCAL_TAG]
    python3 -m pipelines.image engine        (which engine, and the Docker API socket it serves)

`make image`, `make image-push` and `make test-image` call it. Standard library only, so an image
can be built on a machine without the project's virtualenv.

Engines, in order: docker (only when `docker info` answers: a docker client without a daemon does
not count), podman, buildah. The base image is `--base`, else python:3.11-slim; where no
registry can provide that (as on machines without Docker Hub), the base made from Debian packages
by containers/base-image.sh, made on the spot if it is missing. An image whose labels show it was
built from the same sources, base and build arguments is reused without a build.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BASE = "docker.io/library/python:3.11-slim"
DEBIAN_BASE = "localhost/vision-pipelines-base:bookworm"
GPU_TENSORFLOW = "tensorflow[and-cuda]==2.21.*"
CPU_TENSORFLOW = "tensorflow==2.21.*"
# What the image is built from (.dockerignore lets exactly these into the build context).
SOURCES = (
    "Dockerfile",
    "pyproject.toml",
    "README.md",
    "vision_core",
    "components",
    "pipelines",
    "configs",
)
LABEL = "org.vision-pipelines"
CA_CANDIDATES = ("VISION_PIPELINES_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


class ImageError(RuntimeError):
    """A build or push that cannot go ahead: printed as `image: ...`, exit code 2."""


@dataclasses.dataclass
class Engine:
    name: str  # docker | podman | buildah

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        conf = os.path.join(ROOT, "containers", "containers.conf")
        if self.name != "docker" and os.path.exists(conf):
            env.setdefault("CONTAINERS_CONF", conf)
        if self.name == "docker":
            env["DOCKER_BUILDKIT"] = "1"  # RUN --mount needs BuildKit
        return env

    def run(self, *args: str, check: bool = True, capture: bool = True, timeout=None):
        argv = [self.name, *args]
        result = subprocess.run(
            argv, env=self.env(), text=True, capture_output=capture, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout or "").strip().splitlines()[-5:]
            raise ImageError(f"`{' '.join(argv[:3])} ...` failed: " + " | ".join(detail))
        return result

    def inspect(self, image: str) -> dict | None:
        result = self.run("image", "inspect", image, check=False)
        if self.name == "buildah":
            result = self.run("inspect", "--type", "image", image, check=False)
        if result.returncode != 0:
            return None
        data = json.loads(result.stdout)
        return data[0] if isinstance(data, list) else data

    def labels(self, image: str) -> dict[str, str]:
        data = self.inspect(image) or {}
        if self.name == "buildah":
            return (data.get("OCIv1", {}).get("config", {}) or {}).get("Labels") or {}
        return (data.get("Config") or {}).get("Labels") or data.get("Labels") or {}


def find_engine(prefer: str | None = None) -> Engine:
    """The first engine that works here; the error names each one looked for and why not."""
    tried = []
    for name in [prefer] if prefer else ["docker", "podman", "buildah"]:
        path = shutil.which(name)
        if path is None:
            tried.append(f"{name} (not on PATH)")
            continue
        if name == "docker":
            probe = subprocess.run(
                ["docker", "info"], capture_output=True, text=True, timeout=20, check=False
            )
            if probe.returncode != 0:
                tried.append(
                    "docker (the client is installed but no daemon answered `docker info`)"
                )
                continue
        return Engine(name)
    raise ImageError(
        "no container engine found; looked for "
        + ", ".join(tried)
        + ". Install one: Docker (https://docs.docker.com/engine/install/) or, on Debian/Ubuntu, "
        "`apt-get install podman buildah runc`."
    )


def source_digest(root: str = ROOT) -> str:
    """sha256 over the build context's files (paths and contents), independent of mtimes."""
    digest = hashlib.sha256()
    for top in SOURCES:
        path = os.path.join(root, top)
        files = [path] if os.path.isfile(path) else []
        for folder, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            files += [os.path.join(folder, n) for n in sorted(names) if not n.endswith(".pyc")]
        for file in files:
            digest.update(os.path.relpath(file, root).encode() + b"\0")
            with open(file, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def package_version(root: str = ROOT) -> str:
    with open(os.path.join(root, "pyproject.toml")) as f:
        for line in f:
            if line.startswith("version = "):
                return line.split('"')[1]
    raise ImageError(f"{root}/pyproject.toml has no version line")


def git_code_version(root: str, version: str) -> str:
    """`version+g<commit>`, plus `.dirty<digest of the diff>` for a changed working tree; the
    version alone outside a git checkout. The step cache keys on it (pipelines/training.py)."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], capture_output=True, check=True, cwd=root).stdout

    try:
        sha = git("rev-parse", "--short", "HEAD").decode().strip()
        diff = git("diff", "HEAD", "--binary")
    except (OSError, subprocess.CalledProcessError):
        return version
    version += f"+g{sha}"
    if diff.strip():
        version += ".dirty" + hashlib.sha256(diff).hexdigest()[:10]
    return version


def ca_bundle() -> str | None:
    """The machine's CA bundle, mounted into the build as a secret (proxies with their own CA)."""
    for var in CA_CANDIDATES:
        if os.environ.get(var) and os.path.isfile(os.environ[var]):
            return os.environ[var]
    default = "/etc/ssl/certs/ca-certificates.crt"
    return default if os.path.isfile(default) else None


def resolve_base(engine: Engine, base: str | None) -> str:
    if base:
        return base
    if engine.inspect(DEFAULT_BASE) is not None:
        return DEFAULT_BASE
    if engine.inspect(DEBIAN_BASE) is not None:
        print(f"image: using {DEBIAN_BASE} (made from Debian packages; {DEFAULT_BASE} is not here)")
        return DEBIAN_BASE
    pull = engine.run("pull", DEFAULT_BASE, check=False, timeout=300)
    if pull.returncode == 0:
        return DEFAULT_BASE
    reason = (pull.stderr or "").strip().splitlines()[-1:] or ["no reason given"]
    script = os.path.join(ROOT, "containers", "base-image.sh")
    if engine.name == "docker" or not shutil.which("debootstrap") or os.geteuid() != 0:
        raise ImageError(
            f"cannot pull {DEFAULT_BASE} ({reason[0]}). Pass a reachable Python 3.11 base with "
            f"BASE_IMAGE=..., or, as root with podman and debootstrap, run {script}"
        )
    print(f"image: cannot pull {DEFAULT_BASE} ({reason[0]}); making {DEBIAN_BASE} from Debian")
    subprocess.run([script, DEBIAN_BASE], env=engine.env(), check=True)
    return DEBIAN_BASE


def layer_table(engine: Engine, image: str) -> list[dict]:
    if engine.name == "buildah":
        return []
    fmt = "{{.Size}}\t{{.CreatedBy}}"
    out = engine.run("history", "--human=false", "--no-trunc", "--format", fmt, image).stdout
    layers = []
    for line in out.splitlines():
        size, _, created_by = line.partition("\t")
        size_bytes = _bytes(size)
        if size_bytes > 0:
            layers.append({"bytes": size_bytes, "created_by": " ".join(created_by.split())[:120]})
    return layers[::-1]


_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}


def _bytes(text: str) -> int:
    """'12345' (docker --human=false) or '3.78 MB' / '15.9 kB' (podman 4 prints these anyway)."""
    text = text.strip().lower().replace(" ", "")
    if text.isdigit():
        return int(text)
    number = text.rstrip("kmgtb")
    unit = text[len(number) :]
    try:
        return int(float(number) * _UNITS[unit])
    except (KeyError, ValueError):
        return 0


def build(
    image: str,
    *,
    base: str | None = None,
    gpu: bool = False,
    extras: str = "vertex",
    engine: Engine | None = None,
    force: bool = False,
    extra_tags: tuple[str, ...] = (),
) -> dict:
    """Builds (or reuses) the image; returns what artifacts/image-build.json records."""
    engine = engine or find_engine()
    base = resolve_base(engine, base)
    tensorflow = GPU_TENSORFLOW if gpu else CPU_TENSORFLOW
    code_version = git_code_version(ROOT, package_version())
    wanted = {
        f"{LABEL}.source-digest": source_digest(),
        f"{LABEL}.base": base,
        f"{LABEL}.tensorflow": tensorflow,
        f"{LABEL}.extras": extras,
        # The baked-in code version names a commit: a new commit builds again (only the small
        # project layer and the labels change; the dependency layers come from the cache).
        "org.opencontainers.image.version": code_version,
    }
    have = engine.labels(image)
    previous = (engine.inspect(image) or {}).get("Id")
    start = time.monotonic()
    if not force and all(have.get(k) == v for k, v in wanted.items()):
        print(f"image: {image} is up to date (same sources, base and build arguments)")
        seconds = None
    else:
        args = ["build", "--network", "host", "-f", os.path.join(ROOT, "Dockerfile"), "-t", image]
        if engine.name == "buildah":
            args = ["bud", "--layers", *args[1:]]
        for tag in extra_tags:
            args += ["-t", tag]
        build_args = {
            "BASE_IMAGE": base,
            "TENSORFLOW": tensorflow,
            "EXTRAS": extras,
            "CODE_VERSION": code_version,
        }
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        for key, value in wanted.items():
            args += ["--label", f"{key}={value}"]
        bundle = ca_bundle()
        if bundle:
            args += ["--secret", f"id=ca,src={bundle}"]
        print(f"image: building {image} with {engine.name} on {base}", flush=True)
        result = subprocess.run([engine.name, *args, ROOT], env=engine.env(), check=False)
        if result.returncode != 0:
            raise ImageError(f"{engine.name} build failed (exit {result.returncode}), see above")
        seconds = round(time.monotonic() - start, 1)
        _drop_replaced(engine, previous, image)
    info = engine.inspect(image) or {}
    layers = layer_table(engine, image)
    record = {
        "image": image,
        "id": info.get("Id") or info.get("FromImageID"),
        "engine": engine.name,
        "base": base,
        "tensorflow": tensorflow,
        "code_version": code_version,
        "size_bytes": info.get("Size") or sum(layer["bytes"] for layer in layers),
        "build_seconds": seconds,
        "layers": layers,
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if seconds is not None or not os.path.exists(_build_record_path()):
        _write_json(_build_record_path(), record)
    _print_layers(record)
    return record


def _drop_replaced(engine: Engine, previous: str | None, image: str) -> None:
    """Removes the image the tag pointed to before this build, now untagged, so rebuilds do not
    pile up 3 GB images (their shared layers stay; the build cache is not touched)."""
    current = (engine.inspect(image) or {}).get("Id")
    if previous and current and previous != current and engine.name != "buildah":
        engine.run("rmi", previous, check=False)  # still in use (a container): kept


def _print_layers(record: dict) -> None:
    total = record["size_bytes"] or 0
    print(f"image: {record['image']}  {total / 1e9:.2f} GB", end="")
    print(f" (built in {record['build_seconds']} s)" if record["build_seconds"] else "")
    for layer in record["layers"]:
        print(f"  {layer['bytes'] / 1e6:10.1f} MB  {layer['created_by']}")


def push(reference: str, source: str, *, tls_verify: bool = True, engine=None) -> dict:
    """Pushes `source` as `reference`, records its digest for `compile`/`submit` to pin."""
    from pipelines.image_ref import check_cluster_image, parse_image_reference, write_image_record

    check_cluster_image(reference, "IMAGE")
    engine = engine or find_engine()
    if engine.inspect(source) is None:
        raise ImageError(f"no local image {source!r} to push; build it first with `make image`")
    engine.run("tag", source, reference)
    args = ["push"]
    if not tls_verify:
        if engine.name == "docker":
            # Docker has no per-push switch: plain-HTTP registries are daemon settings.
            raise ImageError(
                "--tls-verify false: Docker takes plain-HTTP registries only from its daemon's "
                '"insecure-registries" setting (daemon.json); add the registry there instead'
            )
        args.append("--tls-verify=false")
    with tempfile.TemporaryDirectory() as tmp:
        digest_file = os.path.join(tmp, "digest")
        if engine.name != "docker":
            args += ["--digestfile", digest_file]
        print(f"image: pushing {reference}", flush=True)
        engine.run(*args, reference, capture=False)
        if engine.name != "docker":
            with open(digest_file) as f:
                digest = f.read().strip()
        else:
            digests = (engine.inspect(reference) or {}).get("RepoDigests") or []
            repo = reference.rsplit(":", 1)[0]
            digest = next((d.split("@", 1)[1] for d in digests if d.startswith(repo + "@")), "")
    if not digest.startswith("sha256:"):
        raise ImageError(f"the push of {reference} reported no digest")
    ref = parse_image_reference(reference)
    labels = engine.labels(source)
    record = {
        "reference": reference,
        "digest": digest,
        "pinned": f"{ref.name}@{digest}",
        "code_version": labels.get("org.opencontainers.image.version", ""),
        "pushed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_image_record(record)
    print(f"image: pushed {record['pinned']}")
    return record


def _build_record_path() -> str:
    return os.path.join(ROOT, "artifacts", "image-build.json")


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m pipelines.image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine", choices=["docker", "podman", "buildah"], default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the image (or reuse an up-to-date one)")
    b.add_argument("--image", default=f"vision-pipelines:{package_version()}")
    b.add_argument("--tag", action="append", default=[], help="another tag for the same image")
    b.add_argument("--base", default=os.environ.get("BASE_IMAGE") or None)
    b.add_argument("--gpu", action="store_true", help=f"TensorFlow with CUDA ({GPU_TENSORFLOW})")
    b.add_argument("--extras", default="vertex")
    b.add_argument("--force", action="store_true", help="build even when up to date")
    p = sub.add_parser("push", help="push the image and record its digest")
    p.add_argument("--image", required=True, help="REGISTRY/PATH:TAG")
    p.add_argument("--source", default=f"vision-pipelines:{package_version()}")
    p.add_argument("--tls-verify", choices=["true", "false"], default="true")
    sub.add_parser("engine", help="print the engine that would be used")
    args = parser.parse_args(argv)
    try:
        if args.command == "engine":
            print(find_engine(args.engine).name)
        elif args.command == "build":
            engine = find_engine(args.engine)
            build(
                args.image,
                base=args.base,
                gpu=args.gpu,
                extras=args.extras,
                engine=engine,
                force=args.force,
                extra_tags=tuple(args.tag),
            )
        else:
            push(
                args.image,
                args.source,
                tls_verify=args.tls_verify == "true",
                engine=find_engine(args.engine),
            )
    except (ImageError, ValueError, subprocess.CalledProcessError) as err:
        print(f"image: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
