"""Dating the values of a counter that advances in steps.

NVML's total-energy counter does not count continuously: on an H100 it steps about every
100 ms, and one read costs about 4 ms (docs/benchmarks.md). A value read at time t is the
energy at the last step, up to one step earlier, so anchoring it at t is wrong by up to one
step of energy (40 J at 400 W): enough to put a 1-second epoch off by several percent.

:class:`SteppedCounterClock` finds when the steps happen and dates each value at its step:
it polls the counter until it steps (once at start, then every ``relock_s`` seconds, costing
on average half a step of reads on the meter's thread), learns the period from steps far apart,
and in between predicts the last step's time, so an ordinary read costs one read. A value that
does not look fresh (no step since the last read, or a read too close to a predicted step)
triggers a new lock. A counter that changes on every read, or not within the poll budget, is
dated at the read itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class SteppedCounterClock:
    """Reads a stepping counter and says when each value became current.

    Args:
        read: returns the counter's raw value (any unit).
        clock: monotonic clock in seconds.
        poll_budget_s: longest time spent polling for one step.
        relock_s: seconds after which the step phase is measured again.
        margin_s: a read closer than this to a predicted step is not trusted.
    """

    def __init__(
        self,
        read: Callable[[], float],
        *,
        clock: Callable[[], float] = time.monotonic,
        poll_budget_s: float = 0.25,
        relock_s: float = 5.0,
        margin_s: float = 0.005,
    ):
        self._read = read
        self._clock = clock
        self.poll_budget_s = poll_budget_s
        self.relock_s = relock_s
        self.margin_s = margin_s
        self.period_s: float | None = None
        self._step_t: float | None = None  # a step time known from polling
        self._locked_at = -math.inf
        self._last_value: float | None = None
        self._last_read_mid: float | None = None
        self.locks = 0
        self._read_s = 0.0
        self._origin_t: float | None = None  # the first step seen: the period's baseline
        self._relock_after_s = 1.0  # grows as the period gets more precise

    def _timed_read(self) -> tuple[float, float]:
        t0 = self._clock()
        value = self._read()
        t1 = self._clock()
        self._read_s = t1 - t0
        return value, 0.5 * (t0 + t1)

    def read_dated(self) -> tuple[float, float]:
        """(value, clock time at which the counter reached it)."""
        value, t = self._timed_read()
        period = self.period_s
        if (
            period is not None
            and self._step_t is not None
            and t - self._locked_at < self._relock_after_s
        ):
            n = math.floor((t - self._step_t) / period)
            predicted = self._step_t + n * period
            age = t - predicted
            if self.margin_s < age < period - self.margin_s and value != self._last_value:
                self._last_value = value
                return value, predicted
        return self._lock(value, t)

    def _poll_step(self, value: float, t: float) -> tuple[float, float] | None:
        """Read until the value changes; (new value, estimated step time) or None."""
        deadline = t + self.poll_budget_s
        previous_mid = t
        while True:
            new, mid = self._timed_read()
            if new != value:
                return new, 0.5 * (previous_mid + mid)
            if mid > deadline:
                return None
            previous_mid = mid

    def _lock(self, value: float, t: float) -> tuple[float, float]:
        self.locks += 1
        first = self._poll_step(value, t)
        if first is None:  # not stepping within the budget: date at the read
            self.period_s = None
            self._last_value = value
            return value, t
        v1, t1 = first
        previous_step, period = self._step_t, self.period_s
        anchor_value, anchor_t = v1, t1
        if period is None or previous_step is None:
            second = self._poll_step(v1, t1)
            if second is None:
                self._last_value = v1
                return v1, t1
            anchor_value, anchor_t = second
            self.period_s = anchor_t - t1
            if self.period_s < 3 * max(self._read_s, 1e-4):
                # it changes with (almost) every read: a continuous counter, fresh at the read
                self.period_s = None
                self._last_value = anchor_value
                return anchor_value, anchor_t
            self._origin_t = t1
            self._relock_after_s = min(self.relock_s, 8 * self.period_s)
        else:
            # Count the steps since the first one seen. The count is unambiguous while the
            # period's error over the baseline stays under half a step, so the baseline (and
            # with it the time between locks) grows by a safe factor at each lock.
            origin = self._origin_t if self._origin_t is not None else previous_step
            steps = round((t1 - origin) / period)
            if steps >= 1:
                estimate = (t1 - origin) / steps
                if abs(estimate - period) < 0.1 * period:
                    self.period_s = estimate
                    self._relock_after_s = min(self.relock_s, 2.5 * (t1 - origin))
        self._step_t = anchor_t
        self._locked_at = anchor_t
        self._last_value = anchor_value
        return anchor_value, anchor_t
