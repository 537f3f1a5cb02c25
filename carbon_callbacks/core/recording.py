"""What a session writes and returns: run-log records and logger metrics, built from values.

Each function turns a :class:`~carbon_callbacks.core.meter.Measurement`, the intensity applied
and the run's :class:`~carbon_callbacks.core.totals.Totals` into one record (shapes in
:mod:`carbon_callbacks.core.runlog`) or the metrics of one epoch (keys in
:mod:`carbon_callbacks.core.metrics`). Energy in kWh is joules / 3.6e6 x PUE; CO2eq in grams is
kWh x the intensity (g/kWh). Nothing here measures, writes or keeps state.
"""

from __future__ import annotations

import os
from typing import Any

from carbon_callbacks import __version__
from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.intensity.base import IntensityEstimate
from carbon_callbacks.core.meter import Measurement
from carbon_callbacks.core.predict import PhasePlan, Prediction
from carbon_callbacks.core.runlog import SCHEMA_VERSION, utc_iso
from carbon_callbacks.core.totals import Totals
from carbon_callbacks.core.units import J_PER_KWH


def energy_kwh_of(m: Measurement, pue: float) -> float:
    """kWh of ``m``, PUE included."""
    return m.total_energy_j / J_PER_KWH * pue


def counted(m: Measurement, energy_kwh: float, co2_g: float, pue: float) -> Totals:
    """What ``m`` adds to the run's totals (its kWh per component with PUE; no epoch)."""
    by_component = {c: j / J_PER_KWH * pue for c, j in m.energy_j_by_component().items()}
    return Totals(energy_kwh, co2_g, m.duration_s, energy_kwh_by_component=by_component)


def measurement_record(
    m: Measurement, kind: str, epoch: int | None, intensity: IntensityEstimate, pue: float
) -> tuple[dict[str, Any], float, float]:
    """The ``epoch`` or ``phase`` record of ``m``, with its energy (kWh) and CO2eq (g)."""
    energy_kwh = energy_kwh_of(m, pue)
    co2_g = energy_kwh * intensity.intensity_g_per_kwh
    record: dict[str, Any] = {
        "type": kind,
        "epoch": epoch,
        "start_unix_s": m.start_unix_s,
        "end_unix_s": m.end_unix_s,
        "duration_s": m.duration_s,
        "energy_j": m.energy_j,
        "methods": m.methods,
        "energy_kwh": energy_kwh,
        "co2_g": co2_g,
        "intensity": intensity.to_dict(),
        "pue": pue,
        "power_w": m.mean_power_w(),
    }
    if m.incomplete:
        record["incomplete"] = list(m.incomplete)
    return record, energy_kwh, co2_g


def epoch_metrics(
    m: Measurement,
    energy_kwh: float,
    co2_g: float,
    intensity: IntensityEstimate,
    totals: Totals,
    prediction: Prediction | None,
) -> dict[str, float]:
    """The metrics of a measured epoch: its figures, the run's totals, power, prediction."""
    power = m.mean_power_w()
    out = {
        keys.EPOCH_ENERGY_KWH: energy_kwh,
        keys.EPOCH_CO2_G: co2_g,
        keys.EPOCH_DURATION_S: m.duration_s,
        keys.ENERGY_KWH: totals.energy_kwh,
        keys.CO2_G: totals.co2_g,
        keys.INTENSITY_G_PER_KWH: intensity.intensity_g_per_kwh,
    }
    if "total" in power:
        out[keys.POWER_W] = power["total"]
    for component, key in keys.COMPONENT_POWER.items():
        if component in power:
            out[key] = power[component]
    if prediction is not None:
        out[keys.PRED_ENERGY_KWH] = prediction.energy_kwh
        out[keys.PRED_CO2_G] = prediction.co2_g
        out[keys.PRED_DURATION_S] = prediction.duration_s
    return out


def unmeasured_epoch(
    record: dict[str, Any], m: Measurement, intensity: IntensityEstimate
) -> dict[str, float]:
    """Mark ``record`` as an epoch no sensor covered (null energy and CO2: unknown, not 0) and
    return its metrics, which carry no energy, CO2 or power key (a gap in the charts)."""
    record.update(energy_kwh=None, co2_g=None, power_w={}, unmeasured=True)
    return {
        keys.EPOCH_DURATION_S: m.duration_s,
        keys.INTENSITY_G_PER_KWH: intensity.intensity_g_per_kwh,
    }


def header_record(
    config: CarbonConfig,
    run_id: str,
    started_unix_s: float,
    sensors: list[dict[str, Any]],
    intensity: IntensityEstimate,
    earlier: Totals,
    resumed_from: list[str],
    ranks: dict[str, Any],
) -> dict[str, Any]:
    """The run log's header; ``earlier``: what a resumed run carried over (its ``offsets``)."""
    return {
        "type": "header",
        "schema": SCHEMA_VERSION,
        "package_version": __version__,
        "run_id": run_id,
        "run_name": config.run_name,
        "started_at_unix_s": started_unix_s,
        "started_at": utc_iso(started_unix_s),
        "host": _host_name(),
        "pid": os.getpid(),
        "config": config.to_dict(),
        "sensors": sensors,
        "intensity": intensity.to_dict(),
        "pue": config.pue,
        "epochs": config.epochs,
        "total_steps": config.total_steps,
        "resumed_from": list(resumed_from),
        "offsets": earlier.to_offsets(),
        "ranks": ranks,
    }


def footer_record(
    status: str,
    whole: Measurement,
    totals: Totals,
    *,
    pue: float,
    epochs_monitored: int,
    epochs_planned: int | None,
    stop_reason: str | None,
    events_dropped: int,
    signal: str | None,
) -> dict[str, Any]:
    """The footer of the session measured by ``whole``, with the run's ``totals``."""
    record = {
        "type": "footer",
        "status": status,
        "ended_at_unix_s": whole.end_unix_s,
        "ended_at": utc_iso(whole.end_unix_s),
        "duration_s": whole.duration_s,
        "energy_j": whole.energy_j,
        "methods": whole.methods,
        "incomplete": list(whole.incomplete),
        "session_energy_kwh": energy_kwh_of(whole, pue),
        "energy_kwh": totals.energy_kwh,
        "energy_kwh_by_component": dict(totals.energy_kwh_by_component),
        "co2_g": totals.co2_g,
        "epochs_duration_s": totals.duration_s,
        "totals_scope": "epochs, partial epochs and tracked work outside epochs",
        "epochs_completed": totals.epochs,
        "epochs_monitored": epochs_monitored,
        "epochs_planned": epochs_planned,
        "stop_reason": stop_reason,
        "events_dropped": events_dropped,
    }
    if signal is not None:
        record["signal"] = signal
    return record


def plan_record(plan: PhasePlan, source: str) -> dict[str, Any]:
    """The run-log record of a phase plan (type ``plan``)."""
    return {"type": "plan", **plan.to_dict(), "source": source}


def _host_name() -> str:
    """This machine's host name (socket is imported here: the header is written once)."""
    import socket

    return socket.gethostname()
