"""Matrix row resume: totals continue from the checkpoint, no epoch is counted twice, and the
aggregate over all run logs counts a resumed chain once. Lightning resumes the run that the
process row SIGKILLed (``killed_lightning_run``) from its ``last.ckpt``, and from a checkpoint
saved in the middle of an epoch; the core API resumes from ``state_dict()``."""

from __future__ import annotations

import json

import pytest
import torch

from carbon_callbacks.core.events import CarbonCallbacksWarning
from carbon_callbacks.core.runlog import aggregate_runs, read_run_log
from carbon_callbacks.core.tracker import CarbonTracker

from .harness import base_settings, check_cell, train


def _logs(folder):
    return {log.run_id: log for log in map(read_run_log, sorted(folder.glob("*.carbon.jsonl")))}


def _check_chain(folder, first_id, state, resumed):
    """The resumed log continues ``state``; the aggregate counts the chain once."""
    log = resumed.log
    done = state["epochs"]
    assert [e["epoch"] for e in log.epochs] == list(range(done, done + len(log.epochs)))
    assert log.header["resumed_from"] == [first_id]
    assert log.header["offsets"]["epochs"] == done
    assert log.header["offsets"]["energy_kwh"] == pytest.approx(state["energy_kwh"])
    new_kwh = sum(e["energy_kwh"] for e in log.epochs)
    new_kwh += sum(p["energy_kwh"] for p in log.phases if p.get("counted"))  # e.g. sanity check
    assert log.footer["energy_kwh"] == pytest.approx(state["energy_kwh"] + new_kwh)
    assert log.epochs[-1]["cumulative"]["energy_kwh"] == pytest.approx(log.footer["energy_kwh"])
    assert resumed.epoch_metrics[-1]["carbon/energy_kwh"] == pytest.approx(log.footer["energy_kwh"])
    aggregate = aggregate_runs([folder])
    assert aggregate.runs_counted == 1
    assert [why for _, why in aggregate.skipped] == [
        f"continued by resumed run {log.run_id}, whose totals include this run"
    ]
    assert aggregate.energy_kwh == pytest.approx(log.footer["energy_kwh"])


def test_lightning_resume_after_sigkill(killed_lightning_run):
    root, settings, _ = killed_lightning_run
    folder = root / "carbon"
    (killed,) = _logs(folder).values()
    ckpt = root / "ckpt" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)["callbacks"]["CarbonCallback"]
    assert state["run_ids"] == [killed.run_id]
    # the checkpoint's totals are those of the epochs it saw, all of which are in the log
    assert 3 <= state["epochs"] <= len(killed.epochs)
    kwh = sum(e["energy_kwh"] for e in killed.epochs[: state["epochs"]])
    # tracked work between epochs (the sanity check) counts too
    between = sum(p["energy_kwh"] for p in killed.phases if p.get("counted"))
    assert kwh * (1 - 1e-9) <= state["energy_kwh"] <= (kwh + between) * (1 + 1e-9)

    epochs = state["epochs"] + 2
    kwargs = {"fit_kwargs": {"ckpt_path": str(ckpt)}, "epochs": epochs}
    reference = train("lightning", None, **kwargs)
    resumed = train("lightning", settings, **kwargs)
    check_cell(resumed, reference, warned=0)
    assert resumed.epochs_trained == epochs
    _check_chain(folder, killed.run_id, state, resumed)


def test_lightning_resume_from_a_mid_epoch_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt_dir = tmp_path / "ckpt"
    saver = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=6, save_top_k=-1)
    settings = base_settings(tmp_path, sim_cpu="Test CPU", sim_cpu_tdp=100.0, components="cpu")
    first = train(
        "lightning",
        settings,
        epochs=2,
        trainer_kwargs={"enable_checkpointing": True, "callbacks": [saver]},
    )
    (ckpt,) = [p for p in ckpt_dir.iterdir() if "step=6" in p.name]  # epoch 1, batch 2 of 4
    state = torch.load(ckpt, weights_only=False)["callbacks"]["CarbonCallback"]
    assert state["epochs"] == 1  # only the finished epoch; the half epoch is not in the totals

    kwargs = {"fit_kwargs": {"ckpt_path": str(ckpt)}, "epochs": 3}
    reference = train("lightning", None, **kwargs)
    resumed = train("lightning", settings, **kwargs)
    check_cell(resumed, reference, warned=0)
    assert [e["epoch"] for e in resumed.log.epochs] == [1, 2]  # epoch 1 once in the resumed run
    _check_chain(tmp_path / "carbon", first.tracker.run_id, state, resumed)


def test_core_resume_from_state_dict(tmp_path):
    settings = base_settings(tmp_path, sim_cpu="Test CPU", sim_cpu_tdp=100.0, components="cpu")

    def crash(epoch, batch):
        if epoch == 2:
            raise RuntimeError("node failure")

    first = train("core", settings, epochs=4, step_hook=crash)
    assert isinstance(first.error, RuntimeError)
    state = json.loads(json.dumps(first.tracker.state_dict()))  # checkpoints store plain data
    assert state["epochs"] == 2
    resumed = train("core", settings, epochs=4, tracker_state=state)
    assert resumed.error is None and resumed.threads_after == []
    assert [e["epoch"] for e in resumed.log.epochs] == [2, 3, 4, 5]
    _check_chain(tmp_path / "carbon", first.tracker.run_id, state, resumed)


def test_state_loaded_after_epochs_is_refused_not_double_counted(tmp_path):
    settings = base_settings(tmp_path, sim_cpu="Test CPU", sim_cpu_tdp=100.0, components="cpu")
    earlier = train("core", settings, epochs=2).tracker.state_dict()
    tracker = CarbonTracker(epochs=2, **settings)
    tracker.epoch_start()
    tracker.epoch_end()
    with pytest.warns(CarbonCallbacksWarning, match="counting epochs twice"):
        tracker.load_state_dict(earlier)  # too late: an epoch was measured already
    tracker.epoch_start()
    tracker.epoch_end()
    tracker.stop()
    log = read_run_log(tracker.log_path)
    assert [e["epoch"] for e in log.epochs] == [0, 1]
    assert log.header["offsets"]["epochs"] == 0 and log.footer["epochs_completed"] == 2
