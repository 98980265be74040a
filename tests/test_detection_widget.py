"""The detection widget's Python side, against a real standalone server, without a browser.

The front end is stood in for by the messages it would send (the protocol in
``cianna_otf_jupyter.widget``'s module doc), delivered through the view's real message handler.
With no browser the view never loads, so the calls that ipyaladin queues until then
(``add_fits``, ``add_table``) are read from the view's own pending-call store, or run by marking
the view loaded with its ``send`` recording the messages.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipyaladin", reason="ipyaladin not installed (pip install ipyaladin==0.8.1)")
pytest.importorskip("anywidget", reason="anywidget not installed")
pytest.importorskip("ipywidgets", reason="ipywidgets not installed")

from astropy.io import fits  # noqa: E402
from astropy.io.votable import parse_single_table  # noqa: E402
from regions import Regions  # noqa: E402

from cianna_otf_jupyter import widget as widget_module  # noqa: E402
from cianna_otf_jupyter.widget import (  # noqa: E402
    DEFAULT_CLICK_RADIUS_ARCSEC,
    DetectionWidget,
    RegionMessageError,
    IMAGE_LAYER,
    IMAGE_OPTIONS_EVENT,
    default_client,
    plural,
    region_from_message,
    running_jupyter_server,
    stcs_from_soda,
)
from cianna_otf_jupyter._view_image import display_limits  # noqa: E402
from cianna_otf_server.client import Client  # noqa: E402
from cianna_otf_server.models import DEFAULT_MODEL  # noqa: E402

# the simulated sky of conftest.sky_fits: 256 px of 0.6" around (0, -30); a bright source here
BRIGHT = (359.98442468, -29.99506085)


def _deliver(widget: DetectionWidget, message: dict) -> None:
    """A custom message from the front end, through the view's real comm callback path."""
    widget.view._handle_custom_message(widget.view, message, [])


def _queued(widget: DetectionWidget, event_name: str) -> list[dict]:
    """The messages named `event_name` waiting in the view's own call store for the front end."""
    return [arg for _func, args, _kwargs in widget.view._call_store.calls for arg in args
            if isinstance(arg, dict) and arg.get("event_name") == event_name]


def _loaded(widget: DetectionWidget) -> list[tuple[dict, list]]:
    """Mark the view loaded (its queued calls run) and record what it sends from then on."""
    sent: list[tuple[dict, list]] = []
    widget.view.send = lambda message, buffers=None: sent.append((message, buffers))
    widget.view._is_loaded = True
    return sent


@pytest.fixture
def client(standalone) -> Client:
    return Client(standalone.url, token="tok-alice")


@pytest.fixture
def make_widget(client, sky_fits, tmp_path):
    def make(**kwargs) -> DetectionWidget:
        kwargs.setdefault("client", client)
        kwargs.setdefault("image", sky_fits)
        kwargs.setdefault("save_dir", tmp_path / "notebook")
        kwargs.setdefault("model", "classic")  # fast, and what the assertions below expect
        return DetectionWidget(**kwargs)

    return make


# -- regions, no server needed ---------------------------------------------------------------
def test_region_messages_become_soda_text():
    rect = {"event": "region", "shape": "rect",
            "ra_dec": [[0.01, -30.01], [-0.01, -30.01], [-0.01, -29.99], [0.01, -29.99]]}
    assert region_from_message(rect) == "POLYGON 0.01 -30.01 359.99 -30.01 359.99 -29.99 0.01 -29.99"
    two_corners = {"event": "region", "shape": "rect", "ra_dec": [[1, 2], [3, 4]]}
    assert region_from_message(two_corners) == "POLYGON 1 2 3 2 3 4 1 4"
    polygon = {"event": "region", "shape": "polygon", "ra_dec": [[10.5, 20], [10.6, 20.1], [10.4, 20.2]]}
    assert region_from_message(polygon) == "POLYGON 10.5 20 10.6 20.1 10.4 20.2"
    circle = {"event": "region", "shape": "circle", "ra": 0.05, "dec": -30.0, "radius": 0.02}
    assert region_from_message(circle) == "CIRCLE 0.05 -30 0.02"
    nested = {"event": "region", "shape": "circle", "circle": {"ra": 1.123456789, "dec": 2, "radius": 1e-3}}
    assert region_from_message(nested) == "CIRCLE 1.12345679 2 0.001"


