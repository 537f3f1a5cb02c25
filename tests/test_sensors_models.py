"""CPU and DRAM models, constant sensors, hardware tables and sensor discovery.

Expected TDPs come from the vendors' specifications (Intel ARK, AMD product pages, NVIDIA
datasheets), not from this package's output: a wrong match in the table lookup fails them.
"""

from __future__ import annotations

import collections
import csv
import importlib.util
import statistics
from pathlib import Path

import pytest

from carbon_callbacks.core.config import CarbonConfig
from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.sensors.cpu_model import (
    DEFAULT_W_PER_CORE,
    DEFAULT_W_PER_CORE_SAMPLE,
    CpuModelSensor,
    CpuUtilisation,
    count_cpu_packages,
    default_w_per_core_from_table,
    lookup_cpu_tdp_w,
    normalise_cpu_name,
    read_cpu_model_name,
)
from carbon_callbacks.core.sensors.discovery import discover_sensors
from carbon_callbacks.core.sensors.memory import DRAM_W_PER_GB, DramModelSensor
from carbon_callbacks.core.sensors.simulated import ConstantPowerSensor
from carbon_callbacks.core.tables import cpu_tdp_table, gpu_tdp_table, lookup_gpu_tdp_w

try:
    from fake_nvml import FakeGpu, FakeNvml, uuid_for
except ImportError:  # tests/ imported as a package
    from tests.fake_nvml import FakeGpu, FakeNvml, uuid_for

pytestmark = pytest.mark.filterwarnings(
    "ignore::carbon_callbacks.core.events.CarbonCallbacksWarning"
)

REPO = Path(__file__).resolve().parent.parent
GIB = 2**30


# -- CPU TDP lookup ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model_name", "tdp_w"),
    [
        ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", 150.0),  # Intel ARK: 150 W
        ("AMD EPYC 7763 64-Core Processor", 280.0),  # AMD: 280 W
        ("Intel(R) Xeon(R) CPU E5-2698 v4 @ 2.20GHz", 135.0),  # Intel ARK: 135 W
        ("AMD Ryzen 9 5950X 16-Core Processor", 105.0),  # AMD: 105 W
        ("AMD FX(tm)-8350 Eight-Core Processor", 125.0),  # AMD: 125 W
        ("Intel(R) Xeon(R) Platinum 8480+", 350.0),  # Intel ARK: 350 W
        ("Intel(R) Core(TM) i7-4600U CPU @ 2.10GHz", 15.0),  # Intel ARK: 15 W
    ],
)
def test_cpu_tdp_for_real_cpuinfo_names(model_name, tdp_w):
    hit = lookup_cpu_tdp_w(model_name)
    assert hit is not None
    assert hit[0] == pytest.approx(tdp_w)


def test_contained_match_picks_the_longest_table_name():
    # "12th Gen" is not part of any table name: the match is the contained "Core i7-12700K"
    hit = lookup_cpu_tdp_w("12th Gen Intel(R) Core(TM) i7-12700K")
    assert hit is not None and hit[1] == "Intel Core i7-12700K"
    # "with Radeon Graphics" trails the model: the table row is "AMD Ryzen 7 PRO 4750U" (15 W)
    hit = lookup_cpu_tdp_w("AMD Ryzen 7 PRO 4750U with Radeon Graphics")
    assert hit == (15.0, "AMD Ryzen 7 PRO 4750U")


def test_6248_and_6248r_are_different_cpus():
    assert lookup_cpu_tdp_w("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz")[0] == pytest.approx(205.0)


@pytest.mark.parametrize(
    "model_name",
    [
        "Intel(R) Xeon(R) CPU @ 2.20GHz",  # cloud VMs hide the model
        "Intel(R) Xeon(R) Gold 9999 CPU @ 9.99GHz",
        "Foo Bar 460",  # the table has a bare "460": a single number must not match
        "",
    ],
)
def test_unknown_cpus_have_no_tdp(model_name):
    assert lookup_cpu_tdp_w(model_name) is None


