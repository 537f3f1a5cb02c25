"""carbontracker's own log files (written here in its documented format) read into ``report``
and the aggregate, counted by carbontracker's rule: actual when every planned epoch was
monitored or the run stopped early, else the prediction."""

from __future__ import annotations

import json

import pytest
from cli_logs import carbontracker_pair, tracker_run

from carbon_callbacks.cli import commands as cli
from carbon_callbacks.core.runlog import aggregate_runs
from carbon_callbacks.report.carbontracker_logs import (
    CARBONTRACKER_PUE,
    parse_output_log,
    parse_standard_log,
    parse_timedelta_s,
    partner_of,
    read_carbontracker_log,
)
from carbon_callbacks.report.collect import collect_logs


def _report_json(capsys, *paths) -> dict:
    code = cli.main(["report", *map(str, paths), "-f", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.fixture
def ct_dir(tmp_path):
    d = tmp_path / "ct"
    d.mkdir()
    figures = {
        "full": carbontracker_pair(
            d,
            "101.1_2024-03-26T105926Z_",
            epoch_powers=[(60.0, [250.0, 240.0], [40.0])] * 3,
            planned=3,
            actual_epochs=3,
        ),
        "limited": carbontracker_pair(  # monitor_epochs=2 of 10: the prediction counts
            d,
            "202.2_2024-03-27T105926Z_",
            epoch_powers=[(30.0, [200.0], [30.0])] * 2,
            planned=10,
            actual_epochs=2,
            wrap_gpu_array=True,
        ),
        "stopped": carbontracker_pair(  # stop() after 2 of 10: the actual counts
            d,
            "303.3_2024-03-28T105926Z_",
            epoch_powers=[(30.0, [200.0, 100.0, 50.0, 25.0], [30.0])] * 2,
            planned=10,
            actual_epochs=2,
            interrupted=True,
            wrap_gpu_array=True,
        ),
        "killed": carbontracker_pair(  # killed: only the prediction was written
            d,
            "404.4_2024-03-29T105926Z_",
            epoch_powers=[(30.0, [200.0], [30.0])] * 2,
            planned=10,
            actual_epochs=None,
        ),
    }
    return d, figures


def test_aggregate_follows_carbontrackers_rule(ct_dir, capsys):
    d, fig = ct_dir
    data = _report_json(capsys, d)
    expected_kwh = (
        fig["full"]["actual"]["kwh"]
        + fig["limited"]["predicted"]["kwh"]
        + fig["stopped"]["actual"]["kwh"]
        + fig["killed"]["predicted"]["kwh"]
    )
    expected_g = (
        fig["full"]["actual"]["g"]
        + fig["limited"]["predicted"]["g"]
        + fig["stopped"]["actual"]["g"]
        + fig["killed"]["predicted"]["g"]
    )
    # the logs print 12 decimals
    assert data["totals"]["energy_kwh"] == pytest.approx(expected_kwh, abs=1e-11)
    assert data["totals"]["co2_g"] == pytest.approx(expected_g, abs=1e-10)
    rows = {r["run"].split("_")[0]: r for r in data["runs"]}
    assert rows["101.1"]["basis"] == "measured" and rows["101.1"]["status"] == "completed"
    assert rows["202.2"]["basis"] == "predicted" and rows["202.2"]["epochs"] == 10
    assert rows["303.3"]["basis"] == "measured" and rows["303.3"]["status"] == "interrupted"
    assert rows["404.4"]["basis"] == "predicted" and rows["404.4"]["status"] is None
    assert all(r["source_format"] == "carbontracker" for r in data["runs"])
    assert "measured by carbontracker 2.4.3 and read from its log files" in data["method"]
    # the intensity it applied, and where
    assert rows["101.1"]["intensity_g_per_kwh"] == pytest.approx(143.3)
    assert rows["101.1"]["intensity_zone"] == "Copenhagen, Capital Region, DK"
    # the PUE its log states
    assert rows["101.1"]["pue"] == pytest.approx(1.58)
    assert rows["101.1"]["pue_detail"].startswith("stated in the carbontracker log")


def test_pue_implied_by_the_figures_or_assumed(tmp_path):
    """Without the PUE line (versions before 2.x), the PUE is its actual kWh over mean power x
    duration; without an actual block, carbontracker's documented constant, labelled assumed."""
    carbontracker_pair(
        tmp_path,
        "1_2024-01-01T000000Z_",
        epoch_powers=[(60.0, [250.0], [40.0])] * 2,
        planned=2,
        actual_epochs=2,
        pue=1.67,
        state_pue=False,
    )
    carbontracker_pair(
        tmp_path,
        "2_2024-01-01T000000Z_",
        epoch_powers=[(60.0, [250.0], [40.0])] * 2,
        planned=4,
        actual_epochs=None,
        state_pue=False,
    )
    implied = read_carbontracker_log(
        partner_of(tmp_path / "1_2024-01-01T000000Z_carbontracker.log")
    )
    assert implied.header["pue"] == pytest.approx(1.67, rel=1e-6)
    assert implied.header["pue_detail"].startswith("implied by the log")
    assumed = read_carbontracker_log(
        partner_of(tmp_path / "2_2024-01-01T000000Z_carbontracker.log")
    )
    assert assumed.header["pue"] == CARBONTRACKER_PUE
    assert assumed.header["pue_detail"].startswith("assumed")


def test_per_epoch_power_and_energy_by_component(ct_dir):
    d, _ = ct_dir
    log = read_carbontracker_log(partner_of(d / "303.3_2024-03-28T105926Z_carbontracker.log"))
    assert len(log.epochs) == 2
    first = log.epochs[0]
    # four GPUs on a wrapped NumPy array line: 200 + 100 + 50 + 25 W
    assert first["power_w"] == {"gpu": 375.0, "cpu": 30.0, "total": 405.0}
    assert first["duration_s"] == 30.0
    assert first["energy_j"] == {"gpu:carbontracker": 375.0 * 30, "cpu:carbontracker": 900.0}
    assert first["energy_kwh"] == pytest.approx(405.0 * 30 / 3.6e6 * 1.58, rel=1e-6)
    assert log.header["sensors"][1]["device"].startswith("NVIDIA GeForce RTX 3090")
    assert log.header["carbontracker_version"] == "2.4.3"


def test_mixed_folder_aggregates_both_formats(ct_dir, capsys):
    d, fig = ct_dir
    (d / "native").mkdir()
    native = tracker_run(d / "native", epochs=2, zone="DK")
    data = _report_json(capsys, d)
    assert data["totals"]["runs"] == 5
    formats = sorted(r["source_format"] for r in data["runs"])
    assert formats == ["carbon_callbacks"] + ["carbontracker"] * 4
    footer = [json.loads(x) for x in native.read_text().splitlines()][-1]
    ct_only = aggregate_runs(
        [log for log in collect_logs([d]).logs if log.header.get("source_format")]
    )
    assert data["totals"]["energy_kwh"] == pytest.approx(ct_only.energy_kwh + footer["energy_kwh"])


def test_command_mode_and_days_and_the_saintslab_line_layout(tmp_path):
    assert parse_timedelta_s("1 day, 2:03:04.500000") == pytest.approx(93784.5)
    assert parse_timedelta_s("0:02:21.90") == pytest.approx(141.9)
    out = (
        "2022-11-14 15:44:48 - CarbonTracker: Actual consumption for 1 epoch(s):\n"
        "\tTime:\t0:02:22\n"
        "\tEnergy:\t0.009417 kWh\n"
        "\tCO2eq:\t0.960490 g\n"
        "\tThis is equivalent to:\n"
        "\t0.007977 km travelled by car\n"
    )
    blocks = parse_output_log(out)
    assert blocks["predicted"] is None
    actual = blocks["actual"]
    assert (actual.epochs, actual.duration_s, actual.energy_kwh, actual.co2_g) == (
        1,
        142.0,
        0.009417,
        0.96049,
    )
    assert actual.equivalents == {"km travelled by car": 0.007977}
    # carbontracker's CLI wraps a command as one epoch without prediction: "Actual consumption:"
    figures = carbontracker_pair(
        tmp_path,
        "9_2024-01-01T000000Z_",
        epoch_powers=[(100000.0, [300.0], [50.0])],
        planned=1,
        actual_epochs=1,
        with_prediction=False,
        epochs_before_pred=0,
    )
    text = (tmp_path / "9_2024-01-01T000000Z_carbontracker_output.log").read_text()
    assert "Actual consumption:\n" in text and "1 day, 3:46:40" in text
    log = read_carbontracker_log(
        partner_of(tmp_path / "9_2024-01-01T000000Z_carbontracker_output.log")
    )
    assert log.footer["epochs_completed"] == 1
    assert log.footer["duration_s"] == pytest.approx(100000.0)
    assert log.footer["energy_kwh"] == pytest.approx(figures["actual"]["kwh"], abs=1e-11)
    (figure,) = aggregate_runs([log]).runs
    assert figure.basis == "measured"


def test_std_log_old_layout_with_thread_and_level():
    text = (
        "2020-06-01 12:00:00,123 - MainThread - INFO - carbontracker version 1.1.6\n"
        "2020-06-01 12:00:00,200 - CarbonTrackerThread - INFO - Epoch 1:\n"
        "2020-06-01 12:00:00,201 - CarbonTrackerThread - INFO - Duration: 0:00:10.50\n"
        "2020-06-01 12:00:00,202 - CarbonTrackerThread - INFO - Average power usage (W) for "
        "gpu: None\n"
        "2020-06-01 12:00:00,203 - CarbonTrackerThread - INFO - Average power usage (W) for "
        "cpu: [12.5]\n"
    )
    info = parse_standard_log(text)
    assert info.version == "1.1.6"
    assert info.epochs == [(1, 10.5, {"gpu": [], "cpu": [12.5]})]


def test_lone_and_empty_carbontracker_files(tmp_path, capsys):
    carbontracker_pair(
        tmp_path,
        "1_2024-02-02T000000Z_",
        epoch_powers=[(20.0, [100.0], [10.0])] * 2,
        planned=2,
        actual_epochs=2,
    )
    (tmp_path / "1_2024-02-02T000000Z_carbontracker.log").unlink()  # output log alone
    carbontracker_pair(
        tmp_path,
        "2_2024-02-02T000000Z_",
        epoch_powers=[(20.0, [100.0], [10.0])] * 3,
        planned=5,
        actual_epochs=None,
        with_prediction=False,
    )
    (tmp_path / "2_2024-02-02T000000Z_carbontracker_output.log").unlink()  # killed early
    (tmp_path / "3_2024-02-02T000000Z_carbontracker.log").write_text("", encoding="utf-8")
    code = cli.main(["report", str(tmp_path), "-f", "json"])
    captured = capsys.readouterr()
    assert code == 0
    data = json.loads(captured.out)
    rows = {r["run"].split("_")[0]: r for r in data["runs"]}
    assert set(rows) == {"1", "2"}
    assert rows["1"]["basis"] == "measured"
    assert rows["2"]["basis"] == "partial" and rows["2"]["epochs"] == 3
    # partial: mean power x duration x carbontracker's PUE, three epochs
    assert rows["2"]["energy_kwh"] == pytest.approx(3 * 110.0 * 20.0 / 3.6e6 * 1.58)
    assert rows["2"]["co2_g"] == 0.0 and rows["2"]["intensity_source"].startswith("not reported")
    assert "3_2024-02-02T000000Z_carbontracker.log" in captured.err
    assert "no epoch and no consumption block" in captured.err
    assert "output log missing" in captured.err
    assert "no carbon intensity in the log" in captured.err
    assert "no carbon intensity" in rows["2"]["notes"]
