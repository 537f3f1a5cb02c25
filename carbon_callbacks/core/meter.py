"""Background sampling and marks: cumulative joules per sensor, at any instant, cheaply.

One daemon thread reads every sensor each ``interval_s`` seconds: counters (NVML total energy,
RAPL) are read as they are, power sensors are integrated by the trapezoid rule (sensors whose
reading is the mean since their previous read, such as the CPU model's utilisation, by
rectangles over the interval each reading covers; their first reading, which covers the time
before the start, is only a reference). NVML's stepping energy counter has its own cadence,
mid-way between its ~100 ms steps: once per step while epochs are short, about ten times per
epoch for longer ones (:meth:`Meter.hint_epoch_s`). Sensors whose power costs microseconds to
read (NVML) are also read every ``power_interval_s`` (0.1 s): for sampled GPUs that is the
integration grid, and for counters it carries the energy from the last counter read (which
re-anchors it) to the present. A *mark* (:meth:`Meter.mark`), taken from a training hook, does
no slow I/O: it timestamps the instant and bridges each sensor's last sample to it with the
trapezoid of the last sampled power and, where the sensor can read power in microseconds
(NVML), the power read at the mark. Reading NVML's energy counter costs milliseconds (see
docs/benchmarks.md), which is why it is left to the thread. The difference of two marks is a
:class:`Measurement`. A stepping counter's mark is later *settled*: once the thread reads the
step after it, and if that step and the one before the mark are adjacent (at most
:data:`SETTLE_SPAN_S` apart), the mark takes the counter interpolated between them, in place in
its snapshot (:meth:`Meter.mark`); the tracker carries what that changes of an epoch already
reported into the next one.

The meter keeps a fixed amount of state per sensor, whatever the length of the run. When a
sensor fails, the failure is recorded once, the sensor's :meth:`~Sensor.fallback` takes over
from the energy already counted, and the change of method is part of every later measurement's
provenance. The thread stops on :meth:`Meter.stop`, when its loop hits an unexpected error, and
at interpreter exit.
"""

from __future__ import annotations

import atexit
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from carbon_callbacks.core.events import EventLog
from carbon_callbacks.core.sensors.base import Sensor, SensorInfo

#: Seconds between power reads of sensors that read power in microseconds (NVML: ~4 us).
POWER_INTERVAL_S = 0.1
#: Shortest automatic time between two reads of a stepping counter (s): about one NVML step.
#: Each read of NVML's energy counter keeps a CPU core busy for ~4 ms (docs/benchmarks.md),
#: so this cadence costs ~4% of one core; it is used only while epochs are short.
COUNTER_MIN_INTERVAL_S = 0.1
#: With the automatic cadence, a stepping counter is read about this many times per epoch.
COUNTER_READS_PER_EPOCH = 10
#: Automatic cadence of a helper process that reads a stepping counter (s): every step. Its
#: reads cost the helper's CPU (~6% of one core on the H100 host), not the training's, and
#: every mark then settles between the two steps around it, the long first epoch's too (with
#: the epoch-scaled cadence above, a 3.6-s first epoch and the one after it stayed bridged,
#: off by up to 25 J each on 2xH200; docs/benchmarks.md).
HELPER_COUNTER_INTERVAL_S = COUNTER_MIN_INTERVAL_S
#: Shortest window (s) over which two counter reads give a power estimate for bridging marks.
MIN_POWER_WINDOW_S = 0.01
#: Shortest span (s) a mean-since-last-read power reading (utilisation models) must cover before
#: a mark reads it for the first time: a few kernel clock ticks (1-10 ms), so that it measures the
#: training, not the instant after the previous reading.
MIN_MEAN_WINDOW_S = 0.05
#: Method-history entries kept per sensor (fallback chains are at most a few steps long).
_MAX_METHOD_HISTORY = 8
#: Marks per sensor waiting for the counter's next step to settle them (older ones stay bridged).
_MAX_PENDING_MARKS = 32
#: Longest wait (s) in :meth:`Meter.stop` for the step that settles the final mark: one NVML
#: step (~0.1 s) and the read after it.
SETTLE_WAIT_S = 0.3
#: A mark is settled only between counter values at most this far apart (s): adjacent steps of
#: NVML's ~0.1 s counter, with room for the step clock's dating. Wider apart, it stays bridged.
SETTLE_SPAN_S = 0.15
#: How often (s) :meth:`Meter.stop` looks for the step that settles the final mark when a helper
#: process reads the counter (it arrives a few milliseconds after the helper's read).
FEED_POLL_S = 0.02


