"""Job persistence in SQLite (WAL mode): the only module that speaks SQL.

One connection guarded by a lock serves the event loop and the worker threads; every write is
one short transaction, so a SIGKILL at any moment leaves a consistent database.

The store's failures are the service's, not the user's: a full disk becomes `StorageFullError`
(HTTP 507), a database that cannot be written just now `StorageUnavailableError` (503), each
with a message a person can act on, and a damaged database file is refused when it is opened
(`CorruptDatabaseError`), before the service starts on it.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import CorruptDatabaseError, StorageError
from ._errors import UWSError
from ._models import ErrorSummary, Job, JobFilter, JobParameter, JobResult, Phase, format_time, parse_time

log = logging.getLogger(__name__)

#: The job database's file name in the service's data folder.
DATABASE_FILE = "jobs.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    owner TEXT,
    run_id TEXT,
    phase TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    execution_duration INTEGER NOT NULL DEFAULT 0,
    destruction TEXT,
    quote TEXT,
    error_message TEXT,
    error_type TEXT,
    error_detail TEXT,
    progress_done INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL,
    warnings TEXT,
    spec TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner);
CREATE INDEX IF NOT EXISTS jobs_phase ON jobs(phase);
CREATE TABLE IF NOT EXISTS parameters (
    job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    by_reference INTEGER NOT NULL DEFAULT 0,
    is_post INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, position)
);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    result_id TEXT NOT NULL,
    file_name TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    size INTEGER,
    PRIMARY KEY (job_id, position)
);
"""

_UPDATABLE = {
    "phase", "run_id", "start_time", "end_time", "execution_duration", "destruction", "quote",
    "error_message", "error_type", "error_detail", "progress_done", "progress_total",
}


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def _assignments(fields: dict[str, object]) -> tuple[str, list[object]]:
    """SQL ``a = ?, b = ?`` and the values, with datetimes and phases in their stored form."""
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    values: list[object] = []
    for value in fields.values():
        if isinstance(value, datetime):
            value = format_time(value)
        elif isinstance(value, Phase):
            value = value.value
        values.append(value)
    return ", ".join(f"{name} = ?" for name in fields), values


def _parse(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


class StorageFullError(UWSError, StorageError):
    """No room left on the disk (or in the quota) holding the job database or the job folders (507)."""

    status = 507


class StorageUnavailableError(UWSError, StorageError):
    """The service cannot write its data at all just now: a read-only or failing disk, a locked database (503)."""

    status = 503


#: Seconds a client is told to wait (Retry-After) when the database cannot be written just now.
RETRY_AFTER_SECONDS = 60

# SQLite's primary result codes (sqlite3.h); Python 3.11+ gives them as `sqlite_errorcode`.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26

#: errno values saying there is no room left: a full disk, or the account's quota used up.
_NO_ROOM = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}

_FULL_ADVICE = ("the disk holding the service's data is full; free some space on the server "
                "(or ask its operator to), then try again")


def _sqlite_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None  # extended codes keep the primary in the low byte


