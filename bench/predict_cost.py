"""Milliseconds one prediction costs on the training thread, by history length.

    PYTHONPATH=. python bench/predict_cost.py

The tracker predicts after every epoch from its history (at most 4,096 epochs). This times, on
noisy synthetic histories of 100, 1,000 and 4,096 epochs (median of 5):

* ``predict_run``: the prediction made from the whole history;
* ``RunPredictor``: the tracker's, carried from epoch to epoch (the same prediction): the 5
  epochs after the history reached that length, each added and predicted.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from carbon_callbacks.core.predict import EpochSample, predict_run
from carbon_callbacks.core.predict_incremental import RunPredictor


def main() -> int:
    rng = random.Random(0)
    for n in (100, 1000, 4096):
        history = [
            EpochSample(1.0 + rng.gauss(0, 0.01), 0.001 * (1 + rng.gauss(0, 0.02)), 0.3, None, ())
            for _ in range(n + 5)
        ]
        settings = {"total_epochs": n + 100, "intensity_g_per_kwh": 300.0}
        full = []
        for _ in range(5):
            t0 = time.perf_counter()
            predict_run(history[:n], **settings)
            full.append((time.perf_counter() - t0) * 1e3)
        predictor = RunPredictor()
        grown: list[EpochSample] = []
        for e in history[: n - 1]:
            grown.append(e)
            predictor.predict(grown, **settings)
        carried = []
        for e in history[n - 1 :][:5]:
            grown.append(e)
            t0 = time.perf_counter()
            predictor.predict(grown, **settings)
            carried.append((time.perf_counter() - t0) * 1e3)
        print(
            f"{n:5d} epochs: predict_run {statistics.median(full):8.2f} ms, "
            f"RunPredictor {statistics.median(carried):6.2f} ms per prediction"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