@pytest.mark.parametrize("message, reason", [
    ({"shape": "polygon", "ra_dec": [[1, 2], [3, 4]]}, "at least 3"),
    ({"shape": "polygon", "ra_dec": [[1, 2], None, [3, 4]]}, "outside the sky projection"),
    ({"shape": "rect", "ra_dec": [[1, 2], [3, 95], [4, 4]]}, "not a sky position"),
    ({"shape": "circle", "ra": 1, "dec": 2, "radius": -1}, "radius"),
    ({"shape": "circle", "ra": 1, "dec": 2}, "needs ra, dec and radius"),
    ({"shape": "ellipse", "ra_dec": []}, "unknown region shape"),
])
def test_bad_region_messages_are_refused(message, reason):
    with pytest.raises(RegionMessageError, match=reason):
        region_from_message({"event": "region", **message})


# -- finding the service ---------------------------------------------------------------------
def test_default_client_prefers_the_explicit_url(monkeypatch):
    monkeypatch.setenv("CIANNA_OTF_URL", "http://gpu-node:8750")
    monkeypatch.setenv("CIANNA_OTF_TOKEN", "shared")
    client = default_client()
    assert client.url == "http://gpu-node:8750" and client.token == "shared"


def test_default_client_finds_the_jupyter_server_of_the_kernel(monkeypatch):
    monkeypatch.delenv("CIANNA_OTF_URL", raising=False)
    monkeypatch.delenv("CIANNA_OTF_TOKEN", raising=False)
    servers = [
        {"url": "http://localhost:8888/", "token": "other", "pid": 11, "sock": ""},
        {"url": "http://localhost:8889/user/alice/", "token": "mine", "pid": 22, "sock": ""},
    ]
    import jupyter_server.serverapp

    monkeypatch.setattr(jupyter_server.serverapp, "list_running_servers", lambda: iter(servers))
    monkeypatch.setenv("JPY_PARENT_PID", "22")
    assert running_jupyter_server()["token"] == "mine"
    client = default_client()
    assert client.url == "http://localhost:8889/user/alice/cianna-otf"
    assert client.session.headers["Authorization"] == "token mine"

    monkeypatch.setenv("JPY_PARENT_PID", "99")  # ours is not listed, and two others are: no guess
    assert running_jupyter_server() is None
    monkeypatch.delenv("JPY_PARENT_PID")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    servers[:] = servers[:1]
    assert running_jupyter_server() is None, "not in a kernel started by Jupyter"


# -- the widget against the real service -----------------------------------------------------
def test_widget_layout_models_and_image(make_widget, sky_fits):
    widget = make_widget(image=None, model=None)
    assert widget.model_picker.value == DEFAULT_MODEL, "the service's default model is preselected"
    assert {"classic", DEFAULT_MODEL} <= {value for _label, value in widget.model_picker.options}
    assert widget.expert.selected_index is None, "expert settings start folded away"
    assert widget.show_image(sky_fits) and widget.image_path == sky_fits
    # queued until the front end loads; then sent once, as a single-HDU FITS file
    sent: list[tuple[dict, list]] = []
    widget.view.send = lambda message, buffers=None: sent.append((message, buffers))
    widget.view._is_loaded = True
    ((message, (buffer,)),) = sent
    assert message["event_name"] == "add_fits"
    with fits.open(io.BytesIO(buffer)) as hdul:
        assert len(hdul) == 1 and hdul[0].data.shape == (256, 256)
    assert widget.pixel_scale_deg == pytest.approx(0.6 / 3600)
    assert widget.view in widget.children[0].children


def test_the_image_is_shown_with_radio_display_defaults_and_framed(make_widget, sky_fits):
    widget = make_widget()
    sent = _loaded(widget)
    ((message, _buffers),) = sent
    assert message["event_name"] == "add_fits"
    options = message["options"]
    low, high = display_limits(widget._shown_hdu.data)
    assert options == {"name": IMAGE_LAYER, "minCut": low, "maxCut": high, "stretch": "asinh",
                       "colormap": "grayscale"}
    assert widget.display == {k: v for k, v in options.items() if k != "name"}
    # the whole image is on screen: centred, a field of view a little larger than its side
    assert widget.view.target.dec.deg == pytest.approx(-30, abs=0.01)
    assert float(getattr(widget.view.fov, "value", widget.view.fov)) >= 256 * widget.pixel_scale_deg
    assert {widget.stretch, widget.limits, widget.colormap} <= set(widget.children[0].children[1].children)


