"""nnU-Net's own DDP (``-num_gpus 2``) with the carbon trainer, against NVML's counters.

    PYTHONPATH=. python -m bench distributed nnunet --out nnunet_ddp.json [--copy-logs DIR]
    PYTHONPATH=. python -m bench distributed nnunet --dry-run   # CPU smoke check: no GPU, no DDP

On a host with 2 GPUs (nnunetv2 2.6-2.8 installed):

1. A synthetic 2D dataset (``tests/nnunet_dataset.py``, the CPU tests' helper: PNG squares on
   noise) is written, fingerprinted, planned and preprocessed with nnU-Net's own API; the 2D
   plan's batch size is raised (``--batch``, global, split over the ranks by nnU-Net).
2. Run A: ``python -m nnunetv2.run.run_training 999 2d 0 -tr nnUNetTrainerCarbonProof
   -num_gpus 2`` (``nnUNetv2_train``; mp.spawn + NCCL), a few short epochs, with one NVML
   counter poller per GPU running beside it (``bench/poller.py``). The trainer
   (``bench/nnunet_ddp_trainers/``) is ``nnUNetTrainerCarbon`` with a short schedule; rank 1
   also writes a witness of its own epoch windows (``carbon_rank1/own_windows.jsonl``).
3. Run B: the same with ``nnUNetTrainerCarbonProofRank1Budget``, where rank 1 alone holds an
   energy budget spent after epoch 0: every rank must stop there.
4. The analysis (:func:`analyse_measured`, :func:`analyse_budget`) reads rank 0's run log, the
   witness, nnU-Net's logger from ``checkpoint_final.pth`` and the counters, and writes one
   JSON. The exit code is 1 when a gated check fails.

Rank 0's run log combines the ranks (the tracker's combination): it holds every rank's GPU
(``rank1/gpu:1``) and rank 0's CPU/DRAM, over rank 0's epoch windows, and nnU-Net's logger holds
the same whole-run figures. Each rank's GPU energy (from rank 0's log, checked equal to the
witness) is compared with its own GPU's counter over its own windows (the witness's edges);
the logged figures with both counters over rank 0's windows. ``--dry-run`` runs steps 1 and 4
on the CPU: one in-process training of the proof trainer with constant-power sensors (a stated
GPU of 200 W) and synthetic counter steps of that power, so the whole analysis runs and must
pass.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import nnunet_dataset  # noqa: E402 - tests/nnunet_dataset.py, shared with the CPU tests

from bench.poller import energy_at, start_pollers, stop_pollers  # noqa: E402
from carbon_callbacks.core import metrics as keys  # noqa: E402
from carbon_callbacks.core.runlog import LOG_SUFFIX, RunLog, read_run_log  # noqa: E402

TRAINER_DIR = ROOT / "bench" / "nnunet_ddp_trainers"
MEASURED_TRAINER = "nnUNetTrainerCarbonProof"
BUDGET_TRAINER = "nnUNetTrainerCarbonProofRank1Budget"
WITNESS_PATTERN = re.compile(r"carbon_rank(\d+)$")
WITNESS_FILE = "own_windows.jsonl"
J_PER_KWH = 3.6e6
#: Relative tolerance for figures that must agree exactly (sums of the same floats).
EXACT_REL = 1e-6

#: Counter steps of one GPU: (times in unix s, energies in J), see bench.poller.load_steps.
Steps = tuple[list[float], list[float]]

DRY_GPU_W = 200.0
DRY_GPU_DEVICE = "dry-run GPU (GPU-00000000-0000-0000-0000-dry000000000)"


# -- reading what a run left ---------------------------------------------------------------------
def gpu_key(device: str) -> str:
    """A GPU's identity from a sensor's ``device`` text: the UUID in brackets, lower case,
    without ``GPU-``; the whole text where it names none."""
    match = re.search(r"\((GPU-[^)]+)\)", device)
    text = match.group(1) if match else device
    return normalise_uuid(text)


def normalise_uuid(uuid: str) -> str:
    """``GPU-1A2B...`` and ``1a2b...`` (torch's form) compare equal."""
    text = str(uuid).strip().lower()
    return text[4:] if text.startswith("gpu-") else text


@dataclass
class Witness:
    """What a rank > 0 measured over its own epoch edges (``carbon_rank<r>/own_windows.jsonl``).

    Attributes:
        path: the file.
        windows: one record per epoch: ``start_unix_s``, ``end_unix_s``, ``duration_s``,
            ``energy_j`` (this rank's sensor names, without ``rank<r>/``).
        decisions: the rank's tracker after each epoch: ``should_stop``, ``stop_reason``.
    """

    path: Path
    windows: list[dict[str, Any]]
    decisions: list[dict[str, Any]]


def read_witness(path: Path) -> Witness:
    """A witness file (a truncated last line is left out)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return Witness(
        Path(path),
        [r for r in records if r.get("type") == "window"],
        [r for r in records if r.get("type") == "decision"],
    )


@dataclass
class RankView:
    """Where one rank's figures are: rank 0's run log, and the prefix of its keys there.

    Attributes:
        rank: the DDP rank.
        log: rank 0's run log.
        prefix: ``"rank<r>/"`` in a log that combines the ranks; ``""`` in a run of one rank.
        windows: this rank's own epoch records (edges); rank 0's are the log's own, a rank
            > 0's come from its witness (``None`` without one).
    """

    rank: int
    log: RunLog
    prefix: str
    windows: list[dict[str, Any]] | None

    def sensors(self, component: str | None = None) -> list[dict[str, Any]]:
        """This rank's sensors (header), optionally of one component."""
        out = []
        for sensor in self.log.header.get("sensors", []):
            name = str(sensor.get("name", ""))
            if self.prefix and not name.startswith(self.prefix):
                continue
            if not self.prefix and re.match(r"rank\d+/", name):
                continue
            if component is None or sensor.get("component") == component:
                out.append(sensor)
        return out

    def gpu_j(self, record: Mapping[str, Any]) -> float:
        """GPU energy in J of this rank in one epoch (or footer) record."""
        names = {str(s["name"]) for s in self.sensors("gpu")}
        return sum(_f(v) for k, v in (record.get("energy_j") or {}).items() if k in names)


def is_combined(log: RunLog) -> bool:
    """The run log combines the ranks (the tracker's combination: ``rank<r>/`` keys)."""
    return bool((log.header.get("ranks") or {}).get("combined"))


def rank_views(main: RunLog, witnesses: Mapping[int, Witness]) -> list[RankView]:
    """One view per rank of rank 0's run log: by ``rank<r>/`` prefix in a combined log; a log
    that does not combine the ranks holds rank 0 only (the others are missing from it)."""
    if not is_combined(main):
        return [RankView(0, main, "", main.epochs)]
    ranks = sorted(
        {
            int(m.group(1))
            for s in main.header.get("sensors", [])
            if (m := re.match(r"rank(\d+)/", str(s.get("name", ""))))
        }
    )
    return [
        RankView(
            r,
            main,
            f"rank{r}/",
            main.epochs if r == 0 else (witnesses[r].windows if r in witnesses else None),
        )
        for r in ranks
    ]


def find_outputs(output_folder: Path) -> tuple[list[Path], dict[int, Path]]:
    """(run logs in the output folder itself, {rank: witness file})."""
    main = sorted(output_folder.glob(f"*{LOG_SUFFIX}"))
    witnesses = {}
    for folder in sorted(output_folder.glob("carbon_rank*")):
        match = WITNESS_PATTERN.search(folder.name)
        if match and (folder / WITNESS_FILE).exists():
            witnesses[int(match.group(1))] = folder / WITNESS_FILE
    return main, witnesses


def load_logger(checkpoint: Path) -> dict[str, list[Any]]:
    """nnU-Net's logger lists as saved in a checkpoint (``checkpoint['logging']``)."""
    import torch

    saved = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    return dict(saved["logging"])


# -- checks ------------------------------------------------------------------------------------
def _check(ok: bool, detail: str, gated: bool = True, **figures: Any) -> dict[str, Any]:
    return {"ok": bool(ok), "gated": gated, "detail": detail, **figures}


def _close(a: float, b: float, rel: float = EXACT_REL) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def _window_j(steps: Steps | None, start_unix_s: float, end_unix_s: float) -> float:
    """Counter energy in J over a window; NaN for a GPU not polled or a window outside."""
    if steps is None:
        return math.nan
    times, energy = steps
    try:
        return energy_at(times, energy, end_unix_s) - energy_at(times, energy, start_unix_s)
    except ValueError:  # outside the polled span
        return math.nan


def _f(value: Any) -> float:
    """A number from a record; NaN for null (an unmeasured epoch) or anything else."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def _ratio(tracked: float, reference: float) -> float:
    return tracked / reference if reference > 0 else math.nan


def analyse_measured(
    main: RunLog,
    witnesses: Mapping[int, Witness],
    logger: Mapping[str, list[Any]],
    counters: Mapping[str, Steps],
    *,
    world_size: int,
    planned_epochs: int,
    main_logs_found: int = 1,
    cuda_uuids: Sequence[str] | None = None,
    gpu_method: str = "counter",
    tolerance: float = 0.005,
    epoch_tolerance: float = 0.02,
) -> dict[str, Any]:
    """Compare a measured DDP run with the counters; every check with its figures.

    Args:
        main: rank 0's run log.
        witnesses: {rank: witness} of the ranks > 0 (their own epoch edges).
        logger: nnU-Net's logger lists (``checkpoint_final.pth``'s ``logging``).
        counters: {GPU key (see :func:`gpu_key`): counter steps}.
        world_size: ranks expected.
        planned_epochs: epochs the trainer was set to train.
        main_logs_found: run logs found in rank 0's output folder (one expected).
        cuda_uuids: UUID of ``cuda:<rank>`` per rank, where known (the device nnU-Net put the
            rank on).
        gpu_method: the method each GPU sensor must use (``counter`` on NVIDIA GPUs).
        tolerance: relative tolerance of the whole-run comparisons (0.005 = 0.5%).
        epoch_tolerance: tolerance of the median per-epoch deviation.
    """
    views = rank_views(main, witnesses)
    checks: dict[str, dict[str, Any]] = {}
    per_rank = []
    for view in views:
        gpus = view.sensors("gpu")
        per_rank.append(
            {
                "rank": view.rank,
                "log": str(view.log.path),
                "sensors": [f"{s['name']} {s['component']} {s['method']}" for s in view.sensors()],
                "gpu": [s["device"] for s in gpus],
                "own_windows": view.windows is not None,
                "witness": str(witnesses[view.rank].path) if view.rank in witnesses else None,
            }
        )
    # 1. each rank measured one GPU of its own, by counter, and they differ
    gpu_keys = [[gpu_key(s["device"]) for s in view.sensors("gpu")] for view in views]
    methods = [s["method"] for view in views for s in view.sensors("gpu")]
    flat = [k for ks in gpu_keys for k in ks]
    checks["one_distinct_gpu_per_rank"] = _check(
        len(views) == world_size
        and all(len(ks) == 1 for ks in gpu_keys)
        and len(set(flat)) == len(flat)
        and all(m == gpu_method for m in methods),
        f"{len(views)} rank(s) of {world_size}; GPUs per rank {[len(k) for k in gpu_keys]}; "
        f"distinct {len(set(flat))} of {len(flat)}; methods {methods} (want {gpu_method})",
        gpu_keys=gpu_keys,
    )
    # 2. ... and it is the device the rank trained on
    if cuda_uuids is None:
        checks["rank_measures_its_cuda_device"] = _check(
            False, "not checked: the CUDA devices' UUIDs are unknown here", gated=False
        )
    else:
        wanted = [normalise_uuid(u) for u in cuda_uuids]
        got = [ks[0] if len(ks) == 1 else None for ks in gpu_keys]
        ok = len(got) == len(wanted) and all(g == w for g, w in zip(got, wanted, strict=False))
        checks["rank_measures_its_cuda_device"] = _check(
            ok, f"cuda:<rank> UUIDs {wanted}; measured {got}"
        )
    # 3. CPU and DRAM once (one host): rank 0 only
    cpu_by_rank = {v.rank: len(v.sensors("cpu")) for v in views}
    dram_by_rank = {v.rank: len(v.sensors("dram")) for v in views}
    checks["cpu_dram_once"] = _check(
        cpu_by_rank.get(0, 0) == 1
        and dram_by_rank.get(0, 0) <= 1
        and all(n == 0 for r, n in cpu_by_rank.items() if r != 0)
        and all(n == 0 for r, n in dram_by_rank.items() if r != 0),
        f"CPU sensors per rank {cpu_by_rank}; DRAM sensors per rank {dram_by_rank}",
    )
    checks["one_run_log"] = _check(
        main_logs_found == 1, f"{main_logs_found} run log(s) in rank 0's output folder"
    )
    # 4. rank 0's run log holds the whole run: the ranks combined, every rank's GPU in every
    # epoch record, and each record's energy the sum of its entries (issue 8)
    pue = float(main.header.get("pue") or 1.0)
    n_logged = min(planned_epochs, len(main.epochs))
    missing = [
        (e, v.rank)
        for e in range(n_logged)
        for v in views
        if not any(
            k.startswith(v.prefix) and k in {str(s["name"]) for s in v.sensors("gpu")}
            for k in (main.epochs[e].get("energy_j") or {})
        )
    ]
    record_sums = [
        sum(_f(v) for v in (main.epochs[e].get("energy_j") or {}).values()) * pue / J_PER_KWH
        for e in range(n_logged)
    ]
    self_consistent = all(
        _close(_f(main.epochs[e].get("energy_kwh")), record_sums[e]) for e in range(n_logged)
    )
    holds_sum = (
        (is_combined(main) or world_size == 1)
        and [v.rank for v in views] == list(range(world_size))
        and not missing
        and self_consistent
    )
    checks["run_log_holds_sum"] = _check(
        holds_sum,
        f"rank 0's run log: combined {is_combined(main)}, ranks {[v.rank for v in views]} of "
        f"{world_size}; epochs lacking a rank's GPU {missing}; each epoch's energy_kwh the sum "
        f"of its entries {self_consistent}",
    )
    # 5. a rank's entries in rank 0's log are what that rank measured (its witness), exactly
    own = []
    for view in views:
        if view.rank == 0:
            continue
        witness = witnesses.get(view.rank)
        if witness is None:
            own.append(f"rank {view.rank}: no witness of its own windows")
            continue
        for e, window in enumerate(witness.windows[:n_logged]):
            mine = {
                k[len(view.prefix) :]: _f(v)
                for k, v in (main.epochs[e].get("energy_j") or {}).items()
                if k.startswith(view.prefix)
            }
            theirs = {k: _f(v) for k, v in (window.get("energy_j") or {}).items()}
            if set(mine) != set(theirs) or not all(_close(mine[k], theirs[k]) for k in mine):
                own.append(f"rank {view.rank} epoch {e}: log {mine} vs witness {theirs}")
    checks["rank_entries_are_ranks_own"] = _check(
        not own,
        "; ".join(own[:4]) or "every rank > 0's entries in rank 0's log equal its witness",
    )
    # 6. epochs everywhere
    logged = [_f(v) for v in logger.get(keys.EPOCH_ENERGY_KWH, [])]
    counts = {0: len(main.epochs)}
    counts.update({r: len(w.windows) for r, w in witnesses.items()})
    checks["epochs"] = _check(
        all(n == planned_epochs for n in counts.values()) and len(logged) == planned_epochs,
        f"epoch records: rank 0's log {counts[0]}, witnesses "
        f"{ {r: n for r, n in counts.items() if r} }; nnU-Net logger {len(logged)}; planned "
        f"{planned_epochs}",
    )
    n_epochs = min([planned_epochs, len(logged), *counts.values()])
    main_epochs = main.epochs[:n_epochs]

    # 7./8. each rank's GPU energy (rank 0's log) vs its GPU's counter over its own windows
    epochs_out = []
    for e in range(n_epochs):
        row: dict[str, Any] = {"epoch": e, "ranks": []}
        tracked_sum = reference_sum = 0.0
        for view, ks in zip(views, gpu_keys, strict=True):
            # the rank's own edges where known; else rank 0's (the log's)
            window = view.windows[e] if view.windows is not None else main_epochs[e]
            tracked = view.gpu_j(main_epochs[e])
            reference = sum(
                _window_j(counters.get(k), window["start_unix_s"], window["end_unix_s"]) for k in ks
            )
            tracked_sum += tracked
            reference_sum += reference
            row["ranks"].append(
                {
                    "rank": view.rank,
                    "tracked_j": tracked,
                    "reference_j": reference,
                    "ratio": _ratio(tracked, reference),
                    "own_window": view.windows is not None,
                    "start_unix_s": window["start_unix_s"],
                    "duration_s": window["duration_s"],
                }
            )
        row.update(
            tracked_j=tracked_sum,
            reference_j=reference_sum,
            ratio=_ratio(tracked_sum, reference_sum),
            duration_s=main_epochs[e]["duration_s"],
        )
        epochs_out.append(row)
    tracked_run = sum(r["tracked_j"] for r in epochs_out)
    reference_run = sum(r["reference_j"] for r in epochs_out)
    run_ratio = _ratio(tracked_run, reference_run)
    checks["gpu_energy_run"] = _check(
        abs(run_ratio - 1.0) <= tolerance,
        f"sum over epochs and ranks, each over its own windows: tracked {tracked_run:.1f} J / "
        f"counters {reference_run:.1f} J = {run_ratio:.5f} (tolerance {tolerance:g})",
        ratio=run_ratio,
        per_rank_ratio={
            v.rank: _ratio(
                sum(r["ranks"][i]["tracked_j"] for r in epochs_out),
                sum(r["ranks"][i]["reference_j"] for r in epochs_out),
            )
            for i, v in enumerate(views)
        },
    )
    deviations = [abs(r["ratio"] - 1.0) for r in epochs_out if math.isfinite(r["ratio"])]
    median_dev = statistics.median(deviations) if deviations else math.nan
    checks["gpu_energy_per_epoch"] = _check(
        median_dev <= epoch_tolerance,
        f"per-epoch ratios {[round(r['ratio'], 4) for r in epochs_out]}; median |ratio - 1| "
        f"{median_dev:.4f} (tolerance {epoch_tolerance:g})",
        median_abs_deviation=median_dev,
    )
    # 9. the whole session (footer: tracker start to stop): rank 0's own devices only
    sessions = []
    footer = main.footer
    if footer is not None and views:
        end = float(footer["ended_at_unix_s"])
        start = end - float(footer["duration_s"])
        # the footer's energy_j is rank 0's own meter (its names carry no rank prefix)
        names = {str(s["name"])[len(views[0].prefix) :] for s in views[0].sensors("gpu")}
        tracked = sum(_f(v) for k, v in (footer.get("energy_j") or {}).items() if k in names)
        reference = sum(_window_j(counters.get(k), start, end) for k in gpu_keys[0])
        sessions.append(
            {"rank": 0, "tracked_j": tracked, "reference_j": reference,
             "ratio": _ratio(tracked, reference), "duration_s": end - start}
        )  # fmt: skip
    session_ratio = _ratio(
        sum(s["tracked_j"] for s in sessions), sum(s["reference_j"] for s in sessions)
    )
    checks["gpu_energy_session"] = _check(
        len(sessions) == 1 and abs(session_ratio - 1.0) <= tolerance,
        f"rank 0's GPU over its tracker session (start to stop, between-epoch work included): "
        f"tracked / counter = {session_ratio:.5f} (the footer holds rank 0's session only)",
        ratio=session_ratio,
        sessions=sessions,
    )
    # 10. what nnU-Net logs is rank 0's run log's whole run, on every epoch
    sums = [_f(main_epochs[e].get("energy_kwh")) for e in range(n_epochs)]
    cumulative = [_f((main_epochs[e].get("cumulative") or {}).get("energy_kwh")) for e in
                  range(n_epochs)]  # fmt: skip
    logged_total = _last_number(logger.get(keys.ENERGY_KWH, []))
    states = [s for s in logger.get("carbon/tracker_state", []) if isinstance(s, dict)]
    state_total = _f(states[-1].get("energy_kwh")) if states else math.nan
    ok = all(_close(a, b) for a, b in zip(logged[:n_epochs], sums, strict=True))
    ok = ok and _close(logged_total, sum(sums)) and _close(state_total, sum(sums))
    ok = ok and all(
        _close(a, b) for a, b in zip(cumulative, itertools.accumulate(sums), strict=True)
    )
    checks["logged_sum_is_sum_of_ranks"] = _check(
        ok,
        f"nnU-Net's carbon/epoch_energy_kwh vs rank 0's run-log epochs (every rank's entries) "
        f"(kWh): {[(round(a, 9), round(b, 9)) for a, b in zip(logged, sums, strict=False)]}; "
        f"cumulative {logged_total:.9f}, checkpoint state {state_total:.9f}, sum {sum(sums):.9f}",
    )
    # 11. the logged sum, less rank 0's CPU/DRAM, against the counter of the GPU each rank
    # trained on over that rank's own windows (gated), and against every counter over rank 0's
    # windows (a note: a rank's epoch can be longer than rank 0's, e.g. while rank 0 plots)
    main_gpus = {str(s["name"]) for s in main.header.get("sensors", []) if s["component"] == "gpu"}
    # the GPU each rank trained on (cuda:<rank>), whatever it says it measured
    if cuda_uuids is not None and len(cuda_uuids) == len(views):
        trained_on = [[normalise_uuid(u)] for u in cuda_uuids]
    else:
        trained_on = gpu_keys
    own_reference_j = 0.0
    for e in range(n_epochs):
        for view, ks in zip(views, trained_on, strict=True):
            window = view.windows[e] if view.windows is not None else main_epochs[e]
            own_reference_j += sum(
                _window_j(counters.get(k), window["start_unix_s"], window["end_unix_s"]) for k in ks
            )
    logged_gpu_j = 0.0
    rank0_reference_j = 0.0
    for e in range(n_epochs):
        record = main_epochs[e]
        non_gpu = sum(
            _f(v) for k, v in (record.get("energy_j") or {}).items() if k not in main_gpus
        )
        logged_gpu_j += logged[e] * J_PER_KWH / pue - non_gpu
        rank0_reference_j += sum(  # every polled GPU, whichever rank says it measured it
            _window_j(steps, record["start_unix_s"], record["end_unix_s"])
            for steps in counters.values()
        )
    logged_ratio = _ratio(logged_gpu_j, own_reference_j)
    checks["logged_sum_vs_counters"] = _check(
        abs(logged_ratio - 1.0) <= tolerance,
        f"nnU-Net's epoch energy less rank 0's CPU/DRAM: {logged_gpu_j:.1f} J / the counter of "
        f"each rank's cuda device over that rank's own windows {own_reference_j:.1f} J = "
        f"{logged_ratio:.5f}",
        ratio=logged_ratio,
    )
    rank0_ratio = _ratio(logged_gpu_j, rank0_reference_j)
    checks["logged_sum_vs_counters_rank0_windows"] = _check(
        abs(rank0_ratio - 1.0) <= tolerance,
        f"the same against every counter over rank 0's windows {rank0_reference_j:.1f} J = "
        f"{rank0_ratio:.5f} (a note: the ranks' windows differ)",
        gated=False,
        ratio=rank0_ratio,
    )
    return {
        "world_size": world_size,
        "combined_log": is_combined(main),
        "ranks": per_rank,
        "epochs": epochs_out,
        "checks": checks,
    }


def _last_number(values: Sequence[Any]) -> float:
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return numbers[-1] if numbers else math.nan


def analyse_budget(
    main: RunLog,
    witnesses: Mapping[int, Witness],
    logger: Mapping[str, list[Any]],
    training_log: str,
    *,
    planned_epochs: int,
    budget_rank: int = 1,
) -> dict[str, Any]:
    """Run B: only ``budget_rank``'s budget says stop after epoch 0; every rank must stop.

    Rank 0's run log has no budget record (rank 0 holds no budget); ``budget_rank``'s decision
    is in its witness, and rank 0's training log says that another rank's budget stopped it.
    """
    own_stop = [b for b in main.budgets if b.get("action") == "stop"]
    witness = witnesses.get(budget_rank)
    decisions = witness.decisions if witness is not None else []
    said_stop = [d for d in decisions if d.get("should_stop")]
    logged = logger.get(keys.EPOCH_ENERGY_KWH, [])
    problems = []
    if len(main.epochs) != 1:
        problems.append(f"rank 0 trained {len(main.epochs)} epoch(s), not 1")
    if main.status != "interrupted":
        problems.append(f"rank 0's footer says {main.status!r}, not 'interrupted'")
    if own_stop:
        problems.append("rank 0's own budget said stop (it has none)")
    if witness is None:
        problems.append(f"no witness of rank {budget_rank}")
    elif len(witness.windows) != 1 or not said_stop or said_stop[0].get("epoch") != 0:
        problems.append(
            f"rank {budget_rank}: {len(witness.windows)} epoch(s), stop decided after epoch(s) "
            f"{[d.get('epoch') for d in said_stop]}"
        )
    if len(logged) != 1:
        problems.append(f"nnU-Net logged {len(logged)} epoch(s)")
    if "stopping after epoch 0" not in training_log:
        problems.append("no 'stopping after epoch 0' line in nnU-Net's training log")
    check = _check(
        not problems,
        "; ".join(problems)
        or f"rank {budget_rank}'s budget alone stopped every rank after epoch 0 of "
        f"{planned_epochs}; rank 0's footer 'interrupted', checkpoint_final written",
        planned_epochs=planned_epochs,
        rank0_epochs=len(main.epochs),
        rank0_status=main.status,
        budget_records_rank0=len(main.budgets),
        stop_reason_witness=said_stop[0].get("stop_reason") if said_stop else None,
    )
    return {"checks": {"budget_stop_is_collective": check}}


# -- running nnU-Net ----------------------------------------------------------------------------
def set_global_batch_size(batch: int) -> None:
    """Edit the 2D plan's batch size (nnU-Net splits it over the DDP ranks)."""
    path = (
        Path(os.environ["nnUNet_preprocessed"]) / nnunet_dataset.DATASET_NAME / "nnUNetPlans.json"
    )
    plans = json.loads(path.read_text())
    plans["configurations"]["2d"]["batch_size"] = int(batch)
    path.write_text(json.dumps(plans, indent=1))


