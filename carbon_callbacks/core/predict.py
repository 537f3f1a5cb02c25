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
from collections.abc import Container, Iterable, Sequence
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


def _steady_start(series: Sequence[Sequence[float]]) -> int:
    """How many leading values to leave out as warm-up (same for all given series).

    The first is left out once a second exists; up to :data:`MAX_EXTRA_WARMUP` more while they
    stand out from the values after them (judged when at least 3 values follow).
    """
    n = len(series[0])
    if n < 2:
        return 0
    start = 1
    while start <= MAX_EXTRA_WARMUP and n - start - 1 >= 3:
        if any(_stands_out(s[start], s[start + 1 :]) for s in series):
            start += 1
        else:
            break
    return start


@dataclass(frozen=True)
class _Warmup:
    """The last warm-up value left out just before a part's values, which may still be settling.

    Attributes:
        head: that value (in the values' units: per epoch, per step or per phase run).
        ages: epochs from the head to each of the values (>= 1), oldest first.
        next_age: epochs from the head to the first value still to come.
    """

    head: float
    ages: tuple[int, ...]
    next_age: int


def _decay_column(ratio: float, ages: Sequence[int]) -> list[float]:
    """The settling warm-up's regressor ``ratio^age / (1 - ratio)`` at the given epoch ages.

    Its coefficient is then the drop that the decay causes from the head to the epoch after it
    (``W (1 - ratio)`` for an excess ``W ratio^age``): a quantity the first two epochs show
    whatever the ratio, so a flat prior on it favours no ratio before later epochs speak.
    """
    return [ratio**age / (1.0 - ratio) for age in ages]


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


def _local_level_filter(
    values: Sequence[float], q: float, columns: Sequence[Sequence[float]] = ()
) -> _Filtered:
    """Kalman filter of the local-level model with drift-to-noise ratio ``q`` and free start.

    Model: ``value_t = level_t + theta_j x_jt + noise_t``, ``level_t = level_(t-1) + step_t``,
    noise with variance ``sigma^2``, steps with ``q sigma^2``; the start level and ``theta_j``
    (one column ``x_j`` at a time, see :class:`_Filtered`) are unknown constants with a flat
    prior. The filter runs once with every coefficient at 0 (the state starts at 0, known) and
    tracks how each coefficient would shift the innovations (``c_i``) and the level.
    """
    if not columns:  # the start level alone: the same recursion on scalars (long histories)
        return _level_filtered(_level_scan(values, q))
    state = _AugmentedState.begin(len(columns))
    _augmented_scan(state, zip(values, zip(*columns, strict=True), strict=True), q)
    return state.filtered()


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


def _designs(
    values: Sequence[float],
    r: float,
    drift_prior_q: float,
    scale: float,
    columns: Sequence[Sequence[float]] = (),
    futures: Sequence[float] = (),
) -> list[_Design]:
    """The sum of ``r`` future values under each design: the start level alone (no
    ``columns``), else the start level with each column in turn (``futures``: each column's
    sum over the values to come)."""
    filtered = [_local_level_filter(values, q, columns) for q in DRIFT_Q_GRID]
    return _designs_from(filtered, len(values), r, drift_prior_q, scale, len(columns), futures)


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


