"""Build hook: every sdist and wheel carries Aladin Lite, so the notebook view works offline.

The project is configured in ``pyproject.toml``; this file only adds the front-end step that
setuptools cannot express there. Before the package files are collected (``build_py``, which
wheels, editable installs and ``sdist`` all run), Aladin Lite's ES module and its licence
(LGPL-3.0-or-later) are fetched from the npm registry with ``npm pack`` into
``cianna_otf_jupyter/static/aladin-lite/`` by ``cianna_otf_jupyter/fetch_aladin.py`` (at the
version ipyaladin imports), unless that version is already there. An sdist carries the files,
so a wheel built from it needs no npm.

Without npm the build stops with the reason; ``CIANNA_OTF_ALLOW_CDN=1`` builds anyway, and the
notebook view then loads Aladin Lite from ipyaladin's CDN.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
FETCHER = HERE / "cianna_otf_jupyter" / "fetch_aladin.py"
ALADIN_LITE = HERE / "cianna_otf_jupyter" / "static" / "aladin-lite"


def fetch_front_end() -> None:
    """Aladin Lite into the source tree (a no-op where its version is present); stop the build on failure."""
    if not FETCHER.is_file():  # a wheel built from an sdist: the files came with it
        return
    result = subprocess.run([sys.executable, str(FETCHER)], cwd=HERE, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        print(result.stdout.strip())
        return
    if (ALADIN_LITE / "aladin.js").is_file():
        print(f"warning: could not refresh Aladin Lite, keeping the copy in place: {result.stderr.strip()}")
        return
    if os.environ.get("CIANNA_OTF_ALLOW_CDN") == "1":
        print(f"warning: building without Aladin Lite (CIANNA_OTF_ALLOW_CDN=1): {result.stderr.strip()}")
        return
    raise SystemExit(
        "cianna-otf: Aladin Lite could not be fetched from the npm registry for the offline notebook "
        f"view:\n{result.stderr.strip()}\nInstall Node.js/npm, or set CIANNA_OTF_ALLOW_CDN=1 to build a "
        "package whose view loads Aladin Lite from the CDN."
    )


class BuildPyWithFrontEnd(build_py):
    """``build_py`` that first puts the front-end assets in place."""

    def run(self) -> None:
        fetch_front_end()
        super().run()


class SdistWithFrontEnd(sdist):
    """``sdist`` that first puts the front-end assets in place, so the archive carries them."""

    def run(self) -> None:
        fetch_front_end()
        super().run()


setup(cmdclass={"build_py": BuildPyWithFrontEnd, "sdist": SdistWithFrontEnd})
