"""Replay meter designs on a raw NVML trace (``bench/nvml_trace.py``) against the counter.

    python bench/meter_replay.py nvml_trace.json

Each design is the meter's own arithmetic (``carbon_callbacks/core/meter.py``) run on recorded
readings instead of live ones: a counter value read at time t is the one of the last step
before t, dated at that step (what the step clock does); between counter reads, power samples
are integrated by the trapezoid rule; a mark bridges the last sample to the edge with the power
read at the edge. Designs differ in how often the counter is read, how often power is read and
which power signal is used (NVML's averaged ``nvmlDeviceGetPowerUsage`` or the instantaneous
field). The reference is the counter poller's steps, interpolated at each epoch edge.

Each counter design is also replayed *settled* (meter v0.3): a mark is settled to the counter
interpolated between the steps around it once a read has seen the step after it; an epoch
takes its start settled if it is by the epoch's end, and carries what settling changed of
the marks used before they were settled: earlier ends, and starts of epochs shorter than a
step (the tracker's ``true_up_j``).
"""

from __future__ import annotations

import bisect
import json
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from counter_poller import energy_at  # noqa: E402

from carbon_callbacks.core.meter import SETTLE_SPAN_S  # noqa: E402


@dataclass(frozen=True)
class Design:
    """One meter design: intervals in seconds (``counter_s=None``: sampled power only)."""

    name: str
    counter_s: float | None
    power_s: float
    signal: str  # "avg" or "inst"


DESIGNS = [
    Design("counter 1 s + avg power 0.1 s (v0.1)", 1.0, 0.1, "avg"),
    Design("counter 1 s + instant power 0.1 s", 1.0, 0.1, "inst"),
    Design("counter 1 s + instant power 0.02 s", 1.0, 0.02, "inst"),
    Design("counter 0.5 s + instant power 0.05 s", 0.5, 0.05, "inst"),
    Design("counter 0.2 s + instant power 0.05 s", 0.2, 0.05, "inst"),
    Design("counter every step + avg power", 0.1, 0.1, "avg"),
    Design("counter every step + instant power", 0.1, 0.1, "inst"),
    Design("sampled avg 0.1 s (v0.1)", None, 0.1, "avg"),
    Design("sampled instant 0.1 s", None, 0.1, "inst"),
    Design("sampled instant 0.02 s", None, 0.02, "inst"),
    # the trace's own rate: the field's integral itself, whatever a meter's cadence
    Design("sampled instant 0.005 s", None, 0.005, "inst"),
]


class Trace:
    """Readings of one recorded trace, looked up by unix time."""

    def __init__(self, raw: dict[str, Any]) -> None:
        s = raw["samples"]
        self.t = [row[0] for row in s]
        self.avg = [row[1] for row in s]
        self.inst = [row[2] if row[2] is not None else row[1] for row in s]
        self.step_t = raw["steps"]["times"]
        self.step_e = raw["steps"]["energy_j"]
        self.edges = raw["edges"]

    def power(self, signal: str, t: float) -> float:
        k = max(0, bisect.bisect_right(self.t, t) - 1)
        return (self.avg if signal == "avg" else self.inst)[k]

    def counter(self, t: float) -> tuple[float, float]:
        """(energy J, step time) of the last step at or before ``t``."""
        k = bisect.bisect_right(self.step_t, t) - 1
        return self.step_e[k], self.step_t[k]

    def reference(self, t: float) -> float:
        return energy_at(self.step_t, self.step_e, t)


def replay(trace: Trace, design: Design) -> list[float]:
    """The design's energy (J) at every epoch edge, in edge order (start, end, start, ...)."""
    marks = sorted(t for _, t0, t1 in trace.edges for t in (t0, t1))
    t = trace.step_t[1] + 0.05
    energy, last_t = (trace.counter(t)[0], trace.counter(t)[1]) if design.counter_s else (0.0, t)
    last_p = trace.power(design.signal, t)
    next_counter = t + (design.counter_s or 0.0)
    out: dict[float, float] = {}
    k = 0
    while k < len(marks):
        t_next = t + design.power_s
        while k < len(marks) and marks[k] <= t_next:
            tm = marks[k]
            p = trace.power(design.signal, tm)
            out[tm] = energy + 0.5 * (last_p + p) * (tm - last_t)
            k += 1
        t = t_next
        p = trace.power(design.signal, t)
        if design.counter_s and t >= next_counter - 1e-9:
            energy, last_t = trace.counter(t)
            next_counter = t + design.counter_s
        else:
            energy += 0.5 * (last_p + p) * (t - last_t)
            last_t = t
        last_p = p
    return [out[t] for _, t0, t1 in trace.edges for t in (t0, t1)]


def power_integral(trace: Trace, design: Design) -> Any:
    """B(t): the design's power samples integrated (J, trapezoid), read at ``t`` as a mark is."""
    t0 = trace.step_t[1] + 0.05
    ticks, cum, powers = [t0], [0.0], [trace.power(design.signal, t0)]
    while ticks[-1] < trace.step_t[-1]:
        t = ticks[-1] + design.power_s
        p = trace.power(design.signal, t)
        cum.append(cum[-1] + 0.5 * (powers[-1] + p) * design.power_s)
        ticks.append(t)
        powers.append(p)

    def at(t: float) -> float:
        k = max(0, bisect.bisect_right(ticks, t) - 1)
        return cum[k] + 0.5 * (powers[k] + trace.power(design.signal, t)) * (t - ticks[k])

    return at


