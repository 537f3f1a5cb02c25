"""Accuracy against NVML's counter and added epoch time, for one or more package trees at once.

    python -m bench overhead --package before=OLD_TREE --package after=. --out OUT
    python -m bench overhead --simulate --reps 1 --out /tmp/oh   # the plumbing, CPU only
    python -m bench overhead --package helper=. --package thread=. \\
        --env thread:CARBON_CALLBACKS_COUNTER_MODE=thread --out OUT   # the two counter readers

Each ``--package NAME=DIR`` is a checkout whose ``DIR/carbon_callbacks`` is imported (its
subprocesses run with ``PYTHONPATH=DIR``). One counter poller (``bench/poller.py``, another
process) dates the GPU counter's steps for the whole benchmark. Then, ``--reps`` times, in an
order rotated each repetition, one fresh training process per variant:

- ``none``: the loop without a tracker (the baseline of the added time);
- ``NAME``: the same loop inside ``CarbonTracker(epochs=..., log_dir=..., verbose=0,
  zone="DE")`` (``epoch_start`` / ``epoch_end`` around each epoch; defaults otherwise);
- ``NAME:sampled``: the same with ``gpu_method="sampled"`` (the power-sampling fallback), on
  ``--sampled-lengths`` (default 0.3, 1 and 8 s).

Each process trains a conv net on data held on GPU 0, one block of epochs per epoch length
(``--lengths``, default 0.18, 1 and 8 s; steps per epoch calibrated once, before the first
repetition, and the same for every variant), each block a fresh tracker after ``--idle-s`` of
idle GPU, so its first epoch starts from idle. Epoch time is the wall time between epoch starts
(hooks included, the GPU synchronised at each edge); the time inside each hook is recorded too.
Per epoch, the GPU energy in the run log is compared with the counter interpolated at the
tracker's own epoch edges; the run's total (epochs plus energy counted outside them, such as an
older version's ``settling`` record) with the counter summed over the same epochs. Import and
the first ``epoch_start`` are timed in fresh processes that import nothing else. Runs that would
end past ``--max-s`` are skipped (recorded). Writes ``OUT/overhead.json`` (rewritten after every
run), the run logs and the poller's steps under ``OUT``, and prints a table last.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
#: Watts of the stated GPU and of the made-up counter with ``--simulate`` (ratios ~1).
SIMULATED_W = 100.0
#: Seconds of one training step with ``--simulate`` (a busy loop on the CPU).
SIMULATED_STEP_S = 0.01


# ---------------------------------------------------------------------------- worker side
# Run as a script (``python bench/overhead.py worker ...``) with PYTHONPATH at one package tree:
# it imports nothing of bench/ and, for a tracker variant, carbon_callbacks from that tree.


class Loop:
    """The training step and GPU synchronisation (a CPU busy loop with ``simulate``)."""

    def __init__(self, simulate: bool) -> None:
        self.simulate = simulate
        if simulate:
            return
        import torch

        torch.backends.cudnn.benchmark = False
        self.torch = torch
        g = torch.Generator(device="cuda").manual_seed(0)
        self.x = torch.randn(32, 1, 256, 256, device="cuda", generator=g)
        self.y = (self.x > 0.5).float()
        conv = torch.nn.Conv2d
        self.net = torch.nn.Sequential(
            conv(1, 32, 3, padding=1), torch.nn.ReLU(),
            conv(32, 64, 3, padding=1), torch.nn.ReLU(),
            conv(64, 64, 3, padding=1), torch.nn.ReLU(),
            conv(64, 1, 1),
        ).cuda()  # fmt: skip
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def step(self) -> None:
        """One training step (queued on the GPU; :meth:`sync` waits for it)."""
        if self.simulate:
            end = time.perf_counter() + SIMULATED_STEP_S
            while time.perf_counter() < end:
                pass
            return
        nn = self.torch.nn.functional
        loss = nn.binary_cross_entropy_with_logits(self.net(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def sync(self) -> None:
        if not self.simulate:
            self.torch.cuda.synchronize()

    def device_name(self) -> str:
        return "simulated" if self.simulate else self.torch.cuda.get_device_name(0)


def tracker_settings(job: dict[str, Any], epochs: int, log_dir: str | None) -> dict[str, Any]:
    """The CarbonTracker arguments of a variant (public API only, so every version takes them)."""
    settings: dict[str, Any] = {"epochs": epochs, "log_dir": log_dir, "verbose": 0, "zone": "DE"}
    if job.get("method") == "sampled":
        settings["gpu_method"] = "sampled"
    if job["simulate"]:
        settings.update(
            sim_gpu="simulated GPU", sim_gpu_watts=SIMULATED_W, sim_gpu_util=1.0, components="gpu"
        )
    return settings


def run_block(job: dict[str, Any], loop: Loop, block: dict[str, Any]) -> dict[str, Any]:
    """Idle, then ``block["epochs"]`` epochs of ``block["steps"]`` steps; times and log path."""
    log_dir = os.path.join(job["log_dir"], f"{block['length_s']:g}s")
    os.makedirs(log_dir, exist_ok=True)
    loop.sync()
    time.sleep(job["idle_s"])
    tracker, construct_ms = None, None
    if job["package"] is not None:
        from carbon_callbacks import CarbonTracker

        t0 = time.perf_counter()
        tracker = CarbonTracker(**tracker_settings(job, block["epochs"], log_dir))
        construct_ms = (time.perf_counter() - t0) * 1e3
    starts: list[float] = []
    edges: list[tuple[float, float]] = []
    hook_ms: list[tuple[float, float]] = []  # (epoch_start, epoch_end) per epoch
    for _ in range(block["epochs"]):
        loop.sync()
        starts.append(time.perf_counter())
        start_unix_s = time.time()
        if tracker is not None:
            tracker.epoch_start()
        t_started = time.perf_counter()
        for _ in range(block["steps"]):
            loop.step()
        loop.sync()
        edges.append((start_unix_s, time.time()))
        t_end = time.perf_counter()
        if tracker is not None:
            tracker.epoch_end()
            hook_ms.append(((t_started - starts[-1]) * 1e3, (time.perf_counter() - t_end) * 1e3))
    loop.sync()
    starts.append(time.perf_counter())
    if tracker is not None:
        tracker.stop()
    epoch_s = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    return {
        **block,
        "epoch_s": epoch_s,
        "loop_edges_unix_s": edges,
        "log_dir": log_dir,
        "construct_ms": construct_ms,
        "hook_ms": hook_ms,
    }


def worker_train(job: dict[str, Any]) -> dict[str, Any]:
    loop = Loop(job["simulate"])
    for _ in range(3):  # kernels and libraries loaded before anything is timed
        loop.step()
    loop.sync()
    settings = {k: v for k, v in os.environ.items() if k.startswith("CARBON_CALLBACKS_")}
    return {"blocks": [run_block(job, loop, block) for block in job["blocks"]], "env": settings}


def worker_calibrate(job: dict[str, Any]) -> dict[str, Any]:
    """Seconds of one training step after a warm-up, and the device's name."""
    loop = Loop(job["simulate"])
    for _ in range(5):
        loop.step()
    loop.sync()
    t0 = time.perf_counter()
    for _ in range(10):
        loop.step()
    loop.sync()
    return {"step_s": (time.perf_counter() - t0) / 10, "device": loop.device_name()}


