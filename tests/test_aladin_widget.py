"""The offline ipyaladin view: its rewritten front-end module, per-view state, and the static route.

The module rewrite is checked as text and, where Node.js is present, by running its loader
against stub modules (the real Aladin Lite needs a browser DOM). The route is checked in a real
Jupyter server (pytest-jupyter), against a stub file, so the fetched 2.6 MB library is only
needed by the test that checks it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess

import pytest
import requests

pytest.importorskip("ipyaladin", reason="ipyaladin not installed (pip install ipyaladin==0.8.1)")
pytest.importorskip("anywidget", reason="anywidget not installed")

import ipyaladin  # noqa: E402

from cianna_otf_jupyter.aladin import BLANK_SKY, LOCAL_ALADIN_LITE_PATH, OfflineAladin, offline_esm  # noqa: E402
from cianna_otf_jupyter.extension import SERVICE_PATH  # noqa: E402
from cianna_otf_jupyter.static_files import (  # noqa: E402
    ALADIN_LITE_FILE,
    ALADIN_LITE_STAMP,
    CDN_IMPORT,
    STATIC_DIR,
    ipyaladin_esm_path,
    pinned_aladin_lite_version,
)

pytest_plugins = ["pytest_jupyter.jupyter_server"]

BASE_URL = "/user/alice/"
ORIGINAL = ipyaladin_esm_path().read_text(encoding="utf-8")
CDN_URL = CDN_IMPORT.search(ORIGINAL)["url"]


# --- the rewritten module --------------------------------------------------------------------


def test_esm_imports_the_local_copy_with_the_cdn_as_fallback():
    esm = OfflineAladin._esm
    assert isinstance(esm, str) and "\n" in esm, "multi-line, or anywidget takes it for a file name"
    assert CDN_IMPORT.search(esm) is None, "the static CDN import is gone"
    assert f"var {CDN_IMPORT.search(ORIGINAL)['name']} = __ciannaOtfTrackViews(await __ciannaOtfImportAladin());" in esm
    assert json.dumps(LOCAL_ALADIN_LITE_PATH) in esm and LOCAL_ALADIN_LITE_PATH == "cianna-otf/static/aladin-lite/aladin.js"
    assert LOCAL_ALADIN_LITE_PATH.startswith(SERVICE_PATH), "the service's path, as extension.py mounts it"
    assert "jupyter-config-data" in esm and "baseUrl" in esm, "the base URL comes from the page"
    assert json.dumps(CDN_URL) in esm, "the CDN stays as the fallback"
    # everything else is ipyaladin's module, unchanged
    match = CDN_IMPORT.search(ORIGINAL)
    assert ORIGINAL[: match.start()] in esm and ORIGINAL[match.end():] in esm
    assert OfflineAladin()._esm == esm, "the instance's synced trait carries the rewritten module"
    assert ipyaladin.Aladin()._esm == ORIGINAL, "ipyaladin's own class is left alone"


def test_rewrite_refuses_a_module_without_the_expected_import():
    with pytest.raises(ValueError, match="found 0"):
        offline_esm("import A from 'https://cdn.example.org/aladin.js';\nexport default {};")
    with pytest.raises(ValueError, match="found 2"):
        offline_esm(ORIGINAL + "\n" + ORIGINAL)


def test_pinned_version_is_what_ipyaladin_imports():
    assert pinned_aladin_lite_version() == CDN_IMPORT.search(ORIGINAL)["version"]
    if ipyaladin.__version__ == "0.8.1":
        assert pinned_aladin_lite_version() == "3.9.2-beta"


NODE_DRIVER = """
const [module, baseUrl] = process.argv.slice(2);
globalThis.location = {href: "file:///"};
globalThis.document = {
  getElementById: (id) => (id === "jupyter-config-data" && baseUrl !== "-")
    ? {textContent: JSON.stringify({baseUrl})} : null,
  body: null,
};
console.warn = () => {};
const widget = (await import(module)).default;
await widget.initialize({model: null});
console.log(JSON.stringify({loaded: globalThis.__loaded, render: typeof widget.render}));
"""
STUB = 'globalThis.__loaded = {which}; export default {{init: Promise.resolve()}};\n'


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js not installed: the loader is checked as text only")
@pytest.mark.parametrize(("local_present", "page_config", "expected"), [
    (True, True, "local"),      # served by the extension: the local copy, no network
    (False, True, "cdn"),       # extension without the fetched file: 404, the CDN
    (True, False, "cdn"),       # not a Jupyter page (VS Code, for instance): the CDN
])
def test_loader_runs_local_first(tmp_path, local_present, page_config, expected):
    """The rewritten module, run by Node: the page's base URL -> the local file, else the CDN.

    The page's base URL is a folder of tmp_path (file: URLs stand in for http), and the CDN URL
    is pointed at a stub file, since the test has no network.
    """
    root = tmp_path / "server"
    local = root / LOCAL_ALADIN_LITE_PATH
    local.parent.mkdir(parents=True)
    if local_present:
        local.write_text(STUB.format(which='"local"'))
    cdn = tmp_path / "cdn.mjs"
    cdn.write_text(STUB.format(which='"cdn"'))
    esm = OfflineAladin._esm.replace(json.dumps(CDN_URL), json.dumps(cdn.as_uri()), 1)
    (tmp_path / "widget.mjs").write_text(esm)
    (tmp_path / "driver.mjs").write_text(NODE_DRIVER)
    result = subprocess.run(
        ["node", str(tmp_path / "driver.mjs"), (tmp_path / "widget.mjs").as_uri(), f"{root}/" if page_config else "-"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {"loaded": expected, "render": "function"}


# --- per-view state --------------------------------------------------------------------------


def test_offline_view_defaults_to_the_blank_sky_and_no_start_up_report():
    view = OfflineAladin()
    assert view._init_options["survey"] == BLANK_SKY and view.survey == BLANK_SKY
    assert view._init_options["log"] is False
    assert OfflineAladin(survey="P/DSS2/color")._init_options["survey"] == "P/DSS2/color", "still a choice"
    # the loader turns the marker into the extension's HiPS, which holds a whole (black) sky
    assert json.dumps(BLANK_SKY) in OfflineAladin._esm and "setImageSurvey" in OfflineAladin._esm
    tiles = sorted((STATIC_DIR / "blank-sky" / "Norder0" / "Dir0").glob("Npix*.png"))
    assert len(tiles) == 12 and (STATIC_DIR / "blank-sky" / "Moc.fits").is_file()


def test_listeners_belong_to_one_view():
    first, second = OfflineAladin(), OfflineAladin()
    heard: list[tuple[str, dict]] = []
    first.set_listener("click", lambda content: heard.append(("first", content)))
    second.set_listener("click", lambda content: heard.append(("second", content)))
    second.set_listener("objectClicked", lambda content: heard.append(("second-object", content)))

    first._handle_custom_message(None, {"event_type": "click", "content": {"ra": 1.0, "dec": 2.0}}, [])
    first._handle_custom_message(None, {"event_type": "object_clicked", "content": {"ra": 5.0}}, [])
    second._handle_custom_message(None, {"event_type": "click", "content": {"ra": 3.0, "dec": 4.0}}, [])
    second._handle_custom_message(None, {"event_type": "object_clicked", "content": {"ra": 5.0}}, [])

    assert heard == [("first", {"ra": 1.0, "dec": 2.0}), ("second", {"ra": 3.0, "dec": 4.0}),
                     ("second-object", {"ra": 5.0})]
    assert set(first.listener_callback) == {"click"}
    assert ipyaladin.Aladin.listener_callback == {}, "nothing lands on ipyaladin's shared class dict"
    with pytest.raises(ValueError):
        first.set_listener("no-such-event", print)


def test_pending_calls_belong_to_one_view_and_run_once():
    first, second = OfflineAladin(), OfflineAladin()
    sent: list[tuple[str, dict]] = []
    for name, widget in (("first", first), ("second", second)):
        widget.send = lambda message, buffers=None, name=name: sent.append((name, message))

    first.set_color_map("viridis")  # queued: no front end has loaded yet
    first.set_color_map("grayscale")
    assert sent == [] and len(first._call_store.calls) == 2 and second._call_store.calls == []

    second._is_loaded = True  # another view loading must not replay this view's calls
    assert sent == []
    first._is_loaded = True
    assert [(name, message["colormap"]) for name, message in sent] == [("first", "viridis"), ("first", "grayscale")]
    first._is_loaded = False
    first._is_loaded = True  # a view loading again does not replay what already ran
    assert len(sent) == 2 and first._call_store.calls == []
    assert ipyaladin.Aladin._call_store.calls == [], "nothing lands on ipyaladin's shared store"


# --- the fetched file and the static route ----------------------------------------------------


def test_fetched_aladin_lite_is_the_pinned_es_module():
    if not ALADIN_LITE_FILE.is_file():
        pytest.skip(f"{ALADIN_LITE_FILE} absent: run `python -m cianna_otf_jupyter.fetch_aladin`")
    assert ALADIN_LITE_STAMP.read_text().strip() == pinned_aladin_lite_version()
    text = ALADIN_LITE_FILE.read_text(encoding="utf-8")
    assert f'"{pinned_aladin_lite_version()}"' in text, "the library names its own version"
    assert text.rstrip().endswith("as default};"), "an ES module with a default export"
    assert re.search(r"""(?:\bfrom|\bimport)\s*\(?\s*["'`]""", text) is None and "import.meta" not in text, \
        "self-contained: it imports nothing else, so one file served works offline"
    assert (ALADIN_LITE_FILE.parent / "COPYING").is_file(), "LGPL text shipped beside the library"


@pytest.fixture
def jp_server_config(tmp_path):
    return {"ServerApp": {"jpserver_extensions": {"cianna_otf_jupyter": True}},
            "CiannaOTF": {"data_dir": str(tmp_path / "otf"), "device": "cpu"}}


@pytest.fixture
def jp_base_url():
    return BASE_URL


async def test_static_route_serves_the_library_without_authentication(jp_serverapp, http_server, jp_http_port):
    """The extension serves the fetched library beside the service, without authentication."""
    if not ALADIN_LITE_FILE.is_file():
        pytest.skip("Aladin Lite has not been fetched (python -m cianna_otf_jupyter.fetch_aladin)")
    root = f"http://127.0.0.1:{jp_http_port}{BASE_URL}"

    def browser():
        library = requests.get(f"{root}{LOCAL_ALADIN_LITE_PATH}?v=3.9.2-beta")  # no token, no cookie
        assert library.status_code == 200, library.status_code
        assert library.headers["Content-Type"].split(";")[0] in ("application/javascript", "text/javascript")
        assert library.content == ALADIN_LITE_FILE.read_bytes()
        assert requests.get(f"{root}cianna-otf/static/aladin-lite/missing.js").status_code == 404
        properties = requests.get(f"{root}cianna-otf/static/blank-sky/properties")
        assert properties.status_code == 200 and "hips_order = 0" in properties.text
        tile = requests.get(f"{root}cianna-otf/static/blank-sky/Norder0/Dir0/Npix11.png")
        assert tile.status_code == 200 and tile.content.startswith(b"\x89PNG")
        assert requests.get(f"{root}cianna-otf/static/../../etc/passwd").status_code in (403, 404)
        assert requests.get(f"{root}cianna-otf/static/%2E%2E/%2E%2E/etc/passwd").status_code in (403, 404)
        service = requests.get(f"{root}cianna-otf/models")
        assert service.status_code == 403, "the service's own routes still need authentication"

    await asyncio.to_thread(browser)
