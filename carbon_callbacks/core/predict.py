"""Prediction of a whole run's duration, energy and CO2eq from the epochs measured so far.

The prediction is *measured so far + remaining work x a per-unit estimate*, not carbontracker's
*mean epoch x epochs*: what has been spent is known exactly, and only the rest is forecast. The
per-epoch estimate leaves out the first epoch once later ones exist (it carries warm-up: CUDA
context, compilation, cache filling) and takes the median of the rest, so one slow epoch does
not move it. The interval is the remaining work times the smallest and largest per-epoch values
used (widened on a single epoch, where nothing is known of the spread). Step-based runs (total
steps known, epochs not) scale by steps instead of epochs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: Relative half-width of the interval when only one epoch is known (no spread observed yet).
SINGLE_EPOCH_SPREAD = 0.25


@dataclass(frozen=True)
class EpochSample:
    """What one measured epoch cost.

    Attributes:
        duration_s: seconds.
        energy_kwh: kWh including PUE.
        co2_g: grams CO2eq.
        steps: optimisation steps in the epoch, when known.
    """

    duration_s: float
    energy_kwh: float
    co2_g: float
    steps: int | None = None


@dataclass(frozen=True)
class Prediction:
    """A forecast of the whole run, with an interval.

    Attributes:
        after_epochs: epochs measured when it was made.
        epochs: epochs of the whole run it predicts (``None`` for a step-based run).
        duration_s / energy_kwh / co2_g: central forecast of the whole run.
        *_low / *_high: interval bounds.
        intensity_g_per_kwh: intensity applied to the remaining energy.
        method: how it was made (one line).
    """

    after_epochs: int
    epochs: int | None
    duration_s: float
    energy_kwh: float
    co2_g: float
    duration_s_low: float
    duration_s_high: float
    energy_kwh_low: float
    energy_kwh_high: float
    co2_g_low: float
    co2_g_high: float
    intensity_g_per_kwh: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def _per_unit(values: Sequence[float]) -> tuple[float, float, float]:
    """(central, low, high) per-epoch value, leaving out a warm-up first epoch when possible."""
    used = list(values[1:]) if len(values) >= 2 else list(values)
    central = statistics.median(used)
    if len(values) == 1:
        return central, central * (1 - SINGLE_EPOCH_SPREAD), central * (1 + SINGLE_EPOCH_SPREAD)
    return central, min(used), max(used)


def predict_run(
    history: Sequence[EpochSample],
    *,
    total_epochs: int | None,
    intensity_g_per_kwh: float,
    total_steps: int | None = None,
    steps_done: int | None = None,
) -> Prediction | None:
    """Forecast the whole run from the epochs measured so far.

    Args:
        history: the measured epochs, oldest first.
        total_epochs: epochs planned for the run (``None`` when only steps are known).
        intensity_g_per_kwh: intensity (gCO2eq/kWh) for the remaining energy, e.g. a forecast
            over the predicted span.
        total_steps / steps_done: for step-based runs.

    Returns:
        The prediction, or ``None`` when there is nothing to predict from.
    """
    if not history:
        return None
    done_s = sum(e.duration_s for e in history)
    done_kwh = sum(e.energy_kwh for e in history)
    done_g = sum(e.co2_g for e in history)
    n = len(history)
    if total_epochs is not None:
        remaining = max(0.0, float(total_epochs - n))
        unit = "epoch"
        series_s = [e.duration_s for e in history]
        series_kwh = [e.energy_kwh for e in history]
    elif total_steps is not None and steps_done:
        # per-step figures from the epochs whose steps are known
        counted = [e for e in history if e.steps]
        if not counted:
            return None
        remaining = max(0.0, float(total_steps - steps_done))
        unit = "step"
        series_s = [e.duration_s / e.steps for e in counted]  # type: ignore[operator]
        series_kwh = [e.energy_kwh / e.steps for e in counted]  # type: ignore[operator]
    else:
        return None
    s_mid, s_low, s_high = _per_unit(series_s)
    k_mid, k_low, k_high = _per_unit(series_kwh)
    energy_kwh = done_kwh + remaining * k_mid
    energy_low = done_kwh + remaining * k_low
    energy_high = done_kwh + remaining * k_high
    method = (
        f"measured {n} epoch(s) + {remaining:g} remaining {unit}(s) x median per-{unit} cost"
        + (" (first epoch left out as warm-up)" if len(series_kwh) >= 2 else "")
    )
    return Prediction(
        after_epochs=n,
        epochs=total_epochs,
        duration_s=done_s + remaining * s_mid,
        energy_kwh=energy_kwh,
        co2_g=done_g + (energy_kwh - done_kwh) * intensity_g_per_kwh,
        duration_s_low=done_s + remaining * s_low,
        duration_s_high=done_s + remaining * s_high,
        energy_kwh_low=energy_low,
        energy_kwh_high=energy_high,
        co2_g_low=done_g + (energy_low - done_kwh) * intensity_g_per_kwh,
        co2_g_high=done_g + (energy_high - done_kwh) * intensity_g_per_kwh,
        intensity_g_per_kwh=intensity_g_per_kwh,
        method=method,
    )