def test_display_controls_change_what_the_view_gets(make_widget):
    widget = make_widget()
    data = widget._shown_hdu.data
    sent = _loaded(widget)
    # without the front end, the image is sent again with the new settings, in the same layer
    widget.colormap.value = "viridis"
    first, second = [m for m, _b in sent if m["event_name"] == "add_fits"]
    assert second["options"]["name"] == first["options"]["name"] == IMAGE_LAYER
    assert second["options"]["colormap"] == "viridis" and first["options"]["colormap"] == "grayscale"
    # with it, only the settings travel
    _deliver(widget, {"event": "hello", "protocol": 1})
    widget.stretch.value = "linear"
    widget.limits.value = "minmax"
    *_, last = [m for m, _b in sent if m["event_name"] == IMAGE_OPTIONS_EVENT]
    assert last["name"] == IMAGE_LAYER
    assert last["options"] == {"minCut": float(np.nanmin(data)), "maxCut": float(np.nanmax(data)),
                               "stretch": "linear", "colormap": "viridis"}
    assert len([m for m, _b in sent if m["event_name"] == "add_fits"]) == 2
    widget.limits.value = "99.9"
    *_, last = [m for m, _b in sent if m["event_name"] == IMAGE_OPTIONS_EVENT]
    assert last["options"]["maxCut"] == pytest.approx(display_limits(data, "99.9")[1])
    assert last["options"]["maxCut"] < float(np.nanmax(data))


def test_counts_are_singular_or_plural(make_widget):
    from astropy.table import Table

    assert (plural(0, "source"), plural(1, "source"), plural(2, "source")) == ("0 sources", "1 source", "2 sources")
    assert plural(1, "vertex", "vertices") == "1 vertex" and plural(3, "vertex", "vertices") == "3 vertices"
    widget = make_widget()
    widget._show_table(Table({"ra": [0.0], "dec": [-30.0]}))
    assert widget.sources_header.value.startswith("<b>1 source</b>")
    widget._show_table(Table({"ra": [0.0, 0.1], "dec": [-30.0, -30.0]}))
    assert widget.sources_header.value.startswith("<b>2 sources</b>")


def test_long_texts_wrap_with_the_whole_text_in_a_tooltip(make_widget):
    widget = make_widget()
    region = "POLYGON 359.98765432 -30.01234567 0.01234567 -30.01234567 0.01234567 -29.98765432"
    widget.set_region(region)
    assert widget.region_label.value == f"Region: {region}" == widget.region_label.tooltip
    assert "cianna-otf-wrap" in widget.region_label._dom_classes
    widget.status.value = "Saved /a/very/long/path/to/the/notebook/folder/sky-abc123-catalogue.vot"
    assert widget.status.tooltip == widget.status.value and "cianna-otf-wrap" in widget.status._dom_classes
    assert ".cianna-otf-wrap" in widget._style.value


