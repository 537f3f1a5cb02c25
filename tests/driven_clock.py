"""A clock that moves only when told to, for the meter and its sensors (no test sleeps)."""

from __future__ import annotations

import threading

from carbon_callbacks.core.meter import Clock, Meter


class DrivenClock(Clock):
    """Monotonic seconds from 1000; waits and sleeps move the clock instead of waiting."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return 1.7e9 + self.t

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        self.t += max(0.0, timeout_s)
        return event.is_set()

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


def run_to(meter: Meter, clock: DrivenClock, t: float) -> None:
    """Do the meter's reads that fall due until ``t`` (as its thread would), then move to ``t``.

    The meter must be built with ``background=False``.
    """
    while (due := meter.tick()) <= t:
        clock.t = max(clock.t, due)
    clock.t = t
