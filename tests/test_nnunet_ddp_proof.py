"""The analysis of ``bench/distributed_nnunet.py`` on synthetic run logs and counters (no GPU).

Two ranks, combined as the tracker combines them: rank 0's run log holds rank 0's GPU A
(300 W), CPU and DRAM, and rank 1's GPU B (250 W), over rank 0's epoch windows; rank 1's
witness has its own edges, 2 ms after rank 0's. The counters are exact, so every gated check
passes; then single mistakes (a GPU measured twice, CPU measured on rank 1, a sum counted
twice, energy lost, a log without rank 1, a log that disagrees with rank 1's own figures) must
each fail the check made for them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import distributed_nnunet as proof  # noqa: E402
from carbon_callbacks.core import metrics as keys  # noqa: E402
from carbon_callbacks.core.runlog import read_run_log  # noqa: E402

T0 = 1_000.0
A, B = "GPU-aaaa-0000", "GPU-bbbb-1111"
GPU_W = {A: 300.0, B: 250.0}
CPU_W, DRAM_W = 50.0, 5.0
EPOCHS, EPOCH_S, GAP_S = 3, 8.0, 2.0
SHIFT_S = 0.002  # rank 1's edges after rank 0's


def _counters() -> dict[str, proof.Steps]:
    times = [T0 + 0.1 * i for i in range(1000)]
    return {
        proof.normalise_uuid(u): (times, [w * (t - T0) for t in times]) for u, w in GPU_W.items()
    }


def _sensor(name: str, component: str, device: str, method: str) -> dict[str, Any]:
    return {"name": name, "component": component, "device": device, "method": method}


def _window(e: int, shift_s: float) -> dict[str, Any]:
    start = T0 + 10.0 + e * (EPOCH_S + GAP_S) + shift_s
    return {"start_unix_s": start, "end_unix_s": start + EPOCH_S, "duration_s": EPOCH_S}


def _set_energy(record: dict[str, Any], energy_j: dict[str, float]) -> None:
    record["energy_j"] = energy_j
    record["energy_kwh"] = sum(energy_j.values()) / 3.6e6


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _two_ranks(tmp_path: Path) -> tuple[Any, dict[int, Any], dict[str, list]]:
    header = {
        "type": "header",
        "schema": 1,
        "pue": 1.0,
        "sensors": [
            _sensor("rank0/gpu:0", "gpu", f"H200 ({A})", "counter"),
            _sensor("rank0/cpu:model", "cpu", "EPYC", "modelled"),
            _sensor("rank0/dram:model", "dram", "DRAM", "modelled"),
            _sensor("rank1/gpu:1", "gpu", f"H200 ({B})", "counter"),
        ],
        "ranks": {"world_size": 2, "hosts": 1, "combined": True, "intensity_from_rank": 0},
    }
    epochs, windows = [], []
    for e in range(EPOCHS):
        record = {"type": "epoch", "epoch": e, **_window(e, 0.0)}
        _set_energy(
            record,
            {
                "rank0/gpu:0": GPU_W[A] * EPOCH_S,
                "rank0/cpu:model": CPU_W * EPOCH_S,
                "rank0/dram:model": DRAM_W * EPOCH_S,
                "rank1/gpu:1": GPU_W[B] * EPOCH_S,  # over rank 1's own window
            },
        )
        epochs.append(record)
        windows.append(
            {"type": "window", "epoch": e, "rank": 1, **_window(e, SHIFT_S),
             "energy_j": {"gpu:1": GPU_W[B] * EPOCH_S}}
        )  # fmt: skip
    end = T0 + 10.0 + EPOCHS * (EPOCH_S + GAP_S)
    session_s = end - T0 - 5
    footer = {  # rank 0's own meter: names without the rank prefix
        "type": "footer", "status": "completed", "ended_at_unix_s": end, "duration_s": session_s,
        "energy_j": {"gpu:0": GPU_W[A] * session_s, "cpu:model": 1.0},
    }  # fmt: skip
    main = _write(tmp_path / "r0.carbon.jsonl", [header, *epochs, footer])
    witness = _write(tmp_path / "own_windows.jsonl", windows)
    main_log = read_run_log(main)
    _recount(main_log)
    logger = _logger_from(main_log)
    return main_log, {1: proof.read_witness(witness)}, logger


def _recount(main: Any) -> None:
    """The run log's cumulative figures from its epochs (as the tracker writes them)."""
    total = 0.0
    for record in main.epochs:
        total += record["energy_kwh"]
        record["cumulative"] = {"energy_kwh": total}


def _logger_from(main: Any) -> dict[str, list]:
    """What nnU-Net's logger holds: the run log's whole-run figures."""
    per_epoch = [r["energy_kwh"] for r in main.epochs]
    cumulative = [r["cumulative"]["energy_kwh"] for r in main.epochs]
    return {
        keys.EPOCH_ENERGY_KWH: per_epoch,
        keys.ENERGY_KWH: cumulative,
        "carbon/tracker_state": [{"energy_kwh": c} for c in cumulative],
    }


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
    assert checks["run_log_holds_sum"]["ok"] and checks["run_log_holds_sum"]["gated"]
    assert checks["gpu_energy_run"]["ratio"] == pytest.approx(1.0, abs=1e-9)
    assert checks["gpu_energy_run"]["per_rank_ratio"] == {
        0: pytest.approx(1.0),
        1: pytest.approx(1.0),
    }
    assert checks["logged_sum_vs_counters"]["ratio"] == pytest.approx(1.0, abs=1e-9)
    assert [r["rank"] for r in result["ranks"]] == [0, 1]
    assert all(r["own_windows"] for r in result["ranks"])
    rank1 = [row["ranks"][1] for row in result["epochs"]]
    assert all(r["start_unix_s"] == pytest.approx(r0["start_unix_s"] + SHIFT_S) for r, r0 in
               zip(rank1, [row["ranks"][0] for row in result["epochs"]], strict=True))  # fmt: skip


