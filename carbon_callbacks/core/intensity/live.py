"""Live carbon intensity refreshed on a background thread; answers never wait for the network.

:class:`LiveIntensityProvider` wraps one :class:`LiveSource` (Energi Data Service, the GB
Carbon Intensity API, Electricity Maps). A daemon thread fetches the source's measured and
forecast values at once and then every ``refresh_s`` seconds into a :class:`Timeline`;
:meth:`~LiveIntensityProvider.intensity_over` and :meth:`~LiveIntensityProvider.forecast_over`
answer from what the timeline holds (a lock and a binary search, microseconds), never from the
network. So the training thread never waits: a stalled server stalls only the refresh thread,
whose every request is bounded by :mod:`~carbon_callbacks.core.intensity.http`.

Failures degrade, labelled: the last good values stay in the timeline (a gap is bridged by
holding the last value for up to two hours, then by the zone's annual average), each distinct
failure is recorded once as an event (repeats are counted, recovery is recorded), a rate limit's
``Retry-After`` is honoured, other failures back off exponentially up to the refresh interval,
and a permanent failure (a rejected token, an unknown zone) stops the refreshing with a message
that says what to change. The thread stops on :meth:`~LiveIntensityProvider.close` (the tracker
calls it at ``stop()``) and at interpreter exit.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import math
import re
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensityProvider
from carbon_callbacks.core.intensity.http import FetchError, HttpClient
from carbon_callbacks.core.intensity.timeline import (
    MAX_HOLD_S,
    IntensityPoint,
    Timeline,
    weigh,
)

#: Event kinds recorded by live providers (source ``"intensity"``).
EVENT_STARTED = "intensity_live_started"
EVENT_ERROR = "intensity_live_error"
EVENT_RECOVERED = "intensity_live_recovered"
EVENT_DISABLED = "intensity_live_disabled"
EVENT_PARTIAL = "intensity_live_partial"
EVENT_FORECAST_SHORT = "intensity_forecast_short"
EVENT_SOURCE = "intensity"

#: First wait after a failed refresh, seconds (doubled per failure, capped at the refresh).
RETRY_BASE_S = 30.0


@dataclass
class FetchResult:
    """What one refresh brought.

    Attributes:
        points: the values received (measured and forecast).
        problems: parts that failed while others worked (e.g. a forecast the plan excludes).
    """

    points: list[IntensityPoint]
    problems: list[str] = field(default_factory=list)


class LiveSource(ABC):
    """One live data source for one zone. Implementations only fetch and parse.

    Attributes:
        name: short provider name (``"energidataservice"``, ``"gb"``, ``"electricitymaps"``).
        zone: the zone label estimates carry (``"DK1"``, ``"GB"``, ``"DE"``).
        description: one line for messages, e.g. ``"Energi Data Service (Energinet), DK1"``.
        basis: ``"lifecycle"``, ``"direct"`` or ``"unknown"``.
        resolution_s: length of one published slot, seconds.
        refresh_s: seconds between refreshes (about the publication interval).
        has_forecast: whether the source can publish forecasts.
        attribution: credit and licence line to show with its values.
    """

    name: str = ""
    zone: str = ""
    description: str = ""
    basis: str = "unknown"
    resolution_s: float = 3600.0
    refresh_s: float = 3600.0
    has_forecast: bool = False
    attribution: str = ""

    @abstractmethod
    def fetch(self, client: HttpClient, now_unix_s: float) -> FetchResult:
        """Fetch recent measured values and forecasts around ``now_unix_s``.

        Raises:
            FetchError: nothing usable came back (``permanent`` when asking again cannot help).
        """


def parse_utc(text: Any, *, field_name: str = "time") -> float:
    """Seconds since the Unix epoch from an ISO-8601 time; a time without offset is UTC.

    Accepts ``2024-05-01T10:05:00``, ``2024-05-01T10:05Z``, ``2024-05-01T10:05:00.000Z`` and
    ``+hh:mm`` offsets.

    Raises:
        ValueError: not such a time (the message names ``field_name`` and the value).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{field_name} is not a time: {text!r}")
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = _dt.datetime.fromisoformat(raw)
    except ValueError:
        try:  # Python 3.10's fromisoformat wants 0, 3 or 6 fraction digits; try without them
            head, _, tail = raw.partition(".")
            offset = ""
            for sign in ("+", "-"):
                if sign in tail:
                    offset = sign + tail.split(sign, 1)[1]
            moment = _dt.datetime.fromisoformat(head + offset)
        except ValueError:
            raise ValueError(f"{field_name} is not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()


def format_utc(unix_s: float, fmt: str = "%Y-%m-%dT%H:%MZ") -> str:
    """UTC text of a time, by default the GB API's ``2024-05-01T10:30Z``."""
    return _dt.datetime.fromtimestamp(unix_s, tz=_dt.timezone.utc).strftime(fmt)


def intensity_value(raw: Any, *, field_name: str) -> float | None:
    """A published intensity as a float >= 0, ``None`` for a missing (null) value.

    Raises:
        ValueError: a value that is not a finite number >= 0.
    """
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError(f"{field_name} is not a number: {raw!r}")
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{field_name} is not a finite number >= 0: {raw!r}")
    return value


_QUERY = re.compile(r"\?\S*")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:?\d{2})?")


