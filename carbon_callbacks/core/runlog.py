"""The run log: one crash-safe JSON-lines file per run; write, read, aggregate.

Schema version 1. Every line is one JSON object with a ``"type"``:

``header``
    ``schema``, ``package_version``, ``run_id``, ``run_name``, ``started_at_unix_s`` (s since the
    Unix epoch, UTC), ``started_at`` (ISO-8601 UTC), ``host``, ``pid``, ``config`` (dict),
    ``sensors`` (list of ``{name, component, device, method, detail}``), ``intensity`` (an
    :class:`~carbon_callbacks.core.intensity.base.IntensityEstimate` dict), ``pue``, ``epochs``
    (planned, or null) and ``total_steps``. A resumed run adds ``resumed_from`` (earlier run ids)
    and ``offsets`` (``energy_kwh``, ``co2_g``, ``duration_s``, ``epochs`` carried over); its
    cumulative and footer figures include them. ``ranks``: ``world_size``, ``hosts``,
    ``combined`` (the ranks' figures are exchanged and summed) and, when combined,
    ``intensity_from_rank`` (0: every rank applied rank 0's carbon intensity).
``epoch``
    ``epoch`` (0-based), ``start_unix_s``, ``end_unix_s``, ``duration_s``, ``energy_j``
    (``{sensor: J}``, IT energy before PUE), ``methods`` (``{sensor: method}``), ``energy_kwh``
    (total incl. PUE), ``co2_g`` (grams CO2eq), ``intensity``, ``pue``, ``power_w`` (means over
    the epoch in W: ``gpu``, ``cpu``, ``dram``, ``total``), ``cumulative`` (``energy_kwh``,
    ``co2_g``, ``duration_s`` since the run began) and optionally ``steps``. ``incomplete``
    lists sensors lost by the epoch's end (a sensor lost before it began is left out of
    ``energy_j``); when no sensor covered the epoch, ``unmeasured`` is true and ``energy_kwh``
    and ``co2_g`` are null (unknown, not zero). Logs written before marks became final may hold
    ``true_up_j`` (``{sensor: J}``): joules in ``energy_j`` that corrected earlier epochs' edges;
    they are part of ``energy_j`` and are read as such.
``phase``
    As ``epoch``, plus ``name`` (str); ``epoch`` is an int or null. ``in_epoch`` and ``counted``
    say whether it lies inside an epoch and whether the totals include it. The tracker itself
    writes ``partial_epoch`` (an epoch cut short by the end of the run). Logs written before
    marks became final may hold a ``settling`` phase (zero duration, counted, possibly
    negative): a correction of the last epoch's edges, included in the totals as written.
``prediction``
    ``after_epochs``, ``epochs``, ``duration_s``, ``energy_kwh``, ``co2_g``, their ``*_low`` /
    ``*_high`` interval bounds, ``method`` and ``intensity``: the whole run, predicted.
``event``
    ``kind``, ``message``, ``source``, ``time_unix_s`` (see :mod:`carbon_callbacks.core.events`).
``metric``
    ``name``, ``value``, ``epoch``: a final value of a user-named performance metric (e.g. Dice).
``budget``
    ``epoch``, ``action`` (``"warn"``, ``"stop"``; ``"continue"`` for a ``stop_and_confirm``
    answer), ``trigger`` (``"spent"``, ``"predicted"``, ``"predicted-central"``, ``"user"``),
    ``policy``, ``reason`` and, for limits, ``quantity``, ``limit``, ``unit``, ``spent``,
    ``predicted``, ``predicted_low``, ``predicted_high`` (see :mod:`carbon_callbacks.core.budget`).
``footer``
    ``status`` (``"completed"``, ``"interrupted"`` or ``"failed"``), ``ended_at_unix_s``,
    ``duration_s``, ``energy_j``, ``energy_kwh``, ``energy_kwh_by_component`` (kWh with PUE per
    component, summing to ``energy_kwh``; absent in logs of earlier versions), ``co2_g``,
    ``epochs_completed``,
    ``stop_reason`` (why a budget or the user stopped the run, else null), ``events_dropped``,
    and ``signal`` (``"SIGTERM"``) when a signal interrupted the run. A run
    that received SIGTERM and went on (its own handler let it) has a second, later footer; the
    reader takes the last one and keeps earlier ones in :attr:`RunLog.other`.

Writing is append-and-flush per record (``fsync`` for the header and the footer), so a killed run
keeps every finished epoch. A write that fails never raises: the record is kept in memory and
retried, and the failure becomes one event. Reading tolerates a truncated last line, skips and
counts corrupt lines, and keeps unknown record types and unknown fields (forward compatibility).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeAlias

from carbon_callbacks.core.events import Event, EventLog

#: Version of the record format written by this module.
SCHEMA_VERSION = 1
#: File-name suffix of every run log.
LOG_SUFFIX = ".carbon.jsonl"
#: Record types this version knows; others are kept in :attr:`RunLog.other`.
RECORD_TYPES = ("header", "epoch", "phase", "prediction", "event", "metric", "budget", "footer")
#: Values of a footer's ``status``.
FOOTER_STATUSES = ("completed", "interrupted", "failed")
#: Default number of unwritten records kept in memory while the file cannot be written.
MAX_PENDING = 10_000

PathLike: TypeAlias = "str | os.PathLike[str]"
#: An event to record: (kind, message, warn).
_Notice: TypeAlias = "tuple[str, str, bool]"

_EVENT_SOURCE = "run_log"


class RunLogError(ValueError):
    """A file is not a run log (no header record could be read from it)."""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def new_run_id() -> str:
    """Return a fresh random run id: 12 lowercase hex characters (48 bits)."""
    return os.urandom(6).hex()


def utc_iso(unix_s: float) -> str:
    """ISO-8601 UTC text for a time in seconds since the Unix epoch, e.g. ``1970-01-01T00:00:00Z``.

    Sub-second parts are kept as microseconds when present.
    """
    moment = datetime.fromtimestamp(unix_s, tz=timezone.utc)
    text = moment.isoformat()
    return text.replace("+00:00", "Z")


def new_run_log_path(log_dir: PathLike, prefix: str, run_id: str, started_at_unix_s: float) -> Path:
    """Path of a new run log: ``<log_dir>/<prefix><YYYYmmddTHHMMSSZ>_<run_id>.carbon.jsonl``.

    The time stamp is the start of the run (seconds since the Unix epoch) in UTC. Nothing is
    created on disk.

    Raises:
        ValueError: ``prefix`` or ``run_id`` hold a path separator, ``..``-style component or a
            control character, ``run_id`` is empty, the start time is not finite, the file name
            is longer than 255 bytes, or the path would resolve (through ``..`` or a symbolic
            link) to somewhere outside ``log_dir``.
    """
    if not isinstance(prefix, str) or not isinstance(run_id, str):
        raise ValueError("prefix and run_id must be strings")
    if not run_id:
        raise ValueError("run_id must not be empty")
    try:
        start = float(started_at_unix_s)
    except (TypeError, ValueError):
        raise ValueError(f"started_at_unix_s must be a number, got {started_at_unix_s!r}") from None
    if not math.isfinite(start):
        raise ValueError(f"started_at_unix_s must be finite, got {started_at_unix_s!r}")
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    for label, part in (("prefix", prefix), ("run_id", run_id)):
        if any(sep in part for sep in separators):
            raise ValueError(
                f"{label} {part!r} holds a path separator: the log would escape log_dir"
            )
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in part):
            raise ValueError(f"{label} {part!r} holds a control character")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))
    name = f"{prefix}{stamp}_{run_id}{LOG_SUFFIX}"
    if name in (".", "..") or Path(name).name != name:
        raise ValueError(f"file name {name!r} is not a plain file name")
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        raise ValueError(f"file name {name!r} is longer than 255 bytes: shorten the prefix")
    base = Path(log_dir)
    candidate = base / name
    if candidate.resolve(strict=False).parent != base.resolve(strict=False):
        raise ValueError(f"run log path {candidate} resolves outside log_dir {base}: refused")
    return candidate


def _jsonable(value: Any, _depth: int = 0) -> Any:
    """Turn ``value`` into plain JSON types; non-finite floats become ``None``.

    Objects with ``to_dict()`` and dataclasses become dicts, tuples and sets lists, NumPy-style
    scalars (anything with ``item()``) their Python value, other objects their ``str()``.
    """
    if _depth > 64:
        raise ValueError("record nested deeper than 64 levels")
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        return [_jsonable(v, _depth + 1) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _jsonable(to_dict(), _depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value), _depth + 1)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            scalar = item()
        except (TypeError, ValueError):
            scalar = None
        if isinstance(scalar, (bool, int, float, str)):
            return _jsonable(scalar, _depth + 1)
    return str(value)


def encode_record(record: Mapping[str, Any]) -> str:
    """One record as one line of text (with the trailing newline).

    Uses ``json.dumps(..., allow_nan=False, separators=(",", ":"))`` after turning NaN and
    infinities into ``null``; the output is pure ASCII.

    Raises:
        ValueError: ``record`` is not a mapping with a string ``"type"``.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"a record must be a mapping, got {type(record).__name__}")
    if not isinstance(record.get("type"), str) or not record.get("type"):
        raise ValueError("a record needs a non-empty string 'type'")
    return json.dumps(_jsonable(record), allow_nan=False, separators=(",", ":")) + "\n"


