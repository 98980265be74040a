"""The client commands (``submit``, ``status``, ``jobs``, ``fetch``, ``abort``, ``delete``) as users
run them: real ``cianna-otf`` processes against a real ``cianna-otf serve`` process."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from astropy.io.votable import parse_single_table

import cianna_otf_server.cli

TOKEN = "cli-client-test-token"
CLIENT_MODULES = ("cianna_otf_server.cli.submit", "cianna_otf_server.cli.jobs")

assert all(module in cianna_otf_server.cli.COMMAND_MODULES for module in CLIENT_MODULES)
CLI = [sys.executable, "-m", "cianna_otf_server.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(tmp: Path) -> dict[str, str]:
    """No service URL or token from the environment, no config file, no user models."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CIANNA_OTF_URL", "CIANNA_OTF_TOKEN", "CIANNA_OTF_MODELS", "CIANNA_OTF_DEBUG")}
    env["XDG_CONFIG_HOME"] = str(tmp / "config")
    env["XDG_DATA_HOME"] = str(tmp / "data-home")
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``cianna-otf serve`` as a subprocess on a free port; yields its URL."""
    tmp = tmp_path_factory.mktemp("serve")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "cianna_otf_server.cli", "serve", "--port", str(port), "--data-dir",
         str(tmp / "data"), "--token", TOKEN, "--workers", "1", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env(tmp),
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/models", headers=headers, timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("cianna-otf serve did not start:\n" + (process.communicate()[0] or ""))
        time.sleep(0.2)
    yield url
    process.terminate()
    process.communicate(timeout=60)


@pytest.fixture()
def cli(server, tmp_path):
    """Run a client command with --url/--token given; ``auth=False`` leaves them out."""

    def run(*args: str, auth: bool = True, env: dict[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
        environment = _clean_env(tmp_path)
        environment.update(env or {})
        options = ["--url", server, "--token", TOKEN] if auth else []
        return subprocess.run([*CLI, *args, *options], capture_output=True, text=True, cwd=tmp_path,
                              env=environment, timeout=timeout)

    return run


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cianna-otf: error: "), lines[0]
    return lines[0]


def job_id_of(url: str) -> str:
    return url.strip().rstrip("/").rsplit("/", 1)[-1]


def test_submit_wait_writes_votable(cli, sky_fits, tmp_path):
    out = tmp_path / "sources.vot"
    result = cli("submit", str(sky_fits), "--model", "classic", "--wait", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "/async/" in result.stdout  # the job URL
    assert "COMPLETED" in result.stderr  # plain progress lines (stderr is not a terminal)
    table = parse_single_table(str(out)).to_table()
    assert len(table) > 0
    assert {"ra", "dec", "score"} <= set(table.colnames)
    assert not list(tmp_path.glob(".cianna-otf-*"))  # no temporary file left behind


def test_submit_csv_to_stdout_and_region(cli, sky_fits):
    result = cli("submit", str(sky_fits), "-o", "-", "--format", "csv", "--pixels", "1 128 1 128")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert "ra" in header.split(",") and "dec" in header.split(",")
    assert "/async/" in result.stderr  # the URL goes to stderr when stdout carries the catalogue


def test_submit_not_fits_fails_with_job_error(cli, tmp_path):
    bad = tmp_path / "notes.fits"
    bad.write_text("this is not a FITS image\n")
    result = cli("submit", str(bad), "--wait", "-o", str(tmp_path / "never.vot"))
    assert result.returncode == 1, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("cianna-otf: error: ")]
    assert len(errors) == 1 and "failed" in errors[0] and "FITS" in errors[0], result.stderr
    assert not (tmp_path / "never.vot").exists()


def test_job_commands(cli, sky_fits, tmp_path):
    submitted = cli("submit", str(sky_fits), "--model", "classic", "--run-id", "cli-test", "--json")
    assert submitted.returncode == 0, submitted.stderr
    [job] = json.loads(submitted.stdout)
    job_id = job["job_id"]
    assert job["phase"] in ("QUEUED", "EXECUTING", "COMPLETED") and job["image"] == str(sky_fits)

    status = cli("status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["job_id"] == job_id and document["run_id"] == "cli-test"
    assert document["parameters"]["MODEL"] == "classic"

    text = cli("status", job_id)
    assert text.returncode == 0 and text.stdout.splitlines()[0].split() == ["job", job_id]

    deadline = time.monotonic() + 120
    while json.loads(cli("status", job_id, "--json").stdout)["phase"] != "COMPLETED":
        assert time.monotonic() < deadline
        time.sleep(0.5)

    listing = cli("jobs", "--phase", "COMPLETED", "--last", "50")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["JOB", "PHASE", "CREATED", "RUNID", "OWNER"]
    assert any(row.split()[0] == job_id and row.split()[1] == "COMPLETED" for row in rows)
    as_json = json.loads(cli("jobs", "--json", "--last", "1").stdout)
    assert len(as_json) == 1 and as_json[0]["job_id"] == job_id
    assert cli("jobs", "--phase", "BOGUS").returncode == 2
    assert cli("jobs", "--after", "yesterday").returncode == 2

    fetched = cli("fetch", job_id, "-o", str(tmp_path / "a.vot"))
    assert fetched.returncode == 0, fetched.stderr
    assert len(parse_single_table(str(tmp_path / "a.vot")).to_table()) > 0
    regions = cli("fetch", job_id, "-o", str(tmp_path / "a.reg"))
    assert regions.returncode == 0 and (tmp_path / "a.reg").read_text().lstrip().startswith("#")
    csv = cli("fetch", job_id, "--format", "csv")  # converted here from the VOTable
    assert csv.returncode == 0 and "ra" in csv.stdout.splitlines()[0].split(",")
    fits = cli("fetch", job_id, "-o", str(tmp_path / "a.fits"))
    assert fits.returncode == 0 and (tmp_path / "a.fits").read_bytes().startswith(b"SIMPLE  =")
    provenance = cli("fetch", job_id, "--format", "provenance")
    assert provenance.returncode == 0 and "activity" in json.loads(provenance.stdout)

    aborted_late = cli("abort", job_id)  # a finished job cannot be aborted: user-fixable
    assert aborted_late.returncode == 2
    one_error_line(aborted_late)

    deleted = cli("delete", job_id)
    assert deleted.returncode == 0 and job_id in deleted.stdout
    gone = cli("status", job_id)
    assert gone.returncode == 2
    assert "404" in one_error_line(gone)


def test_abort_a_pending_or_queued_job(cli, server, sky_fits):
    # a job created without PHASE=RUN stays PENDING; the CLI aborts it
    response = requests.post(server + "/async", files={"IMAGE": ("sky.fits", sky_fits.read_bytes())},
                             headers={"Authorization": f"Bearer {TOKEN}"}, allow_redirects=False, timeout=30)
    job_id = job_id_of(response.headers["Location"])
    aborted = cli("abort", job_id, "--json")
    assert aborted.returncode == 0, aborted.stderr
    assert json.loads(aborted.stdout)["phase"] == "ABORTED"
    fetch = cli("fetch", job_id)
    assert fetch.returncode == 1 and "aborted" in one_error_line(fetch)
    assert cli("delete", job_id).returncode == 0


def test_bad_token_is_one_line_exit_2(cli, server, sky_fits):
    result = cli("jobs", "--url", server, "--token", "wrong", auth=False)
    assert result.returncode == 2
    assert "401" in one_error_line(result)
    submit = cli("submit", str(sky_fits), "--url", server, "--token", "wrong", auth=False)
    assert submit.returncode == 2
    one_error_line(submit)


def test_unknown_job_exit_2(cli):
    for command in (["status", "no-such-job"], ["fetch", "no-such-job"], ["abort", "no-such-job"],
                    ["delete", "no-such-job"]):
        result = cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert "no-such-job" in one_error_line(result) or "404" in result.stderr


def test_missing_url_exit_2(cli):
    result = cli("jobs", auth=False)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "--url" in line and "CIANNA_OTF_URL" in line


def test_url_and_token_from_environment(cli, server):
    result = cli("jobs", "--json", auth=False, env={"CIANNA_OTF_URL": server, "CIANNA_OTF_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


def test_unreachable_service_exit_1(cli):
    result = cli("jobs", "--url", f"http://127.0.0.1:{_free_port()}", "--token", TOKEN, auth=False)
    assert result.returncode == 1
    assert "cannot reach" in one_error_line(result)


def test_bad_input_exit_2(cli, tmp_path, sky_fits):
    missing = cli("submit", str(tmp_path / "nope.fits"))
    assert missing.returncode == 2 and "does not exist" in one_error_line(missing)
    region = cli("submit", str(sky_fits), "--region", "SQUARE 1 2 3")
    assert region.returncode == 2 and "cannot read the region" in one_error_line(region)  # checked before sending
    model = cli("submit", str(sky_fits), "--model", "no-such-model")
    assert model.returncode == 2 and "no-such-model" in one_error_line(model)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("submit", str(empty)).returncode == 2
    assert cli("submit", str(tmp_path / "*.fits")).returncode == 2
    usage = cli("submit")
    assert usage.returncode == 2
    overwrite = cli("submit", str(sky_fits), "-o", str(sky_fits))
    assert overwrite.returncode == 2 and "overwrite" in one_error_line(overwrite)


def test_directory_submits_one_job_per_fits_file(cli, sky_fits, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(sky_fits, folder / "one.fits")
    shutil.copy(sky_fits, folder / "two.fits")
    (folder / "readme.txt").write_text("not an image")
    result = cli("submit", str(folder), "--model", "classic", "--wait", "-o", str(tmp_path / "cats"), "--json")
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert [Path(job["image"]).name for job in jobs] == ["one.fits", "two.fits"]
    assert len({job["job_id"] for job in jobs}) == 2
    assert all(job["phase"] == "COMPLETED" for job in jobs)
    for name in ("one", "two"):
        table = parse_single_table(io.BytesIO((tmp_path / "cats" / f"{name}.vot").read_bytes())).to_table()
        assert len(table) > 0

    plain = cli("submit", str(folder / "*.fits"))  # a quoted glob, expanded by the command
    assert plain.returncode == 0, plain.stderr
    assert len([line for line in plain.stdout.splitlines() if "/async/" in line]) == 2


def test_models_of_the_service(cli, server, tmp_path) -> None:
    listed = cli("models", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "classic" in {card["name"] for card in json.loads(listed.stdout)}
    environment = _clean_env(tmp_path)
    refused = subprocess.run([*CLI, "models", "--url", server, "--token", "wrong"], capture_output=True,
                             text=True, cwd=tmp_path, env=environment, timeout=60)
    assert refused.returncode == 2
    one_error_line(refused)
