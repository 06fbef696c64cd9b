"""`vision-pipelines registry ...`: inspect a model registry, move its aliases, compare versions.

vision-pipelines registry list     URI MODEL
vision-pipelines registry show     URI MODEL VERSION
vision-pipelines registry promote  URI MODEL VERSION [--alias champion] [--expect V|none]
vision-pipelines registry rollback URI MODEL [--alias champion] [--to VERSION]
vision-pipelines registry diff     URI MODEL A B

VERSION, A and B accept a number (3 or v3), `latest`, or an alias. URI is a folder,
file:///path, gs://bucket/prefix or vertex://PROJECT/REGION/PREFIX?staging=gs://bucket/prefix.
Registry errors (unknown model, version or alias; an alias moved by someone else meanwhile)
print `error: ...` and exit with code 1.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from collections.abc import Mapping
from typing import Any

_EPILOG = __doc__.split("\n\n", 1)[1]


def add_registry_parser(sub: argparse._SubParsersAction) -> None:
    """Adds `registry` and its actions to the top-level subcommands."""
    reg = sub.add_parser(
        "registry",
        help="inspect a model registry, promote / roll back aliases, diff versions",
        description=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = reg.add_subparsers(dest="action", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument(
            "uri",
            help="the registry: a folder, file:///path, gs://bucket/path or "
            "vertex://PROJECT/REGION/PREFIX?staging=gs://bucket/path",
        )
        parser.add_argument("model", help="the model name")
        return parser

    action("list", "list the model's versions with their main metric and aliases")
    show = action("show", "print one version's record as JSON")
    show.add_argument("version", help="number, v3, latest or an alias")

    promote = action("promote", "point an alias (default: champion) at a version")
    promote.add_argument("version", help="number, v3, latest or another alias")
    promote.add_argument("--alias", default="champion")
    promote.add_argument(
        "--expect",
        default=None,
        metavar="V|none",
        help="the version the alias must point at now ('none': must not exist); default: "
        "whatever it points at when the command reads it, so a concurrent move is reported",
    )

    rollback = action("rollback", "move an alias back to the version it pointed at before")
    rollback.add_argument("--alias", default="champion")
    rollback.add_argument("--to", default=None, help="roll back to this version instead")

    diff = action("diff", "compare two versions: metrics table and config diff")
    diff.add_argument("a", help="the base version")
    diff.add_argument("b", help="the version compared with it")


def run_registry(args: argparse.Namespace) -> int:
    """Runs a parsed `registry` command; registry errors print a message and return 1."""
    from components.registry import RegistryError, open_registry

    try:
        registry = open_registry(args.uri)
        return _ACTIONS[args.action](registry, args)
    except RegistryError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


def _list(registry, args: argparse.Namespace) -> int:
    versions = registry.list_versions(args.model)
    if not versions:
        registry.latest(args.model)  # raises ModelNotFoundError naming the models there are
    for v in versions:
        shown = ""
        for key in ("mean_iou", "top_1_accuracy", "AP"):
            value = v.metrics.get(key)
            if isinstance(value, int | float):
                shown = f"{key}={value:.4f}"
                break
        print(f"v{v.version}\t{v.created_at}\t{shown}\t{','.join(v.aliases)}")
    return 0


def _show(registry, args: argparse.Namespace) -> int:
    record = registry.resolve(args.model, args.version)
    print(json.dumps(record.to_dict(), indent=2, default=str))
    return 0


def _promote(registry, args: argparse.Namespace) -> int:
    from components.registry import AliasConflictError
    from components.registry.base import validate_alias_name

    validate_alias_name(args.alias)
    target = registry.resolve(args.model, args.version).version
    if args.expect is None:
        expected = registry.aliases(args.model).get(args.alias)
    elif args.expect.lower() == "none":
        expected = None
    else:
        expected = registry.resolve(args.model, args.expect).version
    try:
        # Guarded by what was read, so a promotion that lands in between is reported, not undone.
        previous = registry.set_alias(args.model, args.alias, target, expected=expected)
    except AliasConflictError as err:
        if args.expect is not None:
            raise
        raise AliasConflictError(
            f"{err} (it moved after this command read it: check `registry list` and run the "
            "promotion again if it is still wanted)"
        ) from err
    print(f"{args.model}: {args.alias} {_shown(previous)} -> v{target}")
    return 0


def _rollback(registry, args: argparse.Namespace) -> int:
    to = None if args.to is None else registry.resolve(args.model, args.to).version
    previous, now = registry.rollback_alias(args.model, args.alias, to=to)
    print(f"{args.model}: {args.alias} v{previous} -> v{now} (rollback)")
    return 0


def _diff(registry, args: argparse.Namespace) -> int:
    a = registry.resolve(args.model, args.a)
    b = registry.resolve(args.model, args.b)
    print(format_metric_table(a.metrics, b.metrics, f"v{a.version}", f"v{b.version}"))
    print()
    lines = list(
        difflib.unified_diff(
            registry.get_config(args.model, a.version).splitlines(keepends=True),
            registry.get_config(args.model, b.version).splitlines(keepends=True),
            fromfile=f"v{a.version}/config.yaml",
            tofile=f"v{b.version}/config.yaml",
        )
    )
    if not lines:
        print(f"config.yaml: identical in v{a.version} and v{b.version}")
    for line in lines:
        print(line, end="" if line.endswith("\n") else "\n")
    return 0


_ACTIONS = {
    "list": _list,
    "show": _show,
    "promote": _promote,
    "rollback": _rollback,
    "diff": _diff,
}


def _shown(version: int | None) -> str:
    return "(unset)" if version is None else f"v{version}"


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any, missing: bool = False) -> str:
    if missing:
        return "-"
    if value is None:
        return "n/a"  # stored as null: NaN at evaluation time (e.g. a class absent from the data)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_metric_table(
    a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str
) -> str:
    """A text table of every metric of `a` and `b` (nested keys joined with '/'): the values
    side by side and, where both are numbers, the difference B - A."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    keys = sorted(flat_a.keys() | flat_b.keys())
    rows = [("metric", name_a, name_b, f"{name_b}-{name_a}")]
    for key in keys:
        va, vb = flat_a.get(key), flat_b.get(key)
        delta = ""
        if _is_number(va) and _is_number(vb) and math.isfinite(va) and math.isfinite(vb):
            diff = vb - va
            delta = f"{diff:+.4f}" if isinstance(diff, float) else f"{diff:+d}"
        rows.append((key, _cell(va, key not in flat_a), _cell(vb, key not in flat_b), delta))
    if len(rows) == 1:
        rows.append(("(no metrics)", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
