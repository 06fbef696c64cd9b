"""Progress of a running conversion, counted by the workers and shown by the launcher.

Beam offers no portable way to read a running job's counters from every runner (the local Fn API
runner in multi-processing mode runs workers as separate processes, remote runners run them on
other machines), so the counting goes through files: each loading DoFn instance keeps running
totals and rewrites its own small JSON file under `<tmp_dir>/progress/` (atomically, at most
every second or so, and at the end of every bundle). The launcher polls that folder in a thread
and sums the files. The folder lives inside the conversion's temporary folder, so it is removed
with it and never reaches the output.

A bundle that fails and is retried may count its records twice; the display clamps at the total.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from components.convert_dataset import _fs

logger = logging.getLogger(__name__)

PROGRESS_DIR = "progress"
# Local files can be rewritten every second; an object store limits how often one object may be
# replaced (GCS: about once a second) and bills every listing, so remote folders are slower.
_LOCAL_INTERVAL_S = 1.0
_REMOTE_INTERVAL_S = 5.0
# How often the non-interactive display logs a line.
LOG_INTERVAL_S = 10.0


def _interval(directory: str) -> float:
    return _REMOTE_INTERVAL_S if _fs.is_remote(directory) else _LOCAL_INTERVAL_S


@dataclasses.dataclass(frozen=True)
class ProgressState:
    """The counts summed over every worker at one moment.

    Attributes:
      done: Records loaded so far, good and bad.
      bad: Records found bad so far.
      total: Records listed for conversion (all splits).
      elapsed: Seconds since the conversion's pipeline started.
      final: True for the last state, read after the pipeline finished (or failed).
    """

    done: int
    bad: int
    total: int
    elapsed: float
    final: bool = False

    @property
    def rate(self) -> float:
        """Records per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


ProgressCallback = Callable[[ProgressState], Any]


class ProgressWriter:
    """A worker's running counts, rewritten to its own file now and then.

    Made in `DoFn.setup`, so every deserialized DoFn instance gets its own file name (an id made
    in the constructor would be pickled and shared by all of them).
    """

    def __init__(self, directory: str):
        self._path = _fs.join(directory, f"{uuid.uuid4().hex}.json")
        self._interval = _interval(directory)
        self._done = 0
        self._bad = 0
        self._written = (0, 0)
        self._last_write = time.monotonic()

    def count(self, bad: bool = False) -> None:
        """Counts one loaded record; writes the file if the last write is old enough."""
        self._done += 1
        self._bad += int(bad)
        if time.monotonic() - self._last_write >= self._interval:
            self.flush()

    def flush(self) -> None:
        """Writes the counts if they changed since the last write."""
        if (self._done, self._bad) == self._written:
            return
        _fs.write_text_atomic(self._path, json.dumps({"done": self._done, "bad": self._bad}))
        self._written = (self._done, self._bad)
        self._last_write = time.monotonic()


def read_counts(directory: str) -> tuple[int, int]:
    """(done, bad) summed over the workers' files in `directory` (0, 0 before any exists)."""
    done = bad = 0
    # Any storage error only delays the display (the next poll retries); it must never stop
    # the conversion.
    try:
        names = _fs.listdir(directory) if _fs.isdir(directory) else []
    except Exception:
        logger.debug("cannot list %s", directory, exc_info=True)
        return 0, 0
    for name in names:
        # Skips the atomic writes' temporary files, which do not end in .json.
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            counts = json.loads(_fs.read_bytes(_fs.join(directory, name)))
        except Exception:
            logger.debug("cannot read %s", name, exc_info=True)
            continue
        done += int(counts.get("done", 0))
        bad += int(counts.get("bad", 0))
    return done, bad


class ProgressMonitor:
    """Polls a progress folder in a thread and hands each `ProgressState` to a callback.

    Use as a context manager around the pipeline run; on exit (success or failure) the folder is
    read once more and the callback gets that state with `final=True`. A failing callback is
    logged once and not called again, so it never breaks the conversion.
    """

    def __init__(
        self,
        directory: str,
        total: int,
        callback: ProgressCallback,
        interval: float | None = None,
    ):
        self._directory = directory
        self._total = int(total)
        self._callback: ProgressCallback | None = callback
        self._interval = _interval(directory) if interval is None else float(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="convert-progress", daemon=True)
        self._start = 0.0

    def state(self, final: bool = False) -> ProgressState:
        done, bad = read_counts(self._directory)
        return ProgressState(done, bad, self._total, time.monotonic() - self._start, final)

    def _emit(self, state: ProgressState) -> None:
        if self._callback is None:
            return
        try:
            self._callback(state)
        except Exception:
            logger.exception("the progress display failed; progress is no longer shown")
            self._callback = None

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self._emit(self.state())

    def __enter__(self) -> ProgressMonitor:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._emit(self.state(final=True))


class TqdmDisplay:
    """A tqdm bar on stderr: records loaded / total, rate, and bad records so far."""

    def __init__(self, description: str = "convert"):
        self._description = description
        self._bar: Any = None

    def __call__(self, state: ProgressState) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=state.total, desc=self._description, unit="rec", file=sys.stderr)
        done = min(state.done, state.total)
        self._bar.set_postfix(bad=state.bad, refresh=False)
        self._bar.update(done - self._bar.n)
        if state.final:
            self._bar.close()


class LogDisplay:
    """Logs a progress line every `interval` seconds, and one at the end (for logs, not TTYs)."""

    def __init__(self, interval: float = LOG_INTERVAL_S):
        self._interval = float(interval)
        self._last = 0.0

    def __call__(self, state: ProgressState) -> None:
        if not state.final and state.elapsed - self._last < self._interval:
            return
        self._last = state.elapsed
        logger.info(
            "%s %d/%d records (%d bad), %.1f records/s, %.0f s",
            "loaded" if state.final else "loading",
            min(state.done, state.total),
            state.total,
            state.bad,
            state.rate,
            state.elapsed,
        )


def default_display() -> ProgressCallback:
    """A tqdm bar when stderr is a terminal, else a log line every `LOG_INTERVAL_S` seconds."""
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        return TqdmDisplay()
    return LogDisplay()
