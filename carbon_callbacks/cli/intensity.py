"""Command line: ``best-start``, the carbon-aware start time for a run.

Used two ways:

- ``carbon_callbacks.cli`` calls :func:`register` with its sub-parsers; the sub-command sets
  ``func``, so ``args.func(args)`` runs it and returns the exit status;
- on its own: ``python -m carbon_callbacks.cli.intensity best-start --zone DK1 --duration 6h``.

Exit status: 0 a plan was printed; 2 bad input (unknown zone, malformed token, bad duration,
offline); 3 the data cannot answer (no forecast, one shorter than the run, the service failed).
The Electricity Maps token is read from ``$CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN`` only (a
command-line argument would show in the process list).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

_UNITS_S = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(min|[smhd])")


def parse_duration(text: str) -> float:
    """Seconds from ``"90m"``, ``"6h"``, ``"1h30m"``, ``"1.5h"``, ``"2d"`` or plain seconds.

    Raises:
        argparse.ArgumentTypeError: anything else, or not > 0.
    """
    raw = str(text).strip().lower().replace(" ", "")
    try:
        seconds = float(raw)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(raw):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS_S[match.group(2)]
            pos = match.end()
        if pos != len(raw) or pos == 0:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a duration: use e.g. 90m, 6h, 1h30m, 2d or seconds"
            ) from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"duration must be > 0, got {text!r}")
    return seconds


def register(subparsers: Any) -> None:
    """Add the ``best-start`` sub-command to an ``argparse`` sub-parsers object."""
    parser = subparsers.add_parser(
        "best-start",
        help="the start time within the intensity forecast that minimises a run's emissions",
        description=(
            "Fetch the carbon-intensity forecast of a zone and print the start time, within the "
            "forecast, at which a run of the given duration would emit least, and how much that "
            "saves against starting now. Key-less zones: DK1, DK2, DK (Energi Data Service) "
            "and GB (GB Carbon Intensity API, --gb-region or --gb-postcode for a region). Other "
            "zones need an Electricity Maps token whose plan includes forecasts, in "
            "$CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN."
        ),
    )
    parser.add_argument("--zone", help="zone to plan for, e.g. DK1, DK2, GB, DE")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument(
        "--duration", type=parse_duration, help="the run's duration, e.g. 6h, 90m, 1h30m"
    )
    length.add_argument(
        "--run-log",
        metavar="PATH",
        help="take duration and energy from a run log's last prediction (or its totals)",
    )
    parser.add_argument("--energy-kwh", type=float, help="the run's energy, to report grams")
    parser.add_argument(
        "--within", type=parse_duration, help="the run must end within this time from now"
    )
    parser.add_argument(
        "--provider",
        choices=["auto", "energidataservice", "gb", "electricitymaps"],
        default="auto",
        help="which forecast to use (default: the zone's own)",
    )
    parser.add_argument("--gb-region", type=int, help="GB region id 1-17 (regional forecast)")
    parser.add_argument("--gb-postcode", help="GB outward postcode, e.g. RG10")
    parser.add_argument("--electricitymaps-zone", help="Electricity Maps zone code, if different")
    parser.add_argument(
        "--base-url", help="the provider's base URL (a mirror, a newer API version, a test server)"
    )
    parser.add_argument(
        "--timeout", type=parse_duration, default=20.0, help="bound of the fetch (default 20s)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run_best_start)


def _from_run_log(path: str) -> tuple[float, float | None, str]:
    from carbon_callbacks.core.runlog import read_run_log

    log = read_run_log(path)
    if log.predictions:
        pred = log.predictions[-1]
        return float(pred["duration_s"]), _float(pred.get("energy_kwh")), "its last prediction"
    if log.footer is not None and log.footer.get("duration_s"):
        footer = log.footer
        return float(footer["duration_s"]), _float(footer.get("energy_kwh")), "its totals"
    raise ValueError(f"{path} holds neither a prediction nor totals to take a duration from")


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def run_best_start(args: argparse.Namespace) -> int:
    """Run ``best-start`` with parsed arguments; print the plan; return the exit status."""
    from carbon_callbacks.core.config import ConfigError, Endpoints
    from carbon_callbacks.core.intensity.schedule import (
        EXIT_BAD_INPUT,
        ScheduleError,
        best_start,
    )

    def fail(message: str, code: int) -> int:
        print(f"carbon_callbacks best-start: {message}", file=sys.stderr)
        return code

    energy = args.energy_kwh
    duration = args.duration
    origin = ""
    if args.run_log:
        try:
            duration, logged_energy, what = _from_run_log(args.run_log)
        except (OSError, ValueError) as exc:
            return fail(f"cannot use the run log: {exc}", EXIT_BAD_INPUT)
        energy = energy if energy is not None else logged_energy
        origin = f"duration and energy from {args.run_log} ({what})"
    settings: dict[str, Any] = {}
    if args.provider != "auto":
        settings["live_intensity"] = args.provider
    for name in ("gb_region", "gb_postcode", "electricitymaps_zone"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    try:
        if args.base_url:
            settings["_endpoints"] = Endpoints(
                energidataservice_base_url=args.base_url,
                gb_base_url=args.base_url,
                electricitymaps_base_url=args.base_url,
            )
        plan = best_start(
            args.zone,
            duration,
            energy_kwh=energy,
            within_s=args.within,
            timeout_s=args.timeout,
            **settings,
        )
    except ConfigError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except ScheduleError as exc:
        return fail(str(exc), exc.exit_code)
    if args.json:
        out = plan.to_dict()
        if origin:
            out["input"] = origin
        print(json.dumps(out, indent=2))
    else:
        print(plan.describe())
        if origin:
            print(f"  ({origin})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m carbon_callbacks.cli.intensity``."""
    parser = argparse.ArgumentParser(
        prog="python -m carbon_callbacks.cli.intensity",
        description="Carbon-intensity tools of carbon_callbacks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
