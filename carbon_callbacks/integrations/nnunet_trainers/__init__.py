"""The folder to name in ``nnUNet_extTrainer`` so that nnU-Net finds ``nnUNetTrainerCarbon``.

nnU-Net 2.8+ searches the folders listed in ``$nnUNet_extTrainer`` (``os.pathsep``-separated)
for a trainer class by name, importing each module here as a top-level module. One line of
set-up::

    export nnUNet_extTrainer="$(carbon-callbacks-nnunet-train --carbon-trainer-dir)"
    nnUNetv2_train 4 2d 0 -tr nnUNetTrainerCarbon

Nothing else belongs in this folder: every module in it is imported by each lookup.
"""
