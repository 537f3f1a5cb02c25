"""The wheels ``python -m bench distributed nnunet`` needs on a machine with torch, no nnU-Net.

    python -m bench distributed nnunet-wheels DEST   # then carry DEST to the GPU machine, and
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site DEST/*.whl && export PYTHONPATH=/tmp/site:.

For CPython 3.12 on x86-64 Linux. Only what nnU-Net 2.8.1 imports on the proof's path and the
target lacks (it has torch, torchvision, numpy, scipy, scikit-image, scikit-learn, pandas,
matplotlib, seaborn, tifffile, imageio, pillow, requests, tqdm, einops, msgpack, httpx, rich,
setuptools, nvidia-ml-py): nnU-Net's declared needs that are never imported there (graphviz,
yacs, imagecodecs, future, unittest2; blosc2's pydantic) are left out. Versions are those of
the CPU test environment. ``timm`` is pinned below 1.0.23 by dynamic-network-architectures and
imported by nnU-Net's trainer lookup (the Primus trainers), so a known-good one travels too.

SimpleITK (imported at the top of nnU-Net's reader registry and preprocessor, even for PNG
data) is a 50 MiB wheel, most of it one shared library. It is repacked here with LZMA (27 MiB;
same files, same RECORD, pip installs it as any wheel) so that the set fits in the 64 MiB a
call may carry. acvl-utils has no wheel on PyPI: it is built from its sdist (pure Python).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

#: Wheels for CPython 3.12, x86-64 Linux.
WHEELS = (
    "nnunetv2==2.8.1",
    "dynamic-network-architectures==0.4.4",
    "batchgenerators==0.25.5",
    "batchgeneratorsv2==0.3.6",
    "nibabel==5.4.2",
    "SimpleITK==2.5.7",
    "blosc2==4.14.1",
    "ndindex==1.10.1",
    "numexpr==2.14.2",
    "connected-components-3d==4.1.1",
    "timm==1.0.22",
)
#: Built here from the sdist (no wheel published).
SDISTS = ("acvl-utils==0.2.6",)
#: Wheels repacked with LZMA (name prefix, lower case).
REPACK = ("simpleitk-",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip


def pip(*args: str) -> None:
    """``python -m pip ARGS`` (raises on failure)."""
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def repack_lzma(path: Path) -> None:
    """Rewrite a wheel with every member LZMA-compressed (contents and RECORD unchanged)."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
        for info in src.infolist():
            out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            out.external_attr = info.external_attr
            dst.writestr(out, src.read(info.filename), compress_type=zipfile.ZIP_LZMA)
    with zipfile.ZipFile(tmp) as check:  # every member reads back with its CRC
        if check.testzip() is not None:
            raise RuntimeError(f"repacked {path.name} does not read back")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest")
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    platform = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
        "--implementation", "cp", *platform, "-d", str(dest), *WHEELS)  # fmt: skip
    pip("wheel", "--no-deps", "--no-binary=:all:", "-w", str(dest), *SDISTS)
    for wheel in sorted(dest.glob("*.whl")):
        if wheel.name.lower().startswith(REPACK):
            before_mib = wheel.stat().st_size / 2**20
            repack_lzma(wheel)
            after_mib = wheel.stat().st_size / 2**20
            print(f"repacked {wheel.name}: {before_mib:.1f} -> {after_mib:.1f} MiB")
    total = 0
    for wheel in sorted(dest.glob("*.whl")):
        total += wheel.stat().st_size
        print(f"{wheel.stat().st_size / 2**20:6.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:6.2f} MiB  in all ({len(list(dest.glob('*.whl')))} wheels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
