"""The carbon intensity a session applies to its windows, never failing and never silent.

:class:`AppliedIntensity` wraps the session's provider: when the provider raises, the window gets
the packaged annual average for the zone (or the labelled world average), with one warning per
failure streak and a note when the source answers again; a forecast that fails is ``None`` with
a warning. On a rank other than 0 of a combined run it holds rank 0's last value instead of asking
a source of its own (see :mod:`carbon_callbacks.core.intensity.ranks`).
"""

from __future__ import annotations

import contextlib

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensityProvider
from carbon_callbacks.core.intensity.ranks import DeferredLiveProvider, can_forecast, held_over
from carbon_callbacks.core.intensity.static import StaticIntensityProvider


class AppliedIntensity:
    """The session's provider, its labelled fallback, and rank 0's values on other ranks.

    Args:
        provider: the provider resolved from the settings or given by the user.
        owned: whether the session made ``provider`` (then :meth:`close` closes it).

    Attributes:
        rank_zero: rank 0's last intensity received (or, on rank 0, sent) in the per-epoch
            exchange; ``None`` before the first.
    """

    def __init__(self, provider: IntensityProvider, owned: bool) -> None:
        self.provider = provider
        self.owned = owned
        self.rank_zero: IntensityEstimate | None = None
        self._follows_rank_zero = False
        self._failing = False
        self._fallback: IntensityProvider | None = None

    @property
    def zone_label(self) -> str:
        return str(getattr(self.provider, "zone", None) or "this run")

    def can_forecast(self) -> bool:
        """Whether the provider may answer a forecast (asks for nothing)."""
        return can_forecast(self.provider)

    def over(self, start_unix_s: float, end_unix_s: float, events: EventLog) -> IntensityEstimate:
        """The intensity (g/kWh, with provenance) over the window; never raises."""
        if self._follows_rank_zero and self.rank_zero is not None:
            return held_over(self.rank_zero, start_unix_s, end_unix_s)
        try:
            estimate = self.provider.intensity_over(start_unix_s, end_unix_s)
        except Exception as exc:  # noqa: BLE001 - a provider must never cost an epoch
            estimate = self._static().intensity_over(start_unix_s, end_unix_s)
            if not self._failing:
                self._failing = True
                events.record(
                    "intensity_failed",
                    f"the carbon-intensity source for {self.zone_label} failed ({exc!r}); "
                    f"using {estimate.describe()} until it answers again",
                    "intensity",
                )
            return estimate
        if self._failing:
            self._failing = False
            events.record(
                "intensity_recovered",
                f"the carbon-intensity source for {self.zone_label} answers again",
                "intensity",
                warn=False,
            )
        return estimate

    def forecast_over(
        self, start_unix_s: float, end_unix_s: float, events: EventLog
    ) -> IntensityEstimate | None:
        """The provider's forecast, or ``None`` (the caller then uses the last epoch's value)."""
        try:
            return self.provider.forecast_over(start_unix_s, end_unix_s)
        except Exception as exc:  # noqa: BLE001
            events.record(
                "intensity_forecast_failed",
                f"the carbon-intensity forecast for {self.zone_label} failed ({exc!r}); the "
                "prediction uses the intensity of the last epoch instead",
                "intensity",
            )
            return None

    def activate(self, events: EventLog) -> None:
        """Start a live provider that was put off until the ranks were known."""
        if isinstance(self.provider, DeferredLiveProvider):
            self.provider = self.provider.activate(events)

    def follow_rank_zero(self, rank: int, events: EventLog) -> None:
        """From now on apply rank 0's values; close a live provider this rank already started
        (it could not tell it was a rank at construction), so requests do not grow with ranks."""
        self._follows_rank_zero = True
        if self.owned and getattr(self.provider, "running", False):
            with contextlib.suppress(Exception):
                self.provider.close()
            events.record(
                "intensity_live_closed",
                f"rank {rank} closed the live carbon-intensity source it had started before the "
                "ranks were known; it uses rank 0's values",
                "intensity",
                warn=False,
            )

    def alone(self, events: EventLog) -> None:
        """The ranks no longer exchange: ask this rank's own source from now on."""
        if self._follows_rank_zero:
            self._follows_rank_zero = False
            self.activate(events)

    def close(self, events: EventLog) -> None:
        """Stop the provider's background work, if the session made the provider."""
        if not self.owned:
            return
        try:
            self.provider.close()
        except Exception as exc:  # noqa: BLE001
            events.record(
                "intensity_close_failed",
                f"closing the intensity source failed: {exc!r}",
                "intensity",
                warn=False,
            )

    def _static(self) -> IntensityProvider:
        """The packaged annual average for the provider's zone (or its country, e.g. DK for
        DK1), else the world average labelled as a fallback."""
        if self._fallback is None:
            zone = str(getattr(self.provider, "zone", "") or "")
            for candidate in dict.fromkeys((zone, zone[:2])):
                try:
                    self._fallback = StaticIntensityProvider(candidate)
                    break
                except Exception:  # noqa: BLE001 - not in the tables
                    continue
            else:
                self._fallback = StaticIntensityProvider.world_fallback()
        return self._fallback
