"""Runs on several GPUs against per-GPU counters: ``python -m bench distributed WHAT``.

    PYTHONPATH=. python -m bench distributed lightning --out ddp.json [--epochs 12 --samples 1024]
    PYTHONPATH=. torchrun --nproc_per_node 2 -m bench distributed hf --out hf_2gpu.json
    PYTHONPATH=. python -m bench distributed nnunet --out nnunet_ddp.json --copy-logs logs/
    python -m bench distributed nnunet-wheels .whl_nnunet   # where pip can reach the index

``lightning`` (here): Lightning DDP on 2 GPUs, each rank measuring its own GPU, rank 0 logging
the sum. The launching process (rank 0) starts one counter poller per GPU (``bench/poller.py``,
separate processes), Lightning starts rank 1. After the fit, rank 0 compares the GPU energy of
each epoch in the run log (the sum of both ranks' GPUs) with the pollers' energy of both GPUs
over the same windows, and checks the header: two distinct GPUs, one CPU/DRAM measurer.

Each rank measures its GPU over its *own* epoch edges, which differ from rank 0's by the time
the ranks take to reach the same hook. So each rank also records its edges (right around the
tracker's marks) and rank 0 compares each rank's GPU with its own GPU's counter over that
rank's own windows (``per_rank``); ``own_windows_run_ratio`` sums both.

``hf``: ``bench/distributed_hf.py``; ``nnunet``: ``bench/distributed_nnunet.py``;
``nnunet-wheels``: ``bench/nnunet_wheels.py``.
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
import torch

from bench.poller import start_pollers, stop_pollers, window_j
from bench.workloads import Seg
from carbon_callbacks.integrations.lightning import CarbonCallback

#: ``python -m bench distributed WHAT``: the module that runs each (``lightning`` is here).
RUNS = {
    "hf": "bench.distributed_hf",
    "nnunet": "bench.distributed_nnunet",
    "nnunet-wheels": "bench.nnunet_wheels",
}


class Edges(pl.Callback):
    """Records this rank's epoch edges (unix s) next to the tracker's marks, then writes them.

    Placed after the carbon callback for the start edge and before it for the end edge, so that
    neither edge includes the tracker's collective at the epoch's end.
    """

    def __init__(self, path: str, which: str, shared: dict[str, list[Any]]) -> None:
        self.path, self.which, self.shared = path, which, shared

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.which == "start":
            self.shared["start"].append(time.time())

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.which == "end":
            self.shared["end"].append(time.time())

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.which == "end":
            with open(self.path + ".tmp", "w") as fh:
                json.dump(self.shared, fh)
            os.replace(self.path + ".tmp", self.path)


def _own_windows(steps: list, log: Any, folder: str) -> dict[str, Any]:
    """Each rank's GPU energy against its own GPU's counter over its own epoch edges."""
    out: dict[str, Any] = {}
    tracked_all = ref_all = 0.0
    ref_power: list[list[float]] = []  # per rank, per epoch: counter J / own window s
    for rank in range(2):
        path = os.path.join(folder, f"edges_rank{rank}.json")
        deadline = time.time() + 60
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.5)
        with open(path) as fh:
            edges = json.load(fh)
        tracked = [
            sum(v for k, v in e["energy_j"].items() if k.startswith(f"rank{rank}/gpu:"))
            for e in log.epochs
        ]
        windows = list(zip(edges["start"], edges["end"], strict=True))
        ref = [window_j([steps[rank]], a, b) for a, b in windows]
        n = min(len(tracked), len(ref))
        ratios = [t / r for t, r in zip(tracked[:n], ref[:n], strict=True)]
        out[f"rank{rank}"] = {
            "run_ratio": sum(tracked[:n]) / sum(ref[:n]),
            "per_epoch_ratios": ratios,
            "epoch_s": [b - a for a, b in windows],
        }
        tracked_all += sum(tracked[:n])
        ref_all += sum(ref[:n])
        ref_power.append([r / (b - a) for r, (a, b) in zip(ref[:n], windows, strict=False)])
    out["own_windows_run_ratio"] = tracked_all / ref_all
    out["power"] = _power_check(log, ref_power)
    return out


def _power_check(log: Any, ref_power: list[list[float]]) -> dict[str, Any]:
    """The logged GPU power of each epoch against the counters' (each rank's GPU over its own
    epoch, summed), and what dividing all joules by rank 0's duration would have given."""
    logged, by_rank0 = [], []
    for e, *ranks in zip(log.epochs, *ref_power, strict=False):
        reference = sum(ranks)
        gpu_j = sum(v for k, v in e["energy_j"].items() if "/gpu:" in k)
        logged.append(e["power_w"]["gpu"] / reference)
        by_rank0.append(gpu_j / e["duration_s"] / reference)
    return {
        "logged_over_counters": logged,
        "rank0_duration_over_counters": by_rank0,
        "logged_worst": max(logged, key=lambda r: abs(r - 1)),
        "rank0_duration_worst": max(by_rank0, key=lambda r: abs(r - 1)),
    }


