"""The Ray executor on a real two-node Ray cluster started on this machine (CPU only).

The cluster (a head and a worker node, each a ``ray start --block`` process of this test run,
with a private temporary folder and free ports) lives for the module. Where Ray is not installed
the tests that need it are skipped, unless ``CIANNA_OTF_REQUIRE_RAY=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from cianna_otf_server.scheduler import BatchingScheduler, RayExecutor, RaySettings, SchedulerSettings
from cianna_otf_server.scheduler._ray import RayDeviceRunner
from cianna_otf_server.sky.simulate import write_simulation
from cianna_otf_server.uws import Phase

sys.path.insert(0, str(Path(__file__).parent))
from executor_harness import Harness  # noqa: E402

REQUIRED = os.environ.get("CIANNA_OTF_REQUIRE_RAY") == "1"
BATCH_LOG = re.compile(r"batch model=\S+ precision=\S+ size=(\d+) jobs=\d+ owners=\d+ device=(\S+)")


def _ray_or_skip():
    try:
        import ray
    except ImportError:
        reason = "Ray is not installed (pip install 'cianna-otf[ray]')"
        if REQUIRED:
            pytest.fail(f"{reason} (CIANNA_OTF_REQUIRE_RAY=1)")
        pytest.skip(reason)
    return ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    """A Ray head and worker nodes, each a ``ray start --block`` process group of this test run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
        self.env.pop("RAY_ADDRESS", None)
        # one authentication mode for the nodes and the driver, whatever ~/.ray holds
        self.env.setdefault("RAY_AUTH_MODE", "disabled")
        self.nodes: list[subprocess.Popen] = []

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")
        process = subprocess.Popen([self.ray_cli, "start", "--block", "--disable-usage-stats", *args],
                                   stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.nodes.append(process)
        return process

    def start_head(self) -> None:
        self._start(["--head", f"--port={self.port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                     "--object-store-memory=200000000", "--include-dashboard=false",
                     f"--dashboard-agent-listen-port={_free_port()}",
                     f"--temp-dir={self.folder / 'ray'}"], "head")
        self._wait_port()

    def add_node(self, name: str, cpus: int = 2) -> subprocess.Popen:
        return self._start([f"--address={self.address}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
                            "--object-store-memory=100000000", f"--dashboard-agent-listen-port={_free_port()}"], name)

    def _wait_port(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.nodes[0].poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"the Ray head did not start: {(self.folder / 'head.log').read_text(errors='replace')}")

    def wait_nodes(self, ray, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for n in ray.nodes() if n["Alive"]) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} Ray nodes were not up within {timeout} s")
            time.sleep(0.2)

    @staticmethod
    def stop_node(*processes: subprocess.Popen, grace: float = 5.0) -> None:
        """End nodes: each ``ray start --block`` process group (the node's processes) gets SIGTERM,
        then SIGKILL after `grace` seconds."""
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # what is left of the group: workers, agents
            except ProcessLookupError:
                pass
            process.wait(5)

    def stop(self) -> None:
        self.stop_node(*self.nodes)


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and one worker node (2 CPUs each), and this process connected to them as a driver."""
    ray = _ray_or_skip()
    folder = Path(tempfile.mkdtemp(prefix="cianna-otf-ray-"))
    cluster = _Cluster(folder)
    try:
        cluster.start_head()
        cluster.add_node("worker")
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        os.environ.setdefault("RAY_AUTH_MODE", cluster.env["RAY_AUTH_MODE"])
        ray.init(address=cluster.address, namespace="cianna-otf-tests", logging_level=logging.WARNING,
                 configure_logging=False)
        cluster.wait_nodes(ray, 2)
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-images")
    write_simulation(root / "small.fits", 256, seed=1)  # 6 x 6 = 36 patches of 64 px
    write_simulation(root / "big.fits", 1024, seed=2)  # 22 x 22 = 484 patches
    return root


@pytest.fixture
def make_harness(tmp_path, images):
    made = []

    def make(make_executor) -> Harness:
        harness = Harness(tmp_path / f"h{len(made)}", images, make_executor)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def _ray_harness(make_harness, cluster: _Cluster, actors: int = 2, batch: int = 4) -> Harness:
    settings = RaySettings(address=cluster.address, actors=actors, actor_cpus=1, timeout=60)
    h = make_harness(lambda runner: RayExecutor(runner, settings,
                                                settings=SchedulerSettings(batch_size={"ray": batch}, max_wait=0.02)))
    _wait_actors(h.executor, actors)
    return h


def _wait_actors(executor: RayExecutor, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for r in executor.devices if r.alive) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} Ray actors were not up within {timeout} s: {executor.autoscale_status()}")
        time.sleep(0.1)


_local_rows: dict[str, object] = {}


def _local(make_harness, image: str):
    """The catalogue of `image` from the local batching scheduler (computed once per module)."""
    if image not in _local_rows:
        h = make_harness(lambda runner: BatchingScheduler(runner, SchedulerSettings(batch_size={"cpu": 4},
                                                                                    max_wait=0.02)))
        job = h.wait(h.submit(image))
        assert job.phase == Phase.COMPLETED, job.error
        _local_rows[image] = h.rows(job.job_id)
    return _local_rows[image]


def _assert_same_rows(got, expected) -> None:
    assert len(got) == len(expected) > 0
    assert got.colnames == expected.colnames
    order_got, order_exp = np.lexsort((got["dec"], got["ra"])), np.lexsort((expected["dec"], expected["ra"]))
    for name in got.colnames:
        a, b = np.asarray(got[name])[order_got], np.asarray(expected[name])[order_exp]
        if a.dtype.kind in "fc":
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=name)
        else:
            assert (a == b).all(), name


def _metric_text(executor) -> str:
    from prometheus_client import generate_latest

    return generate_latest(executor.metrics.registry).decode()


# -- end to end (the fast set) --------------------------------------------------------------------
def test_jobs_spread_over_actors_and_equal_the_local_executor(ray_cluster, make_harness, caplog) -> None:
    caplog.set_level(logging.INFO, logger="cianna_otf_server.scheduler")
    expected = _local(make_harness, "small.fits")
    h = _ray_harness(make_harness, ray_cluster, actors=2)
    nodes = {runner.node for runner in h.executor.devices}
    assert len(nodes) == 2  # one actor on each node
    jobs = [h.submit("small.fits", owner=f"user{i % 2}") for i in range(6)]
    for job_id in jobs:
        job = h.wait(job_id)
        assert job.phase == Phase.COMPLETED, job.error
        assert job.progress_done == job.progress_total == 36
        _assert_same_rows(h.rows(job_id), expected)
    per_actor: dict[str, int] = {}
    for record in caplog.records:
        if (m := BATCH_LOG.search(record.getMessage())) and m.group(2).startswith("ray:"):
            per_actor[m.group(2)] = per_actor.get(m.group(2), 0) + int(m.group(1))
    assert set(per_actor) == {"ray:0", "ray:1"}, per_actor  # both actors ran batches
    assert sum(per_actor.values()) == 6 * 36  # every patch exactly once
    text = _metric_text(h.executor)
    for actor in ("ray:0", "ray:1"):
        assert re.search(rf'cianna_otf_batch_size_count\{{device="{actor}",model="tiny-yolo"\}} [1-9]', text), text
        assert f'cianna_otf_ray_actor_up{{actor="{actor}"' in text
    assert "cianna_otf_ray_backlog_patches_per_actor 0.0" in text
    assert h.executor.queue_depths() == {}


def test_affinity_prefers_the_actor_that_holds_the_model() -> None:
    """The rank a device worker gives a due batch (no cluster needed)."""
    peers: list[RayDeviceRunner] = []
    a, b, c = (RayDeviceRunner(None, f"ray:{i}", peers) for i in range(3))  # type: ignore[arg-type]
    peers += [a, b, c]
    for runner in peers:
        runner.alive = True
    model = ("tiny-yolo", "/m/tiny.dat", (1, 2), "fp32")
    a.resident = {model}
    assert a.affinity(model) == 0  # resident here
    assert b.affinity(model) == 2  # an idle holder exists: leave it to a
    a.in_flight = 1
    assert b.affinity(model) == 1  # the holder is busy: load it here
    b.resident = {model}
    b.in_flight = 0
    assert a.affinity(model) == 2  # a less loaded holder (b) exists
    assert b.affinity(model) == 0
    a.alive = b.alive = False
    assert c.affinity(model) == 1  # holders that are not up do not count


class _FakeWork:
    """Just what `_next_batch` reads of a job's queue."""

    def __init__(self, ready: int) -> None:
        from cianna_otf_server.scheduler import ReadyPatch

        now = time.monotonic() - 1.0  # due long ago
        self.owner, self.job_id, self.remaining, self.submitted_at, self.in_flight = "alice", "j", ready, 0.0, 0
        self.ready = deque(ReadyPatch(None, np.zeros((1, 4, 4), np.float32), now) for _ in range(ready))

    def oldest_ready(self):
        return self.ready[0].ready_at if self.ready else None

    def take(self, count: int):
        taken = [self.ready.popleft() for _ in range(min(count, len(self.ready)))]
        self.in_flight += len(taken)
        return taken

    def needs_fill(self) -> bool:
        return False


