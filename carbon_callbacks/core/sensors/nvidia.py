"""NVIDIA GPUs through NVML (package ``nvidia-ml-py``, imported as ``pynvml``).

Three ways to measure one GPU, best first:

1. ``counter``: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta and
   later), minus its value when the sensor opened. Exact whatever the sampling interval.
2. ``sampled``: ``nvmlDeviceGetPowerUsage`` (mW), integrated by the meter (trapezoid rule).
   Used when the counter is not supported (``NVML_ERROR_NOT_SUPPORTED`` at open) or when
   asked for (``force_sampled=True``), and as the counter's fallback.
3. ``modelled``: TDP (packaged table, by NVML's name; else NVML's default power limit) x
   ``nvmlDeviceGetUtilizationRates().gpu / 100``. The fallback of ``sampled``.

``pynvml`` is imported inside functions, never at module import; every public function takes
an optional ``nvml`` module (a stand-in in tests). NVML is initialised by reference count
(:func:`nvml_acquire` / :func:`nvml_release`): each sensor holds one reference, so two
trackers in one process never shut each other's NVML down.

Which GPUs: :func:`visible_gpus` resolves ``gpu_ids`` or ``CUDA_VISIBLE_DEVICES`` to NVML
devices. Failures never raise and never read as zero: NVML missing, failing to start or
seeing no GPU gives no sensor and one event (a warning when GPUs were asked for).
"""

from __future__ import annotations

import math
import os
import threading
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.sensors.base import Sensor, SensorError, SensorInfo
from carbon_callbacks.core.sensors.counter_feed import CounterFeed
from carbon_callbacks.core.sensors.step_clock import SteppedCounterClock
from carbon_callbacks.core.tables import lookup_gpu_tdp_w

#: Event kinds recorded by this module.
KIND_UNAVAILABLE = "gpu_unavailable"  # NVML missing / failing / no GPU
KIND_SELECTION = "gpu_selection"  # a requested GPU id that does not resolve
KIND_UNSUPPORTED = "gpu_unsupported"  # MIG instances: no per-instance energy
#: How the provenance names the two power signals.
POWER_INSTANT_TEXT = "the instantaneous power field NVML_FI_DEV_POWER_INSTANT (mW)"
POWER_AVERAGE_TEXT = "nvmlDeviceGetPowerUsage (mW, averaged by NVML over about 1 s)"
KIND_FALLBACK = "sensor_fallback"  # a GPU measured by a weaker method than the counter
#: Seconds by which ``nvmlDeviceGetPowerUsage`` lags the power drawn where NVML averages it over
#: ~1 s (Ampere and later, except GA100: A100, A30): half the window. Older GPUs report the
#: power at the instant.
AVERAGED_POWER_LAG_S = 0.5
#: NVML's architecture number of Ampere (``NVML_DEVICE_ARCH_AMPERE``); later ones are larger.
_ARCH_AMPERE = 7
_ARCH_UNKNOWN = 0xFFFFFFFF
#: Who reads the energy counter: ``helper`` (a helper process,
#: :mod:`~carbon_callbacks.core.sensors.counter_feed`, the default) or ``thread`` (the meter's
#: thread). A benchmarking knob, not a setting; read once, by :func:`counter_mode`.
COUNTER_MODE_ENV = "CARBON_CALLBACKS_COUNTER_MODE"


def counter_mode(env: Mapping[str, str] = os.environ) -> str:
    """``"thread"`` when :data:`COUNTER_MODE_ENV` asks for the meter's thread, else ``"helper"``."""
    return "thread" if env.get(COUNTER_MODE_ENV, "").strip().lower() == "thread" else "helper"


_lock = threading.Lock()
_inits: dict[int, list[Any]] = {}  # id(module) -> [module, reference count]


# -- NVML loading and reference counting -------------------------------------------------------
def load_nvml(nvml: Any = None) -> Any:
    """``nvml`` when given, else the real ``pynvml`` module (raises ImportError if missing)."""
    if nvml is not None:
        return nvml
    import pynvml

    return pynvml


