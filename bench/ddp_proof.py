"""Lightning DDP on 2 GPUs: each rank measures its own GPU, rank 0 logs the sum.

    PYTHONPATH=. python bench/ddp_proof.py --out ddp_proof.json

The launching process (rank 0) starts one counter poller per GPU (``bench/counter_poller.py``,
separate processes), Lightning starts rank 1. After the fit, rank 0 compares the GPU energy of
each epoch in the run log (the sum of both ranks' GPUs) with the pollers' energy of both GPUs
over the same windows, and checks the header: two distinct GPUs, one CPU/DRAM measurer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from typing import Any

import lightning.pytorch as pl
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from counter_poller import start_pollers, stop_pollers, window_j  # noqa: E402

from carbon_callbacks.demo import build_unet  # noqa: E402
from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: E402


class Seg(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = build_unet(32, depth=4)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="ddp_proof.json")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--log-dir", default=os.path.join(tempfile.gettempdir(), "ddp_carbon"))
    args = parser.parse_args()
    rank0 = os.environ.get("LOCAL_RANK", "0") == "0"
    pollers = []
    if rank0:
        os.makedirs(args.log_dir, exist_ok=True)
        pollers = start_pollers(args.log_dir, gpus=2)
    x = torch.randn(1024, 1, 256, 256)
    data = torch.utils.data.TensorDataset(x, (x > 0.5).float())
    loader = torch.utils.data.DataLoader(data, batch_size=32, num_workers=2)
    callback = CarbonCallback(log_dir=args.log_dir, verbose=1, zone="DE")
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="gpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(Seg(), loader)
    if not trainer.is_global_zero:
        return 0
    steps = stop_pollers(pollers)
    from carbon_callbacks.core.records import read_run_log

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
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "epochs"}, indent=1))
    print("per-epoch ratios:", [round(r, 4) for r in ratios])
    return 0


if __name__ == "__main__":
    sys.exit(main())
