"""Celery on RabbitMQ, as the issue measured it: no results (``task_ignore_result``, no
result backend), Celery's other defaults (acks before the task runs, prefetch multiplier 4),
workers started as ``celery -A peers.celery_app worker -P prefork -c 2``.

Configured by the environment (set by scripts/bench_peers.py): ``PEERS_AMQP_URL``,
``PEERS_QUEUE`` (a queue and exchange of this run's own), ``PEERS_REDIS_URL`` (completions).
``python -m peers.celery_app WORKLOAD N`` runs the driver (:mod:`peers.driver`).
"""

from __future__ import annotations

import os

from celery import Celery, chain

from peers import completions, driver

QUEUE = os.environ.get("PEERS_QUEUE", "peers-celery")

app = Celery("peers", broker=os.environ.get("PEERS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    # Nothing on the broker but the benchmark's queue: no remote control, no events.
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="peers.noop")
def noop(key: str) -> None:
    """Does nothing but count itself done."""
    completions.record(key)


def main() -> None:
    with app.producer_or_acquire() as producer:

        def send_one(key: str) -> None:
            noop.apply_async((key,), producer=producer)

        def send_chain(key: str, steps: int) -> None:
            chain(noop.si(key) for _ in range(steps)).apply_async(producer=producer)

        driver.run(send_one, send_chain)


if __name__ == "__main__":
    main()
