"""The ``carbon-callbacks`` command line: thin commands over :mod:`carbon_callbacks.report`."""

from carbon_callbacks.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
