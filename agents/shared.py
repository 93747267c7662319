"""One delivery carrying several tasks (a ``tasks`` batch, :func:`core.messages.batch`), shared
by the attempts it holds.

The scheduler groups tasks under load; the agent runs each as if it came alone, through a
:class:`Part` that looks like a delivery of its own. The broker's delivery is settled once,
when every part is: so it is acked only after every task's result report is on the bus
(at-least-once holds for the batch as a whole). What one part asks for decides for all:

- any ``requeue`` (a shutdown, or a result the bus would not take) gives the whole message
  back: every task of it runs again somewhere, and the scheduler's compare-and-set drops the
  results it already applied as stale;
- else any ``reject`` dead-letters the whole message with that part's reason (the tasks
  whose results are in are done all the same; the others end by their dispatch deadline);
- else it is acked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from agentdeck.core.ports import Delivery

Outcome = Literal["ack", "requeue", "reject"]


class Shared:
    """The broker's ``delivery`` of ``parts`` tasks, settled once all of them are."""

    def __init__(self, delivery: Delivery, parts: int) -> None:
        if parts < 1:
            raise ValueError(f"a shared delivery needs at least one part, got {parts!r}")
        self.delivery = delivery
        self.left = parts
        self.outcome: Outcome = "ack"
        self.reason = ""

    def part(self, headers: Mapping[str, str] | None, body: bytes) -> Part:
        """The delivery one task of the batch is run with (``headers``: its own, or the
        message's when the batch carries none; ``body``: the task's own message)."""
        return Part(self, self.delivery.headers if headers is None else headers, body)

    async def settled(self, how: Outcome, reason: str = "") -> None:
        """One part is done with ``how``; the last one settles the broker's delivery."""
        if how == "requeue":
            self.outcome = "requeue"
        elif how == "reject" and self.outcome == "ack":
            self.outcome, self.reason = "reject", reason
        self.left -= 1
        if self.left > 0:
            return
        if self.outcome == "ack":
            await self.delivery.ack()
        elif self.outcome == "requeue":
            await self.delivery.requeue()
        else:
            await self.delivery.reject(f"{self.reason} (a batch: every task of it set aside)")

    def __repr__(self) -> str:
        return f"<Shared left={self.left} outcome={self.outcome}>"


class Part:
    """One task of a shared delivery, settled like a delivery of its own (only the first
    settle counts)."""

    __slots__ = ("body", "headers", "redelivered", "settled", "shared")

    def __init__(self, shared: Shared, headers: Mapping[str, str], body: bytes) -> None:
        self.shared = shared
        self.headers = headers
        self.body = body
        self.redelivered = shared.delivery.redelivered
        self.settled = False

    async def ack(self) -> None:
        """This task's result is on the bus."""
        await self._settle("ack")

    async def requeue(self) -> None:
        """This task must run again: the whole message goes back (see the module)."""
        await self._settle("requeue")

    async def reject(self, reason: str) -> None:
        """This task's message is for a person: the whole message is dead-lettered unless
        another part asks for a requeue (see the module)."""
        await self._settle("reject", reason)

    async def _settle(self, how: Outcome, reason: str = "") -> None:
        if self.settled:
            return
        self.settled = True
        await self.shared.settled(how, reason)

    def __repr__(self) -> str:
        return f"<Part of {self.shared!r} settled={self.settled}>"
