"""CPU power modelled as TDP x utilisation, for machines whose RAPL counters cannot be read.

``power_w = tdp_w x utilisation``, where

- ``tdp_w`` is the thermal design power per socket from the packaged table
  (``carbon_callbacks/data/cpu_tdp.csv``, matched by the CPU's model name, see
  :func:`lookup_cpu_tdp_w`) times the number of sockets (distinct ``physical id`` in
  ``/proc/cpuinfo``, 1 when absent);
- for a CPU not in the table, ``DEFAULT_W_PER_CORE`` (8 W) per physical core, labelled as a
  default in ``SensorInfo.detail``. The figure is the median TDP per core, rounded, of the
  sample :data:`DEFAULT_W_PER_CORE_SAMPLE`: 29 server, workstation and desktop CPUs typical of
  deep-learning hosts, TDP from the packaged table and core counts from the vendors'
  specification pages (median 7.8 W/core, quartiles 6.7 and 10.2 W/core). The table has no
  core counts, so the sample is stated here and a test recomputes the median from the table;
- ``utilisation`` is the machine's CPU utilisation (all cores, 0..1) since the previous read,
  as ``psutil.cpu_percent(interval=None) / 100`` computes it, but from this sensor's own
  reference point (``psutil.cpu_times()``). ``cpu_percent(interval=None)`` keeps its reference
  per calling thread in recent psutil (so priming it on the training thread and reading it
  on the meter's thread gives 0 for the first interval) and process-wide in older psutil (so
  any other caller shortens our interval). The reference is taken when the sensor is built.

Real CPUs draw power at idle and can exceed TDP under turbo, so the linear model is rough; the
run log says ``modelled`` and how it was made.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from carbon_callbacks.core.sensors.base import Sensor, SensorError, SensorInfo
from carbon_callbacks.core.tables import cpu_tdp_table

#: Default path of the kernel's CPU description.
CPUINFO_PATH = "/proc/cpuinfo"

#: Watts per physical core for CPUs not in the table (see the module docstring).
DEFAULT_W_PER_CORE: float = 8.0

#: The sample behind :data:`DEFAULT_W_PER_CORE`: table name -> physical cores (vendor specs).
DEFAULT_W_PER_CORE_SAMPLE: dict[str, int] = {
    "Intel Xeon Gold 6248": 20,
    "Intel Xeon Gold 6248R": 24,
    "Intel Xeon Platinum 8480+": 56,
    "Intel Xeon E5-2698 v4": 20,
    "Intel Xeon Gold 6130": 16,
    "Intel Xeon Silver 4214": 12,
    "Intel Xeon Platinum 8358": 32,
    "Intel Xeon Gold 6338": 32,
    "Intel Xeon E5-2680 v4": 14,
    "Intel Xeon Gold 5218": 16,
    "Intel Xeon Platinum 8380": 40,
    "Intel Xeon Platinum 8168": 24,
    "Intel Xeon E5-2690 v3": 12,
    "Intel Xeon W-2245": 8,
    "AMD EPYC 7763": 64,
    "AMD EPYC 7742": 64,
    "AMD EPYC 7543": 32,
    "AMD EPYC 9654": 96,
    "AMD EPYC 7302": 16,
    "AMD EPYC 7443": 24,
    "AMD Ryzen Threadripper 3970X": 32,
    "AMD Ryzen Threadripper PRO 3975WX": 32,
    "AMD Ryzen 9 5950X": 16,
    "AMD Ryzen 9 7950X": 16,
    "AMD Ryzen 7 5800X": 8,
    "Intel Core i9-13900K": 24,
    "Intel Core i9-10900K": 10,
    "Intel Core i9-9900K": 8,
    "Intel Core i7-8700K": 6,
}

_TRADEMARK = re.compile(r"\((?:r|tm|c)\)|®|™", re.IGNORECASE)
_CLOCK = re.compile(r"@.*$")  # "@ 2.10GHz" and anything after it
_CORE_COUNT = re.compile(r"\b[a-z0-9]+-core(?:\s+processor)?\b")  # "64-Core Processor"
_NOISE_WORDS = frozenset({"intel", "amd", "apple", "cpu", "processor"})
#: ``platform.processor()`` values that name an architecture, not a model.
_ARCH_ONLY = frozenset({"", "x86_64", "amd64", "i386", "i686", "aarch64", "arm", "arm64"})


def normalise_cpu_name(name: str) -> str:
    """Lower-case model name without trademarks, clock, core-count phrase or vendor words.

    ``"Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"`` -> ``"xeon gold 6248"``;
    ``"AMD EPYC 7763 64-Core Processor"`` -> ``"epyc 7763"``.
    """
    text = _TRADEMARK.sub("", name)
    text = _CLOCK.sub(" ", text).casefold()
    text = _CORE_COUNT.sub(" ", text)
    text = re.sub(r"\bcore2\b", "core 2", text)  # "Core(TM)2 Duo" -> "core 2 duo"
    text = text.replace(",", " ")
    words = [w for w in text.split() if w not in _NOISE_WORDS]
    return " ".join(words)


@functools.lru_cache(maxsize=1)
def _cpu_index() -> dict[str, tuple[float, str]]:
    """Normalised table name -> (TDP W, table name); on clashes the larger TDP."""
    index: dict[str, tuple[float, str]] = {}
    for table_name, tdp_w in cpu_tdp_table().items():
        key = normalise_cpu_name(table_name)
        if key and (key not in index or tdp_w > index[key][0]):
            index[key] = (tdp_w, table_name)
    return index


def lookup_cpu_tdp_w(model_name: str) -> tuple[float, str] | None:
    """TDP per socket in watts for a CPU model name, and the table name it matched.

    Both names are normalised (:func:`normalise_cpu_name`). An exact match wins; otherwise the
    longest table name whose words appear as consecutive whole words of the model name (e.g.
    ``"13th gen core i7-13700k"`` contains ``"core i7-13700k"``). Such a contained match must
    have at least two words, one with a digit, so that a bare number in the table (it holds
    ``"460"`` and the like) never matches part of an unrelated name. ``None`` when nothing
    matches.
    """
    key = normalise_cpu_name(model_name or "")
    if not key:
        return None
    index = _cpu_index()
    if key in index:
        return index[key]
    words = key.split()
    best: tuple[float, str] | None = None
    best_len = 0
    for start in range(len(words)):
        for stop in range(start + 2, len(words) + 1):
            chunk = words[start:stop]
            if not any(ch.isdigit() for word in chunk for ch in word):
                continue
            candidate = " ".join(chunk)
            hit = index.get(candidate)
            if hit is not None and len(candidate) > best_len:
                best, best_len = hit, len(candidate)
    return best


def _read_cpuinfo(cpuinfo_path: str | os.PathLike[str] | None) -> str:
    try:
        return Path(cpuinfo_path or CPUINFO_PATH).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def read_cpu_model_name(cpuinfo_path: str | os.PathLike[str] | None = None) -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (``model name``), else ``platform.processor()``.

    Returns ``None`` when neither names a model (e.g. only an architecture such as ``x86_64``).
    """
    for line in _read_cpuinfo(cpuinfo_path).splitlines():
        field, _, value = line.partition(":")
        if field.strip().lower() == "model name" and value.strip():
            return value.strip()
    processor = platform.processor().strip()
    if processor.lower() in _ARCH_ONLY:
        return None
    return processor


