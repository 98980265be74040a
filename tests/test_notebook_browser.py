"""End to end in a real browser: JupyterLab with the extension, the quickstart notebook, a drawn region.

JupyterLab runs as a child process with the server extension, and headless Debian Chromium,
driven by Playwright, opens ``notebooks/quickstart.ipynb``, runs all its cells, and then does
what a user does: draws a rectangle on the Aladin view with the mouse and presses Detect. The
test checks what the user would see: the FITS image rendered (not a blank view), the region
sent back as sky coordinates, the detected sources drawn inside that region only, and the same
number of sources listed in the table. Nothing is fetched from the network (Aladin Lite comes
from the extension's static route).

Screenshots are kept under ``test-artifacts/browser/`` (``$CIANNA_OTF_ARTIFACTS`` to change it).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from browser import chromium_page, chromium_path, jupyter_lab

pytest.importorskip("playwright.sync_api", reason="playwright not installed (make install)")
pytest.importorskip("jupyterlab", reason="jupyterlab not installed (make install)")
pytest.importorskip("PIL", reason="Pillow not installed")
from PIL import Image  # noqa: E402

from cianna_otf_jupyter.static_files import ALADIN_LITE_FILE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"
ARTIFACTS = Path(os.environ.get("CIANNA_OTF_ARTIFACTS", REPO / "test-artifacts")) / "browser"
STATUS_DONE = re.compile(r"(\d+) sources? \(.*job (\w+)\)")
RESULT_RGB = (0xFF, 0x3B, 0x30)  # widget.RESULT_COLOUR
REGION_RGB = (0x2F, 0x80, 0xED)  # widget.REGION_COLOUR


def _colour_mask(image: Image.Image, rgb: tuple[int, int, int], tolerance: int = 60):
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    return (np.abs(pixels - np.array(rgb)).max(axis=-1) <= tolerance)


def _view_texture(view) -> tuple[float, int]:
    """Standard deviation and number of grey levels in the middle half of the view's screenshot."""
    import numpy as np

    shot = Image.open(io.BytesIO(view.screenshot()))
    width, height = shot.size
    middle = np.asarray(shot.convert("L"), dtype=float)[height // 4: 3 * height // 4, width // 4: 3 * width // 4]
    return float(middle.std()), len(np.unique(middle))


def _wait_for_image(view, timeout: float) -> None:
    """Until the view shows an image (noise and sources), not the flat background of an empty sky."""
    deadline = time.monotonic() + timeout
    while True:
        std, levels = _view_texture(view)
        if std > 20 and levels > 64:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the view shows no image (grey-level std {std:.1f}, {levels} levels)")
        time.sleep(0.5)


def _wait_for_kernel_idle(page, timeout: float) -> None:
    """Every cell run and the kernel idle: no "[*]" prompt left, the status bar says Idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prompts = page.locator(".jp-InputArea-prompt").all_inner_texts()
        if prompts and not any("*" in prompt for prompt in prompts) and all(re.search(r"\d", p) for p in prompts
                                                                             if p.strip()):
            if page.locator("text=/Python 3 \\(ipykernel\\) \\| Idle/").count():
                return
        time.sleep(0.5)
    raise TimeoutError(f"the notebook did not finish in {timeout} s; prompts: {prompts}")


def _run_notebook(page, lab, name: str) -> tuple:
    """Open notebook `name` in JupyterLab, Run All Cells as a user would, wait for the view's image.

    Returns the widget's output element and the Aladin view.
    """
    page.goto(lab.lab_url(name))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("text=/Python 3 \\(ipykernel\\) \\| Idle/", timeout=60_000)
    page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
    page.locator(".lm-Menu-item:has-text('Run All Cells')").first.click()
    page.wait_for_selector("[data-cianna-otf-protocol='1']", state="attached", timeout=120_000)
    _wait_for_kernel_idle(page, timeout=180)
    widget = page.locator(".jp-OutputArea-output:has([data-cianna-otf-protocol])")
    widget.scroll_into_view_if_needed()
    view = page.locator(".aladin-widget").first
    _wait_for_image(view, timeout=60)
    return widget, view


def _run_quickstart(page, lab) -> tuple:
    """The quickstart notebook, run as a user runs it (`_run_notebook`)."""
    return _run_notebook(page, lab, QUICKSTART.name)


def _armed(page, shape: str) -> None:
    """Wait until the view's drawing tool is `shape` (the kernel's answer to a menu or Draw)."""
    page.wait_for_selector(f"[data-cianna-otf-armed='{shape}']", state="attached", timeout=15_000)


def _drag(page, box: dict, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A real mouse drag between two points given as fractions of the view's box."""
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=15)
    page.mouse.up()


