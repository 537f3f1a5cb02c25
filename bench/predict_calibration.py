"""Calibration of the prediction interval on synthetic runs whose generating process is known.

    PYTHONPATH=. python bench/predict_calibration.py                 # all processes
    PYTHONPATH=. python bench/predict_calibration.py --runs 100 --seed 7 iid-5 drift

Each synthetic run has a warm-up first epoch (0.7-2.5 x the steady cost) followed by steady
epochs drawn from one process (mean cost 1 kWh per epoch, so energies are relative), a length
drawn from 10-300 epochs, and is predicted by :func:`carbon_callbacks.core.predict.predict_run`
after n epochs; *coverage* is the share of runs whose actual total lies in the 90 % interval,
*width* the median of ``(high - low) / actual total``, *error* the median of
``|predicted - actual| / actual``.

Processes (relative to the steady cost):

* ``iid-2``, ``iid-5``, ``iid-8``: independent normal noise of 2, 5 and 8 %;
* ``ar1``: autocorrelated noise (AR(1), phi 0.6, marginal sd 4 %), e.g. a shared machine;
* ``drift``: a level that wanders as a random walk (0.5 % per epoch) plus 2 % noise (the
  predictor's own model, with a drift above the centre of its prior);
* ``spikes``: 2 % noise, and 5 % of the epochs 25 % dearer (another job, a checkpoint);
* ``step-5``, ``step-10``: the level changes by +-5 or +-10 % at an epoch drawn uniformly over
  the run (a change that nothing before it announces: outside the model);
* ``trend``: a linear trend of +-10 % over the run plus 2 % noise (outside the model);
* ``ramp``: a lagging start, 0.5 -> 1 with a time constant of 3 epochs, plus 3 % noise (the
  short-epoch GPU trace's under-measured start; outside the model until it shows);
* ``settle``: a warm-up that is still settling: the first epoch's excess ``W`` (the warm-up
  factor minus 1) decays as ``W q^k`` over the epochs k after it, ``q`` drawn uniformly from
  0 to 1/e (the predictor's range for a settling warm-up), plus 3 % noise;
* ``settle-slow``: the same with ``q`` from 1/e to 0.7 (slower than the predictor allows).

The predictor's constants were chosen while looking at these process families (a different
random seed, the steady part only); the figures here use other draws, so they are held out in
the draws, not in the kind of process. The recorded traces of ``bench/predict_accuracy.py`` are
the evaluation on real runs.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable

from carbon_callbacks.core.predict import NOMINAL_COVERAGE, EpochSample, predict_run


def _iid(sd: float) -> Callable[[int, random.Random], list[float]]:
    return lambda n, rng: [rng.gauss(1.0, sd) for _ in range(n)]


def _ar1(n: int, rng: random.Random, phi: float = 0.6, sd: float = 0.04) -> list[float]:
    x, out = rng.gauss(0.0, sd), []
    for _ in range(n):
        out.append(1.0 + x)
        x = phi * x + rng.gauss(0.0, sd * math.sqrt(1 - phi**2))
    return out


def _drift(n: int, rng: random.Random, step: float = 0.005, sd: float = 0.02) -> list[float]:
    level, out = 1.0, []
    for _ in range(n):
        out.append(level + rng.gauss(0.0, sd))
        level += rng.gauss(0.0, step)
    return out


def _spikes(n: int, rng: random.Random) -> list[float]:
    return [rng.gauss(1.0, 0.02) + (0.25 if rng.random() < 0.05 else 0.0) for _ in range(n)]


def _step(size: float) -> Callable[[int, random.Random], list[float]]:
    def gen(n: int, rng: random.Random) -> list[float]:
        at, jump = rng.randrange(n), rng.choice([-size, size])
        return [1.0 + (jump if i >= at else 0.0) + rng.gauss(0.0, 0.02) for i in range(n)]

    return gen


def _trend(n: int, rng: random.Random) -> list[float]:
    slope = rng.choice([-1, 1]) * 0.10 / n
    return [1.0 + slope * i + rng.gauss(0.0, 0.02) for i in range(n)]


def _ramp(n: int, rng: random.Random) -> list[float]:
    return [1.0 - 0.5 * math.exp(-i / 3) + rng.gauss(0.0, 0.03) for i in range(n)]


#: name -> (steady epochs generator, True when the predictor's model covers the process).
PROCESSES: dict[str, tuple[Callable[[int, random.Random], list[float]], bool]] = {
    "iid-2": (_iid(0.02), True),
    "iid-5": (_iid(0.05), True),
    "iid-8": (_iid(0.08), True),
    "ar1": (_ar1, False),
    "drift": (_drift, True),
    "spikes": (_spikes, False),
    "step-5": (_step(0.05), False),
    "step-10": (_step(0.10), False),
    "trend": (_trend, False),
    "ramp": (_ramp, False),
    "settle": (_iid(0.03), True),
    "settle-slow": (_iid(0.03), False),
}
#: processes whose first epoch's excess decays geometrically over the next epochs: the range
#: the decay ratio is drawn from (added by :func:`synthetic_run`, which knows the excess).
DECAY_RATIOS: dict[str, tuple[float, float]] = {
    "settle": (0.0, 1 / math.e),
    "settle-slow": (1 / math.e, 0.7),
}


def synthetic_run(process: str, epochs: int, rng: random.Random) -> list[EpochSample]:
    """A run of ``epochs`` epochs: a warm-up epoch, then the process's steady epochs (kWh)."""
    gen, _ = PROCESSES[process]
    steady = gen(epochs - 1, rng)
    warm = rng.uniform(0.7, 2.5)
    decay = DECAY_RATIOS.get(process)
    if decay is not None:  # the first epoch's excess decays geometrically over the next ones
        ratio = rng.uniform(*decay)
        steady = [v + (warm - 1.0) * ratio ** (k + 1) for k, v in enumerate(steady)]
    steady = [max(1e-6, v) for v in steady]
    return [EpochSample(k, k, k) for k in [warm, *steady]]


