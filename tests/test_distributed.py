"""Ranks on the CPU (gloo): each rank its own GPU, one CPU/DRAM measurer per host, sums on rank 0.

Real ``torch.distributed`` process groups on this machine; two hosts are simulated by giving
ranks different host names (``CARBON_CALLBACKS_HOST``), as two nodes would have.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

GPU_W = {0: 100.0, 1: 200.0, 2: 300.0, 3: 400.0}
CPU_W, DRAM_W = 50.0, 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world: int, port: int, host: str) -> None:
    os.environ["CARBON_CALLBACKS_HOST"] = host
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )


def _worker(rank: int, world: int, port: int, out_dir: str, hosts: list[str], die: int) -> None:
    from power_traces import ConstantCounterSensor, TracePowerSensor

    from carbon_callbacks.core.tracker import CarbonTracker

    _init(rank, world, port, hosts[rank])
    sensors = [
        ConstantCounterSensor("gpu:0", GPU_W[rank]),
        TracePowerSensor("cpu:model", lambda t: CPU_W, component="cpu"),
        TracePowerSensor("dram:model", lambda t: DRAM_W, component="dram"),
    ]
    tracker = CarbonTracker(
        epochs=2,
        sensors=sensors,
        log_dir=out_dir,
        intensity_g_per_kwh=100.0,
        interval_s=0.05,
        verbose=0,
        distributed_timeout_s=3.0,
    )
    tracker.start()
    t0 = time.monotonic()
    result = {"rank": rank, "leader": tracker.ranks.host_leader, "metrics": []}
    for epoch in range(2):
        if rank == die and epoch == 1:
            os._exit(0)  # this rank dies before the second epoch's exchange
        tracker.epoch_start()
        time.sleep(0.3)
        result["metrics"].append(tracker.epoch_end())
    tracker.stop()
    result["seconds"] = time.monotonic() - t0
    result["events"] = [e.kind for e in tracker.events.events]
    result["sensors"] = [i.name for i in tracker.sensors]
    Path(out_dir, f"result_{rank}.json").write_text(json.dumps(result))
    if die < 0:
        dist.destroy_process_group()


def _spawn(tmp_path: Path, hosts: list[str], die: int = -1) -> dict[int, dict]:
    world = len(hosts)
    mp.spawn(
        _worker, args=(world, _free_port(), str(tmp_path), hosts, die), nprocs=world, join=True
    )
    return {
        int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in tmp_path.glob("result_*.json")
    }


def test_four_ranks_on_two_hosts_sum_on_rank_zero(tmp_path):
    from carbon_callbacks.core.runlog import read_run_log

    results = _spawn(tmp_path, ["hostA", "hostA", "hostB", "hostB"])
    assert {r: results[r]["leader"] for r in results} == {0: True, 1: False, 2: True, 3: False}
    assert results[1]["sensors"] == ["gpu:0"]  # not a host leader: no CPU/DRAM
    logs = list(tmp_path.glob("*.carbon.jsonl"))
    assert len(logs) == 1  # only rank 0 writes
    log = read_run_log(logs[0])
    assert log.header["ranks"] == {
        "world_size": 4,
        "hosts": 2,
        "combined": True,
        "intensity_from_rank": 0,
    }
    for epoch in log.epochs:
        power = epoch["power_w"]  # summed over ranks, per component
        assert power["gpu"] == pytest.approx(sum(GPU_W.values()), rel=0.08)
        assert power["cpu"] == pytest.approx(2 * CPU_W, rel=0.08)  # one per host
        assert power["dram"] == pytest.approx(2 * DRAM_W, rel=0.08)
        assert set(epoch["energy_j"]) == {
            "rank0/gpu:0", "rank0/cpu:model", "rank0/dram:model",
            "rank1/gpu:0",
            "rank2/gpu:0", "rank2/cpu:model", "rank2/dram:model",
            "rank3/gpu:0",
        }  # fmt: skip
    # every rank holds the same combined figures (so a checkpoint from any rank resumes right)
    firsts = {r: results[r]["metrics"][0]["carbon/epoch_energy_kwh"] for r in results}
    assert len(set(firsts.values())) == 1
    assert log.epochs[0]["energy_kwh"] == pytest.approx(firsts[0])


def test_a_dead_rank_does_not_hang_the_others(tmp_path):
    start = time.monotonic()
    results = _spawn_tolerant(tmp_path, ["h", "h"], die=1)
    assert time.monotonic() - start < 60
    survivor = results[0]
    assert "ranks_not_combined" in survivor["events"]
    assert len(survivor["metrics"]) == 2 and survivor["metrics"][1]  # it measured on alone


def _spawn_tolerant(tmp_path: Path, hosts: list[str], die: int) -> dict[int, dict]:
    try:
        return _spawn(tmp_path, hosts, die)
    except Exception:  # noqa: BLE001 - the dead rank's exit is reported by spawn
        return {
            int(p.stem.split("_")[1]): json.loads(p.read_text())
            for p in tmp_path.glob("result_*.json")
        }


# -- what a rank measures, decided without collectives (RankInfo set by hand) -------------------
def _as_rank(tracker, rank: int, leader: bool):
    from carbon_callbacks.core.distributed import RankInfo

    tracker.ranks = RankInfo(rank=rank, world_size=2, host_leader=leader)
    return tracker


def _rank_config(tracker):
    return tracker._ranks.rank_config(tracker.config, tracker.events)


def test_a_rank_that_is_not_host_leader_drops_a_stated_cpu():
    from carbon_callbacks.core.tracker import CarbonTracker

    settings = {"sim_cpu": "EPYC", "sim_cpu_tdp": 200.0, "sim_gpu": "H200", "sim_gpu_watts": 700.0}
    tracker = _as_rank(CarbonTracker(log_dir=None, verbose=0, zone="DK", **settings), 1, False)
    config = _rank_config(tracker)  # was a ConfigError: components='gpu' with sim_cpu
    assert config.components == "gpu" and config.sim_cpu is None and config.sim_gpu == "H200"
    tracker.start()
    assert [s.component for s in tracker.sensors] == ["gpu"]
    assert "tracker_start_failed" not in [e.kind for e in tracker.events.events]
    tracker.stop()


def test_a_named_gpu_is_ignored_where_no_nvml_gpu_is_measured():
    from carbon_callbacks.core.tracker import CarbonTracker

    cpu_only = CarbonTracker(log_dir=None, verbose=0, zone="DK", components="cpu")
    cpu_only.set_gpu("GPU-1a2b")  # what an integration does on a CUDA device
    assert _rank_config(cpu_only).gpu_ids is None  # was a ConfigError: cpu with gpu_ids
    stated = CarbonTracker(log_dir=None, verbose=0, zone="DK", sim_gpu="G", sim_gpu_watts=9.0)
    stated.set_gpu(0)
    assert _rank_config(stated).gpu_ids is None
    nvml = CarbonTracker(log_dir=None, verbose=0, zone="DK")
    nvml.set_gpu(0)
    assert _rank_config(nvml).gpu_ids == [0]


def test_a_cpu_only_rank_that_is_not_host_leader_measures_nothing():
    from power_traces import ConstantCounterSensor

    from carbon_callbacks.core.tracker import CarbonTracker

    cpu = ConstantCounterSensor("cpu:test", 50.0, component="cpu")
    tracker = CarbonTracker(
        log_dir=None, verbose=0, zone="DK", components="cpu", sim_cpu="EPYC", sim_cpu_tdp=9.0
    )
    _as_rank(tracker, 1, False).start()  # discovery would find the stated CPU: counted twice
    assert tracker.sensors == []
    kinds = [e.kind for e in tracker.events.events]
    assert "rank_measures_nothing" in kinds and "no_sensor" not in kinds
    tracker.stop()
    given = CarbonTracker(log_dir=None, verbose=0, zone="DK", components="cpu", sensors=[cpu])
    _as_rank(given, 1, False).start()
    assert given.sensors == []
    given.stop()
