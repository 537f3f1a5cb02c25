"""``bench/hook_cost.py --smoke``: the hook-pair benchmark runs on the CPU and reports every
variant (the tracker with and without a run log, and predicting at given history lengths; the
Lightning callback's hooks with and without prediction, and the tracker's share inside them) in
microseconds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning.pytorch")

BENCH = Path(__file__).resolve().parent.parent / "bench"
VARIANTS = ("tracker", "tracker + run log", "lightning", "lightning + prediction")


@pytest.fixture()
def hook_cost(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import hook_cost  # noqa: PLC0415 - the bench folder is on the path only here

    yield hook_cost
    sys.modules.pop("hook_cost", None)


def test_smoke_run_times_every_variant(hook_cost, tmp_path, capsys):
    out = tmp_path / "hook_cost.json"
    assert hook_cost.main(["--smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    for name in VARIANTS:
        assert 0 < result[name]["p10"] <= result[name]["median"] <= result[name]["p90"]
        assert f"{name:24s} median" in printed
    assert result["tracker"]["n"] == result["tracker + run log"]["n"] == result["pairs"]
    assert result["history"] == [3, 10]
    for n in result["history"]:
        name = f"tracker + prediction at {n} epochs"
        assert result[name]["n"] == result["window"]
        assert f"{name:40s} median" in printed
    for name in ("lightning", "lightning + prediction"):
        assert result[name]["n"] == result["epochs"] - 1  # the first epoch starts the tracker
        inside = result[f"{name}: in the tracker"]
        assert inside["n"] == result[name]["n"]
        assert inside["median"] < result[name]["median"]  # the tracker runs inside the hooks


def test_summary_is_in_microseconds(hook_cost):
    stats = hook_cost.summary_us([3e-6, 1e-6, 2e-6])
    assert stats["median"] == pytest.approx(2.0)
    assert stats["p10"] <= 2.0 <= stats["p90"] and stats["n"] == 3