def main(argv: list[str] | None = None) -> int:
    """``lightning`` (here), ``hf``, ``nnunet`` or ``nnunet-wheels``, then that run's options."""
    argv = sys.argv[1:] if argv is None else list(argv)
    what, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if what in RUNS:
        import importlib

        return int(importlib.import_module(RUNS[what]).main(rest) or 0)
    if what != "lightning":
        print("usage: python -m bench distributed {lightning,hf,nnunet,nnunet-wheels} [OPTIONS]")
        return 0 if what in ("-h", "--help") else 2
    return lightning_ddp(rest)


def lightning_ddp(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench distributed lightning")
    parser.add_argument("--out", default="ddp_proof.json")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--samples", type=int, default=1024, help="images per epoch (global)")
    parser.add_argument("--log-dir", default=os.path.join(tempfile.gettempdir(), "ddp_carbon"))
    args = parser.parse_args(argv)
    rank0 = os.environ.get("LOCAL_RANK", "0") == "0"
    pollers = []
    if rank0:
        os.makedirs(args.log_dir, exist_ok=True)
        pollers = start_pollers(args.log_dir, gpus=2)
    x = torch.randn(args.samples, 1, 256, 256)
    data = torch.utils.data.TensorDataset(x, (x > 0.5).float())
    loader = torch.utils.data.DataLoader(data, batch_size=32, num_workers=2)
    callback = CarbonCallback(log_dir=args.log_dir, verbose=1, zone="DE")
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    edges_path = os.path.join(args.log_dir, f"edges_rank{rank}.json")
    if os.path.exists(edges_path):
        os.remove(edges_path)
    shared: dict[str, list[Any]] = {"start": [], "end": []}
    edge_end, edge_start = Edges(edges_path, "end", shared), Edges(edges_path, "start", shared)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="gpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[edge_end, callback, edge_start],
    )
    trainer.fit(Seg(32), loader)
    if not trainer.is_global_zero:
        return 0
    steps = stop_pollers(pollers)
    from carbon_callbacks.core.runlog import read_run_log

    log = read_run_log(callback.tracker.log_path)
    rows = []
    for e in log.epochs:
        tracked = sum(v for k, v in e["energy_j"].items() if "/gpu:" in k)
        ref = window_j(steps, e["start_unix_s"], e["end_unix_s"])
        rows.append({"tracked_j": tracked, "reference_j": ref, "ratio": tracked / ref,
                     "duration_s": e["duration_s"], "energy_j": e["energy_j"]})  # fmt: skip
    ratios = [r["ratio"] for r in rows]
    result = {
        "gpus": [torch.cuda.get_device_name(i) for i in range(2)],
        "header_sensors": log.header["sensors"],
        "ranks": log.header["ranks"],
        "epochs": rows,
        "run_ratio": sum(r["tracked_j"] for r in rows) / sum(r["reference_j"] for r in rows),
        "steady_run_ratio": sum(r["tracked_j"] for r in rows[1:])
        / sum(r["reference_j"] for r in rows[1:]),
        "per_epoch_median": statistics.median(ratios),
        "events": [ev["kind"] for ev in log.events],
        "per_rank": _own_windows(steps, log, args.log_dir),
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "epochs"}, indent=1))
    print("per-epoch ratios:", [round(r, 4) for r in ratios])
    print("own windows:", {k: (v if isinstance(v, float) else round(v["run_ratio"], 5))
                           for k, v in result["per_rank"].items() if k != "power"})  # fmt: skip
    power = result["per_rank"]["power"]
    print("GPU power, logged / counters:", [round(r, 4) for r in power["logged_over_counters"]])
    print("GPU power, J / rank 0's s / counters:",
          [round(r, 4) for r in power["rank0_duration_over_counters"]])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
