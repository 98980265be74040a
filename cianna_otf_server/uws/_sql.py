"""The job store's operations in SQL, shared by its SQLite and PostgreSQL implementations.

Both stores keep the same three tables (jobs, their parameters, their results) and give the
job service the same operations with the same guarantees: every write one short transaction,
phase changes compare-and-set, reads of whole records. What differs between the databases is
small and lives in the subclasses: how a connection is opened, checked and migrated, how a
transaction begins, how driver failures become the service's `StorageError`s, the driver's
placeholder, the null-safe comparison and where the ordering sequence comes from.

Statements are written with ``?`` placeholders; a store whose driver wants another one says so
in `SqlJobStore.placeholder` (no statement here holds a literal ``?``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from ._models import ErrorSummary, Job, JobFilter, JobParameter, JobResult, Phase, format_time, parse_time

__all__ = ["SqlJobStore", "job_from_row", "schema", "UPDATABLE_FIELDS"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    owner TEXT,
    run_id TEXT,
    phase TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    execution_duration {integer} NOT NULL DEFAULT 0,
    destruction TEXT,
    quote TEXT,
    error_message TEXT,
    error_type TEXT,
    error_detail TEXT,
    progress_done {integer} NOT NULL DEFAULT 0,
    progress_total {integer} NOT NULL DEFAULT 0,
    seq {sequence} NOT NULL,
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
    by_reference {boolean} NOT NULL DEFAULT {false},
    is_post {boolean} NOT NULL DEFAULT {false},
    PRIMARY KEY (job_id, position)
);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    result_id TEXT NOT NULL,
    file_name TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    size {integer},
    PRIMARY KEY (job_id, position)
);
"""


def schema(*, integer: str, sequence: str, boolean: str, false: str) -> str:
    """The three tables in a dialect's types (64-bit integers, the creation-order column, booleans)."""
    return _SCHEMA.format(integer=integer, sequence=sequence, boolean=boolean, false=false)

#: The job fields `update` and `transition` may set.
UPDATABLE_FIELDS = frozenset({
    "phase", "run_id", "start_time", "end_time", "execution_duration", "destruction", "quote",
    "error_message", "error_type", "error_detail", "progress_done", "progress_total",
})


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


def _assignments(fields: dict[str, object]) -> tuple[str, list[object]]:
    """SQL ``a = ?, b = ?`` and the values, with datetimes and phases in their stored form."""
    unknown = set(fields) - UPDATABLE_FIELDS
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


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def job_from_row(row: Any) -> Job:
    """A `Job` (without parameters and results) from a ``jobs`` row read by column name."""
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