def test_contained_match_needs_a_word_with_a_digit(monkeypatch):
    from carbon_callbacks.core.sensors import cpu_model

    fake_index = {"xeon gold": (999.0, "Xeon Gold"), "gold 6248": (150.0, "Gold 6248")}
    monkeypatch.setattr(cpu_model, "_cpu_index", lambda: fake_index)
    # a generic two-word phrase must not stand for an unknown model
    assert lookup_cpu_tdp_w("Intel(R) Xeon(R) Gold 9999 CPU") is None
    assert lookup_cpu_tdp_w("Intel(R) Xeon(R) Gold 6248 CPU") == (150.0, "Gold 6248")


def test_normalisation():
    assert normalise_cpu_name("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz") == "xeon gold 6248"
    assert normalise_cpu_name("AMD EPYC 7763 64-Core Processor") == "epyc 7763"
    assert normalise_cpu_name("Intel(R) Core(TM)2 Duo CPU     E8400  @ 3.00GHz") == (
        "core 2 duo e8400"
    )


def test_cpuinfo_parsing(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 0\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 1\n\n"
        "processor\t: 2\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 1\n\n"
    )
    assert read_cpu_model_name(cpuinfo) == "AMD EPYC 7763 64-Core Processor"
    assert count_cpu_packages(cpuinfo) == 2
    no_ids = tmp_path / "arm"
    no_ids.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")
    assert count_cpu_packages(no_ids) == 1


# -- CPU model sensor --------------------------------------------------------------------------
def test_cpu_model_is_tdp_times_sockets_times_utilisation(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "".join(
            f"processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz\n"
            f"physical id\t: {i % 2}\n\n"
            for i in range(8)
        )
    )
    sensor = CpuModelSensor(cpuinfo_path=cpuinfo, utilisation_fn=lambda: 0.5)
    assert sensor.info.name == "cpu:model"
    assert sensor.info.method == "modelled"
    assert sensor.is_counter is False
    assert sensor.matched_name == "Intel Xeon Gold 6248"
    assert sensor.read_power_w() == pytest.approx(150.0 * 2 * 0.5)
    assert "150 W per socket" in sensor.info.detail


def test_unknown_cpu_uses_the_documented_default_per_core(tmp_path):
    sensor = CpuModelSensor(
        model_name="Mystery CPU 1",
        cpuinfo_path=tmp_path / "none",
        physical_cores=16,
        utilisation_fn=lambda: 0.25,
    )
    assert sensor.matched_name is None
    assert sensor.read_power_w() == pytest.approx(DEFAULT_W_PER_CORE * 16 * 0.25)
    assert "default" in sensor.info.detail
    assert f"{DEFAULT_W_PER_CORE:g} W per physical core" in sensor.info.detail


def test_default_w_per_core_is_the_rounded_median_of_its_stated_sample():
    table = cpu_tdp_table()
    missing = [name for name in DEFAULT_W_PER_CORE_SAMPLE if name not in table]
    assert missing == []
    # recomputed here from the table and the documented core counts, independently of the module
    median = statistics.median(table[n] / c for n, c in DEFAULT_W_PER_CORE_SAMPLE.items())
    assert round(median) == DEFAULT_W_PER_CORE
    assert default_w_per_core_from_table() == pytest.approx(median)


def test_utilisation_is_clamped():
    sensor = CpuModelSensor(model_name="AMD EPYC 7763", utilisation_fn=lambda: 1.7)
    assert sensor.read_power_w() == pytest.approx(280.0)


CpuTimes = collections.namedtuple(
    "CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice"
)


def test_cpu_utilisation_from_cpu_times_without_double_counting_guest(monkeypatch):
    import psutil

    samples = iter(
        [
            CpuTimes(10, 0, 0, 90, 0, 0, 0, 0, 0, 0),  # at construction
            # 30 s more busy (10 of them guest time, which Linux already counts in user),
            # 20 s more idle: utilisation 30 / 50 = 0.6
            CpuTimes(40, 0, 0, 110, 0, 0, 0, 0, 10, 0),
            CpuTimes(40, 0, 0, 110, 0, 0, 0, 0, 10, 0),  # no time passed: repeat 0.6
        ]
    )
    monkeypatch.setattr(psutil, "cpu_times", lambda: next(samples))
    utilisation = CpuUtilisation()
    assert utilisation() == pytest.approx(0.6)
    assert utilisation() == pytest.approx(0.6)


