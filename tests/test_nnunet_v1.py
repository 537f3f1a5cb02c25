"""nnU-Net v1 (``nnunet`` 1.7.x) through ``patch(target="nnunet")``, on the CPU.

Skipped unless nnunet 1.7 is installed (it is not part of the ``[all]`` extra: see
docs/nnunet.md). A 2D task of 10 single-slice NIfTI cases is planned with nnU-Net v1's own
``nnUNet_plan_and_preprocess`` (in a subprocess: v1 reads its folders when first imported) and
trained for a few batches with ``nnUNetTrainerV2``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from carbon_callbacks.core.runlog import read_run_log
from carbon_callbacks.integrations import nnunet as integ


def _v1_version() -> str | None:
    if importlib.util.find_spec("nnunet") is None:
        return None
    try:
        return metadata.version("nnunet")
    except metadata.PackageNotFoundError:
        return None


V1 = _v1_version()
pytestmark = pytest.mark.skipif(
    V1 is None or not V1.startswith("1.7"), reason="nnU-Net v1 (nnunet 1.7.x) is not installed"
)
TASK = "Task500_CarbonTiny"


@pytest.fixture(scope="module")
def v1_task(tmp_path_factory):
    import numpy as np
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("nnunet_v1")
    env = {
        "nnUNet_raw_data_base": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "RESULTS_FOLDER": str(root / "results"),
        "nnUNet_n_proc_DA": "1",
    }
    task = root / "raw" / "nnUNet_raw_data" / TASK
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    for value in env.values():
        if "/" in value:
            Path(value).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    training = []
    for i in range(10):
        label = np.zeros((1, 64, 64), dtype=np.uint8)
        side = int(rng.integers(12, 28))
        y, x = rng.integers(2, 64 - side - 2, size=2)
        label[0, y : y + side, x : x + side] = 1
        image = (rng.normal(60, 15, (1, 64, 64)) + 120 * label).astype(np.float32)
        for array, path in (
            (image, task / "imagesTr" / f"case{i:03d}_0000.nii.gz"),
            (label, task / "labelsTr" / f"case{i:03d}.nii.gz"),
        ):
            item = sitk.GetImageFromArray(array)
            item.SetSpacing((1.0, 1.0, 999.0))
            sitk.WriteImage(item, str(path))
        training.append(
            {"image": f"./imagesTr/case{i:03d}.nii.gz", "label": f"./labelsTr/case{i:03d}.nii.gz"}
        )
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "name": "CarbonTiny",
                "tensorImageSize": "3D",
                "modality": {"0": "MRI"},
                "labels": {"0": "background", "1": "square"},
                "numTraining": 10,
                "numTest": 0,
                "training": training,
                "test": [],
            }
        )
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nnunet.experiment_planning.nnUNet_plan_and_preprocess",
            *("-t", "500", "-pl3d", "None", "-tl", "1", "-tf", "1"),
        ],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    os.environ.update(env)
    return root


def _train(v1_task, name: str, budget_after_first_epoch: bool = False):
    from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2

    class Tiny(nnUNetTrainerV2):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.max_num_epochs = 3
            self.num_batches_per_epoch = 3
            self.num_val_batches_per_epoch = 2

        def update_train_loss_MA(self):
            super().update_train_loss_MA()
            tracker = self._carbon.tracker
            if budget_after_first_epoch and tracker.epochs_completed == 0:
                tracker.should_stop = True  # as the budget would decide in epoch_end()
                tracker.stop_reason = "test budget"

    pre = v1_task / "preprocessed" / TASK
    trainer = Tiny(
        str(pre / "nnUNetPlansv2.1_plans_2D.pkl"),
        0,
        output_folder=str(v1_task / "results" / name),
        dataset_directory=str(pre),
        batch_dice=True,
        stage=0,
        unpack_data=True,
        deterministic=False,
        fp16=False,
    )
    trainer.initialize(True)
    trainer.run_training()
    return trainer


def test_v1_epochs_are_measured_and_written_to_the_training_log(v1_task):
    from nnunet.training.network_training.network_trainer import NetworkTrainer

    before = {n: NetworkTrainer.__dict__[n] for n in ("run_training", "on_epoch_end")}
    assert integ.patch(target="nnunet", zone="DK", interval_s=0.05, verbose=0) == f"nnunet {V1}"
    try:
        trainer = _train(v1_task, "plain")
    finally:
        integ.unpatch()
    assert {n: NetworkTrainer.__dict__[n] for n in before} == before
    log = read_run_log(trainer._carbon.tracker.log_path)
    assert [e["epoch"] for e in log.epochs] == [0, 1, 2]
    assert log.footer["status"] == "completed" and log.header["epochs"] == 3
    text = Path(trainer.log_file).read_text()
    lines = [line for line in text.splitlines() if "Carbon: epoch energy" in line]
    assert len(lines) == 3
    for line, record in zip(lines, log.epochs, strict=True):
        assert f"{record['energy_kwh']:.4g} kWh" in line
    # the epoch window (from v1's "epoch:" line to on_epoch_end) is within v1's epoch time
    took = [
        float(line.split("This epoch took")[1].split()[0])
        for line in text.splitlines()
        if "This epoch took" in line
    ]
    for seconds, record in zip(took, log.epochs, strict=True):
        assert record["duration_s"] <= seconds + 0.01
    assert text.count("Carbon: predicted for 3 epochs") == 1
    assert "Carbon: training completed" in text


def test_v1_budget_stop_returns_false_and_writes_the_final_checkpoint(v1_task):
    integ.patch(target="nnunet", zone="DK", interval_s=0.05, verbose=0)
    try:
        trainer = _train(v1_task, "budget", budget_after_first_epoch=True)
    finally:
        integ.unpatch()
    log = read_run_log(trainer._carbon.tracker.log_path)
    assert [e["epoch"] for e in log.epochs] == [0]
    assert log.footer["status"] == "interrupted"
    assert (Path(trainer.output_folder) / "model_final_checkpoint.model").is_file()
    text = Path(trainer.log_file).read_text()
    assert "stopping after epoch 0: test budget" in text
    assert text.count("epoch: ") == 1  # no second epoch began
