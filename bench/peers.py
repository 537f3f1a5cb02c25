"""Side by side on a real GPU: carbon_callbacks, CodeCarbon, carbontracker and Zeus.

    PYTHONPATH=.:/tmp/site python3 -m bench peers --reps 3 --out peers.json
    PYTHONPATH=. python3 -m bench peers --smoke --out /tmp/peers_smoke.json   # CPU, no peers
    PYTHONPATH=.:/tmp/site python3 -m bench peers hf ...   # the Hugging Face Trainer (peers_hf)

Needs the peers installed (codecarbon, carbontracker, zeus; see docs/benchmarks.md for how the
wheels were carried); a peer that is missing or fails is recorded as an error and the rest goes
on. The same Lightning training (a U-Net, data on the GPU) runs with no tracker and with each
tracker wrapped around the same epochs, trackers rotated within each repetition, in two kinds
of run:

- ``steady``: epochs of ~1 s (16 batches);
- ``short``: epochs of ~0.18 s (3 batches).

Every run begins after ``--idle-s`` seconds (default 3) of idle GPU, so its first epoch is a
warm-up from idle power, reported on its own. One counter poller (``bench/poller.py``,
another process) runs for the whole benchmark; each tracker's GPU energy per epoch is compared
with the counter interpolated at that tracker's own epoch edges. Epoch time is the wall time
between epoch starts (hooks included); per run its median over epochs 2..n, against the
no-tracker run of the same kind and repetition. Our tracker runs with its default settings.

The JSON holds ``meta``, ``settings``, ``runs`` (one record per run, its windows included) and
``summary`` (:func:`bench.stats.summarise_runs`); it is rewritten after every run. Runs that
would end past ``--max-s`` are skipped (recorded), so the command ends inside a device call.
Default: 3 repetitions x 5 modes x 2 kinds, about 6 minutes on one H100.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import torch

from bench.poller import read_pollers, start_pollers, stop_pollers, window_j
from bench.stats import compare_windows, gpu_j, summarise_runs
from bench.workloads import EpochTimer, Seg
from bench.workloads import loader as _loader
from carbon_callbacks.core.runlog import read_run_log
from carbon_callbacks.integrations.lightning import CarbonCallback

MODES = ("none", "carbon_callbacks", "codecarbon", "carbontracker", "zeus")
#: Distribution name of each peer, for its version.
PEER_DISTRIBUTIONS = {"codecarbon": "codecarbon", "carbontracker": "carbontracker", "zeus": "zeus"}
#: Watts of the made-up counter and of the stated GPU power in ``--smoke`` (ratios ~1).
SMOKE_POWER_W = 100.0


@dataclass
class RunShape:
    """One kind of run: how many epochs of how many batches, and the model's size."""

    kind: str
    epochs: int
    samples: int
    size_px: int
    batch: int
    width: int


