"""The GPU sensor's power signal: NVML's instantaneous power field where the driver has it,
the averaged ``nvmlDeviceGetPowerUsage`` otherwise, and a recorded switch when the field fails.

On an H100 the averaged power lags load changes by about a second, which cost warm-up epochs up
to 40% of their energy with the sampled method; the instantaneous field follows the load at
NVML's ~100 ms update (docs/benchmarks.md, "meter designs replayed")."""

from __future__ import annotations

import pytest
from driven_clock import DrivenClock, run_to
from fake_nvml import NVML_VALUE_TYPE_DOUBLE, FakeGpu, FakeNvml

from carbon_callbacks.core.events import CarbonCallbacksWarning, EventLog
from carbon_callbacks.core.meter import Meter
from carbon_callbacks.core.sensors.nvidia import NvmlGpuSensor


def _gpu(**kwargs) -> FakeGpu:
    return FakeGpu(power_mw=[100_000.0], **kwargs)


@pytest.mark.parametrize("force_sampled", [False, True])
def test_instant_field_is_preferred_and_named_in_the_provenance(force_sampled):
    nvml = FakeNvml([_gpu(instant_mw=[250_000.0])])
    sensor = NvmlGpuSensor(0, nvml=nvml, force_sampled=force_sampled)
    assert sensor.read_power_w() == pytest.approx(250.0)
    assert "NVML_FI_DEV_POWER_INSTANT" in sensor.info.detail
    assert sensor.info.method == ("sampled" if force_sampled else "counter")
    assert nvml.gpus[0].calls.get("nvmlDeviceGetPowerUsage", 0) == 0
    sensor.close()


def test_without_the_field_the_averaged_power_is_used_and_said():
    nvml = FakeNvml([_gpu()])  # field answers NOT_SUPPORTED
    sensor = NvmlGpuSensor(0, nvml=nvml, force_sampled=True)
    assert sensor.read_power_w() == pytest.approx(100.0)
    assert "nvmlDeviceGetPowerUsage" in sensor.info.detail
    assert "POWER_INSTANT" not in sensor.info.detail
    assert sensor.drain_notices() == []
    sensor.close()


@pytest.mark.parametrize(
    ("architecture", "name", "instant_mw", "lag_s"),
    [
        (9, "NVIDIA H100 80GB HBM3", None, 0.5),  # Hopper: averaged over ~1 s
        (9, "NVIDIA H100 80GB HBM3", [250_000.0], 0.0),  # the field follows the load
        (7, "NVIDIA A100-SXM4-40GB", None, 0.0),  # GA100 reports the instant
        (5, "Tesla V100-SXM2-16GB", None, 0.0),  # before Ampere: the instant
        (None, "NVIDIA H100 80GB HBM3", None, 0.0),  # unknown: no correction
    ],
)
def test_the_averaged_powers_lag_is_declared_where_nvml_averages(
    architecture, name, instant_mw, lag_s
):
    gpu = _gpu(instant_mw=instant_mw, architecture=architecture, name=name)
    sensor = NvmlGpuSensor(0, nvml=FakeNvml([gpu]), force_sampled=True)
    assert sensor.power_lag_s == lag_s
    sensor.close()


def test_a_field_reading_zero_at_open_is_not_trusted():
    nvml = FakeNvml([_gpu(instant_mw=[0.0])])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    assert sensor.read_power_w() == pytest.approx(100.0)
    assert "nvmlDeviceGetPowerUsage" in sensor.info.detail
    sensor.close()


def test_double_typed_field_values_are_decoded_by_their_type():
    nvml = FakeNvml([_gpu(instant_mw=[123_456.5], instant_value_type=NVML_VALUE_TYPE_DOUBLE)])
    sensor = NvmlGpuSensor(0, nvml=nvml)
    assert sensor.read_power_w() == pytest.approx(123.4565)
    sensor.close()


def test_field_failing_mid_run_switches_to_averaged_power_once_and_says_so():
    # open probes the field (call 1); the 3rd call raises
    gpu = _gpu(instant_mw=[300_000.0], fail_on={"nvmlDeviceGetFieldValues": 3})
    sensor = NvmlGpuSensor(0, nvml=FakeNvml([gpu]))
    assert sensor.read_power_w() == pytest.approx(300.0)
    assert sensor.read_power_w() == pytest.approx(100.0)  # the failing read: averaged power
    assert sensor.read_power_w() == pytest.approx(100.0)  # and from then on
    assert gpu.calls["nvmlDeviceGetFieldValues"] == 3  # the field is not retried
    assert "nvmlDeviceGetPowerUsage" in sensor.info.detail
    notices = sensor.drain_notices()
    assert len(notices) == 1 and "instantaneous power field failed" in notices[0]
    assert sensor.drain_notices() == []
    sensor.close()


def test_the_meter_records_the_switch_once_and_keeps_measuring():
    gpu = _gpu(instant_mw=[300_000.0], fail_on={"nvmlDeviceGetFieldValues": 6})
    sensor = NvmlGpuSensor(0, nvml=FakeNvml([gpu]), force_sampled=True)
    events = EventLog()
    clock = DrivenClock()
    meter = Meter([sensor], events, 0.02, 0.02, clock=clock, background=False)
    with pytest.warns(CarbonCallbacksWarning, match="instantaneous power field failed"):
        start = meter.start()
        run_to(meter, clock, 1000.3)
        end = meter.mark()
        meter.stop()
    degraded = [e for e in events.events if e.kind == "sensor_degraded"]
    assert len(degraded) == 1 and degraded[0].source == "gpu:0"
    m = meter.measure(start, end)
    assert m.methods["gpu:0"] == "sampled"  # same method, weaker signal: not a fallback
    # 300 W for the first 0.04-0.06 s of reads, then 100 W: between the two
    assert 100.0 * m.duration_s < m.energy_j["gpu:0"] < 300.0 * m.duration_s
    assert "nvmlDeviceGetPowerUsage" in meter.sensor_infos[0].detail
