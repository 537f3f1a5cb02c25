"""What the counter helper process delivers on a real GPU, and what it costs.

    PYTHONPATH=. python bench/counter_feed_probe.py [--seconds 20] [--index 0] [--out F.json]

Starts the helper (``carbon_callbacks.core.sensors.counter_feed``) for one GPU while this process
keeps the GPU busy with matrix products and, every other second, holds the GIL in C for 0.3 s
(as a training loop's epoch edges do). Reports how many of the counter's steps the helper dated
(the gaps between successive values, in steps), how far each date is from the period's grid
(jitter), and the helper's CPU time per wall second (``/proc``).

``--smoke`` runs the same on ``tests/stepping_nvml.py`` (no GPU): the plumbing only.
``--in-process S`` first runs the helper's loop (:func:`counter_feed.serve`) in this process for
S seconds with nothing else running, and lists each value that came more than one step after
the previous one, with the step clock's locks (polls) so far: where steps go unread, and why.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from carbon_callbacks.core.sensors.counter_feed import CounterFeed


def _load(seconds: float, smoke: bool) -> Any:
    """A callable that keeps the GPU busy for about ``seconds`` (a no-op sleep in smoke mode)."""
    if smoke:
        return lambda: time.sleep(seconds)
    import torch

    a = torch.randn(4096, 4096, device="cuda")

    def work() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(8):
                a @ a
            torch.cuda.synchronize()

    return work


def _in_process(nvml: Any, uuid: str, seconds: float) -> dict[str, Any]:
    """The helper's loop in this process: each value more than a step after the last."""
    from carbon_callbacks.core.sensors.counter_feed import POLL_GAP_S, START_CADENCE_S, serve
    from carbon_callbacks.core.sensors.step_clock import SteppedCounterClock

    handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
    clock = SteppedCounterClock(
        lambda: float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)), poll_gap_s=POLL_GAP_S
    )
    rows: list[tuple[float, int]] = []
    start = time.monotonic()
    serve(
        clock,
        lambda t, _value: rows.append((t, clock.locks)),
        [START_CADENCE_S],
        until=lambda: time.monotonic() - start > seconds,
    )
    period = clock.period_s or START_CADENCE_S
    gaps = []
    for (t0, locks0), (t1, locks1) in zip(rows, rows[1:], strict=False):
        if t1 - t0 > 1.5 * period:
            gaps.append(
                {
                    "at_s": round(t0 - start, 3),
                    "steps": round((t1 - t0) / period),
                    "locks_between": locks1 - locks0,
                }
            )
    return {"values": len(rows), "locks": clock.locks, "period_s": period, "gaps": gaps}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="stand-in NVML, no GPU")
    parser.add_argument("--in-process", type=float, default=0.0, help="seconds of serve() here")
    args = parser.parse_args()
    if args.smoke:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        import stepping_nvml as nvml

        module, uuid = "stepping_nvml", nvml.UUID
    else:
        import pynvml as nvml

        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(args.index)
        module, uuid = "pynvml", nvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    skipped = _in_process(nvml, uuid, args.in_process) if args.in_process > 0 else None
    work = _load(0.7, args.smoke)
    feed = CounterFeed(module, uuid)
    started = time.monotonic()
    feed.start()
    values: list[tuple[float, float]] = []
    while not feed.live and time.monotonic() - started < 10:
        values += feed.drain() or []
        time.sleep(0.02)
    live_after_s = time.monotonic() - started
    cpu0, t0 = feed.cpu_s(), time.monotonic()
    hogs = 0
    while time.monotonic() - t0 < args.seconds:
        work()
        values += feed.drain() or []
        sum(range(3_000_000 if args.smoke else 12_000_000))  # the GIL held in C (~0.1-0.3 s)
        hogs += 1
    time.sleep(0.3)
    values += feed.drain() or []
    cpu1, t1 = feed.cpu_s(), time.monotonic()
    feed.close()
    times = [t for t, _ in values if t >= t0]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    period = statistics.median(gaps) if gaps else float("nan")
    apart: dict[str, int] = {}
    for gap in gaps:
        key = str(min(5, round(gap / period)))
        apart[key] = apart.get(key, 0) + 1
    grid = [((t - times[0]) / period) % 1.0 for t in times] if gaps else []
    jitter_ms = [1000 * period * min(x, 1 - x) for x in grid]
    result = {
        "module": module,
        "seconds": round(t1 - t0, 2),
        "live_after_s": round(live_after_s, 3),
        "gil_holds": hogs,
        "values": len(times),
        "period_s": round(period, 5),
        "steps_apart": dict(sorted(apart.items())),
        "jitter_ms_median": round(statistics.median(jitter_ms), 3) if jitter_ms else None,
        "jitter_ms_max": round(max(jitter_ms), 3) if jitter_ms else None,
        "helper_cpu_share": None
        if cpu0 is None or cpu1 is None
        else round((cpu1 - cpu0) / (t1 - t0), 4),
        "failure": feed.failure,
        "in_process_skips": skipped,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
