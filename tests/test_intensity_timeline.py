"""Time-weighting of published intensity values over a window: arithmetic and labels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_callbacks.core.intensity.base import IntensityEstimate
from carbon_callbacks.core.intensity.static import zone_value
from carbon_callbacks.core.intensity.timeline import (
    MAX_SEGMENTS,
    IntensityPoint,
    Timeline,
    weigh,
)

ANNUAL = IntensityEstimate(150.0, "DK", "annual table", basis="lifecycle", year=2024)


def pt(start, end, value, kind="measured", source="src", fetched=0.0):
    return IntensityPoint(start, end, value, kind, source, "direct", fetched)


def over(points, a, b, **kw):
    tl = Timeline()
    tl.update(points)
    before, inside = tl.window(a, b)
    return weigh(inside, a, b, zone="DK1", fallback=ANNUAL, before=before, **kw)


def test_window_across_a_change_is_time_weighted():
    points = [pt(0, 300, 100.0), pt(300, 600, 200.0), pt(600, 900, 400.0)]
    est = over(points, 150, 450)
    # 150 s at 100 and 150 s at 200
    assert est.intensity_g_per_kwh == pytest.approx((150 * 100 + 150 * 200) / 300)
    assert [(s.start_unix_s, s.end_unix_s, s.intensity_g_per_kwh) for s in est.segments] == [
        (150, 300, 100.0),
        (300, 450, 200.0),
    ]
    assert est.kind == "measured" and est.basis == "direct"
    assert (est.start_unix_s, est.end_unix_s) == (150, 450)
    # the published slot of each value is kept
    assert [(s.value_start_unix_s, s.value_end_unix_s) for s in est.segments] == [
        (0, 300),
        (300, 600),
    ]


def test_uneven_shares():
    points = [pt(0, 300, 90.0), pt(300, 600, 30.0)]
    est = over(points, 290, 590)  # 10 s at 90, 290 s at 30
    assert est.intensity_g_per_kwh == pytest.approx((10 * 90 + 290 * 30) / 300)


def test_window_inside_one_slot_and_instant():
    points = [pt(0, 300, 120.0), pt(300, 600, 60.0)]
    inside = over(points, 10, 20)
    assert inside.intensity_g_per_kwh == 120.0 and len(inside.segments) == 1
    instant = over(points, 300, 300)
    assert instant.intensity_g_per_kwh == 60.0  # the slot that starts at that instant
    assert instant.kind == "measured"


def test_gap_is_held_then_falls_back_and_labelled():
    points = [pt(0, 300, 100.0), pt(1200, 1500, 300.0)]
    est = over(points, 0, 1500, max_hold_s=600)
    spans = [(s.start_unix_s, s.end_unix_s, s.intensity_g_per_kwh, s.note) for s in est.segments]
    assert spans == [
        (0, 300, 100.0, ""),
        (300, 900, 100.0, "held: last value before a gap"),
        (900, 1200, 150.0, "no live value for this time"),
        (1200, 1500, 300.0, ""),
    ]
    assert est.intensity_g_per_kwh == pytest.approx((900 * 100 + 300 * 150 + 300 * 300) / 1500)
    assert est.kind == "mixed"  # measured and annual average
    assert est.basis == "unknown"  # direct and lifecycle mixed
    assert "annual table" in est.source and "src" in est.source


def test_no_points_at_all_is_the_fallback_labelled():
    est = over([], 100, 200, gap_note="no live value yet")
    assert est.intensity_g_per_kwh == ANNUAL.intensity_g_per_kwh
    assert est.kind == "annual_average"
    assert est.segments[0].note == "no live value yet"


def test_value_before_the_window_is_held_into_it():
    est = over([pt(0, 300, 80.0)], 400, 500, max_hold_s=3600)
    assert est.intensity_g_per_kwh == 80.0
    assert est.segments[0].note.startswith("held")


def test_measured_replaces_forecast_and_newer_forecast_replaces_older():
    tl = Timeline()
    tl.update(
        [pt(0, 300, 500.0, "forecast", fetched=1), pt(300, 600, 500.0, "forecast", fetched=1)]
    )
    assert tl.update([pt(0, 300, 100.0, "measured", fetched=2)]) == 1
    assert tl.update([pt(0, 300, 999.0, "forecast", fetched=3)]) == 0  # never over a measurement
    assert tl.update([pt(300, 600, 250.0, "forecast", fetched=3)]) == 1
    values = [(p.start_unix_s, p.intensity_g_per_kwh, p.kind) for p in tl.snapshot()]
    assert values == [(0, 100.0, "measured"), (300, 250.0, "forecast")]


def test_overlapping_slots_are_clipped_not_double_counted():
    tl = Timeline()
    tl.update([pt(0, 3600, 100.0), pt(1800, 5400, 300.0)])
    points = tl.snapshot()
    assert [(p.start_unix_s, p.end_unix_s) for p in points] == [(0, 3600), (3600, 5400)]
    est = over([pt(0, 3600, 100.0), pt(1800, 5400, 300.0)], 0, 5400)
    assert est.intensity_g_per_kwh == pytest.approx((3600 * 100 + 1800 * 300) / 5400)


def test_timeline_is_bounded():
    tl = Timeline(max_points=10)
    tl.update([pt(i * 300, (i + 1) * 300, float(i)) for i in range(25)])
    kept = tl.snapshot()
    assert len(kept) == 10 and kept[0].start_unix_s == 15 * 300


def test_long_windows_keep_the_exact_mean_with_a_bounded_segment_list():
    values = [float(i % 17) * 10 for i in range(400)]
    points = [pt(i * 300, (i + 1) * 300, v) for i, v in enumerate(values)]
    est = over(points, 0, 400 * 300)
    assert len(est.segments) <= MAX_SEGMENTS
    assert est.intensity_g_per_kwh == pytest.approx(sum(values) / len(values))
    span = sum(s.duration_s * s.intensity_g_per_kwh for s in est.segments) / (400 * 300)
    assert span == pytest.approx(est.intensity_g_per_kwh)
    assert est.segments[0].start_unix_s == 0 and est.segments[-1].end_unix_s == 400 * 300


def test_bad_points_are_refused():
    with pytest.raises(ValueError):
        pt(10, 10, 1.0)
    with pytest.raises(ValueError):
        pt(0, 10, -1.0)
    with pytest.raises(ValueError):
        pt(0, 10, float("nan"))
    with pytest.raises(ValueError):
        IntensityPoint(0, 10, 1.0, "annual_average", "x")


def test_estimate_dict_lists_segments():
    est = over([pt(0, 300, 100.0), pt(300, 600, 200.0)], 0, 600)
    record = est.to_dict()
    assert isinstance(record["segments"], list) and len(record["segments"]) == 2
    assert record["segments"][1]["intensity_g_per_kwh"] == 200.0
    assert zone_value("DK").to_dict()["segments"] == []


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.floats(0, 1000, allow_nan=False)), min_size=1, max_size=30
    ),
    a=st.floats(-600, 9000),
    length=st.floats(0.5, 9000),
)
def test_weighted_mean_equals_the_integral(values, a, length):
    slot = 300.0
    points = [pt(i * slot, (i + 1) * slot, v) for i, v in enumerate(values) if v is not None]
    b = a + length
    est = over(points, a, b, max_hold_s=450.0)

    def value_at(t):  # the rule written out: own slot, else held <= 450 s, else annual
        own = [p for p in points if p.start_unix_s <= t < p.end_unix_s]
        if own:
            return own[0].intensity_g_per_kwh
        earlier = [p for p in points if p.end_unix_s <= t]
        if earlier and t - earlier[-1].end_unix_s < 450.0:
            return earlier[-1].intensity_g_per_kwh
        return ANNUAL.intensity_g_per_kwh

    n = 4000
    step = length / n
    integral = sum(value_at(a + (i + 0.5) * step) for i in range(n)) * step
    assert est.intensity_g_per_kwh == pytest.approx(integral / length, rel=0.02, abs=2.0)
    # the segments tile the window
    assert est.segments[0].start_unix_s == pytest.approx(a)
    assert est.segments[-1].end_unix_s == pytest.approx(b)
    for s1, s2 in zip(est.segments, est.segments[1:], strict=False):
        assert s1.end_unix_s == pytest.approx(s2.start_unix_s)
