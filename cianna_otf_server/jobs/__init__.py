"""Detection jobs: typed requests, preparation, the runner that writes results, the failure policy, the pool."""

from ._executor import LocalPoolExecutor
from ._fair_pool import OwnerFairPool
from ._fetch import ImageFetcher, image_sha256
from ._url_policy import UrlPolicy, UrlRefused
from ._outcomes import Failure, FailureKind, JobCancelled, classify_failure, report_failure
from ._parameters import DetectionParameterPolicy, check_region_syntax, request_from_job, request_from_parameters
from ._request import DetectionRequest, ImagePath, ImageSource, ImageUrl, UploadedImage
from ._prepare import JobPreparer, PreparedJob, RunnerLimits
from ._results import JobOutcome, ResultWriter
from ._writer_pool import WriterProcesses, default_writer_processes
from ._runner import DetectionRunner, JobRunner, NetworkSource

__all__ = [
    "DetectionParameterPolicy",
    "DetectionRequest",
    "DetectionRunner",
    "Failure",
    "FailureKind",
    "ImageFetcher",
    "UrlPolicy",
    "UrlRefused",
    "ImagePath",
    "ImageSource",
    "ImageUrl",
    "UploadedImage",
    "WriterProcesses",
    "JobCancelled",
    "JobOutcome",
    "JobPreparer",
    "JobRunner",
    "NetworkSource",
    "LocalPoolExecutor",
    "OwnerFairPool",
    "PreparedJob",
    "ResultWriter",
    "RunnerLimits",
    "check_region_syntax",
    "classify_failure",
    "default_writer_processes",
    "image_sha256",
    "report_failure",
    "request_from_job",
    "request_from_parameters",
]
