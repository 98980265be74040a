"""The SAMP bridge with real parts: a SAMP hub, a detection service and viewers, all in-process.

The hub writes its lockfile under tmp_path and HOME points there too, so no test sees (or
disturbs) a hub of the user's. The viewers are plain SAMP clients that record what the bridge
sends them, as TOPCAT (``table.load.votable``) and DS9 (``ds9.set``) would receive it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from cianna_otf_server.samp import SAMP_ERROR, SAMP_OK, SampBridge, SampBridgeError, hub_lockfile, parse_region
from cianna_otf_server.testing import SampViewer, samp_hub, serve_folder

TIMEOUT = 60.0
RADIUS = 0.02  # degrees: the simulated image is 0.042 degrees across, so the circle is a part of it
ROOT = Path(__file__).resolve().parents[1]


def local_path(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return Path(url2pathname(parsed.path))


def read_votable(url: str):
    from astropy.table import Table

    return Table.read(local_path(url), format="votable")


def separations(table, ra: float, dec: float):
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    return SkyCoord(table["ra"], table["dec"]).separation(SkyCoord(ra * u.deg, dec * u.deg)).deg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Hub, service, bridge and two viewers, for the whole module (each takes a second to start)."""
    from cianna_otf_server.client import Client
    from cianna_otf_server.server import ServiceConfig
    from cianna_otf_server.sky.simulate import write_simulation
    from cianna_otf_server.testing import ServiceThread

    tmp = tmp_path_factory.mktemp("samp")
    (tmp / "home").mkdir()
    sky = tmp / "sky.fits"
    write_simulation(sky, 256, seed=3)
    started: list = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp / "home"))  # the hub's search of garbage lockfiles stays in here
        patch.delenv("SAMP_HUB", raising=False)  # this hub's, once it runs
        with samp_hub(tmp) as hub:
            patch.setenv("SAMP_HUB", hub.env_value)
            lockfile = hub.lockfile
            try:
                service = ServiceThread(ServiceConfig(data_dir=tmp / "service", max_wait_seconds=10.0))
                started.append(service.stop)
                client = Client(service.url, token="tok-alice")
                started.append(client.close)
                bridge = SampBridge(client, model="classic", radius=RADIUS, out_dir=tmp / "out")
                bridge.start(lockfile)  # the lockfile named, as --hub-lockfile does
                started.append(bridge.stop)
                viewer = SampViewer("test-viewer", ("table.load.votable",), hub.params, timeout=TIMEOUT)
                started.append(viewer.close)
                ds9 = SampViewer("test-ds9", ("ds9.set",), hub.params, timeout=TIMEOUT)
                started.append(ds9.close)
                yield {"tmp": tmp, "hub": hub, "lockfile": lockfile, "service": service, "bridge": bridge,
                       "viewer": viewer, "ds9": ds9, "sky": sky, "id": bridge.public_id}
            finally:
                for stop in reversed(started):
                    try:
                        stop()
                    except Exception as exc:  # noqa: BLE001 - stop the rest whatever one did
                        print(f"cleanup: {exc}", file=sys.stderr)


@pytest.fixture
def viewers(world):
    world["viewer"].drain()
    world["ds9"].drain()
    return world["viewer"], world["ds9"]


def load_sky(world, viewer) -> tuple[dict, object]:
    """The viewer broadcasts the image; the table the bridge sends back, and its params."""
    viewer.notify_all("image.load.fits", url=world["sky"].as_uri(), **{"image-id": "sky-1"}, name="sky.fits")
    mtype, params = viewer.next()
    assert mtype == "table.load.votable"
    return params, read_votable(params["url"])