def test_region_message_sets_the_region_and_detect_overlays_sources(make_widget):
    widget = make_widget()
    _deliver(widget, {"event": "region", "shape": "circle", "ra": 0.0, "dec": -30.0, "radius": 0.015})
    assert widget.region == "CIRCLE 0 -30 0.015" and "CIRCLE 0 -30 0.015" in widget.region_label.value

    thread = widget.detect()
    assert thread is not None
    widget.wait(60)
    assert not thread.is_alive() and widget.error is None, widget.status.value
    assert widget.job.parameters["CIRCLE"] == "0 -30 0.015" and widget.job.parameters["MODEL"] == "classic"
    assert len(widget.table) > 0 and {"ra", "dec"} <= set(widget.table.colnames)
    assert isinstance(widget.regions, Regions) and len(widget.regions) == len(widget.table)
    assert widget.phase.value == "COMPLETED" and widget.progress.value == widget.progress.max
    assert f"{plural(len(widget.table), 'source')} (classic, job" in widget.status.value
    (queued,) = _queued(widget, "add_table")
    assert queued["options"]["name"] == f"CIANNA {widget.job.job_id}"
    assert len(widget.sources.options) == len(widget.table)
    assert not widget.save_catalogue_button.disabled

    widget.sources.value = 0  # a row chosen: the view centres on that source
    assert widget.view.target.ra.deg == pytest.approx(float(widget.table["ra"][0]))
    _deliver(widget, {"event_type": "object_clicked",
                      "content": {"ra": float(widget.table["ra"][-1]), "dec": float(widget.table["dec"][-1])}})
    assert widget.sources.value == len(widget.table) - 1

    # the table: columns with units, numbers formatted, sorted by the catalogue's values
    sources = widget.sources
    names = [c["name"] for c in sources.columns]
    assert names[:3] == ["id", "ra", "dec"] and {"name": "ra", "unit": "deg"} in sources.columns
    ra_text = sources.cells[0][names.index("ra")]
    assert float(ra_text) == pytest.approx(float(widget.table["ra"][0]), abs=1e-5) and len(ra_text.split(".")[1]) == 5
    sources.sort_by, sources.descending = "flux", True  # what a click on the header sends
    fluxes = np.ma.filled(np.ma.asarray(widget.table["flux"], dtype=float), np.nan)
    shown = fluxes[sources.order]
    finite = shown[np.isfinite(shown)]
    assert len(finite) and np.all(np.diff(finite) <= 0), "brightest first"
    assert sorted(sources.order) == list(range(len(widget.table)))
    sources.descending = False
    assert np.all(np.diff(fluxes[sources.order][np.isfinite(fluxes[sources.order])]) >= 0)
    sources.value = sources.order[0]  # a row chosen in the sorted table is still that catalogue row
    assert widget.view.target.ra.deg == pytest.approx(float(widget.table["ra"][sources.order[0]]))


def test_the_source_table_puts_empty_cells_last_and_sorts_text():
    from cianna_otf_jupyter._source_table import SourceTable

    table = SourceTable()
    flux = np.array([2.0, np.nan, 5.0, 1.0])
    names = np.array(["b", "d", "a", "c"])
    table.show([("flux", "Jy"), ("name", "")], [[str(f), n] for f, n in zip(flux, names)],
               {"flux": flux, "name": names})
    table.sort_by = "flux"
    assert table.order == [3, 0, 2, 1]
    table.descending = True
    assert table.order == [2, 0, 3, 1], "empty last whichever the direction"
    table.sort_by = "name"
    assert [names[i] for i in table.order] == ["d", "c", "b", "a"]
    table.show([("flux", "Jy")], [["1"], ["2"]], {"flux": np.array([1.0, 2.0])})  # new rows keep the sort key
    assert table.sort_by == "name" and table.order == [0, 1] and table.value is None


def test_click_submits_a_small_circle_job(make_widget):
    widget = make_widget()
    assert widget.click_radius_deg() == pytest.approx(DEFAULT_CLICK_RADIUS_ARCSEC / 3600)
    _deliver(widget, {"event": "click", "ra": BRIGHT[0], "dec": BRIGHT[1]})
    widget.wait(60)
    assert widget.error is None, widget.status.value
    ra, dec, radius = (float(v) for v in widget.job.parameters["CIRCLE"].split())
    assert (ra, dec) == pytest.approx(BRIGHT) and radius == pytest.approx(20 / 3600)
    assert len(widget.table) >= 1 and len(_queued(widget, "add_table")) == 1

    # ipyaladin's own click event identifies too, but only in click mode
    widget.region_mode.value = "rect"
    _deliver(widget, {"event_type": "click", "content": {"ra": 0.0, "dec": -30.0}})
    assert widget.detect() is not None and widget.wait(60).job.parameters["CIRCLE"].startswith(
        f"{BRIGHT[0]:.8f}".rstrip("0")), "the rect-mode click was ignored; the detect reused the region"
    widget.region_mode.value = "click"
    _deliver(widget, {"event_type": "click", "content": {"ra": 0.0, "dec": -30.0, "isDragging": False}})
    widget.wait(60)
    assert widget.job.parameters["CIRCLE"] == f"0 -30 {20 / 3600:.8f}".rstrip("0")