def nvml_acquire(nvml: Any) -> None:
    """Take one reference on NVML; the first reference calls ``nvmlInit`` (which may raise)."""
    with _lock:
        entry = _inits.get(id(nvml))
        if entry is not None and entry[1] > 0:
            entry[1] += 1
            return
        nvml.nvmlInit()
        _inits[id(nvml)] = [nvml, 1]


def nvml_release(nvml: Any) -> None:
    """Drop one reference; the last one calls ``nvmlShutdown`` (errors ignored)."""
    with _lock:
        entry = _inits.get(id(nvml))
        if entry is None or entry[1] <= 0:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _inits[id(nvml)]
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down must not fail the caller
            pass


def nvml_references(nvml: Any) -> int:
    """References currently held on ``nvml`` (0 when not initialised by this module)."""
    with _lock:
        entry = _inits.get(id(nvml))
        return entry[1] if entry is not None else 0


def _text(value: Any) -> str:
    """NVML strings are ``bytes`` in old pynvml and ``str`` in new ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _is_nvml_error(nvml: Any, exc: BaseException, code_name: str) -> bool:
    error_cls = getattr(nvml, "NVMLError", None)
    code = getattr(nvml, code_name, None)
    return (
        error_cls is not None
        and isinstance(exc, error_cls)
        and code is not None
        and getattr(exc, "value", None) == code
    )


_FIELD_MEMBERS = {
    "NVML_VALUE_TYPE_DOUBLE": "dVal",
    "NVML_VALUE_TYPE_UNSIGNED_INT": "uiVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG": "ulVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": "ullVal",
    "NVML_VALUE_TYPE_SIGNED_LONG_LONG": "sllVal",
    "NVML_VALUE_TYPE_SIGNED_INT": "siVal",
    "NVML_VALUE_TYPE_UNSIGNED_SHORT": "usVal",
}


def _field_number(nvml: Any, value: Any) -> float:
    """The number in an NVML field value, by its declared type (unsigned int if unknown)."""
    for type_name, member in _FIELD_MEMBERS.items():
        if getattr(nvml, type_name, object()) == getattr(value, "valueType", None):
            return float(getattr(value.value, member))
    return float(value.value.uiVal)


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - pynvml's __str__ can itself call into NVML
        text = ""
    code = getattr(exc, "value", None)
    name = type(exc).__name__
    return f"{name}({text or code!r})" if code is None else f"{name}: {text or 'code'} ({code})"


# -- which GPUs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuRef:
    """One NVIDIA GPU this process uses.

    Attributes:
        index: NVML index (PCI bus order).
        uuid: NVML UUID, ``"GPU-..."``.
        name: NVML product name, e.g. ``"NVIDIA H100 80GB HBM3"``.
    """

    index: int
    uuid: str
    name: str


def _match_uuid(token: str, gpus: list[GpuRef]) -> list[GpuRef]:
    """GPUs whose UUID starts with ``token`` (``"GPU-"`` optional, case-insensitive)."""
    wanted = token.strip().lower()
    if not wanted.startswith("gpu-"):
        wanted = "gpu-" + wanted
    return [gpu for gpu in gpus if gpu.uuid.lower().startswith(wanted)]


def _resolve(
    token: int | str, gpus: list[GpuRef], events: EventLog, origin: str
) -> GpuRef | None | bool:
    """A GpuRef, ``None`` when unresolvable (event recorded), ``False`` for a MIG id."""
    by_index = {gpu.index: gpu for gpu in gpus}
    if isinstance(token, int) or (isinstance(token, str) and token.strip().isdigit()):
        index = int(token)
        if index in by_index:
            return by_index[index]
        events.record(
            KIND_SELECTION,
            f"{origin} names GPU index {index}, but NVML sees {len(gpus)} GPU(s) "
            f"(indices 0..{len(gpus) - 1}); that entry is not measured",
            f"gpu:{index}",
        )
        return None
    text = str(token).strip()
    if text.upper().startswith("MIG-"):
        events.record(
            KIND_UNSUPPORTED,
            f"{origin} selects the MIG instance {text}: NVML has no energy counter or power "
            "reading per MIG instance, so it is not measured (measure the whole GPU from "
            "outside the MIG partition, or state its power with sim_gpu)",
            f"gpu:{text}",
        )
        return False
    matches = _match_uuid(text, gpus)
    if len(matches) == 1:
        return matches[0]
    problem = "matches no GPU" if not matches else f"matches {len(matches)} GPUs"
    events.record(
        KIND_SELECTION,
        f"{origin} entry {text!r} {problem} by UUID; that entry is not measured "
        f"(UUIDs here: {', '.join(g.uuid for g in gpus) or 'none'})",
        f"gpu:{text}",
    )
    return None


def _parse_cuda_visible(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")]


def _hides_all(value: str) -> bool:
    tokens = _parse_cuda_visible(value)
    first = tokens[0] if tokens else ""
    return first == "" or first.lstrip("-").isdigit() and first.startswith("-")


def _enumerate(module: Any, events: EventLog) -> list[GpuRef]:
    count = int(module.nvmlDeviceGetCount())
    gpus = []
    for index in range(count):
        try:
            handle = module.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(module.nvmlDeviceGetUUID(handle))
            name = _text(module.nvmlDeviceGetName(handle))
        except Exception as exc:  # noqa: BLE001 - one broken GPU must not hide the others
            events.record(
                KIND_UNAVAILABLE,
                f"NVML cannot query GPU {index} ({_describe(exc)}); it is not measured",
                f"gpu:{index}",
            )
            continue
        gpus.append(GpuRef(index=index, uuid=uuid, name=name))
    return gpus


def _note_mig(module: Any, gpu: GpuRef, events: EventLog) -> None:
    get_mig_mode = getattr(module, "nvmlDeviceGetMigMode", None)
    if get_mig_mode is None:
        return
    try:
        current = get_mig_mode(module.nvmlDeviceGetHandleByIndex(gpu.index))[0]
    except Exception:  # noqa: BLE001 - not supported before Ampere
        return
    if current == getattr(module, "NVML_DEVICE_MIG_ENABLE", 1):
        events.record(
            KIND_UNSUPPORTED,
            f"GPU {gpu.index} ({gpu.name}) is in MIG mode: its energy is that of the whole GPU, "
            "including work of other MIG instances",
            f"gpu:{gpu.index}",
            warn=False,
        )


def visible_gpus(
    config_gpu_ids: Sequence[int | str] | None,
    env: Mapping[str, str] = os.environ,
    nvml: Any = None,
    *,
    events: EventLog | None = None,
) -> list[GpuRef]:
    """The NVIDIA GPUs this process uses, as NVML devices.

    Order of precedence:

    1. ``config_gpu_ids`` when not ``None``: ints (or digit strings) are NVML indices, strings
       are UUIDs or unique UUID prefixes (``"GPU-1a2b"``; the ``GPU-`` may be left out).
    2. ``CUDA_VISIBLE_DEVICES``: comma-separated indices or UUID (prefixes), read as CUDA
       does: the first entry that is not a GPU ends the list; ``""`` or a leading ``-1``
       hides every GPU (no GPU, an info event). ``MIG-...`` entries are recorded as
       unsupported for energy (warned) and skipped. Indices are taken as NVML indices, which
       are CUDA's when ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or all GPUs are the same model; a
       warning is recorded otherwise.
    3. Unset: every GPU NVML sees.

    Never raises. When NVML is missing (ImportError, library not found), fails to start or
    sees no GPU, returns ``[]`` and records one ``gpu_unavailable`` event saying why, warned
    when GPUs were asked for (``config_gpu_ids`` set or ``CUDA_VISIBLE_DEVICES`` non-empty).
    Events go to ``events`` (a private log, which still warns, when not given).
    """
    events = events if events is not None else EventLog()
    cuda_visible = env.get("CUDA_VISIBLE_DEVICES")
    explicit = config_gpu_ids is not None
    if not explicit and cuda_visible is not None and _hides_all(cuda_visible):
        events.record(
            KIND_UNAVAILABLE,
            f"CUDA_VISIBLE_DEVICES={cuda_visible!r} hides every GPU from this process; no GPU "
            "is measured",
            "nvml",
            warn=False,
        )
        return []
    requested = explicit or bool(cuda_visible and cuda_visible.strip())
    module = _started_nvml(nvml, events, requested)
    if module is None:
        return []
    try:
        try:
            gpus = _enumerate(module, events)
        except Exception as exc:  # noqa: BLE001
            events.record(
                KIND_UNAVAILABLE,
                f"NVML cannot count the GPUs ({_describe(exc)}); no GPU energy is measured",
                "nvml",
                warn=requested,
            )
            return []
        if not gpus:
            events.record(
                KIND_UNAVAILABLE,
                "NVML sees no NVIDIA GPU on this machine; no GPU energy is measured",
                "nvml",
                warn=requested,
            )
            return []
        if explicit:
            selected: list[GpuRef] = []
            for token in config_gpu_ids or ():
                ref = _resolve(token, gpus, events, "gpu_ids")
                if isinstance(ref, GpuRef) and ref not in selected:
                    selected.append(ref)
        elif cuda_visible is not None:
            selected = _cuda_visible_gpus(cuda_visible, gpus, env, events)
        else:
            selected = list(gpus)
        for gpu in selected:
            _note_mig(module, gpu, events)
        return selected
    finally:
        nvml_release(module)


def _started_nvml(nvml: Any, events: EventLog, requested: bool) -> Any:
    """The NVML module, initialised (release it with ``nvml_release``); None, with one
    ``gpu_unavailable`` event saying why (warned when GPUs were asked for), if it cannot be."""
    try:
        module = load_nvml(nvml)
    except ImportError as exc:
        events.record(
            KIND_UNAVAILABLE,
            f"NVML is not available ({exc}); install nvidia-ml-py to measure NVIDIA GPUs. No "
            "GPU energy is measured",
            "nvml",
            warn=requested,
        )
        return None
    try:
        nvml_acquire(module)
    except Exception as exc:  # noqa: BLE001 - NVMLError, OSError from ctypes, ...
        if _is_nvml_error(module, exc, "NVML_ERROR_LIBRARY_NOT_FOUND"):
            why = "the NVIDIA driver library libnvidia-ml is not installed or not found"
        elif _is_nvml_error(module, exc, "NVML_ERROR_DRIVER_NOT_LOADED"):
            why = "the NVIDIA driver is not loaded"
        else:
            why = "NVML failed to start"
        events.record(
            KIND_UNAVAILABLE,
            f"{why} ({_describe(exc)}); no GPU energy is measured",
            "nvml",
            warn=requested,
        )
        return None
    return module


def _cuda_visible_gpus(
    cuda_visible: str, gpus: list[GpuRef], env: Mapping[str, str], events: EventLog
) -> list[GpuRef]:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` names, read as CUDA reads it (see visible_gpus)."""
    selected: list[GpuRef] = []
    used_index = False
    for token in _parse_cuda_visible(cuda_visible):
        if token.startswith("-") and token[1:].isdigit():
            break  # CUDA: a negative index ends the list
        ref = _resolve(token, gpus, events, "CUDA_VISIBLE_DEVICES")
        if ref is None:
            break  # CUDA ignores an invalid entry and everything after it
        if isinstance(ref, GpuRef) and ref not in selected:
            used_index = used_index or token.isdigit()
            selected.append(ref)
    order = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    if used_index and order != "PCI_BUS_ID" and len({g.name for g in gpus}) > 1:
        events.record(
            KIND_SELECTION,
            "CUDA_VISIBLE_DEVICES gives indices on a machine with different GPU models "
            f"and CUDA_DEVICE_ORDER={order}: CUDA may number the GPUs differently from "
            "NVML, so the wrong GPU could be measured. Set CUDA_DEVICE_ORDER=PCI_BUS_ID "
            "or give UUIDs",
            "nvml",
        )
    return selected


