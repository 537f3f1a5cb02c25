"""What the run's predictor keeps of the epochs it has seen (:mod:`carbon_callbacks.core.predict`).

:class:`_Carried` takes epochs in as they come (from a growing history or a sliding window) and
keeps, for the forecast: running sums of what was measured, each epoch's base cost (the epoch
less its named phases) as a :class:`~carbon_callbacks.core.local_level._Series`, the steps per
epoch, each phase's runs and the epochs it ran in (:class:`_Phase`), and the steady epochs split
from detected periodic ones (:class:`_Split`). About 24 B per epoch, beyond the capped sorted
copies its series keep.
"""

from __future__ import annotations

import math
from array import array
from bisect import insort
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from carbon_callbacks.core.local_level import _ExactSum, _median_of_sorted, _Series

if TYPE_CHECKING:
    from carbon_callbacks.core.predict import EpochSample


def _median_of_counts(counts: dict[float, int]) -> float:
    """``statistics.median`` of values given as {value: how many times} (not empty)."""
    n = sum(counts.values())
    below: float | None = None
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if n % 2 == 1 and seen > n // 2:
            return value
        if n % 2 == 0:
            if below is None and seen >= n // 2:
                below = value
            if seen > n // 2:
                return (below + value) / 2  # type: ignore[operator]
    raise AssertionError("unreachable")


def _count_in(r: range, period: int, offset: int) -> int:
    """How many ``i`` in ``r`` (step 1) have ``i % period == offset``."""
    if r.stop <= r.start:
        return 0
    return (r.stop - 1 - offset) // period - (r.start - 1 - offset) // period


