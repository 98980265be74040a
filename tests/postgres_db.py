"""A real PostgreSQL server for the tests (the ``postgres_url`` fixture) and fresh databases on it.

The server is `cianna_otf_server.testing.postgres_server`, from the machine's PostgreSQL programs.
Where PostgreSQL or psycopg is missing its tests are skipped, unless
``CIANNA_OTF_REQUIRE_POSTGRES=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile

import pytest

REQUIRED = os.environ.get("CIANNA_OTF_REQUIRE_POSTGRES") == "1"
_databases = itertools.count()


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (CIANNA_OTF_REQUIRE_POSTGRES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url():  # re-exported by conftest.py
    """A PostgreSQL server for the whole test run (its folder under /tmp, which its account can reach)."""
    from cianna_otf_server.testing import postgres_programs, postgres_server

    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg is not installed (pip install 'cianna-otf[postgres]')")
    if postgres_programs() is None:
        _missing("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")
    folder = tempfile.mkdtemp(prefix="cianna-otf-pg-")
    try:
        with postgres_server(folder) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import psycopg

    name = f"jobs_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return server_url.replace("/postgres?", f"/{name}?")
