"""Framework-neutral core: sensors, meter, intensity, prediction, run log, tracker."""
