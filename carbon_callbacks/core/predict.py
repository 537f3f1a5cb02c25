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

*Interval* (nominal :data:`NOMINAL_COVERAGE`): each part's values (per epoch, per step or per
phase run) are taken as a *local level* plus noise: ``value_t = level_t + noise_t``, where the
level may wander as a random walk, ``level_t = level_(t-1) + step_t``, with
``var(step) = q var(noise)``. The noise variance has a prior of :data:`PRIOR_REL_SD` of the mean
(weight :data:`PRIOR_DF`), so that two look-alike epochs do not give a falsely narrow interval;
the drift-to-noise ratio ``q`` is averaged over a grid (:data:`DRIFT_Q_GRID`, ``q = 0``: no
drift) with its posterior weight, from a prior around :data:`DRIFT_PRIOR_Q` (a level step of a
tenth of the noise per epoch, within a decade in ``q``) and the likelihood of the values seen
(Kalman filter). For each ``q`` the sum of the R values to come has the variance
``s^2 (R^2 P + R + q R (R + 1) (2R + 1) / 6)``: the level's uncertainty (P, about 1/m from m
values without drift) times R^2, the noise of R values, and the level's wander, which grows
with the horizon. The interval is the central part of that mixture (normal), widened by
``t / z`` for the noise variance's degrees of freedom. The parts' half-widths add in quadrature.
CO2eq bounds are the energy bounds times the intensity applied to the remainder (the forecast
over the predicted span when the intensity source has one): the intensity's own uncertainty is
not in the interval. Changes that nothing before them announces (another job arriving, a
change of the work itself) are outside the model; so are measurement errors that repeat epoch
after epoch.

The constants were set from first principles and checked on synthetic runs with known
generating processes (``bench/predict_calibration.py``), not fitted to the recorded traces of
``bench/predict_accuracy.py`` (``docs/benchmarks.md``, "Prediction accuracy").
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: Nominal coverage of the interval (central: 5 % below, 5 % above).
NOMINAL_COVERAGE = 0.90
#: Prior relative standard deviation of one epoch (or one phase run) around its level.
PRIOR_REL_SD = 0.05
#: Weight of that prior, in pseudo-degrees of freedom pooled with the observed spread.
PRIOR_DF = 2.0
#: Prior centre of the drift-to-noise variance ratio ``q``: the level's random-walk step per
#: epoch has a standard deviation of ``sqrt(q)`` x the epoch-to-epoch noise (0.01: a tenth).
DRIFT_PRIOR_Q = 0.01
#: Spread of that prior: standard deviation of ``log10(q)``, in decades.
DRIFT_PRIOR_DECADES = 1.0
#: The ratios ``q`` the forecast averages over (0 = no drift; then 1e-4 to 1, half-decade steps).
DRIFT_Q_GRID: tuple[float, ...] = (0.0,) + tuple(10 ** (k / 2) for k in range(-8, 1))
#: With only the first (possibly warm-up) epoch measured, the remainder's interval is
#: ``[FIRST_EPOCH_LOW, FIRST_EPOCH_HIGH]`` times that epoch's cost per remaining epoch: a range
#: for the ratio of a first epoch to the later ones, from recorded runs (not a model): first
#: epochs of up to 4x the later ones (3.3x seen in our GPU traces of 0.15-0.2 s epochs) and
#: down to 0.8x (carbontracker's paper: its one-epoch predictions were 4.9-19.1 % off, the
#: first epoch mostly the cheaper). See docs/prediction.md.
FIRST_EPOCH_LOW = 0.25
FIRST_EPOCH_HIGH = 1.25
#: Leading epochs after the first that may also be left out when they still stand out.
MAX_EXTRA_WARMUP = 2
#: Largest per-epoch ratio of a warm-up that is still settling after its first epoch (a
#: geometric decay ``W ratio^epoch``): 1/e, the rate at which a data cache fills when each
#: epoch draws as many samples as the data set holds, at random with replacement (the share
#: never drawn after k epochs is ``(1 - 1/N)^(N k) ~ e^-k``). Slower settling (a cache filled
#: by epochs that draw a fraction of the data set, a start paced by time rather than by work)
#: is a ramp, outside the model until it shows. 0 is a one-off warm-up (CUDA context,
#: compilation, autotuning, a cache filled by one pass without replacement).
WARMUP_DECAY_MAX = 1 / math.e
#: The ratios a settling warm-up is evaluated at: 0 to :data:`WARMUP_DECAY_MAX` in 8 steps.
WARMUP_DECAY_GRID: tuple[float, ...] = tuple(WARMUP_DECAY_MAX * k / 8 for k in range(9))
#: Decay ratios whose likelihood is within this (natural) log-factor of the best one's are kept
#: in the interval: half the chi-square(1) quantile at :data:`NOMINAL_COVERAGE` (2.71 / 2), the
#: usual likelihood-ratio set at that level.
WARMUP_DECAY_LOG_LR = statistics.NormalDist().inv_cdf(0.5 + NOMINAL_COVERAGE / 2) ** 2 / 2
#: With more values than this after the warm-up, the decay is not fitted (it would cost time on
#: every epoch and tell nothing more): the values it could still affect by more than
#: :data:`WARMUP_NEGLIGIBLE_REL` of the level at the slowest ratio allowed are left out instead.
WARMUP_FIT_MAX_VALUES = 64
WARMUP_NEGLIGIBLE_REL = 1e-3
#: A value "stands out" when it is this many robust deviations (and at least
#: :data:`OUTLIER_MIN_REL` of the median) away from the median of the others.
OUTLIER_MADS = 4.0
OUTLIER_MIN_REL = 0.10
#: Name given to periodic work detected from epoch costs alone (no phase records).
DETECTED_PHASE = "periodic (detected)"
#: Periodic work is looked for in the last this many steady epochs (each epoch's cost is
#: judged against the others'); once found, every epoch at its period and offset is periodic.
DETECT_WINDOW = 256
#: Past :data:`DETECT_WINDOW` steady epochs, the pattern is judged again every this many epochs.
DETECT_EVERY = 32
#: The detected periodic work is forecast from its last this many runs.
DETECTED_KEPT = 64
#: Medians and deviations (warm-up and outlier tests) read at most this many values of a series
#: from the first one used: enough to judge, and a cost that does not grow with the run.
ROBUST_MAX_VALUES = 4096
#: Suffixes (and warm-up heads) per series whose derived state is kept; the oldest used goes.
_KEPT_PER_SERIES = 6
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