def _forecast(
    values: Sequence[float],
    count: float,
    *,
    units_per_value: float = 1.0,
    drift_prior_q: float = DRIFT_PRIOR_Q,
    warmup: _Warmup | None = None,
) -> _Forecast:
    """The sum of ``count`` future units and its interval (half-widths).

    ``values`` are the costs measured so far (oldest first), each standing for
    ``units_per_value`` units (1 for epochs or phase runs; steps per epoch when the values are
    per-step costs averaged over an epoch). The values follow a local-level model (see
    :func:`_local_level_filter`) with the noise variance's prior ``PRIOR_REL_SD`` of the mean
    (weight ``PRIOR_DF``) and the drift-to-noise ratio ``q`` averaged over
    :data:`DRIFT_Q_GRID` with its posterior weight (prior: normal in ``log10 q`` around
    ``drift_prior_q``, sd :data:`DRIFT_PRIOR_DECADES`; ``q = 0`` weighted as the centre). For each
    ``q`` the sum of ``R`` future values has mean ``R x level`` and variance
    ``s^2 (R^2 P + R + q R (R + 1) (2R + 1) / 6)``: the level's uncertainty, the future values'
    noise and the level's future wander. The interval is the normal mixture's central
    :data:`NOMINAL_COVERAGE` interval, widened by ``t / z`` for the noise variance's
    degrees of freedom.

    With ``warmup`` (the last left-out warm-up value stands out from the values), the values
    may still carry a settling warm-up, a geometric decay ``W ratio^age`` from the head, with
    ``ratio`` in :data:`WARMUP_DECAY_GRID` (0: a one-off warm-up, the model without it). Each
    ratio's design (start level + decay column, fitted with the head) gives a forecast and a
    marginal likelihood; the ratios within :data:`WARMUP_DECAY_LOG_LR` of the best are kept, and
    the interval is the union of their intervals, the central value that of the best (the
    smallest ratio among equals: with two epochs every ratio fits, and the forecast assumes a
    one-off warm-up while the interval keeps room for what the decay could still hide).
    """
    if count <= 0:
        return _Forecast(0.0, 0.0, 0.0)
    r = count / units_per_value  # future values' worth
    scale = abs(statistics.fmean(values))
    if warmup is not None and len(values) > WARMUP_FIT_MAX_VALUES:
        # long enough that fitting the decay costs more than it tells: leave out the values in
        # which the slowest decay allowed could still leave more than a trace of the warm-up
        med = statistics.median(values)
        excess = abs(warmup.head - med) / (1.0 - WARMUP_DECAY_MAX)
        keep = [
            k
            for k, age in enumerate(warmup.ages)
            if excess * WARMUP_DECAY_MAX**age <= WARMUP_NEGLIGIBLE_REL * abs(med)
        ]
        if len(keep) >= 2:
            values = [values[k] for k in keep]
        warmup = None
    if warmup is None:
        ratios: list[float | None] = [None]
        designs = _designs(values, r, drift_prior_q, scale)
    else:
        ratios = list(WARMUP_DECAY_GRID)
        ages = [0, *warmup.ages]
        designs = _designs(
            [warmup.head, *values],
            r,
            drift_prior_q,
            scale,
            [_decay_column(ratio, ages) for ratio in WARMUP_DECAY_GRID],
            [_decay_future(ratio, warmup.next_age, r) for ratio in WARMUP_DECAY_GRID],
        )
    return _chosen(designs, ratios, units_per_value)


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


# -- the parts of an epoch -----------------------------------------------------------------------
@dataclass
class _Part:
    """One part of the remaining work: its per-occurrence costs and how often it recurs."""

    name: str
    durations: list[float]
    energies: list[float]
    count: float  # occurrences (epochs, steps or phase runs) still to come
    how: str
    #: occurrences each value stands for (steps per epoch for per-step costs, else 1)
    units_per_value: float = 1.0
    #: epochs between two values (the drift prior is per epoch; a phase every p epochs
    #: drifts p times as much, in variance, from one run to the next)
    epochs_per_value: float = 1.0
    #: the last left-out warm-up epoch's (duration, energy) in the values' units, when one was
    #: left out (the head of a warm-up that may still be settling); None for phases
    head: tuple[float | None, float | None] | None = None
    #: epochs from that head to each value, and to the first value to come
    ages: tuple[int, ...] = ()
    next_age: int = 0
    #: (fewer, more): runs the count may be over or under by (see :func:`_per_step_phase`)
    spread: tuple[float, float] = (0.0, 0.0)


