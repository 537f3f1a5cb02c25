"""Run logs for the CLI tests: made by the real tracker with known power traces, by hand, and
in carbontracker's documented log format (see ../shared/notes/carbontracker.md)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from power_traces import ConstantCounterSensor, TracePowerSensor

from carbon_callbacks.core.tracker import CarbonTracker


def tracker_run(
    log_dir: Path,
    *,
    epochs: int = 3,
    planned: int | None = None,
    gpu_w: float = 200.0,
    cpu_w: float = 50.0,
    epoch_s: float = 0.12,
    zone: str = "DK",
    pue: float = 1.2,
    run_name: str | None = None,
    kill: bool = False,
) -> Path:
    """A real tracker run on constant-power sensors (GPU counter + CPU power trace).

    ``kill`` leaves the log without a footer (as a killed process would).
    """
    tracker = CarbonTracker(
        epochs=planned or epochs,
        log_dir=log_dir,
        zone=zone,
        pue=pue,
        verbose=0,
        interval_s=0.05,
        run_name=run_name,
        sensors=[
            ConstantCounterSensor("gpu:0", gpu_w),
            TracePowerSensor("cpu:trace", lambda t: cpu_w, component="cpu"),
        ],
    )
    for _ in range(epochs):
        tracker.epoch_start()
        time.sleep(epoch_s)
        tracker.epoch_end()
    if kill:
        tracker._meter.stop()  # a killed process writes nothing more
        tracker._log.close()
    else:
        tracker.stop()
    assert tracker.log_path is not None
    return Path(tracker.log_path)


def hand_written_log(
    path: Path,
    *,
    run_id: str,
    epochs: list[tuple[float, float, float]],
    planned: int | None,
    status: str | None = "completed",
    prediction: dict | None = None,
    intensity: float = 100.0,
    zone: str = "SE",
    pue: float = 1.5,
) -> Path:
    """A run log written by hand: ``epochs`` = (duration_s, gpu_j, cpu_j) per epoch.

    Energy per epoch = (gpu_j + cpu_j) / 3.6e6 x pue; CO2 = energy x intensity.
    """
    estimate = {
        "intensity_g_per_kwh": intensity,
        "zone": zone,
        "source": "hand-written test value",
        "basis": "lifecycle",
        "kind": "annual_average",
        "year": 2024,
        "start_unix_s": None,
        "end_unix_s": None,
    }
    header = {
        "type": "header",
        "schema": 1,
        "run_id": run_id,
        "run_name": None,
        "started_at_unix_s": 1_700_000_000.0,
        "started_at": "2023-11-14T22:13:20+00:00",
        "config": {"monitor_epochs": -1},
        "sensors": [
            {"name": "gpu:0", "component": "gpu", "device": "test", "method": "counter"},
            {"name": "cpu:package-0", "component": "cpu", "device": "test", "method": "counter"},
        ],
        "intensity": estimate,
        "pue": pue,
        "epochs": planned,
    }
    lines = [header]
    cumulative = {"energy_kwh": 0.0, "co2_g": 0.0, "duration_s": 0.0}
    for index, (duration, gpu_j, cpu_j) in enumerate(epochs):
        energy = (gpu_j + cpu_j) / 3.6e6 * pue
        co2 = energy * intensity
        cumulative = {
            "energy_kwh": cumulative["energy_kwh"] + energy,
            "co2_g": cumulative["co2_g"] + co2,
            "duration_s": cumulative["duration_s"] + duration,
        }
        lines.append(
            {
                "type": "epoch",
                "epoch": index,
                "duration_s": duration,
                "energy_j": {"gpu:0": gpu_j, "cpu:package-0": cpu_j},
                "methods": {"gpu:0": "counter", "cpu:package-0": "counter"},
                "energy_kwh": energy,
                "co2_g": co2,
                "intensity": estimate,
                "pue": pue,
                "power_w": {
                    "gpu": gpu_j / duration,
                    "cpu": cpu_j / duration,
                    "total": (gpu_j + cpu_j) / duration,
                },
                "cumulative": cumulative,
            }
        )
    if prediction is not None:
        lines.append({"type": "prediction", **prediction})
    if status is not None:
        lines.append(
            {
                "type": "footer",
                "status": status,
                "duration_s": cumulative["duration_s"],
                "energy_kwh": cumulative["energy_kwh"],
                "co2_g": cumulative["co2_g"],
                "epochs_duration_s": cumulative["duration_s"],
                "epochs_completed": len(epochs),
                "epochs_monitored": len(epochs),
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


# -- carbontracker's format ---------------------------------------------------------------------


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _block(kind: str, epochs: int | None, seconds: float, kwh: float, g: float) -> str:
    """An ``Actual``/``Predicted consumption`` block as carbontracker prints it."""
    what = f"{kind} consumption for {epochs} epoch(s):" if epochs else f"{kind} consumption:"
    return (
        f"\n{what}\n"
        f"\tTime:\t{dt.timedelta(seconds=seconds)}\n"
        f"\tEnergy:\t{kwh:.12f} kWh\n"
        f"\tCO2eq:\t{g:.12f} g\n"
        f"\tThis is equivalent to:\n"
        f"\t{g / 106.8:.12f} km travelled by car"
    )


def carbontracker_pair(
    log_dir: Path,
    stem: str,
    *,
    epoch_powers: list[tuple[float, list[float], list[float]]],
    planned: int,
    actual_epochs: int | None,
    intensity: float = 143.3,
    pue: float = 1.58,
    interrupted: bool = False,
    with_prediction: bool = True,
    epochs_before_pred: int = 1,
    wrap_gpu_array: bool = False,
    state_pue: bool = True,
) -> dict:
    """Write carbontracker's standard and output logs for one tracker.

    ``epoch_powers`` = (duration_s, [W per GPU], [W per CPU]) per epoch. Energy follows
    carbontracker: per epoch sum(mean W) x duration / 3.6e6, x PUE; CO2 = kWh x intensity.
    Returns the actual and predicted figures written.
    """
    t = dt.datetime(2024, 3, 26, 10, 59, 26)
    std: list[str] = [
        f"{_stamp(t)} - carbontracker version 2.4.3",
        f"{_stamp(t)} - The following components were found: GPU with device(s) NVIDIA "
        "GeForce RTX 3090, NVIDIA GeForce RTX 3090. CPU with device(s) Intel(R) Core(TM) "
        "i7-10700K CPU @ 3.80GHz.",
        f"{_stamp(t)} - Monitoring thread started.",
    ]
    if state_pue:  # version 2.x states its PUE at start
        std.insert(
            1,
            f"{_stamp(t)} - Only predicted and actual consumptions are multiplied by a PUE "
            f"coefficient of {pue} (Daniel Bizo, 2023, Uptime Institute Global Data Center "
            "Survey).",
        )
    out: list[str] = [
        f"{_stamp(t)} - CarbonTracker: The following components were found: GPU with device(s) "
        "NVIDIA GeForce RTX 3090. CPU with device(s) cpu:0."
    ]
    per_epoch_kwh = []
    durations = []
    for number, (duration, gpu_w, cpu_w) in enumerate(epoch_powers, start=1):
        t += dt.timedelta(seconds=duration)
        durations.append(duration)
        std.append(f"{_stamp(t)} - Epoch {number}:")
        std.append(f"{_stamp(t)} - Duration: {dt.timedelta(seconds=duration)}")
        gpu_text = " ".join(f"{w:.8f}" for w in gpu_w)
        if wrap_gpu_array and len(gpu_w) > 1:
            half = len(gpu_w) // 2
            first = " ".join(f"{w:.8f}" for w in gpu_w[:half])
            rest = " ".join(f"{w:.8f}" for w in gpu_w[half:])
            std.append(f"{_stamp(t)} - Average power usage (W) for gpu: [{first}")
            std.append(f" {rest}]")
        else:
            std.append(f"{_stamp(t)} - Average power usage (W) for gpu: [{gpu_text}]")
        cpu_text = " ".join(f"{w:.8f}" for w in cpu_w)
        std.append(f"{_stamp(t)} - Average power usage (W) for cpu: [{cpu_text}]")
        per_epoch_kwh.append((sum(gpu_w) + sum(cpu_w)) * duration / 3.6e6 * pue)
        if with_prediction and number == epochs_before_pred:
            done = per_epoch_kwh[:number]
            pred_kwh = planned * sum(done) / len(done)
            pred_s = planned * sum(durations) / len(durations)
            std.append(
                f"{_stamp(t)} - Carbon intensity for the next {dt.timedelta(seconds=pred_s)} is "
                f"predicted to be {intensity:.2f} gCO2/kWh at detected location: Copenhagen, DK."
            )
            out.append(
                f"{_stamp(t)} - CarbonTracker: "
                + _block("Predicted", planned, pred_s, pred_kwh, pred_kwh * intensity)
            )
    result = {"actual": None, "predicted": None}
    if with_prediction:
        done = per_epoch_kwh[:epochs_before_pred]
        pred_kwh = planned * sum(done) / len(done)
        result["predicted"] = {"epochs": planned, "kwh": pred_kwh, "g": pred_kwh * intensity}
    if interrupted:
        std.append(
            f"{_stamp(t)} - Training was interrupted before all {planned} epochs were monitored."
        )
    if actual_epochs is not None:
        kwh = sum(per_epoch_kwh[:actual_epochs])
        seconds = sum(durations[:actual_epochs])
        std.append(
            f"{_stamp(t)} - Carbon intensities (gCO2/kWh) fetched every 900 s at detected "
            f"location Copenhagen, DK: [{intensity}]"
        )
        std.append(
            f"{_stamp(t)} - Average carbon intensity during training was {intensity:.2f} "
            "gCO2/kWh at detected location: Copenhagen, Capital Region, DK."
        )
        epochs_word = actual_epochs if epochs_before_pred else None
        out.append(
            f"{_stamp(t)} - CarbonTracker: "
            + _block("Actual", epochs_word, seconds, kwh, kwh * intensity)
        )
        result["actual"] = {"epochs": actual_epochs, "kwh": kwh, "g": kwh * intensity}
        std.append(f"{_stamp(t)} - Monitoring thread ended.")
        out.append(f"{_stamp(t)} - CarbonTracker: Finished monitoring.")
    (log_dir / f"{stem}carbontracker.log").write_text("\n".join(std) + "\n", encoding="utf-8")
    (log_dir / f"{stem}carbontracker_output.log").write_text(
        "\n".join(out) + "\n", encoding="utf-8"
    )
    return result
