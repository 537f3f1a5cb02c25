"""A 10-minute run: the tracker's GPU energy against NVML's counter, per epoch and over the run.

    PYTHONPATH=. python3 -m bench memory long --minutes 10.5 --out /tmp/long/long_run.json
    PYTHONPATH=. python3 -m bench memory long --smoke --out /tmp/long_smoke/long_run.json  # CPU

A Lightning U-Net (width 32, 256x256, batch 32, data on the GPU) trains in epochs of
``--batches`` batches (128: about 8 s on an H100) until ``--minutes`` of wall time have passed,
with ``CarbonCallback`` at its default settings (``--max-epochs`` is only the plan the tracker
predicts for; the run stops by time). One counter poller (``bench/poller.py``,
another process) is the reference: NVML's counter interpolated at the tracker's own edges.

The run outlasts one device command (10 minutes), so it is started detached
(``setsid nohup ... &``) and a later command collects it: everything lands in the folder of
``--out`` (the JSON, the run log, the poller's steps), and a file ``done`` is written there last,
also after a failure (the JSON then holds ``error``). Progress goes to stdout, one line per epoch.
``--partial FOLDER`` reads the run going on there (its run log and the poller's steps are
flushed as they come) and writes the figures so far: the first command collects those, in case
the second never reaches the machine.

The JSON: ``meta``; ``epochs`` (per epoch: edges, tracker J, reference J, ratio, cumulative
ratio); ``per_epoch`` (error statistics of epochs 2..n) and ``first_epoch``; ``run_ratio`` (sum
over all epochs) and ``run_ratio_from_epoch_2``; ``per_minute`` (ratio of the epochs that began
in each minute); ``tracked_span`` (the footer's GPU energy, the whole session from the tracker's
start to its stop with the gaps between epochs, against the counter over the same span);
``tracker`` (the run log's sensors, footer and events); ``meter_threads`` (CPU seconds of the
tracker's threads, from /proc, over the training time).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any

import lightning.pytorch as pl
import torch

from bench.poller import load_steps, start_pollers, stop_pollers, window_j
from bench.stats import compare_windows, error_stats, gpu_j, sum_ratio
from bench.workloads import Seg
from bench.workloads import loader as _loader
from carbon_callbacks.core.runlog import read_run_log
from carbon_callbacks.integrations.lightning import CarbonCallback

#: Watts of the made-up counter and of the stated GPU power in ``--smoke``.
SMOKE_POWER_W = 100.0


def _stat_fields(path: str) -> list[str]:
    """The fields of a ``/proc/.../stat`` file after ``pid (comm)``: state first (Linux)."""
    with open(path) as fh:
        return fh.read().rsplit(")", 1)[1].split()


def _cpu_s(fields: list[str]) -> float:
    """User + system CPU seconds from stat fields (utime and stime: fields 14 and 15)."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(prefix: str = "carbon_callbacks") -> dict[str, float]:
    """CPU seconds (user + system) used so far by each live thread whose name has ``prefix``.

    Read from ``/proc/self/task/<tid>/stat`` (Linux); empty where that cannot be read.
    """
    used: dict[str, float] = {}
    for thread in threading.enumerate():
        if not thread.name.startswith(prefix) or thread.native_id is None:
            continue
        try:
            used[thread.name] = _cpu_s(_stat_fields(f"/proc/self/task/{thread.native_id}/stat"))
        except OSError:
            continue
    return used


def helper_cpu_s(marker: str = "counter_feed") -> dict[str, float]:
    """CPU seconds (user + system) used so far by each child process whose command line holds
    ``marker`` (the counter's helper processes), by pid. Linux ``/proc``; empty elsewhere."""
    used: dict[str, float] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(f"/proc/{entry}/stat")
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and marker in cmdline:  # field 4: the parent's pid
            used[f"helper:{entry}"] = _cpu_s(fields)
    return used


