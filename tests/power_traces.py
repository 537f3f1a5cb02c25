"""Sensors driven by known power traces, for meter and tracker tests.

They stand in for hardware this machine lacks; the meter's arithmetic is checked against the
exact integral of the trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carbon_callbacks.core.sensors.base import Sensor, SensorError, SensorInfo


class TracePowerSensor(Sensor):
    """Power sensor: ``power_w(t)`` where t is seconds since construction (monotonic)."""

    def __init__(
        self,
        name: str,
        power_w: Callable[[float], float],
        component: str = "gpu",
        fail_after: float | None = None,
        fallback_sensor: Sensor | None = None,
        cheap: bool = False,
    ):
        self.info = SensorInfo(name, component, f"trace {name}", "sampled")
        self._p = power_w
        self._t0 = time.monotonic()
        self.fail_after = fail_after
        self._fallback = fallback_sensor
        self.cheap_power = cheap
        self.reads = 0
        self.closed = False

    def read_power_w(self) -> float:
        self.reads += 1
        t = time.monotonic() - self._t0
        if self.fail_after is not None and t >= self.fail_after:
            raise SensorError("trace sensor gone")
        return self._p(t)

    def fallback(self) -> Sensor | None:
        return self._fallback

    def close(self) -> None:
        self.closed = True


class ConstantCounterSensor(Sensor):
    """Counter sensor for a constant power: energy = power_w x elapsed seconds."""

    is_counter = True

    def __init__(
        self,
        name: str,
        power_w: float,
        component: str = "gpu",
        fail_after: float | None = None,
        fallback_sensor: Sensor | None = None,
        cheap: bool = True,
    ):
        self.info = SensorInfo(name, component, f"counter {name}", "counter")
        self.power = power_w
        self._t0 = time.monotonic()
        self.fail_after = fail_after
        self._fallback = fallback_sensor
        self.cheap_power = cheap
        self.counter_reads = 0

    def _check(self) -> float:
        t = time.monotonic() - self._t0
        if self.fail_after is not None and t >= self.fail_after:
            raise SensorError("counter gone")
        return t

    def read_energy_j(self) -> float:
        self.counter_reads += 1
        return 1000.0 + self.power * self._check()  # a counter does not start at zero

    def read_power_w(self) -> float:
        self._check()
        return self.power

    def fallback(self) -> Sensor | None:
        return self._fallback


def tracker_on_fake_devices(tmp_path: Path, cls: type | None = None, **settings: Any) -> Any:
    """A tracker (``cls``, default CarbonTracker) on a 50 W GPU and a 20 W CPU, zone DK.

    Its run log goes to ``tmp_path / "carbon"``; ``settings`` override the defaults.
    """
    from carbon_callbacks.core.tracker import CarbonTracker

    config = {"log_dir": str(tmp_path / "carbon"), "zone": "DK", "verbose": 0, **settings}
    sensors = [
        ConstantCounterSensor("gpu:fake", 50.0, component="gpu"),
        ConstantCounterSensor("cpu:fake", 20.0, component="cpu"),
    ]
    return (cls or CarbonTracker)(sensors=sensors, **config)
