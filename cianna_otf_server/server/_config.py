"""The service's one configuration, for every hosting mode.

`ServiceConfig` is a traitlets `Configurable`: the Jupyter extension *is* one (``c.CiannaOTF.*``
in a Jupyter config file, ``c.ServiceConfig.*`` too), and ``cianna-otf serve`` builds one from a
config file (``--config``) and its command-line options, which are made from these traits (so
every setting can be set from both, with one default, documented once: `settings_table`).
Each part of the service gets its own view (`service_limits`, `runner_limits`,
`scheduler_settings`): nothing is copied field by field elsewhere.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from traitlets import Bool, Enum, Float, Int, List, Type, Unicode, default, validate
from traitlets.config import Configurable

from ..models import DEFAULT_MODEL

__all__ = ["ServiceConfig", "settings_table", "default_data_dir", "resolve_device", "expand_devices"]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/cianna-otf/service`` (``~/.local/share/cianna-otf/service``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cianna-otf" / "service"


class _Path(Unicode):
    """A file-system path, given as text or as a `pathlib.Path` (kept as text)."""

    def validate(self, obj: Any, value: Any) -> str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        return super().validate(obj, value)


class ServiceConfig(Configurable):
    """Everything that shapes a running service: storage, models, limits, execution."""

    # -- storage and models ----------------------------------------------------------------------
    data_dir = _Path(help="Where jobs (SQLite, unless database_url) and their files live (default: the user's data "
                       "directory, cianna-otf/service; in Jupyter the Jupyter data directory).").tag(config=True)
    database_url = Unicode("", help="The job database: empty for SQLite in data_dir (one service); a "
                           "PostgreSQL URL (postgresql://user@host/db; the password from libpq's PGPASSWORD "
                           "or ~/.pgpass) for a shared service or several replicas (needs "
                           "cianna-otf[postgres]). Job files stay in data_dir, which replicas must share."
                           ).tag(config=True)
    root_path = Unicode("/", help="URL path of the service root (behind a proxy); in Jupyter it is "
                        "{base_url}cianna-otf/ and not configurable.").tag(config=True)
    public_url = Unicode("", help="The service's public address (https://host[:port]), written into "
                         "catalogues and provenance as the start of job URLs; empty: they hold the job's "
                         "path only (no request's Host header is trusted).").tag(config=True)
    models_dirs = List(_Path(), help="Extra model directories (cards + weights).").tag(config=True)
    default_model = Unicode(DEFAULT_MODEL, help="Model of the jobs that name none.").tag(config=True)
    # -- what a job may read ---------------------------------------------------------------------
    data_roots = List(_Path(), help="Directories from which IMAGE may be given as a path.").tag(config=True)
    allow_http_images = Bool(False, help="Allow IMAGE as an http(s) URL fetched by the server (off: the "
                             "server fetches nothing).").tag(config=True)
    image_url_allow = List(Unicode(), help="Where URL images may come from: URL prefixes "
                           "(https://archive.example.org/surveys/) or host names (archive.example.org; "
                           ".example.org for its subdomains); empty: any public host.").tag(config=True)
    allow_private_image_hosts = Bool(False, help="Let URL images come from loopback, link-local and private "
                                     "addresses (an on-site archive); off, they are refused at every redirect "
                                     "and connection.").tag(config=True)
    max_upload_bytes = Int(1024**3, help="Largest accepted upload, bytes (larger: 413).").tag(config=True)
    max_download_bytes = Int(None, allow_none=True, help="Largest image fetched by URL, bytes (unset: "
                             "max_upload_bytes).").tag(config=True)
    download_timeout = Float(60.0, help="Seconds a URL fetch may wait for data between reads.").tag(config=True)
    download_deadline_seconds = Float(300.0, help="Seconds a whole URL fetch may take.").tag(config=True)
    max_image_pixels = Int(32768 * 32768, help="Largest image a job may process, pixels.").tag(config=True)
    # -- queue and job lifetimes -----------------------------------------------------------------
    max_queued_per_owner = Int(100, help="Queued or running jobs per user before 429 (their own quota).").tag(config=True)
    max_queued_patches_per_owner = Int(0, help="Patches one user's queued and running jobs may hold before their "
                                       "next job gets 429 (a survey-sized backlog waits its turn); 0: no "
                                       "limit.").tag(config=True)
    max_storage_per_owner_mb = Int(0, help="MB of job files (uploads, results) one user may keep before new "
                                   "jobs get 403 (delete finished ones to make room); 0: no limit.").tag(config=True)
    max_queued_total = Int(1000, help="Queued or running jobs in total before 503.").tag(config=True)
    default_execution_duration = Int(3600, help="Seconds a job may run unless it asks otherwise.").tag(config=True)
    max_execution_duration = Int(24 * 3600, help="Upper bound of EXECUTIONDURATION, seconds.").tag(config=True)
    default_destruction_days = Float(7.0, help="Days before a job and its files are deleted.").tag(config=True)
    max_destruction_days = Float(30.0, help="Upper bound of DESTRUCTION, days from now.").tag(config=True)
    max_wait_seconds = Float(300.0, help="Cap of blocking WAIT, seconds (pyvo gives up at 600).").tag(config=True)
    sync_timeout_seconds = Float(120.0, help="How long /sync waits before redirecting to the job, "
                                 "seconds.").tag(config=True)
    reaper_interval_seconds = Float(30.0, help="Seconds between sweeps that delete expired jobs.").tag(config=True)
    # -- execution -------------------------------------------------------------------------------
    thread_switch_interval = Float(
        0.001, min=0.0,
        help="Seconds a thread may hold Python's interpreter lock while others wait (Python's default "
             "is 0.005). Worker threads doing CPU work then hand it back to the event loop this often, "
             "so requests stay fast while jobs run (100 running classic jobs added 150 ms to a job "
             "creation at the default). 0: leave Python's setting.").tag(config=True)
    trim_memory_seconds = Float(
        30.0, min=0.0,
        help="Seconds between returns of freed heap memory to the system (glibc's malloc_trim), so "
             "that the resident memory of a long-running service stays flat. 0: never.").tag(config=True)
    device = Unicode("auto", help="'auto' (every GPU if any, else the CPU), 'cpu', 'cuda' (every "
                     "GPU), 'cuda:1', ...").tag(config=True)
    executor = Enum(["batching", "pool", "ray"], default_value="batching",
                    help="'batching' (the batching scheduler), 'pool' (one job per worker thread) or 'ray' "
                    "(the batching scheduler running its batches on the actors of a Ray cluster; needs "
                    "cianna-otf[ray]).").tag(config=True)
    executor_class = Type(default_value=None, allow_none=True, klass=object,
                          help="A class or callable building the executor from (runner, config), "
                          "replacing 'executor' (for example a distributed engine).").tag(config=True)
    workers = Int(1, help="Jobs run at once by the worker pool; also the least number of "
                  "preparation and writing threads of the batching scheduler.").tag(config=True)
    writer_processes = Int(-1, min=-1, help="Processes writing the result files (catalogue formats, provenance) "
                           "outside the service's interpreter lock; 0: the finishing threads write them; -1: "
                           "none up to 4 CPUs, else one per 4 CPUs (at most 4).").tag(config=True)
    batch_size = Int(0, help="Patches per batch; 0: 2 on a CPU, 64 on a GPU.").tag(config=True)
    max_wait = Float(0.02, help="Seconds a ready patch may wait for a fuller batch.").tag(config=True)
    model_budget_mb = Float(4096.0, help="Memory for resident networks per device, MB.").tag(config=True)
    compile_networks = Bool(False, help="torch.compile the networks on GPUs (faster once each batch "
                            "size has compiled, which takes a minute on first use).").tag(config=True)
    # -- scale-out on Ray (executor = 'ray') ------------------------------------------------------
    ray_address = Unicode("", help="The Ray cluster (executor 'ray'): 'host:port' of its head (as `ray start "
                          "--head` prints), 'auto' (the cluster started on this machine), 'ray://host:10001' "
                          "(Ray Client, needs ray[client]); empty: $RAY_ADDRESS, else a private Ray on this machine.").tag(config=True)
    ray_actors = Int(0, help="Ray actors running batches: 0, one per GPU of the cluster (one per "
                     "ray_actor_cpus CPUs on a CPU cluster), growing as nodes join; more than the cluster "
                     "holds leaves actors pending, which is what asks a Ray autoscaler for nodes.").tag(config=True)
    ray_actor_cpus = Float(1.0, help="CPUs each Ray actor reserves (on a CPU cluster also the PyTorch threads "
                           "it runs).").tag(config=True)
    ray_actor_gpus = Float(-1.0, help="GPUs each Ray actor holds (0.5: two actors share one GPU; 0: CPU "
                           "actors); -1: 1 where the cluster has GPUs, else 0.").tag(config=True)
    ray_unreachable = Enum(["fail", "wait"], default_value="fail",
                           help="When no Ray actor is available (cluster unreachable, no free resources) for "
                           "ray_timeout seconds: 'fail' the running jobs with the reason, or 'wait' for the "
                           "cluster (jobs stay EXECUTING, under their execution duration).").tag(config=True)
    ray_timeout = Float(60.0, help="Seconds without any available Ray actor before ray_unreachable "
                        "applies.").tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(default_data_dir())

    @validate("root_path")
    def _valid_root_path(self, proposal: dict[str, Any]) -> str:
        path = str(proposal["value"]) or "/"
        path = path if path.startswith("/") else "/" + path
        return path if path.endswith("/") else path + "/"

    @validate("workers", "max_queued_per_owner", "max_queued_total")
    def _at_least_one(self, proposal: dict[str, Any]) -> int:
        if int(proposal["value"]) < 1:
            raise ValueError(f"{proposal['trait'].name} must be at least 1, not {proposal['value']}")
        return int(proposal["value"])

    @validate("max_upload_bytes", "max_download_bytes", "max_image_pixels", "default_execution_duration",
              "max_execution_duration", "batch_size", "max_storage_per_owner_mb", "max_queued_patches_per_owner", "ray_actors")
    def _not_negative(self, proposal: dict[str, Any]) -> int | None:
        if proposal["value"] is None:  # max_download_bytes unset: the upload limit
            return None
        if int(proposal["value"]) < 0:
            raise ValueError(f"{proposal['trait'].name} must not be negative, not {proposal['value']}")
        return int(proposal["value"])

    @validate("download_timeout", "download_deadline_seconds", "default_destruction_days", "max_destruction_days", "max_wait_seconds",
              "sync_timeout_seconds", "reaper_interval_seconds", "max_wait", "model_budget_mb", "ray_actor_cpus",
              "ray_timeout")
    def _positive(self, proposal: dict[str, Any]) -> float:
        if not float(proposal["value"]) > 0:
            raise ValueError(f"{proposal['trait'].name} must be positive, not {proposal['value']}")
        return float(proposal["value"])

    # -- views for the parts ----------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def model_paths(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.models_dirs]

    @property
    def data_root_paths(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.data_roots]

    def resolved_device(self) -> str:
        """The device jobs run on (``auto`` resolved: ``cuda`` where PyTorch sees a GPU)."""
        return resolve_device(self.device)

    def service_limits(self) -> Any:
        """The job service's limits (`uws.ServiceLimits`)."""
        from ..uws import ServiceLimits

        return ServiceLimits(
            max_upload_bytes=self.max_upload_bytes,
            max_queued_per_owner=self.max_queued_per_owner,
            max_queued_patches_per_owner=self.max_queued_patches_per_owner,
            max_storage_per_owner=self.max_storage_per_owner_mb * 1024 * 1024,
            max_queued_total=self.max_queued_total,
            default_execution_duration=self.default_execution_duration,
            max_execution_duration=self.max_execution_duration,
            default_destruction=timedelta(days=self.default_destruction_days),
            max_destruction=timedelta(days=self.max_destruction_days),
            max_wait_seconds=self.max_wait_seconds,
        )

    def resolved_writer_processes(self) -> int:
        """`writer_processes` with -1 resolved for this host (`jobs.default_writer_processes`)."""
        from ..jobs import default_writer_processes

        return default_writer_processes() if self.writer_processes < 0 else self.writer_processes

    def runner_limits(self) -> Any:
        """What one job may read (`jobs.RunnerLimits`)."""
        from ..jobs import RunnerLimits

        return RunnerLimits(max_image_pixels=self.max_image_pixels, max_download_bytes=self.download_limit,
                            download_timeout=self.download_timeout, download_deadline=self.download_deadline_seconds,
                            url_policy=self.url_policy(), data_roots=tuple(self.data_root_paths))

    @property
    def download_limit(self) -> int:
        """The largest image fetched by URL: `max_download_bytes`, else the upload limit."""
        return self.max_upload_bytes if self.max_download_bytes is None else self.max_download_bytes

    def url_policy(self) -> Any:
        """Which URLs and addresses the server may fetch images from (`jobs.UrlPolicy`)."""
        from ..jobs import UrlPolicy

        return UrlPolicy.from_settings(self.allow_http_images, self.image_url_allow, self.allow_private_image_hosts)

    def scheduler_settings(self) -> Any:
        """The batching scheduler's settings (`scheduler.SchedulerSettings`), threads sized to the host."""
        from ..scheduler import SchedulerSettings

        cpus = os.cpu_count() or 2
        return SchedulerSettings(
            devices=expand_devices(self.resolved_device()),
            batch_size={"cpu": self.batch_size or 2, "cuda": self.batch_size or 64},
            max_wait=self.max_wait,
            model_budget_bytes=int(self.model_budget_mb * 1024 * 1024),
            compile=self.compile_networks,
            # job preparation and result writing are CPU work: use the cores a GPU host has
            post_threads=max(2, self.workers, cpus // 2),
            prepare_threads=max(2, self.workers, cpus // 4),
            readers=max(2, cpus // 4),
        )

    def changed(self, **values: Any) -> "ServiceConfig":
        """A copy with some settings changed (the others as they are here)."""
        current = {name: getattr(self, name) for name in self.trait_names(config=True)}
        current.update(values)
        return ServiceConfig(**current)


def resolve_device(device: str) -> str:
    """``auto``: ``cuda`` where PyTorch sees a GPU, else ``cpu``; anything else as given."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def expand_devices(device: str) -> list[str]:
    """``cuda`` means every visible GPU (one worker each); anything else is taken as given."""
    if device == "cuda":
        import torch

        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    return [device]


def settings_table() -> str:
    """The settings as a Markdown table (name, default, meaning): the README's, made from the class."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for name, trait in ServiceConfig.class_traits(config=True).items():
        value = trait.default_value
        shown = "(see meaning)" if name == "data_dir" else ("none" if value is None else repr(value))
        if isinstance(trait, Type):
            shown = "none"
        rows.append(f"| `{name}` | `{shown}` | {trait.help} |")
    return "\n".join(rows)
