"""How peer workers, which keep no results, tell the benchmark's driver that tasks finished.

Worker side (:func:`record`, called at the end of every task): each process counts the tasks
it finished and keeps when the first and the last one ended; a background thread writes them
to Redis, one hash field per process (``HSET key <pid> "<count> <first> <last>"``), and pushes
a wake-up on ``key:wake``. A task itself does no I/O, only a lock and a few assignments, so
what is measured is the peer, not this bookkeeping. The thread writes at most every ``FLUSH``
seconds, which delays when the driver *notices* but not the times recorded: they are taken
when the task ended.

Driver side (:func:`wait_for`): waits on the wake-up list, sums the counts and returns the
oldest ``first`` and the newest ``last`` once ``n`` tasks were counted, or raises TimeoutError
at its deadline.
"""

from __future__ import annotations

import os
import threading
import time

import redis

FLUSH = 0.002
"""Seconds the writer thread gathers completions before one write (a pipeline per flush)."""

TTL = 3600
"""Seconds the counters outlive their last write, should the benchmark die before its
clean-up."""


def redis_url() -> str:
    return os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")


class _Counter:
    """One process's counts, by key, and the thread writing them (started in that process:
    a thread does not survive a fork, so each worker process makes its own)."""

    def __init__(self, url: str) -> None:
        self.pid = os.getpid()
        self.client = redis.Redis.from_url(url)
        self.lock = threading.Lock()
        self.counts: dict[str, tuple[int, float, float]] = {}
        self.written: dict[str, tuple[int, float, float]] = {}
        self.wake = threading.Event()
        threading.Thread(target=self._write_forever, name="peers-completions", daemon=True).start()

    def record(self, key: str) -> None:
        ended = time.time()
        with self.lock:
            count, first, _ = self.counts.get(key, (0, ended, 0.0))
            self.counts[key] = (count + 1, first, ended)
        self.wake.set()

    def _write_forever(self) -> None:
        field = str(self.pid)
        while True:
            self.wake.wait()
            time.sleep(FLUSH)
            # Cleared before the copy: a task ending after the copy sets it again.
            self.wake.clear()
            with self.lock:
                pending = {k: v for k, v in self.counts.items() if self.written.get(k) != v}
            pipe = self.client.pipeline(transaction=False)
            for key, (count, first, last) in pending.items():
                pipe.hset(key, field, f"{count} {first!r} {last!r}")
                pipe.rpush(f"{key}:wake", 1)
                pipe.expire(key, TTL)
                pipe.expire(f"{key}:wake", TTL)
            pipe.execute()
            self.written.update(pending)


_counter: _Counter | None = None
_making = threading.Lock()


def record(key: str) -> None:
    """Counts one finished task under ``key`` (call it last thing in the task). Thread-safe:
    a process makes one counter, whichever of its threads finishes a task first."""
    global _counter
    counter = _counter
    if counter is None or counter.pid != os.getpid():
        with _making:
            # Two counters in one process would overwrite each other's field.
            if _counter is None or _counter.pid != os.getpid():
                _counter = _Counter(redis_url())
            counter = _counter
    counter.record(key)


def _after_fork() -> None:
    # A child starts with no counter of its own, and with a lock no thread of its holds.
    global _counter, _making
    _counter, _making = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def progress(client: redis.Redis, key: str) -> tuple[int, float, float]:
    """Tasks counted under ``key`` by every process, when the first of them ended and when the
    newest did (0.0 and 0.0 when none)."""
    count, first, last = 0, 0.0, 0.0
    for value in client.hgetall(key).values():
        n, start, end = (float(v) for v in value.split())
        count += int(n)
        first = min(first, start) if first else start
        last = max(last, end)
    return count, first, last


def wait_for(client: redis.Redis, key: str, n: int, timeout: float) -> tuple[float, float]:
    """When the first and the ``n``-th task counted under ``key`` ended (epoch seconds);
    TimeoutError if fewer than ``n`` were counted within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        count, first, last = progress(client, key)
        if count >= n:
            return first, last
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{count} of {n} tasks done under {key} after {timeout:g} s")
        # A wake-up, or a look every second should one be missed.
        client.blpop([f"{key}:wake"], timeout=min(1.0, max(left, 0.01)))
