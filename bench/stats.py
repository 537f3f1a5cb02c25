"""Pure arithmetic for the benchmarks: a tracker's windows against a reference, and summaries.

No framework and no NVML here (``tests/test_bench_harness.py`` checks it on made-up numbers). A
*window* is one epoch as a tracker saw it: its own start and end (unix s) and the GPU energy it
reported (J). The reference gives the energy over any span (:func:`bench.poller.window_j`). A
*run* is a dict written by ``bench/peers.py`` or ``bench/overhead.py``; its keys are described
in :func:`summarise_runs`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any


def gpu_j(energy_j: Mapping[str, float]) -> float:
    """GPU joules in a run log's ``energy_j`` (``gpu:0``, ``rank1/gpu:1``, ``gpu:sim`` ...)."""
    return sum(v for k, v in energy_j.items() if k.rsplit("/", 1)[-1].startswith("gpu"))


def settling_gpu_j(phases: Iterable[Mapping[str, Any]]) -> float:
    """GPU joules of a run log's ``settling`` records: the last epoch's edges, settled as the
    tracker stopped and counted in the run's totals (0.0 when there is none)."""
    return sum(gpu_j(p["energy_j"]) for p in phases if p.get("name") == "settling")


def compare_windows(
    windows: Iterable[tuple[float, float, float]],
    reference_j: Callable[[float, float], float],
) -> list[dict[str, float | None]]:
    """Per window: ``start_unix_s``, ``end_unix_s``, ``tracker_j``, ``reference_j``, ``ratio``.

    ``ratio`` is tracker / reference, or None where the reference is not positive.
    """
    rows: list[dict[str, float | None]] = []
    for start_unix_s, end_unix_s, tracker_j in windows:
        ref_j = reference_j(start_unix_s, end_unix_s)
        rows.append(
            {
                "start_unix_s": start_unix_s,
                "end_unix_s": end_unix_s,
                "tracker_j": tracker_j,
                "reference_j": ref_j,
                "ratio": tracker_j / ref_j if ref_j > 0 else None,
            }
        )
    return rows


def sum_ratio(rows: Sequence[Mapping[str, Any]], first: int = 0) -> float | None:
    """Sum of tracker J over sum of reference J, windows ``first..``; None if no reference."""
    part = rows[first:]
    ref_j = sum(r["reference_j"] for r in part)
    if not part or ref_j <= 0:
        return None
    return sum(r["tracker_j"] for r in part) / ref_j


def p90(sorted_values: Sequence[float]) -> float:
    """The 90th percentile of sorted values, interpolated linearly (numpy's default method).

    The docs' earlier tables took the lower neighbour (``int(0.9 * (n - 1))``); with tens of
    values the two differ by a fraction of the gap between neighbours.
    """
    position = 0.9 * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def error_stats(ratios: Iterable[float | None]) -> dict[str, float | int | None]:
    """``n``, ``median_ratio``, ``median_abs_err_pct``, ``p90_abs_err_pct``, ``max_abs_err_pct``.

    None values (no reference) are left out; with none left, the figures are None.
    """
    values = [r for r in ratios if r is not None]
    if not values:
        return {
            "n": 0,
            "median_ratio": None,
            "median_abs_err_pct": None,
            "p90_abs_err_pct": None,
            "max_abs_err_pct": None,
        }
    errors_pct = sorted(abs(r - 1.0) * 100.0 for r in values)
    return {
        "n": len(values),
        "median_ratio": statistics.median(values),
        "median_abs_err_pct": statistics.median(errors_pct),
        "p90_abs_err_pct": p90(errors_pct),
        "max_abs_err_pct": errors_pct[-1],
    }


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """``median``, ``min``, ``max`` and ``values`` (None values left out; figures None if none)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(kept), "min": min(kept), "max": max(kept), "values": kept}


def steady_epoch_s(epoch_s: Sequence[float]) -> float | None:
    """Median epoch time in s over epochs 2..n (the first carries the start-up), or None."""
    return statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else None


def added_time_pct(base_s: float | None, with_s: float | None) -> float | None:
    """Added time in % of ``base_s``; None if either is missing."""
    if base_s is None or with_s is None or base_s <= 0:
        return None
    return (with_s - base_s) / base_s * 100.0


def summarise_runs(runs: Sequence[Mapping[str, Any]], base_mode: str = "none") -> dict[str, Any]:
    """Per mode (tracker), the figures of ``bench/peers.py``'s table.

    Each run has ``mode``, ``kind`` (``"steady"`` or ``"short"``), ``rep`` and, unless it has
    ``error``, ``epoch_s`` (wall time per epoch) and, for a tracker, ``epochs`` (rows of
    :func:`compare_windows`). Per mode and kind:

    - ``per_epoch``: :func:`error_stats` of epochs 2..n, pooled over repetitions;
    - ``all_epochs``: :func:`error_stats` of every epoch, the first included;
    - ``first_epoch``: :func:`error_stats` of the first epoch of each run (it begins from an idle
      GPU: the warm-up), and the ratios themselves;
    - ``run_ratio`` / ``run_ratio_from_epoch_2``: :func:`spread` over repetitions of the sum over
      all epochs (or the run's own ``run_ratio``, where it counts energy outside the epochs) /
      over epochs 2..n;
    - ``added_epoch_time_pct``: :func:`spread` over repetitions of the added median epoch time
      (epochs 2..n) against the ``base_mode`` run of the same kind and repetition;
    - ``errors``: the errors of failed runs.
    """
    modes = list(dict.fromkeys(r["mode"] for r in runs))
    kinds = list(dict.fromkeys(r["kind"] for r in runs))
    base = {
        (r["kind"], r["rep"]): steady_epoch_s(r["epoch_s"])
        for r in runs
        if r["mode"] == base_mode and "epoch_s" in r
    }
    out: dict[str, Any] = {}
    for mode in modes:
        per_kind: dict[str, Any] = {}
        for kind in kinds:
            mine = [r for r in runs if r["mode"] == mode and r["kind"] == kind]
            ok = [r for r in mine if "error" not in r]
            figures: dict[str, Any] = {
                "runs": len(ok),
                "errors": [r["error"] for r in mine if "error" in r],
                "median_epoch_s": spread(steady_epoch_s(r["epoch_s"]) for r in ok),
            }
            if mode != base_mode:
                figures["added_epoch_time_pct"] = spread(
                    added_time_pct(base.get((kind, r["rep"])), steady_epoch_s(r["epoch_s"]))
                    for r in ok
                )
            measured = [r for r in ok if r.get("epochs")]
            if measured:
                first = [r["epochs"][0]["ratio"] for r in measured]
                figures["per_epoch"] = error_stats(
                    row["ratio"] for r in measured for row in r["epochs"][1:]
                )
                figures["all_epochs"] = error_stats(
                    row["ratio"] for r in measured for row in r["epochs"]
                )
                figures["first_epoch"] = {**error_stats(first), "ratios": first}
                figures["run_ratio"] = spread(
                    r["run_ratio"] if "run_ratio" in r else sum_ratio(r["epochs"]) for r in measured
                )
                figures["run_ratio_from_epoch_2"] = spread(
                    sum_ratio(r["epochs"], first=1) for r in measured
                )
            per_kind[kind] = figures
        out[mode] = per_kind
    return out
