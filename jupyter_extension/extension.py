"""The `ExtensionApp`: configuration traits and the service's start and stop hooks."""

from __future__ import annotations

import getpass
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Bool, Float, Int, List, Type, Unicode, default

from cianna_otf_server.models import DEFAULT_MODEL
from cianna_otf_server.server import ServiceContext, ServiceSettings, make_handlers

from .handlers import JupyterServiceHandler
from .static_files import static_handlers

SERVICE_PATH = "cianna-otf/"


class CiannaOTF(ExtensionApp):
    """Hosts the detection job service in a Jupyter server (configured as ``c.CiannaOTF...``)."""

    name = "cianna_otf_jupyter"
    description = "CIANNA On-The-Fly: deep-learning source detection jobs (IVOA UWS) in Jupyter"
    load_other_extensions = True

    data_dir = Unicode(help="Where jobs (SQLite) and their files live.").tag(config=True)
    models_dirs = List(Unicode(), help="Extra model directories (cards + weights).").tag(config=True)
    data_roots = List(Unicode(), help="Directories from which IMAGE may be given as a path.").tag(config=True)
    allow_http_images = Bool(True, help="Allow IMAGE as an http(s) URL fetched by the server.").tag(config=True)
    device = Unicode("auto", help="'auto' (first GPU if any, else CPU), 'cpu', 'cuda', 'cuda:1', ...").tag(config=True)
    workers = Int(1, help="Jobs run at once by the local worker pool.").tag(config=True)
    default_model = Unicode(DEFAULT_MODEL, help="Model used when a job names none.").tag(config=True)
    max_upload_bytes = Int(1024**3, help="Largest accepted upload (bytes); larger gets 413.").tag(config=True)
    max_image_pixels = Int(32768 * 32768, help="Largest image (pixels) a job may process.").tag(config=True)
    max_queued_per_owner = Int(100, help="Queued or running jobs per user before 503.").tag(config=True)
    max_queued_total = Int(1000, help="Queued or running jobs in total before 503.").tag(config=True)
    default_execution_duration = Int(3600, help="Seconds a job may run unless it asks otherwise.").tag(config=True)
    max_execution_duration = Int(24 * 3600, help="Upper bound of EXECUTIONDURATION (seconds).").tag(config=True)
    default_destruction_days = Float(7.0, help="Days before a job and its files are deleted.").tag(config=True)
    max_wait_seconds = Float(300.0, help="Cap of blocking WAIT (pyvo gives up at 600 s).").tag(config=True)
    sync_timeout_seconds = Float(120.0, help="How long /sync waits before redirecting to the job.").tag(config=True)
    single_user_owner = Unicode(
        help="Owner of every job when Jupyter's own token/password identity provider is in use (one "
             "principal, which Jupyter names with a random id per session); default: the account name. "
             "Ignored under JupyterHub and other multi-user identity providers, where the user name is the owner.",
    ).tag(config=True)
    executor = Unicode("batching", help="'batching' (the batching scheduler) or 'pool' (one job per "
                       "worker thread).").tag(config=True)
    batch_size = Int(0, help="Patches per batch; 0: 2 on a CPU, 64 on a GPU.").tag(config=True)
    max_wait = Float(0.02, help="Seconds a ready patch may wait for a fuller batch.").tag(config=True)
    model_budget_mb = Float(4096.0, help="Memory for resident networks per device (MB).").tag(config=True)
    compile_networks = Bool(False, help="torch.compile the networks on GPUs (faster once each batch size "
                            "has compiled, which takes a minute on first use).").tag(config=True)
    executor_class = Type(
        default_value=None, allow_none=True, klass=object,
        help="Callable or class building the executor from (runner, settings), replacing 'executor' "
             "(for example a distributed engine); default: none.",
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(Path(jupyter_data_dir()) / "cianna-otf")

    @default("single_user_owner")
    def _default_single_user_owner(self) -> str:
        try:
            return getpass.getuser()
        except Exception:  # pragma: no cover - no account name (some containers)
            return "owner"

    def _settings(self) -> ServiceSettings:
        base_url = self.serverapp.base_url if self.serverapp is not None else "/"
        return ServiceSettings(
            data_dir=Path(self.data_dir),
            root_path=url_path_join(base_url, SERVICE_PATH),
            models_dirs=[Path(p) for p in self.models_dirs],
            data_roots=[Path(p) for p in self.data_roots],
            allow_http_images=self.allow_http_images,
            device=_resolve_device(self.device),
            workers=self.workers,
            default_model=self.default_model,
            max_upload_bytes=self.max_upload_bytes,
            max_image_pixels=self.max_image_pixels,
            max_queued_per_owner=self.max_queued_per_owner,
            max_queued_total=self.max_queued_total,
            default_execution_duration=self.default_execution_duration,
            max_execution_duration=self.max_execution_duration,
            default_destruction_days=self.default_destruction_days,
            max_wait_seconds=self.max_wait_seconds,
            sync_timeout_seconds=self.sync_timeout_seconds,
            executor=self.executor,
            batch_size=self.batch_size,
            max_wait=self.max_wait,
            model_budget_mb=self.model_budget_mb,
            compile_networks=self.compile_networks,
            executor_factory=self.executor_class,
        )

    def initialize_handlers(self) -> None:
        self.context = ServiceContext(self._settings())
        self.handlers.extend(
            make_handlers("/" + SERVICE_PATH, JupyterServiceHandler, {"context": self.context, "single_user_owner": self.single_user_owner})
        )
        # Aladin Lite for the notebook view (fetch_aladin.py), at {base_url}cianna-otf/static/
        self.handlers.extend(static_handlers("/" + SERVICE_PATH))

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        self.context.start()

    async def stop_extension(self) -> None:
        self.context.stop()


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"
