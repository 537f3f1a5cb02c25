"""Metric keys: the same in every integration (TensorBoard, CSV, W&B, MLflow, History...).

Units are in the names: kWh (PUE included), grams CO2eq, watts (IT power, before PUE), seconds.
"""

from __future__ import annotations

PREFIX = "carbon/"

EPOCH_ENERGY_KWH = "carbon/epoch_energy_kwh"
EPOCH_CO2_G = "carbon/epoch_co2_g"
EPOCH_DURATION_S = "carbon/epoch_duration_s"
ENERGY_KWH = "carbon/energy_kwh"  # cumulative since the run began
CO2_G = "carbon/co2_g"  # cumulative since the run began
DURATION_S = "carbon/duration_s"  # cumulative measured epoch time (totals only)
POWER_W = "carbon/power_w"
GPU_POWER_W = "carbon/gpu_power_w"
CPU_POWER_W = "carbon/cpu_power_w"
DRAM_POWER_W = "carbon/dram_power_w"
INTENSITY_G_PER_KWH = "carbon/intensity_g_per_kwh"
PRED_ENERGY_KWH = "carbon/pred_energy_kwh"
PRED_CO2_G = "carbon/pred_co2_g"
PRED_DURATION_S = "carbon/pred_duration_s"

#: Mean power per component -> its key.
COMPONENT_POWER = {"gpu": GPU_POWER_W, "cpu": CPU_POWER_W, "dram": DRAM_POWER_W}

#: Keys present every measured epoch (power keys only for the components measured).
EPOCH_KEYS = (
    EPOCH_ENERGY_KWH,
    EPOCH_CO2_G,
    EPOCH_DURATION_S,
    ENERGY_KWH,
    CO2_G,
    INTENSITY_G_PER_KWH,
)
#: Keys present once a prediction was made.
PREDICTION_KEYS = (PRED_ENERGY_KWH, PRED_CO2_G, PRED_DURATION_S)
#: Every key an epoch can carry.
ALL_KEYS = (
    *EPOCH_KEYS,
    POWER_W,
    GPU_POWER_W,
    CPU_POWER_W,
    DRAM_POWER_W,
    *PREDICTION_KEYS,
)
