"""Malformed FITS files, made here, through every way an image reaches the service.

The corpus: truncated data, a header without END, NAXIS that lies, BITPIX 0 and 17, a huge
NAXIS claim in a small file, gzip garbage, a zero-byte file, a text file named .fits, a 3-D
cube with no degenerate axis, a table HDU alone; and two files that are odd but usable, an
image of NaN only and one of zeros only. Each goes in as an upload, as a data-root path and
through ``cianna-otf detect``. A broken file must end in a readable error: a job in ERROR whose
message names the problem and no server folder, or a one-line CLI error with exit status 2 and
no traceback; a usable one in a completed job with an empty catalogue. Never a 5xx.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table

from cianna_otf_server.testing import UWS_NAMESPACES, parse_xml, uws_text

# the corpus is malformed on purpose: astropy's warnings about it are expected
pytestmark = pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")

TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"\n]+", line \d+')


def _card(text: str) -> str:
    return text.ljust(80)[:80]


def _header(cards: list[str], end: bool = True) -> bytes:
    text = "".join(_card(card) for card in cards) + (_card("END") if end else "")
    return text.ljust((len(text) + 2879) // 2880 * 2880).encode("ascii")


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 2880)


def _primary(bitpix: int = -32, axes: tuple[int, ...] = (64, 64), naxis: int | None = None) -> list[str]:
    """Primary header cards; `naxis` replaces the true number of axes (a header that lies)."""
    count = len(axes) if naxis is None else naxis
    cards = ["SIMPLE  =                    T", f"BITPIX  = {bitpix:20d}", f"NAXIS   = {count:20d}"]
    return cards + [f"{'NAXIS' + str(i + 1):8s}= {n:20d}" for i, n in enumerate(axes)]


def _hdul_bytes(hdul: fits.HDUList) -> bytes:
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    """A file of the corpus: its name, and what a message about it must say (None: it is usable)."""

    name: str
    content: bytes
    problem: str | None


def corpus() -> list[Case]:
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1e-4, (64, 64)).astype(">f4").tobytes()
    cube = rng.normal(0.0, 1e-4, (3, 64, 64)).astype(">f4").tobytes()
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.arange(5, dtype="f4"))])
    return [
        Case("truncated_data.fits", _header(_primary()) + image[: len(image) // 2], r"cannot be read|truncated"),
        Case("no_end_card.fits", _header(_primary(), end=False) + _padded(image), r"\bEND\b"),
        Case("naxis_lies.fits", _header(_primary(naxis=3)) + _padded(image), r"NAXIS"),
        Case("bitpix_zero.fits", _header(_primary(bitpix=0)) + _padded(image), r"BITPIX"),
        Case("bitpix_bogus.fits", _header(_primary(bitpix=17)) + _padded(image), r"BITPIX"),
        Case("huge_naxis.fits", _header(_primary(axes=(200_000, 200_000))) + _padded(image),
             r"cannot be read|truncated|too large|pixels"),
        Case("gzip_garbage.fits.gz", b"\x1f\x8b\x08\x00" + bytes(rng.integers(0, 256, 3000, dtype=np.uint8)),
             r"gzip|decompress|not a readable FITS"),
        Case("zero_bytes.fits", b"", r"empty|not a FITS"),
        Case("text_file.fits", b"this is not a FITS image, only some text\n" * 20, r"not a (readable )?FITS"),
        Case("cube_3d.fits", _header(_primary(axes=(64, 64, 3))) + _padded(cube), r"cube|2-D"),
        Case("table_only.fits", _hdul_bytes(fits.HDUList([fits.PrimaryHDU(), table])), r"2-D image|no HDU"),
        Case("nan_only.fits", _hdul_bytes(fits.HDUList([fits.PrimaryHDU(np.full((64, 64), np.nan, "f4"))])), None),
        Case("all_zero.fits", _hdul_bytes(fits.HDUList([fits.PrimaryHDU(np.zeros((64, 64), "f4"))])), None),
    ]


CASES = corpus()
BROKEN = [case for case in CASES if case.problem]
USABLE = [case for case in CASES if not case.problem]
#: Messages that are readable but do not name the problem (astropy's own words are passed on).
VAGUE: dict[str, str] = {}
#: Words a result may use to say that an image holds no signal to search.
SAYS_BLANK = re.compile(r"\bNaN\b|no finite|blank|all zero|constant|no signal|every pixel", re.I)


def _names(cases: list[Case], vague: bool = False) -> list:
    params = []
    for case in cases:
        marks = [pytest.mark.xfail(strict=True, reason=VAGUE[case.name])] if vague and case.name in VAGUE else []
        params.append(pytest.param(case, id=case.name.split(".")[0], marks=marks))
    return params


def test_the_corpus_is_what_it_says() -> None:
    """The gzip garbage is no gzip stream, the huge claim is 40 Gpixel in a small file, the NAXIS lie is 3 axes of 2."""
    by_name = {case.name: case for case in CASES}
    with pytest.raises((OSError, EOFError, zlib.error)):
        gzip.decompress(by_name["gzip_garbage.fits.gz"].content)
    assert len(by_name["huge_naxis.fits"].content) < 30_000
    assert b"NAXIS   =                    3" in by_name["naxis_lies.fits"].content
    assert b"NAXIS3" not in by_name["naxis_lies.fits"].content
    assert by_name["zero_bytes.fits"].content == b""


# -- the service ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fits-corpus")
    for case in CASES:
        (root / case.name).write_bytes(case.content)
    return root


@pytest.fixture(scope="module")
def service(tmp_path_factory, images):
    from cianna_otf_server.server import ServiceConfig
    from cianna_otf_server.testing import ServiceThread

    data_dir = tmp_path_factory.mktemp("fits-service") / "service"
    running = ServiceThread(ServiceConfig(data_dir=data_dir, data_roots=[images], max_wait_seconds=10.0))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def outcomes(service, images) -> dict[tuple[str, str], dict]:
    """Every file through the service, uploaded and by data-root path, run once; what each job ended as."""
    session = service.session()
    jobs: dict[tuple[str, str], str] = {}
    answers: dict[tuple[str, str], dict] = {}
    for case in CASES:
        upload = session.post(f"{service.url}/async", data={"MODEL": "classic", "PHASE": "RUN"},
                              files={"IMAGE": (case.name, case.content, "application/fits")}, allow_redirects=False)
        reference = session.post(f"{service.url}/async", data={"MODEL": "classic", "PHASE": "RUN", "IMAGE": case.name},
                                 allow_redirects=False)
        for route, response in (("upload", upload), ("reference", reference)):
            key = (case.name, route)
            answers[key] = {"created": response}
            if response.status_code == 303:
                jobs[key] = service.url[: len(service.url) - len(service.settings.root_path.rstrip("/"))] + \
                    response.headers["Location"]
    deadline = time.monotonic() + 120
    for key, job_url in jobs.items():
        while True:
            root = parse_xml(session.get(job_url, params={"WAIT": "2"}).content)
            phase = uws_text(root, "phase")
            if phase in ("COMPLETED", "ERROR", "ABORTED") or time.monotonic() > deadline:
                break
        outcome = answers[key]
        outcome.update(job_url=job_url, phase=phase, document=root,
                       responses=[session.get(f"{job_url}/{part}") for part in ("", "error", "results", "parameters")])
        if phase == "ERROR":
            outcome["error"] = session.get(f"{job_url}/error")
        if phase == "COMPLETED":
            outcome["result"] = session.get(f"{job_url}/results/result")
    return answers


def _server_paths(service, images: Path) -> list[str]:
    return [str(service.settings.data_path), str(images), str(images.parent), "/proc/", "/tmp/"]


def _assert_answer(response) -> None:
    """An answer, not a crash: no 5xx, no traceback."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert not TRACEBACK.search(response.text), response.text[:2000]


