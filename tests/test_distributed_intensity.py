"""Carbon intensity under data parallelism: rank 0 asks, every rank applies rank 0's values.

Real gloo process groups on the CPU (as in ``test_distributed.py``) against the loopback
Energi Data Service stand-in of ``fake_intensity_api.py``. Every rank is given its *own* base
URL (``/rank<r>``), and the ranks' own sources would answer differently, so a rank that asked,
or that applied its own value, shows in the request log and in its records. Each rank keeps
every record it would write (only rank 0 writes a run log) for the comparisons.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from fake_intensity_api import FakeApi, Response, eds_handler, eds_records

from carbon_callbacks.core.intensity.base import IntensityEstimate, IntensityProvider

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::carbon_callbacks.core.events.CarbonCallbacksWarning"
)

#: Power of each rank's (simulated) GPU, W: 1 kWh per second, so CO2 figures are large.
GPU_W = 3.6e6
#: The CO2 budget: about 2.5 epochs of two such GPUs for 0.1 s at Sweden's annual intensity
#: (35 g/kWh), less than one epoch at Poland's (589 g/kWh).
BUDGET_G = 2.5 * 2 * 0.1 * 35.0
#: Environment a rank may inherit that would change the resolution under test.
_ENV = (
    "CARBON_CALLBACKS_OFFLINE",
    "CARBON_CALLBACKS_ZONE",
    "CARBON_CALLBACKS_INTENSITY_G_PER_KWH",
    "CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "http_proxy",
    "HTTP_PROXY",
    "ALL_PROXY",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RaisingProvider(IntensityProvider):
    """A provider whose every answer fails (rank 0's source breaking inside the tracker)."""

    zone = "DK"

    def intensity_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate:
        raise RuntimeError("source broke")

    def forecast_over(self, start_unix_s: float, end_unix_s: float) -> IntensityEstimate | None:
        raise RuntimeError("source broke")


def _settings(scenario: str, rank: int, url: str | None) -> dict[str, Any]:
    """Each rank's own settings: what it would use if it did not follow rank 0."""
    if scenario in ("live", "http500"):
        return {
            "zone": "DK1",
            "live_intensity": True,
            "_endpoints": {"energidataservice_base_url": f"{url}/rank{rank}"},
        }
    if scenario == "budget":  # offline, with live settings that must stay unused
        return {
            "zone": ["SE", "PL"][rank],
            "offline": True,
            "live_intensity": True,
            "_endpoints": {"energidataservice_base_url": f"{url}/rank{rank}"},
            "budget_g": BUDGET_G,
            "budget_policy": "stop-when-spent",
        }
    if scenario == "raises":
        from carbon_callbacks.core.intensity.static import UserIntensityProvider

        return {"intensity": _RaisingProvider() if rank == 0 else UserIntensityProvider(999.0)}
    raise ValueError(scenario)


def _worker(rank: int, world: int, port: int, out_dir: str, params: dict[str, Any]) -> None:
    from power_traces import ConstantCounterSensor

    from carbon_callbacks.core.tracker import CarbonTracker

    for name in _ENV:
        os.environ.pop(name, None)
    os.environ["CARBON_CALLBACKS_HOST"] = f"host{rank}"  # every rank a host leader
    # like Lightning's launcher: rank 0 builds its tracker before the process group exists and
    # knows nothing of ranks; the others see WORLD_SIZE/RANK in their environment
    if rank > 0:
        os.environ.update(WORLD_SIZE=str(world), RANK=str(rank))
    if params["scenario"] == "http500":  # the client's retries, with waits of 10 ms, not 1-2 s
        from carbon_callbacks.core.intensity import http, resolve

        resolve.HttpClient = functools.partial(http.HttpClient, backoff_s=0.01)  # type: ignore[misc]
    tracker = CarbonTracker(
        epochs=params["epochs"],
        sensors=[ConstantCounterSensor("gpu:0", GPU_W)],
        log_dir=out_dir,
        interval_s=0.05,
        verbose=0,
        epochs_before_pred=1,
        distributed_timeout_s=5.0,
        **_settings(params["scenario"], rank, params.get("url")),
    )
    deferred = type(tracker.intensity).__name__
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    records: list[dict[str, Any]] = []
    write = tracker._write

    def keep(record: dict[str, Any]) -> None:
        records.append(record)
        write(record)

    tracker._write = keep  # type: ignore[method-assign]
    tracker.start()
    if rank == 0 and hasattr(tracker.intensity, "wait_ready"):
        assert tracker.intensity.wait_ready(5.0)  # rank 0's first refresh is in
    stops: list[bool] = []
    metrics: list[dict[str, float]] = []
    for _ in range(params["epochs"]):  # every epoch, whatever was decided: no rank waits
        tracker.epoch_start()
        time.sleep(params["sleep_s"])
        metrics.append(tracker.epoch_end())
        stops.append(tracker.should_stop)
    tracker.stop()
    result = {
        "rank": rank,
        "built": deferred,
        "records": [r for r in records if r["type"] in ("epoch", "prediction", "budget")],
        "metrics": metrics,
        "stops": stops,
        "stop_reason": tracker.stop_reason,
        "totals": tracker.totals(),
        "events": [e.kind for e in tracker.events.events],
    }
    Path(out_dir, f"result_{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _spawn(out: Path, world: int, params: dict[str, Any]) -> dict[int, dict[str, Any]]:
    mp.spawn(_worker, args=(world, _free_port(), str(out), params), nprocs=world, join=True)
    return {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in out.glob("result_*.json")}


def _run_log(out: Path) -> Any:
    from carbon_callbacks.core.runlog import read_run_log

    (path,) = out.glob("*.carbon.jsonl")  # rank 0's, the only one
    return read_run_log(path)


def _by_type(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in result["records"] if r["type"] == kind]


def _slots() -> tuple[float, list[dict], list[dict], list[dict]]:
    """Measured values up to the current 5-minute slot, forecasts from it on; and what another
    rank's source would answer (other values)."""
    now = time.time()
    t0 = now - now % 300
    measured = eds_records(t0 - 900, [150, 140, 130])
    forecast = eds_records(t0, [90, 80, 70, 60])
    other = eds_records(t0 - 900, [500, 500, 500])
    return t0, measured, forecast, other


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Three ranks, live Energi Data Service intensity: rank 0's source answers 150..60,
    the others' would answer 500."""
    _, measured, forecast, other = _slots()
    api = FakeApi()
    rank0 = eds_handler({"CO2Emis": measured, "CO2EmisProg": forecast})
    others = eds_handler({"CO2Emis": other, "CO2EmisProg": other})
    api.route(r"^/rank0/dataset/", rank0)
    api.route(r"^/rank\d/dataset/", others)
    out = tmp_path_factory.mktemp("live")
    try:
        results = _spawn(out, 3, {"scenario": "live", "url": api.url, "epochs": 3, "sleep_s": 0.1})
    finally:
        api.close()
    return results, api, out


def test_only_rank_zero_asks_the_live_source(live_run):
    results, api, out = live_run
    assert len(api.hits(r"^/rank0/dataset/CO2Emis$")) >= 1
    assert len(api.hits(r"^/rank0/dataset/CO2EmisProg$")) >= 1
    assert api.hits(r"^/rank[12]/") == []  # the other ranks never asked
    # every rank put its source off until start(), when the ranks were known: rank 0 started
    # it, the others started nothing
    assert [results[r]["built"] for r in range(3)] == ["DeferredLiveProvider"] * 3
    for r in (1, 2):
        assert not any(k.startswith("intensity_live") for k in results[r]["events"])
    log = _run_log(out)
    assert log.header["ranks"]["intensity_from_rank"] == 0
    kinds = [e["kind"] for e in log.events]
    assert kinds.count("intensity_live_started") == 1
    assert kinds.count("intensity_from_rank_zero") == 1


def test_every_rank_records_rank_zero_intensity_co2_and_totals(live_run):
    results, _, out = live_run
    lead = results[0]
    epochs = _by_type(lead, "epoch")
    assert len(epochs) == 3
    for rec in epochs:  # rank 0's own source: live values, not the others' 500
        assert rec["intensity"]["intensity_g_per_kwh"] < 200
        assert "Energi Data Service" in rec["intensity"]["source"]
        assert rec["intensity"]["kind"] in ("measured", "forecast", "mixed")
    for r in (1, 2):
        other = results[r]
        for mine, theirs in zip(_by_type(other, "epoch"), epochs, strict=True):
            for key in ("intensity", "co2_g", "energy_kwh", "duration_s", "start_unix_s"):
                assert mine[key] == theirs[key], (r, key)
            assert mine["cumulative"] == theirs["cumulative"]
        assert other["metrics"] == lead["metrics"]
        assert other["totals"] == lead["totals"]
        # the prediction too, with the forecast rank 0 applied
        assert _by_type(other, "prediction") == _by_type(lead, "prediction")
    predictions = _by_type(lead, "prediction")
    assert len(predictions) == 3
    assert all(p["intensity"]["kind"] == "forecast" for p in predictions)
    logged = _run_log(out).epochs
    assert [e["co2_g"] for e in logged] == [e["co2_g"] for e in epochs]


def test_a_co2_budget_stops_every_rank_at_the_same_epoch(tmp_path):
    """Offline: each rank's own zone differs (SE low, PL high): rank 1 alone would stop at
    epoch 0; with rank 0's intensity both stop when rank 0's budget is spent."""
    from carbon_callbacks.core.intensity.static import zone_value

    api = FakeApi()  # the live settings point here; offline, nothing may ask
    try:
        results = _spawn(tmp_path, 2, {"scenario": "budget", "url": api.url, "epochs": 5,
                                       "sleep_s": 0.1})  # fmt: skip
    finally:
        api.close()
    assert api.requests == []
    lead, other = results[0], results[1]
    epochs = _by_type(lead, "epoch")
    se = zone_value("SE").intensity_g_per_kwh
    assert all(e["intensity"]["zone"] == "SE" for e in epochs)
    assert [e["intensity"] for e in _by_type(other, "epoch")] == [e["intensity"] for e in epochs]
    cumulative = [e["cumulative"]["co2_g"] for e in epochs]
    first_stop = next(i for i, g in enumerate(cumulative) if g >= BUDGET_G)
    assert first_stop >= 1  # SE's value spends the budget later...
    pl_epoch0_g = epochs[0]["energy_kwh"] * zone_value("PL").intensity_g_per_kwh
    assert pl_epoch0_g >= BUDGET_G > epochs[0]["energy_kwh"] * se  # ...than PL's alone would
    expected = [i >= first_stop for i in range(5)]
    assert lead["stops"] == other["stops"] == expected
    assert lead["stop_reason"] == other["stop_reason"] and "spent" in lead["stop_reason"]
    assert _by_type(other, "budget") == _by_type(lead, "budget")


@pytest.mark.parametrize("failure", ["http500", "raises"])
def test_a_failing_rank_zero_source_is_recorded_once_and_followed(tmp_path, failure):
    """Rank 0's source fails (HTTP 500 at the live API; or the provider raises inside the
    tracker); rank 1's own would answer. Rank 1 carries rank 0's labelled fallback."""
    _, measured, forecast, _ = _slots()
    api = FakeApi()
    api.route(r"^/rank0/", Response(500, {"error": "internal"}))
    api.route(r"^/rank1/dataset/", eds_handler({"CO2Emis": measured, "CO2EmisProg": forecast}))
    try:
        results = _spawn(tmp_path, 2, {"scenario": failure, "url": api.url, "epochs": 2,
                                       "sleep_s": 0.05})  # fmt: skip
    finally:
        api.close()
    assert api.hits(r"^/rank1/") == []
    lead, other = results[0], results[1]
    events = [e["kind"] for e in _run_log(tmp_path).events]
    expected_event = "intensity_live_error" if failure == "http500" else "intensity_failed"
    assert events.count(expected_event) == 1
    assert expected_event not in other["events"]
    epochs = _by_type(lead, "epoch")
    for rec in epochs:
        assert rec["intensity"]["kind"] == "annual_average"
        assert rec["intensity"]["zone"] in ("DK", "DK1")
    if failure == "http500":  # the live provider's own label for the gap
        assert epochs[0]["intensity"]["segments"][0]["note"] == "no live value yet"
    assert [e["intensity"] for e in _by_type(other, "epoch")] == [e["intensity"] for e in epochs]
    assert [e["co2_g"] for e in _by_type(other, "epoch")] == [e["co2_g"] for e in epochs]
    assert other["totals"] == lead["totals"]