def _averaged_power_lag_s(device: Any) -> float:
    """How far (s) ``nvmlDeviceGetPowerUsage`` trails the power on this GPU (0: not known)."""
    try:
        arch = int(device.call("nvmlDeviceGetArchitecture", "architecture"))
    except Exception:  # noqa: BLE001 - an old NVML or a stand-in: no correction
        return 0.0
    if arch == _ARCH_UNKNOWN or arch < _ARCH_AMPERE:
        return 0.0
    if arch == _ARCH_AMPERE and any(name in device.name for name in ("A100", "A30")):
        return 0.0  # GA100 reports the power at the instant
    return AVERAGED_POWER_LAG_S


# -- sensors -----------------------------------------------------------------------------------
class _NvmlDevice:
    """An NVML reference plus one device handle (shared code of the GPU sensors)."""

    def __init__(self, gpu: int | GpuRef, nvml: Any) -> None:
        self._nvml = load_nvml(nvml)
        nvml_acquire(self._nvml)
        self._closed = False
        try:
            if isinstance(gpu, GpuRef):
                self.index = gpu.index
                handle = self._nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
            else:
                self.index = int(gpu)
                handle = self._nvml.nvmlDeviceGetHandleByIndex(self.index)
            self.handle = handle
            self.uuid = _text(self._nvml.nvmlDeviceGetUUID(handle))
            self.name = _text(self._nvml.nvmlDeviceGetName(handle))
        except Exception as exc:
            self.close()
            raise SensorError(f"NVML cannot open GPU {gpu!r}: {_describe(exc)}") from exc
        self.ref = GpuRef(index=self.index, uuid=self.uuid, name=self.name)

    def call(self, function: str, what: str) -> Any:
        """Call ``nvml.<function>(handle)``; any failure becomes a SensorError."""
        try:
            return getattr(self._nvml, function)(self.handle)
        except Exception as exc:  # noqa: BLE001
            raise SensorError(f"gpu:{self.index} {what}: {_describe(exc)}") from exc

    def not_supported(self, exc: BaseException) -> bool:
        cause = exc.__cause__ if isinstance(exc, SensorError) else exc
        return cause is not None and _is_nvml_error(self._nvml, cause, "NVML_ERROR_NOT_SUPPORTED")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            nvml_release(self._nvml)


