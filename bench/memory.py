"""Memory over a long run: ``python -m bench memory [soak|long] [OPTIONS]``.

    PYTHONPATH=. python -m bench memory --epochs 10000
    PYTHONPATH=. python -m bench memory --epochs 4200 --checkpoints 100,1000,2000,4096
    PYTHONPATH=. python3 -m bench memory long --minutes 10.5 --out /tmp/long/long_run.json  # GPU

``soak`` (the default; CPU only): drives ``CarbonTracker`` through ``--epochs`` epochs with
stated sensors (a 300 W GPU and a 50 W CPU: ``sim_gpu``, ``sim_cpu``), the run log written to a
temporary folder, and reports Python heap (tracemalloc) and RSS at checkpoints, after a warm-up.
``long``: a 10-minute Lightning run on the GPU against NVML's counter (``bench/long_run.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc

import psutil

from carbon_callbacks import CarbonTracker


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["long"]:
        from bench import long_run

        return long_run.main(argv[1:])
    if argv[:1] == ["soak"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m bench memory [soak]")
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument(
        "--checkpoints",
        default="100,1000,2000,5000",
        help="epochs (comma-separated) after which to measure, besides the last",
    )
    args = parser.parse_args(argv)
    proc = psutil.Process()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tracker = CarbonTracker(
            epochs=args.epochs, log_dir=tmp, verbose=0, intensity_g_per_kwh=300,
            components="all", sim_gpu="stand-in GPU", sim_gpu_watts=300.0, sim_gpu_util=1.0,
            sim_cpu="stand-in CPU", sim_cpu_tdp=50.0, sim_cpu_util=1.0,
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