def worker_import(job: dict[str, Any]) -> dict[str, Any]:
    """Milliseconds of the import, the constructor and the first ``epoch_start``."""
    t0 = time.perf_counter()
    from carbon_callbacks import CarbonTracker

    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tracker = CarbonTracker(**tracker_settings(job, 2, tmp))
        t2 = time.perf_counter()
        tracker.epoch_start()
        t3 = time.perf_counter()
        tracker.epoch_end()
        tracker.stop()
    return {
        "import_ms": (t1 - t0) * 1e3,
        "construct_ms": (t2 - t1) * 1e3,
        "first_epoch_start_ms": (t3 - t2) * 1e3,
        "total_ms": (t3 - t0) * 1e3,
    }


WORKERS = {"train": worker_train, "calibrate": worker_calibrate, "import": worker_import}


def worker_main(argv: list[str]) -> int:
    """``worker KIND JOB_JSON OUT_JSON``: run one job, write its result."""
    kind, job_json, out_path = argv
    result = WORKERS[kind](json.loads(job_json))
    with open(out_path, "w") as fh:
        json.dump(result, fh)
    return 0


# ---------------------------------------------------------------------------- orchestrator side


def spawn(
    kind: str,
    job: dict[str, Any],
    root: str | None,
    scratch: str,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one worker in a fresh process with ``PYTHONPATH=root`` (nothing else) and
    ``extra_env`` set; its result."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra_env or {})
    if root is not None:
        env["PYTHONPATH"] = os.path.abspath(root)
    env["PYTHONUNBUFFERED"] = "1"
    fd, out_path = tempfile.mkstemp(prefix=f"{kind}_", suffix=".json", dir=scratch)
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "worker", kind, json.dumps(job), out_path]
    proc = subprocess.run(cmd, env=env, cwd=scratch, capture_output=True, text=True, timeout=900)
    with open(out_path.removesuffix(".json") + ".txt", "w") as fh:  # warnings, for a post-mortem
        fh.write(f"{' '.join(cmd)}\nPYTHONPATH={env.get('PYTHONPATH')}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with open(out_path) as fh:
        return json.load(fh)


def read_log(log_dir: str) -> dict[str, Any]:
    """The epochs and the GPU joules counted outside them, from the run log in ``log_dir``.

    Read line by line (no package import), so that logs of any version are read alike.
    """
    from bench.stats import gpu_j

    paths = sorted(glob.glob(os.path.join(log_dir, "**", "*.jsonl"), recursive=True))
    if not paths:
        raise RuntimeError(f"no run log in {log_dir}")
    epochs, outside_j, methods = [], 0.0, None
    with open(paths[-1]) as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("type") == "epoch":
                epochs.append(
                    (record["start_unix_s"], record["end_unix_s"], gpu_j(record["energy_j"]))
                )
                methods = methods or record.get("methods")
            elif record.get("type") == "phase" and record.get("name") == "settling":
                outside_j += gpu_j(record.get("energy_j") or {})
    return {"windows": epochs, "outside_j": outside_j, "methods": methods, "path": paths[-1]}


def measure_block(block: dict[str, Any], steps: Any, tracked: bool) -> dict[str, Any]:
    """The run record of one block: epoch times and, for a tracker, the counter comparison."""
    from bench.poller import window_j
    from bench.stats import compare_windows

    record: dict[str, Any] = {"epoch_s": block["epoch_s"], "steps": block["steps"]}
    if not tracked:
        return record
    record["construct_ms"] = block["construct_ms"]
    record["hook_ms"] = block["hook_ms"]
    log = read_log(block["log_dir"])
    rows = compare_windows(log["windows"], lambda a, b: window_j(steps, a, b))
    record.update(epochs=rows, methods=log["methods"], run_log=log["path"])
    counter_j = sum(r["reference_j"] for r in rows)
    tracker_j = sum(r["tracker_j"] for r in rows) + log["outside_j"]
    record["run_ratio"] = tracker_j / counter_j if counter_j > 0 else None
    record["outside_j"] = log["outside_j"]
    return record


def reader_ms(poll_path: str, edges: list[tuple[float, float]]) -> float | None:
    """Median ms of the poller's counter reads during a run's epochs (None if not recorded)."""
    from bench.poller import load_read_ms

    if not edges:
        return None
    times, read_ms = load_read_ms(poll_path)
    start, end = edges[0][0], edges[-1][1]
    inside = [ms for t, ms in zip(times, read_ms, strict=True) if start <= t <= end]
    return statistics.median(inside) if inside else None


def variants_of(packages: list[tuple[str, str]], sampled: bool) -> list[tuple[str, str | None]]:
    """(variant name, package root) in the order of the first repetition."""
    out: list[tuple[str, str | None]] = [("none", None)]
    out += [(name, root) for name, root in packages]
    if sampled:
        out += [(f"{name}:sampled", root) for name, root in packages]
    return out


class Bench:
    """The state of one benchmark call: settings, results, the poller and the clock."""

    def __init__(self, args: argparse.Namespace, packages: list[tuple[str, str]]) -> None:
        self.args = args
        self.packages = packages
        self.package_env = env_of(args)
        self.started = time.monotonic()
        self.results: dict[str, Any] = {
            "meta": {"started_at_unix_s": time.time(), "simulate": args.simulate},
            "settings": {k: v for k, v in vars(args).items() if k != "package"},
            "packages": dict(packages),
            "package_env": self.package_env,
            "imports": [],
            "runs": [],
        }
        self.scratch = os.path.join(args.out, "scratch")
        os.makedirs(self.scratch, exist_ok=True)
        self.poll_path = ""
        self.steps: Any = None

    def save(self) -> None:
        from bench.stats import summarise_runs

        self.results["summary"] = summarise_runs(self.results["runs"])
        self.results["import_summary"] = summarise_imports(self.results["imports"])
        self.results["poller_read_ms"] = summarise_reads(self.results["runs"])
        self.results["hook_ms"] = summarise_hooks(self.results["runs"])
        self.results["meta"]["elapsed_s"] = time.monotonic() - self.started
        path = os.path.join(self.args.out, "overhead.json")
        with open(path + ".part", "w") as fh:
            json.dump(self.results, fh, indent=1)
        os.replace(path + ".part", path)

    def job(self, variant: str, root: str | None, rep: int) -> dict[str, Any]:
        package = None if root is None else variant.split(":")[0]
        method = "sampled" if variant.endswith(":sampled") else "auto"
        blocks = self.results["sampled_blocks" if method == "sampled" else "blocks"]
        log_dir = os.path.join(self.args.out, "logs", f"rep{rep}_{variant.replace(':', '_')}")
        return {
            "package": package,
            "method": method,
            "blocks": blocks,
            "idle_s": self.args.idle_s,
            "log_dir": log_dir,
            "simulate": self.args.simulate,
        }

    def train(self, variant: str, root: str | None, rep: int, position: int) -> None:
        """One training process; a run record per epoch length, saved and printed."""
        head = {"mode": variant, "rep": rep, "position": position}
        t0 = time.monotonic()
        job = self.job(variant, root, rep)
        try:
            out = spawn("train", job, root, self.scratch, self.package_env.get(job["package"]))
        except Exception as exc:  # noqa: BLE001 - a failing variant is a result
            for block in job["blocks"]:
                self.results["runs"].append({**head, "kind": kind_of(block), "error": repr(exc)})
            print(f"rep {rep} {variant}: {exc!r}"[:400], flush=True)
            return
        steps = self.steps_after(max(e[1] for b in out["blocks"] for e in b["loop_edges_unix_s"]))
        for block in out["blocks"]:
            record = {**head, "kind": kind_of(block), "env": out.get("env", {})}
            try:
                record.update(measure_block(block, steps, root is not None))
                record["poller_read_ms"] = reader_ms(self.poll_path, block["loop_edges_unix_s"])
            except Exception as exc:  # noqa: BLE001
                record["error"] = repr(exc)
            self.results["runs"].append(record)
            print(run_line(record), flush=True)
        self.run_s = max(getattr(self, "run_s", 0.0), time.monotonic() - t0)
        self.save()

    def steps_after(self, end_unix_s: float, wait_s: float = 10.0) -> Any:
        """The poller's steps, once it has dated one after ``end_unix_s`` (or ``wait_s`` passed)."""
        from bench.poller import read_pollers

        deadline = time.monotonic() + wait_s
        while True:
            steps = read_pollers(self.pollers)
            times = steps[0][0]
            if (times and times[-1] > end_unix_s + 0.05) or time.monotonic() > deadline:
                return steps
            time.sleep(0.1)

    def time_import(self, name: str, root: str, rep: int) -> None:
        job = {"simulate": self.args.simulate, "method": "auto"}
        record: dict[str, Any] = {"package": name, "rep": rep}
        try:
            record.update(spawn("import", job, root, self.scratch, self.package_env.get(name)))
        except Exception as exc:  # noqa: BLE001
            record["error"] = repr(exc)
        self.results["imports"].append(record)

    def run(self) -> None:
        from bench.poller import start_pollers, stop_pollers

        args = self.args
        fake_w = SIMULATED_W if args.simulate else None
        self.pollers = start_pollers(self.args.out, gpus=1, max_s=args.max_s + 120, fake_w=fake_w)
        self.poll_path = self.pollers[0][1]
        try:
            calibration = spawn("calibrate", {"simulate": args.simulate}, None, self.scratch)
            self.results["meta"].update(calibration)
            for key, lengths, epochs in (
                ("blocks", args.lengths, args.epochs),
                ("sampled_blocks", args.sampled_lengths, args.sampled_epochs),
            ):
                self.results[key] = [
                    {"length_s": length, "epochs": n,
                     "steps": max(1, round(length / calibration["step_s"]))}
                    for length, n in zip(lengths, epochs, strict=True)
                ]  # fmt: skip
            variants = variants_of(self.packages, args.sampled)
            for rep in range(args.reps):
                shift = rep % len(variants)
                order = variants[shift:] + variants[:shift]
                for position, (variant, root) in enumerate(order):
                    if root is not None and ":" not in variant:
                        self.time_import(variant, root, rep)
                    elapsed = time.monotonic() - self.started
                    if elapsed + getattr(self, "run_s", 0.0) > args.max_s:
                        self.results["runs"].append(
                            {"mode": variant, "rep": rep, "kind": "all",
                             "error": f"skipped: would end past --max-s {args.max_s} s"}
                        )  # fmt: skip
                        continue
                    self.train(variant, root, rep, position)
        finally:
            stop_pollers(self.pollers)
            self.save()


def kind_of(block: dict[str, Any]) -> str:
    return f"{block['length_s']:g}s"


def summarise_imports(imports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per package, :func:`bench.stats.spread` of each import figure over repetitions."""
    from bench.stats import spread

    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["package"] for r in imports):
        ok = [r for r in imports if r["package"] == name and "error" not in r]
        out[name] = {
            key: spread(r[key] for r in ok)
            for key in ("import_ms", "construct_ms", "first_epoch_start_ms", "total_ms")
        }
        out[name]["errors"] = [r["error"] for r in imports if r["package"] == name and "error" in r]
    return out


def summarise_hooks(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant, :func:`bench.stats.spread` of ms inside ``epoch_start`` and ``epoch_end``.

    Each run's median over its epochs 2..n (the first ``epoch_start`` starts the tracker and is
    given apart, ``first_epoch_start_ms``), as measured inside the training process.
    """
    from bench.stats import spread

    out: dict[str, Any] = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        hooks = [r["hook_ms"] for r in runs if r["mode"] == mode and r.get("hook_ms")]
        if not hooks:
            continue
        steady = [run[1:] for run in hooks if run[1:]]
        out[mode] = {
            "epoch_start_ms": spread(statistics.median(h[0] for h in run) for run in steady),
            "epoch_end_ms": spread(statistics.median(h[1] for h in run) for run in steady),
            "first_epoch_start_ms": spread(run[0][0] for run in hooks),
        }
    return out


def summarise_reads(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant, :func:`bench.stats.spread` of the poller's median read time in its runs."""
    from bench.stats import spread

    return {
        mode: spread(r.get("poller_read_ms") for r in runs if r["mode"] == mode)
        for mode in dict.fromkeys(r["mode"] for r in runs)
    }


def run_line(record: dict[str, Any]) -> str:
    head = f"rep {record['rep']} {record['kind']:>5s} {record['mode']:16s}"
    if "error" in record:
        return f"{head} {record['error']}"[:300]
    line = f"{head} epoch {statistics.median(record['epoch_s']):.3f} s"
    ratios = [r["ratio"] for r in record.get("epochs", []) if r["ratio"] is not None]
    if ratios:
        line += f", ratios {min(ratios):.3f}..{max(ratios):.3f}"
        line += f", run {_f(record['run_ratio'], '.4f')}"
    return line


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[str, Any]) -> str:
    """The short table printed last: one line per variant and epoch length, then imports."""
    lines = [
        f"{'variant':16s} {'epoch':>5s} {'runs':>4s} {'run ratio [min, max]':>24s}"
        f" {'|err| med/max %':>16s} {'1st |err| %':>11s} {'added time % [min, max]':>26s}"
    ]
    for mode, kinds in results.get("summary", {}).items():
        for kind, f in kinds.items():
            if not f["runs"] and not f["errors"]:
                continue  # a length this variant skips (sampled, short epochs)
            line = f"{mode:16s} {kind:>5s} {f['runs']:4d}"
            if "run_ratio" in f:
                r, e, w = f["run_ratio"], f["all_epochs"], f["first_epoch"]
                err_med, err_max = e["median_abs_err_pct"], e["max_abs_err_pct"]
                line += (
                    f" {_f(r['median'], '.4f'):>8s} [{_f(r['min'], '.4f')}, {_f(r['max'], '.4f')}]"
                    f" {_f(err_med, '.2f'):>7s}/{_f(err_max, '.2f'):<8s}"
                    f" {_f(w['median_abs_err_pct'], '.2f'):>11s}"
                )
            else:
                line += " " * 61
            if "added_epoch_time_pct" in f:
                t = f["added_epoch_time_pct"]
                low, high = _f(t["min"], "+.3f"), _f(t["max"], "+.3f")
                line += f" {_f(t['median'], '+.3f'):>8s} [{low}, {high}]"
            if f["errors"]:
                line += f"  errors: {f['errors'][0]}"[:200]
            lines.append(line)
    reads = results.get("poller_read_ms", {})
    lines.append(
        "the poller's counter read, median ms: "
        + "; ".join(f"{mode} {_f(f['median'], '.2f')}" for mode, f in reads.items())
    )
    for mode, f in results.get("hook_ms", {}).items():
        lines.append(
            f"{mode:16s} hooks in training, median ms: epoch_start"
            f" {_f(f['epoch_start_ms']['median'], '.3f')}, epoch_end"
            f" {_f(f['epoch_end_ms']['median'], '.3f')} [{_f(f['epoch_end_ms']['min'], '.3f')},"
            f" {_f(f['epoch_end_ms']['max'], '.3f')}], first epoch_start"
            f" {_f(f['first_epoch_start_ms']['median'], '.1f')}"
        )
    for name, f in results.get("import_summary", {}).items():
        parts = [
            f"{key.removesuffix('_ms')} {_f(f[key]['median'], '.1f')}"
            f" [{_f(f[key]['min'], '.1f')}, {_f(f[key]['max'], '.1f')}]"
            for key in ("import_ms", "construct_ms", "first_epoch_start_ms", "total_ms")
        ]
        lines.append(f"{name:16s} ms: " + "; ".join(parts))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench overhead", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a tree holding carbon_callbacks/ (repeatable; default: this checkout as 'this')",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="an environment variable for package NAME's processes (repeatable), e.g. "
        "--package thread=. --env thread:CARBON_CALLBACKS_COUNTER_MODE=thread",
    )
    parser.add_argument("--out", default="overhead_out", help="folder for results and logs")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--lengths", default="0.18,1,8", help="epoch lengths in s")
    parser.add_argument("--epochs", default="10,4,2", help="epochs per length")
    parser.add_argument("--sampled-lengths", default="0.3,1,8", help="the same, sampled method")
    parser.add_argument("--sampled-epochs", default="6,4,2")
    parser.add_argument("--idle-s", type=float, default=1.5, help="idle GPU before each block")
    parser.add_argument("--no-sampled", dest="sampled", action="store_false")
    parser.add_argument("--max-s", type=float, default=540.0, help="skip runs ending later")
    parser.add_argument("--simulate", action="store_true", help="CPU plumbing: no GPU, no NVML")
    args = parser.parse_args(argv)
    for lengths, epochs in (("lengths", "epochs"), ("sampled_lengths", "sampled_epochs")):
        values = [float(x) for x in getattr(args, lengths).split(",")]
        counts = [int(x) for x in getattr(args, epochs).split(",")]
        counts = counts * len(values) if len(counts) == 1 else counts
        if len(counts) != len(values):
            parser.error(f"--{epochs.replace('_', '-')}: one count, or one per length")
        setattr(args, lengths, values)
        setattr(args, epochs, counts)
    return args


def env_of(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """Per package name, the environment variables ``--env NAME:KEY=VALUE`` give it."""
    out: dict[str, dict[str, str]] = {}
    for spec in args.env:
        name, _, assignment = spec.partition(":")
        key, sep, value = assignment.partition("=")
        if not name or not key or not sep:
            raise SystemExit(f"--env wants NAME:KEY=VALUE, got {spec!r}")
        out.setdefault(name, {})[key] = value
    return out


def packages_of(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(name, root) of each ``--package``; each root must hold ``carbon_callbacks/``."""
    specs = args.package or [f"this={os.path.dirname(HERE)}"]
    packages = []
    for spec in specs:
        name, sep, root = spec.partition("=")
        if not sep or not name or ":" in name:
            raise SystemExit(f"--package wants NAME=DIR, got {spec!r}")
        root = os.path.abspath(root)
        if not os.path.isfile(os.path.join(root, "carbon_callbacks", "__init__.py")):
            raise SystemExit(f"--package {name}: no carbon_callbacks/ in {root}")
        packages.append((name, root))
    return packages


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["worker"]:
        return worker_main(argv[1:])
    args = parse_args(argv)
    packages = packages_of(args)
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    bench = Bench(args, packages)
    bench.run()
    print(table(bench.results))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:  # a worker imports nothing of bench/
        if os.path.abspath(sys.path[0]) == HERE:
            del sys.path[0]  # bench/'s modules stay out of the worker's imports
        sys.exit(worker_main(sys.argv[2:]))
    sys.path.insert(0, os.path.dirname(HERE))
    sys.exit(main())
