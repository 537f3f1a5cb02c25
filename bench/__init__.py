"""The benchmark harness: ``python -m bench SUBCOMMAND`` (see ``bench/__main__.py``).

Subcommands: ``overhead`` (accuracy against NVML's counter and added epoch time on a GPU,
packages compared in one call), ``accuracy`` (prediction error on ``bench/traces``),
``prediction`` (what one prediction costs), ``peers`` (carbon_callbacks beside CodeCarbon,
carbontracker and Zeus), ``distributed`` (DDP, torchrun and nnU-Net runs against per-GPU
counters) and ``memory`` (memory over many epochs). ``docs/benchmarks.md`` gives the figures.
"""
