"""The interface every carbon-intensity source implements.

A provider answers one question: what was (or will be) the carbon intensity of the electricity
used in a zone over a time window? The answer carries its provenance: the value in gCO2eq/kWh,
the zone, the source, the basis (lifecycle or direct emissions), whether it is a measurement, a
forecast, an annual average, a user-stated value or a labelled fallback, and the year or the
time span it stands for. A live value that changed within the window also lists the
:class:`IntensitySegment` values it was time-weighted from.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any

#: Allowed values of :attr:`IntensityEstimate.kind`. ``"mixed"``: a time-weighted value whose
#: segments are of different kinds (e.g. measured, then a held or annual value for a gap).
KINDS = ("measured", "forecast", "annual_average", "user", "fallback", "mixed")
#: Allowed values of :attr:`IntensityEstimate.basis`.
BASES = ("lifecycle", "direct", "unknown")


@dataclass(frozen=True)
class IntensitySegment:
    """One stretch of a window over which a single intensity value applied.

    Attributes:
        start_unix_s / end_unix_s: the stretch (seconds since the Unix epoch, UTC).
        intensity_g_per_kwh: grams CO2eq per kWh applied over it.
        kind: ``"measured"``, ``"forecast"``, ``"annual_average"``, ``"user"``, ``"fallback"``, or
            ``"mixed"`` for a stretch merged from values of different kinds.
        source: the dataset or table it came from.
        basis: ``"lifecycle"``, ``"direct"`` or ``"unknown"``.
        value_start_unix_s / value_end_unix_s: the time slot the published value is for (a
            held value's slot lies before the stretch), ``None`` for annual values.
        note: why this value was used where it is not the slot's own value, e.g. ``"held"`` (the
            last value, carried over a gap) or ``"no live value yet"``; else ``""``.
    """

    start_unix_s: float
    end_unix_s: float
    intensity_g_per_kwh: float
    kind: str
    source: str
    basis: str = "unknown"
    value_start_unix_s: float | None = None
    value_end_unix_s: float | None = None
    note: str = ""

    @property
    def duration_s(self) -> float:
        """Length of the stretch in seconds."""
        return self.end_unix_s - self.start_unix_s


@dataclass(frozen=True)
class IntensityEstimate:
    """Carbon intensity applied to one window, with its provenance.

    Attributes:
        intensity_g_per_kwh: grams CO2eq per kWh.
        zone: the zone it is for: ISO 3166 alpha-2 (``"DK"``), US state (``"US-CA"``), a grid
            zone (``"DK1"``) or ``"WORLD"``.
        source: who published it and how it reached us (dataset, year, table or API).
        basis: ``"lifecycle"``, ``"direct"`` or ``"unknown"``.
        kind: ``"measured"``, ``"forecast"``, ``"annual_average"``, ``"user"`` or ``"fallback"``.
        year: the year an annual average stands for, else ``None``.
        start_unix_s / end_unix_s: the window a live value was computed for, else ``None``.
        segments: for live values, the values applied over the window, oldest first; the
            estimate is their time-weighted mean. Empty for values that do not vary in time.
    """

    intensity_g_per_kwh: float
    zone: str
    source: str
    basis: str = "unknown"
    kind: str = "annual_average"
    year: int | None = None
    start_unix_s: float | None = None
    end_unix_s: float | None = None
    segments: tuple[IntensitySegment, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"intensity kind must be one of {KINDS}, got {self.kind!r}")
        if self.basis not in BASES:
            raise ValueError(f"intensity basis must be one of {BASES}, got {self.basis!r}")
        if not self.intensity_g_per_kwh >= 0:
            raise ValueError(f"intensity must be >= 0 g/kWh, got {self.intensity_g_per_kwh!r}")

    @property
    def is_fallback(self) -> bool:
        """True when no value for the user's location was available (world average)."""
        return self.kind == "fallback"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``segments`` as a list of dicts)."""
        # what asdict() gives, without its deep copy of every field: the fields are plain
        # values (written to the run log on every epoch, so the copy was a cost)
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["segments"] = [asdict(s) for s in self.segments]
        return out

    def describe(self) -> str:
        """One line for reports, e.g. ``"DK 150.0 g/kWh (annual average 2024, Ember ...)"``."""
        when = f" {self.year}" if self.year is not None else ""
        label = self.kind.replace("_", " ")
        return (
            f"{self.zone} {self.intensity_g_per_kwh:.1f} gCO2eq/kWh ({label}{when}; {self.source})"
        )


class IntensityProvider(ABC):
    """A source of carbon intensity for one zone.

    Implementations must not block the training thread: live providers fetch on a background
    thread and answer :meth:`intensity_over` from what they already hold.
    """

    zone: str

    @abstractmethod
    def intensity_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate:
        """Intensity that applies to electricity used between the two times (UTC seconds)."""

    def forecast_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate | None:
        """Forecast intensity over a future window, or ``None`` when the source has none."""
        return None

    def close(self) -> None:
        """Stop any background work. Idempotent."""