# -- (a) an image sent -----------------------------------------------------------------------
def test_image_load_sends_a_table_and_ds9_regions(world, viewers):
    viewer, ds9 = viewers
    params, table = load_sky(world, viewer)
    assert params["url"].startswith("file://")
    assert local_path(params["url"]).parent == world["tmp"] / "out"
    assert params["table-id"].startswith("cianna-otf-")
    assert params["name"] == "cianna-otf classic sky.fits"
    assert len(table) > 0
    assert {"ra", "dec", "flux"} <= set(table.colnames)
    assert str(table["ra"].unit) == "deg" and str(table["dec"].unit) == "deg"
    assert table["flux"].unit is not None and table["flux"].unit.physical_type == "spectral flux density"
    assert ((table["dec"] > -30.03) & (table["dec"] < -29.97)).all()  # on the simulated field

    mtype, command = ds9.next()
    assert mtype == "ds9.set"
    verb, noun, path = command["cmd"].split(" ", 2)
    assert (verb, noun) == ("regions", "load")
    regions = Path(path).read_text().splitlines()
    shapes = [line for line in regions if line.startswith(("ellipse(", "circle(", "box("))]
    assert len(shapes) == len(table)
    assert "icrs" in regions


# -- (b) a position pointed at ---------------------------------------------------------------
def test_point_at_detects_within_the_radius(world, viewers):
    viewer, _ = viewers
    _, whole = load_sky(world, viewer)
    ra, dec = float(whole["ra"][0]), float(whole["dec"][0])
    assert (separations(whole, ra, dec) > RADIUS).any(), "the circle must leave sources out to test anything"

    viewer.notify_all("coord.pointAt.sky", ra=f"{ra:.8f}", dec=f"{dec:.8f}")
    mtype, params = viewer.next()
    part = read_votable(params["url"])
    assert 1 <= len(part) < len(whole)
    assert (separations(part, ra, dec) <= RADIUS + 1e-6).all()
    assert len(part) == (separations(whole, ra, dec) <= RADIUS).sum()


# -- (c) bad requests answered, then a good one ----------------------------------------------
def test_detect_call_errors_are_replied_and_the_bridge_goes_on(world, viewers):
    viewer, _ = viewers
    load_sky(world, viewer)
    bridge = world["id"]

    reply = viewer.call(bridge, "cianna-otf.detect", region="CIRCLE 0.0 -30.0", **{"image-id": "sky-1"})
    assert reply["samp.status"] == SAMP_ERROR
    assert "bad region" in reply["samp.error"]["samp.errortxt"]
    assert "CIRCLE takes 3 numbers" in reply["samp.error"]["samp.errortxt"]

    reply = viewer.call(bridge, "cianna-otf.detect", region="ELLIPSE 0 -30 1 2 3")
    assert reply["samp.status"] == SAMP_ERROR and "bad region" in reply["samp.error"]["samp.errortxt"]

    reply = viewer.call(bridge, "cianna-otf.detect", model="no-such-model", **{"image-id": "sky-1"})
    assert reply["samp.status"] == SAMP_ERROR
    text = reply["samp.error"]["samp.errortxt"]
    assert "unknown model 'no-such-model'" in text and "classic" in text  # the service's list of models

    reply = viewer.call(bridge, "cianna-otf.detect", **{"image-id": "never-sent"})
    assert reply["samp.status"] == SAMP_ERROR and "unknown image-id" in reply["samp.error"]["samp.errortxt"]

    missing = (world["tmp"] / "gone.fits").as_uri()
    reply = viewer.call(bridge, "image.load.fits", url=missing)
    assert reply["samp.status"] == SAMP_ERROR and "does not exist" in reply["samp.error"]["samp.errortxt"]

    text_file = world["tmp"] / "notes.fits"
    text_file.write_text("not a FITS file\n")
    reply = viewer.call(bridge, "image.load.fits", url=text_file.as_uri())
    assert reply["samp.status"] == SAMP_ERROR and "not a FITS file" in reply["samp.error"]["samp.errortxt"]

    reply = viewer.call(bridge, "image.load.fits", url="ftp://example.org/sky.fits")
    assert reply["samp.status"] == SAMP_ERROR and "only file://" in reply["samp.error"]["samp.errortxt"]
    assert viewer.received.empty()  # no table for any of these

    _, whole = load_sky(world, viewer)
    ra, dec = float(whole["ra"][0]), float(whole["dec"][0])
    reply = viewer.call(bridge, "cianna-otf.detect", region=f"CIRCLE {ra} {dec} 0.005", model="classic")
    assert reply["samp.status"] == SAMP_OK, reply
    result = reply["samp.result"]
    assert int(result["sources"]) >= 1
    assert result["model"] == "classic"
    table = read_votable(result["url"])
    assert len(table) == int(result["sources"])
    assert (separations(table, ra, dec) <= 0.005 + 1e-6).all()
    _, sent = viewer.next()  # the same table was broadcast as well
    assert sent["url"] == result["url"] and sent["table-id"] == result["table-id"]


