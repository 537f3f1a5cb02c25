"""Prediction accuracy on recorded per-epoch traces: this predictor against carbontracker's method.

    PYTHONPATH=. python bench/predict_accuracy.py                      # bench/traces/*.json
    PYTHONPATH=. python bench/predict_accuracy.py a.json b.carbon.jsonl --after 1 2 5 --json o.json

For every trace and every checkpoint n (default after 1, 2 and 5 epochs; a last row pools the
predictions after every epoch from the second on, since the predictor updates every epoch) both
methods see the first n epochs only and predict the energy of the whole run; the error is
``|predicted - actual| / actual`` with ``actual`` the sum of every epoch in the trace:

* ``carbon_callbacks``: :func:`carbon_callbacks.core.predict.predict_run` (measured so far +
  the rest forecast per epoch type, with a 90 % interval; coverage = the share of cases whose
  actual total lies inside it, with the Wilson score 95 % interval of that share, since a few
  traces give a coarse figure (for the row pooling every epoch the cases of one trace are not
  independent, so that interval is too narrow there); width = ``(high - low) / actual``,
  reported as a median);
* ``carbontracker``: the mean of the n monitored epochs times the epoch count (its
  ``predictor.py``, as described in ``../shared/notes/carbontracker.md`` (c)); no interval.

Step-based traces (``planned.total_steps`` set, ``planned.epochs`` null) give the predictor
the total steps and the steps done; carbontracker's method needs an epoch count, so it is given
the trace's real epoch count (an advantage it would not have in such a run).

Inputs are trace files (JSON, format below) or run logs (``*.carbon.jsonl``, converted with
:func:`trace_from_run_log`), so traces recorded on any machine (GPU traces included) can be
added to ``bench/traces/`` or passed on the command line.

Trace format (``"format": "carbon_callbacks.trace/1"``)::

    {"format": ..., "name": str, "description": str,
     "recorded_with": {"sensors": [{"name", "component", "device", "method"}], "pue": float,
                       "command": str, ...},
     "planned": {"epochs": int | null, "total_steps": int | null},
     "epochs": [{"epoch": int, "duration_s": s, "energy_kwh": kWh, "steps": int | null,
                 "phases": [{"name": str, "duration_s": s, "energy_kwh": kWh}]}]}

Energies are kWh including PUE; ``phases`` are the named parts measured inside the epoch
(e.g. ``"validation"``), used by the predictor to forecast periodic work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from carbon_callbacks.core.predict import EpochSample, PhasePlan, PhaseSample, predict_run
from carbon_callbacks.core.runlog import read_run_log

TRACE_FORMAT = "carbon_callbacks.trace/1"
HERE = Path(__file__).resolve().parent


# -- traces --------------------------------------------------------------------------------------
def trace_from_run_log(path: str | Path) -> dict[str, Any]:
    """Convert a run log into a trace: its epoch records with their in-epoch phases."""
    log = read_run_log(path)
    phases_by_epoch: dict[int, list[dict[str, Any]]] = {}
    for phase in log.phases:
        if phase.get("in_epoch") and isinstance(phase.get("epoch"), int):
            phases_by_epoch.setdefault(phase["epoch"], []).append(
                {
                    "name": phase["name"],
                    "duration_s": phase["duration_s"],
                    "energy_kwh": phase["energy_kwh"],
                }
            )
    epochs = [
        {
            "epoch": rec["epoch"],
            "duration_s": rec["duration_s"],
            "energy_kwh": rec["energy_kwh"],
            "steps": rec.get("steps"),
            "phases": phases_by_epoch.get(rec["epoch"], []),
        }
        for rec in log.epochs
    ]
    header = log.header
    planned_epochs = header.get("epochs")
    plans = {  # the last plan per phase (a later one replaces an earlier)
        r["name"]: {
            k: r.get(k)
            for k in ("name", "every_epochs", "every_steps", "at_last_step", "work_ratio", "source")
        }
        for r in log.other
        if r.get("type") == "plan"
    }
    return {
        "format": TRACE_FORMAT,
        "name": log.run_name or log.run_id or Path(path).stem,
        "description": "",
        "recorded_with": {
            "sensors": [
                {k: s.get(k) for k in ("name", "component", "device", "method")}
                for s in header.get("sensors", [])
            ],
            "pue": header.get("pue"),
            "host": header.get("host"),
            "package_version": header.get("package_version"),
            "started_at": header.get("started_at"),
            "run_log": Path(path).name,
        },
        "planned": {
            # what the predictor was told: the epochs and the steps planned (the HF Trainer
            # gives both; the steps decide when they end the run first, as in the tracker)
            "epochs": planned_epochs,
            "total_steps": header.get("total_steps"),
            "phases": list(plans.values()),
        },
        "epochs": epochs,
    }


def load_trace(path: str | Path) -> dict[str, Any]:
    """A trace from a trace file or a run log (``*.carbon.jsonl``)."""
    p = Path(path)
    if p.name.endswith(".carbon.jsonl"):
        return trace_from_run_log(p)
    trace = json.loads(p.read_text())
    if trace.get("format") != TRACE_FORMAT:
        raise ValueError(f"{p}: not a trace (format {trace.get('format')!r}, want {TRACE_FORMAT})")
    return trace


def samples(trace: dict[str, Any]) -> list[EpochSample]:
    """The trace's epochs as predictor input (CO2 = energy: intensity 1 g/kWh)."""
    out = []
    for e in trace["epochs"]:
        phases = tuple(
            PhaseSample(p["name"], p["duration_s"], p["energy_kwh"], p["energy_kwh"])
            for p in e.get("phases", [])
        )
        out.append(
            EpochSample(e["duration_s"], e["energy_kwh"], e["energy_kwh"], e.get("steps"), phases)
        )
    return out


