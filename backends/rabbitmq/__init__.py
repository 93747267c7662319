"""The RabbitMQ bus: ``RabbitBus`` (``amqp://user:pass@host:5672/vhost``, ``amqps://``, or
several brokers of a cluster: ``amqp://user:pass@h1:5672,h2:5672,h3:5672/vhost``).

Modules: :mod:`~backends.rabbitmq.bus` (the Bus), :mod:`~backends.rabbitmq.url` (URLs and
options), :mod:`~backends.rabbitmq.names` (queue and exchange names),
:mod:`~backends.rabbitmq.transport` (the robust connection and channel, coalesced writes),
:mod:`~backends.rabbitmq.consumer` (task and report consumers, deliveries),
:mod:`~backends.rabbitmq.subscription` (event and control subscribers),
:mod:`~backends.rabbitmq.events` (events sent in batches),
:mod:`~backends.rabbitmq.dead_letters` (the dead queue) and
:mod:`~backends.rabbitmq.failures` (which errors are worth retrying).
"""

from __future__ import annotations

from agentdeck.backends.rabbitmq.bus import RabbitBus

__all__ = ["RabbitBus"]