def test_patch_size_sets_the_click_radius(make_widget):
    widget = make_widget()
    widget._cards["classic"] = {**widget._cards["classic"], "tiling": {"patch_size": 64}}
    assert widget.click_radius_deg() == pytest.approx(32 * 0.6 / 3600)


def test_frontend_hello_enables_selection_requests(make_widget):
    widget = make_widget()
    widget.region_mode.value = "circle"
    assert _queued(widget, "cianna_otf_select") == [], "ipyaladin's module alone would throw on it"
    _deliver(widget, {"event": "hello", "protocol": 1})
    widget.region_mode.value = "polygon"
    assert _queued(widget, "cianna_otf_select") == [{"event_name": "cianna_otf_select", "shape": "circle"},
                        {"event_name": "cianna_otf_select", "shape": "polygon"}]


def test_draw_button_rearms_the_drawing_tool(make_widget):
    widget = make_widget()
    _deliver(widget, {"event": "hello", "protocol": 1})
    widget.draw_button.click()
    assert _queued(widget, "cianna_otf_select") == [{"event_name": "cianna_otf_select", "shape": "rect"}] * 2


def test_the_region_of_interest_is_drawn_and_replaced_on_the_view(make_widget):
    assert stcs_from_soda("CIRCLE 0 -30 0.015") == "CIRCLE ICRS 0 -30 0.015"
    assert stcs_from_soda("polygon 1 2 3 4 5 6") == "POLYGON ICRS 1 2 3 4 5 6"
    assert stcs_from_soda("RANGE 0 1 2 3") is None

    widget = make_widget()
    _deliver(widget, {"event": "region", "shape": "circle", "ra": 0.0, "dec": -30.0, "radius": 0.015})
    _deliver(widget, {"event": "region", "shape": "polygon", "ra_dec": [[0.01, -30], [0, -29.99], [359.99, -30]]})
    drawn = _queued(widget, "add_overlay")
    assert [d["regions_infos"][0]["infos"]["stcs"] for d in drawn] == [
        "CIRCLE ICRS 0 -30 0.015", "POLYGON ICRS 0.01 -30 0 -29.99 359.99 -30"]
    assert _queued(widget, "remove_overlay") == [{"event_name": "remove_overlay", "overlay_names": ["Region of interest"]}]
    widget.set_region(None)
    assert len(_queued(widget, "remove_overlay")) == 2 and len(_queued(widget, "add_overlay")) == 2


def test_the_view_is_framed_on_the_image(make_widget):
    widget = make_widget()  # 256 px of 0.6" around (0, -30)
    assert widget.view.fov.deg == pytest.approx(1.15 * 256 * 0.6 / 3600, rel=1e-3)
    assert widget.view.target.separation(widget.view.target.__class__(0, -30, unit="deg")).arcsec < 1


def test_a_new_result_replaces_the_previous_overlay(make_widget):
    widget = make_widget()
    widget.set_region("CIRCLE 0 -30 0.01")
    first = widget.detect() and widget.wait(60).job
    second = widget.detect() and widget.wait(60).job
    assert widget.error is None, widget.status.value
    assert [q["options"]["name"] for q in _queued(widget, "add_table")] == [f"CIANNA {first.job_id}", f"CIANNA {second.job_id}"]
    assert {"event_name": "remove_overlay", "overlay_names": [f"CIANNA {first.job_id}"]} in _queued(widget, "remove_overlay")

    # with the front end present, choosing a row asks it to centre the view on that source
    _deliver(widget, {"event": "hello", "protocol": 1})
    widget.sources.value = len(widget.table) - 1
    assert _queued(widget, "cianna_otf_goto") == [{"event_name": "cianna_otf_goto",
                                                   "ra": float(widget.table["ra"][-1]),
                                                   "dec": float(widget.table["dec"][-1])}]


