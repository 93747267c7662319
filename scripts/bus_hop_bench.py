"""The floor under a lone task and a chain step: one hop through RabbitMQ and one PostgreSQL
commit, measured with the drivers agentdeck uses (aio-pika, asyncpg), nothing of agentdeck.

    .venv/bin/python scripts/bus_hop_bench.py                    # 2,000 hops each kind
    .venv/bin/python scripts/bus_hop_bench.py --hops 500 --kinds quorum,classic
    .venv/bin/python scripts/bus_hop_bench.py --no-uvloop        # asyncio's own event loop

What it times, one message at a time (the next is sent once the last has arrived), each as
median / p95 / p99 over ``--hops`` samples after ``--warmup`` unmeasured ones:

- **hop**: a persistent message published with publisher confirms to a durable queue
  (``quorum``: ``x-queue-type: quorum``, as agentdeck's task and report queues; ``classic``:
  the peers' default) → a consumer on a second connection has it. ``confirm`` is the same
  publish → its confirm, taken on the same hops.
- **round**: a hop out to an echo consumer in a process of its own, which publishes a reply
  (persistent, confirmed) to a second queue → back here: a task out and its report back,
  what every chain step crosses, with nothing done in between.
- **commit**: one single-row ``INSERT`` in its own transaction on PostgreSQL
  (``synchronous_commit`` as the server has it: on here, so an fsync each) — the cheapest
  write a step can make; a chain step makes at least one (its result) before the next goes.

The load (``/proc/loadavg``) and the UTC time are printed at the start and the end: on a
shared machine the figures move with the other work. Queues and the table are removed at the
end (a random prefix; the table in a scratch database dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage, DeliveryMode

BODY = b"x" * 400  # about a task message's size


def stamp() -> str:
    load = open("/proc/loadavg").read().split()[:3]  # noqa: SIM115 - tiny, at start and end
    return f"{datetime.now(UTC):%H:%M:%S} UTC, load {' '.join(load)}"


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return (
        f"{name:<18} n={len(ms):>5}  p50 {statistics.median(ms):6.3f}  p95 {q[94]:6.3f}  "
        f"p99 {q[98]:6.3f}  min {ms[0]:6.3f}  max {ms[-1]:7.3f} ms"
    )


def arguments(kind: str) -> dict[str, str]:
    return {"x-queue-type": kind}


async def hops(url: str, kind: str, n: int, warmup: int) -> tuple[list[float], list[float]]:
    """``n`` publish → consumer hops through a ``kind`` queue, one at a time."""
    name = f"hopbench-{secrets.token_hex(4)}-{kind}"
    publisher = await aio_pika.connect(url)
    consumer = await aio_pika.connect(url)
    try:
        pch = await publisher.channel(publisher_confirms=True)
        cch = await consumer.channel()
        await cch.set_qos(prefetch_count=10)
        queue = await cch.declare_queue(name, durable=True, arguments=arguments(kind))
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def on_message(message: AbstractIncomingMessage) -> None:
            arrived.put_nowait(time.perf_counter())
            await message.ack()

        await queue.consume(on_message)
        hop, confirm = [], []
        for i in range(n + warmup):
            message = aio_pika.Message(BODY, delivery_mode=DeliveryMode.PERSISTENT)
            t0 = time.perf_counter()
            await pch.default_exchange.publish(message, routing_key=name, mandatory=True)
            t1 = time.perf_counter()
            t2 = await arrived.get()
            if i >= warmup:
                hop.append(t2 - t0)
                confirm.append(t1 - t0)
        await cch.queue_delete(name)
        return hop, confirm
    finally:
        await publisher.close()
        await consumer.close()


ECHO = """
import asyncio, sys, aio_pika
from aio_pika.abc import DeliveryMode
async def main(url, inq, outq):
    conn = await aio_pika.connect(url)
    pub = await aio_pika.connect(url)
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=10)
    pch = await pub.channel(publisher_confirms=True)
    queue = await ch.declare_queue(inq, passive=True)
    print("ready", flush=True)
    async with queue.iterator() as it:
        async for m in it:
            reply = aio_pika.Message(m.body, delivery_mode=DeliveryMode.PERSISTENT)
            await pch.default_exchange.publish(reply, routing_key=outq, mandatory=True)
            await m.ack()
