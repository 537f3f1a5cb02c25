"""NVIDIA sensors and GPU selection, against the NVML stand-in in tests/fake_nvml.py."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from carbon_callbacks.core.events import CarbonCallbacksWarning, EventLog
from carbon_callbacks.core.sensors.base import SensorError
from carbon_callbacks.core.sensors.nvidia import (
    GpuRef,
    NvmlGpuSensor,
    NvmlModelledGpuSensor,
    nvml_references,
    open_gpu_sensors,
    visible_gpus,
)

try:
    from fake_nvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, FakeNvml, uuid_for
except ImportError:  # tests/ imported as a package
    from tests.fake_nvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, FakeNvml, uuid_for

pytestmark = pytest.mark.filterwarnings(
    "ignore::carbon_callbacks.core.events.CarbonCallbacksWarning"
)


def gpus(n: int, **kwargs) -> list[FakeGpu]:
    return [FakeGpu(uuid=uuid_for(i), **kwargs) for i in range(n)]


def indices(refs: list[GpuRef]) -> list[int]:
    return [ref.index for ref in refs]


# -- counter mode -----------------------------------------------------------------------------
def test_counter_mode_reports_joules_since_open():
    # open reads 5000 mJ; later reads 5000, 7500, 12000 mJ -> 0, 2.5, 7.0 J since open
    nvml = FakeNvml([FakeGpu(energy_mj=[5000, 5000, 7500, 12000], uuid=uuid_for(0))])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    try:
        assert sensor.is_counter is True
        assert sensor.cheap_power is True
        assert sensor.info.method == "counter"
        assert sensor.info.name == "gpu:0"
        assert sensor.info.component == "gpu"
        assert sensor.info.device == f"NVIDIA H100 80GB HBM3 ({uuid_for(0)})"
        assert sensor.read_energy_j() == pytest.approx(0.0)
        assert sensor.read_energy_j() == pytest.approx(2.5)
        assert sensor.read_energy_j() == pytest.approx(7.0)
    finally:
        sensor.close()


def test_power_is_read_in_watts_in_counter_mode():
    nvml = FakeNvml([FakeGpu(power_mw=[250_000, 312_500])])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    assert sensor.read_power_w() == pytest.approx(250.0)
    assert sensor.read_power_w() == pytest.approx(312.5)
    sensor.close()


def test_counter_read_failure_becomes_sensor_error():
    # the 3rd energy call (open is the 1st) raises an NVML error; the sensor must wrap it
    gpu = FakeGpu(energy_mj=[0, 10, 20], fail_on={"nvmlDeviceGetTotalEnergyConsumption": 3})
    nvml = FakeNvml([gpu])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    assert sensor.read_energy_j() == pytest.approx(0.010)
    with pytest.raises(SensorError):
        sensor.read_energy_j()
    assert sensor.read_energy_j() == pytest.approx(0.020)  # a transient failure, not a dead sensor
    sensor.close()


def test_counter_going_backwards_is_an_error():
    nvml = FakeNvml([FakeGpu(energy_mj=[9000, 100])])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    with pytest.raises(SensorError, match="backwards"):
        sensor.read_energy_j()
    sensor.close()


# -- sampled mode -----------------------------------------------------------------------------
def test_not_supported_counter_gives_sampled_power_sensor():
    nvml = FakeNvml([FakeGpu(energy_supported=False, power_mw=[123_456])])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    assert sensor.is_counter is False
    assert sensor.info.method == "sampled"
    assert sensor.cheap_power is True
    assert sensor.read_power_w() == pytest.approx(123.456)
    with pytest.raises(NotImplementedError):
        sensor.read_energy_j()
    sensor.close()


def test_force_sampled_never_touches_the_counter():
    gpu = FakeGpu(energy_mj=[1, 2, 3])
    sensor = NvmlGpuSensor(0, nvml=FakeNvml([gpu]), force_sampled=True)
    assert sensor.info.method == "sampled"
    assert "forced" in sensor.info.detail
    assert "nvmlDeviceGetTotalEnergyConsumption" not in gpu.calls
    sensor.close()


def test_sampled_mode_without_power_cannot_open():
    nvml = FakeNvml([FakeGpu(energy_supported=False, power_supported=False)])
    with pytest.raises(SensorError):
        NvmlGpuSensor(0, nvml=nvml)
    assert nvml_references(nvml) == 0  # the failed open released NVML
    assert nvml.initialised == 0


# -- fallbacks --------------------------------------------------------------------------------
def test_counter_fallback_is_sampled_power_of_the_same_gpu():
    nvml = FakeNvml(gpus(2, power_mw=[200_000]))
    sensor = NvmlGpuSensor(1, nvml=nvml)
    replacement = sensor.fallback()
    sensor.close()  # the meter closes the failed sensor after taking its fallback
    assert isinstance(replacement, NvmlGpuSensor)
    assert replacement.info.method == "sampled"
    assert replacement.info.name == "gpu:1"
    assert replacement.info.device == sensor.info.device
    assert replacement.read_power_w() == pytest.approx(200.0)  # NVML still initialised
    replacement.close()
    assert nvml.initialised == 0


def test_sampled_fallback_is_tdp_times_utilisation():
    # H100 SXM board power is 700 W (NVIDIA datasheet); 40 % utilisation -> 280 W
    nvml = FakeNvml([FakeGpu(energy_supported=False, utilisation_pct=[40])])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    model = sensor.fallback()
    assert isinstance(model, NvmlModelledGpuSensor)
    assert model.info.method == "modelled"
    assert model.info.name == "gpu:0"
    assert model.read_power_w() == pytest.approx(280.0)
    assert model.fallback() is None
    model.close()
    sensor.close()


def test_counter_fallback_goes_to_model_when_power_fails_too():
    gpu = FakeGpu(name="Tesla T4", utilisation_pct=[100])
    nvml = FakeNvml([gpu])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    gpu.power_supported = False
    model = sensor.fallback()
    assert model is not None and model.info.method == "modelled"
    assert model.read_power_w() == pytest.approx(70.0)  # T4: 70 W
    model.close()
    sensor.close()


def test_model_uses_default_power_limit_for_unknown_gpu():
    gpu = FakeGpu(name="NVIDIA Mystery X", default_limit_mw=300_000, utilisation_pct=[50])
    model = NvmlModelledGpuSensor(0, nvml=FakeNvml([gpu]))
    assert model.read_power_w() == pytest.approx(150.0)
    assert "power limit" in model.info.detail
    model.close()


def test_unknown_gpu_without_power_limit_has_no_model():
    nvml = FakeNvml([FakeGpu(name="NVIDIA Mystery X", energy_supported=False)])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    assert sensor.fallback() is None
    sensor.close()
    assert nvml.initialised == 0


def test_lost_gpu_read_raises_and_has_no_fallback():
    gpu = FakeGpu(energy_mj=[0, 1000])
    nvml = FakeNvml([gpu])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    gpu.lost = True
    with pytest.raises(SensorError):
        sensor.read_energy_j()
    with pytest.raises(SensorError):
        sensor.read_power_w()
    assert sensor.fallback() is None
    sensor.close()
    assert nvml.initialised == 0


# -- NVML lifetime ----------------------------------------------------------------------------
def test_two_trackers_do_not_shut_each_others_nvml_down():
    nvml = FakeNvml(gpus(1, energy_mj=[0, 1000, 2000]))
    first = NvmlGpuSensor(0, nvml=nvml)
    second = NvmlGpuSensor(0, nvml=nvml)
    assert nvml.init_calls == 1
    first.close()
    first.close()  # idempotent: must not drop the second sensor's reference
    assert nvml.shutdown_calls == 0
    assert second.read_energy_j() >= 0.0  # would raise Uninitialized after a shutdown
    second.close()
    assert nvml.shutdown_calls == 1
    assert nvml.initialised == 0


def test_visible_gpus_leaves_nvml_balanced():
    nvml = FakeNvml(gpus(2))
    visible_gpus(None, {}, nvml)
    assert nvml.init_calls == 1
    assert nvml.shutdown_calls == 1
    assert nvml_references(nvml) == 0


def test_import_does_not_load_pynvml_or_start_threads():
    code = (
        "import sys, threading\n"
        "import carbon_callbacks.core.sensors.discovery, carbon_callbacks.core.sensors.nvidia\n"
        "assert 'pynvml' not in sys.modules, 'pynvml imported at module import'\n"
        "assert threading.active_count() == 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- which GPUs --------------------------------------------------------------------------------
def test_all_gpus_when_cuda_visible_devices_unset():
    assert indices(visible_gpus(None, {}, FakeNvml(gpus(3)))) == [0, 1, 2]


def test_cuda_visible_devices_indices_keep_their_order():
    env = {"CUDA_VISIBLE_DEVICES": "2,0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert indices(visible_gpus(None, env, FakeNvml(gpus(3)))) == [2, 0]


def test_cuda_visible_devices_uuids_and_prefixes():
    nvml = FakeNvml(gpus(3))
    full = {"CUDA_VISIBLE_DEVICES": uuid_for(2)}
    assert indices(visible_gpus(None, full, nvml)) == [2]
    prefix = {"CUDA_VISIBLE_DEVICES": uuid_for(1)[:12]}  # "GPU-00000001"
    assert indices(visible_gpus(None, prefix, nvml)) == [1]


@pytest.mark.parametrize("value", ["", "-1", "-1,0"])
def test_empty_or_minus_one_hides_every_gpu(value):
    nvml = FakeNvml(gpus(2))
    events = EventLog()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CarbonCallbacksWarning)  # an info event, not a warning
        assert visible_gpus(None, {"CUDA_VISIBLE_DEVICES": value}, nvml, events=events) == []
    assert nvml.init_calls == 0
    assert [e.kind for e in events.events] == ["gpu_unavailable"]


def test_invalid_entry_ends_the_list_like_cuda():
    events = EventLog()
    env = {"CUDA_VISIBLE_DEVICES": "1,foo,2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert indices(visible_gpus(None, env, FakeNvml(gpus(3)), events=events)) == [1]
    assert [e.kind for e in events.events] == ["gpu_selection"]


def test_mig_instance_is_recorded_as_unsupported_with_a_warning():
    events = EventLog()
    env = {"CUDA_VISIBLE_DEVICES": "MIG-4f2a6b1c-0000-1111-2222-333344445555"}
    with pytest.warns(CarbonCallbacksWarning, match="MIG"):
        refs = visible_gpus(None, env, FakeNvml(gpus(1)), events=events)
    assert refs == []
    assert [e.kind for e in events.events] == ["gpu_unsupported"]


def test_explicit_gpu_ids_override_the_environment():
    nvml = FakeNvml(gpus(3))
    env = {"CUDA_VISIBLE_DEVICES": "0"}
    refs = visible_gpus([1, uuid_for(2)], env, nvml)
    assert indices(refs) == [1, 2]
    assert refs[1].uuid == uuid_for(2)  # bytes from old pynvml decoded to str


def test_explicit_gpu_ids_accept_digit_strings_and_uuid_without_prefix():
    nvml = FakeNvml(gpus(3))
    assert indices(visible_gpus(["0", uuid_for(2)[4:]], {}, nvml)) == [0, 2]


def test_unknown_explicit_gpu_is_a_warning_not_a_crash():
    events = EventLog()
    with pytest.warns(CarbonCallbacksWarning):
        assert visible_gpus([7], {}, FakeNvml(gpus(2)), events=events) == []
    assert len(events.events) == 1 and "7" in events.events[0].message


def test_index_order_warning_on_mixed_gpus():
    mixed = [
        FakeGpu(name="NVIDIA A100-SXM4-40GB", uuid=uuid_for(0)),
        FakeGpu(name="Tesla T4", uuid=uuid_for(1)),
    ]
    events = EventLog()
    visible_gpus(None, {"CUDA_VISIBLE_DEVICES": "1"}, FakeNvml(mixed), events=events)
    assert [e.kind for e in events.events] == ["gpu_selection"]
    assert "PCI_BUS_ID" in events.events[0].message
    quiet = EventLog()
    env = {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    visible_gpus(None, env, FakeNvml(mixed), events=quiet)
    assert quiet.events == []


def test_whole_gpu_in_mig_mode_is_noted():
    events = EventLog()
    refs = visible_gpus(None, {}, FakeNvml([FakeGpu(mig_enabled=True)]), events=events)
    assert indices(refs) == [0]
    assert [e.kind for e in events.events] == ["gpu_unsupported"]


# -- NVML unavailable: one event, warned only when GPUs were asked for -------------------------
def _no_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError


def test_missing_pynvml_with_gpus_requested_warns_once(monkeypatch):
    _no_pynvml(monkeypatch)
    events = EventLog()
    with pytest.warns(CarbonCallbacksWarning, match="nvidia-ml-py"):
        assert visible_gpus(None, {"CUDA_VISIBLE_DEVICES": "0"}, events=events) == []
    assert [e.kind for e in events.events] == ["gpu_unavailable"]


def test_missing_pynvml_without_request_is_recorded_but_not_warned(monkeypatch):
    _no_pynvml(monkeypatch)
    events = EventLog()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CarbonCallbacksWarning)
        assert visible_gpus(None, {}, events=events) == []
    assert len(events.events) == 1


def test_library_not_found_names_the_driver_library():
    events = EventLog()
    nvml = FakeNvml(gpus(1), init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.warns(CarbonCallbacksWarning):
        assert visible_gpus([0], {}, nvml, events=events) == []
    assert len(events.events) == 1
    assert "libnvidia-ml" in events.events[0].message
    assert nvml_references(nvml) == 0


def test_no_devices_is_one_event():
    events = EventLog()
    assert open_gpu_sensors(None, events, env={}, nvml=FakeNvml([])) == []
    assert [e.kind for e in events.events] == ["gpu_unavailable"]
    assert "no NVIDIA GPU" in events.events[0].message


# -- open_gpu_sensors: best method per GPU, with events ----------------------------------------
def test_open_gpu_sensors_picks_best_method_per_gpu():
    fleet = [
        FakeGpu(uuid=uuid_for(0)),  # counter
        FakeGpu(uuid=uuid_for(1), energy_supported=False),  # sampled
        FakeGpu(uuid=uuid_for(2), energy_supported=False, power_supported=False),  # modelled
        FakeGpu(
            name="NVIDIA Mystery X", uuid=uuid_for(3), energy_supported=False, power_supported=False
        ),  # nothing
    ]
    nvml = FakeNvml(fleet)
    events = EventLog()
    sensors = open_gpu_sensors(None, events, env={}, nvml=nvml)
    assert [(s.info.name, s.info.method) for s in sensors] == [
        ("gpu:0", "counter"),
        ("gpu:1", "sampled"),
        ("gpu:2", "modelled"),
    ]
    by_source = {e.source: e for e in events.events}
    assert set(by_source) == {"gpu:1", "gpu:2", "gpu:3"}
    assert by_source["gpu:3"].kind == "gpu_unavailable"
    for sensor in sensors:
        sensor.close()
    assert nvml.initialised == 0