def failure_key(message: str) -> str:
    """A message with its changing parts (query strings, times) blanked: the same failure on
    every refresh gets the same key, so it is recorded once."""
    return _TIME.sub("<time>", _QUERY.sub("", message))


_LIVE_PROVIDERS: weakref.WeakSet[LiveIntensityProvider] = weakref.WeakSet()
_ATEXIT_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False


def _close_all_at_exit() -> None:
    for provider in list(_LIVE_PROVIDERS):
        try:
            provider.close(join_s=0.0)
        except Exception:  # noqa: BLE001 - exiting must not raise
            pass


def _register_for_exit(provider: LiveIntensityProvider) -> None:
    global _ATEXIT_REGISTERED
    with _ATEXIT_LOCK:
        _LIVE_PROVIDERS.add(provider)
        if not _ATEXIT_REGISTERED:
            atexit.register(_close_all_at_exit)
            _ATEXIT_REGISTERED = True


class LiveIntensityProvider(IntensityProvider):
    """A live source behind the provider interface, refreshed on a daemon thread.

    Args:
        source: what to fetch.
        fallback: the zone's offline value (annual average), used where no live value applies.
        events: where failures and notable decisions go (``None``: nowhere).
        client: the HTTP client (its timeouts bound every request); default: a fresh one.
        refresh_s: seconds between refreshes (default: the source's).
        retry_base_s: first wait after a failure (doubled per consecutive failure).
        max_hold_s: longest gap after a value that the value is carried over.
        start: start the thread now (default) or later with :meth:`start`.
        clock: UTC seconds (tests pass their own).
    """

    def __init__(
        self,
        source: LiveSource,
        fallback: IntensityProvider,
        events: EventLog | None = None,
        *,
        client: HttpClient | None = None,
        refresh_s: float | None = None,
        retry_base_s: float = RETRY_BASE_S,
        max_hold_s: float = MAX_HOLD_S,
        start: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.zone = source.zone
        self.fallback = fallback
        self.events = events
        self.client = client or HttpClient()
        self.refresh_s = float(refresh_s if refresh_s is not None else source.refresh_s)
        self.retry_base_s = float(retry_base_s)
        self.max_hold_s = float(max_hold_s)
        self.timeline = Timeline()
        self._clock = clock
        self._stop = self.client.stop
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures = 0
        self._last_error: str | None = None
        self._repeats = 0
        self._problems_seen: set[str] = set()
        self._short_warned = False
        self._started_event = False
        #: ``"starting"``, ``"ok"``, ``"failing"``, ``"disabled"`` or ``"stopped"``.
        self.state = "starting"
        self.last_success_unix_s: float | None = None
        self.refreshes = 0
        if start:
            self.start()

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the refresh thread (idempotent; not after :meth:`close`)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name=f"carbon_callbacks-intensity-{self.zone}", daemon=True
            )
            _register_for_exit(self)
            self._thread.start()

    def close(self, join_s: float = 0.5) -> None:
        """Stop refreshing: end any wait, refuse new requests; idempotent.

        A request in flight ends within its own timeouts; the thread is a daemon, so this waits
        at most ``join_s`` seconds for it.
        """
        self._stop.set()
        if self.state != "disabled":
            self.state = "stopped"
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and join_s > 0:
            thread.join(join_s)
        self.client.close()
        self._ready.set()

    @property
    def running(self) -> bool:
        """True while the refresh thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the first refresh finished (worked or not). Not for the training thread."""
        return self._ready.wait(timeout_s)

    def _run(self) -> None:
        delay = 0.0
        try:
            while not self._stop.wait(delay):
                next_delay = self.refresh_once()
                if next_delay is None:
                    break
                delay = next_delay
        except Exception as exc:  # noqa: BLE001 - never die unannounced
            self.state = "disabled"
            self._record(EVENT_DISABLED, f"live carbon intensity for {self.zone} stopped: {exc!r}")
        finally:
            self._ready.set()

    def refresh_once(self) -> float | None:
        """One refresh (on the calling thread); returns the seconds until the next one, or
        ``None`` when refreshing should stop (permanent failure or closed)."""
        try:
            result = self.source.fetch(self.client, self._clock())
            if not result.points:
                raise FetchError(f"{self.source.description}: the answer held no values")
        except FetchError as exc:
            return self._failed(exc)
        except Exception as exc:  # noqa: BLE001 - a parser bug must not kill the thread silently
            return self._failed(FetchError(f"{type(exc).__name__}: {exc}"))
        try:
            return self._succeeded(result)
        finally:
            self._ready.set()

    def _succeeded(self, result: FetchResult) -> float:
        now = self._clock()
        stamped = [p if p.fetched_unix_s else _stamp(p, now) for p in result.points]
        self.timeline.update(stamped)
        self.refreshes += 1
        self.last_success_unix_s = now
        for problem in result.problems:
            key = failure_key(problem)
            if key not in self._problems_seen and len(self._problems_seen) < 100:
                self._problems_seen.add(key)
                self._record(EVENT_PARTIAL, problem)
        if self._failures:
            self._record(
                EVENT_RECOVERED,
                f"live carbon intensity for {self.zone} from {self.source.description} works "
                f"again after {self._failures} failed refresh(es)",
                warn=False,
            )
            self._started_event = True
        elif not self._started_event:
            self._started_event = True
            self._record(EVENT_STARTED, self._summary(stamped), warn=False)
        self._failures = 0
        self._last_error = None
        self._repeats = 0
        if not self._stop.is_set():
            self.state = "ok"
        return self.refresh_s

    def _failed(self, exc: FetchError) -> float | None:
        try:
            return self._note_failure(exc)
        finally:
            self._ready.set()

    def _note_failure(self, exc: FetchError) -> float | None:
        if self._stop.is_set():
            return None
        self._failures += 1
        message = str(exc)
        if exc.permanent:
            self.state = "disabled"
            self._record(
                EVENT_DISABLED,
                f"live carbon intensity for {self.zone} is off for this run: {message}. "
                + self._meanwhile(),
            )
            return None
        self.state = "failing"
        if failure_key(message) != self._last_error:
            repeats = (
                f" (the previous failure repeated {self._repeats} time(s))"
                if (self._repeats)
                else ""
            )
            self._record(
                EVENT_ERROR,
                f"live carbon intensity for {self.zone} could not be refreshed: {message}"
                f"{repeats}; {self._meanwhile()} and retrying",
            )
            self._last_error = failure_key(message)
            self._repeats = 0
        else:
            self._repeats += 1
        backoff = min(self.refresh_s, self.retry_base_s * 2 ** (self._failures - 1))
        if exc.retry_after_s is not None:
            backoff = max(backoff, exc.retry_after_s)
        return backoff

    def _meanwhile(self) -> str:
        if len(self.timeline):
            return "the values already received stay in use (a gap is labelled held or annual)"
        fb = self.fallback.intensity_over(0.0, 0.0)
        return f"using {fb.describe()} meanwhile"

    def _summary(self, points: list[IntensityPoint]) -> str:
        measured = [p for p in points if p.kind == "measured"]
        forecast = [p for p in points if p.kind == "forecast"]
        parts = [f"live carbon intensity for {self.zone} from {self.source.description}:"]
        if measured:
            parts.append(
                f"{len(measured)} measured value(s) {format_utc(measured[0].start_unix_s)} .. "
                f"{format_utc(measured[-1].end_unix_s)}"
            )
        if forecast:
            parts.append(
                f"{len(forecast)} forecast value(s) to {format_utc(forecast[-1].end_unix_s)}"
            )
        if self.source.attribution:
            parts.append(f"({self.source.attribution})")
        return " ".join(parts)

    def _record(self, kind: str, message: str, *, warn: bool = True) -> None:
        if self.events is not None:
            self.events.record(kind, message, EVENT_SOURCE, warn=warn)

    # -- answers (never wait for the network) ---------------------------------------------
    def intensity_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate:
        """Time-weighted intensity over the window from the values held (gCO2(eq)/kWh)."""
        if end_unix_s < start_unix_s:
            start_unix_s, end_unix_s = end_unix_s, start_unix_s
        before, inside = self.timeline.window(start_unix_s, end_unix_s)
        note = (
            "no live value yet"
            if self.last_success_unix_s is None
            else "no live value for this time"
        )
        return weigh(
            inside,
            start_unix_s,
            end_unix_s,
            zone=self.zone,
            fallback=self.fallback.intensity_over(start_unix_s, end_unix_s),
            before=before,
            max_hold_s=self.max_hold_s,
            gap_note=note,
        )

    def forecast_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate | None:
        """Intensity over a future window from the forecast held, or ``None`` without one (or
        when the forecast held ends before the window starts).

        Where the forecast ends before the window does, the rest is the zone's annual average,
        labelled ``"beyond the forecast horizon"``, and one event says so.
        """
        horizon = self.timeline.last_end_unix_s("forecast")
        if end_unix_s < start_unix_s:
            start_unix_s, end_unix_s = end_unix_s, start_unix_s
        if horizon is None or horizon <= start_unix_s:
            return None  # no forecast, or only a stale one: the caller keeps the current value
        before, inside = self.timeline.window(start_unix_s, end_unix_s)
        if horizon < end_unix_s and not self._short_warned:
            self._short_warned = True
            covered_h = max(0.0, horizon - start_unix_s) / 3600
            self._record(
                EVENT_FORECAST_SHORT,
                f"the {self.source.description} forecast reaches {format_utc(horizon)}, "
                f"{covered_h:.1f} h of the {(end_unix_s - start_unix_s) / 3600:.1f} h asked for; "
                "the rest uses the zone's annual average, labelled as such",
            )
        return weigh(
            inside,
            start_unix_s,
            end_unix_s,
            zone=self.zone,
            fallback=self.fallback.intensity_over(start_unix_s, end_unix_s),
            before=before,
            max_hold_s=self.source.resolution_s,
            gap_note=f"beyond the forecast horizon ({format_utc(horizon)})",
        )

    @property
    def forecast_horizon_unix_s(self) -> float | None:
        """End of the last forecast value held, or ``None``."""
        return self.timeline.last_end_unix_s("forecast")

    def __repr__(self) -> str:
        return (
            f"LiveIntensityProvider({self.source.description!r}, state={self.state!r}, "
            f"values={len(self.timeline)})"
        )


def _stamp(point: IntensityPoint, now: float) -> IntensityPoint:
    from dataclasses import replace

    return replace(point, fetched_unix_s=now)
