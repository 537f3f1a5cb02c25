"""Milliseconds one prediction costs on the training thread, by run length.

    PYTHONPATH=. python bench/predict_cost.py [--epochs 100 4096 10000 100000] [--json out.json]

The tracker predicts after every ``epoch_end`` from its history, a window of the last 4,096
epochs (a ``deque``), through one :class:`RunPredictor` kept for the run. This feeds a
predictor exactly so, on noisy synthetic epochs (1 s, 1 Wh, 2 % noise; a warm-up first epoch)
and, for each run length ``n``, times the predictions after the epochs ``n + 1`` to ``n + 5``
(median, and the largest of the five). Epochs before those are fed and predicted untimed.
With ``--tracker``, also the tracker's whole ``epoch_start`` + ``epoch_end`` pair with
prediction on (simulated sensors, no run log; median of the 50 pairs from epoch ``n`` on, in one
run), and the prediction's share of it. With ``--memory``, also the bytes the predictor holds
after the run (every object reachable from it, each counted once; the window is the caller's).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import types
from collections import deque
from pathlib import Path

from carbon_callbacks.core.predict import EpochSample, RunPredictor

HISTORY_LEN = 4096  # the tracker's window (core/tracker.py)
TIMED = 5


def _epochs(count: int, seed: int = 0) -> list[EpochSample]:
    rng = random.Random(seed)
    out = [EpochSample(3.0, 0.003, 0.9)]  # a warm-up first epoch
    for _ in range(count - 1):
        out.append(EpochSample(1.0 + rng.gauss(0, 0.01), 0.001 * (1 + rng.gauss(0, 0.02)), 0.3))
    return out


def cost_ms(n: int, memory: bool = False) -> dict[str, float]:
    """Per-call milliseconds of the predictions after epochs ``n + 1 .. n + TIMED`` (and with
    ``memory``, the KiB the predictor holds then)."""
    epochs = _epochs(n + TIMED)
    history: deque[EpochSample] = deque(maxlen=HISTORY_LEN)
    predictor = RunPredictor()
    total = n + 1000
    timed = []
    for i, e in enumerate(epochs):
        history.append(e)
        t0 = time.perf_counter()
        predictor.predict(
            history,
            total_epochs=total,
            intensity_g_per_kwh=300.0,
            first_epoch_index=i + 1 - len(history),
        )
        if i >= n:
            timed.append((time.perf_counter() - t0) * 1e3)
    row = {"epochs": n, "median_ms": statistics.median(timed), "max_ms": max(timed)}
    if memory:
        row["predictor_kib"] = deep_size(predictor) / 1024
    return row


def tracker_pair_ms(lengths: list[int]) -> list[dict[str, float]]:
    """The tracker's pair and its prediction, in ms, for 50 epochs from each of ``lengths``."""
    import warnings  # noqa: PLC0415 - only this mode builds a tracker

    from carbon_callbacks.core.tracker import CarbonTracker  # noqa: PLC0415

    warnings.simplefilter("ignore")
    simulated = {
        "sim_gpu": "bench GPU",
        "sim_gpu_watts": 300.0,
        "sim_gpu_util": 1.0,
        "sim_cpu": "bench CPU",
        "sim_cpu_tdp": 100.0,
        "sim_cpu_util": 1.0,
    }
    tracker = CarbonTracker(
        log_dir=None, verbose=0, zone="DE", offline=True, epochs=max(lengths) + 1000, **simulated
    )
    predictor, spent = tracker._predictor, [0.0]
    predict = predictor.predict

    def timed_predict(*args: object, **kwargs: object) -> object:
        t0 = time.perf_counter()
        out = predict(*args, **kwargs)  # type: ignore[arg-type]
        spent[0] = time.perf_counter() - t0
        return out

    predictor.predict = timed_predict  # type: ignore[method-assign]
    pairs: dict[int, list[tuple[float, float]]] = {n: [] for n in lengths}
    for i in range(max(lengths) + 50):
        t0 = time.perf_counter()
        tracker.epoch_start()
        tracker.epoch_end()
        pair = time.perf_counter() - t0
        for n in lengths:
            if n <= i < n + 50:
                pairs[n].append((pair * 1e3, spent[0] * 1e3))
    tracker.stop()
    return [
        {
            "epochs": n,
            "pair_median_ms": statistics.median(p for p, _ in pairs[n]),
            "predict_median_ms": statistics.median(q for _, q in pairs[n]),
        }
        for n in lengths
    ]


def deep_size(obj: object) -> int:
    """Bytes of ``obj`` and of every object reachable from it (classes and modules left out)."""
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[100, 4096, 10_000, 100_000])
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--memory", action="store_true", help="also the predictor's heap (slower)")
    parser.add_argument("--tracker", action="store_true", help="also the tracker's hook pair")
    args = parser.parse_args(argv)
    rows = []
    for n in args.epochs:
        row = cost_ms(n, args.memory)
        rows.append(row)
        held = f", predictor {row['predictor_kib']:,.0f} KiB" if args.memory else ""
        print(
            f"{n:7d} epochs: {row['median_ms']:7.3f} ms per prediction "
            f"(max {row['max_ms']:.3f}){held}",
            flush=True,
        )
    out: dict[str, object] = {"history_len": HISTORY_LEN, "rows": rows}
    if args.tracker:
        out["tracker"] = tracker_pairs = tracker_pair_ms(args.epochs)
        for row in tracker_pairs:
            print(
                f"{row['epochs']:7d} epochs: tracker pair {row['pair_median_ms']:.3f} ms, of which "
                f"the prediction {row['predict_median_ms']:.3f} ms",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