def _schedule(occ_epochs: list[int], observed: range, remaining: range) -> tuple[float, str] | None:
    """Occurrences of a phase still to come in ``remaining`` epochs, from the epochs it ran in.

    Every epoch; every p-th epoch with an offset (Lightning's ``check_val_every_n_epoch=k`` and
    Keras' ``validation_freq=k`` run at epochs where ``(epoch + 1) % k == 0``: one sighting at
    epoch j gives the smallest such p that explains not seeing it elsewhere, j + 1 in a run
    observed from its start); once at the start only; else a plain rate (occurrences per epoch
    observed).
    """
    if not occ_epochs:
        return None
    per_epoch = statistics.median(occ_epochs.count(i) for i in set(occ_epochs))
    seen = sorted(set(occ_epochs))
    if len(seen) == len(observed):
        return per_epoch * len(remaining), "every epoch"
    if len(seen) == 1:
        j = seen[0]
        if j == 0:
            return 0.0, "once, at the start"
        # the smallest period with (j + 1) % period == 0 that fits no sighting in the rest of
        # the epochs observed (on either side of j); none (a one-off mid-run, such as a
        # checkpoint or an evaluation the user triggered): a plain rate
        gap = max(j - observed.start, observed.stop - 1 - j)
        period = min((p for p in range(1, j + 2) if (j + 1) % p == 0 and p > gap), default=0)
        if not period:
            rate = len(occ_epochs) / len(observed)
            return rate * len(remaining), f"irregular, {rate:.2g} per epoch"
        offset = j % period
    else:
        period = math.gcd(*[b - a for a, b in zip(seen, seen[1:], strict=False)])
        offset = seen[0] % period
    expected = [i for i in observed if i % period == offset]
    if period >= 2 and expected == seen:
        count = sum(1 for i in remaining if i % period == offset) * per_epoch
        return count, f"every {period} epochs"
    rate = len(occ_epochs) / len(observed)
    return rate * len(remaining), f"irregular, {rate:.2g} per epoch"


#: Up to this many steady epochs, each epoch is judged against the others (leave-one-out).
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


