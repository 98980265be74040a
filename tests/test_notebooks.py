"""The notebooks of ``notebooks/``, run top to bottom by a real kernel against a real service.

Each notebook is executed with nbclient in a fresh IPython kernel, in a temporary folder, with
its ``parameters`` cell overridden for speed (papermill's convention: an ``injected-parameters``
cell after it). The kernel finds the service as a user's would: ``CIANNA_OTF_URL`` and
``CIANNA_OTF_TOKEN`` in its environment for the standalone server (the ``standalone``
fixture), or, inside a real Jupyter server with the extension, by discovering that server.

No browser runs here, so the front end of the detection view is stood in for by the messages
it sends (the protocol in ``cianna_otf_jupyter.widget``), delivered through the widget's comm
message handler right after the cell that shows the view. A last injected cell prints the
notebook's results as JSON for the assertions, which also read the files the notebook wrote.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipyaladin", reason="the detection view needs ipyaladin")

from cianna_otf_jupyter.widget import DEFAULT_CLICK_RADIUS_ARCSEC  # noqa: E402
from cianna_otf_server.models import DEFAULT_MODEL  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BINDER = ROOT / "binder"
NOTEBOOK_NAMES = ("quickstart.ipynb", "pyvo_client.ipynb", "survey_batch.ipynb")
RESULT_MARK = "NOTEBOOK-RESULT "
CELL_TIMEOUT = 120  # seconds for one cell; the notebooks take a few seconds in all
BEAM_ARCSEC = 1.5  # the simulated skies' restoring beam

QUICKSTART_FAST = {"IMAGE_SIZE": 768, "SEED": 1, "MODEL": "classic"}
PYVO_FAST = {"IMAGE_SIZE": 256, "SEED": 2, "MODEL": "yolo-demo"}
SURVEY_FAST = {"MOSAIC_SIZE": 1024, "GRID": 2, "OVERLAP": 64, "SEED": 3, "MODEL": "yolo-demo"}


# -- running notebooks -----------------------------------------------------------------------
def load(name: str):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def tagged(nb, tag: str) -> int:
    """The index of the one cell carrying `tag`."""
    found = [i for i, cell in enumerate(nb.cells) if tag in cell.metadata.get("tags", [])]
    assert len(found) == 1, f"expected one cell tagged {tag!r}, found {len(found)}"
    return found[0]


def parameter_names(nb) -> set[str]:
    """Names assigned in the ``parameters`` cell (which must hold nothing but assignments)."""
    tree = ast.parse(nb.cells[tagged(nb, "parameters")].source)
    assert all(isinstance(node, (ast.Assign, ast.AnnAssign)) for node in tree.body), "parameters cell: assignments only"
    targets = [t for node in tree.body for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    return {target.id for target in targets if isinstance(target, ast.Name)}


def override_parameters(nb, **values) -> None:
    """Papermill-style: an ``injected-parameters`` cell after the ``parameters`` cell."""
    unknown = set(values) - parameter_names(nb)
    assert not unknown, f"not parameters of this notebook: {sorted(unknown)}"
    inject(nb, tagged(nb, "parameters") + 1, "\n".join(f"{name} = {value!r}" for name, value in values.items()),
           tag="injected-parameters")


def inject(nb, index: int, source: str, tag: str = "injected") -> None:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = [tag]
    nb.cells.insert(index, cell)


def report_cell(nb, values: dict[str, str]) -> None:
    """A last cell printing `values` (name: Python expression in the notebook) as a JSON object."""
    expression = "{" + ", ".join(f"{name!r}: {value}" for name, value in values.items()) + "}"
    inject(nb, len(nb.cells), f"import json as _json\nprint({RESULT_MARK!r} + _json.dumps({expression}, default=str))",
           tag="injected-report")


def kernel_environment(home: Path, **extra: str) -> dict[str, str]:
    """The kernel's environment: ours, minus anything that would point it at another service."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("CIANNA_OTF_URL", "CIANNA_OTF_TOKEN", "JPY_SESSION_NAME", "JUPYTERHUB_API_TOKEN",
                          "MPLBACKEND")}
    (home / "config").mkdir(parents=True, exist_ok=True)
    env.update(XDG_CONFIG_HOME=str(home / "config"),  # no client.toml of the user's
               PYDEVD_DISABLE_FILE_VALIDATION="1", **extra)
    return env