class Windows(pl.Callback):
    """Collects (start unix s, end unix s, GPU J) per epoch from a wrapped peer."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float]] = []

    def windows(self) -> list[tuple[float, float, float]]:
        """The epochs as this tracker reported them (call after the fit)."""
        return self.rows


class CodeCarbonCB(Windows):
    """CodeCarbon 3.x: ``start_task``/``stop_task`` per epoch (reads NVML's counter at each)."""

    def __init__(self, tmp: str) -> None:
        super().__init__()
        from codecarbon import OfflineEmissionsTracker

        self.t = OfflineEmissionsTracker(
            country_iso_code="DEU", gpu_ids=[0], measure_power_secs=1, save_to_file=False,
            log_level="error", output_dir=tmp,
        )  # fmt: skip
        self.t0 = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.t.start_task("epoch")
        self.t0 = time.time()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        t1 = time.time()
        data = self.t.stop_task()
        self.rows.append((self.t0, t1, float(data.gpu_energy) * 3.6e6))


class CarbonTrackerCB(Windows):
    """carbontracker 2.x: ``epoch_start``/``epoch_end``; mean sampled power x epoch time.

    The energy of each epoch is taken at the end of the run from carbontracker's final lists,
    as its "Actual consumption" sums them (an epoch without a power sample borrows a later
    epoch's mean power, which it only has by then).
    """

    def __init__(self, tmp: str, epochs: int) -> None:
        super().__init__()
        from carbontracker.tracker import CarbonTracker

        self.t = CarbonTracker(
            epochs=epochs, epochs_before_pred=0, components="gpu", update_interval=1,
            log_dir=tmp, verbose=0, ignore_errors=True,
        )  # fmt: skip
        self.thread: Any = None
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.t.epoch_start()
        self.thread = self.t.tracker  # carbontracker deletes it after its last monitored epoch

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.t.epoch_end()
        self.starts.append(self.thread.cur_epoch_time)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.t.stop()

    def windows(self) -> list[tuple[float, float, float]]:
        thread = self.thread
        gpu = [c for c in thread.components if c.name == "gpu"][0]
        kwh = gpu.energy_usage(thread.epoch_times)  # PUE not applied (carbontracker adds 1.58)
        return [
            (start, start + seconds, float(e) * 3.6e6)
            for start, seconds, e in zip(self.starts, thread.epoch_times, kwh, strict=False)
        ]


class ZeusCB(Windows):
    """Zeus: a ``ZeusMonitor`` window per epoch (synchronises CUDA, then reads the counter)."""

    def __init__(self) -> None:
        super().__init__()
        from zeus.monitor import ZeusMonitor

        self.m = ZeusMonitor(gpu_indices=[0])
        self.t0 = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.m.begin_window("epoch")
        self.t0 = time.time()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        result = self.m.end_window("epoch")
        self.rows.append((self.t0, time.time(), float(result.gpu_energy[0])))


def make_tracker(mode: str, tmp: str, epochs: int, smoke: bool) -> pl.Callback | None:
    """The callback that wraps ``mode``'s tracker around each epoch (None for ``"none"``)."""
    if mode == "none":
        return None
    if mode == "carbon_callbacks":
        if smoke:  # no GPU here: a stated GPU power, compared with a made-up counter
            return CarbonCallback(
                log_dir=tmp, verbose=0, zone="DE", sim_gpu="smoke",
                sim_gpu_watts=SMOKE_POWER_W, sim_gpu_util=1.0,
            )  # fmt: skip
        return CarbonCallback(log_dir=tmp, verbose=0, zone="DE")  # default settings
    if mode == "codecarbon":
        return CodeCarbonCB(tmp)
    if mode == "carbontracker":
        return CarbonTrackerCB(tmp, epochs)
    if mode == "zeus":
        return ZeusCB()
    raise ValueError(f"unknown mode {mode!r}")


def tracker_windows(tracker: pl.Callback) -> tuple[list[tuple[float, float, float]], Any]:
    """(windows, methods) of a tracker after its fit; methods only for ours."""
    if isinstance(tracker, CarbonCallback):
        log = read_run_log(tracker.tracker.log_path)
        rows = [(e["start_unix_s"], e["end_unix_s"], gpu_j(e["energy_j"])) for e in log.epochs]
        # the last edges' settling, counted in the run's total: a window of no length (its
        # reference is 0 J, so it enters the run's sum and no per-epoch figure)
        rows += [
            (p["start_unix_s"], p["start_unix_s"], gpu_j(p["energy_j"]))
            for p in log.phases
            if p.get("name") == "settling"
        ]
        return rows, log.epochs[0]["methods"] if log.epochs else None
    assert isinstance(tracker, Windows)
    return tracker.windows(), None


class Bench:
    """The shared state of one benchmark: pollers, data, settings, and the idle clock."""

    def __init__(self, args: argparse.Namespace, tmp: str, pollers: list) -> None:
        self.args = args
        self.tmp = tmp
        self.pollers = pollers
        self.device = "cpu" if args.smoke else "cuda"
        self.fit_ended = time.monotonic()

    def fit(self, shape: RunShape, loader: Any, tracker: pl.Callback | None) -> dict[str, Any]:
        """Wait for the idle span, fit ``shape.epochs`` epochs; epoch times and idle power."""
        timer = EpochTimer()
        trainer = pl.Trainer(
            max_epochs=shape.epochs, accelerator=self.device, devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[timer] + ([tracker] if tracker is not None else []),
        )  # fmt: skip
        model = Seg(shape.width)
        idle_s = time.monotonic() - self.fit_ended
        if idle_s < self.args.idle_s:
            time.sleep(self.args.idle_s - idle_s)
        fit_start_unix_s = time.time()
        out: dict[str, Any] = {"idle_s_before": time.monotonic() - self.fit_ended}
        try:
            trainer.fit(model, loader)
        finally:
            self.fit_ended = time.monotonic()
        out["fit_s"] = time.time() - fit_start_unix_s
        out["epoch_s"] = timer.epoch_s
        out["fit_start_unix_s"] = fit_start_unix_s
        return out

    def reference_j(self) -> Any:
        """A function (start, end) -> counter J, from the steps polled so far."""
        time.sleep(0.3)  # the poller's step after the last edge (counts as idle for the next)
        steps = read_pollers(self.pollers)
        return lambda start, end: window_j(steps, start, end)


def run_one(bench: Bench, mode: str, shape: RunShape, loader: Any) -> dict[str, Any]:
    """One fit of ``shape`` with ``mode``'s tracker; the run record (see summarise_runs)."""
    tracker = make_tracker(mode, bench.tmp, shape.epochs, bench.args.smoke)
    record = bench.fit(shape, loader, tracker)
    reference = bench.reference_j()
    start = record.pop("fit_start_unix_s")
    try:
        record["idle_w_before"] = reference(start - 1.0, start)
    except ValueError:  # the poller had not run for 1 s yet
        record["idle_w_before"] = None
    if tracker is not None:
        windows, methods = tracker_windows(tracker)
        record["epochs"] = compare_windows(windows, reference)
        record["methods"] = methods
        if len(windows) != shape.epochs:
            record["note"] = f"{len(windows)} windows for {shape.epochs} epochs"
    return record


def _versions() -> dict[str, str | None]:
    import carbon_callbacks

    versions: dict[str, str | None] = {"carbon_callbacks": carbon_callbacks.__version__}
    for dist in ("torch", "lightning", *PEER_DISTRIBUTIONS.values()):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def shapes_for(args: argparse.Namespace) -> list[RunShape]:
    """The steady and short run shapes (tiny on CPU for ``--smoke``)."""
    if args.smoke:
        return [
            RunShape("steady", args.steady_epochs, samples=32, size_px=32, batch=8, width=4),
            RunShape("short", args.short_epochs, samples=8, size_px=32, batch=8, width=4),
        ]
    return [
        RunShape("steady", args.steady_epochs, samples=512, size_px=256, batch=32, width=32),
        RunShape("short", args.short_epochs, samples=32 * args.short_batches, size_px=256,
                 batch=32, width=32),
    ]  # fmt: skip


def common_arguments(
    parser: argparse.ArgumentParser, out: str, reps: int, modes: tuple[str, ...]
) -> None:
    """The options every side-by-side harness has (this one and ``bench/peers_hf.py``)."""
    parser.add_argument("--out", default=out)
    parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--modes", default=",".join(modes), help="comma-separated subset")
    parser.add_argument("--idle-s", type=float, default=3.0, help="idle GPU before each run")
    parser.add_argument("--max-s", type=float, default=540.0, help="skip runs ending later")
    parser.add_argument("--smoke", action="store_true", help="CPU plumbing check, no peers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(parser, "peers.json", 3, MODES)
    parser.add_argument("--steady-epochs", type=int, default=8, help="epochs of ~1 s per run")
    parser.add_argument("--short-epochs", type=int, default=30, help="short epochs per run")
    parser.add_argument("--short-batches", type=int, default=3, help="batches per short epoch")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in (("steady_epochs", 3), ("short_epochs", 4), ("idle_s", 0.3)):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    """The Lightning side by side, or with ``hf`` first the Hugging Face one (``peers_hf``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["hf"]:
        from bench import peers_hf

        return peers_hf.main(argv[1:])
    args = parse_args(argv)
    started = time.monotonic()
    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available..." once per fit
        logging.getLogger(name).setLevel(logging.WARNING)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    torch.backends.cudnn.benchmark = False
    shapes = shapes_for(args)
    results: dict[str, Any] = {
        "meta": {"gpu": _gpu_name(), "versions": _versions(), "smoke": args.smoke,
                 "started_at_unix_s": time.time()},
        "settings": {"reps": args.reps, "modes": modes, "idle_s": args.idle_s,
                     "max_s": args.max_s, "shapes": [asdict(s) for s in shapes]},
        "runs": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        max_poll_s = args.max_s + 120.0
        fake_w = SMOKE_POWER_W if args.smoke else None
        pollers = start_pollers(tmp, gpus=1, max_s=max_poll_s, fake_w=fake_w)
        bench = Bench(args, tmp, pollers)
        loaders = {
            s.kind: _loader(s.samples, s.size_px, s.batch, device=bench.device) for s in shapes
        }
        # Load kernels and libraries once, untimed, so that every recorded run starts alike.
        warm = RunShape("warm-up", 2, **{k: v for k, v in asdict(shapes[0]).items()
                                          if k not in ("kind", "epochs")})  # fmt: skip
        bench.fit(warm, loaders[shapes[0].kind], None)
        by_kind = {s.kind: s for s in shapes}
        try:
            run_rotated(
                args, results, modes, list(by_kind), started,
                lambda mode, kind: run_one(bench, mode, by_kind[kind], loaders[kind]),
            )  # fmt: skip
        finally:
            stop_pollers(pollers)
            save_results(results, args.out, started)
    print_summary(results["summary"])
    return 0


def save_results(results: dict[str, Any], path: str, started: float) -> None:
    """Write ``results`` with the summary of its runs, atomically (``started``: monotonic s)."""
    results["summary"] = summarise_runs(results["runs"])
    results["meta"]["elapsed_s"] = time.monotonic() - started
    with open(path + ".part", "w") as fh:
        json.dump(results, fh, indent=1)
    os.replace(path + ".part", path)


def run_rotated(
    args: argparse.Namespace,
    results: dict[str, Any],
    modes: list[str],
    kinds: list[str],
    started: float,
    run: Callable[[str, str], dict[str, Any]],
) -> None:
    """Every mode on every kind, ``args.reps`` times, modes rotated within each repetition.

    ``run(mode, kind)`` returns a run record's figures. A mode that raises is recorded with
    its error (an ImportError skips it from then on); with ``args.smoke`` the peers are
    skipped; a run that would end past ``args.max_s`` (judged by the longest run of its kind
    so far) is skipped and recorded. Each record is appended to ``results["runs"]``, saved
    and printed at once.
    """
    unavailable = {m: "skipped: --smoke" for m in PEER_DISTRIBUTIONS} if args.smoke else {}
    run_s: dict[str, float] = {}  # the longest run so far of each kind, for --max-s
    for rep in range(args.reps):
        for kind in kinds:
            order = modes[rep % len(modes) :] + modes[: rep % len(modes)]
            for position, mode in enumerate(order):
                record: dict[str, Any] = {"mode": mode, "kind": kind, "rep": rep,
                                          "position": position}  # fmt: skip
                if mode in unavailable:
                    record["error"] = unavailable[mode]
                elif time.monotonic() - started + run_s.get(kind, 0.0) > args.max_s:
                    record["error"] = f"skipped: would end past --max-s {args.max_s} s"
                else:
                    t0 = time.monotonic()
                    try:
                        record.update(run(mode, kind))
                    except Exception as exc:  # noqa: BLE001 - a peer failing is a result
                        record["error"] = repr(exc)
                        record["traceback"] = traceback.format_exc(limit=-4)
                        if isinstance(exc, ImportError):
                            unavailable[mode] = f"skipped: {exc!r}"
                    record["run_s"] = time.monotonic() - t0
                    run_s[kind] = max(run_s.get(kind, 0.0), record["run_s"])
                results["runs"].append(record)
                save_results(results, args.out, started)
                print(_run_line(record), flush=True)


def _run_line(record: dict[str, Any]) -> str:
    head = f"rep {record['rep']} {record['kind']:6s} {record['mode']:16s}"
    if "error" in record:
        return f"{head} {record['error']}"
    ratios = [r["ratio"] for r in record.get("epochs", [])]
    line = f"{head} {record.get('run_s', 0):5.1f} s, idle {record['idle_w_before'] or 0:.0f} W"
    if ratios and all(r is not None for r in ratios):
        line += f", first {ratios[0]:.3f}, ratios {min(ratios):.3f}..{max(ratios):.3f}"
    return line


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_summary(summary: dict[str, Any]) -> None:
    """One line per tracker and kind: the table of docs/benchmarks.md."""
    for mode, kinds in summary.items():
        for kind, f in kinds.items():
            line = f"{mode:16s} {kind:6s} runs {f['runs']}"
            if "added_epoch_time_pct" in f:
                t = f["added_epoch_time_pct"]
                line += (
                    f" | added epoch time {_fmt(t['median'], '+.2f')}%"
                    f" [{_fmt(t['min'], '+.2f')}, {_fmt(t['max'], '+.2f')}]"
                )
            if "per_epoch" in f:
                p, w, r = f["per_epoch"], f["first_epoch"], f["run_ratio"]
                line += (
                    f" | epochs 2..n: ratio {_fmt(p['median_ratio'], '.4f')},"
                    f" |err| {_fmt(p['median_abs_err_pct'], '.2f')}%"
                    f" [p90 {_fmt(p['p90_abs_err_pct'], '.2f')}%]"
                    f" | first epoch: ratio {_fmt(w['median_ratio'], '.3f')}"
                    f" |err| {_fmt(w['median_abs_err_pct'], '.1f')}%"
                    f" | run {_fmt(r['median'], '.4f')}"
                    f" [{_fmt(r['min'], '.4f')}, {_fmt(r['max'], '.4f')}]"
                )
            if f["errors"]:
                line += f" | errors: {f['errors'][0]}"
            print(line)


if __name__ == "__main__":
    sys.exit(main())
