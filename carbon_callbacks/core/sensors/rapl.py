"""CPU package and DRAM energy from Linux powercap RAPL counters (``energy_uj``).

Layout read (``/sys/class/powercap`` by default, ``config.endpoints.rapl_root``)::

    intel-rapl:0/            name = package-0   <- counted: cpu:package-0
      intel-rapl:0:0/        name = core        (inside the package: skipped)
      intel-rapl:0:1/        name = uncore      (inside the package: skipped)
      intel-rapl:0:2/        name = dram        <- counted: dram:package-0
    intel-rapl:1/            name = psys        (whole platform, overlaps: skipped)
    intel-rapl-mmio:0/       name = package-0   (mirror of the same counter: skipped)

AMD CPUs appear as ``intel-rapl`` zones on recent kernels; an ``amd-rapl`` prefix is read the
same way, and a package that appears under both prefixes is counted once. Sub-zones are found
both nested in their package's folder and as top-level entries (sysfs shows both).

Each counted domain is one counter sensor (:class:`RaplSensor`). When the counters cannot be
read (permission denied is normal for non-root users on kernels >= 5.10) or powercap is
absent, :func:`open_rapl_sensors` falls back to :class:`CpuModelSensor` and
:class:`DramModelSensor` and records one event saying why (with the command that grants read
access for the permission case).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.sensors.base import Sensor, SensorError, SensorInfo
from carbon_callbacks.core.sensors.cpu_model import CpuModelSensor
from carbon_callbacks.core.sensors.memory import DramModelSensor

#: Default powercap root.
RAPL_ROOT = "/sys/class/powercap"
#: Zone folder names counted: ``intel-rapl:N`` / ``intel-rapl:N:M`` (and ``amd-rapl``).
_ZONE = re.compile(r"^(intel-rapl|amd-rapl):(\d+)(?::(\d+))?$")
#: A power no single RAPL domain reaches (W); bounds the safe read interval (see RaplSensor).
MAX_PLAUSIBLE_DOMAIN_POWER_W = 1000.0
#: Shortest window (s) over which :meth:`RaplSensor.read_power_w` differences two reads.
MIN_POWER_WINDOW_S = 0.01
#: Micro-joules per joule.
_UJ_PER_J = 1e6


def _read_text(path: Path) -> str:
    """Read a sysfs file (module-level so tests can replace it)."""
    with open(path, encoding="ascii") as handle:
        return handle.read()


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL domain that is counted.

    Attributes:
        zone: folder name, e.g. ``"intel-rapl:0"`` or ``"intel-rapl:0:2"``.
        path: the zone's folder.
        label: the zone's ``name`` file, e.g. ``"package-0"`` or ``"dram"``.
        component: ``"cpu"`` (package) or ``"dram"``.
        package: the package it belongs to, e.g. ``"package-0"``.
    """

    zone: str
    path: Path
    label: str
    component: str
    package: str

    @property
    def sensor_name(self) -> str:
        """``"cpu:package-N"`` or ``"dram:package-N"``."""
        return f"{self.component}:{self.package}"


def _zone_label(path: Path) -> str | None:
    try:
        return _read_text(path / "name").strip()
    except OSError:
        return None


