"""The local-level model the run's forecast is made of (:mod:`carbon_callbacks.core.predict`).

A part's values (per epoch, per step or per phase run) are a *local level* plus noise:
``value_t = level_t + noise_t``, where the level may wander as a random walk,
``level_t = level_(t-1) + step_t`` with ``var(step) = q var(noise)``. The noise variance has a
prior of :data:`PRIOR_REL_SD` of the mean (weight :data:`PRIOR_DF`); the drift-to-noise ratio
``q`` is averaged over :data:`DRIFT_Q_GRID` with its posterior weight (Kalman filter
likelihood; prior around :data:`DRIFT_PRIOR_Q` per epoch). For each ``q`` the sum of the R
values to come has the variance ``s^2 (R^2 P + R + q R (R + 1) (2R + 1) / 6)``; the interval
is the central :data:`NOMINAL_COVERAGE` of that normal mixture, widened by ``t / z`` for the
noise variance's degrees of freedom. A warm-up that may still be settling adds a geometric
decay ``W ratio^age`` for each ratio of :data:`WARMUP_DECAY_GRID`.

:class:`_Series` keeps, for a growing series, what the forecast reads of it (running sums,
sorted copies, the filter's state per ``q``), each brought up to date when read: a forecast
costs the same however long the series.
"""

from __future__ import annotations

import math
import statistics
from array import array
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, MutableSequence, Sequence
from dataclasses import dataclass
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
#: Medians and deviations (warm-up and outlier tests) read at most this many values of a series
#: from the first one used: enough to judge, and a cost that does not grow with the run.
ROBUST_MAX_VALUES = 4096
#: Suffixes (and warm-up heads) per series whose derived state is kept; the oldest used goes.
_KEPT_PER_SERIES = 6


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
    """Sum of the warm-up decay's column ``ratio^age / (1 - ratio)`` (see
    :meth:`_Series.augmented_filtered`) over ``count`` values' worth from ``first_age`` on."""
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
    """Kalman filter of the local-level model with drift-to-noise ratio ``q`` and a free start
    level, from ``state`` on over ``values``, on scalars.

    Model: ``value_t = level_t + noise_t``, ``level_t = level_(t-1) + step_t``, noise with
    variance ``sigma^2``, steps with ``q sigma^2``; the start level is an unknown constant with a
    flat prior (the filter runs with it at 0 and tracks how it would shift the innovations and
    the level: see :class:`_Filtered`). Run over a series in two pieces, it ends in the state it
    ends in when run over the whole (the same operations in the same order), so the state is
    carried from one epoch to the next."""
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
    """Advance ``state`` over ``rows`` of (value, each column's entry): :func:`_level_scan`'s
    filter with regression columns (``value_t = level_t + theta_j x_jt + noise_t``, one column
    at a time, each coefficient free), in place (run in pieces, it ends as run whole)."""
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
    """The sum of ``r`` future values under each design, from the filter's results for each
    ``q`` of :data:`DRIFT_Q_GRID` (over ``n_values`` values): the start level alone (no
    columns), else the start level with each of ``n_columns`` columns in turn (``futures``: each
    column's sum over the values to come)."""
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

    def __init__(
        self, values: Iterable[float] = (), positions: MutableSequence[int] | None = None
    ) -> None:
        self.values = array("d", values)  # 8 B a value
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
    epochs_per_value: float,
    head: float | None,
    head_position: int,
    next_age: int,
) -> _Forecast:
    """The sum of ``count`` future units and its interval (half-widths), from ``values[k:]``.

    Each value stands for ``units_per_value`` units (1 for epochs or phase runs; steps per epoch
    for per-step costs) and comes ``epochs_per_value`` epochs after the one before it. The values
    follow the local-level model (see the module's docstring): the noise variance's prior is
    :data:`PRIOR_REL_SD` of the mean (weight :data:`PRIOR_DF`), the drift-to-noise ratio ``q``
    is averaged over :data:`DRIFT_Q_GRID` with its posterior weight (prior: normal in
    ``log10 q`` around :data:`DRIFT_PRIOR_Q` x ``epochs_per_value``, sd
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
    drift_prior_q = DRIFT_PRIOR_Q * epochs_per_value
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
