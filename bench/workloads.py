"""The benchmarks' Lightning workload: a U-Net on random images held on the GPU, and an epoch timer.

Used by ``peers``, ``distributed`` and ``memory``; ``overhead`` has its own plain loop.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch

from carbon_callbacks.demo import build_unet


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


class Seg(pl.LightningModule):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = build_unet(width, depth=4)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def loader(n: int, size: int, batch: int, device: str = "cuda") -> Any:
    """``n`` random images ``size`` x ``size`` and their masks, held on ``device``."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, 1, size, size, device=device, generator=g)
    y = (x > 0.5).float()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
