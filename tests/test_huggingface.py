"""Real Hugging Face Trainer runs on a tiny BERT built from a config (CPU, no hub download)."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from carbon_expect import expected_series, same  # noqa: E402
from power_traces import tracker_on_fake_devices as _tracker  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from carbon_callbacks.core import distributed  # noqa: E402
from carbon_callbacks.core import metrics as keys  # noqa: E402
from carbon_callbacks.core.config import ConfigError  # noqa: E402
from carbon_callbacks.core.events import CarbonCallbacksWarning  # noqa: E402
from carbon_callbacks.core.runlog import read_run_log  # noqa: E402
from carbon_callbacks.core.tracker import CarbonTracker  # noqa: E402
from carbon_callbacks.integrations.huggingface import CarbonCallback  # noqa: E402

EPOCHS = 3
STEPS_PER_EPOCH = 4  # 16 samples, batch 4
EXPECTED_KEYS = (
    *keys.EPOCH_KEYS,
    keys.POWER_W,
    keys.GPU_POWER_W,
    keys.CPU_POWER_W,
    *keys.PREDICTION_KEYS,
)


def tiny_model():
    """A 1-layer BERT classifier built from a config: nothing is downloaded."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


class Tokens(torch.utils.data.Dataset):
    """``n`` random token sequences of length 8; the label is the first token's parity."""

    def __init__(self, n: int, seed: int = 0):
        self.x = torch.randint(0, 50, (n, 8), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "labels": int(self.x[i, 0] % 2)}


def _trainer(tmp_path: Path, callback, evaluate=True, give_trainer=True, **args):
    settings = {
        "output_dir": str(tmp_path / "out"),
        "num_train_epochs": EPOCHS,
        "per_device_train_batch_size": 4,
        "logging_strategy": "epoch",
        "eval_strategy": "epoch" if evaluate else "no",
        "save_strategy": "no",
        "report_to": ["tensorboard"],
        "use_cpu": True,
        "disable_tqdm": True,
    }
    settings.update(args)
    trainer = transformers.Trainer(
        model=tiny_model(),
        args=transformers.TrainingArguments(**settings),
        train_dataset=Tokens(16),
        eval_dataset=Tokens(8, seed=1) if evaluate else None,
    )
    if give_trainer:
        callback.trainer = trainer
    trainer.add_callback(callback)
    return trainer


