"""Side by side on a real GPU: carbon_callbacks, CodeCarbon, carbontracker and Zeus.

    PYTHONPATH=. python bench/peers.py --reps 2 --out peers.json

Needs the peers installed (codecarbon, carbontracker, zeus; see docs/benchmarks.md for how the
wheels were carried). The same Lightning training (a U-Net, ~1 s epochs, data on the GPU) runs
with no tracker and with each tracker wrapped around the same epochs, in rotated order. For
every tracker and epoch: its GPU energy against NVML's counter (a poller in another process,
``bench/counter_poller.py``, interpolated at the tracker's own epoch edges), and the epoch time
(the median of epochs 2..n, hooks included) against the run without a tracker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import lightning.pytorch as pl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from counter_poller import energy_at, load_steps  # noqa: E402
from gpu_proof import EpochTimer, Seg, _loader  # noqa: E402

from carbon_callbacks.core.records import read_run_log  # noqa: E402
from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: E402


class Windows(pl.Callback):
    """Collects (start unix s, end unix s, GPU J) per epoch from a wrapped tracker."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float]] = []


class CodeCarbonCB(Windows):
    def __init__(self, tmp: str) -> None:
        super().__init__()
        from codecarbon import OfflineEmissionsTracker

        self.t = OfflineEmissionsTracker(
            country_iso_code="DEU", gpu_ids=[0], measure_power_secs=1, save_to_file=False,
            log_level="error", output_dir=tmp,
        )  # fmt: skip

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.t.start_task("epoch")
        self.t0 = time.time()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        t1 = time.time()
        data = self.t.stop_task()
        self.rows.append((self.t0, t1, float(data.gpu_energy) * 3.6e6))


class CarbonTrackerCB(Windows):
    def __init__(self, tmp: str, epochs: int) -> None:
        super().__init__()
        from carbontracker.tracker import CarbonTracker

        self.t = CarbonTracker(
            epochs=epochs, epochs_before_pred=0, components="gpu", update_interval=1,
            log_dir=tmp, verbose=0, ignore_errors=True,
        )  # fmt: skip

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.t.epoch_start()
        self.thread = self.t.tracker  # carbontracker deletes it after its last monitored epoch

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.t.epoch_end()
        thread = self.thread
        start = thread.cur_epoch_time
        gpu = [c for c in thread.components if c.name == "gpu"][0]
        kwh = gpu.energy_usage(thread.epoch_times)[-1]
        self.rows.append((start, start + thread.epoch_times[-1], float(kwh) * 3.6e6))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.t.stop()


class ZeusCB(Windows):
    def __init__(self) -> None:
        super().__init__()
        from zeus.monitor import ZeusMonitor

        self.m = ZeusMonitor(gpu_indices=[0])

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.m.begin_window("epoch")
        self.t0 = time.time()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        result = self.m.end_window("epoch")  # synchronises CUDA, then reads the counter
        self.rows.append((self.t0, time.time(), float(result.gpu_energy[0])))


def run(mode: str, epochs: int, tmp: str) -> dict[str, Any]:
    timer = EpochTimer()
    callbacks: list[Any] = [timer]
    wrapper: Any = None
    if mode == "carbon_callbacks":
        wrapper = CarbonCallback(log_dir=tmp, verbose=0, zone="DE", gpu_ids=[0])
    elif mode == "codecarbon":
        wrapper = CodeCarbonCB(tmp)
    elif mode == "carbontracker":
        wrapper = CarbonTrackerCB(tmp, epochs)
    elif mode == "zeus":
        wrapper = ZeusCB()
    if wrapper is not None:
        callbacks.append(wrapper)
    poll_path = os.path.join(tmp, f"poll_{mode}_{time.time_ns()}.txt")
    here = os.path.dirname(os.path.abspath(__file__))
    poller = subprocess.Popen([sys.executable, os.path.join(here, "counter_poller.py"), poll_path])
    time.sleep(1.0)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="gpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(Seg(32), _loader(512, 256, 32))
    time.sleep(0.3)
    poller.terminate()
    poller.wait(timeout=10)
    out: dict[str, Any] = {"epoch_s": timer.epoch_s}
    if wrapper is None:
        return out
    if mode == "carbon_callbacks":
        log = read_run_log(wrapper.tracker.log_path)
        rows = [
            (e["start_unix_s"], e["end_unix_s"],
             sum(v for k, v in e["energy_j"].items() if k.startswith("gpu")))
            for e in log.epochs
        ]  # fmt: skip
    else:
        rows = wrapper.rows
    times, energy = load_steps(poll_path)
    ratios = []
    for t0, t1, joules in rows:
        ref = energy_at(times, energy, t1) - energy_at(times, energy, t0)
        ratios.append(joules / ref)
    out.update(ratios=ratios, gpu_j=[r[2] for r in rows])
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="peers.json")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    modes = ["none", "carbon_callbacks", "codecarbon", "carbontracker", "zeus"]
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for mode in modes[rep % len(modes) :] + modes[: rep % len(modes)]:
                try:
                    results[mode].append(run(mode, args.epochs, tmp))
                except Exception as exc:  # noqa: BLE001 - a peer failing is a result too
                    results[mode].append({"error": repr(exc)})
                with open(args.out, "w") as fh:
                    json.dump(results, fh, indent=1)
    base = statistics.median(
        statistics.median(r["epoch_s"][1:]) for r in results["none"] if "epoch_s" in r
    )
    for mode in modes:
        ok = [r for r in results[mode] if "epoch_s" in r]
        if not ok:
            print(f"{mode}: failed: {results[mode][0].get('error')}")
            continue
        med = statistics.median(statistics.median(r["epoch_s"][1:]) for r in ok)
        line = f"{mode}: added epoch time {(med - base) / base * 100:+.2f}%"
        ratios = [x for r in ok for x in r.get("ratios", [])[1:]]
        if ratios:
            err = sorted(abs(x - 1) for x in ratios)
            line += (
                f"; GPU energy vs counter (steady epochs) median {statistics.median(ratios):.4f},"
                f" median |err| {statistics.median(err) * 100:.2f}%,"
                f" p90 |err| {err[int(0.9 * (len(err) - 1))] * 100:.2f}%"
            )
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
