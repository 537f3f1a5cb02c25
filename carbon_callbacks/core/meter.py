"""Marks and measurements: cumulative joules per sensor at any instant, cheaply, final when taken.

A daemon thread reads the sensors. Counters (NVML total energy, RAPL) are taken as they are;
power sensors are integrated by the trapezoid rule (sensors whose reading is the mean since their
previous read, such as the CPU model's utilisation, by rectangles over the interval each reading
covers; their first reading, which covers the time before the start, is only a reference). A
stepping counter (NVML's, which advances about every 100 ms) is read mid-way between two steps,
once per step by default, and each value is dated at its step; where a helper process reads it
(:mod:`~carbon_callbacks.core.sensors.counter_feed`), the thread and every mark drain its values.
Sensors whose power costs microseconds to read (NVML) are also read every ``power_interval_s``
(0.1 s): for sampled GPUs that is the integration grid, and for counters it carries the energy
from the last counter value to the present.

A *mark* (:meth:`Meter.mark`), taken from a training hook, does no slow I/O: it reads the power of
the sensors where that costs microseconds and bridges each sensor's last value to the instant by
the trapezoid of the last sampled power and the power at the mark. A mark is final: nothing
revises it later, and a sensor's value never drops below its value at the previous mark, so a
measurement (the difference of two marks) is never negative and windows that share a boundary
mark add up exactly to the window across them. :meth:`Meter.stop` may wait, at most
:data:`FINAL_WAIT_S` and once per run, for a stepping counter's next step, and takes the counter
interpolated between the two steps around the final mark: the run's total is the counter's own
difference (its start bridged by power to the first counter value, within one step of energy).

The meter keeps a fixed amount of state per sensor, whatever the length of the run. When a sensor
fails, the failure is recorded once, the sensor's :meth:`~Sensor.fallback` takes over from the
energy already counted, and the change of method is part of every later measurement's
provenance. Time comes from a :class:`Clock` (injectable: tests drive it instead of sleeping).
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

#: Seconds between power reads of sensors that read power in microseconds (NVML: ~2 us).
POWER_INTERVAL_S = 0.1
#: Default time between two reads of a stepping counter (s): every NVML step.
COUNTER_INTERVAL_S = 0.1
#: Shortest window (s) over which two counter reads give a power estimate for bridging marks.
MIN_POWER_WINDOW_S = 0.01
#: Shortest span (s) a mean-since-last-read power reading (utilisation models) must cover before
#: a mark reads it for the first time: a few kernel clock ticks (1-10 ms), so that it measures the
#: training, not the instant after the previous reading.
MIN_MEAN_WINDOW_S = 0.05
#: Method-history entries kept per sensor (fallback chains are at most a few steps long).
_MAX_METHOD_HISTORY = 8
#: Longest wait (s) in :meth:`Meter.stop` for the step after the final mark: one NVML step
#: (~0.1 s), the read after it, and room for a late read.
FINAL_WAIT_S = 0.25
#: The final mark is interpolated only between counter steps at most this far apart (s):
#: adjacent steps of NVML's ~0.1 s counter, with room for the dating. Wider apart, it is bridged.
INTERPOLATE_SPAN_S = 0.15
#: How often (s) :meth:`Meter.stop` looks for the step after the final mark when a helper process
#: reads the counter (it arrives a few milliseconds after the helper's read).
FEED_POLL_S = 0.02


class Clock:
    """The meter's time: monotonic and Unix seconds, and waiting. Tests pass a driven one."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (``time.monotonic``)."""
        return time.monotonic()

    def time(self) -> float:
        """Unix seconds (``time.time``), for intensity windows."""
        return time.time()

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        """Wait until ``event`` is set or ``timeout_s`` seconds pass; True when it was set."""
        return event.wait(timeout_s)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        time.sleep(max(0.0, seconds))


SYSTEM_CLOCK = Clock()