def predict_run(
    history: Sequence[EpochSample],
    *,
    total_epochs: int | None,
    intensity_g_per_kwh: float,
    total_steps: int | None = None,
    steps_done: int | None = None,
    first_epoch_index: int = 0,
    plans: Sequence[PhasePlan] = (),
) -> Prediction | None:
    """Forecast the whole run from the epochs measured so far.

    Args:
        history: the measured epochs, oldest first.
        total_epochs: epochs planned for the whole run (``None`` when only steps are known).
        intensity_g_per_kwh: intensity (gCO2eq/kWh) for the remaining energy, e.g. a forecast
            over the predicted span (see :meth:`Prediction.with_intensity`).
        total_steps / steps_done: for step-based runs (optimisation steps).
        first_epoch_index: index of ``history[0]`` in the whole run (a resumed run's history
            starts later); epochs still to come are ``total_epochs - first_epoch_index - n``.
        plans: phases the framework has scheduled (epoch-based runs): a planned phase that has
            run follows its plan's schedule instead of the one read from its runs; one that has
            not run yet is costed from its ``work_ratio`` (none: left out, and said so).

    Returns:
        The prediction, or ``None`` when there is nothing to predict from (no epoch, or neither
        an epoch count nor a step count with steps per epoch).
    """
    n = len(history)
    if n == 0 or (total_epochs is None and (total_steps is None or steps_done is None)):
        return None  # nothing to predict from, or the run's length is unknown: cost nothing
    done_s = math.fsum(e.duration_s for e in history)
    done_kwh = math.fsum(e.energy_kwh for e in history)
    done_g = math.fsum(e.co2_g for e in history)
    observed = range(first_epoch_index, first_epoch_index + n)

    # -- how much is left: epochs, or steps when those end the run first
    step_epochs = [e for e in history if e.steps]
    steps_per_epoch = statistics.median(e.steps for e in step_epochs) if step_epochs else None  # type: ignore[type-var]
    left_epochs, left_steps, by_steps = _left(
        total_epochs, total_steps, steps_done, first_epoch_index + n, steps_per_epoch
    )
    if left_epochs is None and not by_steps:
        return None

    # -- the parts
    base_s = [max(0.0, e.duration_s - math.fsum(p.duration_s for p in e.phases)) for e in history]
    base_kwh = [max(0.0, e.energy_kwh - math.fsum(p.energy_kwh for p in e.phases)) for e in history]
    start = _steady_start([base_s, base_kwh])
    first_only = start == 0  # one epoch only
    idx = list(observed)[start:] if not first_only else list(observed)
    steady = slice(start, None) if not first_only else slice(None)
    parts: list[_Part] = []
    notes: list[str] = []
    s_vals, k_vals, idx_vals = base_s[steady], base_kwh[steady], idx
    head_idx = observed[start - 1] if start else None  # the last epoch left out as warm-up
    phase_names = sorted({p.name for e in history for p in e.phases})
    if not phase_names and not first_only and not by_steps:
        found = _detect_periodic(s_vals, k_vals, idx_vals)
        if found is not None:
            flagged, period = found
            rest = [k for k, i in enumerate(idx_vals) if i not in flagged]
            mean_s = statistics.fmean(s_vals[k] for k in rest)
            mean_kwh = statistics.fmean(k_vals[k] for k in rest)
            extra = [(s_vals[idx_vals.index(i)], k_vals[idx_vals.index(i)]) for i in flagged]
            offset = flagged[0] % int(period)
            remaining = (
                range(observed.stop, observed.stop + left_epochs) if left_epochs else range(0)
            )
            count = sum(1 for i in remaining if i % int(period) == offset)
            parts.append(
                _Part(
                    DETECTED_PHASE,
                    [max(0.0, s - mean_s) for s, _ in extra],
                    [max(0.0, k - mean_kwh) for _, k in extra],
                    float(count),
                    f"every {int(period)} epochs",
                    epochs_per_value=period,
                )
            )
            s_vals = [s_vals[k] for k in rest]
            k_vals = [k_vals[k] for k in rest]
            idx_vals = [idx_vals[k] for k in rest]
    if start:
        notes.append(
            "epoch 0 left out as warm-up"
            if start == 1
            else f"epochs 0-{start - 1} left out as warm-up"
        )

    if by_steps:
        steps = [e.steps or 0 for e in history]
        steady_steps = steps[steady]
        pairs = [
            (s, k, st, i)
            for s, k, st, i in zip(s_vals, k_vals, steady_steps, idx_vals, strict=False)
            if st
        ]
        if not pairs:  # steps unknown for the steady epochs: fall back to the median epoch
            pairs = [
                (s, k, steps_per_epoch, i)
                for s, k, i in zip(s_vals, k_vals, idx_vals, strict=False)
            ]
        head_steps = steps[start - 1] if start else 0
        base = _Part(
            "base",
            [s / st for s, _, st, _ in pairs],
            [k / st for _, k, st, _ in pairs],
            left_steps or 0.0,
            "per step",
            units_per_value=float(steps_per_epoch),  # type: ignore[arg-type]
            head=(
                (base_s[start - 1] / head_steps, base_kwh[start - 1] / head_steps)
                if head_idx is not None and head_steps
                else None
            ),
            ages=tuple(i - head_idx for *_, i in pairs) if head_idx is not None else (),
            next_age=observed.stop - head_idx if head_idx is not None else 0,
        )
        parts.insert(0, base)
        steps_seen = sum(steps) or 1
        step_plans = {p.name: p for p in plans if p.every_steps is not None}
        for name in phase_names:
            occ = [p for e in history for p in e.phases if p.name == name]
            count, how, spread = _per_step_phase(
                step_plans.get(name), len(occ), n, steps_seen, steps_done, left_steps,
                steps_per_epoch,
            )  # fmt: skip
            parts.append(
                _Part(
                    name,
                    [p.duration_s for p in occ],
                    [p.energy_kwh for p in occ],
                    count,
                    how,
                    epochs_per_value=n / len(occ),
                    spread=spread,
                )
            )
        remaining_epochs = (left_steps or 0.0) / steps_per_epoch  # type: ignore[operator]
        unseen = _unseen_plans(step_plans.values(), phase_names, range(0), steps_done, left_steps)
    else:
        parts.insert(
            0,
            _Part(
                "base",
                s_vals,
                k_vals,
                float(left_epochs or 0),
                "per epoch",
                head=(base_s[start - 1], base_kwh[start - 1]) if head_idx is not None else None,
                ages=tuple(i - head_idx for i in idx_vals) if head_idx is not None else (),
                next_age=observed.stop - head_idx if head_idx is not None else 0,
            ),
        )
        remaining = range(observed.stop, observed.stop + (left_epochs or 0))
        steps_left = _steps_left(left_epochs, steps_per_epoch)
        planned = {plan.name: plan for plan in plans}
        for name in phase_names:
            occ_epochs = [
                observed[k] for k, e in enumerate(history) for p in e.phases if p.name == name
            ]
            occ = [p for e in history for p in e.phases if p.name == name]
            plan = planned.get(name)
            sched = None
            if plan is not None and occ_epochs:
                per_run = statistics.median(occ_epochs.count(i) for i in set(occ_epochs))
                sched = plan.schedule(remaining, per_run, steps_done, steps_left)
            if sched is None:
                sched = _schedule(occ_epochs, observed, remaining)
            if sched is None:
                continue
            count, how = sched
            parts.append(
                _Part(
                    name,
                    [p.duration_s for p in occ],
                    [p.energy_kwh for p in occ],
                    count,
                    how,
                    epochs_per_value=n / len(occ),
                )
            )
        remaining_epochs = float(left_epochs or 0)
        unseen = _unseen_plans(plans, phase_names, remaining, steps_done, steps_left)

    # -- sum the parts, each with its interval
    totals = {"s": [done_s, 0.0, 0.0], "kwh": [done_kwh, 0.0, 0.0]}
    described = []
    base_per_epoch = {"s": 0.0, "kwh": 0.0}  # the base's central forecast per epoch to come
    for part in parts:
        if part.count <= 0 or not part.energies:
            if part.name != "base":
                described.append(f"{part.name}: {part.how}, none to come")
            continue
        p_start = 0
        if part.name != "base" and len(part.energies) >= 2:
            p_start = _steady_start([part.durations, part.energies])
        p_first_only = part.name == "base" and first_only
        for key, values in (("s", part.durations[p_start:]), ("kwh", part.energies[p_start:])):
            if p_first_only:
                central, lo, hi = _first_epoch_interval(values[0], part.count)
            else:
                head = part.head[0 if key == "s" else 1] if part.head is not None else None
                warmup = (
                    _Warmup(head, part.ages, part.next_age)
                    if head is not None and _stands_out(head, values)
                    else None
                )
                fc = _forecast(
                    values,
                    part.count,
                    units_per_value=part.units_per_value,
                    drift_prior_q=DRIFT_PRIOR_Q * part.epochs_per_value,
                    warmup=warmup,
                )
                central, lo, hi = fc.central, fc.low, fc.high
                if key == "kwh" and fc.decay_max:
                    notes.append(_warmup_note(fc))
            fewer, more = (central / part.count * k for k in part.spread)
            totals[key][0] += central
            totals[key][1] += lo**2 + fewer**2
            totals[key][2] += hi**2 + more**2
            if part.name == "base" and part.count > 0:
                base_per_epoch[key] = central / part.count * (part.units_per_value or 1.0)
        if part.name != "base":
            described.append(
                f"{part.name}: {part.how}, {part.count:g} to come x level of "
                f"{len(part.energies) - p_start}"
            )
    for plan, count in unseen:
        described.append(_add_unseen_plan(plan, count, base_per_epoch, totals))
    return _assembled(
        n=n,
        total_epochs=total_epochs,
        by_steps=by_steps,
        first_only=first_only,
        left_epochs=left_epochs,
        left_steps=left_steps,
        steady=len(k_vals),
        notes=notes + described,
        totals=totals,
        done=(done_s, done_kwh, done_g),
        intensity_g_per_kwh=intensity_g_per_kwh,
        remaining_epochs=remaining_epochs,
    )


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
