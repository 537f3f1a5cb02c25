"""Model selection on synthetic run logs: Pareto front, L + beta * C ranking, budget choice,
plot, and clear messages for metrics that were never logged."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbon_callbacks.core.runlog import RunLogWriter
from carbon_callbacks.report.selection import (
    SelectionError,
    best_within_budget,
    format_table,
    higher_is_better,
    load_candidates,
    pareto_front,
    plot,
    rank,
)

# seed 002 in numbers of the same shape: (name, gCO2eq, Dice); F48 is dominated by F64
RUNS = [
    ("F4", 9.0, 0.756),
    ("F8", 11.0, 0.752),  # dominated by F4 (more CO2, lower Dice)
    ("F16", 30.0, 0.760),
    ("F32", 80.0, 0.762),
    ("F48", 300.0, 0.761),  # dominated by F64
    ("F64", 180.0, 0.764),
]


def _write(
    folder: Path,
    name: str,
    co2_g: float,
    metrics: dict[str, float],
    *,
    status: str | None = "completed",
    stop_reason: str | None = None,
    epochs: int = 10,
    epochs_done: int | None = None,
    run_id: str | None = None,
) -> Path:
    run_id = run_id or f"id{name.lower()}"
    path = folder / f"{name}_{run_id}.carbon.jsonl"
    writer = RunLogWriter(path)
    writer.write(
        {"type": "header", "schema": 1, "run_id": run_id, "run_name": name, "epochs": epochs}
    )
    done = epochs if epochs_done is None else epochs_done
    for i in range(done):
        writer.write(
            {
                "type": "epoch",
                "epoch": i,
                "duration_s": 1.0,
                "energy_kwh": co2_g / 100 / done,
                "co2_g": co2_g / done,
            }
        )
    for metric, value in metrics.items():
        writer.write({"type": "metric", "name": metric, "value": value, "epoch": epochs - 1})
    if status is not None:
        writer.write(
            {
                "type": "footer",
                "status": status,
                "energy_kwh": co2_g / 100,
                "co2_g": co2_g,
                "epochs_completed": epochs,
                "epochs_monitored": epochs,
                "stop_reason": stop_reason,
            }
        )
    writer.close()
    return path


@pytest.fixture
def logs(tmp_path):
    for name, co2, dice in RUNS:
        _write(tmp_path, name, co2, {"val/dice": dice, "val/loss": 1 - dice})
    return tmp_path


def test_candidates_carry_the_metric_and_the_footprint(logs):
    cands = load_candidates(logs, "val/dice")
    by_name = {c.name: c for c in cands}
    assert set(by_name) == {r[0] for r in RUNS}
    assert by_name["F16"].value == 0.760 and by_name["F16"].co2_g == 30.0
    assert by_name["F16"].loss == pytest.approx(1 - 0.760)  # higher is better: L = 1 - Dice
    assert by_name["F16"].basis == "measured"
    loss = {c.name: c for c in load_candidates(logs, "val/loss")}
    assert loss["F16"].loss == pytest.approx(1 - 0.760)  # lower is better: L = the metric


def test_pareto_front(logs):
    front = pareto_front(load_candidates(logs, "val/dice"))
    assert [c.name for c in front] == ["F4", "F16", "F32", "F64"]


@pytest.mark.parametrize(
    ("beta", "best"),
    [(0.0, "F64"), (1e-5, "F64"), (1e-4, "F16"), (1e-3, "F4")],
)
def test_ranking_by_l_plus_beta_c(logs, beta, best):
    ranked = rank(load_candidates(logs, "val/dice"), beta)
    assert ranked[0][0].name == best
    objectives = [j for _, j in ranked]
    assert objectives == sorted(objectives)
    for cand, j in ranked:
        assert j == pytest.approx((1 - cand.value) + beta * cand.co2_g)


def test_ranking_refuses_a_negative_beta(logs):
    with pytest.raises(SelectionError, match="beta must be"):
        rank(load_candidates(logs, "val/dice"), -1.0)


@pytest.mark.parametrize(("budget", "best"), [(100.0, "F32"), (30.0, "F16"), (10.0, "F4")])
def test_best_model_within_a_budget(logs, budget, best):
    assert best_within_budget(load_candidates(logs, "val/dice"), budget).name == best


def test_no_model_within_a_tiny_budget(logs):
    assert best_within_budget(load_candidates(logs, "val/dice"), 1.0) is None


def test_a_metric_never_logged_names_the_metrics_that_were(logs):
    with pytest.raises(SelectionError) as info:
        load_candidates(logs, "val/dic")
    message = str(info.value)
    assert "'val/dic' was never logged in 6 of 6 run(s)" in message
    assert "'val/dice' (6 run(s))" in message and "'val/loss' (6 run(s))" in message
    assert "Did you mean 'val/dice'?" in message


def test_one_run_without_the_metric_is_named_or_skipped(logs):
    odd = _write(logs, "F128", 500.0, {"val/acc": 0.5})
    with pytest.raises(SelectionError, match=r"never logged in 1 of 7 run\(s\) \(" + str(odd)):
        load_candidates(logs, "val/dice")
    assert len(load_candidates(logs, "val/dice", on_missing="skip")) == 6


def test_no_metric_at_all_says_how_to_record_one(tmp_path):
    _write(tmp_path, "A", 1.0, {})
    with pytest.raises(SelectionError, match="Set monitor_metric=.val/dice. on the callback"):
        load_candidates(tmp_path, "val/dice")


def test_no_run_log_found(tmp_path):
    with pytest.raises(SelectionError, match="no run log"):
        load_candidates(tmp_path, "val/dice")


def test_metric_direction_from_its_name_or_stated():
    assert higher_is_better("val/dice") and higher_is_better("val_acc")
    assert not higher_is_better("val/loss") and not higher_is_better("hd95")
    with pytest.raises(SelectionError, match="pass higher_is_better"):
        higher_is_better("val/quality")
    assert higher_is_better("val/quality", True)


def test_budget_stopped_and_killed_runs_are_labelled(logs):
    _write(logs, "F96", 100.0, {"val/dice": 0.739}, status="interrupted", stop_reason="budget")
    _write(logs, "F128", 50.0, {"val/dice": 0.70}, status=None, epochs_done=4)  # killed
    cands = {c.name: c for c in load_candidates(logs, "val/dice")}
    assert cands["F96"].stopped_by_budget and cands["F96"].basis == "measured"
    assert cands["F128"].basis == "partial" and cands["F128"].status is None
    table = format_table(list(cands.values()), beta=1e-4, budget_g=100.0)
    f96 = next(line for line in table.splitlines() if "F96" in line)
    assert "stopped early" in f96
    assert "best within budget" in next(line for line in table.splitlines() if " F32 " in line)


def test_same_run_name_twice_is_told_apart(tmp_path):
    _write(tmp_path, "unet", 1.0, {"val/dice": 0.5}, run_id="aaa")
    _write(tmp_path, "unet", 2.0, {"val/dice": 0.6}, run_id="bbb")
    names = sorted(c.name for c in load_candidates(tmp_path, "val/dice"))
    assert names == ["unet (aaa)", "unet (bbb)"]


def test_plot_has_points_front_and_budget_line(logs):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    cands = load_candidates(logs, "val/dice")
    fig = plot(cands, budget_g=100.0, title="U-Nets")
    ax = fig.axes[0]
    offsets = [tuple(c.get_offsets()[0]) for c in ax.collections if len(c.get_offsets())]
    assert (30.0, 0.760) in offsets and len(offsets) == len(RUNS) + 1  # + the star
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["Pareto front"].get_xdata()) == [9.0, 30.0, 80.0, 180.0]
    budget_line = lines["budget 100 gCO2eq"]
    assert list(budget_line.get_xdata()) == [100.0, 100.0]
    assert ax.get_xlabel() == "training footprint (gCO2eq)" and ax.get_ylabel() == "val/dice"
    assert any("km" in a.get_xlabel() for a in fig.axes[0].child_axes)
    import matplotlib.pyplot as plt

    plt.close(fig)