def execute(nb, workdir: Path, env: dict[str, str]) -> dict:
    """Run `nb` in `workdir`; fail on any error or stderr output; return the report cell's dict."""
    workdir.mkdir(parents=True, exist_ok=True)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)
    complaints = [(cell.metadata.get("tags"), output.get("text", output.get("evalue")))
                  for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
                  if output.output_type == "error" or output.get("name") == "stderr"]
    assert not complaints, f"the notebook wrote errors or warnings: {complaints}"
    text = "".join(output.get("text", "") for output in nb.cells[-1].outputs if output.output_type == "stream")
    (line,) = [line for line in text.splitlines() if line.startswith(RESULT_MARK)]
    return json.loads(line[len(RESULT_MARK):])


def cell_text(nb, key: str, by: str = "tag") -> str:
    """All stdout of the cell tagged `key` (or with the id `key`)."""
    if by == "tag":
        cell = nb.cells[tagged(nb, key)]
    else:
        (cell,) = [cell for cell in nb.cells if cell.get("id") == key]
    return "".join(output.get("text", "") for output in cell.outputs if output.get("name") == "stdout")


def standalone_env(standalone, tmp_path: Path) -> dict[str, str]:
    return kernel_environment(tmp_path / "home", CIANNA_OTF_URL=standalone.url, CIANNA_OTF_TOKEN="tok-alice")


def read_votable(path: Path):
    from astropy.io.votable import parse_single_table

    return parse_single_table(str(path)).to_table(use_names_over_ids=True)


# -- the notebooks as committed ----------------------------------------------------------------
@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_is_committed_clean(name):
    """Valid nbformat 4, no outputs or execution counts, the python3 kernel, a parameters cell."""
    nb = load(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"stray notebook metadata: {set(nb.metadata)}"
    for cell in nb.cells:
        assert set(cell.metadata) <= {"tags"}, f"stray cell metadata in {cell.id}: {dict(cell.metadata)}"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.id} has outputs"
    assert parameter_names(nb), "the parameters cell sets nothing"
    text = "\n".join(cell.source for cell in nb.cells)
    for word in ("TODO", "FIXME", "XXX"):
        assert word not in text


# -- quickstart ------------------------------------------------------------------------------
QUICKSTART_REPORT = {
    "region": "w.region", "parameters": "w.job.parameters", "phase": "w.job.phase", "rows": "len(w.table)",
    "regions": "len(w.regions)", "error": "repr(w.error)", "status": "w.status.value", "service": "w.client.url",
    "searched": "searched", "n_true": "len(true_in_region)", "above": 'report["above"]', "overall": 'report["overall"]',
    "catalogue": "str(catalogue_path.resolve())", "regions_file": "str(regions_path.resolve())",
    "provenance_file": "str(provenance_path.resolve())",
    "image_sha_matches": 'image_entity["otf:sha256"] == local_sha256',
}


# the view is displayed with the image, the service found, the models listed, and no error shown
VIEW_SHOWN_CLEANLY = """
assert w.error is None and not w.status.value.startswith("Error"), w.status.value
from cianna_otf_server.models import DEFAULT_MODEL
assert w.client is not None and w.model_picker.value == (MODEL or DEFAULT_MODEL) and w.image_path == image_path
"""