def _error_message(outcome: dict) -> str:
    body = outcome["error"].text
    match = re.search(r'<INFO[^>]*name="QUERY_STATUS"[^>]*value="ERROR"[^>]*>(.*?)</INFO>', body, re.S)
    assert match, body[:1000]
    return match.group(1).strip()


@pytest.mark.parametrize("route", ["upload", "reference"])
@pytest.mark.parametrize("case", _names(BROKEN))
def test_a_broken_file_ends_in_a_readable_error(outcomes, service, images, case: Case, route: str) -> None:
    outcome = outcomes[(case.name, route)]
    created = outcome["created"]
    _assert_answer(created)
    if created.status_code != 303:  # refused at once: then with its reason, as plain text
        assert created.status_code in (400, 413), created.status_code
        message = created.text
    else:
        assert outcome["phase"] == "ERROR", outcome["phase"]
        for response in outcome["responses"]:
            _assert_answer(response)
        message = _error_message(outcome)
        summary = outcome["document"].find("uws:errorSummary/uws:message", UWS_NAMESPACES)
        assert summary is not None and summary.text.strip(), "no errorSummary message"
    assert message and "\n" not in message.strip(), message
    for path in _server_paths(service, images):
        assert path not in message, (path, message)
    assert not TRACEBACK.search(message), message
    named = "the uploaded IMAGE" if route == "upload" else case.name
    assert named in message, message  # the user can tell which image it is about


