"""Probe NVML's readings on a real GPU: cost of each read, and how power tracks the counter.

    PYTHONPATH=. python bench/nvml_probe.py --out nvml_probe.json

A workload alternates 1.0 s of matrix multiplies with 0.1 s idle for ``--seconds``. A thread
reads, every 10 ms, the total-energy counter, ``nvmlDeviceGetPowerUsage`` and, where the driver
has it, the instantaneous power field (``NVML_FI_DEV_POWER_INSTANT``). It reports the read costs,
how often the counter steps, and the energy from integrating each power signal against the
counter over the same span (whole span, and 1.1 s windows aligned to the workload's cycles).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import pynvml
import torch


def _instant_mw(handle: object) -> int | None:
    field = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", 186)
    values = pynvml.nvmlDeviceGetFieldValues(handle, [field])
    if values[0].nvmlReturn != 0:
        return None
    return int(values[0].value.uiVal)


def _cost_us(fn, n: int = 200) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="nvml_probe.json")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    out: dict = {"gpu": pynvml.nvmlDeviceGetName(h)}
    try:
        _instant_mw(h)
        has_instant = _instant_mw(h) is not None
    except Exception as exc:  # noqa: BLE001
        has_instant = False
        out["instant_error"] = repr(exc)
    out["has_instant"] = has_instant
    out["cost_us"] = {
        "energy_counter": _cost_us(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h), 50),
        "power_usage": _cost_us(lambda: pynvml.nvmlDeviceGetPowerUsage(h)),
    }
    if has_instant:
        out["cost_us"]["power_instant"] = _cost_us(lambda: _instant_mw(h))
    samples: list[tuple[float, int, int, int | None]] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            t = time.monotonic()
            e = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
            p = pynvml.nvmlDeviceGetPowerUsage(h)
            i = _instant_mw(h) if has_instant else None
            samples.append((t, e, p, i))
            time.sleep(0.01)

    a = torch.randn(8192, 8192, device="cuda")
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    time.sleep(1.0)
    t_end = time.monotonic() + args.seconds
    cycles = []
    while time.monotonic() < t_end:
        c0 = time.monotonic()
        while time.monotonic() - c0 < 1.0:
            a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()
        time.sleep(0.1)
        cycles.append((c0, time.monotonic()))
    time.sleep(1.0)
    stop.set()
    thread.join()
    ts = [s[0] for s in samples]
    steps = [ts[k] for k in range(1, len(samples)) if samples[k][1] != samples[k - 1][1]]
    gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    out["counter_step_s_median"] = statistics.median(gaps)

    def integral(idx: int, t0: float, t1: float) -> float:
        total = 0.0
        for (ta, *ra), (tb, *rb) in zip(samples, samples[1:], strict=False):
            lo, hi = max(ta, t0), min(tb, t1)
            if hi > lo and ra[idx - 1] is not None and rb[idx - 1] is not None:
                total += 0.5 * (ra[idx - 1] + rb[idx - 1]) / 1000.0 * (hi - lo)
        return total

    def counter(t: float) -> float:
        for (ta, ea, *_), (tb, eb, *_) in zip(samples, samples[1:], strict=False):
            if ta <= t <= tb:
                return (ea + (eb - ea) * (t - ta) / (tb - ta)) / 1000.0
        raise ValueError(t)

    t0, t1 = ts[0] + 0.5, ts[-1] - 0.5
    out["span"] = {
        "counter_j": counter(t1) - counter(t0),
        "power_usage_j": integral(2, t0, t1),
        "power_instant_j": integral(3, t0, t1) if has_instant else None,
    }
    windows = []
    for c0, c1 in cycles[1:-1]:
        windows.append(
            {
                "counter_j": counter(c1) - counter(c0),
                "power_usage_j": integral(2, c0, c1),
                "power_instant_j": integral(3, c0, c1) if has_instant else None,
            }
        )
    out["windows"] = windows
    for key in ("power_usage_j", "power_instant_j"):
        if windows[0][key] is not None:
            ratios = [w[key] / w["counter_j"] for w in windows]
            out[f"{key}_window_ratio_median"] = statistics.median(ratios)
            out[f"{key}_window_ratio_range"] = [min(ratios), max(ratios)]
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "windows"}, indent=1))


if __name__ == "__main__":
    main()
