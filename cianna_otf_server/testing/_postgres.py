"""A throw-away PostgreSQL server of the test's own, from the machine's PostgreSQL programs.

Tests of the PostgreSQL job store need a real server, not a mock of one: `postgres_server`
makes a cluster in a folder the test names (``initdb``), starts it listening only on a Unix
socket in that folder (``pg_ctl``), yields its connection URL and stops it afterwards. As
root, PostgreSQL refuses to run; the cluster is then owned by the ``postgres`` account that
Debian's package makes, and its programs run as that account.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["postgres_programs", "postgres_server"]


def postgres_programs() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (PATH, then Debian's versioned folders), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(folder, "initdb"), os.X_OK):
            return Path(folder)
    return None


@contextmanager
def postgres_server(folder: str | Path, *, port: int = 5432) -> Iterator[str]:
    """Run a fresh PostgreSQL cluster in `folder` for the ``with`` block; yields its URL.

    The server listens on no TCP address, only on the Unix socket in `folder` (so ports never
    clash between test runs); `port` only names the socket file.
    """
    programs = postgres_programs()
    if programs is None:
        raise RuntimeError("PostgreSQL's initdb and pg_ctl were not found (Debian: apt-get install postgresql)")
    folder = Path(folder).resolve()
    data = folder / "data"
    folder.mkdir(parents=True, exist_ok=True)
    run_as: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        account = pwd.getpwnam("postgres")  # KeyError: no account to run the server as
        os.chown(folder, account.pw_uid, account.pw_gid)
        run_as, user = ["runuser", "-u", "postgres", "--"], "postgres"
    subprocess.run([*run_as, str(programs / "initdb"), "-D", str(data), "-A", "trust", "-U", user,
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    options = f"-c listen_addresses='' -k {folder} -p {port} -c fsync=off -c full_page_writes=off"
    subprocess.run([*run_as, str(programs / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"),
                    "-o", options, "-w", "-t", "60", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://{user}@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run([*run_as, str(programs / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
