"""The detection widget and desktop viewers over SAMP, with real parts only.

A real SAMP hub runs in-process with its lockfile under tmp_path and HOME pointing there too (as
in test_samp.py), so no test sees or disturbs a hub of the user's; a real detection service
(`standalone`) serves the widget; the "viewer" is a plain SAMP client that subscribes to what
Aladin Desktop and TOPCAT take and records what the widget sends it, and sends images itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

pytest.importorskip("ipyaladin", reason="ipyaladin not installed (pip install ipyaladin==0.8.1)")
pytest.importorskip("anywidget", reason="anywidget not installed")

from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402

from cianna_otf_jupyter._samp_link import NO_HUB, SampLink, SampLinkError  # noqa: E402
from cianna_otf_jupyter.widget import DetectionWidget  # noqa: E402
from cianna_otf_server.client import Client  # noqa: E402
from cianna_otf_server.samp import SAMP_ERROR, SAMP_OK  # noqa: E402
from cianna_otf_server.testing import SampViewer, samp_hub, serve_folder  # noqa: E402

TIMEOUT = 30.0
IMAGE_LOAD, TABLE_LOAD = "image.load.fits", "table.load.votable"


def local_path(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return Path(url2pathname(parsed.path))


def _shown(widget: DetectionWidget) -> list:
    """The HDUs given to the view's ``add_fits``, waiting in its call store for the front end."""
    return [args[1] for func, args, _kwargs in widget.view._call_store.calls
            if getattr(func, "__name__", "") == "add_fits" and args and args[0] is widget.view]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A SAMP hub of our own, found by the widget as a user's would be: through $SAMP_HUB."""
    tmp = tmp_path_factory.mktemp("samp-hub")
    (tmp / "home").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp / "home"))  # the hub's search of stale lockfiles stays in here
        patch.delenv("SAMP_HUB", raising=False)  # this hub's, once it runs
        with samp_hub(tmp) as running:
            patch.setenv("SAMP_HUB", running.env_value)
            yield running


@pytest.fixture
def viewer(hub):
    viewer = SampViewer("test-viewer", (IMAGE_LOAD, TABLE_LOAD), hub.params, timeout=TIMEOUT)
    yield viewer
    viewer.close()


@pytest.fixture
def make_widget(standalone, sky_fits, tmp_path):
    """Widgets as tests/test_detection_widget.py makes them, closed (and unregistered) afterwards."""
    made: list[DetectionWidget] = []
    clients: list[Client] = []

    def make(**kwargs) -> DetectionWidget:
        if "client" not in kwargs:
            clients.append(Client(standalone.url, token="tok-alice"))
            kwargs["client"] = clients[-1]
        kwargs.setdefault("image", sky_fits)
        kwargs.setdefault("save_dir", tmp_path / "notebook")
        kwargs.setdefault("model", "classic")
        made.append(DetectionWidget(**kwargs))
        return made[-1]

    yield make
    for widget in made:
        widget.wait(30)
        widget.close()
        assert widget.samp_link is None
    for client in clients:
        client.close()


