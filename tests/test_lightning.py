"""A real Lightning fit on the CPU: carbon keys in TensorBoard and CSV, equal to the run log."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from carbon_callbacks.core import metrics as keys  # noqa: E402
from carbon_callbacks.core.runlog import read_run_log  # noqa: E402
from carbon_callbacks.integrations._gpu import cuda_gpu_id  # noqa: E402
from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: E402

EPOCHS = 3
EXPECTED = (*keys.EPOCH_KEYS, keys.POWER_W, keys.CPU_POWER_W)  # prediction keys: below


class Tiny(pl.LightningModule):
    def __init__(self, fail_at_epoch: int | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.fail_at_epoch = fail_at_epoch

    def training_step(self, batch, batch_idx):
        if self.fail_at_epoch is not None and self.current_epoch == self.fail_at_epoch:
            raise ValueError("user bug in training_step")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    ds = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(ds, batch_size=8)


def _trainer(tmp_path: Path, callback, epochs=EPOCHS, **kw):
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=[TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path), name="csv")],
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def _callback(tmp_path: Path, **kw):
    settings = {"log_dir": str(tmp_path / "carbon"), "zone": "DK", "interval_s": 0.05, "verbose": 0}
    settings.update(kw)
    return CarbonCallback(**settings)


def test_fit_logs_every_key_every_epoch_to_tensorboard_and_csv(tmp_path):
    cb = _callback(tmp_path)
    trainer = _trainer(tmp_path, cb, enable_checkpointing=False)
    trainer.fit(Tiny(), _loader(), _loader())
    log = read_run_log(cb.tracker.log_path)
    assert len(log.epochs) == EPOCHS and log.footer["status"] == "completed"
    assert log.header["epochs"] == EPOCHS  # taken from max_epochs
    assert log.header["intensity"]["zone"] == "DK"

    ea = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    ea.Reload()
    rows = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    for key in EXPECTED:
        tb_values = [e.value for e in ea.Scalars(key)]
        csv_values = [float(r[key]) for r in rows if r.get(key)]
        run_log_values = [_from_record(rec, key) for rec in log.epochs]
        assert len(tb_values) == EPOCHS, key
        assert tb_values == pytest.approx(run_log_values, rel=1e-6, abs=1e-30), key
        assert csv_values == pytest.approx(run_log_values, rel=1e-6, abs=1e-30), key
    for key in keys.PREDICTION_KEYS:
        predicted = [_from_prediction(log, i, key) for i in range(EPOCHS)]
        assert [e.value for e in ea.Scalars(key)] == pytest.approx(predicted, rel=1e-6), key
    # the phases: validation per epoch, the sanity check once
    names = [p["name"] for p in log.phases]
    assert names.count("validation") == EPOCHS and names.count("sanity_check") == 1
    assert "carbon_callbacks-meter" not in {t.name for t in threading.enumerate()}


def _from_record(rec: dict, key: str) -> float:
    mapping = {
        keys.EPOCH_ENERGY_KWH: rec["energy_kwh"],
        keys.EPOCH_CO2_G: rec["co2_g"],
        keys.EPOCH_DURATION_S: rec["duration_s"],
        keys.ENERGY_KWH: rec["cumulative"]["energy_kwh"],
        keys.CO2_G: rec["cumulative"]["co2_g"],
        keys.INTENSITY_G_PER_KWH: rec["intensity"]["intensity_g_per_kwh"],
        keys.POWER_W: rec["power_w"]["total"],
        keys.CPU_POWER_W: rec["power_w"]["cpu"],
    }
    if key in mapping:
        return mapping[key]
    raise KeyError(key)


def _from_prediction(log, epoch: int, key: str) -> float:
    pred = [p for p in log.predictions if p["after_epochs"] == epoch + 1][0]
    return {
        keys.PRED_ENERGY_KWH: pred["energy_kwh"],
        keys.PRED_CO2_G: pred["co2_g"],
        keys.PRED_DURATION_S: pred["duration_s"],
    }[key]


def test_resume_from_checkpoint_continues_totals(tmp_path):
    cb1 = _callback(tmp_path)
    t1 = _trainer(tmp_path, cb1, epochs=2, default_root_dir=str(tmp_path))
    t1.fit(Tiny(), _loader())
    ckpt = t1.checkpoint_callback.best_model_path
    first_total = read_run_log(cb1.tracker.log_path).footer["energy_kwh"]
    assert ckpt
    state = torch.load(ckpt, weights_only=False)["callbacks"]["CarbonCallback"]
    assert state["epochs"] == 2 and state["energy_kwh"] == pytest.approx(first_total)

    cb2 = _callback(tmp_path)
    t2 = _trainer(tmp_path, cb2, epochs=4, default_root_dir=str(tmp_path))
    t2.fit(Tiny(), _loader(), ckpt_path=ckpt)
    log2 = read_run_log(cb2.tracker.log_path)
    assert [e["epoch"] for e in log2.epochs] == [2, 3]  # no epoch counted twice
    assert log2.footer["epochs_completed"] == 4
    assert log2.footer["energy_kwh"] == pytest.approx(
        first_total + sum(e["energy_kwh"] for e in log2.epochs)
    )
    assert log2.header["resumed_from"] == [cb1.tracker.run_id]


def test_exception_in_training_step_propagates_and_footer_is_written(tmp_path):
    cb = _callback(tmp_path)
    trainer = _trainer(tmp_path, cb, enable_checkpointing=False)
    with pytest.raises(ValueError, match="user bug in training_step"):
        trainer.fit(Tiny(fail_at_epoch=1), _loader())
    log = read_run_log(cb.tracker.log_path)
    assert log.footer["status"] == "failed"
    assert len(log.epochs) == 1
    assert "carbon_callbacks-meter" not in {t.name for t in threading.enumerate()}


def test_works_with_the_pytorch_lightning_package(tmp_path):
    ptl = pytest.importorskip("pytorch_lightning")
    cb = _callback(tmp_path)
    trainer = ptl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
    )

    from lightning_tiny import tiny_module_class

    trainer.fit(tiny_module_class(ptl.LightningModule)(), _loader())
    assert len(read_run_log(cb.tracker.log_path).epochs) == 2
    assert keys.EPOCH_ENERGY_KWH in trainer.callback_metrics


def test_bad_setting_is_refused_when_the_callback_is_built(tmp_path):
    from carbon_callbacks.core.config import ConfigError

    with pytest.raises(ConfigError, match="pue"):
        CarbonCallback(log_dir=str(tmp_path), pue=-1)


@pytest.mark.parametrize(("sanity_steps", "work_ratio"), [(2, 12 / 32), (0, None)])
def test_check_val_every_n_epoch_becomes_the_validation_plan(tmp_path, sanity_steps, work_ratio):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 4, generator=g)
    val = torch.utils.data.DataLoader(  # 12 validation batches against 32 training batches
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8
    )
    train = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(
            x[:64].repeat(4, 1), x[:64].repeat(4, 1).sum(1, keepdim=True)
        ),
        batch_size=8,
    )
    callback = _callback(tmp_path)
    trainer = _trainer(
        tmp_path, callback, epochs=6, check_val_every_n_epoch=3, num_sanity_val_steps=sanity_steps
    )
    trainer.fit(Tiny(), train, val)
    log = read_run_log(callback.tracker.log_path)
    plans = [r for r in log.other if r["type"] == "plan"]
    assert len(plans) == 1
    assert plans[0]["name"] == "validation" and plans[0]["every_epochs"] == 3
    assert plans[0]["source"] == "lightning"
    assert plans[0]["work_ratio"] == (pytest.approx(work_ratio) if work_ratio else None)
    first = log.predictions[0]["method"]  # after epoch 0: validation not run yet
    if work_ratio is None:
        assert "validation: every 3 epochs (planned), 2 to come, not in the forecast" in first
    else:
        assert (
            "validation: every 3 epochs (planned), 2 to come x 0.375 of an epoch's batches" in first
        )
    # once it has run, its measured cost is used, on the planned schedule
    assert (
        "validation: every 3 epochs (planned), 1 to come x level of 1"
        in log.predictions[3]["method"]
    )


def test_no_plan_without_periodic_validation(tmp_path):
    callback = _callback(tmp_path)
    _trainer(tmp_path, callback, epochs=2).fit(Tiny(), _loader(), _loader())
    log = read_run_log(callback.tracker.log_path)
    assert [r for r in log.other if r["type"] == "plan"] == []


def test_every_integration_names_the_cuda_device_by_its_uuid(monkeypatch):
    # one lookup for Lightning, HF and nnU-Net: torch's UUID with or without "GPU-", else the
    # device's CUDA_VISIBLE_DEVICES entry; nothing for a device that is not CUDA
    uuids = {0: "1a2b-3c", 1: "GPU-4d5e"}
    props = lambda index: type("Props", (), {"uuid": uuids[index]})  # noqa: E731
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert cuda_gpu_id(torch.device("cpu")) is None
    assert cuda_gpu_id(torch.device("cuda", 0)) == "GPU-1a2b-3c"
    assert cuda_gpu_id(torch.device("cuda")) == "GPU-4d5e"
    uuids[0] = ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert cuda_gpu_id(torch.device("cuda", 0)) == "3"