def _set_rank1(main, witnesses, logger, joules: float, device: str | None = None) -> None:
    """Rank 1 measured ``joules`` per epoch (in rank 0's log and its witness alike)."""
    if device is not None:
        main.header["sensors"][3]["device"] = device
    for record, window in zip(main.epochs, witnesses[1].windows, strict=True):
        _set_energy(record, {**record["energy_j"], "rank1/gpu:1": joules})
        window["energy_j"]["gpu:1"] = joules
    _recount(main)
    logger.update(_logger_from(main))


def _same_gpu_twice(main, witnesses, logger):
    # rank 1 measures rank 0's GPU: its own figures agree with that GPU's counter; the UUIDs
    # and the logged sum against the GPUs the ranks trained on tell
    _set_rank1(main, witnesses, logger, GPU_W[A] * EPOCH_S, device=f"H200 ({A})")


def _cpu_on_rank_one(main, witnesses, logger):
    main.header["sensors"].append(_sensor("rank1/cpu:model", "cpu", "EPYC", "modelled"))


def _sum_counted_twice(main, witnesses, logger):
    logger[keys.EPOCH_ENERGY_KWH] = [2 * v for v in logger[keys.EPOCH_ENERGY_KWH]]


def _rank_one_energy_lost(main, witnesses, logger):
    # its sensor misses 10% of its GPU (its entries, the witness and nnU-Net's figures agree)
    _set_rank1(main, witnesses, logger, 0.9 * GPU_W[B] * EPOCH_S)


def _witness_disagrees(main, witnesses, logger):
    # the combination lost or altered what rank 1 measured on its own
    for window in witnesses[1].windows:
        window["energy_j"]["gpu:1"] *= 1.01


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
        (
            _rank_one_energy_lost,
            {"gpu_energy_run", "gpu_energy_per_epoch", "logged_sum_vs_counters"},
        ),
        (_witness_disagrees, {"rank_entries_are_ranks_own"}),
    ],  # fmt: skip
)
def test_each_mistake_fails_its_check(tmp_path, mistake, expected):
    main, witnesses, logger = _two_ranks(tmp_path)
    mistake(main, witnesses, logger)
    assert _failed(_analyse(main, witnesses, logger)) == expected


def test_a_run_log_with_rank_zeros_devices_only_fails(tmp_path):
    """What the integration wrote before it used the tracker's combination: rank 0's log holds
    rank 0's devices, nnU-Net's logger the sum of the ranks."""
    main, witnesses, logger = _two_ranks(tmp_path)
    main.header["ranks"] = {"world_size": 1, "combined": False}
    main.header["sensors"] = [
        {**s, "name": s["name"].split("/", 1)[1]}
        for s in main.header["sensors"]
        if s["name"].startswith("rank0/")
    ]
    for record in main.epochs:
        _set_energy(
            record,
            {
                k.split("/", 1)[1]: v
                for k, v in record["energy_j"].items()
                if k.startswith("rank0/")
            },
        )
    failed = _failed(_analyse(main, witnesses, logger))
    assert {"run_log_holds_sum", "one_distinct_gpu_per_rank", "logged_sum_is_sum_of_ranks"} <= (
        failed
    )


def test_an_epoch_without_rank_one_fails(tmp_path):
    main, witnesses, logger = _two_ranks(tmp_path)
    record = main.epochs[1]
    _set_energy(record, {k: v for k, v in record["energy_j"].items() if k != "rank1/gpu:1"})
    _recount(main)
    logger.update(_logger_from(main))
    failed = _failed(_analyse(main, witnesses, logger))
    assert {"run_log_holds_sum", "rank_entries_are_ranks_own", "gpu_energy_run"} <= failed


def test_a_missing_witness_fails_the_own_window_check(tmp_path):
    main, _, logger = _two_ranks(tmp_path)
    result = _analyse(main, {}, logger)
    assert _failed(result) == {"rank_entries_are_ranks_own"}
    assert [r["own_windows"] for r in result["ranks"]] == [True, False]


def test_budget_stop_of_rank_one_must_stop_rank_zero(tmp_path):
    main, witnesses, _ = _two_ranks(tmp_path)
    main.epochs[1:] = []
    main.footer["status"] = "interrupted"
    witnesses[1].windows[1:] = []
    witnesses[1].decisions.append(
        {"type": "decision", "epoch": 0, "should_stop": True, "stop_reason": "energy budget"}
    )
    logger = {keys.EPOCH_ENERGY_KWH: [1e-4]}
    log_text = "carbon_callbacks: stopping after epoch 0: the carbon budget of another rank"
    ok = proof.analyse_budget(main, witnesses, logger, log_text, planned_epochs=3)
    assert ok["checks"]["budget_stop_is_collective"]["ok"]
    main.footer["status"] = "completed"
    bad = proof.analyse_budget(main, witnesses, logger, "", planned_epochs=3)
    detail = bad["checks"]["budget_stop_is_collective"]["detail"]
    assert "not 'interrupted'" in detail and "stopping after epoch 0" in detail
    witnesses[1].decisions[0]["should_stop"] = False
    worse = proof.analyse_budget(main, witnesses, logger, log_text, planned_epochs=3)
    assert (
        "stop decided after epoch(s) []" in worse["checks"]["budget_stop_is_collective"]["detail"]
    )
