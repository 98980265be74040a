"""Detection jobs: parameter validation, the runner that writes results, and the worker pool."""

from ._executor import LocalPoolExecutor
from ._parameters import DetectionParameterPolicy, DetectionRequest, check_region_syntax, request_from_job
from ._runner import DetectionRunner, JobCancelled, JobOutcome, PreparedJob, RunnerLimits

__all__ = [
    "DetectionParameterPolicy",
    "DetectionRequest",
    "DetectionRunner",
    "JobCancelled",
    "JobOutcome",
    "LocalPoolExecutor",
    "PreparedJob",
    "RunnerLimits",
    "check_region_syntax",
    "request_from_job",
]