def test_the_samp_button_sends_the_image_and_the_catalogue(hub, viewer, make_widget, sky_fits, tmp_path):
    widget = make_widget()
    save_row = widget.children[1].children[-1]
    assert widget.samp_button in save_row.children and widget.save_catalogue_button in save_row.children
    assert "SAMP" in widget.samp_button.tooltip and not widget.samp_button.disabled
    assert widget.samp_link is None, "connected lazily, on the first press"

    # the image alone, before any detection
    widget.samp_button.click()
    assert widget.error is None, widget.status.value
    assert widget.samp_link is not None and widget.samp_link.connected
    assert widget.status.value == "Image sent to 1 viewer (test-viewer)"
    mtype, params = viewer.next()
    assert mtype == IMAGE_LOAD and local_path(params["url"]) == sky_fits and params["name"] == "sky.fits"
    assert viewer.received.empty()

    # after a real detection: the image and the catalogue, on the same link
    link = widget.samp_link
    widget.set_region("CIRCLE 0 -30 0.015")
    widget.detect()
    assert widget.wait(60).error is None, widget.status.value
    sent = widget.send_to_viewers()
    assert widget.samp_link is link and sent is not None
    got = viewer.messages(2)
    with fits.open(local_path(got[IMAGE_LOAD]["url"])) as hdul:
        assert hdul[0].data.shape == (256, 256)
    table_path = local_path(got[TABLE_LOAD]["url"])
    assert table_path.parent == tmp_path / "notebook", "written to the widget's save folder"
    assert table_path.name == f"sky-{widget.job.job_id}-catalogue.vot"
    table = Table.read(table_path, format="votable")
    assert len(table) == len(widget.table) > 0
    assert list(table["ra"]) == pytest.approx(list(widget.table["ra"]))
    assert got[TABLE_LOAD]["table-id"] == f"cianna-otf-{widget.job.job_id}"
    assert widget.status.value == f"Image and {len(widget.table)} sources sent to 1 viewer (test-viewer)"
    assert sent.recipients == [viewer.client.get_public_id()]

    # an image given in memory goes out as a temporary FITS file of the HDU shown
    with fits.open(sky_fits) as hdul:
        data, header = hdul[0].data.copy(), hdul[0].header.copy()
    assert widget.show_image(fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header, name="SKY")]))
    widget.samp_button.click()
    got = viewer.messages(2)
    image_path = local_path(got[IMAGE_LOAD]["url"])
    assert image_path.is_relative_to(link.work_dir)
    with fits.open(image_path) as hdul:
        assert len(hdul) == 1 and hdul[0].data.shape == (256, 256)
    assert len(Table.read(local_path(got[TABLE_LOAD]["url"]), format="votable")) == len(widget.table)

    # a table set by hand (filtered) is written as it is
    widget.table = widget.table[:1]
    widget.samp_button.click()
    got = viewer.messages(2)
    assert len(Table.read(local_path(got[TABLE_LOAD]["url"]), format="votable")) == 1
    assert local_path(got[IMAGE_LOAD]["url"]) == image_path, "the same image in memory: the same file"
    assert widget.status.value.startswith("Image and 1 source sent to 1 viewer")


def test_an_image_a_viewer_sends_opens_in_the_widget(hub, viewer, make_widget, tmp_path):
    from cianna_otf_server.sky.simulate import write_simulation

    widget = make_widget()
    link = widget.connect_samp()
    assert isinstance(link, SampLink) and link.connected, widget.status.value
    notebook = link.public_id
    assert viewer.client.get_metadata(notebook)["samp.name"] == "cianna-otf notebook"
    assert IMAGE_LOAD in viewer.client.get_subscriptions(notebook)
    assert widget.connect_samp() is link, "once"

    other = tmp_path / "other.fits"
    write_simulation(other, 256, seed=1)
    before = len(_shown(widget))
    reply = viewer.call(notebook, IMAGE_LOAD, url=other.as_uri(), name="other.fits")
    assert reply["samp.status"] == SAMP_OK, reply
    assert widget.image_path == other and widget.error is None
    assert widget.status.value == "Image other.fits from test-viewer"
    shown = _shown(widget)
    assert len(shown) == before + 1, "the view got the new image"
    assert (shown[-1].data == fits.getdata(other)).all()

    # a broadcast (a notification: nothing to reply to) reaches the widget too
    broadcast = tmp_path / "broadcast.fits"
    write_simulation(broadcast, 256, seed=2)
    assert notebook in viewer.client.notify_all({"samp.mtype": IMAGE_LOAD, "samp.params": {"url": broadcast.as_uri()}})
    deadline = time.monotonic() + TIMEOUT
    while widget.status.value != "Image broadcast.fits from test-viewer":
        assert time.monotonic() < deadline, widget.status.value
        time.sleep(0.05)
    assert widget.image_path == broadcast and (_shown(widget)[-1].data == fits.getdata(broadcast)).all()

    # Aladin Desktop sends its images from its own web server on 127.0.0.1: downloaded
    served = tmp_path / "served"
    served.mkdir()
    write_simulation(served / "aladin.fits", 256, seed=4)
    with serve_folder(served) as root:
        reply = viewer.call(notebook, IMAGE_LOAD, url=f"{root}/aladin.fits")
    assert reply["samp.status"] == SAMP_OK, reply
    assert widget.image_path.is_relative_to(link.work_dir) and widget.image_path.name == "aladin.fits"
    assert widget.image_path.read_bytes() == (served / "aladin.fits").read_bytes()
    assert widget.status.value == "Image aladin.fits from test-viewer"

    # what cannot be opened is answered with the reason, and said in the status line
    notes = tmp_path / "notes.fits"
    notes.write_text("not a FITS file at all")
    for url, words in [("ftp://example.org/sky.fits", "only file://"),
                       ("http://example.org/sky.fits", "only images on this machine"),
                       ((tmp_path / "gone.fits").as_uri(), "does not exist"),
                       (notes.as_uri(), "not a readable FITS file")]:
        reply = viewer.call(notebook, IMAGE_LOAD, url=url)
        assert reply["samp.status"] == SAMP_ERROR and words in reply["samp.error"]["samp.errortxt"], (url, reply)
        assert widget.status.value.startswith("Error with the image from test-viewer: ")
        assert words in widget.status.value
    assert widget.image_path.name == "aladin.fits", "the image shown stays"

    widget.disconnect_samp()
    assert widget.samp_link is None and widget.status.value == "Disconnected from SAMP"
    assert notebook not in viewer.client.get_registered_clients()
    assert not link.connected