def _scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    ea = EventAccumulator(str(log_dir))
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def test_epoch_run_logs_carbon_beside_loss_in_tensorboard_and_log_history(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    cb = CarbonCallback(tracker=_tracker(tmp_path, monitor_metric="eval_loss"))
    trainer = _trainer(tmp_path, cb)
    trainer.train()

    log = read_run_log(cb.tracker.log_path)
    assert len(log.epochs) == EPOCHS and log.footer["status"] == "completed"
    assert log.header["epochs"] == EPOCHS
    steps = [STEPS_PER_EPOCH * (i + 1) for i in range(EPOCHS)]
    # the epoch's loss log is kept (trainer.log from a hook would otherwise cancel it)
    assert [s for s, _ in _scalars(tmp_path / "tb", "train/loss")] == steps
    for key in EXPECTED_KEYS:
        logged = _scalars(tmp_path / "tb", "train/" + key)
        assert [s for s, _ in logged] == steps, key
        assert [v for _, v in logged] == pytest.approx(expected_series(log, key), rel=1e-6), key
    carbon_rows = [r for r in trainer.state.log_history if keys.ENERGY_KWH in r]
    assert [r["epoch"] for r in carbon_rows] == [1.0, 2.0, 3.0]
    for key in EXPECTED_KEYS:
        assert same([r[key] for r in carbon_rows], expected_series(log, key)), key
    # evaluation: its own phase, inside its epoch's window (it runs after on_epoch_end)
    evals = [p for p in log.phases if p["name"] == "evaluation"]
    assert [p["epoch"] for p in evals] == list(range(EPOCHS))
    for epoch, phase in zip(log.epochs, evals, strict=True):
        assert phase["in_epoch"]
        assert epoch["start_unix_s"] <= phase["start_unix_s"] <= phase["end_unix_s"]
        assert phase["end_unix_s"] <= epoch["end_unix_s"]
    last_eval_loss = [r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r][-1]
    assert [(m["name"], m["value"]) for m in log.metrics] == [("eval_loss", last_eval_loss)]


def test_epoch_loss_log_is_kept_when_carbon_is_logged_from_on_epoch_end(tmp_path, monkeypatch):
    # no evaluation: trainer.log runs inside on_epoch_end, before the Trainer logs the loss
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    cb = CarbonCallback(tracker=_tracker(tmp_path))
    trainer = _trainer(tmp_path, cb, evaluate=False, num_train_epochs=2)
    trainer.train()
    steps = [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert [s for s, _ in _scalars(tmp_path / "tb", "train/loss")] == steps
    assert [s for s, _ in _scalars(tmp_path / "tb", "train/" + keys.CO2_G)] == steps
    assert [r["step"] for r in trainer.state.log_history if "loss" in r] == steps


def test_step_based_run_predicts_from_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    cb = CarbonCallback(tracker=_tracker(tmp_path))
    trainer = _trainer(
        tmp_path, cb, evaluate=False, max_steps=10, logging_strategy="steps", logging_steps=5
    )
    trainer.train()
    log = read_run_log(cb.tracker.log_path)
    assert log.header["epochs"] is None and log.header["total_steps"] == 10
    assert [e["steps"] for e in log.epochs] == [4, 4, 2]  # the last epoch cut by max_steps
    first = log.predictions[0]
    per_step_kwh = log.epochs[0]["energy_kwh"] / 4
    assert first["after_epochs"] == 1 and "step" in first["method"]
    assert first["energy_kwh"] == pytest.approx(log.epochs[0]["energy_kwh"] + 6 * per_step_kwh)
    assert [s for s, _ in _scalars(tmp_path / "tb", "train/loss")] == [5, 10]
    assert [s for s, _ in _scalars(tmp_path / "tb", "train/" + keys.ENERGY_KWH)] == [4, 8, 10]


def test_step_evaluation_becomes_the_evaluation_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    cb = CarbonCallback(tracker=_tracker(tmp_path))
    # 3 epochs of 4 steps; evaluation after steps 5 and 10, and after the last step (12)
    trainer = _trainer(tmp_path, cb, eval_strategy="steps", eval_steps=5)
    trainer.train()
    log = read_run_log(cb.tracker.log_path)
    plans = [r for r in log.other if r["type"] == "plan"]
    assert len(plans) == 1
    plan = plans[0]
    assert (plan["name"], plan["every_steps"], plan["every_epochs"]) == ("evaluation", 5, None)
    assert plan["source"] == "huggingface" and plan["at_last_step"] is True
    assert plan["work_ratio"] == pytest.approx(1 / STEPS_PER_EPOCH)  # 8 samples in 1 batch
    evals = [p["epoch"] for p in log.phases if p["name"] == "evaluation"]
    assert evals == [1, 2, 2]  # steps 5; 10 and 12
    first, second = (p["method"] for p in log.predictions[:2])
    assert "evaluation: every 5 steps (planned), 3 to come x 0.25 of an epoch's batches" in first
    assert "evaluation: every 5 steps (planned), 2 to come x level of 1" in second


class _StopAfterTwoEpochs(CarbonTracker):
    """Stands in for a budget (another module): decides to stop after the second epoch."""

    def epoch_end(self, steps=None):
        metrics = super().epoch_end(steps)
        if self.epochs_completed == 2:
            self.should_stop, self.stop_reason = True, "test budget of 2 epochs reached"
        return metrics


@pytest.mark.parametrize("evaluate", [False, True], ids=["no-eval", "eval-each-epoch"])
def test_budget_stop_sets_should_training_stop(tmp_path, capsys, evaluate):
    cb = CarbonCallback(tracker=_tracker(tmp_path, cls=_StopAfterTwoEpochs, verbose=1))
    trainer = _trainer(
        tmp_path, cb, evaluate=evaluate, give_trainer=False, num_train_epochs=5, report_to="none"
    )
    with pytest.warns(UserWarning, match="not given the Trainer"):
        trainer.train()
    assert trainer.state.epoch == 2.0 and trainer.state.global_step == 2 * STEPS_PER_EPOCH
    assert "stopping training: test budget of 2 epochs reached" in capsys.readouterr().out
    log = read_run_log(cb.tracker.log_path)
    assert len(log.epochs) == 2 and log.footer["status"] == "interrupted"
    # without the Trainer the metrics still reach log_history (not the report_to integrations)
    carbon_rows = [r for r in trainer.state.log_history if keys.ENERGY_KWH in r]
    assert [r["step"] for r in carbon_rows] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert same([r[keys.ENERGY_KWH] for r in carbon_rows], expected_series(log, keys.ENERGY_KWH))
    assert [e["kind"] for e in log.events].count("no_trainer") == 1


def test_a_failed_stop_vote_warns_once_and_keeps_the_own_decision(tmp_path, monkeypatch):
    def broken(values):
        raise RuntimeError("gloo timed out")

    monkeypatch.setattr(distributed, "sum_across_ranks", broken)
    cb = CarbonCallback(tracker=_tracker(tmp_path, cls=_StopAfterTwoEpochs))
    trainer = _trainer(tmp_path, cb, evaluate=False, num_train_epochs=4, report_to="none")
    with pytest.warns(CarbonCallbacksWarning, match="stop vote between ranks failed") as caught:
        trainer.train()
    assert trainer.state.epoch == 2.0  # this rank's own budget still stops it
    assert len([w for w in caught if "stop vote" in str(w.message)]) == 1
    kinds = [e["kind"] for e in read_run_log(cb.tracker.log_path).events]
    assert "stop_vote_failed" in kinds


def test_bad_settings_are_refused_when_built_with_the_core_message():
    with pytest.raises(ConfigError) as core:
        CarbonTracker(log_dir=None, zone="DK", interval_s=0)
    with pytest.raises(ConfigError) as ours:
        CarbonCallback(log_dir=None, zone="DK", interval_s=0)
    assert str(ours.value) == str(core.value)


_TWO_RANKS = """
import json, os, sys
import torch
from test_huggingface import Tokens, tiny_model
from transformers import Trainer, TrainingArguments

from carbon_callbacks.integrations.huggingface import CarbonCallback

out, rank = sys.argv[1], int(os.environ["RANK"])
# each rank "draws" a known power: 10 W on rank 0, 30 W on rank 1
cb = CarbonCallback(log_dir=out + "/carbon", components="gpu", sim_gpu="test gpu",
                    sim_gpu_watts=20.0 * (1 + 2 * rank), sim_gpu_util=0.5, zone="DK", verbose=1)
measured = []  # this rank's own figures, per epoch
own = cb.tracker.epoch_end
def epoch_end(steps=None):
    metrics = own(steps)
    measured.append(metrics)
    if rank == 1 and cb.tracker.epochs_completed == 2:  # only rank 1's budget says stop
        cb.tracker.should_stop, cb.tracker.stop_reason = True, "rank 1 budget"
    return metrics
cb.tracker.epoch_end = epoch_end
args = TrainingArguments(output_dir=out, num_train_epochs=4, per_device_train_batch_size=4,
                         logging_strategy="epoch", eval_strategy="no", save_strategy="no",
                         report_to="none", use_cpu=True, disable_tqdm=True)
trainer = Trainer(model=tiny_model(), args=args, train_dataset=Tokens(32), callbacks=[cb])
trainer.train()
result = {"log_history": trainer.state.log_history, "epoch": trainer.state.epoch,
          "log_path": cb.tracker.log_path, "measured": measured}
json.dump(result, open(f"{out}/rank{rank}.json", "w"))
torch.distributed.destroy_process_group()  # a clean exit for the gloo threads
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_ranks_log_the_sum_once_and_stop_together(tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(textwrap.dedent(_TWO_RANKS))
    here = Path(__file__).resolve().parent
    path = os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    done = subprocess.run(
        [*command, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["epoch"] == ranks[1]["epoch"] == 2.0  # both stopped, none hung
    assert done.stdout.count("stopping training: the budget of another rank") == 1
    # only world process zero logs and writes a run log
    assert ranks[1]["log_path"] is None
    assert not [r for r in ranks[1]["log_history"] if keys.ENERGY_KWH in r]
    assert glob.glob(str(tmp_path / "carbon" / "*.carbon.jsonl")) == [ranks[0]["log_path"]]
    logged = [r for r in ranks[0]["log_history"] if keys.ENERGY_KWH in r]
    assert len(logged) == 2
    assert read_run_log(ranks[0]["log_path"]).footer["status"] == "interrupted"
    for epoch, row in enumerate(logged):
        mine, theirs = ranks[0]["measured"][epoch], ranks[1]["measured"][epoch]
        for key in (keys.EPOCH_ENERGY_KWH, keys.EPOCH_CO2_G, keys.ENERGY_KWH, keys.CO2_G):
            assert mine[key] == theirs[key], key  # the tracker combined the ranks
        # each rank's joules over its own epoch: the known powers, summed, however far apart the
        # ranks' epochs start and end (a loaded machine had them 11 % apart)
        assert row[keys.POWER_W] == pytest.approx(10.0 + 30.0, rel=0.01)
        assert row[keys.GPU_POWER_W] == pytest.approx(40.0, rel=0.01)
        for key, value in mine.items():
            assert row[key] == pytest.approx(value, rel=1e-12), key
