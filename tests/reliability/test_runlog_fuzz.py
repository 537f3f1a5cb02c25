"""Bad input: the run-log reader and everything built on it, fuzzed.

``tests/test_records.py`` fuzzes bytes appended to, inserted into and cut from a *valid* log.
This module adds what that does not cover:

- any bytes at all (not a run log): the reader returns a RunLog or raises RunLogError/OSError,
  never anything else;
- valid JSON with wrong types in every field of every record type (a hand-edited, foreign or
  future log): reading, ``totals()``, ``epoch_sums()``, every property, ``run_figure`` and
  ``aggregate_runs`` never raise and give finite, non-negative figures;
- other writers' line endings and encodings (CRLF, a byte-order mark, NUL bytes, deep nesting,
  numbers beyond float range): the readable records are kept.
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbon_callbacks.core.runlog import (
    RunLog,
    RunLogError,
    aggregate_runs,
    encode_record,
    read_run_log,
    run_figure,
)

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

HEADER = {
    "type": "header",
    "schema": 1,
    "run_id": "0123456789ab",
    "run_name": "fuzz",
    "started_at_unix_s": 1_700_000_000.0,
    "config": {"epochs": 4, "monitor_epochs": -1},
    "epochs": 4,
    "pue": 1.2,
}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

#: The fields each record type has (records.py's schema), plus a stranger.
FIELDS = {
    "header": ["run_id", "run_name", "epochs", "config", "resumed_from", "offsets", "pue"],
    "epoch": ["epoch", "duration_s", "energy_kwh", "co2_g", "energy_j", "cumulative", "steps"],
    "phase": ["name", "epoch", "duration_s", "energy_kwh", "co2_g"],
    "prediction": ["after_epochs", "epochs", "duration_s", "energy_kwh", "co2_g", "method"],
    "event": ["kind", "message", "source", "time_unix_s"],
    "metric": ["name", "value", "epoch"],
    "footer": [
        "status",
        "energy_kwh",
        "co2_g",
        "duration_s",
        "epochs_duration_s",
        "epochs_completed",
        "epochs_monitored",
    ],
    "something_new": ["x"],
}


@st.composite
def records(draw, kind=None):
    kind = kind or draw(st.sampled_from(sorted(FIELDS)))
    names = draw(st.lists(st.sampled_from(FIELDS[kind] + ["extra"]), unique=True))
    record = {name: draw(json_values) for name in names}
    record["type"] = kind
    return record


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _use_everything(log: RunLog) -> None:
    """Every reader-side view of a log: none may raise, all figures finite and >= 0 (a negative
    energy, mass or duration in a corrupt log is read as missing, never summed)."""
    for name in (
        "schema",
        "run_id",
        "run_name",
        "planned_epochs",
        "status",
        "complete",
        "latest_prediction",
        "resumed_from",
    ):
        getattr(log, name)
    assert all(_finite(v) and v >= 0 for v in log.offsets.values())
    assert isinstance(log.epochs_monitored, int) and log.epochs_monitored >= 0
    sums = log.epoch_sums()
    assert all(_finite(sums[k]) and sums[k] >= 0 for k in ("energy_kwh", "co2_g", "duration_s"))
    totals = log.totals()
    assert all(_finite(totals[k]) and totals[k] >= 0 for k in ("energy_kwh", "co2_g", "duration_s"))
    assert isinstance(totals["epochs"], int) and totals["epochs"] >= 0
    figure = run_figure(log)
    for value in (figure.energy_kwh, figure.co2_g, figure.duration_s):
        assert _finite(value) and value >= 0
    assert figure.basis in ("measured", "predicted", "partial")
    aggregate = aggregate_runs([log])
    assert aggregate.runs_counted == 1
    assert _finite(aggregate.energy_kwh) and aggregate.energy_kwh >= 0


@FUZZ
@given(data=st.binary(max_size=2000))
def test_any_bytes_give_a_runlog_or_runlogerror(tmp_path, data):
    path = tmp_path / "x.carbon.jsonl"
    path.write_bytes(data)
    try:
        log = read_run_log(path)
    except RunLogError:
        return
    _use_everything(log)


@FUZZ
@given(lines=st.lists(st.one_of(records(), json_values), max_size=8))
def test_json_lines_of_anything_never_break_the_reader(tmp_path, lines):
    path = tmp_path / "x.carbon.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    try:
        log = read_run_log(path)
    except RunLogError:
        assert not any(isinstance(r, dict) and r.get("type") == "header" for r in lines)
        return
    _use_everything(log)


@FUZZ
@given(header=records("header"), body=st.lists(records(), max_size=10))
def test_wrong_types_in_every_field_are_survived(tmp_path, header, body):
    path = tmp_path / "x.carbon.jsonl"
    path.write_text("".join(encode_record(r) for r in [header, *body]))
    log = read_run_log(path)
    assert log.header["type"] == "header"
    _use_everything(log)
    assert len(log.epochs) == sum(r["type"] == "epoch" for r in body)


@FUZZ
@given(body=st.lists(records(), max_size=6), cut=st.integers(min_value=0, max_value=3000))
def test_aggregate_over_a_folder_of_broken_logs_counts_or_skips_each(tmp_path, body, cut):
    folder = tmp_path / "logs"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    whole = "".join(encode_record(r) for r in [HEADER, *body]).encode()
    (folder / "whole.carbon.jsonl").write_bytes(whole)
    (folder / "cut.carbon.jsonl").write_bytes(whole[:cut])
    (folder / "junk.carbon.jsonl").write_bytes(bytes(range(256)))
    aggregate = aggregate_runs([folder])  # never raises
    assert aggregate.runs_counted + len(aggregate.skipped) == 3
    assert _finite(aggregate.energy_kwh) and aggregate.energy_kwh >= 0


EPOCH = {"type": "epoch", "epoch": 0, "duration_s": 10.0, "energy_kwh": 0.5, "co2_g": 60.0}
FOOTER = {
    "type": "footer",
    "status": "completed",
    "energy_kwh": 0.5,
    "co2_g": 60.0,
    "epochs_completed": 1,
}


def _lines(*records) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "crlf.carbon.jsonl"
    path.write_bytes(b"\r\n".join(_lines(HEADER, EPOCH, FOOTER)) + b"\r\n")
    log = read_run_log(path)
    assert len(log.epochs) == 1 and log.status == "completed" and log.corrupt_lines == 0


def test_byte_order_mark_and_nul_bytes(tmp_path):
    path = tmp_path / "bom.carbon.jsonl"
    header, epoch, footer = _lines(HEADER, EPOCH, FOOTER)
    path.write_bytes(
        b"\xef\xbb\xbf"
        + header
        + b"\n"
        + b"\x00" * 40
        + b"\n"
        + epoch
        + b"\n"
        + footer
        + b"\n\x00\x00"
    )
    log = read_run_log(path)
    assert log.run_id == HEADER["run_id"] and len(log.epochs) == 1
    assert log.corrupt_lines == 1 and log.truncated  # the NUL line; the NUL tail
    assert log.totals()["energy_kwh"] == 0.5


def test_negative_figures_are_missing_not_summed(tmp_path):
    path = tmp_path / "neg.carbon.jsonl"
    bad_footer = {**FOOTER, "energy_kwh": -1.0}
    bad_epoch = {**EPOCH, "epoch": 1, "energy_kwh": -0.2}
    path.write_bytes(b"\n".join(_lines(HEADER, EPOCH, bad_epoch, bad_footer)) + b"\n")
    log = read_run_log(path)
    assert log.epoch_sums()["energy_kwh"] == 0.5 and log.epoch_sums()["missing_values"] == 1
    totals = log.totals()
    assert totals["basis"] == "epochs" and totals["energy_kwh"] == 0.5


def test_deep_nesting_and_numbers_beyond_float_range(tmp_path):
    path = tmp_path / "deep.carbon.jsonl"
    deep = b'{"type":"epoch","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = b'{"type":"epoch","epoch":1,"energy_kwh":1e999,"co2_g":-1e999,"duration_s":1e308}'
    long_int = b'{"type":"epoch","epoch":' + b"9" * 5000 + b"}"
    path.write_bytes(b"\n".join([*_lines(HEADER), deep, huge, long_int, *_lines(EPOCH)]) + b"\n")
    log = read_run_log(path)
    assert log.corrupt_lines == 2  # the nesting and the 5000-digit integer
    assert len(log.epochs) == 2
    sums = log.epoch_sums()
    assert sums["energy_kwh"] == 0.5 and sums["missing_values"] == 2  # inf and -inf left out
    _use_everything(log)
