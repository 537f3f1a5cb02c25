"""Memory over a long run: 10,000 epochs with a stand-in sensor (CPU only).

    PYTHONPATH=. python bench/memory_soak.py --epochs 10000
    PYTHONPATH=. python bench/memory_soak.py --epochs 4200 --checkpoints 100,1000,2000,4096

Drives the core tracker through ``--epochs`` epochs (with the run log written to a temporary
folder) and reports Python heap (tracemalloc) and RSS at checkpoints, after a warm-up.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import tracemalloc

import psutil

from carbon_callbacks.core.sensors.simulated import ConstantPowerSensor
from carbon_callbacks.core.tracker import CarbonTracker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument(
        "--checkpoints",
        default="100,1000,2000,5000",
        help="epochs (comma-separated) after which to measure, besides the last",
    )
    args = parser.parse_args()
    proc = psutil.Process()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sensors = [
            ConstantPowerSensor("gpu:0", "gpu", "stand-in GPU", 300.0),
            ConstantPowerSensor("cpu:model", "cpu", "stand-in CPU", 50.0),
        ]
        tracker = CarbonTracker(
            epochs=args.epochs, sensors=sensors, log_dir=tmp, verbose=0,
            intensity_g_per_kwh=300, interval_s=0.05,
        )  # fmt: skip
        tracemalloc.start()
        t0 = time.perf_counter()
        checkpoints = {int(c) for c in args.checkpoints.split(",") if c.strip()} | {args.epochs}
        for epoch in range(1, args.epochs + 1):
            tracker.epoch_start()
            with tracker.phase("validation"):
                pass
            tracker.epoch_end(steps=10)
            if epoch in checkpoints:
                gc.collect()
                current, _ = tracemalloc.get_traced_memory()
                rows.append({"epoch": epoch, "heap_kib": current / 1024,
                             "rss_mib": proc.memory_info().rss / 2**20,
                             "elapsed_s": time.perf_counter() - t0})  # fmt: skip
        tracker.stop()
    base = next((r for r in rows if r["epoch"] >= 1000), rows[0])
    last = rows[-1]
    print(json.dumps(rows, indent=1))
    growth_kib = last["heap_kib"] - base["heap_kib"]
    print(
        f"heap growth epoch {base['epoch']} -> {last['epoch']}: {growth_kib:+.1f} KiB;"
        f" RSS {last['rss_mib'] - base['rss_mib']:+.1f} MiB;"
        f" {last['elapsed_s'] / args.epochs * 1e6:.0f} us per epoch (hooks + run log)"
    )


if __name__ == "__main__":
    main()