def test_cpu_utilisation_real_psutil_is_a_fraction():
    value = CpuUtilisation()()
    assert 0.0 <= value <= 1.0


# -- DRAM model and constant sensor ------------------------------------------------------------
def test_dram_model_arithmetic():
    sensor = DramModelSensor(used_bytes_fn=lambda: 16 * GIB)
    assert DRAM_W_PER_GB == pytest.approx(3 / 8)  # 3 W per 8 GB
    assert sensor.read_power_w() == pytest.approx(16 * 0.375)
    assert sensor.info.name == "dram:model" and sensor.info.component == "dram"
    assert sensor.info.method == "modelled"
    half = DramModelSensor(used_bytes_fn=lambda: 16 * GIB, share=0.5, w_per_gb=1.0)
    assert half.read_power_w() == pytest.approx(8.0)


def test_dram_model_reads_the_machine(monkeypatch):
    import psutil

    memory = psutil.virtual_memory()
    used_gb = (memory.total - memory.available) / GIB
    power = DramModelSensor().read_power_w()
    assert power == pytest.approx(used_gb * DRAM_W_PER_GB, rel=0.2)
    assert 0 < power <= memory.total / GIB * DRAM_W_PER_GB


def test_dram_model_failure_is_a_sensor_error():
    from carbon_callbacks.core.sensors.base import SensorError

    def broken() -> int:
        raise OSError("no /proc/meminfo")

    with pytest.raises(SensorError):
        DramModelSensor(used_bytes_fn=broken).read_power_w()


def test_constant_power_sensor():
    sensor = ConstantPowerSensor("gpu:sim", "gpu", "Tesla V100", 125.0)
    assert sensor.read_power_w() == 125.0
    assert sensor.info.method == "constant"
    assert sensor.is_counter is False
    with pytest.raises(ValueError):
        ConstantPowerSensor("cpu:sim", "cpu", "x", -1.0)


# -- GPU table ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("nvml_name", "tdp_w"),
    [
        ("NVIDIA H100 80GB HBM3", 700.0),  # H100 SXM5: 700 W
        ("NVIDIA H100 PCIe", 350.0),
        ("NVIDIA H200", 700.0),
        ("NVIDIA A100-SXM4-80GB", 400.0),
        ("NVIDIA A100-PCIE-40GB", 250.0),
        ("NVIDIA A100 80GB PCIe", 300.0),
        ("Tesla V100-SXM2-16GB", 300.0),
        ("Tesla V100-PCIE-16GB", 250.0),
        ("Tesla T4", 70.0),
        ("NVIDIA GeForce RTX 4090", 450.0),
        ("NVIDIA RTX A6000", 300.0),
        ("TITAN X (Pascal)", 250.0),
    ],
)
def test_gpu_tdp_for_nvml_names(nvml_name, tdp_w):
    hit = lookup_gpu_tdp_w(nvml_name)
    assert hit is not None
    assert hit[0] == pytest.approx(tdp_w)


@pytest.mark.parametrize(
    "nvml_name",
    ["NVIDIA GeForce RTX 3080 Ti", "NVIDIA GeForce RTX 3080 Laptop GPU", "NVIDIA L40", "", "GPU"],
)
def test_gpu_variants_not_in_the_table_do_not_borrow_a_neighbours_tdp(nvml_name):
    assert lookup_gpu_tdp_w(nvml_name) is None


def test_a10_does_not_match_a100():
    assert lookup_gpu_tdp_w("NVIDIA A10") == (150.0, "A10")


