"""``carbon-callbacks report``: tables and statements from real and hand-written run logs,
numbers checked against the logs' own records; bad input."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from cli_logs import hand_written_log, tracker_run

from carbon_callbacks import __version__
from carbon_callbacks.cli import commands as cli
from carbon_callbacks.core.intensity.static import zone_value

ROOT = Path(__file__).resolve().parents[1]


def _records(path: Path) -> list[dict]:
    """The log's records, parsed here independently of the package's reader."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _footer(path: Path) -> dict:
    return [r for r in _records(path) if r["type"] == "footer"][-1]


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Two completed tracker runs (DK, DE) and one killed after 3 of 10 planned epochs (made
    once: the tests only read them)."""
    logs = tmp_path_factory.mktemp("three_runs") / "logs"
    logs.mkdir()
    a = tracker_run(logs, epochs=3, zone="DK", gpu_w=200.0, cpu_w=50.0, run_name="unet-dk")
    b = tracker_run(logs, epochs=2, zone="DE", gpu_w=300.0, cpu_w=20.0, run_name="unet-de")
    c = tracker_run(logs, epochs=3, planned=10, zone="DK", kill=True, run_name="killed")
    return logs, a, b, c


def test_report_json_totals_follow_the_logs(three_runs, capsys):
    logs, a, b, c = three_runs
    code, out, err = _run_cli(capsys, "report", str(logs), "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    predictions = [r for r in _records(c) if r["type"] == "prediction"]
    assert predictions, "the killed run predicted after its first epoch"
    expected_kwh = _footer(a)["energy_kwh"] + _footer(b)["energy_kwh"]
    expected_kwh += predictions[-1]["energy_kwh"]
    expected_g = _footer(a)["co2_g"] + _footer(b)["co2_g"] + predictions[-1]["co2_g"]
    assert data["totals"]["runs"] == 3
    assert data["totals"]["energy_kwh"] == pytest.approx(expected_kwh, rel=1e-12)
    assert data["totals"]["co2_g"] == pytest.approx(expected_g, rel=1e-12)
    assert data["totals"]["by_basis"] == {"measured": 2, "predicted": 1, "partial": 0}
    rows = {row["run"]: row for row in data["runs"]}
    assert rows["killed"]["basis"] == "predicted" and rows["killed"]["status"] is None
    assert rows["killed"]["predicted_epochs"] == 10
    assert "no footer" in rows["killed"]["notes"]
    # per-component kWh: joules of the epoch records / 3.6e6 x PUE
    for name, path in (("unet-dk", a), ("unet-de", b)):
        epochs = [r for r in _records(path) if r["type"] == "epoch"]
        gpu_j = sum(r["energy_j"]["gpu:0"] for r in epochs)
        cpu_j = sum(r["energy_j"]["cpu:trace"] for r in epochs)
        assert rows[name]["energy_kwh_gpu"] == pytest.approx(gpu_j / 3.6e6 * 1.2)
        assert rows[name]["energy_kwh_cpu"] == pytest.approx(cpu_j / 3.6e6 * 1.2)
        assert rows[name]["energy_kwh_dram"] is None  # not measured: not a zero
        assert rows[name]["pue"] == 1.2
        assert rows[name]["methods"] == "cpu: sampled; gpu: counter"
    # the effective intensity is the zone's table value, with its source
    assert rows["unet-de"]["intensity_zone"] == "DE"
    assert rows["unet-de"]["intensity_g_per_kwh"] == pytest.approx(
        zone_value("DE").intensity_g_per_kwh
    )
    assert "Ember" in rows["unet-de"]["intensity_source"]
    assert rows["unet-dk"]["km_by_car"] == pytest.approx(_footer(a)["co2_g"] / 106.8)
    assert data["statement"].startswith("The training of models in this work is estimated to use")
    assert "1 predicted for their whole length" in data["method"]
    assert data["method"].startswith(f"Energy was measured with carbon_callbacks {__version__} (")
    units = [e["unit"] for e in data["equivalents"]]
    assert units[0] == "km" and "1.5 °C" in units[-1]


def test_report_csv_and_markdown_parse(three_runs, capsys):
    logs, a, b, c = three_runs
    code, out, _ = _run_cli(capsys, "report", str(logs), "-f", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    runs = [r for r in rows if r["row_type"] == "run"]
    total = [r for r in rows if r["row_type"] == "total"]
    assert len(runs) == 3 and len(total) == 1
    assert sum(float(r["energy_kwh"]) for r in runs) == pytest.approx(float(total[0]["energy_kwh"]))
    assert sum(float(r["co2_g"]) for r in runs) == pytest.approx(float(total[0]["co2_g"]))
    assert {r["basis"] for r in runs} == {"measured", "predicted"}
    assert [r["energy_kwh_dram"] for r in runs] == ["", "", ""]  # unmeasured: empty, not 0

    code, out, _ = _run_cli(capsys, "report", str(logs), "-f", "markdown")
    assert code == 0
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3 + 1  # heading, rule, 3 runs, total
    assert len({line.count(" | ") for line in table[2:]}) == 1
    assert "The training of models in this work is estimated to use" in out


def test_text_report_names_the_method_and_intensity(three_runs, capsys):
    logs, *_ = three_runs
    code, out, _ = _run_cli(capsys, "report", str(logs))
    assert code == 0
    assert "Statement:" in out and "Method:" in out
    assert "NVML's total-energy counter" in out
    assert "power usage effectiveness (PUE) of 1.2" in out
    assert "DE " in out and "DK " in out and "Ember via Our World in Data" in out
    assert "Predicted kWh" in out and "TOTAL" in out


def test_statement_reproduces_the_seed_sentence(tmp_path, capsys):
    """Seed 000 published: 39.948 kWh, 11.426 kg CO2eq, 94.898 km (carbontracker's 120.4 g/km).
    Two hand-written logs with those totals give that sentence."""
    per_kwh = 1.5 / 3.6e6  # kWh per joule at PUE 1.5
    gpu_j = 30.0 / per_kwh  # 30 kWh
    cpu_j = 9.948 / per_kwh
    intensity = 94.898 * 120.4 / 39.948  # g/kWh that gives 11 425.72 g
    hand_written_log(
        tmp_path / "a.carbon.jsonl",
        run_id="a",
        epochs=[(3600.0, gpu_j / 2, cpu_j / 2)],
        planned=1,
        intensity=intensity,
    )
    hand_written_log(
        tmp_path / "b.carbon.jsonl",
        run_id="b",
        epochs=[(3600.0, gpu_j / 2, cpu_j / 2)],
        planned=1,
        intensity=intensity,
    )
    code, out, _ = _run_cli(
        capsys, "report", str(tmp_path), "-f", "json", "--car-basis", "eea_2018_nedc"
    )
    assert code == 0
    statement = json.loads(out)["statement"]
    assert statement == (
        "The training of models in this work is estimated to use 39.948 kWh of electricity "
        "contributing to 11.426 kg of CO2eq. This is equivalent to 94.898 km travelled by car."
    )


def test_corrupt_and_truncated_logs_are_reported_and_the_rest_counted(tmp_path, capsys):
    good = tracker_run(tmp_path, epochs=2, zone="SE", run_name="good")
    cut = tracker_run(tmp_path, epochs=3, planned=3, zone="SE", run_name="cut")
    text = cut.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    footer_line = lines[-1]
    cut.write_text("".join(lines[:-1]) + footer_line[: len(footer_line) // 2], encoding="utf-8")
    (tmp_path / "garbage.carbon.jsonl").write_text("not json at all\n{]\n", encoding="utf-8")
    (tmp_path / "empty.carbon.jsonl").write_text("", encoding="utf-8")
    middle = tracker_run(tmp_path, epochs=2, zone="SE", run_name="corrupt-middle")
    mlines = middle.read_text(encoding="utf-8").splitlines(keepends=True)
    mlines.insert(2, '{"type": "epoch", "epoch": 7, "energy_kwh": \n')  # a torn write
    middle.write_text("".join(mlines), encoding="utf-8")

    code, out, err = _run_cli(capsys, "report", str(tmp_path), "-f", "json")
    assert code == 0
    data = json.loads(out)
    skipped = {Path(s["path"]).name for s in data["skipped"]}
    assert skipped == {"garbage.carbon.jsonl", "empty.carbon.jsonl"}
    assert "garbage.carbon.jsonl" in err and "empty.carbon.jsonl" in err
    assert "truncated" in err and "corrupt line" in err
    rows = {r["run"]: r for r in data["runs"]}
    assert set(rows) == {"good", "cut", "corrupt-middle"}
    # the truncated run lost its footer; all 3 planned epochs are in the file: measured
    cut_epochs = [r for r in _records(cut) if r["type"] == "epoch"]
    assert rows["cut"]["basis"] == "measured"
    assert rows["cut"]["energy_kwh"] == pytest.approx(sum(r["energy_kwh"] for r in cut_epochs))
    assert rows["corrupt-middle"]["energy_kwh"] == pytest.approx(_footer(middle)["energy_kwh"])
    total = _footer(good)["energy_kwh"] + rows["cut"]["energy_kwh"] + _footer(middle)["energy_kwh"]
    assert data["totals"]["energy_kwh"] == pytest.approx(total)


def test_no_logs_is_an_error_with_a_clear_message(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    code, out, err = _run_cli(capsys, "report", str(tmp_path))
    assert code == cli.EXIT_NOTHING
    assert out == ""
    assert "no run logs in this folder" in err and "*.carbon.jsonl" in err

    code, _, err = _run_cli(capsys, "report", str(tmp_path / "missing"))
    assert code == cli.EXIT_NOTHING
    assert "no such file or folder" in err

    (tmp_path / "bad.carbon.jsonl").write_text("garbage\n", encoding="utf-8")
    code, _, err = _run_cli(capsys, "report", str(tmp_path))
    assert code == cli.EXIT_NOTHING
    assert "no header record" in err and "nothing to report" in err


def test_a_missing_path_next_to_a_good_one_is_reported_not_fatal(tmp_path, capsys):
    log = tracker_run(tmp_path, epochs=1, zone="FR")
    code, out, err = _run_cli(capsys, "report", str(log), str(tmp_path / "nope"), "-f", "json")
    assert code == 0
    assert json.loads(out)["totals"]["runs"] == 1
    assert "nope: no such file or folder" in err


def test_progress_line_over_many_logs_and_output_file(tmp_path, capsys):
    for i in range(25):
        hand_written_log(
            tmp_path / f"r{i:02d}.carbon.jsonl",
            run_id=f"r{i}",
            epochs=[(1.0, 100.0, 10.0)],
            planned=1,
        )
    target = tmp_path / "out" / "report.md"
    code, out, err = _run_cli(
        capsys, "report", str(tmp_path), "--progress", "on", "-f", "markdown", "-o", str(target)
    )
    assert code == 0 and out == ""
    assert "reading logs 25/25" in err
    assert target.read_text(encoding="utf-8").count("\n| r") == 25
    per_run_kwh = 110.0 / 3.6e6 * 1.5
    code, out, err = _run_cli(capsys, "report", str(tmp_path), "-f", "json", "--progress", "off")
    assert "reading logs" not in err
    assert json.loads(out)["totals"]["energy_kwh"] == pytest.approx(25 * per_run_kwh)


def test_report_on_a_real_lightning_training(tmp_path, capsys):
    pl = pytest.importorskip("lightning.pytorch")
    pytest.importorskip("torch")
    from lightning_tiny import tiny_loader, tiny_module_class

    from carbon_callbacks.integrations.lightning import CarbonCallback

    Tiny = tiny_module_class(pl.LightningModule)
    loader = tiny_loader()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            CarbonCallback(log_dir=tmp_path / "logs", zone="PL", verbose=0, interval_s=0.05)
        ],
    )
    trainer.fit(Tiny(), loader)
    (log,) = (tmp_path / "logs").glob("*.carbon.jsonl")
    code, out, err = _run_cli(capsys, "report", str(tmp_path / "logs"), "-f", "json")
    assert code == 0, err
    data = json.loads(out)
    footer = _footer(log)
    (row,) = data["runs"]
    assert row["status"] == "completed" and row["basis"] == "measured" and row["epochs"] == 2
    assert row["energy_kwh"] == pytest.approx(footer["energy_kwh"])
    assert row["co2_g"] == pytest.approx(footer["co2_g"])
    assert row["intensity_zone"] == "PL"
    assert math.isclose(row["co2_g"], row["energy_kwh"] * zone_value("PL").intensity_g_per_kwh)


def test_every_command_has_help_and_the_console_script_is_declared(capsys):
    for command in ("report", "run", "estimate", "regions", "plot"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: carbon-callbacks {command}" in capsys.readouterr().out
    assert cli.main([]) == cli.EXIT_USAGE
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["carbon-callbacks"] == "carbon_callbacks.cli:main"


def test_phases_outside_epochs_are_named_not_silently_dropped(tmp_path, capsys):
    """Work measured with track() outside epochs is in the run's totals, and the note says so."""
    import time

    from power_traces import ConstantCounterSensor

    from carbon_callbacks.core.tracker import CarbonTracker

    tracker = CarbonTracker(
        log_dir=tmp_path,
        zone="DK",
        verbose=0,
        interval_s=0.05,
        sensors=[ConstantCounterSensor("gpu:0", 100.0)],
    )
    with tracker.track("inference"):
        time.sleep(0.2)
    tracker.stop()
    code, out, err = _run_cli(capsys, "report", str(tmp_path), "-f", "json")
    assert code == 0
    (row,) = json.loads(out)["runs"]
    assert "1 phase(s) measured outside epochs (inference" in row["notes"]
    assert "included in the run's totals" in err
    from carbon_callbacks.core.runlog import read_run_log

    (phase,) = [r for r in read_run_log(tracker.log_path).phases if r["name"] == "inference"]
    assert row["energy_kwh"] == row["energy_kwh_gpu"] == pytest.approx(phase["energy_kwh"])
