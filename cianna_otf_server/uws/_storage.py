"""Job persistence in SQLite (WAL mode), the embedded service's store.

One connection guarded by a lock serves the event loop and the worker threads; every write is
one short transaction, so a SIGKILL at any moment leaves a consistent database. The operations
themselves are `SqlJobStore`'s, shared with the PostgreSQL store; this module opens, checks
and migrates the file and turns SQLite's failures into the service's.

The store's failures are the service's, not the user's: a full disk becomes `StorageFullError`
(HTTP 507), a database that cannot be written just now `StorageUnavailableError` (503), each
with a message a person can act on, and a damaged database file is refused when it is opened
(`CorruptDatabaseError`), before the service starts on it.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CorruptDatabaseError, StorageError
from ._errors import UWSError
from ._sql import SqlJobStore, schema

log = logging.getLogger(__name__)

#: The job database's file name in the service's data folder.
DATABASE_FILE = "jobs.sqlite"

SCHEMA = schema(integer="INTEGER", sequence="INTEGER", boolean="INTEGER", false="0")

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


class JobStore(SqlJobStore):
    """Create, read, update and delete job records in SQLite (the operations: `SqlJobStore`)."""

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

    def _next_seq(self) -> int:
        """One more than the last job's (inside `add`'s BEGIN IMMEDIATE, so no other writer races it)."""
        return int(self._execute("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM jobs").fetchone()["n"])

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