# -- statistics ----------------------------------------------------------------------------------
def t_quantile(p: float, df: float) -> float:
    """Quantile ``p`` (0.5 < p < 1) of Student's t with ``df`` >= 1 degrees of freedom.

    Exact for df = 1; otherwise the Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5),
    within 0.3 % of the exact value for df >= 2 at p = 0.95.
    """
    if df <= 1.0:
        return math.tan(math.pi * (p - 0.5))
    z = statistics.NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _median_and_limit(values: Sequence[float]) -> tuple[float, float]:
    """The median of ``values`` and how far from it a value must be to stand out (robust)."""
    med = statistics.median(values)
    mad = 1.4826 * statistics.median(abs(v - med) for v in values)
    return med, max(OUTLIER_MADS * mad, OUTLIER_MIN_REL * abs(med))


def _stands_out(value: float, others: Sequence[float]) -> bool:
    """True when ``value`` is far from the median of ``others`` (robust: median deviation)."""
    med, limit = _median_and_limit(others)
    return abs(value - med) > limit


def _decay_future(ratio: float, first_age: float, count: float) -> float:
    """Sum of :func:`_decay_column` over ``count`` values' worth from ``first_age`` on."""
    return ratio**first_age * (1.0 - ratio**count) / (1.0 - ratio) ** 2


