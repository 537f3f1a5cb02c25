"""bench/predict_drift_scan.py: a what-if that must leave the predictor as shipped."""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_scan_widens_with_the_prior_and_restores_the_predictor(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import predict_drift_scan as scan  # noqa: PLC0415 - the bench folder is on the path only here

    from carbon_callbacks.core import predict

    shipped = (predict.DRIFT_PRIOR_Q, predict.DRIFT_PRIOR_DECADES, predict.DRIFT_Q_GRID)
    trace = scan.load_trace(BENCH / "traces" / "unet-w8-cpu.json")
    rows = scan.scan({"one": [trace]})
    assert [(r["q"], r["decades"]) for r in rows] == [(q, d) for q, d, _ in scan.SETTINGS]
    assert (predict.DRIFT_PRIOR_Q, predict.DRIFT_PRIOR_DECADES, predict.DRIFT_Q_GRID) == shipped
    widths = {
        r["q"]: r["width_after_5"] for r in rows if r["decades"] == 1.0 and r["grid_top_q"] == 1
    }
    assert widths[0.01] < widths[0.03] < widths[0.1]  # more drift allowed: wider intervals
