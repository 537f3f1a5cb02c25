"""Marks of a stepping counter are settled by the counter's next step.

NVML's energy counter steps every ~100 ms and its power fields update as slowly, so a mark
bridged from the last step by the power read then carries whatever the power did since that
reading. Once the meter's thread reads the step after the mark, the mark takes the counter
interpolated between the two steps around it; the final mark of a run is settled by
:meth:`Meter.stop`, which waits for that step (at most ``SETTLE_WAIT_S``).
"""

from __future__ import annotations

import math
import time

import pytest

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.meter import SETTLE_WAIT_S, Measurement, Meter
from carbon_callbacks.core.sensors.base import Sensor, SensorInfo

STEP_S = 0.1
BUSY_W = 300.0


class LaggingGpu(Sensor):
    """A counter that steps every 0.1 s, dated at its steps, with a power reading 0.1 s late.

    It draws ``BUSY_W`` until ``idle_after_s`` from its start, then nothing (an epoch's end,
    followed by the idle gap before the next epoch), like a GPU whose power field lags.
    """

    is_counter = True
    cheap_power = True

    def __init__(self, idle_after_s: float) -> None:
        self.info = SensorInfo("gpu:0", "gpu", "lagging stand-in", "counter")
        self.t0 = time.monotonic()
        self.idle_after_s = idle_after_s

    def energy_at(self, t: float) -> float:
        """True cumulative J at monotonic ``t``."""
        return BUSY_W * min(max(0.0, t - self.t0), self.idle_after_s)

    def _step(self, t: float) -> float:
        return self.t0 + STEP_S * math.floor((t - self.t0) / STEP_S)

    def read_energy_dated(self) -> tuple[float, float]:
        t_step = self._step(time.monotonic())
        return self.energy_at(t_step), t_step

    def read_energy_j(self) -> float:
        return self.read_energy_dated()[0]

    def next_read_time(self, after: float) -> float:
        k = max(0, math.ceil((after - self.t0) / STEP_S - 0.5))
        return self.t0 + (k + 0.5) * STEP_S

    def read_power_w(self) -> float:
        late = time.monotonic() - STEP_S - self.t0
        return BUSY_W if late < self.idle_after_s else 0.0


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def test_a_mark_after_the_power_drops_is_settled_to_the_counter():
    sensor = LaggingGpu(idle_after_s=0.35)
    meter = Meter([sensor], EventLog(), interval_s=1.0, power_interval_s=0.02)
    start = meter.start()
    _sleep_until(sensor.t0 + 0.43)  # idle since 0.35 s; the power read still says 300 W
    mark = meter.mark()
    bridged_j = mark.energy_j["gpu:0"]
    truth_j = sensor.energy_at(mark.time_monotonic_s)
    _sleep_until(sensor.t0 + 0.75)  # the thread reads the steps at 0.5 and 0.6 s meanwhile
    settled_j = mark.energy_j["gpu:0"]
    meter.stop()
    # bridged with the late power, the mark counts the idle time as busy: 300 W x >= 30 ms
    assert bridged_j - truth_j > 6.0
    # settled between the steps at 0.4 s (105 J) and 0.5 s (105 J): the counter itself
    assert settled_j == pytest.approx(truth_j, abs=1.0)
    assert meter.measure(start, mark).energy_j["gpu:0"] == pytest.approx(truth_j, abs=1.0)


def test_a_mark_between_two_steps_takes_the_counter_interpolated_in_time():
    sensor = LaggingGpu(idle_after_s=10.0)  # busy throughout: truth is linear in time
    meter = Meter([sensor], EventLog(), interval_s=1.0, power_interval_s=0.02)
    meter.start()
    _sleep_until(sensor.t0 + 0.33)
    mark = meter.mark()
    _sleep_until(sensor.t0 + 0.65)
    settled_j = mark.energy_j["gpu:0"]
    meter.stop()
    assert settled_j == pytest.approx(sensor.energy_at(mark.time_monotonic_s), abs=0.5)


def test_stop_waits_for_the_step_that_settles_the_final_mark():
    sensor = LaggingGpu(idle_after_s=0.3)  # idle from 0.3 s; the power read says so at 0.4 s
    meter = Meter([sensor], EventLog(), interval_s=1.0, power_interval_s=0.02)
    start = meter.start()
    _sleep_until(sensor.t0 + 0.37)
    t_stop = time.monotonic()
    end = meter.stop()
    waited_s = time.monotonic() - t_stop
    assert end is not None
    truth_j = sensor.energy_at(end.time_monotonic_s)
    assert end.energy_j["gpu:0"] == pytest.approx(truth_j, abs=1.0)
    assert meter.measure(start, end).energy_j["gpu:0"] == pytest.approx(truth_j, abs=1.0)
    assert waited_s <= SETTLE_WAIT_S + 0.1


