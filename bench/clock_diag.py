"""Check the step clock's dating on a real GPU, value by value, against the counter poller.

    PYTHONPATH=. python bench/clock_diag.py --out clock_diag.json

The meter dates each value of NVML's energy counter at the step that produced it
(``carbon_callbacks/core/sensors/step_clock.py``). The counter poller (another process, reading
back to back) logs the time at which it first saw each value. Both see the same raw values
(mJ), so every dated value can be matched with the poller's time for it: the difference is the
clock's dating error, which must stay a few milliseconds and never reach a step (100 ms).

It runs the Lightning U-Net of ``bench/gpu_proof.py`` with the counter method, at the automatic
counter cadence and at a fixed 1 s, for 1-second and 0.13-second epochs, and reports per run:
the dating errors (median, p99, max, count over 50 ms), the reads skipped as undatable, the
locks, and the per-epoch accuracy against the poller.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_proof  # noqa: E402

from carbon_callbacks.core.sensors import step_clock  # noqa: E402

LOG: list[tuple[str, float, float, float, float | None]] = []  # kind, t0, t1, value, t_valid
CLOCKS: list[step_clock.SteppedCounterClock] = []
POLL_PATHS: list[str] = []


def _instrument() -> None:
    cls = step_clock.SteppedCounterClock
    timed, dated, init = cls._timed_read, cls.read_dated, cls.__init__

    def _init(self: Any, *a: Any, **k: Any) -> None:
        init(self, *a, **k)
        CLOCKS.append(self)

    def _timed(self: Any) -> tuple[float, float, float]:
        value, t0, t1 = timed(self)
        self._diag_last = (t0, t1, value)
        return value, t0, t1

    def _dated(self: Any) -> tuple[float, float] | None:
        got = dated(self)
        t0, t1, value = self._diag_last
        if got is None:
            LOG.append(("skipped", t0, t1, value, None))
        else:
            LOG.append(("dated", t0, t1, got[0], got[1]))
        return got

    cls.__init__, cls._timed_read, cls.read_dated = _init, _timed, _dated
    stop = gpu_proof.stop_pollers

    def _stop(pollers: Any) -> Any:
        POLL_PATHS.extend(path for _, path in pollers)
        return stop(pollers)

    gpu_proof.stop_pollers = _stop


def _poller_first_seen(path: str) -> dict[float, float]:
    seen: dict[float, float] = {}
    with open(path) as fh:
        for line in fh:
            t, v = line.split()
            seen.setdefault(float(v), float(t))
    return seen


def run(label: str, cfg: dict[str, Any], epochs: int, carbon: dict[str, Any]) -> dict[str, Any]:
    LOG.clear()
    CLOCKS.clear()
    POLL_PATHS.clear()
    offset = time.time() - time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        res = gpu_proof.fit(epochs=epochs, carbon=carbon, log_dir=tmp, **cfg)
        seen = _poller_first_seen(POLL_PATHS[0])
    seen_t = sorted(seen.values())
    errors_ms = []
    for kind, _t0, _t1, value, t_valid in LOG:
        if kind != "dated" or t_valid is None or value not in seen:
            continue
        # the poller's time for this value is when its read saw it first: the step lies up to
        # one poller read (~4 ms) before that
        k = bisect.bisect_left(seen_t, seen[value])
        if k == 0:
            continue
        errors_ms.append((t_valid + offset - seen[value]) * 1e3)
    abs_err = sorted(abs(e) for e in errors_ms)
    ratios = res["ratio_per_epoch"]
    out = {
        "label": label,
        "reads": len(LOG),
        "skipped": sum(1 for row in LOG if row[0] == "skipped"),
        "matched": len(errors_ms),
        "dating_error_ms_median": statistics.median(errors_ms) if errors_ms else None,
        "dating_abs_error_ms_p99": abs_err[int(0.99 * (len(abs_err) - 1))] if abs_err else None,
        "dating_abs_error_ms_max": abs_err[-1] if abs_err else None,
        "dated_over_50ms": sum(1 for e in abs_err if e > 50),
        "locks": [c.locks for c in CLOCKS],
        "read_window_ms_median": statistics.median((r[2] - r[1]) * 1e3 for r in LOG),
        "read_window_ms_max": max((r[2] - r[1]) * 1e3 for r in LOG),
        "ratio_run": res["ratio_run"],
        "epoch_abs_err_pct_median": statistics.median(abs(r - 1) * 100 for r in ratios[1:]),
        "first_epoch_ratio": ratios[0],
        "epoch_s_median": statistics.median(res["epoch_s"]),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="clock_diag.json")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    _instrument()
    long_cfg = dict(n=512, size=256, batch=32, width=32)
    short_cfg = dict(n=256, size=128, batch=32, width=16)
    results = [
        run("1 s epochs, automatic cadence", long_cfg, args.epochs, {}),
        run("1 s epochs, counter every 1 s", long_cfg, args.epochs, {"counter_interval_s": 1.0}),
        run("0.13 s epochs, automatic cadence", short_cfg, 30, {}),
    ]
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
