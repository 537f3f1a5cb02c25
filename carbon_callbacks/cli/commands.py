"""The ``carbon-callbacks`` command: report, run, estimate, regions, plot.

Parsing and printing only; the work is done in :mod:`carbon_callbacks.report` (statement, collect,
regions, estimate, carbontracker_logs, plots) and :mod:`carbon_callbacks.cli.run`.

Exit codes: 0 success; 1 nothing could be done (no readable log, unknown hardware or zone,
matplotlib missing); 2 bad usage; ``run`` exits with the command's own code.

``best-start`` comes from :mod:`carbon_callbacks.cli.intensity`, which registers its parser on
the same sub-parsers object.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from carbon_callbacks import __version__
from carbon_callbacks.cli import intensity

#: Exit code when nothing could be done.
EXIT_NOTHING = 1
#: Exit code of argparse usage errors.
EXIT_USAGE = 2
PROG = "carbon-callbacks"
FORMATS = ("text", "markdown", "json", "csv")


def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _write_output(text: str, output: str | None, default: TextIO | None = None) -> None:
    """Write ``text`` to the file ``output``, else to ``default`` (stdout)."""
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        _err(f"written to {path}")
    else:
        stream = default or sys.stdout
        stream.write(text)
        stream.flush()


def _stream_is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Progress:
    """``reading logs 12/500`` on stderr: rewritten in place on a terminal (10 per second at
    most), else a line every 2 seconds and at the end."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        self.stream = stream
        self.tty = tty
        self.last = 0.0

    def __call__(self, done: int, total: int, path: Path) -> None:
        now = time.monotonic()
        final = done == total
        if not final and now - self.last < (0.1 if self.tty else 2.0):
            return
        self.last = now
        text = f"{PROG}: reading logs {done}/{total}"
        try:
            if self.tty:
                self.stream.write("\r" + text + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


def _progress_for(choice: str) -> _Progress | None:
    tty = _stream_is_tty(sys.stderr)
    if choice == "off" or (choice == "auto" and not tty):
        return None
    return _Progress(sys.stderr, tty)


def _collect(paths: Sequence[str], progress_choice: str = "auto") -> Any:
    """Read the logs; report skipped paths on stderr; None (after a message) when none read."""
    from carbon_callbacks.report.collect import collect_logs

    collected = collect_logs(list(paths), progress=_progress_for(progress_choice))
    for path, reason in collected.skipped:
        _err(f"skipped {path}: {reason}")
    for path, note in collected.notes:
        _err(f"warning: {path}: {note}")
    if not collected.logs:
        where = ", ".join(str(p) for p in paths)
        _err(
            f"no readable run log under {where}: nothing to report. Run logs are "
            "*.carbon.jsonl files (CarbonTracker(log_dir=...) or the callbacks' log_dir); "
            "carbontracker's *_carbontracker.log / *_carbontracker_output.log are read too."
        )
        return None
    return collected


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    """``report LOG_DIR...``."""
    from carbon_callbacks.report.statement import build_report, render

    collected = _collect(args.paths, args.progress)
    if collected is None:
        return EXIT_NOTHING
    report = build_report(collected, car_basis=args.car_basis)
    if not report.rows:
        _err("no run could be counted (every log was a duplicate or a continued segment)")
        return EXIT_NOTHING
    _write_output(render(report, args.format), args.output)
    return 0


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """``run [options] -- COMMAND ...``."""
    from carbon_callbacks.cli.run import run_command
    from carbon_callbacks.core.config import CarbonConfig, ConfigError, check_writable_dir
    from carbon_callbacks.report.collect import collect_logs
    from carbon_callbacks.report.statement import build_report, render

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _err("no command given: carbon-callbacks run [options] -- COMMAND [ARGS...]")
        return EXIT_USAGE
    settings: dict[str, Any] = {
        "log_dir": args.log_dir,
        "log_file_prefix": args.log_file_prefix,
        "run_name": args.name,
        "components": args.components,
        "pue": args.pue,
        "zone": args.zone,
        "intensity_g_per_kwh": args.intensity,
        "interval_s": args.interval_s,
        "offline": True,
    }
    if args.gpu_ids:
        settings["gpu_ids"] = [int(g) if g.isdigit() else g for g in args.gpu_ids.split(",")]
    if args.sim_gpu is not None or args.sim_gpu_watts is not None:
        settings.update(sim_gpu=args.sim_gpu, sim_gpu_watts=args.sim_gpu_watts)
    if args.sim_cpu is not None or args.sim_cpu_tdp is not None:
        settings.update(sim_cpu=args.sim_cpu, sim_cpu_tdp=args.sim_cpu_tdp)
    try:
        config = CarbonConfig.from_kwargs(**settings)
        if config.log_dir is not None:  # the command's report needs its run log: check first
            check_writable_dir(config.log_dir)
    except ConfigError as exc:
        _err(f"bad setting: {exc}")
        return EXIT_USAGE
    interval = args.progress_s
    if interval is None:
        interval = 15.0 if _stream_is_tty(sys.stderr) else None
    elif interval <= 0:
        interval = None
    try:
        result = run_command(command, config, progress_interval_s=interval)
    except (ConfigError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    if result.error:
        _err(result.error)
    if result.log_path and Path(result.log_path).exists():
        report = build_report(collect_logs([result.log_path]), car_basis=args.car_basis)
        _write_output(render(report, args.format), args.output, default=sys.stderr)
    else:
        _err(f"no run log was written; totals: {result.totals}")
    if result.signals:
        _err(f"interrupted; the command exited with code {result.exit_code}")
    return result.exit_code


# --------------------------------------------------------------------------------------------
# estimate
# --------------------------------------------------------------------------------------------


def cmd_estimate(args: argparse.Namespace) -> int:
    """``estimate --gpu MODEL --hours H ...``."""
    import json

    from carbon_callbacks.core.intensity.static import UnknownZoneError
    from carbon_callbacks.core.tables import cpu_tdp_table, gpu_tdp_table
    from carbon_callbacks.report.estimate import UnknownHardwareError, estimate, render_estimate

    if args.list_gpus:
        rows = sorted(gpu_tdp_table().items())
        _write_output("".join(f"{name}\t{w:g} W\n" for name, w in rows), args.output)
        return 0
    if args.list_cpus is not None:
        needle = args.list_cpus.casefold()
        rows = [(n, w) for n, w in sorted(cpu_tdp_table().items()) if needle in n.casefold()]
        _write_output("".join(f"{name}\t{w:g} W\n" for name, w in rows), args.output)
        return 0 if rows else EXIT_NOTHING
    if args.hours is None:
        _err("estimate needs --hours H (and --gpu MODEL and/or --cpu MODEL)")
        return EXIT_USAGE
    if args.gpu is None and args.cpu is None:
        _err("estimate needs --gpu MODEL and/or --cpu MODEL")
        return EXIT_USAGE
    try:
        result = estimate(
            hours=args.hours,
            gpu=args.gpu,
            count=args.count,
            gpu_tdp_w=args.gpu_tdp,
            cpu=args.cpu,
            cpu_count=args.cpu_count,
            cpu_tdp_w=args.cpu_tdp,
            zone=args.zone,
            intensity_g_per_kwh=args.intensity,
            pue=args.pue,
            utilisation=args.utilisation,
            car_basis=args.car_basis,
        )
    except (UnknownHardwareError, UnknownZoneError) as exc:
        _err(str(exc))
        return EXIT_NOTHING
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if args.format == "json":
        text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"
    else:
        text = render_estimate(result)
    _write_output(text, args.output)
    return 0


# --------------------------------------------------------------------------------------------
# regions
# --------------------------------------------------------------------------------------------


def cmd_regions(args: argparse.Namespace) -> int:
    """``regions LOG_DIR...`` or ``regions --kwh X``."""
    from carbon_callbacks.core.intensity.static import UnknownZoneError
    from carbon_callbacks.core.runlog import aggregate_runs
    from carbon_callbacks.report.regions import DEFAULT_ZONES, parse_zones, render_regions, what_if

    if (args.kwh is None) == (not args.paths):
        _err("give either log folders/files or --kwh X (not both)")
        return EXIT_USAGE
    zones = parse_zones(args.zones) if args.zones else list(DEFAULT_ZONES)
    logged: tuple[float | None, str | None] = (None, None)
    if args.kwh is not None:
        energy, source = args.kwh, "given"
    else:
        collected = _collect(args.paths, args.progress)
        if collected is None:
            return EXIT_NOTHING
        aggregate = aggregate_runs(collected.logs)
        energy = aggregate.energy_kwh
        source = f"{aggregate.runs_counted} run(s) under {', '.join(args.paths)}"
        logged = (aggregate.co2_g, "the intensities recorded in the logs")
    try:
        result = what_if(
            energy,
            zones,
            energy_from=source,
            as_logged_co2_g=logged[0],
            as_logged_label=logged[1],
            car_basis=args.car_basis,
        )
    except UnknownZoneError as exc:
        _err(str(exc))
        return EXIT_NOTHING
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    _write_output(render_regions(result, args.format), args.output)
    return 0


# --------------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------------


def cmd_plot(args: argparse.Namespace) -> int:
    """``plot LOG_DIR... [-o OUT_DIR]``."""
    try:
        from carbon_callbacks.report.plots import PlotsUnavailable, plot_logs
    except ImportError as exc:  # pragma: no cover
        _err(str(exc))
        return EXIT_NOTHING
    from carbon_callbacks.core.intensity.static import UnknownZoneError
    from carbon_callbacks.report.regions import parse_zones

    zones = parse_zones(args.zones) if args.zones else None
    try:
        written, collected = plot_logs(args.paths, args.out_dir, zones=zones, run_ids=args.run)
    except PlotsUnavailable as exc:
        _err(str(exc))
        return EXIT_NOTHING
    except UnknownZoneError as exc:
        _err(str(exc))
        return EXIT_NOTHING
    except ValueError as exc:
        _err(f"{exc} ({', '.join(args.paths)})")
        return EXIT_NOTHING
    for path, reason in collected.skipped:
        _err(f"skipped {path}: {reason}")
    for path in written:
        print(path)
    return 0


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _add_output(parser: argparse.ArgumentParser, formats: Sequence[str] = FORMATS) -> None:
    parser.add_argument(
        "-f", "--format", choices=list(formats), default="text", help="output format (default text)"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def _add_car_basis(parser: argparse.ArgumentParser) -> None:
    from carbon_callbacks.core.equivalents import CAR_FACTORS, DEFAULT_CAR_BASIS

    parser.add_argument(
        "--car-basis",
        choices=sorted(CAR_FACTORS),
        default=DEFAULT_CAR_BASIS,
        help="car factor for km equivalents (default: EEA 2024 new cars, WLTP, 106.8 g/km; "
        "eea_2018_nedc is the 120.4 g/km of carbontracker's papers)",
    )


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress line on stderr while reading logs (auto: when stderr is a terminal)",
    )


def _add_report_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="table of runs and the statement for a paper",
        description="A table of runs (duration, kWh in total and per component, gCO2eq, the "
        "intensity and its source, PUE, km by car, measured vs predicted) and the aggregate "
        "statement for a paper, with the method named. Reads this package's run logs "
        "(*.carbon.jsonl) and carbontracker's log files. Unreadable logs are reported and "
        "skipped; the rest is aggregated.",
    )
    p.add_argument("paths", nargs="+", metavar="LOG_DIR", help="run log folders or files")
    _add_output(p)
    _add_car_basis(p)
    _add_progress(p)
    p.set_defaults(func=cmd_report)


def _add_run_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="measure a whole command and its child processes",
        description="Run COMMAND (and every process it starts) from start to end as one "
        "measured epoch, write a run log, print the report (to stderr, or -o FILE) and exit "
        "with the command's exit code. Ctrl-C and SIGTERM are passed on to the command, and "
        "the run log still gets its footer (status interrupted). The sensors measure devices "
        "(GPUs, the machine's CPU and DRAM), not processes.",
        usage=f"{PROG} run [options] -- COMMAND [ARGS...]",
    )
    p.add_argument(
        "--log-dir", default="carbon_logs", help="folder for the run log (default carbon_logs)"
    )
    p.add_argument("--log-file-prefix", default="", help="prefix of the run log's file name")
    p.add_argument("--name", help="run name stored in the log (default: the program's name)")
    p.add_argument("--zone", help="where the electricity comes from: DK, US-CA, WORLD...")
    p.add_argument(
        "--intensity",
        type=_non_negative_float,
        metavar="G_PER_KWH",
        help="a known carbon intensity in gCO2eq/kWh (wins over --zone)",
    )
    p.add_argument("--pue", type=float, help="power usage effectiveness (>= 1; default 1.0)")
    p.add_argument("--components", choices=["all", "gpu", "cpu"], default="all")
    p.add_argument("--gpu-ids", help="GPUs to measure: NVML indices or UUIDs, comma-separated")
    p.add_argument("--interval-s", type=_positive_float, default=1.0, help="sampling interval")
    p.add_argument("--sim-gpu", metavar="NAME", help="a user-stated GPU instead of NVML")
    p.add_argument("--sim-gpu-watts", type=_positive_float, metavar="W")
    p.add_argument("--sim-cpu", metavar="NAME", help="a user-stated CPU instead of RAPL/model")
    p.add_argument("--sim-cpu-tdp", type=_positive_float, metavar="W")
    p.add_argument(
        "--progress-s",
        type=float,
        metavar="S",
        help="seconds between progress lines on stderr (default 15 when stderr is a "
        "terminal, else none; 0 for none)",
    )
    _add_output(p)
    _add_car_basis(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=cmd_run)


