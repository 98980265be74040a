"""Which model fits this image: ``POST /models/match``, ``GET /models?image=``, the client's
``match_models`` and ``cianna-otf models --for``, against a real standalone server and real FITS
files simulated here.

The ranking is made deterministic with two cards of our own beside the built-in ones
(`domain_models`): an absolute-input model trained on SDC1-like images (2.5 px beam, noise 2e-7
to 5e-7 Jy/beam) and a signal-to-noise model (beams of 1.5 to 8 px, any noise). The built-in
models are only compared with them where their place does not depend on their cards
(``classic`` is a classical finder whatever the other cards say).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from cianna_otf_server.client import Client, ClientError
from cianna_otf_server.model_match import HEADER_ONLY_WARNING, match_file, read_header_only
from cianna_otf_server.models import ModelRegistry
from cianna_otf_server.server import ServiceConfig
from cianna_otf_server.sky.simulate import simulate_sky
from domain_models import write_domain_models
from uws_helpers import ImageServer

MAX_UPLOAD = 2_000_000  # bytes: above the 512 px test image (1 MB), below the oversized upload


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """No user models or service settings from the machine running the tests."""
    for name in ("CIANNA_OTF_MODELS", "CIANNA_OTF_URL", "CIANNA_OTF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """Two cards of ours: ``abs-sdc1`` (absolute input, a noise window) and ``snr-any`` (signal-to-noise)."""
    return write_domain_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """An SDC1-like image, a very different one, a FITS header without data, and a non-FITS file."""
    folder = tmp_path_factory.mktemp("images")
    sdc1, _ = simulate_sky(512, seed=3, pixel_scale=0.6, beam_bmaj=1.5, beam_bmin=1.5, noise=3e-7)
    sdc1.writeto(folder / "sdc1.fits")
    other, _ = simulate_sky(256, seed=4, pixel_scale=10.0, beam_bmaj=30.0, beam_bmin=30.0, noise=1e-3)
    other.writeto(folder / "wide.fits")
    (folder / "header.fits").write_bytes(sdc1[0].header.tostring().encode("ascii"))
    (folder / "notes.txt").write_bytes(b"these are not the pixels you are looking for\n" * 100)
    return {"sdc1": folder / "sdc1.fits", "wide": folder / "wide.fits", "header": folder / "header.fits",
            "text": folder / "notes.txt"}


@pytest.fixture
def service_settings(tmp_path, models_dir, images):
    """The test server sees our models and may read the images folder by path."""
    return ServiceConfig(data_dir=tmp_path / "service", reaper_interval_seconds=0.5, max_wait_seconds=30.0,
                         models_dirs=[models_dir], data_roots=[images["sdc1"].parent],
                         max_upload_bytes=MAX_UPLOAD, allow_http_images=True, allow_private_image_hosts=True)


def post_match(standalone, path: Path | None = None, body: bytes | None = None, **data):
    session = standalone.session("alice")
    files = None
    if path is not None or body is not None:
        files = {"IMAGE": (path.name if path else "image.fits", body if body is not None else path.read_bytes())}
    return session.post(f"{standalone.url}/models/match", data=data, files=files)


def ranked(answer: dict) -> dict[str, dict]:
    return {model["model"]: model for model in answer["models"]}


def order(answer: dict) -> list[str]:
    return [model["model"] for model in answer["models"]]


# -- the ranking itself ----------------------------------------------------------------------
def test_sdc1_like_image_fits_both_networks(standalone, images):
    response = post_match(standalone, images["sdc1"])
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    image = answer["image"]
    assert image["beam_pixels"] == pytest.approx(2.5, rel=1e-3)
    assert image["pixel_scale_arcsec"] == pytest.approx(0.6, rel=1e-3)
    assert image["noise_jy_per_beam"] == pytest.approx(3e-7, rel=0.3)
    assert image["size"] == [512, 512] and image["hdu"] == 0 and image["name"] == "sdc1.fits"
    assert image["noise_measured"] and not image["header_only"]
    assert answer["warnings"] == []
    models = ranked(answer)
    assert models["abs-sdc1"]["fit"] == 1.0 and models["snr-any"]["fit"] == 1.0
    assert models["abs-sdc1"]["convention"] == "absolute" and models["snr-any"]["convention"] == "snr"
    assert "within its training range" in models["abs-sdc1"]["reason"]
    assert "signal-to-noise" in models["snr-any"]["reason"]
    assert models["abs-sdc1"]["warnings"] == [] and models["abs-sdc1"]["zoom"] == 1.0
    names = order(answer)
    assert names.index("abs-sdc1") < names.index("classic") and names.index("snr-any") < names.index("classic")
    fits = [model["fit"] for model in answer["models"]]
    assert fits == sorted(fits, reverse=True), "best first"
    assert all(model["status"] == "available" for model in answer["models"])
    assert [m["model"] for m in answer["models"] if m["default"]] == [standalone.settings.default_model]


def test_a_very_different_image_puts_the_absolute_model_last_with_a_warning(standalone, images):
    answer = post_match(standalone, images["wide"]).json()
    models, names = ranked(answer), order(answer)
    assert answer["image"]["beam_pixels"] == pytest.approx(3.0, rel=1e-3)
    assert answer["image"]["noise_jy_per_beam"] == pytest.approx(1e-3, rel=0.3)
    absolute = models["abs-sdc1"]
    assert names.index("abs-sdc1") > names.index("snr-any")
    assert names.index("abs-sdc1") > names.index("classic")
    assert absolute["fit"] < models["classic"]["fit"] < models["snr-any"]["fit"]
    assert absolute["warnings"] and "noise" in absolute["warnings"][0] and "unreliable" in absolute["warnings"][0]
    assert "far from" in absolute["reason"]
    assert models["snr-any"]["warnings"] == []


def test_a_header_alone_is_ranked_without_the_noise_checks(standalone, images):
    body = images["header"].read_bytes()
    assert len(body) % 2880 == 0 and len(body) < 10 * 2880
    answer = post_match(standalone, body=body).json()
    image = answer["image"]
    assert image["header_only"] and not image["noise_measured"] and image["noise_jy_per_beam"] is None
    assert image["size"] == [512, 512] and image["beam_pixels"] == pytest.approx(2.5, rel=1e-3)
    assert HEADER_ONLY_WARNING in answer["warnings"]
    assert "noise checks were skipped" in " ".join(answer["warnings"])
    models = ranked(answer)
    assert models["abs-sdc1"]["fit"] == 1.0, "nothing to hold against it without a noise level"
    assert any("noise check skipped" in note for note in models["abs-sdc1"]["notes"])
    assert not any("noise check skipped" in note for note in models["snr-any"]["notes"])


def test_unit_and_beam_overrides_change_the_plan(standalone, images):
    # mJy/beam: the pixels read a thousand times brighter, the noise 3e-4 Jy/beam, far from abs-sdc1's window
    answer = post_match(standalone, images["sdc1"], UNIT="mJy/beam").json()
    assert answer["image"]["to_jy_per_beam"] == pytest.approx(1e-3)
    assert ranked(answer)["abs-sdc1"]["warnings"]
    # a 6" beam spans 10 pixels: outside both networks' ranges, so both are resampled
    answer = post_match(standalone, images["sdc1"], BEAM="6 6 0").json()
    assert answer["image"]["beam_pixels"] == pytest.approx(10.0, rel=1e-3)
    models = ranked(answer)
    assert models["snr-any"]["zoom"] == pytest.approx(0.35, rel=1e-3) and models["snr-any"]["notes"]
    assert "resampled" in models["snr-any"]["reason"]


def test_xml_answer(standalone, images):
    session = standalone.session("alice")
    response = session.post(f"{standalone.url}/models/match", headers={"Accept": "application/xml"},
                            files={"IMAGE": ("wide.fits", images["wide"].read_bytes())})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/xml")
    root = etree.fromstring(response.content)
    assert root.tag == "match"
    assert float(root.findtext("image/beam_pixels")) == pytest.approx(3.0, rel=1e-3)
    names = [model.get("name") for model in root.iterfind("models/model")]
    assert names.index("abs-sdc1") > names.index("snr-any")
    absolute = root.find("models/model[@name='abs-sdc1']")
    assert float(absolute.findtext("fit")) < 0.5 and absolute.findtext("convention") == "absolute"
    assert "noise" in absolute.find("warnings/warning").text


# -- references and the GET form ---------------------------------------------------------------
def test_reference_by_data_root_path_and_get_models_with_image(standalone, images):
    session = standalone.session("alice")
    by_path = session.post(f"{standalone.url}/models/match", data={"IMAGE": str(images["wide"])}).json()
    assert by_path["image"]["name"] == "wide.fits"
    assert ranked(by_path)["abs-sdc1"]["warnings"]
    relative = session.get(f"{standalone.url}/models/match", params={"image": "wide.fits"}).json()
    assert order(relative) == order(by_path)

    listed = session.get(f"{standalone.url}/models", params={"image": str(images["wide"]), "hdu": "0"})
    assert listed.status_code == 200, listed.text
    answer = listed.json()
    cards = answer["models"]
    assert [card["name"] for card in cards] == order(by_path), "the cards come best fit first"
    by_name = {card["name"]: card for card in cards}
    assert by_name["abs-sdc1"]["fit"] < by_name["snr-any"]["fit"]
    assert by_name["abs-sdc1"]["family"] == "yolo-cianna", "still the full card"
    assert by_name["abs-sdc1"]["warnings"] and "far from" in by_name["abs-sdc1"]["reason"]
    assert by_name["classic"]["reason"].startswith("a classical finder")
    assert answer["image"]["beam_pixels"] == pytest.approx(3.0, rel=1e-3) and answer["warnings"] == []

    xml = session.get(f"{standalone.url}/models", params={"image": "wide.fits"}, headers={"Accept": "application/xml"})
    root = etree.fromstring(xml.content)
    assert [m.get("name") for m in root.iterfind("model")] == order(by_path)
    assert root.find("image") is not None

    plain = session.get(f"{standalone.url}/models").json()
    assert set(plain) == {"models"} and "fit" not in plain["models"][0], "without image: as before"
    assert [c["name"] for c in plain["models"]] == sorted(c["name"] for c in plain["models"])
    # GET /models/match without IMAGE is the card of a model named "match": there is none
    assert session.get(f"{standalone.url}/models/match").status_code == 404


def test_reference_by_url(standalone, images):
    server = ImageServer(images["sdc1"].read_bytes())
    try:
        answer = standalone.session("alice").post(f"{standalone.url}/models/match",
                                                  data={"IMAGE": f"{server.url}/sky.fits"}).json()
    finally:
        server.close()
    assert answer["image"]["name"] == "sky.fits" and answer["image"]["noise_measured"]
    assert ranked(answer)["abs-sdc1"]["fit"] == 1.0


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:File may have been truncated")
@pytest.mark.parametrize("data, upload, status, message", [
    ({}, "text", 400, "not a readable FITS file"),
    ({}, "truncated", 400, "cannot be read"),
    ({"HDU": "5"}, "sdc1", 400, "HDU 5 does not exist"),
    ({"HDU": "NOPE"}, "sdc1", 400, "no HDU named"),
    ({"HDU": "-1"}, "sdc1", 400, "must not be negative"),
    ({"UNIT": "furlongs"}, "sdc1", 400, "UNIT"),
    ({"BUNIT": "K"}, "sdc1", 400, "UNIT"),
    ({"BEAM": "1 2"}, "sdc1", 400, "not 3"),
    ({"BEAM": "1 2 x"}, "sdc1", 400, "BEAM"),
    ({"MODEL": "classic"}, "sdc1", 400, "unknown parameter"),
    ({}, None, 400, "IMAGE is missing"),
    ({"IMAGE": "/etc/passwd"}, None, 400, "not inside a configured data directory"),
    ({"IMAGE": "../sdc1.fits"}, None, 400, ".."),
    ({"IMAGE": "missing.fits"}, None, 400, "does not exist"),
    ({"IMAGE": "ftp://example.org/a.fits"}, None, 400, "http or https"),
    ({"IMAGE": "x.fits"}, "sdc1", 400, "not both"),
    ({}, "oversized", 413, "limit"),
])
def test_bad_requests_are_refused_with_the_reason(standalone, images, data, upload, status, message):
    body = None
    if upload == "truncated":
        body = images["sdc1"].read_bytes()[:2880 * 3 + 100]
    elif upload == "oversized":
        body = b"\0" * (MAX_UPLOAD + 500_000)
    elif upload is not None:
        body = images[upload].read_bytes()
    response = post_match(standalone, body=body, **data)
    assert response.status_code == status, (response.status_code, response.text)
    assert message in response.text
    assert "Traceback" not in response.text
    if upload == "text":
        assert response.text.startswith("image.fits: "), "the reader's message, naming the upload"


def test_authentication_is_required(standalone, images):
    import requests

    response = requests.post(f"{standalone.url}/models/match", files={"IMAGE": ("a.fits", b"SIMPLE")})
    assert response.status_code == 401
    assert requests.get(f"{standalone.url}/models", params={"image": "wide.fits"}).status_code == 401


def test_the_event_loop_stays_free_while_an_image_is_read(standalone, images, monkeypatch):
    """The image is opened in a worker thread: other requests are answered meanwhile."""
    import threading

    import cianna_otf_server.model_match as module

    entered, release = threading.Event(), threading.Event()
    real = module.read_header_only

    def slow(path):
        entered.set()
        release.wait(20)
        return real(path)

    monkeypatch.setattr(module, "read_header_only", slow)
    session = standalone.session("alice")
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        response=session.post(f"{standalone.url}/models/match", data={"IMAGE": "sdc1.fits"})))
    worker.start()
    try:
        assert entered.wait(20)
        other = standalone.session("alice").get(f"{standalone.url}/models", timeout=10)
        assert other.status_code == 200
    finally:
        release.set()
        worker.join(30)
    assert result["response"].status_code == 200


# -- the client ----------------------------------------------------------------------------------
def test_client_match_models(standalone, images):
    client = Client(standalone.url, token="tok-alice")
    uploaded = client.match_models(images["wide"])
    assert isinstance(uploaded, list) and uploaded[-1]["model"] != "snr-any"
    names = [m["model"] for m in uploaded]
    assert names.index("abs-sdc1") > names.index("snr-any")
    # a path that is not a local file goes by reference (the server reads it under its data root)
    assert [m["model"] for m in client.match_models("wide.fits")] == names
    full = client.match(images["header"].read_bytes())
    assert full["image"]["header_only"] and HEADER_ONLY_WARNING in full["warnings"]
    with pytest.raises(ClientError, match="HDU 3 does not exist") as caught:
        client.match_models(images["sdc1"], hdu=3)
    assert caught.value.status == 400
    with pytest.raises(ClientError, match="not 3"):
        client.match_models(images["sdc1"], beam="1 2")


# -- the matching itself, without a server ---------------------------------------------------------
def test_header_only_detection(images, tmp_path):
    assert read_header_only(images["header"]) is not None
    assert read_header_only(images["sdc1"]) is None, "a complete file is read as it is"
    assert read_header_only(images["text"]) is None
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(images["sdc1"].read_bytes()[:2880 * 4])
    assert read_header_only(truncated) is None, "data that is cut short is the reader's to report"
    registry = ModelRegistry([images["sdc1"].parent / "no-models"], use_environment=False)
    result = match_file(images["header"], registry)
    assert result.header_only and result.size == (512, 512) and result.traits.noise is None
    assert "classic" in [plan.model for plan in result.plans]
    assert result.to_dict()["warnings"][-1] == HEADER_ONLY_WARNING


# -- the command line ------------------------------------------------------------------------------
def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("CIANNA_OTF_MODELS", "CIANNA_OTF_DEBUG", "CIANNA_OTF_URL", "CIANNA_OTF_TOKEN")}
    environment["XDG_DATA_HOME"] = str(cwd / "xdg-empty")
    environment["XDG_CONFIG_HOME"] = str(cwd / "xdg-config")
    (cwd / "xdg-config").mkdir(exist_ok=True)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "cianna_otf_server.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=300)


def table_rows(stdout: str) -> list[str]:
    """The model rows of ``models --for`` (after the MODEL header line, warnings left out)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("MODEL "))
    assert lines[start].split()[:5] == ["MODEL", "FIT", "INPUT", "ZOOM", "REASON"]
    return [line for line in lines[start + 1:] if line and not line.startswith(" ")]