def test_without_a_hub_the_button_says_what_to_start(make_widget, monkeypatch, tmp_path):
    from tornado.testing import bind_unused_port

    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    monkeypatch.delenv("SAMP_HUB", raising=False)
    widget = make_widget()
    widget.samp_button.click()  # no exception: the status line
    assert widget.status.value.startswith(f"Error: {NO_HUB} (no lockfile {tmp_path / 'nohome' / '.samp'})")
    assert isinstance(widget.error, SampLinkError) and widget.samp_link is None
    assert widget.send_to_viewers() is None and widget.connect_samp() is None

    # a lockfile left by a hub that died: the same advice
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there now
    stale = tmp_path / "stale.lock"
    stale.write_text(f"samp.secret=abc\nsamp.hub.xmlrpc.url=http://127.0.0.1:{port}/xmlrpc\n"
                     "samp.profile.version=1.3\n")
    widget.samp_hub = stale
    widget.samp_button.click()
    assert widget.status.value == f"Error: {NO_HUB} (the hub of lockfile {stale} does not answer: it stopped " \
                                  "without removing it)"
    with pytest.raises(SampLinkError, match="no SAMP hub is running: start TOPCAT"):
        SampLink(hub=tmp_path / "none.lock")


def test_a_hub_that_stops_is_reported_and_a_new_one_joined(make_widget, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SAMP_HUB", raising=False)  # a hub started with it set writes that lockfile
    with samp_hub(tmp_path) as first:
        lockfile = first.lockfile
        widget = make_widget(image=None, samp_hub=lockfile)
        widget.samp_button.click()
        assert widget.samp_link.connected and "nothing to send yet" in widget.status.value
    deadline = time.monotonic() + TIMEOUT
    while widget.samp_link.connected:
        assert time.monotonic() < deadline, "the hub's shutdown never arrived"
        time.sleep(0.05)
    assert widget.status.value == "The SAMP hub stopped: press SAMP to connect to a new one"
    widget.samp_button.click()
    assert widget.status.value.startswith(f"Error: {NO_HUB}"), widget.status.value

    with samp_hub(tmp_path) as second:
        assert second.lockfile == lockfile
        try:
            widget.samp_button.click()
            assert widget.error is None and widget.samp_link.connected, widget.status.value
            assert widget.status.value.startswith("Connected to SAMP as ")
        finally:
            widget.disconnect_samp()
