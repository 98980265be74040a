"""IVOA UWS 1.1 job management: records, SQLite or PostgreSQL storage, XML, and the job service.

Generic over what a job does: the detection-specific parts (parameter validation, running a
detection) plug in through `ParameterPolicy` and `JobExecutor`.
"""

from ._errors import (
    InvalidPhaseError,
    InvalidRequestError,
    PayloadTooLargeError,
    PermissionDeniedError,
    OwnerQuotaError,
    StorageQuotaError,
    ServiceBusyError,
    UnknownJobError,
    UnknownResourceError,
    UWSError,
)
from ._events import JobEvents
from ._files import JobFiles
from ._models import (
    ValidatedParameters,
    ABORTABLE_PHASES,
    ACTIVE_PHASES,
    FINAL_PHASES,
    ErrorSummary,
    Job,
    JobFilter,
    JobParameter,
    JobResult,
    Phase,
    format_time,
    parse_time,
    utc_now,
)
from ._service import ALL_OWNERS, ExecutionCallbacks, JobExecutor, JobService, ParameterPolicy, ServiceLimits, Upload
from ._postgres import PostgresJobStore
from ._sql import SqlJobStore
from ._storage import JobStore, StorageFullError, StorageUnavailableError, file_error
from ._xml import (
    error_votable,
    job_document,
    job_list_document,
    parameters_document,
    results_document,
    safe_parser,
)

__all__ = [
    "ALL_OWNERS",
    "ValidatedParameters",
    "ABORTABLE_PHASES", "ACTIVE_PHASES", "FINAL_PHASES", "ErrorSummary", "ExecutionCallbacks",
    "InvalidPhaseError", "InvalidRequestError", "Job", "JobEvents", "JobExecutor", "JobFiles",
    "JobFilter", "JobParameter", "JobResult", "JobService", "JobStore", "ParameterPolicy", "PostgresJobStore", "SqlJobStore",
    "OwnerQuotaError", "StorageQuotaError", "PayloadTooLargeError", "PermissionDeniedError", "Phase", "ServiceBusyError", "ServiceLimits",
    "StorageFullError", "StorageUnavailableError", "file_error",
    "UWSError", "UnknownJobError", "UnknownResourceError", "Upload", "error_votable", "format_time",
    "job_document", "job_list_document", "parameters_document", "parse_time", "results_document",
    "safe_parser", "utc_now",
]