class SqlJobStore:
    """Create, read, update and delete job records; a subclass supplies the connection and dialect."""

    #: The driver's parameter placeholder (statements here are written with ``?``).
    placeholder = "?"
    #: The null-safe equality of the dialect (the anonymous owner is NULL, and an owner too).
    same = "IS"
    _db: Any

    # -- what a subclass supplies -----------------------------------------------------------
    def _guarded(self, doing: str) -> AbstractContextManager[None]:
        """Hold the store's lock; turn a database failure into a `StorageError` saying `doing`."""
        raise NotImplementedError

    def _transaction(self, doing: str) -> AbstractContextManager[None]:
        """One write transaction, committed whole or rolled back whole, guarded."""
        raise NotImplementedError

    def _next_seq(self) -> int:
        """The next job's place in creation order (called inside `add`'s transaction)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- statements -------------------------------------------------------------------------
    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    def _execute(self, statement: str, values: Sequence[object] = ()) -> Any:
        return self._db.execute(self._sql(statement), tuple(values))

    def _executemany(self, statement: str, rows: list[tuple[object, ...]]) -> None:
        if not rows:
            return
        many = getattr(self._db, "executemany", None)  # sqlite3's connection has it, psycopg's cursors do
        if many is not None:
            many(self._sql(statement), rows)
            return
        with self._db.cursor() as cursor:
            cursor.executemany(self._sql(statement), rows)

    # -- writes ---------------------------------------------------------------------------
    def add(self, job: Job) -> None:
        """Insert a new job with its parameters and results, atomically."""
        with self._transaction("create the job"):
            values = (
                job.job_id, job.owner, job.run_id, job.phase.value, format_time(job.creation_time),
                _time(job.start_time), _time(job.end_time), job.execution_duration,
                _time(job.destruction), _time(job.quote),
                job.error.message if job.error else None,
                job.error.error_type if job.error else None,
                job.error.detail if job.error else None,
                job.progress_done, job.progress_total, self._next_seq(),
                json.dumps(job.spec) if job.spec is not None else None,
            )
            self._execute(
                "INSERT INTO jobs (job_id, owner, run_id, phase, creation_time, start_time, end_time,"
                " execution_duration, destruction, quote, error_message, error_type, error_detail,"
                f" progress_done, progress_total, seq, spec) VALUES ({_marks(values)})", values)
            self._write_parameters(job.job_id, job.parameters)
            self._write_results(job.job_id, job.results)

    def update(self, job_id: str, **fields: object) -> None:
        """Update scalar job fields (datetimes and `Phase` converted); unknown names are refused."""
        assignments, values = _assignments(fields)
        with self._guarded("update the job"):
            self._execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*values, job_id))

    def transition(self, job_id: str, allowed: Iterable[Phase], **fields: object) -> bool:
        """Set fields only if the job's phase is one of `allowed`; True if it changed.

        This compare-and-set keeps races (an abort while a worker finishes) from resurrecting a job.
        """
        phases = [p.value for p in allowed]
        assignments, values = _assignments(fields)
        with self._guarded("change the job's phase"):
            cursor = self._execute(f"UPDATE jobs SET {assignments} WHERE job_id = ? AND phase IN ({_marks(phases)})",
                                   (*values, job_id, *phases))
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
            self._execute("DELETE FROM parameters WHERE job_id = ?", (job_id,))
            self._write_parameters(job_id, parameters)
            self._execute("UPDATE jobs SET spec = ? WHERE job_id = ?",
                          (json.dumps(spec) if spec is not None else None, job_id))

    def complete(self, job_id: str, results: list[JobResult], end_time: datetime,
                 warnings: Iterable[str] = ()) -> bool:
        """Record the results, warnings and COMPLETED in one transaction, unless the job left EXECUTING."""
        notes = list(warnings)
        with self._transaction("record the job's results"):
            cursor = self._execute(
                "UPDATE jobs SET phase = ?, end_time = ?, warnings = ? WHERE job_id = ? AND phase = ?",
                (Phase.COMPLETED.value, format_time(end_time), json.dumps(notes) if notes else None,
                 job_id, Phase.EXECUTING.value),
            )
            if cursor.rowcount != 1:
                return False  # nothing changed: committing the empty transaction is harmless
            self._execute("DELETE FROM results WHERE job_id = ?", (job_id,))
            self._write_results(job_id, results)
            return True

    def delete(self, job_id: str) -> bool:
        with self._guarded("delete the job"):
            return self._execute("DELETE FROM jobs WHERE job_id = ?", (job_id,)).rowcount == 1

    def _write_parameters(self, job_id: str, parameters: list[JobParameter]) -> None:
        self._executemany(
            "INSERT INTO parameters (job_id, position, name, value, by_reference, is_post) VALUES (?,?,?,?,?,?)",
            [(job_id, i, p.name, p.value, bool(p.by_reference), bool(p.is_post)) for i, p in enumerate(parameters)],
        )

    def _write_results(self, job_id: str, results: list[JobResult]) -> None:
        self._executemany(
            "INSERT INTO results (job_id, position, result_id, file_name, mime_type, size) VALUES (?,?,?,?,?,?)",
            [(job_id, i, r.result_id, r.file_name, r.mime_type, r.size) for i, r in enumerate(results)],
        )

    # -- reads ----------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._guarded("read the job"):
            row = self._execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            params = self._execute("SELECT * FROM parameters WHERE job_id = ? ORDER BY position", (job_id,)).fetchall()
            results = self._execute("SELECT * FROM results WHERE job_id = ? ORDER BY position", (job_id,)).fetchall()
        job = job_from_row(row)
        job.parameters = [JobParameter(p["name"], p["value"], bool(p["by_reference"]), bool(p["is_post"]))
                          for p in params]
        job.results = [JobResult(r["result_id"], r["file_name"], r["mime_type"], r["size"]) for r in results]
        return job

    def list(self, owner: str | None, filters: JobFilter, include_archived: bool = False,
             all_owners: bool = False) -> list[Job]:
        """Jobs of `owner` matching the UWS filters, newest first when LAST is given.

        Without a PHASE filter ARCHIVED jobs are left out, as UWS 1.1 asks.
        """
        clauses: list[str] = []
        values: list[object] = []
        if not all_owners:
            clauses.append(f"owner {self.same} ?")
            values.append(owner)
        if filters.phases:
            clauses.append(f"phase IN ({_marks(filters.phases)})")
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
            values.append(max(0, min(int(filters.last), 2**62)))  # 64-bit integers in both databases
        with self._guarded("list the jobs"):
            rows = self._execute(f"SELECT * FROM jobs {where} {order} {limit}", values).fetchall()
        return [job_from_row(row) for row in rows]

    def ids_in_phase(self, phases: Iterable[Phase]) -> list[str]:
        wanted = [p.value for p in phases]
        with self._guarded("list the jobs"):
            rows = self._execute(f"SELECT job_id FROM jobs WHERE phase IN ({_marks(wanted)}) ORDER BY seq",
                                 wanted).fetchall()
        return [row["job_id"] for row in rows]

    def job_ids(self) -> set[str]:
        """Every job's id, whatever its phase (ARCHIVED included)."""
        with self._guarded("list the jobs"):
            return {row["job_id"] for row in self._execute("SELECT job_id FROM jobs").fetchall()}

    def expired(self, now: datetime) -> list[str]:
        """Jobs whose destruction time has passed."""
        with self._guarded("list the jobs"):
            rows = self._execute("SELECT job_id FROM jobs WHERE destruction IS NOT NULL AND destruction <= ?",
                                 (format_time(now),)).fetchall()
        return [row["job_id"] for row in rows]

    def count(self, phases: Iterable[Phase], owner: str | None = None, any_owner: bool = True) -> int:
        wanted = [p.value for p in phases]
        sql = f"SELECT COUNT(*) AS n FROM jobs WHERE phase IN ({_marks(wanted)})"
        values: list[object] = list(wanted)
        if not any_owner:
            sql += f" AND owner {self.same} ?"
            values.append(owner)
        with self._guarded("count the jobs"):
            return int(self._execute(sql, values).fetchone()["n"])