def event_record(event: Event) -> dict[str, Any]:
    """The run-log record for an :class:`~carbon_callbacks.core.events.Event`."""
    return {"type": "event", **event.to_dict()}


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


class RunLogWriter:
    """Appends records to one run log; never raises on a write failure.

    The file is opened lazily (append mode, created with the user's default permissions, parent
    folders created as needed) on the first write. Every record is written with one ``write``
    call and reaches the operating system before :meth:`write` returns; header and footer are
    also ``fsync``-ed. Thread-safe.

    When a write fails (disk full, folder removed or replaced, permissions changed), the record
    is kept in memory (the last ``max_pending``), the failure is recorded once as a
    ``"log_write_failed"`` event, and the pending records are retried, oldest first, on every
    later write and at :meth:`close`. If the file disappeared in the meantime a new one is
    started and the header is written again first, so the new file is readable on its own. A
    record cut off by a failure in mid-write is re-written whole on a fresh line; the fragment
    is left as one corrupt line that the reader skips and counts.

    Args:
        path: the log file.
        events: where the failure event goes (``None``: only :attr:`failed` / :attr:`last_error`).
        max_pending: unwritten records kept in memory; older ones are dropped and counted.
    """

    def __init__(
        self, path: PathLike, events: EventLog | None = None, *, max_pending: int = MAX_PENDING
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending!r}")
        self.path = Path(path)
        self._events = events
        self._lock = threading.RLock()
        self._pending: deque[tuple[bytes, bool]] = deque(maxlen=max_pending)
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._header_line: bytes | None = None
        self._need_newline = False
        self._failed = False
        self._failing = False
        self._dropped = 0
        self._written = 0
        self._closed = False
        self.last_error: str | None = None

    # -- public state ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records not yet written to the file (waiting for a retry)."""
        with self._lock:
            return len(self._pending)

    def pending_records(self) -> list[dict[str, Any]]:
        """The records not written to the file yet, oldest first, as dicts (copies).

        After a disk failure these are the run's records that exist only in memory; the
        tracker hands them out through ``CarbonTracker.unwritten_records()``.
        """
        with self._lock:
            lines = [line for line, _ in self._pending]
        return [json.loads(line) for line in lines]

    @property
    def failed(self) -> bool:
        """True once any write to the file has failed during this run (stays True)."""
        return self._failed

    @property
    def dropped(self) -> int:
        """Records lost because more than ``max_pending`` were waiting."""
        return self._dropped

    @property
    def written(self) -> int:
        """Records written to the file so far."""
        return self._written

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (a later :meth:`write` still appends and closes again)."""
        return self._closed

    # -- writing ----------------------------------------------------------------------------

    def write(self, record: Mapping[str, Any]) -> bool:
        """Append one record; return True when it and every earlier pending record are written.

        Never raises. A record that cannot be encoded (not a mapping, no ``"type"``) is dropped
        with a ``"log_record_invalid"`` event.
        """
        try:
            line = encode_record(record).encode("ascii")
        except Exception as exc:  # noqa: BLE001 - the run log must never break training
            self._emit([("log_record_invalid", f"a run-log record was not written: {exc}", True)])
            return False
        kind = record.get("type")
        with self._lock:
            if kind == "header" and self._header_line is None:
                self._header_line = line
            if len(self._pending) == self._pending.maxlen:
                self._dropped += 1
            self._pending.append((line, kind in ("header", "footer")))
            notices = self._flush_locked()
            ok = not self._pending
            if self._closed:
                self._close_fd()
        self._emit(notices)
        return ok

    def retry(self) -> bool:
        """Try to write the pending records now; True when none is left. Never raises."""
        with self._lock:
            notices = self._flush_locked()
            ok = not self._pending
            if self._closed:
                self._close_fd()
        self._emit(notices)
        return ok

    def close(self) -> None:
        """Write what is pending (one last try) and close the file. Idempotent; never raises."""
        with self._lock:
            notices = self._flush_locked()
            self._close_fd()
            self._closed = True
        self._emit(notices)

    def __enter__(self) -> RunLogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals (called with the lock held) ------------------------------------------------

    def _flush_locked(self) -> list[_Notice]:
        """Write the pending records, oldest first; return the events to record."""
        notices: list[_Notice] = []
        if not self._pending:
            return notices
        was_failed = self._failed
        lost: str | None = None
        try:
            lost = self._drop_if_lost()
            self._open_if_needed()
            while self._pending:
                line, is_sync = self._pending[0]
                if self._need_newline:
                    self._write_all(b"\n")
                    self._need_newline = False
                self._write_line(line)
                self._pending.popleft()
                self._written += 1
                if is_sync:
                    self._sync()
        except OSError as exc:
            self._close_fd()
            message = (
                f"cannot write the run log {self.path} ({type(exc).__name__}: {exc}); "
                "records are kept in memory and retried"
            )
            if lost is not None:
                message = f"{lost}; then {type(exc).__name__}: {exc}; records are kept and retried"
            self._failed = True
            self._failing = True
            self.last_error = message
            if not was_failed:
                notices.append(("log_write_failed", message, True))
            return notices
        if lost is not None:
            self._failed = True
            self.last_error = lost
            if not was_failed:
                notices.append(("log_write_failed", lost, True))
        if self._failing:
            self._failing = False
            notices.append(
                (
                    "log_write_recovered",
                    f"the run log {self.path} is writable again; pending records written",
                    False,
                )
            )
        return notices

    def _drop_if_lost(self) -> str | None:
        """Close the file if it was removed or replaced under us; return a message if so."""
        if self._fd is None or self._still_ours():
            return None
        self._close_fd()
        return (
            f"the run log {self.path} was removed or replaced during the run; records written "
            "before are lost with it and a new file is started"
        )

    def _open_if_needed(self) -> None:
        """Open (and create) the file for appending; a new empty file gets the header first."""
        if self._fd is not None:
            return
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "the log folder is not a folder", str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(self.path, flags, 0o666)  # the umask decides the permissions
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._identity = (info.st_dev, info.st_ino)
        if info.st_size == 0:
            self._need_newline = False
            if self._header_line is not None and self._pending[0][0] != self._header_line:
                # A new file (the first open failed, or the old file was lost): header first.
                self._write_line(self._header_line)
                self._sync()
        else:
            # Appending to a file that exists: start on a fresh line if it ends mid-line.
            self._need_newline = not self._ends_with_newline()

    def _ends_with_newline(self) -> bool:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                return handle.read(1) == b"\n"
        except OSError:
            return True

    def _still_ours(self) -> bool:
        try:
            info = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True  # e.g. permission to the folder lost: our open descriptor still works
        return (info.st_dev, info.st_ino) == self._identity

    def _write_line(self, line: bytes) -> None:
        """Write one whole line; after a failure in mid-line, the next write starts a new line."""
        try:
            self._write_all(line)
        except _PartialWrite as partial:
            self._need_newline = True
            raise partial.error from None

    def _write_all(self, data: bytes) -> None:
        if self._fd is None:  # pragma: no cover - guarded by _ensure_open
            raise OSError(errno.EBADF, "run log not open")
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                n = os.write(self._fd, view[done:])
            except OSError as exc:
                if done:
                    raise _PartialWrite(exc) from None
                raise
            if n <= 0:  # pragma: no cover - regular files make progress or raise
                error = OSError(errno.EIO, "write made no progress")
                if done:
                    raise _PartialWrite(error) from None
                raise error
            done += n

    def _sync(self) -> None:
        if self._fd is None:  # pragma: no cover
            return
        try:
            os.fsync(self._fd)
        except OSError:
            pass  # the data reached the operating system; durability is best effort

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
            self._identity = None

    def _emit(self, notices: list[_Notice]) -> None:
        """Record events without holding the lock (a listener may write to this very log)."""
        if self._events is None:
            return
        for kind, message, warn in notices:
            try:
                self._events.record(kind, message, _EVENT_SOURCE, warn=warn)
            except Exception:  # noqa: BLE001 - never break the caller
                pass


class _PartialWrite(Exception):
    """Internal: a write failed after part of the data was written."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools and non-numbers are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _amount(value: Any) -> float | None:
    """``value`` as a finite float >= 0 (an energy, a mass, a duration), or None.

    A negative energy, CO2eq or duration cannot be measured, so it is read as missing (a
    corrupt or hand-edited log), never summed.
    """
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _count(value: Any) -> int | None:
    """``value`` as a non-negative int, or None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """One line as a record dict, or None when it is not one (NaN/Infinity read as null)."""
    try:
        value = json.loads(raw, parse_constant=lambda _name: None)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return None
    return value


@dataclass
class RunLog:
    """A run log as read from disk.

    Attributes:
        path: the file.
        header: the header record (the first one in the file).
        epochs: epoch records, in file order.
        phases: phase records, in file order.
        predictions: prediction records, in file order.
        events: event records, in file order.
        metrics: metric records, in file order.
        budgets: budget decision records, in file order.
        footer: the last footer record, or None (the run was killed or is still running).
        other: records of unknown types (and any second header or earlier footer), in order.
        truncated: True when the last line was incomplete (the writer was cut off mid-line).
        corrupt_lines: lines before the last that were not a record; skipped.
    """

    path: Path
    header: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    budgets: list[dict[str, Any]] = field(default_factory=list)
    footer: dict[str, Any] | None = None
    other: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    corrupt_lines: int = 0

    @property
    def schema(self) -> Any:
        """The header's schema version (1 for this package version)."""
        return self.header.get("schema")

    @property
    def run_id(self) -> str | None:
        """The run id from the header, or None."""
        value = self.header.get("run_id")
        return value if isinstance(value, str) else None

    @property
    def run_name(self) -> str | None:
        """The run name from the header, or None."""
        value = self.header.get("run_name")
        return value if isinstance(value, str) else None

    @property
    def planned_epochs(self) -> int | None:
        """Epochs the run was planned to train (header ``epochs``), or None when unknown."""
        planned = _count(self.header.get("epochs"))
        return planned if planned else None

    @property
    def status(self) -> str | None:
        """The footer's status, or None when there is no footer."""
        if self.footer is None:
            return None
        status = self.footer.get("status")
        return status if isinstance(status, str) else None

    @property
    def complete(self) -> bool:
        """True when the log has a footer with status ``"completed"``."""
        return self.status == "completed"

    @property
    def latest_prediction(self) -> dict[str, Any] | None:
        """The last prediction record in the file, or None."""
        return self.predictions[-1] if self.predictions else None

    @property
    def resumed_from(self) -> list[str]:
        """Run ids of the earlier segments this run continued (header ``resumed_from``)."""
        value = self.header.get("resumed_from")
        if not isinstance(value, list):
            return []
        return [item for item in value if isinstance(item, str)]

    @property
    def offsets(self) -> dict[str, float]:
        """Totals carried over from resumed segments (header ``offsets``); zeros otherwise.

        Keys: ``energy_kwh`` (kWh), ``co2_g`` (g), ``duration_s`` (s), ``epochs``.
        """
        raw = self.header.get("offsets")
        raw = raw if isinstance(raw, dict) else {}
        out: dict[str, float] = {}
        for key in ("energy_kwh", "co2_g", "duration_s", "epochs"):
            number = _number(raw.get(key))
            out[key] = number if number is not None and number >= 0 else 0.0
        return out

    @property
    def epochs_monitored(self) -> int:
        """Epochs measured, resumed segments included.

        The footer's ``epochs_monitored`` when present, else the number of epoch records; plus
        the header's ``offsets.epochs``.
        """
        monitored = _count(self.footer.get("epochs_monitored")) if self.footer else None
        if monitored is None:
            monitored = len(self.epochs)
        return int(self.offsets["epochs"]) + monitored

    def epoch_sums(self) -> dict[str, Any]:
        """Sums over the epoch records: ``energy_kwh``, ``co2_g``, ``duration_s``, ``epochs``.

        Only this file's epoch records; no offsets. Values that are missing, null (e.g. a NaN
        written as null, an unmeasured epoch) or negative in a record are left out of the sum;
        ``missing_values`` counts them.
        """
        sums = {"energy_kwh": 0.0, "co2_g": 0.0, "duration_s": 0.0}
        missing = 0
        for record in self.epochs:
            for key in sums:
                number = _amount(record.get(key))
                if number is None:
                    missing += 1
                else:
                    sums[key] += number
        return {**sums, "epochs": len(self.epochs), "missing_values": missing}

    def counted_phase_sums(self) -> dict[str, float]:
        """Sums over the phase records the run's totals count (``counted`` true: a partial
        epoch, tracked work outside epochs, settling): ``energy_kwh``, ``co2_g``,
        ``duration_s``. Phases inside epochs are not counted (the epoch holds them)."""
        sums = {"energy_kwh": 0.0, "co2_g": 0.0, "duration_s": 0.0}
        for record in self.phases:
            if record.get("counted") is not True:
                continue
            for key in sums:
                number = _number(record.get(key))
                if number is not None:
                    sums[key] += number
        return sums

    def totals(self) -> dict[str, Any]:
        """Energy (kWh, incl. PUE), CO2eq (g), duration (s) and epochs of the run.

        ``basis`` is ``"footer"`` when a footer gives energy and CO2eq, else ``"epochs"``: the sum
        of the epoch records (a killed run keeps every finished epoch) and of the phase records
        the tracker counted (:meth:`counted_phase_sums`), plus the header's ``offsets`` of
        resumed segments: what the tracker's own totals held, so both bases cover the same
        span. Duration is the footer's ``epochs_duration_s`` (time in epochs and counted work,
        the span its energy covers) when present, else its ``duration_s``.
        """
        sums = self.epoch_sums()
        counted = self.counted_phase_sums()
        offsets = self.offsets
        from_epochs = {
            key: offsets[key] + sums[key] + counted[key]
            for key in ("energy_kwh", "co2_g", "duration_s")
        }
        from_epochs["epochs"] = int(offsets["epochs"]) + sums["epochs"]
        footer = self.footer
        if footer is not None:
            energy = _amount(footer.get("energy_kwh"))
            co2 = _amount(footer.get("co2_g"))
            if energy is not None and co2 is not None:
                duration = _amount(footer.get("epochs_duration_s"))
                if duration is None:
                    duration = _amount(footer.get("duration_s"))
                epochs = _count(footer.get("epochs_completed"))
                return {
                    "energy_kwh": energy,
                    "co2_g": co2,
                    "duration_s": duration if duration is not None else from_epochs["duration_s"],
                    "epochs": epochs if epochs is not None else from_epochs["epochs"],
                    "basis": "footer",
                }
        return {**from_epochs, "basis": "epochs"}