def _add_estimate_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "estimate",
        help="estimate before running, from TDP tables",
        description="An ESTIMATE before running (not a measurement): (GPU TDP x count + CPU "
        "TDP x sockets) x utilisation x hours x PUE, from the packaged GPU and CPU TDP tables, "
        "times the zone's annual average intensity (the world average without --zone).",
    )
    p.add_argument("--gpu", metavar="MODEL", help="GPU model, e.g. A100, 'H100 PCIe', T4")
    p.add_argument("--hours", type=_positive_float, help="wall-clock hours")
    p.add_argument("--count", type=_positive_int, default=1, help="number of GPUs (default 1)")
    p.add_argument(
        "--gpu-tdp", type=_positive_float, metavar="W", help="GPU watts (skips the table)"
    )
    p.add_argument("--cpu", metavar="MODEL", help="CPU model, e.g. 'Intel Xeon Gold 6248'")
    p.add_argument("--cpu-count", type=_positive_int, default=1, help="CPU sockets (default 1)")
    p.add_argument(
        "--cpu-tdp", type=_positive_float, metavar="W", help="CPU watts (skips the table)"
    )
    p.add_argument("--zone", help="DK, US-CA, WORLD... (default: world average, labelled)")
    p.add_argument("--intensity", type=_non_negative_float, metavar="G_PER_KWH")
    p.add_argument("--pue", type=float, default=1.0, help="power usage effectiveness (default 1.0)")
    p.add_argument(
        "--utilisation",
        type=float,
        default=1.0,
        help="fraction of TDP drawn, in (0, 1] (default 1.0, full load)",
    )
    p.add_argument("--list-gpus", action="store_true", help="list the GPU table and exit")
    p.add_argument(
        "--list-cpus",
        metavar="TEXT",
        nargs="?",
        const="",
        help="list CPU table rows containing TEXT and exit",
    )
    _add_output(p, ("text", "json"))
    _add_car_basis(p)
    p.set_defaults(func=cmd_estimate)


