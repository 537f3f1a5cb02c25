"""GPU proof of the measurement core: accuracy against NVML's counter, and overhead.

Run on a machine with an NVIDIA GPU (one command, writes a JSON file and prints a summary):

    PYTHONPATH=. python bench/gpu_proof.py --out bench_results.json

What it does, all on GPU 0 with a U-Net trained by Lightning on synthetic data held on the GPU:

1. accuracy, counter path: per epoch, the GPU energy the tracker reports against NVML's
   total-energy counter read synchronously by a separate reference callback at the same epoch
   edges (ratio per epoch and over the run);
2. the same with the sampled-power path forced (``gpu_method="sampled"``);
3. the same with short epochs (well under 1 s);
4. overhead: epoch wall time with no tracker and with the callback, alternating runs, several
   repetitions; median of epochs 2..n per run, then the median over runs;
5. the cost of one hook call (``epoch_start`` + ``epoch_end``) in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import lightning.pytorch as pl
import pynvml
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from counter_poller import start_pollers, stop_pollers, window_j  # noqa: E402
from window_stats import settling_gpu_j  # noqa: E402

from carbon_callbacks.demo import build_unet  # noqa: E402
from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: E402


def _sync() -> None:
    """Wait for the GPU's queue (nothing to wait for on a CPU-only machine)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class EpochTimer(pl.Callback):
    """Wall time between successive epoch starts (the whole loop iteration, hooks included)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        _sync()
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        _sync()
        self.starts.append(time.perf_counter())

    @property
    def epoch_s(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


class CounterReference(pl.Callback):
    """NVML's total-energy counter read at the tracker's own epoch edges (Zeus-style reference).

    Placed after the carbon callback, it reads the counter synchronously right after each mark.
    The counter advances in steps (about every 100 ms on an H100), so each edge of this
    reference is itself uncertain by up to one step of energy: per-epoch ratios of short
    epochs are dominated by that, and the quiet-span test below is the precise comparison.
    """

    def __init__(self, index: int = 0) -> None:
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.deltas_j: list[float] = []
        self._start_j = 0.0

    def _read_j(self) -> float:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start_j = self._read_j()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.deltas_j.append(self._read_j() - self._start_j)


def quiet_span(gpu_method: str, seconds: float = 20.0, idle_s: float = 2.0) -> dict[str, Any]:
    """A span whose edges are idle and steady: the counter is exact there to ~idle W x 0.1 s.

    Plain PyTorch training of the benchmark U-Net for ``seconds``, in epochs of ~1 s, inside
    ``tracker.track("span")``; the GPU idles ``idle_s`` before the span opens and before it
    closes, and the counter is read right after each edge's mark.
    """
    from carbon_callbacks.core.runlog import read_run_log
    from carbon_callbacks.core.tracker import CarbonTracker

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)

    def counter_j() -> float:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0

    model = build_unet(32, depth=4).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(32, 1, 256, 256, device="cuda")
    y = (x > 0.5).float()
    with tempfile.TemporaryDirectory() as tmp:
        pollers = start_pollers(tmp, gpus=1)
        tracker = CarbonTracker(
            log_dir=tmp, verbose=0, zone="DE", gpu_ids=[0], gpu_method=gpu_method
        )
        tracker.start()
        time.sleep(idle_s)
        epochs_ref: list[float] = []
        with tracker.track("span"):
            c0 = counter_j()
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                tracker.epoch_start()
                e0 = counter_j()
                t_epoch = time.monotonic() + 1.0
                while time.monotonic() < t_epoch:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    torch.cuda.synchronize()
                tracker.epoch_end()
                epochs_ref.append(counter_j() - e0)
            torch.cuda.synchronize()
            time.sleep(idle_s)
        c1 = counter_j()
        tracker.stop()
        steps = stop_pollers(pollers)
        log = read_run_log(tracker.log_path)
    span = [p for p in log.phases if p["name"] == "span"][0]
    span_j = sum(v for k, v in span["energy_j"].items() if k.startswith("gpu"))
    epochs_j = [sum(v for k, v in e["energy_j"].items() if k.startswith("gpu")) for e in log.epochs]
    return {
        "span_tracker_j": span_j,
        "span_counter_j": c1 - c0,
        "span_ratio": span_j / (c1 - c0),
        "span_s": span["duration_s"],
        "epoch_ratios_plain": [t / r for t, r in zip(epochs_j, epochs_ref, strict=True)],
        "epoch_ratios": [
            t / window_j(steps, e["start_unix_s"], e["end_unix_s"])
            for t, e in zip(epochs_j, log.epochs, strict=True)
        ],
        "methods": span["methods"],
    }


class Seg(pl.LightningModule):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = build_unet(width, depth=4)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _loader(n: int, size: int, batch: int, device: str = "cuda") -> Any:
    """``n`` random images ``size`` x ``size`` and their masks, held on ``device``."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, 1, size, size, device=device, generator=g)
    y = (x > 0.5).float()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def fit(
    *,
    epochs: int,
    n: int,
    size: int,
    batch: int,
    width: int,
    carbon: dict | None,
    log_dir: str,
    reference: bool = True,
) -> dict[str, Any]:
    timer = EpochTimer()
    callbacks: list[Any] = [timer]
    ref = None
    cb = None
    if carbon is not None:
        cb = CarbonCallback(log_dir=log_dir, verbose=0, zone="DE", gpu_ids=[0], **carbon)
        callbacks.append(cb)
        if reference:
            ref = CounterReference(0)  # plain reads, for comparison with the poller
            callbacks.append(ref)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="gpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    pollers = start_pollers(log_dir, gpus=1) if reference else []
    trainer.fit(Seg(width), _loader(n, size, batch))
    out: dict[str, Any] = {"epoch_s": timer.epoch_s}
    if cb is not None:
        from carbon_callbacks.core.runlog import read_run_log

        log = read_run_log(cb.tracker.log_path)
        tracked = [
            sum(v for k, v in e["energy_j"].items() if k.startswith("gpu")) for e in log.epochs
        ]
        out["tracker_gpu_j"] = tracked
        out["tracker_settling_j"] = settling_gpu_j(log.phases)  # counted in the run's total
        out["methods"] = log.epochs[0]["methods"]
    if ref is not None:
        out["counter_j"] = ref.deltas_j
        # None where the synchronous read saw no step in the epoch (an epoch shorter than a step)
        out["plain_ratio_per_epoch"] = [
            t / r if r > 0 else None for t, r in zip(tracked, ref.deltas_j, strict=True)
        ]
    if pollers:
        steps = stop_pollers(pollers)  # after the step that follows the last edge
        fresh = [window_j(steps, e["start_unix_s"], e["end_unix_s"]) for e in log.epochs]
        out["poller_j"] = fresh
        out["ratio_per_epoch"] = [t / r for t, r in zip(tracked, fresh, strict=True)]
        out["ratio_run"] = (sum(tracked) + out["tracker_settling_j"]) / sum(fresh)
    return out