@dataclass(frozen=True)
class Snapshot:
    """Cumulative energy of every sensor at one instant; final once returned.

    Attributes:
        time_monotonic_s: the clock's monotonic seconds at the mark (for durations).
        time_unix_s: Unix seconds at the mark (UTC, for intensity windows).
        energy_j: cumulative joules per sensor name since the meter started.
    """

    time_monotonic_s: float
    time_unix_s: float
    energy_j: dict[str, float]


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


class _Channel:
    """One sensor as the meter follows it: a handful of numbers, whatever the run length.

    Reads run outside the meter's lock; what they change is written under it.
    """

    def __init__(self, sensor: Sensor, clock: Clock, events: EventLog, lock: threading.Lock):
        self.clock, self.events, self.lock = clock, events, lock
        self.feed_lock = threading.Lock()  # one drain of a helper's values at a time
        self.sensor = sensor
        self.energy_j: float = 0.0  # cumulative joules up to last_t (power lag not included)
        self.last_t: float = 0.0  # monotonic time of the last sample
        self.last_power_w: float | None = None
        self.offset_j: float = 0.0  # counter J -> the meter's J (energy counted before the counter)
        self.counted: bool = False  # a counter's offset is known (its first value was taken)
        self.lost_at_unix_s: float | None = None
        # the last counter value dated at its step (stepping counters): (monotonic t, cumulative J)
        self.anchor: tuple[float, float] | None = None
        self.floor_j: float = 0.0  # the value at the last mark: later marks never go below it
        self.lag_ref_w: float | None = None  # the first power reading, for the power-lag term
        # (unix time from which, method) entries, oldest first
        self.methods: list[tuple[float, str]] = [(self.clock.time(), sensor.info.method)]

    def lag_j(self, power_w: float | None) -> float:
        """Joules the sensor's power lag hides at a reading of ``power_w`` (0 without a lag).

        A reading that trails the power by ``lag_s`` seconds integrates to the energy of
        ``lag_s`` seconds ago; ``lag_s`` times the change of the reading since the start makes up
        the difference (exact for a reading averaged over a trailing window across a ramp or a
        step of the load, once the window has passed).
        """
        lag_s = self.sensor.power_lag_s
        if lag_s <= 0 or self.sensor.is_counter or power_w is None or self.lag_ref_w is None:
            return 0.0
        return lag_s * (power_w - self.lag_ref_w)

    def bridge(self, t: float, power_now_w: float | None) -> float:
        """Energy at monotonic ``t`` from the last sample and the power around it (no lag term)."""
        if self.lost_at_unix_s is not None or self.last_power_w is None:
            return self.energy_j
        dt = t - self.last_t
        if dt >= 0:
            p_end = power_now_w if power_now_w is not None else self.last_power_w
            return self.energy_j + 0.5 * (self.last_power_w + p_end) * dt
        # the thread sampled after t was taken: step back at the last power
        return max(0.0, self.energy_j + self.last_power_w * dt)

    def methods_in(self, start_unix_s: float, end_unix_s: float) -> str:
        """The sensor's method(s) over a window, oldest first, joined by ``>``."""
        used = [m for since, m in self.methods if since <= end_unix_s]
        inside = [m for since, m in self.methods[1:] if start_unix_s < since <= end_unix_s]
        before = [m for since, m in self.methods if since <= start_unix_s]
        chain = (before[-1:] if before else used[:1]) + inside
        return ">".join(dict.fromkeys(chain)) or self.sensor.info.method

    def first_sample(self) -> None:
        """The start: a counter's first value (or only the power of a stepping one), a power."""
        sensor = self.sensor
        t = self.clock.monotonic()
        try:
            value, power_w = None, _counter_power_w(sensor) if sensor.is_counter else None
            if sensor.is_counter and (power_w is None or not sensor.counter_steps):
                value = sensor.read_energy_j()
                t = 0.5 * (t + self.clock.monotonic())  # dated at the middle of the read
            elif not sensor.is_counter:
                value = power_w = sensor.read_power_w()
            # else a stepping counter with cheap power: the thread reads the counter
        except Exception as exc:  # noqa: BLE001
            self.last_t = t
            self.fail(exc)
            return
        self.last_t = t
        if value is not None and sensor.is_counter:
            self.offset_j, self.counted = -value, True
        # a mean since the previous read (utilisation models) describes the time before the
        # meter started: it only sets the sensor's reference; the next read covers from here
        self.last_power_w = None if sensor.power_is_interval_mean else power_w
        self.lag_ref_w = self.last_power_w

    def sample(self) -> None:
        sensor = self.sensor
        if sensor.is_counter and self.drain_fed():
            return
        t_before = self.clock.monotonic()
        try:
            value, power_w, t_valid = _read(sensor)  # slow I/O outside the lock
        except Exception as exc:  # noqa: BLE001
            with self.lock:
                self.fail(exc)
            return
        t_after = self.clock.monotonic()
        with self.lock:
            if self.sensor is not sensor:  # replaced meanwhile
                return
            if value is None:  # a counter read that could not be dated: carry on by power
                if power_w is not None:
                    self.integrate_power(power_w, t_after)
                return
            if sensor.is_counter:
                # a counter re-anchors the energy; its read takes milliseconds, so it is dated
                # at the middle of the read, or at its step when the sensor can tell
                t = 0.5 * (t_before + t_after) if t_valid is None else t_valid
                self.take_counter(value, t, power_w, dated=t_valid is not None)
            elif sensor.power_is_interval_mean:
                # the reading is the mean power since the previous read: a rectangle
                self.energy_j += value * max(0.0, t_after - self.last_t)
                self.last_t = t_after
                self.last_power_w = power_w
            else:
                self.integrate_power(value, t_after)

    def drain_fed(self) -> bool:
        """Take the values a helper process read (a stepping counter's feed); False: none.

        False tells the caller to read the counter itself: the sensor has no feed, or its feed
        is not delivering (yet, or any more). Each value is applied in order, as if the thread
        had read it at its step; then power carries the energy to now when nothing new came.
        """
        sensor = self.sensor
        with self.feed_lock:  # the thread and a mark may both drain
            try:
                fed = sensor.drain_dated()
            except Exception as exc:  # noqa: BLE001
                with self.lock:
                    self.fail(exc)
                return True
            if fed is None:
                return False
            power_w = _counter_power_w(sensor)
            now = self.clock.monotonic()
            with self.lock:
                if self.sensor is not sensor:  # replaced meanwhile
                    return True
                newer = [(j, t) for j, t in fed if self.anchor is None or t > self.anchor[0]]
                for energy_j, t in newer:
                    self.take_counter(energy_j, t, power_w, dated=True)
                if not newer and power_w is not None:
                    self.integrate_power(power_w, now)
        return True

    def take_counter(self, value: float, t: float, power_w: float | None, *, dated: bool) -> None:
        """Re-anchor a counter sensor at ``value`` (counter J) read at ``t`` (lock held).

        ``power_w``: the power read with the value (None: estimated from the counter's change
        since the last sample). ``dated``: ``t`` is the counter's step. A counter's first value
        takes the energy bridged by power from the start to ``t`` as its offset.
        """
        if not self.counted:
            self.offset_j = self.bridge(t, power_w) - value
            self.counted = True
        new_energy = self.offset_j + value
        if power_w is None:
            if t - self.last_t >= MIN_POWER_WINDOW_S:
                power_w = max(0.0, (new_energy - self.energy_j) / (t - self.last_t))
            else:  # too short a window to tell the power: keep the last estimate
                power_w = self.last_power_w
        self.energy_j = new_energy
        self.last_t = t
        self.last_power_w = power_w
        if dated:
            self.anchor = (t, new_energy)

    def sample_power(self) -> None:
        """A cheap power read between full reads: integrates power (bridging counters too)."""
        sensor = self.sensor
        try:
            power_w = sensor.read_power_w()
        except Exception as exc:  # noqa: BLE001
            if not sensor.is_counter:  # for counters the next full read decides
                with self.lock:
                    self.fail(exc)
            return
        t = self.clock.monotonic()
        with self.lock:
            if self.sensor is sensor:
                self.integrate_power(power_w, t)

    def integrate_power(self, power_w: float, t: float) -> None:
        """Carry the energy from the last sample to ``t`` by the trapezoid rule (lock held)."""
        previous = self.last_power_w if self.last_power_w is not None else power_w
        self.energy_j += 0.5 * (previous + power_w) * max(0.0, t - self.last_t)
        self.last_t = t
        self.last_power_w = power_w
        if self.lag_ref_w is None:
            self.lag_ref_w = power_w

    def fail(self, exc: BaseException) -> None:
        """Record a failed read and switch to the sensor's fallback, or mark it lost."""
        old = self.sensor
        name = old.info.name
        try:
            replacement = old.fallback()
        except Exception:  # noqa: BLE001
            replacement = None
        try:
            old.close()
        except Exception:  # noqa: BLE001
            pass
        now_unix = self.clock.time()
        if replacement is None:
            self.lost_at_unix_s = now_unix
            self.events.record(
                "sensor_lost",
                f"{name} ({old.info.device}) failed ({exc!r}) and has no fallback; its energy "
                "is counted up to the last good sample and the run log marks it incomplete",
                name,
            )
            return
        previous_power_w = self.last_power_w
        self.energy_j += self.lag_j(previous_power_w)  # what the old sensor's lag hid
        self.sensor = replacement
        self.anchor = None
        self.last_power_w = self.lag_ref_w = None
        self.methods.append((now_unix, replacement.info.method))
        del self.methods[:-_MAX_METHOD_HISTORY]
        self.events.record(
            "sensor_fallback",
            f"{name} ({old.info.device}) failed ({exc!r}); measuring it by "
            f"{replacement.info.method} from now on ({replacement.info.detail or 'no detail'})",
            name,
        )
        self.prime(previous_power_w)

    def prime(self, previous_power_w: float | None) -> None:
        """Read a fallback sensor once: counters start from the energy counted so far."""
        replacement = self.sensor
        t = self.clock.monotonic()
        try:
            value, power_w, _ = _read(replacement)
            if replacement.is_counter and value is None:
                value = replacement.read_energy_j()
        except Exception as exc2:  # noqa: BLE001
            self.last_t = t
            self.fail(exc2)
            return
        gap_s = max(0.0, t - self.last_t)
        if replacement.power_is_interval_mean:
            # its first reading covers the time since it was built: only a reference; the gap
            # is bridged at the last good power
            power_w = None
            if previous_power_w is not None:
                self.energy_j += previous_power_w * gap_s
        elif previous_power_w is not None and power_w is not None:
            # the gap since the last good sample, bridged by the trapezoid of the two powers
            self.energy_j += 0.5 * (previous_power_w + power_w) * gap_s
        if replacement.is_counter and value is not None:
            self.offset_j, self.counted = self.energy_j - value, True
        self.last_t = t
        self.last_power_w = self.lag_ref_w = power_w