@dataclass(frozen=True)
class _Filtered:
    """What the Kalman filter of the local-level model leaves (all variances / sigma^2).

    The level's start and each regression column's coefficient are left free (diffuse; de
    Jong's augmented filter): the level after the last value is ``level + sum_i theta_i
    effect[i]`` (index 0: the start level, 1...: the columns), and the coefficients' generalised
    least-squares fit comes from ``cross`` (their information, ``sum c_i c_j / F``) and ``xy``
    (``sum c_i v / F``). Each column is fitted together with the start level only: the columns
    are alternatives, not a joint design. ``cross`` holds, per coefficient i, ``(S_0i, S_ii)``.
    """

    level: float
    p: float
    yy: float
    log_f: float
    effect: list[float]
    cross: list[tuple[float, float]]
    xy: list[float]


#: The state of :func:`_level_scan` before any value: (started, level, p, yy, log_f, s00, xy0,
#: effect0), all variances / sigma^2 (see :class:`_Filtered`).
_LEVEL_START: tuple[bool, float, float, float, float, float, float, float] = (
    False,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    1.0,
)


def _level_scan(
    values: Iterable[float],
    q: float,
    state: tuple[bool, float, float, float, float, float, float, float] = _LEVEL_START,
) -> tuple[bool, float, float, float, float, float, float, float]:
    """The filter of :func:`_local_level_filter` without columns, from ``state`` on over
    ``values``: the start level alone, on scalars (long histories). Run over a series in two
    pieces, it ends in the state it ends in when run over the whole (the same operations in the
    same order), so :class:`carbon_callbacks.core.predict_incremental.RunPredictor` carries it
    from one epoch to the next."""
    started, level, p, yy, log_f, s00, xy0, effect0 = state
    log = math.log
    for value in values:
        if started:
            p += q
        started = True
        f = p + 1.0
        inv_f = 1.0 / f
        v = value - level
        e_f = effect0 * inv_f
        yy += v * v * inv_f
        log_f += log(f)
        xy0 += e_f * v
        s00 += e_f * effect0
        gain = p * inv_f
        effect0 -= gain * effect0
        level += gain * v
        p = gain
    return started, level, p, yy, log_f, s00, xy0, effect0


def _level_filtered(
    state: tuple[bool, float, float, float, float, float, float, float],
) -> _Filtered:
    """What :func:`_level_scan`'s ``state`` says, as :class:`_Filtered`."""
    _, level, p, yy, log_f, s00, xy0, effect0 = state
    return _Filtered(level, p, yy, log_f, [effect0], [(s00, s00)], [xy0])


@dataclass
class _AugmentedState:
    """The state of :func:`_augmented_scan` (index 0: the start level, 1...: the columns)."""

    started: bool
    level: float
    p: float
    yy: float
    log_f: float
    effect: list[float]
    s_0i: list[float]
    s_ii: list[float]
    xy: list[float]

    @classmethod
    def begin(cls, columns: int) -> _AugmentedState:
        """Before any value, with ``columns`` regression columns."""
        k = 1 + columns
        return cls(
            False, 0.0, 0.0, 0.0, 0.0, [1.0] + [0.0] * columns, [0.0] * k, [0.0] * k, [0.0] * k
        )

    def filtered(self) -> _Filtered:
        """What it says, as :class:`_Filtered` (copies: the state may go on)."""
        return _Filtered(
            self.level,
            self.p,
            self.yy,
            self.log_f,
            list(self.effect),
            list(zip(self.s_0i, self.s_ii, strict=True)),
            list(self.xy),
        )


def _augmented_scan(
    state: _AugmentedState, rows: Iterable[tuple[float, Sequence[float]]], q: float
) -> None:
    """Advance ``state`` over ``rows`` of (value, each column's entry): the filter of
    :func:`_local_level_filter` with columns, in place (run in pieces, it ends as run whole)."""
    k = len(state.effect)
    effect, s_0i, s_ii, xy = state.effect, state.s_0i, state.s_ii, state.xy
    started, level, p, yy, log_f = state.started, state.level, state.p, state.yy, state.log_f
    for value, row in rows:
        if started:
            p += q
        started = True
        f = p + 1.0
        gain = p / f
        v = value - level
        c = [effect[0]] + [effect[i + 1] + x for i, x in enumerate(row)]
        yy += v * v / f
        log_f += math.log(f)
        for i in range(k):
            xy[i] += c[i] * v / f
            s_0i[i] += c[0] * c[i] / f
            s_ii[i] += c[i] * c[i] / f
            effect[i] -= gain * c[i]
        level += gain * v
        p /= f
    state.started, state.level, state.p, state.yy, state.log_f = started, level, p, yy, log_f