def check_quickstart(result: dict, nb, model: str = "classic") -> None:
    assert result["error"] == "None" and result["phase"] == "COMPLETED", result["status"]
    assert result["rows"] > 0 and result["regions"] == result["rows"]
    assert result["parameters"]["MODEL"] == model
    assert result["image_sha_matches"], "provenance names another image than the one uploaded"
    catalogue = read_votable(Path(result["catalogue"]))
    assert len(catalogue) == result["rows"] and {"ra", "dec", "flux"} <= set(catalogue.colnames)
    shapes = Path(result["regions_file"]).read_text()
    assert shapes.count("ellipse(") + shapes.count("box(") == result["rows"]
    assert "activity" in json.loads(Path(result["provenance_file"]).read_text())
    rows = result["rows"]
    assert (f"{rows} sources" if rows != 1 else "1 source ") in cell_text(nb, "detect")


def test_quickstart_runs_top_to_bottom_without_interaction(standalone, tmp_path):
    """Nothing drawn: the notebook searches a circle at the image centre and scores it against the truth.

    With the notebook's own model choice (the service's default, the trained ``yolo-demo``), as a
    user who only presses Run All gets it.
    """
    nb = load("quickstart.ipynb")
    override_parameters(nb, IMAGE_SIZE=QUICKSTART_FAST["IMAGE_SIZE"], SEED=QUICKSTART_FAST["SEED"])
    inject(nb, tagged(nb, "widget") + 1, VIEW_SHOWN_CLEANLY)
    report_cell(nb, QUICKSTART_REPORT)
    result = execute(nb, tmp_path / "work", standalone_env(standalone, tmp_path))
    check_quickstart(result, nb, model=DEFAULT_MODEL)
    shape, ra, dec, radius = result["region"].split()
    assert shape == "CIRCLE" and float(ra) == pytest.approx(0.0, abs=1e-6) and float(dec) == pytest.approx(-30.0)
    assert float(radius) == pytest.approx(0.4 * 768 * 0.6 / 3600, rel=1e-4)
    assert result["parameters"]["CIRCLE"] == f"{ra} {dec} {radius}"
    assert result["searched"].startswith("CIRCLE ")
    # the default network on the simulated sky: nearly complete above 5 sigma, and clean
    assert result["n_true"] > 50
    assert result["above"]["recall"] > 0.85 and result["overall"]["precision"] > 0.9, result
    assert {"quickstart-sky.fits", "quickstart-truth.vot"} <= {p.name for p in (tmp_path / "work").iterdir()}


# What the front end sends, computed from the image WCS in the kernel as the browser's
# pix2world would: a rectangle's four corners, a polygon's vertices, a circle, a click.
FRONTEND_SETUP = """
from astropy.io import fits as _fits
from astropy.wcs import WCS as _WCS

_header = _fits.getheader(image_path)
_wcs = _WCS(_header).celestial
_n = _header["NAXIS1"]


def _sky(x, y):
    c = _wcs.pixel_to_world(x, y)
    return [float(c.ra.deg), float(c.dec.deg)]


def _send(message):  # the path a browser's custom comm message takes into the view
    w.view._handle_msg({"content": {"data": {"method": "custom", "content": message}}, "buffers": []})


_send({"event": "hello", "protocol": 1})
"""

FRONTEND_MESSAGES = {
    "rect": """{"event": "region", "shape": "rect",
                "ra_dec": [_sky(0.2 * _n, 0.2 * _n), _sky(0.8 * _n, 0.2 * _n),
                           _sky(0.8 * _n, 0.8 * _n), _sky(0.2 * _n, 0.8 * _n)]}""",
    "polygon": """{"event": "region", "shape": "polygon",
                   "ra_dec": [_sky(0.1 * _n, 0.1 * _n), _sky(0.9 * _n, 0.2 * _n),
                              _sky(0.6 * _n, 0.9 * _n), _sky(0.15 * _n, 0.7 * _n)]}""",
    "circle": """{"event": "region", "shape": "circle",
                  **dict(zip(("ra", "dec"), _sky((_n - 1) / 2, (_n - 1) / 2))), "radius": 0.3 * _n * 0.6 / 3600}""",
    # a click on the brightest simulated source: the view identifies it at once (no Detect press)
    "click": """{"event": "click", "ra": float(truth["ra"][truth["flux"].argmax()]),
                 "dec": float(truth["dec"][truth["flux"].argmax()])}""",
}


