"""Per-epoch GPU traces (``carbon_callbacks.trace/1``) from the raw results of the GPU benchmarks.

    python bench/gpu_traces_from_results.py bench/traces/gpu
    python bench/gpu_traces_from_results.py bench/traces/gpu_heldout   # the 2026-11-23 runs

Writes one trace per run of meter v0.2 kept in ``bench/results/``: the tracker's GPU energy and
the epoch durations of ``bench/gpu_proof.py`` (1-second and 0.15-second epochs, counter and
sampled), of the 10-minute run (``bench/long_run.py``) and of the nnU-Net DDP proof (both
GPUs summed). ``bench/predict_accuracy.py`` evaluates the predictor on them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
J_PER_KWH = 3.6e6


def _trace(name: str, description: str, command: str, durations_s: list[float],
           energy_j: list[float], device: str, method: str) -> dict[str, Any]:  # fmt: skip
    return {
        "format": "carbon_callbacks.trace/1",
        "name": name,
        "description": description,
        "recorded_with": {
            "sensors": [{"name": "gpu", "component": "gpu", "device": device, "method": method}],
            "pue": 1.0,
            "command": command,
            "note": "GPU energy only, meter v0.2, from the benchmark's raw results",
        },
        "planned": {"epochs": len(energy_j), "total_steps": None},
        "epochs": [
            {"epoch": k, "duration_s": d, "energy_kwh": e / J_PER_KWH, "steps": None, "phases": []}
            for k, (d, e) in enumerate(zip(durations_s, energy_j, strict=True))
        ],
    }


def traces() -> list[dict[str, Any]]:
    out = []
    proof = json.loads((RESULTS / "gpu_proof_h100_v02_2026-11-22.json").read_text())
    cmd = "PYTHONPATH=. python bench/gpu_proof.py --reps 3"
    for key, name, what in [
        ("counter", "h100-unet-counter", "15 epochs of ~1 s"),
        ("sampled", "h100-unet-sampled", "15 epochs of ~1 s, sampled power forced"),
        ("counter_short_epochs", "h100-unet-counter-short-epochs", "30 epochs of ~0.15 s"),
        ("sampled_short_epochs", "h100-unet-sampled-short-epochs", "30 epochs of ~0.15 s, sampled"),
    ]:
        run = proof[key]
        method = "sampled" if "sampled" in key else "counter"
        out.append(
            _trace(
                name,
                f"Lightning U-Net on an H100, {what}",
                cmd,
                run["epoch_s"],
                run["tracker_gpu_j"],
                "NVIDIA H100 80GB HBM3",
                method,
            )  # fmt: skip
        )
    long = json.loads((RESULTS / "long_run_h100_2026-11-22.json").read_text())
    out.append(
        _trace(
            "h100-unet-10-minutes",
            "Lightning U-Net on an H100, 81 epochs of ~7.8 s",
            "PYTHONPATH=. python3 bench/long_run.py --minutes 10.5",
            [e["duration_s"] for e in long["epochs"]],
            [e["tracker_j"] for e in long["epochs"]],
            "NVIDIA H100 80GB HBM3",
            "counter",
        )  # fmt: skip
    )
    out.append(_nnunet_trace("nnunet_ddp_h200x2_2026-11-22.json", "PYTHONPATH=."))
    return out


def _nnunet_trace(file: str, pythonpath: str) -> dict[str, Any]:
    """The trace of run A (4 epochs, both GPUs summed) of an nnU-Net DDP proof's raw results."""
    epochs = json.loads((RESULTS / file).read_text())["run_a"]["epochs"]
    return _trace(
        "h200x2-nnunet-ddp",
        "nnU-Net 2D under DDP on 2 H200s, 4 epochs of 250 iterations",
        f"{pythonpath} python bench/nnunet_ddp_proof.py",
        [e["duration_s"] for e in epochs],
        [e["tracked_j"] for e in epochs],
        "2x NVIDIA H200",
        "counter",
    )


