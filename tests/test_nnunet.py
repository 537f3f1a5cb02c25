"""Real nnU-Net v2 trainings on the CPU: carbon keys in nnU-Net's logger, checkpoints and log.

A synthetic 2D dataset (10 PNG cases) is written, planned and preprocessed once per session
(``nnunet_dataset``); trainings are 1 to 2 epochs of 4 iterations, built through nnU-Net's
Python API (the by-name lookup imports torchvision, which does not load with the CPU torch here).
The final sliding-window validation (``perform_actual_validation``) is never called.

Trainers built here use constant-power counter sensors (200 W GPU + 50 W CPU), so every energy
can be checked against the epoch's measured duration.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from carbon_callbacks.core import metrics as keys
from carbon_callbacks.core.config import ConfigError
from carbon_callbacks.core.events import CarbonCallbacksWarning
from carbon_callbacks.core.runlog import read_run_log
from carbon_callbacks.core.tracker import CarbonTracker
from carbon_callbacks.integrations import _nnunet_hooks as hooks
from carbon_callbacks.integrations import _nnunet_patch as patching
from carbon_callbacks.integrations import nnunet as integ
from carbon_callbacks.report.plots import plot_logs

HAVE_NNUNET = importlib.util.find_spec("nnunetv2") is not None
needs_nnunet = pytest.mark.skipif(not HAVE_NNUNET, reason="nnunetv2 is not installed")

GPU_W, CPU_W = 200.0, 50.0
ITERATIONS = 4
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def nnunet_data(tmp_path_factory):
    """nnU-Net's folders under a session temp dir, with the dataset planned and preprocessed."""
    if not HAVE_NNUNET:
        pytest.skip("nnunetv2 is not installed")
    import nnunet_dataset

    names = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA")
    before = {name: os.environ.get(name) for name in names}
    env = nnunet_dataset.prepare(tmp_path_factory.mktemp("nnunet"))
    yield env
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _never_leave_patched():
    yield
    integ.unpatch()


def _counter_sensors():
    from power_traces import ConstantCounterSensor

    return [
        ConstantCounterSensor("gpu:test", GPU_W, component="gpu"),
        ConstantCounterSensor("cpu:test", CPU_W, component="cpu"),
    ]


def _tiny(base, name, *, epochs=2, **attrs):
    """A trainer class like nnU-Net's ``_Xepochs`` variants: few epochs, few iterations."""
    import torch

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        self.num_iterations_per_epoch = ITERATIONS
        self.num_val_iterations_per_epoch = 2

    return type(name, (base,), {"__init__": __init__, **attrs})


def _carbon_class(name, *, epochs=2, settings=None, **attrs):
    def make_carbon_tracker(self, config):
        return CarbonTracker(config=config, sensors=_counter_sensors())

    return _tiny(
        integ.nnUNetTrainerCarbon,
        name,
        epochs=epochs,
        carbon_settings={"zone": "DK", "interval_s": 0.05, "verbose": 0, **(settings or {})},
        make_carbon_tracker=make_carbon_tracker,
        **attrs,
    )


def _build(cls, fold=0):
    import nnunet_dataset
    import torch

    plans, dataset_json = nnunet_dataset.load_plans_and_dataset_json()
    return cls(
        plans=plans,
        configuration="2d",
        fold=fold,
        dataset_json=dataset_json,
        device=torch.device("cpu"),
    )


def _store(trainer):
    return hooks.store(trainer)