def test_a_batch_waits_briefly_for_the_idle_actor_holding_its_model(monkeypatch) -> None:
    from cianna_otf_server.scheduler import _scheduler
    from cianna_otf_server.scheduler._cache import ModelKey
    from cianna_otf_server.scheduler._scheduler import _Group

    class Remote:
        def __init__(self, name: str, rank: int) -> None:
            self.device, self.rank, self.is_cuda = name, rank, False

        def affinity(self, group) -> int:
            return self.rank

    scheduler = BatchingScheduler(None, SchedulerSettings(devices=["x", "y"], max_wait=0.01),  # type: ignore[arg-type]
                                  device_runner_factory=lambda name, metrics: Remote(name, 0 if name == "x" else 2))
    holder, other = scheduler.devices
    key = ModelKey("m", "1", "/m.dat", (1, 2), "fp32", "any")
    work = _FakeWork(4)
    scheduler._groups[key.group] = _Group(key, None, [work])  # type: ignore[arg-type, list-item]
    scheduler._running = True
    monkeypatch.setattr(_scheduler, "AFFINITY_GRACE", 60.0)
    work.ready[0].ready_at = time.monotonic()  # just due: within the grace
    assert scheduler._next_batch(other, block=False) is None  # left to the idle holder
    picked = scheduler._next_batch(holder, block=False)
    assert picked is not None and sum(len(p) for _, p in picked[1]) == 2
    monkeypatch.setattr(_scheduler, "AFFINITY_GRACE", 0.0)
    picked = scheduler._next_batch(other, block=False)  # the holder did not come: run it here
    assert picked is not None and sum(len(p) for _, p in picked[1]) == 2


