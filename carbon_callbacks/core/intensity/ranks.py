"""Carbon intensity under data parallelism: one rank asks the source, every rank uses its answer.

Under ``torchrun``/DDP every rank builds a tracker. If each one started its own live provider, N
ranks would make N times the requests (Electricity Maps has rate limits and paid tokens), and the
ranks could disagree on the intensity (one got a live value, another a 429 and the annual
average), so their CO2 figures and budget decisions would differ. Instead:

* :class:`DeferredLiveProvider` stands for a live provider that is not started yet: no thread,
  no socket. :func:`~carbon_callbacks.core.intensity.resolve.resolve_intensity` returns one
  (``defer_live=True``) when the process may be one of several ranks; the tracker starts it at
  ``start()`` on rank 0 only (or on a process that turns out to be alone);
* the tracker sends rank 0's intensity for each epoch to the other ranks inside its existing
  per-epoch exchange (see :class:`~carbon_callbacks.core.ranks.RankExchange`), so they record
  rank 0's estimate, provenance included;
* for windows outside that exchange (phases, a partial epoch at ``stop()``, progress reads) a
  rank other than 0 holds rank 0's last value: :func:`held_over`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.intensity.base import (
    IntensityEstimate,
    IntensityProvider,
    IntensitySegment,
)

#: ``start(events) -> provider``: builds and starts the live provider (may record events).
LiveStarter = Callable[[EventLog], IntensityProvider]

#: Note on a stretch of rank 0's value held over a window that was not exchanged.
HELD_NOTE = "rank 0's value, held (this window was not exchanged between ranks)"


class DeferredLiveProvider(IntensityProvider):
    """A live provider that has not started: no thread, no request, until :meth:`activate`.

    Until then (and forever on a rank that only uses rank 0's values) it answers with the zone's
    offline value, the same annual average a live provider uses before its first answer.

    Args:
        zone: the zone label the live provider's estimates carry (``"DK1"``, ``"GB"``).
        start: builds and starts the live provider; called once, by :meth:`activate`.
        offline: the zone's packaged value (annual average), answered before activation.
        description: one line for messages and ``repr``, e.g. the live source's description.
    """

    def __init__(
        self,
        zone: str,
        start: LiveStarter,
        offline: IntensityProvider,
        description: str = "",
    ) -> None:
        self.zone = zone
        self.offline = offline
        self.description = description
        self._start = start
        self._live: IntensityProvider | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def live(self) -> IntensityProvider | None:
        """The live provider once :meth:`activate` started it, else ``None``."""
        return self._live

    def activate(self, events: EventLog) -> IntensityProvider:
        """Start the live provider (once; later calls return the same one).

        Args:
            events: where the live provider records its start, failures and recoveries.

        Returns:
            The started provider; after :meth:`close`, ``self`` (nothing is started any more).
        """
        with self._lock:
            if self._closed:
                return self
            if self._live is None:
                self._live = self._start(events)
            return self._live

    def intensity_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate:
        """The live answer once started, else the zone's offline value (gCO2eq/kWh)."""
        live = self._live
        if live is not None:
            return live.intensity_over(start_unix_s, end_unix_s)
        return self.offline.intensity_over(start_unix_s, end_unix_s)

    def forecast_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate | None:
        """The live forecast once started, else ``None`` (no forecast)."""
        live = self._live
        return live.forecast_over(start_unix_s, end_unix_s) if live is not None else None

    def close(self) -> None:
        """Close the live provider if it was started; never start it afterwards. Idempotent."""
        with self._lock:
            self._closed = True
            live = self._live
        if live is not None:
            live.close()

    def __repr__(self) -> str:
        state = "started" if self._live is not None else "not started"
        return f"DeferredLiveProvider({self.description or self.zone!r}, {state})"


def can_forecast(provider: IntensityProvider) -> bool:
    """Whether ``provider`` may ever answer :meth:`~IntensityProvider.forecast_over` with a value.

    Static and user-stated values never do (they keep the base class's ``None``); a live
    provider whose source publishes no forecast neither. Side-effect free: it asks for nothing.
    """
    if isinstance(provider, DeferredLiveProvider):
        provider = provider.live or provider.offline
    if type(provider).forecast_over is IntensityProvider.forecast_over:
        return False
    source = getattr(provider, "source", None)
    return bool(getattr(source, "has_forecast", True))


def held_over(
    estimate: IntensityEstimate, start_unix_s: float, end_unix_s: float
) -> IntensityEstimate:
    """Rank 0's last ``estimate`` applied to another window, labelled as held.

    A value that does not vary in time (annual average, user-stated: no window) is returned as
    it is. A time-weighted live value becomes one segment over ``[start_unix_s, end_unix_s]``
    whose ``value_start_unix_s``/``value_end_unix_s`` say which window rank 0 computed it for,
    with :data:`HELD_NOTE`.
    """
    if estimate.start_unix_s is None or estimate.end_unix_s is None:
        return estimate
    if end_unix_s < start_unix_s:
        start_unix_s, end_unix_s = end_unix_s, start_unix_s
    segment = IntensitySegment(
        start_unix_s=start_unix_s,
        end_unix_s=end_unix_s,
        intensity_g_per_kwh=estimate.intensity_g_per_kwh,
        kind=estimate.kind,
        source=estimate.source,
        basis=estimate.basis,
        value_start_unix_s=estimate.start_unix_s,
        value_end_unix_s=estimate.end_unix_s,
        note=HELD_NOTE,
    )
    return replace(estimate, start_unix_s=start_unix_s, end_unix_s=end_unix_s, segments=(segment,))
