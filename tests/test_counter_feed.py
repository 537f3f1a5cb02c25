"""The counter helper process: NVML's energy counter read and dated where the GIL cannot delay it.

These tests start real helper processes. The GPU is ``tests/stepping_nvml.py``, a stand-in NVML
module whose counter is a function of the clock both processes share, so the energy between
any two instants is known exactly. ``CARBON_CALLBACKS_COUNTER_MODE=thread`` leaves the counter to
the meter's thread instead.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest
import stepping_nvml

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.meter import Meter, Snapshot
from carbon_callbacks.core.sensors.counter_feed import POLL_GAP_S, CounterFeed
from carbon_callbacks.core.sensors.nvidia import NvmlGpuSensor

TESTS = os.path.dirname(os.path.abspath(__file__))


def _drain_for(feed: CounterFeed, seconds: float) -> list[tuple[float, float]]:
    values: list[tuple[float, float]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        values += feed.drain() or []
        time.sleep(0.03)
    return values


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped by a parent that is gone) counts as ended
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pid: int, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_helper_reads_and_dates_every_step() -> None:
    feed = CounterFeed("stepping_nvml", stepping_nvml.UUID)
    assert feed.start()
    try:
        values = _drain_for(feed, 2.5)
    finally:
        feed.close()
    assert feed.failure == "closed"
    assert len(values) >= 12
    step = stepping_nvml.STEP_S
    for t_step, value_mj in values:
        # dated at its step, with that step's value
        # (within half the poll gap the helper accepts: a fraction of a millisecond on an idle
        # machine, a few when other processes delay its polls)
        nearest = step * round(t_step / step)
        assert abs(t_step - nearest) <= POLL_GAP_S / 2
        assert value_mj == pytest.approx(1000.0 * stepping_nvml.energy_j(nearest), abs=1.0)
    gaps = [
        b[0] - a[0] for a, b in zip(values[1:], values[2:], strict=False)
    ]  # after the first lock
    assert all(abs(gap - step) <= POLL_GAP_S / 2 for gap in gaps), gaps


def test_helper_follows_the_cadence() -> None:
    feed = CounterFeed("stepping_nvml", stepping_nvml.UUID)
    feed.start()
    try:
        _drain_for(feed, 1.0)
        feed.set_cadence(0.3)
        _drain_for(feed, 0.5)  # the read already planned
        values = _drain_for(feed, 2.0)
    finally:
        feed.close()
    gaps = [b[0] - a[0] for a, b in zip(values, values[1:], strict=False)]
    # one read every 0.3 s (three steps), but for a poll that measures the phase again
    assert gaps and all(0.15 < gap < 0.45 for gap in gaps), gaps
    assert sum(abs(gap - 0.3) < 0.01 for gap in gaps) >= len(gaps) - 1, gaps


def test_a_helper_that_cannot_start_says_why() -> None:
    feed = CounterFeed("no_such_nvml_binding", "GPU-x")
    feed.start()
    end = time.monotonic() + 10
    while feed.failure is None and time.monotonic() < end:
        assert feed.drain() in ([], None)
        time.sleep(0.05)
    assert feed.drain() is None
    assert "no_such_nvml_binding" in (feed.failure or "")
    assert not feed.live


def test_the_helper_ends_with_the_process_that_started_it(tmp_path) -> None:
    script = (
        "import sys, time\n"
        f"sys.path[:0] = [{TESTS!r}]\n"
        "from carbon_callbacks.core.sensors.counter_feed import POLL_GAP_S, CounterFeed\n"
        "feed = CounterFeed('stepping_nvml', 'GPU-5eb1c0de-0000-0000-0000-000000000001')\n"
        "feed.start(); print(feed.pid, flush=True); time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(TESTS), TESTS]))
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert parent.stdout is not None
        helper = int(parent.stdout.readline())
        time.sleep(0.5)
        assert _alive(helper)
        parent.kill()  # no clean-up code runs: only the closed pipe tells the helper
        parent.wait(timeout=10)
        assert _wait_dead(helper), "the helper outlived the training process"
    finally:
        parent.kill()


def _error_j(a: Snapshot, b: Snapshot) -> float:
    """How far the meter's energy between two marks is from the counter's exact energy (J)."""
    exact = stepping_nvml.energy_j(b.time_monotonic_s) - stepping_nvml.energy_j(a.time_monotonic_s)
    return abs((b.energy_j["gpu:0"] - a.energy_j["gpu:0"]) - exact)


def _wait_live(sensor: NvmlGpuSensor) -> None:
    end = time.monotonic() + 15
    while not sensor.feed_live and time.monotonic() < end:
        time.sleep(0.05)
    assert sensor.feed_live


def test_the_helper_reads_the_counter_unless_the_knob_asks_for_the_thread(monkeypatch) -> None:
    monkeypatch.delenv("CARBON_CALLBACKS_COUNTER_MODE", raising=False)
    assert "a helper process" in NvmlGpuSensor(0, nvml=stepping_nvml).info.detail
    monkeypatch.setenv("CARBON_CALLBACKS_COUNTER_MODE", "thread")
    sensor = NvmlGpuSensor(0, nvml=stepping_nvml)
    assert "the meter's thread" in sensor.info.detail
    assert sensor.drain_dated() is None and sensor._feed is None  # no process started


def test_a_mark_takes_the_helpers_values_although_the_thread_has_not() -> None:
    sensor = NvmlGpuSensor(0, nvml=stepping_nvml, counter_process=True)
    meter = Meter([sensor], EventLog(), interval_s=1.0, power_interval_s=3600.0)
    meter.start()
    try:
        _wait_live(sensor)
        meter._next["counter"] = math.inf  # the thread drains no more (a training holds it)
        time.sleep(0.2)
        start = meter.mark()
        time.sleep(0.45)
        end = meter.mark()  # power reads 0 W: only the helper's steps carry the energy
    finally:
        meter.stop()
    # each mark misses what was drawn since the helper's last step (< a step, 30 J); a mark
    # bridged from the thread's last drain, 0.65 s before, would miss 195 J
    assert _error_j(start, end) < 1.5 * stepping_nvml.WATTS * stepping_nvml.STEP_S


def test_the_thread_takes_over_when_the_helper_fails(monkeypatch) -> None:
    monkeypatch.setenv("STEPPING_NVML_FAIL_AFTER_S", "1.5")
    monkeypatch.setenv("STEPPING_NVML_PARENT_PID", str(os.getpid()))
    # The power read here is the counter's own, so a bridged mark is right too: what this test
    # looks for is energy lost or doubled at the switch (a step's 30 J or more).
    monkeypatch.setattr(stepping_nvml, "READ_W", stepping_nvml.WATTS)
    sensor = NvmlGpuSensor(0, nvml=stepping_nvml, counter_process=True)
    events = EventLog()
    meter = Meter([sensor], events)
    start = meter.start()
    try:
        _wait_live(sensor)
        pid = sensor._feed.pid if sensor._feed is not None else None
        time.sleep(2.5)  # the helper fails; the thread reads from then on
        assert not sensor.feed_live
        marks = []
        for _ in range(4):
            time.sleep(0.23)
            marks.append(meter.mark())
        time.sleep(0.4)
    finally:
        end = meter.stop()
    assert pid is not None and _wait_dead(pid)
    notices = [e for e in events.events if e.kind == "sensor_degraded"]
    assert len(notices) == 1
    assert "counter helper process ended" in notices[0].message
    assert "NVMLError" in notices[0].message or "999" in notices[0].message
    assert "the meter's thread" in meter.sensor_infos[0].detail
    assert sensor._clock is not None and sensor._clock.locks >= 1  # the thread read the counter
    assert end is not None
    # no energy lost or doubled across the switch: the whole span is the counter's within one
    # step (the thread's dating under load), and no epoch is a step off
    step_j = stepping_nvml.WATTS * stepping_nvml.STEP_S
    assert _error_j(start, end) < step_j
    assert max(_error_j(a, b) for a, b in zip(marks, marks[1:], strict=False)) < step_j / 2


def test_stop_ends_the_helper() -> None:
    sensor = NvmlGpuSensor(0, nvml=stepping_nvml, counter_process=True)
    meter = Meter([sensor], EventLog())
    meter.start()
    _wait_live(sensor)
    assert sensor._feed is not None
    pid = sensor._feed.pid
    cpu_s = sensor._feed.cpu_s()
    assert pid is not None and _alive(pid)
    assert cpu_s is None or (math.isfinite(cpu_s) and cpu_s >= 0)
    meter.stop()
    assert _wait_dead(pid, 3.0)
    assert not sensor.feed_live