@dataclass(frozen=True)
class Snapshot:
    """Cumulative energy of every sensor at one instant.

    Attributes:
        time_monotonic_s: ``time.monotonic()`` at the mark (for durations).
        time_unix_s: ``time.time()`` at the mark (UTC seconds, for intensity windows).
        energy_j: cumulative joules per sensor name since the meter started. The value of a
            stepping counter (NVML's energy counter) is first bridged from the counter's last
            step by power, then *settled* in place by the meter's thread once it reads the
            counter's next step: the counter interpolated linearly between the two steps around
            the mark (:meth:`Meter.mark`).
        bridged_j: for the sensors whose value the meter will settle, the value as bridged at
            the mark (J), kept so that what settling changed is known.
        waiting: names of the sensors whose value is not settled yet (emptied by the meter).
    """

    time_monotonic_s: float
    time_unix_s: float
    energy_j: dict[str, float]
    bridged_j: dict[str, float] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)

    def settling_j(self) -> dict[str, float]:
        """Per sensor, what settling changed (settled minus bridged J; 0 while it waits)."""
        return {name: self.energy_j[name] - joules for name, joules in self.bridged_j.items()}


@dataclass
class _Pending:
    """A snapshot's value of one stepping counter, waiting for the first value dated after it."""

    name: str  # the sensor's name in the snapshot
    snapshot: Snapshot  # settled in place (``energy_j``), then taken off ``waiting``
    anchor_t: float  # the last dated counter value before the mark: when ...
    anchor_j: float  # ... and how much (cumulative J, the meter's scale)

    def leave(self) -> None:
        """Stop waiting: the value stays as it is now."""
        self.snapshot.waiting.discard(self.name)


@dataclass(frozen=True)
class Measurement:
    """Energy used between two snapshots.

    Attributes:
        start_unix_s / end_unix_s: the window (UTC seconds).
        duration_s: seconds between the marks (monotonic clock).
        energy_j: joules per sensor name in the window (IT energy; no PUE). A sensor lost
            before the window began is left out (unmeasured, not 0 J) and listed in
            ``incomplete``.
        methods: per sensor name, the method(s) used in the window, e.g. ``"counter"`` or
            ``"counter>sampled"`` when a fallback happened inside it.
        components: per sensor name, ``"gpu"``, ``"cpu"`` or ``"dram"``.
        incomplete: sensor names that were lost during the window (their energy stops there).
        true_up_j: per sensor, joules included in ``energy_j`` that settle earlier windows'
            ends (see :meth:`CarbonTracker <carbon_callbacks.core.tracker.CarbonTracker>`'s
            epoch records); empty when none.
        clamped_j: per sensor, joules by which a negative difference of the two snapshots was
            raised to 0 in ``energy_j`` (a bridged end below a settled start, in a window
            shorter than a counter step); empty when none. The tracker carries it on.
        window_s: per sensor, the seconds its energy was measured over when that is not
            ``duration_s``: in an epoch combined from several ranks, each rank's sensors cover
            that rank's own epoch, which starts and ends a little apart from rank 0's. Empty
            when every sensor covers ``duration_s``.
    """

    start_unix_s: float
    end_unix_s: float
    duration_s: float
    energy_j: dict[str, float]
    methods: dict[str, str]
    components: dict[str, str]
    incomplete: tuple[str, ...] = ()
    true_up_j: dict[str, float] = field(default_factory=dict)
    clamped_j: dict[str, float] = field(default_factory=dict)
    window_s: dict[str, float] = field(default_factory=dict)

    @property
    def total_energy_j(self) -> float:
        """Joules over all sensors."""
        return sum(self.energy_j.values())

    def energy_j_by_component(self) -> dict[str, float]:
        """Joules per component (``gpu``, ``cpu``, ``dram``)."""
        return self._by_component(self.energy_j)

    def _by_component(self, per_sensor: dict[str, float]) -> dict[str, float]:
        """Per-sensor values summed per component."""
        out: dict[str, float] = {}
        for name, value in per_sensor.items():
            comp = self.components[name]
            out[comp] = out.get(comp, 0.0) + value
        return out

    def mean_power_w(self) -> dict[str, float]:
        """Mean watts per component plus ``"total"``: each sensor's joules over the seconds it
        measured them (``window_s``, else ``duration_s``), summed (a window of 0 s: empty)."""
        windows = {name: self.window_s.get(name, self.duration_s) for name in self.energy_j}
        if self.duration_s <= 0 or any(w <= 0 for w in windows.values()):
            return {}
        out = self._by_component({n: j / windows[n] for n, j in self.energy_j.items()})
        out["total"] = math.fsum(out.values())
        return out


