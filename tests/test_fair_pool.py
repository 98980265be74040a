"""The owner-fair thread pool: owners take turns and none holds every thread."""

from __future__ import annotations

import threading
import time

from cianna_otf_server.jobs import OwnerFairPool


def test_no_owner_holds_every_thread_and_owners_take_turns():
    pool = OwnerFairPool(3)  # at most 2 for one owner
    release = threading.Event()
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    order: list[str] = []
    lock = threading.Lock()

    def task(owner: str, block: bool) -> None:
        with lock:
            running[owner] = running.get(owner, 0) + 1
            most[owner] = max(most.get(owner, 0), running[owner])
            order.append(owner)
        if block:
            release.wait(10)
        with lock:
            running[owner] -= 1

    for _ in range(6):
        pool.submit("alice", lambda: task("alice", True))
    time.sleep(0.2)
    done = threading.Event()
    pool.submit("bob", lambda: (task("bob", False), done.set()))
    assert done.wait(5), "bob waited behind alice's tasks"
    assert most["alice"] == 2 and pool.queued("alice") == 4
    release.set()
    deadline = time.monotonic() + 10
    while pool.queued() and time.monotonic() < deadline:
        time.sleep(0.05)
    pool.shutdown()
    assert order.count("alice") == 6


def test_round_robin_between_owners_on_one_thread():
    pool = OwnerFairPool(1)
    gate = threading.Event()
    order: list[str] = []
    pool.submit("first", lambda: gate.wait(5))
    time.sleep(0.1)
    for owner in ("a", "a", "a", "b", "b", "c"):
        pool.submit(owner, lambda owner=owner: order.append(owner))
    gate.set()
    deadline = time.monotonic() + 5
    while len(order) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    pool.shutdown()
    assert order == ["a", "b", "c", "a", "b", "a"]


def test_a_failing_task_does_not_end_its_worker():
    pool = OwnerFairPool(1)
    done = threading.Event()
    pool.submit(None, lambda: 1 / 0)
    pool.submit(None, done.set)
    assert done.wait(5)
    pool.shutdown()
