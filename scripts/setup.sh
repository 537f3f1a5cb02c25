#!/usr/bin/env bash
# Creates .venv (if missing) and installs the package with every extra the tests need.
# torch is pinned by constraints.txt to the CPU build, so pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[all,dev]" nbclient nbformat ipykernel
# PyPI's torchvision does not load with the pinned CPU torch (operator torchvision::nms does not
# exist); nnU-Net pulls it in through timm. Nothing here needs it, so remove it.
.venv/bin/python -m pip uninstall -y -q torchvision >/dev/null 2>&1 || true
