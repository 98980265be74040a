"""Job persistence in PostgreSQL, for a shared service and for several replicas behind one URL.

The same records, operations and guarantees as the SQLite `JobStore` (each write one short
transaction, phase changes compare-and-set, failures of the database server turned into the
service's `StorageError`s), on a server that many service processes can share. Replicas see
each other's jobs at once; a WAIT on one replica sees a change made by another within
`PostgresJobStore.change_poll_seconds` (`JobService.wait` reads the record again that often).

psycopg 3 (``pip install 'cianna-otf[postgres]'``) is imported only when this store is chosen.
The schema is made at first connection and brought up to date by `_migrate`, as SQLite's is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._sql import SqlJobStore, schema
from ._storage import StorageFullError, StorageUnavailableError

__all__ = ["PostgresJobStore", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

#: The schema this release writes (the ``otf_schema`` table holds the version a database has).
SCHEMA_VERSION = 1

_SCHEMA = "CREATE TABLE IF NOT EXISTS otf_schema (version INTEGER NOT NULL);\n" + schema(
    integer="BIGINT", sequence="BIGSERIAL", boolean="BOOLEAN", false="FALSE")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # the optional extra is missing
        raise StorageUnavailableError(
            "a PostgreSQL job database needs psycopg: pip install 'cianna-otf[postgres]'") from exc
    return psycopg


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        parts = conninfo_to_dict(url)
        if "password" in parts:
            parts["password"] = "***"
        return make_conninfo(**parts)
    except Exception:
        return "<the configured PostgreSQL database>"


class PostgresJobStore(SqlJobStore):
    """Create, read, update and delete job records in a PostgreSQL database (`url`, libpq form).

    The operations are `SqlJobStore`'s; this class connects, makes and versions the schema, and
    turns the server's failures into the service's.
    """

    placeholder = "%s"
    same = "IS NOT DISTINCT FROM"

    #: Another replica's phase change reaches a WAIT on this one within this many seconds
    #: (`JobService.wait` reads the record again at least this often).
    change_poll_seconds = 0.5

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        psycopg = _psycopg()
        self.url = url
        self.path = _redact(url)  # what messages name, as the SQLite store names its file
        self._errors = psycopg
        self._lock = threading.RLock()
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout,
                                       row_factory=psycopg.rows.dict_row)
        except psycopg.Error as exc:
            raise StorageUnavailableError(
                f"cannot connect to the job database {self.path}: {str(exc).strip()}") from exc
        try:
            with self._lock, self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(7370001)")  # one replica migrates at a time
                self._db.execute(_SCHEMA)
                self._migrate()
        except psycopg.Error as exc:
            self._db.close()
            raise StorageUnavailableError(f"cannot prepare the job database {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        """Record the schema version; later releases add their steps here, in order."""
        row = self._execute("SELECT version FROM otf_schema").fetchone()
        if row is None:
            self._execute("INSERT INTO otf_schema (version) VALUES (?)", (SCHEMA_VERSION,))
        elif int(row["version"]) > SCHEMA_VERSION:
            raise StorageUnavailableError(
                f"the job database {self.path} has schema version {row['version']}, newer than this "
                f"release's {SCHEMA_VERSION}: upgrade cianna-otf on this node")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- failures -------------------------------------------------------------------------
    @contextmanager
    def _guarded(self, doing: str) -> Iterator[None]:
        """Hold the lock; turn a database server failure into a `StorageError`.

        A full disk on the server is 507, like SQLite's; a server that is down, restarting or
        refusing connections is 503. A lost connection is reopened on the next call.
        """
        errors = self._errors.errors
        with self._lock:
            if self._db.closed or self._db.broken:
                self._reconnect()
            try:
                yield
            except (errors.DiskFull, errors.OutOfMemory) as exc:
                log.error("job database %s: could not %s: %s", self.path, doing, exc)
                raise StorageFullError(
                    f"could not {doing}: the job database server is out of space ({exc.diag.message_primary})"
                ) from exc
            except (self._errors.OperationalError, self._errors.InterfaceError) as exc:
                log.error("job database %s: could not %s: %s", self.path, doing, exc)
                raise StorageUnavailableError(
                    f"could not {doing}: the job database {self.path} is not reachable just now; try again"
                ) from exc

    def _reconnect(self) -> None:
        try:
            self._db = self._errors.connect(self.url, autocommit=True, connect_timeout=10,
                                            row_factory=self._errors.rows.dict_row)
        except self._errors.Error as exc:
            raise StorageUnavailableError(
                f"the job database {self.path} is not reachable just now; try again") from exc

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        """One write transaction: committed whole, or rolled back whole."""
        with self._guarded(doing), self._db.transaction():
            yield

    def _next_seq(self) -> int:
        """The next value of the jobs' creation-order sequence (shared by every replica)."""
        return int(self._execute("SELECT nextval(pg_get_serial_sequence('jobs', 'seq')) AS n").fetchone()["n"])
