"""Matrix row NVML: library missing, init fails, a read raises mid-run, the device disappears,
NotSupported for energy (and for power too). Each cell trains through Lightning and the core API
with a stand-in NVML (``hardware.LiveFakeNvml``, installed as ``pynvml``).

Warning policy, asserted per cell: a degradation from what the user asked for or from how the
run started is warned once; a condition that is normal for the hardware (no NVML on a machine
where no GPU was asked for, no energy counter before Volta) is recorded in the run log, not warned.
"""

from __future__ import annotations

import pytest

from .hardware import GPU_POWER_W, LiveFakeNvml, install_nvml, joules_match, one_gpu
from .harness import DRIVERS, assert_switched, base_settings, baseline, check_cell, train

each_driver = pytest.mark.parametrize("driver", DRIVERS)

COUNTER = "nvmlDeviceGetTotalEnergyConsumption"


def _gpu_settings(tmp_path, **kw):
    return base_settings(tmp_path, components="gpu", **kw)


def _gpu_energy_matches_power(log, power_w=GPU_POWER_W):
    """Each epoch's GPU joules = power x duration: nothing lost across a change of method."""
    for rec in log.epochs:
        assert joules_match(rec["energy_j"]["gpu:0"], power_w, rec["duration_s"]), rec


@each_driver
def test_library_missing_gpu_requested(driver, tmp_path, monkeypatch):
    install_nvml(monkeypatch, None)  # import pynvml raises ImportError
    run = train(driver, base_settings(tmp_path, gpu_ids=[0]))
    log = check_cell(run, baseline(driver), warned=["NVML is not available"])
    assert {s["component"] for s in log.header["sensors"]} == {"cpu", "dram"}
    assert [e["kind"] for e in log.events if e["source"] == "nvml"] == ["gpu_unavailable"]
    assert len(log.epochs) == 3 and log.footer["status"] == "completed"
    assert all("carbon/gpu_power_w" not in m for m in run.epoch_metrics)


@each_driver
def test_nothing_measurable_reports_no_energy_rather_than_zero(driver, tmp_path, monkeypatch):
    install_nvml(monkeypatch, None)
    run = train(driver, _gpu_settings(tmp_path, gpu_ids=[0]))  # GPU only, and no NVML
    log = check_cell(
        run, baseline(driver), warned=["NVML is not available", "no energy sensor is available"]
    )
    assert log.header["sensors"] == []
    for metrics in run.epoch_metrics:  # a gap in the user's charts, not a line at 0 kWh
        assert "carbon/epoch_energy_kwh" not in metrics and "carbon/energy_kwh" not in metrics
        assert metrics["carbon/epoch_duration_s"] > 0
    assert all(rec["unmeasured"] and rec["energy_kwh"] is None for rec in log.epochs)
    assert log.epoch_sums()["missing_values"] == 6  # energy and CO2 of 3 epochs: not summed


@each_driver
def test_library_missing_cpu_machine_is_recorded_not_warned(driver, tmp_path, monkeypatch):
    install_nvml(monkeypatch, None)
    run = train(driver, base_settings(tmp_path))  # components="all", no GPU asked for
    log = check_cell(run, baseline(driver), warned=0)
    assert [e["kind"] for e in log.events if e["source"] == "nvml"] == ["gpu_unavailable"]
    assert {s["component"] for s in log.header["sensors"]} == {"cpu", "dram"}


@each_driver
def test_init_fails(driver, tmp_path, monkeypatch):
    nvml = install_nvml(monkeypatch, LiveFakeNvml([one_gpu()], init_error=9))  # DRIVER_NOT_LOADED
    run = train(driver, base_settings(tmp_path, gpu_ids=[0]))
    log = check_cell(run, baseline(driver), warned=["the NVIDIA driver is not loaded"])
    assert nvml.init_calls == 1 and nvml.initialised == 0
    assert [e["kind"] for e in log.events if e["source"] == "nvml"] == ["gpu_unavailable"]
    assert log.footer["status"] == "completed"


@each_driver
def test_read_raises_mid_run_falls_back_to_sampled_power(driver, tmp_path, monkeypatch):
    nvml = install_nvml(monkeypatch, LiveFakeNvml([one_gpu()]))

    def fault(epoch, batch):
        if (epoch, batch) == (1, 0):
            nvml.fail_next(0, COUNTER)
            nvml.wait_failed(0, COUNTER)  # the read lands in epoch 1, however busy the machine

    run = train(driver, _gpu_settings(tmp_path), step_hook=fault, step_sleep_s=0.02)
    log = check_cell(run, baseline(driver), warned=["measuring it by sampled"])
    assert_switched([rec["methods"]["gpu:0"] for rec in log.epochs], "counter", "sampled")
    _gpu_energy_matches_power(log)
    assert [e["kind"] for e in log.events] == ["sensor_fallback"]
    assert nvml.initialised == 0  # every NVML reference released


@each_driver
def test_device_disappears(driver, tmp_path, monkeypatch):
    nvml = install_nvml(monkeypatch, LiveFakeNvml([one_gpu()]))

    def fault(epoch):
        if epoch == 1:
            nvml.gpus[0].lost = True

    run = train(driver, _gpu_settings(tmp_path), on_epoch_start=fault, step_sleep_s=0.02)
    log = check_cell(run, baseline(driver), warned=["has no fallback"])
    first, second, third = log.epochs
    assert "incomplete" not in first
    assert joules_match(first["energy_j"]["gpu:0"], GPU_POWER_W, first["duration_s"])
    assert second["incomplete"] == ["gpu:0"] and third["incomplete"] == ["gpu:0"]
    # after the loss the GPU is unmeasured: absent from the epoch, never a silent 0 W
    assert "gpu:0" not in third["energy_j"] and "gpu" not in third["power_w"]
    assert "carbon/gpu_power_w" not in run.epoch_metrics[2]
    assert "carbon/gpu_power_w" in run.epoch_metrics[0]
    assert [e["kind"] for e in log.events] == ["sensor_lost"]
    assert log.footer["incomplete"] == ["gpu:0"]
    assert nvml.initialised == 0


@each_driver
def test_energy_not_supported_is_sampled(driver, tmp_path, monkeypatch):
    install_nvml(monkeypatch, LiveFakeNvml([one_gpu(energy_supported=False)]))
    run = train(driver, _gpu_settings(tmp_path), step_sleep_s=0.02)
    log = check_cell(run, baseline(driver), warned=0)  # normal before Volta: recorded only
    assert log.header["sensors"][0]["method"] == "sampled"
    assert [e["kind"] for e in log.events] == ["sensor_fallback"]
    _gpu_energy_matches_power(log)


@each_driver
def test_energy_and_power_not_supported_is_modelled(driver, tmp_path, monkeypatch):
    gpu = one_gpu(energy_supported=False, power_supported=False, utilisation_pct=[50.0])
    install_nvml(monkeypatch, LiveFakeNvml([gpu]))
    run = train(driver, _gpu_settings(tmp_path), step_sleep_s=0.02)
    log = check_cell(run, baseline(driver), warned=["its power is modelled"])
    assert log.header["sensors"][0]["method"] == "modelled"
    tdp_w = 700.0  # the H100 SXM row of the packaged GPU table
    _gpu_energy_matches_power(log, power_w=tdp_w * 0.5)
