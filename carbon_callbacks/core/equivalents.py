"""Everyday equivalents of an amount of CO2eq: km driven by car, smartphone charges, trees.

Each function takes grams CO2eq and returns an :class:`Equivalent` that carries the factor it
used and where the factor comes from, so a report can print both.

Caveats a report should keep: car figures are tailpipe CO2 per km measured on a test cycle (not
CO2eq, not real-world driving), and the NEDC (to 2020) and WLTP (from 2021) cycles are not
comparable. EPA revises its equivalences every year; the figures here are those in the
project's reference data (``data/SOURCES.md``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: Grams in one metric tonne.
G_PER_TONNE = 1e6
#: Kilometres in one international mile.
KM_PER_MILE = 1.609344

UNIT_KM = "km"
UNIT_MILES = "miles"
UNIT_SMARTPHONE_CHARGES = "smartphone charges"
UNIT_TREE_SEEDLINGS_10Y = "tree seedlings grown for 10 years"
_PER_UNIT = {
    UNIT_KM: "km",
    UNIT_MILES: "mile",
    UNIT_SMARTPHONE_CHARGES: "charge",
    UNIT_TREE_SEEDLINGS_10Y: "seedling",
}


@dataclass(frozen=True)
class Equivalent:
    """An amount of CO2eq expressed as something familiar.

    Attributes:
        value: how many ``unit`` the CO2eq corresponds to.
        unit: what is counted, e.g. ``"km"``, ``"smartphone charges"``.
        factor: grams CO2(eq) per one ``unit`` (``value = co2_g / factor``).
        source: who published the factor, which year or edition, and how it was measured.
    """

    value: float
    unit: str
    factor: float
    source: str

    def describe(self) -> str:
        """One line, e.g. ``"9.36 km (106.8 g per km; EEA ...)"``."""
        per = _PER_UNIT.get(self.unit, "unit")
        return f"{self.value:.3g} {self.unit} ({self.factor:g} g per {per}; {self.source})"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class CarFactor:
    """Emissions of a car per km driven.

    Attributes:
        co2_g_per_km: grams CO2 per km.
        year: the year of the new-car fleet it describes; ``None`` for EPA's figure (an
            edition-dependent average of the US fleet, revised yearly).
        test_cycle: ``"WLTP"``, ``"NEDC"`` or ``"on-road (EPA)"``.
        source: publisher and data set.
    """

    co2_g_per_km: float
    year: int | None
    test_cycle: str
    source: str


#: Car factors selectable by ``basis`` in :func:`km_by_car`.
CAR_FACTORS: dict[str, CarFactor] = {
    "eea_2024_wltp": CarFactor(
        co2_g_per_km=106.8,
        year=2024,
        test_cycle="WLTP",
        source="EEA, average CO2 emissions of new passenger cars registered in the EU in 2024: "
        "106.8 gCO2/km (WLTP test cycle, provisional data)",
    ),
    "eea_2018_nedc": CarFactor(
        co2_g_per_km=120.4,
        year=2018,
        test_cycle="NEDC",
        source="EEA, average CO2 emissions of new passenger cars registered in the EU in 2018: "
        "120.4 gCO2/km (NEDC test cycle; the factor used in carbontracker's papers; "
        "not comparable with WLTP)",
    ),
    "epa_us_vehicle": CarFactor(
        co2_g_per_km=3.93e-4 * G_PER_TONNE / KM_PER_MILE,
        year=None,
        test_cycle="on-road (EPA)",
        source="US EPA Greenhouse Gas Equivalencies: 3.93e-4 t CO2e per mile driven by an "
        "average passenger vehicle, converted to km (1 mile = 1.609344 km)",
    ),
}
#: Default car basis: the latest EEA figure.
DEFAULT_CAR_BASIS = "eea_2024_wltp"

#: US EPA Greenhouse Gas Equivalencies: grams CO2 per smartphone charge (1.24e-5 t).
SMARTPHONE_CHARGE_CO2_G = 1.24e-5 * G_PER_TONNE
#: US EPA Greenhouse Gas Equivalencies: grams CO2 sequestered by one urban tree seedling grown
#: for 10 years (0.060 t).
TREE_SEEDLING_10Y_CO2_G = 0.060 * G_PER_TONNE
#: US EPA Greenhouse Gas Equivalencies: grams CO2e per mile driven (3.93e-4 t).
US_VEHICLE_CO2_G_PER_MILE = 3.93e-4 * G_PER_TONNE

_EPA = "US EPA Greenhouse Gas Equivalencies Calculator"


def _check_co2_g(co2_g: float) -> float:
    value = float(co2_g)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"co2_g must be a finite number of grams >= 0, got {co2_g!r}")
    return value


def km_by_car(co2_g: float, basis: str = DEFAULT_CAR_BASIS) -> Equivalent:
    """Kilometres driven by a car that emit ``co2_g`` grams.

    Args:
        co2_g: grams CO2eq.
        basis: ``"eea_2024_wltp"`` (average new EU car 2024, WLTP, 106.8 g/km, default),
            ``"eea_2018_nedc"`` (2018, NEDC, 120.4 g/km, as in carbontracker's papers) or
            ``"epa_us_vehicle"`` (average US passenger vehicle, 3.93e-4 t/mile).

    Raises:
        ValueError: negative or non-finite ``co2_g``, or an unknown ``basis``.
    """
    grams = _check_co2_g(co2_g)
    car = CAR_FACTORS.get(basis)
    if car is None:
        raise ValueError(f"basis must be one of {sorted(CAR_FACTORS)}, got {basis!r}")
    return Equivalent(grams / car.co2_g_per_km, UNIT_KM, car.co2_g_per_km, car.source)


def miles_by_us_car(co2_g: float) -> Equivalent:
    """Miles driven by an average US passenger vehicle (EPA, 3.93e-4 t CO2e per mile)."""
    grams = _check_co2_g(co2_g)
    return Equivalent(
        grams / US_VEHICLE_CO2_G_PER_MILE,
        UNIT_MILES,
        US_VEHICLE_CO2_G_PER_MILE,
        f"{_EPA}: 3.93e-4 t CO2e per mile driven by an average passenger vehicle",
    )


def smartphone_charges(co2_g: float) -> Equivalent:
    """Full smartphone charges that emit ``co2_g`` grams (EPA, 1.24e-5 t CO2 per charge)."""
    grams = _check_co2_g(co2_g)
    return Equivalent(
        grams / SMARTPHONE_CHARGE_CO2_G,
        UNIT_SMARTPHONE_CHARGES,
        SMARTPHONE_CHARGE_CO2_G,
        f"{_EPA}: 1.24e-5 t CO2 per smartphone charge",
    )


def tree_seedlings_10y(co2_g: float) -> Equivalent:
    """Urban tree seedlings grown for 10 years that take up ``co2_g`` grams
    (EPA, 0.060 t CO2 per seedling)."""
    grams = _check_co2_g(co2_g)
    return Equivalent(
        grams / TREE_SEEDLING_10Y_CO2_G,
        UNIT_TREE_SEEDLINGS_10Y,
        TREE_SEEDLING_10Y_CO2_G,
        f"{_EPA}: 0.060 t CO2 sequestered per urban tree seedling grown for 10 years",
    )


def all_equivalents(co2_g: float, car_basis: str = DEFAULT_CAR_BASIS) -> list[Equivalent]:
    """The standard set for reports: km by car, smartphone charges, tree seedlings."""
    return [km_by_car(co2_g, car_basis), smartphone_charges(co2_g), tree_seedlings_10y(co2_g)]
