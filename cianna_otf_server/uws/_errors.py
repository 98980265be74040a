"""UWS failures, each carrying the HTTP status the standard (or DALI) gives it.

The handlers turn these into plain-text responses; nothing else in the service knows about HTTP.
"""

from __future__ import annotations

from ..errors import CiannaOTFError


class UWSError(CiannaOTFError):
    """A request the service refuses; `status` is the HTTP status, the message is for a person."""

    status = 400

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidRequestError(UWSError):
    """Malformed or invalid parameters (400)."""

    status = 400


class PermissionDeniedError(UWSError):
    """Not yours, or not allowed (403)."""

    status = 403


class StorageQuotaError(PermissionDeniedError):
    """The user's jobs already hold their share of the service's disk (403, with what to delete)."""


class InvalidPhaseError(PermissionDeniedError):
    """The action is not allowed in the job's current phase (403, with the reason)."""


class UnknownJobError(UWSError):
    """No such job (404); also what another owner's job looks like."""

    status = 404


class UnknownResourceError(UWSError):
    """No such result or parameter (404)."""

    status = 404


class PayloadTooLargeError(UWSError):
    """An upload over the configured limit (413)."""

    status = 413


class ServiceBusyError(UWSError):
    """Queue limits reached (503 with Retry-After)."""

    status = 503


class OwnerQuotaError(ServiceBusyError):
    """One user's own quota reached (429 Too Many Requests with Retry-After): the service has room, they do not.

    On a shared service the difference matters: 503 says the service is full for everyone,
    429 that this user should wait for their own jobs.
    """

    status = 429
