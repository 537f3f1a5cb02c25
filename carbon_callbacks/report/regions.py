"""Region what-if: the same energy drawn from other grids, as seeds 000 and 004 tabulate.

``CO2eq in zone Z = energy (kWh, PUE included) x annual average intensity of Z`` from the
packaged static tables (Ember via Our World in Data for countries, lifecycle basis; US EPA
eGRID2023 for ``US-xx`` states, direct-combustion basis; the world average of Ember's Global
Electricity Review 2025). Each row carries its value, year, basis and source. Annual averages
hide the hour-to-hour and month-to-month swing a live signal shows (seed 004 found up to 50 %
between months in Germany), so a what-if is a comparison of places, not a forecast.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from carbon_callbacks.core.equivalents import DEFAULT_CAR_BASIS, km_by_car
from carbon_callbacks.core.intensity.static import load_us_state_table, zone_value

#: Zones compared by default: the grids of seeds 000 (Denmark, Estonia, world) and 004 (Sweden,
#: Poland, Germany, the US, China), France (a low-carbon nuclear grid) and the world average.
DEFAULT_ZONES = ("DK", "EE", "SE", "PL", "DE", "FR", "US", "CN", "WORLD")
#: Names of the default zones (the country table has codes only).
ZONE_NAMES = {
    "DK": "Denmark",
    "EE": "Estonia",
    "SE": "Sweden",
    "PL": "Poland",
    "DE": "Germany",
    "FR": "France",
    "US": "United States",
    "CN": "China",
    "GB": "United Kingdom",
    "WORLD": "World average",
}
#: Output formats of :func:`render_regions`.
FORMATS = ("text", "markdown", "json", "csv")


@dataclass(frozen=True)
class RegionRow:
    """The energy's CO2eq in one zone.

    Attributes:
        zone: the zone code (``"DK"``, ``"US-CA"``, ``"WORLD"``).
        name: a readable name, or the code.
        intensity_g_per_kwh: the zone's annual average, gCO2eq/kWh.
        co2_g: grams CO2eq for the energy.
        km_by_car: the same as km by car.
        ratio_to_lowest: ``co2_g`` over the lowest row's (1.0 for the cleanest grid).
        year / basis / kind / source: provenance of the intensity.
    """

    zone: str
    name: str
    intensity_g_per_kwh: float
    co2_g: float
    km_by_car: float
    ratio_to_lowest: float | None
    year: int | None
    basis: str
    kind: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass
class RegionWhatIf:
    """The what-if table.

    Attributes:
        energy_kwh: the energy compared (kWh, PUE included).
        energy_from: where the energy figure comes from, in words.
        rows: one per zone, in the order asked.
        as_logged_co2_g: grams CO2eq the logs recorded for this energy, or None.
        as_logged_label: the intensity the logs applied, in words, or None.
        car_basis: the car factor used for km.
    """

    energy_kwh: float
    energy_from: str
    rows: list[RegionRow] = field(default_factory=list)
    as_logged_co2_g: float | None = None
    as_logged_label: str | None = None
    car_basis: str = DEFAULT_CAR_BASIS

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "energy_kwh": self.energy_kwh,
            "energy_from": self.energy_from,
            "as_logged_co2_g": self.as_logged_co2_g,
            "as_logged_label": self.as_logged_label,
            "car_basis": self.car_basis,
            "rows": [row.to_dict() for row in self.rows],
        }


def parse_zones(text: str) -> list[str]:
    """``"DK, ee,US-CA"`` -> ``["DK", "EE", "US-CA"]`` (empty items dropped)."""
    return [part.strip().upper() for part in text.split(",") if part.strip()]


def what_if(
    energy_kwh: float,
    zones: Iterable[str] = DEFAULT_ZONES,
    *,
    energy_from: str = "given",
    as_logged_co2_g: float | None = None,
    as_logged_label: str | None = None,
    car_basis: str = DEFAULT_CAR_BASIS,
) -> RegionWhatIf:
    """CO2eq of ``energy_kwh`` in each zone.

    Raises:
        ValueError: negative or non-finite energy, or no zone.
        UnknownZoneError: a zone the tables do not know (the message suggests close codes).
    """
    energy = float(energy_kwh)
    if not energy >= 0 or energy == float("inf"):
        raise ValueError(f"energy_kwh must be a finite number >= 0, got {energy_kwh!r}")
    zone_list = list(zones)
    if not zone_list:
        raise ValueError("give at least one zone")
    states = load_us_state_table()
    estimates = [zone_value(zone) for zone in zone_list]
    co2 = [energy * e.intensity_g_per_kwh for e in estimates]
    lowest = min(co2)
    rows = []
    for estimate, grams in zip(estimates, co2, strict=True):
        name = ZONE_NAMES.get(estimate.zone)
        if name is None and estimate.zone in states:
            name = states[estimate.zone].name
        rows.append(
            RegionRow(
                zone=estimate.zone,
                name=name or estimate.zone,
                intensity_g_per_kwh=estimate.intensity_g_per_kwh,
                co2_g=grams,
                km_by_car=km_by_car(grams, car_basis).value,
                ratio_to_lowest=grams / lowest if lowest > 0 else None,
                year=estimate.year,
                basis=estimate.basis,
                kind=estimate.kind,
                source=estimate.source,
            )
        )
    return RegionWhatIf(
        energy_kwh=energy,
        energy_from=energy_from,
        rows=rows,
        as_logged_co2_g=as_logged_co2_g,
        as_logged_label=as_logged_label,
        car_basis=car_basis,
    )


def _g(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.3f} kg"
    return f"{value:.4g} g"


def render_regions(result: RegionWhatIf, fmt: str = "text") -> str:
    """The table in ``fmt`` (``text``, ``markdown``, ``json`` or ``csv``).

    Raises:
        ValueError: unknown format.
    """
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        columns = list(RegionRow.__dataclass_fields__)
        writer = csv.DictWriter(buffer, fieldnames=["energy_kwh", *columns], lineterminator="\n")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({"energy_kwh": result.energy_kwh, **row.to_dict()})
        return buffer.getvalue()
    if fmt not in ("text", "markdown"):
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    headings = ["Zone", "Name", "gCO2eq/kWh", "Year", "CO2eq", "km by car", "x lowest"]
    body = [
        [
            row.zone,
            row.name,
            f"{row.intensity_g_per_kwh:.1f}",
            str(row.year or "-"),
            _g(row.co2_g),
            f"{row.km_by_car:.4g}",
            "-" if row.ratio_to_lowest is None else f"{row.ratio_to_lowest:.1f}",
        ]
        for row in result.rows
    ]
    intro = f"The same {result.energy_kwh:.6g} kWh ({result.energy_from}) in other grids:"
    logged = ""
    if result.as_logged_co2_g is not None:
        logged = f"As logged: {_g(result.as_logged_co2_g)} CO2eq ({result.as_logged_label})."
    sources = sorted({f"{row.source} ({row.basis} basis)" for row in result.rows})
    if fmt == "markdown":
        lines = [intro, "", "| " + " | ".join(headings) + " |"]
        lines.append("|" + "|".join("---" for _ in headings) + "|")
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        if logged:
            lines += ["", logged]
        lines += ["", "Sources:", ""] + [f"- {s}" for s in sources]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headings)]
    lines = [intro, "  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    if logged:
        lines += ["", logged]
    lines += ["", "Sources:"] + [f"  {s}" for s in sources]
    return "\n".join(lines) + "\n"


__all__ = [
    "DEFAULT_ZONES",
    "FORMATS",
    "ZONE_NAMES",
    "RegionRow",
    "RegionWhatIf",
    "parse_zones",
    "render_regions",
    "what_if",
]
