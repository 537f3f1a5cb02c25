"""Hardware doubles whose counters advance with the clock, so energies can be checked exactly.

:class:`LiveFakeNvml` is ``tests/fake_nvml.FakeNvml`` (every failure mode: missing functions,
NotSupported, a failing k-th call, a lost device, NVML's own reference count) with GPUs that draw
a constant power: the energy counter is ``power x elapsed time``. The tracker picks it up through
``sys.modules["pynvml"]`` (``load_nvml`` imports ``pynvml`` lazily when a run starts), so no
hook in the package is needed; :func:`install_nvml` does that with pytest's ``monkeypatch``.

:class:`SimulatedRapl` builds a powercap tree (``intel-rapl:0`` package + ``intel-rapl:0:0``
dram) in a temporary folder and serves ``energy_uj`` from the clock at fixed watts, wrapping at
``max_energy_range_uj``, by replacing ``rapl._read_text`` (the module's one file reader). It can
deny a domain (PermissionError, as for non-root users since Linux 5.10: the tests run as root,
where ``chmod`` would not stop a read) and remove one (the folder goes, as when a driver unloads).
"""

from __future__ import annotations

import errno
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fake_nvml import FakeGpu, FakeNvml

from carbon_callbacks.core.sensors import rapl

GPU_POWER_W = 200.0


class LiveFakeNvml(FakeNvml):
    """FakeNvml whose GPUs draw ``power_w`` watts: counter in mJ = start + power x elapsed."""

    def __init__(self, gpus: list[FakeGpu], *, power_w: float = GPU_POWER_W, **kwargs: Any):
        super().__init__(gpus, **kwargs)
        self.power_w = power_w
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def _gpu(self, handle: Any, function: str) -> FakeGpu:
        with self._lock:  # the meter's thread and the training thread both call in
            return super()._gpu(handle, function)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> float:
        super().nvmlDeviceGetTotalEnergyConsumption(handle)  # failure modes and call counts
        return 7_000_000.0 + self.power_w * 1000.0 * (time.monotonic() - self._t0)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> float:
        super().nvmlDeviceGetPowerUsage(handle)
        return self.power_w * 1000.0

    def fail_next(self, index: int, function: str) -> None:
        """Make the next call of ``function`` on GPU ``index`` raise NVML_ERROR_UNKNOWN once."""
        with self._lock:
            gpu = self.gpus[index]
            gpu.fail_on[function] = gpu.calls.get(function, 0) + 1

    def wait_failed(self, index: int, function: str, timeout_s: float = 30.0) -> None:
        """Block until the failure set by :meth:`fail_next` was raised (the meter's thread made
        the call), so a fault injected inside an epoch lands inside it however busy the
        machine is; gives up after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                gpu = self.gpus[index]
                if gpu.calls.get(function, 0) >= gpu.fail_on.get(function, 0):
                    return
            time.sleep(0.005)


def one_gpu(**kwargs: Any) -> FakeGpu:
    """An H100 as NVML describes it (``kwargs`` override FakeGpu fields)."""
    return FakeGpu(
        name="NVIDIA H100 80GB HBM3", uuid="GPU-11111111-2222-3333-4444-555555555555", **kwargs
    )


def install_nvml(monkeypatch: Any, nvml: Any) -> Any:
    """Make ``import pynvml`` give ``nvml`` (``None``: the import fails, as without the package)."""
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    return nvml


class SimulatedRapl:
    """A powercap tree whose counters run at fixed watts (see the module docstring).

    Args:
        root: folder to build the tree in (must not exist yet).
        package_w / dram_w: power of the package-0 and dram domains (W).
        max_range_uj: ``max_energy_range_uj`` of both domains (the counters wrap there).
    """

    def __init__(
        self,
        root: Path,
        *,
        package_w: float = 60.0,
        dram_w: float = 6.0,
        max_range_uj: int = 262_143_328_850,
    ):
        self.root = root
        self.max_range_uj = max_range_uj
        self.package = self._zone(root / "intel-rapl:0", "package-0")
        self.dram = self._zone(self.package / "intel-rapl:0:0", "dram")
        self.watts = {self.package: package_w, self.dram: dram_w}
        self.denied: set[Path] = set()
        self._t0 = time.monotonic()
        self._original = rapl._read_text

    def _zone(self, path: Path, name: str) -> Path:
        path.mkdir(parents=True)
        (path / "name").write_text(name + "\n")
        (path / "max_energy_range_uj").write_text(f"{self.max_range_uj}\n")
        (path / "energy_uj").write_text("0\n")  # served from the clock, see _read
        return path

    def install(self, monkeypatch: Any) -> SimulatedRapl:
        """Replace the RAPL module's file reader for the test's duration."""
        monkeypatch.setattr(rapl, "_read_text", self._read)
        return self

    def counter_uj(self, zone: Path) -> int:
        """The raw (wrapped) counter of ``zone`` now."""
        joules = self.watts[zone] * (time.monotonic() - self._t0)
        return int(12_345 + joules * 1e6) % (self.max_range_uj + 1)

    def _read(self, path: Path) -> str:
        path = Path(path)
        zone = path.parent
        if path.name == "energy_uj" and zone in self.watts:
            if not path.exists():
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
            if zone in self.denied:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return f"{self.counter_uj(zone)}\n"
        return self._original(path)

    def deny(self, *zones: Path) -> None:
        """Reads of these domains' counters raise PermissionError from now on."""
        self.denied.update(zones)

    def remove(self, zone: Path) -> None:
        """The domain's folder disappears."""
        shutil.rmtree(zone)


#: Dating slack of one counter read (s). The meter dates a read at the middle of the call, but on
#: a busy 2-core machine the read can return several GIL switch intervals (5 ms each) after the
#: counter was sampled, so each mark can be off by about that much energy.
READ_DATING_SLACK_S = 0.015


def joules_match(joules: float, watts: float, duration_s: float, rel: float = 0.02) -> bool:
    """``joules`` is ``watts x duration_s`` within ``rel`` plus two marks' dating slack."""
    expected = watts * duration_s
    return abs(joules - expected) <= rel * expected + 2 * watts * READ_DATING_SLACK_S