# -- the table builder -------------------------------------------------------------------------
def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_hardware_tables", REPO / "scripts" / "build_hardware_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builder_cleans_dedupes_and_sorts(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "cpu_tdp.csv").write_text(
        "Name,TDP\n"
        "Zeta 1,10\n"
        " Alpha   2 ,20\n"
        "Broken,27.29.5\n"
        "Zero,0.0\n"
        "alpha 2,25\n"  # same name ignoring case: keep the larger TDP
        "Alpha 2,20\n"
    )
    (src / "gpu_tdp.csv").write_text("name,tdp_watts,source\nT4,70,NVIDIA T4 datasheet\n")
    (src / "SOURCES.md").write_text(
        "| file | what |\n|---|---|\n| cpu_tdp.csv | cpus |\n| gpu_tdp.csv | gpus |\n"
        "| other.csv | no |\n"
    )
    out = tmp_path / "out"
    stats = _builder().build(src, out)
    with (out / "cpu_tdp.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows == [["name", "tdp_w"], ["alpha 2", "25"], ["Zeta 1", "10"]]
    assert stats["cpu_tdp.csv"]["bad_tdp"] == 2
    assert stats["cpu_tdp.csv"]["duplicates"] == 2
    sources = (out / "HARDWARE_SOURCES.md").read_text()
    assert "| cpu_tdp.csv | cpus |" in sources and "other.csv" not in sources
    assert not (out / "cpu_tdp.csv").read_text().startswith("#")


@pytest.mark.skipif(
    not (REPO.parent / "shared" / "data" / "cpu_tdp.csv").exists(), reason="no reference data"
)
def test_packaged_tables_are_up_to_date(tmp_path):
    _builder().build(REPO.parent / "shared" / "data", tmp_path)
    packaged = REPO / "carbon_callbacks" / "data"
    for name in ("cpu_tdp.csv", "gpu_tdp.csv"):
        assert (tmp_path / name).read_text() == (packaged / name).read_text(), name


def test_packaged_tables_load():
    cpus = cpu_tdp_table()
    assert len(cpus) > 4000
    assert all(value > 0 for value in cpus.values())
    assert gpu_tdp_table()["T4"] == 70.0


# -- discovery ---------------------------------------------------------------------------------
def _rapl_tree(root: Path) -> Path:
    for rel, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0/intel-rapl:0:0", "dram")):
        path = root / rel
        path.mkdir(parents=True)
        (path / "name").write_text(name + "\n")
        (path / "energy_uj").write_text("1000\n")
        (path / "max_energy_range_uj").write_text("262143328850\n")
    return root


def _names(sensors) -> list[str]:
    return [s.info.name for s in sensors]


def _close(sensors) -> None:
    for sensor in sensors:
        sensor.close()


def test_discovery_all_uses_nvml_and_rapl(tmp_path):
    nvml = FakeNvml([FakeGpu(uuid=uuid_for(0)), FakeGpu(uuid=uuid_for(1))])
    config = CarbonConfig(
        log_dir=None, _endpoints={"rapl_root": str(_rapl_tree(tmp_path / "powercap"))}
    )
    events = EventLog()
    sensors = discover_sensors(config, events, nvml=nvml, env={})
    assert _names(sensors) == ["gpu:0", "gpu:1", "cpu:package-0", "dram:package-0"]
    assert [s.info.method for s in sensors] == ["counter"] * 4
    assert events.events == []
    _close(sensors)
    assert nvml.initialised == 0


def test_discovery_gpu_only_touches_no_cpu_sensor(tmp_path):
    nvml = FakeNvml([FakeGpu()])
    config = CarbonConfig(
        log_dir=None, components="gpu", _endpoints={"rapl_root": str(tmp_path / "absent")}
    )
    events = EventLog()
    sensors = discover_sensors(config, events, nvml=nvml, env={})
    assert _names(sensors) == ["gpu:0"]
    assert events.events == []  # no "powercap absent" event: the CPU was not asked for
    _close(sensors)


def test_discovery_cpu_only_never_initialises_nvml(tmp_path):
    nvml = FakeNvml([FakeGpu()])
    config = CarbonConfig(
        log_dir=None, components="cpu", _endpoints={"rapl_root": str(tmp_path / "absent")}
    )
    events = EventLog()
    sensors = discover_sensors(config, events, nvml=nvml, cpuinfo_path=tmp_path / "x", env={})
    assert _names(sensors) == ["cpu:model", "dram:model"]
    assert nvml.init_calls == 0
    assert [e.source for e in events.events] == ["rapl"]


def test_discovery_sim_gpu_replaces_nvml(tmp_path):
    nvml = FakeNvml([FakeGpu()])
    config = CarbonConfig(
        log_dir=None, components="gpu", sim_gpu="Tesla V100", sim_gpu_watts=300, sim_gpu_util=0.5
    )
    sensors = discover_sensors(config, EventLog(), nvml=nvml, env={})
    assert _names(sensors) == ["gpu:sim"]
    assert sensors[0].info.method == "constant"
    assert sensors[0].info.device == "Tesla V100"
    assert sensors[0].read_power_w() == pytest.approx(150.0)
    assert nvml.init_calls == 0


def test_discovery_sim_cpu_replaces_rapl_and_models(tmp_path):
    config = CarbonConfig(
        log_dir=None,
        components="cpu",
        sim_cpu="Xeon",
        sim_cpu_tdp=200,
        sim_cpu_util=0.25,
        _endpoints={"rapl_root": str(_rapl_tree(tmp_path / "powercap"))},
    )
    events = EventLog()
    sensors = discover_sensors(config, events, env={})
    assert _names(sensors) == ["cpu:sim"]
    assert sensors[0].read_power_w() == pytest.approx(50.0)
    assert events.events == []


def test_discovery_both_simulated(tmp_path):
    config = CarbonConfig(
        log_dir=None, sim_gpu="A100", sim_gpu_watts=400, sim_cpu="EPYC", sim_cpu_tdp=280
    )
    sensors = discover_sensors(config, EventLog(), nvml=FakeNvml([]), env={})
    assert _names(sensors) == ["gpu:sim", "cpu:sim"]
    assert [s.read_power_w() for s in sensors] == pytest.approx([200.0, 140.0])


def test_discovery_without_nvml_when_gpu_requested_warns_once(tmp_path):
    from carbon_callbacks.core.events import CarbonCallbacksWarning

    nvml = FakeNvml([], init_error=12)
    config = CarbonConfig(log_dir=None, components="gpu")
    events = EventLog()
    with pytest.warns(CarbonCallbacksWarning):
        sensors = discover_sensors(config, events, nvml=nvml, env={"CUDA_VISIBLE_DEVICES": "0"})
    assert sensors == []
    assert [e.kind for e in events.events] == ["gpu_unavailable"]


def test_discovery_survives_a_failing_part(tmp_path, monkeypatch):
    from carbon_callbacks.core.sensors import rapl

    def boom(*args, **kwargs):
        raise RuntimeError("sysfs exploded")

    monkeypatch.setattr(rapl, "open_rapl_sensors", boom)
    nvml = FakeNvml([FakeGpu()])
    events = EventLog()
    sensors = discover_sensors(CarbonConfig(log_dir=None), events, nvml=nvml, env={})
    assert _names(sensors) == ["gpu:0"]
    assert [(e.kind, e.source) for e in events.events] == [("sensor_discovery_failed", "cpu")]
    _close(sensors)


def test_first_cpu_utilisation_reading_waits_for_a_clock_tick(monkeypatch):
    """A first reading within one kernel tick of its reference must not say 0% (a silent 0 W)."""
    from carbon_callbacks.core.sensors.cpu_model import CpuUtilisation

    readings = iter([(10.0, 100.0), (10.0, 100.0), (10.0, 100.0), (10.6, 101.0)])
    last = [(10.6, 101.0)]

    def fake_times():
        try:
            last[0] = next(readings)
        except StopIteration:
            pass
        return last[0]

    monkeypatch.setattr(CpuUtilisation, "_times", staticmethod(fake_times))
    util = CpuUtilisation()  # reference (10.0, 100.0)
    assert util() == pytest.approx(0.6)  # waited past the tick instead of returning 0.0
