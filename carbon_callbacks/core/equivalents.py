"""Everyday equivalents of an amount of CO2eq: km by car, smartphone charges, trees, a budget share.

Each function takes grams CO2eq and returns an :class:`Equivalent` that carries the factor it
used and where the factor comes from, so a report can print both.

Caveats a report should keep: car figures are tailpipe CO2 per km measured on a test cycle (not
CO2eq, not real-world driving), and the NEDC (to 2020) and WLTP (from 2021) cycles are not
comparable. EPA revises its equivalences every year; the figures here are those in the
project's reference data (``data/SOURCES.md``). The per-capita 1.5 °C budget share divides a
published global budget (Lamboll et al. 2023) equally by people and years: that division is a
choice, stated in the figure's source (see :data:`BUDGET_1P5C_T_PER_CAPITA_YEAR`).
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
UNIT_BUDGET_PERCENT = "% of one person's annual 1.5 °C carbon budget"
_PER_UNIT = {
    UNIT_KM: "km",
    UNIT_MILES: "mile",
    UNIT_SMARTPHONE_CHARGES: "charge",
    UNIT_TREE_SEEDLINGS_10Y: "seedling",
    UNIT_BUDGET_PERCENT: "%",
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


# -- share of a per-capita 1.5 degree budget -----------------------------------------------------
#: Remaining carbon budget for a 50 % chance of limiting warming to 1.5 °C, from the start of
#: 2023, in tonnes CO2: 250 GtCO2 (Lamboll, R., Nicholls, Z., Smith, C. et al., "Assessing the
#: size and uncertainty of remaining carbon budgets", Nature Climate Change 13, 1360-1367 (2023),
#: https://doi.org/10.1038/s41558-023-01848-5; the reference seed 004 cites for its budget).
REMAINING_BUDGET_1P5C_T_CO2 = 250e9
#: First year of that budget.
BUDGET_1P5C_START_YEAR = 2023
#: World population the budget is shared by: 8.0 billion (UN DESA, World Population Prospects
#: 2022: the world population reached 8 billion on 15 November 2022).
WORLD_POPULATION = 8.0e9
#: Last year of the sharing period: 2050, the year of net-zero CO2 in the IPCC's 1.5 °C
#: pathways (IPCC SR1.5, 2018). 2023-2050 inclusive is 28 years.
BUDGET_1P5C_END_YEAR = 2050
#: Annual per-capita share in tonnes CO2 per person per year:
#: 250e9 t / 8.0e9 people / 28 years = 1.116 t. This division (an equal per-capita, constant
#: annual share) is this package's; seed 004 does not state its per-capita figure, and its
#: percentages imply about 1.08 t (362.3 kg = 33.7 %).
BUDGET_1P5C_T_PER_CAPITA_YEAR = REMAINING_BUDGET_1P5C_T_CO2 / (
    WORLD_POPULATION * (BUDGET_1P5C_END_YEAR - BUDGET_1P5C_START_YEAR + 1)
)
_BUDGET_SOURCE = (
    "remaining 1.5 °C budget (50 % chance) of 250 GtCO2 from 2023 (Lamboll et al., Nature "
    "Climate Change 13, 1360-1367, 2023) shared equally by 8.0 billion people (UN World "
    "Population Prospects 2022) over 2023-2050"
)


def budget_share_1p5c(
    co2_g: float, t_per_capita_year: float = BUDGET_1P5C_T_PER_CAPITA_YEAR
) -> Equivalent:
    """Percent of one person's annual CO2 budget for a 50 % chance of staying below 1.5 °C.

    Args:
        co2_g: grams CO2eq.
        t_per_capita_year: the annual per-capita budget in tonnes CO2 (default
            :data:`BUDGET_1P5C_T_PER_CAPITA_YEAR`, 1.116 t; see its derivation).

    Returns:
        An :class:`Equivalent` in percent; ``factor`` is grams per percentage point.

    Raises:
        ValueError: negative or non-finite ``co2_g``, or a budget that is not a finite number > 0.
    """
    grams = _check_co2_g(co2_g)
    budget_t = float(t_per_capita_year)
    if not math.isfinite(budget_t) or budget_t <= 0:
        raise ValueError(
            f"t_per_capita_year must be a finite number of tonnes > 0, got {t_per_capita_year!r}"
        )
    if t_per_capita_year == BUDGET_1P5C_T_PER_CAPITA_YEAR:
        source = f"{budget_t:.3g} t CO2 per person per year: {_BUDGET_SOURCE}"
    else:
        source = f"{budget_t:.3g} t CO2 per person per year (user-stated budget)"
    per_percent_g = budget_t * G_PER_TONNE / 100.0
    return Equivalent(grams / per_percent_g, UNIT_BUDGET_PERCENT, per_percent_g, source)


def report_equivalents(co2_g: float, car_basis: str = DEFAULT_CAR_BASIS) -> list[Equivalent]:
    """The set a paper statement offers: km by car, smartphone charges, tree seedlings and
    the share of a per-capita annual 1.5 °C budget (as seed 004 compares them)."""
    return [*all_equivalents(co2_g, car_basis), budget_share_1p5c(co2_g)]
