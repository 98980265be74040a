"""The terminal dashboard, driven with textual's test pilot against a real standalone server.

The repository runs without pytest-asyncio, so each test is a plain function that runs its
async scenario with `asyncio.run`.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest

pytest.importorskip("textual")

from textual.widgets import DataTable, Static  # noqa: E402

from cianna_otf_server.client import Client  # noqa: E402
from cianna_otf_server.tui import Dashboard, parse_filter, parse_metrics  # noqa: E402
from cianna_otf_server.models import DEFAULT_MODEL  # noqa: E402


async def _until(pilot, condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the dashboard did not reach the expected state in time")
        await pilot.pause(0.05)


def _rows(app) -> dict[str, list[str]]:
    table = app.query_one("#jobs", DataTable)
    return {row_key.value: [str(cell) for cell in table.get_row(row_key)] for row_key in table.rows}


def _text(app, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


async def _select(pilot, app, job_id: str) -> None:
    table = app.query_one("#jobs", DataTable)
    table.move_cursor(row=table.get_row_index(job_id))
    await pilot.pause()


@pytest.fixture
def client(standalone):
    with Client(standalone.url, token="tok-alice") as client:
        yield client


def test_jobs_details_filter_models_and_metrics(standalone, client, sky_fits):
    done = client.submit(sky_fits, run_id="finished").wait()
    pending = client.submit(sky_fits, run=False)

    async def scenario():
        app = Dashboard(Client(standalone.url, token="tok-alice"), refresh_seconds=0.5)
        async with app.run_test(size=(160, 40)) as pilot:
            await _until(pilot, lambda: len(_rows(app)) == 2)
            rows = _rows(app)
            assert rows[done.job_id][1] == "COMPLETED"
            assert rows[done.job_id][2] == DEFAULT_MODEL
            assert rows[done.job_id][3] == "alice"
            assert rows[done.job_id][5] == "1/1"
            assert rows[pending.job_id][1] == "PENDING"

            await _select(pilot, app, done.job_id)
            detail = _text(app, "#detail")
            assert done.job_id in detail and f"MODEL = {DEFAULT_MODEL}" in detail and "finished" in detail
            assert "results:" in detail and "/result" in detail
            await _select(pilot, app, pending.job_id)
            assert "PENDING" in _text(app, "#detail")

            # f cycles to PENDING: only the pending job is left
            await pilot.press("f")
            await _until(pilot, lambda: list(_rows(app)) == [pending.job_id])
            # / types a filter
            await pilot.press("slash", *"completed", "enter")
            await _until(pilot, lambda: list(_rows(app)) == [done.job_id])
            await pilot.press("slash", "ctrl+u", "enter")  # empty: all jobs
            await _until(pilot, lambda: len(_rows(app)) == 2)

            # the metrics footer and the models pane
            await _until(pilot, lambda: "queue:" in _text(app, "#metrics"))
            assert "COMPLETED=1" in _text(app, "#metrics")
            await pilot.press("m")
            await _until(pilot, lambda: "classic" in _text(app, "#models"))

    asyncio.run(scenario())


def test_abort_and_delete_keys(standalone, client, sky_fits):
    to_abort = client.submit(sky_fits, run=False)
    to_delete = client.submit(sky_fits, run=False)

    async def scenario():
        app = Dashboard(Client(standalone.url, token="tok-alice"), refresh_seconds=0.5)
        async with app.run_test(size=(160, 40)) as pilot:
            await _until(pilot, lambda: len(_rows(app)) == 2)

            await _select(pilot, app, to_abort.job_id)
            await pilot.press("a", "n")  # declined: nothing happens
            await pilot.pause(0.3)
            assert client.job(to_abort.job_id).phase == "PENDING"
            await pilot.press("a", "y")
            await _until(pilot, lambda: _rows(app).get(to_abort.job_id, [None, None])[1] == "ABORTED")
            assert client.job(to_abort.job_id).phase == "ABORTED"

            await _select(pilot, app, to_delete.job_id)
            await pilot.press("d", "y")
            await _until(pilot, lambda: to_delete.job_id not in _rows(app))
            assert [j.job_id for j in client.jobs()] == [to_abort.job_id]

    asyncio.run(scenario())


def test_bad_token_shows_an_error(standalone, client, sky_fits):
    client.submit(sky_fits, run=False)

    async def scenario():
        app = Dashboard(Client(standalone.url, token="wrong-token"), refresh_seconds=0.5)
        async with app.run_test(size=(160, 40)) as pilot:
            # the status line and the notification are two updates: wait for both
            await _until(pilot, lambda: "error" in _text(app, "#status")
                         and any(n.severity == "error" for n in app._notifications))
            assert _rows(app) == {}
            assert app.query_one("#status").has_class("error")

    asyncio.run(scenario())


def test_unreachable_service_shows_an_error():
    async def scenario():
        app = Dashboard(Client("http://127.0.0.1:9", token="x", timeout=2), refresh_seconds=1)
        async with app.run_test(size=(120, 30)) as pilot:
            await _until(pilot, lambda: "cannot reach" in _text(app, "#status"))

    asyncio.run(scenario())


def test_helpers():
    assert parse_filter("queued, exec") == ("QUEUED", "EXEC")
    assert parse_filter("") == () and parse_filter("all") == ()
    text = ('# TYPE cianna_otf_queue_patches gauge\ncianna_otf_queue_patches{model="classic"} 12.0\n'
            '# TYPE cianna_otf_jobs gauge\ncianna_otf_jobs{phase="QUEUED"} 3.0\n')
    metrics = parse_metrics(text)
    assert metrics["queue"] == {"classic": 12.0} and metrics["jobs"] == {"QUEUED": 3.0}


def test_command_line_options():
    from cianna_otf_server.cli import dashboard as _cli_dashboard

    parser = argparse.ArgumentParser()
    _cli_dashboard.register(parser.add_subparsers())
    args = parser.parse_args(["dashboard", "--url", "http://x", "--token", "t", "--refresh", "2"])
    assert (args.url, args.token, args.refresh) == ("http://x", "t", 2.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["dashboard", "--refresh", "0"])