def hook_cost_us(repeats: int = 2000) -> dict[str, float]:
    """Microseconds per epoch_start + epoch_end pair (real NVML sensors, no run log)."""
    from carbon_callbacks.core.tracker import CarbonTracker

    tracker = CarbonTracker(log_dir=None, verbose=0, zone="DE", gpu_ids=[0], components="gpu")
    tracker.start()
    tracker.epoch_start()
    tracker.epoch_end()
    t0 = time.perf_counter()
    for _ in range(repeats):
        tracker.epoch_start()
        tracker.epoch_end()
    per_pair = (time.perf_counter() - t0) / repeats * 1e6
    t0 = time.perf_counter()
    for _ in range(repeats):
        tracker._meter.mark()
    per_mark = (time.perf_counter() - t0) / repeats * 1e6
    tracker.stop()
    return {"epoch_start_plus_end_us": per_pair, "mark_us": per_mark}


def import_cost_ms() -> float:
    import subprocess

    code = (
        "import time;t=time.perf_counter();import carbon_callbacks;"
        "print((time.perf_counter()-t)*1e3)"
    )
    runs = [float(subprocess.check_output([sys.executable, "-c", code]).decode()) for _ in range(5)]
    return statistics.median(runs)


def _print_runs(results: dict[str, Any], keys: tuple[str, ...]) -> None:
    """One line per training run: run ratio, per-epoch median [range] and median abs error."""
    for key in keys:
        r = results[key]
        ratios = r["ratio_per_epoch"]
        med, epoch_s = statistics.median(ratios), statistics.median(r["epoch_s"])
        abs_err = sorted(abs(x - 1) for x in ratios[1:])
        p90 = abs_err[int(0.9 * len(abs_err))]
        print(
            f"{key}: run ratio {r['ratio_run']:.5f}; per-epoch median {med:.5f}"
            f" [{min(ratios):.4f}, {max(ratios):.4f}]; steady median |error|"
            f" {100 * statistics.median(abs_err):.2f}% [p90 {100 * p90:.1f}%];"
            f" epoch {epoch_s:.3f} s; methods {r['methods']}"
        )


