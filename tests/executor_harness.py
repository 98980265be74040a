"""A job service wired to an executor and driven without HTTP, shared by the executor tests.

The batching scheduler's tests and the Ray executor's build the same service (a tiny YOLO
model, a SQLite store, the detection parameter policy over a folder of images) around the
executor they test; `make_executor(runner)` builds it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

from cianna_otf_server.jobs import DetectionParameterPolicy, DetectionRunner
from cianna_otf_server.models import ModelRegistry
from cianna_otf_server.uws import JobFiles, JobService, JobStore, Phase, ServiceLimits

sys.path.insert(0, str(Path(__file__).parent))
from yolo_models import write_tiny_yolo  # noqa: E402

FINAL = {Phase.COMPLETED, Phase.ERROR, Phase.ABORTED}


class Harness:
    """A job service wired to the executor `make_executor(runner)` builds."""

    def __init__(self, root: Path, images: Path, make_executor: Callable[[DetectionRunner], Any],
                 limits: ServiceLimits | None = None) -> None:
        models = root / "models"
        write_tiny_yolo(models)
        self.models = models
        self.registry = ModelRegistry([models], use_environment=False)
        self.store = JobStore(root / "jobs.sqlite")
        self.files = JobFiles(root / "data")
        runner = DetectionRunner(self.registry, self.files, device="cpu")
        self.executor = make_executor(runner)
        policy = DetectionParameterPolicy(self.registry, data_roots=[images])
        self.service = JobService(self.store, self.files, self.executor, policy, lambda j, p="": f"/async/{j}/{p}",
                                  limits=limits)
        self.service.startup()
        self.images = images

    @property
    def scheduler(self) -> Any:
        """The executor (the batching scheduler, in its own tests)."""
        return self.executor

    def submit(self, image: str, owner: str = "alice", model: str = "tiny-yolo") -> str:
        return self.service.create(owner, [("IMAGE", image), ("MODEL", model), ("PHASE", "RUN")]).job_id

    def wait(self, job_id: str, timeout: float = 120.0, phases=FINAL):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.store.get(job_id)
            if job is not None and job.phase in phases:
                return job
            time.sleep(0.01)
        raise AssertionError(f"job {job_id} still {self.store.get(job_id).phase} after {timeout} s")

    def rows(self, job_id: str):
        """The job's catalogue as a table."""
        from astropy.io.votable import parse_single_table

        return parse_single_table(str(self.files.result_file(job_id, "result.xml"))).to_table()

    def close(self) -> None:
        self.service.shutdown()
        self.store.close()