_UNREACHABLE = textwrap.dedent("""
    import json, sys, tempfile, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from yolo_models import write_tiny_yolo
    from cianna_otf_server.jobs import DetectionParameterPolicy, DetectionRunner
    from cianna_otf_server.models import ModelRegistry
    from cianna_otf_server.scheduler import RayExecutor, RaySettings
    from cianna_otf_server.uws import JobFiles, JobService, JobStore, Phase
    root, images, address = Path(tempfile.mkdtemp()), Path(sys.argv[2]), sys.argv[3]
    write_tiny_yolo(root / "models")
    registry = ModelRegistry([root / "models"], use_environment=False)
    out = {}
    for mode in ("fail", "wait"):
        store, files = JobStore(root / f"{mode}.sqlite"), JobFiles(root / mode)
        executor = RayExecutor(DetectionRunner(registry, files, device="cpu"),
                               RaySettings(address=address, actors=1, unreachable=mode, timeout=1.0))
        service = JobService(store, files, executor, DetectionParameterPolicy(registry, data_roots=[images]),
                             lambda j, p="": f"/async/{j}/{p}")
        service.startup()
        job_id = service.create("alice", [("IMAGE", "small.fits"), ("MODEL", "tiny-yolo"), ("PHASE", "RUN")]).job_id
        deadline = time.monotonic() + (20 if mode == "fail" else 3)
        while time.monotonic() < deadline and store.get(job_id).phase not in (Phase.COMPLETED, Phase.ERROR):
            time.sleep(0.05)
        job = store.get(job_id)
        out[mode] = [job.phase.value, job.error.message if job.error else None,
                     job.error.error_type if job.error else None]
        service.shutdown()
        store.close()
    print(json.dumps(out))
""")


def test_an_unreachable_cluster_fails_jobs_with_a_clear_error_or_keeps_them_waiting(images) -> None:
    """In a process of its own: Ray connects a process to one cluster only."""
    _ray_or_skip()
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", _UNREACHABLE, str(Path(__file__).parent), str(images), address],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    phase, message, error_type = out["fail"]
    assert phase == "ERROR" and error_type == "transient"  # the cluster's absence: the job may run later
    assert message.startswith(f"the Ray cluster at {address} cannot be reached"), message  # not "internal error"
    assert "ray_unreachable='wait'" in message
    assert out["wait"] == ["EXECUTING", None, None]  # waits for the cluster instead


