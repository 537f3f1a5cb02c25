"""Hugging Face Trainer on the GPU: a small transformer, one GPU or ``torchrun`` on several.

    CUDA_VISIBLE_DEVICES=0 PYTHONPATH=. python -m bench distributed hf --out hf_1gpu.json
    PYTHONPATH=. torchrun --nproc_per_node 2 -m bench distributed hf --out hf_2gpu.json

A GPT-2-shaped model built from a config (no download) trains on random tokens. Rank 0 starts
one counter poller per visible GPU (``bench/poller.py``) and, after training, compares
each epoch's GPU energy in the run log (all ranks) with the pollers over the same windows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from typing import Any

import torch

from bench.poller import start_pollers, stop_pollers, window_j
from bench.stats import settling_gpu_j
from carbon_callbacks.integrations.huggingface import CarbonCallback


class Tokens(torch.utils.data.Dataset):
    """``n`` random sequences (tokens below ``vocab``); the labels are the inputs."""

    def __init__(self, n: int, length: int, vocab: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.x[i], "labels": self.x[i]}


def main(argv: list[str] | None = None) -> int:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="hf_proof.json")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tmp = os.path.join(tempfile.gettempdir(), f"hf_proof_{world}")
    os.makedirs(tmp, exist_ok=True)
    pollers = start_pollers(tmp, gpus=world) if rank == 0 else []
    config = GPT2Config(n_layer=6, n_embd=512, n_head=8, vocab_size=8192, n_positions=256)
    model = GPT2LMHeadModel(config)
    targs = TrainingArguments(
        output_dir=tmp, num_train_epochs=args.epochs, per_device_train_batch_size=32,
        logging_strategy="epoch", eval_strategy="no", save_strategy="no", report_to="none",
        disable_tqdm=True, bf16=True,
    )  # fmt: skip
    callback = CarbonCallback(log_dir=tmp, zone="DE", verbose=1)
    trainer = Trainer(
        model=model, args=targs, train_dataset=Tokens(2048, 256, 8192), callbacks=[callback]
    )
    trainer.train()
    if rank != 0:
        return 0
    steps = stop_pollers(pollers)
    from carbon_callbacks.core.runlog import read_run_log

    log = read_run_log(callback.tracker.log_path)
    rows = []
    for e in log.epochs:
        tracked = sum(v for k, v in e["energy_j"].items() if "gpu:" in k)
        ref = window_j(steps, e["start_unix_s"], e["end_unix_s"])
        rows.append({"tracked_j": tracked, "reference_j": ref, "duration_s": e["duration_s"]})
    ratios = [r["tracked_j"] / r["reference_j"] for r in rows]
    result = {
        "world_size": world,
        "sensors": [s["name"] + " " + s["device"] for s in log.header["sensors"]],
        "epochs": rows,
        # the last edges' settling is counted in the run's total (not in combined runs)
        "settling_j": settling_gpu_j(log.phases),
        "run_ratio": (sum(r["tracked_j"] for r in rows) + settling_gpu_j(log.phases))
        / sum(r["reference_j"] for r in rows),
        "per_epoch_median": statistics.median(ratios),
        "per_epoch_ratios": ratios,
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "epochs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
