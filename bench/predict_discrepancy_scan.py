"""What-if: a model-discrepancy term in the prediction interval, a fixed share of the energy to
come, added in quadrature to the interval's half-widths.

    PYTHONPATH=. python bench/predict_discrepancy_scan.py [--json out.json]

The interval models noise and a slow random-walk drift; a level shift of 10 % in the middle of
a run (another job, a host that slows down) is outside it. The usual remedy is a discrepancy
term: an extra standard deviation of ``c`` x the remaining energy, whatever the epochs seen
say. For each ``c`` of a grid chosen beforehand, every trace is predicted after every epoch
from the second on (``bench/predict_accuracy.py``'s ``evaluate``, the predictor as shipped),
each interval is widened by ``c`` and its coverage and width are counted, per set. This is a
sensitivity check, not a fit: no constant of the predictor is taken from it.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from predict_accuracy import evaluate, load_trace, samples  # noqa: E402

#: set name -> trace patterns under bench/traces (the contended traces are a stress set apart)
SETS: dict[str, tuple[str, ...]] = {
    "GPU, before the sixth session": ("gpu/*.json", "gpu_heldout*/*.json"),
    "CPU": ("*.json", "heldout*/*.json", "hf_step_eval/*.json"),
    "GPU, sixth session (blind)": ("gpu_loaded/*.json", "gpu_hf_step_eval/*.json"),
}
#: discrepancy standard deviations, as a share of the energy to come
SHARES: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1)


def predictions(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every scored prediction from the second epoch on, with the energy measured so far."""
    rows = []
    for trace in traces:
        hist = samples(trace)
        for row in evaluate(trace, list(range(2, len(hist)))):
            if "error" in row:
                row["measured_kwh"] = math.fsum(e.energy_kwh for e in hist[: row["after"]])
                rows.append(row)
    return rows


def widened(row: dict[str, Any], share: float) -> tuple[bool, float]:
    """(covered, width / actual) of ``row``'s interval with the discrepancy ``share`` added."""
    centre, actual = row["predicted_kwh"], row["actual_kwh"]
    extra = share * (centre - row["measured_kwh"])
    low = centre - math.hypot(centre - row["low_kwh"], extra)
    high = centre + math.hypot(row["high_kwh"] - centre, extra)
    low = max(low, row["measured_kwh"])
    return low <= actual <= high, (high - low) / actual


def scan(sets: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per share and set: coverage after 2, after 5 and over every epoch; widths."""
    scored = {name: predictions(traces) for name, traces in sets.items()}
    out = []
    for share in SHARES:
        for name, rows in scored.items():
            entry: dict[str, Any] = {"share": share, "set": name}
            for label, keep in (
                ("after_2", lambda r: r["after"] == 2),
                ("after_5", lambda r: r["after"] == 5),
                ("every_epoch", lambda r: True),
            ):
                results = [widened(r, share) for r in rows if keep(r)]
                entry[label] = f"{sum(c for c, _ in results)}/{len(results)}"
                entry[f"width_{label}"] = statistics.median(w for _, w in results)
            out.append(entry)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sets = {
        name: [
            load_trace(p)
            for pattern in patterns
            for p in sorted(glob.glob(str(HERE / "traces" / pattern)))
        ]
        for name, patterns in SETS.items()
    }
    rows = scan(sets)
    print("| share c | set | after 2 | after 5 (width) | every epoch (width) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['share']:g} | {r['set']} | {r['after_2']} | {r['after_5']} "
            f"({100 * r['width_after_5']:.1f} %) | {r['every_epoch']} "
            f"({100 * r['width_every_epoch']:.1f} %) |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
