"""The batching scheduler: resident models, cross-job patch batches, device workers, metrics.

`BatchingScheduler` implements the job service's executor interface, so the service hands it
QUEUED jobs exactly as it would hand them to the simple worker pool; `RayExecutor` is the same
scheduler with its device workers on the actors of a Ray cluster (Ray imported only then).
"""

from ._cache import ModelCache, ModelKey, model_key, network_bytes
from ._device import DeviceRunner, OutOfDeviceMemory
from ._metrics import SchedulerMetrics
from ._ray import RayExecutor, RaySettings
from ._scheduler import BatchingScheduler, DeviceLost, SchedulerSettings
from ._work import JobWork, ReadyPatch

__all__ = [
    "BatchingScheduler",
    "DeviceLost",
    "DeviceRunner",
    "JobWork",
    "ModelCache",
    "ModelKey",
    "OutOfDeviceMemory",
    "RayExecutor",
    "RaySettings",
    "ReadyPatch",
    "SchedulerMetrics",
    "SchedulerSettings",
    "model_key",
    "network_bytes",
]
