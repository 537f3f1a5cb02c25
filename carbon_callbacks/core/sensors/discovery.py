"""Build the list of sensors a run uses, from its settings, recording every fallback.

- GPUs (``components`` ``"all"`` or ``"gpu"``): ``sim_gpu`` gives one constant sensor
  (``gpu:sim``, ``sim_gpu_watts x sim_gpu_util`` W) instead of NVML; otherwise one NVML sensor
  per GPU this process uses (:func:`~carbon_callbacks.core.sensors.nvidia.open_gpu_sensors`).
- CPU and DRAM (``components`` ``"all"`` or ``"cpu"``): ``sim_cpu`` gives one constant sensor
  (``cpu:sim``, ``sim_cpu_tdp x sim_cpu_util`` W) that stands for CPU and DRAM (carbontracker's
  meaning; DRAM is then not measured separately); otherwise RAPL package and dram counters
  where readable, else the CPU model and the DRAM model
  (:func:`~carbon_callbacks.core.sensors.rapl.open_rapl_sensors`).

Nothing here raises: a part that fails is recorded as an event and left out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.sensors.base import Sensor
from carbon_callbacks.core.sensors.simulated import ConstantPowerSensor


def _sim_gpu(config: CarbonConfig) -> Sensor:
    watts = float(config.sim_gpu_watts or 0.0)
    util = float(config.sim_gpu_util)
    return ConstantPowerSensor(
        "gpu:sim",
        "gpu",
        str(config.sim_gpu),
        watts * util,
        detail=f"sim_gpu: {watts:g} W x utilisation {util:g} (user-stated, not measured)",
    )


def _sim_cpu(config: CarbonConfig) -> Sensor:
    watts = float(config.sim_cpu_tdp or 0.0)
    util = float(config.sim_cpu_util)
    return ConstantPowerSensor(
        "cpu:sim",
        "cpu",
        str(config.sim_cpu),
        watts * util,
        detail=(
            f"sim_cpu: {watts:g} W x utilisation {util:g} (user-stated, not measured; "
            "DRAM not measured separately)"
        ),
    )


def discover_sensors(
    config: CarbonConfig,
    events: EventLog,
    *,
    nvml: Any = None,
    cpuinfo_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Sensor]:
    """The sensors for ``config``: GPUs first, then CPU and DRAM (see the module docstring).

    Args:
        config: the run's settings (``components``, ``gpu_ids``, ``sim_*``, ``endpoints``).
        events: where fallbacks and failures are recorded.
        nvml: NVML module stand-in (tests); default ``pynvml``, imported only if GPUs are
            measured without ``sim_gpu``.
        cpuinfo_path: ``/proc/cpuinfo`` stand-in for the CPU model (tests).
        env: environment for ``CUDA_VISIBLE_DEVICES`` (default ``os.environ``).
    """
    sensors: list[Sensor] = []
    if config.measures_gpu:
        try:
            if config.sim_gpu is not None:
                sensors.append(_sim_gpu(config))
            else:
                from carbon_callbacks.core.sensors.nvidia import open_gpu_sensors

                sensors.extend(
                    open_gpu_sensors(
                        config.gpu_ids,
                        events,
                        env=os.environ if env is None else env,
                        nvml=nvml,
                        force_sampled=config.gpu_method == "sampled",
                    )
                )
        except Exception as exc:  # noqa: BLE001 - never break training
            events.record(
                "sensor_discovery_failed",
                f"GPU sensors could not be set up ({exc!r}); GPU energy is not measured",
                "gpu",
            )
    if config.measures_cpu:
        try:
            if config.sim_cpu is not None:
                sensors.append(_sim_cpu(config))
            else:
                from carbon_callbacks.core.sensors.rapl import open_rapl_sensors

                sensors.extend(
                    open_rapl_sensors(config.endpoints.rapl_root, events, cpuinfo_path=cpuinfo_path)
                )
        except Exception as exc:  # noqa: BLE001 - never break training
            events.record(
                "sensor_discovery_failed",
                f"CPU/DRAM sensors could not be set up ({exc!r}); CPU and DRAM energy are not "
                "measured",
                "cpu",
            )
    return sensors
