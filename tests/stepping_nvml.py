"""A stand-in NVML *module* whose energy counter steps with the clock, for the counter helper.

The helper process (``carbon_callbacks.core.sensors.counter_feed``) imports its NVML binding by
name, so a stand-in for it must be a module, not an object (``tests/fake_nvml.py``). This one's
counter is a function of ``time.monotonic()``, the clock every process shares: ``WATTS`` x the
time at the last step, in mJ, stepping every ``STEP_S``, so the test process and the helper see
one counter, and the energy between any two instants is known exactly (``WATTS`` x their
distance). The power it reports is ``READ_W``, unrelated to the counter (0 W by default), so
that a mark left bridged by power is visibly wrong and a settled one exact.

Environment (read at import, so the helper inherits it): ``STEPPING_NVML_W``,
``STEPPING_NVML_READ_W``; ``STEPPING_NVML_FAIL_AFTER_S`` makes the counter fail that many
seconds after import in every process but ``STEPPING_NVML_PARENT_PID`` (a helper that fails).
"""

from __future__ import annotations

import math
import os
import time

WATTS = float(os.environ.get("STEPPING_NVML_W", "300"))
READ_W = float(os.environ.get("STEPPING_NVML_READ_W", "0"))
STEP_S = 0.1
UUID = "GPU-5eb1c0de-0000-0000-0000-000000000001"
NAME = "Stepping stand-in"
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_UNKNOWN = 999
_IMPORTED_AT = time.monotonic()
_FAIL_AFTER_S = os.environ.get("STEPPING_NVML_FAIL_AFTER_S")
_PARENT = os.environ.get("STEPPING_NVML_PARENT_PID")


class NVMLError(Exception):
    """Like pynvml.NVMLError: carries the return code in ``.value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


def step_time(t: float) -> float:
    """The last step at or before monotonic ``t``."""
    return STEP_S * math.floor(t / STEP_S)


def energy_j(t: float) -> float:
    """The counter's energy, continuous in time: J at monotonic ``t`` (the steps sample it)."""
    return WATTS * t


def nvmlInit() -> None:  # noqa: N802 - NVML's names
    pass


def nvmlShutdown() -> None:  # noqa: N802
    pass


def nvmlDeviceGetCount() -> int:  # noqa: N802
    return 1


def nvmlDeviceGetHandleByIndex(index: int) -> str:  # noqa: N802
    if index != 0:
        raise NVMLError(2)
    return "handle-0"


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> str:  # noqa: N802
    if (uuid.decode() if isinstance(uuid, bytes) else uuid) != UUID:
        raise NVMLError(6)
    return "handle-0"


def nvmlDeviceGetUUID(handle: str) -> str:  # noqa: N802
    return UUID


def nvmlDeviceGetName(handle: str) -> str:  # noqa: N802
    return NAME


def nvmlDeviceGetTotalEnergyConsumption(handle: str) -> int:  # noqa: N802
    now = time.monotonic()
    if (
        _FAIL_AFTER_S is not None
        and str(os.getpid()) != _PARENT
        and now - _IMPORTED_AT > float(_FAIL_AFTER_S)
    ):
        raise NVMLError(NVML_ERROR_UNKNOWN)
    return round(1000.0 * energy_j(step_time(now)))


def nvmlDeviceGetPowerUsage(handle: str) -> int:  # noqa: N802
    return round(1000.0 * READ_W)
