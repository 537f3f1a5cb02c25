"""A stand-in for the ``pynvml`` module: the subset carbon_callbacks uses, scriptable per device.

Usage::

    nvml = FakeNvml([FakeGpu(name="NVIDIA H100 80GB HBM3", energy_mj=[1000, 3000])])
    sensor = NvmlGpuSensor(0, nvml=nvml)

Each device has traces (lists) for the energy counter (mJ), power (mW) and utilisation (%):
every call returns the next value and the last value repeats once the trace is used up.
Features can be marked unsupported (NotSupported, as on pre-Volta GPUs), any function can be
made to fail on its k-th call for one device (``fail_on={"nvmlDeviceGetPowerUsage": 3}``), and
a device can be lost (``gpu.lost = True``: every call raises GPU_IS_LOST). Calls made while
NVML is not initialised raise Uninitialized, like the real library, so a tracker that shut
NVML down under another one is caught.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_FI_DEV_POWER_INSTANT = 186
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1


class NVMLError(Exception):
    """Like pynvml.NVMLError: carries the NVML return code in ``.value``."""

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"fake NVML error {self.value}"


@dataclass
class FakeGpu:
    """One scripted GPU. Traces are consumed one value per call (the last one repeats)."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    energy_mj: list[float] = field(default_factory=lambda: [0.0])
    power_mw: list[float] = field(default_factory=lambda: [100_000.0])
    # the instantaneous power field (mW); None: the field answers NOT_SUPPORTED (as by default,
    # so that tests of the averaged path need not opt out)
    instant_mw: list[float] | None = None
    instant_value_type: int = NVML_VALUE_TYPE_UNSIGNED_INT
    utilisation_pct: list[float] = field(default_factory=lambda: [50.0])
    default_limit_mw: float | None = None
    energy_supported: bool = True
    power_supported: bool = True
    utilisation_supported: bool = True
    mig_enabled: bool | None = None  # None: MIG query not supported
    architecture: int | None = None  # NVML_DEVICE_ARCH_*; None: the query is not supported
    fail_on: dict[str, int] = field(default_factory=dict)  # function -> k-th call raises UNKNOWN
    lost: bool = False
    calls: dict[str, int] = field(default_factory=dict)

    def next_value(self, trace: list[float], function: str) -> float:
        count = self.calls.get(function, 0)  # already incremented for this call
        return trace[min(count - 1, len(trace) - 1)]


class FakeHandle:
    def __init__(self, index: int):
        self.index = index

    def __repr__(self) -> str:
        return f"FakeHandle({self.index})"


class FakeNvml:
    """The module object. ``init_error``: a code that nvmlInit raises (e.g. library not found)."""

    NVMLError = NVMLError
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    NVML_VALUE_TYPE_DOUBLE = NVML_VALUE_TYPE_DOUBLE
    NVML_VALUE_TYPE_UNSIGNED_INT = NVML_VALUE_TYPE_UNSIGNED_INT

    def __init__(self, gpus: list[FakeGpu] | None = None, *, init_error: int | None = None):
        self.gpus = list(gpus or [])
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0
        self.initialised = 0  # NVML's own reference count
        for name, value in globals().items():
            if name.startswith("NVML_"):
                setattr(self, name, value)

    # -- lifecycle ------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        if self.initialised <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    def _check_init(self) -> None:
        if self.initialised <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: FakeHandle, function: str) -> FakeGpu:
        self._check_init()
        gpu = self.gpus[handle.index]
        gpu.calls[function] = gpu.calls.get(function, 0) + 1
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if gpu.fail_on.get(function) == gpu.calls[function]:
            raise NVMLError(NVML_ERROR_UNKNOWN)
        return gpu

    def nvmlDeviceGetArchitecture(self, handle: FakeHandle) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetArchitecture")
        if gpu.architecture is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.architecture

    # -- enumeration ----------------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return FakeHandle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeHandle:
        self._check_init()
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                if gpu.lost:
                    raise NVMLError(NVML_ERROR_GPU_IS_LOST)
                return FakeHandle(index)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> bytes:
        # old pynvml returned bytes: the code under test must cope
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid.encode()

    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> tuple[int, int]:
        gpu = self._gpu(handle, "nvmlDeviceGetMigMode")
        if gpu.mig_enabled is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        mode = NVML_DEVICE_MIG_ENABLE if gpu.mig_enabled else NVML_DEVICE_MIG_DISABLE
        return mode, mode

    # -- readings -------------------------------------------------------------------------------
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> float:
        function = "nvmlDeviceGetTotalEnergyConsumption"
        gpu = self._gpu(handle, function)
        if not gpu.energy_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.next_value(gpu.energy_mj, function)

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> float:
        function = "nvmlDeviceGetPowerUsage"
        gpu = self._gpu(handle, function)
        if not gpu.power_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.next_value(gpu.power_mw, function)

    def nvmlDeviceGetFieldValues(self, handle: FakeHandle, field_ids: list) -> list:
        """Like pynvml: one struct per field, each with its own ``nvmlReturn``."""
        function = "nvmlDeviceGetFieldValues"
        gpu = self._gpu(handle, function)
        out = []
        for field_id in field_ids:
            if field_id != NVML_FI_DEV_POWER_INSTANT or gpu.instant_mw is None:
                value = SimpleNamespace(uiVal=0, dVal=0.0)
                out.append(
                    SimpleNamespace(
                        fieldId=field_id,
                        nvmlReturn=NVML_ERROR_NOT_SUPPORTED,
                        valueType=NVML_VALUE_TYPE_UNSIGNED_INT,
                        value=value,
                    )
                )
                continue
            mw = gpu.next_value(gpu.instant_mw, function)
            value = SimpleNamespace(uiVal=int(mw), dVal=float(mw))
            out.append(
                SimpleNamespace(
                    fieldId=field_id,
                    nvmlReturn=NVML_SUCCESS,
                    valueType=gpu.instant_value_type,
                    value=value,
                )
            )
        return out

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> SimpleNamespace:
        function = "nvmlDeviceGetUtilizationRates"
        gpu = self._gpu(handle, function)
        if not gpu.utilisation_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=gpu.next_value(gpu.utilisation_pct, function), memory=0)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: FakeHandle) -> float:
        gpu = self._gpu(handle, "nvmlDeviceGetPowerManagementDefaultLimit")
        if gpu.default_limit_mw is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.default_limit_mw


def uuid_for(index: int) -> str:
    """A distinct, realistic-looking UUID per index."""
    return f"GPU-{index:08x}-aaaa-bbbb-cccc-{index:012x}"
