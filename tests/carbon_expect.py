"""What each carbon metric key should read per epoch, taken from the run log (the reference).

The integrations' tests compare what reached History/CSV/TensorBoard/W&B with these series, so
they check the translation, not numbers copied from the implementation.
"""

from __future__ import annotations

import math

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.runlog import RunLog


def epoch_value(record: dict, key: str) -> float:
    """The value of ``key`` in one epoch record (NaN for a component not measured)."""
    direct = {
        keys.EPOCH_ENERGY_KWH: record["energy_kwh"],
        keys.EPOCH_CO2_G: record["co2_g"],
        keys.EPOCH_DURATION_S: record["duration_s"],
        keys.ENERGY_KWH: record["cumulative"]["energy_kwh"],
        keys.CO2_G: record["cumulative"]["co2_g"],
        keys.INTENSITY_G_PER_KWH: record["intensity"]["intensity_g_per_kwh"],
        keys.POWER_W: record["power_w"].get("total", math.nan),
    }
    if key in direct:
        return direct[key]
    for component, power_key in keys.COMPONENT_POWER.items():
        if key == power_key:
            return record["power_w"].get(component, math.nan)
    raise KeyError(key)


def prediction_value(log: RunLog, epoch: int, key: str) -> float:
    """The prediction made after epoch ``epoch`` (0-based) for ``key``; NaN when none was made."""
    made = [p for p in log.predictions if p["after_epochs"] == epoch + 1]
    if not made:
        return math.nan
    field = {
        keys.PRED_ENERGY_KWH: "energy_kwh",
        keys.PRED_CO2_G: "co2_g",
        keys.PRED_DURATION_S: "duration_s",
    }[key]
    return made[-1][field]


def expected_series(log: RunLog, key: str) -> list[float]:
    """``key``'s value for every epoch record of ``log``, in order."""
    if key in keys.PREDICTION_KEYS:
        return [prediction_value(log, rec["epoch"], key) for rec in log.epochs]
    return [epoch_value(rec, key) for rec in log.epochs]


def same(actual: list[float], expected: list[float], rel: float = 1e-9) -> bool:
    """Equal element-wise within ``rel``, NaN matching NaN."""
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected, strict=True):
        if math.isnan(e) or math.isnan(a):
            if not (math.isnan(e) and math.isnan(a)):
                return False
        elif not math.isclose(a, e, rel_tol=rel, abs_tol=1e-30):
            return False
    return True
