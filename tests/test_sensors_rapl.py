"""RAPL sensors against simulated powercap trees in tmp_path.

Permission denied is simulated by replacing the module's file reader (``rapl._read_text``) so
that ``energy_uj`` raises PermissionError: the tests may run as root, where ``chmod 000`` does
not stop reads. An unreadable file of another kind is simulated by making ``energy_uj`` a
directory (IsADirectoryError even for root).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from carbon_callbacks.core.events import CarbonCallbacksWarning, EventLog
from carbon_callbacks.core.sensors import rapl
from carbon_callbacks.core.sensors.base import SensorError
from carbon_callbacks.core.sensors.cpu_model import CpuModelSensor
from carbon_callbacks.core.sensors.memory import DramModelSensor
from carbon_callbacks.core.sensors.rapl import (
    RaplSensor,
    find_rapl_domains,
    grant_access_command,
    open_rapl_sensors,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::carbon_callbacks.core.events.CarbonCallbacksWarning"
)

INTEL_RANGE_UJ = 262_143_328_850  # max_energy_range_uj of most Intel packages


def zone(root: Path, rel: str, name: str, energy_uj: int = 0, max_uj: int = INTEL_RANGE_UJ):
    path = root / rel
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_energy(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


def intel_layout(root: Path, sockets: int = 1, top_level_links: bool = False) -> dict[str, Path]:
    """package + core + uncore + dram per socket, psys, and an mmio mirror, like real sysfs."""
    (root / "intel-rapl").mkdir(parents=True)  # the control type folder (no name, no counter)
    paths = {}
    for s in range(sockets):
        pkg = zone(root, f"intel-rapl:{s}", f"package-{s}", 1_000_000 * (s + 1))
        paths[f"package-{s}"] = pkg
        for m, sub in enumerate(("core", "uncore", "dram")):
            sub_path = zone(pkg, f"intel-rapl:{s}:{m}", sub, 500_000)
            paths[f"{sub}-{s}"] = sub_path
            if top_level_links:
                (root / f"intel-rapl:{s}:{m}").symlink_to(sub_path)
    paths["psys"] = zone(root, f"intel-rapl:{sockets}", "psys", 7_000_000)
    paths["mmio"] = zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000)
    return paths


def names(sensors) -> list[str]:
    return [s.info.name for s in sensors]


# -- which domains -----------------------------------------------------------------------------
def test_only_package_and_dram_domains_are_counted(tmp_path):
    intel_layout(tmp_path)
    domains = find_rapl_domains(tmp_path)
    assert [(d.zone, d.sensor_name) for d in domains] == [
        ("intel-rapl:0", "cpu:package-0"),
        ("intel-rapl:0:2", "dram:package-0"),
    ]


def test_two_sockets_with_top_level_links_count_each_domain_once(tmp_path):
    intel_layout(tmp_path, sockets=2, top_level_links=True)
    domains = find_rapl_domains(tmp_path)
    assert [d.sensor_name for d in domains] == [
        "cpu:package-0",
        "cpu:package-1",
        "dram:package-0",
        "dram:package-1",
    ]


def test_subzones_only_at_top_level_are_found(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0")
    zone(tmp_path, "intel-rapl:0:0", "dram")  # flat layout, no nesting
    found = [d.sensor_name for d in find_rapl_domains(tmp_path)]
    assert found == ["cpu:package-0", "dram:package-0"]


def test_amd_rapl_prefix_is_read_and_a_mirror_is_not_double_counted(tmp_path):
    only_amd = tmp_path / "a"
    zone(only_amd, "amd-rapl:0", "package-0")
    assert [d.sensor_name for d in find_rapl_domains(only_amd)] == ["cpu:package-0"]
    both = tmp_path / "b"
    zone(both, "intel-rapl:0", "package-0")
    zone(both, "amd-rapl:0", "package-0")
    domains = find_rapl_domains(both)
    assert [(d.zone, d.sensor_name) for d in domains] == [("intel-rapl:0", "cpu:package-0")]


# -- counting ----------------------------------------------------------------------------------
def test_energy_is_the_package_and_dram_deltas_only(tmp_path):
    paths = intel_layout(tmp_path)
    events = EventLog()
    sensors = open_rapl_sensors(tmp_path, events, cpuinfo_path=tmp_path / "none")
    assert names(sensors) == ["cpu:package-0", "dram:package-0"]
    assert all(isinstance(s, RaplSensor) and s.info.method == "counter" for s in sensors)
    assert events.events == []
    set_energy(paths["package-0"], 1_000_000 + 2_500_000)  # +2.5 J
    set_energy(paths["dram-0"], 500_000 + 400_000)  # +0.4 J
    for other in ("core-0", "uncore-0", "psys", "mmio"):
        set_energy(paths[other], 99_000_000)  # must not be counted anywhere
    package, dram = sensors
    assert package.read_energy_j() == pytest.approx(2.5)
    assert dram.read_energy_j() == pytest.approx(0.4)


def test_wraparound_between_reads(tmp_path):
    # range 0..1_000_000 uJ (1_000_001 states). 900_000 -> 100_000 crossed the top once:
    # 100_000 uJ up to the maximum, 1 uJ to wrap to 0, then 100_000 uJ: 200_001 uJ in all.
    path = zone(tmp_path, "intel-rapl:0", "package-0", 900_000, max_uj=1_000_000)
    sensor = RaplSensor(find_rapl_domains(tmp_path)[0])
    set_energy(path, 100_000)
    assert sensor.read_energy_j() == pytest.approx(0.200_001)
    set_energy(path, 150_000)
    assert sensor.read_energy_j() == pytest.approx(0.250_001)
    set_energy(path, 40_000)  # a second wrap: 850_000 + 1 + 40_000
    assert sensor.read_energy_j() == pytest.approx(0.250_001 + 0.890_001)


def test_max_read_interval_for_the_usual_intel_range(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0")
    sensor = RaplSensor(find_rapl_domains(tmp_path)[0])
    # 262,143 J wraps after 262 s at the 1 kW bound: far above the 1 s default interval
    assert sensor.max_read_interval_s == pytest.approx(262.143, rel=1e-4)
    assert sensor.is_counter is True and sensor.cheap_power is False


def test_power_from_the_last_two_reads(tmp_path, monkeypatch):
    path = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    ticks = [100.0, 102.0, 104.0, 106.0]

    def clock() -> float:  # one tick per call; the last one repeats
        return ticks.pop(0) if len(ticks) > 1 else ticks[0]

    monkeypatch.setattr(rapl.time, "monotonic", clock)
    sensor = RaplSensor(find_rapl_domains(tmp_path)[0])  # t = 100
    set_energy(path, 10_000_000)  # +10 J
    assert sensor.read_energy_j() == pytest.approx(10.0)  # t = 102
    set_energy(path, 16_000_000)  # +6 J
    assert sensor.read_power_w() == pytest.approx(3.0)  # t = 104: 6 J / 2 s
    assert sensor.read_power_w() == pytest.approx(0.0)  # t = 106: nothing more counted


# -- fallbacks at open -------------------------------------------------------------------------
def _deny_energy(monkeypatch):
    real = rapl._read_text

    def reader(path: Path) -> str:
        if Path(path).name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", reader)


def test_default_grant_command_is_the_documented_one():
    assert grant_access_command() == (
        "sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
        "/sys/class/powercap/intel-rapl:*/intel-rapl:*/energy_uj"
    )


def test_permission_denied_falls_back_to_models_with_one_warning(tmp_path, monkeypatch):
    intel_layout(tmp_path, sockets=2)
    _deny_energy(monkeypatch)
    events = EventLog()
    with pytest.warns(CarbonCallbacksWarning, match="chmod"):
        sensors = open_rapl_sensors(tmp_path, events, cpuinfo_path=tmp_path / "none")
    assert [type(s) for s in sensors] == [CpuModelSensor, DramModelSensor]
    assert names(sensors) == ["cpu:model", "dram:model"]
    assert len(events.events) == 1
    message = events.events[0].message
    assert grant_access_command(tmp_path) in message
    assert "udev" in message
    assert "CPU and DRAM" in message


def test_only_dram_denied_keeps_measured_packages(tmp_path, monkeypatch):
    intel_layout(tmp_path)
    real = rapl._read_text

    def reader(path: Path) -> str:
        if Path(path).name == "energy_uj" and "intel-rapl:0:2" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", reader)
    events = EventLog()
    sensors = open_rapl_sensors(tmp_path, events, cpuinfo_path=tmp_path / "none")
    assert names(sensors) == ["cpu:package-0", "dram:model"]
    assert [s.info.method for s in sensors] == ["counter", "modelled"]
    assert len(events.events) == 1 and "DRAM power" in events.events[0].message


def test_unreadable_counter_of_another_kind_falls_back_without_chmod_advice(tmp_path):
    path = zone(tmp_path, "intel-rapl:0", "package-0")
    (path / "energy_uj").unlink()
    (path / "energy_uj").mkdir()  # reading a folder fails even for root
    events = EventLog()
    sensors = open_rapl_sensors(tmp_path, events, cpuinfo_path=tmp_path / "none")
    assert names(sensors) == ["cpu:model", "dram:model"]
    kinds = sorted((e.source, e.kind) for e in events.events)
    assert kinds == [("rapl", "sensor_fallback"), ("rapl:dram", "sensor_fallback")]
    rapl_event = next(e for e in events.events if e.source == "rapl")
    assert "chmod" not in rapl_event.message and "intel-rapl:0" in rapl_event.message


def test_absent_powercap_is_an_info_event_and_models(tmp_path):
    events = EventLog()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CarbonCallbacksWarning)  # recorded, not warned
        sensors = open_rapl_sensors(tmp_path / "missing", events, cpuinfo_path=tmp_path / "x")
    assert names(sensors) == ["cpu:model", "dram:model"]
    assert len(events.events) == 1 and "absent" in events.events[0].message


def test_psys_only_is_not_a_cpu_measurement(tmp_path):
    zone(tmp_path, "intel-rapl:0", "psys")
    events = EventLog()
    sensors = open_rapl_sensors(tmp_path, events, cpuinfo_path=tmp_path / "none")
    assert names(sensors) == ["cpu:model", "dram:model"]
    assert len(events.events) == 1


def test_package_without_dram_domain_adds_dram_model(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0")  # AMD-like: package and core only
    zone(pkg, "intel-rapl:0:0", "core")
    events = EventLog()
    sensors = open_rapl_sensors(tmp_path, events, cpuinfo_path=tmp_path / "none")
    assert names(sensors) == ["cpu:package-0", "dram:model"]
    assert [(e.source, e.kind) for e in events.events] == [("rapl:dram", "sensor_fallback")]


# -- a domain that vanishes mid-run ------------------------------------------------------------
CPUINFO_2_SOCKETS = "".join(
    f"processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz\n"
    f"physical id\t: {i % 2}\n\n"
    for i in range(4)
)


def test_vanished_package_raises_and_falls_back_to_one_socket_model(tmp_path):
    paths = intel_layout(tmp_path, sockets=2)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO_2_SOCKETS)
    sensors = open_rapl_sensors(tmp_path, EventLog(), cpuinfo_path=cpuinfo)
    package0 = sensors[0]
    assert package0.info.name == "cpu:package-0"
    shutil.rmtree(paths["package-0"])
    with pytest.raises(SensorError, match="vanished"):
        package0.read_energy_j()
    replacement = package0.fallback()
    assert isinstance(replacement, CpuModelSensor)
    assert replacement.info.name == "cpu:package-0"
    assert replacement.info.method == "modelled"
    # one socket of a Xeon Gold 6248 (150 W TDP per Intel's spec), not both sockets
    assert replacement.tdp_w == pytest.approx(150.0)


def test_vanished_dram_falls_back_to_its_share_of_the_dram_model(tmp_path):
    paths = intel_layout(tmp_path, sockets=2)
    sensors = open_rapl_sensors(tmp_path, EventLog(), cpuinfo_path=tmp_path / "none")
    dram0 = next(s for s in sensors if s.info.name == "dram:package-0")
    shutil.rmtree(paths["dram-0"])
    with pytest.raises(SensorError):
        dram0.read_energy_j()
    replacement = dram0.fallback()
    assert isinstance(replacement, DramModelSensor)
    assert replacement.info.name == "dram:package-0"
    assert replacement.share == pytest.approx(0.5)