# -- (d) a position off every image -----------------------------------------------------------
def test_point_at_outside_every_image_is_an_error_not_a_crash(world, viewers):
    viewer, _ = viewers
    load_sky(world, viewer)
    bridge = world["id"]
    viewer.notify(bridge, "coord.pointAt.sky", ra="180.0", dec="45.0")  # nobody to reply to: a log line
    reply = viewer.call(bridge, "coord.pointAt.sky", ra="180.0", dec="45.0")
    assert reply["samp.status"] == SAMP_ERROR
    assert "no image sent to cianna-otf covers RA 180.00000, Dec 45.00000" in reply["samp.error"]["samp.errortxt"]
    reply = viewer.call(bridge, "coord.pointAt.sky", ra="east", dec="45")
    assert reply["samp.status"] == SAMP_ERROR and "not a number" in reply["samp.error"]["samp.errortxt"]
    assert viewer.received.empty()
    assert world["bridge"].connected
    # the worker is alive: a position on the image still gets its table
    reply = viewer.call(bridge, "coord.pointAt.sky", ra="0.0", dec="-30.0")
    assert reply["samp.status"] == SAMP_OK, reply
    assert read_votable(reply["samp.result"]["url"]) is not None


def test_an_image_served_by_the_viewer_itself_is_downloaded_and_uploaded(world, viewers):
    """Aladin Desktop sends images from its own web server on 127.0.0.1, which the service may not see."""
    viewer, _ = viewers
    with serve_folder(world["sky"].parent) as root:
        reply = viewer.call(world["id"], "image.load.fits", url=f"{root}/sky.fits", **{"image-id": "served"})
        assert reply["samp.status"] == SAMP_OK, reply
        assert int(reply["samp.result"]["sources"]) > 0
    # remembered with its footprint: a position on it is found without the server
    reply = viewer.call(world["id"], "cianna-otf.detect", **{"image-id": "served"}, region="CIRCLE 0 -30 0.01")
    assert reply["samp.status"] == SAMP_OK, reply


def test_an_unreachable_service_is_replied_to(world, viewers):
    from tornado.testing import bind_unused_port

    from cianna_otf_server.client import Client

    viewer, _ = viewers
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there now
    with Client(f"http://127.0.0.1:{port}", token="x") as client:
        bridge = SampBridge(client, out_dir=world["tmp"] / "out2")
        bridge.start(world["lockfile"])
        try:
            reply = viewer.call(bridge.public_id, "image.load.fits", url=world["sky"].as_uri())
            assert reply["samp.status"] == SAMP_ERROR
            assert reply["samp.error"]["samp.errortxt"].startswith(f"service unreachable: cannot reach the service at "
                                                                   f"http://127.0.0.1:{port}")
            assert bridge.connected
        finally:
            bridge.stop()
    assert not bridge.connected


