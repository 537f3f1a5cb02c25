"""Main job: train a small 2D U-Net on synthetic segmentation data with the Lightning callback.

``python -m carbon_callbacks.demo`` (or ``carbon-callbacks-demo``) trains for a few epochs on the
GPU if there is one, else on the CPU, logs Dice, loss and the ``carbon/...`` metrics to
TensorBoard, prints the prediction after the first epoch and the final report, and says where
the TensorBoard logs and the run log are. It takes well under 2 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any


def _make_dataset(n: int, size: int, seed: int) -> Any:
    """Noisy images with one bright disc or square each; the mask is the shape."""
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.empty(n, 1, size, size)
    masks = torch.empty(n, 1, size, size)
    for i in range(n):
        cy, cx = torch.randint(size // 5, 4 * size // 5, (2,), generator=g).tolist()
        r = int(torch.randint(size // 10, size // 4, (1,), generator=g))
        if i % 2:
            shape = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        else:
            shape = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
        masks[i, 0] = shape.float()
        images[i, 0] = shape.float() * 0.8 + 0.35 * torch.randn(size, size, generator=g)
    return torch.utils.data.TensorDataset(images, masks)


def build_unet(width: int = 8, depth: int = 3) -> Any:
    """A small 2D U-Net: ``depth`` levels, ``width`` channels at the top, doubling per level."""
    import torch
    from torch import nn

    def block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [width * 2**i for i in range(depth)]
            self.down = nn.ModuleList()
            c_prev = 1
            for c in chans:
                self.down.append(block(c_prev, c))
                c_prev = c
            self.bottom = block(chans[-1], chans[-1] * 2)
            self.up = nn.ModuleList()
            self.dec = nn.ModuleList()
            c_prev = chans[-1] * 2
            for c in reversed(chans):
                self.up.append(nn.ConvTranspose2d(c_prev, c, 2, stride=2))
                self.dec.append(block(2 * c, c))
                c_prev = c
            self.head = nn.Conv2d(chans[0], 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for blk in self.down:
                x = blk(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.bottom(x)
            for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
                x = dec(torch.cat([up(x), skip], dim=1))
            return self.head(x)

    return UNet()


def dice_score(logits: Any, target: Any, eps: float = 1e-6) -> Any:
    """Mean Dice of the thresholded prediction against a binary mask."""
    pred = (logits > 0).float()
    inter = (pred * target).sum(dim=(1, 2, 3))
    denom = pred.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return ((2 * inter + eps) / (denom + eps)).mean()


def make_module(width: int = 8, lr: float = 3e-3) -> Any:
    """The LightningModule: U-Net, BCE + soft-Dice loss, Dice metric."""
    import lightning.pytorch as pl
    import torch

    class SegModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = build_unet(width)

        def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            p = torch.sigmoid(logits)
            soft = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            return bce + soft

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            logits = self.net(x)
            loss = self._loss(logits, y)
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self.net(x)
            self.log("val/loss", self._loss(logits, y), on_epoch=True)
            self.log("val/dice", dice_score(logits, y), on_epoch=True, prog_bar=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=lr)

    return SegModule()


def run(
    epochs: int = 5,
    out_dir: str = "carbon_demo_output",
    n_train: int = 96,
    n_val: int = 32,
    size: int = 64,
    width: int = 8,
    accelerator: str = "auto",
    seed: int = 0,
    **carbon_settings: Any,
) -> dict[str, Any]:
    """Train the demo and return where its outputs are and the final metrics."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from carbon_callbacks.integrations.lightning import CarbonCallback

    pl.seed_everything(seed, verbose=False)
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    out = Path(out_dir)
    train = _make_dataset(n_train, size, seed)
    val = _make_dataset(n_val, size, seed + 1)
    loaders = (
        torch.utils.data.DataLoader(train, batch_size=16, shuffle=True),
        torch.utils.data.DataLoader(val, batch_size=16),
    )
    callback = CarbonCallback(
        log_dir=str(out / "carbon_logs"), run_name="demo-unet", **carbon_settings
    )
    tb = TensorBoardLogger(str(out), name="tensorboard")
    csv = CSVLogger(str(out), name="csv")
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        logger=[tb, csv],
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(make_module(width), *loaders)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {
        "tensorboard_dir": tb.log_dir,
        "csv_dir": csv.log_dir,
        "run_log": callback.tracker.log_path,
        "metrics": metrics,
        "accelerator": accelerator,
    }


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(
        prog="carbon-callbacks-demo",
        description="Train a small 2D U-Net on synthetic data and log energy and CO2 per epoch.",
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs to train (default 5)")
    parser.add_argument("--out", default="carbon_demo_output", help="output folder")
    parser.add_argument("--train-samples", type=int, default=96)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--width", type=int, default=8, help="U-Net channels at the top level")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--zone", default=None, help="country or US state code, e.g. DK, US-CA")
    parser.add_argument("--pue", type=float, default=None, help="data-centre PUE (default 1.0)")
    args = parser.parse_args(argv)
    result = run(
        epochs=args.epochs,
        out_dir=args.out,
        n_train=args.train_samples,
        size=args.size,
        width=args.width,
        accelerator=args.accelerator,
        zone=args.zone,
        pue=args.pue,
    )
    m = result["metrics"]
    dice = m.get("val/dice", math.nan)
    print(
        "\ncarbon_callbacks demo finished on "
        f"{result['accelerator']}: val Dice {dice:.3f}, "
        f"{m.get('carbon/energy_kwh', math.nan):.6f} kWh, "
        f"{m.get('carbon/co2_g', math.nan):.4f} gCO2eq"
    )
    print(f"  TensorBoard logs: {result['tensorboard_dir']}  (tensorboard --logdir {args.out})")
    print(f"  CSV metrics:      {result['csv_dir']}/metrics.csv")
    print(f"  Run log:          {result['run_log']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
