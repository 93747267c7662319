"""Dramatiq on RabbitMQ, as the issue measured it: no result backend, the default middleware,
workers started as ``dramatiq peers.dramatiq_app --processes 2 --threads 8``.

Configured by the environment (set by scripts/bench_peers.py): ``PEERS_AMQP_URL``,
``PEERS_QUEUE`` (a queue of this run's own), ``PEERS_REDIS_URL`` (completions).
``python -m peers.dramatiq_app WORKLOAD N`` runs the driver (:mod:`peers.driver`).
"""

from __future__ import annotations

import os
import sys

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from peers import completions, driver

# A pipeline's message holds the next one, which holds the next: 1,000 steps nest about
# 3,000 levels deep, past the JSON codec's default recursion limit.
sys.setrecursionlimit(20_000)

broker = RabbitmqBroker(url=os.environ.get("PEERS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
dramatiq.set_broker(broker)
QUEUE = os.environ.get("PEERS_QUEUE", "peers-dramatiq")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(key: str) -> None:
    """Does nothing but count itself done."""
    completions.record(key)


def send_one(key: str) -> None:
    noop.send(key)


def send_chain(key: str, steps: int) -> None:
    messages = [noop.message_with_options(args=(key,), pipe_ignore=True) for _ in range(steps)]
    dramatiq.pipeline(messages).run()


if __name__ == "__main__":
    try:
        driver.run(send_one, send_chain)
    finally:
        broker.close()
