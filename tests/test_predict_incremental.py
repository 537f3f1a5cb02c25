"""RunPredictor gives predict_run's predictions, to the bit, at every epoch: side by side over
long randomised histories of every shape the predictor tells apart (a warm-up, settling or not;
validation every k epochs, twice per epoch, once at the start, once mid-run; noise, drift and
spikes; step-based runs, steps ending the run first, epochs without steps; periodic epochs
without phase records; resumed runs; exact ties), through changes that are not appends, and in
the tracker. Its helpers match the functions they stand for."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections import deque
from typing import Any

import pytest

from carbon_callbacks.core import predict_incremental as inc
from carbon_callbacks.core import tracker as tracker_module
from carbon_callbacks.core.predict import (
    EpochSample,
    PhaseSample,
    _median_and_limit,
    _schedule,
    predict_run,
)
from carbon_callbacks.core.predict_incremental import RunPredictor


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


def _answer(predict: Any, history: Any, **kwargs: Any) -> Any:
    """The prediction as a dict (every field, exactly; NaN as "nan"), None, or the exception's
    repr."""
    try:
        pred = predict(history, **kwargs)
    except Exception as exc:  # noqa: BLE001 - predict_run's failures must be matched too
        return repr(exc)
    if pred is None:
        return None
    return {
        k: "nan" if isinstance(v, float) and math.isnan(v) else v
        for k, v in dataclasses.asdict(pred).items()
    }


def _side_by_side(
    history: list[EpochSample],
    settings: dict[str, Any],
    predictor: RunPredictor,
    seed: int = 0,
    container: Any = list,
) -> int:
    """Feed ``history`` epoch by epoch to ``predictor`` (one growing ``container``, as the
    tracker does) and to ``predict_run``, with a random intensity per epoch; assert they agree
    at every epoch. Returns how many predictions were made."""
    rng = random.Random(seed)
    grown = container()
    steps_done = 0
    made = 0
    for e in history:
        grown.append(e)
        steps_done += e.steps or 0
        kwargs = {
            **settings,
            "intensity_g_per_kwh": rng.uniform(10, 800),
            "steps_done": steps_done if settings["total_steps"] is not None else None,
        }
        full = _answer(predict_run, list(grown), **kwargs)
        carried = _answer(predictor.predict, grown, **kwargs)
        assert carried == full, (len(grown), kwargs)
        made += full is not None
    return made


# -- the same predictions -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", SHAPES)
def test_identical_to_predict_run_at_every_epoch(shape, seed):
    history, settings = _history(shape, seed, 260)
    predictor = RunPredictor()
    made = _side_by_side(history, settings, predictor, seed)
    if shape == "steps_unknown":
        # no steps: nothing to predict; the first epoch's only: predict_run's fallback
        assert made == (len(history) if seed % 2 else 0)
        return
    if shape in ("detected", "validation"):
        return  # predict_run answers detected periodic epochs, and a once-only phase's failures
    # carried after the first epoch, which predict_run answers
    assert predictor.recomputed == 1 and predictor.carried == made - 1


def test_identical_over_a_thousand_epochs_in_a_deque():
    history, settings = _history("warmup", 7, 1000)
    history = [dataclasses.replace(e, phases=()) for e in history]
    predictor = RunPredictor()
    _side_by_side(history, settings, predictor, 7, container=deque)
    assert predictor.recomputed == 1 and predictor.carried == 999


def test_identical_when_only_a_few_suffixes_are_kept(monkeypatch):
    monkeypatch.setattr(inc, "_KEPT_PER_SERIES", 1)  # every other look-up starts from scratch
    for shape in ("warmup", "steps_phases", "noisy"):
        history, settings = _history(shape, 3, 150)
        _side_by_side(history, settings, RunPredictor(), 3)


def test_inputs_it_does_not_follow_are_left_to_predict_run():
    history, settings = _history("steps", 4, 30)
    odd = [dataclasses.replace(e, steps=float(e.steps)) if e.steps else e for e in history]
    nan = list(history)
    nan[12] = dataclasses.replace(nan[12], energy_kwh=math.nan)
    for shaped in (odd, nan):
        predictor = RunPredictor()
        _side_by_side(shaped, settings, predictor)
        assert predictor.carried <= 11  # only before the first such epoch


def test_a_changed_history_or_setting_starts_again_from_scratch():
    history, settings = _history("validation", 5, 80)
    predictor = RunPredictor()
    kwargs = {**settings, "intensity_g_per_kwh": 100.0}

    def both(h: list[EpochSample], **changes: Any) -> None:
        assert _answer(predictor.predict, h, **{**kwargs, **changes}) == _answer(
            predict_run, list(h), **{**kwargs, **changes}
        )

    for m in range(1, 41):
        both(history[:m])
    assert (predictor.carried, predictor.recomputed) == (39, 1)
    # the last epoch replaced; then the first; then the whole history another run's
    other = _history("noisy", 5, 80)[0]
    for h in (
        history[:39] + [other[39]],
        [other[0]] + history[1:40],
        other[:40],
    ):
        before = predictor.recomputed
        both(h)
        assert predictor.recomputed == before + 1
    both(other[:41])  # continued: followed again
    assert predictor.recomputed == 4 and predictor.carried == 40
    both(other[:42], total_epochs=settings["total_epochs"] + 5)  # a setting changed
    both(other[:42], first_epoch_index=3)
    assert predictor.recomputed == 6
    for m in range(43, 60):  # and followed again as the history grows
        both(other[:m], first_epoch_index=3)
    assert predictor.carried == 40 + 17


def test_a_bounded_history_that_drops_its_oldest_is_recomputed():
    history, settings = _history("warmup", 6, 120)
    predictor = RunPredictor()
    bounded: deque[EpochSample] = deque(maxlen=50)
    rng = random.Random(6)
    for i, e in enumerate(history):
        bounded.append(e)
        kwargs = {
            **settings,
            "intensity_g_per_kwh": rng.uniform(10, 800),
            "first_epoch_index": max(0, i + 1 - 50),
        }
        assert _answer(predictor.predict, bounded, **kwargs) == _answer(
            predict_run, list(bounded), **kwargs
        )
    assert predictor.carried == 49 and predictor.recomputed == 71


# -- the tracker -----------------------------------------------------------------------------------
SIMULATED = {
    "sim_gpu": "test GPU",
    "sim_gpu_watts": 300.0,
    "sim_gpu_util": 1.0,
    "sim_cpu": "test CPU",
    "sim_cpu_tdp": 100.0,
    "sim_cpu_util": 1.0,
}


@pytest.mark.parametrize("resumed", [False, True])
def test_the_tracker_predicts_what_predict_run_predicts(monkeypatch, resumed):
    """Each epoch's prediction comes from the tracker's RunPredictor, and is predict_run's for
    the same arguments, through a bounded history that fills and then slides."""
    monkeypatch.setattr(tracker_module, "_HISTORY_LEN", 25)
    original = RunPredictor.predict
    calls = []

    def checked(self: RunPredictor, history: Any, **kwargs: Any) -> Any:
        carried = original(self, history, **kwargs)
        assert _answer(lambda *a, **k: carried, history, **kwargs) == _answer(
            predict_run, list(history), **kwargs
        )
        calls.append((self.carried, self.recomputed))
        return carried

    monkeypatch.setattr(RunPredictor, "predict", checked)
    settings = {"verbose": 0, "zone": "DE", "offline": True, "epochs": 60, **SIMULATED}
    tracker = tracker_module.CarbonTracker(log_dir=None, **settings)
    if resumed:
        tracker.load_state_dict(_state_after_epochs(settings, 3))
        calls.clear()
    for i in range(40):
        tracker.epoch_start()
        if (i + 1) % 3 == 0:
            with tracker.phase("validation"):
                pass
        tracker.epoch_end(steps=10)
        assert tracker.prediction is not None
    tracker.stop()
    assert len(calls) == 40
    assert calls[24] == (24, 1)  # carried while the history fills
    assert calls[-1] == (24, 16)  # then predict_run's, as it slides


def _state_after_epochs(settings: dict[str, Any], epochs: int) -> dict[str, Any]:
    first = tracker_module.CarbonTracker(log_dir=None, **settings)
    for _ in range(epochs):
        first.epoch_start()
        first.epoch_end(steps=10)
    state = first.state_dict()
    first.stop("interrupted")
    return state


# -- the helpers -----------------------------------------------------------------------------------
def test_median_and_deviation_by_selection_match_the_sorting_ones():
    rng = random.Random(0)
    for _ in range(3000):
        n = rng.randint(1, 40)
        pool = [rng.choice([0.0, 1.0, 2.5, -1.0]) for _ in range(3)]
        values = [
            rng.choice(pool) if rng.random() < 0.4 else rng.gauss(0, 1) * 10 ** rng.randint(-3, 3)
            for _ in range(n)
        ]
        got = inc._median_and_limit_sorted(sorted(values))
        assert got == _median_and_limit(values)
        assert inc._median_of_sorted(sorted(values)) == statistics.median(values)


def test_exact_partial_sums_give_fsum():
    rng = random.Random(1)
    for _ in range(500):
        values = [rng.gauss(0, 1) * 10 ** rng.randint(-20, 20) for _ in range(rng.randint(1, 60))]
        partials: list[float] = []
        for x in values:
            inc._add_exact(partials, x)
        assert math.fsum(partials) == math.fsum(values)


def test_phase_schedule_by_counting_matches_schedule():
    rng = random.Random(2)
    checked = 0
    for _ in range(4000):
        start = rng.choice([0, 0, rng.randint(1, 30)])
        n = rng.randint(1, 60)
        observed = range(start, start + n)
        remaining = range(observed.stop, observed.stop + rng.choice([0, 1, 7, 100]))
        every = rng.randint(1, 12)
        offset = rng.randrange(every)
        phase = inc._Phase()
        occ_epochs = []
        for i in observed:
            runs = 0
            if i % every == offset and rng.random() < 0.97:
                runs = rng.choice([1, 1, 1, 2])
            elif rng.random() < 0.02:
                runs = 1
            if runs:
                phase.add(i - start, [1.0] * runs, [1.0] * runs)
                occ_epochs += [i] * runs
        if not occ_epochs:
            continue
        try:
            want: Any = _schedule(occ_epochs, observed, remaining)
        except ValueError as exc:
            want = repr(exc)
        try:
            got: Any = phase.schedule(observed, remaining)
        except ValueError as exc:
            got = repr(exc)
        assert got == want and type(got) is type(want), (occ_epochs, observed, remaining)
        if isinstance(want, tuple):
            assert type(got[0]) is type(want[0])
        checked += 1
    assert checked > 3000


def test_counting_helpers():
    for start in range(0, 12):
        for stop in range(start, 30):
            for period in range(1, 8):
                for offset in range(period):
                    want = sum(1 for i in range(start, stop) if i % period == offset)
                    assert inc._count_in(range(start, stop), period, offset) == want
    for m in range(1, 200):
        for gap in range(0, 60, 7):
            found = [p for p in range(1, m + 1) if m % p == 0 and p > gap]
            assert inc._smallest_divisor_above(m, gap) == (min(found) if found else None)


@pytest.mark.parametrize("every", [1, 3, 7])
@pytest.mark.parametrize("work_ratio", [None, 0.5])
def test_with_plans_the_carried_state_answers_as_predict_run(every, work_ratio):
    from carbon_callbacks.core.predict import EpochSample, PhasePlan, PhaseSample

    plans = [PhasePlan("validation", every, work_ratio), PhasePlan("checkpoint", 5, 0.1)]
    rng = random.Random(every)
    history = []
    runner = inc.RunPredictor()
    for i in range(40):
        phases = ()
        if (i + 1) % every == 0:
            phases = (PhaseSample("validation", 5.0 + rng.random(), 0.2 + 0.01 * rng.random()),)
        kwh = (3.0 if i == 0 else 1.0) + 0.05 * rng.random()
        history.append(EpochSample(10.0 + rng.random(), kwh, kwh * 100, None, phases))
        got = runner.predict(history, total_epochs=60, intensity_g_per_kwh=100.0, plans=plans)
        want = predict_run(history, total_epochs=60, intensity_g_per_kwh=100.0, plans=plans)
        assert got == want, i
        assert "(planned)" in got.method
    assert runner.recomputed == 1 and runner.carried == 39  # carried, not predict_run


@pytest.mark.parametrize("by_steps", [True, False])
@pytest.mark.parametrize("work_ratio", [None, 0.5])
def test_with_step_plans_the_carried_state_answers_as_predict_run(by_steps, work_ratio):
    from carbon_callbacks.core.predict import EpochSample, PhasePlan, PhaseSample

    plans = [PhasePlan("evaluation", every_steps=25, work_ratio=work_ratio)]
    rng = random.Random(7)
    history = []
    runner = inc.RunPredictor()
    run = {"total_epochs": None if by_steps else 60, "total_steps": 600}
    for i in range(40):
        runs = (i + 1) * 10 // 25 - i * 10 // 25  # evaluations after steps 25, 50, ...
        phases = tuple(
            PhaseSample("evaluation", 5.0 + rng.random(), 0.2 + 0.01 * rng.random())
            for _ in range(runs)
        )
        kwh = (3.0 if i == 0 else 1.0) + 0.05 * rng.random()
        history.append(EpochSample(10.0 + rng.random(), kwh, kwh * 100, 10, phases))
        kwargs = {"intensity_g_per_kwh": 100.0, "steps_done": 10 * (i + 1), "plans": plans}
        got = runner.predict(history, **run, **kwargs)
        want = predict_run(history, **run, **kwargs)
        assert got == want, i
        assert "every 25 steps (planned)" in got.method
