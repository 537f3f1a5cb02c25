"""Each mark the meter answers, against NVML's counter at the same instant (a diagnostic).

A mark's energy is the last counter value the meter holds, carried to the mark by power
samples. Its error against the counter read independently (``bench/counter_poller.py``,
linearly interpolated between the counter's steps) tells where an epoch's error comes from: a
bias at epoch starts, at epoch ends, or in both.

    from mark_trace import install, analyse
    install(records)            # before the tracker starts, in every process that measures
    ...                         # training
    analyse(records, steps, sensor_prefix="gpu:")   # rank 0, once the pollers have stopped

``records`` gets one dict per mark: ``label`` (``start``, ``epoch_start``, ``epoch_end``,
``other``), ``unix_s``, ``energy_j`` (cumulative, per sensor, as the meter answered) and
``settled_j`` (the same snapshot's values once the meter settled them: read when the records
are serialised). ``anchors`` (a second list, optional) gets every counter value the meter
dated at its step: sensor name, unix time of the step, cumulative J.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from counter_poller import energy_at

from carbon_callbacks.core.meter import Meter
from carbon_callbacks.core.tracker import CarbonTracker

_label = threading.local()


def install(records: list[dict[str, Any]], anchors: list[list[Any]] | None = None) -> None:
    """Record every mark the meter answers in this process, labelled by the tracker's hook."""
    original_mark = Meter.mark
    original_settle = Meter._settle
    unix_minus_mono = time.time() - time.monotonic()

    def settle(state: Any, t: float, energy_j: float) -> None:
        if anchors is not None:
            anchors.append([state.sensor.info.name, t + unix_minus_mono, energy_j])
        original_settle(state, t, energy_j)

    original_start, original_end = CarbonTracker.epoch_start, CarbonTracker._epoch_end

    def mark(self: Meter) -> Any:
        snap = original_mark(self)
        records.append(
            {
                "label": getattr(_label, "value", None) or ("start" if not records else "other"),
                "unix_s": snap.time_unix_s,
                "energy_j": dict(snap.energy_j),
                "settled_j": snap.energy_j,  # the live dict: settled later by the meter
            }
        )
        return snap

    def labelled(fn: Any, label: str) -> Any:
        def wrapper(self: CarbonTracker, *args: Any, **kwargs: Any) -> Any:
            _label.value = label
            try:
                return fn(self, *args, **kwargs)
            finally:
                _label.value = None

        return wrapper

    Meter.mark = mark  # type: ignore[method-assign]
    Meter._settle = staticmethod(settle)  # type: ignore[method-assign]
    CarbonTracker.epoch_start = labelled(original_start, "epoch_start")  # type: ignore[method-assign]
    CarbonTracker._epoch_end = labelled(original_end, "epoch_end")  # type: ignore[method-assign]


def analyse(
    records: list[dict[str, Any]], steps: tuple[list[float], list[float]], sensor: str
) -> dict[str, Any]:
    """Each mark's error (J) against the counter, relative to the first mark.

    Args:
        records: what :func:`install` collected.
        steps: one GPU's counter steps (unix s, cumulative J) from ``counter_poller``.
        sensor: the meter's name of that GPU (e.g. ``gpu:0``).

    Returns:
        ``per_mark`` (label, unix_s, error_j) and, per label, the median and mean error in J,
        and the mean power (W) over the run, so that an error reads as milliseconds of it.
    """
    times, energy = steps
    marks = [r for r in records if sensor in r["energy_j"] and times[0] <= r["unix_s"] <= times[-1]]
    if len(marks) < 2:
        return {"marks": len(marks)}
    base = marks[0]["energy_j"][sensor] - energy_at(times, energy, marks[0]["unix_s"])
    rows = []
    for r in marks:
        ref = energy_at(times, energy, r["unix_s"])
        settled = r.get("settled_j", {}).get(sensor, r["energy_j"][sensor])
        rows.append({"label": r["label"], "unix_s": r["unix_s"],
                     "error_j": r["energy_j"][sensor] - ref - base,
                     "settled_error_j": settled - ref - base})  # fmt: skip
    span_s = marks[-1]["unix_s"] - marks[0]["unix_s"]
    first, last = (energy_at(times, energy, marks[i]["unix_s"]) for i in (0, -1))
    mean_w = (last - first) / span_s
    out: dict[str, Any] = {"mean_power_w": mean_w, "per_mark": rows}
    for label in sorted({r["label"] for r in rows}):
        errs = [r["error_j"] for r in rows if r["label"] == label]
        settled = [r["settled_error_j"] for r in rows if r["label"] == label]
        out[label] = {
            "n": len(errs),
            "median_error_j": statistics.median(errs),
            "mean_error_j": statistics.fmean(errs),
            "median_error_ms_of_mean_power": 1e3 * statistics.median(errs) / mean_w,
            "settled_mean_error_j": statistics.fmean(settled),
            "settled_median_error_j": statistics.median(settled),
        }
    return out


def anchor_dating(
    anchors: list[list[Any]], steps: tuple[list[float], list[float]], sensor: str
) -> dict[str, Any]:
    """How the meter dated each counter value against the poller's sighting of the same step.

    Values are matched by their increments (the meter's cumulative J and the poller's absolute
    J differ by a constant). Returns the dating offsets (meter minus poller, ms).
    """
    times, energy = steps
    ours = [(t, e) for name, t, e in anchors if name == sensor]
    if len(ours) < 3 or len(times) < 3:
        return {"matched": 0}
    # the constant: the poller's value nearest in time to the meter's first anchor
    k = min(range(len(times)), key=lambda i: abs(times[i] - ours[0][0]))
    candidates = []  # (-matches, |median offset|, offsets) per candidate constant
    for shift in range(-3, 4):
        if not 0 <= k + shift < len(times):
            continue
        const = energy[k + shift] - ours[0][1]
        found = [(t, _find(energy, e + const)) for t, e in ours]
        offs = [1e3 * (t - times[i]) for t, i in found if i is not None]
        if offs:
            candidates.append((-len(offs), abs(statistics.median(offs)), offs))
    if not candidates:
        return {"matched": 0}
    offsets_ms = min(candidates, key=lambda c: (c[0], c[1]))[2]
    offsets_ms.sort()
    # how many steps apart the successive distinct values are (1: every step was read)
    dated = sorted({round(t, 3) for t, _ in ours})
    period_s = statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
    apart: dict[str, int] = {}
    for a, b in zip(dated, dated[1:], strict=False):
        key = str(min(5, max(1, round((b - a) / period_s))))
        apart[key] = apart.get(key, 0) + 1
    return {
        "matched": len(offsets_ms),
        "of": len(ours),
        "steps_apart": dict(sorted(apart.items())),  # "5": five or more
        "median_ms": statistics.median(offsets_ms),
        "p10_ms": offsets_ms[len(offsets_ms) // 10],
        "p90_ms": offsets_ms[(9 * len(offsets_ms)) // 10],
    }


def _find(energy: list[float], value: float) -> int | None:
    """Index of the poller's step with this cumulative J (to 1 mJ), else None."""
    import bisect

    i = bisect.bisect_left(energy, value - 5e-4)
    return i if i < len(energy) and abs(energy[i] - value) <= 5e-4 else None