def heldout_traces() -> list[dict[str, Any]]:
    """Traces of the GPU runs of 2026-11-23 (meter with marks settled between adjacent steps).

    Recorded after the predictor's method was last changed, so nothing in it was fitted to
    them: held out for ``bench/predict_accuracy.py``.
    """
    out = []
    proof = json.loads((RESULTS / "gpu_proof_h200_span_2026-11-23.json").read_text())
    for key, name, what in [
        ("counter", "h200-unet-counter", "15 epochs of ~0.9 s"),
        ("sampled", "h200-unet-sampled", "15 epochs of ~0.9 s, sampled power forced"),
        ("counter_short_epochs", "h200-unet-counter-short-epochs", "30 epochs of ~0.1 s"),
        ("sampled_short_epochs", "h200-unet-sampled-short-epochs", "30 epochs of ~0.11 s, sampled"),
    ]:
        run = proof[key]
        out.append(
            _trace(
                name,
                f"Lightning U-Net on an H200, {what}",
                "CUDA_VISIBLE_DEVICES=0 PYTHONPATH=. python bench/gpu_proof.py --reps 3",
                run["epoch_s"],
                run["tracker_gpu_j"],
                "NVIDIA H200",
                "sampled" if "sampled" in key else "counter",
            )  # fmt: skip
        )
    for suffix, name, what, cmd in [
        ("", "h200x2-unet-ddp", "12 epochs of ~1.1 s", ""),
        ("_long", "h200x2-unet-ddp-long", "8 epochs of ~4.2 s", " --epochs 8 --samples 4096"),
    ]:
        ddp = json.loads((RESULTS / f"ddp_proof_h200x2_span{suffix}_2026-11-23.json").read_text())
        out.append(
            _trace(
                name,
                f"Lightning DDP U-Net on 2 H200s (sum over ranks), {what}",
                f"PYTHONPATH=. python bench/ddp_proof.py{cmd}",
                [e["duration_s"] for e in ddp["epochs"]],
                [e["tracked_j"] for e in ddp["epochs"]],
                "2x NVIDIA H200",
                "counter",
            )  # fmt: skip
        )
    for file, name, what, cmd in [
        ("hf_1gpu_h200_span", "h200-hf-gpt2-1gpu", "1 GPU",
         "CUDA_VISIBLE_DEVICES=0 PYTHONPATH=. python bench/hf_proof.py"),
        ("hf_torchrun_2xh200_span", "h200x2-hf-gpt2-torchrun", "2 GPUs under torchrun",
         "PYTHONPATH=. torchrun --nproc_per_node 2 bench/hf_proof.py"),
    ]:  # fmt: skip
        hf = json.loads((RESULTS / f"{file}_2026-11-23.json").read_text())
        out.append(
            _trace(
                name,
                f"HF Trainer, GPT-2-shaped 6x512, bf16, 8 epochs, {what}",
                cmd,
                [e["duration_s"] for e in hf["epochs"]],
                [e["tracked_j"] for e in hf["epochs"]],
                "NVIDIA H200",
                "counter",
            )  # fmt: skip
        )
    out.append(_nnunet_trace("nnunet_ddp_h200x2_span_2026-11-23.json", "PYTHONPATH=/tmp/site:."))
    for trace in out:
        trace["recorded_with"]["note"] = "GPU energy only, current meter, 2026-11-23 (held out)"
    return out


def main(folder: str) -> int:
    dest = Path(folder)
    dest.mkdir(parents=True, exist_ok=True)
    made = heldout_traces() if dest.name == "gpu_heldout" else traces()
    for trace in made:
        (dest / f"{trace['name']}.json").write_text(json.dumps(trace, indent=1) + "\n")
        print("written", dest / f"{trace['name']}.json", len(trace["epochs"]), "epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/traces/gpu"))