def ensure_distutils() -> None:
    """nnU-Net's ``preprocess`` imports ``distutils``, gone from Python 3.12's standard
    library; setuptools provides it (its own ``_distutils_hack``) once imported."""
    if importlib.util.find_spec("distutils") is None:
        import setuptools  # noqa: F401


def output_folder(trainer: str, fold: int) -> Path:
    """nnU-Net's output folder of a 2D training of the synthetic dataset."""
    return (
        Path(os.environ["nnUNet_results"])
        / nnunet_dataset.DATASET_NAME
        / f"{trainer}__nnUNetPlans__2d"
        / f"fold_{fold}"
    )


def train_env(settings: Mapping[str, Any], epochs: int, iterations: int, val_iterations: int,
              n_proc_da: int) -> dict[str, str]:  # fmt: skip
    """The environment of one ``nnUNetv2_train`` (every nnU-Net and carbon setting in it)."""
    env = dict(os.environ)
    path = [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(
        PYTHONPATH=os.pathsep.join(path),
        PYTHONUNBUFFERED="1",
        nnUNet_extTrainer=str(TRAINER_DIR),
        nnUNet_n_proc_DA=str(n_proc_da),
        nnUNet_compile="false",  # torch.compile would take most of a short run
        CARBON_CALLBACKS_NNUNET_SETTINGS=json.dumps(dict(settings)),
        CARBON_PROOF_EPOCHS=str(epochs),
        CARBON_PROOF_ITERATIONS=str(iterations),
        CARBON_PROOF_VAL_ITERATIONS=str(val_iterations),
    )
    return env


def run_nnunet_train(trainer: str, fold: int, gpus: int, env: Mapping[str, str],
                     timeout_s: float) -> tuple[int, float]:  # fmt: skip
    """``nnUNetv2_train 999 2d FOLD -tr TRAINER -num_gpus GPUS``; (exit code, wall s)."""
    cmd = [sys.executable, "-m", "nnunetv2.run.run_training", str(nnunet_dataset.DATASET_ID),
           "2d", str(fold), "-tr", trainer, "-num_gpus", str(gpus)]  # fmt: skip
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    process = subprocess.Popen(cmd, env=dict(env), start_new_session=True)
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # the group of the process started here
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        code = 124
    return code, time.time() - t0


def nvml_gpus(count: int) -> list[dict[str, str]]:
    """UUID, name and driver of NVML devices 0..count-1 (the pollers' indices)."""
    import pynvml

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    pynvml.nvmlInit()
    try:
        out = []
        for i in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append(
                {
                    "uuid": text(pynvml.nvmlDeviceGetUUID(handle)),
                    "name": text(pynvml.nvmlDeviceGetName(handle)),
                    "driver": text(pynvml.nvmlSystemGetDriverVersion()),
                }
            )
        return out
    finally:
        pynvml.nvmlShutdown()


def cuda_uuids(count: int) -> list[str] | None:
    """UUID of ``cuda:0..count-1`` as torch sees them (nnU-Net puts rank r on cuda:r)."""
    try:
        import torch

        return [str(torch.cuda.get_device_properties(i).uuid) for i in range(count)]
    except Exception:  # noqa: BLE001 - then the check is left out, and says so by absence
        return None


def _single(paths: Sequence[Path], what: str) -> Path:
    existing = [p for p in paths if p.exists()]
    if not existing:
        raise FileNotFoundError(f"no {what} found")
    return existing[-1]


def collect(folder: Path) -> tuple[RunLog, dict[int, Witness], int, dict[str, list[Any]], str]:
    """(rank 0's run log, witnesses, run logs found, nnU-Net's logger, training log text)."""
    mains, witness_paths = find_outputs(folder)
    main = read_run_log(_single(mains, f"run log in {folder}"))
    witnesses = {r: read_witness(p) for r, p in witness_paths.items()}
    logger = load_logger(_single([folder / "checkpoint_final.pth"], "checkpoint_final.pth"))
    texts = sorted(folder.glob("training_log_*.txt"))
    return main, witnesses, len(mains), logger, texts[-1].read_text() if texts else ""


def copy_logs(dest: Path, tag: str, folder: Path, with_training_log: bool = True) -> None:
    """Run logs and nnU-Net's training log of one run, flat in ``dest`` (tagged names)."""
    dest.mkdir(parents=True, exist_ok=True)
    mains, witnesses = find_outputs(folder)
    for path in mains:
        shutil.copy(path, dest / f"{tag}_rank0{LOG_SUFFIX}")
    for rank, path in witnesses.items():
        shutil.copy(path, dest / f"{tag}_rank{rank}_witness.jsonl")
    if with_training_log:
        for path in sorted(folder.glob("training_log_*.txt"))[-1:]:
            shutil.copy(path, dest / f"{tag}_training_log.txt")


# -- the two modes ------------------------------------------------------------------------------
def run_gpus(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, run A with pollers, run B; analyse both."""
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    t0 = time.time()
    nnunet_dataset.set_nnunet_env(work)
    ensure_distutils()
    nnunet_dataset.prepare(work, n_cases=args.cases, size_px=args.size)
    set_global_batch_size(args.batch)
    prep_s = time.time() - t0
    settings = {"zone": "DE", "pue": 1.0, "offline": True, "verbose": 1}
    result: dict[str, Any] = {"timings_s": {"prepare": prep_s}}

    gpus = nvml_gpus(args.gpus)
    uuids = [g["uuid"] for g in gpus]
    env = train_env(settings, args.epochs, args.iterations, args.val_iterations, args.n_proc_da)
    pollers = start_pollers(str(work), gpus=args.gpus, tag="_A")
    deadline = t0 + args.deadline_s  # both trainings end before it, or are stopped

    def timeout_s() -> float:
        return max(30.0, min(args.timeout_s, deadline - time.time()))

    code_a, wall_a = run_nnunet_train(MEASURED_TRAINER, 0, args.gpus, env, timeout_s())
    steps = stop_pollers(pollers)
    result["timings_s"]["run_a"] = wall_a
    counters = {normalise_uuid(u): s for u, s in zip(uuids, steps, strict=True)}

    env_b = train_env(settings, 3, args.budget_iterations, 2, args.n_proc_da)
    code_b, wall_b = run_nnunet_train(BUDGET_TRAINER, 0, args.gpus, env_b, timeout_s())
    result["timings_s"]["run_b"] = wall_b
    result["exit_codes"] = {"run_a": code_a, "run_b": code_b}
    folder_a, folder_b = output_folder(MEASURED_TRAINER, 0), output_folder(BUDGET_TRAINER, 0)
    if args.copy_logs:
        for tag, folder in (("A", folder_a), ("B", folder_b)):
            if folder.exists():  # at most 8 files come back from the lent machine
                copy_logs(Path(args.copy_logs), tag, folder, with_training_log=tag == "A")
    checks: dict[str, Any] = {
        "nnunet_exit_codes": _check(code_a == 0 and code_b == 0, f"run A {code_a}, run B {code_b}")
    }
    try:  # a broken analysis still leaves the JSON (device time is scarce)
        main, witnesses, found, logger, _ = collect(folder_a)
        measured = analyse_measured(
            main, witnesses, logger, counters, world_size=args.gpus, planned_epochs=args.epochs,
            main_logs_found=found, cuda_uuids=cuda_uuids(args.gpus),
            tolerance=args.tolerance, epoch_tolerance=args.epoch_tolerance,
        )  # fmt: skip
        checks.update(measured.pop("checks"))
        result["run_a"] = measured
        result["run_a"]["events"] = [f"{ev.get('kind')}: {ev.get('message')}" for ev in main.events]
    except Exception:  # noqa: BLE001
        checks["analysis_a"] = _check(False, traceback.format_exc(limit=4))
    try:
        main_b, witnesses_b, _, logger_b, text_b = collect(folder_b)
        checks.update(
            analyse_budget(main_b, witnesses_b, logger_b, text_b, planned_epochs=3)["checks"]
        )
    except Exception:  # noqa: BLE001
        checks["analysis_b"] = _check(False, traceback.format_exc(limit=4))
    result["gpus"] = gpus
    result["checks"] = checks
    return result


def run_dry(args: argparse.Namespace) -> dict[str, Any]:
    """CPU: prepare the small dataset, train the proof trainer in-process with a stated GPU
    power, build counter steps of that power, run the analysis."""
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    nnunet_dataset.set_nnunet_env(work)
    ensure_distutils()
    nnunet_dataset.prepare(work)
    set_global_batch_size(2)
    settings = {
        "zone": "DE", "pue": 1.0, "offline": True, "verbose": 0, "interval_s": 0.05,
        "sim_gpu": DRY_GPU_DEVICE, "sim_gpu_watts": DRY_GPU_W, "sim_gpu_util": 1.0,
        "sim_cpu": "dry-run CPU", "sim_cpu_tdp": 50.0, "sim_cpu_util": 1.0,
    }  # fmt: skip
    os.environ.update(train_env(settings, 2, 4, 2, 0))
    import torch

    sys.path.insert(0, str(TRAINER_DIR))
    from nnUNetTrainerCarbonProof import nnUNetTrainerCarbonProof

    plans, dataset_json = nnunet_dataset.load_plans_and_dataset_json()
    trainer = nnUNetTrainerCarbonProof(
        plans=plans, configuration="2d", fold=0, dataset_json=dataset_json,
        device=torch.device("cpu"),
    )  # fmt: skip
    t0 = time.time() - 5.0
    trainer.run_training()
    t1 = time.time() + 5.0
    times = [t0 + 0.1 * i for i in range(int((t1 - t0) / 0.1) + 1)]
    steps = (times, [DRY_GPU_W * (t - t0) for t in times])
    main, witnesses, found, logger, _ = collect(Path(trainer.output_folder))
    measured = analyse_measured(
        main, witnesses, logger, {gpu_key(DRY_GPU_DEVICE): steps}, world_size=1,
        planned_epochs=2, main_logs_found=found, gpu_method="constant",
        tolerance=args.tolerance, epoch_tolerance=args.epoch_tolerance,
    )  # fmt: skip
    checks = measured.pop("checks")
    return {"dry_run": True, "run_a": measured, "checks": checks}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="nnunet_ddp_proof.json")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "nnunet_ddp_proof"))
    parser.add_argument("--copy-logs", default=None, help="copy the run and training logs here")
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=250, help="per epoch (nnU-Net's default)")
    parser.add_argument("--val-iterations", type=int, default=10)
    parser.add_argument("--budget-iterations", type=int, default=20)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--n-proc-da", type=int, default=6, help="augmentation workers per GPU")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--epoch-tolerance", type=float, default=0.02)
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per nnU-Net training")
    parser.add_argument(
        "--deadline-s", type=float, default=500.0, help="both trainings end within this, from start"
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU smoke check, no GPU")
    args = parser.parse_args(argv)
    t0 = time.time()
    result = run_dry(args) if args.dry_run else run_gpus(args)
    result["wall_s"] = time.time() - t0
    result["versions"] = _versions()
    result["arguments"] = vars(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    failed = [name for name, c in result["checks"].items() if c["gated"] and not c["ok"]]
    print(f"\n== nnU-Net DDP proof ({'dry run' if args.dry_run else f'{args.gpus} GPU(s)'})")
    for name, check in result["checks"].items():
        mark = "PASS" if check["ok"] else ("FAIL" if check["gated"] else "note")
        print(f"[{mark}] {name}: {check['detail']}")
    print(f"wall {result['wall_s']:.0f} s; {result.get('timings_s', {})}; written {args.out}")
    return 1 if failed else 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import carbon_callbacks

    out = {
        "python": sys.version.split()[0],
        "carbon_callbacks": f"{carbon_callbacks.__version__} ({carbon_callbacks.__file__})",
    }
    for name in ("nnunetv2", "torch", "simpleitk", "blosc2", "timm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


if __name__ == "__main__":  # nnU-Net's planner starts worker processes: guarded
    sys.exit(main())
