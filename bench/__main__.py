"""``python -m bench SUBCOMMAND [OPTIONS]``: the benchmarks, one subcommand each.

Run from the repository root (``PYTHONPATH=.``); ``python -m bench SUBCOMMAND --help`` gives a
subcommand's options. docs/benchmarks.md gives the figures and the command behind each.
"""

from __future__ import annotations

import importlib
import inspect
import sys

#: Subcommand -> (module under bench/, one line on what it measures).
SUBCOMMANDS = {
    "overhead": ("overhead", "accuracy against NVML's counter and added epoch time (GPU)"),
    "accuracy": ("predict_accuracy", "prediction error and interval coverage on bench/traces"),
    "prediction": ("predict_cost", "what one prediction costs on the training thread"),
    "peers": ("peers", "beside CodeCarbon, carbontracker and Zeus (Lightning or HF, GPU)"),
    "distributed": ("distributed", "DDP / torchrun / nnU-Net ranks against per-GPU counters"),
    "memory": ("memory", "memory and accuracy over many epochs"),
}


def usage() -> str:
    lines = ["usage: python -m bench SUBCOMMAND [OPTIONS]", "", "subcommands:"]
    lines += [f"  {name:12s} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def run(name: str, argv: list[str]) -> int:
    """Call ``main(argv)`` of the subcommand's module (a ``main()`` reads ``sys.argv``)."""
    module = importlib.import_module(f"bench.{SUBCOMMANDS[name][0]}")
    if inspect.signature(module.main).parameters:
        return int(module.main(argv) or 0)
    sys.argv = [f"python -m bench {name}", *argv]
    return int(module.main() or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f"unknown subcommand {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
