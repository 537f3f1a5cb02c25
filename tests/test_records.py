"""Tests for the run log: writing, crash tolerance, reading, finding and aggregating."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbon_callbacks.core import runlog as records
from carbon_callbacks.core.events import CarbonCallbacksWarning, Event, EventLog
from carbon_callbacks.core.intensity.base import IntensityEstimate
from carbon_callbacks.core.runlog import (
    LOG_SUFFIX,
    RunLog,
    RunLogError,
    RunLogWriter,
    aggregate_runs,
    encode_record,
    event_record,
    find_run_logs,
    new_run_id,
    new_run_log_path,
    read_run_log,
    run_figure,
)

INTENSITY = {
    "intensity_g_per_kwh": 150.0,
    "zone": "DK",
    "source": "test table 2024",
    "basis": "lifecycle",
    "kind": "annual_average",
    "year": 2024,
    "start_unix_s": None,
    "end_unix_s": None,
}


# ---------------------------------------------------------------------------------------------
# Record builders
# ---------------------------------------------------------------------------------------------


def header(run_id: str = "abc123abc123", epochs: int | None = 3, **config) -> dict:
    return {
        "type": "header",
        "schema": 1,
        "package_version": "0.1.0",
        "run_id": run_id,
        "run_name": f"run-{run_id}",
        "started_at_unix_s": 1_700_000_000.0,
        "started_at": "2023-11-14T22:13:20Z",
        "host": "node01",
        "pid": 4242,
        "config": {"epochs": epochs, "monitor_epochs": -1, **config},
        "sensors": [
            {
                "name": "gpu0",
                "component": "gpu",
                "device": "NVIDIA H100",
                "method": "counter",
                "detail": "NVML total energy",
            }
        ],
        "intensity": INTENSITY,
        "pue": 1.2,
        "epochs": epochs,
        "total_steps": None,
    }


def epoch(i: int, kwh: float = 0.1, co2: float = 15.0, dur: float = 60.0, **extra) -> dict:
    return {
        "type": "epoch",
        "epoch": i,
        "start_unix_s": 1_700_000_000.0 + i * dur,
        "end_unix_s": 1_700_000_000.0 + (i + 1) * dur,
        "duration_s": dur,
        "energy_j": {"gpu0": kwh * 3.6e6 / 1.2},
        "methods": {"gpu0": "counter"},
        "energy_kwh": kwh,
        "co2_g": co2,
        "intensity": INTENSITY,
        "pue": 1.2,
        "power_w": {"gpu": 250.0, "cpu": 40.0, "dram": 5.0, "total": 295.0},
        "cumulative": {"energy_kwh": kwh * (i + 1), "co2_g": co2 * (i + 1), "duration_s": dur},
        **extra,
    }


def prediction(after: int, epochs: int, kwh: float, co2: float, dur: float) -> dict:
    return {
        "type": "prediction",
        "after_epochs": after,
        "epochs": epochs,
        "duration_s": dur,
        "energy_kwh": kwh,
        "co2_g": co2,
        "duration_s_low": dur * 0.9,
        "duration_s_high": dur * 1.1,
        "energy_kwh_low": kwh * 0.9,
        "energy_kwh_high": kwh * 1.1,
        "co2_g_low": co2 * 0.9,
        "co2_g_high": co2 * 1.1,
        "method": "linear",
        "intensity": INTENSITY,
    }


def footer(status: str, kwh: float, co2: float, dur: float, done: int) -> dict:
    return {
        "type": "footer",
        "status": status,
        "ended_at_unix_s": 1_700_000_000.0 + dur,
        "duration_s": dur,
        "energy_j": {"gpu0": kwh * 3.6e6 / 1.2},
        "energy_kwh": kwh,
        "co2_g": co2,
        "epochs_completed": done,
        "events_dropped": 0,
    }


def write_log(path: Path, recs: list[dict]) -> Path:
    with RunLogWriter(path) as writer:
        for rec in recs:
            assert writer.write(rec)
    return path


def log_bytes(recs: list[dict]) -> bytes:
    return "".join(encode_record(r) for r in recs).encode("ascii")


# ---------------------------------------------------------------------------------------------
# Writing and reading back
# ---------------------------------------------------------------------------------------------


def test_round_trip_of_every_record_type(tmp_path):
    recs = [
        header(),
        epoch(0, future_field={"nested": [1, 2]}),
        {**epoch(0), "type": "phase", "name": "validation", "epoch": 0},
        {**epoch(1), "type": "phase", "name": "synthesis", "epoch": None},
        prediction(1, 3, 0.3, 45.0, 180.0),
        event_record(Event("sensor_fallback", "RAPL unreadable", "rapl", 1_700_000_010.0)),
        {"type": "metric", "name": "dice", "value": 0.87, "epoch": 2},
        {"type": "budget_decision", "decision": "continue", "reason": "under 1 kWh"},
        epoch(1),
        epoch(2),
        footer("completed", 0.3, 45.0, 180.0, 3),
    ]
    path = write_log(tmp_path / "run.carbon.jsonl", recs)
    log = read_run_log(path)

    assert log.path == path
    assert log.header == recs[0]
    assert log.epochs == [recs[1], recs[8], recs[9]]
    assert log.epochs[0]["future_field"] == {"nested": [1, 2]}  # extra field kept
    assert log.phases == [recs[2], recs[3]]
    assert log.phases[1]["epoch"] is None
    assert log.predictions == [recs[4]]
    assert log.events == [recs[5]]
    assert log.events[0]["kind"] == "sensor_fallback"
    assert log.metrics == [recs[6]]
    assert log.other == [recs[7]]  # unknown type kept
    assert log.footer == recs[10]
    assert (log.truncated, log.corrupt_lines) == (False, 0)
    assert log.complete and log.status == "completed"
    assert log.latest_prediction == recs[4]
    assert (log.run_id, log.run_name, log.planned_epochs, log.schema) == (
        "abc123abc123",
        "run-abc123abc123",
        3,
        1,
    )
    assert log.totals() == {
        "energy_kwh": 0.3,
        "co2_g": 45.0,
        "duration_s": 180.0,
        "epochs": 3,
        "basis": "footer",
    }


def test_lines_are_compact_json_with_newline(tmp_path):
    path = write_log(tmp_path / "r.carbon.jsonl", [header(), epoch(0)])
    text = path.read_text(encoding="ascii")
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 3
    assert lines[1] == json.dumps(epoch(0), separators=(",", ":"))
    assert ": " not in lines[0] and ", " not in lines[0]


def test_nan_and_infinity_become_null(tmp_path):
    rec = epoch(0, kwh=float("nan"))
    rec["power_w"] = {"gpu": float("inf"), "cpu": -float("inf"), "dram": 1.5, "total": math.nan}
    path = write_log(tmp_path / "r.carbon.jsonl", [header(), rec])
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    for line in text.splitlines():  # strict JSON: parses without accepting NaN/Infinity
        json.loads(line, parse_constant=refuse)
    got = read_run_log(path).epochs[0]
    assert got["energy_kwh"] is None
    assert got["power_w"] == {"gpu": None, "cpu": None, "dram": 1.5, "total": None}


def test_objects_are_made_json_ready(tmp_path):
    estimate = IntensityEstimate(150.0, "DK", "test", basis="lifecycle", year=2024)
    rec = {**header(), "intensity": estimate, "config": {"log_dir": tmp_path, "ids": (0, 1)}}
    path = write_log(tmp_path / "r.carbon.jsonl", [rec])
    got = read_run_log(path).header
    assert got["intensity"] == estimate.to_dict()
    assert got["config"] == {"log_dir": str(tmp_path), "ids": [0, 1]}


def test_reader_reads_nan_written_by_others_as_null(tmp_path):
    path = tmp_path / "r.carbon.jsonl"
    path.write_bytes(log_bytes([header()]) + b'{"type":"epoch","epoch":0,"co2_g":NaN}\n')
    log = read_run_log(path)
    assert log.epochs == [{"type": "epoch", "epoch": 0, "co2_g": None}]
    assert log.corrupt_lines == 0


def test_header_and_footer_are_fsynced_and_nothing_else(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        calls.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(records.os, "fsync", counting_fsync)
    write_log(
        tmp_path / "r.carbon.jsonl",
        [header(), epoch(0), epoch(1), prediction(1, 3, 1, 1, 1), footer("completed", 1, 1, 1, 2)],
    )
    assert len(calls) == 2


def test_invalid_record_is_dropped_with_an_event(tmp_path):
    events = EventLog()
    path = tmp_path / "r.carbon.jsonl"
    writer = RunLogWriter(path, events)
    with pytest.warns(CarbonCallbacksWarning):
        assert writer.write({"epoch": 1}) is False  # no "type"
    assert writer.write(["not", "a", "mapping"]) is False  # type: ignore[arg-type]
    assert [e.kind for e in events.events] == ["log_record_invalid"] * 2
    assert not path.exists()  # opened lazily: nothing valid was written
    writer.close()


# ---------------------------------------------------------------------------------------------
# Crash tolerance of the reader
# ---------------------------------------------------------------------------------------------


def test_truncated_last_line_is_tolerated_and_flagged(tmp_path):
    recs = [header(epochs=10), epoch(0, 0.1, 10.0, 60.0), epoch(1, 0.2, 20.0, 61.0)]
    half = encode_record(epoch(2))[:40].encode()
    path = tmp_path / "r.carbon.jsonl"
    path.write_bytes(log_bytes(recs) + half)
    log = read_run_log(path)
    assert log.truncated is True
    assert log.corrupt_lines == 0
    assert log.epochs == recs[1:]
    assert log.footer is None and not log.complete
    totals = log.totals()
    assert totals["basis"] == "epochs"
    assert totals["epochs"] == 2
    assert totals["energy_kwh"] == pytest.approx(0.3)
    assert totals["co2_g"] == pytest.approx(30.0)
    assert totals["duration_s"] == pytest.approx(121.0)


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.carbon.jsonl"
    path.write_bytes(log_bytes([header(), epoch(0)]) + encode_record(epoch(1)).rstrip().encode())
    log = read_run_log(path)
    assert [e["epoch"] for e in log.epochs] == [0, 1]
    assert log.truncated is False


def test_corrupt_middle_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "r.carbon.jsonl"
    path.write_bytes(
        log_bytes([header(), epoch(0)])
        + b'{"type":"epoch","epo\n'  # cut-off record
        + b"\xff\xfe not utf-8\n"
        + b"[1, 2, 3]\n"  # JSON, but not a record
        + b'{"no_type": true}\n'
        + b"\n   \n"  # blank lines are not corrupt
        + log_bytes([epoch(1), footer("completed", 0.2, 30.0, 120.0, 2)])
    )
    log = read_run_log(path)
    assert log.corrupt_lines == 4
    assert log.truncated is False
    assert [e["epoch"] for e in log.epochs] == [0, 1]
    assert log.complete


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        read_run_log(tmp_path / "nope.carbon.jsonl")
    with pytest.raises(OSError):
        read_run_log(tmp_path)  # a folder


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "empty"),
        (b"hello\nworld\n", "no header"),
        (log_bytes([epoch(0), epoch(1)]), "no header"),
    ],
)
def test_file_without_header_raises_runlogerror(tmp_path, content, words):
    path = tmp_path / "r.carbon.jsonl"
    path.write_bytes(content)
    with pytest.raises(RunLogError, match=words):
        read_run_log(path)


def test_footer_with_null_totals_falls_back_to_epoch_sums(tmp_path):
    bad_footer = {**footer("completed", 0, 0, 0, 2), "energy_kwh": None}
    path = write_log(tmp_path / "r.carbon.jsonl", [header(), epoch(0), epoch(1), bad_footer])
    totals = read_run_log(path).totals()
    assert totals["basis"] == "epochs"
    assert totals["energy_kwh"] == pytest.approx(0.2)


def test_logs_with_true_up_and_settling_records_read_with_their_written_totals(tmp_path):
    # written before marks became final: an epoch carried a correction of the previous epoch's
    # end (true_up_j), and a counted "settling" phase corrected the last epoch's edges
    settling = {
        **epoch(1, kwh=-0.001, co2=-0.15, dur=0.0),
        "type": "phase",
        "name": "settling",
        "in_epoch": False,
        "counted": True,
        "true_up_j": {"gpu0": -3000.0},
    }
    recs = [header(epochs=2), epoch(0), epoch(1, true_up_j={"gpu0": 5.0}), settling]
    recs.append(footer("completed", 0.199, 29.85, 120.0, 2))
    log = read_run_log(write_log(tmp_path / "r.carbon.jsonl", recs))
    assert log.epochs[1]["true_up_j"] == {"gpu0": 5.0}
    assert [p["name"] for p in log.phases] == ["settling"]
    totals = log.totals()
    assert (totals["energy_kwh"], totals["co2_g"], totals["epochs"]) == (0.199, 29.85, 2)
    assert run_figure(log).energy_kwh == 0.199


# ---------------------------------------------------------------------------------------------
# Write failures
# ---------------------------------------------------------------------------------------------


def wired(path: Path, **kwargs) -> tuple[RunLogWriter, EventLog]:
    """A writer whose events are also appended to the log itself (as the tracker does)."""
    events = EventLog()
    writer = RunLogWriter(path, events, **kwargs)
    events.listener = lambda event: writer.write(event_record(event))
    return writer, events


def kinds(events: EventLog) -> list[str]:
    return [e.kind for e in events.events]


def test_write_cut_off_mid_line_is_rewritten_whole(tmp_path, monkeypatch):
    path = tmp_path / "r.carbon.jsonl"
    writer = RunLogWriter(path)
    writer.write(header())
    writer.write(epoch(0))
    state = {"budget": 25}  # bytes that still fit on the "disk"
    real_write = os.write

    def write(fd, data):
        if state["budget"] is None or fd != writer._fd:
            return real_write(fd, data)
        if state["budget"] == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data[: state["budget"]]))
        state["budget"] -= n
        return n

    monkeypatch.setattr(records.os, "write", write)
    assert writer.write(epoch(1)) is False
    assert writer.pending == 1
    state["budget"] = None
    assert writer.write(epoch(2)) is True
    writer.close()
    log = read_run_log(path)
    assert [e["epoch"] for e in log.epochs] == [0, 1, 2]
    assert log.epochs[1] == epoch(1)
    assert log.corrupt_lines == 1  # the 25-byte fragment, on its own line


def test_unwritable_from_the_start_keeps_the_newest_and_the_header(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    path = blocker / "logs" / "r.carbon.jsonl"
    writer = RunLogWriter(path, EventLog(), max_pending=2)
    with pytest.warns(CarbonCallbacksWarning):
        for rec in (header(), epoch(0), epoch(1), epoch(2)):
            assert writer.write(rec) is False
    assert (writer.pending, writer.dropped) == (2, 2)
    assert writer.last_error and "NotADirectoryError" in writer.last_error
    blocker.unlink()
    assert writer.write(epoch(3)) is True  # epoch 1 is dropped making room
    assert (writer.pending, writer.dropped) == (0, 3)
    writer.close()
    log = read_run_log(path)
    assert log.header == header()
    assert [e["epoch"] for e in log.epochs] == [2, 3]


def test_close_retries_pending_and_is_idempotent(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("x")
    path = blocker / "r.carbon.jsonl"
    writer = RunLogWriter(path)  # no event log: failures only in the properties
    assert writer.write(header()) is False
    assert writer.write(epoch(0)) is False
    assert writer.failed and writer.pending == 2
    blocker.unlink()
    writer.close()
    assert writer.pending == 0 and writer.closed
    writer.close()  # again: no error
    assert writer.write(footer("completed", 0.1, 15.0, 60.0, 1)) is True  # after close: appends
    log = read_run_log(path)
    assert [e["epoch"] for e in log.epochs] == [0]
    assert log.complete


def test_appending_to_a_file_cut_mid_line_starts_a_fresh_line(tmp_path):
    path = tmp_path / "r.carbon.jsonl"
    path.write_bytes(log_bytes([header(), epoch(0)]) + b'{"type":"epo')
    with RunLogWriter(path) as writer:
        writer.write(epoch(1))
    log = read_run_log(path)
    assert [e["epoch"] for e in log.epochs] == [0, 1]
    assert log.corrupt_lines == 1


def test_concurrent_writers_never_interleave_lines(tmp_path):
    path = tmp_path / "r.carbon.jsonl"
    writer = RunLogWriter(path)
    writer.write(header())
    n_threads, per_thread = 8, 100

    def work(t):
        for i in range(per_thread):
            writer.write({"type": "metric", "name": f"t{t}", "value": i, "epoch": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    log = read_run_log(path)
    assert log.corrupt_lines == 0 and not log.truncated
    seen = {(m["name"], m["value"]) for m in log.metrics}
    assert len(log.metrics) == n_threads * per_thread == len(seen)
    assert writer.written == n_threads * per_thread + 1


# ---------------------------------------------------------------------------------------------
# Paths and ids
# ---------------------------------------------------------------------------------------------


def test_new_run_id_is_12_hex_and_unique():
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)


def test_new_run_log_path_format(tmp_path):
    path = new_run_log_path(tmp_path, "unet_fold0_", "0123456789ab", 1_700_000_000.9)
    assert path == tmp_path / "unet_fold0_20231114T221320Z_0123456789ab.carbon.jsonl"
    assert new_run_log_path(tmp_path, "", "x", 0).name == "19700101T000000Z_x" + LOG_SUFFIX
    assert not path.exists()


@pytest.mark.parametrize(
    "prefix, run_id",
    [
        ("../", "abc"),
        ("", "../../etc/passwd"),
        ("a/b", "abc"),
        ("", "x\\..\\y"),
        ("", "a\x00b"),
        ("", ""),
        ("p" * 300, "abc"),
    ],
)
def test_new_run_log_path_refuses_escapes_and_bad_names(tmp_path, prefix, run_id):
    with pytest.raises(ValueError):
        new_run_log_path(tmp_path, prefix, run_id, 0)


def test_new_run_log_path_refuses_symlink_out_of_log_dir(tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    outside = tmp_path / "outside.carbon.jsonl"
    name = "19700101T000000Z_abc" + LOG_SUFFIX
    (log_dir / name).symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        new_run_log_path(log_dir, "", "abc", 0)
    with pytest.raises(ValueError):
        new_run_log_path(log_dir, "", "abc", float("nan"))


# ---------------------------------------------------------------------------------------------
# Finding and aggregating
# ---------------------------------------------------------------------------------------------


def test_find_run_logs_recursive_deduplicated(tmp_path):
    a = write_log(tmp_path / "a.carbon.jsonl", [header("a")])
    b = write_log(tmp_path / "sub" / "deep" / "b.carbon.jsonl", [header("b")])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub" / "c.jsonl").write_text("x")
    explicit = tmp_path / "other.log"
    explicit.write_text("x")
    found = find_run_logs([tmp_path, tmp_path / "sub", a, explicit])
    assert found == [a, b, explicit]
    assert find_run_logs(str(tmp_path / "sub")) == [b]
    with pytest.raises(FileNotFoundError):
        find_run_logs([tmp_path / "missing"])


def test_aggregate_measured_predicted_partial_against_hand_sums(tmp_path):
    d = tmp_path / "runs"
    # A: completed, footer totals.                        -> measured 0.5 kWh, 60 g, 300 s
    write_log(
        d / "a.carbon.jsonl",
        [header("A", 3), epoch(0), epoch(1), epoch(2), footer("completed", 0.5, 60.0, 300.0, 3)],
    )
    # B: stopped early after 2 of 10 epochs.              -> measured 0.25 kWh, 30 g, 130 s
    write_log(
        d / "b.carbon.jsonl",
        [
            header("B", 10),
            epoch(0),
            epoch(1),
            prediction(1, 10, 9.0, 900.0, 9000.0),
            footer("interrupted", 0.25, 30.0, 130.0, 2),
        ],
    )
    # C: killed after 2 of 10, predicted twice.           -> predicted 2.0 kWh, 200 g, 1000 s
    write_log(
        d / "c.carbon.jsonl",
        [
            header("C", 10),
            epoch(0),
            prediction(1, 10, 5.0, 500.0, 5000.0),
            epoch(1),
            prediction(2, 10, 2.0, 200.0, 1000.0),
        ],
    )
    # D: killed after 2 of 5, no prediction.              -> partial 0.1+0.3, 10+30, 50+70
    write_log(
        d / "d.carbon.jsonl",
        [header("D", 5), epoch(0, 0.1, 10.0, 50.0), epoch(1, 0.3, 30.0, 70.0)],
    )
    # E: no footer but all 2 planned epochs monitored.    -> measured 0.2+0.4, 20+40, 10+20
    write_log(
        d / "e.carbon.jsonl",
        [
            header("E", 2),
            epoch(0, 0.2, 20.0, 10.0),
            prediction(1, 2, 7.0, 7.0, 7.0),
            epoch(1, 0.4, 40.0, 20.0),
        ],
    )
    # F: failed after 1 of 4, with a prediction.          -> predicted 0.8 kWh, 80 g, 400 s
    write_log(
        d / "f.carbon.jsonl",
        [
            header("F", 4),
            epoch(0),
            prediction(1, 4, 0.8, 80.0, 400.0),
            footer("failed", 0.1, 15.0, 60.0, 1),
        ],
    )
    # Not counted: no header, a copy of A, a missing path.
    (d / "junk.carbon.jsonl").write_text("garbage\n")
    shutil.copy(d / "a.carbon.jsonl", d / "z_copy_of_a.carbon.jsonl")
    missing = tmp_path / "missing.carbon.jsonl"

    agg = aggregate_runs([d, missing])
    by_id = {run.run_id: run for run in agg.runs}
    assert sorted(by_id) == ["A", "B", "C", "D", "E", "F"]
    assert {k: r.basis for k, r in by_id.items()} == {
        "A": "measured",
        "B": "measured",
        "C": "predicted",
        "D": "partial",
        "E": "measured",
        "F": "predicted",
    }
    assert by_id["C"].energy_kwh == 2.0 and by_id["C"].epochs == 10  # latest prediction
    assert "after 2 epochs" in by_id["C"].reason
    assert by_id["B"].epochs == 2 and "stopped early" in by_id["B"].reason
    assert by_id["E"].reason == "all 2 planned epochs monitored"
    assert agg.runs_counted == 6
    assert agg.by_basis() == {"measured": 3, "predicted": 2, "partial": 1}
    assert agg.energy_kwh == pytest.approx(0.5 + 0.25 + 2.0 + 0.4 + 0.6 + 0.8)
    assert agg.co2_g == pytest.approx(60 + 30 + 200 + 40 + 60 + 80)
    assert agg.duration_s == pytest.approx(300 + 130 + 1000 + 120 + 30 + 400)

    skipped = {p.name: reason for p, reason in agg.skipped}
    assert set(skipped) == {"junk.carbon.jsonl", "z_copy_of_a.carbon.jsonl", missing.name}
    assert "no header" in skipped["junk.carbon.jsonl"]
    assert "duplicate of run A" in skipped["z_copy_of_a.carbon.jsonl"]
    assert "cannot read" in skipped[missing.name]
    assert json.dumps([r.to_dict() for r in agg.runs])  # JSON-ready


def test_aggregate_uses_prediction_when_monitoring_was_limited(tmp_path):
    limited = write_log(
        tmp_path / "l.carbon.jsonl",
        [
            {**header("L", 10), "config": {"epochs": 10, "monitor_epochs": 2}},
            epoch(0),
            epoch(1),
            prediction(2, 10, 1.0, 150.0, 600.0),
            footer("completed", 0.2, 30.0, 120.0, 2),
        ],
    )
    full = write_log(
        tmp_path / "m.carbon.jsonl",
        [header("M", 10), epoch(0), footer("completed", 0.1, 15.0, 60.0, 1)],
    )
    agg = aggregate_runs([read_run_log(limited), full])
    assert [(r.run_id, r.basis) for r in agg.runs] == [("L", "predicted"), ("M", "measured")]
    assert agg.energy_kwh == pytest.approx(1.1)
    assert agg.skipped == []


def test_aggregate_accepts_runlog_objects_and_reports_same_file_twice(tmp_path):
    path = write_log(tmp_path / "a.carbon.jsonl", [header("A"), epoch(0)])
    log = read_run_log(path)
    assert isinstance(log, RunLog)
    agg = aggregate_runs([log, path])
    assert agg.runs_counted == 1
    assert agg.runs[0].basis == "partial"
    assert agg.skipped == [(path, "same file listed twice")]


# ---------------------------------------------------------------------------------------------
# Fuzzing: the reader never raises and keeps the intact prefix
# ---------------------------------------------------------------------------------------------

FUZZ_RECORDS = [
    header(epochs=4),
    epoch(0),
    {**epoch(0), "type": "phase", "name": "validation", "epoch": 0},
    epoch(1),
    prediction(2, 4, 0.4, 60.0, 240.0),
    event_record(Event("sensor_lost", "GPU stopped answering", "gpu0", 1.0)),
    epoch(2),
    {"type": "metric", "name": "dice", "value": 0.9, "epoch": 2},
    epoch(3),
    footer("completed", 0.4, 60.0, 240.0, 4),
]
FUZZ_BYTES = log_bytes(FUZZ_RECORDS)
FUZZ_EPOCHS = [r for r in FUZZ_RECORDS if r["type"] == "epoch"]
HEADER_LEN = len(encode_record(FUZZ_RECORDS[0]))
FUZZ = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def intact_epochs(prefix: bytes) -> list[dict]:
    """The epoch records whose whole line (newline included) lies in ``prefix``."""
    complete = prefix[: prefix.rfind(b"\n") + 1]
    return [r for r in (json.loads(x) for x in complete.splitlines()) if r["type"] == "epoch"]


def check_prefix(path: Path, data: bytes, intact: int) -> RunLog:
    path.write_bytes(data)
    log = read_run_log(path)  # must not raise
    assert log.header == FUZZ_RECORDS[0]
    expected = intact_epochs(FUZZ_BYTES[:intact])
    assert log.epochs[: len(expected)] == expected
    return log


@FUZZ
@given(data=st.data(), junk=st.binary(min_size=1, max_size=64), insert=st.booleans())
def test_fuzz_corrupted_bytes(tmp_path, data, junk, insert):
    pos = data.draw(st.integers(HEADER_LEN, len(FUZZ_BYTES) - 1), label="pos")
    tail = FUZZ_BYTES[pos:] if insert else FUZZ_BYTES[pos + len(junk) :]
    check_prefix(tmp_path / "f.carbon.jsonl", FUZZ_BYTES[:pos] + junk + tail, pos)


@FUZZ
@given(data=st.data())
def test_fuzz_truncated_anywhere_after_header(tmp_path, data):
    cut = data.draw(st.integers(HEADER_LEN, len(FUZZ_BYTES)), label="cut")
    log = check_prefix(tmp_path / "f.carbon.jsonl", FUZZ_BYTES[:cut], cut)
    assert log.corrupt_lines == 0
    whole = len(intact_epochs(FUZZ_BYTES[:cut]))
    assert len(log.epochs) in (whole, whole + 1)  # +1: cut exactly before a newline
    if FUZZ_BYTES[:cut].endswith(b"\n"):
        assert not log.truncated and len(log.epochs) == whole


# ---------------------------------------------------------------------------------------------
# Resumed runs (header "resumed_from" / "offsets", as the tracker writes them)
# ---------------------------------------------------------------------------------------------


def resumed_header(run_id: str, prior: list[str], offsets: dict, epochs: int = 4) -> dict:
    return {**header(run_id, epochs), "resumed_from": prior, "offsets": offsets}


def test_totals_of_a_killed_resumed_run_include_offsets(tmp_path):
    offsets = {"energy_kwh": 1.0, "co2_g": 100.0, "duration_s": 500.0, "epochs": 2}
    path = write_log(
        tmp_path / "r.carbon.jsonl",
        [resumed_header("B", ["A"], offsets), epoch(2, 0.1, 10.0, 60.0)],
    )
    log = read_run_log(path)
    assert log.resumed_from == ["A"]
    assert log.epochs_monitored == 3
    totals = log.totals()
    assert totals["basis"] == "epochs"
    assert totals["energy_kwh"] == pytest.approx(1.1)
    assert totals["co2_g"] == pytest.approx(110.0)
    assert totals["duration_s"] == pytest.approx(560.0)
    assert totals["epochs"] == 3


def test_footer_epochs_duration_preferred_over_session_wall_time(tmp_path):
    tracker_footer = {
        **footer("completed", 0.2, 30.0, 999.0, 2),
        "epochs_duration_s": 120.0,
        "epochs_monitored": 2,
    }
    path = write_log(tmp_path / "r.carbon.jsonl", [header(epochs=2), epoch(0), tracker_footer])
    assert read_run_log(path).totals()["duration_s"] == 120.0


def test_aggregate_counts_a_resumed_chain_once(tmp_path):
    # A: killed by the cluster after 2 of 4 epochs (0.1 kWh each), then resumed as B.
    write_log(
        tmp_path / "a.carbon.jsonl",
        [header("A", 4), epoch(0), epoch(1), footer("interrupted", 0.2, 30.0, 120.0, 2)],
    )
    offsets = {"energy_kwh": 0.2, "co2_g": 30.0, "duration_s": 120.0, "epochs": 2}
    write_log(
        tmp_path / "b.carbon.jsonl",
        [
            resumed_header("B", ["A"], offsets),
            epoch(2),
            epoch(3),
            {**footer("completed", 0.4, 60.0, 130.0, 4), "epochs_duration_s": 240.0},
        ],
    )
    agg = aggregate_runs([tmp_path])
    assert [(r.run_id, r.basis, r.epochs) for r in agg.runs] == [("B", "measured", 4)]
    assert agg.energy_kwh == pytest.approx(0.4)  # not 0.6: A is inside B's totals
    assert agg.duration_s == pytest.approx(240.0)
    assert [(p.name, "continued by resumed run B" in why) for p, why in agg.skipped] == [
        ("a.carbon.jsonl", True)
    ]
    # Without B in the set, A counts on its own.
    alone = aggregate_runs([tmp_path / "a.carbon.jsonl"])
    assert alone.energy_kwh == pytest.approx(0.2) and alone.skipped == []
