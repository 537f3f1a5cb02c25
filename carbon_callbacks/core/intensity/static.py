"""Packaged annual carbon intensities, user-stated values and the labelled world fallback.

Offline, always available, no I/O after the first (cached) read of the package's tables:

- countries: ``carbon_callbacks/data/country_intensity.csv``, Ember via Our World in Data (CC BY
  4.0), lifecycle gCO2eq/kWh, latest year per country, keyed by ISO 3166-1 alpha-2 (``"DK"``);
- US states: ``carbon_callbacks/data/us_state_intensity.csv``, US EPA eGRID2023 ``STC2ERTA``, the
  CO2-equivalent *output emission rate* of the plants in the state. eGRID counts emissions from
  fuel combustion at the plants only (no fuel supply chain, no construction), so its basis is
  ``"direct"``, not lifecycle; expect it below the lifecycle figure for the same grid. Zones are
  ``"US-"`` plus the USPS code (``"US-CA"``); ``"US"`` alone is the Ember country row;
- the world average, 473 gCO2eq/kWh for 2024 (Ember, Global Electricity Review 2025), zone
  ``"WORLD"``: kind ``"fallback"`` when it stands in for an unknown location.

``carbon_callbacks/data/INTENSITY_SOURCES.md`` holds the attribution and is regenerated with the
tables by ``scripts/build_intensity_tables.py``.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

from carbon_callbacks.core.config import ConfigError, normalise_zone
from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensityProvider

COUNTRY_TABLE = "country_intensity.csv"
US_STATE_TABLE = "us_state_intensity.csv"
US_STATE_PREFIX = "US-"

#: Zone code of the world average.
WORLD_ZONE = "WORLD"
#: World average grid intensity in gCO2eq/kWh, lifecycle basis, for :data:`WORLD_YEAR`.
WORLD_INTENSITY_G_PER_KWH = 473.0
#: Year the world average stands for.
WORLD_YEAR = 2024
#: Zone label of a user-stated value given without a zone.
USER_ZONE = "USER"

COUNTRY_SOURCE = "Ember via Our World in Data, carbon-intensity-electricity (packaged table)"
US_STATE_SOURCE = (
    "US EPA eGRID2023, state CO2e output emission rate STC2ERTA, combustion emissions only "
    "(packaged table)"
)
WORLD_SOURCE = "world average, Ember Global Electricity Review 2025"
WORLD_FALLBACK_SOURCE = (
    f"{WORLD_SOURCE}; used as a fallback because the location is unknown "
    "(set zone or intensity_g_per_kwh)"
)

#: Codes people type that are not ISO 3166-1 alpha-2, and what they mean.
_ALIASES = {"UK": "GB", "EL": "GR", "USA": "US", "UAE": "AE", "GER": "DE"}


class UnknownZoneError(ConfigError):
    """A zone code that no table or provider knows.

    Attributes:
        zone: the code as given.
        suggestions: close matches, best first (possibly empty).
    """

    def __init__(self, message: str, zone: str, suggestions: list[str]) -> None:
        super().__init__(message)
        self.zone = zone
        self.suggestions = suggestions


@dataclass(frozen=True)
class TableEntry:
    """One row of a packaged table.

    Attributes:
        zone: ``"DK"`` or ``"US-CA"``.
        intensity_g_per_kwh: annual average, gCO2eq/kWh.
        year: the year the value stands for.
        name: the state's name for US states, ``""`` for countries (the table has no names).
    """

    zone: str
    intensity_g_per_kwh: float
    year: int
    name: str = ""


def _read_table(file_name: str) -> list[dict[str, str]]:
    text = (resources.files("carbon_callbacks") / "data" / file_name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _entry(file_name: str, zone: str, value: str, year: str, name: str = "") -> TableEntry:
    try:
        intensity_g_per_kwh, data_year = float(value), int(year)
    except (TypeError, ValueError):
        intensity_g_per_kwh, data_year = math.nan, 0
    if not (math.isfinite(intensity_g_per_kwh) and intensity_g_per_kwh >= 0):
        raise RuntimeError(
            f"packaged table {file_name} has a bad row for {zone!r} ({value!r}, {year!r}); "
            "regenerate it with scripts/build_intensity_tables.py"
        )
    return TableEntry(zone, intensity_g_per_kwh, data_year, name)


@lru_cache(maxsize=1)
def load_country_table() -> Mapping[str, TableEntry]:
    """Countries by ISO 3166-1 alpha-2 code; lifecycle gCO2eq/kWh (read once, cached)."""
    rows = _read_table(COUNTRY_TABLE)
    table = {
        r["alpha2"]: _entry(COUNTRY_TABLE, r["alpha2"], r["g_co2eq_per_kwh"], r["year"])
        for r in rows
    }
    return MappingProxyType(table)


@lru_cache(maxsize=1)
def load_us_state_table() -> Mapping[str, TableEntry]:
    """US states and DC by zone (``"US-CA"``); direct gCO2eq/kWh (read once, cached)."""
    rows = _read_table(US_STATE_TABLE)
    table = {}
    for r in rows:
        zone = US_STATE_PREFIX + r["state_code"]
        table[zone] = _entry(US_STATE_TABLE, zone, r["g_co2eq_per_kwh"], r["year"], r["state"])
    return MappingProxyType(table)


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(load_country_table()) | frozenset(load_us_state_table()) | {WORLD_ZONE}


def known_zones() -> set[str]:
    """Every zone the packaged tables answer offline: countries, ``US-xx`` states, ``WORLD``."""
    return set(_known_zones())


def world_average(*, fallback: bool) -> IntensityEstimate:
    """The world average (gCO2eq/kWh, 2024, lifecycle).

    Args:
        fallback: True when it stands in for an unknown location (kind ``"fallback"``, and the
            source says so); False when the user chose zone ``"WORLD"`` (kind
            ``"annual_average"``).
    """
    return IntensityEstimate(
        intensity_g_per_kwh=WORLD_INTENSITY_G_PER_KWH,
        zone=WORLD_ZONE,
        source=WORLD_FALLBACK_SOURCE if fallback else WORLD_SOURCE,
        basis="lifecycle",
        kind="fallback" if fallback else "annual_average",
        year=WORLD_YEAR,
    )


def zone_value(zone: str) -> IntensityEstimate:
    """Annual average intensity of a zone from the packaged tables, with its provenance.

    Args:
        zone: ISO 3166-1 alpha-2 (``"DK"``; ``"US"`` is the country), ``"US-"`` plus a state code
            (``"US-CA"``) or ``"WORLD"``; case-insensitive.

    Returns:
        An :class:`IntensityEstimate` of kind ``"annual_average"`` (gCO2eq/kWh).

    Raises:
        UnknownZoneError: the tables do not know the zone (the message suggests close matches).
    """
    code = normalise_zone(zone)
    if code == WORLD_ZONE:
        return world_average(fallback=False)
    country = load_country_table().get(code)
    if country is not None:
        return IntensityEstimate(
            intensity_g_per_kwh=country.intensity_g_per_kwh,
            zone=code,
            source=COUNTRY_SOURCE,
            basis="lifecycle",
            kind="annual_average",
            year=country.year,
        )
    state = load_us_state_table().get(code)
    if state is not None:
        return IntensityEstimate(
            intensity_g_per_kwh=state.intensity_g_per_kwh,
            zone=code,
            source=US_STATE_SOURCE,
            basis="direct",
            kind="annual_average",
            year=state.year,
        )
    raise unknown_zone_error(zone, known_zones())


def suggest_zones(zone: str, known: Iterable[str], limit: int = 3) -> list[str]:
    """Known zones close to ``zone``, best first: common aliases (``UK`` -> ``GB``), US state names
    (``"texas"`` -> ``US-TX``), a bare state code (``"WV"`` -> ``US-WV``), then spelling matches."""
    known_set = set(known)
    raw = str(zone).strip().upper()
    squashed = "".join(ch for ch in raw if ch.isalnum())
    found: list[str] = []
    alias = _ALIASES.get(squashed)
    if alias:
        found.append(alias)
    for state_zone, entry in load_us_state_table().items():
        if squashed == "".join(ch for ch in entry.name.upper() if ch.isalnum()):
            found.append(state_zone)
    if US_STATE_PREFIX + squashed in known_set:
        found.append(US_STATE_PREFIX + squashed)
    found += difflib.get_close_matches(raw, sorted(known_set), n=limit, cutoff=0.6)
    unique = [z for i, z in enumerate(found) if z in known_set and z not in found[:i]]
    return unique[:limit]


def unknown_zone_error(zone: str, known: Iterable[str], setting: str = "zone") -> UnknownZoneError:
    """Build the error for an unknown zone: what was given, close matches, how to find codes."""
    suggestions = suggest_zones(zone, known)
    hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    message = (
        f"{setting}={zone!r} is not a known zone.{hint} Use an ISO 3166-1 alpha-2 country code "
        "('DK', 'DE', 'US'), 'US-' plus a US state code ('US-CA'), or 'WORLD'; the codes are "
        "listed by carbon_callbacks.core.intensity.static.known_zones() and in the package's "
        "data/country_intensity.csv and data/us_state_intensity.csv. If you know the intensity "
        "of your electricity, set intensity_g_per_kwh instead."
    )
    return UnknownZoneError(message, zone=zone, suggestions=suggestions)


class StaticIntensityProvider(IntensityProvider):
    """A zone's annual average from the packaged tables: the same value for every window.

    Args:
        zone: a code :func:`zone_value` accepts.
        fallback: only with zone ``"WORLD"``: label the value as a fallback for an unknown
            location (kind ``"fallback"``).

    Raises:
        UnknownZoneError: the zone is not in the tables.
    """

    def __init__(self, zone: str, *, fallback: bool = False) -> None:
        if fallback:
            if normalise_zone(zone) != WORLD_ZONE:
                raise ValueError(f"only the {WORLD_ZONE} zone can be a fallback, got {zone!r}")
            self.estimate = world_average(fallback=True)
        else:
            self.estimate = zone_value(zone)
        self.zone = self.estimate.zone

    @classmethod
    def world_fallback(cls) -> StaticIntensityProvider:
        """The world average, labelled as a fallback for an unknown location."""
        return cls(WORLD_ZONE, fallback=True)

    def intensity_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate:
        """The annual average (gCO2eq/kWh); the window does not change it."""
        return self.estimate

    def __repr__(self) -> str:
        return f"StaticIntensityProvider({self.estimate.describe()!r})"


class UserIntensityProvider(IntensityProvider):
    """A carbon intensity the user stated, applied to every window.

    Args:
        intensity_g_per_kwh: gCO2eq/kWh, finite and >= 0.
        zone: what the value is for, as a label (default ``"USER"``).
        source: where the value came from (e.g. which setting or environment variable).
        basis: ``"lifecycle"``, ``"direct"`` or ``"unknown"`` (default: unknown).

    Raises:
        ConfigError: the value is not a finite number >= 0.
    """

    def __init__(
        self,
        intensity_g_per_kwh: float,
        zone: str | None = None,
        *,
        source: str = "user-stated value",
        basis: str = "unknown",
    ) -> None:
        try:
            value = float(intensity_g_per_kwh)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"intensity_g_per_kwh must be a finite number >= 0 gCO2eq/kWh, "
                f"got {intensity_g_per_kwh!r}"
            )
        self.zone = normalise_zone(zone) if zone is not None else USER_ZONE
        self.estimate = IntensityEstimate(
            intensity_g_per_kwh=value, zone=self.zone, source=source, basis=basis, kind="user"
        )

    def intensity_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate:
        """The stated value (gCO2eq/kWh); the window does not change it."""
        return self.estimate

    def __repr__(self) -> str:
        return f"UserIntensityProvider({self.estimate.describe()!r})"
