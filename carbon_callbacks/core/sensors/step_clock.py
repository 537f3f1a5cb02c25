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
        poll_gap_s: longest time between the starts of two reads across which a poll accepts a
            step (dated between them); None: the fastest read plus ``margin_s`` (back to back).
            A reader the GIL cannot delay may allow more, since a read that takes long is the
            driver, not a wait: NVML's read can take ~10 ms right at a step.
    """

    def __init__(
        self,
        read: Callable[[], float],
        *,
        clock: Callable[[], float] = time.monotonic,
        poll_budget_s: float = 0.35,
        relock_s: float = 5.0,
        margin_s: float = 0.005,
        poll_gap_s: float | None = None,
    ):
        self._read = read
        self._clock = clock
        self.poll_budget_s = poll_budget_s
        self.relock_s = relock_s
        self.margin_s = margin_s
        self.poll_gap_s = poll_gap_s
        self.period_s: float | None = None
        self._step_t: float | None = None  # a step time known from polling
        self._locked_at = -math.inf
        self._last_value: float | None = None
        self._last_dated: float | None = None  # the step time given with _last_value
        self._ambiguous = 0  # reads in a row that straddled a predicted step
        self._stepped_unseen = False  # the last poll saw a step only across a long wait
        self.locks = 0
        self._read_s = 0.0
        self._fastest_read_s = math.inf
        self._origin_t: float | None = None  # the first step seen: the period's baseline
        self._relock_after_s = 1.0  # grows as the period gets more precise

    def _timed_read(self) -> tuple[float, float, float]:
        """(value, clock before the read, clock after it).

        The value was current at some instant inside that window. The window can be much
        longer than the read itself: the thread may wait for Python's GIL after the call
        returns (tens of milliseconds while a training loop holds it), so the window, not its
        midpoint, is what can be trusted.
        """
        t0 = self._clock()
        value = self._read()
        t1 = self._clock()
        self._read_s = t1 - t0
        self._fastest_read_s = min(self._fastest_read_s, self._read_s)
        return value, t0, t1

    def next_mid_step(self, after: float) -> float | None:
        """The first time >= ``after`` half a period past a predicted step (None: not locked).

        A read then is as far as it can be from the steps on both sides, so its value is fresh
        and can be dated without a new lock, even with a few milliseconds of step jitter.
        """
        period, step_t = self.period_s, self._step_t
        if period is None or step_t is None:
            return None
        n = math.ceil((after - step_t) / period - 0.5)
        return step_t + (n + 0.5) * period

    def relock_due(self, at: float) -> bool:
        """True when a read at monotonic ``at`` would measure the step phase again (a poll).

        A caller free to choose when it reads (the counter helper process) starts that read just
        before a predicted step: the poll then lasts a few milliseconds and no step goes unread.
        """
        return (
            self.period_s is None
            or self._step_t is None
            or at - self._locked_at >= self._relock_after_s
        )

    def relock(self) -> tuple[float, float] | None:
        """Measure the step phase again now (a poll for the next step), as :meth:`read_dated`
        does when it is due; the caller chose the moment (just before a predicted step)."""
        value, t0, t1 = self._timed_read()
        return self._lock(value, t0, t1)

    def read_dated(self) -> tuple[float, float] | None:
        """(value, clock time at which the counter reached it), or None when undatable.

        None means this read straddled a predicted step (typically because the thread waited
        for the GIL after the call), so the value may belong to either step: the caller skips
        it rather than risk dating it one step off (a whole step of energy, 40 J at 400 W).
        """
        value, t0, t1 = self._timed_read()
        period, step_t = self.period_s, self._step_t
        if (
            period is not None
            and step_t is not None
            and t1 - self._locked_at < self._relock_after_s
        ):
            n = math.floor((t0 - step_t) / period)
            before = step_t + n * period  # the last predicted step before the read began
            clean = t0 - before > self.margin_s and t1 < before + period - self.margin_s
            if clean:
                self._ambiguous = 0
                if value != self._last_value:
                    self._last_value, self._last_dated = value, before
                    return value, before
                if self._last_dated is not None and abs(self._last_dated - before) < 0.5 * period:
                    return value, before  # the same step read again
                # no step where one was predicted: the phase is off, measure it again
            else:
                self._ambiguous += 1
                if self._ambiguous < 3:
                    return None
        return self._lock(value, t0, t1)

    def _poll_step(self, value: float, t0: float) -> tuple[float, float, float] | None:
        """Read until the value changes; (new value, step time, end of that read) or None.

        ``t0``: when the read that saw ``value`` began. A step is accepted only between two
        back-to-back reads (the second began as soon as the first could end); a step seen
        across a long wait (the GIL, a busy driver) is skipped for the next one, and
        :attr:`_stepped_unseen` says that happened.
        """
        deadline = t0 + self.poll_budget_s
        previous_start = t0
        self._stepped_unseen = False
        while True:
            new, start, end = self._timed_read()
            if new != value:
                gap_s = self.poll_gap_s
                if gap_s is None:
                    gap_s = self._fastest_read_s + self.margin_s
                if start - previous_start <= gap_s:
                    # back-to-back reads: the step lies between the two values' instants,
                    # each about half a (fastest) read into its call
                    return new, 0.5 * (previous_start + start) + 0.5 * self._fastest_read_s, end
                value = new  # a step seen across a long wait: wait for the next one
                self._stepped_unseen = True
            if end > deadline:
                return None
            previous_start = start

    def _lock(self, value: float, t0: float, t1: float) -> tuple[float, float] | None:
        self.locks += 1
        self._ambiguous = 0
        if self.period_s is None:
            # learn how long an undisturbed read takes before judging windows by it
            for _ in range(3):
                value, t0, t1 = self._timed_read()
        first = self._poll_step(value, t0)
        if first is None:
            if self.period_s is not None or self._stepped_unseen:
                # a known stepping counter whose step hid behind long waits this time: keep
                # the phase, skip this value, and try again at the next read
                self._locked_at = max(self._locked_at, t1 - self._relock_after_s + 1.0)
                return None
            # not stepping within the budget: date at the read
            self._last_value, self._last_dated = value, None
            return value, 0.5 * (t0 + t1)
        v1, step1, end1 = first
        previous_step, period = self._step_t, self.period_s
        anchor_value, anchor_t = v1, step1
        if period is None or previous_step is None:
            second = self._poll_step(v1, end1 - self._read_s)
            if second is None or self._stepped_unseen:
                # one step seen (or the next one hidden, so the gap may hold two periods): v1
                # is datable, the period is not known yet
                self._locked_at = -math.inf
                self._last_value, self._last_dated = v1, step1
                return v1, step1
            anchor_value, anchor_t, _ = second
            self.period_s = anchor_t - step1
            if self.period_s < 3 * max(self._fastest_read_s, 1e-4):
                # it changes with (almost) every read: a continuous counter, fresh at the read
                self.period_s = None
                self._last_value, self._last_dated = anchor_value, None
                return anchor_value, anchor_t
            self._origin_t = step1
            # a period from two neighbouring steps is uncertain by a few percent: re-measure
            # it over a longer baseline before the prediction can drift by a read
            self._relock_after_s = min(self.relock_s, 2 * self.period_s)
        else:
            # Count the steps since the first one seen. The count is unambiguous while the
            # period's error over the baseline stays under half a step, so the baseline (and
            # with it the time between locks) grows by a safe factor at each lock.
            origin = self._origin_t if self._origin_t is not None else previous_step
            steps = round((step1 - origin) / period)
            if steps >= 1:
                estimate = (step1 - origin) / steps
                if abs(estimate - period) < 0.1 * period:
                    self.period_s = estimate
                    self._relock_after_s = min(self.relock_s, 0.75 * (step1 - origin))
        self._step_t = anchor_t
        self._locked_at = anchor_t
        self._last_value, self._last_dated = anchor_value, anchor_t
        return anchor_value, anchor_t