@pytest.mark.parametrize("shape", list(FRONTEND_MESSAGES))
def test_quickstart_with_the_front_end_messages(standalone, tmp_path, shape):
    """The view's messages (hello, then a drawn region or a click) drive the rest of the notebook."""
    nb = load("quickstart.ipynb")
    override_parameters(nb, **QUICKSTART_FAST)
    deliver = f"_message = {FRONTEND_MESSAGES[shape]}\n_send(_message)\nassert w.error is None, w.status.value\n"
    inject(nb, tagged(nb, "widget") + 1, VIEW_SHOWN_CLEANLY + FRONTEND_SETUP + deliver)
    report_cell(nb, {**QUICKSTART_REPORT, "message": "_message"})
    result = execute(nb, tmp_path / "work", standalone_env(standalone, tmp_path))
    check_quickstart(result, nb)
    message, region = result["message"], result["region"]
    kind, _, numbers = region.partition(" ")
    values = [float(v) for v in numbers.split()]
    if shape in ("rect", "polygon"):
        assert kind == "POLYGON" and len(values) == 8
        sent = [v for ra, dec in message["ra_dec"] for v in ((ra + 180) % 360 - 180, dec)]
        got = [v for ra, dec in zip(values[::2], values[1::2]) for v in ((ra + 180) % 360 - 180, dec)]
        assert got == pytest.approx(sent, abs=1e-8), "the region is not the shape drawn"
    else:
        assert kind == "CIRCLE"
        radius = message["radius"] if shape == "circle" else DEFAULT_CLICK_RADIUS_ARCSEC / 3600  # classic: no patch
        assert values[0] == pytest.approx(message["ra"] % 360, abs=1e-8)
        assert values[1:] == pytest.approx([message["dec"], radius], abs=1e-8)
    assert result["parameters"][kind] == numbers, "the job searched another region than the one drawn"
    assert result["searched"].split()[0] == kind
    if shape == "click":
        table = read_votable(Path(result["catalogue"]))
        from astropy.coordinates import SkyCoord

        nearest = SkyCoord(message["ra"], message["dec"], unit="deg").separation(
            SkyCoord(table["ra"], table["dec"], unit="deg")).min()
        assert nearest.arcsec < BEAM_ARCSEC, "the clicked source was not identified"
        assert result["above"]["recall"] == 1.0 and result["rows"] < 5
    else:
        assert result["n_true"] > 20 and result["above"]["recall"] > 0.85 and result["overall"]["precision"] > 0.9


# -- pyvo ------------------------------------------------------------------------------------
PYVO_REPORT = {
    "about": "about", "phases": "phases", "rows": "len(table)", "saved": "str(votable_path.resolve())",
    "aborted_phase": "aborted_phase", "deleted_status": "deleted_status", "failed_phase": "failed_phase",
    "failure_message": "failure_message", "job_url": "job.url", "root": "root",
}


def check_pyvo(result: dict, nb) -> None:
    phases = result["phases"]
    assert phases[0] == "PENDING" and phases[-1] == "COMPLETED", phases
    order = ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
    assert [order.index(p) for p in phases] == sorted({order.index(p) for p in phases}), phases
    assert result["rows"] > 0 and len(read_votable(Path(result["saved"]))) == result["rows"]
    assert result["aborted_phase"] == "ABORTED" and result["deleted_status"] == 404
    assert result["failed_phase"] == "ERROR" and "does not overlap the image" in result["failure_message"]
    assert result["job_url"].startswith(result["root"] + "/async/")
    shown = cell_text(nb, "run", by="id")
    assert shown.startswith("PENDING (0 ms) -> ") and " -> COMPLETED (" in shown, shown