@dataclass(frozen=True)
class _Forecast:
    """A part's forecast: the sum of the values to come and its interval (half-widths).

    Attributes:
        central / low / high: central sum, low and high half-widths (the values' units x count).
        decay: the warm-up decay ratio the forecast uses (``None``: no warm-up modelled).
        decay_max: the largest decay ratio the values seen do not rule out (the interval spans
            every ratio up to it).
    """

    central: float
    low: float
    high: float
    decay: float | None = None
    decay_max: float | None = None


def _mixture_bounds(
    weights: Sequence[float], centres: Sequence[float], sds: Sequence[float]
) -> tuple[float, float]:
    """(low, high): the central :data:`NOMINAL_COVERAGE` of a normal mixture.

    Newton's method on the mixture's distribution function, kept inside a shrinking bracket
    (bisection where a step would leave it), to 1e-10 of the mixture's scale; components of
    weight below 1e-12 of the largest are left out.
    """
    tail = (1 - NOMINAL_COVERAGE) / 2
    z = statistics.NormalDist().inv_cdf(1 - tail)
    top = max(weights)
    comps = [(w, c, sd) for w, c, sd in zip(weights, centres, sds, strict=True) if w > 1e-12 * top]
    lo0 = min(c - 3 * z * sd for _, c, sd in comps)
    hi0 = max(c + 3 * z * sd for _, c, sd in comps)
    tol = 1e-10 * max(abs(lo0), abs(hi0), hi0 - lo0)
    if hi0 - lo0 <= tol:  # no spread
        return lo0, hi0
    mass = math.fsum(w for w, _, _ in comps)
    root2, root2pi = math.sqrt(2.0), math.sqrt(2.0 * math.pi)

    def cdf_pdf(x: float) -> tuple[float, float]:
        cdf = pdf = 0.0
        for w, c, sd in comps:
            if sd > 0:
                u = (x - c) / sd
                cdf += w * 0.5 * math.erfc(-u / root2)
                pdf += w * math.exp(-0.5 * u * u) / (sd * root2pi)
            else:
                cdf += w * (x >= c)
        return cdf / mass, pdf / mass

    bounds = []
    for target in (tail, 1 - tail):
        lo, hi = lo0, hi0
        x = 0.5 * (lo + hi)
        for _ in range(200):
            cdf, pdf = cdf_pdf(x)
            if cdf < target:
                lo = x
            else:
                hi = x
            step = (cdf - target) / pdf if pdf > 0 else math.inf
            nxt = x - step
            if not lo < nxt < hi:
                nxt = 0.5 * (lo + hi)
            if abs(nxt - x) <= tol or hi - lo <= tol:
                x = nxt
                break
            x = nxt
        bounds.append(x)
    return bounds[0], bounds[1]


@dataclass(frozen=True)
class _Design:
    """One regression design's forecast of the sum to come: a normal mixture over the drift.

    Attributes:
        loglik: log marginal likelihood of the values (drift, noise variance and coefficients
            integrated out; comparable between designs with the same number of coefficients).
        weights / centres / sds: the mixture over :data:`DRIFT_Q_GRID` (posterior weights).
        nu: the noise variance's degrees of freedom.
    """

    loglik: float
    weights: tuple[float, ...]
    centres: tuple[float, ...]
    sds: tuple[float, ...]
    nu: float

    @property
    def centre(self) -> float:
        """The mixture's mean."""
        return math.fsum(w * c for w, c in zip(self.weights, self.centres, strict=True))

    def interval(self) -> tuple[float, float]:
        """(low, high): the mixture's central interval, widened by ``t / z`` for ``nu``."""
        centre = self.centre
        low, high = _mixture_bounds(self.weights, self.centres, self.sds)
        tail = (1 - NOMINAL_COVERAGE) / 2
        widen = t_quantile(1 - tail, self.nu) / statistics.NormalDist().inv_cdf(1 - tail)
        return centre - widen * max(0.0, centre - low), centre + widen * max(0.0, high - centre)