class NvmlGpuSensor(Sensor):
    """One NVIDIA GPU: energy counter (``counter``) or sampled power (``sampled``).

    Counter mode reads ``nvmlDeviceGetTotalEnergyConsumption`` (mJ) and reports joules since
    the sensor opened (``is_counter = True``). When that call raises NotSupported at open, or
    with ``force_sampled=True``, the sensor is a power sensor (``is_counter = False``). In both
    modes :meth:`read_power_w` costs microseconds (``cheap_power = True``): it reads the
    instantaneous power field (``NVML_FI_DEV_POWER_INSTANT``, mW) where the driver has it, else
    ``nvmlDeviceGetPowerUsage`` (mW), which NVML averages over about a second and which lags
    every change of load (docs/benchmarks.md). If the field stops answering mid-run, the sensor
    switches to the averaged power and says so once (:meth:`drain_notices`).

    In counter mode a helper process (:mod:`~carbon_callbacks.core.sensors.counter_feed`) reads
    the counter outside the training's GIL and dates each value at its step; the meter takes its
    values from :meth:`drain_dated` (its thread, and every mark). Until the helper delivers, if it
    cannot start or ends, with ``counter_process=False``, or with an ``nvml`` that is not an
    importable module (a stand-in object), the meter's thread reads the counter itself and a
    :class:`~carbon_callbacks.core.sensors.step_clock.SteppedCounterClock` dates each value
    (:meth:`read_energy_dated`); a helper that ends says so once.

    Args:
        gpu: NVML index or a :class:`GpuRef` (opened by UUID).
        nvml: NVML module stand-in (default: ``pynvml``).
        force_sampled: use sampled power even when the counter works (benchmarks).
        counter_process: read the counter in a helper process; None (default): as
            :func:`counter_mode` says (the helper unless the knob asks for the meter's thread).

    Raises:
        SensorError: the GPU cannot be opened, or in sampled mode reads no power either.
    """

    cheap_power = True

    def __init__(
        self,
        gpu: int | GpuRef,
        *,
        nvml: Any = None,
        force_sampled: bool = False,
        counter_process: bool | None = None,
    ):
        self._device = _NvmlDevice(gpu, nvml)
        self._feed: CounterFeed | None = None
        try:
            helper = counter_mode() == "helper" if counter_process is None else counter_process
            self._open(force_sampled, helper)
        except BaseException:
            self._device.close()
            raise

    def _open(self, force_sampled: bool, counter_process: bool) -> None:
        device = self._device
        self._start_mj: float | None = None
        self._clock: SteppedCounterClock | None = None
        if not force_sampled:
            try:
                self._start_mj = float(
                    device.call("nvmlDeviceGetTotalEnergyConsumption", "energy counter")
                )
            except SensorError as exc:
                if not device.not_supported(exc):
                    raise
        self.is_counter = self._start_mj is not None
        self.counter_steps = self.is_counter
        module = device._nvml
        self._feed_module: str | None = (
            module.__name__
            if counter_process and self.is_counter and isinstance(module, types.ModuleType)
            else None
        )
        self._instant = self._probe_instant()
        self.power_lag_s = 0.0 if self._instant else _averaged_power_lag_s(device)
        if not self.is_counter:
            self.read_power_w()  # proves power works; raises SensorError otherwise
        self.force_sampled = force_sampled
        self.info = SensorInfo(
            name=f"gpu:{device.index}",
            component="gpu",
            device=f"{device.name} ({device.uuid})",
            method="counter" if self.is_counter else "sampled",
            detail=self._detail(),
        )

    def _detail(self) -> str:
        power = POWER_INSTANT_TEXT if self._instant else POWER_AVERAGE_TEXT
        if self.is_counter:
            reader = "a helper process" if self._feed_module else "the meter's thread"
            return (
                "nvmlDeviceGetTotalEnergyConsumption (mJ), delta; read by "
                f"{reader} and dated at the counter's steps; bridged to marks with {power}"
            )
        why = "forced" if self.force_sampled else "energy counter not supported"
        return f"{power} integrated by the meter ({why})"

    def _probe_instant(self) -> bool:
        """True when the instantaneous power field answers with a plausible value."""
        try:
            return self._read_instant_w() > 0.0
        except Exception:  # noqa: BLE001 - absent field, old driver or stand-in: averaged power
            return False

    def _read_instant_w(self) -> float:
        nvml = self._device._nvml
        field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        get_fields = getattr(nvml, "nvmlDeviceGetFieldValues", None)
        if field_id is None or get_fields is None:
            raise SensorError("this NVML has no field values")
        value = get_fields(self._device.handle, [field_id])[0]
        if value.nvmlReturn != 0:
            raise SensorError(f"NVML field {field_id} returned {value.nvmlReturn}")
        milliwatts = _field_number(nvml, value)
        if not math.isfinite(milliwatts) or milliwatts < 0:
            raise SensorError(f"NVML field {field_id} gave {milliwatts} mW")
        return milliwatts / 1000.0

    @property
    def gpu(self) -> GpuRef:
        """The GPU measured."""
        return self._device.ref

    def read_energy_j(self) -> float:
        """Joules since the sensor opened (counter mode only)."""
        if self._start_mj is None:
            raise NotImplementedError("this GPU sensor samples power; it has no counter")
        now_mj = float(self._device.call("nvmlDeviceGetTotalEnergyConsumption", "energy counter"))
        return self._joules_since_open(now_mj)

    def _joules_since_open(self, now_mj: float) -> float:
        """The counter's raw value (mJ) as joules since the sensor opened.

        Raises:
            SensorError: the counter went backwards (driver reloaded or GPU reset).
        """
        assert self._start_mj is not None
        if now_mj < self._start_mj:
            raise SensorError(
                f"gpu:{self._device.index} energy counter went backwards ({now_mj} < "
                f"{self._start_mj} mJ): driver reloaded or GPU reset"
            )
        return (now_mj - self._start_mj) / 1000.0

    def read_energy_dated(self) -> tuple[float, float] | None:
        """(joules since open, ``time.monotonic()`` at which the counter reached them).

        The counter steps (about every 100 ms on an H100); :class:`SteppedCounterClock` dates
        each value at its step instead of at the read. None when this read cannot be dated
        (it straddled a step): the meter then bridges with power until the next read.
        """
        if self._start_mj is None:
            raise NotImplementedError("this GPU sensor samples power; it has no counter")
        if self._clock is None:
            self._clock = SteppedCounterClock(
                lambda: float(
                    self._device.call("nvmlDeviceGetTotalEnergyConsumption", "energy counter")
                )
            )
        dated = self._clock.read_dated()
        if dated is None:
            return None
        now_mj, t_valid = dated
        return self._joules_since_open(now_mj), t_valid

    @property
    def feed_live(self) -> bool:
        """True while the helper process delivers the counter's dated values."""
        return self._feed is not None and self._feed.live

    def drain_dated(self) -> list[tuple[float, float]] | None:
        """The helper's values since the last call: (joules since open, monotonic step time).

        Starts the helper on the first call. None when the caller must read the counter itself
        (:meth:`read_energy_dated`): no helper wanted, not delivering yet, or ended (said once,
        through :meth:`drain_notices`). Never blocks.
        """
        if self._feed_module is None or self._start_mj is None:
            return None
        feed = self._feed
        if feed is None:
            feed = self._feed = CounterFeed(self._feed_module, self._device.uuid)
            feed.start()
        raw = feed.drain()
        if raw is None:
            self._end_feed(feed.failure or "it ended")
            return None
        if not raw and not feed.live:
            return None
        return [(self._joules_since_open(now_mj), t_step) for t_step, now_mj in raw]

    def set_read_interval(self, seconds: float) -> None:
        """Tell the helper the meter's counter cadence (s): how often a fresh value is needed."""
        if self._feed is not None:
            self._feed.set_cadence(seconds)

    def _end_feed(self, reason: str) -> None:
        """The helper is gone: the meter's thread reads the counter from now on (said once)."""
        self._feed_module = None
        if hasattr(self, "info"):
            self.info = replace(self.info, detail=self._detail())
        self._notice(
            f"gpu:{self._device.index} counter helper process ended ({reason}); the meter's "
            "thread reads the energy counter from now on"
        )

    def read_power_w(self) -> float:
        """Board power now, in watts (instantaneous field where available, else averaged)."""
        if self._instant:
            try:
                return self._read_instant_w()
            except Exception as exc:  # noqa: BLE001 - the averaged power still works
                self._instant = False
                if hasattr(self, "info"):
                    self.info = replace(self.info, detail=self._detail())
                self._notice(
                    f"gpu:{self._device.index} instantaneous power field failed "
                    f"({_describe(exc)}); power is read from nvmlDeviceGetPowerUsage (averaged "
                    "over about 1 s, lags load changes) from now on"
                )
        return float(self._device.call("nvmlDeviceGetPowerUsage", "power reading")) / 1000.0

    def next_read_time(self, after: float) -> float | None:
        """Best monotonic time >= ``after`` to read the counter: mid-way between its steps.

        None when the counter's steps are not known (yet), or in sampled mode.
        """
        clock = self._clock
        return None if clock is None else clock.next_mid_step(after)

    def fallback(self) -> Sensor | None:
        """Counter -> sampled power of the same GPU (else modelled); sampled -> modelled."""
        nvml = self._device._nvml
        if self.is_counter:
            try:
                return NvmlGpuSensor(self.gpu, nvml=nvml, force_sampled=True)
            except Exception:  # noqa: BLE001 - try the model next
                pass
        try:
            return NvmlModelledGpuSensor(self.gpu, nvml=nvml)
        except Exception:  # noqa: BLE001
            return None

    def close(self) -> None:
        """Stop the helper process, release this sensor's NVML reference (idempotent)."""
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.close()
        self._device.close()


