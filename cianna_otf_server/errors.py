"""Exceptions shared by every layer of the service.

One hierarchy so that the command line, the job service and the notebook widget can all tell a
user's mistake (bad input: exit code 2, HTTP 400, job ERROR with a clear summary) from an
internal failure (exit code 1, HTTP 500) without parsing messages.
"""

from __future__ import annotations


class CiannaOTFError(Exception):
    """Base class of every error the project raises on purpose."""


class UserInputError(CiannaOTFError, ValueError):
    """The request or the input data is wrong; the message tells the user what to change."""


class ModelFileError(UserInputError):
    """A CIANNA model file cannot be read; the message names the file and the byte offset or layer."""


class ModelCardError(UserInputError):
    """A model card is malformed or inconsistent with its weights file."""


class UnknownModelError(UserInputError, KeyError):
    """No model of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown model"


class ImageError(UserInputError):
    """The FITS image is unreadable or unsuitable (not 2-D, no WCS where one is needed, ...)."""


class RegionError(UserInputError):
    """The region of interest is malformed or does not overlap the image."""


class StorageError(CiannaOTFError):
    """The service cannot keep its own data (job database, job folders); not the user's doing.

    Raised on purpose with a message for the operator as well as the user: which file, and what
    to do about it (free some space, move a damaged database aside).
    """


class CorruptDatabaseError(StorageError):
    """The job database file is damaged (not SQLite at all, or pages that fail a check); the service refuses it."""


class ComputeUnavailableError(CiannaOTFError):
    """Where jobs compute cannot take them now (a Ray cluster unreachable, no free GPU for an actor).

    Neither the request's fault nor a defect: the job ends in ERROR of UWS type ``transient``
    (the same job may run later) with the message as it is, which says what is missing.
    """
