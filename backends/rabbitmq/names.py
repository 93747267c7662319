"""The names of every queue and exchange under one prefix (docs/rabbitmq.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RabbitNames:
    """Every queue and exchange name of one prefix."""

    prefix: str

    @property
    def reports(self) -> str:
        """The quorum queue of agents' reports for the scheduler."""
        return f"{self.prefix}.reports"

    @property
    def dead(self) -> str:
        """The quorum queue holding dead letters."""
        return f"{self.prefix}.dead"

    @property
    def dlx(self) -> str:
        """The fanout exchange the broker dead-letters into; bound to :attr:`dead`."""
        return f"{self.prefix}.dlx"

    @property
    def events(self) -> str:
        """The topic exchange of events (routing key: the event's topic)."""
        return f"{self.prefix}.events"

    @property
    def control(self) -> str:
        """The fanout exchange of control messages for agents."""
        return f"{self.prefix}.control"

    def task(self, capability: str) -> str:
        """The quorum queue of ``capability``'s task messages."""
        return f"{self.prefix}.task.{capability}"

    def subscriber(self, exchange: str) -> str:
        """A fresh name for one subscriber's queue on ``exchange``."""
        return f"{exchange}.{os.urandom(6).hex()}"

    def queue_arguments(self, name: str, delivery_limit: int) -> dict[str, Any]:
        """The arguments of the durable quorum queue ``name`` (task, reports or dead)."""
        if name == self.dead:
            # No delivery limit: listing dead letters returns them to the queue, which counts.
            return {"x-queue-type": "quorum"}
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": self.dlx,
            # Not "x-dead-letter-strategy: at-least-once": on RabbitMQ 3.10 its worker
            # supervisor dies for good after a few worker crashes (deleting such queues,
            # stop_app/start_app), and from then on every such queue fails (docs/rabbitmq.md).
            # Our own rejects are at-least-once anyway: confirmed publish, then ack.
        }
