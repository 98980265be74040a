"""Test doubles and UWS checks for code that embeds or drives the service.

A project that hosts the job service (a science platform's own Jupyter image, a site's
deployment) tests its integration with these rather than with copies of its own:

* `HoldingExecutor`: the local worker pool, except that jobs whose RUNID starts with ``hold``
  stay QUEUED until aborted or deleted (``c.CiannaOTF.executor_class``), for tests of abort,
  delete and queue listings that must not race a fast job;
* `RecordingExecutor` and `PassPolicy`: a `JobService` with no worker at all, the test playing
  the worker through the recorded callbacks;
* `ServiceThread`: a standalone server on a free loopback port in a background thread, with one
  token per user;
* `samp_hub` and `SampViewer`: a SAMP hub of the test's own in-process (its lockfile in a folder
  the test names, yielded as a `SampHub`), and a SAMP client playing a desktop viewer that records
  the messages it is sent, replies ok and sends messages itself; `serve_folder`, the files of a
  folder over HTTP on 127.0.0.1, as Aladin Desktop serves the images it sends;
* `postgres_server`: a throw-away PostgreSQL cluster in a folder of the test's, listening only
  on a Unix socket there, for the PostgreSQL job store (`postgres_programs` says whether the
  machine has PostgreSQL's programs);
* the UWS checks: a job document valid against the UWS 1.1 schema, its phase, waiting for a phase.

Nothing here is imported by the service itself.
"""

from ._doubles import HoldingExecutor, PassPolicy, RecordingExecutor
from ._postgres import postgres_programs, postgres_server
from ._samp import SampHub, SampViewer, samp_hub, serve_folder
from ._server import ServiceThread
from ._uws import (
    FINAL_PHASES,
    UWS_NAMESPACES,
    UWS_TIME,
    assert_uws_valid,
    is_nil,
    job_phase,
    load_uws_schema,
    parse_xml,
    uws_text,
    wait_for_phase,
)

__all__ = [
    "FINAL_PHASES",
    "HoldingExecutor",
    "PassPolicy",
    "RecordingExecutor",
    "SampHub",
    "SampViewer",
    "ServiceThread",
    "postgres_programs",
    "postgres_server",
    "UWS_NAMESPACES",
    "UWS_TIME",
    "assert_uws_valid",
    "is_nil",
    "job_phase",
    "load_uws_schema",
    "parse_xml",
    "samp_hub",
    "serve_folder",
    "uws_text",
    "wait_for_phase",
]
