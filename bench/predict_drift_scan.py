"""What-if: the prediction interval's coverage and width on the recorded traces under other drift
priors than the predictor's.

    PYTHONPATH=. python bench/predict_drift_scan.py [--json out.json]

For each setting (the drift prior's centre ``q``, its spread in decades, and how far the grid of
drift ratios reaches above 1) the predictor's module constants are set, and every trace of each
set is predicted after 2 and 5 epochs and after every epoch from the second on
(``bench/predict_accuracy.py``'s ``evaluate``). The first row is the predictor as shipped. This
is a sensitivity check, not a fit: the settings are a coarse grid chosen beforehand, and no
constant of the predictor is taken from it.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from predict_accuracy import evaluate, load_trace  # noqa: E402

from carbon_callbacks.core import local_level as model  # noqa: E402

SETS = {
    "GPU": "gpu/*.json",
    "CPU": "*.json",
    "GPU held out": "gpu_heldout*/*.json",
    "CPU held out": "heldout*/*.json",
}
#: (prior centre q, spread in decades, grid decades above q = 1)
SETTINGS = [
    (0.01, 1.0, 0),  # as shipped
    (0.03, 1.0, 0),
    (0.1, 1.0, 0),
    (0.01, 1.5, 0),
    (0.1, 1.0, 1),
    (0.3, 1.0, 1),
]


def _grid(top: int) -> tuple[float, ...]:
    return (0.0,) + tuple(10 ** (k / 2) for k in range(-8, 1 + 2 * top))


def scan(sets: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per setting and set: coverage after 2, 5 and every epoch; median width after 5."""
    shipped = (model.DRIFT_PRIOR_Q, model.DRIFT_PRIOR_DECADES, model.DRIFT_Q_GRID)
    rows = []
    try:
        for q, decades, top in SETTINGS:
            model.DRIFT_PRIOR_Q, model.DRIFT_PRIOR_DECADES = q, decades
            model.DRIFT_Q_GRID = _grid(top)
            for name, traces in sets.items():
                every = [
                    r
                    for t in traces
                    for r in evaluate(t, list(range(2, len(t["epochs"]))))
                    if "error" in r
                ]
                after5 = [r for r in every if r["after"] == 5]
                rows.append(
                    {
                        "q": q,
                        "decades": decades,
                        "grid_top_q": model.DRIFT_Q_GRID[-1],
                        "set": name,
                        "after_2": _share([r for r in every if r["after"] == 2]),
                        "after_5": _share(after5),
                        "every_epoch": _share(every),
                        "width_after_5": statistics.median(r["width"] for r in after5),
                    }
                )
    finally:
        model.DRIFT_PRIOR_Q, model.DRIFT_PRIOR_DECADES, model.DRIFT_Q_GRID = shipped
    return rows


def _share(rows: list[dict[str, Any]]) -> str:
    return f"{sum(r['covered'] for r in rows)}/{len(rows)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sets = {
        name: [load_trace(p) for p in sorted(glob.glob(str(HERE / "traces" / pattern)))]
        for name, pattern in SETS.items()
    }
    rows = scan(sets)
    print("| q | decades | grid up to | set | after 2 | after 5 | every epoch | width after 5 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['q']:g} | {r['decades']:g} | {r['grid_top_q']:g} | {r['set']} | {r['after_2']} "
            f"| {r['after_5']} | {r['every_epoch']} | {100 * r['width_after_5']:.1f} % |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
