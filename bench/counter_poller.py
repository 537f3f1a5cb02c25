"""Reference energy from NVML's counter, read back to back in a separate process.

    python bench/counter_poller.py OUT.txt [--index 0] [--max-s 600]

NVML's total-energy counter advances in steps (about every 100 ms on an H100). This process
reads it continuously and writes ``unix_time_s energy_mj`` each time the value steps, dating
the step at the middle of the read that saw it (one read takes ~4 ms). Energy at any instant is
then the linear interpolation between the surrounding steps: a reference fresh to within one
read, independent of the tracker (another process, no shared state). Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import bisect
import signal
import sys
import time

import pynvml


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--max-s", type=float, default=600.0)
    args = parser.parse_args()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(args.index)
    deadline = time.time() + args.max_s
    last = None
    with open(args.out, "w") as fh:
        while not stop and time.time() < deadline:
            t0 = time.time()
            value = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            t1 = time.time()
            if value != last:
                fh.write(f"{0.5 * (t0 + t1):.6f} {value}\n")
                last = value
        fh.flush()
    return 0


def load_steps(path: str) -> tuple[list[float], list[float]]:
    """(times in unix s, energies in J) of the counter's steps."""
    times, energy = [], []
    with open(path) as fh:
        for line in fh:
            t, e = line.split()
            times.append(float(t))
            energy.append(float(e) / 1000.0)
    return times[1:], energy[1:]  # the first line is the value found, not a step


def energy_at(times: list[float], energy: list[float], t: float) -> float:
    """Counter energy in J at unix time ``t`` by interpolating between steps."""
    k = bisect.bisect_left(times, t)
    if k == 0 or k >= len(times):
        raise ValueError("time outside the polled span")
    t0, t1 = times[k - 1], times[k]
    return energy[k - 1] + (energy[k] - energy[k - 1]) * (t - t0) / (t1 - t0)


if __name__ == "__main__":
    sys.exit(main())
