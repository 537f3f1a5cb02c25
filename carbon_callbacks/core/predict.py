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
from array import array
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Container, Iterable, Sequence
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
    _ExactSum,
    _first_epoch_interval,
    _Forecast,
    _forecast,
    _median_and_limit,
    _median_of_sorted,
    _Series,
    _stands_out,
    _steady_start,
)

__all__ = [
    "DETECTED_PHASE",
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
#: A planned phase not run yet (validation every k epochs, before its first run) is costed as
#: its batches per training epoch's batches x this share of a training batch's cost: a forward
#: pass is about a third of forward + backward (training ~6N, inference ~2N FLOPs per token for
#: N parameters: Kaplan et al. 2020, "Scaling Laws for Neural Language Models", arXiv:2001.08361,
#: section 2.1).
PLANNED_FORWARD_SHARE = 1.0 / 3.0
#: The interval's range of that share: down to a fifth (memory-bound training steps), up to a
#: whole training batch (small models, where each batch's fixed Python and loading cost
#: dominates).
PLANNED_FORWARD_SHARE_LOW = 0.2
PLANNED_FORWARD_SHARE_HIGH = 1.0


@dataclass(frozen=True)
class PhasePlan:
    """A phase the training loop has scheduled, known before it runs (from the framework).

    Attributes:
        name: the phase's name, as in the phase records (e.g. ``"validation"``).
        every_epochs: it runs at the epochs ``e`` (0-based) with ``(e + 1) % every_epochs == 0``
            (Lightning's ``check_val_every_n_epoch``, Keras' ``validation_freq``).
        work_ratio: its batches per run / the training batches of an epoch, when known; used to
            cost it before its first run (see :data:`PLANNED_FORWARD_SHARE`).
        every_steps: instead of ``every_epochs``: it runs after every optimisation step ``s``
            (1-based, counted over the whole run) with ``s % every_steps == 0`` (Hugging Face's
            ``eval_strategy="steps"`` with ``eval_steps``). Its runs to come are counted from
            the steps done and left, so it needs the steps reported per epoch.
        at_last_step: a step plan also runs after the run's last step when that is not one of
            its multiples (the Trainer's final evaluation, transformers >= 5).
    """

    name: str
    every_epochs: int | None = None
    work_ratio: float | None = None
    every_steps: int | None = None
    at_last_step: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a phase plan needs the phase's name (e.g. 'validation')")
        if (self.every_epochs is None) == (self.every_steps is None):
            raise ValueError(
                "a phase plan needs one schedule: every_epochs (whole epochs) or every_steps "
                f"(optimisation steps), got every_epochs={self.every_epochs!r}, "
                f"every_steps={self.every_steps!r}"
            )
        for field_name in ("every_epochs", "every_steps"):
            value = getattr(self, field_name)
            if value is None:
                continue
            unit = "epochs" if field_name == "every_epochs" else "steps"
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{field_name} must be a whole number of {unit}, got {value!r}")
            if value < 1:
                raise ValueError(f"{field_name} must be at least 1, got {value}")
        if self.at_last_step and self.every_steps is None:
            raise ValueError("at_last_step is for a step plan: give every_steps too")
        if self.work_ratio is not None and not (
            math.isfinite(self.work_ratio) and self.work_ratio >= 0
        ):
            raise ValueError(
                f"work_ratio must be a finite number >= 0 (batches per run / training batches "
                f"per epoch), got {self.work_ratio!r}"
            )

    def runs_in(
        self, epochs: range, steps_done: float | None = None, steps_left: float | None = None
    ) -> float | None:
        """How many times it runs in these epochs, or (a step plan) in the steps after
        ``steps_done`` up to ``steps_done + steps_left``; None for a step plan without them."""
        if self.every_steps is not None:
            if steps_done is None or steps_left is None:
                return None
            k = self.every_steps
            # steps left can be fractional (epochs left x the median steps per epoch)
            end = round(steps_done + steps_left, 6)
            runs = math.floor(end / k + 1e-9) - math.floor(steps_done / k + 1e-9)
            if self.at_last_step and steps_left > 0 and not math.isclose(end / k, round(end / k)):
                runs += 1  # the run's last step, off the period
            return float(runs)
        k = self.every_epochs or 1
        return float(sum(1 for i in epochs if (i + 1) % k == 0))

    @property
    def how(self) -> str:
        """The schedule in words, as a prediction's method gives it."""
        if self.every_steps is not None:
            k = self.every_steps
            return ("every step" if k == 1 else f"every {k} steps") + " (planned)"
        k = self.every_epochs
        return ("every epoch" if k == 1 else f"every {k} epochs") + " (planned)"

    def schedule(
        self,
        remaining: range,
        per_run: float,
        steps_done: float | None = None,
        steps_left: float | None = None,
    ) -> tuple[float, str] | None:
        """Its phase records to come, and how; None when a step plan cannot count its runs.

        ``per_run``: records per epoch it runs in (two validations per epoch count twice);
        a step plan's run is one record.
        """
        runs = self.runs_in(remaining, steps_done, steps_left)
        if runs is None:
            return None
        return runs * (1.0 if self.every_steps is not None else per_run), self.how

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "every_epochs": self.every_epochs,
            "every_steps": self.every_steps,
            "at_last_step": self.at_last_step,
            "work_ratio": self.work_ratio,
        }


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