def count_cpu_packages(cpuinfo_path: str | os.PathLike[str] | None = None) -> int:
    """Number of CPU sockets: distinct ``physical id`` values in ``/proc/cpuinfo`` (>= 1)."""
    ids = set()
    for line in _read_cpuinfo(cpuinfo_path).splitlines():
        field, _, value = line.partition(":")
        if field.strip().lower() == "physical id":
            ids.add(value.strip())
    return max(1, len(ids))


def physical_core_count() -> int:
    """Physical cores of the machine (psutil), else logical CPUs, else 1."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - psutil is optional at this point
        cores = None
    return int(cores or os.cpu_count() or 1)


def default_w_per_core_from_table() -> float:
    """Median TDP per core (W) of :data:`DEFAULT_W_PER_CORE_SAMPLE`, TDP from the table."""
    table = cpu_tdp_table()
    sample = DEFAULT_W_PER_CORE_SAMPLE.items()
    return statistics.median(table[name] / cores for name, cores in sample)


class CpuUtilisation:
    """Machine-wide CPU utilisation (0..1) since the previous call, from ``psutil.cpu_times()``.

    Busy time is total minus idle and iowait; on Linux ``guest`` and ``guest_nice`` are
    already included in ``user``/``nice`` and are not counted twice. The first call after
    construction covers the time since construction. Thread-safe.
    """

    #: Longest wait (s) for the first reading to span a clock tick (the kernel counts CPU time
    #: in ticks of 1-10 ms; a reading within one tick of its reference would say 0%).
    FIRST_READING_WAIT_S = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = self._times()
        self._last_fraction: float | None = None

    @staticmethod
    def _times() -> tuple[float, float]:
        """(busy seconds, total seconds) summed over all CPUs."""
        import psutil

        times = psutil.cpu_times()
        total = sum(times)
        total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
        idle = times.idle + getattr(times, "iowait", 0.0)
        return total - idle, total

    def __call__(self) -> float:
        now = self._times()
        with self._lock:
            busy0, total0 = self._last
            if now[1] - total0 <= 0 and self._last_fraction is None:
                # the first reading: wait (briefly, once) for a tick, never report a silent 0%
                deadline = time.monotonic() + self.FIRST_READING_WAIT_S
                while now[1] - total0 <= 0 and time.monotonic() < deadline:
                    time.sleep(0.002)
                    now = self._times()
            d_total = now[1] - total0
            if d_total <= 0:  # called twice within one clock tick: repeat the last value
                return self._last_fraction if self._last_fraction is not None else 0.0
            self._last = now
            fraction = min(1.0, max(0.0, (now[0] - busy0) / d_total))
            self._last_fraction = fraction
            return fraction


class CpuModelSensor(Sensor):
    """Modelled CPU power: TDP x machine CPU utilisation (method ``"modelled"``).

    Args:
        name: sensor key (default ``"cpu:model"``; a RAPL package's fallback keeps its name).
        cpuinfo_path: ``/proc/cpuinfo`` stand-in (tests).
        model_name: the CPU model name; read from ``cpuinfo_path`` when not given.
        packages: sockets this sensor stands for (default: all sockets of the machine; a
            fallback for one RAPL package uses 1).
        physical_cores: physical cores of the machine, for the default (psutil when not given).
        utilisation_fn: returns the utilisation 0..1 since its previous call (default
            :class:`CpuUtilisation`).

    Attributes:
        tdp_w: the power at 100 % utilisation in watts (all sockets this sensor stands for).
        matched_name: table row used, or ``None`` when the per-core default applies.
    """

    cheap_power = False
    power_is_interval_mean = True  # utilisation since the previous read

    def __init__(
        self,
        *,
        name: str = "cpu:model",
        cpuinfo_path: str | os.PathLike[str] | None = None,
        model_name: str | None = None,
        packages: int | None = None,
        physical_cores: int | None = None,
        utilisation_fn: Callable[[], float] | None = None,
    ) -> None:
        if model_name is None:
            model_name = read_cpu_model_name(cpuinfo_path)
        machine_packages = count_cpu_packages(cpuinfo_path)
        packages = machine_packages if packages is None else max(1, int(packages))
        hit = lookup_cpu_tdp_w(model_name) if model_name else None
        shown = model_name or "unknown CPU"
        if hit is not None:
            per_socket_w, self.matched_name = hit
            self.tdp_w = per_socket_w * packages
            how = (
                f"TDP {per_socket_w:g} W per socket (table: {self.matched_name!r}) x {packages} "
                f"socket(s) x machine CPU utilisation"
            )
        else:
            self.matched_name = None
            cores = physical_cores if physical_cores is not None else physical_core_count()
            cores_here = max(1.0, cores * packages / machine_packages)
            self.tdp_w = DEFAULT_W_PER_CORE * cores_here
            how = (
                f"default {DEFAULT_W_PER_CORE:g} W per physical core (CPU {shown!r} not in the "
                f"TDP table; median TDP/core of common server and desktop CPUs) x "
                f"{cores_here:g} core(s) x machine CPU utilisation"
            )
        self.model_name = model_name
        self._utilisation = utilisation_fn or CpuUtilisation()
        self.is_counter = False
        self.info = SensorInfo(
            name=name, component="cpu", device=shown, method="modelled", detail=how
        )

    def read_power_w(self) -> float:
        """Modelled CPU power now, in watts."""
        try:
            fraction = float(self._utilisation())
        except Exception as exc:  # noqa: BLE001
            raise SensorError(f"cannot read CPU utilisation: {exc!r}") from exc
        return self.tdp_w * min(1.0, max(0.0, fraction))
