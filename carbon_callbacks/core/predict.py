"""Forecast of a whole run's duration, energy and CO2eq, with an interval, from the epochs so far.

The forecast is *measured so far + a forecast of the rest*, remade after every epoch. The rest
is split into parts that are forecast separately and added up:

* the **base** of each remaining epoch (the epoch minus the named phases measured inside it,
  e.g. ``"validation"``): the mean of the steady epochs measured so far;
* each **phase** (validation every k epochs, synthesis every m epochs...): its mean cost per
  occurrence times the occurrences still to come, read from the pattern seen so far (every
  epoch; every p-th epoch with offset o; or a plain rate when irregular). Without phase records,
  epochs that stand out by the same amount at a regular spacing are detected as periodic work.

*Warm-up*: the first epoch (CUDA context, compilation, cache filling, cudnn autotuning) is left
out of every per-epoch estimate once a later epoch exists, as are further leading epochs that
still stand out from the rest. With one epoch only, its cost is all there is, and the interval
is made wide and lopsided (see :data:`FIRST_EPOCH_LOW`).

*Step-based runs* (total steps known, epochs not): the same parts per optimisation step, times
the steps still to come. When both an epoch count and a step count are known, the one that ends
the run first is used.

*Interval* (nominal :data:`NOMINAL_COVERAGE`): for each part, a Student-t prediction interval of
the sum of the remaining values, ``t * s * sqrt(R^2/m + R)`` (uncertainty of the mean from m
values plus the spread of R future values), where the spread ``s`` is pooled with a prior
relative spread (:data:`PRIOR_REL_SD`, weight :data:`PRIOR_DF`) so that two look-alike epochs do
not give a falsely narrow interval, plus an allowance for slow drift (:data:`DRIFT_REL` of the
remainder). The parts' half-widths add in quadrature. CO2eq bounds are the energy bounds times
the intensity applied to the remainder (the forecast over the predicted span when the intensity
source has one): the intensity's own uncertainty is not in the interval.

The constants were set from first principles and checked, not fitted, on the recorded traces
of ``bench/predict_accuracy.py`` (``docs/benchmarks.md``, "Prediction accuracy").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: Nominal coverage of the interval (central: 5 % below, 5 % above).
NOMINAL_COVERAGE = 0.90
#: Prior relative standard deviation of one epoch (or one phase run) around the steady mean.
PRIOR_REL_SD = 0.05
#: Weight of that prior, in pseudo-degrees of freedom pooled with the observed spread.
PRIOR_DF = 2.0
#: Relative allowance for slow drift of the per-epoch cost over the rest of the run.
DRIFT_REL = 0.02
#: Largest lag-1 autocorrelation used to widen the interval for runs of similar epochs.
MAX_PHI = 0.8
#: With only the first (possibly warm-up) epoch measured, the remainder's interval is
#: ``[FIRST_EPOCH_LOW, FIRST_EPOCH_HIGH]`` times that epoch's cost per remaining epoch: a
#: warm-up epoch can be twice as slow as the steady ones, and rarely much cheaper.
FIRST_EPOCH_LOW = 0.5
FIRST_EPOCH_HIGH = 1.25
#: Leading epochs after the first that may also be left out when they still stand out.
MAX_EXTRA_WARMUP = 2
#: A value "stands out" when it is this many robust deviations (and at least
#: :data:`OUTLIER_MIN_REL` of the median) away from the median of the others.
OUTLIER_MADS = 4.0
OUTLIER_MIN_REL = 0.10
#: Name given to periodic work detected from epoch costs alone (no phase records).
DETECTED_PHASE = "periodic (detected)"


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


def _stands_out(value: float, others: Sequence[float]) -> bool:
    """True when ``value`` is far from the median of ``others`` (robust: median deviation)."""
    med = statistics.median(others)
    mad = 1.4826 * statistics.median(abs(o - med) for o in others)
    return abs(value - med) > max(OUTLIER_MADS * mad, OUTLIER_MIN_REL * abs(med))


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
class _Estimate:
    """Per-unit estimate of one series: mean, pooled spread, degrees of freedom, and the
    variance inflation for correlated neighbours ((1 + phi) / (1 - phi), AR(1))."""

    mean: float
    sd: float
    df: float
    m: int
    first_only: bool
    inflation: float = 1.0


def _lag1(values: Sequence[float]) -> float:
    """Lag-1 autocorrelation of ``values``, clamped to [0, MAX_PHI] (0 with fewer than 5)."""
    if len(values) < 5:
        return 0.0
    mean = statistics.fmean(values)
    dev = [v - mean for v in values]
    denom = math.fsum(d * d for d in dev)
    if denom <= 0:
        return 0.0
    r1 = math.fsum(a * b for a, b in zip(dev, dev[1:], strict=False)) / denom
    return min(MAX_PHI, max(0.0, r1))


def _estimate(values: Sequence[float], first_only: bool) -> _Estimate:
    m = len(values)
    mean = statistics.fmean(values)
    observed_var = statistics.variance(values) if m >= 2 else 0.0
    prior_var = (PRIOR_REL_SD * abs(mean)) ** 2
    df = PRIOR_DF + m - 1
    pooled = (PRIOR_DF * prior_var + (m - 1) * observed_var) / df
    phi = _lag1(values)
    return _Estimate(mean, math.sqrt(pooled), df, m, first_only, (1 + phi) / (1 - phi))


def _sum_interval(est: _Estimate, count: float) -> tuple[float, float, float]:
    """(central, low half-width, high half-width) of the sum of ``count`` future values."""
    if count <= 0:
        return 0.0, 0.0, 0.0
    central = count * est.mean
    if est.first_only:
        return central, central * (1 - FIRST_EPOCH_LOW), central * (FIRST_EPOCH_HIGH - 1)
    var = est.inflation * est.sd**2 * (count**2 / est.m + count) + (DRIFT_REL * central) ** 2
    half = t_quantile(0.5 + NOMINAL_COVERAGE / 2, est.df) * math.sqrt(var)
    return central, half, half


# -- the parts of an epoch -----------------------------------------------------------------------
@dataclass
class _Part:
    """One part of the remaining work: its per-occurrence costs and how often it recurs."""

    name: str
    durations: list[float]
    energies: list[float]
    count: float  # occurrences still to come
    how: str


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
        # the epochs observed (on either side of j)
        gap = max(j - observed.start, observed.stop - 1 - j)
        period = min(p for p in range(1, j + 2) if (j + 1) % p == 0 and p > gap)
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


def _detect_periodic(
    base_s: list[float], base_kwh: list[float], idx: list[int]
) -> tuple[list[int], float] | None:
    """Epochs (among ``idx``) whose energy stands out upwards at a regular spacing, and the
    period; None when there is no such pattern (needs 4+ steady epochs and 2+ sightings)."""
    if len(base_kwh) < 4:
        return None
    flagged = [
        i
        for k, i in enumerate(idx)
        if base_kwh[k] > statistics.median(base_kwh)
        and _stands_out(base_kwh[k], base_kwh[:k] + base_kwh[k + 1 :])
    ]
    if len(flagged) < 2 or len(flagged) > len(idx) // 2:
        return None
    period = math.gcd(*[b - a for a, b in zip(flagged, flagged[1:], strict=False)])
    if period < 2:
        return None
    expected = [i for i in idx if i % period == flagged[0] % period]
    return (flagged, float(period)) if expected == flagged else None


def predict_run(
    history: Sequence[EpochSample],
    *,
    total_epochs: int | None,
    intensity_g_per_kwh: float,
    total_steps: int | None = None,
    steps_done: int | None = None,
    first_epoch_index: int = 0,
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

    Returns:
        The prediction, or ``None`` when there is nothing to predict from (no epoch, or neither
        an epoch count nor a step count with steps per epoch).
    """
    n = len(history)
    if n == 0:
        return None
    done_s = math.fsum(e.duration_s for e in history)
    done_kwh = math.fsum(e.energy_kwh for e in history)
    done_g = math.fsum(e.co2_g for e in history)
    observed = range(first_epoch_index, first_epoch_index + n)

    # -- how much is left: epochs, or steps when those end the run first
    step_epochs = [e for e in history if e.steps]
    steps_per_epoch = statistics.median(e.steps for e in step_epochs) if step_epochs else None  # type: ignore[type-var]
    left_epochs = max(0, total_epochs - first_epoch_index - n) if total_epochs is not None else None
    left_steps = (
        max(0.0, float(total_steps - steps_done))
        if total_steps is not None and steps_done is not None and steps_per_epoch
        else None
    )
    by_steps = left_steps is not None and (
        left_epochs is None or left_steps < left_epochs * steps_per_epoch  # type: ignore[operator]
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
                )
            )
            s_vals = [s_vals[k] for k in rest]
            k_vals = [k_vals[k] for k in rest]
    if start:
        notes.append(
            "epoch 0 left out as warm-up"
            if start == 1
            else f"epochs 0-{start - 1} left out as warm-up"
        )

    if by_steps:
        steps = [e.steps or 0 for e in history]
        steady_steps = steps[steady]
        pairs = [(s, k, st) for s, k, st in zip(s_vals, k_vals, steady_steps, strict=False) if st]
        if not pairs:  # steps unknown for the steady epochs: fall back to the median epoch
            pairs = [(s, k, steps_per_epoch) for s, k in zip(s_vals, k_vals, strict=False)]
        base = _Part(
            "base",
            [s / st for s, _, st in pairs],
            [k / st for _, k, st in pairs],
            left_steps or 0.0,
            "per step",
        )
        parts.insert(0, base)
        steps_seen = sum(steps) or 1
        for name in phase_names:
            occ = [p for e in history for p in e.phases if p.name == name]
            parts.append(
                _Part(
                    name,
                    [p.duration_s for p in occ],
                    [p.energy_kwh for p in occ],
                    len(occ) / steps_seen * (left_steps or 0.0),
                    f"{len(occ) / steps_seen:.2g} per step",
                )
            )
        remaining_epochs = (left_steps or 0.0) / steps_per_epoch  # type: ignore[operator]
    else:
        parts.insert(0, _Part("base", s_vals, k_vals, float(left_epochs or 0), "per epoch"))
        remaining = range(observed.stop, observed.stop + (left_epochs or 0))
        for name in phase_names:
            occ_epochs = [
                observed[k] for k, e in enumerate(history) for p in e.phases if p.name == name
            ]
            occ = [p for e in history for p in e.phases if p.name == name]
            sched = _schedule(occ_epochs, observed, remaining)
            if sched is None:
                continue
            count, how = sched
            parts.append(
                _Part(name, [p.duration_s for p in occ], [p.energy_kwh for p in occ], count, how)
            )
        remaining_epochs = float(left_epochs or 0)

    # -- sum the parts, each with its interval
    totals = {"s": [done_s, 0.0, 0.0], "kwh": [done_kwh, 0.0, 0.0]}
    described = []
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
            central, lo, hi = _sum_interval(_estimate(values, p_first_only), part.count)
            totals[key][0] += central
            totals[key][1] += lo**2
            totals[key][2] += hi**2
        if part.name != "base":
            described.append(
                f"{part.name}: {part.how}, {part.count:g} to come x mean of "
                f"{len(part.energies) - p_start}"
            )
    unit = "step" if by_steps else "epoch"
    left = left_steps if by_steps else left_epochs
    base_from = "the first epoch only" if first_only else f"{len(k_vals)} steady epoch(s)"
    method = (
        f"measured {n} epoch(s) + {left:g} remaining {unit}(s) x mean per-{unit} cost of "
        f"{base_from}"
        + "".join(f"; {d}" for d in notes + described)
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
