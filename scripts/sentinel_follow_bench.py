"""Measure how long a RedisRegistry on a Sentinel URL takes to follow a failover after a cut.

    .venv/bin/python scripts/sentinel_follow_bench.py [--runs 3] [--url-options 'k=v&...']
        [--compare]   # alternate runs: the sentinel connections as before 2026-12-07 (the
                      # data connections' 2 s time-outs, redis-py's default 3 retries with
                      # backoff), then as now; A, B, A, B, ...

Starts the single-host cluster of ``tests/integration/test_redis_sentinel.py`` (a primary, a
replica and three sentinels on 127.0.0.1), registers an agent, then freezes the primary and
the first sentinel of the URL with SIGSTOP: their sockets still accept connections but nothing
answers, as with a host cut off the network (no reset, only time-outs). The two other sentinels
promote the replica. Meanwhile the registry heartbeats every 0.2 s, as a standby renews.

Per run it prints: when the sentinels named the new primary (from the cut), when the first
heartbeat succeeded after that, and the difference (the time to follow; this is what the
client adds to Sentinel's own failover). The frozen processes are resumed before the next run
(they come back as replicas).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentdeck.backends import open_registry, redis_url
from agentdeck.backends.redis_url import SentinelTarget
from agentdeck.core.clock import SystemClock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.models import AgentState, new_id
from tests.contract.test_registry import agent
from tests.integration.test_redis_sentinel import SERVICE, sentinel_cluster

HEARTBEAT = 0.2
LIMIT = 60.0


def _switch_time(cluster: object, port: int, old: int, start: float, out: list[float]) -> None:
    """Poll sentinel ``port`` until it names a primary other than ``old``; record when."""
    while time.monotonic() - start < LIMIT:
        try:
            with cluster.client(port) as sentinel:  # type: ignore[attr-defined]
                _, now = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            if int(now) != old:
                out.append(time.monotonic() - start)
                return
        except Exception:
            pass
        time.sleep(0.05)


def _as_before(target: SentinelTarget) -> SentinelTarget:
    """``target`` with the sentinel options open_client had before: the data connections'
    socket time-outs, no retry given (redis-py's default), the credentials."""
    sentinel = {k: v for k, v in target.sentinel.items() if k in ("username", "password")}
    # The time-outs RedisRegistry.start gives the data connections, unless the URL sets them.
    sentinel.update(socket_timeout=2.0, socket_connect_timeout=2.0)
    sentinel.update({k: v for k, v in target.connection.items() if k.startswith("socket_")})
    return replace(target, sentinel=sentinel)


async def one_run(cluster: object, options: str, before: bool = False) -> tuple[float, float]:
    parse = redis_url.parse_sentinel_url
    if before:
        redis_url.parse_sentinel_url = lambda url, **kw: _as_before(parse(url, **kw))  # type: ignore[assignment]
    url = f"{cluster.url}?prefix=b-{new_id()}"  # type: ignore[attr-defined]
    if options:
        url += f"&{options}"
    registry = open_registry(url, clock=SystemClock())
    await registry.start()
    # The defaults RedisRegistry.start passes for the data connections (2 s time-outs).
    redis_url.parse_sentinel_url = parse
    try:
        await registry.register(agent("a1", "echo"), 30.0)
        old = cluster.master()  # type: ignore[attr-defined]
        processes = cluster._processes  # type: ignore[attr-defined]
        ports = [cluster.primary, cluster.replica]  # type: ignore[attr-defined]
        frozen = [processes[ports.index(old)], processes[2]]  # the primary, the URL's first
        start = time.monotonic()
        for p in frozen:
            os.kill(p.pid, signal.SIGSTOP)
        switched: list[float] = []
        watcher = threading.Thread(
            target=_switch_time,
            args=(cluster, cluster.sentinels[1], old, start, switched),  # type: ignore[attr-defined]
        )
        watcher.start()
        followed = None
        while time.monotonic() - start < LIMIT:
            try:
                await registry.heartbeat("a1", 30.0, in_flight=0, state=AgentState.UP)
                if switched:
                    followed = time.monotonic() - start
                    break
            except BackendUnavailable:
                pass
            await asyncio.sleep(HEARTBEAT)
        watcher.join()
        for p in frozen:
            os.kill(p.pid, signal.SIGCONT)
        if followed is None or not switched:
            raise SystemExit(f"no follow within {LIMIT:.0f} s (switch: {switched})")
        return switched[0], followed
    finally:
        redis_url.parse_sentinel_url = parse
        await registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url-options", default="", help="extra URL query, e.g. a=1&b=2")
    parser.add_argument("--compare", action="store_true", help="alternate before/now runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, sentinel_cluster(Path(folder)) as cluster:
        for run in range(args.runs):
            if run:
                time.sleep(3)  # the resumed ones rejoin as replicas
                cluster._discovered() or time.sleep(5)
            before = args.compare and run % 2 == 0
            switched, followed = asyncio.run(one_run(cluster, args.url_options, before))
            print(
                f"run {run + 1} ({'before' if before else 'now'}): switch at {switched:.1f} s "
                "after the cut, first write at "
                f"{followed:.1f} s: followed {followed - switched:.1f} s after the switch",
                flush=True,
            )


if __name__ == "__main__":
    main()
