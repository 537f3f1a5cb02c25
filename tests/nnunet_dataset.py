"""A tiny synthetic 2D nnU-Net v2 dataset: written, planned and preprocessed once per session.

Ten 64x64 grey PNG cases (by default; ``bench/distributed_nnunet.py`` asks for more and larger),
each with one bright square (label 1) on a noisy background, in the raw layout nnU-Net expects
(``Dataset999_CarbonTiny/imagesTr/caseNNN_0000.png``, ``labelsTr/caseNNN.png``,
``dataset.json``). Planning and preprocessing go through nnU-Net's own
Python API (``nnunetv2.experiment_planning.plan_and_preprocess_api``), as
``nnUNetv2_plan_and_preprocess -d 999 -c 2d -np 1 -npfp 1`` would, but in this process: nnU-Net
hands each case to a worker pool even with one process (and lists files with a forked pool of
12), and a pool in a test fixture can deadlock and costs seconds to start, so
:func:`plan_and_preprocess` gives nnU-Net an inline stand-in for its pools that runs each case
where it is called (:func:`quick_planning`, also used by the nnU-Net notebook's test).

nnU-Net 2.6 and 2.7 read ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` when
``nnunetv2.paths`` is first imported, so :func:`set_nnunet_env` must run before any nnunetv2
import; every test then writes its results under the same ``nnUNet_results`` and keeps apart by
trainer class name or fold. The planner needs ``nnUNet_n_proc_DA`` >= 1; training uses 0
(single-threaded augmentation, no worker processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np

DATASET_ID = 999
DATASET_NAME = f"Dataset{DATASET_ID:03d}_CarbonTiny"
N_CASES = 10
SIZE = 64


def set_nnunet_env(root: Path) -> dict[str, str]:
    """Point nnU-Net's three folders under ``root`` (in ``os.environ``) and return them."""
    env = {
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
    }
    for value in env.values():
        Path(value).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    return env


def write_raw_dataset(
    raw_root: Path, seed: int = 0, n_cases: int = N_CASES, size_px: int = SIZE
) -> Path:
    """Write ``n_cases`` PNG cases of ``size_px`` x ``size_px`` pixels and ``dataset.json``;
    return the dataset folder."""
    from PIL import Image

    folder = raw_root / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        image = rng.normal(60, 15, (size_px, size_px))
        label = np.zeros((size_px, size_px), dtype=np.uint8)
        side = int(rng.integers(size_px * 3 // 16, size_px * 7 // 16))
        y, x = rng.integers(2, size_px - side - 2, size=2)
        label[y : y + side, x : x + side] = 1
        image[label == 1] += 120
        image = np.clip(image, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "imagesTr" / f"case{i:03d}_0000.png")
        Image.fromarray(label).save(folder / "labelsTr" / f"case{i:03d}.png")
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "gray"},
                "labels": {"background": 0, "square": 1},
                "numTraining": n_cases,
                "file_ending": ".png",
            }
        )
    )
    return folder


class _InlinePool:
    """The part of ``multiprocessing.Pool`` nnU-Net's planning uses, run in the caller."""

    _pool: list = []  # nnU-Net checks that every worker is alive; there are none

    def __init__(self, processes: int | None = None) -> None:
        pass

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def starmap(self, func: Callable, iterable: Iterable) -> list:
        return [func(*args) for args in iterable]

    def starmap_async(self, func: Callable, iterable: Iterable) -> _Done:
        return _Done(self.starmap(func, iterable))


class _Done:
    """An ``AsyncResult`` whose work already ran: ready at once, ``get()`` returns the results."""

    def __init__(self, results: list) -> None:
        self._results = results

    def ready(self) -> bool:
        return True

    def get(self, timeout: float | None = None) -> list:
        return self._results


FINGERPRINT_SAMPLE_PX = 10_000


@contextlib.contextmanager
def quick_planning() -> Iterator[None]:
    """Within the block, nnU-Net's planning starts no process (the file lister's forked
    ``Pool`` and the fingerprint extractor's and preprocessor's spawned pools run inline) and
    the fingerprint samples ``FINGERPRINT_SAMPLE_PX`` foreground pixels for its intensity
    statistics instead of 10^8 (seconds of percentiles; only CT normalisation reads them)."""
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.preprocessing.preprocessors import default_preprocessor
    from nnunetv2.utilities import utils

    extractor = fingerprint_extractor.DatasetFingerprintExtractor
    nnunet_init = extractor.__init__

    def small_sample_init(self: object, *args: object, **kwargs: object) -> None:
        nnunet_init(self, *args, **kwargs)
        self.num_foreground_voxels_for_intensitystats = FINGERPRINT_SAMPLE_PX

    inline = types.SimpleNamespace(
        get_context=lambda method=None: types.SimpleNamespace(Pool=_InlinePool)
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(utils, "Pool", _InlinePool))
        for module in (fingerprint_extractor, default_preprocessor):
            stack.enter_context(mock.patch.object(module, "multiprocessing", inline))
        stack.enter_context(mock.patch.object(extractor, "__init__", small_sample_init))
        yield


def plan_and_preprocess() -> None:
    """Fingerprint, plan (``2d`` only) and preprocess, every case in this process."""
    os.environ["nnUNet_n_proc_DA"] = "1"  # the planner calls torch.set_num_threads(n_proc_DA)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    with quick_planning():
        extract_fingerprints([DATASET_ID], num_processes=1, show_progress_bar=False)
        plan_experiments([DATASET_ID])
        preprocess(
            [DATASET_ID], configurations=("2d",), num_processes=(1,), show_progress_bar=False
        )
    os.environ["nnUNet_n_proc_DA"] = "0"  # training: augmentation in the main process


def shrink_network(plans: dict) -> dict:
    """A 3-stage U-Net with 4 to 16 features instead of nnU-Net's 5 stages of 32 to 512.

    nnU-Net's plans are meant to be edited (custom plans); this keeps checkpoints at a few
    hundred kB instead of 62 MB and epochs short on a CPU. The training loop is unchanged.
    """
    arch = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    stages = 3
    arch.update(
        n_stages=stages,
        features_per_stage=[4, 8, 16],
        kernel_sizes=[[3, 3]] * stages,
        strides=[[1, 1], [2, 2], [2, 2]],
        n_conv_per_stage=[1] * stages,
        n_conv_per_stage_decoder=[1] * (stages - 1),
    )
    return plans


def load_plans_and_dataset_json() -> tuple[dict, dict]:
    """The (shrunk) plans, with ``continue_training`` (2.7+ pops it in ``__init__``), and
    ``dataset.json``."""
    from importlib.metadata import version

    base = Path(os.environ["nnUNet_preprocessed"]) / DATASET_NAME
    plans = shrink_network(json.loads((base / "nnUNetPlans.json").read_text()))
    major, minor = (int(p) for p in version("nnunetv2").split(".")[:2])
    if (major, minor) >= (2, 7):
        plans["continue_training"] = False
    dataset_json = json.loads((base / "dataset.json").read_text())
    return plans, dataset_json


def prepare(root: Path, n_cases: int = N_CASES, size_px: int = SIZE) -> dict[str, str]:
    """Everything a session needs: env, raw PNGs, plans and preprocessed data under ``root``."""
    env = set_nnunet_env(root)
    write_raw_dataset(Path(env["nnUNet_raw"]), n_cases=n_cases, size_px=size_px)
    plan_and_preprocess()
    return env