def _smallest_divisor_above(m: int, gap: int) -> int | None:
    """The smallest divisor of ``m`` (>= 1) greater than ``gap``, or None."""
    best = None
    d = 1
    while d * d <= m:
        if m % d == 0:
            for p in (d, m // d):
                if p > gap and (best is None or p < best):
                    best = p
        d += 1
    return best


# -- what the predictor keeps of a run -----------------------------------------------------------
class _Phase:
    """One phase's runs so far: their costs, and the epochs it ran in (first, last, how many,
    gcd of the gaps) with its per-epoch counts (sorted)."""

    __slots__ = ("durations", "energies", "runs", "first", "last", "epochs", "gcd", "counts")

    def __init__(self) -> None:
        self.durations = _Series()
        self.energies = _Series()
        self.runs = 0
        self.first = self.last = -1
        self.epochs = 0
        self.gcd = 0
        self.counts: list[int] = []

    def add(self, position: int, durations: list[float], energies: list[float]) -> None:
        """Add its runs in the epoch at ``position``."""
        self.durations.values.extend(durations)
        self.energies.values.extend(energies)
        self.runs += len(durations)
        insort(self.counts, len(durations))
        if self.epochs:
            self.gcd = math.gcd(self.gcd, position - self.last)
        else:
            self.first = position
        self.last = position
        self.epochs += 1

    def per_epoch(self) -> float:
        """Its runs per epoch it ran in (median)."""
        return float(_median_of_sorted(self.counts))

    def schedule(self, observed: range, remaining: range) -> tuple[float, str] | None:
        """Its runs still to come in ``remaining`` epochs, and how, from the epochs it ran in.

        Every epoch; every p-th epoch with an offset (Lightning's ``check_val_every_n_epoch=k``
        and Keras' ``validation_freq=k`` run at epochs where ``(epoch + 1) % k == 0``: one
        sighting at epoch j gives the smallest such p that explains not seeing it elsewhere);
        once at the start only; else a plain rate (runs per epoch observed).
        """
        if not self.runs:
            return None
        per_epoch = self.per_epoch()
        if self.epochs == len(observed):
            return per_epoch * len(remaining), "every epoch"
        j = observed.start + self.first
        period: int | None = self.gcd
        if self.epochs == 1:
            if j == 0:
                return 0.0, "once, at the start"
            gap = max(j - observed.start, observed.stop - 1 - j)
            period = _smallest_divisor_above(j + 1, gap)
        # the epochs it ran in all share j's remainder: they are the expected ones when there
        # are as many as the epochs observed with that remainder
        if period and period >= 2 and _count_in(observed, period, j % period) == self.epochs:
            return _count_in(remaining, period, j % period) * per_epoch, f"every {period} epochs"
        rate = self.runs / len(observed)
        return rate * len(remaining), f"irregular, {rate:.2g} per epoch"


class _Split:
    """The steady epochs apart from periodic ones (every ``period``-th, epoch index
    ``% period == offset``): the others' base series, and the periodic ones' raw base costs."""

    def __init__(self, start: int, period: int, offset: int) -> None:
        self.key = (start, period, offset)
        positions = array("q")
        self.rest = (_Series(positions=positions), _Series(positions=positions))
        self.periodic = (array("d"), array("d"))
        self.done = start

    def extend(self, kept: _Carried) -> None:
        start, period, offset = self.key
        rest_s, rest_kwh = self.rest
        for position in range(self.done, kept.n):
            s, k = kept.base_s.values[position], kept.base_kwh.values[position]
            if (kept.origin + position) % period == offset:
                self.periodic[0].append(s)
                self.periodic[1].append(k)
            else:
                rest_s.positions.append(position)  # type: ignore[union-attr]
                rest_s.values.append(s)
                rest_kwh.values.append(k)
        self.done = kept.n


class _Carried:
    """What :class:`RunPredictor` keeps of a run: everything a prediction reads, from the epoch
    ``origin`` (the first the predictor saw) on, each kept up to date as epochs are added."""

    def __init__(self, origin: int) -> None:
        self.origin = origin
        self.n = 0
        self.first: EpochSample | None = None
        self.last: EpochSample | None = None
        self.done = (_ExactSum(), _ExactSum(), _ExactSum())  # s, kWh, g of every epoch seen
        self.dropped = (_ExactSum(), _ExactSum(), _ExactSum())  # of those out of the window
        self.n_dropped = 0
        self.window: deque[tuple[float, float, float]] = deque()  # the epochs not dropped
        self.base_s = _Series()
        self.base_kwh = _Series()
        self.steps = array("d")  # e.steps or 0, per epoch
        self.steps_sum = 0
        self.step_counts: dict[float, int] = {}  # epochs per number of steps (where known)
        # the per-step series (epochs with steps only), made when a prediction first needs them
        self._per_step: tuple[array[int], _Series, _Series] | None = None
        self.phases: dict[str, _Phase] = {}
        self.split: _Split | None = None
        # the last judgement of periodic work: ((warm-up epochs, steady epochs), its answer)
        self.detected: tuple[tuple[int, int], tuple[int, int] | None] | None = None

    @classmethod
    def of(cls, history: Sequence[EpochSample], first_epoch_index: int) -> _Carried:
        kept = cls(first_epoch_index)
        kept.add_from(history, 0)
        return kept

    def follow(self, history: Sequence[EpochSample], first_epoch_index: int) -> bool:
        """Take in ``history`` (its first epoch being ``first_epoch_index``) when it continues
        the epochs kept: it holds the last one kept (and the first, while in the window) at
        their places, and has only dropped epochs at its start (a bounded window) and added some
        at its end. False otherwise."""
        j = self.origin + self.n - 1 - first_epoch_index  # the last epoch kept, in history
        drop = first_epoch_index - self.origin - self.n_dropped
        if not (0 <= j < len(history)) or drop < 0 or drop > len(self.window):
            return False
        if history[j] is not self.last:
            return False
        if first_epoch_index == self.origin and history[0] is not self.first:
            return False
        for _ in range(drop):
            for total, x in zip(self.dropped, self.window.popleft(), strict=True):
                total.add(x)
        self.n_dropped += drop
        self.add_from(history, j + 1)
        return True

    def add_from(self, history: Sequence[EpochSample], first: int) -> None:
        for position in range(first, len(history)):
            self._add(history[position])

    def measured(self) -> tuple[float, float, float]:
        """Seconds, kWh and g of the epochs in the window (the history last given)."""
        s, kwh, g = (
            total.value(minus) for total, minus in zip(self.done, self.dropped, strict=True)
        )
        return s, kwh, g

    def per_step(self) -> tuple[array[int], _Series, _Series]:
        """The positions of the epochs with steps, and their base duration and energy per step
        (made on first use, then kept up to date)."""
        if self._per_step is None:
            positions = array("q")
            self._per_step = (positions, _Series(), _Series())
            self._per_step[1].positions = self._per_step[2].positions = positions
            for position, steps in enumerate(self.steps):
                if steps:
                    s, k = self.base_s.values[position], self.base_kwh.values[position]
                    self._add_per_step(position, s, k, steps)
        return self._per_step

    def split_for(self, start: int, period: int, offset: int) -> _Split:
        """The steady epochs split into periodic ones and the rest (kept while the same)."""
        if self.split is None or self.split.key != (start, period, offset):
            self.split = _Split(start, period, offset)
        self.split.extend(self)
        return self.split

    def _add_per_step(self, position: int, s: float, k: float, steps: float) -> None:
        positions, per_step_s, per_step_kwh = self._per_step  # type: ignore[misc]
        positions.append(position)
        per_step_s.values.append(s / steps)
        per_step_kwh.values.append(k / steps)

    def _add(self, e: EpochSample) -> None:
        position = self.n
        costs = (e.duration_s, e.energy_kwh, e.co2_g)
        for total, x in zip(self.done, costs, strict=True):
            total.add(x)
        self.window.append(costs)
        s = max(0.0, e.duration_s - math.fsum(p.duration_s for p in e.phases))
        k = max(0.0, e.energy_kwh - math.fsum(p.energy_kwh for p in e.phases))
        self.base_s.values.append(s)
        self.base_kwh.values.append(k)
        steps = e.steps or 0
        self.steps.append(steps)
        self.steps_sum += steps
        if steps:
            self.step_counts[steps] = self.step_counts.get(steps, 0) + 1
            if self._per_step is not None:
                self._add_per_step(position, s, k, steps)
        runs: dict[str, tuple[list[float], list[float]]] = {}
        for p in e.phases:
            durations, energies = runs.setdefault(p.name, ([], []))
            durations.append(p.duration_s)
            energies.append(p.energy_kwh)
        for name, (durations, energies) in runs.items():
            self.phases.setdefault(name, _Phase()).add(position, durations, energies)
        self.n = position + 1
        self.last = e
        if not position:
            self.first = e