def test_errors_land_in_the_status_line(make_widget, standalone, sky_fits, tmp_path):
    bad = make_widget(client=Client(standalone.url, token="wrong"))
    assert bad.status.value.startswith("Error listing the models") and bad.model_picker.options == ()
    bad.detect()
    bad.wait(30)
    assert bad.status.value.startswith("Error") and bad.table is None and not bad.detect_button.disabled

    widget = make_widget()
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file at all")
    assert widget.show_image(text) is False
    assert "not a readable FITS file" in widget.status.value and widget.image_path == sky_fits

    _deliver(widget, {"event": "region", "shape": "polygon", "ra_dec": [[1, 2]]})
    assert "at least 3 vertices" in widget.status.value and widget.region is None

    widget.set_region("CIRCLE 180 60 0.01")  # far off the image: the job fails on the server
    widget.detect()
    widget.wait(60)
    assert widget.phase.value == "ERROR" and widget.status.value.startswith("Error: job ")
    assert widget.progress.bar_style == "danger"

    widget.threshold.value = "lots"
    assert widget.detect() is None and "Threshold 'lots' is not a number" in widget.status.value


def test_hdulist_image_is_uploaded_as_one_hdu(make_widget, sky_fits):
    with fits.open(sky_fits) as hdul:
        data, header = hdul[0].data.copy(), hdul[0].header.copy()
    multi = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header, name="SKY")])
    widget = make_widget(image=multi)
    assert widget.image_path is None and widget.pixel_scale_deg == pytest.approx(0.6 / 3600)
    widget.set_region("CIRCLE 0 -30 0.01")
    widget.detect()
    widget.wait(60)
    assert widget.error is None and len(widget.table) > 0, widget.status.value


def test_the_view_gets_the_image_a_job_searches(sky_fits, tmp_path):
    """A radio cube with one channel and one Stokes plane is shown as its 2-D image; a real cube,
    like a job, is refused with the file's name."""
    from cianna_otf_jupyter._view_image import view_image
    from cianna_otf_server.errors import ImageError

    with fits.open(sky_fits) as hdul:
        data, header = hdul[0].data.copy(), hdul[0].header.copy()
    header.update(NAXIS=4, NAXIS3=1, NAXIS4=1, CTYPE3="FREQ", CRVAL3=1.4e9, CDELT3=1e6, CRPIX3=1.0,
                  CTYPE4="STOKES", CRVAL4=1.0, CDELT4=1.0, CRPIX4=1.0)
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(data[None, None], header).writeto(cube)
    shown = view_image(cube)
    assert shown.hdu.data.shape == data.shape and shown.hdu.header["NAXIS"] == 2
    assert shown.hdu.header["CTYPE1"].startswith("RA") and "CTYPE3" not in shown.hdu.header
    assert shown.pixel_scale_deg == pytest.approx(0.6 / 3600) and shown.fov_deg == pytest.approx(1.15 * 256 * 0.6 / 3600)

    header.update(NAXIS3=2)
    real_cube = tmp_path / "real-cube.fits"
    fits.PrimaryHDU(np.stack([data, data])[None], header).writeto(real_cube)
    with pytest.raises(ImageError, match="real-cube.fits"):
        view_image(real_cube)


def test_save_buttons_write_valid_files(make_widget, tmp_path):
    widget = make_widget()
    widget.save_catalogue_button.click()
    assert "nothing to save" in widget.status.value
    widget.set_region("CIRCLE 0 -30 0.015")
    widget.detect()
    widget.wait(60)
    widget.save_catalogue_button.click()
    widget.save_regions_button.click()
    widget.save_provenance_button.click()
    saved = sorted((tmp_path / "notebook").iterdir())
    assert [p.name.split("-")[-1] for p in saved] == ["catalogue.vot", "provenance.json", "regions.reg"]
    assert all(p.name.startswith(f"sky-{widget.job.job_id}-") for p in saved)
    assert len(parse_single_table(str(saved[0])).to_table()) == len(widget.table)
    assert "activity" in json.loads(saved[1].read_text())
    assert len(Regions.read(str(saved[2]), format="ds9")) == len(widget.table)
    assert widget.status.value == f"Saved {saved[1]}"


def test_save_dir_defaults_to_the_notebook_folder(monkeypatch, tmp_path):
    notebook = tmp_path / "work" / "quickstart.ipynb"
    notebook.parent.mkdir()
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))
    assert widget_module.notebook_directory() == notebook.parent
    monkeypatch.setenv("JPY_SESSION_NAME", "relative/api/path.ipynb")
    assert widget_module.notebook_directory() == Path.cwd()


