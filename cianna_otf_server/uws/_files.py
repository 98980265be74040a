"""Per-job directories under the data root: uploads, a scratch area and the results.

Results are written in ``work/`` and moved into ``results/`` only when complete, so an abort
or a crash never leaves a half-written catalogue where a client could fetch it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class JobFiles:
    """Filesystem layout: ``{root}/jobs/{job_id}/{uploads,work,results}``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        if not _SAFE_NAME.match(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        return self.root / "jobs" / job_id

    def job_bytes(self, job_id: str) -> int:
        """Bytes the job's files take (uploads, work files, results); 0 for a job without a folder."""
        total = 0
        for path in self.job_dir(job_id).rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
            except OSError:  # removed meanwhile
                continue
        return total

    def create(self, job_id: str) -> Path:
        directory = self.job_dir(job_id)
        for sub in ("uploads", "work", "results"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        return directory

    def upload_file(self, job_id: str, name: str) -> Path:
        if not _SAFE_NAME.match(name):
            raise ValueError(f"invalid parameter name {name!r}")
        return self.job_dir(job_id) / "uploads" / name

    def store_upload(self, job_id: str, name: str, source: Path | bytes) -> Path:
        """Keep an upload for a job: move the received file `source` in (or write bytes)."""
        path = self.upload_file(job_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, (bytes, bytearray)):
            temporary = path.with_suffix(".part")
            temporary.write_bytes(source)
            os.replace(temporary, path)
        else:
            try:
                os.replace(source, path)  # the scratch folder shares the file system: a rename
            except OSError:  # another file system (a scratch folder configured elsewhere): copy
                shutil.copyfile(source, path)
        return path

    def work_dir(self, job_id: str) -> Path:
        path = self.job_dir(job_id) / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def result_file(self, job_id: str, file_name: str) -> Path:
        if not _SAFE_NAME.match(file_name):
            raise ValueError(f"invalid result file name {file_name!r}")
        return self.job_dir(job_id) / "results" / file_name

    def publish(self, job_id: str, work_file: Path) -> Path:
        """Move a finished file from the work area into the results (atomic on one filesystem)."""
        target = self.result_file(job_id, work_file.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work_file, target)
        return target

    def discard_partial(self, job_id: str) -> None:
        """Remove whatever an interrupted run left in the work area."""
        shutil.rmtree(self.job_dir(job_id) / "work", ignore_errors=True)

    def clear_results(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id) / "results", ignore_errors=True)

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