class LongRunControl(pl.Callback):
    """Stops after the epoch that ends past ``seconds``; prints progress; reads thread CPU."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.t0 = 0.0
        self.last = 0.0
        self.thread_cpu_s: dict[str, float] = {}
        self.train_s = 0.0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.t0 = self.last = time.monotonic()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        now = time.monotonic()
        print(
            f"epoch {trainer.current_epoch:3d} ended at {now - self.t0:6.1f} s"
            f" ({now - self.last:.2f} s)",
            flush=True,
        )
        self.last = now
        if now - self.t0 >= self.seconds:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # before on_fit_end, where the tracker stops and its meter thread ends
        self.train_s = time.monotonic() - self.t0
        self.thread_cpu_s = {**thread_cpu_s(), **helper_cpu_s()}


def analyse(log_path: str, steps: list, control: LongRunControl | None) -> dict[str, Any]:
    """The figures of the JSON (see the module's docstring) from the run log and the steps.

    Also on a run still going (``--partial``): epochs that end after the last polled step are
    left out, and ``meter_threads`` is absent (``control`` None).
    """
    log = read_run_log(log_path)

    def reference(start: float, end: float) -> float:
        return window_j(steps, start, end)

    last_step_unix_s = min(times[-1] for times, _ in steps) if steps else 0.0
    epochs = [e for e in log.epochs if e["end_unix_s"] < last_step_unix_s]
    windows = [(e["start_unix_s"], e["end_unix_s"], gpu_j(e["energy_j"])) for e in epochs]
    rows = compare_windows(windows, reference)
    tracker_sum = ref_sum = 0.0
    for row, epoch in zip(rows, epochs, strict=True):
        tracker_sum += row["tracker_j"]
        ref_sum += row["reference_j"]
        row["duration_s"] = epoch["duration_s"]
        row["cumulative_ratio"] = tracker_sum / ref_sum if ref_sum > 0 else None
    origin = rows[0]["start_unix_s"] if rows else 0.0
    minutes: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        minutes.setdefault(int((row["start_unix_s"] - origin) // 60), []).append(row)
    out: dict[str, Any] = {
        "epochs": rows,
        "per_epoch": error_stats(r["ratio"] for r in rows[1:]),
        "first_epoch": rows[0]["ratio"] if rows else None,
        "run_ratio": sum_ratio(rows),
        "run_ratio_from_epoch_2": sum_ratio(rows, first=1),
        "per_minute": [
            {"minute": m, "epochs": len(part), "ratio": sum_ratio(part)}
            for m, part in sorted(minutes.items())
        ],
        "tracker": {
            "sensors": log.header.get("sensors"),
            "footer": log.footer,
            "events": [
                {k: ev.get(k) for k in ("kind", "message", "time_unix_s")} for ev in log.events
            ],
        },
    }
    if control is not None:
        out["meter_threads"] = {
            "cpu_s": control.thread_cpu_s,
            "train_s": control.train_s,
            "pct_of_one_core": {
                name: cpu_s / control.train_s * 100.0 if control.train_s > 0 else None
                for name, cpu_s in control.thread_cpu_s.items()
            },
        }
    footer = log.footer
    if footer is not None and footer["ended_at_unix_s"] < last_step_unix_s:
        # the whole session the footer's energy_j covers (its duration_s from the meter's start)
        end = footer["ended_at_unix_s"]
        start = end - footer["duration_s"]
        span_ref_j = reference(start, end)
        span_j = gpu_j(footer["energy_j"])
        out["tracked_span"] = {
            "duration_s": end - start,
            "tracker_j": span_j,
            "reference_j": span_ref_j,
            "ratio": span_j / span_ref_j if span_ref_j > 0 else None,
        }
    return out


def train(args: argparse.Namespace, folder: str) -> dict[str, Any]:
    """The run itself; returns the figures."""
    device = "cpu" if args.smoke else "cuda"
    torch.backends.cudnn.benchmark = False
    pollers = start_pollers(
        folder, gpus=1, tag="_long", max_s=args.minutes * 60.0 + 300.0,
        fake_w=SMOKE_POWER_W if args.smoke else None,
    )  # fmt: skip
    try:
        if args.smoke:
            loader = _loader(8 * args.batches, 32, 8, device=device)
            model = Seg(4)
            carbon = CarbonCallback(
                log_dir=folder, verbose=0, zone="DE", sim_gpu="smoke",
                sim_gpu_watts=SMOKE_POWER_W, sim_gpu_util=1.0,
            )  # fmt: skip
        else:
            loader = _loader(32 * args.batches, 256, 32, device=device)
            model = Seg(32)
            carbon = CarbonCallback(log_dir=folder, verbose=0, zone="DE")  # default settings
        control = LongRunControl(args.minutes * 60.0)
        trainer = pl.Trainer(
            max_epochs=args.max_epochs, accelerator=device, devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[carbon, control],  # control last: its stop flag is the final word
        )  # fmt: skip
        time.sleep(args.idle_s)  # the first epoch starts from an idle GPU
        trainer.fit(model, loader)
        time.sleep(0.3)  # the poller's step after the last edge
    finally:
        steps = stop_pollers(pollers)
    return analyse(carbon.tracker.log_path, steps, control)


def partial(folder: str, out: str) -> int:
    """Figures of the run going on in ``folder`` so far (its run log and steps are flushed)."""
    logs = sorted(glob.glob(os.path.join(folder, "*.carbon.jsonl")))
    polls = sorted(glob.glob(os.path.join(folder, "poll_long_gpu*.txt")))
    if not logs or not polls:
        print(f"nothing to read in {folder}: run logs {logs}, poller files {polls}")
        return 1
    result: dict[str, Any] = {"meta": {"partial": True, "read_at_unix_s": time.time()}}
    result.update(analyse(logs[-1], [load_steps(p) for p in polls], None))
    first = result["epochs"][0]["start_unix_s"] if result["epochs"] else time.time()
    result["meta"]["wall_s"] = time.time() - first
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
    print_summary(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/long/long_run.json")
    parser.add_argument("--minutes", type=float, default=10.5, help="train at least this long")
    parser.add_argument("--batches", type=int, default=128, help="batches per epoch (~8 s)")
    parser.add_argument("--idle-s", type=float, default=3.0, help="idle GPU before the run")
    parser.add_argument(
        "--max-epochs", type=int, default=1000, help="planned epochs (a user states some)"
    )
    parser.add_argument("--smoke", action="store_true", help="CPU plumbing check (~20 s)")
    parser.add_argument(
        "--partial", metavar="FOLDER", help="only read the run going on in FOLDER, write --out"
    )
    args = parser.parse_args(argv)
    if args.partial:
        return partial(args.partial, args.out)
    if args.smoke:
        for name, value in (("minutes", 0.25), ("batches", 2), ("idle_s", 0.3)):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    done = os.path.join(folder, "done")
    if os.path.exists(done):
        os.remove(done)
    started = time.time()
    result: dict[str, Any] = {
        "meta": {
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "smoke": args.smoke,
            "minutes": args.minutes,
            "batches_per_epoch": args.batches,
            "started_at_unix_s": started,
        }
    }
    status = "failed"
    try:
        result.update(train(args, folder))
        status = "ok"
    except Exception as exc:  # noqa: BLE001 - the collecting command must find a result
        result["error"] = repr(exc)
        result["traceback"] = traceback.format_exc()
        print(result["traceback"], flush=True)
    finally:
        result["meta"]["wall_s"] = time.time() - started
        with open(args.out + ".part", "w") as fh:
            json.dump(result, fh, indent=1)
        os.replace(args.out + ".part", args.out)
        with open(done, "w") as fh:
            fh.write(status + "\n")
    print_summary(result)
    return 0 if status == "ok" else 1


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_summary(result: dict[str, Any]) -> None:
    """A few lines for the device command's output."""
    if "error" in result:
        print(f"failed: {result['error']}")
        return
    p, span = result["per_epoch"], result.get("tracked_span") or {}
    print(
        f"{len(result['epochs'])} epochs, {result['meta']['wall_s']:.0f} s wall;"
        f" run ratio {_fmt(result['run_ratio'], '.5f')}"
        f" (epochs 2..n {_fmt(result['run_ratio_from_epoch_2'], '.5f')});"
        f" tracked span {_fmt(span.get('ratio'), '.5f')} over"
        f" {_fmt(span.get('duration_s'), '.0f')} s"
    )
    print(
        f"per epoch (2..n): median ratio {_fmt(p['median_ratio'], '.4f')}, median |err|"
        f" {_fmt(p['median_abs_err_pct'], '.2f')}%, p90 {_fmt(p['p90_abs_err_pct'], '.2f')}%;"
        f" first epoch {_fmt(result['first_epoch'], '.4f')}"
    )
    print("per minute:", [_fmt(m["ratio"], ".4f") for m in result["per_minute"]])
    print("tracker threads:", result.get("meter_threads"))


if __name__ == "__main__":
    sys.exit(main())