def test_pyvo_notebook_against_the_standalone_server(standalone, tmp_path):
    nb = load("pyvo_client.ipynb")
    override_parameters(nb, **PYVO_FAST)
    report_cell(nb, PYVO_REPORT)
    result = execute(nb, tmp_path / "work", standalone_env(standalone, tmp_path))
    check_pyvo(result, nb)
    assert result["about"]["user"] == "alice" and result["root"] == standalone.url
    # the jobs the notebook left are alice's, as the service sees them
    listed = standalone.session("alice").get(f"{standalone.url}/async").text
    assert result["job_url"].rsplit("/", 1)[-1] in listed


# -- survey ----------------------------------------------------------------------------------
SURVEY_REPORT = {
    "fields": "len(fields)", "stacked": "len(stacked)", "merged": "len(merged)", "path": "str(merged_path.resolve())",
    "precision": 'report["overall"]["precision"]', "precision_stacked": 'before["overall"]["precision"]',
    "recall_above": 'report["above"]["recall"]', "remaining": "len(remaining)",
    "phases": "sorted({job.phase for job in jobs.values()})", "bar": "[bar.value, bar.max]",
    "truth": 'str(Path("survey-truth.vot").resolve())', "figure": 'str(Path("survey-summary.png").resolve())',
}


def test_survey_notebook_merges_the_fields_without_duplicates(standalone, tmp_path):
    nb = load("survey_batch.ipynb")
    override_parameters(nb, **SURVEY_FAST)
    report_cell(nb, SURVEY_REPORT)
    result = execute(nb, tmp_path / "work", standalone_env(standalone, tmp_path))

    assert result["fields"] == 4 and result["phases"] == ["COMPLETED"]
    assert result["bar"] == [4, 4] and result["remaining"] == 0
    assert result["stacked"] > result["merged"] > 0, "the overlaps held no source found twice"
    assert Path(result["figure"]).stat().st_size > 10_000

    import astropy.units as u
    import numpy as np
    from astropy.coordinates import SkyCoord

    from cianna_otf_server.sky.quality import quality_report

    merged = read_votable(Path(result["path"]))
    assert len(merged) == result["merged"] and sorted(merged["id"]) == list(range(1, len(merged) + 1))
    assert set(merged["field"]) == {"F00", "F01", "F10", "F11"}
    coords = SkyCoord(merged["ra"], merged["dec"], unit="deg")
    first, second, _, _ = coords.search_around_sky(coords, BEAM_ARCSEC * u.arcsec)
    twice = (first != second) & (np.asarray(merged["field"])[first] != np.asarray(merged["field"])[second])
    assert not twice.any(), f"{twice.sum() // 2} sources kept from two fields"
    # x, y are pixels of the whole image: the detections lie where the truth says
    truth = read_votable(Path(result["truth"]))
    report = quality_report(merged, truth, radius_pix=2.0)
    # (the default network, yolo-demo: its aim is precision >= 0.9 with the faint sources it adds)
    assert report["above"]["recall"] > 0.9 and report["overall"]["precision"] > 0.9, report["overall"]
    # removing the duplicates is what makes the stacked catalogue clean
    assert result["precision"] > 0.9 and result["precision"] > result["precision_stacked"] + 0.03
    assert result["recall_above"] > 0.9


# -- inside a real Jupyter server --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory):
    """A Jupyter server with the extension, in isolated folders; yields (home, url, token)."""
    import requests

    home = tmp_path_factory.mktemp("jupyter")
    for name in ("config", "data", "runtime", "root"):
        (home / name).mkdir()
    port, token = _free_port(), "notebook-test-token"
    env = kernel_environment(home, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                             JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_PLATFORM_DIRS="1")
    command = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home / 'root'}",
               "--ServerApp.jpserver_extensions={'cianna_otf_jupyter': True}",
               f"--CiannaOTF.data_dir={home / 'service'}", "--CiannaOTF.device=cpu"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = home / "server.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the Jupyter server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}cianna-otf/models", headers={"Authorization": f"token {token}"}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the Jupyter server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield home, url, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def jupyter_env(jupyter_server) -> dict[str, str]:
    """A kernel beside the server: no CIANNA_OTF_URL, so the notebooks must discover the server.

    (A kernel started by the server itself finds it by ``JPY_PARENT_PID``; this one, started by
    nbclient, finds it as the one server in the runtime folder, as under a remote provisioner.)
    """
    home, _url, _token = jupyter_server
    return kernel_environment(home / "kernel-home", JUPYTER_RUNTIME_DIR=str(home / "runtime"),
                              JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                              JUPYTER_PLATFORM_DIRS="1")


