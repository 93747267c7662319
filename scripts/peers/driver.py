"""The driver a peer app runs as ``python -m peers.<app> WORKLOAD N``: sends the work, waits
for it through :mod:`peers.completions` and prints one JSON line with what it measured.

Every time is epoch seconds on this machine, so a send in the driver and a task's end in a
worker process compare directly. Workloads (the same for every peer; counters under
``$PEERS_PREFIX:<workload>``):

- ``latency``: N no-op tasks one after the other, the next sent once the last one ended;
  per task, send -> end (``samples``, seconds).
- ``chain``: one chain of N no-op tasks, each started by the end of the one before (the
  peer's own chaining: Dramatiq's ``pipeline``, Celery's ``chain``); send -> last end
  (``elapsed``).
- ``fill``: N no-op tasks sent as fast as the peer's client can (``submitted``: seconds),
  before the workers start, then ``drain``: waits for those N and gives when the first and
  the last ended (``first``, ``last``). Saturated throughput is measured on a full queue, so
  one client process sending one message at a time does not set the pace.

``latency`` and ``chain`` send a few tasks first (connections open, queues declared), not
measured.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import redis

from peers import completions

SendOne = Callable[[str], None]
SendChain = Callable[[str, int], None]

WORKLOADS = ("latency", "chain", "fill", "drain")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Send one workload to a peer and time it.")
    p.add_argument("workload", choices=WORKLOADS)
    p.add_argument("n", type=int, help="tasks (latency, fill, drain) or chain steps")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole workload")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"n must be at least 1, got {args.n}")
    return args


def run(send_one: SendOne, send_chain: SendChain, argv: list[str] | None = None) -> None:
    """Runs the workload named on the command line and prints its JSON line."""
    args = parse_args(argv)
    client = redis.Redis.from_url(completions.redis_url())
    prefix = os.environ.get("PEERS_PREFIX", "peers")
    deadline = time.monotonic() + args.timeout
    key = f"{prefix}:{'saturated' if args.workload in ('fill', 'drain') else args.workload}"

    def left() -> float:
        return max(deadline - time.monotonic(), 0.001)

    def warm_up() -> None:
        warm = f"{prefix}:warm-{args.workload}"
        for _ in range(5):
            send_one(warm)
        completions.wait_for(client, warm, 5, min(60.0, left()))

    result: dict[str, object] = {"workload": args.workload, "n": args.n}
    try:
        if args.workload == "latency":
            warm_up()
            samples = []
            for i in range(args.n):
                sent = time.time()
                send_one(key)
                samples.append(completions.wait_for(client, key, i + 1, left())[1] - sent)
            result["samples"] = samples
        elif args.workload == "chain":
            warm_up()
            sent = time.time()
            send_chain(key, args.n)
            result["elapsed"] = completions.wait_for(client, key, args.n, left())[1] - sent
        elif args.workload == "fill":
            sent = time.time()
            for _ in range(args.n):
                send_one(key)
            result["submitted"] = time.time() - sent
        else:
            result["first"], result["last"] = completions.wait_for(client, key, args.n, left())
    finally:
        client.close()
    print(json.dumps(result))