def find_rapl_domains(root: str | os.PathLike[str] = RAPL_ROOT) -> list[RaplDomain]:
    """Package and dram domains under ``root``, each counted once, packages in index order.

    Skipped: ``core``/``uncore`` sub-zones (inside the package), ``psys`` (the whole platform,
    overlapping everything), ``intel-rapl-mmio:*`` (a second interface to the same package
    counter) and a package already seen under another prefix. Returns ``[]`` when ``root``
    has no RAPL zone.
    """
    base = Path(root)
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    tops: list[tuple[int, int, str]] = []  # (index, prefix order, zone)
    for entry in entries:
        match = _ZONE.match(entry)
        if match and match.group(3) is None:
            prefix_order = 0 if match.group(1) == "intel-rapl" else 1
            tops.append((int(match.group(2)), prefix_order, entry))
    domains: list[RaplDomain] = []
    seen_packages: set[str] = set()
    for index, _, zone in sorted(tops, key=lambda item: (item[1], item[0])):
        path = base / zone
        label = _zone_label(path)
        if not label or not label.startswith("package"):
            continue  # psys and anything else that is not a package
        package = label if re.fullmatch(r"package-\d+", label) else f"package-{index}"
        if package in seen_packages:
            continue  # the same package under a second prefix
        seen_packages.add(package)
        domains.append(RaplDomain(zone, path, label, "cpu", package))
        prefix = zone.split(":")[0]
        sub_paths: dict[str, Path] = {}
        for parent in (path, base):  # nested first, then top-level entries
            try:
                children = sorted(os.listdir(parent))
            except OSError:
                continue
            for child in children:
                sub = _ZONE.match(child)
                if (
                    sub
                    and sub.group(1) == prefix
                    and sub.group(3) is not None
                    and int(sub.group(2)) == index
                    and child not in sub_paths
                ):
                    sub_paths[child] = parent / child
        for sub_zone in sorted(sub_paths, key=lambda z: int(z.rsplit(":", 1)[1])):
            if _zone_label(sub_paths[sub_zone]) == "dram":
                domains.append(RaplDomain(sub_zone, sub_paths[sub_zone], "dram", "dram", package))
                break
    domains.sort(key=lambda d: (d.component != "cpu", int(d.package.rsplit("-", 1)[1])))
    return domains


