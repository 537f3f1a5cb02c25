"""The predictor carried from epoch to epoch: what it keeps of a run gives the prediction a
fresh predictor makes from the whole history, through a growing list or a bounded window."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections import deque
from typing import Any

import pytest

from carbon_callbacks.core import local_level, predict_state
from carbon_callbacks.core import tracker as tracker_module
from carbon_callbacks.core.local_level import _median_and_limit
from carbon_callbacks.core.predict import EpochSample, PhaseSample, RunPredictor, predict_run


# -- randomised histories ------------------------------------------------------------------------
def _history(shape: str, seed: int, n: int) -> tuple[list[EpochSample], dict[str, Any]]:
    """``n`` epochs of one shape, and the run's settings."""
    rng = random.Random(f"{shape}-{seed}")
    level_s, level_k = rng.uniform(0.5, 30), rng.uniform(1e-4, 1e-1)
    noise = 0.0 if shape == "constant" else rng.choice([0.002, 0.01, 0.03, 0.1])
    drift = rng.choice([0.0, 0.001, 0.01]) if shape in ("noisy", "warmup", "steps") else 0.0
    warm = rng.choice([1.0, 3.0]) if shape == "constant" else rng.choice([0.7, 1.5, 3.0, 4.0])
    decay = rng.choice([0.0, 0.2, 1 / math.e, 0.6])  # a warm-up still settling, or not
    second_slow = rng.random() < 0.3
    val_every = rng.randint(1, 7) if shape in ("validation", "resumed", "steps_phases") else 0
    val_twice = rng.random() < 0.2
    detected_every = rng.randint(2, 9) if shape == "detected" else 0
    spikes = set()
    if shape in ("noisy", "warmup", "constant"):
        spikes = {rng.randrange(n) for _ in range(rng.choice([0, 1, 2, 3]))}
    steps_per_epoch = rng.choice([10, 100, 391])
    first = rng.randint(1, 40) if shape == "resumed" else 0
    out = []
    ls, lk = level_s, level_k
    for k in range(n):
        i = first + k
        ls *= math.exp(rng.gauss(0, drift))
        lk *= math.exp(rng.gauss(0, drift))
        f = 1.0 + (warm - 1.0) * (decay**k if k else 1.0)
        if second_slow and k == 1:
            f *= 1.6
        g = 1.0 + rng.gauss(0, noise)
        s, e = ls * f * g, lk * f * g * (1 + rng.gauss(0, noise / 2))
        if k in spikes:
            s, e = 2.5 * s, 2.5 * e
        if detected_every and (i + 1) % detected_every == 0:
            s, e = 1.25 * s, e * (1.3 + rng.gauss(0, noise))
        phases = []
        if val_every and (i + 1) % val_every == 0:
            for _ in range(2 if val_twice else 1):
                vs, ve = 0.2 * ls * (1 + rng.gauss(0, noise)), 0.2 * lk * (1 + rng.gauss(0, noise))
                phases.append(PhaseSample("validation", vs, ve, 300 * ve))
        if shape == "validation" and k == 0 and rng.random() < 0.5:
            phases.append(PhaseSample("sanity_check", 0.01 * ls, 0.01 * lk))
        if shape == "validation" and rng.random() < 0.02:  # a phase seen once mid-run, or rarely
            phases.append(PhaseSample("rare", 0.05 * ls, 0.05 * lk))
        s += sum(p.duration_s for p in phases)
        e += sum(p.energy_kwh for p in phases)
        steps: int | None = None
        if shape in ("steps", "steps_and_epochs", "steps_phases"):
            steps = steps_per_epoch
            if rng.random() < 0.05:
                steps = rng.choice([None, 0, steps_per_epoch // 3])
            elif rng.random() < 0.1:
                steps = rng.randint(1, steps_per_epoch)
        elif shape == "steps_unknown":  # none, or the first epoch's only
            steps = steps_per_epoch if k == 0 and seed % 2 else None
        elif rng.random() < 0.3:
            steps = steps_per_epoch
        if shape == "constant":
            s, e = ls * f, lk * f  # exact ties
        out.append(EpochSample(s, e, e * rng.uniform(100, 500), steps, tuple(phases)))
    settings: dict[str, Any] = {"first_epoch_index": first, "total_steps": None}
    if shape in ("steps", "steps_phases", "steps_unknown"):
        settings["total_epochs"] = None
        settings["total_steps"] = int(n * steps_per_epoch * rng.uniform(1.0, 1.5))
    elif shape == "steps_and_epochs":  # steps end the run first at some epochs, not at others
        settings["total_epochs"] = n + rng.randint(0, 20)
        settings["total_steps"] = int(n * steps_per_epoch * rng.uniform(0.8, 1.2))
    else:
        settings["total_epochs"] = first + n + rng.choice([0, 1, 10, 100, 1000])
    return out, settings


SHAPES = (
    "warmup",
    "validation",
    "noisy",
    "steps",
    "steps_and_epochs",
    "steps_phases",
    "steps_unknown",
    "detected",
    "resumed",
    "constant",
)


def _answer(predict_: Any, history: Any, **kwargs: Any) -> Any:
    """The prediction as a dict (every field, exactly; NaN as "nan"), or None."""
    pred = predict_(history, **kwargs)
    if pred is None:
        return None
    return {
        k: "nan" if isinstance(v, float) and math.isnan(v) else v
        for k, v in dataclasses.asdict(pred).items()
    }


def _fed(history: list[EpochSample], settings: dict[str, Any], window: int | None = None):
    """Feed ``history`` epoch by epoch to one predictor, through a list or a bounded window, as
    the tracker does; yield (epochs so far, the window, its keyword arguments, its prediction)."""
    predictor = RunPredictor()
    rng = random.Random(len(history))
    grown: Any = deque(maxlen=window) if window else []
    steps_done = 0
    for i, e in enumerate(history):
        grown.append(e)
        steps_done += e.steps or 0
        kwargs = {
            **settings,
            "intensity_g_per_kwh": rng.uniform(10, 800),
            "steps_done": steps_done if settings["total_steps"] is not None else None,
        }
        kwargs["first_epoch_index"] = settings["first_epoch_index"] + i + 1 - len(grown)
        yield history[: i + 1], grown, kwargs, predictor.predict(grown, **kwargs)


# -- carried = made afresh ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_carried_predictions_are_those_made_afresh_at_every_epoch(shape):
    history, settings = _history(shape, 0, 120)
    made = 0
    for _, grown, kwargs, pred in _fed(history, settings):
        fresh = predict_run(list(grown), **kwargs)
        assert pred == fresh or (math.isnan(pred.energy_kwh) and math.isnan(fresh.energy_kwh))
        made += pred is not None
    assert made == (0 if shape == "steps_unknown" and not 0 % 2 else len(history))


def test_a_bounded_window_is_followed_and_forecast_from_every_epoch_seen():
    """Through a window of the last 50 epochs, the forecast is the one made from the whole run;
    the measured figures and ``after_epochs`` are the window's."""
    history, settings = _history("validation", 6, 150)
    for run, window, kwargs, pred in _fed(history, settings, window=50):
        whole = predict_run(run, **{**kwargs, "first_epoch_index": settings["first_epoch_index"]})
        dropped = math.fsum(e.energy_kwh for e in run[: len(run) - len(window)])
        assert pred.after_epochs == len(window)
        assert pred.measured_energy_kwh == pytest.approx(
            math.fsum(e.energy_kwh for e in window), rel=1e-12
        )
        for field in ("energy_kwh", "energy_kwh_low", "energy_kwh_high"):
            assert getattr(pred, field) + dropped == pytest.approx(getattr(whole, field), rel=1e-12)
        assert pred.method.split("x", 1)[1] == whole.method.split("x", 1)[1]


def test_another_history_starts_the_predictor_again():
    history, settings = _history("validation", 5, 80)
    other = _history("noisy", 5, 80)[0]
    kwargs = {**settings, "intensity_g_per_kwh": 100.0}
    predictor = RunPredictor()
    for m in range(1, 41):
        predictor.predict(history[:m], **kwargs)
    for h in (history[:39] + [other[39]], other[:40], other[:41], history[:20]):
        assert _answer(predictor.predict, h, **kwargs) == _answer(predict_run, h, **kwargs)


def test_non_finite_epochs_give_a_non_finite_forecast_without_raising():
    history, settings = _history("noisy", 2, 30)
    history[12] = dataclasses.replace(history[12], energy_kwh=math.nan)
    preds = [pred for *_, pred in _fed(history, settings)]
    assert math.isfinite(preds[11].energy_kwh) and math.isnan(preds[-1].measured_energy_kwh)


# -- the tracker ---------------------------------------------------------------------------------
SIMULATED = {
    "sim_gpu": "test GPU",
    "sim_gpu_watts": 300.0,
    "sim_gpu_util": 1.0,
    "sim_cpu": "test CPU",
    "sim_cpu_tdp": 100.0,
    "sim_cpu_util": 1.0,
}


def test_past_its_history_the_tracker_predicts_from_the_whole_run(monkeypatch):
    """The tracker's history keeps 25 epochs here: its predictions after 40 are made from all
    40 (the first one left out as warm-up), with the whole run's measured figures."""
    monkeypatch.setattr(tracker_module, "_HISTORY_LEN", 25)
    seen: list[EpochSample] = []
    original = RunPredictor.predict

    def recording(self: RunPredictor, history: Any, **kwargs: Any) -> Any:
        if not seen or history[-1] is not seen[-1]:
            seen.append(history[-1])
        return original(self, history, **kwargs)

    monkeypatch.setattr(RunPredictor, "predict", recording)
    tracker = tracker_module.CarbonTracker(
        log_dir=None, verbose=0, zone="DE", offline=True, epochs=60, **SIMULATED
    )
    for i in range(40):
        tracker.epoch_start()
        if (i + 1) % 3 == 0:
            with tracker.phase("validation"):
                pass
        tracker.epoch_end(steps=10)
    pred = tracker.prediction
    tracker.stop()
    whole = predict_run(seen, total_epochs=60, intensity_g_per_kwh=pred.intensity_g_per_kwh)
    assert len(seen) == 40 and pred.after_epochs == 40
    for field in ("energy_kwh", "energy_kwh_low", "energy_kwh_high", "measured_energy_kwh"):
        assert getattr(pred, field) == pytest.approx(getattr(whole, field), rel=1e-9)


# -- the helpers ---------------------------------------------------------------------------------
def test_median_and_deviation_by_selection_match_the_sorting_ones():
    rng = random.Random(0)
    for _ in range(2000):
        n = rng.randint(1, 40)
        pool = [rng.choice([0.0, 1.0, 2.5, -1.0]) for _ in range(3)]
        values = [
            rng.choice(pool) if rng.random() < 0.4 else rng.gauss(0, 1) * 10 ** rng.randint(-3, 3)
            for _ in range(n)
        ]
        assert local_level._median_and_limit_sorted(sorted(values)) == _median_and_limit(values)
        assert local_level._median_of_sorted(sorted(values)) == statistics.median(values)
        steps = [rng.choice([1, 10, 391]) for _ in range(n)]
        counts = {v: steps.count(v) for v in set(steps)}
        assert predict_state._median_of_counts(counts) == statistics.median(steps)


def test_running_sums_are_correctly_rounded():
    rng = random.Random(1)
    for _ in range(300):
        values = [rng.gauss(0, 1) * 10 ** rng.randint(-20, 20) for _ in range(rng.randint(1, 60))]
        total, part = local_level._ExactSum(), local_level._ExactSum()
        for k, x in enumerate(values):
            total.add(x)
            if k < len(values) // 2:
                part.add(x)
        assert total.value() == math.fsum(values)
        assert total.value(part) == math.fsum(values[len(values) // 2 :])


def test_counting_helpers():
    for start in range(0, 12):
        for stop in range(start, 30):
            for period in range(1, 8):
                for offset in range(period):
                    want = sum(1 for i in range(start, stop) if i % period == offset)
                    assert predict_state._count_in(range(start, stop), period, offset) == want
    for m in range(1, 200):
        for gap in range(0, 60, 7):
            found = [p for p in range(1, m + 1) if m % p == 0 and p > gap]
            assert predict_state._smallest_divisor_above(m, gap) == (min(found) if found else None)
