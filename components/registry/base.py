"""The model registry interface every backend implements, and the records it returns.

A registry holds named models; each model has immutable, consecutively numbered versions
(SavedModel + config + metrics + lineage, sealed by a manifest) and mutable aliases such as
`champion` that point at one version. Backends differ only in how they make two operations
exclusive:

* allocating a version number — the local backend renames a sealed staging folder into
  `versions/{n}` under an `fcntl` lock; the GCS backend creates `versions/{n}/MANIFEST.json`
  with the precondition `if_generation_match=0`; Vertex allocates version ids itself;
* moving an alias — the local backend rewrites `aliases.json` under the same lock and swaps it in
  with `os.replace`; the GCS backend writes its alias index with
  `if_generation_match=<generation read>` and retries on a precondition failure.

Every alias move is recorded in an alias history ({alias, from, to, at, by, action}), which is
what `rollback_alias` walks back through. Everything else (naming rules, reference resolution,
rollback, and in `documents.py` lineage defaults and metric serialisation) is shared so that
every backend behaves the same to its callers.
"""

from __future__ import annotations

import abc
import dataclasses
import getpass
import logging
import os
import re
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from components.registry.documents import utc_now_iso

logger = logging.getLogger(__name__)

DEFAULT_ALIAS = "champion"


class _Any:
    def __repr__(self) -> str:
        return "ANY"


# Sentinel for `set_alias(expected=...)`: move the alias whatever it points at now.
ANY: Any = _Any()

# Names become directory names (and GCS object prefixes), so they are restricted to a portable
# set; a leading dot is excluded because dot-entries are the registry's own bookkeeping.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_VERSION_REF_RE = re.compile(r"^[vV]?[0-9]+$")

# The `action` of an alias history entry: a plain move, a move back, or a removal (`to` = None).
ALIAS_ACTIONS = ("set", "rollback", "delete")


class RegistryError(Exception):
    """Base class of every error raised by a model registry."""


class ModelNotFoundError(RegistryError, LookupError):
    """The registry has no model of that name."""


class VersionNotFoundError(RegistryError, LookupError):
    """The model has no complete version with that number."""


class AliasNotFoundError(RegistryError, LookupError):
    """The model has no alias of that name."""


class ManifestError(RegistryError):
    """A version's files do not match its manifest (missing, changed or unexpected files).

    Attributes:
      problems: one human-readable line per mismatching file.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class AliasConflictError(RegistryError):
    """A guarded alias move found the alias pointing somewhere other than expected."""


class UnsupportedRegistryError(NotImplementedError):
    """The registry URI names a backend that is planned but not implemented yet."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One complete, immutable version of a model.

    Attributes:
      model_name: the model the version belongs to.
      version: its number, starting at 1, allocated consecutively by the registry.
      uri: where the version lives (a local folder, or a `gs://` prefix for remote backends).
      created_at: ISO-8601 UTC time at which the version was pushed.
      metrics: the evaluation metrics pushed with it (the content of `metrics.json`).
      lineage: where it came from (the content of `lineage.json`).
      aliases: the aliases that pointed at it when the record was read, sorted.
    """

    model_name: str
    version: int
    uri: str
    created_at: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for the CLI and KFP outputs)."""
        record = dataclasses.asdict(self)
        record["aliases"] = list(self.aliases)
        return record


