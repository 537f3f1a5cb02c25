"""Record a raw NVML trace of a real training, for replaying meter designs offline.

    PYTHONPATH=. python bench/nvml_trace.py --out nvml_trace.json

While a plain PyTorch U-Net trains through phases chosen to be hard for a meter (a warm-up from
an idle GPU, steady 1 s epochs, 0.13 s epochs, bursty epochs with idle gaps inside), it records:

- the reference: NVML's total-energy counter, read back to back by a separate process
  (``bench/counter_poller.py``), each step dated at the read that saw it;
- every ~5 ms, ``nvmlDeviceGetPowerUsage`` (averaged power) and the instantaneous power field
  (``NVML_FI_DEV_POWER_INSTANT``), with their unix times;
- every epoch edge (unix time, after ``torch.cuda.synchronize()``), with its phase;
- the cost of one counter read: wall time and the reading thread's CPU time (``thread_time``).

``bench/meter_replay.py`` replays meter designs on this trace against the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

import pynvml
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from counter_poller import start_pollers, stop_pollers  # noqa: E402
from nvml_probe import _instant_mw  # noqa: E402

from carbon_callbacks.demo import build_unet  # noqa: E402


def counter_read_cost(handle: Any, reads: int = 40) -> dict[str, float]:
    """Median wall and CPU milliseconds of one counter read (CPU: this thread's time)."""
    wall, cpu = [], []
    for _ in range(reads):
        w0, c0 = time.perf_counter(), time.thread_time()
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
        time.sleep(0.02)
    return {"wall_ms": statistics.median(wall), "cpu_ms": statistics.median(cpu)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="nvml_trace.json")
    parser.add_argument("--sample-s", type=float, default=0.005)
    args = parser.parse_args()
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    out: dict[str, Any] = {
        "gpu": pynvml.nvmlDeviceGetName(handle),
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "counter_read_idle": counter_read_cost(handle),
    }
    samples: list[tuple[float, float, float | None]] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            p = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            i = _instant_mw(handle)
            samples.append((time.time(), p, None if i is None else i / 1000.0))
            time.sleep(args.sample_s)

    big = build_unet(32, depth=4).cuda()
    small = build_unet(16, depth=4).cuda()
    opt_big = torch.optim.Adam(big.parameters(), lr=1e-3)
    opt_small = torch.optim.Adam(small.parameters(), lr=1e-3)
    xb = torch.randn(32, 1, 256, 256, device="cuda")
    xs = torch.randn(32, 1, 128, 128, device="cuda")
    edges: list[tuple[str, float, float]] = []

    def step(model: Any, opt: Any, x: torch.Tensor) -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), (x > 0.5).float())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def epoch(phase: str, train_s: float, model: Any, opt: Any, x: Any, gap_s: float = 0) -> None:
        torch.cuda.synchronize()
        t0 = time.time()
        end = time.monotonic() + train_s
        while time.monotonic() < end:
            step(model, opt, x)
            torch.cuda.synchronize()
        if gap_s:
            time.sleep(gap_s)  # validation-like idle GPU inside the epoch
        torch.cuda.synchronize()
        edges.append((phase, t0, time.time()))

    pollers = start_pollers("/tmp", 1, tag="trace")
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    time.sleep(3.0)
    for _ in range(6):
        epoch("warmup_then_1s", 1.0, big, opt_big, xb)
    time.sleep(3.0)
    for _ in range(40):
        epoch("short_0.13s", 0.12, small, opt_small, xs)
        time.sleep(0.01)  # the loop's own work between epochs
    time.sleep(3.0)
    for _ in range(12):
        epoch("bursty_0.8s", 0.5, big, opt_big, xb, gap_s=0.3)
    for _ in range(10):
        epoch("steady_1s", 1.0, big, opt_big, xb)
    busy_end = time.monotonic() + 2.0
    cost_thread_out: dict[str, float] = {}
    t = threading.Thread(target=lambda: cost_thread_out.update(counter_read_cost(handle, 20)))
    t.start()
    while t.is_alive() or time.monotonic() < busy_end:
        step(big, opt_big, xb)
        torch.cuda.synchronize()
    busy_cost = cost_thread_out
    time.sleep(2.0)
    stop.set()
    thread.join()
    steps = stop_pollers(pollers)[0]
    out["counter_read_busy"] = busy_cost
    out["samples"] = samples
    out["edges"] = edges
    out["steps"] = {"times": steps[0], "energy_j": steps[1]}
    with open(args.out, "w") as fh:
        json.dump(out, fh)
    gaps = [b[0] - a[0] for a, b in zip(samples, samples[1:], strict=False)]
    print(
        json.dumps(
            {
                "gpu": out["gpu"],
                "samples": len(samples),
                "sample_gap_median_s": statistics.median(gaps),
                "edges": len(edges),
                "steps": len(steps[0]),
                "counter_read_idle": out["counter_read_idle"],
                "counter_read_busy": busy_cost,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