def test_quickstart_inside_jupyter(jupyter_server, tmp_path):
    """The first experience: the view finds the service of the Jupyter server with no setting at all."""
    _home, url, _token = jupyter_server
    nb = load("quickstart.ipynb")
    override_parameters(nb, **QUICKSTART_FAST)
    inject(nb, tagged(nb, "widget") + 1, VIEW_SHOWN_CLEANLY)
    report_cell(nb, QUICKSTART_REPORT)
    result = execute(nb, tmp_path / "work", jupyter_env(jupyter_server))
    check_quickstart(result, nb)
    assert result["service"] == f"{url}cianna-otf"
    assert result["above"]["recall"] > 0.85


def test_pyvo_notebook_inside_jupyter(jupyter_server, tmp_path):
    """pyvo and requests with the Jupyter server's token, against ``{base_url}cianna-otf``."""
    _home, url, _token = jupyter_server
    nb = load("pyvo_client.ipynb")
    override_parameters(nb, **PYVO_FAST)
    report_cell(nb, PYVO_REPORT)
    result = execute(nb, tmp_path / "work", jupyter_env(jupyter_server))
    check_pyvo(result, nb)
    assert result["root"] == f"{url}cianna-otf"


# -- binder ----------------------------------------------------------------------------------
def test_binder_configuration_is_consistent():
    """environment.yml and postBuild describe an installable launch of this repository."""
    environment = (BINDER / "environment.yml").read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with jupyter_events
        yaml = None
    if yaml is not None:
        spec = yaml.safe_load(environment)
        dependencies = [d for d in spec["dependencies"] if isinstance(d, str)]
        assert "conda-forge" in spec["channels"]
    else:  # pragma: no cover
        dependencies = [line.strip()[2:] for line in environment.splitlines() if line.strip().startswith("- ")]
    names = {d.split("=")[0].split(">")[0].split("<")[0].strip() for d in dependencies}
    assert {"python", "nodejs", "pip"} <= names, names
    assert "python=3.11" in [d.replace(" ", "") for d in dependencies]

    post_build = BINDER / "postBuild"
    assert post_build.stat().st_mode & stat.S_IXUSR, "postBuild must be executable (repo2docker runs it)"
    script = post_build.read_text(encoding="utf-8")
    assert script.startswith("#!/") and "set -e" in script
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(post_build)], check=True)
    # CPU PyTorch first, so the package's torch requirement does not pull the CUDA build
    assert script.index("download.pytorch.org/whl/cpu") < script.index('-e ".[')
    # the extras it installs exist
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    import re

    (wanted,) = re.findall(r'-e "\.\[([\w,-]+)\]"', script)
    assert set(wanted.split(",")) <= set(extras), (wanted, sorted(extras))
    # every file of the repository it names exists, and the module it runs is part of the package
    for path in re.findall(r"\b((?:jupyter-config|cianna_otf_jupyter|notebooks)/[\w./-]+)", script):
        assert (ROOT / path).exists(), path
    assert "jupyter-config/jupyter_server_config.d/cianna_otf_jupyter.json" in script
    assert "etc/jupyter/jupyter_server_config.d" in script
    assert "python -m cianna_otf_jupyter.fetch_aladin" in script
    assert (ROOT / "cianna_otf_jupyter" / "fetch_aladin.py").is_file()
