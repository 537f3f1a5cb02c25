"""A user-stated constant power (carbontracker's ``sim_gpu`` / ``sim_cpu``)."""

from __future__ import annotations

import math

from carbon_callbacks.core.sensors.base import Sensor, SensorInfo


class ConstantPowerSensor(Sensor):
    """Reports the same power, in watts, at every read (method ``"constant"``).

    With carbontracker's settings the power is ``sim_gpu_watts x sim_gpu_util`` (or
    ``sim_cpu_tdp x sim_cpu_util``); the discovery module does that multiplication and states
    it in ``detail``. Nothing is measured: the run log says ``constant`` so nobody mistakes it
    for a measurement.

    Args:
        name: sensor key, e.g. ``"gpu:sim"``.
        component: ``"gpu"``, ``"cpu"`` or ``"dram"``.
        device: what the user says it is, e.g. ``"Tesla V100"``.
        power_w: the constant power in watts (finite, >= 0).
        detail: how the figure was obtained.
    """

    cheap_power = True

    def __init__(
        self, name: str, component: str, device: str, power_w: float, detail: str = ""
    ) -> None:
        power_w = float(power_w)
        if not math.isfinite(power_w) or power_w < 0:
            raise ValueError(f"power_w must be a finite number >= 0, got {power_w!r}")
        self.power_w = power_w
        self.is_counter = False
        self.info = SensorInfo(
            name=name,
            component=component,
            device=device,
            method="constant",
            detail=detail or f"user-stated constant {power_w:g} W",
        )

    def read_power_w(self) -> float:
        """The stated power in watts."""
        return self.power_w