def _add_regions_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "regions",
        help="the same energy in other zones",
        description="The CO2eq of the same energy in other grids (annual averages from the "
        "packaged tables, with sources), as the reference papers tabulate. Energy from run "
        "logs (as counted by report) or given with --kwh.",
    )
    p.add_argument("paths", nargs="*", metavar="LOG_DIR", help="run log folders or files")
    p.add_argument("--kwh", type=_non_negative_float, help="an energy in kWh instead of logs")
    p.add_argument("--zones", help="comma-separated zones (default DK,EE,SE,PL,DE,FR,US,CN,WORLD)")
    _add_output(p)
    _add_car_basis(p)
    _add_progress(p)
    p.set_defaults(func=cmd_regions)


def _add_plot_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot",
        help="PNG figures from run logs",
        description="PNG figures per run: energy and CO2eq per epoch with the prediction and "
        "its interval, cumulative CO2eq, power by component; and the region what-if bars of "
        "the total. Prints the paths written.",
    )
    p.add_argument("paths", nargs="+", metavar="LOG_DIR", help="run log folders or files")
    p.add_argument(
        "-o", "--out-dir", default="carbon_plots", help="folder for the PNGs (default carbon_plots)"
    )
    p.add_argument("--run", action="append", metavar="RUN_ID", help="only this run (repeatable)")
    p.add_argument("--zones", help="zones of the what-if figure (comma-separated)")
    p.set_defaults(func=cmd_plot)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Read, compare, aggregate and publish the energy and CO2eq of training "
        "runs; measure whole commands; estimate before running.",
        epilog="Each command has --help. Documentation: docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command_name", metavar="COMMAND")

    _add_report_parser(subparsers)
    _add_run_parser(subparsers)
    _add_estimate_parser(subparsers)
    _add_regions_parser(subparsers)
    _add_plot_parser(subparsers)
    intensity.register(subparsers)  # best-start
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``carbon-callbacks`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return int(func(args) or 0)
        except BrokenPipeError:  # e.g. `carbon-callbacks report logs | head`
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
            except OSError:
                pass
            return 0


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings as one ``carbon-callbacks: warning: ...`` line on stderr (no source lines)."""
    text = str(message).removeprefix("carbon_callbacks: ")
    _err(f"warning: {text}")


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess in the tests
    sys.exit(main())