def test_a_sensor_without_dated_steps_is_never_waited_for():
    class Plain(Sensor):
        is_counter = True
        cheap_power = True
        info = SensorInfo("rapl:0", "cpu", "plain counter", "counter")

        def read_energy_j(self) -> float:
            return 50.0 * time.monotonic()

        def read_power_w(self) -> float:
            return 50.0

    meter = Meter([Plain()], EventLog(), interval_s=1.0)
    meter.start()
    t0 = time.monotonic()
    meter.stop()
    assert time.monotonic() - t0 < 0.05


class EdgeIdleGpu(LaggingGpu):
    """Busy except around each epoch edge: idle from just before an epoch's end until a while
    into the next epoch (the last step drains, the hooks run, the data loader restarts)."""

    def __init__(self, idle: list[tuple[float, float]]) -> None:
        super().__init__(idle_after_s=math.inf)
        self.idle = idle  # (from, to) s after t0

    def energy_at(self, t: float) -> float:
        s = max(0.0, t - self.t0)
        idle_s = sum(max(0.0, min(s, b) - a) for a, b in self.idle if a < s)
        return BUSY_W * (s - idle_s)

    def read_power_w(self) -> float:
        late = time.monotonic() - STEP_S - self.t0
        return 0.0 if any(a <= late < b for a, b in self.idle) else BUSY_W


def _epochs(
    sensor: EdgeIdleGpu, starts: list[float], ends: list[float], log_dir: str
) -> tuple[list[Measurement], list[float], str]:
    """Epochs marked at these times (s after the sensor's start) by a tracker on ``sensor``.

    Returns each epoch's measurement, its true energy (J) and the run log's path.
    """
    from carbon_callbacks.core.tracker import CarbonTracker

    tracker = CarbonTracker(
        epochs=len(starts), sensors=[sensor], log_dir=log_dir, verbose=0,
        intensity_g_per_kwh=100.0,
    )  # fmt: skip
    unix_minus_mono = time.time() - time.monotonic()
    measured, truth_j = [], []
    for start_s, end_s in zip(starts, ends, strict=True):
        _sleep_until(sensor.t0 + start_s)
        tracker.epoch_start()
        _sleep_until(sensor.t0 + end_s)
        tracker.epoch_end()
        m = tracker.last_measurement
        assert m is not None
        measured.append(m)
        truth_j.append(
            sensor.energy_at(m.end_unix_s - unix_minus_mono)
            - sensor.energy_at(m.start_unix_s - unix_minus_mono)
        )
    tracker.stop()
    assert tracker.log_path is not None
    return measured, truth_j, tracker.log_path


def test_epochs_carry_what_the_counter_settled_of_the_previous_end(tmp_path):
    starts = [0.3 + 0.6 * k for k in range(6)]
    ends = [s + 0.5 for s in starts]
    idle = [(e - 0.02, e + 0.18) for e in ends]  # the next epoch starts 0.1 s after the end
    measured, truth_j, log_path = _epochs(EdgeIdleGpu(idle), starts, ends, str(tmp_path))
    errors_j = [m.energy_j["gpu:0"] - t for m, t in zip(measured, truth_j, strict=True)]
    carried = [m.true_up_j.get("gpu:0", 0.0) for m in measured]
    # each end is bridged with a power reading that still says busy (+ up to 6 J); each epoch
    # carries the correction of the end before it, so the errors do not add up: the epochs
    # after the first sum to the counter within one end's bridge. Bridged starts and ends
    # (before settling) lost ~9 J per epoch here; settled starts alone gained ~6 J per epoch.
    assert abs(sum(errors_j[1:])) <= 7.0, errors_j
    assert all(abs(e) <= 12.0 for e in errors_j), errors_j
    assert carried[0] == 0.0 and all(c < 0 for c in carried[1:]), carried
    from carbon_callbacks.core.runlog import read_run_log

    log = read_run_log(log_path)
    assert [e.get("true_up_j", {}).get("gpu:0", 0.0) for e in log.epochs] == carried