def replay_settled(trace: Trace, design: Design, shaped: bool = False) -> list[float]:
    """Per-epoch energy (J) of a counter design with settled marks and the true-up.

    ``shaped``: a mark between counter values further apart than ``SETTLE_SPAN_S`` is settled
    too, to the counter's increase shared out in proportion to the power samples' integral
    (instead of keeping its bridged value).
    """
    assert design.counter_s is not None
    integral = power_integral(trace, design) if shaped else None
    marks = sorted(t for _, t0, t1 in trace.edges for t in (t0, t1))
    bridged = replay(trace, design)  # per edge, in edge order
    by_time = dict(zip([t for _, t0, t1 in trace.edges for t in (t0, t1)], bridged, strict=True))
    # the reads the design makes (at power ticks, every counter_s), and what each returns
    t = trace.step_t[1] + 0.05
    reads: list[tuple[float, float, float]] = []  # (read time, step energy, step time)
    next_counter = t
    while t <= marks[-1] + 1.0:
        if t >= next_counter - 1e-9:
            reads.append((t, *trace.counter(t)))
            next_counter = t + design.counter_s
        t += design.power_s
    read_t = [r[0] for r in reads]

    def settled_at(tm: float, by: float) -> float | None:
        """The mark at ``tm`` settled by reads up to ``by`` (None: not yet)."""
        k = bisect.bisect_left(read_t, tm)
        anchor = trace.counter(tm)  # the meter's anchor: the last step seen before the mark
        k0 = max(0, k - 1)
        anchor = (reads[k0][1], reads[k0][2]) if reads[k0][2] <= tm else anchor
        for read_time, e1, t1 in reads[k:]:
            if read_time > by:
                return None
            if t1 <= tm:
                anchor = (e1, t1)
            else:
                e0, t0 = anchor
                if t1 - t0 > SETTLE_SPAN_S:  # reads too far apart
                    if integral is None:  # the mark stays bridged
                        return by_time[tm]
                    b0, b1 = integral(t0), integral(t1)
                    if b1 > b0:
                        return e0 + (e1 - e0) * (integral(tm) - b0) / (b1 - b0)
                return e0 + (e1 - e0) * (tm - t0) / (t1 - t0)
        return None

    out: list[float] = []
    # marks used before they were settled: (time, value used, sign in the epoch: end +1, start -1)
    unsettled: list[tuple[float, float, int]] = []
    phase_before = None
    for phase, t0, t1 in trace.edges:
        if phase != phase_before:  # each phase is a run of its own: nothing carries over
            unsettled, phase_before = [], phase
        start = settled_at(t0, t1)
        if start is None:
            start = by_time[t0]
            unsettled.append((t0, start, -1))
        carried = 0.0
        keep = []
        for tm, used, sign in unsettled:
            v = settled_at(tm, t1)
            if v is None:
                keep.append((tm, used, sign))
            else:
                carried += sign * (v - used)
        unsettled = keep + [(t1, by_time[t1], +1)]
        out.append(by_time[t1] - start + carried)
    return out


def score(trace: Trace, at_edges: list[float], per_epoch: bool = False) -> dict[str, Any]:
    """Per phase: median and p90 absolute per-epoch error (%), and the phase's sum ratio.

    ``at_edges``: energy at every edge (start, end, ...), or with ``per_epoch`` each epoch's.
    """
    phases: dict[str, dict[str, list[float]]] = {}
    for k, (phase, t0, t1) in enumerate(trace.edges):
        ref = trace.reference(t1) - trace.reference(t0)
        got = at_edges[k] if per_epoch else at_edges[2 * k + 1] - at_edges[2 * k]
        row = phases.setdefault(phase, {"ref": [], "got": []})
        row["ref"].append(ref)
        row["got"].append(got)
    result = {}
    for phase, row in phases.items():
        errs = sorted(abs(g / r - 1) * 100 for g, r in zip(row["got"], row["ref"], strict=True))
        result[phase] = {
            "first_ratio": row["got"][0] / row["ref"][0],
            "median_abs_err_pct": statistics.median(errs),
            "p90_abs_err_pct": errs[int(0.9 * (len(errs) - 1))],
            "sum_ratio": sum(row["got"]) / sum(row["ref"]),
        }
    return result


def main(paths: list[str]) -> int:
    for path in paths:
        with open(path) as fh:
            trace = Trace(json.load(fh))
        print(path)
        for design in DESIGNS:
            rows = [(design.name, score(trace, replay(trace, design)))]
            if design.counter_s is not None:
                settled = replay_settled(trace, design)
                rows.append(("  settled + true-up", score(trace, settled, per_epoch=True)))
                shaped = replay_settled(trace, design, shaped=True)
                shaped_score = score(trace, shaped, per_epoch=True)
                rows.append(("  + power-shaped beyond 0.15 s", shaped_score))
            for name, res in rows:
                cells = "; ".join(
                    f"{ph}: {r['median_abs_err_pct']:.2f}% [{r['p90_abs_err_pct']:.1f}] "
                    f"sum {r['sum_ratio']:.4f} first {r['first_ratio']:.3f}"
                    for ph, r in res.items()
                )
                print(f"  {name:40s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