def test_cli_models_for_an_image(images, models_dir, tmp_path):
    result = cli("models", "--for", str(images["wide"]), "--models-dir", str(models_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("wide.fits: 256 x 256 px, 10 arcsec/px, beam 3 px")
    assert "noise " in lines[0] and "Jy/beam" in lines[0]
    table = table_rows(result.stdout)
    names = [line.split()[0] for line in table]
    assert names.index("snr-any") < names.index("classic") < names.index("abs-sdc1")
    row = next(line for line in table if line.startswith("abs-sdc1"))
    assert row.split()[1:4] == ["0.10", "absolute", "1"]
    after = lines[lines.index(row) + 1]
    assert after.startswith("    warning: the image noise"), "the model's warnings, indented below it"

    as_json = cli("models", "--for", str(images["sdc1"]), "--models-dir", str(models_dir), "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert set(answer) == {"image", "models", "warnings"} and ranked(answer)["abs-sdc1"]["fit"] == 1.0

    header = cli("models", "--for", str(images["header"]), "--models-dir", str(models_dir), cwd=tmp_path)
    assert header.returncode == 0 and "noise not measured" in header.stdout.splitlines()[0]
    assert "  warning: only the FITS header was given" in header.stdout

    beam = cli("models", "--for", str(images["sdc1"]), "--beam", "6 6 0", "--unit", "Jy/beam", "--hdu", "0",
               "--models-dir", str(models_dir), cwd=tmp_path)
    assert beam.returncode == 0 and "beam 10 px" in beam.stdout


@pytest.mark.parametrize("args, message", [
    (["--for", "missing.fits"], "does not exist"),
    (["--for", "{text}"], "not a readable FITS file"),
    (["--for", "{sdc1}", "--hdu", "4"], "HDU 4 does not exist"),
    (["--for", "{sdc1}", "--unit", "furlongs"], "furlongs"),
    (["--for", "{sdc1}", "--beam", "1 2"], "not 3"),
])
def test_cli_models_for_bad_input_exits_2(images, tmp_path, args, message):
    args = [arg.format(text=images["text"], sdc1=images["sdc1"]) for arg in args]
    result = cli("models", *args, cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cianna-otf: error: ") and message in lines[0], result.stderr


def test_cli_models_for_asks_the_service_with_url(standalone, images, tmp_path):
    result = cli("models", "--for", str(images["wide"]), "--url", standalone.url, "--token", "tok-alice",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in table_rows(result.stdout)]
    assert names.index("snr-any") < names.index("abs-sdc1"), "the service's models, ranked by the service"
    bad = cli("models", "--for", str(images["sdc1"]), "--hdu", "7", "--url", standalone.url, "--token", "tok-alice",
              cwd=tmp_path)
    assert bad.returncode == 2 and "HDU 7 does not exist" in bad.stderr
