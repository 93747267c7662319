"""``agentdeck show WF/KEY --follow``: a task's states, progress and streamed output as they come.

The events stream carries the news (``task`` events, and the ``progress`` and ``output`` events
agents publish while a handler runs); the Store is the truth, read again whenever the task's
own event arrives and every ``poll`` seconds anyway (events are best-effort: one may be missed),
so following ends when the task ends whatever was lost on the way. With the embedded default
the bus lives in the process running the node: another process sees no events, only the
states the Store records, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

from agentdeck.core.errors import AgentdeckError
from agentdeck.core.messages import Event, decode
from agentdeck.core.models import Task
from agentdeck.core.ports import Store
from agentdeck.core.states import TASK_TERMINAL
from agentdeck.tui.progress import progress_line

#: Seconds between reads of the Store while no event of the task arrives.
POLL = 1.0


class FollowPrinter:
    """What to print for each thing heard about the task, keeping streamed text (which need not
    end its lines) apart from the lines about states and progress."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._mid_line = False
        self._shown: tuple[str, int] | None = None

    def _line(self, text: str) -> None:
        if self._mid_line:
            self._write("\n")
            self._mid_line = False
        self._write(text + "\n")

    def task(self, task: Task) -> None:
        """The task as the Store has it: one line each time its state or attempt changes."""
        shown = (task.status.value, task.attempt)
        if shown == self._shown:
            return
        self._shown = shown
        agent = f" on {task.agent_id}" if task.agent_id else ""
        line = f"== {task.id} {task.status.value} (attempt {task.attempt}{agent})"
        if task.error is not None:
            line += f": {task.error.kind}: {task.error.message}"
        self._line(line)
        if task.status in TASK_TERMINAL and task.output is not None:
            self._line(json.dumps(task.output, default=str))

    def event(self, event: Event) -> None:
        """A ``progress`` event as a line; an ``output`` event's text as it is."""
        if event.topic == "output":
            text = str(event.data.get("text") or "")
            if text:
                self._write(text)
                self._mid_line = not text.endswith("\n")
        elif (line := progress_line(event)) is not None:
            self._line(line)

    def end(self) -> None:
        """Finish a line of streamed text left open."""
        if self._mid_line:
            self._write("\n")
            self._mid_line = False


async def follow_task(
    store: Store,
    events: Callable[[], AsyncIterator[bytes]] | None,
    task_id: str,
    printer: FollowPrinter,
    *,
    poll: float = POLL,
) -> Task:
    """Print ``task_id``'s states, progress and output until it ends; returns it as it ended.

    ``events`` None: only the states, read from the Store every ``poll`` seconds. Progress and
    output of an attempt older than the one the Store shows are not printed."""
    news: asyncio.Queue[Event] = asyncio.Queue()

    async def listen(stream: Callable[[], AsyncIterator[bytes]]) -> None:
        async for body in stream():
            try:
                event = decode(body, Event)
            except AgentdeckError:
                continue
            if event.data.get("task_id") == task_id:
                news.put_nowait(event)

    listener = None if events is None else asyncio.create_task(listen(events))
    await asyncio.sleep(0)  # (let the subscription start before the first read of the Store)
    loop = asyncio.get_running_loop()
    try:
        while True:
            task = await store.get_task(task_id)
            printer.task(task)
            if task.status in TASK_TERMINAL:
                printer.end()
                return task
            read_again = loop.time() + poll
            while (left := read_again - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(news.get(), left)
                except TimeoutError:
                    break
                if event.topic == "task":
                    break  # the task moved: read the Store now
                attempt = event.data.get("attempt")
                if not isinstance(attempt, int) or attempt >= task.attempt:
                    printer.event(event)
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
