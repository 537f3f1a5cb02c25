"""Reference energy from NVML's counter, read back to back in a separate process.

    python bench/poller.py OUT.txt [--index 0] [--max-s 600] [--fake-w W]

The benchmarks start it as a script (:func:`start_pollers`), so it imports nothing of the
package and may run beside any version of carbon_callbacks.

NVML's total-energy counter advances in steps (about every 100 ms on an H100). This process
reads it continuously and writes ``unix_time_s energy_mj read_ms`` each time the value steps,
dating the step at the middle of the read that saw it (one read takes ~4 ms); ``read_ms`` is the
mean duration of its reads since the previous step (other NVML readers on the GPU, such as a
tracker's, slow it down: :func:`load_read_ms`). Energy at any instant is
then the linear interpolation between the surrounding steps: a reference fresh to within one
read, independent of the tracker (another process, no shared state). Stops on SIGTERM/SIGINT.

``--fake-w W`` writes a made-up counter instead (a constant W watts, a step every 100 ms), with
no NVML: it lets the benchmarks' plumbing run on a machine without a GPU (``--smoke`` and
``--simulate``).
"""

from __future__ import annotations

import argparse
import bisect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

#: Period of the made-up counter's steps (``--fake-w``), like an H100's counter.
FAKE_STEP_S = 0.1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--max-s", type=float, default=600.0)
    parser.add_argument("--fake-w", type=float, default=None, help="made-up counter, no NVML")
    args = parser.parse_args()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    deadline = time.time() + args.max_s
    if args.fake_w is not None:
        _fake(args.out, args.fake_w, deadline, lambda: stop)
        return 0
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(args.index)
    last = None
    read_s, reads = 0.0, 0
    with open(args.out, "w") as fh:
        while not stop and time.time() < deadline:
            t0 = time.time()
            value = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            t1 = time.time()
            read_s, reads = read_s + (t1 - t0), reads + 1
            if value != last:
                fh.write(f"{0.5 * (t0 + t1):.6f} {value} {read_s / reads * 1e3:.3f}\n")
                fh.flush()  # readable while it runs (read_pollers); ~10 writes a second
                last = value
                read_s, reads = 0.0, 0
    return 0


def _fake(out: str, power_w: float, deadline_unix_s: float, stopped: Callable[[], bool]) -> None:
    """A made-up counter: ``power_w`` x elapsed time, in mJ, stepping every ``FAKE_STEP_S``."""
    origin = time.time()
    with open(out, "w") as fh:
        while not stopped() and time.time() < deadline_unix_s:
            now = time.time()
            fh.write(f"{now:.6f} {round(power_w * (now - origin) * 1000.0)}\n")
            fh.flush()
            time.sleep(FAKE_STEP_S)


def start_pollers(
    folder: str,
    gpus: int,
    tag: str = "",
    *,
    max_s: float = 600.0,
    fake_w: float | None = None,
) -> list[tuple[subprocess.Popen, str]]:
    """One poller process per GPU index ``0..gpus-1``; (process, output path) each.

    ``max_s``: each poller stops by itself after this many seconds (a safety net; pass more
    than the span to be measured). ``fake_w``: made-up counters of that many watts, no NVML.
    """
    started = []
    for gpu in range(gpus):
        path = os.path.join(folder, f"poll{tag}_gpu{gpu}_{time.time_ns()}.txt")
        cmd = [sys.executable, os.path.abspath(__file__), path, "--index", str(gpu)]
        cmd += ["--max-s", str(max_s)]
        if fake_w is not None:
            cmd += ["--fake-w", str(fake_w)]
        started.append((subprocess.Popen(cmd), path))
    time.sleep(1.0)  # let each poller see its first step
    return started


def stop_pollers(pollers: list[tuple[subprocess.Popen, str]]) -> list[tuple[list, list]]:
    """Stop the pollers (after the step following the last edge); the steps of each GPU."""
    time.sleep(0.5)
    for process, _ in pollers:
        process.terminate()
        process.wait(timeout=10)
    return [load_steps(path) for _, path in pollers]


def read_pollers(pollers: list[tuple[subprocess.Popen, str]]) -> list[tuple[list, list]]:
    """The steps of each GPU so far, the pollers still running (each flushes every step).

    Wait for one step (~0.2 s) after the last edge of interest before reading.
    """
    return [load_steps(path) for _, path in pollers]


def window_j(steps: list[tuple[list, list]], start_unix_s: float, end_unix_s: float) -> float:
    """Counter energy in J of all polled GPUs between two unix times."""
    return sum(
        energy_at(times, energy, end_unix_s) - energy_at(times, energy, start_unix_s)
        for times, energy in steps
    )


def load_steps(path: str) -> tuple[list[float], list[float]]:
    """(times in unix s, energies in J) of the counter's steps."""
    times, energy = [], []
    with open(path) as fh:
        for line in fh:
            fields = line.split()
            if len(fields) not in (2, 3) or not line.endswith("\n"):
                break  # a line being written by a running poller
            times.append(float(fields[0]))
            energy.append(float(fields[1]) / 1000.0)
    return times[1:], energy[1:]  # the first line is the value found, not a step


def load_read_ms(path: str) -> tuple[list[float], list[float]]:
    """(times in unix s, mean ms of one counter read since the previous step) of each step."""
    times, read_ms = [], []
    with open(path) as fh:
        for line in fh:
            fields = line.split()
            if len(fields) != 3 or not line.endswith("\n"):
                continue
            times.append(float(fields[0]))
            read_ms.append(float(fields[2]))
    return times, read_ms


def energy_at(times: list[float], energy: list[float], t: float) -> float:
    """Counter energy in J at unix time ``t`` by interpolating between steps."""
    k = bisect.bisect_left(times, t)
    if k == 0 or k >= len(times):
        raise ValueError("time outside the polled span")
    t0, t1 = times[k - 1], times[k]
    return energy[k - 1] + (energy[k] - energy[k - 1]) * (t - t0) / (t1 - t0)


if __name__ == "__main__":
    sys.exit(main())
