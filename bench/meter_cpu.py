"""CPU time the meter's thread costs, per counter cadence, on a real GPU.

    PYTHONPATH=. python bench/meter_cpu.py --seconds 10 --out meter_cpu.json

NVML's energy-counter read keeps a CPU core busy for ~4 ms (``bench/nvml_trace.py`` measures
it). The meter reads it once per ~100 ms step while epochs are short, and about ten times per
epoch for longer ones. For each cadence this runs a tracker (real NVML sensors, GPU only, no
run log) on an idle process for ``--seconds`` and reports the process's CPU time per second
(``time.process_time``) in percent of one core, next to the same process with no tracker.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def cpu_pct(seconds: float, cadence: str) -> float:
    """Percent of one core used by this process over ``seconds`` with the given meter cadence."""
    tracker = None
    if cadence != "none":
        from carbon_callbacks.core.tracker import CarbonTracker

        fixed = None if cadence == "auto-short" else float(cadence)
        tracker = CarbonTracker(
            log_dir=None,
            verbose=0,
            zone="DE",
            gpu_ids=[0],
            components="gpu",
            counter_interval_s=fixed,
        )
        tracker.start()
        time.sleep(1.0)  # past the step clock's first lock
    c0, w0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    used = (time.process_time() - c0) / (time.monotonic() - w0) * 100.0
    if tracker is not None:
        tracker.stop()
    return used


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default="meter_cpu.json")
    args = parser.parse_args()
    out: dict[str, Any] = {"seconds": args.seconds, "cpu_pct_of_one_core": {}}
    for cadence in ("none", "auto-short", "0.1", "0.3", "1.0"):
        out["cpu_pct_of_one_core"][cadence] = cpu_pct(args.seconds, cadence)
        print(cadence, f"{out['cpu_pct_of_one_core'][cadence]:.2f}% of one core", flush=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