def _designs_from(
    filtered: Sequence[_Filtered],
    n_values: int,
    r: float,
    drift_prior_q: float,
    scale: float,
    n_columns: int = 0,
    futures: Sequence[float] = (),
) -> list[_Design]:
    """:func:`_designs` from the filter's results for each ``q`` of :data:`DRIFT_Q_GRID` (over
    ``n_values`` values, with ``n_columns`` columns)."""
    k = 1 if not n_columns else 2
    prior_ss = PRIOR_DF * (PRIOR_REL_SD * scale) ** 2
    nu = PRIOR_DF + n_values - k
    designs = range(1, n_columns + 1) if n_columns else range(1)
    log_w: list[list[float]] = [[] for _ in designs]
    centres: list[list[float]] = [[] for _ in designs]
    sds: list[list[float]] = [[] for _ in designs]
    for q, fil in zip(DRIFT_Q_GRID, filtered, strict=True):
        log_prior = (
            -0.5 * (math.log10(q / drift_prior_q) / DRIFT_PRIOR_DECADES) ** 2 if q > 0 else 0.0
        )
        wander = r + q * r * (r + 1) * (2 * r + 1) / 6  # future noise and drift, / sigma^2
        s00, s0 = fil.cross[0][0], fil.xy[0]
        for d, i in enumerate(designs):
            if i == 0:  # the start level alone
                det, inv00, inv01, inv11 = s00, 1.0 / s00, 0.0, 0.0
                theta0, theta1, future = s0 / s00, 0.0, 0.0
            else:
                s0i, sii, si = fil.cross[i][0], fil.cross[i][1], fil.xy[i]
                det = s00 * sii - s0i * s0i
                inv00, inv01, inv11 = sii / det, -s0i / det, s00 / det
                theta0, theta1 = inv00 * s0 + inv01 * si, inv01 * s0 + inv11 * si
                future = futures[i - 1]
            rss = max(0.0, fil.yy - theta0 * s0 - (theta1 * fil.xy[i] if i else 0.0))
            ss = prior_ss + rss
            level = fil.level + theta0 * fil.effect[0] + (theta1 * fil.effect[i] if i else 0.0)
            # the sum to come is r x level + theta1 x future; g: its gradient in the coefficients
            g0, g1 = r * fil.effect[0], (r * fil.effect[i] + future if i else 0.0)
            coef_var = g0 * g0 * inv00 + 2 * g0 * g1 * inv01 + g1 * g1 * inv11
            centres[d].append(r * level + theta1 * future)
            if ss <= 0:  # every value 0: nothing to spread
                log_w[d].append(log_prior)
                sds[d].append(0.0)
                continue
            log_w[d].append(log_prior - 0.5 * (fil.log_f + math.log(det)) - 0.5 * nu * math.log(ss))
            sds[d].append(math.sqrt(max(0.0, ss / nu * (r * r * fil.p + coef_var + wander))))
    out = []
    for d in range(len(designs)):
        top = max(log_w[d])
        weights = [math.exp(w - top) for w in log_w[d]]
        total = math.fsum(weights)
        out.append(
            _Design(
                top + math.log(total),
                tuple(w / total for w in weights),
                tuple(centres[d]),
                tuple(sds[d]),
                nu,
            )
        )
    return out


def _chosen(
    designs: Sequence[_Design], ratios: Sequence[float | None], units_per_value: float
) -> _Forecast:
    """:func:`_forecast`'s choice among the designs (one per warm-up decay ratio in ``ratios``;
    ``[None]``: no warm-up modelled)."""
    best_loglik = max(d.loglik for d in designs)
    # the smallest ratio among the best (equal to rounding: with two epochs every ratio fits)
    best = next(k for k, d in enumerate(designs) if d.loglik >= best_loglik - 1e-9)
    kept = [k for k, d in enumerate(designs) if d.loglik >= best_loglik - WARMUP_DECAY_LOG_LR]
    intervals = [designs[k].interval() for k in kept]
    centre = designs[best].centre
    kept_ratios = [ratios[k] for k in kept if ratios[k] is not None]
    return _Forecast(
        units_per_value * centre,
        units_per_value * max(0.0, centre - min(lo for lo, _ in intervals)),
        units_per_value * max(0.0, max(hi for _, hi in intervals) - centre),
        ratios[best],
        max(kept_ratios) if kept_ratios else None,
    )