def wilson_interval(hits: int, cases: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``hits / cases`` (Wilson 1927).

    Unlike ``p +- z sqrt(p (1 - p) / n)`` it stays inside [0, 1] and does not collapse to a
    point at 0 or n hits: 8 of 8 gives 0.68-1.00 at 95 %.
    """
    if cases <= 0:
        return 0.0, 1.0
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = hits / cases
    denom = 1 + z * z / cases
    mid = (p + z * z / (2 * cases)) / denom
    half = z / denom * (p * (1 - p) / cases + z * z / (4 * cases * cases)) ** 0.5
    return max(0.0, mid - half), min(1.0, mid + half)


# -- the two methods -----------------------------------------------------------------------------
def carbontracker_prediction(history: list[EpochSample], epochs: int) -> float:
    """carbontracker's predictor: mean kWh of the monitored epochs x the epoch count."""
    return epochs * statistics.fmean(e.energy_kwh for e in history)


def trace_plans(trace: dict[str, Any]) -> list[PhasePlan]:
    """The phase plans the run's framework gave the tracker (``planned.phases``), if any."""
    return [
        PhasePlan(
            p["name"],
            None if p.get("every_epochs") is None else int(p["every_epochs"]),
            p.get("work_ratio"),
            None if p.get("every_steps") is None else int(p["every_steps"]),
            bool(p.get("at_last_step", False)),
        )
        for p in trace.get("planned", {}).get("phases", [])
    ]


def evaluate(
    trace: dict[str, Any], after: list[int], use_plans: bool = True
) -> list[dict[str, Any]]:
    """One row per checkpoint n < the trace's epochs: both methods' errors and the coverage.

    ``use_plans``: give the predictor the trace's phase plans (as the tracker had them)."""
    hist = samples(trace)
    n_total = len(hist)
    actual = sum(e.energy_kwh for e in hist)
    actual_s = sum(e.duration_s for e in hist)
    planned = trace.get("planned", {})
    total_epochs = planned.get("epochs") or None
    total_steps = planned.get("total_steps") or None
    if total_epochs is None and total_steps is None:
        total_epochs = n_total
    rows = []
    for n in after:
        if n >= n_total:
            continue
        seen = hist[:n]
        # steps done, as the tracker had them (for step-based runs and step plans)
        steps_done = sum(e.steps or 0 for e in seen) if any(e.steps for e in seen) else None
        pred = predict_run(
            seen,
            total_epochs=total_epochs,
            intensity_g_per_kwh=1.0,
            total_steps=total_steps,
            steps_done=steps_done,
            plans=trace_plans(trace) if use_plans else (),
        )
        ct = carbontracker_prediction(seen, total_epochs or n_total)
        row: dict[str, Any] = {
            "trace": trace["name"],
            "after": n,
            "epochs": n_total,
            "actual_kwh": actual,
            "carbontracker_kwh": ct,
            "carbontracker_error": abs(ct - actual) / actual,
        }
        if pred is not None:
            row.update(
                {
                    "predicted_kwh": pred.energy_kwh,
                    "low_kwh": pred.energy_kwh_low,
                    "high_kwh": pred.energy_kwh_high,
                    "error": abs(pred.energy_kwh - actual) / actual,
                    "covered": pred.energy_kwh_low <= actual <= pred.energy_kwh_high,
                    # interval width relative to the actual total
                    "width": (pred.energy_kwh_high - pred.energy_kwh_low) / actual,
                    "duration_error": abs(pred.duration_s - actual_s) / actual_s,
                    "duration_covered": pred.duration_s_low <= actual_s <= pred.duration_s_high,
                    "method": pred.method,
                }
            )
        rows.append(row)
    return rows


def summarise(
    rows: list[dict[str, Any]], after: list[int], every: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Median errors and coverage per checkpoint, over those checkpoints, and (``every``) over
    the predictions after every epoch from the second to the last but one."""
    out = []
    groups = [(str(n), [r for r in rows if r["after"] == n]) for n in after]
    groups.append((" + ".join(str(n) for n in after), rows))
    if every:
        groups.append(("every epoch from 2", every))
    for label, sel in groups:
        ours = [r for r in sel if "error" in r]
        if not sel:
            continue
        out.append(
            {
                "after": label,
                "cases": len(sel),
                "median_error": statistics.median(r["error"] for r in ours) if ours else None,
                "max_error": max(r["error"] for r in ours) if ours else None,
                "coverage": sum(r["covered"] for r in ours) / len(ours) if ours else None,
                "covered": sum(r["covered"] for r in ours),
                "scored": len(ours),
                "coverage_wilson95": (
                    wilson_interval(sum(r["covered"] for r in ours), len(ours)) if ours else None
                ),
                "median_width": statistics.median(r["width"] for r in ours) if ours else None,
                "carbontracker_median_error": statistics.median(
                    r["carbontracker_error"] for r in sel
                ),
                "carbontracker_max_error": max(r["carbontracker_error"] for r in sel),
                "duration_median_error": (
                    statistics.median(r["duration_error"] for r in ours) if ours else None
                ),
                "duration_coverage": (
                    sum(r["duration_covered"] for r in ours) / len(ours) if ours else None
                ),
            }
        )
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _coverage(s: dict[str, Any]) -> str:
    """``87.5 % (7/8; 53-98 %)``: the share, the count and its Wilson 95 % interval."""
    if s["coverage"] is None:
        return "n/a"
    low, high = s["coverage_wilson95"]
    return (
        f"{100 * s['coverage']:.1f} % ({s['covered']}/{s['scored']}; "
        f"{100 * low:.0f}-{100 * high:.0f} %)"
    )


def markdown(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> str:
    """The tables for docs/benchmarks.md."""
    lines = [
        "| after epochs | cases | energy: median error (this) | max error (this) "
        "| interval coverage (n; Wilson 95 %) | median interval width "
        "| median error (carbontracker) "
        "| max error (carbontracker) | duration: median error (this) | interval coverage |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['after']} | {s['cases']} | {_pct(s['median_error'])} | {_pct(s['max_error'])} "
            f"| {_coverage(s)} | {_pct(s['median_width'])} "
            f"| {_pct(s['carbontracker_median_error'])} "
            f"| {_pct(s['carbontracker_max_error'])} | {_pct(s['duration_median_error'])} "
            f"| {_pct(s['duration_coverage'])} |"
        )
    lines += [
        "",
        "| trace | after | actual kWh | this: predicted [interval] | error | width "
        "| carbontracker error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = (
            f"{r['predicted_kwh']:.3g} [{r['low_kwh']:.3g} .. {r['high_kwh']:.3g}]"
            + ("" if r["covered"] else " (missed)")
            if "error" in r
            else "none"
        )
        lines.append(
            f"| {r['trace']} | {r['after']} | {r['actual_kwh']:.3g} | {ours} "
            f"| {_pct(r.get('error'))} | {_pct(r.get('width'))} "
            f"| {_pct(r['carbontracker_error'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prediction accuracy on recorded traces.")
    parser.add_argument("paths", nargs="*", help="trace files or run logs (default bench/traces)")
    parser.add_argument("--after", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--json", default=None, help="also write rows and summary here")
    parser.add_argument(
        "--no-plans", action="store_true", help="leave out the phase plans traces carry"
    )
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.paths] or sorted((HERE / "traces").glob("*.json"))
    if not paths:
        print("no traces found", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    every: list[dict[str, Any]] = []
    for path in paths:
        trace = load_trace(path)
        rows += evaluate(trace, args.after, not args.no_plans)
        every += evaluate(trace, list(range(2, len(trace["epochs"]))), not args.no_plans)
    summary = summarise(rows, args.after, every)
    print(markdown(rows, summary))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "summary": summary, "every": every}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
