"""One job, three clients, one real ``cianna-otf serve`` process.

The job is submitted from the command line (a ``cianna-otf submit --wait -o`` subprocess),
watched in the terminal dashboard (textual's test pilot shows it COMPLETED), and fetched the way
a notebook would, with pyvo's UWS support: the same catalogue, row for row.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
import requests
from astropy.io.votable import parse_single_table

pytest.importorskip("textual")
pyvo = pytest.importorskip("pyvo")

from test_cli_client import CLI, TOKEN, _clean_env, server  # noqa: E402,F401 - `server` is a fixture
from textual.widgets import DataTable  # noqa: E402

from cianna_otf_server.client import Client  # noqa: E402
from cianna_otf_server.tui import Dashboard  # noqa: E402


def _rows(app) -> dict[str, list[str]]:
    table = app.query_one("#jobs", DataTable)
    return {row_key.value: [str(cell) for cell in table.get_row(row_key)] for row_key in table.rows}


def test_cli_dashboard_and_pyvo_see_the_same_job(server, sky_fits, tmp_path):
    # 1. the command line submits, waits and writes the catalogue
    out = tmp_path / "sources.vot"
    result = subprocess.run(
        [*CLI, "submit", str(sky_fits), "--model", "classic", "--run-id", "together", "--wait", "-o", str(out),
         "--url", server, "--token", TOKEN],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_env(tmp_path), timeout=180,
    )
    assert result.returncode == 0, result.stderr
    job_url = result.stdout.strip().splitlines()[-1]
    assert job_url.startswith(f"{server}/async/")
    job_id = job_url.rsplit("/", 1)[-1]
    cli_table = parse_single_table(str(out)).to_table()
    assert len(cli_table) > 0

    # 2. the dashboard lists it, COMPLETED, with its model
    async def scenario() -> list[str]:
        app = Dashboard(Client(server, token=TOKEN), refresh_seconds=0.5)
        async with app.run_test(size=(160, 40)) as pilot:
            deadline = time.monotonic() + 20
            while job_id not in _rows(app) or _rows(app)[job_id][1] != "COMPLETED":
                assert time.monotonic() < deadline, f"the dashboard never showed {job_id} COMPLETED: {_rows(app)}"
                await pilot.pause(0.05)
            return _rows(app)[job_id]

    row = asyncio.run(scenario())
    assert row[1] == "COMPLETED" and row[2] == "classic"

    # 3. a notebook fetches it with pyvo, on the public UWS interface only
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    job = pyvo.dal.AsyncTAPJob(job_url, session=session)
    assert job.phase == "COMPLETED"
    pyvo_table = job.fetch_result().to_table()
    assert len(pyvo_table) == len(cli_table)
    assert set(cli_table.colnames) <= set(pyvo_table.colnames)
