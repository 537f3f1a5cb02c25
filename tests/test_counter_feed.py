"""The counter helper process: NVML's energy counter read and dated where the GIL cannot delay it.

These tests start real helper processes. The GPU is ``tests/stepping_nvml.py``, a stand-in NVML
module whose counter is a function of the clock both processes share, so the energy between
any two instants is known exactly. The training thread is played by ``sum(range(n))``, which
holds the GIL for its whole run, as a data loader restart or an epoch's end work does.
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
from carbon_callbacks.core.sensors.counter_feed import CounterFeed
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


def _hog_gil(seconds: float, per_slice: list[int]) -> None:
    """Hold the GIL for about ``seconds``, in slices of ~0.1 s that let no other thread in.

    A thread waiting for the GIL can take it only between two slices: like a training loop
    whose loader restart or epoch-end work runs in C for a while.
    """
    for _ in range(max(1, round(seconds / 0.1))):
        sum(range(per_slice[0]))


@pytest.fixture(scope="module")
def gil_slice() -> list[int]:
    """How many numbers ``sum(range(n))`` adds in about 0.1 s here (one GIL-holding slice)."""
    n = 100_000
    while True:
        t0 = time.perf_counter()
        sum(range(n))
        took_s = time.perf_counter() - t0
        if took_s >= 0.01:
            return [max(1, round(n * 0.1 / took_s))]
        n *= 2


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
        # dated at its step (to a fraction of a millisecond), with that step's value
        nearest = step * round(t_step / step)
        assert abs(t_step - nearest) < 1e-3
        assert value_mj == pytest.approx(1000.0 * stepping_nvml.energy_j(nearest), abs=1.0)
    gaps = [
        b[0] - a[0] for a, b in zip(values[1:], values[2:], strict=False)
    ]  # after the first lock
    assert all(abs(gap - step) < 1e-3 for gap in gaps), gaps


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
        "from carbon_callbacks.core.sensors.counter_feed import CounterFeed\n"
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


def _settled_error_j(a: Snapshot, b: Snapshot) -> float:
    """How far the meter's energy between two marks is from the counter's exact energy (J)."""
    exact = stepping_nvml.energy_j(b.time_monotonic_s) - stepping_nvml.energy_j(a.time_monotonic_s)
    return abs((b.energy_j["gpu:0"] - a.energy_j["gpu:0"]) - exact)


def _marks_while_hogging(meter: Meter, gil_slice: list[int]) -> list[Snapshot]:
    """Marks of 0.4-s epochs with 0.2 s each side of every mark in which the GIL is held."""
    marks = []
    for _ in range(7):
        _hog_gil(0.2, gil_slice)
        marks.append(meter.mark())
        meter.hint_epoch_s(0.4)  # as the tracker does at each epoch's end
        _hog_gil(0.2, gil_slice)
    return marks


def _wait_live(sensor: NvmlGpuSensor) -> None:
    end = time.monotonic() + 15
    while not sensor.feed_live and time.monotonic() < end:
        time.sleep(0.05)
    assert sensor.feed_live


def test_marks_settle_although_the_training_holds_the_gil(gil_slice) -> None:
    sensor = NvmlGpuSensor(0, nvml=stepping_nvml)
    assert "a helper process" in sensor.info.detail
    events = EventLog()
    meter = Meter([sensor], events)
    meter.start()
    try:
        _wait_live(sensor)
        marks = _marks_while_hogging(meter, gil_slice)
        time.sleep(0.4)  # the step after the last mark, drained by the thread
    finally:
        meter.stop()
    assert all(not m.waiting for m in marks)
    # A settled mark takes the counter interpolated between its two steps: exact for this
    # counter, within a few ms of dating (the poll's resolution under load: 300 W x 5 ms =
    # 1.5 J). The helper needs a core at each step: a busy test machine may leave one bridged.
    settled = [m for m in marks if any(m.settling_j().values())]
    assert len(settled) >= len(marks) - 1
    errors = [_settled_error_j(a, b) for a, b in zip(marks, marks[1:], strict=False)]
    assert sorted(errors)[-3] < 2.0, errors
    assert not events.events


def test_the_thread_alone_leaves_those_marks_bridged(gil_slice) -> None:
    """The same schedule without the helper: what the helper is for (could fail if not)."""
    sensor = NvmlGpuSensor(0, nvml=stepping_nvml, counter_process=False)
    assert "the meter's thread" in sensor.info.detail
    meter = Meter([sensor], EventLog())
    meter.start()
    try:
        time.sleep(1.0)  # the thread's step clock locks
        marks = _marks_while_hogging(meter, gil_slice)
        time.sleep(0.4)
    finally:
        meter.stop()
    assert sensor.drain_dated() is None
    bridged = [m for m in marks if not any(m.settling_j().values())]
    assert len(bridged) >= 3
    # with power read as 0 W, a bridged mark misses what the GPU drew since the last step read
    errors = [_settled_error_j(a, b) for a, b in zip(marks, marks[1:], strict=False)]
    assert max(errors) > 5.0, errors


def test_the_thread_takes_over_when_the_helper_fails(monkeypatch) -> None:
    monkeypatch.setenv("STEPPING_NVML_FAIL_AFTER_S", "1.5")
    monkeypatch.setenv("STEPPING_NVML_PARENT_PID", str(os.getpid()))
    sensor = NvmlGpuSensor(0, nvml=stepping_nvml)
    events = EventLog()
    meter = Meter([sensor], events)
    start = meter.start()
    try:
        _wait_live(sensor)
        pid = sensor._feed.pid if sensor._feed is not None else None
        time.sleep(2.5)  # the helper fails; the thread reads from then on
        assert not sensor.feed_live
        marks = []
        for _ in range(5):  # the first epoch end tells the cadence that epochs are short
            time.sleep(0.23)
            marks.append(meter.mark())
            meter.hint_epoch_s(0.23)
        marks = marks[1:]
        time.sleep(0.4)
    finally:
        end = meter.stop()
    assert pid is not None and _wait_dead(pid)
    notices = [e for e in events.events if e.kind == "sensor_degraded"]
    assert len(notices) == 1
    assert "counter helper process ended" in notices[0].message
    assert "NVMLError" in notices[0].message or "999" in notices[0].message
    assert "the meter's thread" in meter.sensor_infos[0].detail
    assert end is not None
    # no energy lost or doubled across the switch: the whole span is still the counter's
    assert _settled_error_j(start, end) < 2.0
    assert all(not m.waiting for m in marks)
    assert max(_settled_error_j(a, b) for a, b in zip(marks, marks[1:], strict=False)) < 2.0


def test_stop_ends_the_helper() -> None:
    sensor = NvmlGpuSensor(0, nvml=stepping_nvml)
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