def _wait_for_result(widget, previous_job: str | None, timeout: float = 120) -> re.Match:
    """The status line of a finished detection other than `previous_job`'s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = widget.inner_text()
        done = STATUS_DONE.search(text)
        if done and done.group(2) != previous_job:
            return done
        assert "Error" not in text, text[-500:]
        time.sleep(0.3)
    raise TimeoutError(f"the detection did not finish: {widget.inner_text()[-500:]}")


def _needs(present: bool, what: str) -> None:
    """Skip without `what`, except where CI requires the browser test (CIANNA_OTF_REQUIRE_BROWSER)."""
    if not present:
        message = f"{what} missing (make install sets it up)"
        if os.environ.get("CIANNA_OTF_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


def test_quickstart_in_jupyterlab_draw_a_region_and_detect(tmp_path):
    _needs(chromium_path() is not None, "Chromium (Debian package chromium)")
    _needs(ALADIN_LITE_FILE.is_file(), "Aladin Lite (python -m cianna_otf_jupyter.fetch_aladin)")
    import numpy as np

    started = time.monotonic()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(QUICKSTART, root / QUICKSTART.name)
    requests_seen: list[tuple[str, str]] = []
    refused: list[tuple[str, int]] = []
    console_errors: list[str] = []

    with jupyter_lab(root, tmp_path / "jupyter") as lab, chromium_page(chromium_path(), tmp_path / "profile") as page:
        page.on("requestfinished", lambda r: requests_seen.append((r.url, "ok")))
        page.on("response", lambda r: refused.append((r.url, r.status)) if "/cianna-otf/" in r.url and r.status >= 400
                else None)
        page.on("requestfailed", lambda r: requests_seen.append((r.url, "failed")))
        page.on("pageerror", lambda error: console_errors.append(str(error)))
        widget, view = _run_quickstart(page, lab)
        text = widget.inner_text()
        assert "COMPLETED" in text and re.search(r"^\d+ sources?$", text, re.M), \
            f"the notebook's own detection did not complete: {text[:1500]}"
        before = STATUS_DONE.search(text)  # the status line may say "Saved ..." by now

        # the FITS image is on screen (_run_quickstart waited for the middle of the view to be an
        # image, not a flat background)
        box = view.bounding_box()
        view.screenshot(path=str(ARTIFACTS / "quickstart-view-image.png"))

        # a real mouse drag after pressing Draw: a rectangle over the middle of the view
        page.get_by_role("button", name="Draw").click()
        _armed(page, "rect")
        x0, y0, x1, y1 = 0.3, 0.25, 0.7, 0.75
        _drag(page, box, (x0, y0), (x1, y1))
        label = page.locator("text=/^Region: POLYGON/")
        label.wait_for(timeout=15_000)
        # the view stays clean: none of Aladin Lite's own status band and toast, Simbad pointer
        # or raw table of selected objects over it (the widget's status line and table say it)
        for clutter in (".aladin-status-bar", ".aladin-simbadPointer-control", ".aladin-measurement-div"):
            shown = [element for element in page.locator(f".aladin-widget {clutter}").all() if element.is_visible()]
            assert not shown, f"{clutter} is shown over the view"
        corners = np.array([float(v) for v in label.inner_text().split()[2:]]).reshape(4, 2)
        ra = (corners[:, 0] + 180) % 360 - 180
        assert np.ptp(ra) > 0 and np.ptp(corners[:, 1]) > 0, corners
        assert np.all(np.abs(corners[:, 1] + 30) < 0.2), "the region lies on the image (Dec -30)"

        page.get_by_role("button", name="Detect").click()
        after = _wait_for_result(widget, before.group(2) if before else None)
        n_sources = int(after.group(1))
        assert n_sources > 0

        # the table lists the same sources
        rows = widget.locator(".cianna-otf-table tbody tr")
        rows.first.wait_for(timeout=15_000)
        assert rows.count() == n_sources

        # the overlay: result circles inside the drawn rectangle, and none outside it
        time.sleep(1.5)
        overlay_png = view.screenshot(path=str(ARTIFACTS / "quickstart-view-overlay.png"))
        shot = Image.open(io.BytesIO(overlay_png))
        scale = shot.size[0] / box["width"]
        red = _colour_mask(shot, RESULT_RGB)
        blue = _colour_mask(shot, REGION_RGB)
        margin = 12 * scale
        inside = np.zeros_like(red)
        left, top = int(x0 * shot.size[0] - margin), int(y0 * shot.size[1] - margin)
        right, bottom = int(x1 * shot.size[0] + margin), int(y1 * shot.size[1] + margin)
        inside[max(top, 0):bottom, max(left, 0):right] = True
        assert red[inside].sum() >= 8 * n_sources, "the detected sources are drawn on the view"
        assert red[~inside].sum() <= 0.02 * red.sum(), "no source drawn outside the region"
        assert blue.sum() > 2 * (x1 - x0) * shot.size[0], "the region's outline is drawn"

        widget.screenshot(path=str(ARTIFACTS / "quickstart-widget.png"))
        header = widget.locator(".widget-html", has_text="source").last.bounding_box()
        listing = widget.locator(".cianna-otf-table").bounding_box()
        page.screenshot(path=str(ARTIFACTS / "quickstart-table.png"), clip={
            "x": min(header["x"], listing["x"]), "y": header["y"],
            "width": max(header["x"] + header["width"], listing["x"] + listing["width"]) - min(header["x"], listing["x"]),
            "height": listing["y"] + listing["height"] - header["y"]})
        page.screenshot(path=str(ARTIFACTS / "quickstart-page.png"), full_page=True)

        # the table sorts on a header click, and a chosen row is highlighted (the view then moves)
        headers = widget.locator(".cianna-otf-table th")
        names = [text.split(" [")[0].strip(" \u25b2\u25bc") for text in headers.all_inner_texts()]
        assert "flux" in names and any("[deg]" in text for text in headers.all_inner_texts())
        column = names.index("flux")
        flux_header = headers.nth(column)
        flux_header.click()  # ascending
        flux_header.click()  # descending
        page.wait_for_function("document.querySelector('.cianna-otf-table th[data-column=flux]')"
                               ".textContent.includes('\u25bc')", timeout=15_000)

        def fluxes() -> list[float]:
            cells = widget.locator(f".cianna-otf-table tbody tr td:nth-child({column + 1})").all_inner_texts()
            return [float(text) for text in cells if text.strip() not in ("", "--")]

        deadline = time.monotonic() + 15
        while fluxes() != sorted(fluxes(), reverse=True) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fluxes() == sorted(fluxes(), reverse=True), "brightest first after two clicks"
        rows.nth(min(1, n_sources - 1)).click()
        widget.locator(".cianna-otf-table tr.cianna-otf-chosen").wait_for(timeout=15_000)

    external = [url for url, _ in requests_seen if not url.startswith((lab.url, "data:", "blob:"))]
    aladin = [(url, outcome) for url, outcome in requests_seen if "/cianna-otf/static/aladin-lite/aladin.js" in url]
    assert aladin and all(outcome == "ok" for _, outcome in aladin), "Aladin Lite came from the extension"
    assert not any("esm.sh" in url for url in external), "nothing from the CDN"
    # nothing asked of the network: not Aladin Lite, not its background sky (the extension's blank
    # HiPS), not its start-up report; and no error in the page
    assert not external, external
    assert any("/cianna-otf/static/blank-sky/properties" in url for url, _ in requests_seen)
    assert not refused, f"the extension refused what the view asked for: {refused}"  # e.g. Norder3/Allsky.png
    assert not console_errors, console_errors
    (ARTIFACTS / "quickstart-run.json").write_text(json.dumps({
        "seconds": round(time.monotonic() - started, 1), "sources": n_sources,
        "region_corners_deg": corners.round(6).tolist(),
        "external_requests": sorted(set(external)), "page_errors": console_errors,
    }, indent=2))


@pytest.mark.slow
def test_circle_drawing_row_centring_and_click_to_identify_in_the_browser(tmp_path):
    """The other ways in: a circle dragged from its centre, a polygon clicked vertex by vertex, a
    table row centring the view on its source, and "Click a source" identifying what lies under
    a click."""
    _needs(chromium_path() is not None, "Chromium (Debian package chromium)")
    _needs(ALADIN_LITE_FILE.is_file(), "Aladin Lite (python -m cianna_otf_jupyter.fetch_aladin)")
    import numpy as np

    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(QUICKSTART, root / QUICKSTART.name)
    with jupyter_lab(root, tmp_path / "jupyter") as lab, chromium_page(chromium_path(), tmp_path / "profile") as page:
        widget, view = _run_quickstart(page, lab)
        box = view.bounding_box()
        previous = STATUS_DONE.search(widget.inner_text())
        region_menu = widget.locator(".widget-dropdown:has-text('Region') select")

        # a rectangle first, to learn the view's scale (degrees of Dec per screen pixel) ...
        page.get_by_role("button", name="Draw").click()
        _armed(page, "rect")
        _drag(page, box, (0.4, 0.3), (0.6, 0.7))
        page.locator("text=/^Region: POLYGON/").wait_for(timeout=15_000)
        corners = np.array([float(v) for v in widget.locator("text=/^Region: POLYGON/").inner_text().split()[2:]])
        dec_per_px = np.ptp(corners.reshape(4, 2)[:, 1]) / (0.4 * box["height"])

        # ... then a circle, dragged from its centre: its radius is the drag's length on the sky
        # (started off the sources: a press on a drawn source opens Aladin Lite's source table)
        region_menu.select_option(label="Circle")
        _armed(page, "circle")
        _drag(page, box, (0.55, 0.6), (0.55 + 150 / box["width"], 0.6))
        label = widget.locator("text=/^Region: CIRCLE/")
        label.wait_for(timeout=15_000)
        ra, dec, radius = (float(v) for v in label.inner_text().split()[2:])
        assert radius == pytest.approx(150 * dec_per_px, rel=0.05), "radius = 150 screen pixels"
        assert abs(dec + 30) < 0.2
        # a polygon: click its vertices, then the first one again (Aladin Lite's "finish" button)
        region_menu.select_option(label="Polygon")
        _armed(page, "polygon")
        vertices = [(0.3, 0.3), (0.45, 0.25), (0.5, 0.45), (0.35, 0.5)]
        for x, y in vertices:
            page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
            time.sleep(0.2)
        page.mouse.click(box["x"] + vertices[0][0] * box["width"], box["y"] + vertices[0][1] * box["height"])
        polygon = widget.locator("text=/^Region: POLYGON/")
        polygon.wait_for(timeout=15_000)
        points = np.array([float(v) for v in polygon.inner_text().split()[2:]]).reshape(-1, 2)
        assert len(points) == len(vertices), points
        assert np.ptp(points[:, 1]) == pytest.approx(0.25 * box["height"] * dec_per_px, rel=0.05)

        # back to the circle for the detection
        region_menu.select_option(label="Circle")
        _armed(page, "circle")
        _drag(page, box, (0.55, 0.6), (0.55 + 150 / box["width"], 0.6))
        widget.locator("text=/^Region: CIRCLE/").wait_for(timeout=15_000)
        page.get_by_role("button", name="Detect").click()
        circle_result = _wait_for_result(widget, previous.group(2) if previous else None)
        assert int(circle_result.group(1)) >= 1, "sources in the circle"

        # choosing a row centres the view on that source
        first_row = widget.locator(".cianna-otf-table tbody tr").first
        ra_row, dec_row = (float(v) for v in first_row.locator("td").all_inner_texts()[1:3])
        first_row.click()
        time.sleep(1.0)  # the kernel moves the view; the click below checks where it went

        # "Click a source" and a click at the view's centre, where that source now is
        region_menu.select_option(label="Click a source")
        page.wait_for_selector("[data-cianna-otf-armed]", state="detached", timeout=15_000)
        box = view.bounding_box()  # the page may have scrolled since
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        clicked = _wait_for_result(widget, circle_result.group(2))
        label = widget.locator("text=/^Region: CIRCLE/")
        ra_click, dec_click, radius_click = (float(v) for v in label.inner_text().split()[2:])
        separation = np.hypot(((ra_click - ra_row + 180) % 360 - 180) * np.cos(np.radians(dec_row)),
                              dec_click - dec_row) * 3600
        assert separation < 3 * dec_per_px * 3600 + 1, f"the click landed {separation:.1f} arcsec from the source"
        assert int(clicked.group(1)) >= 1, "the clicked source is found"
        view.screenshot(path=str(ARTIFACTS / "click-to-identify.png"))


MODEL_CHOICE_NOTEBOOK = """
from cianna_otf_server.sky.simulate import simulate_sky
# a shallow single-dish-like map: 10" pixels, a 30" beam, 1 mJy/beam of noise
hdul, _ = simulate_sky(512, seed=11, pixel_scale=10.0, beam_bmaj=30.0, beam_bmin=30.0, noise=1e-3,
                       flux_min=5e-3, flux_max=0.2)
