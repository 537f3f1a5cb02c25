"""Budgets: limits and units, bad settings, each policy's decision, and each policy stopping a
real run through the core API and through Lightning."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from power_traces import ConstantCounterSensor

from carbon_callbacks.core.budget import Budget, check_budget, parse_limit
from carbon_callbacks.core.config import CarbonConfig, ConfigError
from carbon_callbacks.core.predict import Prediction
from carbon_callbacks.core.runlog import read_run_log
from carbon_callbacks.core.tracker import CarbonTracker

# 3.6 MW: one kWh every second, so small sleeps give large, easy numbers
POWER_W = 3.6e6
INTENSITY = 100.0  # g/kWh: 100 g per second of epoch


# -- limits and settings -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("budget_g", 100, 100.0),
        ("budget_g", "2.5 kg", 2500.0),
        ("budget_g", "100 gCO2eq", 100.0),
        ("budget_g", "0.001t", 1000.0),
        ("budget_kwh", "500 Wh", 0.5),
        ("budget_kwh", "1.5 MWh", 1500.0),
        ("budget_kwh", "3.6 MJ", 1.0),
        ("budget_s", "90 min", 5400.0),
        ("budget_s", "2 h", 7200.0),
        ("budget_s", 30, 30.0),
    ],
)
def test_limits_with_units(setting, value, expected):
    assert parse_limit(setting, value) == pytest.approx(expected)
    assert getattr(CarbonConfig(log_dir=None, **{setting: value}), setting) == pytest.approx(
        expected
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"budget_g": "2 kWh"}, r"mixes up units: budget_g is a carbon budget .* use budget_kwh"),
        ({"budget_kwh": "100 g"}, r"mixes up units: .* use budget_g='100 g'"),
        ({"budget_s": "5 kWh"}, r"use budget_kwh"),
        ({"budget_g": "3 h"}, r"use budget_s"),
        ({"budget_g": -5}, r"budget_g must be a finite number > 0"),
        ({"budget_kwh": 0}, r"budget_kwh must be a finite number > 0"),
        ({"budget_s": float("nan")}, r"finite"),
        ({"budget_g": "-1 kg"}, r"> 0"),
        ({"budget_g": True}, r"must be a number"),
        ({"budget_g": "100 furlongs"}, r"unknown unit 'furlongs'.*accepts"),
        ({"budget_g": "lots"}, r"not a number with a unit"),
        ({"budget_policy": "stop-when-spent"}, r"has no limit to act on: set budget_g"),
        ({"budget_g": 10, "budget_policy": "stop"}, r"budget_policy must be one of"),
        ({"budget_g": 10, "monitor_epochs": 2}, r"needs every epoch measured"),
        (
            {"budget_g": 10, "budget_policy": "stop-when-predicted-over", "epochs_before_pred": 0},
            r"epochs_before_pred=0 turns them off",
        ),
        ({"stop_and_confirm": "yes"}, r"stop_and_confirm must be True or False"),
    ],
)
def test_bad_budget_settings_are_refused_with_what_to_do(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        CarbonTracker(log_dir=str(tmp_path), **settings)


def test_a_limit_without_a_policy_warns_and_policy_spelling_is_forgiving():
    assert CarbonConfig(log_dir=None, budget_g=5).budget_policy == "warn"
    cfg = CarbonConfig(log_dir=None, budget_g=5, budget_policy="Stop_When_Spent")
    assert cfg.budget_policy == "stop-when-spent"


def test_stop_and_confirm_asks_nothing_without_an_interactive_stdin(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))  # a pipe: not a terminal
    tracker = CarbonTracker(log_dir=str(tmp_path), epochs=3, stop_and_confirm=True, zone="DK")
    with pytest.warns(UserWarning, match="stdin is not an interactive terminal"):
        tracker.start()
    tracker.stop()
    assert tracker.config.stop_and_confirm is False
    assert CarbonConfig(log_dir=None).stop_and_confirm is False  # never the default


# -- decisions -----------------------------------------------------------------------------------
def _prediction(co2_g: float, low: float, high: float) -> Prediction:
    return Prediction(
        after_epochs=2, epochs=10, duration_s=100, energy_kwh=1, co2_g=co2_g,
        duration_s_low=90, duration_s_high=110, energy_kwh_low=0.9, energy_kwh_high=1.1,
        co2_g_low=low, co2_g_high=high, intensity_g_per_kwh=100, method="test",
    )  # fmt: skip


SPENT = {"co2_g": 20.0, "energy_kwh": 0.2, "duration_s": 20.0}


@pytest.mark.parametrize(
    ("policy", "prediction", "expected"),
    [
        ("warn", _prediction(120, 105, 135), [("warn", "predicted-central")]),
        ("warn", _prediction(90, 80, 100), []),
        ("stop-when-predicted-over", _prediction(120, 105, 135), [("stop", "predicted")]),
        # central over, lower bound not: not yet sure enough to stop; a warning
        ("stop-when-predicted-over", _prediction(105, 95, 115), [("warn", "predicted-central")]),
        ("stop-when-spent", _prediction(120, 105, 135), [("warn", "predicted-central")]),
        ("stop-when-spent", None, []),
    ],
)
def test_each_policy_decides_on_the_prediction(policy, prediction, expected):
    budget = Budget.from_settings({"budget_g": 100}, policy)
    decisions = check_budget(budget, SPENT, prediction)
    assert [(d.action, d.trigger) for d in decisions] == expected
    for d in decisions:
        assert "budget of 100 gCO2eq (budget_g)" in d.reason


@pytest.mark.parametrize(
    ("policy", "action"),
    [("warn", "warn"), ("stop-when-predicted-over", "stop"), ("stop-when-spent", "stop")],
)
def test_a_spent_limit_stops_every_stopping_policy(policy, action):
    budget = Budget.from_settings({"budget_kwh": 0.1, "budget_s": 1000}, policy)
    decisions = check_budget(budget, SPENT, None)
    assert [(d.action, d.trigger, d.quantity) for d in decisions] == [
        (action, "spent", "energy_kwh")
    ]
    assert decisions[0].spent == 0.2 and decisions[0].limit == 0.1


# -- real runs through the core API ------------------------------------------------------------
def _tracker(tmp_path, **kw) -> CarbonTracker:
    settings = {
        "epochs": 20,
        "log_dir": str(tmp_path),
        "interval_s": 0.02,
        "intensity_g_per_kwh": INTENSITY,
        "verbose": 1,
    }
    settings.update(kw)
    return CarbonTracker(sensors=[ConstantCounterSensor("gpu:0", POWER_W)], **settings)


def _train(tracker: CarbonTracker, epoch_s: float = 0.05) -> int:
    """A plain training loop that honours ``should_stop``; returns the epochs trained."""
    epochs = 0
    for _ in range(tracker.config.epochs):
        tracker.epoch_start()
        time.sleep(epoch_s)
        tracker.epoch_end()
        epochs += 1
        if tracker.should_stop:
            break
    tracker.stop()
    return epochs


def test_stop_when_spent_stops_at_the_epoch_that_reaches_the_limit(tmp_path, capsys):
    # about 5 g per epoch: the limit of 12 g is reached in the third epoch
    tracker = _tracker(tmp_path, budget_g=12, budget_policy="stop-when-spent")
    with pytest.warns(UserWarning, match="budget stopping training"):
        epochs = _train(tracker)
    log = read_run_log(tracker.log_path)
    cumulative = [e["cumulative"]["co2_g"] for e in log.epochs]
    assert epochs == len(log.epochs) < 20
    assert cumulative[-1] >= 12 > cumulative[-2]
    (stop,) = [b for b in log.budgets if b["action"] == "stop"]
    assert stop["trigger"] == "spent" and stop["epoch"] == epochs - 1
    assert log.footer["status"] == "interrupted"
    assert log.footer["stop_reason"] == tracker.stop_reason
    assert "carbon budget of 12 gCO2eq (budget_g) spent" in capsys.readouterr().out


def test_stop_when_predicted_over_stops_early_and_saves_the_rest(tmp_path):
    # 20 epochs of about 5 g = 100 g predicted; the budget of 40 g is far below
    tracker = _tracker(tmp_path, budget_g=40, budget_policy="stop-when-predicted-over")
    with pytest.warns(UserWarning, match="will be exceeded"):
        epochs = _train(tracker)
    log = read_run_log(tracker.log_path)
    (stop,) = [b for b in log.budgets if b["action"] == "stop"]
    assert stop["trigger"] == "predicted"
    assert stop["predicted_low"] > 40
    assert epochs <= 2  # decided from the first prediction(s), long before 40 g are spent
    assert log.footer["co2_g"] < 40
    assert log.predictions[-1]["co2_g_low"] == stop["predicted_low"]


def test_warn_never_stops_and_says_so_once(tmp_path):
    tracker = _tracker(tmp_path, epochs=6, budget_g=12)  # policy defaults to warn
    with pytest.warns(UserWarning, match="budget warning"):
        epochs = _train(tracker)
    assert epochs == 6 and not tracker.should_stop
    log = read_run_log(tracker.log_path)
    assert [(b["action"], b["trigger"]) for b in log.budgets] == [
        ("warn", "predicted-central"),
        ("warn", "spent"),
    ]
    assert log.footer["status"] == "completed"


def test_time_budget_stops_a_run(tmp_path):
    tracker = _tracker(tmp_path, budget_s="0.12 s", budget_policy="stop-when-spent")
    with pytest.warns(UserWarning):
        epochs = _train(tracker)
    log = read_run_log(tracker.log_path)
    assert 2 <= epochs < 20
    assert log.budgets[-1]["quantity"] == "duration_s"


class _Terminal(io.StringIO):
    """stdin as a terminal that a person answers."""

    def isatty(self):
        return True


@pytest.mark.parametrize(("answer", "epochs_trained"), [("n\n", 1), ("maybe\ny\n", 4)])
def test_stop_and_confirm_asks_once_after_the_first_prediction(
    tmp_path, monkeypatch, capsys, answer, epochs_trained
):
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    tracker = _tracker(tmp_path, epochs=4, stop_and_confirm=True)
    assert _train(tracker) == epochs_trained
    out = capsys.readouterr().out
    assert out.count("continue training (y/n)?") == len(answer.split())
    (record,) = read_run_log(tracker.log_path).budgets
    assert record["trigger"] == "user"
    assert record["action"] == ("stop" if answer == "n\n" else "continue")


# -- real runs through Lightning -------------------------------------------------------------
pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from lightning_tiny import tiny_loader, tiny_module_class  # noqa: E402

from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: E402

# a few tens of ms per epoch: measurable, deterministic enough
Tiny = tiny_module_class(pl.LightningModule, step_sleep_s=0.01)


def _fit(tmp_path, max_epochs=20, **settings):
    loader = tiny_loader()
    tracker = _tracker(tmp_path / "carbon", epochs=None, **settings)
    callback = CarbonCallback(tracker=tracker)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), loader)
    return trainer, read_run_log(tracker.log_path)


def test_lightning_stops_when_the_budget_says_so(tmp_path):
    with pytest.warns(UserWarning, match="budget stopping training"):
        trainer, log = _fit(tmp_path, budget_g=10.0, budget_policy="stop-when-spent")
    stops = [b for b in log.budgets if b["action"] == "stop"]
    assert len(stops) == 1 and stops[0]["trigger"] == "spent"
    # Lightning stopped right after the epoch in which the decision was taken
    assert trainer.current_epoch == stops[0]["epoch"] + 1 == len(log.epochs) < 20
    assert log.footer["status"] == "interrupted" and log.footer["stop_reason"]
    assert log.epochs[-1]["cumulative"]["co2_g"] >= 10.0


DDP_SCRIPT = '''
import json, os, sys, time
import torch
import lightning.pytorch as pl
sys.path.insert(0, {tests!r})
from power_traces import ConstantCounterSensor
from carbon_callbacks.core.distributed import rank
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations.lightning import CarbonCallback


class RankPower(ConstantCounterSensor):
    """Rank 1 draws 1000 x more power than rank 0: only its budget is spent after one epoch."""

    @property
    def power(self):
        return 3.6e6 * (1000.0 if rank() == 1 else 1.0)

    @power.setter
    def power(self, value):
        pass


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        time.sleep(0.01)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


x = torch.randn(32, 4)
data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
loader = torch.utils.data.DataLoader(data, batch_size=8)
tracker = CarbonTracker(sensors=[RankPower("gpu:x", 0.0)], log_dir=None, verbose=0, interval_s=0.02,
                        intensity_g_per_kwh=100.0, budget_g=1000.0, budget_policy="stop-when-spent",
                        distributed=False)  # each rank decides alone; the stop is collective
trainer = pl.Trainer(max_epochs=6, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                     callbacks=[CarbonCallback(tracker=tracker)], enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Tiny(), loader)
with open(os.path.join({out!r}, f"rank{{trainer.global_rank}}.json"), "w") as f:
    json.dump({{"epochs": trainer.current_epoch, "own_decision": tracker.should_stop,
               "reason": tracker.stop_reason}}, f)
'''


def test_lightning_budget_stop_is_collective_under_ddp(tmp_path):
    """Two real DDP ranks (gloo, CPU): only rank 1's budget is spent, and both ranks stop."""
    import json
    import os
    import subprocess
    import sys

    tests = str(Path(__file__).parent)
    script = tmp_path / "ddp_budget.py"
    script.write_text(DDP_SCRIPT.format(tests=tests, out=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(Path(tests).parent), "OMP_NUM_THREADS": "1"}
    port = str(_free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", port, str(script)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[1]["own_decision"] and "spent" in ranks[1]["reason"]
    assert not ranks[0]["own_decision"]  # rank 0's own budget was not spent...
    assert ranks[0]["epochs"] == ranks[1]["epochs"] == 1  # ...yet it stopped with rank 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