def _median_steady(epoch_s: list[float]) -> float:
    return statistics.median(epoch_s[1:])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench_results.json")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer epochs (smoke test)")
    parser.add_argument(
        "--only-short", action="store_true", help="only the short-epoch runs (counter, sampled)"
    )
    parser.add_argument(
        "--short-samples",
        default="256",
        help="with --only-short: comma-separated images per short epoch (256: ~0.1 s on an H100)",
    )
    parser.add_argument(
        "--short-reps", type=int, default=1, help="with --only-short: pairs of runs per size"
    )
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = False
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    results: dict[str, Any] = {
        "gpu": pynvml.nvmlDeviceGetName(h),
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "torch": torch.__version__,
    }

    def save() -> None:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)

    long_cfg = dict(n=512, size=256, batch=32, width=32)
    short_cfg = dict(n=256, size=128, batch=32, width=16)
    epochs = 6 if args.quick else 15
    if args.only_short:
        sizes = [int(x) for x in args.short_samples.split(",")]
        named = sizes != [256] or args.short_reps != 1  # else the keys of a plain run
        keys: list[str] = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                for rep in range(args.short_reps):
                    for method, carbon in (("counter", {}), ("sampled", {"gpu_method": "sampled"})):
                        key = f"{method}_short_epochs" + (f"_n{n}_rep{rep}" if named else "")
                        results[key] = fit(
                            epochs=30, carbon=carbon, log_dir=tmp, **{**short_cfg, "n": n}
                        )
                        keys.append(key)
                        save()
        _print_runs(results, tuple(keys))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        results["quiet_counter"] = quiet_span("auto")
        results["quiet_sampled"] = quiet_span("sampled")
        save()
        results["counter"] = fit(epochs=epochs, carbon={}, log_dir=tmp, **long_cfg)
        save()
        results["sampled"] = fit(
            epochs=epochs, carbon={"gpu_method": "sampled"}, log_dir=tmp, **long_cfg
        )
        save()
        results["counter_short_epochs"] = fit(epochs=30, carbon={}, log_dir=tmp, **short_cfg)
        results["sampled_short_epochs"] = fit(
            epochs=30, carbon={"gpu_method": "sampled"}, log_dir=tmp, **short_cfg
        )
        save()
        overhead: dict[str, list[float]] = {"none": [], "carbon": []}
        for _ in range(args.reps):
            for mode in ("none", "carbon"):
                r = fit(
                    epochs=epochs,
                    carbon=None if mode == "none" else {},
                    log_dir=tmp,
                    reference=False,
                    **long_cfg,
                )
                overhead[mode].append(_median_steady(r["epoch_s"]))
        results["overhead_epoch_s"] = overhead
        none_med = statistics.median(overhead["none"])
        carbon_med = statistics.median(overhead["carbon"])
        results["overhead_pct"] = (carbon_med - none_med) / none_med * 100
    results["hook_cost"] = hook_cost_us()
    results["import_ms"] = import_cost_ms()
    save()
    _print_runs(results, ("counter", "sampled", "counter_short_epochs", "sampled_short_epochs"))
    for key in ("quiet_counter", "quiet_sampled"):
        r = results[key]
        er = r["epoch_ratios"]
        print(
            f"{key}: span ratio {r['span_ratio']:.5f} over {r['span_s']:.1f} s"
            f" ({r['span_counter_j']:.0f} J); per-epoch median {statistics.median(er):.4f}"
            f" [{min(er):.4f}, {max(er):.4f}]; {r['methods']}"
        )
    print(f"overhead: {results['overhead_pct']:+.3f}% (medians {overhead})")
    print(f"hook cost: {results['hook_cost']}; import {results['import_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
