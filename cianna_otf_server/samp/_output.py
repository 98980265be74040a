"""Where the bridge puts what it sends: catalogue and region files named after image and job.

SAMP passes tables by URL, and the viewers run on this machine, so each catalogue is saved to
a local folder and sent as a ``file://`` URL (DS9 takes a path in its ``regions load``
command). One file per job, never overwritten: a viewer may read it long after the message.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Detection", "count_rows", "default_out_dir", "save_bytes", "stem_for"]


def default_out_dir() -> Path:
    """``$XDG_CACHE_HOME/cianna-otf/samp``, else ``~/.cache/cianna-otf/samp``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cianna-otf" / "samp"


def stem_for(image_name: str) -> str:
    """A file-name stem from an image name (``sky.fits.gz`` -> ``sky``), safe on every system."""
    stem = re.sub(r"(?i)\.(fits|fit|fts)(\.gz)?$", "", image_name.strip())
    return (re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).strip("._") or "image")[:60]


def save_bytes(target: Path, content: bytes) -> Path:
    """Write `content` to `target` through a temporary file, so no reader sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cianna-otf-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def count_rows(votable: bytes) -> int:
    """Rows of the first table of a VOTable (the number of sources)."""
    from astropy.io.votable import parse_single_table

    return len(parse_single_table(io.BytesIO(votable)).array)


def ds9_path(path: Path) -> str:
    """A path as DS9 commands take it: in braces when it holds spaces (Tcl quoting)."""
    text = str(path)
    return f"{{{text}}}" if re.search(r"\s", text) else text


@dataclass
class Detection:
    """What one detection produced and to whom it went.

    Attributes
    ----------
    job_id, job_url, model, image : str
    sources : int
    table_path : Path
    table_url : str
        The ``file://`` URL sent with ``table.load.votable``.
    table_id : str
    regions_path : Path or None
        The DS9 regions file, when a client subscribed to ``ds9.set`` was sent it.
    table_recipients, ds9_recipients : list of str
        Public ids of the clients sent the table, and the regions.
    warnings : list of str
        The job's warnings (an image outside the model's domain...).
    """

    job_id: str
    job_url: str
    model: str
    image: str
    sources: int
    table_path: Path
    table_url: str
    table_id: str
    regions_path: Path | None = None
    table_recipients: list[str] = field(default_factory=list)
    ds9_recipients: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the user: ``3 sources (job abc123) -> table sent to 2 clients``."""
        line = (f"{self.sources} source{'' if self.sources == 1 else 's'} (job {self.job_id}) -> table sent "
                f"to {len(self.table_recipients)} client{'' if len(self.table_recipients) == 1 else 's'}")
        if self.ds9_recipients:
            line += f", regions to {len(self.ds9_recipients)} DS9"
        return line

    def result(self) -> dict[str, str]:
        """The ``samp.result`` of a call's reply (SAMP values are strings)."""
        result = {"url": self.table_url, "table-id": self.table_id, "job": self.job_url,
                  "sources": str(self.sources), "model": self.model}
        if self.regions_path is not None:
            result["regions"] = self.regions_path.as_uri()
        return result