# -- which model fits the image, and the warnings of a catalogue ------------------------------
class TestModelRankingAndWarnings:
    """Against a service with two models of ours that declare their domain (`domain_models`)."""

    @pytest.fixture
    def service_settings(self, tmp_path):
        from cianna_otf_server.server import ServiceConfig
        from domain_models import write_domain_models

        return ServiceConfig(data_dir=tmp_path / "service", reaper_interval_seconds=0.5, max_wait_seconds=30.0,
                               data_roots=[tmp_path], models_dirs=[write_domain_models(tmp_path / "models")])

    @staticmethod
    def simulated(path: Path, **options) -> Path:
        from cianna_otf_server.sky.simulate import simulate_sky

        hdul, _truth = simulate_sky(256, seed=5, **options)
        hdul.writeto(path)
        return path

    def test_the_model_picker_follows_the_ranking_for_the_image(self, make_widget, tmp_path):
        wide = self.simulated(tmp_path / "wide.fits", pixel_scale=10.0, beam_bmaj=30.0, beam_bmin=30.0, noise=1e-3)
        widget = make_widget(image=wide)  # classic chosen: the ranking reorders, it does not choose
        assert widget.wait(60).error is None, widget.status.value
        ranked = [plan["model"] for plan in widget.ranking]
        assert ranked.index("snr-any") < ranked.index("classic") < ranked.index("abs-sdc1")
        assert [value for _label, value in widget.model_picker.options] == ranked
        labels = {value: label for label, value in widget.model_picker.options}
        assert labels["snr-any"] == "snr-any \u2014 fits (reads signal-to-noise, so any unit and noise level)"
        assert labels["classic"].startswith("classic \u2014 fits (a classical finder")
        assert labels["abs-sdc1"].startswith("abs-sdc1 \u2014 poor fit (noise 0.00")
        assert widget.model_picker.value == "classic" and widget.selected_model == "classic"
        assert widget.image_traits["beam_pixels"] == pytest.approx(3.0, rel=1e-3)
        assert "fit 0.60" in widget.model_note.value
        widget.model_picker.value = "abs-sdc1"  # the user's choice: its warnings show under the picker
        assert "&#9888;" in widget.model_note.value and "unreliable" in widget.model_note.value

        sdc1 = self.simulated(tmp_path / "sdc1.fits", pixel_scale=0.6, beam_bmaj=1.5, beam_bmin=1.5, noise=3e-7)
        assert widget.show_image(sdc1)
        widget.wait(60)
        labels = {value: label for label, value in widget.model_picker.options}
        assert labels["abs-sdc1"].startswith("abs-sdc1 \u2014 fits (beam 2.5 px within 2-3.2")
        ranked = [value for _label, value in widget.model_picker.options]
        assert ranked.index("abs-sdc1") < ranked.index("classic") and widget.selected_model == "abs-sdc1"
        assert "&#9888;" not in widget.model_note.value

    def test_the_warnings_of_a_detection_show_in_a_banner(self, make_widget, sky_fits, tmp_path):
        with fits.open(sky_fits) as hdul:
            del hdul[0].header["BUNIT"]
            hdul.writeto(tmp_path / "no-unit.fits")
        widget = make_widget(image=tmp_path / "no-unit.fits")
        widget.set_region("CIRCLE 0 -30 0.015")
        assert widget.warnings_banner.layout.display == "none" and widget.warnings == []
        widget.detect()
        assert widget.wait(60).error is None, widget.status.value
        assert widget.warnings and widget.warnings == widget.job.warnings
        assert any("BUNIT" in warning for warning in widget.warnings), widget.warnings
        votable = widget.job.votable().decode("utf-8")
        assert all(html.escape(w, quote=False) in votable for w in widget.warnings), "the VOTable's INFO warnings"
        assert widget.warnings_banner.layout.display is None, "shown"
        banner = widget.warnings_banner.value
        assert 'role="alert"' in banner and "#fff3cd" in banner
        assert all(html.escape(w) in banner for w in widget.warnings)
        assert widget.warnings_banner in widget.children[0].children[1].children, "in the panel"

        assert widget.show_image(sky_fits)  # a clean image: the next run clears the banner at once
        widget.detect()
        assert widget.warnings == [] and widget.warnings_banner.layout.display == "none"
        assert widget.wait(60).error is None, widget.status.value
        assert widget.job.warnings == [] and widget.warnings_banner.value == ""
