"""Scale-out on Ray: the batching scheduler's batches run on the actors of a Ray cluster.

The service keeps everything but the forward pass: jobs and their state (its own store),
preparation, patch cutting, batch composition across jobs and owners, decoding and catalogues.
Each device worker of the scheduler drives one Ray actor (one per GPU of the cluster, or per
few CPUs of a CPU cluster) that holds its own LRU of resident networks and runs exactly the
local device runner's computation (`DeviceRunner`: normalisation, forward, box decoding), so
the catalogues equal the local executor's. A batch travels as one float32 array put in Ray's
object store (read zero-copy by the actor); its decoded outputs come back as an array. A model's
card and weights bytes are put in the object store once per version, and fetched by an actor
only when it loads that model: nodes need not share a file system with the service.

Batches go to an actor that already holds their model when one is idle (model affinity), and
are loaded elsewhere when the holders are busy. When an actor or its node dies, the batches it
had are queued again for any other actor (at least once; outputs of a lost batch never arrive,
so each patch is decoded once) and the actor is replaced. While no actor is available, jobs wait
or fail after `RaySettings.timeout`, as configured.

Ray is imported only when this executor starts (``pip install 'cianna-otf[ray]'``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ComputeUnavailableError
from ..jobs import JobRunner
from ._cache import ModelCache, ModelKey
from ._device import DeviceRunner
from ._metrics import SchedulerMetrics
from ._scheduler import BatchingScheduler, DeviceLost, SchedulerSettings

log = logging.getLogger(__name__)

__all__ = ["RayDeviceActor", "RayDeviceRunner", "RayExecutor", "RaySettings", "RayUnavailable", "import_ray"]


class RayUnavailable(ComputeUnavailableError, RuntimeError):
    """No Ray actor could take the work (cluster unreachable, or no resources for an actor)."""


def import_ray() -> Any:
    """The `ray` module, or an error saying how to install it."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RayUnavailable("the Ray executor needs Ray: pip install 'cianna-otf[ray]'") from exc
    return ray


@dataclass
class RaySettings:
    """Where the Ray cluster is and how the actors are shaped."""

    address: str = ""  # "" : $RAY_ADDRESS, else a private single-machine Ray; "auto"; "host:port"; "ray://..."
    actors: int = 0  # 0: one per GPU of the cluster, or one per `actor_cpus` CPUs of a CPU cluster
    actor_cpus: float = 1.0  # CPUs each actor reserves (and the PyTorch threads of a CPU actor)
    actor_gpus: float = -1.0  # GPUs each actor holds; -1: 1 where the cluster has GPUs, else 0
    unreachable: str = "fail"  # no actor available for `timeout` s: "fail" the jobs, or "wait"
    timeout: float = 60.0  # seconds
    batch_size: int = 0  # patches per batch; 0: 64 on GPU actors, 2 on CPU actors
    namespace: str = "cianna-otf"

    @classmethod
    def from_config(cls, config: Any) -> "RaySettings":
        """The settings of a `ServiceConfig` (its ``ray_*`` traits and `batch_size`)."""
        return cls(address=config.ray_address, actors=config.ray_actors, actor_cpus=config.ray_actor_cpus,
                   actor_gpus=config.ray_actor_gpus, unreachable=config.ray_unreachable,
                   timeout=config.ray_timeout, batch_size=config.batch_size)


# -- the actor ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shipment:
    """A model version as the object store holds it: ``(card, weights bytes)`` behind `ref`."""

    group: tuple
    ref: Any


