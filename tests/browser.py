"""JupyterLab with the extension, and headless Debian Chromium driven by Playwright, for browser tests.

Everything runs offline and isolated: JupyterLab gets its own config, data, runtime and settings
folders under the test's tmp_path (so the user's own settings and running servers play no part),
and Chromium is the system's ``/usr/bin/chromium`` (Playwright's own browser download needs a
network), started with the flags that keep it from calling out.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1600,1200",
]
"""SwiftShader renders WebGL with --disable-gpu (so Aladin Lite draws); the network flags stop
Chromium's own calls home, which a closed network refuses by the dozen."""

EXTENSION_FROM_INSTALL = "CIANNA_OTF_EXTENSION_FROM_INSTALL"
"""Set: JupyterLab is started without enabling the extension on its command line, so it runs only
where the installation enabled it (the wheel test runs the browser test so)."""

LAB_SETTINGS = {
    # every cell rendered, on screen or not, so the view of a cell below the fold still loads
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # no news or update checks: offline, and no pop-up over the notebook
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def chromium_path() -> str | None:
    """The system Chromium, or None where none is installed (``make install`` installs it)."""
    for candidate in (os.environ.get("CIANNA_OTF_CHROMIUM"), *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class JupyterLab:
    """A running JupyterLab server (a child process) serving `root`."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def lab_url(self, path: str) -> str:
        return f"{self.url}lab/tree/{path}?token={self.token}"


@contextmanager
def jupyter_lab(root: Path, home: Path, startup_timeout: float = 90.0) -> Iterator[JupyterLab]:
    """Start JupyterLab on `root` with the extension enabled and isolated folders under `home`."""
    port, token = _free_port(), "cianna-otf-browser-test"
    env = dict(os.environ)
    for name in ("config", "data", "runtime"):
        (home / name).mkdir(parents=True, exist_ok=True)
    env.update(JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_PLATFORM_DIRS="1",
               PYTHONUNBUFFERED="1")
    env.pop("CIANNA_OTF_URL", None)  # the kernel must find the service of *this* server
    settings_dir = home / "lab-settings"
    for relative, values in LAB_SETTINGS.items():
        path = settings_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    log = home / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--CiannaOTF.data_dir={home / 'service'}",
        f"--LabApp.user_settings_dir={settings_dir}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.news_url=None",
    ]
    if not os.environ.get(EXTENSION_FROM_INSTALL):
        command.append("--ServerApp.jpserver_extensions={'cianna_otf_jupyter': True}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    lab = JupyterLab(url, token, root, process, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"JupyterLab did not start in {startup_timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield lab
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def chromium_page(executable: str, profile: Path) -> Iterator[object]:
    """A Playwright page in a fresh headless Chromium profile (the sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1200},
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            yield page
        finally:
            browser.close()
