"""Real Keras 3 fits on the torch backend (CPU): carbon keys in History and CSVLogger."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

if "keras" not in sys.modules:  # the backend is fixed when keras is first imported
    os.environ["KERAS_BACKEND"] = "torch"
    os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras_home_"))
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("keras was imported earlier with another backend", allow_module_level=True)

import numpy as np  # noqa: E402
from carbon_expect import expected_series, same  # noqa: E402
from power_traces import tracker_on_fake_devices as _tracker  # noqa: E402

from carbon_callbacks.core import metrics as keys  # noqa: E402
from carbon_callbacks.core.config import ConfigError  # noqa: E402
from carbon_callbacks.core.events import CarbonCallbacksWarning  # noqa: E402
from carbon_callbacks.core.runlog import read_run_log  # noqa: E402
from carbon_callbacks.core.tracker import CarbonTracker  # noqa: E402
from carbon_callbacks.integrations.keras import CarbonCallback  # noqa: E402

EPOCHS = 3
# a GPU and a CPU at known power: every power key, and values independent of this machine
EXPECTED_KEYS = (
    *keys.EPOCH_KEYS,
    keys.POWER_W,
    keys.GPU_POWER_W,
    keys.CPU_POWER_W,
    *keys.PREDICTION_KEYS,
)


def _data():
    rng = np.random.default_rng(0)
    x = rng.random((32, 4), dtype=np.float32)
    return x, x.sum(axis=1, keepdims=True)


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _fit(callbacks, epochs=EPOCHS):
    x, y = _data()
    return _model().fit(
        x, y, epochs=epochs, batch_size=8, validation_split=0.25, verbose=0, callbacks=callbacks
    )


def test_every_carbon_key_is_in_history_and_csv_for_every_epoch(tmp_path):
    # the first prediction after 2 epochs: epoch 0 carries NaN in the prediction columns
    cb = CarbonCallback(tracker=_tracker(tmp_path, epochs_before_pred=2))
    csv_path = tmp_path / "metrics.csv"
    history = _fit([cb, keras.callbacks.CSVLogger(str(csv_path))])

    log = read_run_log(cb.tracker.log_path)
    assert len(log.epochs) == EPOCHS and log.footer["status"] == "completed"
    assert log.header["epochs"] == EPOCHS  # taken from fit(epochs=...)
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == EPOCHS
    for key in EXPECTED_KEYS:
        expected = expected_series(log, key)
        assert same(history.history[key], expected), key
        assert same([float(r[key]) for r in rows], expected), key  # a column from epoch 0 on
    for key in keys.PREDICTION_KEYS:
        assert math.isnan(history.history[key][0]) and not math.isnan(history.history[key][1])
    assert history.history[keys.GPU_POWER_W] == pytest.approx([50.0] * EPOCHS, rel=1e-3)
    assert {"loss", "val_loss"} <= set(rows[0])  # Keras' own columns are kept


def test_tensorboard_dir_writes_nothing_and_says_what_to_use(tmp_path):
    with pytest.warns(
        CarbonCallbacksWarning, match=r"keras.callbacks.TensorBoard\(log_dir\) after"
    ):
        cb = CarbonCallback(tracker=_tracker(tmp_path), tensorboard_dir=tmp_path / "tb")
    history = _fit([cb])
    assert len(history.history[keys.ENERGY_KWH]) == EPOCHS  # training and the keys go on
    assert not (tmp_path / "tb").exists()
    kinds = [e["kind"] for e in read_run_log(cb.tracker.log_path).events]
    assert kinds.count("tensorboard_dir_ignored") == 1


class _StopAfterTwoEpochs(CarbonTracker):
    """Stands in for a budget (another module): decides to stop after the second epoch."""

    def epoch_end(self, steps=None):
        metrics = super().epoch_end(steps)
        if self.epochs_completed == 2:
            self.should_stop, self.stop_reason = True, "test budget of 2 epochs reached"
        return metrics


def test_budget_stop_ends_fit_early(tmp_path, capsys):
    cb = CarbonCallback(tracker=_tracker(tmp_path, cls=_StopAfterTwoEpochs, verbose=1))
    history = _fit([cb], epochs=6)
    assert len(history.epoch) == 2
    assert "stopping training: test budget of 2 epochs reached" in capsys.readouterr().out
    log = read_run_log(cb.tracker.log_path)
    assert len(log.epochs) == 2 and log.footer["status"] == "interrupted"


def test_monitor_metric_is_recorded_at_train_end(tmp_path):
    cb = CarbonCallback(tracker=_tracker(tmp_path, monitor_metric="val_loss"))
    history = _fit([cb])
    metrics = read_run_log(cb.tracker.log_path).metrics
    assert [m["name"] for m in metrics] == ["val_loss"]
    assert metrics[0]["value"] == pytest.approx(history.history["val_loss"][-1])


def test_settings_path_and_early_stopping_on_a_carbon_key(tmp_path):
    # settings as keyword arguments, real sensors of this machine; EarlyStopping reads a key
    cb = CarbonCallback(log_dir=str(tmp_path / "carbon"), zone="DK", interval_s=0.05, verbose=0)
    stop = keras.callbacks.EarlyStopping(monitor=keys.EPOCH_CO2_G, patience=0, mode="min")
    history = _fit([cb, stop], epochs=2)
    assert len(history.history[keys.EPOCH_CO2_G]) == len(history.epoch)
    assert read_run_log(cb.tracker.log_path).header["intensity"]["zone"] == "DK"


def test_bad_settings_are_refused_when_built_with_the_core_message(tmp_path):
    with pytest.raises(ConfigError) as core:
        CarbonTracker(log_dir=None, zone="DK", pue=0.5)
    with pytest.raises(ConfigError) as ours:
        CarbonCallback(log_dir=None, zone="DK", pue=0.5)
    assert str(ours.value) == str(core.value)
    with pytest.raises(ConfigError, match="unknown setting"):
        CarbonCallback(log_dir=None, zone="DK", tensorbord_dir="typo")
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match="validation_freq must be a whole number"):
            CarbonCallback(log_dir=None, zone="DK", validation_freq=bad)


_TF_SCRIPT = """
import os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np, keras
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util
from carbon_callbacks.integrations.keras import CarbonCallback
out = sys.argv[1]
x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
cb = CarbonCallback(log_dir=None, zone="DK", verbose=0, interval_s=0.05)
tb = keras.callbacks.TensorBoard(out, write_graph=False)
h = model.fit(x, x.sum(1, keepdims=True), epochs=3, verbose=0, callbacks=[cb, tb])
ea = EventAccumulator(os.path.join(out, "train"))
ea.Reload()
events = ea.Tensors("epoch_carbon/epoch_energy_kwh")
values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]
assert [e.step for e in events] == [0, 1, 2], events
assert np.allclose(values, h.history["carbon/epoch_energy_kwh"], rtol=1e-6), values
print("ok")
"""


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="tensorflow-cpu is not installed (about 274 MB wheel; CI does not install it)",
)
def test_tensorflow_backend_keras_tensorboard_shows_carbon_curves(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "KERAS_HOME": str(tmp_path / "kh")}
    script = tmp_path / "tf_run.py"
    script.write_text(textwrap.dedent(_TF_SCRIPT))
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "tb")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def _fit_validating(callbacks, epochs=6, **fit_args):
    """24 training samples in batches of 8 (3 batches); validation data of 8 samples."""
    x, y = _data()
    return _model().fit(
        x[:24], y[:24], epochs=epochs, batch_size=8, verbose=0, callbacks=callbacks, **fit_args
    )


def test_validation_freq_becomes_the_validation_plan(tmp_path):
    # Keras hides fit's validation_freq from callbacks: the callback is given the same values
    x, y = _data()
    work_ratio = 2 / 3  # 8 validation samples / 4 = 2 batches, over 3 training batches
    cb = CarbonCallback(tracker=_tracker(tmp_path), validation_freq=3, validation_steps=2)
    _fit_validating(
        [cb], validation_data=(x[24:], y[24:]), validation_freq=3, validation_batch_size=4
    )
    log = read_run_log(cb.tracker.log_path)
    plans = [r for r in log.other if r["type"] == "plan"]
    assert len(plans) == 1
    assert plans[0]["name"] == "validation" and plans[0]["every_epochs"] == 3
    assert plans[0]["source"] == "keras"
    assert plans[0]["work_ratio"] == pytest.approx(work_ratio)
    # validation is measured as a phase of the epochs it runs in, and only of those
    validations = [p for p in log.phases if p["name"] == "validation"]
    assert [p["epoch"] for p in validations] == [2, 5]
    assert all(p["in_epoch"] and not p["counted"] for p in validations)
    first = log.predictions[0]["method"]  # after epoch 0: validation not run yet
    ratio_words = f"x {work_ratio:.3g} of an epoch's batches"
    assert f"validation: every 3 epochs (planned), 2 to come {ratio_words}" in first
    assert (
        "validation: every 3 epochs (planned), 1 to come x level of 1"
        in (log.predictions[3]["method"])
    )


def test_validation_every_epoch_is_a_phase_without_a_plan(tmp_path):
    cb = CarbonCallback(tracker=_tracker(tmp_path))
    _fit([cb])  # validation_split: validates after every epoch
    log = read_run_log(cb.tracker.log_path)
    assert [r for r in log.other if r["type"] == "plan"] == []
    assert [p["epoch"] for p in log.phases if p["name"] == "validation"] == list(range(EPOCHS))


def test_validation_not_given_to_the_callback_is_no_plan_only_phases(tmp_path):
    x, y = _data()
    cb = CarbonCallback(tracker=_tracker(tmp_path))
    _fit_validating([cb], epochs=4, validation_data=(x[24:], y[24:]), validation_freq=[1, 4])
    log = read_run_log(cb.tracker.log_path)
    assert [r for r in log.other if r["type"] == "plan"] == []
    assert [p["epoch"] for p in log.phases if p["name"] == "validation"] == [0, 3]


def test_evaluate_after_fit_is_not_a_phase_of_the_finished_run(tmp_path):
    x, y = _data()
    cb = CarbonCallback(tracker=_tracker(tmp_path))
    model = _model()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
    model.evaluate(x, y, verbose=0, callbacks=[cb])  # the run has ended: nothing to add to it
    log = read_run_log(cb.tracker.log_path)
    assert log.phases == [] and log.footer["status"] == "completed"
