"""Published intensity values as a piecewise-constant series, and time-weighting over a window.

A live source publishes one value per time slot (5 min for Energi Data Service, 30 min for the GB
API, 1 h for Electricity Maps), measured for the past and forecast for the future. A
:class:`Timeline` holds those slots without overlaps (a measured value replaces a forecast for the
same slot; a newer fetch replaces an older one), and :func:`weigh` turns any window into the
time-weighted mean of the values that applied, with the list of :class:`IntensitySegment` s it
was computed from, so a run log can say which values, sources and times were used.

Time-weighting assumes the power was steady over the window (the tracker has the energy of the
window, not its shape in time). Gaps are filled, and labelled: by holding the last value before
the gap for at most ``max_hold_s`` seconds, else by the fallback (the zone's annual average).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensitySegment

#: Most segments stored per estimate; longer lists are merged into this many time buckets.
MAX_SEGMENTS = 96
#: Default longest gap bridged by holding the last value, seconds.
MAX_HOLD_S = 2 * 3600.0
#: Points kept per timeline (about 35 days of 5-minute values); the oldest go first.
MAX_POINTS = 10_000

_RANK = {"measured": 2, "forecast": 1}


@dataclass(frozen=True)
class IntensityPoint:
    """One published value for one time slot.

    Attributes:
        start_unix_s / end_unix_s: the slot (UTC seconds), start < end.
        intensity_g_per_kwh: gCO2(eq)/kWh, finite and >= 0.
        kind: ``"measured"`` or ``"forecast"``.
        source: the dataset it came from, e.g. ``"Energi Data Service CO2Emis"``.
        basis: ``"lifecycle"``, ``"direct"`` or ``"unknown"``.
        fetched_unix_s: when it was received (a newer fetch wins for the same slot).
    """

    start_unix_s: float
    end_unix_s: float
    intensity_g_per_kwh: float
    kind: str
    source: str
    basis: str = "unknown"
    fetched_unix_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _RANK:
            raise ValueError(f"point kind must be 'measured' or 'forecast', got {self.kind!r}")
        if not (math.isfinite(self.start_unix_s) and math.isfinite(self.end_unix_s)):
            raise ValueError("point times must be finite")
        if not self.end_unix_s > self.start_unix_s:
            raise ValueError(f"point ends before it starts: {self.start_unix_s}..{self.end_unix_s}")
        value = self.intensity_g_per_kwh
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"intensity must be a finite number >= 0 g/kWh, got {value!r}")


class Timeline:
    """Non-overlapping points sorted by time; thread-safe; bounded.

    Args:
        max_points: points kept; the oldest are dropped beyond this.
    """

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self._by_start: dict[float, IntensityPoint] = {}
        self._points: list[IntensityPoint] = []
        self._starts: list[float] = []
        self._lock = threading.Lock()
        self._max = max_points

    def update(self, points: Iterable[IntensityPoint]) -> int:
        """Add points; a slot keeps its best value (measured > forecast, then the newest).

        Returns:
            How many slots were added or changed.
        """
        changed = 0
        with self._lock:
            for point in points:
                old = self._by_start.get(point.start_unix_s)
                if old is not None and (_RANK[old.kind], old.fetched_unix_s) > (
                    _RANK[point.kind],
                    point.fetched_unix_s,
                ):
                    continue
                if old != point:
                    self._by_start[point.start_unix_s] = point
                    changed += 1
            if changed:
                self._rebuild()
        return changed

    def _rebuild(self) -> None:
        ordered = sorted(self._by_start.values(), key=lambda p: (p.start_unix_s, -_RANK[p.kind]))
        if len(ordered) > self._max:
            for p in ordered[: len(ordered) - self._max]:
                del self._by_start[p.start_unix_s]
            ordered = ordered[len(ordered) - self._max :]
        clean: list[IntensityPoint] = []
        for p in ordered:  # clip overlaps: an earlier slot keeps its time, a later one shrinks
            if clean and p.start_unix_s < clean[-1].end_unix_s:
                if p.end_unix_s <= clean[-1].end_unix_s:
                    continue
                p = replace(p, start_unix_s=clean[-1].end_unix_s)
            clean.append(p)
        self._points = clean
        self._starts = [p.start_unix_s for p in clean]

    def snapshot(self) -> list[IntensityPoint]:
        """All points, oldest first (a copy)."""
        with self._lock:
            return list(self._points)

    def window(
        self, start_unix_s: float, end_unix_s: float
    ) -> tuple[IntensityPoint | None, list[IntensityPoint]]:
        """The last point ending at or before ``start_unix_s`` and the points overlapping the
        window ``[start, end]`` (a zero-length window gets the point that covers it)."""
        with self._lock:
            points, starts = self._points, self._starts
            i = bisect.bisect_right(starts, start_unix_s) - 1
            before = None
            if i >= 0 and points[i].end_unix_s <= start_unix_s:
                before = points[i]
                i += 1
            i = max(i, 0)
            inside: list[IntensityPoint] = []
            while i < len(points) and (
                points[i].start_unix_s < end_unix_s
                or (points[i].start_unix_s == start_unix_s == end_unix_s)
            ):
                if points[i].end_unix_s > start_unix_s:
                    inside.append(points[i])
                i += 1
            return before, inside

    def last_end_unix_s(self, kind: str | None = None) -> float | None:
        """End of the last point (of ``kind`` when given), or ``None`` when there is none."""
        with self._lock:
            for p in reversed(self._points):
                if kind is None or p.kind == kind:
                    return p.end_unix_s
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._points)


def weigh(
    points: Sequence[IntensityPoint],
    start_unix_s: float,
    end_unix_s: float,
    *,
    zone: str,
    fallback: IntensityEstimate,
    before: IntensityPoint | None = None,
    max_hold_s: float = MAX_HOLD_S,
    gap_note: str = "no live value for this time",
) -> IntensityEstimate:
    """Time-weighted intensity over ``[start, end]`` from non-overlapping, sorted points.

    Args:
        points: the points that overlap the window, oldest first (see :meth:`Timeline.window`).
        start_unix_s / end_unix_s: the window; equal times ask for the value at that instant.
        zone: the zone the estimate is for.
        fallback: the value for stretches no point covers and no held value reaches.
        before: the last point ending before the window (its value may be held into it).
        max_hold_s: longest time after a point's end its value is carried over a gap.
        gap_note: the note of fallback stretches.

    Returns:
        An estimate whose value is ``sum(value_i x seconds_i) / seconds`` over its segments,
        with ``kind`` the segments' common kind (``"mixed"`` when they differ) and ``basis``
        their common basis (``"unknown"`` when they differ).
    """
    if end_unix_s < start_unix_s:
        raise ValueError(f"window ends before it starts: {start_unix_s}..{end_unix_s}")
    segments: list[IntensitySegment] = []
    last = before
    t = start_unix_s

    def fill(a: float, b: float) -> None:
        nonlocal last
        if last is not None and a - last.end_unix_s < max_hold_s:
            hold_end = min(b, last.end_unix_s + max_hold_s)
            segments.append(_segment(last, a, hold_end, note="held: last value before a gap"))
            a = hold_end
        if a < b or (a == b and not segments):
            segments.append(
                IntensitySegment(
                    a,
                    b,
                    fallback.intensity_g_per_kwh,
                    fallback.kind,
                    fallback.source,
                    fallback.basis,
                    note=gap_note,
                )
            )

    for p in points:
        if p.end_unix_s <= t and not (p.start_unix_s <= t < p.end_unix_s):
            continue
        if p.start_unix_s > t:
            if p.start_unix_s >= end_unix_s:
                break
            fill(t, p.start_unix_s)
            t = p.start_unix_s
        stop = min(p.end_unix_s, end_unix_s)
        segments.append(_segment(p, t, stop))
        last = p
        t = stop
        if t >= end_unix_s:
            break
    if t < end_unix_s or not segments:
        fill(t, end_unix_s)
    return estimate_from_segments(segments, zone, start_unix_s, end_unix_s)


def _segment(p: IntensityPoint, a: float, b: float, note: str = "") -> IntensitySegment:
    return IntensitySegment(
        a,
        b,
        p.intensity_g_per_kwh,
        p.kind,
        p.source,
        p.basis,
        value_start_unix_s=p.start_unix_s,
        value_end_unix_s=p.end_unix_s,
        note=note,
    )


def estimate_from_segments(
    segments: Sequence[IntensitySegment], zone: str, start_unix_s: float, end_unix_s: float
) -> IntensityEstimate:
    """The time-weighted estimate of segments that tile ``[start, end]`` (see :func:`weigh`)."""
    if not segments:
        raise ValueError("no segments to weigh")
    merged = _merge_equal(segments)
    total_s = sum(s.duration_s for s in merged)
    if len({s.intensity_g_per_kwh for s in merged}) == 1:  # exact, no rounding of a constant
        value = merged[0].intensity_g_per_kwh
    elif total_s > 0:
        value = sum(s.intensity_g_per_kwh * s.duration_s for s in merged) / total_s
    else:  # an instant: the value that applies at it
        value = merged[0].intensity_g_per_kwh
    kinds = {s.kind for s in merged}
    bases = {s.basis for s in merged}
    sources = list(dict.fromkeys(s.source for s in merged))
    if len(merged) > MAX_SEGMENTS:
        merged = _coarsen(merged, MAX_SEGMENTS)
    return IntensityEstimate(
        intensity_g_per_kwh=value,
        zone=zone,
        source="; ".join(sources),
        basis=bases.pop() if len(bases) == 1 else "unknown",
        kind=kinds.pop() if len(kinds) == 1 else "mixed",
        start_unix_s=start_unix_s,
        end_unix_s=end_unix_s,
        segments=tuple(merged),
    )


def _merge_equal(segments: Sequence[IntensitySegment]) -> list[IntensitySegment]:
    """Join neighbours that hold the same published value (same slot, or the same held value)."""
    out: list[IntensitySegment] = []
    for s in segments:
        if s.duration_s == 0 and out:
            continue
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.end_unix_s == s.start_unix_s
            and (prev.intensity_g_per_kwh, prev.kind, prev.source, prev.basis, prev.note)
            == (s.intensity_g_per_kwh, s.kind, s.source, s.basis, s.note)
            and (prev.value_start_unix_s, prev.value_end_unix_s)
            == (s.value_start_unix_s, s.value_end_unix_s)
        ):
            out[-1] = replace(prev, end_unix_s=s.end_unix_s)
        else:
            out.append(s)
    return out


def _coarsen(segments: Sequence[IntensitySegment], limit: int) -> list[IntensitySegment]:
    """Merge consecutive segments into ``limit`` groups, each with its time-weighted value."""
    size = math.ceil(len(segments) / limit)
    out = []
    for i in range(0, len(segments), size):
        group = segments[i : i + size]
        span = sum(s.duration_s for s in group)
        value = (
            sum(s.intensity_g_per_kwh * s.duration_s for s in group) / span
            if span > 0
            else group[0].intensity_g_per_kwh
        )
        kinds = {s.kind for s in group}
        bases = {s.basis for s in group}
        out.append(
            IntensitySegment(
                group[0].start_unix_s,
                group[-1].end_unix_s,
                value,
                kinds.pop() if len(kinds) == 1 else "mixed",
                "; ".join(dict.fromkeys(s.source for s in group)),
                bases.pop() if len(bases) == 1 else "unknown",
                value_start_unix_s=group[0].value_start_unix_s,
                value_end_unix_s=group[-1].value_end_unix_s,
                note=f"time-weighted mean of {len(group)} published values",
            )
        )
    return out
