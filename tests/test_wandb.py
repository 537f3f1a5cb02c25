"""W&B offline: a Lightning ``WandbLogger`` run, an HF ``report_to="wandb"`` run and a
Keras-on-torch run (the documented LambdaCallback route) all carry the carbon metrics per epoch.

Two read-backs: the in-process run summary (the last epoch; any wandb version), and the run's
offline ``.wandb`` file (every epoch). That file is wandb's internal format, so its parser is
pinned to the wandb version it was written against: other versions skip that part, saying so.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

from carbon_expect import expected_series, same  # noqa: E402
from power_traces import ConstantCounterSensor  # noqa: E402

from carbon_callbacks.core import metrics as keys  # noqa: E402
from carbon_callbacks.core.runlog import read_run_log  # noqa: E402
from carbon_callbacks.core.tracker import CarbonTracker  # noqa: E402

#: The offline file layout below was read from wandb 0.31.0 (notes: frameworks.md, 5.2).
PINNED_WANDB = "0.31."
EPOCHS = 3
EXPECTED_KEYS = (*keys.EPOCH_KEYS, keys.POWER_W, keys.GPU_POWER_W, *keys.PREDICTION_KEYS)


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "carbon-callbacks-test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    if wandb.run is not None:
        wandb.finish()


def _tracker(tmp_path: Path) -> CarbonTracker:
    return CarbonTracker(
        sensors=[ConstantCounterSensor("gpu:fake", 50.0, component="gpu")],
        log_dir=str(tmp_path / "carbon"),
        zone="DK",
        verbose=0,
    )


def _history(run_file: str) -> list[dict]:
    """The ``history`` records of an offline run file, in order (wandb 0.31 layout).

    The file: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-log blocks of
    32 KiB holding records with a 7-byte header (crc32c u32, length u16, type u8: 1 full,
    2 first, 3 middle, 4 last); each whole payload is a ``wandb_internal_pb2.Record``.
    """
    if not wandb.__version__.startswith(PINNED_WANDB):
        pytest.skip(
            f"the offline .wandb layout is pinned to wandb {PINNED_WANDB}x; installed "
            f"{wandb.__version__}: the per-epoch read-back is not checked"
        )
    deadline = time.monotonic() + 30
    while True:  # wandb's service may still be writing the file when finish() returns
        records = _records(Path(run_file).read_bytes())
        if "exit" in [r.WhichOneof("record_type") for r in records]:
            break
        assert time.monotonic() < deadline, f"{run_file} has no exit record after 30 s"
        time.sleep(0.1)
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = record.history.item  # a key with "/" is stored as nested_key parts
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return rows


def _records(data: bytes) -> list:
    from wandb.proto import wandb_internal_pb2

    assert data[:4] == b":W&B", "not a wandb run file"
    block, pos, payload, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's zero-filled tail
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind not in (1, 2, 3, 4) or pos + 7 + length > len(data):
            break  # not written yet
        payload += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
    return records


def _series(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if key in r]


def test_lightning_wandb_logger_carries_carbon_metrics_per_epoch(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    pytest.importorskip("torch")
    from lightning.pytorch.loggers import WandbLogger
    from lightning_tiny import tiny_loader, tiny_module_class

    from carbon_callbacks.integrations.lightning import CarbonCallback

    Tiny = tiny_module_class(pl.LightningModule)
    loader = tiny_loader()
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="carbon-callbacks-test")
    cb = CarbonCallback(tracker=_tracker(tmp_path))
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=logger,
        callbacks=[cb],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), loader)
    log = read_run_log(cb.tracker.log_path)
    run = logger.experiment
    summary, run_file = dict(run.summary), run.settings.sync_file
    run.finish()
    for key in EXPECTED_KEYS:
        assert summary[key] == pytest.approx(expected_series(log, key)[-1], rel=1e-9), key
    rows = _history(run_file)
    for key in EXPECTED_KEYS:
        assert same(_series(rows, key), expected_series(log, key)), key


def test_hf_report_to_wandb_carries_carbon_metrics_per_epoch(tmp_path):
    pytest.importorskip("transformers")
    from test_huggingface import Tokens, tiny_model
    from transformers import Trainer, TrainingArguments

    from carbon_callbacks.integrations.huggingface import CarbonCallback

    cb = CarbonCallback(tracker=_tracker(tmp_path))
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=4,
        logging_strategy="epoch",
        save_strategy="no",
        report_to=["wandb"],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=tiny_model(), args=args, train_dataset=Tokens(16))
    cb.trainer = trainer  # trainer.log is what reaches report_to
    trainer.add_callback(cb)
    trainer.train()
    log = read_run_log(cb.tracker.log_path)
    summary, run_file = dict(wandb.run.summary), wandb.run.settings.sync_file
    wandb.finish()
    for key in EXPECTED_KEYS:
        assert summary["train/" + key] == pytest.approx(expected_series(log, key)[-1]), key
    rows = _history(run_file)
    for key in EXPECTED_KEYS:
        assert same(_series(rows, "train/" + key), expected_series(log, key)), key
    carbon_steps = [r["train/global_step"] for r in rows if "train/" + keys.ENERGY_KWH in r]
    assert carbon_steps == [4, 8, 12]
    assert len(_series(rows, "train/loss")) == EPOCHS  # the epoch's loss log is kept


def test_keras_on_torch_sends_carbon_metrics_with_a_lambda_callback(tmp_path):
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
        os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras_home_"))
    keras = pytest.importorskip("keras")
    np = pytest.importorskip("numpy")
    from carbon_callbacks.integrations.keras import CarbonCallback

    # the route docs/wandb.md gives Keras users without TensorFlow
    run = wandb.init(project="carbon-callbacks-test", dir=str(tmp_path))
    to_wandb = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: run.log({**logs, "epoch": epoch})
    )
    cb = CarbonCallback(tracker=_tracker(tmp_path))
    x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(
        x, x.sum(1, keepdims=True), epochs=EPOCHS, verbose=0, callbacks=[cb, to_wandb]
    )
    summary, run_file = dict(run.summary), run.settings.sync_file
    run.finish()
    for key in EXPECTED_KEYS:
        assert summary[key] == pytest.approx(history.history[key][-1]), key
    rows = _history(run_file)
    for key in (*EXPECTED_KEYS, "loss"):
        assert same(_series(rows, key), history.history[key]), key
