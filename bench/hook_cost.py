"""CPU microseconds of one epoch's hook pair, the tracker's and the Lightning callback's.

    PYTHONPATH=. python bench/hook_cost.py            # ~1 minute on 2 cores
    PYTHONPATH=. python bench/hook_cost.py --smoke    # the plumbing, in seconds

Prints the median (and the 10th and 90th percentiles) of each pair, timed one by one with
``time.perf_counter``:

* **tracker**: ``CarbonTracker.epoch_start()`` + ``epoch_end()`` back to back, on the simulated
  sensors (a stated 300 W GPU and 100 W CPU: ``sim_gpu`` and ``sim_cpu``), no run log, the
  run's length unknown (so no prediction: ``bench/predict_cost.py`` times that). This is what
  ``bench/gpu_proof.py`` times with real NVML sensors ("hook pair" in docs/benchmarks.md);
* **tracker + run log**: the same, writing the run log (a temporary folder);
* **tracker + prediction at N epochs** (``--history``, default 100 and 1,000 epochs): the same
  pair, no run log, with the run's length known, so that ``epoch_end`` predicts the whole run
  from the history so far: the pairs made while the history holds N to N + ``--window`` - 1
  epochs, in one run of max(N) + ``--window`` epochs (the tracker keeps at most 4,096);
* **lightning**: the time spent inside ``CarbonCallback.on_train_epoch_start`` and
  ``on_train_epoch_end`` (metrics logged through ``pl_module.log`` to a CSV logger) in a real
  fit of a tiny model on the CPU, prediction off (``epochs_before_pred=0``), so that the figure
  is the hooks' own cost; and **lightning + prediction**, the defaults (a prediction after every
  epoch from the epochs so far; it grows with the history, see ``bench/predict_cost.py``).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

#: The simulated sensors every tracker here uses (no hardware is read).
SIMULATED = {
    "sim_gpu": "bench GPU",
    "sim_gpu_watts": 300.0,
    "sim_gpu_util": 1.0,
    "sim_cpu": "bench CPU",
    "sim_cpu_tdp": 100.0,
    "sim_cpu_util": 1.0,
}
SETTINGS = {"verbose": 0, "zone": "DE", "offline": True, **SIMULATED}


def summary_us(seconds: list[float]) -> dict[str, float]:
    """Median, 10th and 90th percentiles of ``seconds``, in microseconds."""
    us = sorted(s * 1e6 for s in seconds)
    deciles = statistics.quantiles(us, n=10) if len(us) > 1 else us * 9
    return {"median": statistics.median(us), "p10": deciles[0], "p90": deciles[-1], "n": len(us)}


def tracker_pairs(pairs: int, log_dir: str | None) -> list[float]:
    """Seconds of each ``epoch_start()`` + ``epoch_end()`` pair (after one untimed pair)."""
    from carbon_callbacks.core.tracker import CarbonTracker

    tracker = CarbonTracker(log_dir=log_dir, **SETTINGS)
    tracker.start()
    tracker.epoch_start()
    tracker.epoch_end()
    timer = time.perf_counter
    out = []
    for _ in range(pairs):
        t0 = timer()
        tracker.epoch_start()
        tracker.epoch_end()
        out.append(timer() - t0)
    tracker.stop()
    return out


def prediction_pairs(lengths: list[int], window: int) -> dict[int, list[float]]:
    """Seconds of each ``epoch_start()`` + ``epoch_end()`` pair of a tracker that predicts after
    every epoch, for the pairs after which its history holds ``N`` to ``N + window - 1`` epochs,
    per ``N`` in ``lengths``."""
    from carbon_callbacks.core.tracker import CarbonTracker

    last = max(lengths) + window - 1
    tracker = CarbonTracker(log_dir=None, epochs=last + 1, **SETTINGS)
    tracker.start()
    timer = time.perf_counter
    out: dict[int, list[float]] = {n: [] for n in lengths}
    for done in range(1, last + 1):
        t0 = timer()
        tracker.epoch_start()
        tracker.epoch_end()
        spent = timer() - t0
        for n in lengths:
            if n <= done < n + window:
                out[n].append(spent)
    assert tracker.prediction is not None and tracker.prediction.after_epochs == last
    tracker.stop()
    return out


def _timed(hook: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    """``hook``, appending the seconds each call takes to ``spent``."""

    @functools.wraps(hook)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return hook(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)

    return wrapper


def lightning_pairs(epochs: int, log_dir: str, **settings: Any) -> tuple[list[float], list[float]]:
    """Seconds inside the callback's two epoch hooks per epoch, in a tiny CPU fit, and of
    those, the seconds inside the tracker's ``epoch_start`` and ``epoch_end``."""
    import torch
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import CSVLogger

    from carbon_callbacks.integrations.lightning import CarbonCallback

    class Tiny(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8
    )
    callback = CarbonCallback(log_dir=None, **SETTINGS, **settings)
    starts: list[float] = []
    ends: list[float] = []
    in_tracker: list[float] = []
    # Lightning looks the hooks up on the instance, and the callback its tracker's methods, so
    # these wrappers are what is called
    callback.on_train_epoch_start = _timed(callback.on_train_epoch_start, starts)  # type: ignore[method-assign]
    callback.on_train_epoch_end = _timed(callback.on_train_epoch_end, ends)  # type: ignore[method-assign]
    tracker = callback.tracker
    tracker.epoch_start = _timed(tracker.epoch_start, in_tracker)  # type: ignore[method-assign]
    tracker.epoch_end = _timed(tracker.epoch_end, in_tracker)  # type: ignore[method-assign]
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=CSVLogger(log_dir, name="csv"),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Tiny(), loader)
    pairs = [s + e for s, e in zip(starts, ends, strict=True)]
    tracked = [s + e for s, e in zip(in_tracker[::2], in_tracker[1::2], strict=True)]
    return pairs[1:], tracked[1:]  # the first epoch starts the tracker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3000, help="tracker pairs per variant")
    parser.add_argument("--epochs", type=int, default=300, help="epochs of the Lightning fit")
    parser.add_argument(
        "--history",
        default="100,1000",
        help="history lengths (epochs, comma-separated) at which to time pairs with prediction",
    )
    parser.add_argument("--window", type=int, default=50, help="pairs timed per history length")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--smoke", action="store_true", help="a few pairs and epochs only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs, args.epochs, args.history, args.window = 20, 4, "3,10", 5
    lengths = [int(n) for n in args.history.split(",") if n.strip()]
    warnings.simplefilter("ignore")  # the run's length unknown, Lightning's advice: not timed
    results: dict[str, Any] = {
        "pairs": args.pairs,
        "epochs": args.epochs,
        "history": lengths,
        "window": args.window,
    }
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, Callable[[], Any]] = {
            "tracker": lambda: tracker_pairs(args.pairs, None),
            "tracker + run log": lambda: tracker_pairs(args.pairs, tmp),
            "tracker + prediction": lambda: prediction_pairs(lengths, args.window),
            "lightning": lambda: lightning_pairs(args.epochs, tmp, epochs_before_pred=0),
            "lightning + prediction": lambda: lightning_pairs(args.epochs, tmp),
        }
        for name, run in runs.items():
            pairs = run()
            if isinstance(pairs, dict):  # per history length
                for n, timed in pairs.items():
                    label = f"{name} at {n} epochs"
                    results[label] = stats = summary_us(timed)
                    print(
                        f"{label:40s} median {stats['median']:8.1f} us"
                        f"  [p10 {stats['p10']:.1f}, p90 {stats['p90']:.1f}]  n={stats['n']}",
                        flush=True,
                    )
                continue
            inside = None
            if isinstance(pairs, tuple):  # Lightning's: the hooks, and the tracker inside them
                pairs, tracked = pairs
                results[f"{name}: in the tracker"] = inside = summary_us(tracked)
            results[name] = stats = summary_us(pairs)
            line = (
                f"{name:24s} median {stats['median']:8.1f} us"
                f"  [p10 {stats['p10']:.1f}, p90 {stats['p90']:.1f}]  n={stats['n']}"
            )
            if inside is not None:
                line += f"; in the tracker: median {inside['median']:.1f} us"
            print(line, flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
