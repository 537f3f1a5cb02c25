"""bench/predict_discrepancy_scan.py: the widening it applies, on a recorded trace."""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_a_larger_share_widens_every_interval_and_zero_leaves_the_predictor_as_is(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import predict_discrepancy_scan as scan  # noqa: PLC0415 - the bench folder is on the path only here

    trace = scan.load_trace(BENCH / "traces" / "gpu_loaded" / "unet-w48-s96-b128-h100.json")
    rows = scan.predictions([trace])
    assert len(rows) == len(trace["epochs"]) - 2
    for row in rows:
        covered, width = scan.widened(row, 0.0)
        assert covered == row["covered"]
        assert abs(width - row["width"]) < 1e-12
        widths = [scan.widened(row, share)[1] for share in (0.0, 0.02, 0.1)]
        assert widths[0] < widths[1] < widths[2]
    table = scan.scan({"one": [trace]})
    assert [r["share"] for r in table] == list(scan.SHARES)
    hits = [int(r["every_epoch"].split("/")[0]) for r in table]
    assert hits == sorted(hits)  # wider intervals never cover fewer cases
