"""How long epoch_end() takes with the offline table, a live provider, and a stalled live server.

Run from the repository root: ``python bench/intensity_latency.py``. Uses the loopback fake
services of the tests (no network) and a constant fake GPU, 200 epochs per case.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_intensity_api import FakeApi, Response, eds_handler, eds_records  # noqa: E402
from power_traces import ConstantCounterSensor  # noqa: E402

from carbon_callbacks.core.tracker import CarbonTracker  # noqa: E402


def bench(label, epochs=200, **settings):
    tracker = CarbonTracker(
        epochs=epochs,
        sensors=[ConstantCounterSensor("gpu:0", 100.0)],
        log_dir=None,
        verbose=0,
        interval_s=0.05,
        **settings,
    )
    if hasattr(tracker.intensity, "wait_ready"):
        tracker.intensity.wait_ready(0.5)
    ends = []
    for _ in range(epochs):
        tracker.epoch_start()
        t0 = time.perf_counter()
        tracker.epoch_end()
        ends.append(time.perf_counter() - t0)
    tracker.stop()
    ends.sort()
    print(
        f"{label:28s} epoch_end median {statistics.median(ends) * 1e6:6.0f} us, "
        f"p99 {ends[int(0.99 * len(ends)) - 1] * 1e6:6.0f} us, max {ends[-1] * 1e6:6.0f} us"
    )


def main():
    warnings.simplefilter("ignore")
    now = time.time()
    t0 = now - now % 300
    serving = FakeApi()
    serving.route(
        r"^/dataset/",
        eds_handler(
            {
                "CO2Emis": eds_records(t0 - 6 * 3600, [100.0 + i for i in range(73)]),
                "CO2EmisProg": eds_records(t0, [90.0] * 108),
            }
        ),
    )
    stalled = FakeApi()
    stalled.route(r"^/dataset/", Response(stall=True))
    try:
        bench("static DK (offline)", zone="DK")
        live = {"zone": "DK1", "live_intensity": True}
        bench("live DK1, serving", energidataservice_base_url=serving.url, **live)
        bench("live DK1, server stalled", energidataservice_base_url=stalled.url, **live)
    finally:
        serving.close()
        stalled.close()


if __name__ == "__main__":
    main()
