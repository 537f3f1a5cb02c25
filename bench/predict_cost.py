"""Milliseconds one prediction costs on the training thread, by history length.

    PYTHONPATH=. python bench/predict_cost.py

The tracker predicts after every epoch from its history (at most 4,096 epochs); this times
``predict_run`` on noisy synthetic histories of 100, 1,000 and 4,096 epochs (median of 5).
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from carbon_callbacks.core.predict import EpochSample, predict_run


def main() -> int:
    rng = random.Random(0)
    for n in (100, 1000, 4096):
        history = [
            EpochSample(1.0 + rng.gauss(0, 0.01), 0.001 * (1 + rng.gauss(0, 0.02)), 0.3, None, [])
            for _ in range(n)
        ]
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            predict_run(history, total_epochs=n + 100, intensity_g_per_kwh=300.0)
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"{n:5d} epochs: {statistics.median(times):8.1f} ms per prediction")
    return 0


if __name__ == "__main__":
    sys.exit(main())