asyncio.run(main(*sys.argv[1:4]))
"""


async def rounds(url: str, kind: str, n: int, warmup: int) -> list[float]:
    """``n`` round trips: out through one ``kind`` queue to an echo process, back through
    another (each leg persistent and confirmed), one at a time."""
    out_name = f"hopbench-{secrets.token_hex(4)}-{kind}-out"
    back_name = out_name[:-4] + "-back"
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for name in (out_name, back_name):
            await channel.declare_queue(name, durable=True, arguments=arguments(kind))
        echo = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
            [sys.executable, "-c", ECHO, url, out_name, back_name], stdout=subprocess.PIPE
        )
        try:
            assert echo.stdout is not None
            await asyncio.to_thread(echo.stdout.readline)  # "ready"
            receiver = await aio_pika.connect(url)
            cch = await receiver.channel()
            back = await cch.declare_queue(back_name, passive=True)
            arrived: asyncio.Queue[float] = asyncio.Queue()

            async def on_message(message: AbstractIncomingMessage) -> None:
                arrived.put_nowait(time.perf_counter())
                await message.ack()

            await back.consume(on_message)
            samples = []
            for i in range(n + warmup):
                message = aio_pika.Message(BODY, delivery_mode=DeliveryMode.PERSISTENT)
                t0 = time.perf_counter()
                await channel.default_exchange.publish(message, routing_key=out_name)
                t1 = await arrived.get()
                if i >= warmup:
                    samples.append(t1 - t0)
            await receiver.close()
        finally:
            echo.terminate()
            echo.wait()
        for name in (out_name, back_name):
            await channel.queue_delete(name)
        return samples
    finally:
        await connection.close()


async def commits(dsn: str, n: int, warmup: int) -> list[float]:
    """``n`` single-row INSERTs, each its own transaction, in a scratch database."""
    database = "hopbench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        conn = await asyncpg.connect(dsn.rsplit("/", 1)[0] + f"/{database}")
        try:
            await conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, body text)")
            samples = []
            for i in range(n + warmup):
                t0 = time.perf_counter()
                await conn.execute("INSERT INTO t VALUES ($1, $2)", i, "x" * 100)
                if i >= warmup:
                    samples.append(time.perf_counter() - t0)
            return samples
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def main(args: argparse.Namespace) -> None:
    print(f"start {stamp()}; {args.hops} samples each after {args.warmup} unmeasured")
    print(f"event loop: {type(asyncio.get_running_loop()).__module__}")
    for kind in args.kinds.split(","):
        hop, confirm = await hops(args.amqp, kind, args.hops, args.warmup)
        print(summary(f"hop {kind}", hop))
        print(summary(f"confirm {kind}", confirm))
        if not args.no_round:
            print(summary(f"round {kind}", await rounds(args.amqp, kind, args.hops, args.warmup)))
    if not args.no_commit:
        print(summary("commit", await commits(args.postgres, args.hops, args.warmup)))
    print(f"end   {stamp()}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hops", type=int, default=2000, help="measured samples of each kind")
    p.add_argument("--warmup", type=int, default=50, help="unmeasured samples first")
    p.add_argument("--kinds", default="quorum,classic", help="queue types, comma-separated")
    p.add_argument("--no-round", action="store_true", help="skip the out-and-back rounds")
    p.add_argument("--no-commit", action="store_true", help="skip PostgreSQL's commits")
    p.add_argument("--no-uvloop", action="store_true", help="asyncio's own event loop")
    p.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args()
    if args.no_uvloop:
        asyncio.run(main(args))
    else:
        import uvloop

        uvloop.run(main(args))
