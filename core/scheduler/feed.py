"""The events feed: what the scheduler did, published on the bus's events stream.

The control centre, the CLI's ``--watch`` and other nodes follow this stream. It is best
effort: the Store holds the truth, so a publish that fails is logged and the rest of that batch
dropped, and the scheduler goes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from agentdeck.core.errors import AgentdeckError
from agentdeck.core.events import task_event_body, usage_event, workflow_event
from agentdeck.core.messages import Event, encode
from agentdeck.core.models import Command, Task, Usage, Workflow
from agentdeck.core.ports import Bus
from agentdeck.core.scheduler.observer import SchedulerObserver

log = structlog.get_logger(__name__)


class EventsFeed(SchedulerObserver):
    """Publishes an event per task transition, workflow change and finished command, and one
    per round that recorded usage."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def __repr__(self) -> str:
        return "<EventsFeed>"

    async def tasks_changed(
        self,
        tasks: Sequence[Task],
        released: Sequence[Task],
        kinds: Mapping[str, str | None],
        now: float,
    ) -> None:
        # Encoded straight from the tasks (no Event model each: see encode_event).
        bodies = [task_event_body(t, now, kinds.get(t.id)) for t in tasks]
        bodies += [task_event_body(t, now, "ready") for t in released]
        await self.publish_encoded(bodies)

    async def usage_recorded(self, used: Sequence[tuple[Task, Usage]], now: float) -> None:
        if used:
            await self.publish([usage_event(used, now)])

    async def workflow_changed(self, workflow: Workflow, now: float) -> None:
        await self.publish([workflow_event(workflow, now)])

    async def workflow_finished(self, workflow: Workflow, now: float) -> None:
        await self.publish([workflow_event(workflow, now)])

    async def command_finished(self, command: Command) -> None:
        data = {
            "id": command.id,
            "action": command.action,
            "target": command.target,
            "status": command.status.value,
            "result": command.result,
        }
        at = command.finished_at if command.finished_at is not None else command.created_at
        await self.publish([Event(topic="command", at=at, data=data)])

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish ``events`` in order; on the first failure log it and drop the rest."""
        await self.publish_encoded([encode(event) for event in events])

    async def publish_encoded(self, bodies: Sequence[bytes]) -> None:
        """Publish encoded events in order; on the first failure log it and drop the rest."""
        publish = self.bus.publish_event
        try:
            for body in bodies:
                await publish(body)
        except AgentdeckError as exc:  # watchers are best effort; the Store has the truth
            log.warning("event_publish_failed", error=str(exc))
