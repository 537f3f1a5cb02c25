"""Energy sensors: one module per source, all reporting joules with their method and device."""

from carbon_callbacks.core.sensors.base import Sensor, SensorError, SensorInfo

__all__ = ["Sensor", "SensorError", "SensorInfo"]
