"""The meter: sampling thread, marks, integration on known traces, fallbacks, stopping."""

from __future__ import annotations

import threading
import time

import pytest
from power_traces import ConstantCounterSensor, TracePowerSensor

from carbon_callbacks.core.events import CarbonCallbacksWarning, EventLog
from carbon_callbacks.core.meter import Measurement, Meter
from carbon_callbacks.core.sensors.cpu_model import CpuModelSensor


def _meter(sensors, interval_s=0.02):
    return Meter(sensors, EventLog(), interval_s=interval_s)


def test_constant_power_integrates_to_power_times_duration():
    meter = _meter([TracePowerSensor("gpu:0", lambda t: 150.0)])
    start = meter.start()
    time.sleep(0.3)
    m = meter.measure(start, meter.mark())
    meter.stop()
    assert m.duration_s == pytest.approx(0.3, abs=0.05)
    assert m.energy_j["gpu:0"] == pytest.approx(150.0 * m.duration_s, rel=1e-6)
    assert m.methods == {"gpu:0": "sampled"}
    assert m.mean_power_w()["gpu"] == pytest.approx(150.0, rel=1e-6)


def test_mean_power_divides_each_sensors_joules_by_its_own_window():
    # an epoch combined from two ranks: rank 1's epoch lasted 1.2 s against rank 0's 1.0 s
    m = Measurement(
        start_unix_s=0.0,
        end_unix_s=1.0,
        duration_s=1.0,
        energy_j={"rank0/gpu:0": 10.0, "rank1/gpu:0": 36.0, "rank0/cpu": 5.0},
        methods={},
        components={"rank0/gpu:0": "gpu", "rank1/gpu:0": "gpu", "rank0/cpu": "cpu"},
        window_s={"rank0/gpu:0": 1.0, "rank1/gpu:0": 1.2},
    )
    power = m.mean_power_w()
    assert power["gpu"] == pytest.approx(10.0 + 30.0)  # not (10 + 36) / 1.0
    assert power["cpu"] == pytest.approx(5.0)  # no window of its own: duration_s
    assert power["total"] == pytest.approx(45.0)
    assert m.total_energy_j == pytest.approx(51.0)  # the energy itself is not touched


def test_linear_ramp_is_integrated_exactly_by_the_trapezoid_rule():
    # P(t) = 100 + 200 t: the trapezoid rule is exact for a linear trace
    sensor = TracePowerSensor("gpu:0", lambda t: 100.0 + 200.0 * t, cheap=True)
    meter = _meter([sensor], interval_s=0.01)
    start = meter.start()
    time.sleep(0.25)
    end = meter.mark()
    meter.stop()
    t0 = start.time_monotonic_s - sensor._t0
    t1 = end.time_monotonic_s - sensor._t0
    exact = 100.0 * (t1 - t0) + 100.0 * (t1**2 - t0**2)
    got = meter.measure(start, end).energy_j["gpu:0"]
    assert got == pytest.approx(exact, rel=0.02)


def test_counter_marks_are_bridged_without_reading_the_counter():
    sensor = ConstantCounterSensor("gpu:0", 200.0)
    meter = _meter([sensor], interval_s=10.0)  # the thread will not sample during the test
    start = meter.start()
    reads_after_start = sensor.counter_reads
    time.sleep(0.2)
    end = meter.mark()
    assert sensor.counter_reads == reads_after_start  # the mark did no counter read
    m = meter.measure(start, end)
    meter.stop()
    assert m.energy_j["gpu:0"] == pytest.approx(200.0 * m.duration_s, rel=1e-3)
    assert m.methods["gpu:0"] == "counter"


def test_counter_and_power_sensors_together_and_by_component():
    meter = _meter(
        [
            ConstantCounterSensor("gpu:0", 300.0),
            TracePowerSensor("cpu:model", lambda t: 40.0, component="cpu"),
            TracePowerSensor("dram:model", lambda t: 5.0, component="dram"),
        ]
    )
    start = meter.start()
    time.sleep(0.2)
    m = meter.measure(start, meter.mark())
    meter.stop()
    by_comp = m.energy_j_by_component()
    assert by_comp["gpu"] == pytest.approx(300.0 * m.duration_s, rel=1e-3)
    assert by_comp["cpu"] == pytest.approx(40.0 * m.duration_s, rel=1e-3)
    assert by_comp["dram"] == pytest.approx(5.0 * m.duration_s, rel=1e-3)
    assert m.total_energy_j == pytest.approx(345.0 * m.duration_s, rel=1e-3)


def test_failed_counter_falls_back_and_energy_continues():
    fallback = TracePowerSensor("gpu:0", lambda t: 100.0)
    sensor = ConstantCounterSensor("gpu:0", 100.0, fail_after=0.1, fallback_sensor=fallback)
    events = EventLog()
    meter = Meter([sensor], events, interval_s=0.02)
    with pytest.warns(CarbonCallbacksWarning, match="measuring it by sampled"):
        start = meter.start()
        time.sleep(0.35)
        end = meter.mark()
    meter.stop()
    m = meter.measure(start, end)
    assert m.methods["gpu:0"] == "counter>sampled"
    # continuity: no energy lost or double counted across the switch (one interval of slack)
    assert m.energy_j["gpu:0"] == pytest.approx(100.0 * m.duration_s, abs=100.0 * 0.03)
    assert [e.kind for e in events.events] == ["sensor_fallback"]