hdul.writeto("shallow.fits", overwrite=True)
from cianna_otf_jupyter import DetectionWidget
w = DetectionWidget(image="shallow.fits", model="yolo-demo-sdc1")
w
"""


@pytest.mark.slow
def test_the_model_picker_ranks_models_and_warns_in_the_browser(tmp_path):
    """The picker as a user sees it: models ranked for the image with their reasons, and the
    warning banner of a detection with a model whose domain the image lies outside."""
    _needs(chromium_path() is not None, "Chromium (Debian package chromium)")
    _needs(ALADIN_LITE_FILE.is_file(), "Aladin Lite (python -m cianna_otf_jupyter.fetch_aladin)")
    import nbformat

    root = tmp_path / "notebooks"
    root.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(MODEL_CHOICE_NOTEBOOK.strip())])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(notebook, root / "model-choice.ipynb")
    with jupyter_lab(root, tmp_path / "jupyter") as lab, chromium_page(chromium_path(), tmp_path / "profile") as page:
        page.set_viewport_size({"width": 1400, "height": 900})
        widget, _view = _run_notebook(page, lab, "model-choice.ipynb")
        picker = widget.locator(".widget-dropdown:has(label:text-is('Model')) select").first

        def options() -> list[str]:
            return [text.replace("\xa0", " ") for text in picker.locator("option").all_inner_texts()]

        deadline = time.monotonic() + 60
        while "poor fit" not in " ".join(options()):  # ranked for the image
            assert time.monotonic() < deadline, options()
            time.sleep(0.5)
        options = options()
        assert options[0].startswith("yolo-demo \u2014 fits"), options
        assert any(o.startswith("yolo-demo-sdc1 \u2014 poor fit") for o in options), options
        chosen = picker.input_value().replace("\xa0", " ")
        assert chosen.startswith("yolo-demo-sdc1 \u2014"), chosen  # the notebook's choice stays chosen
        page.get_by_role("button", name="Detect").click()
        banner = widget.locator("[role='alert']")
        banner.wait_for(timeout=120_000)
        _wait_for_result(widget, None)
        assert "yolo-demo-sdc1" in banner.inner_text() and "noise" in banner.inner_text(), banner.inner_text()
        widget.scroll_into_view_if_needed()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        widget.screenshot(path=str(ARTIFACTS / "model-picker-warning.png"))
