"""The meter on a driven clock: integration on known traces, final marks, stepping counters,
fallbacks, stopping. No test here sleeps: the clock is advanced and the meter's work is run
with :meth:`Meter.tick`, as its thread would."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import pytest
from driven_clock import DrivenClock, run_to

from carbon_callbacks.core.events import CarbonCallbacksWarning, EventLog
from carbon_callbacks.core.meter import FINAL_WAIT_S, Measurement, Meter
from carbon_callbacks.core.sensors.base import Sensor, SensorError, SensorInfo

STEP_S = 0.1


class TraceGpu(Sensor):
    """Power sensor reading ``power_w(t)`` (t: seconds on the clock); cheap by default."""

    def __init__(self, clock: DrivenClock, power_w: Callable[[float], float], **kw) -> None:
        self.info = SensorInfo(kw.get("name", "gpu:0"), kw.get("component", "gpu"), "t", "sampled")
        self.clock, self.power_w = clock, power_w
        self.cheap_power = kw.get("cheap", True)
        self.power_lag_s = kw.get("lag_s", 0.0)
        self.fail_at = kw.get("fail_at", math.inf)
        self._fallback = kw.get("fallback")

    def read_power_w(self) -> float:
        if self.clock.t >= self.fail_at:
            raise SensorError("trace gone")
        return self.power_w(self.clock.t)

    def fallback(self) -> Sensor | None:
        return self._fallback


class SteppingGpu(Sensor):
    """NVML-like: a counter of ``energy_j(t)`` that steps every 0.1 s, dated at its steps, and a
    power reading ``reading_w(t)`` that may be wrong (NVML's fields update as slowly)."""

    is_counter = True
    cheap_power = True
    counter_steps = True

    def __init__(self, clock, energy_j, reading_w, fail_at: float = math.inf, fallback=None):
        self.info = SensorInfo("gpu:0", "gpu", "stepping", "counter")
        self.clock, self.energy_j, self.reading_w = clock, energy_j, reading_w
        self.fail_at, self._fallback = fail_at, fallback
        self.read_times: list[float] = []
        self.frozen = False

    def step_before(self, t: float) -> float:
        return STEP_S * math.floor(t / STEP_S + 1e-9)

    def read_energy_dated(self) -> tuple[float, float]:
        t = self.clock.t
        if t >= self.fail_at:
            raise SensorError("counter gone")
        self.read_times.append(t)
        step = self.step_before(min(t, 1000.5) if self.frozen else t)
        return self.energy_j(step), step

    def read_energy_j(self) -> float:
        return self.read_energy_dated()[0]

    def next_read_time(self, after: float) -> float:
        return STEP_S * (math.ceil(after / STEP_S - 0.5) + 0.5)

    def read_power_w(self) -> float:
        return self.reading_w(self.clock.t)

    def fallback(self) -> Sensor | None:
        return self._fallback


def _meter(sensors, clock, events=None, **kw) -> Meter:
    return Meter(sensors, events or EventLog(), clock=clock, background=False, **kw)


def test_constant_power_integrates_to_power_times_duration():
    clock = DrivenClock()
    meter = _meter([TraceGpu(clock, lambda t: 150.0)], clock, interval_s=0.02)
    start = meter.start()
    run_to(meter, clock, 1000.3)
    m = meter.measure(start, meter.mark())
    assert m.duration_s == pytest.approx(0.3)
    assert m.energy_j["gpu:0"] == pytest.approx(45.0)
    assert m.methods == {"gpu:0": "sampled"}
    assert m.mean_power_w() == {"gpu": pytest.approx(150.0), "total": pytest.approx(150.0)}


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


def test_linear_ramp_is_integrated_exactly_and_marks_bridge_between_samples():
    # P(t) = 100 + 200 s: the trapezoid rule is exact for a linear trace, marks included
    clock = DrivenClock()
    meter = _meter([TraceGpu(clock, lambda t: 100.0 + 200.0 * (t - 1000.0))], clock)
    start = meter.start()
    run_to(meter, clock, 1000.25)  # power samples at 0.1 and 0.2 s; the mark bridges the rest
    got = meter.measure(start, meter.mark()).energy_j["gpu:0"]
    assert got == pytest.approx(100.0 * 0.25 + 100.0 * 0.25**2)


def test_counter_and_power_sensors_together_and_by_component():
    clock = DrivenClock()
    sensors = [
        SteppingGpu(clock, lambda t: 300.0 * t, lambda t: 300.0),
        TraceGpu(clock, lambda t: 40.0, name="cpu:model", component="cpu", cheap=False),
        TraceGpu(clock, lambda t: 5.0, name="dram:model", component="dram", cheap=False),
    ]
    meter = _meter(sensors, clock, interval_s=0.05)
    start = meter.start()
    run_to(meter, clock, 1001.0)
    m = meter.measure(start, meter.mark())
    assert m.energy_j_by_component() == {
        "gpu": pytest.approx(300.0),
        "cpu": pytest.approx(40.0),
        "dram": pytest.approx(5.0),
    }


def test_a_mark_reads_no_counter_and_the_start_reads_none_either():
    clock = DrivenClock()
    gpu = SteppingGpu(clock, lambda t: 200.0 * t, lambda t: 200.0)
    meter = _meter([gpu], clock)
    start = meter.start()
    assert gpu.read_times == []  # the first read is the thread's: it may poll for a step
    run_to(meter, clock, 1000.42)
    reads = len(gpu.read_times)
    end = meter.mark()
    assert len(gpu.read_times) == reads
    assert meter.measure(start, end).energy_j["gpu:0"] == pytest.approx(200.0 * 0.42)


def test_stepping_counters_are_read_once_per_step_mid_way_between_steps():
    clock = DrivenClock()
    gpu = SteppingGpu(clock, lambda t: 200.0 * t, lambda t: 200.0)
    meter = _meter([gpu], clock, interval_s=1.0)
    meter.start()
    run_to(meter, clock, 1002.0)
    phases = [round((t / STEP_S) % 1.0, 6) for t in gpu.read_times[1:]]
    assert set(phases) == {0.5}
    assert len(gpu.read_times) == pytest.approx(20, abs=1)


class LaggingReading:
    """True power: 300 W until ``idle_at`` (s on the clock), then 100 W; the reading lags 0.1 s
    (at an epoch's edge a GPU idles while NVML's last power reading still says busy)."""

    def __init__(self, idle_at: float) -> None:
        self.idle_at = idle_at

    def energy_j(self, t: float) -> float:
        return 300.0 * (min(t, self.idle_at) - 1000.0) + 100.0 * max(0.0, t - self.idle_at)

    def reading_w(self, t: float) -> float:
        return 300.0 if t - STEP_S < self.idle_at else 100.0


def test_marks_are_final_and_windows_sharing_a_mark_sum_exactly():
    """A mark bridged by a lagging power reading overshoots the counter; it is never revised,
    the next window is never negative (it counts from that mark until the energy has caught up),
    and consecutive windows add up to the window across."""
    clock = DrivenClock()
    trace = LaggingReading(idle_at=1000.35)
    meter = _meter([SteppingGpu(clock, trace.energy_j, trace.reading_w)], clock)
    start = meter.start()
    run_to(meter, clock, 1000.43)  # idle since 0.35 s; the reading still says 300 W
    first = meter.mark()
    first_j = dict(first.energy_j)
    assert first_j["gpu:0"] > trace.energy_j(1000.43) + 10.0  # bridged over busy power
    run_to(meter, clock, 1000.47)
    second = meter.mark()
    run_to(meter, clock, 1000.8)
    third = meter.mark()
    assert first.energy_j == first_j  # later counter reads changed nothing
    parts = [meter.measure(a, b).energy_j["gpu:0"] for a, b in ((first, second), (second, third))]
    assert min(parts) >= 0.0
    whole = meter.measure(start, third).energy_j["gpu:0"]
    assert meter.measure(start, first).energy_j["gpu:0"] + sum(parts) == pytest.approx(whole)
    assert parts[0] == 0.0  # 0.04 s of 100 W against a 16-J overshoot
    assert whole == pytest.approx(trace.energy_j(1000.8))  # caught up by then


def test_the_run_total_is_the_counters_difference_and_stop_waits_one_step_at_most():
    """The final mark waits for the step after it and is interpolated between the two steps
    around it; the start is bridged by power to the counter's first value."""
    clock = DrivenClock()
    trace = LaggingReading(idle_at=1000.33)
    gpu = SteppingGpu(clock, trace.energy_j, trace.reading_w)
    meter = _meter([gpu], clock)
    start = meter.start()
    run_to(meter, clock, 1000.37)  # idle since 0.33 s; the reading still says busy
    end = meter.stop()
    assert end is not None and end.time_monotonic_s == pytest.approx(1000.37)
    assert clock.t - 1000.37 <= FINAL_WAIT_S
    # the counter's steps at 0.3 and 0.4 s, interpolated (bridged by the reading: 111 J)
    step_j = trace.energy_j(1000.4) - trace.energy_j(1000.3)
    interpolated_j = trace.energy_j(1000.3) + 0.7 * step_j
    assert meter.measure(start, end).energy_j["gpu:0"] == pytest.approx(interpolated_j)
    assert abs(interpolated_j - trace.energy_j(1000.37)) < step_j


def test_the_final_mark_takes_a_step_the_thread_had_not_read_yet():
    clock = DrivenClock()
    gpu = SteppingGpu(clock, lambda t: 100.0 * t, lambda t: 0.0)  # power says nothing
    meter = _meter([gpu], clock, counter_interval_s=1.0)  # the last read: step 1000.0
    start = meter.start()
    meter.tick()  # the thread's first counter read
    clock.t = 1000.37
    end = meter.stop()  # reads steps 1000.3 and then 1000.4 around the mark
    assert meter.measure(start, end).energy_j["gpu:0"] == pytest.approx(37.0)


def test_stop_gives_up_on_a_counter_that_stops_stepping():
    clock = DrivenClock()
    gpu = SteppingGpu(clock, lambda t: 100.0 * t, lambda t: 100.0)
    meter = _meter([gpu], clock)
    start = meter.start()
    run_to(meter, clock, 1000.62)
    gpu.frozen = True
    end = meter.stop()
    assert end is not None and clock.t - 1000.62 <= FINAL_WAIT_S + 1e-9
    assert meter.measure(start, end).energy_j["gpu:0"] == pytest.approx(62.0)  # bridged


def test_a_plain_counter_is_read_at_start_and_never_waited_for():
    class Plain(Sensor):  # declares nothing beyond a counter (like RAPL)
        is_counter = True
        info = SensorInfo("cpu:package-0", "cpu", "plain counter", "counter")

        def __init__(self, clock):
            self.clock, self.reads = clock, 0

        def read_energy_j(self) -> float:
            self.reads += 1
            return 50.0 * self.clock.t

        def read_power_w(self) -> float:
            raise AssertionError("a counter without cheap power is never asked for power")

    clock = DrivenClock()
    sensor = Plain(clock)
    meter = _meter([sensor], clock, interval_s=0.5)
    start = meter.start()
    assert sensor.reads >= 1
    run_to(meter, clock, 1001.2)
    end = meter.stop()
    assert clock.t == 1001.2
    assert meter.measure(start, end).energy_j["cpu:package-0"] == pytest.approx(60.0)


def test_averaged_power_counts_a_ramp_from_idle_in_the_epoch_it_happened():
    """A reading averaged over the last second (NVML's power on recent GPUs) trails a step from
    60 to 400 W: integrated as it is, the first busy second loses half its energy."""
    clock = DrivenClock()
    busy_at = 1002.0

    def averaged_w(t: float) -> float:  # 1-s trailing mean of 60 W, then 400 W from busy_at
        busy_s = min(1.0, max(0.0, t - busy_at))
        return 60.0 + 340.0 * busy_s

    meter = _meter([TraceGpu(clock, averaged_w, lag_s=0.5)], clock, interval_s=1.0)
    meter.start()
    run_to(meter, clock, busy_at)
    epochs = [meter.mark()]
    for k in range(1, 4):
        run_to(meter, clock, busy_at + k)
        epochs.append(meter.mark())
    for a, b in zip(epochs, epochs[1:], strict=False):
        assert meter.measure(a, b).energy_j["gpu:0"] == pytest.approx(400.0, rel=0.02)


def test_failed_counter_falls_back_and_energy_continues():
    clock = DrivenClock()
    fallback = TraceGpu(clock, lambda t: 100.0)
    gpu = SteppingGpu(clock, lambda t: 100.0 * t, lambda t: 100.0, 1000.3, fallback)
    events = EventLog()
    meter = _meter([gpu], clock, events)
    start = meter.start()
    with pytest.warns(CarbonCallbacksWarning, match="measuring it by sampled"):
        run_to(meter, clock, 1000.6)
    m = meter.measure(start, meter.mark())
    assert m.methods["gpu:0"] == "counter>sampled"
    assert m.energy_j["gpu:0"] == pytest.approx(60.0)  # nothing lost or doubled at the switch
    assert [e.kind for e in events.events] == ["sensor_fallback"]


def test_lost_sensor_is_flagged_incomplete_and_warned_once():
    clock = DrivenClock()
    events = EventLog()
    meter = _meter([TraceGpu(clock, lambda t: 100.0, fail_at=1000.05)], clock, events)
    start = meter.start()
    with pytest.warns(CarbonCallbacksWarning) as record:
        run_to(meter, clock, 1000.3)
    m = meter.measure(start, meter.mark())
    assert m.incomplete == ("gpu:0",)
    assert m.energy_j["gpu:0"] <= 100.0 * 0.1  # counted up to the last good sample
    assert len([w for w in record if "no fallback" in str(w.message)]) == 1
    assert [e.kind for e in events.events] == ["sensor_lost"]


def test_a_failure_seen_at_a_mark_is_recorded_in_that_window():
    clock = DrivenClock()
    events = EventLog()
    gpu = TraceGpu(clock, lambda t: 100.0, fail_at=1000.05)
    meter = _meter([gpu], clock, events)
    start = meter.start()
    clock.t = 1000.08  # the thread has not read since the failure
    with pytest.warns(CarbonCallbacksWarning, match="no fallback"):
        end = meter.mark()
    assert meter.measure(start, end).incomplete == ("gpu:0",)


def test_state_does_not_grow_with_the_number_of_samples():
    clock = DrivenClock()
    gpu = SteppingGpu(clock, lambda t: 10.0 * t, lambda t: 10.0)
    meter = _meter([gpu], clock)
    meter.start()
    run_to(meter, clock, 1001.0)
    state = meter._states["gpu:0"]
    size_before = len(vars(state)), len(state.methods)
    for k in range(50):
        run_to(meter, clock, 1001.0 + k)
        meter.mark()
    assert (len(vars(state)), len(state.methods)) == size_before
    assert len(gpu.read_times) > 400


def test_thread_stops_on_stop_and_stop_is_idempotent():
    meter = Meter([TraceGpu(DrivenClock(), lambda t: 1.0)], EventLog())
    meter.start()
    assert meter.running
    assert "carbon_callbacks-meter" in {t.name for t in threading.enumerate()}
    meter.stop()
    assert not meter.running
    assert meter.stop() is None
    assert "carbon_callbacks-meter" not in {t.name for t in threading.enumerate()}


def test_duplicate_sensor_names_are_refused():
    clock = DrivenClock()
    with pytest.raises(ValueError, match="unique"):
        _meter([TraceGpu(clock, lambda t: 1.0), TraceGpu(clock, lambda t: 1.0)], clock)


class TickedMeanSensor(Sensor):
    """A mean-since-last-read model (like the CPU model): 16 W while the clock runs, but its
    first reading covers the time before the meter (0 W), and a reading taken within one
    clock tick (10 ms) of the previous one repeats it."""

    power_is_interval_mean = True

    def __init__(self, clock: DrivenClock) -> None:
        self.info = SensorInfo("cpu:model", "cpu", "ticked", "modelled")
        self.clock, self.last_t, self.last_w = clock, None, 0.0

    def read_power_w(self) -> float:
        if self.last_t is not None and self.clock.t - self.last_t >= 0.01:
            self.last_w, self.last_t = 16.0, self.clock.t
        elif self.last_t is None:
            self.last_t = self.clock.t
        return self.last_w


@pytest.mark.parametrize("interval_s", [10.0, 0.05])  # epoch before / after the thread's read
def test_mean_since_last_read_sensor_counts_the_first_epoch_in_full(interval_s):
    clock = DrivenClock()
    meter = _meter([TickedMeanSensor(clock)], clock, interval_s=interval_s)
    meter.start()
    marks = [meter.mark()]  # the first epoch starts right after the tracker
    for t in (1000.2, 1000.4):
        run_to(meter, clock, t)
        marks.append(meter.mark())
    for a, b in zip(marks, marks[1:], strict=False):
        assert meter.measure(a, b).energy_j["cpu:model"] == pytest.approx(16.0 * 0.2)