# -- failures (a killed actor in the fast set, a lost node slow) --------------------------------------------------------------------------------
def _kill_when_busy(ray, h: Harness, runner, job_id: str) -> None:
    """Kill `runner`'s actor while it has a batch in flight and the job is part done."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = h.store.get(job_id)
        if job.progress_done > 0 and runner.in_flight > 0 and runner.actor is not None:
            ray.kill(runner.actor, no_restart=True)
            return
        time.sleep(0.002)
    raise AssertionError("the actor was never busy")


def test_an_actor_killed_mid_batch_loses_no_job(ray_cluster, make_harness, caplog) -> None:
    import ray

    caplog.set_level(logging.INFO, logger="cianna_otf_server.scheduler")
    expected_big, expected_small = _local(make_harness, "big.fits"), _local(make_harness, "small.fits")
    h = _ray_harness(make_harness, ray_cluster, actors=2)
    big = [h.submit("big.fits", owner="survey") for _ in range(2)]
    small = [h.submit("small.fits", owner=f"click{i}") for i in range(3)]
    victim = h.executor.devices[0]
    _kill_when_busy(ray, h, victim, big[0])
    for job_id in big + small:
        job = h.wait(job_id, timeout=240)
        assert job.phase == Phase.COMPLETED, job.error
        assert job.progress_done == job.progress_total
        _assert_same_rows(h.rows(job_id), expected_big if job_id in big else expected_small)
    assert victim.losses >= 1 and victim.lost_patches > 0
    assert any("lost a batch" in r.getMessage() and "queued again" in r.getMessage() for r in caplog.records)
    sizes = [int(m.group(1)) for r in caplog.records
             if (m := BATCH_LOG.search(r.getMessage())) and m.group(2).startswith("ray:")]
    assert sum(sizes) == 2 * 484 + 3 * 36  # lost batches never reached their jobs: each patch decoded once
    _wait_actors(h.executor, 2)  # the killed actor was replaced
    assert re.search(r'cianna_otf_ray_lost_batches_total\{actor="ray:0"\} [1-9]', _metric_text(h.executor))
    assert not [j for j in h.store.ids_in_phase([Phase.EXECUTING, Phase.QUEUED])]


@pytest.mark.slow
def test_a_node_that_dies_loses_no_job(ray_cluster, make_harness) -> None:
    """A third node joins, takes an actor, and is stopped while its actor has work."""
    import ray

    expected = _local(make_harness, "big.fits")
    node = ray_cluster.add_node("doomed", cpus=1)
    ray_cluster.wait_nodes(ray, 3)
    h = _ray_harness(make_harness, ray_cluster, actors=3, batch=4)
    doomed_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU") == 1.0)
    victims = [r for r in h.executor.devices if r.node == doomed_node]
    assert victims, "no actor was placed on the third node"
    jobs = [h.submit("big.fits", owner=f"user{i}") for i in range(3)]
    deadline = time.monotonic() + 120
    while not (victims[0].in_flight > 0 and h.store.get(jobs[0]).progress_done > 0):
        assert time.monotonic() < deadline
        time.sleep(0.002)
    ray_cluster.stop_node(node)
    for job_id in jobs:
        job = h.wait(job_id, timeout=300)
        assert job.phase == Phase.COMPLETED, job.error
        _assert_same_rows(h.rows(job_id), expected)
    assert sum(r.losses for r in victims) >= 1


def test_serve_options_choose_the_ray_executor(tmp_path) -> None:
    """``--executor ray --ray-address ...`` builds a `RayExecutor` with those settings (Ray is not
    imported until it starts)."""
    import argparse

    from cianna_otf_server.cli.serve import register, service_config
    from cianna_otf_server.server._context import ServiceContext

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    config = service_config(parser.parse_args([
        "serve", "--data-dir", str(tmp_path), "--executor", "ray", "--ray-address", "10.0.0.1:6379",
        "--ray-actors", "3", "--ray-unreachable", "wait", "--ray-timeout", "5", "--batch-size", "32"]))
    context = ServiceContext(config)
    try:
        executor = context.executor
        assert isinstance(executor, RayExecutor)
        s = executor.ray_settings
        assert (s.address, s.actors, s.unreachable, s.timeout, s.batch_size) == ("10.0.0.1:6379", 3, "wait", 5.0, 32)
        assert [d.device for d in executor.devices] == ["ray:0", "ray:1", "ray:2"]
        assert executor.settings.batch_for("ray:1") == 32
    finally:
        context.store.close()
    with pytest.raises(Exception, match="ray_unreachable"):
        service_config(parser.parse_args(["serve", "--executor", "ray", "--ray-unreachable", "never"]))
    imported = subprocess.run([sys.executable, "-c", "import sys, cianna_otf_server.server, cianna_otf_server.scheduler; "
                               "print('ray' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert imported.stdout.strip() == "False", imported.stderr  # an optional extra, imported only when used