class Meter:
    """Samples sensors on a daemon thread and answers marks from the training thread.

    Args:
        sensors: the sensors to read; names must be unique.
        events: where failures and fallbacks are recorded (warned once).
        interval_s: seconds between full reads of every sensor that is not a stepping counter
            (RAPL counters, models).
        power_interval_s: seconds between the power reads of sensors whose power costs
            microseconds (NVML); between two counter reads these samples carry the energy.
        counter_interval_s: seconds between reads of stepping counters (by this thread or by a
            helper process); None (default): every step, :data:`COUNTER_INTERVAL_S`.
        clock: where time comes from (default: the system's).
        background: start the sampling thread in :meth:`start` (default); False: the caller
            drives sampling through :meth:`tick` (tests, with a driven clock).
    """

    def __init__(
        self,
        sensors: list[Sensor],
        events: EventLog,
        interval_s: float = 1.0,
        power_interval_s: float = POWER_INTERVAL_S,
        counter_interval_s: float | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        background: bool = True,
    ):
        names = [s.info.name for s in sensors]
        if len(set(names)) != len(names):
            raise ValueError(f"sensor names must be unique, got {names}")
        self.events = events
        self.interval_s = float(interval_s)
        self.power_interval_s = float(power_interval_s)
        self.counter_interval_s = float(counter_interval_s or COUNTER_INTERVAL_S)
        self._clock = clock
        self._background = background
        self._states: dict[str, _Channel] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._initial_sensors = list(sensors)
        self._next = {"full": math.inf, "counter": math.inf, "power": math.inf}

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> Snapshot:
        """Take the first sample of every sensor, start the thread, return the start snapshot.

        A stepping counter with cheap power is not read here (its first read can take a few
        steps to date): the thread reads it, and the time until then is bridged by power.
        """
        if self._started:
            return self.mark()
        for sensor in self._initial_sensors:
            state = _Channel(sensor, self._clock, self.events, self._lock)
            self._states[sensor.info.name] = state
            state.first_sample()
        self._started = True
        snapshot = self.mark()
        now = self._clock.monotonic()
        cheap = any(st.sensor.cheap_power for st in self._states.values())
        self._next = {
            "full": now + self.interval_s,
            "counter": now if self._stepped_states() else math.inf,
            "power": now + self.power_interval_s if cheap else math.inf,
        }
        if self._background:
            self._thread = threading.Thread(
                target=self._run, name="carbon_callbacks-meter", daemon=True
            )
            self._thread.start()
            _register_atexit(self)
        return snapshot

    def stop(self) -> Snapshot | None:
        """Stop the thread (waits for it) and return the final snapshot; idempotent."""
        if not self._started:
            return None
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, 3 * self.interval_s))
        self._thread = None
        snapshot = None
        if self._states:
            self._sample_where(lambda sensor: not sensor.counter_steps)
            self._record_notices()
            snapshot = self._final_mark()
        for state in self._states.values():
            try:
                state.sensor.close()
            except Exception:  # noqa: BLE001 - closing must not raise into training
                pass
        self._started = False
        return snapshot

    def _final_mark(self) -> Snapshot:
        """The last mark: stepping counters interpolated between the steps around it.

        Waits for each stepping counter's next step, at most :data:`FINAL_WAIT_S` (the thread
        has stopped; this runs once, at the end of the run); a counter whose steps around the
        mark are not adjacent (:data:`INTERPOLATE_SPAN_S`) keeps its bridged value.
        """
        t, t_unix, values = self._bridged_now()
        before = {
            name: st.anchor
            for name, st in self._stepped_states().items()
            if st.anchor is not None and st.anchor[0] <= t
        }
        after: dict[str, tuple[float, float]] = {}
        deadline = t + FINAL_WAIT_S
        first = True  # read at once: the step just before the mark may not have been read
        while len(after) < len(before):
            waiting = [
                st for name, st in self._states.items() if name in before and name not in after
            ]
            now = self._clock.monotonic()
            sensor = waiting[0].sensor
            when = now + FEED_POLL_S if sensor.feed_live else _mid_step_after(sensor, now)
            when = now + 0.5 * COUNTER_INTERVAL_S if when is None else max(when, now + 1e-3)
            if first:
                when, first = now, False
            if when > deadline:
                break
            self._clock.sleep(when - now)
            for state in waiting:
                state.sample()
                name, anchor = state.sensor.info.name, state.anchor
                if anchor is not None and anchor[0] > t:
                    after[name] = anchor
                elif anchor is not None and anchor[0] > before[name][0]:
                    before[name] = anchor  # a step before the mark that the thread had not read
        for name, (t1, e1) in after.items():
            t0, e0 = before[name]
            if 0.0 < t1 - t0 <= INTERPOLATE_SPAN_S:
                values[name] = e0 + (t - t0) / (t1 - t0) * (e1 - e0)
        return self._snapshot(t, t_unix, values)

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

    # -- sampling (meter thread) ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                due = self.tick()
                if self._clock.wait(self._stop, max(0.0, due - self._clock.monotonic())):
                    return
        except Exception as exc:  # noqa: BLE001 - the thread must end quietly, never kill training
            self.events.record(
                "meter_stopped",
                f"the sampling thread stopped after an unexpected error: {exc!r}; energy after "
                "this point is bridged from the last samples only",
                "meter",
            )

    def tick(self) -> float:
        """Do the reads that are due now; return when the next one is (monotonic s).

        The thread calls this in a loop; with ``background=False`` the caller does.
        """
        nxt = self._next
        now = self._clock.monotonic()
        if now >= nxt["counter"] - 1e-3:
            self._sample_where(lambda sensor: sensor.counter_steps)
            nxt["counter"] = self._next_counter_read(self._clock.monotonic())
            nxt["power"] = now + self.power_interval_s if nxt["power"] < math.inf else math.inf
        if now >= nxt["full"] - 1e-3:
            self._sample_where(lambda sensor: not sensor.counter_steps)
            nxt["full"] = now + self.interval_s
            nxt["power"] = now + self.power_interval_s if nxt["power"] < math.inf else math.inf
        elif now >= nxt["power"] - 1e-3:
            self._sample_where(lambda sensor: sensor.cheap_power, power_only=True)
            nxt["power"] = now + self.power_interval_s
        self._record_notices()
        return min(nxt.values())

    def _stepped_states(self) -> dict[str, _Channel]:
        """The live sensors that are stepping counters."""
        return {
            name: st
            for name, st in self._states.items()
            if st.lost_at_unix_s is None and st.sensor.counter_steps
        }

    def _next_counter_read(self, now: float) -> float:
        """When the stepping counters are read next: mid-way between steps (inf: none left)."""
        stepped = [st.sensor for st in self._stepped_states().values()]
        if not stepped:
            return math.inf
        cadence = self.counter_interval_s
        for sensor in stepped:
            try:
                sensor.set_read_interval(cadence)
            except Exception:  # noqa: BLE001 - an optimisation only
                pass
        if any(sensor.feed_live for sensor in stepped):
            # a helper reads on this cadence; what it read is taken often (a cheap pipe read)
            return now + min(cadence, self.power_interval_s)
        aligned = _mid_step_after(stepped[0], now + max(0.0, cadence - 0.5 * COUNTER_INTERVAL_S))
        return now + cadence if aligned is None else max(aligned, now + 1e-3)

    def _sample_where(self, which: Callable[[Sensor], bool], power_only: bool = False) -> None:
        """Read the live sensors that ``which`` selects: fully, or only their power."""
        for state in list(self._states.values()):
            if state.lost_at_unix_s is not None or not which(state.sensor):
                continue
            if power_only:
                state.sample_power()
            else:
                state.sample()

    def _record_notices(self) -> None:
        """Record what sensors degraded by themselves (e.g. a power field lost), once each."""
        for name, state in list(self._states.items()):
            try:
                notices = state.sensor.drain_notices()
            except Exception:  # noqa: BLE001 - a notice must never stop the thread
                continue
            for message in notices:
                self.events.record("sensor_degraded", message, name)

    # -- marks (training thread) -----------------------------------------------------------------
    def mark(self) -> Snapshot:
        """Cumulative joules of every sensor now, without slow I/O; final (never revised)."""
        for state in list(self._states.values()):
            sensor = state.sensor
            if state.lost_at_unix_s is None and state.last_power_w is None:
                # No power to bridge with yet (a counter without cheap power, or a mean-since-
                # last-read model, before the thread's second read): read the sensor itself, once
                # per mark, only in that first interval. Bridging nothing would date all energy
                # so far at the next sample. A mean-since-last-read reading is taken once it
                # covers a few clock ticks (before that it would repeat the previous reading).
                if (sensor.is_counter and not sensor.counter_steps) or (
                    sensor.power_is_interval_mean
                    and self._clock.monotonic() - state.last_t >= MIN_MEAN_WINDOW_S
                ):
                    state.sample()
            elif state.lost_at_unix_s is None and sensor.feed_live:
                # a helper's values wait in a pipe: take them (microseconds), so the mark is
                # bridged from the helper's last step even when this process's thread is late
                state.drain_fed()
        t, t_unix, values = self._bridged_now()
        return self._snapshot(t, t_unix, values)

    def _bridged_now(self) -> tuple[float, float, dict[str, float]]:
        """(monotonic t, unix t, each sensor's energy bridged to t by its power read at t).

        The power read at t is also taken as a sample, where the sensor's power is cheap.
        """
        t = self._clock.monotonic()
        t_unix = self._clock.time()
        powers_now: dict[str, float] = {}
        for name, state in list(self._states.items()):
            if state.lost_at_unix_s is None and state.sensor.cheap_power:
                try:
                    powers_now[name] = state.sensor.read_power_w()
                except Exception:  # noqa: BLE001
                    # a read that fails at a mark (a GPU lost) is read in full now, once, so
                    # that the failure and its fallback are recorded in this window
                    state.sample()
        with self._lock:
            values = {}
            for name, state in self._states.items():
                power_w = powers_now.get(name)
                values[name] = state.bridge(t, power_w) + state.lag_j(
                    power_w if power_w is not None else state.last_power_w
                )
                if power_w is not None and t >= state.last_t and state.lost_at_unix_s is None:
                    # the power at the mark is a sample too: the next bridge starts here, not
                    # from a thread sample taken before the mark (say, in an idle gap)
                    state.integrate_power(power_w, t)
        return t, t_unix, values

    def _snapshot(self, t: float, t_unix: float, values: dict[str, float]) -> Snapshot:
        """A final snapshot of ``values``, each raised to the sensor's last mark if below it."""
        with self._lock:
            energy = {}
            for name, value in values.items():
                state = self._states[name]
                state.floor_j = energy[name] = max(value, state.floor_j)
        return Snapshot(time_monotonic_s=t, time_unix_s=t_unix, energy_j=energy)

    def measure(self, start: Snapshot, end: Snapshot) -> Measurement:
        """The energy per sensor between two snapshots (``start`` first), with the methods used."""
        energy: dict[str, float] = {}
        methods: dict[str, str] = {}
        components: dict[str, str] = {}
        incomplete: list[str] = []
        with self._lock:
            for name, state in self._states.items():
                lost = state.lost_at_unix_s
                if lost is not None and lost <= end.time_unix_s:
                    incomplete.append(name)
                if lost is not None and lost <= start.time_unix_s:
                    continue  # lost before the window: unmeasured, not a silent 0 J
                e0 = start.energy_j.get(name, 0.0)
                energy[name] = end.energy_j.get(name, e0) - e0
                methods[name] = state.methods_in(start.time_unix_s, end.time_unix_s)
                components[name] = state.sensor.info.component
        return Measurement(
            start_unix_s=start.time_unix_s,
            end_unix_s=end.time_unix_s,
            duration_s=max(0.0, end.time_monotonic_s - start.time_monotonic_s),
            energy_j=energy,
            methods=methods,
            components=components,
            incomplete=tuple(incomplete),
        )


def _read(sensor: Sensor) -> tuple[float | None, float | None, float | None]:
    """(value, power_w, t_valid): value is cumulative J for counters, W for power sensors.

    ``t_valid`` is the monotonic time a counter value stands for when the sensor dates it
    (a stepping counter: see :mod:`carbon_callbacks.core.sensors.step_clock`), else None.
    A stepping counter whose read could not be dated gives value None (power only).
    """
    if sensor.is_counter:
        dated = sensor.read_energy_dated()
        energy_j, t_valid = (None, None) if dated is None else dated
        return energy_j, _counter_power_w(sensor), t_valid
    power_w = sensor.read_power_w()
    return power_w, power_w, None


_LIVE_METERS: weakref.WeakSet[Meter] = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _mid_step_after(sensor: Sensor, after: float) -> float | None:
    """The stepping counter's best read time >= ``after`` (monotonic s); None when unknown.

    An optimisation only: a sensor that cannot tell (or fails to) is read on the plain cadence.
    """
    try:
        return sensor.next_read_time(after)
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