class NvmlModelledGpuSensor(Sensor):
    """One NVIDIA GPU modelled as TDP x GPU utilisation (``modelled``).

    TDP comes from the packaged GPU table matched by NVML's product name
    (:func:`~carbon_callbacks.core.tables.lookup_gpu_tdp_w`), else from NVML's default power
    limit (``nvmlDeviceGetPowerManagementDefaultLimit``, mW). Utilisation is
    ``nvmlDeviceGetUtilizationRates().gpu / 100``: the fraction of time a kernel ran, not how
    hard, so the model overstates light kernels; it is a last resort.

    Raises:
        SensorError: no TDP is known for this GPU, or utilisation cannot be read.
    """

    cheap_power = True

    def __init__(self, gpu: int | GpuRef, *, nvml: Any = None) -> None:
        self._device = _NvmlDevice(gpu, nvml)
        try:
            self._open()
        except BaseException:
            self._device.close()
            raise

    def _open(self) -> None:
        device = self._device
        hit = lookup_gpu_tdp_w(device.name)
        if hit is not None:
            self.tdp_w, row = hit
            source = f"TDP {self.tdp_w:g} W from table ({row!r})"
        else:
            try:
                limit_mw = device.call("nvmlDeviceGetPowerManagementDefaultLimit", "power limit")
            except SensorError as exc:
                raise SensorError(
                    f"gpu:{device.index} ({device.name}): no TDP in the table and no power "
                    "limit from NVML, so it cannot be modelled"
                ) from exc
            self.tdp_w = float(limit_mw) / 1000.0
            source = f"TDP {self.tdp_w:g} W = NVML default power limit"
        self.read_power_w()  # proves utilisation works
        self.is_counter = False
        self.info = SensorInfo(
            name=f"gpu:{device.index}",
            component="gpu",
            device=f"{device.name} ({device.uuid})",
            method="modelled",
            detail=f"{source} x nvmlDeviceGetUtilizationRates().gpu",
        )

    @property
    def gpu(self) -> GpuRef:
        """The GPU measured."""
        return self._device.ref

    def read_power_w(self) -> float:
        """Modelled board power now, in watts."""
        rates = self._device.call("nvmlDeviceGetUtilizationRates", "utilisation")
        fraction = min(1.0, max(0.0, float(rates.gpu) / 100.0))
        return self.tdp_w * fraction

    def close(self) -> None:
        """Release this sensor's NVML reference (idempotent)."""
        self._device.close()


