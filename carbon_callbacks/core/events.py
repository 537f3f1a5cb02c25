"""Degradations and fallbacks: warned once, recorded always.

Every failure the package survives (a sensor that stops answering, a fallback to a model, a log
file that cannot be written) becomes an :class:`Event`. The first event of each ``key`` is also
raised as a :class:`CarbonCallbacksWarning`, so the user sees it once and can filter it; all
events are kept (bounded) and written to the run log.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


class CarbonCallbacksWarning(UserWarning):
    """A measurement degraded or fell back; the run continues and the log records it."""


@dataclass(frozen=True)
class Event:
    """One recorded degradation or notable decision.

    Attributes:
        kind: short machine-readable kind, e.g. ``"sensor_fallback"``, ``"sensor_lost"``,
            ``"log_write_failed"``, ``"intensity_fallback"``.
        message: one sentence a person can act on.
        source: what it concerns (a sensor name, ``"run_log"``, ``"intensity"``).
        time_unix_s: when it happened (seconds since the epoch, UTC).
    """

    kind: str
    message: str
    source: str = ""
    time_unix_s: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


class EventLog:
    """Thread-safe, bounded list of events; warns once per key.

    Args:
        max_events: events kept in memory (older ones beyond this are counted, not kept).
        listener: called with each new event (the tracker uses it to append to the run log).
    """

    def __init__(self, max_events: int = 1000, listener: Callable[[Event], None] | None = None):
        self._events: list[Event] = []
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._max = max_events
        self.dropped = 0
        self.listener = listener

    def record(self, kind: str, message: str, source: str = "", *, warn: bool = True) -> Event:
        """Record an event; warn the first time its ``(kind, source)`` is seen."""
        event = Event(kind=kind, message=message, source=source)
        key = f"{kind}:{source}"
        with self._lock:
            if len(self._events) < self._max:
                self._events.append(event)
            else:
                self.dropped += 1
            first = key not in self._warned
            self._warned.add(key)
        if warn and first:
            warnings.warn(f"carbon_callbacks: {message}", CarbonCallbacksWarning, stacklevel=3)
        listener = self.listener
        if listener is not None:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a listener must never break the caller
                pass
        return event

    @property
    def events(self) -> list[Event]:
        """A copy of the recorded events, oldest first."""
        with self._lock:
            return list(self._events)