def test_epochs_shorter_than_a_step_sum_to_the_counter(tmp_path):
    starts = [0.3 + 0.08 * k for k in range(25)]  # 60-ms epochs, 20-ms gaps: under a step
    ends = [s + 0.06 for s in starts]
    sensor = EdgeIdleGpu([(e - 0.01, e + 0.04) for e in ends])
    measured, truths_j, log_path = _epochs(sensor, starts, ends, str(tmp_path))
    from carbon_callbacks.core.runlog import read_run_log

    settling = [p for p in read_run_log(log_path).phases if p.get("name") == "settling"]
    reported_j = sum(m.energy_j["gpu:0"] for m in measured)
    reported_j += sum(p["energy_j"]["gpu:0"] for p in settling)

    def counter_j(unix_s: float) -> float:
        """The counter interpolated linearly between its steps (all that NVML tells)."""
        t = unix_s - unix_minus_mono
        k = math.floor((t - sensor.t0) / STEP_S)
        a = sensor.t0 + k * STEP_S
        e_a, e_b = sensor.energy_at(a), sensor.energy_at(a + STEP_S)
        return e_a + (e_b - e_a) * (t - a) / STEP_S

    unix_minus_mono = time.time() - time.monotonic()
    reference_j = sum(counter_j(m.end_unix_s) - counter_j(m.start_unix_s) for m in measured)
    # Starts that were not settled when their epoch ended are trued up like ends, epochs that
    # would go below 0 J pass the rest on, and the last edges settle as the run stops (the
    # settling record): the sum is exactly the counter's over the epochs. (The GPU's own
    # energy differs by where inside each step it went, which no counter reading tells.)
    assert reported_j == pytest.approx(reference_j, abs=0.1), (reported_j, reference_j)
    assert abs(sum(truths_j) - reference_j) > 1.0  # that difference is real here


def test_a_mark_between_sparse_counter_reads_keeps_its_bridged_value():
    # read every 0.5 s (long epochs): a straight line across 0.5 s would misplace the power's
    # changes, so the mark stays as bridged by the power samples
    sensor = EdgeIdleGpu([(0.40, 0.90)])
    meter = Meter([sensor], EventLog(), interval_s=1.0, power_interval_s=0.02,
                  counter_interval_s=0.5)  # fmt: skip
    meter.start()
    _sleep_until(sensor.t0 + 0.62)
    mark = meter.mark()
    bridged_j = mark.energy_j["gpu:0"]
    _sleep_until(sensor.t0 + 1.7)
    assert not mark.waiting
    assert mark.energy_j["gpu:0"] == bridged_j
    assert mark.settling_j() == {"gpu:0": 0.0}
    meter.stop()


class DarkGpu(LaggingGpu):
    """Busy at ``BUSY_W`` throughout, but its power reading says 0 W: a bridged mark misses
    everything since the counter's last step, a settled one is exact."""

    def read_power_w(self) -> float:
        return 0.0


def test_the_last_epochs_edges_settle_into_the_totals_at_stop(tmp_path):
    from carbon_callbacks.core.runlog import read_run_log
    from carbon_callbacks.core.tracker import CarbonTracker
    from carbon_callbacks.core.units import J_PER_KWH

    sensor = DarkGpu(idle_after_s=1e9)
    tracker = CarbonTracker(
        epochs=10, sensors=[sensor], log_dir=str(tmp_path), verbose=0, intensity_g_per_kwh=100.0
    )
    for k in range(10):  # 60-ms epochs, 20-ms gaps: shorter than a counter step
        _sleep_until(sensor.t0 + 0.3 + 0.08 * k)
        tracker.epoch_start()
        _sleep_until(sensor.t0 + 0.36 + 0.08 * k)
        tracker.epoch_end()
    tracker.stop()
    assert tracker.log_path is not None
    log = read_run_log(tracker.log_path)
    settling = [p for p in log.phases if p.get("name") == "settling"]
    assert len(settling) == 1
    assert settling[0]["counted"] and settling[0]["duration_s"] == 0.0
    assert settling[0]["epoch"] == 9
    assert settling[0]["methods"] == {"gpu:0": "counter"}
    epochs_j = sum(e["energy_j"]["gpu:0"] for e in log.epochs)
    settled_j = settling[0]["energy_j"]["gpu:0"]
    exact_j = BUSY_W * sum(e["duration_s"] for e in log.epochs)
    # the epochs alone miss what the last edges' bridges missed (the power read says 0 W) ...
    assert abs(epochs_j - exact_j) > 1.0, (epochs_j, exact_j)
    # ... and the settling record brings the run to the counter's energy over the epochs
    assert epochs_j + settled_j == pytest.approx(exact_j, abs=0.5)
    assert log.footer is not None
    assert log.footer["energy_kwh"] * J_PER_KWH == pytest.approx(epochs_j + settled_j, rel=1e-9)
    assert tracker.totals()["carbon/energy_kwh"] * J_PER_KWH == pytest.approx(
        epochs_j + settled_j, rel=1e-9
    )