class RaplSensor(Sensor):
    """A RAPL domain's cumulative energy in joules since the sensor was opened (``counter``).

    ``energy_uj`` is a micro-joule counter that wraps to 0 after ``max_energy_range_uj``. Each
    read adds ``(new - old) mod (max_energy_range_uj + 1)``, which is right when the counter
    wrapped at most once since the previous read. That assumption: the counter is 32 bits of
    energy units of 15.3 uJ (AMD, server DRAM) to 61 uJ (Intel), so the range is about 65 kJ
    to 262 kJ (262,143,328,850 uJ on most Intel CPUs); even a range of only 2**32 uJ (about
    4,295 J) would need a domain drawing more than 4 kW to wrap twice within the meter's
    default 1 s interval. In general reads must come at least every
    :attr:`max_read_interval_s` (range / :data:`MAX_PLAUSIBLE_DOMAIN_POWER_W`, i.e. 262 s for
    the usual Intel range): the meter reads every counter each ``interval_s``, so keep
    ``interval_s`` below that.

    Opening reads both files, so an unreadable counter (``PermissionError``, ``OSError``)
    raises here, not in the middle of a run. A read that fails later (the domain vanished)
    raises :class:`SensorError`; :meth:`fallback` then gives the CPU model (package) or the
    DRAM model (dram) under the same sensor name, scaled to this domain's share of the machine.

    Args:
        domain: the domain to read (from :func:`find_rapl_domains`).
        domain_count: domains of the same component on this machine (for the fallback's share).
        cpuinfo_path: ``/proc/cpuinfo`` stand-in, passed to the CPU model fallback.
    """

    cheap_power = False

    def __init__(
        self,
        domain: RaplDomain,
        *,
        domain_count: int = 1,
        cpuinfo_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.domain = domain
        self.domain_count = max(1, int(domain_count))
        self._cpuinfo_path = cpuinfo_path
        self._energy_file = domain.path / "energy_uj"
        self._lock = threading.Lock()
        self.max_range_uj = self._read_max_range_uj()
        self._last_uj = self._read_counter_uj()  # raises PermissionError/OSError to the caller
        self._energy_j = 0.0
        now = time.monotonic()
        self._anchor = (now, 0.0)  # (time, energy) the next power window starts from
        self._last_power_w: float | None = None
        self.is_counter = True
        self.info = SensorInfo(
            name=domain.sensor_name,
            component=domain.component,
            device=f"RAPL {domain.zone} ({domain.label})",
            method="counter",
            detail=f"powercap {self._energy_file} (uJ counter, wraps at {self.max_range_uj} uJ)",
        )

    @property
    def max_read_interval_s(self) -> float:
        """Longest gap between reads for which one wrap at most is guaranteed (seconds)."""
        return self.max_range_uj / _UJ_PER_J / MAX_PLAUSIBLE_DOMAIN_POWER_W

    def _read_max_range_uj(self) -> int:
        raw = _read_text(self.domain.path / "max_energy_range_uj").strip()
        value = int(raw)
        if value <= 0:
            raise SensorError(f"{self.domain.zone}: max_energy_range_uj is {value}")
        return value

    def _read_counter_uj(self) -> int:
        return int(_read_text(self._energy_file).strip())

    def read_energy_j(self) -> float:
        """Cumulative joules since the sensor was opened (wraparound handled).

        The file is read under the lock: two reads finishing out of order would otherwise
        look like a wrap and add a whole counter range.
        """
        with self._lock:
            try:
                raw_uj = self._read_counter_uj()
            except FileNotFoundError as exc:
                raise SensorError(
                    f"RAPL domain {self.domain.zone} ({self.domain.label}) vanished: {exc}"
                ) from exc
            except (OSError, ValueError) as exc:
                raise SensorError(
                    f"cannot read RAPL domain {self.domain.zone} ({self.domain.label}): {exc!r}"
                ) from exc
            now = time.monotonic()
            delta_uj = (raw_uj - self._last_uj) % (self.max_range_uj + 1)
            self._last_uj = raw_uj
            self._energy_j += delta_uj / _UJ_PER_J
            anchor_t, anchor_j = self._anchor
            if now - anchor_t >= MIN_POWER_WINDOW_S:
                self._last_power_w = (self._energy_j - anchor_j) / (now - anchor_t)
                self._anchor = (now, self._energy_j)
            return self._energy_j

    def read_power_w(self) -> float:
        """Mean power in watts between the last two reads at least 10 ms apart.

        Reads the counter (not cheap: a sysfs read), so the meter does not call it at marks.
        """
        self.read_energy_j()
        with self._lock:
            if self._last_power_w is not None:
                return self._last_power_w
            anchor_t, anchor_j = self._anchor
            elapsed_s = time.monotonic() - anchor_t
            return (self._energy_j - anchor_j) / elapsed_s if elapsed_s > 0 else 0.0

    def fallback(self) -> Sensor | None:
        """The CPU model (package) or DRAM model (dram) for this domain's share, same name."""
        try:
            if self.domain.component == "cpu":
                return CpuModelSensor(
                    name=self.info.name,
                    cpuinfo_path=self._cpuinfo_path,
                    packages=1 if self.domain_count > 1 else None,
                )
            return DramModelSensor(name=self.info.name, share=1.0 / self.domain_count)
        except Exception:  # noqa: BLE001 - no replacement rather than a crash in the meter
            return None


def grant_access_command(
    root: str | os.PathLike[str] = RAPL_ROOT, prefix: str = "intel-rapl"
) -> str:
    """The shell command that makes the RAPL counters readable for every user (until reboot)."""
    base = str(root).rstrip("/")
    return f"sudo chmod a+r {base}/{prefix}:*/energy_uj {base}/{prefix}:*/{prefix}:*/energy_uj"


def _models(
    need_cpu: bool, need_dram: bool, cpuinfo_path: str | os.PathLike[str] | None
) -> list[Sensor]:
    sensors: list[Sensor] = []
    if need_cpu:
        sensors.append(CpuModelSensor(cpuinfo_path=cpuinfo_path))
    if need_dram:
        sensors.append(DramModelSensor())
    return sensors


def _unreadable(
    root: str | os.PathLike[str], prefix: str, what: str, denied: list[str], failed: list[str]
) -> str:
    """The warning for RAPL counters that could not be opened; for permission denied, the
    command (and the udev rule) that grants read access."""
    if denied:
        return (
            f"cannot read the RAPL energy counters (permission denied on "
            f"{', '.join(denied)}; Linux >= 5.10 restricts them to root), so {what} power "
            f"is modelled instead of measured. To measure it, grant read access: "
            f"`{grant_access_command(root, prefix)}` (until reboot), or make it permanent "
            "with a udev rule that runs the same chmod, e.g. in "
            "/etc/udev/rules.d/99-rapl.rules: "
            '`SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*", ACTION=="add", '
            'RUN+="/bin/chmod a+r /sys%p/energy_uj"`'
        )
    return (
        f"cannot read the RAPL energy counters ({'; '.join(failed)}), so {what} power "
        "is modelled instead of measured"
    )


def open_rapl_sensors(
    root: str | os.PathLike[str],
    events: EventLog,
    *,
    cpuinfo_path: str | os.PathLike[str] | None = None,
) -> list[Sensor]:
    """CPU and DRAM sensors: RAPL counters where readable, else the models, with events.

    - powercap absent or without a package domain: CPU and DRAM models, one info event
      (``sensor_fallback``, source ``"rapl"``, not warned: normal on non-Linux and in VMs);
    - a package counter unreadable: the CPU model for all sockets (no mixing of measured and
      modelled packages); a dram counter unreadable: the DRAM model. One warning event names
      the cause and, for permission denied, the command that grants read access;
    - packages readable but no dram domain (normal on AMD and most desktop CPUs): the DRAM
      model, one info event (source ``"rapl:dram"``).
    """
    domains = find_rapl_domains(root)
    packages = [d for d in domains if d.component == "cpu"]
    drams = [d for d in domains if d.component == "dram"]
    if not packages:
        where = f"{root}" if Path(root).is_dir() else f"{root} (absent)"
        events.record(
            "sensor_fallback",
            f"no RAPL package counter at {where}: not Linux, a VM or a container without "
            "powercap. CPU power is modelled as TDP x utilisation and DRAM from memory in use",
            "rapl",
            warn=False,
        )
        return _models(True, True, cpuinfo_path)
    opened: dict[str, list[RaplSensor]] = {"cpu": [], "dram": []}
    denied: list[str] = []
    failed: list[str] = []
    for group in (packages, drams):
        for domain in group:
            try:
                opened[domain.component].append(
                    RaplSensor(domain, domain_count=len(group), cpuinfo_path=cpuinfo_path)
                )
            except PermissionError:
                denied.append(str(domain.path / "energy_uj"))
            except (OSError, ValueError, SensorError) as exc:
                failed.append(f"{domain.zone} ({exc!r})")
    cpu_ok = len(opened["cpu"]) == len(packages)
    dram_ok = bool(drams) and len(opened["dram"]) == len(drams)
    sensors: list[Sensor] = []
    for component, ok in (("cpu", cpu_ok), ("dram", dram_ok)):
        if ok:
            sensors.extend(opened[component])
        else:
            for sensor in opened[component]:
                sensor.close()
    sensors.extend(_models(not cpu_ok, not dram_ok, cpuinfo_path))
    modelled = [name for name, ok in (("CPU", cpu_ok), ("DRAM", dram_ok)) if not ok]
    if denied or failed:
        what = " and ".join(n for n in modelled if n != "DRAM" or drams)
        prefix = packages[0].zone.split(":")[0]
        events.record("sensor_fallback", _unreadable(root, prefix, what, denied, failed), "rapl")
    if not drams:
        events.record(
            "sensor_fallback",
            "RAPL exposes no dram domain here (normal on AMD and most desktop CPUs); DRAM "
            "power is modelled from memory in use",
            "rapl:dram",
            warn=False,
        )
    return sensors
