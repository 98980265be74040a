"""Fetch Aladin Lite's ES module from the npm registry into the extension's static folder.

Run at install or build time (``python -m cianna_otf_jupyter.fetch_aladin``, or
``python cianna_otf_jupyter/fetch_aladin.py`` from a checkout), never at run time: the point is a
notebook view that renders with no network. ``npm pack aladin-lite@VERSION`` downloads the
package tarball (npm checks its integrity against the registry); ``package/dist/aladin.js`` (one
self-contained ES module, WebAssembly inlined) and the licence files (LGPL-3.0-or-later) are
copied into ``static/aladin-lite/``. The version is the one the installed ipyaladin imports from
its CDN, so the local copy is what ipyaladin was written against. Running it again with that
version already in place does nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file from a checkout, before the package is installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _assets import ALADIN_LITE_DIR, pinned_aladin_lite_version  # type: ignore[no-redef]
else:
    from ._assets import ALADIN_LITE_DIR, pinned_aladin_lite_version

PACKAGE = "aladin-lite"
MEMBERS = {"package/dist/aladin.js": "aladin.js", "package/LICENSE": "LICENSE", "package/COPYING": "COPYING"}
"""Tarball member -> file name in the destination; only aladin.js is required."""
STAMP = "VERSION"


def installed_version(dest: Path = ALADIN_LITE_DIR) -> str | None:
    """The version of the Aladin Lite already in `dest`, or None where it is absent or partial."""
    stamp = dest / STAMP
    if not (dest / "aladin.js").is_file() or not stamp.is_file():
        return None
    return stamp.read_text(encoding="utf-8").strip() or None


def fetch(version: str | None = None, dest: Path = ALADIN_LITE_DIR, *, npm: str = "npm", force: bool = False) -> bool:
    """Put ``aladin-lite@version``'s ``dist/aladin.js`` (and licence) in `dest`.

    Returns True if files were written, False if that version was already there. Each file is
    written to a temporary name and renamed, and the version stamp last, so an interrupted run
    is redone, never taken for a complete one. Raises RuntimeError if npm is missing or fails.
    """
    version = version or pinned_aladin_lite_version()
    if not force and installed_version(dest) == version:
        return False
    npm_path = shutil.which(npm)
    if npm_path is None:
        raise RuntimeError(f"{npm!r} not found: install Node.js/npm to fetch {PACKAGE}@{version}")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aladin-lite-") as tmp:
        result = subprocess.run(
            [npm_path, "pack", f"{PACKAGE}@{version}", "--json", "--pack-destination", tmp],
            cwd=tmp, capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"npm pack {PACKAGE}@{version} failed:\n{result.stderr.strip()}")
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise RuntimeError(f"npm pack left {len(tarballs)} tarballs in {tmp}")
        _check_version(result.stdout, version)
        with tarfile.open(tarballs[0], "r:gz") as tar:
            names = set(tar.getnames())
            if "package/dist/aladin.js" not in names:
                raise RuntimeError(f"{PACKAGE}@{version} has no package/dist/aladin.js")
            for member, name in MEMBERS.items():
                if member in names:
                    source = tar.extractfile(member)  # read by name: no path from the archive is trusted
                    if source is not None:
                        _write_atomic(dest / name, source.read())
    _write_atomic(dest / STAMP, f"{version}\n".encode())
    return True


def _check_version(pack_json: str, version: str) -> None:
    """Refuse a tarball whose version is not the one asked for (a dist-tag or range resolved)."""
    try:
        packed = json.loads(pack_json)[0]["version"]
    except (ValueError, LookupError, TypeError):
        return  # older npm without --json output: the tarball name was still the asked version
    if packed != version:
        raise RuntimeError(f"npm packed {PACKAGE}@{packed}, not {version}")


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``fetch_aladin.py [--version V] [--dest DIR] [--npm NPM] [--force]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="aladin-lite version (default: the one ipyaladin imports)")
    parser.add_argument("--dest", type=Path, default=ALADIN_LITE_DIR, help="destination folder")
    parser.add_argument("--npm", default="npm", help="npm executable")
    parser.add_argument("--force", action="store_true", help="fetch even if that version is present")
    args = parser.parse_args(argv)
    version = args.version or pinned_aladin_lite_version()
    try:
        written = fetch(version, args.dest, npm=args.npm, force=args.force)
    except RuntimeError as error:
        print(f"fetch_aladin: {error}", file=sys.stderr)
        return 1
    state = "fetched" if written else "already present"
    print(f"fetch_aladin: {PACKAGE}@{version} {state} in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