@pytest.mark.parametrize("route", ["upload", "reference"])
@pytest.mark.parametrize("case", _names(BROKEN, vague=True))
def test_the_error_names_the_problem(outcomes, case: Case, route: str) -> None:
    outcome = outcomes[(case.name, route)]
    message = outcome["created"].text if outcome["created"].status_code != 303 else _error_message(outcome)
    assert re.search(case.problem, message), message


@pytest.mark.parametrize("route", ["upload", "reference"])
@pytest.mark.parametrize("case", _names(USABLE))
def test_a_usable_odd_file_completes_with_an_empty_catalogue(outcomes, service, images, case: Case,
                                                             route: str) -> None:
    outcome = outcomes[(case.name, route)]
    assert outcome["created"].status_code == 303, outcome["created"].text
    assert outcome["phase"] == "COMPLETED", outcome.get("error") and outcome["error"].text
    for response in outcome["responses"]:
        _assert_answer(response)
    result = outcome["result"]
    assert result.status_code == 200
    table = parse_single_table(io.BytesIO(result.content)).to_table()
    assert len(table) == 0
    assert 'name="QUERY_STATUS" value="OK"' in result.text
    image_info = re.search(r'<INFO[^>]*name="image"[^>]*value="([^"]*)"', result.text)
    assert image_info, "the catalogue does not say which image it was made from"
    assert image_info.group(1) == ("the uploaded IMAGE" if route == "upload" else case.name), image_info.group(1)


@pytest.mark.parametrize("case", _names(USABLE))
def test_a_blank_image_is_said_to_be_blank(outcomes, case: Case) -> None:
    outcome = outcomes[(case.name, "reference")]
    warnings = [element.text or "" for element in outcome["document"].iter("{urn:cianna-otf:jobinfo}warning")]
    assert any(SAYS_BLANK.search(text) for text in warnings), warnings


@pytest.mark.parametrize("case", _names(CASES))
def test_models_match_answers_every_file(service, images, case: Case) -> None:
    """Ranking the models for the file (uploaded, then by path) is a 200 or a 400 with its reason."""
    session = service.session()
    uploaded = session.post(f"{service.url}/models/match", files={"IMAGE": (case.name, case.content)})
    referenced = session.get(f"{service.url}/models", params={"image": case.name})
    for response in (uploaded, referenced):
        _assert_answer(response)
        assert response.status_code in (200, 400), (response.status_code, response.text[:300])
        if response.status_code == 400:
            for path in _server_paths(service, images):
                assert path not in response.text, (path, response.text)


# -- the command line ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_runs(images) -> dict[str, subprocess.CompletedProcess]:
    """``cianna-otf detect FILE --model classic -o out.vot`` on every file, two at a time."""
    env = {k: v for k, v in os.environ.items() if k not in ("CIANNA_OTF_DEBUG",)}

    def run(case: Case) -> subprocess.CompletedProcess:
        out = images / f"{case.name}.vot"
        return subprocess.run([sys.executable, "-m", "cianna_otf_server.cli", "detect", case.name, "--model",
                               "classic", "-o", out.name], cwd=images, capture_output=True, text=True, env=env,
                              timeout=180)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip([case.name for case in CASES], pool.map(run, CASES)))


@pytest.mark.parametrize("case", _names(BROKEN))
def test_the_cli_refuses_a_broken_file_in_one_line(cli_runs, images, case: Case) -> None:
    run = cli_runs[case.name]
    assert not (images / f"{case.name}.vot").exists(), "a catalogue was written for a broken file"
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert not TRACEBACK.search(run.stderr + run.stdout), run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("cianna-otf: error:")]
    assert len(errors) == 1, run.stderr
    assert case.name in errors[0], errors[0]


@pytest.mark.parametrize("case", _names(BROKEN, vague=True))
def test_the_cli_error_names_the_problem(cli_runs, case: Case) -> None:
    errors = [line for line in cli_runs[case.name].stderr.splitlines() if line.startswith("cianna-otf: error:")]
    assert errors and re.search(case.problem, errors[0]), cli_runs[case.name].stderr


@pytest.mark.parametrize("case", _names(USABLE))
def test_the_cli_writes_an_empty_catalogue_for_a_usable_odd_file(cli_runs, images, case: Case) -> None:
    run = cli_runs[case.name]
    assert run.returncode == 0, run.stderr
    assert not TRACEBACK.search(run.stderr), run.stderr
    assert "0 sources" in run.stderr, run.stderr
    assert len(parse_single_table(str(images / f"{case.name}.vot")).to_table()) == 0