class RayDeviceActor:
    """Runs batches on the device Ray gave it, with its own LRU of resident networks.

    A plain class: `RayExecutor` wraps it with ``ray.remote`` when it creates actors, so this
    module imports without Ray.
    """

    def __init__(self, name: str, use_gpu: bool, threads: float, budget_bytes: int, compile: bool) -> None:
        import torch

        if not use_gpu:  # Ray reserves `threads` CPUs for this actor: PyTorch should use no more
            torch.set_num_threads(max(1, int(threads)))
        self.name = name
        self.runner = DeviceRunner("cuda" if use_gpu else "cpu", compile=compile)
        self.runner.bind_thread()
        self.cache = ModelCache(self._load, budget_bytes)
        self.cards: dict[tuple, Any] = {}
        self.batches = 0

    def ping(self) -> dict[str, Any]:
        """Where the actor runs and what it holds (answered once it is up)."""
        import ray

        context = ray.get_runtime_context()
        return {"node": context.get_node_id(), "pid": os.getpid(), "device": self.runner.device,
                "resident": self.resident()}

    def resident(self) -> list[tuple]:
        """The batch groups (model version, precision) whose networks are loaded here."""
        return [key.group for key in self.cache.keys()]

    def run(self, key: ModelKey, shipment: list[_Shipment], pixels: np.ndarray) -> tuple[np.ndarray, float, list]:
        """One batch ``[N, C, H, W]`` of raw patches: its decoded outputs, the seconds it took
        here, and the groups now resident (for the scheduler's affinity)."""
        start = time.perf_counter()
        self.runner.bind_thread()
        local = dataclasses.replace(key, device=self.runner.device)
        network = self.cache.get(shipment[0], local)
        outputs, _ = self.runner.forward(network, self.cards[key.group], pixels)
        self.batches += 1
        return outputs, time.perf_counter() - start, self.resident()

    def _load(self, shipment: _Shipment, device: str, precision: str) -> Any:
        """Fetch the card and weights from the object store and load them as the service would."""
        import ray

        from ..pipeline import prepare_network

        card, blob = ray.get(shipment.ref)
        with tempfile.TemporaryDirectory(prefix="cianna-otf-model-") as folder:
            path = Path(folder) / Path(card.weights_file).name
            path.write_bytes(blob)
            network = prepare_network(dataclasses.replace(card, weights_file=path), device=device,
                                      precision=precision)
        self.cards[shipment.group] = card
        return DeviceRunner.optimise(network, device)