def validate_model_name(model_name: str) -> str:
    """Returns `model_name` if it is usable as a model name, else raises ValueError."""
    if not isinstance(model_name, str) or not _NAME_RE.match(model_name):
        raise ValueError(
            f"model_name {model_name!r}: expected 1-128 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return model_name


def validate_alias_name(alias: str) -> str:
    """Returns `alias` if it is usable as an alias, else raises ValueError.

    `latest`, all-digit names and `v<digits>` are refused because `resolve()` reads those as
    version references.
    """
    if not isinstance(alias, str) or not _NAME_RE.match(alias) or _VERSION_REF_RE.match(alias):
        raise ValueError(
            f"alias {alias!r}: expected 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and not a version reference such as '3' or 'v3'"
        )
    if alias == "latest":
        raise ValueError("alias 'latest': reserved, it always means the highest version number")
    return alias


def validate_version_number(version: Any) -> int:
    """Returns `version` as an int if it is a positive version number, else raises ValueError."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version {version!r}: expected a positive integer")
    return version


def current_actor() -> str:
    """`user@host` of this process, recorded as `by` in the alias history."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        # Containers often run as a numeric uid with no passwd entry.
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _check_action(action: str) -> str:
    if action not in ALIAS_ACTIONS:
        raise ValueError(f"action {action!r}: expected one of {', '.join(ALIAS_ACTIONS)}")
    return action


def alias_history_entry(
    alias: str,
    previous: int | None,
    version: int | None,
    action: str,
    by: str | None,
    entry_id: str | None = None,
) -> dict[str, Any]:
    """One alias history record; backends append it in the same update that moves the alias.

    Keys: id (`entry_id`, default a fresh unique one), alias, from, to, at (ISO-8601 UTC), by,
    action.
    """
    return {
        # Lets a backend recognise its own update when a retried request had already landed.
        "id": entry_id or uuid.uuid4().hex,
        "alias": alias,
        "from": previous,
        "to": version,
        "at": utc_now_iso(),
        "by": by or current_actor(),
        "action": _check_action(action),
    }


@dataclasses.dataclass(frozen=True)
class AliasMove:
    """One alias move (or removal) requested of a backend, with what its history entry needs.

    Attributes:
      model_name: the model.
      alias: the alias to create, move or remove.
      version: the complete version it should point at; None removes it.
      expected: compare-and-swap guard (see `ModelRegistry.set_alias`); `ANY`: none.
      action: one of `ALIAS_ACTIONS`, recorded in the history.
      by: who moves it (None: `current_actor()` when the entry is made).
      id: the id of its history entry, fixed for the whole move so that a backend retrying a
        request can recognise an update of its own that had already landed.
    """

    model_name: str
    alias: str
    version: int | None
    expected: int | None | object = ANY
    action: str = "set"
    by: str | None = None
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        _check_action(self.action)


def alias_target_stack(history: list[Mapping[str, Any]], alias: str) -> list[int | None]:
    """The targets `alias` went through, oldest first, with rolled-back moves removed.

    A rollback to a version still on the stack drops everything above it, so rolling back twice
    goes two promotions back rather than returning to the version that was just rolled back.
    A deletion pushes None.
    """
    stack: list[int | None] = []
    for entry in history:
        if entry.get("alias") != alias:
            continue
        target = entry.get("to")
        if stack and stack[-1] == target:
            continue  # a move to where it already pointed changes nothing
        below_top = stack[:-1]
        if entry.get("action") == "rollback" and target in below_top:
            last = len(below_top) - 1 - below_top[::-1].index(target)
            del stack[last + 1 :]
        else:
            stack.append(target)
    return stack


class ModelRegistry(abc.ABC):
    """A store of immutable model versions and movable aliases, addressed by a URI.

    Obtain one with `components.registry.open_registry(uri)`. All methods are safe to call from
    several processes at once: version numbers are never handed out twice and alias updates are
    never lost or torn.
    """

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """The URI the registry was opened with, normalised."""

    def check_alias_name(self, alias: str) -> str:
        """Returns `alias` if this registry can hold it, else raises ValueError (backends with
        stricter rules, such as Vertex AI's, narrow it)."""
        return validate_alias_name(alias)

    @abc.abstractmethod
    def push(
        self,
        model_name: str,
        saved_model_dir: str,
        config: str | Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Stores a new version and returns it; never modifies an existing version.

        Args:
          model_name: the model to add a version to; created on first push.
          saved_model_dir: a local SavedModel folder (holding `saved_model.pb`); copied as is.
          config: the path of the YAML config the model was trained from, or the config as a
            mapping; stored as `config.yaml`.
          metrics: evaluation metrics, stored as `metrics.json`.
          lineage: provenance (`dataset_fingerprint`, `parent_run`, ...; any JSON values),
            stored as `lineage.json` together with `created_at` and defaults for the standard
            keys (`config_hash` = sha256 of `config.yaml`, `code_version` = package version).
        """

    @abc.abstractmethod
    def models(self) -> list[str]:
        """The names of the models that have at least one complete version, sorted."""

    @abc.abstractmethod
    def list_versions(self, model_name: str) -> list[ModelVersion]:
        """The model's complete versions in ascending order (empty for an unknown model)."""

    @abc.abstractmethod
    def get_version(self, model_name: str, version: int) -> ModelVersion:
        """One complete version; raises VersionNotFoundError naming the versions that exist."""

    @abc.abstractmethod
    def aliases(self, model_name: str) -> dict[str, int]:
        """The model's aliases as {alias: version} (empty if it has none)."""

    def set_alias(
        self,
        model_name: str,
        alias: str,
        version: int,
        expected: int | None | object = ANY,
        by: str | None = None,
    ) -> int | None:
        """Points `alias` at an existing complete `version` atomically, recording the move.

        Args:
          model_name: the model.
          alias: the alias to create or move.
          version: the complete version it should point at.
          expected: compare-and-swap guard: the version the alias must point at now (None: the
            alias must not exist yet); the default `ANY` moves it unconditionally. Lets a
            pipeline promote only if the champion it compared against is still the champion.
          by: who moves it, for the alias history (default: `user@host`).

        Returns:
          The version the alias pointed at before, or None if it is new.

        Raises:
          ValueError: `alias` is not a name this registry can hold (`check_alias_name`).
          VersionNotFoundError: `version` is not a complete version of the model.
          AliasConflictError: the alias does not point at `expected`.
        """
        self.check_alias_name(alias)
        self.get_version(model_name, validate_version_number(version))  # names what exists
        return self._move_alias(AliasMove(model_name, alias, version, expected, "set", by))

    def delete_alias(self, model_name: str, alias: str, by: str | None = None) -> int:
        """Removes `alias` (recorded in the history); returns the version it pointed at.

        Raises:
          AliasNotFoundError: no such alias; the message lists the aliases that exist.
        """
        validate_model_name(model_name)
        previous = self._move_alias(AliasMove(model_name, alias, None, ANY, "delete", by))
        assert previous is not None  # _apply_alias_move raises AliasNotFoundError otherwise
        return previous

    def rollback_alias(
        self,
        model_name: str,
        alias: str = DEFAULT_ALIAS,
        to: int | None = None,
        by: str | None = None,
    ) -> tuple[int, int]:
        """Moves `alias` back to the version it pointed at before its last move (or to `to`).

        The previous target comes from the alias history; earlier rollbacks are taken into
        account, so two rollbacks in a row go two promotions back. The move is guarded by the
        alias's current target, so a concurrent move makes it fail instead of being undone.

        Returns:
          (the version the alias pointed at, the version it points at now).

        Raises:
          AliasNotFoundError: the alias does not exist.
          AliasConflictError: the history has no earlier target (or does not end at the
            current target), or the alias moved concurrently.
          VersionNotFoundError: `to` is not a complete version.
          ValueError: `to` is where the alias points already.
        """
        current = self.get_alias(model_name, alias)
        if to is None:
            stack = alias_target_stack(self.alias_history(model_name, alias), alias)
            if not stack or stack[-1] != current:
                recorded = "no history" if not stack else f"history ending at {stack[-1]}"
                raise AliasConflictError(
                    f"model {model_name!r}: alias {alias!r} points at version {current} but "
                    f"its recorded history has {recorded} (moved concurrently, or by a tool "
                    "that keeps no history); give the version to roll back to explicitly"
                )
            if len(stack) < 2 or stack[-2] is None:
                raise AliasConflictError(
                    f"model {model_name!r}: alias {alias!r} has no earlier target to roll back "
                    f"to (it was created at version {current}); give a version explicitly"
                )
            to = stack[-2]
        to = validate_version_number(to)
        if to == current:
            raise ValueError(f"to={to}: alias {alias!r} of {model_name!r} already points there")
        self.get_version(model_name, to)
        self._move_alias(AliasMove(model_name, alias, to, current, "rollback", by))
        return current, to

    def _move_alias(self, move: AliasMove) -> int | None:
        """Stores `move` with the backend's `_store_alias_move` and logs it; returns the previous
        target. Backends that mirror aliases elsewhere extend this."""
        previous = self._store_alias_move(move)
        logger.info(
            "Model %r: alias %r -> %s (was %s, %s)",
            move.model_name,
            move.alias,
            move.version,
            previous,
            move.action,
        )
        return previous

    @abc.abstractmethod
    def _store_alias_move(self, move: AliasMove) -> int | None:
        """Atomically applies `move` with `_apply_alias_move` to the alias table read under the
        backend's exclusion and appends the history entry that returns, in the same update;
        returns the previous target (the entry's `from`).

        `move.version`, when given, has been checked to be a complete version. Raises
        AliasConflictError on a failed guard and AliasNotFoundError when removing an alias that
        does not exist.
        """

    @abc.abstractmethod
    def alias_history(self, model_name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every recorded move of the model's aliases (or of one alias), oldest first.

        Each entry is {"alias", "from", "to", "at", "by", "action"}: `from`/`to` are version
        numbers or None (created / deleted), `at` is ISO-8601 UTC, `action` one of
        set / rollback / delete.
        """

    @abc.abstractmethod
    def get_config(self, model_name: str, version: int) -> str:
        """The text of the version's `config.yaml` (the experiment config it was trained from)."""

    @abc.abstractmethod
    def path(self, model_name: str, version: int) -> str:
        """The location of the version's SavedModel folder, readable by `tf.saved_model.load`."""

    @abc.abstractmethod
    def download(self, model_name: str, version: int, destination: str) -> str:
        """Copies the version's SavedModel to the local folder `destination` and verifies it.

        Returns:
          `destination`. Raises FileExistsError if it exists and is not an empty folder.
        """

    @abc.abstractmethod
    def verify(self, model_name: str, version: int) -> None:
        """Checks every file of the version against its manifest; raises ManifestError."""

    @abc.abstractmethod
    def gc(self, model_name: str | None = None) -> list[str]:
        """Deletes the debris of interrupted pushes; returns what was removed."""

    def get_alias(self, model_name: str, alias: str = DEFAULT_ALIAS) -> int:
        """The version number `alias` points at (`get_version` gives its record).

        Raises:
          AliasNotFoundError: no such alias; the message lists the aliases that exist.
        """
        validate_model_name(model_name)
        table = self.aliases(model_name)
        if alias not in table:
            raise self._alias_not_found(model_name, alias, table)
        return table[alias]

    def _not_found(self, model_name: str, version: int) -> RegistryError:
        """The error for a version that is not complete, naming the versions or models there are."""
        complete = [v.version for v in self.list_versions(model_name)]
        if not complete:
            return ModelNotFoundError(
                f"registry {self.uri} has no model {model_name!r} (no complete versions); "
                f"models: {', '.join(self.models()) or 'none'}"
            )
        return VersionNotFoundError(
            f"model {model_name!r} in registry {self.uri} has no complete version {version}; "
            f"versions: {', '.join(map(str, complete))}"
        )

    def _alias_not_found(
        self, model_name: str, alias: str, table: Mapping[str, int]
    ) -> AliasNotFoundError:
        known = ", ".join(f"{a} -> v{v}" for a, v in sorted(table.items())) or "none"
        return AliasNotFoundError(
            f"model {model_name!r} in registry {self.uri} has no alias {alias!r}; aliases: {known}"
        )

    def _apply_alias_move(self, table: dict[str, int], move: AliasMove) -> dict[str, Any]:
        """Checks the guard and applies a move (or removal) to an alias table read under the
        backend's exclusion; returns the move's history entry (its `from` is the previous
        target)."""
        model_name, alias, version = move.model_name, move.alias, move.version
        previous = table.get(alias)
        if version is None and previous is None:
            raise self._alias_not_found(model_name, alias, table)
        expected = move.expected
        if expected is not ANY and previous != expected:
            raise AliasConflictError(
                f"model {model_name!r}: alias {alias!r} points at "
                f"{'nothing' if previous is None else f'version {previous}'}, expected "
                f"{'nothing' if expected is None else f'version {expected}'}; not moved "
                f"to {'nothing' if version is None else f'version {version}'}"
            )
        if version is None:
            del table[alias]
        else:
            table[alias] = version
        return alias_history_entry(alias, previous, version, move.action, move.by, move.id)

    def latest(self, model_name: str) -> ModelVersion:
        """The complete version with the highest number."""
        versions = self.list_versions(model_name)
        if not versions:
            raise ModelNotFoundError(
                f"model {model_name!r} has no versions in registry {self.uri}; "
                f"models: {', '.join(self.models()) or 'none'}"
            )
        return versions[-1]

    def resolve(self, model_name: str, ref: int | str) -> ModelVersion:
        """Resolves a version number (`3`, `'3'`, `'v3'`), `'latest'` or an alias to a version."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            return self.get_version(model_name, ref)
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"version reference {ref!r}: expected a number, 'latest' or an alias")
        if ref.isdigit():
            return self.get_version(model_name, int(ref))
        if ref[0] in "vV" and ref[1:].isdigit():
            return self.get_version(model_name, int(ref[1:]))
        if ref == "latest":
            return self.latest(model_name)
        return self.get_version(model_name, self.get_alias(model_name, ref))
