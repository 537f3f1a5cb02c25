"""A one-layer regression model and its data, for the tests that run real Lightning fits."""

from __future__ import annotations

import time
from typing import Any


def tiny_module_class(base: type, step_sleep_s: float = 0.0) -> type:
    """A LightningModule on ``base`` (``lightning.pytorch``'s or ``pytorch_lightning``'s).

    Args:
        base: the ``LightningModule`` class to derive from.
        step_sleep_s: seconds each training step sleeps (so that epochs last measurably long).
    """
    import torch

    class Tiny(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if step_sleep_s:
                time.sleep(step_sleep_s)
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Tiny


def tiny_loader() -> Any:
    """32 samples of 4 features whose target is their sum, in batches of 8 (seeded)."""
    import torch

    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8
    )
