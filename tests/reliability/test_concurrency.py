"""Matrix row concurrency: two trackers in one process (sharing NVML, in two threads, two
callbacks in one Trainer) and two processes on one machine: no shared-state corruption, unique
run-log names, no lock files."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from power_traces import ConstantCounterSensor

from carbon_callbacks.core.runlog import read_run_log
from carbon_callbacks.core.tracker import CarbonTracker

from .hardware import GPU_POWER_W, LiveFakeNvml, install_nvml, joules_match, one_gpu
from .harness import base_settings, baseline, carbon_threads, check_cell, train
from .processes import run_children


def test_two_trackers_share_nvml_with_overlapping_lives(tmp_path, monkeypatch):
    """A Lightning fit measures the GPU; a second tracker (say, measuring a side job) opens and
    closes NVML in the middle of it. NVML is reference-counted: nobody shuts it down under the
    other, so the fit's counter never fails."""
    nvml = install_nvml(monkeypatch, LiveFakeNvml([one_gpu()]))
    side = {}

    def side_job(epoch):
        if epoch == 0:
            side["tracker"] = CarbonTracker(
                **base_settings(tmp_path / "side", components="gpu", run_name="side")
            ).start()
        elif epoch == 1:
            with side["tracker"].track("side job"):
                time.sleep(0.05)
            side["tracker"].stop()

    settings = base_settings(tmp_path, components="gpu", run_name="fit")
    run = train("lightning", settings, on_epoch_start=side_job, step_sleep_s=0.02)
    log = check_cell(run, baseline("lightning"), warned=0)
    assert [rec["methods"]["gpu:0"] for rec in log.epochs] == ["counter"] * 3
    for rec in log.epochs:
        assert joules_match(rec["energy_j"]["gpu:0"], GPU_POWER_W, rec["duration_s"])
    assert log.events == []
    side_log = read_run_log(side["tracker"].log_path)
    assert side_log.footer["status"] == "completed" and side_log.events == []
    assert nvml.initialised == 0 and nvml.init_calls == nvml.shutdown_calls


def test_two_trackers_in_two_threads(tmp_path):
    results = {}

    def worker(name, watts):
        tracker = CarbonTracker(
            epochs=5,
            sensors=[ConstantCounterSensor("gpu:0", watts)],
            **base_settings(tmp_path, run_name=name),  # the same log_dir for both
        )
        tracker.start()
        for _ in range(5):
            tracker.epoch_start()
            torch.randn(200, 200) @ torch.randn(200, 200)
            time.sleep(0.02)
            tracker.epoch_end()
        tracker.stop()
        results[name] = tracker

    jobs = (("a", 100.0), ("b", 300.0))
    threads = [threading.Thread(target=worker, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert carbon_threads() == []
    assert len({t.log_path for t in results.values()}) == 2
    for name, watts in jobs:
        log = read_run_log(results[name].log_path)
        assert log.run_name == name and log.corrupt_lines == 0
        assert [e["epoch"] for e in log.epochs] == list(range(5))
        for rec in log.epochs:  # each tracker saw only its own sensor
            assert joules_match(rec["energy_j"]["gpu:0"], watts, rec["duration_s"])
        assert log.footer["status"] == "completed"


def test_two_callbacks_in_one_trainer_need_distinct_run_names(tmp_path):
    from carbon_callbacks.integrations.lightning import CarbonCallback

    def callbacks(run_names):
        return [
            CarbonCallback(
                **base_settings(
                    tmp_path / str(i), components="cpu", run_name=n, sim_cpu="CPU", sim_cpu_tdp=50
                )
            )
            for i, n in enumerate(run_names)
        ]

    # unnamed: Lightning itself refuses two stateful callbacks with one state key, before training
    import lightning.pytorch as pl

    with pytest.raises(RuntimeError, match="state_key"):
        pl.Trainer(callbacks=callbacks([None, None]), logger=False)
    # named: both measure, both checkpoint and resume their own totals
    first, second = callbacks(["first", "second"])
    run = train(
        "lightning",
        None,
        callback_kwargs={},
        trainer_kwargs={
            "callbacks": [first, second],
            "enable_checkpointing": True,
            "default_root_dir": str(tmp_path),
        },
    )
    assert run.error is None
    ckpt = run.trainer.checkpoint_callback.best_model_path
    states = torch.load(ckpt, weights_only=False)["callbacks"]
    assert states["CarbonCallback[first]"]["run_ids"] == [first.tracker.run_id]
    assert states["CarbonCallback[second]"]["run_ids"] == [second.tracker.run_id]
    for cb in (first, second):
        assert len(read_run_log(cb.tracker.log_path).epochs) == 3


def test_two_processes_one_log_dir_no_lock_files(tmp_path):
    settings = base_settings(
        tmp_path, log_file_prefix="same_", components="cpu", sim_cpu="Test CPU", sim_cpu_tdp=100.0
    )
    spec = {"driver": "core", "settings": settings, "epochs": 3, "step_sleep_s": 0.01}
    results = run_children([spec, spec])
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    entries = sorted(p.name for p in (tmp_path / "carbon").iterdir())
    assert len(entries) == 2 and all(
        n.startswith("same_") and n.endswith(".carbon.jsonl") for n in entries
    ), entries  # two logs and nothing else: no lock, no probe, no temporary file
    logs = [read_run_log(tmp_path / "carbon" / n) for n in entries]
    assert logs[0].run_id != logs[1].run_id and logs[0].header["pid"] != logs[1].header["pid"]
    for log in logs:
        assert log.footer["status"] == "completed" and len(log.epochs) == 3