def open_gpu_sensor(
    gpu: int | GpuRef,
    events: EventLog,
    *,
    nvml: Any = None,
    force_sampled: bool = False,
) -> Sensor | None:
    """The best sensor for one GPU (counter, else sampled, else modelled), events recorded.

    A GPU without the energy counter is sampled (info event: normal before Volta); a GPU that
    reads no power either is modelled (warning); one that cannot be measured at all gives
    ``None`` and a warning.
    """
    label = f"gpu:{gpu.index if isinstance(gpu, GpuRef) else gpu}"
    try:
        sensor: Sensor = NvmlGpuSensor(gpu, nvml=nvml, force_sampled=force_sampled)
    except SensorError as exc:
        first_error = exc
    else:
        if sensor.info.method == "sampled" and not force_sampled:
            events.record(
                KIND_FALLBACK,
                f"{label} ({sensor.info.device}) has no NVML energy counter (normal before "
                "Volta); its power is sampled every interval and integrated",
                label,
                warn=False,
            )
        return sensor
    try:
        sensor = NvmlModelledGpuSensor(gpu, nvml=nvml)
    except SensorError as exc:
        events.record(
            KIND_UNAVAILABLE,
            f"{label} cannot be measured: {first_error}; and it cannot be modelled: {exc}. Its "
            "energy is missing from the totals",
            label,
        )
        return None
    events.record(
        KIND_FALLBACK,
        f"{label} ({sensor.info.device}) reads neither energy nor power ({first_error}); its "
        f"power is modelled: {sensor.info.detail}",
        label,
    )
    return sensor


def open_gpu_sensors(
    config_gpu_ids: Sequence[int | str] | None,
    events: EventLog,
    *,
    env: Mapping[str, str] = os.environ,
    nvml: Any = None,
    force_sampled: bool = False,
) -> list[Sensor]:
    """Sensors for the GPUs :func:`visible_gpus` selects (see there and :func:`open_gpu_sensor`)."""
    sensors: list[Sensor] = []
    for gpu in visible_gpus(config_gpu_ids, env, nvml, events=events):
        sensor = open_gpu_sensor(gpu, events, nvml=nvml, force_sampled=force_sampled)
        if sensor is not None:
            sensors.append(sensor)
    return sensors