# -- the cluster, as the service sees it ------------------------------------------------------------
class _Cluster:
    """The connection to Ray, the model shipments, and the actor factory, shared by the runners."""

    MAX_SHIPMENTS = 8

    def __init__(self, settings: RaySettings, scheduler_settings: SchedulerSettings) -> None:
        self.settings = settings
        self.scheduler_settings = scheduler_settings
        self.ray: Any = None
        self.connected = False
        self.owns = False  # this process called ray.init (and so calls ray.shutdown)
        self.error: str | None = None
        self.gpus = 0.0
        self.actor_gpus = 0.0
        self._lock = threading.Lock()
        self._connecting: threading.Thread | None = None
        self._shipments: dict[tuple, _Shipment] = {}
        self._actor_class: Any = None

    @property
    def address(self) -> str:
        return self.settings.address or os.environ.get("RAY_ADDRESS", "")

    def connecting(self) -> bool:
        """Whether a connection attempt is under way."""
        return self._connecting is not None and self._connecting.is_alive()

    def connect_async(self) -> None:
        """Try to connect on a thread of its own (``ray.init`` may wait long on a dead address)."""
        with self._lock:
            if self.connected or self.connecting():
                return
            self._connecting = threading.Thread(target=self.connect, daemon=True, name="otf-ray-connect")
            self._connecting.start()

    def connect(self) -> bool:
        try:
            ray = import_ray()
            if not ray.is_initialized():
                address = self.address
                self._probe(address)
                ray.init(address=address or None, namespace=self.settings.namespace, ignore_reinit_error=True,
                         logging_level=logging.WARNING, configure_logging=False)
                self.owns = True
            resources = ray.cluster_resources()
        except Exception as exc:  # noqa: BLE001 - reported by the executor
            self.error = str(exc) if isinstance(exc, RayUnavailable) else \
                f"the Ray cluster {self.address or '(local)'} cannot be reached: {type(exc).__name__}: {exc}"
            log.warning("%s", self.error)
            return False
        self.ray = ray
        self.gpus = float(resources.get("GPU", 0.0))
        wanted = self.settings.actor_gpus
        self.actor_gpus = (1.0 if self.gpus > 0 else 0.0) if wanted < 0 else float(wanted)
        self.error = None
        self.connected = True
        log.info("connected to the Ray cluster %s: %d node(s), %g CPUs, %g GPUs", self.address or "(local)",
                 len(self.alive_nodes()), resources.get("CPU", 0.0), self.gpus)
        return True

    def _probe(self, address: str) -> None:
        """A plain TCP connection to ``host:port`` first: ``ray.init`` retries for minutes on a dead one."""
        if not address or address in ("auto", "local") or "://" in address or ":" not in address:
            return
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, self.settings.timeout)):
                pass
        except (OSError, ValueError) as exc:
            raise RayUnavailable(f"the Ray cluster at {address} cannot be reached: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None

    def alive_nodes(self) -> list[dict]:
        return [node for node in self.ray.nodes() if node.get("Alive")]

    def auto_actors(self) -> int:
        """One actor per GPU of the cluster, or on CPUs one per `actor_cpus` CPUs of each node."""
        if self.actor_gpus > 0:
            gpus = float(self.ray.cluster_resources().get("GPU", 0.0))
            return max(1, int(gpus // self.actor_gpus))
        per = max(self.settings.actor_cpus, 1e-3)
        count = sum(int(node.get("Resources", {}).get("CPU", 0.0) // per) for node in self.alive_nodes())
        return max(1, count)

    def batch_size(self) -> int:
        return self.settings.batch_size or (64 if self.actor_gpus > 0 else 2)

    def new_actor(self, name: str) -> Any:
        ray = self.ray
        if self._actor_class is None:
            self._actor_class = ray.remote(RayDeviceActor)
        s = self.scheduler_settings
        return self._actor_class.options(
            num_cpus=self.settings.actor_cpus, num_gpus=self.actor_gpus, max_restarts=0, max_concurrency=1,
            scheduling_strategy="SPREAD",
        ).remote(name, self.actor_gpus > 0, self.settings.actor_cpus, s.model_budget_bytes, s.compile)

    def shipment(self, card: Any, key: ModelKey) -> _Shipment:
        """The object-store copy of this model version (card and weights bytes), put once."""
        with self._lock:
            found = self._shipments.pop(key.group, None)
            if found is None:
                blob = Path(card.weights_file).read_bytes()
                found = _Shipment(key.group, self.ray.put((card, blob)))
            self._shipments[key.group] = found  # most recently used last
            while len(self._shipments) > self.MAX_SHIPMENTS:
                self._shipments.pop(next(iter(self._shipments)))
            return found

    def close(self) -> None:
        with self._lock:
            self._shipments.clear()
        if self.owns and self.ray is not None:
            self.ray.shutdown()
        self.connected = False


# -- the scheduler's view of one actor --------------------------------------------------------------
@dataclass
class _RemoteBatch:
    ref: Any
    started: float
    count: int
    actor: Any


class RayDeviceRunner:
    """Drives one Ray actor for a device worker of the scheduler (the `DeviceRunner` interface).

    `launch` returns as soon as the batch is sent, so the worker composes the next one while the
    actor computes (``pipelined``); `collect` waits for the outputs. A dead actor turns into
    `DeviceLost` (the scheduler queues the batch again) and is replaced.
    """

    remote = True  # the scheduler hands `launch` the model key, not a loaded network
    pipelined = True
    is_cuda = False  # no pinned host buffers: patches leave through the object store
    use_graphs = False

    def __init__(self, cluster: _Cluster, name: str, peers: list["RayDeviceRunner"]) -> None:
        self.cluster = cluster
        self.device = name
        self.peers = peers
        self.actor: Any = None
        self.alive = False
        self.retired = False  # more actors than the cluster now holds (auto sizing): stays idle
        self.node = ""
        self.resident: set[tuple] = set()
        self.in_flight = 0
        self.batches = 0
        self.losses = 0
        self.lost_patches = 0
        self.remote_seconds = 0.0
        self.waiting_since: float | None = None
        self._ping: Any = None

    # -- readiness ------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Whether the actor is up; creates it when needed, and waits at most 0.2 s here."""
        if self.alive:
            return True
        if self.retired or not self.cluster.connected:
            return False
        ray = self.cluster.ray
        if self.actor is None:
            self.actor = self.cluster.new_actor(self.device)
            self._ping = self.actor.ping.remote()
            self.waiting_since = time.monotonic()
        done, _ = ray.wait([self._ping], timeout=0.2)
        if not done:
            return False
        try:
            info = ray.get(self._ping)
        except Exception as exc:  # noqa: BLE001 - the new actor died too: try again
            log.warning("Ray actor %s did not start: %s", self.device, exc)
            self._drop(self.actor)
            time.sleep(0.5)
            return False
        self.node = str(info["node"])
        self.resident = set(map(tuple, info["resident"]))
        self.alive, self.waiting_since = True, None
        log.info("Ray actor %s is up on node %s (pid %s, %s)", self.device, self.node[:12], info["pid"], info["device"])
        return True

    def _drop(self, actor: Any) -> None:
        """Forget a dead (or unreachable) actor; the next `ready` makes a new one."""
        if actor is None or actor is not self.actor:
            return
        self.actor, self.alive, self._ping = None, False, None
        self.resident = set()
        try:
            self.cluster.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    # -- model affinity ---------------------------------------------------------------------------
    def affinity(self, group: tuple) -> int:
        """0: the model is resident here and no holder is less loaded; 1: run it here (loading
        it if needed: every holder is busier); 2: leave it to a less loaded holder for now."""
        holders = [r for r in self.peers if r is not self and r.alive and group in r.resident]
        if group in self.resident:
            return 2 if any(r.in_flight < self.in_flight for r in holders) else 0
        return 2 if any(r.in_flight <= self.in_flight for r in holders) else 1

    # -- running --------------------------------------------------------------------------------
    def bind_thread(self) -> None:
        """Nothing to bind: the device is the actor's."""

    def launch(self, network: ModelKey, card: Any, patches: list[Any]) -> _RemoteBatch:
        """Send one batch: `network` is the model key (the actor loads the network itself)."""
        start = time.perf_counter()
        actor = self.actor
        if actor is None or not self.alive:
            raise DeviceLost(f"Ray actor {self.device} is not available")
        ray = self.cluster.ray
        shipment = self.cluster.shipment(card, network)
        pixels = ray.put(np.stack([p.pixels for p in patches]).astype(np.float32, copy=False))
        ref = actor.run.remote(network, [shipment], pixels)  # in a list: fetched by the actor only to load
        self.in_flight += 1
        self.resident.add(network.group)
        return _RemoteBatch(ref, start, len(patches), actor)

    def collect(self, launched: _RemoteBatch) -> tuple[np.ndarray, float]:
        """The decoded outputs of a sent batch, and the seconds from sending to receiving them."""
        ray = self.cluster.ray
        try:
            outputs, seconds, resident = ray.get(launched.ref)
        except ray.exceptions.RayTaskError as exc:  # the batch itself failed (model file, memory): its error
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, BaseException) else exc) from None
        except ray.exceptions.RayError as exc:  # the actor, its node or the object went away
            self.losses += 1
            self.lost_patches += launched.count
            self._drop(launched.actor)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise DeviceLost(f"Ray actor {self.device} was lost: {type(exc).__name__}: {first}"[:300]) from exc
        finally:
            self.in_flight -= 1
        if launched.actor is self.actor:
            self.resident = set(map(tuple, resident))
        self.batches += 1
        self.remote_seconds += seconds
        return outputs, time.perf_counter() - launched.started

    def memory_bytes(self) -> int | None:
        return None


# -- metrics ---------------------------------------------------------------------------------------
class _RayGauges:
    """Per-actor state, losses and the backlog per actor (an autoscaling signal), at scrape time."""

    def __init__(self, executor: "RayExecutor") -> None:
        import weakref

        self._executor = weakref.ref(executor)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("cianna_otf_ray_actor_up", "Whether the Ray actor is running (1) or being "
                               "placed / replaced (0)", labels=["actor", "node"])
        in_flight = GaugeMetricFamily("cianna_otf_ray_actor_in_flight", "Batches sent to the actor and not "
                                      "yet returned", labels=["actor"])
        lost = CounterMetricFamily("cianna_otf_ray_lost_batches", "Batches lost with their actor and queued "
                                   "again", labels=["actor"])
        requeued = CounterMetricFamily("cianna_otf_ray_requeued_patches", "Patches of lost batches queued "
                                       "again", labels=["actor"])
        remote = CounterMetricFamily("cianna_otf_ray_actor_compute_seconds", "Seconds the actor spent "
                                     "running batches (the rest of cianna_otf_batch_seconds is transport)",
                                     labels=["actor"])
        backlog = GaugeMetricFamily("cianna_otf_ray_backlog_patches_per_actor", "Patches waiting per running "
                                    "actor, all models (scale the GPU nodes on it)")
        executor = self._executor()
        if executor is not None:
            for runner in list(executor.devices):
                up.add_metric([runner.device, runner.node[:12]], 1.0 if runner.alive else 0.0)
                in_flight.add_metric([runner.device], runner.in_flight)
                lost.add_metric([runner.device], runner.losses)
                requeued.add_metric([runner.device], runner.lost_patches)
                remote.add_metric([runner.device], runner.remote_seconds)
            backlog.add_metric([], executor.backlog_per_actor())
        yield from (up, in_flight, lost, requeued, remote, backlog)


# -- the executor ------------------------------------------------------------------------------------
class RayExecutor(BatchingScheduler):
    """The batching scheduler with its device workers on the actors of a Ray cluster.

    Parameters
    ----------
    runner : JobRunner
        Prepares and finishes jobs in this process, as for the local scheduler.
    config : ServiceConfig or RaySettings, optional
        A `ServiceConfig` (as ``executor_class(runner, config)`` is called) gives both the Ray
        settings (``ray_*``) and the scheduler's; a `RaySettings` gives the Ray settings only.
    metrics : SchedulerMetrics, optional
    settings : SchedulerSettings, optional
        Batching, threads and model budget (per actor); its ``devices`` are ignored.
    """

    MONITOR_INTERVAL = 0.5  # seconds
    RESIZE_INTERVAL = 10.0  # seconds between checks of the cluster's size (auto sizing)
    CONNECT_GRACE = 30.0  # seconds a first connection attempt may take beyond `timeout` before it counts as failed

    def __init__(self, runner: JobRunner, config: Any = None, metrics: SchedulerMetrics | None = None,
                 settings: SchedulerSettings | None = None) -> None:
        if isinstance(config, RaySettings) or config is None:
            ray_settings = config or RaySettings()
        else:
            ray_settings = RaySettings.from_config(config)
            settings = settings or config.scheduler_settings()
        if ray_settings.unreachable not in ("fail", "wait"):
            raise ValueError(f"ray unreachable must be 'fail' or 'wait', not {ray_settings.unreachable!r}")
        settings = settings or SchedulerSettings()
        first = [f"ray:{i}" for i in range(max(1, ray_settings.actors))]
        # a copy: per-actor batch sizes are filled in below and once the cluster's GPUs are known
        settings = dataclasses.replace(settings, batch_size=dict(settings.batch_size), devices=first)
        self.ray_settings = ray_settings
        self.cluster = _Cluster(ray_settings, settings)
        self._peers: list[RayDeviceRunner] = []
        for name in first:
            settings.batch_size[name] = int(settings.batch_size.get("ray") or self.cluster.batch_size())
        super().__init__(runner, settings, metrics, device_runner_factory=self._runner)
        self._peers[:] = self.devices
        self._monitor: threading.Thread | None = None
        self._stopped = threading.Event()
        self._unavailable_since: float | None = None
        self._resized = 0.0
        self.metrics.registry.register(_RayGauges(self))

    def _batch(self) -> int:
        """Patches per batch: the scheduler settings' ``"ray"`` entry, else the Ray settings'."""
        return int(self.settings.batch_size.get("ray") or self.cluster.batch_size())

    def _runner(self, name: str, metrics: SchedulerMetrics) -> RayDeviceRunner:
        return RayDeviceRunner(self.cluster, name, self._peers)

    # -- JobExecutor -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        super().start()
        self._stopped.clear()
        self._unavailable_since = time.monotonic()
        self.cluster.connect_async()
        self._monitor = threading.Thread(target=self._watch, daemon=True, name="otf-ray-monitor")
        self._monitor.start()

    def shutdown(self, wait: bool = True) -> None:
        self._stopped.set()
        super().shutdown(wait=wait)
        if self._monitor is not None:
            self._monitor.join(5 if wait else 0)
            self._monitor = None
        if self.cluster.connected:
            for runner in list(self.devices):
                runner._drop(runner.actor)
        self.cluster.close()

    # -- the cluster ----------------------------------------------------------------------------------
    def _watch(self) -> None:
        """Connect, size the actor set, and apply `unreachable` while no actor can take work."""
        while not self._stopped.wait(self.MONITOR_INTERVAL):
            try:
                if not self.cluster.connected:
                    self.cluster.connect_async()
                elif time.monotonic() - self._resized >= self.RESIZE_INTERVAL:
                    self._resize()
                self._check_available()
            except Exception:  # noqa: BLE001 - the monitor must keep running
                log.exception("Ray executor monitor failed")

    def _resize(self) -> None:
        """Grow (or retire) device workers to the actor count asked for or allowed by the cluster."""
        self._resized = time.monotonic()
        wanted = self.ray_settings.actors or self.cluster.auto_actors()
        batch = self._batch()
        for runner in self.devices:
            self.settings.batch_size[runner.device] = batch
        for index, runner in enumerate(self.devices):
            runner.retired = index >= wanted and not runner.alive
            if runner.retired and runner.actor is not None:  # a pending actor would ask for a node
                runner._drop(runner.actor)
        while len(self.devices) < wanted and self._running:
            name = f"ray:{len(self.devices)}"
            self.settings.batch_size[name] = batch
            runner = self._runner(name, self.metrics)
            self.devices.append(runner)
            self._peers.append(runner)
            thread = threading.Thread(target=self._device_loop, args=(runner,), daemon=True, name=f"otf-device-{name}")
            thread.start()
            self._threads.append(thread)
            log.info("Ray executor: device worker %s added (%d wanted)", name, wanted)

    def _check_available(self) -> None:
        now = time.monotonic()
        if any(r.alive for r in self.devices):
            self._unavailable_since = None
            return
        if self._unavailable_since is None:
            self._unavailable_since = now
        if self.ray_settings.unreachable != "fail" or now - self._unavailable_since < self.ray_settings.timeout:
            return
        if not self.cluster.connected and self.cluster.error is None and self.cluster.connecting() and \
                now - self._unavailable_since < self.ray_settings.timeout + self.CONNECT_GRACE:
            return  # the first attempt (importing Ray, its handshake) has not told yet
        with self._cond:
            works = list(self._works.values())
        if not works:
            return
        error = RayUnavailable(f"{self.unavailable_reason()} (for {self.ray_settings.timeout:g} s; with "
                               f"ray_unreachable='wait' jobs wait for the cluster instead)")
        for work in works:
            self._fail_work(work, error)

    def unavailable_reason(self) -> str:
        """Why no actor runs, in words."""
        if not self.cluster.connected:
            return self.cluster.error or f"the Ray cluster {self.cluster.address or '(local)'} is not connected yet"
        need = f"{self.cluster.actor_gpus:g} GPU" if self.cluster.actor_gpus > 0 else \
            f"{self.ray_settings.actor_cpus:g} CPU"
        return f"no Ray actor could be placed on the cluster {self.cluster.address or '(local)'} (each needs {need})"

    # -- autoscaling hooks -----------------------------------------------------------------------------
    def backlog_per_actor(self) -> float:
        """Patches waiting (all models) per running actor; the whole backlog while none runs."""
        waiting = sum(self.queue_depths().values())
        running = sum(1 for r in self.devices if r.alive)
        return float(waiting) / running if running else float(waiting)

    def autoscale_status(self) -> dict[str, Any]:
        """What an autoscaler needs: the queue per model, and the actors running, starting, retired."""
        return {
            "queue_patches": self.queue_depths(),
            "backlog_patches_per_actor": self.backlog_per_actor(),
            "actors_running": sum(1 for r in self.devices if r.alive),
            "actors_starting": sum(1 for r in self.devices if not r.alive and not r.retired),
            "actors_retired": sum(1 for r in self.devices if r.retired),
            "batch_size": self._batch(),
            "actor_batches": {r.device: r.batches for r in self.devices},
        }

    def actors_wanted(self, target_backlog_batches: float = 4.0) -> int:
        """Actors that would hold the backlog to `target_backlog_batches` batches each."""
        waiting = sum(self.queue_depths().values())
        return max(1, math.ceil(waiting / (self._batch() * max(target_backlog_batches, 1e-9))))