# -- pieces ------------------------------------------------------------------------------------
def test_parse_region():
    assert parse_region("circle 10 -30 0.1") == ("CIRCLE", [10.0, -30.0, 0.1])
    assert parse_region("POLYGON 1 2 3 4 5 6")[0] == "POLYGON"
    assert parse_region("POS RANGE 1 2 3 4")[0] == "RANGE"
    for bad, words in [("CIRCLE 1 2", "takes 3 numbers"), ("POLYGON 1 2 3 4", "3 or more"),
                       ("CIRCLE 1 95 0.1", "declination"), ("CIRCLE 1 2 -1", "radius"), ("BOX 1 2", "use 'CIRCLE"),
                       ("CIRCLE a b c", "numbers of degrees"), ("", "empty")]:
        with pytest.raises(SampBridgeError, match=words):
            parse_region(bad)


def test_hub_lockfile_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SAMP_HUB", raising=False)
    assert hub_lockfile() == tmp_path / ".samp"
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{(tmp_path / 'a b.lock').as_uri()}")
    assert hub_lockfile() == tmp_path / "a b.lock"
    assert hub_lockfile(tmp_path / "given") == tmp_path / "given"
    monkeypatch.setenv("SAMP_HUB", "web-profile:whatever")
    with pytest.raises(SampBridgeError, match="standard"):
        hub_lockfile()
    monkeypatch.delenv("SAMP_HUB")
    from cianna_otf_server.samp import hub_params

    with pytest.raises(SampBridgeError, match="no SAMP hub is running"):
        hub_params()


# -- (e) the command line ----------------------------------------------------------------------
def test_cli_help(capsys):
    from cianna_otf_server.cli import main

    assert main(["samp", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--url", "--token", "--model", "--radius", "--on-image", "--out-dir", "--hub-lockfile", "-v"):
        assert option in out
    assert "coord.pointAt.sky" in out


def test_cli_without_a_hub_is_one_error_line(world, tmp_path, capsys):
    from cianna_otf_server.cli import main

    code = main(["samp", "--url", world["service"].url, "--token", "tok-alice",
                 "--hub-lockfile", str(tmp_path / "no-hub.lock")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("cianna-otf: error: no SAMP hub is running") and err.count("\n") == 1
    assert main(["samp", "--radius", "-1"]) == 2


def test_cli_runs_until_interrupted(world, viewers, tmp_path):
    """The real command: registers (finding the hub through $SAMP_HUB), prints a line per detection, Ctrl-C."""
    viewer, _ = viewers
    env = dict(os.environ, HOME=str(world["tmp"] / "home"), SAMP_HUB=world["hub"].env_value,
               CIANNA_OTF_URL=world["service"].url, CIANNA_OTF_TOKEN="tok-alice", PYTHONUNBUFFERED="1")
    before = set(viewer.client.get_registered_clients())
    process = subprocess.Popen(
        [sys.executable, "-m", "cianna_otf_server.cli", "samp", "--model", "classic", "--on-image", "remember",
         "--radius", "0.01", "--out-dir", str(tmp_path / "cli-out")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        new: set = set()
        while not new:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the command never registered"
            time.sleep(0.2)
            new = {c for c in viewer.client.get_registered_clients() if c not in before
                   and viewer.client.get_metadata(c).get("samp.name") == "cianna-otf"}
        (cli_id,) = new
        reply = viewer.call(cli_id, "image.load.fits", url=world["sky"].as_uri(), name="sky.fits")
        assert reply["samp.status"] == SAMP_OK and reply["samp.result"]["name"] == "sky.fits"  # remembered only
        reply = viewer.call(cli_id, "coord.pointAt.sky", ra="0.0", dec="-30.0")
        assert reply["samp.status"] == SAMP_OK, reply
        assert local_path(reply["samp.result"]["url"]).parent == tmp_path / "cli-out"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    line = out.strip().splitlines()[-1]
    assert line.startswith("sky.fits: ") and " (job " in line and "-> table sent to " in line, out
    assert f"{reply['samp.result']['sources']} source" in line
    assert "stopped" in err
    assert cli_id not in viewer.client.get_registered_clients()  # unregistered on the way out