@dataclass
class _State:
    """What the meter keeps for one sensor: a handful of numbers, whatever the run length."""

    sensor: Sensor
    energy_j: float = 0.0  # cumulative joules up to last_t
    last_t: float = 0.0  # monotonic time of the last sample
    last_power_w: float | None = None
    offset_j: float = 0.0  # energy counted by earlier sensors in a fallback chain
    lost_at_unix_s: float | None = None
    # the last counter value dated at its step (stepping counters): (monotonic t, cumulative J)
    anchor: tuple[float, float] | None = None
    pending: list[_Pending] = field(default_factory=list)
    # (unix time from which, method) entries, oldest first
    methods: list[tuple[float, str]] = field(default_factory=list)


class Meter:
    """Samples sensors on a daemon thread and answers marks from the training thread.

    Stepping counters (sensors with a ``next_read_time`` method: NVML's energy counter, which
    advances every ~100 ms) are read on their own cadence, mid-way between two steps so that
    each value is fresh and datable. With ``counter_interval_s=None`` the cadence adapts to the
    epochs (:meth:`hint_epoch_s`): about :data:`COUNTER_READS_PER_EPOCH` reads per epoch, judged
    from the last epoch and from how long the current one has lasted, between one read per step
    (0.1 s) and ``interval_s``. A run starts at one read per step.
    A mark is then bridged from a counter value at most one cadence old, which is what keeps
    short epochs right (docs/benchmarks.md, "meter designs replayed"). A sensor whose counter
    a helper process reads (``feed_live``) is read at every step instead
    (:data:`HELPER_COUNTER_INTERVAL_S`), which costs the helper, not the training.

    Args:
        sensors: the sensors to read; names must be unique.
        events: where failures and fallbacks are recorded (warned once).
        interval_s: seconds between full reads of every other sensor (RAPL counters, models).
        power_interval_s: seconds between the power reads of sensors whose power costs
            microseconds (NVML); between two counter reads these samples carry the energy, so
            marks are bridged over at most this span.
        counter_interval_s: seconds between reads of stepping counters, by this thread or
            by a helper process; ``None`` (default) adapts as above.
    """

    def __init__(
        self,
        sensors: list[Sensor],
        events: EventLog,
        interval_s: float = 1.0,
        power_interval_s: float = POWER_INTERVAL_S,
        counter_interval_s: float | None = None,
    ):
        names = [s.info.name for s in sensors]
        if len(set(names)) != len(names):
            raise ValueError(f"sensor names must be unique, got {names}")
        self.events = events
        self.interval_s = float(interval_s)
        self.power_interval_s = float(power_interval_s)
        self._counter_fixed_s = None if counter_interval_s is None else float(counter_interval_s)
        self._counter_auto_s = COUNTER_MIN_INTERVAL_S
        self._hint_t: float | None = None  # monotonic time of the last epoch's end (or start)
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._initial_sensors = list(sensors)

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> Snapshot:
        """Take the first sample of every sensor, start the thread, return the start snapshot."""
        if self._started:
            return self.mark()
        now_unix = time.time()
        self._hint_t = time.monotonic()
        for sensor in self._initial_sensors:
            state = _State(sensor=sensor, methods=[(now_unix, sensor.info.method)])
            self._states[sensor.info.name] = state
            self._first_sample(state)
        self._started = True
        snapshot = self.mark()
        self._thread = threading.Thread(
            target=self._run, name="carbon_callbacks-meter", daemon=True
        )
        self._thread.start()
        _register_atexit(self)
        return snapshot

    def stop(self) -> Snapshot | None:
        """Stop the thread (waits for it) and return a final snapshot; idempotent."""
        if not self._started:
            return None
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, 3 * self.interval_s))
        self._thread = None
        snapshot = None
        if self._states:
            self.sample_now()
            self._record_notices()
            snapshot = self.mark()
            self._settle_final(snapshot)
        for state in self._states.values():
            try:
                state.sensor.close()
            except Exception:  # noqa: BLE001 - closing must not raise into training
                pass
        self._started = False
        return snapshot

    def _settle_final(self, snapshot: Snapshot) -> None:
        """Read the stepping counters once more after the final mark, to settle it.

        Waits for the counter's next step, at most :data:`SETTLE_WAIT_S` (the thread has
        stopped; this runs once, at the end of the run).
        """
        deadline = snapshot.time_monotonic_s + SETTLE_WAIT_S
        while True:
            waiting = [
                st
                for name, st in self._states.items()
                if st.lost_at_unix_s is None and name in snapshot.waiting
            ]
            now = time.monotonic()
            if not waiting or now >= deadline:
                return
            if _feed_live(waiting[0].sensor):  # the helper reads the step: take it as it comes
                when = now + FEED_POLL_S
            else:
                when = _mid_step_after(waiting[0].sensor, now)
                when = now + 0.5 * COUNTER_MIN_INTERVAL_S if when is None else max(when, now)
            if when > deadline:
                return
            time.sleep(when - now)
            for state in waiting:
                self._sample(state)

    @property
    def running(self) -> bool:
        """True while the sampling thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def sensor_infos(self) -> list[SensorInfo]:
        """Provenance of the sensors in use now (after any fallback)."""
        with self._lock:
            return [s.sensor.info for s in self._states.values()]

    # -- cadence -------------------------------------------------------------------------------
    @property
    def counter_interval_s(self) -> float:
        """Seconds between two reads of the stepping counters now.

        Automatic: a tenth of the longer of the last epoch and the time since it ended (an
        epoch in progress is at least that long), between 0.1 s and ``interval_s``.
        """
        if self._counter_fixed_s is not None:
            return self._counter_fixed_s
        since_s = time.monotonic() - self._hint_t if self._hint_t is not None else 0.0
        running_s = since_s / COUNTER_READS_PER_EPOCH
        return min(self.interval_s, max(self._counter_auto_s, running_s))

    def hint_epoch_s(self, duration_s: float) -> None:
        """Tell the automatic counter cadence how long the epoch that just ended took (s)."""
        if duration_s > 0 and math.isfinite(duration_s):
            self._counter_auto_s = max(COUNTER_MIN_INTERVAL_S, duration_s / COUNTER_READS_PER_EPOCH)
            self._hint_t = time.monotonic()

    @staticmethod
    def _stepped(sensor: Sensor) -> bool:
        return sensor.is_counter and callable(getattr(sensor, "next_read_time", None))

    def _next_counter_read(self, now: float) -> float:
        """When the stepping counters are read next (inf when there are none)."""
        cadence = self.counter_interval_s
        after = now + max(0.0, cadence - 0.5 * COUNTER_MIN_INTERVAL_S)
        stepped = [
            st.sensor
            for st in self._states.values()
            if st.lost_at_unix_s is None and self._stepped(st.sensor)
        ]
        if not stepped:
            return math.inf
        helper_cadence = cadence if self._counter_fixed_s is not None else HELPER_COUNTER_INTERVAL_S
        for sensor in stepped:
            _tell_cadence(sensor, helper_cadence)
        if any(_feed_live(sensor) for sensor in stepped):
            # a helper process reads on this cadence; what it read is taken often (cheap),
            # so that marks settle within about one power interval of the step after them
            return now + min(cadence, self.power_interval_s)
        aligned = _mid_step_after(stepped[0], after)
        return now + cadence if aligned is None else max(aligned, now + 1e-3)

    # -- sampling (meter thread) ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            now = time.monotonic()
            cheap = any(st.sensor.cheap_power for st in self._states.values())
            power_every_s = self.power_interval_s if cheap else math.inf
            next_full = now + self.interval_s
            next_counter = self._next_counter_read(now)
            next_power = now + power_every_s
            while True:
                due = min(next_full, next_counter, next_power)
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                now = time.monotonic()
                if now >= next_counter - 1e-3:
                    self._sample_where(self._stepped)
                    next_counter = self._next_counter_read(time.monotonic())
                    next_power = now + power_every_s
                if now >= next_full - 1e-3:
                    self._sample_where(lambda sensor: not self._stepped(sensor))
                    next_full = now + self.interval_s
                    next_power = now + power_every_s
                elif now >= next_power - 1e-3:
                    self.sample_now(power_only=True)
                    next_power = now + power_every_s
                self._record_notices()
        except Exception as exc:  # noqa: BLE001 - the thread must end quietly, never kill training
            self.events.record(
                "meter_stopped",
                f"the sampling thread stopped after an unexpected error: {exc!r}; energy after "
                "this point is bridged from the last samples only",
                "meter",
            )

    def sample_now(self, power_only: bool = False) -> None:
        """Read every live sensor once (normally called by the thread).

        Args:
            power_only: read only the sensors whose power costs microseconds (the thread does
                this every ``power_interval_s`` between full reads).
        """
        for state in list(self._states.values()):
            if state.lost_at_unix_s is not None:
                continue
            if power_only:
                if state.sensor.cheap_power:
                    self._sample_power(state)
            else:
                self._sample(state)

    def _sample_where(self, which: Callable[[Sensor], bool]) -> None:
        """Fully read the live sensors that ``which`` selects."""
        for state in list(self._states.values()):
            if state.lost_at_unix_s is None and which(state.sensor):
                self._sample(state)

    def _record_notices(self) -> None:
        """Record what sensors degraded by themselves (e.g. a power field lost), once each."""
        for name, state in list(self._states.items()):
            try:
                notices = state.sensor.drain_notices()
            except Exception:  # noqa: BLE001 - a notice must never stop the thread
                continue
            for message in notices:
                self.events.record("sensor_degraded", message, name)

    def _read(self, sensor: Sensor) -> tuple[float | None, float | None, float | None]:
        """(value, power_w, t_valid): value is cumulative J for counters, W for power sensors.

        ``t_valid`` is the monotonic time a counter value stands for when the sensor can date
        it (a stepping counter: see :mod:`carbon_callbacks.core.sensors.step_clock`), else None.
        A stepping counter whose read could not be dated gives value None (power only).
        """
        if sensor.is_counter:
            read_dated = getattr(sensor, "read_energy_dated", None)
            t_valid = None
            energy_j: float | None
            if read_dated is not None:
                dated = read_dated()
                energy_j, t_valid = (None, None) if dated is None else dated
            else:
                energy_j = sensor.read_energy_j()
            return energy_j, _counter_power_w(sensor), t_valid
        power_w = sensor.read_power_w()
        return power_w, power_w, None

    def _first_sample(self, state: _State) -> None:
        sensor = state.sensor
        t = time.monotonic()
        try:
            value, power_w, t_valid = self._read(sensor)
            if value is None:  # an undatable first read: the plain value, dated at the read
                value, t_valid = sensor.read_energy_j(), None
        except Exception as exc:  # noqa: BLE001
            state.last_t = t
            self._fail(state, exc)
            return
        if t_valid is not None:  # a stepping counter: dated at its step
            t = t_valid
        elif sensor.is_counter:  # dated like every later counter read: the middle of the read
            t = 0.5 * (t + time.monotonic())
        state.last_t = t
        if sensor.is_counter:
            state.offset_j -= value  # so that offset + counter starts at the energy so far
            state.energy_j = state.offset_j + value
            if t_valid is not None:
                state.anchor = (t, state.energy_j)
        # a mean since the previous read (utilisation models) describes the time before the
        # meter started: it only sets the sensor's reference; the next read covers from here
        state.last_power_w = None if _interval_mean(sensor) else power_w

    def _sample(self, state: _State) -> None:
        sensor = state.sensor
        if sensor.is_counter and self._drain_fed(state):
            return
        t_before = time.monotonic()
        try:
            value, power_w, t_valid = self._read(sensor)  # slow I/O outside the lock
        except Exception as exc:  # noqa: BLE001
            with self._lock:
                self._fail(state, exc)
            return
        t_after = time.monotonic()
        with self._lock:
            if state.sensor is not sensor:  # replaced meanwhile
                return
            if value is None:  # a counter read that could not be dated: carry on by power
                if power_w is not None:
                    self._integrate_power(state, power_w, t_after)
                return
            if sensor.is_counter:
                # a counter re-anchors the energy; its read takes milliseconds, so it is dated
                # at the middle of the read, or at its step when the sensor can tell
                t = 0.5 * (t_before + t_after) if t_valid is None else t_valid
                self._take_counter(state, value, t, power_w, dated=t_valid is not None)
            elif _interval_mean(sensor):
                # the reading is the mean power since the previous read: a rectangle
                state.energy_j += value * max(0.0, t_after - state.last_t)
                state.last_t = t_after
                state.last_power_w = power_w
            else:
                self._integrate_power(state, value, t_after)

    def _drain_fed(self, state: _State) -> bool:
        """Take the values a helper process read (a stepping counter's feed); False: none.

        False tells the caller to read the counter itself: the sensor has no feed, or its feed
        is not delivering (yet, or any more). Each value is applied in order, as if the thread
        had read it at its step; then power carries the energy to now when nothing new came.
        """
        sensor = state.sensor
        drain = getattr(sensor, "drain_dated", None)
        if drain is None:
            return False
        try:
            fed = drain()
        except Exception as exc:  # noqa: BLE001
            with self._lock:
                self._fail(state, exc)
            return True
        if fed is None:
            return False
        power_w = _counter_power_w(sensor)
        now = time.monotonic()
        with self._lock:
            if state.sensor is not sensor:  # replaced meanwhile
                return True
            newer = [(j, t) for j, t in fed if state.anchor is None or t > state.anchor[0]]
            for energy_j, t in newer:
                self._take_counter(state, energy_j, t, power_w, dated=True)
            if not newer and power_w is not None:
                self._integrate_power(state, power_w, now)
        return True

    def _take_counter(
        self, state: _State, value: float, t: float, power_w: float | None, *, dated: bool
    ) -> None:
        """Re-anchor a counter sensor at ``value`` (counter J) read at ``t`` (lock held).

        ``power_w``: the power read with the value (None: estimated from the counter's change
        since the last sample). ``dated``: ``t`` is the counter's step, so it settles marks.
        """
        new_energy = state.offset_j + value
        if power_w is None:
            if t - state.last_t >= MIN_POWER_WINDOW_S:
                power_w = max(0.0, (new_energy - state.energy_j) / (t - state.last_t))
            else:  # too short a window to tell the power: keep the last estimate
                power_w = state.last_power_w
        state.energy_j = new_energy
        state.last_t = t
        state.last_power_w = power_w
        if dated:
            self._settle(state, t, new_energy)

    @staticmethod
    def _settle(state: _State, t: float, energy_j: float) -> None:
        """A counter value dated at its step ``t``: settle the marks it follows (lock held).

        A mark waiting since the step just before it takes the counter between that step and
        this one, interpolated linearly in time (NVML says nothing finer than a step). When
        the two values are further apart than :data:`SETTLE_SPAN_S` (the counter is read less
        often than every step, as with long epochs), a straight line across them would misplace
        whatever the power did meanwhile: the mark keeps its bridged value. A mark after ``t``
        keeps waiting, from this fresher step.
        """
        waiting: list[_Pending] = []
        for p in state.pending:
            t_mark = p.snapshot.time_monotonic_s
            if t <= t_mark:
                p.anchor_t, p.anchor_j = t, energy_j
                waiting.append(p)
                continue
            if 0.0 < t - p.anchor_t <= SETTLE_SPAN_S:
                share = (t_mark - p.anchor_t) / (t - p.anchor_t)
                p.snapshot.energy_j[p.name] = p.anchor_j + share * (energy_j - p.anchor_j)
            p.leave()  # settled, or left bridged for good
        state.pending = waiting
        state.anchor = (t, energy_j)

    def _sample_power(self, state: _State) -> None:
        """A cheap power read between full reads: integrates power (bridging counters too)."""
        sensor = state.sensor
        try:
            power_w = sensor.read_power_w()
        except Exception as exc:  # noqa: BLE001
            if not sensor.is_counter:  # for counters the next full read decides
                with self._lock:
                    self._fail(state, exc)
            return
        t = time.monotonic()
        with self._lock:
            if state.sensor is not sensor:
                return
            self._integrate_power(state, power_w, t)

    @staticmethod
    def _integrate_power(state: _State, power_w: float, t: float) -> None:
        """Carry the energy from the last sample to ``t`` by the trapezoid rule (lock held)."""
        previous = state.last_power_w if state.last_power_w is not None else power_w
        state.energy_j += 0.5 * (previous + power_w) * max(0.0, t - state.last_t)
        state.last_t = t
        state.last_power_w = power_w

    def _fail(self, state: _State, exc: BaseException) -> None:
        """Record a failed read and switch to the sensor's fallback, or mark it lost."""
        old = state.sensor
        name = old.info.name
        try:
            replacement = old.fallback()
        except Exception:  # noqa: BLE001
            replacement = None
        try:
            old.close()
        except Exception:  # noqa: BLE001
            pass
        now_unix = time.time()
        if replacement is None:
            state.lost_at_unix_s = now_unix
            self.events.record(
                "sensor_lost",
                f"{name} ({old.info.device}) failed ({exc!r}) and has no fallback; its energy "
                "is counted up to the last good sample and the run log marks it incomplete",
                name,
            )
            return
        previous_power_w = state.last_power_w
        state.sensor = replacement
        for p in state.pending:  # marks so far keep their bridged values
            p.leave()
        state.anchor, state.pending = None, []
        state.offset_j = state.energy_j
        state.last_power_w = None
        state.methods.append((now_unix, replacement.info.method))
        del state.methods[:-_MAX_METHOD_HISTORY]
        self.events.record(
            "sensor_fallback",
            f"{name} ({old.info.device}) failed ({exc!r}); measuring it by "
            f"{replacement.info.method} from now on ({replacement.info.detail or 'no detail'})",
            name,
        )
        # prime the replacement: counters start from the energy counted so far
        t = time.monotonic()
        try:
            value, power_w, _ = self._read(replacement)
            if replacement.is_counter and value is None:
                value = replacement.read_energy_j()
        except Exception as exc2:  # noqa: BLE001
            state.last_t = t
            self._fail(state, exc2)
            return
        gap_s = max(0.0, t - state.last_t)
        if _interval_mean(replacement):
            # its first reading covers the time since it was built: only a reference; the gap
            # is bridged at the last good power
            power_w = None
            if previous_power_w is not None:
                state.energy_j += previous_power_w * gap_s
        elif previous_power_w is not None and power_w is not None:
            # the gap since the last good sample, bridged by the trapezoid of the two powers
            state.energy_j += 0.5 * (previous_power_w + power_w) * gap_s
        if replacement.is_counter and value is not None:
            state.offset_j = state.energy_j - value
        state.last_t = t
        state.last_power_w = power_w

    # -- marks (training thread) -----------------------------------------------------------------
    def mark(self) -> Snapshot:
        """Cumulative joules of every sensor now, without slow I/O.

        A stepping counter's value is bridged from its last step; the meter's thread settles
        it in the returned snapshot once it has read the next step (within about one counter
        cadence). A measurement taken before that uses the bridged value: at an epoch's end
        the start mark is settled, the end mark not yet.
        """
        for state in list(self._states.values()):
            sensor = state.sensor
            if state.lost_at_unix_s is None and state.last_power_w is None:
                # No power to bridge with yet (a counter without cheap power, or a mean-since-
                # last-read model, before the thread's second read): read the sensor itself, once
                # per mark, only in that first interval. Bridging nothing would date all energy
                # so far at the next sample. A mean-since-last-read reading is taken once it
                # covers a few clock ticks (before that it would repeat the previous reading).
                if sensor.is_counter or (
                    _interval_mean(sensor) and time.monotonic() - state.last_t >= MIN_MEAN_WINDOW_S
                ):
                    self._sample(state)
        t = time.monotonic()
        t_unix = time.time()
        powers_now: dict[str, float] = {}
        for name, state in list(self._states.items()):
            sensor = state.sensor
            if state.lost_at_unix_s is None and sensor.cheap_power:
                try:
                    powers_now[name] = sensor.read_power_w()
                except Exception:  # noqa: BLE001 - the thread records real failures
                    pass
        snapshot = Snapshot(time_monotonic_s=t, time_unix_s=t_unix, energy_j={})
        energy = snapshot.energy_j
        with self._lock:
            for name, state in self._states.items():
                energy[name] = self._bridge(state, t, powers_now.get(name))
                if state.anchor is not None and state.anchor[0] < t:
                    snapshot.bridged_j[name] = energy[name]
                    snapshot.waiting.add(name)
                    state.pending.append(_Pending(name, snapshot, *state.anchor))
                    for dropped in state.pending[:-_MAX_PENDING_MARKS]:
                        dropped.leave()
                    del state.pending[:-_MAX_PENDING_MARKS]
        return snapshot

    def _bridge(self, state: _State, t: float, power_now_w: float | None) -> float:
        """Energy at monotonic time ``t`` from the last sample and the power around it."""
        if state.lost_at_unix_s is not None or state.last_power_w is None:
            return state.energy_j
        dt = t - state.last_t
        if dt >= 0:
            p_end = power_now_w if power_now_w is not None else state.last_power_w
            return state.energy_j + 0.5 * (state.last_power_w + p_end) * dt
        # the thread sampled after t was taken: step back at the last power
        return max(0.0, state.energy_j + state.last_power_w * dt)

    def measure(self, start: Snapshot, end: Snapshot) -> Measurement:
        """The energy per sensor between two snapshots, with the methods used."""
        with self._lock:
            return self._measure(start, end)

    def measure_settling(
        self, start: Snapshot, end: Snapshot
    ) -> tuple[Measurement, dict[str, float], dict[str, float]]:
        """:meth:`measure`, with what settling had changed of each snapshot (J per sensor).

        Read under one lock, so the two say exactly which values the measurement used: a
        snapshot settled later changes by ``settling_j()`` minus what is returned here.
        """
        with self._lock:
            return self._measure(start, end), start.settling_j(), end.settling_j()

    def _measure(self, start: Snapshot, end: Snapshot) -> Measurement:
        """:meth:`measure` with the lock held."""
        energy: dict[str, float] = {}
        methods: dict[str, str] = {}
        components: dict[str, str] = {}
        incomplete: list[str] = []
        clamped: dict[str, float] = {}
        for name, state in self._states.items():
            lost = state.lost_at_unix_s
            if lost is not None and lost <= end.time_unix_s:
                incomplete.append(name)
            if lost is not None and lost <= start.time_unix_s:
                continue  # lost before the window: unmeasured, not a silent 0 J
            e0 = start.energy_j.get(name, 0.0)
            e1 = end.energy_j.get(name, e0)
            energy[name] = max(0.0, e1 - e0)
            if e1 < e0:
                clamped[name] = e0 - e1
            used = [m for since, m in state.methods if since <= end.time_unix_s]
            inside = [m for since, m in state.methods[1:] if start.time_unix_s < since]
            before = [m for since, m in state.methods if since <= start.time_unix_s]
            chain = (before[-1:] if before else used[:1]) + inside
            methods[name] = ">".join(dict.fromkeys(chain)) or state.sensor.info.method
            components[name] = state.sensor.info.component
        return Measurement(
            start_unix_s=start.time_unix_s,
            end_unix_s=end.time_unix_s,
            duration_s=max(0.0, end.time_monotonic_s - start.time_monotonic_s),
            energy_j=energy,
            methods=methods,
            components=components,
            incomplete=tuple(incomplete),
            clamped_j=clamped,
        )


_LIVE_METERS: weakref.WeakSet[Meter] = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _mid_step_after(sensor: Sensor, after: float) -> float | None:
    """The stepping counter's best read time >= ``after`` (monotonic s); None when unknown.

    An optimisation only: a sensor that cannot tell (or fails to) is read on the plain cadence.
    """
    try:
        return sensor.next_read_time(after)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return None


def _counter_power_w(sensor: Sensor) -> float | None:
    """A counter sensor's power read with its value, where that costs microseconds (W).

    None when it does not, or when the read fails: the counter is what counts.
    """
    if not sensor.cheap_power:
        return None
    try:
        return sensor.read_power_w()
    except Exception:  # noqa: BLE001
        return None


def _feed_live(sensor: Sensor) -> bool:
    """True when a helper process reads this stepping counter (see ``counter_feed``)."""
    return bool(getattr(sensor, "feed_live", False))


def _tell_cadence(sensor: Sensor, cadence_s: float) -> None:
    """Pass the counter cadence (s) on to a sensor whose helper process reads the counter."""
    tell = getattr(sensor, "set_read_interval", None)
    if tell is not None:
        try:
            tell(cadence_s)
        except Exception:  # noqa: BLE001 - an optimisation only
            pass


def _interval_mean(sensor: Sensor) -> bool:
    """True for a power sensor whose reading is the mean since its previous read."""
    return not sensor.is_counter and bool(getattr(sensor, "power_is_interval_mean", False))


def _register_atexit(meter: Meter) -> None:
    global _ATEXIT_REGISTERED
    _LIVE_METERS.add(meter)
    if not _ATEXIT_REGISTERED:
        atexit.register(_stop_all_meters)
        _ATEXIT_REGISTERED = True


def _stop_all_meters() -> None:
    """Stop every meter's thread at interpreter exit (their trackers may be gone already)."""
    for meter in list(_LIVE_METERS):
        meter._stop.set()
