"""The distributions are complete: built from a clean copy of the project, installed into a fresh
virtual environment, they serve the notebook view offline with the extension enabled by the install.

The project's tracked files are copied to a clean folder (no fetched Aladin Lite, no build
output), and ``python -m build`` makes the sdist and the wheel there, so the build hook must
fetch Aladin Lite from the npm registry itself. The wheel is installed with ``--no-deps`` into a
new virtual environment; its dependencies (PyTorch, JupyterLab, ...) are borrowed from the
development environment through a plain path entry, which adds their folder to ``sys.path``
without running that environment's own ``.pth`` files, so the development install of this
project stays out of the way: everything of the project (code, Aladin Lite, models, the
configuration that enables the server extension) comes from the wheel. The end-to-end browser
test then runs with that environment's Python and a JupyterLab that is not told to enable the
extension, with no request leaving the machine (the browser test checks that).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
ALADIN_IN_WHEEL = "cianna_otf_jupyter/static/aladin-lite/aladin.js"

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm missing: the build hook needs the npm registry")


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


@pytest.fixture(scope="module")
def distributions(tmp_path_factory) -> dict[str, Path | str]:
    """The sdist and wheel built from a clean copy of the tracked files, and the build's output."""
    pytest.importorskip("build", reason="the build package is missing (make install)")
    source = tmp_path_factory.mktemp("clean-copy")
    tracked = _run(["git", "ls-files", "-z"], cwd=REPO)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: the clean copy is made from the tracked files")
    for name in filter(None, tracked.stdout.split("\0")):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    assert not (source / ALADIN_IN_WHEEL).exists()
    out = tmp_path_factory.mktemp("dist")
    built = _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(source)],
                 timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "log": built.stdout + built.stderr}


def test_the_build_is_clean_and_twine_accepts_it(distributions) -> None:
    log = str(distributions["log"])
    for complaint in ("is absent from the `packages` configuration", "SetuptoolsDeprecationWarning",
                      "License classifiers are deprecated", "`project.license` as a TOML table is deprecated"):
        assert complaint not in log, complaint
    assert "aladin-lite@" in log and "fetched" in log  # the hook fetched Aladin Lite from the registry
    twine = pytest.importorskip("twine", reason="twine is missing (make install)")
    assert twine
    checked = _run([sys.executable, "-m", "twine", "check", "--strict", str(distributions["wheel"]),
                    str(distributions["sdist"])])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_wheel_and_sdist_carry_the_front_end_and_its_licence(distributions) -> None:
    with zipfile.ZipFile(distributions["wheel"]) as wheel:
        names = set(wheel.namelist())
        assert wheel.getinfo(ALADIN_IN_WHEEL).file_size > 1_000_000
        assert "GNU LESSER GENERAL PUBLIC LICENSE" in wheel.read("cianna_otf_jupyter/static/aladin-lite/LICENSE").decode("utf-8", "replace") + \
            wheel.read("cianna_otf_jupyter/static/aladin-lite/COPYING").decode("utf-8", "replace")
    for needed in ("cianna_otf_jupyter/static/aladin-lite/VERSION", "cianna_otf_jupyter/frontend/detection_view.js",
                   "cianna_otf_jupyter/static/blank-sky/properties", "cianna_otf_server/models/builtin/yolo-demo.dat",
                   "cianna_otf-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/cianna_otf_jupyter.json",
                   "cianna_otf-0.1.0.dist-info/licenses/LICENSE"):
        assert needed in names, needed
    assert not any(name.startswith("tests/") for name in names)
    listing = _run(["tar", "tzf", str(distributions["sdist"])]).stdout
    assert f"/{ALADIN_IN_WHEEL}" in listing and "/setup.py" in listing


@pytest.fixture(scope="module")
def fresh_environment(distributions, tmp_path_factory) -> Path:
    """A new virtual environment holding the wheel; dependencies borrowed from this one's site-packages."""
    home = tmp_path_factory.mktemp("fresh")
    venv = home / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                      "--quiet", str(distributions["wheel"])], timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # a plain path line: this environment's packages are importable, its .pth files (the
    # development install of this project among them) are not run
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return venv


def _fresh_env(venv: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CIANNA_OTF_URL", "PYTHONPATH"))}
    share = Path(sys.prefix) / "share" / "jupyter"  # JupyterLab's application and the widget front ends
    env.update(JUPYTER_PATH=str(share), JUPYTERLAB_DIR=str(share / "lab"), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_DATA_DIR=str(home / "data"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return env


def test_the_fresh_install_imports_the_wheel_and_enables_the_extension(distributions, fresh_environment,
                                                                      tmp_path) -> None:
    python = fresh_environment / "bin" / "python"
    env = _fresh_env(fresh_environment, tmp_path)
    where = _run([str(python), "-c", "import cianna_otf_jupyter, cianna_otf_server; "
                  "print(cianna_otf_jupyter.__file__); print(cianna_otf_server.__file__)"], env=env, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(fresh_environment)) for line in where.stdout.split()), where.stdout
    listed = _run([str(python), "-m", "jupyter_server.extension.serverextension", "list"], env=env, cwd=tmp_path)
    text = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    enabled_in = re.search(r"Config dir: (\S+)\n\s+cianna_otf_jupyter\s+enabled", text)
    assert enabled_in is not None, text
    assert Path(enabled_in.group(1)) == fresh_environment / "etc" / "jupyter"  # by the wheel's data file

    port = _free_port()
    token = "wheel-test"
    server = subprocess.Popen(
        [str(python), "-m", "jupyter_server", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         f"--CiannaOTF.data_dir={tmp_path / 'service'}"] + (["--allow-root"] if os.geteuid() == 0 else []),
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{base}/api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)
        headers = {"Authorization": f"token {token}"}
        served = requests.get(f"{base}/cianna-otf/static/aladin-lite/aladin.js", headers=headers, timeout=30)
        assert served.status_code == 200
        with zipfile.ZipFile(distributions["wheel"]) as wheel:
            assert served.content == wheel.read(ALADIN_IN_WHEEL)
        models = requests.get(f"{base}/cianna-otf/models", headers=headers, timeout=30)
        assert models.status_code == 200 and "yolo-demo" in models.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_browser_test_passes_against_the_fresh_install(fresh_environment, tmp_path) -> None:
    """The end-to-end notebook test, run by the fresh environment's Python, extension enabled by the install only."""
    from browser import EXTENSION_FROM_INSTALL, chromium_path

    if chromium_path() is None and not os.environ.get("CIANNA_OTF_REQUIRE_BROWSER"):
        pytest.skip("Chromium missing (make install sets it up)")
    python = fresh_environment / "bin" / "python"
    env = _fresh_env(fresh_environment, tmp_path)
    env[EXTENSION_FROM_INSTALL] = "1"
    env["CIANNA_OTF_REQUIRE_BROWSER"] = "1"
    env["CIANNA_OTF_ARTIFACTS"] = str(tmp_path / "artifacts")
    test = REPO / "tests" / "test_notebook_browser.py"
    ran = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
                f"{test}::test_quickstart_in_jupyterlab_draw_a_region_and_detect"], env=env, cwd=tmp_path,
               timeout=900)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert "1 passed" in ran.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
