"""The batching scheduler: resident models, cross-job patch batches, device workers, metrics.

`BatchingScheduler` implements the job service's executor interface, so the service hands it
QUEUED jobs exactly as it would hand them to the simple worker pool.
"""

from ._cache import ModelCache, ModelKey, model_key, network_bytes
from ._device import DeviceRunner, OutOfDeviceMemory
from ._metrics import SchedulerMetrics
from ._scheduler import BatchingScheduler, SchedulerSettings
from ._work import JobWork, ReadyPatch

__all__ = [
    "BatchingScheduler",
    "DeviceRunner",
    "JobWork",
    "ModelCache",
    "ModelKey",
    "OutOfDeviceMemory",
    "ReadyPatch",
    "SchedulerMetrics",
    "SchedulerSettings",
    "model_key",
    "network_bytes",
]