def _unseen_plans(
    plans: Iterable[PhasePlan],
    run_names: Container[str],
    remaining: range,
    steps_done: float | None,
    steps_left: float | None,
) -> list[tuple[PhasePlan, float | None]]:
    """The planned phases that have not run yet, with their runs to come (None: unknown)."""
    return [
        (p, p.runs_in(remaining, steps_done, steps_left)) for p in plans if p.name not in run_names
    ]


def _per_step_phase(
    plan: PhasePlan | None,
    runs: int,
    epochs_seen: int,
    steps_seen: float,
    steps_done: float | None,
    left_steps: float | None,
    steps_per_epoch: float | None,
) -> tuple[float, str, tuple[float, float]]:
    """A phase's runs to come in a step-based forecast: ``(count, how, (fewer, more))``.

    With a step plan (``plan``, ``every_steps`` set), its exact count and ``(0, 0)``.
    Otherwise the count is the phase's runs per step seen times the steps left. A phase that runs at
    epoch ends (validation) may or may not run in a last epoch that the step limit cuts short:
    Lightning ends the run with no validation there, the Hugging Face Trainer evaluates at every
    epoch's end, the short one included. The per-step rate counts the fraction ``f`` of that
    epoch's runs; ``fewer = f x`` and ``more = (1 - f) x`` the phase's runs per epoch are the
    counts it may be over or under by, and widen the interval (``(0, 0)`` when the steps left
    end on an epoch's end, or the steps per epoch are unknown).
    """
    if plan is not None:
        planned = plan.schedule(range(0), 1.0, steps_done, left_steps)
        if planned is not None:
            return (*planned, (0.0, 0.0))
    left = left_steps or 0.0
    count = runs / steps_seen * left
    how = f"{runs / steps_seen:.2g} per step"
    frac = (left / steps_per_epoch) % 1.0 if steps_per_epoch else 0.0
    if not 1e-9 < frac < 1 - 1e-9:
        return count, how, (0.0, 0.0)
    per_epoch = runs / epochs_seen
    how += f" (the last, partial epoch's {frac * per_epoch:.2g} may be none or whole)"
    return count, how, (frac * per_epoch, (1 - frac) * per_epoch)


def _add_unseen_plan(
    plan: PhasePlan,
    count: float | None,
    base_per_epoch: dict[str, float],
    totals: dict[str, list[float]],
) -> str:
    """Cost a planned phase that has not run yet into ``totals``; return its note.

    Each run to come is ``work_ratio`` x :data:`PLANNED_FORWARD_SHARE` of a base epoch, within
    [:data:`PLANNED_FORWARD_SHARE_LOW`, :data:`PLANNED_FORWARD_SHARE_HIGH`] x ``work_ratio``
    (the range's half-widths add in quadrature to the other parts'). Without a ``work_ratio``
    nothing is added: the note says that the forecast leaves it out.
    """
    if count is None:
        return (
            f"{plan.name}: {plan.how}, not in the forecast until its first run (the steps per "
            "epoch are not reported, so its runs to come are unknown)"
        )
    if count <= 0:
        return f"{plan.name}: {plan.how}, none to come"
    if plan.work_ratio is None:
        return (
            f"{plan.name}: {plan.how}, {count:g} to come, not in the forecast until its "
            "first run (its size is unknown)"
        )
    for key in ("s", "kwh"):
        per_run = plan.work_ratio * base_per_epoch[key]
        totals[key][0] += count * per_run * PLANNED_FORWARD_SHARE
        totals[key][1] += (
            count * per_run * (PLANNED_FORWARD_SHARE - PLANNED_FORWARD_SHARE_LOW)
        ) ** 2
        totals[key][2] += (
            count * per_run * (PLANNED_FORWARD_SHARE_HIGH - PLANNED_FORWARD_SHARE)
        ) ** 2
    return (
        f"{plan.name}: {plan.how}, {count:g} to come x {plan.work_ratio:.3g} of an epoch's "
        f"batches x {PLANNED_FORWARD_SHARE:.2g} of a training batch "
        f"[{PLANNED_FORWARD_SHARE_LOW:g}-{PLANNED_FORWARD_SHARE_HIGH:g}] (not run yet)"
    )


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
        self.periodic: tuple[list[float], list[float]] = ([], [])
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


def _base_by_epochs(run: _Run, notes: list[str]) -> tuple[_Part, list[_Part]]:
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


def _parts_by_epochs(run: _Run, notes: list[str]) -> tuple[list[_Part], list[Any]]:
    """The parts of an epoch-based forecast, and the planned phases not run yet."""
    kept = run.kept
    base, detected = _base_by_epochs(run, notes)
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
    parts, unseen = _parts_by_steps(run) if by_steps else _parts_by_epochs(run, notes)
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