_BUCKETS = {
    "epoch": "epochs",
    "phase": "phases",
    "prediction": "predictions",
    "event": "events",
    "metric": "metrics",
    "budget": "budgets",
}


def read_run_log(path: PathLike) -> RunLog:
    """Read a run log, tolerating what a crash or a full disk leaves behind.

    A last line without its newline that does not parse sets :attr:`RunLog.truncated`; other
    lines that are not a JSON object with a string ``"type"`` are skipped and counted in
    :attr:`RunLog.corrupt_lines`; blank lines are ignored. Unknown record types and fields are
    kept.

    Raises:
        OSError: the file is missing or cannot be read.
        RunLogError: no header record could be read (empty file, or not a run log).
    """
    file_path = Path(path)
    with open(file_path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    header: dict[str, Any] | None = None
    buckets: dict[str, list[dict[str, Any]]] = {name: [] for name in _BUCKETS.values()}
    other: list[dict[str, Any]] = []
    footer: dict[str, Any] | None = None
    corrupt = 0
    truncated = False

    def take(record: dict[str, Any]) -> None:
        nonlocal header, footer
        kind = record["type"]
        if kind == "header":
            if header is None:
                header = record
            else:
                other.append(record)
        elif kind == "footer":
            if footer is not None:
                other.append(footer)
            footer = record
        elif kind in _BUCKETS:
            buckets[_BUCKETS[kind]].append(record)
        else:
            other.append(record)

    for raw in lines:
        if not raw.strip():
            continue
        record = _parse_line(raw)
        if record is None:
            corrupt += 1
        else:
            take(record)
    if tail.strip():
        record = _parse_line(tail)
        if record is None:
            truncated = True
        else:
            take(record)  # complete, only its newline is missing

    if header is None:
        if not data.strip():
            raise RunLogError(f"{file_path}: empty file, not a run log (no header record)")
        raise RunLogError(
            f"{file_path}: no header record found ({corrupt} unreadable line(s)); "
            "not a carbon_callbacks run log, or its first line was lost"
        )
    return RunLog(
        path=file_path,
        header=header,
        footer=footer,
        other=other,
        truncated=truncated,
        corrupt_lines=corrupt,
        **buckets,
    )


# --------------------------------------------------------------------------------------------
# Finding and aggregating
# --------------------------------------------------------------------------------------------


def find_run_logs(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """Run logs among ``paths``: files as given, folders searched recursively (``*.carbon.jsonl``).

    Symbolic links to folders are not followed. The result has no duplicates (by resolved path);
    files in a folder come in sorted order.

    Raises:
        FileNotFoundError: a given path does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()

    def add(candidate: Path) -> None:
        key = candidate.resolve(strict=False)
        if key not in seen:
            seen.add(key)
            found.append(candidate)

    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            matches: list[Path] = []
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs.sort()
                for name in files:
                    candidate = Path(root) / name
                    if name.endswith(LOG_SUFFIX) and candidate.is_file():
                        matches.append(candidate)
            for candidate in sorted(matches):
                add(candidate)
        elif path.exists():
            add(path)
        else:
            raise FileNotFoundError(errno.ENOENT, "no such file or folder", str(path))
    return found


@dataclass
class RunFigure:
    """The figure one run contributes to an :class:`Aggregate`.

    Attributes:
        path: the run log.
        run_id / run_name: from the header.
        status: the footer's status, or None (killed or still running).
        basis: ``"measured"`` (the run's measured totals), ``"predicted"`` (its latest
            prediction of the whole run) or ``"partial"`` (measured so far; neither complete nor
            predicted).
        reason: why this basis, in words.
        energy_kwh: kWh, including PUE.
        co2_g: grams CO2eq.
        duration_s: seconds.
        epochs: epochs the figure stands for (monitored epochs, or the predicted total).
        planned_epochs: the header's planned epochs, or None.
    """

    path: Path
    run_id: str | None
    run_name: str | None
    status: str | None
    basis: str
    reason: str
    energy_kwh: float
    co2_g: float
    duration_s: float
    epochs: int | None
    planned_epochs: int | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


@dataclass
class Aggregate:
    """Totals over several runs, with the figure each run contributed.

    Attributes:
        energy_kwh: kWh over all counted runs (incl. PUE).
        co2_g: grams CO2eq over all counted runs.
        duration_s: seconds over all counted runs (summed, not wall-clock).
        runs: one :class:`RunFigure` per counted run.
        skipped: ``(path, reason)`` for each log that was not counted.
    """

    energy_kwh: float = 0.0
    co2_g: float = 0.0
    duration_s: float = 0.0
    runs: list[RunFigure] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def runs_counted(self) -> int:
        """Number of runs in the totals."""
        return len(self.runs)

    def by_basis(self) -> dict[str, int]:
        """How many runs were counted on each basis (``measured``, ``predicted``, ``partial``)."""
        counts = {"measured": 0, "predicted": 0, "partial": 0}
        for run in self.runs:
            counts[run.basis] = counts.get(run.basis, 0) + 1
        return counts


def run_figure(log: RunLog) -> RunFigure:
    """The figure a run contributes to an aggregate, and why.

    Measured totals when every planned epoch was monitored, when the run was stopped early
    (status ``interrupted``), or when it completed with every epoch monitored. Otherwise (killed,
    failed, or monitoring limited by ``monitor_epochs``) the latest prediction of the whole run
    when there is one (``"predicted"``), else what was measured so far (``"partial"``). A resumed
    run's figures include the segments it continued (see :meth:`RunLog.totals`).
    """
    totals = log.totals()
    planned = log.planned_epochs
    monitored = log.epochs_monitored
    status = log.status
    config = log.header.get("config")
    monitor_limit = _count(config.get("monitor_epochs")) if isinstance(config, dict) else None
    limited = bool(
        monitor_limit and planned is not None and monitor_limit < planned and monitored < planned
    )

    def figure(basis: str, reason: str, values: Mapping[str, Any], epochs: int | None) -> RunFigure:
        return RunFigure(
            path=log.path,
            run_id=log.run_id,
            run_name=log.run_name,
            status=status,
            basis=basis,
            reason=reason,
            energy_kwh=_amount(values.get("energy_kwh")) or 0.0,
            co2_g=_amount(values.get("co2_g")) or 0.0,
            duration_s=_amount(values.get("duration_s")) or 0.0,
            epochs=epochs,
            planned_epochs=planned,
        )

    if planned is not None and monitored >= planned:
        return figure("measured", f"all {planned} planned epochs monitored", totals, monitored)
    if status == "interrupted":
        of = f" of {planned}" if planned is not None else ""
        done = totals["epochs"]
        return figure("measured", f"stopped early after {done}{of} epochs", totals, done)
    if status == "completed" and not limited:
        return figure("measured", "completed", totals, totals["epochs"])

    if status is None:
        why = "no footer (killed or still running)"
    elif status == "completed":
        why = f"only {monitored} of {planned} epochs monitored (monitor_epochs={monitor_limit})"
    else:
        why = f"status {status!r}"
    prediction = log.latest_prediction
    if prediction is not None and all(
        _amount(prediction.get(key)) is not None for key in ("energy_kwh", "co2_g", "duration_s")
    ):
        after = _count(prediction.get("after_epochs"))
        after_text = f" after {after} epochs" if after is not None else ""
        return figure(
            "predicted",
            f"{why}; latest prediction{after_text} used",
            prediction,
            _count(prediction.get("epochs")),
        )
    return figure(
        "partial", f"{why}; no prediction, measured so far used", totals, totals["epochs"]
    )


def aggregate_runs(logs: Iterable[RunLog | PathLike]) -> Aggregate:
    """Sum energy, CO2eq and duration over runs, each counted on a stated basis.

    ``logs`` holds :class:`RunLog` objects or paths (a folder is searched for run logs). Each
    run contributes :func:`run_figure`. Listed in :attr:`Aggregate.skipped`, with the reason, and
    not counted: logs that cannot be read, a second copy of a run (same path or run id), and a
    segment that a resumed run in the set continued (header ``resumed_from``: the resumed run's
    totals already include it). Never raises for a bad log.
    """
    result = Aggregate()
    loaded: list[RunLog] = []
    seen_paths: set[Path] = set()
    seen_ids: dict[str, Path] = {}

    def expand(item: RunLog | PathLike) -> Iterable[RunLog | Path]:
        if isinstance(item, RunLog):
            return [item]
        path = Path(item)
        if path.is_dir():
            try:
                return find_run_logs([path])
            except OSError as exc:  # pragma: no cover - a folder vanishing while listed
                result.skipped.append((path, f"cannot list folder: {exc}"))
                return []
        return [path]

    for item in logs:
        for entry in expand(item):
            if isinstance(entry, RunLog):
                log = entry
            else:
                try:
                    log = read_run_log(entry)
                except RunLogError as exc:
                    result.skipped.append((entry, str(exc)))
                    continue
                except OSError as exc:
                    result.skipped.append((entry, f"cannot read: {exc}"))
                    continue
            key = log.path.resolve(strict=False)
            if key in seen_paths:
                result.skipped.append((log.path, "same file listed twice"))
                continue
            run_id = log.run_id
            if run_id is not None and run_id in seen_ids:
                result.skipped.append(
                    (log.path, f"duplicate of run {run_id} in {seen_ids[run_id]}")
                )
                continue
            seen_paths.add(key)
            if run_id is not None:
                seen_ids[run_id] = log.path
            loaded.append(log)

    by_id = {log.run_id: log for log in loaded if log.run_id is not None}
    continued_by: dict[str, str] = {}
    for log in loaded:
        for earlier in log.resumed_from:
            earlier_log = by_id.get(earlier)
            if earlier_log is None or earlier == log.run_id:
                continue
            if log.run_id is not None and log.run_id in earlier_log.resumed_from:
                continue  # each claims the other: count both rather than neither
            continued_by.setdefault(earlier, log.run_id or str(log.path))
    for log in loaded:
        later = continued_by.get(log.run_id) if log.run_id is not None else None
        if later is not None:
            result.skipped.append(
                (log.path, f"continued by resumed run {later}, whose totals include this run")
            )
            continue
        run = run_figure(log)
        result.runs.append(run)
        result.energy_kwh += run.energy_kwh
        result.co2_g += run.co2_g
        result.duration_s += run.duration_s
    return result


__all__ = [
    "FOOTER_STATUSES",
    "LOG_SUFFIX",
    "MAX_PENDING",
    "RECORD_TYPES",
    "SCHEMA_VERSION",
    "Aggregate",
    "RunFigure",
    "RunLog",
    "RunLogError",
    "RunLogWriter",
    "aggregate_runs",
    "encode_record",
    "event_record",
    "find_run_logs",
    "new_run_id",
    "new_run_log_path",
    "read_run_log",
    "run_figure",
    "utc_iso",
]
