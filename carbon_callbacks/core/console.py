"""Console reports: the prediction after the first epochs and the totals at the end.

Each report names the method behind every figure: which sensors measured what (counter,
sampled, modelled, constant), the intensity applied (value, zone, source, year or time) and the
PUE, and the car factor used for the km equivalent.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable

from carbon_callbacks.core.equivalents import km_by_car
from carbon_callbacks.core.intensity.base import IntensityEstimate
from carbon_callbacks.core.predict import Prediction
from carbon_callbacks.core.sensors.base import SensorInfo


def format_duration(seconds: float) -> str:
    """``12.3 s`` under a minute, else ``H:MM:SS`` (with days when over 24 h)."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    return str(_dt.timedelta(seconds=round(seconds)))


def fmt(value: float, digits: int) -> str:
    """A number with ``digits`` significant digits (small energies stay readable)."""
    return f"{value:.{digits}g}"


def describe_sensors(infos: Iterable[SensorInfo]) -> str:
    """One line per sensor: name, device and method."""
    lines = [
        f"    {i.name}: {i.device} [{i.method}{'; ' + i.detail if i.detail else ''}]" for i in infos
    ]
    return "\n".join(lines) if lines else "    (no sensor: nothing could be measured)"


def format_prediction(
    pred: Prediction, intensity: IntensityEstimate, pue: float, digits: int
) -> str:
    """The block printed when a prediction is made."""
    what = f"{pred.epochs} epoch(s)" if pred.epochs is not None else "the planned steps"
    car = km_by_car(pred.co2_g)
    t_low, t_high = format_duration(pred.duration_s_low), format_duration(pred.duration_s_high)
    e_low, e_high = pred.energy_kwh_low, pred.energy_kwh_high
    return "\n".join(
        [
            f"carbon_callbacks: predicted consumption for {what} "
            f"(after {pred.after_epochs} measured):",
            f"  Time:   {format_duration(pred.duration_s)}  [{t_low} .. {t_high}]",
            f"  Energy: {fmt(pred.energy_kwh, digits)} kWh"
            f"  [{fmt(e_low, digits)} .. {fmt(e_high, digits)}] (PUE {pue:g})",
            f"  CO2eq:  {fmt(pred.co2_g, digits)} g"
            f"  [{fmt(pred.co2_g_low, digits)} .. {fmt(pred.co2_g_high, digits)}]",
            f"  Intensity: {intensity.describe()}",
            f"  Equivalent to {fmt(car.value, digits)} km travelled by car ({car.source})",
            f"  Method: {pred.method}",
        ]
    )


def format_final(
    *,
    status: str,
    duration_s: float,
    energy_kwh: float,
    co2_g: float,
    energy_kwh_by_component: dict[str, float],
    epochs_completed: int,
    sensors: Iterable[SensorInfo],
    intensity: IntensityEstimate,
    pue: float,
    digits: int,
    log_path: str | None,
    events: int,
) -> str:
    """The block printed when the run stops."""
    car = km_by_car(co2_g)
    parts = ", ".join(f"{k} {fmt(v, digits)}" for k, v in sorted(energy_kwh_by_component.items()))
    lines = [
        f"carbon_callbacks: actual consumption ({status}, {epochs_completed} epoch(s)):",
        f"  Time:   {format_duration(duration_s)}",
        f"  Energy: {fmt(energy_kwh, digits)} kWh "
        f"({parts or 'no component measured'}; PUE {pue:g})",
        f"  CO2eq:  {fmt(co2_g, digits)} g",
        f"  Intensity: {intensity.describe()}",
        f"  Equivalent to {fmt(car.value, digits)} km travelled by car ({car.source})",
        "  Measured by:",
        describe_sensors(sensors),
    ]
    if events:
        lines.append(
            f"  {events} event(s) recorded (degradations and notes): see the run log's "
            "event records"
        )
    if log_path:
        lines.append(f"  Run log: {log_path}")
    return "\n".join(lines)