def _first_epoch_interval(first: float, count: float) -> tuple[float, float, float]:
    """(central, low half-width, high half-width) from the first epoch alone (see
    :data:`FIRST_EPOCH_LOW`)."""
    central = count * first
    return central, central * (1 - FIRST_EPOCH_LOW), central * (FIRST_EPOCH_HIGH - 1)


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


# -- exact sums, medians and deviations over a growing series ------------------------------------
class _ExactSum:
    """A running sum, correctly rounded (Shewchuk's partials, as ``math.fsum``); non-finite
    values are summed apart, so that an infinity or NaN shows in the result without breaking."""

    __slots__ = ("partials", "special")

    def __init__(self) -> None:
        self.partials: list[float] = []
        self.special = 0.0

    def add(self, x: float) -> None:
        if not math.isfinite(x):
            self.special += x
            return
        partials = self.partials
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

    def value(self, minus: _ExactSum | None = None) -> float:
        """The sum (less ``minus``'s, exactly)."""
        if minus is None:
            return math.fsum(self.partials) + self.special
        return math.fsum(self.partials + [-x for x in minus.partials]) + (
            self.special - minus.special
        )


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
    rightwards, so the k-th of their merge is found by bisection on how many come from the left."""
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
    """:func:`_median_and_limit` of sorted ``a``, by selection (no pass over ``a``)."""
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


class _Series:
    """An append-only series of floats, with what the forecast reads of its suffixes
    ``values[k:]`` (exact sum, sorted copy, filter states), each brought up to date when read,
    so that a prediction costs the same however long the series.

    The sorted copy (medians and deviations) holds the first :data:`ROBUST_MAX_VALUES` values of
    a suffix. ``positions``: the epoch (counted from the predictor's first) of each value when
    they are not ``0, 1, 2...``; the warm-up's ages are counted from them.
    """

    __slots__ = ("values", "positions", "_sums", "_sorted", "_level", "_augmented")

    def __init__(self, values: Iterable[float] = (), positions: list[int] | None = None) -> None:
        self.values: list[float] = list(values)
        self.positions = positions
        self._sums = _Recent()
        self._sorted = _Recent()
        self._level = _Recent()
        self._augmented = _Recent()

    def __len__(self) -> int:
        return len(self.values)

    def position(self, j: int) -> int:
        """Epoch of value ``j``."""
        return j if self.positions is None else self.positions[j]

    def mean_from(self, k: int) -> float:
        """The mean of ``values[k:]`` (correctly rounded sum / count)."""
        entry = self._sums.use(k, lambda: [_ExactSum(), k])
        total, done = entry
        for x in self.values[done:]:
            total.add(x)
        entry[1] = len(self.values)
        return float(total.value() / (len(self.values) - k))

    def sorted_from(self, k: int) -> list[float]:
        """``sorted(values[k:k + ROBUST_MAX_VALUES])``."""
        return self._robust(k)[0]  # type: ignore[no-any-return]

    def stands_out(self, value: float, k: int) -> bool:
        """True when ``value`` is far from the median of ``values[k:]`` (robust)."""
        entry = self._robust(k)
        if entry[2] is None:
            entry[2] = _median_and_limit_sorted(entry[0])
        med, limit = entry[2]
        return bool(abs(value - med) > limit)

    def _robust(self, k: int) -> list[Any]:
        """[the sorted copy from ``k``, values taken in, its (median, limit) or None]."""
        values = self.values
        stop = min(len(values), k + ROBUST_MAX_VALUES)
        entry = self._sorted.use(k, lambda: [sorted(values[k:stop]), stop, None])
        a, done, _ = entry
        if done < stop:
            for x in values[done:stop]:
                insort(a, x)
            entry[1], entry[2] = stop, None
        return entry  # type: ignore[no-any-return]

    def level_filtered(self, k: int) -> list[_Filtered]:
        """The local-level filter over ``values[k:]``, for each ``q`` of the grid."""
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
        """The filter over ``[head, *values[k:]]`` for each ``q``, with a column per warm-up
        decay ratio of :data:`WARMUP_DECAY_GRID`: ``ratio^age / (1 - ratio)`` at the values'
        ages from ``head_position`` (its coefficient is the drop the decay causes from the head
        to the epoch after it, which the first two epochs show whatever the ratio, so a flat
        prior on it favours no ratio before later epochs speak)."""
        key = (k, head_position, head, math.copysign(1.0, head))

        def row(value: float, age: int) -> tuple[float, list[float]]:
            return value, [ratio**age / (1.0 - ratio) for ratio in WARMUP_DECAY_GRID]

        def begin() -> list[Any]:
            states = [_AugmentedState.begin(len(WARMUP_DECAY_GRID)) for _ in DRIFT_Q_GRID]
            for q, state in zip(DRIFT_Q_GRID, states, strict=True):
                _augmented_scan(state, [row(head, 0)], q)
            return [states, k]

        entry = self._augmented.use(key, begin)
        states, done = entry
        if done < len(self.values):
            rows = [
                row(self.values[j], self.position(j) - head_position)
                for j in range(done, len(self.values))
            ]
            for q, state in zip(DRIFT_Q_GRID, states, strict=True):
                _augmented_scan(state, rows, q)
            entry[1] = len(self.values)
        return [state.filtered() for state in states]


def _steady_start(series: Sequence[_Series]) -> int:
    """How many leading values to leave out as warm-up (the same for all given series).

    The first is left out once a second exists; up to :data:`MAX_EXTRA_WARMUP` more while they
    stand out from the values after them (judged when at least 3 values follow).
    """
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
    """The sum of ``count`` future units and its interval (half-widths), from ``values[k:]``.

    Each value stands for ``units_per_value`` units (1 for epochs or phase runs; steps per epoch
    for per-step costs). The values follow the local-level model (see the module's docstring):
    the noise variance's prior is :data:`PRIOR_REL_SD` of the mean (weight :data:`PRIOR_DF`),
    the drift-to-noise ratio ``q`` is averaged over :data:`DRIFT_Q_GRID` with its posterior
    weight (prior: normal in ``log10 q`` around ``drift_prior_q``, sd
    :data:`DRIFT_PRIOR_DECADES`; ``q = 0`` weighted as the centre).

    ``head`` (the last left-out warm-up value, when it stands out from the values; ``None``: no
    warm-up) adds a settling warm-up ``W ratio^age`` for each ratio of
    :data:`WARMUP_DECAY_GRID`; the ratios within :data:`WARMUP_DECAY_LOG_LR` of the best are
    kept, the interval is the union of theirs and the central value the best's. With more than
    :data:`WARMUP_FIT_MAX_VALUES` values the decay is not fitted: the values the slowest decay
    could still affect by more than :data:`WARMUP_NEGLIGIBLE_REL` of the level are left out.
    """
    if count <= 0:
        return _Forecast(0.0, 0.0, 0.0)
    r = count / units_per_value
    n = len(series) - k
    scale = abs(series.mean_from(k))
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
        positions: list[int] = []
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
        self.steps: list[int] = []  # e.steps or 0, per epoch
        self.steps_sum = 0
        self.steps_sorted: list[int] = []  # the epochs' steps where known (not 0)
        # the per-step series (epochs with steps only), made when a prediction first needs them
        self._per_step: tuple[list[int], _Series, _Series] | None = None
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

    def per_step(self) -> tuple[list[int], _Series, _Series]:
        """The positions of the epochs with steps, and their base duration and energy per step
        (made on first use, then kept up to date)."""
        if self._per_step is None:
            positions: list[int] = []
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
            insort(self.steps_sorted, steps)
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
                drift_prior_q=DRIFT_PRIOR_Q * part.epochs_per_value,
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
    steps_per_epoch = _median_of_sorted(kept.steps_sorted) if kept.steps_sorted else None
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