def calibrate(
    process: str, after: list[int], runs: int, seed: int, lengths: tuple[int, int] = (10, 300)
) -> list[dict[str, float | int | str]]:
    """Coverage, median relative width and median error of the predictions after each n."""
    rng = random.Random(f"{seed}-{process}")
    cases: dict[int, list[tuple[bool, float, float]]] = {n: [] for n in after}
    for _ in range(runs):
        epochs = rng.randint(*lengths)
        trace = synthetic_run(process, epochs, rng)
        actual = math.fsum(e.energy_kwh for e in trace)
        for n in after:
            if n >= epochs:
                continue
            pred = predict_run(trace[:n], total_epochs=epochs, intensity_g_per_kwh=1.0)
            assert pred is not None
            cases[n].append(
                (
                    pred.energy_kwh_low <= actual <= pred.energy_kwh_high,
                    (pred.energy_kwh_high - pred.energy_kwh_low) / actual,
                    abs(pred.energy_kwh - actual) / actual,
                )
            )
    return [
        {
            "process": process,
            "after": n,
            "cases": len(c),
            "coverage": sum(x[0] for x in c) / len(c),
            "median_width": statistics.median(x[1] for x in c),
            "median_error": statistics.median(x[2] for x in c),
        }
        for n, c in cases.items()
        if c
    ]


def markdown(rows: list[dict[str, float | int | str]], after: list[int]) -> str:
    """One line per process: coverage / median width / median error after each n epochs."""
    head = "| process | in the model |" + "".join(f" after {n} |" for n in after)
    lines = [
        head,
        "|---|---|" + "---|" * len(after),
    ]
    for process in dict.fromkeys(str(r["process"]) for r in rows):
        cells = {int(r["after"]): r for r in rows if r["process"] == process}
        line = f"| {process} | {'yes' if PROCESSES[process][1] else 'no'} |"
        for n in after:
            r = cells.get(n)
            line += (
                f" {100 * float(r['coverage']):.0f} % / {100 * float(r['median_width']):.1f} % "
                f"/ {100 * float(r['median_error']):.1f} % |"
                if r
                else " |"
            )
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Interval calibration on synthetic runs.")
    parser.add_argument("processes", nargs="*", choices=[*PROCESSES, []], default=None)
    parser.add_argument("--after", type=int, nargs="+", default=[2, 3, 5, 8, 12, 20])
    parser.add_argument("--runs", type=int, default=400, help="synthetic runs per process")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    rows = []
    for process in args.processes or list(PROCESSES):
        rows += calibrate(process, args.after, args.runs, args.seed)
    print(
        f"coverage of the {round(100 * NOMINAL_COVERAGE)} % interval / median width / median "
        f"error, {args.runs} runs of 10-300 epochs per process, seed {args.seed}\n"
    )
    print(markdown(rows, args.after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
