"""Inputs the service must read, refuse or report rightly: scaled integer images, URL schemes in
any case, broken sky coordinates, images too small to search, request bodies that are not forms,
command-line options checked by the job parameters' rules, one region at a time, and error
messages that name no folder of the server."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from cianna_otf_server.cli import main
from cianna_otf_server.errors import ImageError
from cianna_otf_server.jobs._parameters import DetectionParameterPolicy, check_options
from cianna_otf_server.jobs._request import is_image_url
from cianna_otf_server.jobs._url_policy import UrlPolicy
from cianna_otf_server.models import ModelRegistry
from cianna_otf_server.pipeline import detect, open_image
from cianna_otf_server.uws import InvalidRequestError, JobParameter

from uws_helpers import NS, absolute, ImageServer, assert_no_trace, create, image_job, parse, text, wait_for

JOBINFO = "{urn:cianna-otf:jobinfo}warning"


@pytest.fixture(autouse=True)
def _no_user_models(monkeypatch, tmp_path):
    monkeypatch.delenv("CIANNA_OTF_MODELS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-empty"))


def _classic():
    return ModelRegistry().get("classic")


def _simulated(size: int = 128, seed: int = 5) -> tuple[np.ndarray, fits.Header]:
    from cianna_otf_server.sky.simulate import simulate_sky

    hdul, _ = simulate_sky(size, seed=seed)
    return np.asarray(hdul[0].data, dtype=np.float32), hdul[0].header.copy()


def _write_stored(path: Path, raw: np.ndarray, header: fits.Header | None = None, **cards) -> Path:
    """A FITS file whose data segment holds `raw` as stored, with the scaling cards as given.

    Written by hand, so that what is tested is the reading of the numbers a file holds, not
    astropy's writer turning them back and forth.
    """
    bitpix = {np.dtype(np.uint8): 8, np.dtype(np.int16): 16, np.dtype(np.int32): 32, np.dtype(np.int64): 64,
              np.dtype(np.float32): -32, np.dtype(np.float64): -64}[raw.dtype]
    out = fits.Header()
    out["SIMPLE"], out["BITPIX"], out["NAXIS"] = True, bitpix, 2
    out["NAXIS1"], out["NAXIS2"] = raw.shape[1], raw.shape[0]
    for card in (header or fits.Header()).cards:
        if card.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "", "COMMENT", "HISTORY"):
            out[card.keyword] = card.value
    for key, value in cards.items():
        out[key] = value
    body = raw.astype(raw.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(out.tostring().encode("ascii") + body + b"\0" * (-len(body) % 2880))
    return path


def _astropy_scaled(path: Path) -> np.ndarray:
    with fits.open(path, memmap=False) as hdul:
        return np.array(hdul[0].data)


# --- 1. integer images with BSCALE/BZERO/BLANK, and every BITPIX ----------------------------------

RNG = np.random.default_rng(7)
STORED = {
    "uint16 (BZERO=32768)": (RNG.integers(-32768, 32767, (40, 56)).astype(np.int16), {"BZERO": 32768}),
    "scaled int16 with BLANK": (RNG.integers(-32767, 32767, (40, 56)).astype(np.int16),
                                {"BSCALE": 1.234e-5, "BZERO": 0.01, "BLANK": -32768}),
    "int16 with BLANK only": (RNG.integers(-100, 100, (40, 56)).astype(np.int16), {"BLANK": -100}),
    "uint16 with BLANK": (RNG.integers(-32767, 32767, (40, 56)).astype(np.int16), {"BZERO": 32768, "BLANK": -32768}),
    "BITPIX 8": (RNG.integers(0, 255, (40, 56)).astype(np.uint8), {}),
    "BITPIX 8 signed (BZERO=-128)": (RNG.integers(0, 255, (40, 56)).astype(np.uint8), {"BZERO": -128}),
    "BITPIX 8 scaled with BLANK": (RNG.integers(1, 255, (40, 56)).astype(np.uint8),
                                   {"BSCALE": 0.5, "BZERO": 3.0, "BLANK": 255}),
    "BITPIX 32": (RNG.integers(-10**6, 10**6, (40, 56)).astype(np.int32), {}),
    "BITPIX 32 scaled with BLANK": (RNG.integers(-2**31 + 1, 2**31 - 1, (40, 56)).astype(np.int32),
                                    {"BSCALE": 1e-9, "BZERO": 0.5, "BLANK": -2**31}),
    "uint32 (BZERO=2**31)": (RNG.integers(-2**31, 2**31 - 1, (40, 56)).astype(np.int32), {"BZERO": 2**31}),
    "BITPIX 64": (RNG.integers(-2**40, 2**40, (40, 56)).astype(np.int64), {}),
    "BITPIX 64 scaled": (RNG.integers(-2**40, 2**40, (40, 56)).astype(np.int64), {"BSCALE": 1e-12}),
    "uint64 (BZERO=2**63)": (RNG.integers(-2**62, 2**62, (40, 56)).astype(np.int64), {"BZERO": 2**63}),
    "BITPIX -64": (RNG.normal(size=(40, 56)), {}),
    "BITPIX -32 scaled": (RNG.normal(size=(40, 56)).astype(np.float32), {"BSCALE": 2.0, "BZERO": 1.0}),
}


@pytest.mark.parametrize("case", list(STORED))
def test_every_bitpix_reads_as_astropy_scales_it_window_by_window(tmp_path, case):
    raw, cards = STORED[case]
    raw = raw.copy()
    blank = cards.get("BLANK")
    if blank is not None:
        raw.flat[::29] = blank
    path = _write_stored(tmp_path / "image.fits", raw, **cards)
    expected = _astropy_scaled(path).astype(np.float64)
    if blank is not None:
        expected[raw == blank] = np.nan  # astropy leaves BLANK as a number in unsigned images: here it is NaN
    image = open_image(path, estimate=False)
    assert image.is_memory_mapped, case  # scaled pixels too are read from the file as windows are sliced
    assert image.shape == raw.shape
    np.testing.assert_array_equal(image.window(0, 56, 0, 40), expected.astype(np.float32))
    np.testing.assert_array_equal(image.window(7, 30, 3, 21), expected[3:21, 7:30].astype(np.float32))
    strided = np.asarray(image.data[1:39:3, ::4], dtype=np.float64)  # the noise map reads with steps
    np.testing.assert_array_equal(strided, expected[1:39:3, ::4])
    np.testing.assert_array_equal(np.asarray(image.data, dtype=np.float64), expected)
    if blank is not None:
        assert np.isnan(image.window(0, 56, 0, 40)[raw == blank]).all()
    image.close()


def test_a_scaled_int16_image_gives_the_catalogue_of_its_scaled_values(tmp_path):
    data, header = _simulated()
    low, high = float(np.nanmin(data)), float(np.nanmax(data))
    bscale = (high - low) / 60000.0
    bzero = low + 30000.0 * bscale
    raw = np.round((data - bzero) / bscale).astype(np.int16)
    raw[:6, :6] = -32768
    stored = _write_stored(tmp_path / "int16.fits", raw, header, BSCALE=bscale, BZERO=bzero, BLANK=-32768)
    floats = tmp_path / "float32.fits"
    values = _astropy_scaled(stored)
    values[:6, :6] = np.nan
    fits.PrimaryHDU(values.astype(np.float32), header=header).writeto(floats)
    from_integers = detect(str(stored), _classic())
    from_floats = detect(str(floats), _classic())
    assert len(from_integers) == len(from_floats) > 0
    for name in ("x", "y", "peak", "flux", "ra", "dec"):
        np.testing.assert_array_equal(np.asarray(from_integers[name]), np.asarray(from_floats[name]))


# --- 2. URL schemes in any case ---------------------------------------------------------------------

@pytest.mark.parametrize("reference", ["HTTP://archive.example.org/a.fits", "Https://archive.example.org/a.fits",
                                       "hTTpS://archive.example.org/a.fits"])
def test_a_url_is_a_url_whatever_the_case_of_its_scheme(tmp_path, reference):
    assert is_image_url(reference)
    assert not is_image_url("http-archive/a.fits") and not is_image_url("data/http:/a.fits")
    registry = ModelRegistry()
    open_policy = DetectionParameterPolicy(registry, [tmp_path], url_policy=UrlPolicy(enabled=True))
    spec = open_policy.validate([JobParameter("IMAGE", reference)]).spec
    assert spec["image"]["kind"] == "url"
    assert spec["image"]["url"].startswith(("http://", "https://"))  # the scheme is stored in lower case
    closed = DetectionParameterPolicy(registry, [tmp_path], url_policy=UrlPolicy(enabled=False))
    with pytest.raises(InvalidRequestError, match="does not fetch images by URL"):
        closed.validate([JobParameter("IMAGE", reference)])
    listed = DetectionParameterPolicy(registry, [tmp_path], url_policy=UrlPolicy(
        enabled=True, allowed=("https://archive.example.org/",)))
    if reference.lower().startswith("https"):
        listed.validate([JobParameter("IMAGE", reference)])
    else:
        with pytest.raises(InvalidRequestError, match="listed archives"):
            listed.validate([JobParameter("IMAGE", reference)])


def test_an_upper_case_url_is_fetched_by_jobs_and_by_model_matching(standalone, sky_fits):
    images = ImageServer(sky_fits.read_bytes())
    try:
        session = standalone.session("alice")
        reference = images.url.replace("http://", "HTTP://") + "/sky.fits"
        job = create(standalone, session, data={"MODEL": "classic", "IMAGE": reference, "PHASE": "RUN"})
        assert text(wait_for(session, job), "phase") == "COMPLETED"
        match = session.post(f"{standalone.url}/models/match", data={"IMAGE": reference})
        assert match.status_code == 200, match.text
        assert match.json()["models"]
    finally:
        images.close()


# --- 3. a broken celestial WCS ------------------------------------------------------------------------

BROKEN_WCS = {
    "unknown projection": ({"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ"}, "XYZ"),
    "zero CDELT": ({"CDELT1": 0.0}, "CDELT1 is 0"),
    "singular CD matrix": ({"CDELT1": None, "CDELT2": None, "CD1_1": 1e-4, "CD1_2": 1e-4, "CD2_1": 1e-4,
                            "CD2_2": 1e-4}, "singular"),
    "Dec 200": ({"CRVAL2": 200.0}, "CRVAL2 = 200"),
}


def _with_header(tmp_path: Path, name: str, changes: dict) -> Path:
    data, header = _simulated()
    for key, value in changes.items():
        if value is None:
            del header[key]
        else:
            header[key] = value
    path = tmp_path / name
    fits.PrimaryHDU(data, header=header).writeto(path)
    return path


@pytest.mark.parametrize("case", list(BROKEN_WCS))
def test_a_broken_wcs_is_searched_in_pixels_with_empty_sky_columns_and_a_warning(tmp_path, case):
    changes, words = BROKEN_WCS[case]
    path = _with_header(tmp_path, "broken.fits", changes)
    image = open_image(path)
    assert image.wcs is None and words in image.wcs_problem
    assert any("celestial WCS cannot be used" in w and words in w for w in image.warnings)
    table = detect(str(path), _classic())
    assert len(table) > 0
    for name in ("ra", "dec", "pa"):
        assert np.ma.getmaskarray(table[name]).all(), name  # null, never NaN dressed as a position
    assert np.isfinite(np.asarray(table["x"])).all()
    assert any("celestial WCS cannot be used" in w for w in table.meta["warnings"])
    good = detect(str(_with_header(tmp_path, "good.fits", {})), _classic())
    assert not any("WCS" in w for w in good.meta.get("warnings", ()))
    assert np.isfinite(np.asarray(good["ra"], dtype=float)).all()


def test_a_job_on_a_broken_wcs_says_so_in_its_warnings_and_its_votable(standalone, tmp_path):
    from astropy.io.votable import parse

    path = _with_header(tmp_path, "broken.fits", {"CDELT1": 0.0})
    session = standalone.session("alice")
    job = image_job(standalone, path, session)
    root = wait_for(session, job)
    assert text(root, "phase") == "COMPLETED"
    warnings = [w.text for w in root.iter(JOBINFO)]
    assert any("CDELT1 is 0" in w for w in warnings), warnings
    result = session.get(f"{job}/results/result")
    path_out = tmp_path / "result.vot"
    path_out.write_bytes(result.content)
    votable = parse(str(path_out))
    infos = [info.value for info in votable.resources[0].infos if info.name == "warning"] + \
            [info.value for info in votable.infos if info.name == "warning"]
    assert any("CDELT1 is 0" in w for w in infos), infos
    table = votable.get_first_table().to_table()
    assert len(table) > 0 and np.ma.getmaskarray(table["ra"]).all() and np.ma.getmaskarray(table["dec"]).all()


# --- 4. images too small to search ----------------------------------------------------------------------

@pytest.mark.parametrize(("ny", "nx"), [(1, 1), (1, 50), (50, 1), (7, 100)])
def test_an_image_too_small_is_refused_with_its_size(tmp_path, ny, nx):
    path = tmp_path / "small.fits"
    fits.PrimaryHDU(np.ones((ny, nx), np.float32)).writeto(path)
    message = f"the image is {nx} x {ny} pixels; detection needs at least 8 x 8"
    with pytest.raises(ImageError, match=re.escape(message)):
        open_image(path)
    fits.PrimaryHDU(np.ones((1, 1, ny, nx), np.float32)).writeto(tmp_path / "degenerate.fits")
    with pytest.raises(ImageError, match=re.escape(message)):
        open_image(tmp_path / "degenerate.fits")


def test_the_smallest_image_is_searched(tmp_path):
    path = tmp_path / "eight.fits"
    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(path)
    assert open_image(path).shape == (8, 8)


def test_a_thin_image_gets_the_same_message_from_the_cli_and_the_service(standalone, tmp_path, capsys):
    path = tmp_path / "thin.fits"
    fits.PrimaryHDU(np.ones((1, 50), np.float32)).writeto(path)
    session = standalone.session("alice")
    root = wait_for(session, image_job(standalone, path, session))
    assert text(root, "phase") == "ERROR"
    served = root.find("uws:errorSummary/uws:message", NS).text
    assert "the image is 50 x 1 pixels; detection needs at least 8 x 8" in served
    assert main(["detect", str(path), "--model", "classic", "-o", str(tmp_path / "out.vot")]) == 2
    printed = capsys.readouterr().err.strip()
    assert printed == "cianna-otf: error: thin.fits: the image is 50 x 1 pixels; detection needs at least 8 x 8."
    assert served.endswith("the image is 50 x 1 pixels; detection needs at least 8 x 8.")


# --- 5. request bodies that are not forms --------------------------------------------------------------

XML_BODY = b"<?xml version='1.0'?><parameters><parameter id='MODEL'>classic</parameter></parameters>"


def test_a_body_that_is_not_a_form_is_415_and_makes_no_job(standalone):
    session = standalone.session("alice")
    for media in ("application/xml", "text/xml", "application/json", "text/plain; charset=utf-8"):
        response = session.post(f"{standalone.url}/async", data=XML_BODY, headers={"Content-Type": media},
                                allow_redirects=False)
        assert response.status_code == 415, (media, response.status_code, response.text)
        assert "application/x-www-form-urlencoded" in response.text and "multipart/form-data" in response.text
        assert media.split(";")[0] in response.text
        assert "application/x-www-form-urlencoded" in response.headers.get("Accept-Post", "")
        assert_no_trace(response)
    assert b"jobref" not in session.get(f"{standalone.url}/async").content  # no empty job was made
    job = create(standalone, session, data={"MODEL": "classic", "IMAGE": "http://example.org/x.fits"})
    before = session.get(f"{job}/parameters").content
    refused = session.post(f"{job}/parameters", data=b"<THRESHOLD>3</THRESHOLD>",
                           headers={"Content-Type": "application/xml"}, allow_redirects=False)
    assert refused.status_code == 415 and "multipart/form-data" in refused.text
    assert session.get(f"{job}/parameters").content == before
    # forms still work, URL-encoded and multipart
    accepted = session.post(f"{job}/parameters", data={"THRESHOLD": "3"}, allow_redirects=False)
    assert accepted.status_code == 303
    assert b"THRESHOLD" in session.get(f"{job}/parameters").content


# --- 6. the command line checks its options by the job parameters' rules --------------------------------

CLI_VS_HTTP = [
    (["--threshold", "nan"], {"THRESHOLD": "nan"}),
    (["--threshold", "-1"], {"THRESHOLD": "-1"}),
    (["--threshold", "inf"], {"THRESHOLD": "inf"}),
    (["--nms", "2"], {"NMS": "2"}),
    (["--min-size", "-1"], {"MIN_SIZE": "-1"}),
    (["--pixels", "-5 10 1 10"], {"PIXELS": "-5 10 1 10"}),
    (["--pixels", "0 10 1 10"], {"PIXELS": "0 10 1 10"}),
    (["--pixels", "10 5 1 5"], {"PIXELS": "10 5 1 5"}),
    (["--pixels", "1 10.5 1 5"], {"PIXELS": "1 10.5 1 5"}),
    (["--region", "CIRCLE 0 nan 0.1"], {"CIRCLE": "0 nan 0.1"}),
    (["--region", "CIRCLE 0 -30 0.1", "--pixels", "1 10 1 10"], {"CIRCLE": "0 -30 0.1", "PIXELS": "1 10 1 10"}),
    (["--region", "RANGE 0 1 -31 -30", "--pixels", "1 10 1 10"], {"POS": "RANGE 0 1 -31 -30", "PIXELS": "1 10 1 10"}),
    (["--unit", "K"], {"UNIT": "K"}),
]


def test_the_cli_refuses_what_the_service_refuses_in_the_same_words(standalone, sky_fits, tmp_path, capsys):
    session = standalone.session("alice")
    for options, parameters in CLI_VS_HTTP:
        response = session.post(f"{standalone.url}/async", data={"IMAGE": "http://example.org/x.fits", **parameters},
                                allow_redirects=False)
        assert response.status_code == 400, (parameters, response.text)
        code = main(["detect", str(sky_fits), "--model", "classic", "-o", str(tmp_path / "out.vot"), *options])
        printed = capsys.readouterr().err.strip()
        assert code == 2, (options, printed)
        assert printed == f"cianna-otf: error: {response.text.strip()}", (options, printed, response.text)
    assert not (tmp_path / "out.vot").exists()


def test_valid_options_pass_the_shared_check_unchanged():
    checked = check_options([("THRESHOLD", "4.5"), ("NMS", "0.3"), ("MIN_SIZE", "0"), ("PIXELS", "-Inf 100 1 +Inf"),
                             ("UNIT", None)])
    assert checked == {"THRESHOLD": "4.5", "NMS": "0.3", "MIN_SIZE": "0", "PIXELS": "-Inf 100 1 +Inf"}


# --- 7. one region at a time ----------------------------------------------------------------------------

def test_one_region_of_interest_everywhere_and_the_readme_says_so(standalone, sky_fits, tmp_path):
    session = standalone.session("alice")
    for sky in ({"CIRCLE": "0 -30 0.1"}, {"POLYGON": "0 -30 0.1 -30 0 -29.9"}, {"POS": "RANGE 0 1 -31 -30"}):
        response = session.post(f"{standalone.url}/async", data={"IMAGE": "http://example.org/x.fits",
                                                                  "PIXELS": "1 10 1 10", **sky},
                                allow_redirects=False)
        assert response.status_code == 400 and "give one region of interest" in response.text, response.text
    # each alone is fine, and PIXELS takes -Inf/+Inf as the README says
    job = image_job(standalone, sky_fits, session, PIXELS="-Inf 128 1 +Inf")
    assert text(wait_for(session, job), "phase") == "COMPLETED"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    regions = readme[readme.index("### Regions of interest"):readme.index("### How a YOLO-CIANNA model is run")]
    assert "may be combined" not in regions and "Give one region" in regions


# --- 8. errors name no folder of the server -------------------------------------------------------------

BROKEN_CARD = """
[model]
name = "unweighted"
version = "1"
family = "yolo-cianna"
[weights]
file = "unweighted.dat"
[tiling]
patch_size = 64
shift = 48
[yolo]
nb_box = 2
nb_class = 0
nb_param = 0
priors_w = [6, 12]
priors_h = [6, 12]
objectness_thresholds = [0.5, 0.5]
"""


@pytest.fixture
def with_models(service_settings, tmp_path):
    models = tmp_path / "server-models"
    models.mkdir()
    (models / "unweighted.toml").write_text(BROKEN_CARD)
    service_settings.models_dirs = [models]
    return service_settings


def test_errors_name_no_server_folder(with_models, standalone, sky_fits, tmp_path):
    root = tmp_path  # the service's data root (see conftest.service_settings)
    folders = {str(root), str(root.resolve()), str(with_models.data_dir), str(Path(with_models.data_dir).resolve()),
               "/proc/self/fd"}
    survey = root / "surveys"
    survey.mkdir()
    (survey / "notes.fits").write_bytes(b"SIMPLE  =                    T / not really\n" * 80)
    fits.PrimaryHDU(np.ones((1, 40), np.float32)).writeto(survey / "thin.fits")
    vanishing = survey / "vanishing.fits"
    vanishing.write_bytes(sky_fits.read_bytes())
    truncated = tmp_path / "upload.fits"
    truncated.write_bytes(sky_fits.read_bytes()[:5760])
    session = standalone.session("alice")
    jobs = {
        "garbage in a data root": create(standalone, session, data={"MODEL": "classic", "IMAGE": "surveys/notes.fits"}),
        "too small in a data root": create(standalone, session, data={"MODEL": "classic", "IMAGE": "surveys/thin.fits"}),
        "removed from the data root": create(standalone, session, data={"MODEL": "classic",
                                                                        "IMAGE": str(vanishing)}),
        "truncated upload": image_job(standalone, truncated, session, run=False),
        "missing model file": create(standalone, session, data={"MODEL": "unweighted",
                                                                "IMAGE": "surveys/vanishing.fits"}),
    }
    vanishing_copy = survey / "kept.fits"
    os.replace(vanishing, vanishing_copy)  # gone by the time the jobs run
    for job in jobs.values():
        assert session.post(f"{job}/phase", data={"PHASE": "RUN"}, allow_redirects=False).status_code == 303
    messages = {}
    for what, job in jobs.items():
        document = wait_for(session, job)
        assert text(document, "phase") == "ERROR", what
        message = document.find("uws:errorSummary/uws:message", NS).text
        error = session.get(f"{job}/error").text
        messages[what] = message
        for folder in folders:
            assert folder not in message and folder not in error, (what, folder, message)
    assert "surveys/notes.fits: not a readable FITS file" in messages["garbage in a data root"]
    assert "surveys/thin.fits: the image is 40 x 1 pixels" in messages["too small in a data root"]
    assert "vanishing.fits" in messages["removed from the data root"]
    assert "uploaded IMAGE" in messages["truncated upload"]
    assert "unweighted.dat" in messages["missing model file"]
    # a 400 quotes a path under the data root by its place in the root
    refused = session.post(f"{standalone.url}/async",
                           data={"MODEL": "classic", "IMAGE": str(survey / "missing.fits")}, allow_redirects=False)
    assert refused.status_code == 400 and "surveys/missing.fits" in refused.text
    assert not any(folder in refused.text for folder in folders), refused.text


def test_results_name_no_server_folder(standalone, sky_fits, tmp_path):
    """Catalogues of data-root and uploaded images name the image as its user knows it."""
    folders = {str(tmp_path), str(tmp_path.resolve()), "/proc/self/fd"}
    survey = tmp_path / "surveys"
    survey.mkdir()
    (survey / "field.fits").write_bytes(sky_fits.read_bytes())
    session = standalone.session("alice")
    jobs = {"surveys/field.fits": create(standalone, session, data={"MODEL": "classic", "PHASE": "RUN",
                                                                   "IMAGE": "surveys/field.fits"}),
            "IMAGE": image_job(standalone, sky_fits, session)}
    for name, job in jobs.items():
        assert text(wait_for(session, job), "phase") == "COMPLETED"
        document = session.get(f"{job}/results").content
        for result in parse(document).iter(f"{{{NS['uws']}}}result"):
            body = session.get(absolute(standalone, result.get(f"{{{NS['xlink']}}}href"))).text
            for folder in folders:
                assert folder not in body, (name, result.get("id"), folder)
        votable = session.get(f"{job}/results/result").text
        assert name in votable, name


@pytest.mark.parametrize("option", [["--threshold", "nan"], ["--nms", "x"], ["--min-size", "-1"]])
def test_submit_refuses_what_the_service_would_before_sending(option, sky_fits, capsys):
    """`cianna-otf submit` checks its options with the job parameters' rules: nothing is sent."""
    code = main(["submit", str(sky_fits), "--url", "http://127.0.0.1:9", "--token", "t", *option])
    assert code == 2
    err = capsys.readouterr().err
    assert option[0].lstrip("-").replace("-", "_").upper() in err and "Traceback" not in err, err