def _checkpoint(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _run_log(trainer):
    return read_run_log(trainer.carbon_tracker.log_path)


@pytest.fixture(scope="module")
def carbon_run(nnunet_data):
    """nnUNetTrainerCarbon (2 epochs) trained once for the tests that read its outputs."""
    trainer = _build(_carbon_class("CarbonTiny"))
    trainer.run_training()
    return trainer


# -- the subclass through nnU-Net's Python API ----------------------------------------------------
@needs_nnunet
def test_every_epoch_has_the_carbon_keys_in_the_logger_equal_to_the_run_log(carbon_run):
    store = _store(carbon_run)
    log = _run_log(carbon_run)
    assert len(log.epochs) == 2 and log.footer["status"] == "completed"
    assert log.header["epochs"] == 2  # num_epochs, given to the tracker at train start
    # every list in nnU-Net's logger has one value per epoch (else progress.png is truncated)
    assert {len(v) for v in store.values()} == {2}
    for i, record in enumerate(log.epochs):
        assert store[keys.EPOCH_ENERGY_KWH][i] == pytest.approx(record["energy_kwh"], rel=1e-12)
        assert store[keys.EPOCH_CO2_G][i] == pytest.approx(record["co2_g"], rel=1e-12)
        assert store[keys.ENERGY_KWH][i] == pytest.approx(record["cumulative"]["energy_kwh"])
        assert store[keys.GPU_POWER_W][i] == pytest.approx(GPU_W, rel=1e-3)
        assert store[keys.CPU_POWER_W][i] == pytest.approx(CPU_W, rel=1e-3)
        # constant 250 W: the energy is the measured epoch time x 250 W
        kwh = (GPU_W + CPU_W) * store[keys.EPOCH_DURATION_S][i] / 3.6e6
        assert store[keys.EPOCH_ENERGY_KWH][i] == pytest.approx(kwh, rel=1e-3)
        assert store[keys.INTENSITY_G_PER_KWH][i] == pytest.approx(
            record["intensity"]["intensity_g_per_kwh"]
        )
        # the window sits inside nnU-Net's own epoch (its "Epoch time"), validation included
        start, end = store["epoch_start_timestamps"][i], store["epoch_end_timestamps"][i]
        assert start <= record["start_unix_s"] < record["end_unix_s"] <= end
        assert (end - start) - record["duration_s"] < 0.5
        phases = [p for p in log.phases if p["name"] == "validation" and p["epoch"] == i]
        assert len(phases) == 1
        assert record["start_unix_s"] <= phases[0]["start_unix_s"] <= phases[0]["end_unix_s"]
        assert phases[0]["end_unix_s"] <= record["end_unix_s"]
    # the prediction after the first epoch, as the run log has it
    first = [p for p in log.predictions if p["after_epochs"] == 1][0]
    assert first["epochs"] == 2
    assert store[keys.PRED_ENERGY_KWH][0] == pytest.approx(first["energy_kwh"])
    assert store[keys.PRED_CO2_G][0] == pytest.approx(first["co2_g"])
    assert "carbon_callbacks-meter" not in {t.name for t in threading.enumerate()}


@needs_nnunet
def test_checkpoint_final_holds_the_keys_and_the_tracker_totals(carbon_run):
    ckpt = _checkpoint(Path(carbon_run.output_folder) / "checkpoint_final.pth")
    logging = ckpt["logging"]
    store = _store(carbon_run)
    for key in (*keys.EPOCH_KEYS, keys.GPU_POWER_W, keys.PRED_ENERGY_KWH):
        assert logging[key] == pytest.approx(store[key]), key
    state = logging[integ.STATE_KEY][-1]
    footer = _run_log(carbon_run).footer
    assert state["epochs"] == 2 and ckpt["current_epoch"] == 2
    assert state["energy_kwh"] == pytest.approx(footer["energy_kwh"])
    assert state["co2_g"] == pytest.approx(footer["co2_g"])
    # checkpoint_best was written after epoch 0 or 1: its totals match that epoch
    best = _checkpoint(Path(carbon_run.output_folder) / "checkpoint_best.pth")
    best_state = best["logging"][integ.STATE_KEY][-1]
    assert best_state["epochs"] == best["current_epoch"]
    assert best_state["energy_kwh"] == pytest.approx(
        store[keys.ENERGY_KWH][best["current_epoch"] - 1]
    )


@needs_nnunet
def test_training_log_has_a_line_per_epoch_the_prediction_and_the_final_statement(carbon_run):
    text = Path(carbon_run.log_file).read_text()
    store = _store(carbon_run)
    lines = [line for line in text.splitlines() if "Carbon: epoch energy" in line]
    assert len(lines) == 2
    for i, line in enumerate(lines):
        assert f"{store[keys.EPOCH_ENERGY_KWH][i]:.4g} kWh" in line
        assert f"CO2eq {store[keys.EPOCH_CO2_G][i]:.4g} g" in line
    # beside nnU-Net's own lines of the same epoch
    assert text.index(lines[0]) < text.index("Epoch time") < text.index(lines[1])
    assert text.count("Carbon: predicted for 2 epochs") == 1
    footer = _run_log(carbon_run).footer
    final = [line for line in text.splitlines() if "Carbon: training completed after 2" in line]
    assert len(final) == 1 and f"{footer['energy_kwh']:.4g} kWh" in final[0]
    assert carbon_run.carbon_tracker.log_path in final[0]


@needs_nnunet
def test_the_run_log_in_the_output_folder_is_drawn_after_training(carbon_run, tmp_path):
    # the integration draws nothing; `carbon-callbacks plot <output folder>` reads its run log
    folder = Path(carbon_run.output_folder)
    assert [p.name for p in folder.glob("*.png")] == ["progress.png"]
    written, _ = plot_logs([folder], tmp_path)
    per_run = [p for p in written if p.name != "regions_what_if.png"]
    assert len(per_run) >= 3  # energy and CO2 per epoch, cumulative CO2, power by component
    for path in written:
        assert path.read_bytes()[:8] == PNG_MAGIC, path.name


# -- resume-----------------------------------------------------------------------------------------
@needs_nnunet
def test_resume_from_a_checkpoint_continues_the_totals(carbon_run):
    first = _run_log(carbon_run)
    trainer = _build(_carbon_class("CarbonResumed", epochs=3))
    trainer.load_checkpoint(str(Path(carbon_run.output_folder) / "checkpoint_final.pth"))
    trainer.run_training()
    log = _run_log(trainer)
    store = _store(trainer)
    assert [e["epoch"] for e in log.epochs] == [2]  # no epoch counted twice
    assert log.header["resumed_from"] == [carbon_run.carbon_tracker.run_id]
    assert log.footer["epochs_completed"] == 3
    assert log.footer["energy_kwh"] == pytest.approx(
        first.footer["energy_kwh"] + log.epochs[0]["energy_kwh"]
    )
    assert {len(v) for v in store.values()} == {3}
    assert store[keys.ENERGY_KWH][:2] == pytest.approx(_store(carbon_run)[keys.ENERGY_KWH])
    assert store[keys.ENERGY_KWH][2] == pytest.approx(log.footer["energy_kwh"])
    final = _checkpoint(Path(trainer.output_folder) / "checkpoint_final.pth")
    assert final["logging"][integ.STATE_KEY][-1]["epochs"] == 3


@needs_nnunet
def test_resume_from_a_checkpoint_without_carbon_keys(carbon_run, tmp_path):
    import torch

    stock = _checkpoint(Path(carbon_run.output_folder) / "checkpoint_final.pth")
    stock["logging"] = {
        k: v for k, v in stock["logging"].items() if not k.startswith(keys.PREFIX)
    }  # what a trainer without carbon_callbacks writes
    path = tmp_path / "stock_checkpoint.pth"
    torch.save(stock, path)
    trainer = _build(_carbon_class("CarbonFromStock", epochs=3))
    with pytest.warns(CarbonCallbacksWarning, match="no carbon totals"):
        trainer.load_checkpoint(str(path))
    trainer.run_training()
    store = _store(trainer)
    assert {len(v) for v in store.values()} == {3}
    energy = store[keys.EPOCH_ENERGY_KWH]
    assert math.isnan(energy[0]) and math.isnan(energy[1]) and energy[2] > 0
    log = _run_log(trainer)
    assert "resume_without_carbon_state" in {e["kind"] for e in log.events}
    # totals count from the resume on (the earlier epochs were never measured)
    assert store[keys.ENERGY_KWH][2] == pytest.approx(energy[2])


# -- budget stop------------------------------------------------------------------------------------
@needs_nnunet
def test_budget_stop_ends_training_cleanly_with_the_final_checkpoint(nnunet_data):
    def on_train_epoch_end(self, train_outputs):
        integ.nnUNetTrainerCarbon.on_train_epoch_end(self, train_outputs)
        if self.current_epoch == 0:  # as the budget (issue 6) would decide in epoch_end()
            self.carbon_tracker.should_stop = True
            self.carbon_tracker.stop_reason = "test budget of 0 g reached"

    trainer = _build(_carbon_class("CarbonBudget", epochs=3, on_train_epoch_end=on_train_epoch_end))
    trainer.run_training()
    folder = Path(trainer.output_folder)
    ckpt = _checkpoint(folder / "checkpoint_final.pth")
    assert ckpt["current_epoch"] == 1  # one epoch trained, as a normal end after epoch 0 writes
    assert not (folder / "checkpoint_latest.pth").exists()
    store = _store(trainer)
    assert len(store["epoch_start_timestamps"]) == 1  # the next epoch never started
    assert ckpt["logging"][integ.STATE_KEY][-1]["epochs"] == 1
    log = _run_log(trainer)
    assert log.footer["status"] == "interrupted" and log.footer["epochs_completed"] == 1
    text = Path(trainer.log_file).read_text()
    assert "stopping after epoch 0: test budget of 0 g reached" in text
    assert "Training done." in text  # nnU-Net's own on_train_end ran
    assert "Carbon: training interrupted after 1 epochs" in text


# -- patch()----------------------------------------------------------------------------------------
@needs_nnunet
def test_patch_measures_the_stock_trainer_and_unpatch_restores_it(nnunet_data):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    before = {name: nnUNetTrainer.__dict__[name] for name in patching.V2_METHODS}
    what = integ.patch(zone="DK", interval_s=0.05, verbose=0)
    assert what.startswith("nnunetv2 ")
    patched = {name: nnUNetTrainer.__dict__[name] for name in patching.V2_METHODS}
    assert integ.patch(zone="DK", interval_s=0.05, verbose=0) == what  # idempotent
    assert {n: nnUNetTrainer.__dict__[n] for n in patching.V2_METHODS} == patched
    # nnU-Net stores its init arguments by reading __init__'s signature: still nnU-Net's
    assert list(inspect.signature(nnUNetTrainer.__init__).parameters) == list(
        inspect.signature(before["__init__"]).parameters
    )

    trainer = _build(nnUNetTrainer, fold=1)  # the stock class, no trainer named
    trainer.num_epochs = 2
    trainer.num_iterations_per_epoch = ITERATIONS
    trainer.num_val_iterations_per_epoch = 2
    trainer.run_training()
    assert trainer.my_init_kwargs["fold"] == 1
    store = _store(trainer)
    assert {len(v) for v in store.values()} == {2}
    tracker = hooks.session(trainer).tracker
    log = read_run_log(tracker.log_path)
    assert Path(tracker.log_path).parent == Path(trainer.output_folder)
    assert [r["energy_kwh"] for r in log.epochs] == pytest.approx(store[keys.EPOCH_ENERGY_KWH])
    ckpt = _checkpoint(Path(trainer.output_folder) / "checkpoint_final.pth")
    assert ckpt["logging"][keys.EPOCH_CO2_G] == pytest.approx(store[keys.EPOCH_CO2_G])
    assert ckpt["trainer_name"] == "nnUNetTrainer"
    assert "Carbon: epoch energy" in Path(trainer.log_file).read_text()

    # a carbon subclass under patch(): its own hooks only, nothing counted twice
    carbon = _build(_carbon_class("CarbonUnderPatch", epochs=1), fold=1)
    carbon.run_training()
    assert {len(v) for v in _store(carbon).values()} == {1}
    assert len(_run_log(carbon).epochs) == 1
    assert _store(carbon)[keys.GPU_POWER_W][0] == pytest.approx(GPU_W, rel=1e-3)

    integ.unpatch()
    integ.unpatch()  # idempotent
    assert {n: nnUNetTrainer.__dict__[n] for n in patching.V2_METHODS} == before
    assert integ.ENV_SETTINGS not in os.environ
    plain = _build(nnUNetTrainer, fold=1)
    assert hooks.session(plain) is None
    assert not any(k.startswith(keys.PREFIX) for k in _store(plain))


@needs_nnunet
def test_patch_reaches_ddp_children_through_run_ddp(nnunet_data):
    from nnunetv2.run import run_training as run_module
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    original_init = nnUNetTrainer.__dict__["__init__"]
    integ.patch(zone="DK", pue=1.2)
    # mp.spawn pickles run_ddp by reference: the child imports this module and patches there
    assert run_module.run_ddp is patching._run_ddp_patched
    assert pickle.loads(pickle.dumps(run_module.run_ddp)) is patching._run_ddp_patched
    assert json.loads(os.environ[integ.ENV_SETTINGS]) == {"zone": "DK", "pue": 1.2}
    # what the child does first, in a process where nothing is patched yet
    env_settings = os.environ[integ.ENV_SETTINGS]
    integ.unpatch()
    os.environ[integ.ENV_SETTINGS] = env_settings
    try:
        patching._patch_from_env()
        assert nnUNetTrainer.__dict__["__init__"] is not original_init
        assert patching._patched_state["settings"] == {"zone": "DK", "pue": 1.2}
    finally:
        integ.unpatch()
        os.environ.pop(integ.ENV_SETTINGS, None)


def _spawn_ranks(function, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(function, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)


def test_rank_zeros_run_log_holds_every_rank_and_every_rank_logs_the_whole_run(tmp_path):
    """Two gloo ranks through the integration's hooks: rank 0's run log holds both GPUs and rank
    0's CPU (the tracker's combination), and nnU-Net's logger on each rank gets that sum."""
    pytest.importorskip("torch")
    import nnunet_ddp_worker as worker

    _spawn_ranks(worker.run_sum_rank, tmp_path)
    ranks = [json.loads((tmp_path / f"sum_rank{r}.json").read_text()) for r in (0, 1)]
    logs = list((tmp_path / worker.SUM_RUN).glob("*.jsonl"))
    assert len(logs) == 1 and ranks[0]["log_path"] == str(logs[0]) and not ranks[1]["log_path"]
    log = read_run_log(logs[0])
    assert log.header["ranks"]["combined"] is True and log.header["ranks"]["world_size"] == 2
    names = {"rank0/gpu:0", "rank0/cpu:0", "rank1/gpu:1"}  # rank 1's CPU: the host's, rank 0's
    assert {s["name"] for s in log.header["sensors"]} == names
    assert ranks[1]["sensors"] == ["gpu:1"] and "tracker_start_failed" not in ranks[1]["events"]
    expected = {
        "rank0/gpu:0": worker.SUM_GPU_KWH[0] * worker.J_PER_KWH,
        "rank0/cpu:0": worker.SUM_CPU_KWH * worker.J_PER_KWH,
        "rank1/gpu:1": worker.SUM_GPU_KWH[1] * worker.J_PER_KWH,
    }
    whole_kwh = worker.SUM_GPU_KWH[0] + worker.SUM_GPU_KWH[1] + worker.SUM_CPU_KWH
    assert len(log.epochs) == worker.SUM_EPOCHS
    for record in log.epochs:
        assert record["energy_j"] == pytest.approx(expected, rel=1e-9)
        assert record["energy_kwh"] == pytest.approx(whole_kwh, rel=1e-9)
    per_epoch = [r["energy_kwh"] for r in log.epochs]
    cumulative = [r["cumulative"]["energy_kwh"] for r in log.epochs]
    for rank in ranks:  # the same whole-run figures on every rank, like nnU-Net's losses
        logged = rank["logger"]
        assert rank["epochs"] == worker.SUM_EPOCHS
        assert logged[keys.EPOCH_ENERGY_KWH] == pytest.approx(per_epoch, rel=1e-12)
        assert logged[keys.ENERGY_KWH] == pytest.approx(cumulative, rel=1e-12)
        states = logged[integ.STATE_KEY]
        assert [st["energy_kwh"] for st in states] == pytest.approx(cumulative, rel=1e-12)
        assert logged[keys.EPOCH_CO2_G] == pytest.approx([r["co2_g"] for r in log.epochs])
        figures = {k: v for k, v in logged.items() if k != integ.STATE_KEY}
        assert figures == {k: v for k, v in ranks[0]["logger"].items() if k != integ.STATE_KEY}
    footer = log.footer
    assert footer["energy_kwh"] == pytest.approx(whole_kwh * worker.SUM_EPOCHS, rel=1e-9)
    line = next(x for x in ranks[0]["lines"] if x.startswith("Carbon: training completed"))
    assert f"{whole_kwh * worker.SUM_EPOCHS:.4g} kWh" in line
    assert not ranks[1]["lines"]  # only rank 0 writes nnU-Net's training log


def test_budget_over_two_real_ranks_is_decided_on_the_whole_run(tmp_path):
    """Each rank's share of the energy stays under the budget; the sum of the ranks does not,
    so both ranks stop at the same epoch and rank 0 says so with the whole run's figure."""
    pytest.importorskip("torch")
    import nnunet_ddp_worker as worker

    _spawn_ranks(worker.run_budget_rank, tmp_path)
    ranks = [json.loads((tmp_path / f"budget_rank{r}.json").read_text()) for r in (0, 1)]
    whole_plan = worker.KWH_PER_EPOCH * worker.BUDGET_EPOCHS
    for policy, expected_epochs, figure in (
        ("stop-when-spent", 3, "spent: 0.6 kWh measured so far"),
        ("stop-when-predicted-over", 2, "the whole run is predicted at 0.8 kWh"),
    ):
        zero, one = ranks[0][policy], ranks[1][policy]
        assert worker.BUDGETS[policy] > whole_plan  # no rank's own share ever reaches it
        assert zero["epochs"] == one["epochs"] == expected_epochs, policy
        run = worker.KWH_PER_EPOCH * 2 * expected_epochs  # both ranks, on each rank
        assert zero["run_kwh"] == pytest.approx(run) and one["run_kwh"] == pytest.approx(run)
        assert zero["should_stop"] and one["should_stop"]
        assert figure in zero["stop_reason"] and zero["stop_reason"] == one["stop_reason"]
        said = [line for line in zero["lines"] if "stopping after epoch" in line]
        assert len(said) == 1 and f"epoch {expected_epochs - 1}:" in said[0]
        assert figure in said[0] and "the whole run: 2 ranks combined" in said[0]
        assert not one["lines"]  # only rank 0 writes nnU-Net's training log
        logs = list((tmp_path / policy).glob("*.jsonl"))
        assert len(logs) == 1  # rank 0's
        stops = [b for b in read_run_log(logs[0]).budgets if b["action"] == "stop"]
        assert len(stops) == 1 and stops[0]["epoch"] == expected_epochs - 1
        assert stops[0]["spent"] == pytest.approx(run)
    # rank 1 alone holds the budget: it decides on the whole run, and rank 0 stops with it
    zero, one = ranks[0][worker.RANK1_ONLY], ranks[1][worker.RANK1_ONLY]
    assert zero["epochs"] == one["epochs"] == 3
    assert not zero["should_stop"] and "spent: 0.6 kWh" in one["stop_reason"]
    said = "stopping after epoch 2: the carbon budget of another rank said stop"
    assert any(said in line for line in zero["lines"])


def test_settings_defaults_come_from_the_trainer():
    import types

    trainer = types.SimpleNamespace(output_folder="/r/D/T__P__2d/fold_0", device=None)
    given = {"zone": "DK", "sim_cpu": "EPYC", "sim_cpu_tdp": 200}
    out = integ.build_settings(trainer, given)
    assert out["log_dir"] == "/r/D/T__P__2d/fold_0" and out["run_name"] == "T__P__2d/fold_0"
    # nothing per rank here: the tracker picks each rank's devices once the ranks are joined
    assert out["sim_cpu"] == "EPYC" and "components" not in out and "distributed" not in out
    assert integ.build_settings(trainer, {"log_dir": "/elsewhere"})["log_dir"] == "/elsewhere"


# -- W&B through nnU-Net's own MetaLogger-----------------------------------------------------------
@needs_nnunet
def test_carbon_keys_reach_wandb_through_nnunets_logger(nnunet_data, monkeypatch):
    pytest.importorskip("wandb")
    from nnunetv2.training.logging import nnunet_logger

    if not hasattr(nnunet_logger, "WandbLogger"):
        pytest.skip("this nnU-Net (2.6) has no W&B logging")
    for name, value in {
        "nnUNet_wandb_enabled": "1",
        "nnUNet_wandb_mode": "offline",
        "nnUNet_wandb_project": "carbon-test",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }.items():
        monkeypatch.setenv(name, value)
    trainer = _build(_carbon_class("CarbonWandb", epochs=1))
    run = trainer.logger.loggers[0].run
    logged = []
    original_log = run.log
    monkeypatch.setattr(
        run,
        "log",
        lambda data, step=None: (logged.append((data, step)), original_log(data, step=step)),
    )
    try:
        trainer.run_training()
    finally:
        run.finish()
    store = _store(trainer)
    carbon_logged = {
        k: (v, step) for data, step in logged for k, v in data.items() if k.startswith(keys.PREFIX)
    }
    for key in (*keys.EPOCH_KEYS, keys.GPU_POWER_W, keys.PRED_ENERGY_KWH):
        assert carbon_logged[key] == (pytest.approx(store[key][0]), 0), key
    assert integ.STATE_KEY not in carbon_logged  # the totals stay in the checkpoint only
    assert (Path(trainer.output_folder) / "wandb").is_dir()


# -- the by-name lookup (nnUNet_extTrainer)---------------------------------------------------------
@needs_nnunet
def test_trainer_dir_is_found_by_nnunets_external_lookup():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    # the call find_objects.recursive_find_trainer_class_by_name makes per nnUNet_extTrainer dir
    found = recursive_find_python_class(
        integ.TRAINER_DIR,
        "nnUNetTrainerCarbon",
        None,
        base_folder=integ.TRAINER_DIR,
        cleanup_imports_from_base_folder=True,
    )
    assert found is integ.nnUNetTrainerCarbon
    assert issubclass(found, nnUNetTrainer) and issubclass(found, integ.CarbonTrainerMixin)
    assert found.__name__ == "nnUNetTrainerCarbon"  # the output folder is named after it


@needs_nnunet
def test_full_by_name_lookup_where_torchvision_loads(monkeypatch):
    from nnunetv2 import paths

    if not hasattr(paths, "nnUNet_extTrainer"):
        pytest.skip("nnUNet_extTrainer needs nnU-Net 2.8+")
    try:
        import torchvision  # noqa: F401 - nnU-Net's walk through primus imports it
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"torchvision does not load here ({type(exc).__name__}); see docs/nnunet.md")
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", integ.TRAINER_DIR)
    assert recursive_find_trainer_class_by_name("nnUNetTrainerCarbon") is integ.nnUNetTrainerCarbon


# -- bad input--------------------------------------------------------------------------------------
@needs_nnunet
def test_misconfigured_trainer_fails_when_built_not_after_an_epoch(nnunet_data, monkeypatch):
    with pytest.raises(ConfigError, match="pue"):
        _build(_carbon_class("CarbonBadPue", settings={"pue": 0.5}))
    monkeypatch.setenv(integ.ENV_SETTINGS, "zone=DK")
    with pytest.raises(ConfigError, match=integ.ENV_SETTINGS):
        _build(_carbon_class("CarbonBadEnv"))
    monkeypatch.setenv(integ.ENV_SETTINGS, json.dumps({"epochs_before_pred": 5}))
    trainer = _build(_carbon_class("CarbonBadPred"))  # 5 > num_epochs=2, known at train start
    with pytest.raises(ConfigError, match="epochs_before_pred"):
        trainer.run_training()
    assert trainer.current_epoch == 0 and not _store(trainer)["train_losses"]


@needs_nnunet
def test_patch_refuses_bad_settings_before_anything_is_patched():
    with pytest.raises(ConfigError, match="pue"):
        integ.patch(pue=0.5)
    with pytest.raises(ConfigError, match="unknown setting"):
        integ.patch(zone_name="DK")
    with pytest.raises(ConfigError, match="JSON"):
        integ.patch(extra={"x": object()})
    assert not integ.is_patched() and integ.ENV_SETTINGS not in os.environ


def test_supported_versions_pass_and_others_name_the_supported_ones():
    for version in ("2.6.0", "2.7.0", "2.8.1", "2.8.0rc1"):
        assert integ.check_v2_version(version) == version
    for version in ("2.5.2", "2.9.0", "3.0", "dev"):
        with pytest.raises(integ.NnUNetVersionError, match=r"nnunetv2 2\.6 to 2\.8.*nnunet 1\.7"):
            integ.check_v2_version(version)
    assert integ.check_v1_version("1.7.1") == "1.7.1"
    with pytest.raises(integ.NnUNetVersionError, match=r"1\.7\.x"):
        integ.check_v1_version("1.6.6")


def test_patch_without_nnunet_says_what_is_supported(monkeypatch):
    monkeypatch.setattr(patching, "installed_version", lambda distribution: None)
    with pytest.raises(integ.NnUNetVersionError, match=r"not installed.*2\.6 to 2\.8.*1\.7"):
        integ.patch()
    assert not integ.is_patched()


def test_patch_for_v1_where_it_is_not_installed_says_so():
    if importlib.util.find_spec("nnunet") is not None:
        pytest.skip("nnU-Net v1 is installed here (tests/test_nnunet_v1.py covers it)")
    with pytest.raises(integ.NnUNetVersionError, match=r"v1 \(package nnunet\) is not installed"):
        integ.patch(target="nnunet")
    with pytest.raises(ConfigError, match="target"):
        integ.patch(target="nnunet3")
    assert not integ.is_patched()


def test_console_script_arguments():
    settings, rest, print_dir = integ.split_args(
        ["999", "2d", "0", "--carbon", "zone=DK", "--carbon=pue=1.2", "-device", "cpu", "--c"]
    )
    assert settings == {"zone": "DK", "pue": 1.2}
    assert rest == ["999", "2d", "0", "-device", "cpu", "--c"] and not print_dir
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        integ.split_args(["--carbon", "zone"])
    with pytest.raises(SystemExit, match="pue"):
        integ.main(["999", "2d", "0", "--carbon", "pue=0.5"])


def test_console_script_prints_the_trainer_dir(capsys):
    integ.main(["--carbon-trainer-dir"])
    folder = Path(capsys.readouterr().out.strip())
    assert folder == Path(integ.TRAINER_DIR)
    assert (folder / "nnUNetTrainerCarbon.py").is_file()


def test_importing_the_integration_imports_no_framework():
    code = (
        "import sys, carbon_callbacks.integrations.nnunet as m; "
        "print(sorted(k for k in ('nnunetv2', 'nnunet', 'torch') if k in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