def test_lost_sensor_is_flagged_incomplete_and_warned_once():
    events = EventLog()
    sensor = TracePowerSensor("gpu:0", lambda t: 100.0, fail_after=0.05)
    meter = Meter([sensor], events, interval_s=0.01)
    with pytest.warns(CarbonCallbacksWarning) as record:
        start = meter.start()
        time.sleep(0.2)
        end = meter.mark()
    meter.stop()
    m = meter.measure(start, end)
    assert m.incomplete == ("gpu:0",)
    assert m.energy_j["gpu:0"] < 100.0 * 0.1  # stopped counting near t = 0.05 s
    assert len([w for w in record if "no fallback" in str(w.message)]) == 1
    assert [e.kind for e in events.events] == ["sensor_lost"]


def test_thread_stops_on_stop_and_stop_is_idempotent():
    meter = _meter([TracePowerSensor("gpu:0", lambda t: 1.0)])
    meter.start()
    assert meter.running
    names = {t.name for t in threading.enumerate()}
    assert "carbon_callbacks-meter" in names
    meter.stop()
    assert not meter.running
    assert meter.stop() is None
    assert "carbon_callbacks-meter" not in {t.name for t in threading.enumerate()}


def test_state_does_not_grow_with_the_number_of_samples():
    sensor = TracePowerSensor("gpu:0", lambda t: 10.0)
    meter = _meter([sensor], interval_s=0.01)
    meter.start()
    time.sleep(0.1)
    state = meter._states["gpu:0"]
    size_before = len(vars(state)), len(state.methods)
    time.sleep(0.3)
    assert sensor.reads > 20
    assert (len(vars(state)), len(state.methods)) == size_before
    meter.stop()


def test_duplicate_sensor_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        _meter([TracePowerSensor("gpu:0", lambda t: 1.0), TracePowerSensor("gpu:0", lambda t: 1.0)])


def test_counters_are_read_every_interval_and_bridged_by_fast_power_samples():
    # the counter is read once per interval_s; power (cheap) every power_interval_s
    sensor = ConstantCounterSensor("gpu:0", 250.0)
    power_reads = []
    original = sensor.read_power_w

    def counting_power():
        power_reads.append(time.monotonic())
        return original()

    sensor.read_power_w = counting_power
    meter = Meter([sensor], EventLog(), interval_s=0.5, power_interval_s=0.02)
    start = meter.start()
    counter_reads_at_start = sensor.counter_reads
    time.sleep(0.3)
    end = meter.mark()
    assert sensor.counter_reads == counter_reads_at_start  # no full read within 0.3 s
    meter.stop()
    assert len(power_reads) >= 8  # fast power samples carried the energy meanwhile
    m = meter.measure(start, end)
    assert m.energy_j["gpu:0"] == pytest.approx(250.0 * m.duration_s, rel=1e-3)


class _TickedUtilisation:
    """Like :class:`CpuUtilisation` on a busy machine (100 %) with a kernel tick of
    ``tick_s``: a call within one tick of the previous one repeats the previous value; the
    first call (after a wait on an idle thread, before the training starts) says 0 %."""

    def __init__(self, tick_s: float = 0.01) -> None:
        self.tick_s = tick_s
        self.last_t: float | None = None
        self.last_value = 0.0

    def __call__(self) -> float:
        now = time.monotonic()
        if self.last_t is not None and now - self.last_t >= self.tick_s:
            self.last_value = 1.0
            self.last_t = now
        elif self.last_t is None:
            self.last_t = now
        return self.last_value


def _mean_since_last_read_sensor() -> CpuModelSensor:
    return CpuModelSensor(
        model_name="AMD EPYC 7763", utilisation_fn=_TickedUtilisation(), packages=1
    )


@pytest.mark.parametrize("interval_s", [10.0, 0.05])  # epoch before / after the thread's read
def test_mean_since_last_read_sensor_counts_the_first_epoch_in_full(interval_s):
    """A utilisation model's first reading covers the time before the start, and a reading
    within a tick of it repeats it: neither is the power of the first epoch (epoch 0 came out
    at 0-10 W of 16 W, and epoch 1 at up to twice its power)."""
    sensor = _mean_since_last_read_sensor()
    meter = _meter([sensor], interval_s=interval_s)
    meter.start()
    epoch_start = meter.mark()  # the first epoch starts right after the tracker
    time.sleep(0.2)
    first = meter.mark()
    time.sleep(0.2)
    second = meter.mark()
    meter.stop()
    for a, b in ((epoch_start, first), (first, second)):
        m = meter.measure(a, b)
        assert m.energy_j["cpu:model"] == pytest.approx(sensor.tdp_w * m.duration_s, rel=0.02)
