"""A session's run log: records in order, events recorded before the header kept until it.

:class:`SessionLog` owns the :class:`~carbon_callbacks.core.runlog.RunLogWriter` of one run (rank
0 only; no file with ``log_dir=None``). Events recorded before the header was written (settings,
discovery, ranks) wait in memory and follow the header; later ones are written as they come,
from any thread.
"""

from __future__ import annotations

import threading
from typing import Any

from carbon_callbacks.core.events import Event, EventLog
from carbon_callbacks.core.runlog import RunLogWriter, new_run_log_path


class SessionLog:
    """The run log of one session. ``path`` is ``None`` until :meth:`open` (and without one)."""

    def __init__(self) -> None:
        self.writer: RunLogWriter | None = None
        self.path: str | None = None
        self._pending_events: list[Event] = []
        self._header_written = False
        self._lock = threading.Lock()

    @property
    def header_written(self) -> bool:
        return self._header_written

    def open(
        self, log_dir: str, prefix: str, run_id: str, started_unix_s: float, events: EventLog
    ) -> None:
        """Create the run log's file in ``log_dir`` (its write failures become events)."""
        path = new_run_log_path(log_dir, prefix, run_id, started_unix_s)
        self.path = str(path)
        self.writer = RunLogWriter(path, events)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (kept in memory and retried if the disk refuses it)."""
        if self.writer is not None:
            self.writer.write(record)

    def write_header(self, header: dict[str, Any], later: list[dict[str, Any]]) -> None:
        """Write ``header``, the events that waited for it, then the ``later`` records."""
        self.write(header)
        with self._lock:  # events from other threads wait for the swap
            self._header_written = True
            pending, self._pending_events = self._pending_events, []
        for event in pending:
            self.write({"type": "event", **event.to_dict()})
        for record in later:
            self.write(record)

    def on_event(self, event: Event) -> None:
        """An :class:`EventLog` listener: write the event, or keep it until the header."""
        with self._lock:
            if not self._header_written:
                self._pending_events.append(event)
                return
        self.write({"type": "event", **event.to_dict()})

    def unwritten(self) -> list[dict[str, Any]]:
        """Records the disk refused, oldest first (see ``CarbonTracker.unwritten_records``)."""
        return self.writer.pending_records() if self.writer is not None else []

    def path_for_report(self) -> str | None:
        """The run log's path for the final report, saying so when records are not on disk."""
        writer = self.writer
        if writer is None or not writer.pending:
            return self.path
        return (
            f"{self.path} is INCOMPLETE: {writer.pending} record(s) could not be written "
            f"({writer.last_error}); they are kept in memory: CarbonTracker.unwritten_records()"
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
