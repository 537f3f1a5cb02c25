"""Unit conversions used across the package. Every constant states its units."""

from __future__ import annotations

#: Joules in one kilowatt-hour (J/kWh).
J_PER_KWH: float = 3.6e6


def joules_to_kwh(energy_j: float) -> float:
    """Convert joules to kilowatt-hours."""
    return energy_j / J_PER_KWH


def kwh_to_joules(energy_kwh: float) -> float:
    """Convert kilowatt-hours to joules."""
    return energy_kwh * J_PER_KWH
