"""The analysis of ``bench/nnunet_ddp_proof.py`` on synthetic run logs and counters (no GPU).

Two ranks: rank 0 measures GPU A (300 W), CPU and DRAM; rank 1 measures GPU B (250 W) and writes
a witness log, its epoch edges 2 ms after rank 0's. The counters are exact, so every gated
check passes; then single mistakes (a GPU measured twice, CPU measured on rank 1, a sum counted
twice, energy lost) must each fail the check made for them.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import nnunet_ddp_proof as proof  # noqa: E402

from carbon_callbacks.core import metrics as keys  # noqa: E402
from carbon_callbacks.core.records import read_run_log  # noqa: E402

T0 = 1_000.0
GPU_W = {"GPU-aaaa-0000": 300.0, "GPU-bbbb-1111": 250.0}
CPU_W, DRAM_W = 50.0, 5.0
EPOCHS, EPOCH_S, GAP_S = 3, 8.0, 2.0


def _counters() -> dict[str, proof.Steps]:
    times = [T0 + 0.1 * i for i in range(1000)]
    return {
        proof.normalise_uuid(u): (times, [w * (t - T0) for t in times]) for u, w in GPU_W.items()
    }


def _sensor(name: str, component: str, device: str, method: str) -> dict[str, Any]:
    return {"name": name, "component": component, "device": device, "method": method}


def _epoch(e: int, shift_s: float, energy_j: dict[str, float]) -> dict[str, Any]:
    start = T0 + 10.0 + e * (EPOCH_S + GAP_S) + shift_s
    return {
        "type": "epoch", "epoch": e, "start_unix_s": start, "end_unix_s": start + EPOCH_S,
        "duration_s": EPOCH_S, "energy_j": energy_j, "energy_kwh": sum(energy_j.values()) / 3.6e6,
    }  # fmt: skip


def _write(path: Path, header: dict[str, Any], epochs: list[dict], footer: dict) -> Path:
    records = [{"type": "header", "schema": 1, "pue": 1.0, **header}, *epochs, footer]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _footer(energy_j: dict[str, float], status: str = "completed") -> dict[str, Any]:
    end = T0 + 10.0 + EPOCHS * (EPOCH_S + GAP_S)
    return {"type": "footer", "status": status, "ended_at_unix_s": end, "duration_s": end - T0 - 5,
            "energy_j": energy_j}  # fmt: skip


def _two_ranks(tmp_path: Path) -> tuple[Any, dict[int, Any], dict[str, list]]:
    a, b = "GPU-aaaa-0000", "GPU-bbbb-1111"
    header0 = {
        "sensors": [
            _sensor("gpu:0", "gpu", f"H200 ({a})", "counter"),
            _sensor("cpu:model", "cpu", "EPYC", "modelled"),
            _sensor("dram:model", "dram", "DRAM", "modelled"),
        ],
        "ranks": {"world_size": 1, "combined": False},
        "config": {"gpu_ids": [a[4:]]},
    }
    e0 = [
        _epoch(e, 0.0, {"gpu:0": GPU_W[a] * EPOCH_S, "cpu:model": CPU_W * EPOCH_S,
                        "dram:model": DRAM_W * EPOCH_S})
        for e in range(EPOCHS)
    ]  # fmt: skip
    e1 = [_epoch(e, 0.002, {"gpu:1": GPU_W[b] * EPOCH_S}) for e in range(EPOCHS)]
    session_s = _footer({})["duration_s"]
    main = _write(tmp_path / "r0.carbon.jsonl", header0, e0,
                  _footer({"gpu:0": GPU_W[a] * session_s, "cpu:model": 1.0}))  # fmt: skip
    header1 = {"sensors": [_sensor("gpu:1", "gpu", f"H200 ({b})", "counter")],
               "ranks": {"world_size": 1, "combined": False}}  # fmt: skip
    witness = _write(tmp_path / "r1.carbon.jsonl", header1, e1,
                     _footer({"gpu:1": GPU_W[b] * session_s}))  # fmt: skip
    per_epoch = [x["energy_kwh"] + y["energy_kwh"] for x, y in zip(e0, e1, strict=True)]
    cumulative = [sum(per_epoch[: i + 1]) for i in range(EPOCHS)]
    logger = {
        keys.EPOCH_ENERGY_KWH: per_epoch,
        keys.ENERGY_KWH: cumulative,
        "carbon/tracker_state": [{"energy_kwh": c} for c in cumulative],
    }
    return read_run_log(main), {1: read_run_log(witness)}, logger


def _analyse(main: Any, witnesses: dict, logger: dict, **kw: Any) -> dict[str, Any]:
    kw.setdefault("cuda_uuids", ["aaaa-0000", "bbbb-1111"])
    return proof.analyse_measured(
        main, witnesses, logger, _counters(), world_size=2, planned_epochs=EPOCHS, **kw
    )


def _failed(result: dict[str, Any]) -> set[str]:
    return {name for name, c in result["checks"].items() if c["gated"] and not c["ok"]}


def test_two_exact_ranks_pass_every_gated_check(tmp_path):
    result = _analyse(*_two_ranks(tmp_path))
    assert _failed(result) == set()
    checks = result["checks"]
    assert checks["gpu_energy_run"]["ratio"] == pytest.approx(1.0, abs=1e-9)
    assert checks["gpu_energy_run"]["per_rank_ratio"] == {
        0: pytest.approx(1.0),
        1: pytest.approx(1),
    }
    assert checks["logged_sum_vs_counters"]["ratio"] == pytest.approx(1.0, rel=1e-3)
    assert not checks["run_log_holds_sum"]["ok"] and not checks["run_log_holds_sum"]["gated"]


def _same_gpu_twice(main, witnesses, logger):
    # rank 1 measures rank 0's GPU: its own figures agree with that GPU's counter; the UUIDs
    # and the sum against every polled GPU tell
    witnesses[1].header["sensors"][0]["device"] = "H200 (GPU-aaaa-0000)"
    extra = (GPU_W["GPU-aaaa-0000"] - GPU_W["GPU-bbbb-1111"]) * EPOCH_S
    for e, record in enumerate(witnesses[1].epochs):
        record["energy_j"]["gpu:1"] += extra
        record["energy_kwh"] += extra / 3.6e6
        logger[keys.EPOCH_ENERGY_KWH][e] += extra / 3.6e6
        logger[keys.ENERGY_KWH][e] += (e + 1) * extra / 3.6e6
        logger["carbon/tracker_state"][e]["energy_kwh"] += (e + 1) * extra / 3.6e6
    witnesses[1].footer["energy_j"]["gpu:1"] *= GPU_W["GPU-aaaa-0000"] / GPU_W["GPU-bbbb-1111"]


def _cpu_on_rank_one(main, witnesses, logger):
    witnesses[1].header["sensors"].append(_sensor("cpu:model", "cpu", "EPYC", "modelled"))


def _sum_counted_twice(main, witnesses, logger):
    logger[keys.EPOCH_ENERGY_KWH] = [2 * v for v in logger[keys.EPOCH_ENERGY_KWH]]


def _rank_one_energy_lost(main, witnesses, logger):
    # its sensor misses 10% of its GPU (its run log and nnU-Net's sums still agree)
    for record in witnesses[1].epochs:
        record["energy_j"]["gpu:1"] *= 0.9


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        (
            _same_gpu_twice,
            {
                "one_distinct_gpu_per_rank",
                "rank_measures_its_cuda_device",
                "logged_sum_vs_counters",
            },
        ),
        (_cpu_on_rank_one, {"cpu_dram_once"}),
        (_sum_counted_twice, {"logged_sum_is_sum_of_ranks", "logged_sum_vs_counters"}),
        (_rank_one_energy_lost, {"gpu_energy_run", "gpu_energy_per_epoch"}),
    ],  # fmt: skip
)
def test_each_mistake_fails_its_check(tmp_path, mistake, expected):
    main, witnesses, logger = _two_ranks(tmp_path)
    mistake(main, witnesses, logger)
    assert _failed(_analyse(main, witnesses, logger)) == expected


def test_a_combined_log_is_read_by_rank_prefix(tmp_path):
    main, witnesses, logger = _two_ranks(tmp_path)
    combined = copy.deepcopy(main)
    combined.header["ranks"]["combined"] = True
    combined.header["sensors"] = [
        {**s, "name": f"rank0/{s['name']}"} for s in main.header["sensors"]
    ] + [{**s, "name": f"rank1/{s['name']}"} for s in witnesses[1].header["sensors"]]
    for mine, theirs in zip(combined.epochs, witnesses[1].epochs, strict=True):
        mine["energy_j"] = {
            **{f"rank0/{k}": v for k, v in mine["energy_j"].items()},
            **{f"rank1/{k}": v for k, v in theirs["energy_j"].items()},
        }
        mine["energy_kwh"] += theirs["energy_kwh"]
    result = _analyse(combined, {}, logger)
    assert _failed(result) == set()
    assert result["checks"]["run_log_holds_sum"]["ok"]
    assert [r["rank"] for r in result["ranks"]] == [0, 1]


def test_budget_stop_of_rank_one_must_stop_rank_zero(tmp_path):
    main, witnesses, _ = _two_ranks(tmp_path)
    main.epochs[1:] = []
    main.footer["status"] = "interrupted"
    witnesses[1].epochs[1:] = []
    witnesses[1].budgets.append({"type": "budget", "epoch": 0, "action": "stop"})
    logger = {keys.EPOCH_ENERGY_KWH: [1e-4]}
    log_text = "carbon_callbacks: stopping after epoch 0: budget reached"
    ok = proof.analyse_budget(main, witnesses, logger, log_text, planned_epochs=3)
    assert ok["checks"]["budget_stop_is_collective"]["ok"]
    main.footer["status"] = "completed"
    bad = proof.analyse_budget(main, witnesses, logger, "", planned_epochs=3)
    detail = bad["checks"]["budget_stop_is_collective"]["detail"]
    assert "not 'interrupted'" in detail and "stopping after epoch 0" in detail