def _is_damage(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return (_sqlite_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
            or "not a database" in text or "malformed" in text)


def database_error(exc: sqlite3.Error, doing: str) -> StorageError | None:
    """The storage failure a SQLite error stands for, with a message for a person; None for a defect.

    `doing` completes "could not ...", e.g. "create the job". Errors that say nothing about the
    disk (a bad statement, a constraint) are defects and stay what they are.
    """
    code, text = _sqlite_code(exc), str(exc).lower()
    if code == _SQLITE_FULL or "database or disk is full" in text:
        return StorageFullError(f"could not {doing}: {_FULL_ADVICE}")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "database is locked" in text:
        reason = "the job database is locked by another process"
    elif code == _SQLITE_READONLY or "readonly database" in text:
        reason = "the job database is read-only"
    elif code in (_SQLITE_IOERR, _SQLITE_CANTOPEN) or "disk i/o error" in text or "unable to open" in text:
        reason = "the disk holding the job database fails to read or write"
    elif _is_damage(exc):
        reason = "the job database is damaged"
    else:
        return None
    return StorageUnavailableError(
        f"could not {doing}: the service cannot write its data just now ({reason}); try again later, "
        "or tell the service's operator", retry_after=RETRY_AFTER_SECONDS)


def file_error(exc: OSError, doing: str) -> StorageError | None:
    """The storage failure an error writing a job's files stands for; None for any other error."""
    if exc.errno in _NO_ROOM:
        return StorageFullError(f"could not {doing}: {_FULL_ADVICE}")
    if exc.errno in (errno.EROFS, errno.EIO, errno.EACCES):
        return StorageUnavailableError(
            f"could not {doing}: the service cannot write its data just now ({exc.strerror or exc}); "
            "try again later, or tell the service's operator", retry_after=RETRY_AFTER_SECONDS)
    return None


class JobStore:
    """Create, read, update and delete job records."""

    def __init__(self, path: str | Path) -> None:
        """Open (or make) the database at `path`, after checking that it is sound.

        A damaged file raises `CorruptDatabaseError` naming it and saying what to do: the
        service must not start on it, accept jobs and lose them at the next write.
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            error = database_error(exc, f"open the job database {self.path}")
            if error is None:
                raise
            raise error from exc
        self._db.row_factory = sqlite3.Row
        try:
            with self._lock:
                self._check()
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.executescript(SCHEMA)
                self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            if _is_damage(exc):
                raise CorruptDatabaseError(self._damaged(str(exc))) from None
            error = database_error(exc, f"open the job database {self.path}")
            if error is None:
                raise
            raise error from exc
        except CorruptDatabaseError:
            self._db.close()
            raise

    def _check(self) -> None:
        """``PRAGMA quick_check``: every page readable, every record well-formed (linear in the file's size)."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            lines = [line.strip() for text in problems for line in str(text).splitlines()
                     if line.strip() and not line.startswith("***")]  # "*** in database main ***" headings
            reason = "; ".join(lines[:2]) or "quick_check found it inconsistent"
            raise CorruptDatabaseError(self._damaged(reason[:200]))

    def _damaged(self, reason: str) -> str:
        """What to tell the operator about a damaged database: which file, and what to do."""
        companions = [p.name for p in (self.path.with_name(self.path.name + "-wal"),
                                       self.path.with_name(self.path.name + "-shm")) if p.exists()]
        also = f" (with {' and '.join(companions)})" if companions else ""
        return (f"the job database {self.path} is damaged ({reason}); the service will not start on it. "
                f"Stop any server using it, move the file aside{also}, e.g. "
                f"'mv {self.path} {self.path}.damaged', and start again: a new, empty database is made, "
                "and the job folders the old one described are removed at that start "
                f"('sqlite3 {self.path}.damaged .recover' may save what it held)")

    def _migrate(self) -> None:
        """Bring a database written by an earlier release up to the current schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "warnings" not in columns:  # added with the domain checks: a JSON list of sentences
            self._db.execute("ALTER TABLE jobs ADD COLUMN warnings TEXT")
        if "spec" not in columns:  # added with typed requests: the worker's request as JSON
            self._db.execute("ALTER TABLE jobs ADD COLUMN spec TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- failures -------------------------------------------------------------------------
    @contextmanager
    def _guarded(self, doing: str) -> Iterator[None]:
        """Hold the lock; turn a SQLite failure of the disk or the file into a `StorageError`."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                error = database_error(exc, doing)
                if error is None:
                    raise
                log.error("job database %s: could not %s: %s", self.path, doing, exc)
                raise error from exc

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        """One write transaction: committed whole, or rolled back whole."""
        with self._guarded(doing):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        """Undo the open transaction, unless SQLite already has.

        After a full disk or an I/O error SQLite may roll the transaction back itself; a second
        ROLLBACK would then fail ("no transaction is active") and hide the error that matters.
        """
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("job database %s: rollback failed: %s", self.path, exc)

    # -- writes ---------------------------------------------------------------------------
    def add(self, job: Job) -> None:
        """Insert a new job with its parameters and results, atomically."""
        with self._transaction("create the job"):
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            self._db.execute(
                "INSERT INTO jobs (job_id, owner, run_id, phase, creation_time, start_time, end_time,"
                " execution_duration, destruction, quote, error_message, error_type, error_detail,"
                " progress_done, progress_total, seq, spec) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.job_id, job.owner, job.run_id, job.phase.value, format_time(job.creation_time),
                    _time(job.start_time), _time(job.end_time), job.execution_duration,
                    _time(job.destruction), _time(job.quote),
                    job.error.message if job.error else None,
                    job.error.error_type if job.error else None,
                    job.error.detail if job.error else None,
                    job.progress_done, job.progress_total, seq,
                    json.dumps(job.spec) if job.spec is not None else None,
                ),
            )
            self._write_parameters(job.job_id, job.parameters)
            self._write_results(job.job_id, job.results)

    def update(self, job_id: str, **fields: object) -> None:
        """Update scalar job fields (datetimes and `Phase` converted); unknown names are refused."""
        assignments, values = _assignments(fields)
        with self._guarded("update the job"):
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*values, job_id))

    def transition(self, job_id: str, allowed: Iterable[Phase], **fields: object) -> bool:
        """Set fields only if the job's phase is one of `allowed`; True if it changed.

        This compare-and-set keeps races (an abort while a worker finishes) from resurrecting a job.
        """
        allowed = [p.value for p in allowed]
        assignments, values = _assignments(fields)
        marks = ", ".join("?" for _ in allowed)
        with self._guarded("change the job's phase"):
            cursor = self._db.execute(
                f"UPDATE jobs SET {assignments} WHERE job_id = ? AND phase IN ({marks})",
                (*values, job_id, *allowed),
            )
            return cursor.rowcount == 1

    def set_error(self, job_id: str, error: ErrorSummary, allowed: Iterable[Phase], end_time: datetime) -> bool:
        """Move a job to ERROR with its summary, if it is still in one of `allowed`."""
        return self.transition(
            job_id, allowed, phase=Phase.ERROR, end_time=end_time,
            error_message=error.message, error_type=error.error_type, error_detail=error.detail,
        )

    def replace_parameters(self, job_id: str, parameters: list[JobParameter],
                           spec: dict[str, Any] | None = None) -> None:
        """Replace a job's parameters and its worker spec together."""
        with self._transaction("store the job's parameters"):
            self._db.execute("DELETE FROM parameters WHERE job_id = ?", (job_id,))
            self._write_parameters(job_id, parameters)
            self._db.execute("UPDATE jobs SET spec = ? WHERE job_id = ?",
                             (json.dumps(spec) if spec is not None else None, job_id))

    def complete(self, job_id: str, results: list[JobResult], end_time: datetime,
                 warnings: Iterable[str] = ()) -> bool:
        """Record the results, warnings and COMPLETED in one transaction, unless the job left EXECUTING."""
        notes = list(warnings)
        with self._transaction("record the job's results"):
            cursor = self._db.execute(
                "UPDATE jobs SET phase = ?, end_time = ?, warnings = ? WHERE job_id = ? AND phase = ?",
                (Phase.COMPLETED.value, format_time(end_time), json.dumps(notes) if notes else None,
                 job_id, Phase.EXECUTING.value),
            )
            if cursor.rowcount != 1:
                return False  # nothing changed: committing the empty transaction is harmless
            self._db.execute("DELETE FROM results WHERE job_id = ?", (job_id,))
            self._write_results(job_id, results)
            return True

    def delete(self, job_id: str) -> bool:
        with self._guarded("delete the job"):
            return self._db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,)).rowcount == 1

    def _write_parameters(self, job_id: str, parameters: list[JobParameter]) -> None:
        self._db.executemany(
            "INSERT INTO parameters (job_id, position, name, value, by_reference, is_post) VALUES (?,?,?,?,?,?)",
            [(job_id, i, p.name, p.value, int(p.by_reference), int(p.is_post)) for i, p in enumerate(parameters)],
        )

    def _write_results(self, job_id: str, results: list[JobResult]) -> None:
        self._db.executemany(
            "INSERT INTO results (job_id, position, result_id, file_name, mime_type, size) VALUES (?,?,?,?,?,?)",
            [(job_id, i, r.result_id, r.file_name, r.mime_type, r.size) for i, r in enumerate(results)],
        )

    # -- reads ----------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._guarded("read the job"):
            row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            params = self._db.execute(
                "SELECT * FROM parameters WHERE job_id = ? ORDER BY position", (job_id,)
            ).fetchall()
            results = self._db.execute(
                "SELECT * FROM results WHERE job_id = ? ORDER BY position", (job_id,)
            ).fetchall()
        job = self._job(row)
        job.parameters = [JobParameter(p["name"], p["value"], bool(p["by_reference"]), bool(p["is_post"])) for p in params]
        job.results = [JobResult(r["result_id"], r["file_name"], r["mime_type"], r["size"]) for r in results]
        return job

    def list(self, owner: str | None, filters: JobFilter, include_archived: bool = False,
             all_owners: bool = False) -> list[Job]:
        """Jobs of `owner` matching the UWS filters, newest first when LAST is given.

        Without a PHASE filter ARCHIVED jobs are left out, as UWS 1.1 asks.
        """
        clauses, values = [], []
        if not all_owners:
            clauses.append("owner IS ?")
            values.append(owner)
        if filters.phases:
            clauses.append(f"phase IN ({', '.join('?' for _ in filters.phases)})")
            values.extend(p.value for p in filters.phases)
        elif not include_archived:
            clauses.append("phase != ?")
            values.append(Phase.ARCHIVED.value)
        if filters.after is not None:
            clauses.append("creation_time > ?")
            values.append(format_time(filters.after))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "ORDER BY creation_time DESC, seq DESC" if filters.last is not None else "ORDER BY creation_time, seq"
        limit = ""
        if filters.last is not None:
            limit = "LIMIT ?"
            values.append(max(0, min(int(filters.last), 2**62)))  # SQLite integers are 64-bit
        with self._guarded("list the jobs"):
            rows = self._db.execute(f"SELECT * FROM jobs {where} {order} {limit}", values).fetchall()
        return [self._job(row) for row in rows]

    def ids_in_phase(self, phases: Iterable[Phase]) -> list[str]:
        phases = [p.value for p in phases]
        with self._guarded("list the jobs"):
            rows = self._db.execute(
                f"SELECT job_id FROM jobs WHERE phase IN ({', '.join('?' for _ in phases)}) ORDER BY seq", phases
            ).fetchall()
        return [row[0] for row in rows]

    def job_ids(self) -> set[str]:
        """Every job's id, whatever its phase (ARCHIVED included)."""
        with self._guarded("list the jobs"):
            return {row[0] for row in self._db.execute("SELECT job_id FROM jobs")}

    def expired(self, now: datetime) -> list[str]:
        """Jobs whose destruction time has passed."""
        with self._guarded("list the jobs"):
            rows = self._db.execute(
                "SELECT job_id FROM jobs WHERE destruction IS NOT NULL AND destruction <= ?", (format_time(now),)
            ).fetchall()
        return [row[0] for row in rows]

    def count(self, phases: Iterable[Phase], owner: str | None = None, any_owner: bool = True) -> int:
        phases = [p.value for p in phases]
        sql = f"SELECT COUNT(*) FROM jobs WHERE phase IN ({', '.join('?' for _ in phases)})"
        values: list[object] = list(phases)
        if not any_owner:
            sql += " AND owner IS ?"
            values.append(owner)
        with self._guarded("count the jobs"):
            return int(self._db.execute(sql, values).fetchone()[0])

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        error = None
        if row["error_message"] is not None:
            error = ErrorSummary(row["error_message"], row["error_type"] or "fatal", row["error_detail"])
        return Job(
            job_id=row["job_id"],
            owner=row["owner"],
            phase=Phase(row["phase"]),
            creation_time=parse_time(row["creation_time"]),
            run_id=row["run_id"],
            start_time=_parse(row["start_time"]),
            end_time=_parse(row["end_time"]),
            execution_duration=int(row["execution_duration"]),
            destruction=_parse(row["destruction"]),
            quote=_parse(row["quote"]),
            error=error,
            progress_done=int(row["progress_done"]),
            progress_total=int(row["progress_total"]),
            warnings=json.loads(row["warnings"]) if row["warnings"] else [],
            spec=json.loads(row["spec"]) if row["spec"] else None,
        )
