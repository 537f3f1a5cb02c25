"""The predictions of :func:`~carbon_callbacks.core.predict.predict_run`, carried forward from
one epoch to the next: :class:`RunPredictor`.

``predict_run`` rebuilds a prediction from the whole history: the parts' series, their medians
and robust deviations, the phases' schedules, and the local-level filter over every value for
each drift ratio of the grid. Made after every epoch, that costs O(epochs so far) per epoch
(0.7-0.9 ms at 100 epochs, 6 ms at 1,000, 25 ms at 4,096 on a 2-core CPU).
:class:`RunPredictor` keeps what those steps derive from the history and adds each new epoch to
it (about 0.2-0.3 ms per prediction however long the history, and 160 B per epoch kept):

* sums (measured totals, the means the noise prior is scaled by) as exact partial sums
  (``math.fsum`` of them is ``math.fsum`` of the values: both are the correctly rounded sum);
* medians and median absolute deviations from sorted copies of the suffixes asked for (the
  deviations' median by selection in the two sorted runs either side of the median);
* the filter's state per drift ratio and per suffix filtered (and per warm-up head for the
  warm-up design), advanced over the new values by the very functions ``predict_run``'s filter
  is made of (:func:`~carbon_callbacks.core.predict._level_scan`,
  :func:`~carbon_callbacks.core.predict._augmented_scan`): the same operations in the same
  order;
* each phase's occurrences, their per-epoch counts and the gcd of the gaps between the epochs
  it ran in, from which its schedule follows by counting (``_schedule``'s answers).

Every number is therefore the one ``predict_run`` gives, to the bit (``tests/
test_predict_incremental.py`` compares the two at every epoch of long randomised histories).
What is kept depends on the history only; the settings (epochs, steps, intensity) are applied
afresh at each call, and a change of ``total_epochs``, ``total_steps`` or
``first_epoch_index`` starts again from scratch anyway.

A history is taken as continued when it is at least as long as the last one, and its first
sample and the last sample seen are still the same objects at the same places (samples are
frozen); anything else (a bounded history dropping its oldest epochs, another run) is answered
by ``predict_run`` and followed from scratch once it grows again. The history must therefore
only grow at its end between calls, as the tracker's does. ``predict_run`` also answers the few
cases this does not follow: a single epoch (it costs nothing), periodic work detected from the
epoch costs alone (no phase records: every periodic epoch's excess depends on the mean of the
others), step-based runs whose steady epochs report no steps, non-finite or non-integer inputs.
Past a full bounded history (the tracker keeps 4,096 epochs) every prediction is
``predict_run``'s again: the filter would have to start at another epoch each time.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_left, insort
from collections.abc import Callable, Sequence
from typing import Any

from carbon_callbacks.core.predict import (
    _LEAVE_ONE_OUT_MAX,
    _LEVEL_START,
    DRIFT_PRIOR_Q,
    DRIFT_Q_GRID,
    MAX_EXTRA_WARMUP,
    OUTLIER_MADS,
    OUTLIER_MIN_REL,
    WARMUP_DECAY_GRID,
    WARMUP_DECAY_MAX,
    WARMUP_FIT_MAX_VALUES,
    WARMUP_NEGLIGIBLE_REL,
    EpochSample,
    PhasePlan,
    Prediction,
    _add_unseen_plan,
    _assembled,
    _augmented_scan,
    _AugmentedState,
    _chosen,
    _decay_future,
    _designs_from,
    _detect_periodic,
    _Filtered,
    _Forecast,
    _left,
    _level_filtered,
    _level_scan,
    _per_step_phase,
    _schedule,
    _steps_left,
    _unseen_plans,
    _warmup_note,
    predict_run,
)

#: Suffixes (and warm-up heads) per series whose derived state is kept; the oldest used goes.
_KEPT_PER_SERIES = 6


# -- exact sums, medians and deviations ----------------------------------------------------------
def _add_exact(partials: list[float], x: float) -> None:
    """Add ``x`` to ``partials``, non-overlapping floats whose exact sum is the sum so far
    (Shewchuk's algorithm, as in ``math.fsum``)."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]


def _median_of_sorted(a: Sequence[Any]) -> Any:
    """``statistics.median`` of sorted ``a`` (not empty)."""
    n = len(a)
    if n % 2 == 1:
        return a[n // 2]
    i = n // 2
    return (a[i - 1] + a[i]) / 2


def _kth_deviation(a: Sequence[float], med: float, split: int, k: int) -> float:
    """The ``k``-th smallest (from 0) of ``abs(v - med)`` over sorted ``a``, where ``a[:split]``
    are below ``med``: the deviations below it grow leftwards from ``split``, those above it
    rightwards (rounding keeps both runs sorted), so the k-th of their merge is found by
    bisection on how many come from the left run."""
    n_left, n_right = split, len(a) - split

    def left(j: int) -> float:
        return abs(a[split - 1 - j] - med)

    def right(j: int) -> float:
        return abs(a[split + j] - med)

    lo, hi = max(0, k + 1 - n_right), min(k + 1, n_left)
    while lo < hi:  # the fewest taken from the left whose next is not below the right's last
        i = (lo + hi) // 2
        if left(i) < right(k - i):
            lo = i + 1
        else:
            hi = i
    i = lo
    last = [left(i - 1)] if i else []
    if k - i >= 0:
        last.append(right(k - i))
    return max(last)


def _median_and_limit_sorted(a: Sequence[float]) -> tuple[float, float]:
    """``predict._median_and_limit`` of sorted ``a``, by selection (no pass over ``a``)."""
    med = _median_of_sorted(a)
    n = len(a)
    split = bisect_left(a, med)
    if n % 2 == 1:
        mad_median = _kth_deviation(a, med, split, n // 2)
    else:
        i = n // 2
        mad_median = (_kth_deviation(a, med, split, i - 1) + _kth_deviation(a, med, split, i)) / 2
    mad = 1.4826 * mad_median
    return med, max(OUTLIER_MADS * mad, OUTLIER_MIN_REL * abs(med))


def _first_true(lo: int, hi: int, test: Callable[[int], bool]) -> int:
    """The smallest ``i`` in ``[lo, hi)`` with ``test(i)`` (monotone: false, then true), else
    ``hi``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if test(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


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


class _Recent(dict):  # type: ignore[type-arg]
    """A dict that keeps the :data:`_KEPT_PER_SERIES` entries used last."""

    def use(self, key: Any, make: Callable[[], Any]) -> Any:
        """The entry for ``key`` (made if missing), marked as used last."""
        entry = self.pop(key, None)
        if entry is None:
            entry = make()
            while len(self) >= _KEPT_PER_SERIES:
                del self[next(iter(self))]
        self[key] = entry
        return entry


# -- a series and what is read of its suffixes --------------------------------------------------
class _Series:
    """An append-only series of floats, with what predictions read of its suffixes
    ``values[k:]`` (exact sum, sorted copy, filter states), each brought up to date when read.

    ``positions``: the history position of each value when they are not ``0, 1, 2...`` (the
    per-step series leaves out epochs without steps); the warm-up's ages are counted from them.
    """

    __slots__ = ("values", "positions", "_sums", "_sorted", "_level", "_augmented", "_where")

    def __init__(self, positions: list[int] | None = None) -> None:
        self.values: list[float] = []
        self.positions = positions
        self._sums = _Recent()
        self._sorted = _Recent()
        self._level = _Recent()
        self._augmented = _Recent()
        self._where: list[Any] | None = None  # [value -> positions, values indexed so far]

    def __len__(self) -> int:
        return len(self.values)

    def position(self, j: int) -> int:
        """History position of value ``j``."""
        return j if self.positions is None else self.positions[j]

    def fsum_from(self, k: int) -> float:
        """``math.fsum(values[k:])``."""
        entry = self._sums.use(k, lambda: [[], k])
        partials, done = entry
        for x in self.values[done:]:
            _add_exact(partials, x)
        entry[1] = len(self.values)
        return math.fsum(partials)

    def sorted_from(self, k: int) -> list[float]:
        """``sorted(values[k:])``."""
        values = self.values
        entry = self._sorted.use(k, lambda: [sorted(values[k:]), len(values)])
        a, done = entry
        for x in values[done:]:
            insort(a, x)
        entry[1] = len(values)
        return a

    def stands_out(self, value: float, k: int) -> bool:
        """``predict._stands_out(value, values[k:])``."""
        med, limit = _median_and_limit_sorted(self.sorted_from(k))
        return abs(value - med) > limit

    def positions_of(self, value: float) -> list[int]:
        """The indices ``j`` with ``values[j] == value`` (oldest first)."""
        if self._where is None:
            self._where = [{}, 0]
        where, done = self._where
        for j in range(done, len(self.values)):
            where.setdefault(self.values[j], []).append(j)
        self._where[1] = len(self.values)
        return where.get(value, [])

    def level_filtered(self, k: int) -> list[_Filtered]:
        """``_local_level_filter(values[k:], q)`` for each ``q`` of the grid."""
        entry = self._level.use(k, lambda: [[_LEVEL_START] * len(DRIFT_Q_GRID), k])
        states, done = entry
        new = self.values[done:]
        if new:
            entry[0] = states = [
                _level_scan(new, q, state) for q, state in zip(DRIFT_Q_GRID, states, strict=True)
            ]
            entry[1] = len(self.values)
        return [_level_filtered(state) for state in states]

    def forget_warmup_fits(self) -> None:
        """Let go of the filter states kept for :meth:`augmented_filtered`."""
        self._augmented.clear()

    def augmented_filtered(self, k: int, head: float, head_position: int) -> list[_Filtered]:
        """``_local_level_filter([head, *values[k:]], q, columns)`` for each ``q``, the columns
        being the warm-up decay's (``_decay_column``) at the ages from ``head_position``."""
        key = (k, head_position, head, math.copysign(1.0, head))
        n_columns = len(WARMUP_DECAY_GRID)

        def begin() -> list[Any]:
            states = [_AugmentedState.begin(n_columns) for _ in DRIFT_Q_GRID]
            first = (head, [ratio**0 / (1.0 - ratio) for ratio in WARMUP_DECAY_GRID])
            for q, state in zip(DRIFT_Q_GRID, states, strict=True):
                _augmented_scan(state, [first], q)
            return [states, k]

        entry = self._augmented.use(key, begin)
        states, done = entry
        if done < len(self.values):
            rows = []
            for j in range(done, len(self.values)):
                age = self.position(j) - head_position
                rows.append(
                    (self.values[j], [ratio**age / (1.0 - ratio) for ratio in WARMUP_DECAY_GRID])
                )
            for q, state in zip(DRIFT_Q_GRID, states, strict=True):
                _augmented_scan(state, rows, q)
            entry[1] = len(self.values)
        return [state.filtered() for state in states]


def _steady_start(series: Sequence[_Series]) -> int:
    """``predict._steady_start`` of the series (all of the same length)."""
    n = len(series[0])
    if n < 2:
        return 0
    start = 1
    while start <= MAX_EXTRA_WARMUP and n - start - 1 >= 3:
        if any(s.stands_out(s.values[start], start + 1) for s in series):
            start += 1
        else:
            break
    return start


def _forecast(
    series: _Series,
    k: int,
    count: float,
    *,
    units_per_value: float,
    drift_prior_q: float,
    head: float | None,
    head_position: int,
    next_age: int,
) -> _Forecast:
    """``predict._forecast(values[k:], ...)``; ``head``: the warm-up's head when it stands out
    (``None``: no warm-up), its ages counted from ``head_position``."""
    if count <= 0:
        return _Forecast(0.0, 0.0, 0.0)
    r = count / units_per_value
    n = len(series) - k
    scale = abs(series.fsum_from(k) / n)
    if n > WARMUP_FIT_MAX_VALUES:
        series.forget_warmup_fits()  # too many values for a fit from now on
    if head is not None and n > WARMUP_FIT_MAX_VALUES:
        # the values kept are those of an age the slowest decay leaves negligible: the ages grow,
        # so they are a suffix, found by bisection
        med = _median_of_sorted(series.sorted_from(k))
        excess = abs(head - med) / (1.0 - WARMUP_DECAY_MAX)
        negligible = WARMUP_NEGLIGIBLE_REL * abs(med)

        def faded(j: int) -> bool:
            age = series.position(k + j) - head_position
            return excess * WARMUP_DECAY_MAX**age <= negligible

        dropped = _first_true(0, n, faded)
        if n - dropped >= 2:
            k, n = k + dropped, n - dropped
        head = None
    if head is None:
        designs = _designs_from(series.level_filtered(k), n, r, drift_prior_q, scale)
        return _chosen(designs, [None], units_per_value)
    designs = _designs_from(
        series.augmented_filtered(k, head, head_position),
        n + 1,
        r,
        drift_prior_q,
        scale,
        len(WARMUP_DECAY_GRID),
        [_decay_future(ratio, next_age, r) for ratio in WARMUP_DECAY_GRID],
    )
    return _chosen(designs, list(WARMUP_DECAY_GRID), units_per_value)


# -- what is kept of a history -------------------------------------------------------------------
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
        """Add its runs in the epoch at history ``position``."""
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

    def schedule(self, observed: range, remaining: range) -> tuple[float, str] | None:
        """``predict._schedule`` of its epochs, by counting."""
        if not self.runs:
            return None
        per_epoch = _median_of_sorted(self.counts)
        if self.epochs == len(observed):
            return per_epoch * len(remaining), "every epoch"
        j = observed.start + self.first
        if self.epochs == 1:
            if j == 0:
                return 0.0, "once, at the start"
            gap = max(j - observed.start, observed.stop - 1 - j)
            found = _smallest_divisor_above(j + 1, gap)
            if found is None:  # no period explains one sighting: predict._schedule's rate
                return _schedule([j] * self.runs, observed, remaining)
            period = found
        else:
            period = self.gcd
        offset = j % period
        # the epochs it ran in all share j's remainder: they are the expected ones when there
        # are as many as the epochs observed with that remainder
        if period >= 2 and _count_in(observed, period, offset) == self.epochs:
            count = _count_in(remaining, period, offset) * per_epoch
            return count, f"every {period} epochs"
        rate = self.runs / len(observed)
        return rate * len(remaining), f"irregular, {rate:.2g} per epoch"


class _Carried:
    """What :class:`RunPredictor` keeps of one history."""

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.n = 0
        self.first: EpochSample | None = None
        self.last: EpochSample | None = None
        self.exact = True  # False: an input this does not follow (predict_run answers)
        self.done: tuple[list[float], list[float], list[float]] = ([], [], [])
        self.base_s = _Series()
        self.base_kwh = _Series()
        self.steps: list[int] = []  # e.steps or 0, per epoch
        self.steps_sum = 0
        self.steps_sorted: list[int] = []  # the epochs' steps where known (not 0)
        # the per-step series (epochs with steps only), made when a prediction first needs them
        self._per_step: tuple[list[int], _Series, _Series] | None = None
        self.phases: dict[str, _Phase] = {}

    def continued_by(self, history: Sequence[EpochSample]) -> bool:
        """True when ``history`` is the one kept, grown at its end (or as it was)."""
        n = self.n
        return len(history) >= n and (
            n == 0 or (history[0] is self.first and history[n - 1] is self.last)
        )

    def extend(self, history: Sequence[EpochSample]) -> None:
        """Add the samples of ``history`` past those kept."""
        for position in range(self.n, len(history)):
            self._add(position, history[position])
            self.n = position + 1
            self.last = history[position]
            if position == 0:
                self.first = self.last

    def per_step(self) -> tuple[list[int], _Series, _Series]:
        """The positions of the epochs with steps, and their base duration and energy per step
        (made from the history kept on first use, then kept up to date)."""
        if self._per_step is None:
            positions: list[int] = []
            self._per_step = (positions, _Series(positions), _Series(positions))
            for position, steps in enumerate(self.steps):
                if steps:
                    s, k = self.base_s.values[position], self.base_kwh.values[position]
                    self._add_per_step(position, s, k, steps)
        return self._per_step

    def _add_per_step(self, position: int, s: float, k: float, steps: int) -> None:
        positions, per_step_s, per_step_kwh = self._per_step  # type: ignore[misc]
        positions.append(position)
        per_step_s.values.append(s / steps)
        per_step_kwh.values.append(k / steps)

    def _add(self, position: int, e: EpochSample) -> None:
        finite = math.isfinite
        for partials, x in zip(self.done, (e.duration_s, e.energy_kwh, e.co2_g), strict=True):
            _add_exact(partials, x)
        s = max(0.0, e.duration_s - math.fsum(p.duration_s for p in e.phases))
        k = max(0.0, e.energy_kwh - math.fsum(p.energy_kwh for p in e.phases))
        self.base_s.values.append(s)
        self.base_kwh.values.append(k)
        if not (finite(e.duration_s) and finite(e.energy_kwh) and finite(e.co2_g)):
            self.exact = False
        steps = e.steps
        if steps is not None and not isinstance(steps, numbers.Integral):
            self.exact = False  # sums of other numbers may be rounded otherwise
        self.steps.append(steps or 0)
        self.steps_sum += steps or 0
        if steps:
            insort(self.steps_sorted, steps)
            if self._per_step is not None:
                self._add_per_step(position, s, k, steps)
        if e.phases:
            runs: dict[str, tuple[list[float], list[float]]] = {}
            for p in e.phases:
                if not (finite(p.duration_s) and finite(p.energy_kwh)):
                    self.exact = False
                durations, energies = runs.setdefault(p.name, ([], []))
                durations.append(p.duration_s)
                energies.append(p.energy_kwh)
            for name, (durations, energies) in runs.items():
                self.phases.setdefault(name, _Phase()).add(position, durations, energies)


#: ``_predict``'s answer when ``predict_run`` has to answer.
_FULL = object()


#: A part of the remaining work: name, durations, energies, first value used, count, how,
#: units per value, epochs per value, warm-up head, and the (fewer, more) runs the count may be
#: over or under by (:func:`carbon_callbacks.core.predict._per_step_phase`).
_PartTuple = tuple[str, _Series, _Series, int, float, str, float, float, Any, tuple[float, float]]


def _phase_part(
    name: str,
    phase: _Phase,
    count: float,
    how: str,
    epochs_seen: int,
    spread: tuple[float, float] = (0.0, 0.0),
) -> _PartTuple:
    """A phase's part: its runs' values, ``count`` runs to come, each standing for one value."""
    return (
        name,
        phase.durations,
        phase.energies,
        0,
        count,
        how,
        1.0,
        epochs_seen / phase.runs,
        None,
        spread,
    )


def _periodic_found(kept: _Carried, start: int, observed: range) -> bool:
    """Whether ``predict._detect_periodic`` finds periodic epochs among the steady ones."""
    s_vals, k_vals = kept.base_s, kept.base_kwh
    n = len(k_vals) - start
    if n < 4:
        return False
    if n <= _LEAVE_ONE_OUT_MAX:
        idx = list(range(observed.start + start, observed.stop))
        return _detect_periodic(s_vals.values[start:], k_vals.values[start:], idx) is not None
    a = k_vals.sorted_from(start)
    med, limit = _median_and_limit_sorted(a)  # the same median as statistics.median
    # the flagged values are those at least a[first], the smallest that stands out upwards
    first = _first_true(0, len(a), lambda j: a[j] - med > limit)
    count = len(a) - first
    if count < 2 or count > n // 2:
        return False
    positions: list[int] = []
    for j in range(first, len(a)):
        if j == first or a[j] != a[j - 1]:
            positions += [p for p in k_vals.positions_of(a[j]) if p >= start]
    flagged = sorted(observed.start + p for p in positions)
    period = math.gcd(*[b - a_ for a_, b in zip(flagged, flagged[1:], strict=False)])
    if period < 2:
        return False
    steady = range(observed.start + start, observed.stop)
    return _count_in(steady, period, flagged[0] % period) == len(flagged)


def _predict(
    kept: _Carried,
    *,
    total_epochs: int | None,
    intensity_g_per_kwh: float,
    total_steps: int | None,
    steps_done: int | None,
    first_epoch_index: int,
    plans: Sequence[PhasePlan] = (),
) -> Any:
    """``predict_run`` from what is kept (see it for the model), or :data:`_FULL`."""
    n = kept.n
    if n < 2 or not kept.exact:
        return _FULL
    done_s, done_kwh, done_g = (math.fsum(partials) for partials in kept.done)
    observed = range(first_epoch_index, first_epoch_index + n)

    # -- how much is left: epochs, or steps when those end the run first
    steps_per_epoch = _median_of_sorted(kept.steps_sorted) if kept.steps_sorted else None
    left_epochs, left_steps, by_steps = _left(
        total_epochs, total_steps, steps_done, first_epoch_index + n, steps_per_epoch
    )
    if left_epochs is None and not by_steps:
        return None

    # -- the parts: (name, duration series, energy series, first value used, count, how,
    #    units per value, epochs per value, head (s, kWh) or None)
    start = _steady_start([kept.base_s, kept.base_kwh])  # >= 1: two epochs or more
    head_position = start - 1
    next_age = n - head_position
    phase_names = sorted(kept.phases)
    if not phase_names and not by_steps and _periodic_found(kept, start, observed):
        return _FULL
    notes = [
        "epoch 0 left out as warm-up" if start == 1 else f"epochs 0-{start - 1} left out as warm-up"
    ]
    parts: list[_PartTuple] = []
    if by_steps:
        step_positions, per_step_s, per_step_kwh = kept.per_step()
        first = bisect_left(step_positions, start)
        if first == len(step_positions):
            return _FULL  # steps unknown for the steady epochs: predict_run's fallback
        head_steps = kept.steps[head_position]
        head = (
            (
                kept.base_s.values[head_position] / head_steps,
                kept.base_kwh.values[head_position] / head_steps,
            )
            if head_steps
            else None
        )
        parts.append(
            (
                "base",
                per_step_s,
                per_step_kwh,
                first,
                left_steps or 0.0,
                "per step",
                float(steps_per_epoch),  # type: ignore[arg-type]
                1.0,
                head,
                (0.0, 0.0),
            )
        )
        steps_seen = kept.steps_sum or 1
        step_plans = {p.name: p for p in plans if p.every_steps is not None}
        for name in phase_names:
            phase = kept.phases[name]
            count, how, spread = _per_step_phase(
                step_plans.get(name), phase.runs, n, steps_seen, steps_done, left_steps,
                steps_per_epoch,
            )  # fmt: skip
            parts.append(_phase_part(name, phase, count, how, n, spread))
        remaining_epochs = (left_steps or 0.0) / steps_per_epoch  # type: ignore[operator]
        unseen = _unseen_plans(step_plans.values(), kept.phases, range(0), steps_done, left_steps)
    else:
        head = (kept.base_s.values[head_position], kept.base_kwh.values[head_position])
        parts.append(
            (
                "base",
                kept.base_s,
                kept.base_kwh,
                start,
                float(left_epochs or 0),
                "per epoch",
                1.0,
                1.0,
                head,
                (0.0, 0.0),
            )
        )
        remaining = range(observed.stop, observed.stop + (left_epochs or 0))
        steps_left = _steps_left(left_epochs, steps_per_epoch)
        planned = {plan.name: plan for plan in plans}
        for name in phase_names:
            phase = kept.phases[name]
            plan = planned.get(name)
            sched = None
            if plan is not None and phase.runs:
                sched = plan.schedule(
                    remaining, _median_of_sorted(phase.counts), steps_done, steps_left
                )
            if sched is None:
                sched = phase.schedule(observed, remaining)
            if sched is None:
                continue
            count, how = sched
            parts.append(_phase_part(name, phase, count, how, n))
        remaining_epochs = float(left_epochs or 0)
        unseen = _unseen_plans(plans, kept.phases, remaining, steps_done, steps_left)

    # -- sum the parts, each with its interval
    totals = {"s": [done_s, 0.0, 0.0], "kwh": [done_kwh, 0.0, 0.0]}
    described = []
    base_per_epoch = {"s": 0.0, "kwh": 0.0}  # the base's central forecast per epoch to come
    for part in parts:
        name, durations, energies, first, count, how, units, epochs_per_value, head, spread = part
        values = len(energies) - first
        if count <= 0 or not values:
            if name != "base":
                described.append(f"{name}: {how}, none to come")
            continue
        p_start = 0
        if name != "base" and values >= 2:
            p_start = _steady_start([durations, energies])
        for key, series in (("s", durations), ("kwh", energies)):
            k = first + p_start
            h = head[0 if key == "s" else 1] if head is not None else None
            fc = _forecast(
                series,
                k,
                count,
                units_per_value=units,
                drift_prior_q=DRIFT_PRIOR_Q * epochs_per_value,
                head=h if h is not None and series.stands_out(h, k) else None,
                head_position=head_position,
                next_age=next_age,
            )
            if key == "kwh" and fc.decay_max:
                notes.append(_warmup_note(fc))
            fewer, more = (fc.central / count * k for k in spread)
            totals[key][0] += fc.central
            totals[key][1] += fc.low**2 + fewer**2
            totals[key][2] += fc.high**2 + more**2
            if name == "base":
                base_per_epoch[key] = fc.central / count * units
        if name != "base":
            described.append(f"{name}: {how}, {count:g} to come x level of {values - p_start}")
    for plan, planned_count in unseen:
        described.append(_add_unseen_plan(plan, planned_count, base_per_epoch, totals))
    return _assembled(
        n=n,
        total_epochs=total_epochs,
        by_steps=by_steps,
        first_only=False,
        left_epochs=left_epochs,
        left_steps=left_steps,
        steady=n - start,
        notes=notes + described,
        totals=totals,
        done=(done_s, done_kwh, done_g),
        intensity_g_per_kwh=intensity_g_per_kwh,
        remaining_epochs=remaining_epochs,
    )


class RunPredictor:
    """:func:`~carbon_callbacks.core.predict.predict_run`, carried from one call to the next.

    Call :meth:`predict` after each epoch with the same, growing history: it answers what
    ``predict_run`` answers for it, at a cost that does not grow with the history (see the
    module's docstring for how, and for what it leaves to ``predict_run``).

    Attributes:
        carried: predictions made from the state carried forward.
        recomputed: predictions left to ``predict_run`` (a history not continued, or a case this
            does not follow).
    """

    def __init__(self) -> None:
        self._kept: _Carried | None = None
        self._seen: _Carried | None = None  # a history answered by predict_run (n, ends)
        self.carried = 0
        self.recomputed = 0

    def predict(
        self,
        history: Sequence[EpochSample],
        *,
        total_epochs: int | None,
        intensity_g_per_kwh: float,
        total_steps: int | None = None,
        steps_done: int | None = None,
        first_epoch_index: int = 0,
        plans: Sequence[PhasePlan] = (),
    ) -> Prediction | None:
        """What ``predict_run`` returns for these arguments (see it)."""
        n = len(history)
        if n == 0 or (total_epochs is None and (total_steps is None or steps_done is None)):
            return None
        settings = {
            "total_epochs": total_epochs,
            "intensity_g_per_kwh": intensity_g_per_kwh,
            "total_steps": total_steps,
            "steps_done": steps_done,
            "first_epoch_index": first_epoch_index,
            "plans": plans,
        }
        key = (first_epoch_index, total_epochs, total_steps)
        kept = self._kept
        if kept is None or kept.key != key or not kept.continued_by(history):
            self._kept = None
            seen = self._seen
            if seen is None or seen.key != key or not seen.continued_by(history):
                # another history, or a changed one: predict_run answers, and the next call
                # follows this one from scratch if it only grew since
                self._seen = seen = _Carried(key)
                seen.n, seen.first, seen.last = n, history[0], history[n - 1]
                self.recomputed += 1
                return predict_run(history, **settings)
            self._seen = None
            kept = self._kept = _Carried(key)
        try:
            kept.extend(history)
            pred = _predict(kept, **settings)
        except BaseException:
            self._kept = None  # never keep a state an exception may have left half made
            raise
        if pred is _FULL:
            self.recomputed += 1
            return predict_run(history, **settings)
        self.carried += 1
        return pred  # type: ignore[no-any-return]
