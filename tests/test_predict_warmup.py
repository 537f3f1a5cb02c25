"""A warm-up that is still settling after the first epoch (a geometric decay of its excess):
known answers without noise, coverage on noisy runs drawn from the modelled process, and what it
costs steady runs (nothing when the first epoch is like the rest; a wider interval only until
the epochs show the warm-up is over)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from test_predict import _forecast_of

from carbon_callbacks.core.local_level import (
    NOMINAL_COVERAGE,
    WARMUP_DECAY_GRID,
    WARMUP_DECAY_MAX,
    WARMUP_FIT_MAX_VALUES,
)
from carbon_callbacks.core.predict import EpochSample, predict_run


def _epoch(kwh: float) -> EpochSample:
    """An epoch of ``kwh`` kWh (and 1000 s per kWh, 1 g per kWh)."""
    return EpochSample(kwh * 1000, kwh, kwh)


def _settling(total: int, excess: float, ratio: float) -> list[EpochSample]:
    """Epoch k costs ``1 + excess x ratio^k``: epoch 0 ``1 + excess``, the rest settling."""
    return [_epoch(1.0 + excess * ratio**k) for k in range(total)]


def _total(trace: list[EpochSample]) -> float:
    return math.fsum(e.energy_kwh for e in trace)


# -- known answers -------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.15, 0.3])
def test_a_warm_up_still_settling_after_two_epochs_is_inside_the_interval(ratio):
    """Epoch 0 costs 3x the level, epoch 1 still 1.3x or 1.6x (like the GPU trace of 0.15-s
    epochs: 3.3x, then 1.3x): taking epoch 1 as the level over-predicts by 25-50 %, and the
    interval of that level alone missed the total; the settling warm-up's allowance covers it,
    while the forecast still assumes a one-off warm-up (nothing in two epochs says otherwise)."""
    trace = _settling(30, 2.0, ratio)
    truth = _total(trace)
    pred = predict_run(trace[:2], total_epochs=30, intensity_g_per_kwh=1)
    assert pred.energy_kwh == pytest.approx(3.0 + 29 * (1.0 + 2.0 * ratio))  # one-off
    assert pred.energy_kwh_low <= truth <= pred.energy_kwh_high
    assert "not ruled out" in pred.method


@pytest.mark.parametrize("ratio", WARMUP_DECAY_GRID[2::3])
def test_a_settling_warm_up_is_fitted_once_a_third_epoch_shows_it(ratio):
    """Without noise, from three epochs on the decay is pinned down to within what the noise
    prior (5 %) lets the epochs tell apart: the forecast is within 1 % of the total, where the
    level of the epochs after the warm-up alone is off by more than 2 % after 3 epochs (the
    warm-up's remainder in them)."""
    trace = _settling(30, 2.0, ratio)
    truth = _total(trace)
    for after in (3, 4, 6):
        pred = predict_run(trace[:after], total_epochs=30, intensity_g_per_kwh=1)
        assert abs(pred.energy_kwh - truth) / truth < 0.01, after
        assert pred.energy_kwh_low <= truth <= pred.energy_kwh_high
    level_only = _forecast_of([e.energy_kwh for e in trace[1:3]], 27).central
    assert abs(_total(trace[:3]) + level_only - truth) / truth > 0.02


def test_after_two_epochs_the_low_end_allows_the_slowest_decay():
    """Epochs 1.5 and 1.0 kWh, 8 to come: with the decay ratio up to q_max, the level may be
    as low as ``1.0 - 0.5 q_max / (1 - q_max)`` (the warm-up's excess still in epoch 1), and the
    interval's low end reaches below what that decay would make the run cost."""
    q = WARMUP_DECAY_MAX
    excess = 0.5 / (1 - q)  # W, with epoch k costing L + W q^k
    level_low = 1.0 - 0.5 * q / (1 - q)
    rest_at_q = 8 * level_low + excess * q**2 * (1 - q**8) / (1 - q)
    pred = predict_run([_epoch(1.5), _epoch(1.0)], total_epochs=10, intensity_g_per_kwh=1)
    assert pred.energy_kwh == pytest.approx(2.5 + 8 * 1.0)
    assert pred.energy_kwh_low <= 2.5 + rest_at_q
    assert 2.5 + rest_at_q < 2.5 + 8 * 0.85  # well below the noise-only interval's reach


def test_the_allowance_vanishes_once_the_epochs_show_the_warm_up_is_over():
    """A one-off warm-up (3x, then 1 +- 2 %): after 2 epochs every decay ratio is possible;
    after 5 the largest one not ruled out is small, and the forecast is a one-off warm-up's."""
    rng = random.Random(4)
    steady = [1.0 + rng.gauss(0.0, 0.02) for _ in range(8)]
    first = _forecast_of(steady[:1], 20, warmup=(3.0, (1,), 2))
    assert first.decay == 0.0 and first.decay_max == pytest.approx(WARMUP_DECAY_MAX)
    later = _forecast_of(steady[:4], 20, warmup=(3.0, (1, 2, 3, 4), 5))
    assert later.decay == 0.0
    assert later.decay_max is not None and later.decay_max < WARMUP_DECAY_MAX / 2


# -- coverage and width on noisy runs ----------------------------------------------------------
def test_settling_warm_ups_within_the_stated_range_are_covered():
    """Runs whose first epoch costs 1.5-3.5x the level and whose excess decays by a ratio drawn
    from 0 to q_max per epoch, 3 % noise, 10-60 epochs: the 90 % interval covers the total in
    at least 90 % of the runs after 2, 3 and 5 epochs each (the level-only interval: 50 %
    after 2 epochs on these runs)."""
    rng = random.Random(61)
    hits: dict[int, list[bool]] = {2: [], 3: [], 5: []}
    for _ in range(150):
        total = rng.randint(10, 60)
        excess, ratio = rng.uniform(0.5, 2.5), rng.uniform(0.0, WARMUP_DECAY_MAX)
        trace = [
            _epoch(max(1e-6, 1.0 + excess * ratio**k + rng.gauss(0.0, 0.03))) for k in range(total)
        ]
        truth = _total(trace)
        for after, out in hits.items():
            pred = predict_run(trace[:after], total_epochs=total, intensity_g_per_kwh=1)
            out.append(pred.energy_kwh_low <= truth <= pred.energy_kwh_high)
    for after, out in hits.items():
        assert statistics.fmean(out) >= NOMINAL_COVERAGE, (after, statistics.fmean(out))


def test_a_first_epoch_like_the_rest_leaves_the_interval_as_it_was():
    """No warm-up to speak of (first epoch within 10 % of the next): the prediction is the
    measured part plus the level-only forecast of the steady epochs, to the last digit."""
    rng = random.Random(9)
    trace = [_epoch(1.05)] + [_epoch(1.0 + rng.gauss(0.0, 0.03)) for _ in range(29)]
    for after in (2, 3, 5, 8):
        pred = predict_run(trace[:after], total_epochs=30, intensity_g_per_kwh=1)
        done = _total(trace[:after])
        fc = _forecast_of([e.energy_kwh for e in trace[1:after]], 30 - after)
        central, low, high = fc.central, fc.low, fc.high
        assert pred.energy_kwh == pytest.approx(done + central, rel=1e-12)
        assert pred.energy_kwh_low == pytest.approx(done + central - low, rel=1e-12)
        assert pred.energy_kwh_high == pytest.approx(done + central + high, rel=1e-12)
        assert "settling" not in pred.method and "not ruled out" not in pred.method


def test_a_one_off_warm_up_widens_the_interval_only_while_it_could_still_be_settling():
    """The same steady epochs (3 % noise) after a first epoch of 2x (a one-off warm-up) or of
    1x: after 2 epochs the 2x run's interval is much wider (a decay cannot be ruled out yet:
    2.7x with this seed); after 5 and 8 its median width is within 1.35x and 1.15x of the 1x
    run's (1.25x and 1.09x with this seed)."""
    rng = random.Random(17)
    widths: dict[int, list[float]] = {2: [], 5: [], 8: []}
    for _ in range(60):
        total = rng.randint(20, 80)
        steady = [_epoch(1.0 + rng.gauss(0.0, 0.03)) for _ in range(total - 1)]
        for after, out in widths.items():
            ratio = []
            for first in (2.0, 1.0):
                trace = [_epoch(first), *steady]
                pred = predict_run(trace[:after], total_epochs=total, intensity_g_per_kwh=1)
                ratio.append((pred.energy_kwh_high - pred.energy_kwh_low) / _total(trace))
            out.append(ratio[0] / ratio[1])
    factor = {after: statistics.median(out) for after, out in widths.items()}
    assert factor[2] > 1.5, factor
    assert factor[5] < 1.35 and factor[8] < 1.15, factor


def test_a_long_history_after_a_warm_up_leaves_out_the_epochs_it_could_still_touch():
    """Beyond WARMUP_FIT_MAX_VALUES epochs the decay is not fitted: the epochs that the slowest
    decay allowed could still affect are left out, and the forecast stays on the level."""
    total = WARMUP_FIT_MAX_VALUES + 200
    trace = _settling(total, 2.0, WARMUP_DECAY_MAX)
    after = WARMUP_FIT_MAX_VALUES + 20
    truth = _total(trace)
    pred = predict_run(trace[:after], total_epochs=total, intensity_g_per_kwh=1)
    assert pred.energy_kwh == pytest.approx(truth, rel=1e-4)
    assert pred.energy_kwh_low <= truth <= pred.energy_kwh_high
