"""The meter's cadence for stepping counters (NVML's energy counter).

NVML's counter advances every ~100 ms and one read keeps a CPU core busy for ~4 ms. The meter
reads it mid-way between steps, once per step until the epochs are known, then about ten
times per epoch (at least 0.1 s apart, at most ``interval_s``), or at a fixed cadence."""

from __future__ import annotations

import math
import statistics
import time

import pytest

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.meter import Meter
from carbon_callbacks.core.sensors.base import Sensor, SensorInfo

STEP_S = 0.1


class SteppedCounter(Sensor):
    """A 200 W counter that steps every 0.1 s and says when it is best read."""

    is_counter = True
    cheap_power = True

    def __init__(self) -> None:
        self.info = SensorInfo("gpu:0", "gpu", "stepped", "counter")
        self.t0 = time.monotonic()
        self.read_times: list[float] = []

    def next_read_time(self, after: float) -> float:
        k = max(0, math.ceil((after - self.t0) / STEP_S - 0.5))
        return self.t0 + (k + 0.5) * STEP_S

    def read_energy_j(self) -> float:
        now = time.monotonic()
        self.read_times.append(now)
        return 200.0 * STEP_S * int((now - self.t0) / STEP_S)

    def read_power_w(self) -> float:
        return 200.0


def _run(meter: Meter, sensor: SteppedCounter, seconds: float) -> list[float]:
    meter.start()
    before = len(sensor.read_times)
    time.sleep(seconds)
    meter.stop()
    return sensor.read_times[before:-1]  # stop() reads once more


def test_before_any_epoch_the_counter_is_read_once_per_step_mid_way_between_steps():
    sensor = SteppedCounter()
    meter = Meter([sensor], EventLog(), interval_s=1.0)
    assert meter.counter_interval_s == pytest.approx(0.1)
    reads = _run(meter, sensor, 1.05)
    assert 7 <= len(reads) <= 11  # ~10 in a second; generous for a loaded machine
    # each read lands after the middle of a step, not at a step edge
    phase = [((t - sensor.t0) % STEP_S) / STEP_S for t in reads]
    assert statistics.median(phase) == pytest.approx(0.5, abs=0.3)
    assert min(phase) >= 0.45


@pytest.mark.parametrize(
    ("epoch_s", "interval_s", "expected_s"),
    [(0.2, 1.0, 0.1), (3.0, 1.0, 0.3), (60.0, 1.0, 1.0), (60.0, 5.0, 5.0), (3.0, 0.02, 0.02)],
)
def test_the_automatic_cadence_follows_the_epochs(epoch_s, interval_s, expected_s):
    meter = Meter([SteppedCounter()], EventLog(), interval_s=interval_s)
    meter.hint_epoch_s(epoch_s)
    assert meter.counter_interval_s == pytest.approx(expected_s)


def test_a_long_epoch_in_progress_slows_the_cadence_without_a_hint():
    meter = Meter([SteppedCounter()], EventLog(), interval_s=1.0)
    meter.hint_epoch_s(0.2)
    assert meter.counter_interval_s == pytest.approx(0.1)
    meter._hint_t = time.monotonic() - 5.0  # the current epoch has lasted 5 s so far
    assert meter.counter_interval_s == pytest.approx(0.5, abs=0.01)
    meter._hint_t = time.monotonic() - 3600.0  # one long epoch (a step-based run)
    assert meter.counter_interval_s == pytest.approx(1.0)


def test_nonsense_hints_are_ignored():
    meter = Meter([SteppedCounter()], EventLog(), interval_s=1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        meter.hint_epoch_s(bad)
    assert meter.counter_interval_s == pytest.approx(0.1)


def test_a_fixed_cadence_ignores_the_epochs():
    meter = Meter([SteppedCounter()], EventLog(), interval_s=1.0, counter_interval_s=0.5)
    meter.hint_epoch_s(0.2)
    assert meter.counter_interval_s == pytest.approx(0.5)


def test_long_epochs_read_the_counter_less_often():
    sensor = SteppedCounter()
    meter = Meter([sensor], EventLog(), interval_s=1.0)
    meter.hint_epoch_s(100.0)  # -> one read per interval_s
    reads = _run(meter, sensor, 0.75)
    assert len(reads) == 0


def test_marks_between_reads_are_bridged_to_the_right_energy():
    sensor = SteppedCounter()
    meter = Meter([sensor], EventLog(), interval_s=1.0)
    start = meter.start()
    time.sleep(0.55)
    end = meter.mark()
    meter.stop()
    m = meter.measure(start, end)
    # the stand-in counter is not dated at its steps, so the value read is up to one step old:
    # within one step of energy (20 J) of 200 W x duration
    assert m.energy_j["gpu:0"] == pytest.approx(200.0 * m.duration_s, abs=200.0 * STEP_S)


def test_the_tracker_hints_each_epoch_duration(monkeypatch):
    from carbon_callbacks.core.tracker import CarbonTracker

    hints: list[float] = []
    monkeypatch.setattr(Meter, "hint_epoch_s", lambda self, s: hints.append(s))
    tracker = CarbonTracker(
        epochs=2,
        log_dir=None,
        verbose=0,
        zone="DE",
        components="gpu",
        sim_gpu="T",
        sim_gpu_watts=100,
    )
    tracker.start()
    for _ in range(2):
        tracker.epoch_start()
        time.sleep(0.05)
        tracker.epoch_end()
    tracker.stop()
    assert len(hints) == 2 and all(0.04 < h < 1.0 for h in hints)


class FedCounter(SteppedCounter):
    """A stepping counter whose helper process (stood in for) hears the cadence it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.told_s: list[float] = []

    def set_read_interval(self, seconds: float) -> None:
        self.told_s.append(seconds)


@pytest.mark.parametrize(("fixed_s", "expected_s"), [(None, 0.1), (0.4, 0.4)])
def test_a_helper_process_reads_every_step_whatever_the_epochs(fixed_s, expected_s):
    sensor = FedCounter()
    meter = Meter([sensor], EventLog(), interval_s=1.0, counter_interval_s=fixed_s)
    meter.hint_epoch_s(6.0)  # long epochs: the thread alone would read every 0.6 s
    assert meter.counter_interval_s == pytest.approx(0.6 if fixed_s is None else fixed_s)
    meter.start()
    time.sleep(0.05)
    meter.stop()
    assert sensor.told_s and all(s == pytest.approx(expected_s) for s in sensor.told_s)
