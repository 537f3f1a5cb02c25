"""Carbon-aware start: the start time within a forecast that minimises a run's emissions.

For a run of ``duration_s`` seconds drawing steady power, its emissions are proportional to the
mean intensity over ``[t, t + duration]``. With a piecewise-constant forecast that mean is
piecewise linear in ``t``, with corners only where ``t`` or ``t + duration`` meets a slot
boundary, so the minimum is at one of those corners or at the ends of the allowed range:
:func:`plan_start` evaluates exactly those candidates (an exact search, not a grid), and ties go
to the earliest start. The saving is reported against starting now.

:func:`best_start` fetches the zone's forecast once (same providers and settings as live
tracking, bounded timeouts, on the caller's thread: it is a planning tool, not used in training)
and plans. It never works offline: with ``offline=True`` or ``$CARBON_CALLBACKS_OFFLINE`` it
says so instead of opening a socket.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from carbon_callbacks.core.intensity.live import format_utc
from carbon_callbacks.core.intensity.timeline import IntensityPoint

#: Exit status for bad input (used by the CLI).
EXIT_BAD_INPUT = 2
#: Exit status when the data cannot answer (no forecast, too short, network failure).
EXIT_NO_DATA = 3
_EPS_S = 1e-6


class ScheduleError(ValueError):
    """No plan can be made; the message says why and what to change.

    Attributes:
        exit_code: :data:`EXIT_BAD_INPUT` or :data:`EXIT_NO_DATA`.
    """

    def __init__(self, message: str, exit_code: int = EXIT_NO_DATA) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class StartPlan:
    """The best start time for a run, and what it saves against starting now.

    Attributes:
        zone: the zone planned for.
        source: the forecast's source(s).
        duration_s: the run's duration, seconds.
        now_unix_s: when the plan was made (UTC seconds).
        start_unix_s / end_unix_s: the best window.
        intensity_g_per_kwh: mean intensity over the best window (time-weighted).
        now_intensity_g_per_kwh: mean intensity over ``[now, now + duration]``.
        horizon_end_unix_s: where the forecast's continuous coverage ends.
        latest_end_unix_s: the latest end allowed (the horizon, or sooner if asked).
        candidates: start times evaluated.
        energy_kwh: the run's energy when given, else ``None``.
        notes: caveats (e.g. a forecast the plan could not use in part).
    """

    zone: str
    source: str
    duration_s: float
    now_unix_s: float
    start_unix_s: float
    end_unix_s: float
    intensity_g_per_kwh: float
    now_intensity_g_per_kwh: float
    horizon_end_unix_s: float
    latest_end_unix_s: float
    candidates: int
    energy_kwh: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def delay_s(self) -> float:
        """Seconds from now to the best start."""
        return self.start_unix_s - self.now_unix_s

    @property
    def saving_fraction(self) -> float:
        """1 - best / now: the share of emissions avoided by waiting (0 when now is best)."""
        if self.now_intensity_g_per_kwh <= 0:
            return 0.0
        return 1.0 - self.intensity_g_per_kwh / self.now_intensity_g_per_kwh

    @property
    def co2_g(self) -> float | None:
        """Grams CO2eq at the best start (needs ``energy_kwh``)."""
        return None if self.energy_kwh is None else self.energy_kwh * self.intensity_g_per_kwh

    @property
    def now_co2_g(self) -> float | None:
        """Grams CO2eq when started now (needs ``energy_kwh``)."""
        return None if self.energy_kwh is None else self.energy_kwh * self.now_intensity_g_per_kwh

    @property
    def saving_co2_g(self) -> float | None:
        """Grams CO2eq avoided by the best start (needs ``energy_kwh``)."""
        if self.energy_kwh is None:
            return None
        return self.energy_kwh * (self.now_intensity_g_per_kwh - self.intensity_g_per_kwh)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with the derived figures and ISO times."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        out.update(
            delay_s=self.delay_s,
            saving_fraction=self.saving_fraction,
            co2_g=self.co2_g,
            now_co2_g=self.now_co2_g,
            saving_co2_g=self.saving_co2_g,
            start=format_utc(self.start_unix_s, "%Y-%m-%dT%H:%M:%SZ"),
            end=format_utc(self.end_unix_s, "%Y-%m-%dT%H:%M:%SZ"),
            horizon_end=format_utc(self.horizon_end_unix_s, "%Y-%m-%dT%H:%M:%SZ"),
        )
        return out

    def describe(self) -> str:
        """A few lines for people."""
        fmt = "%Y-%m-%d %H:%M UTC"
        lines = [
            f"Best start for a {_hm(self.duration_s)} run in {self.zone} "
            f"(forecast to {format_utc(self.horizon_end_unix_s, fmt)}; {self.source}):",
            f"  start {format_utc(self.start_unix_s, fmt)}"
            + (f" (in {_hm(self.delay_s)})" if self.delay_s > 0.5 else " (now)")
            + f", end {format_utc(self.end_unix_s, fmt)}",
            f"  mean intensity {self.intensity_g_per_kwh:.1f} gCO2/kWh; starting now "
            f"{self.now_intensity_g_per_kwh:.1f} gCO2/kWh: "
            + (
                f"{100 * self.saving_fraction:.1f} % lower"
                if self.saving_fraction > 0
                else "starting now is best"
            ),
        ]
        if self.energy_kwh is not None:
            lines.append(
                f"  with {self.energy_kwh:g} kWh: {self.co2_g:.4g} g CO2 instead of "
                f"{self.now_co2_g:.4g} g (saves {self.saving_co2_g:.4g} g)"
            )
        lines.append(f"  {self.candidates} start times compared (exact search over the slots)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _hm(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def plan_start(
    points: Sequence[IntensityPoint],
    duration_s: float,
    *,
    now_unix_s: float,
    energy_kwh: float | None = None,
    latest_end_unix_s: float | None = None,
    zone: str = "",
    notes: Sequence[str] = (),
) -> StartPlan:
    """The start in ``[now, horizon - duration]`` with the least mean intensity (exact).

    Args:
        points: published values (measured or forecast), any order; the slot that covers
            ``now_unix_s`` and those continuing it without a gap are used.
        duration_s: the run's duration, seconds (> 0).
        now_unix_s: the earliest start (UTC seconds).
        energy_kwh: the run's energy, for grams (optional).
        latest_end_unix_s: the run must end by then (optional; default the horizon).
        zone: label for the plan.
        notes: caveats to carry.

    Raises:
        ScheduleError: bad duration or energy, no value for now, or the forecast (or the latest
            end asked for) ends before a run started now would.
    """
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
        raise ScheduleError(f"duration must be > 0 seconds, got {duration_s!r}", EXIT_BAD_INPUT)
    if energy_kwh is not None and not (math.isfinite(energy_kwh) and energy_kwh >= 0):
        raise ScheduleError(f"energy must be >= 0 kWh, got {energy_kwh!r}", EXIT_BAD_INPUT)
    chain = _chain_from_now(points, now_unix_s)
    horizon = chain[-1].end_unix_s
    limit = horizon if latest_end_unix_s is None else min(horizon, latest_end_unix_s)
    if now_unix_s + duration_s > limit + _EPS_S:
        ahead_h = (limit - now_unix_s) / 3600
        what = "forecast" if limit == horizon else "time allowed (--within)"
        raise ScheduleError(
            f"the {what} reaches {format_utc(limit)}, {ahead_h:.1f} h ahead, shorter than the "
            f"{duration_s / 3600:.1f} h run: no start can be chosen inside it. Plan a shorter "
            "part of the run, or start now and let the tracker measure it"
        )
    best_t, best_v, now_v, candidates = _least_mean_start(chain, duration_s, now_unix_s, limit)
    sources = list(dict.fromkeys(p.source for p in chain))
    return StartPlan(
        zone=zone,
        source="; ".join(sources),
        duration_s=float(duration_s),
        now_unix_s=now_unix_s,
        start_unix_s=best_t,
        end_unix_s=best_t + duration_s,
        intensity_g_per_kwh=best_v,
        now_intensity_g_per_kwh=now_v,
        horizon_end_unix_s=horizon,
        latest_end_unix_s=limit,
        candidates=len(candidates),
        energy_kwh=energy_kwh,
        notes=tuple(notes),
    )


def _chain_from_now(points: Sequence[IntensityPoint], now_unix_s: float) -> list[IntensityPoint]:
    """The slot covering ``now_unix_s`` and those continuing it without a gap (measured values
    win over forecast ones for the same slot).

    Raises:
        ScheduleError: no value covers now.
    """
    ordered = sorted(points, key=lambda p: (p.start_unix_s, p.kind != "measured"))
    chain: list[IntensityPoint] = []
    for p in ordered:
        if not chain:
            if p.start_unix_s <= now_unix_s < p.end_unix_s:
                chain.append(p)
            continue
        if p.end_unix_s <= chain[-1].end_unix_s:
            continue  # same slot again (measured and forecast): the measured one came first
        if p.start_unix_s > chain[-1].end_unix_s + _EPS_S:
            break  # a gap ends the usable forecast
        chain.append(p)
    if not chain:
        first = format_utc(ordered[0].start_unix_s) if ordered else "nothing"
        raise ScheduleError(
            f"the forecast has no value for now ({format_utc(now_unix_s)}); it starts at {first}"
        )
    return chain


def _least_mean_start(
    chain: list[IntensityPoint], duration_s: float, now_unix_s: float, limit_unix_s: float
) -> tuple[float, float, float, set[float]]:
    """(best start, its mean g/kWh, the mean starting now, the starts tried): exact, since the
    mean over a window is piecewise linear in its start, so slot edges are the only candidates."""
    bounds = [max(chain[0].start_unix_s, now_unix_s)] + [p.end_unix_s for p in chain]
    values = [p.intensity_g_per_kwh for p in chain]
    prefix = [0.0]
    for i, v in enumerate(values):
        prefix.append(prefix[-1] + v * (bounds[i + 1] - bounds[i]))

    def integral_to(t: float) -> float:
        i = min(max(bisect.bisect_right(bounds, t) - 1, 0), len(values) - 1)
        return prefix[i] + values[i] * (t - bounds[i])

    def mean(t: float) -> float:
        return (integral_to(t + duration_s) - integral_to(t)) / duration_s

    last_start = limit_unix_s - duration_s
    candidates = {now_unix_s, max(now_unix_s, last_start)}
    for b in bounds:
        for t in (b, b - duration_s):
            if now_unix_s <= t <= last_start:
                candidates.add(t)
    best_t, best_v = now_unix_s, mean(now_unix_s)
    now_v = best_v
    for t in sorted(candidates):
        v = mean(t)
        if v < best_v - 1e-9 * max(1.0, abs(best_v)):
            best_t, best_v = t, v
    return best_t, best_v, now_v, candidates


def best_start(
    zone: str | None = None,
    duration_s: float | None = None,
    *,
    energy_kwh: float | None = None,
    within_s: float | None = None,
    now_unix_s: float | None = None,
    timeout_s: float = 20.0,
    **settings: Any,
) -> StartPlan:
    """Fetch the zone's forecast and return the best start for a run of ``duration_s``.

    Args:
        zone: ``"DK1"``, ``"DK2"``, ``"DK"``, ``"GB"`` (key-less), or any zone with an
            Electricity Maps token whose plan includes forecasts.
        duration_s: the run's duration, seconds (e.g. a prediction's ``duration_s``).
        energy_kwh: the run's energy, to report grams (optional).
        within_s: the run must end within this many seconds from now (optional).
        now_unix_s: the earliest start (default: now).
        timeout_s: bound of the whole fetch, seconds.
        **settings: :class:`~carbon_callbacks.core.config.CarbonConfig` settings for the
            providers: ``live_intensity`` (a provider name), ``electricitymaps_token``,
            ``electricitymaps_zone``, ``gb_region``, ``gb_postcode``, ``offline`` (and
            ``_endpoints``, the services' addresses).

    Raises:
        ConfigError: bad settings (unknown zone, malformed token...).
        ScheduleError: offline, no forecast for the zone, or one too short for the run.
    """
    from carbon_callbacks.core.config import CarbonConfig
    from carbon_callbacks.core.intensity.http import FetchError, HttpClient
    from carbon_callbacks.core.intensity.resolve import live_source_for

    if duration_s is None:
        raise ScheduleError("give the run's duration in seconds (duration_s)", EXIT_BAD_INPUT)
    settings.setdefault("live_intensity", True)
    config = CarbonConfig.from_kwargs(log_dir=None, zone=zone, **settings)
    if config.offline:
        raise ScheduleError(
            "best_start needs a forecast from the network, but the network is off "
            "(offline=True or $CARBON_CALLBACKS_OFFLINE); nothing was fetched",
            EXIT_BAD_INPUT,
        )
    source = live_source_for(config)
    now = time.time() if now_unix_s is None else now_unix_s
    client = HttpClient(max_total_s=timeout_s)
    try:
        result = source.fetch(client, now)
    except FetchError as exc:
        raise ScheduleError(f"no forecast from {source.description}: {exc}") from None
    finally:
        client.close()
    if not any(p.kind == "forecast" for p in result.points):
        why = "; ".join(result.problems) or "the answer held no forecast values"
        raise ScheduleError(f"no forecast from {source.description}: {why}")
    latest_end = now + within_s if within_s is not None else None
    if within_s is not None and not (math.isfinite(within_s) and within_s > 0):
        raise ScheduleError(f"within must be > 0 seconds, got {within_s!r}", EXIT_BAD_INPUT)
    return plan_start(
        result.points,
        duration_s,
        now_unix_s=now,
        energy_kwh=energy_kwh,
        latest_end_unix_s=latest_end,
        zone=source.zone,
        notes=result.problems,
    )
