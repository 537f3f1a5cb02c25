"""PNG figures from run logs: produced, valid, non-empty; from Python and from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_logs import carbontracker_pair, tracker_run

from carbon_callbacks.cli import commands as cli

mpimg = pytest.importorskip("matplotlib.image")

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, min_bytes: int = 5_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) >= min_bytes, (path, len(data))
    pixels = mpimg.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 400 and height >= 200
    assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_python_api_figures_for_a_run_with_a_prediction(tmp_path):
    from carbon_callbacks.core.runlog import read_run_log
    from carbon_callbacks.report import plots
    from carbon_callbacks.report.regions import what_if

    log_path = tracker_run(tmp_path / "logs", epochs=3, planned=8, kill=True, zone="DE")
    log = read_run_log(log_path)
    assert log.latest_prediction is not None
    written = plots.plot_run(log, tmp_path / "png")
    assert [p.name.split("_", 1)[1] for p in written] == [
        "energy_co2_per_epoch.png",
        "cumulative_co2.png",
        "power_by_component.png",
    ]
    for path in written:
        _assert_png(path)
    # the per-epoch prediction is the remaining predicted energy spread over the epochs to come
    pred = log.latest_prediction
    after = pred["after_epochs"]
    measured = sum(r["energy_kwh"] for r in log.epochs if r["epoch"] < after)
    _, planned, central, low, high = plots._remaining_per_epoch(log, "energy_kwh")
    assert planned == 8
    assert central == pytest.approx((pred["energy_kwh"] - measured) / (8 - after))
    assert low <= central <= high
    regions = plots.plot_regions(what_if(1.5, ["SE", "PL", "WORLD"]), tmp_path / "r.png")
    _assert_png(regions, min_bytes=3_000)


def test_cli_plot_over_a_folder_with_mixed_and_bad_logs(tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    tracker_run(logs, epochs=2, zone="DK", run_name="a")
    carbontracker_pair(
        logs,
        "7_2024-01-01T000000Z_",
        epoch_powers=[(10.0, [100.0], [10.0])] * 2,
        planned=2,
        actual_epochs=2,
    )
    (logs / "broken.carbon.jsonl").write_text("nope\n", encoding="utf-8")
    out_dir = tmp_path / "png"
    code = cli.main(["plot", str(logs), "-o", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = [Path(line) for line in captured.out.splitlines()]
    assert len(printed) == 2 * 3 + 1 and printed[-1].name == "regions_what_if.png"
    for path in printed:
        _assert_png(path, min_bytes=3_000)
    assert "broken.carbon.jsonl" in captured.err


def test_cli_plot_errors(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == cli.EXIT_NOTHING
    assert "no run log to plot" in capsys.readouterr().err
    tracker_run(tmp_path, epochs=1)
    assert cli.main(["plot", str(tmp_path), "-o", str(tmp_path / "p"), "--run", "nope"]) == 1
    code = cli.main(["plot", str(tmp_path), "-o", str(tmp_path / "p"), "--zones", "ZZ"])
    assert code == cli.EXIT_NOTHING and "not a known zone" in capsys.readouterr().err


def test_importing_plots_and_the_cli_imports_no_plotting_or_training_framework():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = (
        "import sys, carbon_callbacks.report.plots, carbon_callbacks.cli; "
        "carbon_callbacks.cli.build_parser(); "
        "print(sorted(m for m in ('matplotlib', 'torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == "[]"
