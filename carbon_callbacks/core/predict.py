"""Forecast of a whole run's duration, energy and CO2eq, with an interval, from the epochs so far.

The forecast is *measured so far + a forecast of the rest*, remade after every epoch. The rest
is split into parts that are forecast separately and added up:

* the **base** of each remaining epoch (the epoch minus the named phases measured inside it,
  e.g. ``"validation"``): the level of the steady epochs measured so far (their mean when they
  show no drift; weighted towards the recent ones when they do, see *Interval*);
* each **phase** (validation every k epochs, synthesis every m epochs...): its cost per
  occurrence (its level, likewise) times the occurrences still to come, read from the pattern
  seen so far (every epoch; every p-th epoch with offset o; or a plain rate when irregular).
  Without phase records, epochs that stand out by the same amount at a regular spacing are
  detected as periodic work.

*Warm-up*: the first epoch (CUDA context, compilation, cache filling, cudnn autotuning) is left
out of every per-epoch estimate once a later epoch exists, as are further leading epochs that
still stand out from the rest. When the last epoch left out stands out from the epochs after
it, the warm-up may not be over: its excess may still be decaying geometrically,
``W ratio^age`` with ``ratio`` from 0 (a one-off warm-up) to :data:`WARMUP_DECAY_MAX`. Every
ratio the epochs seen do not rule out (likelihood ratio) keeps its forecast inside the interval;
the central forecast is the best-fitting ratio's (a one-off warm-up while the epochs cannot
tell). With two epochs every ratio fits, so the interval reaches down to a level of
``e1 - (e0 - e1) WARMUP_DECAY_MAX / (1 - WARMUP_DECAY_MAX)``; each later epoch narrows it.
With one epoch only, its cost is all there is, and the interval is a stated range from
recorded runs, wide and lopsided (see :data:`FIRST_EPOCH_LOW`): indicative only.

*Step-based runs* (total steps known, epochs not): the same parts per optimisation step, times
the steps still to come. When both an epoch count and a step count are known, the one that ends
the run first is used.

*Interval* (nominal :data:`NOMINAL_COVERAGE`): each part's values follow a local-level model
(a level that may drift as a random walk, plus noise; :mod:`carbon_callbacks.core.local_level`);
the parts' half-widths add in quadrature. CO2eq bounds are the energy bounds times the intensity
applied to the remainder (the forecast over the predicted span when the intensity source has
one): the intensity's own uncertainty is not in the interval. Changes that nothing before them
announces (another job arriving, a change of the work itself) are outside the model; so are
measurement errors that repeat epoch after epoch.

*Cost*: one :class:`RunPredictor` per run keeps what the forecast reads (running sums, sorted
copies of at most :data:`ROBUST_MAX_VALUES` values, the filter's state per drift ratio, each
phase's schedule as counts) and adds each new epoch to it, so a prediction costs the same after
100 epochs or 100,000. It follows a bounded window of the history (the tracker keeps the last
4,096 epochs) and forecasts from every epoch it has seen. Periodic work without phase records is
looked for in the last :data:`DETECT_WINDOW` steady epochs (past that, every
:data:`DETECT_EVERY` epochs) and forecast from its last :data:`DETECTED_KEPT` runs.

The constants were set from first principles and checked on synthetic runs with known
generating processes (``bench/predict_calibration.py``), not fitted to the recorded traces of
``bench/predict_accuracy.py`` (``docs/benchmarks.md``, "Prediction accuracy").
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from carbon_callbacks.core.local_level import (
    DRIFT_PRIOR_DECADES,
    DRIFT_PRIOR_Q,
    DRIFT_Q_GRID,
    FIRST_EPOCH_HIGH,
    FIRST_EPOCH_LOW,
    NOMINAL_COVERAGE,
    PRIOR_DF,
    PRIOR_REL_SD,
    _first_epoch_interval,
    _Forecast,
    _forecast,
    _median_and_limit,
    _Series,
    _stands_out,
    _steady_start,
)
from carbon_callbacks.core.phase_plan import (
    PLANNED_FORWARD_SHARE,
    PhasePlan,
    _add_unseen_plan,
    _per_step_phase,
    _unseen_plans,
)
from carbon_callbacks.core.predict_state import (
    _Carried,
    _count_in,
    _median_of_counts,
    _Phase,
)

__all__ = [
    "DETECTED_PHASE",
    "PLANNED_FORWARD_SHARE",
    "DRIFT_PRIOR_DECADES",
    "DRIFT_PRIOR_Q",
    "DRIFT_Q_GRID",
    "NOMINAL_COVERAGE",
    "PRIOR_DF",
    "PRIOR_REL_SD",
    "EpochSample",
    "PhasePlan",
    "PhaseSample",
    "Prediction",
    "RunPredictor",
    "predict_run",
]

#: Name given to periodic work detected from epoch costs alone (no phase records).
DETECTED_PHASE = "periodic (detected)"
#: Periodic work is looked for in the last this many steady epochs (each epoch's cost is
#: judged against the others'); once found, every epoch at its period and offset is periodic.
DETECT_WINDOW = 256
#: Past :data:`DETECT_WINDOW` steady epochs, the pattern is judged again every this many epochs.
DETECT_EVERY = 32
#: The detected periodic work is forecast from its last this many runs.
DETECTED_KEPT = 64


@dataclass(frozen=True)
class PhaseSample:
    """A named phase measured inside an epoch (e.g. ``"validation"``).

    Attributes:
        name: the phase's name.
        duration_s: seconds.
        energy_kwh: kWh including PUE.
        co2_g: grams CO2eq.
    """

    name: str
    duration_s: float
    energy_kwh: float
    co2_g: float = 0.0


@dataclass(frozen=True)
class EpochSample:
    """What one measured epoch cost.

    Attributes:
        duration_s: seconds.
        energy_kwh: kWh including PUE.
        co2_g: grams CO2eq.
        steps: optimisation steps in the epoch, when known.
        phases: the named phases measured inside the epoch (their cost is part of the epoch's).
    """

    duration_s: float
    energy_kwh: float
    co2_g: float
    steps: int | None = None
    phases: tuple[PhaseSample, ...] = field(default=())


@dataclass(frozen=True)
class Prediction:
    """A forecast of the whole run, with an interval.

    Attributes:
        after_epochs: epochs measured when it was made.
        epochs: epochs of the whole run it predicts (``None`` for a step-based run).
        duration_s / energy_kwh / co2_g: central forecast of the whole run (s, kWh incl. PUE,
            g CO2eq).
        *_low / *_high: interval bounds (nominal coverage :attr:`coverage`).
        intensity_g_per_kwh: intensity (gCO2eq/kWh) applied to the remaining energy.
        method: how it was made (one line).
        measured_duration_s / measured_energy_kwh / measured_co2_g: the part already measured.
        remaining_epochs: epochs still to come (fractional when derived from steps).
        remaining_steps: optimisation steps still to come, when the run is step-based.
        coverage: nominal coverage of the interval.
    """

    after_epochs: int
    epochs: int | None
    duration_s: float
    energy_kwh: float
    co2_g: float
    duration_s_low: float
    duration_s_high: float
    energy_kwh_low: float
    energy_kwh_high: float
    co2_g_low: float
    co2_g_high: float
    intensity_g_per_kwh: float
    method: str
    measured_duration_s: float = 0.0
    measured_energy_kwh: float = 0.0
    measured_co2_g: float = 0.0
    remaining_epochs: float | None = None
    remaining_steps: float | None = None
    coverage: float = NOMINAL_COVERAGE

    @property
    def remaining_duration_s(self) -> float:
        """Seconds still to run (central forecast)."""
        return max(0.0, self.duration_s - self.measured_duration_s)

    def with_intensity(self, intensity_g_per_kwh: float) -> Prediction:
        """The same forecast with another intensity (gCO2eq/kWh) for the remaining energy."""
        g, done_kwh = self.measured_co2_g, self.measured_energy_kwh
        return replace(
            self,
            intensity_g_per_kwh=intensity_g_per_kwh,
            co2_g=g + (self.energy_kwh - done_kwh) * intensity_g_per_kwh,
            co2_g_low=g + (self.energy_kwh_low - done_kwh) * intensity_g_per_kwh,
            co2_g_high=g + (self.energy_kwh_high - done_kwh) * intensity_g_per_kwh,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


_LEAVE_ONE_OUT_MAX = 64


def _detect_periodic(
    base_s: list[float], base_kwh: list[float], idx: list[int]
) -> tuple[list[int], float] | None:
    """Epochs (among ``idx``) whose energy stands out upwards at a regular spacing, and the
    period; None when there is no such pattern (needs 4+ steady epochs and 2+ sightings)."""
    if len(base_kwh) < 4:
        return None
    median_kwh = statistics.median(base_kwh)
    if len(base_kwh) <= _LEAVE_ONE_OUT_MAX:
        flagged = [
            i
            for k, i in enumerate(idx)
            if base_kwh[k] > median_kwh
            and _stands_out(base_kwh[k], base_kwh[:k] + base_kwh[k + 1 :])
        ]
    else:
        # leaving one value out of this many moves the median and the MAD by one order
        # statistic at most: one pass over the whole series keeps this O(n log n), not O(n^2)
        _, limit = _median_and_limit(base_kwh)
        flagged = [i for k, i in enumerate(idx) if base_kwh[k] - median_kwh > limit]
    if len(flagged) < 2 or len(flagged) > len(idx) // 2:
        return None
    period = math.gcd(*[b - a for a, b in zip(flagged, flagged[1:], strict=False)])
    if period < 2:
        return None
    expected = [i for i in idx if i % period == flagged[0] % period]
    return (flagged, float(period)) if expected == flagged else None


def _left(
    total_epochs: int | None,
    total_steps: int | None,
    steps_done: float | None,
    epochs_done: int,
    steps_per_epoch: float | None,
) -> tuple[int | None, float | None, bool]:
    """How much of the run is left: (epochs, steps, whether the steps end it first).

    ``epochs_done`` counts from epoch 0 (earlier segments of a resumed run included); epochs
    left are None without a planned count, steps left None without a planned step count, a
    count done or a known number of steps per epoch.
    """
    left_epochs = max(0, total_epochs - epochs_done) if total_epochs is not None else None
    left_steps = (
        max(0.0, float(total_steps - steps_done))
        if total_steps is not None and steps_done is not None and steps_per_epoch
        else None
    )
    by_steps = left_steps is not None and (
        left_epochs is None or left_steps < left_epochs * steps_per_epoch  # type: ignore[operator]
    )
    return left_epochs, left_steps, by_steps


def _steps_left(left_epochs: int | None, steps_per_epoch: float | None) -> float | None:
    """Steps in the epochs left (for step plans in an epoch-based run), when both are known."""
    if left_epochs is None or not steps_per_epoch:
        return None
    return left_epochs * steps_per_epoch


def _warmup_note(fc: _Forecast) -> str:
    """The method's note on a warm-up that may still be settling (``fc.decay_max`` set)."""
    return (
        "warm-up forecast as over, "
        if not fc.decay
        else f"warm-up forecast as still settling (x{fc.decay:.2g} per epoch), "
    ) + (f"a decay of up to x{fc.decay_max:.2g} per epoch not ruled out: interval widened")


def _assembled(
    *,
    n: int,
    total_epochs: int | None,
    by_steps: bool,
    first_only: bool,
    left_epochs: int | None,
    left_steps: float | None,
    steady: int,
    notes: list[str],
    totals: dict[str, list[float]],
    done: tuple[float, float, float],
    intensity_g_per_kwh: float,
    remaining_epochs: float,
) -> Prediction:
    """The prediction from the parts' summed forecasts (``totals``: measured + central, and the
    squared low and high half-widths, per ``"s"`` and ``"kwh"``), ``steady`` epochs used for
    the base, and the method's ``notes`` (warm-up, then the phases)."""
    done_s, done_kwh, done_g = done
    unit = "step" if by_steps else "epoch"
    left = left_steps if by_steps else left_epochs
    base_from = (
        f"per-{unit} cost of the first epoch only (indicative: the interval assumes the later "
        f"epochs cost {FIRST_EPOCH_LOW:g}-{FIRST_EPOCH_HIGH:g}x the first, a range from "
        "recorded runs; predict after 2+ epochs for an estimate)"
        if first_only
        else f"per-{unit} level of {steady} steady epoch(s) (local-level model)"
    )
    method = (
        f"measured {n} epoch(s) + {left:g} remaining {unit}(s) x {base_from}"
        + "".join(f"; {d}" for d in notes)
        + f"; {round(100 * NOMINAL_COVERAGE)}% interval"
    )
    energy, e_lo, e_hi = totals["kwh"][0], math.sqrt(totals["kwh"][1]), math.sqrt(totals["kwh"][2])
    dur, d_lo, d_hi = totals["s"][0], math.sqrt(totals["s"][1]), math.sqrt(totals["s"][2])
    energy_low = max(done_kwh, energy - e_lo)
    pred = Prediction(
        after_epochs=n,
        epochs=None if by_steps else total_epochs,
        duration_s=dur,
        energy_kwh=energy,
        co2_g=0.0,
        duration_s_low=max(done_s, dur - d_lo),
        duration_s_high=dur + d_hi,
        energy_kwh_low=energy_low,
        energy_kwh_high=energy + e_hi,
        co2_g_low=0.0,
        co2_g_high=0.0,
        intensity_g_per_kwh=intensity_g_per_kwh,
        method=method,
        measured_duration_s=done_s,
        measured_energy_kwh=done_kwh,
        measured_co2_g=done_g,
        remaining_epochs=remaining_epochs,
        remaining_steps=left_steps if by_steps else None,
    )
    return pred.with_intensity(intensity_g_per_kwh)


# -- the parts of the remaining work -------------------------------------------------------------
@dataclass
class _Part:
    """One part of the remaining work: its per-occurrence costs and how often it recurs."""

    name: str
    durations: _Series
    energies: _Series
    first: int  # the first value used
    count: float  # occurrences (epochs, steps or phase runs) still to come
    how: str
    #: occurrences each value stands for (steps per epoch for per-step costs, else 1)
    units_per_value: float = 1.0
    #: epochs between two values (the drift prior is per epoch; a phase every p epochs
    #: drifts p times as much, in variance, from one run to the next)
    epochs_per_value: float = 1.0
    #: the last left-out warm-up epoch's (s, kWh) in the values' units; None for phases
    head: tuple[float, float] | None = None
    #: (fewer, more): runs the count may be over or under by (see :func:`_per_step_phase`)
    spread: tuple[float, float] = (0.0, 0.0)


@dataclass
class _Run:
    """What a prediction reads: the kept epochs, the settings and what follows from them."""

    kept: _Carried
    n: int  # epochs in the history given (the window)
    start: int  # leading epochs left out as warm-up
    observed: range  # epoch indices kept
    left_epochs: int | None
    left_steps: float | None
    steps_per_epoch: float | None
    steps_done: float | None
    plans: Sequence[PhasePlan]


def _phase_part(name: str, phase: _Phase, count: float, how: str, epochs_seen: int) -> _Part:
    """A phase's part: its runs' values, ``count`` runs to come, each standing for one value."""
    return _Part(
        name,
        phase.durations,
        phase.energies,
        0,
        count,
        how,
        epochs_per_value=epochs_seen / phase.runs,
    )


def _detected_period(run: _Run) -> tuple[int, int] | None:
    """(period, offset) of periodic work seen in the base costs alone (no phase records), judged
    on the last :data:`DETECT_WINDOW` steady epochs (past that many, every
    :data:`DETECT_EVERY` epochs); None when there is none."""
    kept, start = run.kept, run.start
    values = kept.base_kwh.values
    if run.start == 0 or len(values) - start < 4:
        return None
    steady = len(values) - start
    if steady > DETECT_WINDOW and kept.detected is not None:
        judged_at, found = kept.detected
        if judged_at[0] == start and steady - judged_at[1] < DETECT_EVERY:
            return found
    w0 = max(start, len(values) - DETECT_WINDOW)
    idx = list(range(run.observed.start + w0, run.observed.stop))
    periodic = _detect_periodic(kept.base_s.values[w0:], values[w0:], idx)
    found = None
    if periodic is not None:
        flagged, period = periodic
        found = int(period), flagged[0] % int(period)
    kept.detected = ((start, steady), found)
    return found


def _base_by_epochs(run: _Run) -> tuple[_Part, list[_Part]]:
    """The base per epoch, and periodic work detected from the epoch costs (no phase records)."""
    kept, start = run.kept, run.start
    head = (kept.base_s.values[start - 1], kept.base_kwh.values[start - 1]) if start else None
    left = float(run.left_epochs or 0)
    found = None if kept.phases else _detected_period(run)
    if found is None:
        return _Part("base", kept.base_s, kept.base_kwh, start, left, "per epoch", head=head), []
    period, offset = found
    split = kept.split_for(start, period, offset)
    rest_s, rest_kwh = split.rest
    mean_s, mean_kwh = rest_s.mean_from(0), rest_kwh.mean_from(0)
    # the periodic epochs' excess over the others' mean (its last DETECTED_KEPT runs)
    excess_s = _Series(max(0.0, s - mean_s) for s in split.periodic[0][-DETECTED_KEPT:])
    excess_kwh = _Series(max(0.0, k - mean_kwh) for k in split.periodic[1][-DETECTED_KEPT:])
    remaining = range(run.observed.stop, run.observed.stop + (run.left_epochs or 0))
    count = float(_count_in(remaining, period, offset))
    detected = _Part(
        DETECTED_PHASE, excess_s, excess_kwh, 0, count, f"every {period} epochs",
        epochs_per_value=float(period),
    )  # fmt: skip
    return _Part("base", rest_s, rest_kwh, 0, left, "per epoch", head=head), [detected]


def _parts_by_epochs(run: _Run) -> tuple[list[_Part], list[Any]]:
    """The parts of an epoch-based forecast, and the planned phases not run yet."""
    kept = run.kept
    base, detected = _base_by_epochs(run)
    parts = [base, *detected]
    remaining = range(run.observed.stop, run.observed.stop + (run.left_epochs or 0))
    steps_left = _steps_left(run.left_epochs, run.steps_per_epoch)
    planned = {plan.name: plan for plan in run.plans}
    for name in sorted(kept.phases):
        phase = kept.phases[name]
        plan = planned.get(name)
        sched = None
        if plan is not None:
            sched = plan.schedule(remaining, phase.per_epoch(), run.steps_done, steps_left)
        if sched is None:
            sched = phase.schedule(run.observed, remaining)
        if sched is not None:
            parts.append(_phase_part(name, phase, *sched, kept.n))
    unseen = _unseen_plans(run.plans, kept.phases, remaining, run.steps_done, steps_left)
    return parts, unseen


def _parts_by_steps(run: _Run) -> tuple[list[_Part], list[Any]]:
    """The parts of a step-based forecast (per step), and the planned phases not run yet."""
    kept, start = run.kept, run.start
    spe = float(run.steps_per_epoch)  # type: ignore[arg-type]
    left = run.left_steps or 0.0
    step_positions, per_step_s, per_step_kwh = kept.per_step()
    first = bisect_left(step_positions, start)
    head_steps = kept.steps[start - 1] if start else 0
    if first < len(step_positions):
        head = None
        if head_steps:
            head = (
                kept.base_s.values[start - 1] / head_steps,
                kept.base_kwh.values[start - 1] / head_steps,
            )
        base = _Part("base", per_step_s, per_step_kwh, first, left, "per step", spe, head=head)
    else:  # steps unknown for the steady epochs: their whole epochs, at the median steps each
        head = None
        if head_steps:
            scale = spe / head_steps
            head = (kept.base_s.values[start - 1] * scale, kept.base_kwh.values[start - 1] * scale)
        base = _Part("base", kept.base_s, kept.base_kwh, start, left / spe, "per step", head=head)
    parts = [base]
    steps_seen = kept.steps_sum or 1
    step_plans = {p.name: p for p in run.plans if p.every_steps is not None}
    for name in sorted(kept.phases):
        phase = kept.phases[name]
        count, how, spread = _per_step_phase(
            step_plans.get(name), phase.runs, kept.n, steps_seen, run.steps_done, left, spe
        )
        part = _phase_part(name, phase, count, how, kept.n)
        part.spread = spread
        parts.append(part)
    unseen = _unseen_plans(step_plans.values(), kept.phases, range(0), run.steps_done, left)
    return parts, unseen


def _add_part(
    run: _Run, part: _Part, totals: dict[str, list[float]], notes: list[str]
) -> tuple[dict[str, float], int]:
    """Add a part's forecast to ``totals``; return its central forecast per epoch to come and
    the values it was made from."""
    per_epoch = {"s": 0.0, "kwh": 0.0}
    start, kept = run.start, run.kept
    p_start = 0
    if part.name != "base" and len(part.energies) - part.first >= 2:
        p_start = _steady_start([part.durations, part.energies])
    k = part.first + p_start
    for key, series in (("s", part.durations), ("kwh", part.energies)):
        if part.name == "base" and start == 0:  # one epoch only
            central, lo, hi = _first_epoch_interval(series.values[k], part.count)
        else:
            h = part.head[0 if key == "s" else 1] if part.head is not None else None
            fc = _forecast(
                series,
                k,
                part.count,
                units_per_value=part.units_per_value,
                epochs_per_value=part.epochs_per_value,
                head=h if h is not None and series.stands_out(h, k) else None,
                head_position=start - 1,
                next_age=kept.n - start + 1,
            )
            central, lo, hi = fc.central, fc.low, fc.high
            if key == "kwh" and fc.decay_max:
                notes.append(_warmup_note(fc))
        fewer, more = (central / part.count * x for x in part.spread)
        totals[key][0] += central
        totals[key][1] += lo**2 + fewer**2
        totals[key][2] += hi**2 + more**2
        per_epoch[key] = central / part.count * part.units_per_value
    return per_epoch, len(part.energies) - k


def _predict(
    kept: _Carried,
    n: int,
    *,
    total_epochs: int | None,
    intensity_g_per_kwh: float,
    total_steps: int | None,
    steps_done: float | None,
    plans: Sequence[PhasePlan],
) -> Prediction | None:
    """The prediction from what is kept (the module's docstring has the model); ``n``: the
    epochs of the history given, whose measured figures the prediction carries."""
    steps_per_epoch = _median_of_counts(kept.step_counts) if kept.step_counts else None
    observed = range(kept.origin, kept.origin + kept.n)
    left_epochs, left_steps, by_steps = _left(
        total_epochs, total_steps, steps_done, observed.stop, steps_per_epoch
    )
    if left_epochs is None and not by_steps:
        return None
    start = _steady_start([kept.base_s, kept.base_kwh])
    run = _Run(
        kept, n, start, observed, left_epochs, left_steps, steps_per_epoch, steps_done, plans
    )
    notes: list[str] = []
    if start:
        notes.append(
            "epoch 0 left out as warm-up"
            if start == 1
            else f"epochs 0-{start - 1} left out as warm-up"
        )
    parts, unseen = _parts_by_steps(run) if by_steps else _parts_by_epochs(run)
    done_s, done_kwh, done_g = kept.measured()
    totals = {"s": [done_s, 0.0, 0.0], "kwh": [done_kwh, 0.0, 0.0]}
    described = []
    base_per_epoch = {"s": 0.0, "kwh": 0.0}  # the base's central forecast per epoch to come
    for part in parts:
        if part.count <= 0 or len(part.energies) <= part.first:
            if part.name != "base":
                described.append(f"{part.name}: {part.how}, none to come")
            continue
        per_epoch, used = _add_part(run, part, totals, notes)
        if part.name == "base":
            base_per_epoch = per_epoch
        else:
            described.append(f"{part.name}: {part.how}, {part.count:g} to come x level of {used}")
    for plan, planned_count in unseen:
        described.append(_add_unseen_plan(plan, planned_count, base_per_epoch, totals))
    base = parts[0]
    return _assembled(
        n=n,
        total_epochs=total_epochs,
        by_steps=by_steps,
        first_only=start == 0,
        left_epochs=left_epochs,
        left_steps=left_steps,
        steady=1 if start == 0 else len(base.energies) - base.first,
        notes=notes + described,
        totals=totals,
        done=(done_s, done_kwh, done_g),
        intensity_g_per_kwh=intensity_g_per_kwh,
        remaining_epochs=(left_steps or 0.0) / steps_per_epoch
        if by_steps
        else float(left_epochs or 0),  # type: ignore[operator]
    )


class RunPredictor:
    """The run's forecast, remade after every epoch at a cost that does not grow with the run.

    Keep one for the run and call :meth:`predict` after each epoch with the history so far: a
    growing list, or a bounded window of the latest epochs (a ``deque`` with ``maxlen``, its
    first epoch's index in ``first_epoch_index``). It adds the epochs it has not seen to what it
    keeps (running sums, sorted copies, filter states) and forecasts from every epoch it has
    seen since the first, the window's dropped ones included; the prediction's measured figures
    are the window's. A history that does not continue the last one (another run, an edited
    history) starts it again from that history.
    """

    def __init__(self) -> None:
        self._kept: _Carried | None = None

    def predict(
        self,
        history: Sequence[EpochSample],
        *,
        total_epochs: int | None,
        intensity_g_per_kwh: float,
        total_steps: int | None = None,
        steps_done: float | None = None,
        first_epoch_index: int = 0,
        plans: Sequence[PhasePlan] = (),
    ) -> Prediction | None:
        """Forecast the whole run from the epochs measured so far.

        Args:
            history: the measured epochs, oldest first (the whole run, or its latest epochs).
            total_epochs: epochs planned for the whole run (``None`` when only steps are known).
            intensity_g_per_kwh: intensity (gCO2eq/kWh) for the remaining energy, e.g. a
                forecast over the predicted span (see :meth:`Prediction.with_intensity`).
            total_steps / steps_done: for step-based runs (optimisation steps).
            first_epoch_index: index of ``history[0]`` in the whole run (a resumed run's
                history, or a bounded window, starts later); epochs still to come are
                ``total_epochs - first_epoch_index - len(history)``.
            plans: phases the framework has scheduled: a planned phase that has run follows its
                plan's schedule instead of the one read from its runs; one that has not run yet
                is costed from its ``work_ratio`` (none: left out, and said so).

        Returns:
            The prediction, or ``None`` when there is nothing to predict from (no epoch, or
            neither an epoch count nor a step count with steps per epoch). Its measured figures
            and ``after_epochs`` are those of ``history``.
        """
        n = len(history)
        if n == 0 or (total_epochs is None and (total_steps is None or steps_done is None)):
            return None
        kept = self._kept
        try:
            if kept is None or not kept.follow(history, first_epoch_index):
                self._kept = kept = _Carried.of(history, first_epoch_index)
            return _predict(
                kept,
                n,
                total_epochs=total_epochs,
                intensity_g_per_kwh=intensity_g_per_kwh,
                total_steps=total_steps,
                steps_done=steps_done,
                plans=plans,
            )
        except BaseException:
            self._kept = None  # never keep a state an exception may have left half made
            raise


def predict_run(
    history: Sequence[EpochSample],
    *,
    total_epochs: int | None,
    intensity_g_per_kwh: float,
    total_steps: int | None = None,
    steps_done: float | None = None,
    first_epoch_index: int = 0,
    plans: Sequence[PhasePlan] = (),
) -> Prediction | None:
    """One prediction from a whole history: :meth:`RunPredictor.predict` of a new predictor."""
    return RunPredictor().predict(
        history,
        total_epochs=total_epochs,
        intensity_g_per_kwh=intensity_g_per_kwh,
        total_steps=total_steps,
        steps_done=steps_done,
        first_epoch_index=first_epoch_index,
        plans=plans,
    )
