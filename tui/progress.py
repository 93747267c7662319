"""Running tasks' live progress and streamed output, as the events stream brings them.

Agents publish ``progress`` (``fraction``, ``message``) and ``output`` (``text``) events while a
handler runs (docs/messages.md, ``agents/feed.py``). :class:`LiveProgress` keeps, per task, the
newest progress of its newest attempt and the tail of the text that attempt streamed: a new
attempt starts afresh, an older attempt's late events are ignored. Everything is capped (tasks
followed, characters kept per task), so a chatty fleet cannot grow it. Plain data, no Textual:
the task screen and ``agentdeck show --follow`` both read it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from agentdeck.core.messages import Event

#: Tasks whose progress is kept (the least recently heard of drop out first).
TASKS_KEPT = 500
#: Characters of streamed output kept per task (the oldest drop off).
TEXT_KEPT = 20_000
#: Cells of a progress bar.
BAR_CELLS = 20
TOPICS = frozenset({"progress", "output"})


@dataclass
class TaskProgress:
    """One task's newest attempt as its agent reports it."""

    attempt: int
    agent_id: str = ""
    fraction: float | None = None
    message: str | None = None
    at: float | None = None
    """When the newest progress was reported (None: none yet, only output)."""
    text: str = ""
    """The tail of the streamed output (at most :data:`TEXT_KEPT` characters)."""
    dropped: int = 0
    """Characters of streamed output that fell off the front."""
    events: int = field(default=0, repr=False)

    def bar(self, cells: int = BAR_CELLS) -> str:
        """``[███████·····]  42%`` (no fraction reported: ``[ ? ]``)."""
        if self.fraction is None:
            return "[ ? ]"
        filled = round(cells * self.fraction)
        return f"[{'█' * filled}{'·' * (cells - filled)}] {self.fraction * 100:3.0f}%"

    def lines(self, count: int) -> list[str]:
        """The last ``count`` lines of the streamed output."""
        return self.text.splitlines()[-count:] if count > 0 else []


class LiveProgress:
    """The newest progress and output of the tasks heard of lately (see the module's notes)."""

    def __init__(self, tasks_kept: int = TASKS_KEPT, text_kept: int = TEXT_KEPT) -> None:
        self._tasks: OrderedDict[str, TaskProgress] = OrderedDict()
        self._tasks_kept, self._text_kept = tasks_kept, text_kept

    def __repr__(self) -> str:
        return f"<LiveProgress tasks={len(self._tasks)}>"

    def __len__(self) -> int:
        return len(self._tasks)

    def record(self, event: Event) -> bool:
        """Keep a ``progress`` or ``output`` event; False (and nothing kept) for any other
        event, one with no task or attempt, or one of an attempt older than the task's newest."""
        if event.topic not in TOPICS:
            return False
        d = event.data
        task_id, attempt = d.get("task_id"), d.get("attempt")
        if not isinstance(task_id, str) or not task_id:
            return False
        if isinstance(attempt, bool) or not isinstance(attempt, int):
            return False
        now = self._tasks.get(task_id)
        if now is not None and attempt < now.attempt:
            return False
        if now is None or attempt > now.attempt:
            now = TaskProgress(attempt)
            self._tasks[task_id] = now
        self._tasks.move_to_end(task_id)
        now.agent_id = str(d.get("agent_id") or now.agent_id)
        now.events += 1
        if event.topic == "progress":
            fraction = d.get("fraction")
            now.fraction = float(fraction) if isinstance(fraction, int | float) else None
            message = d.get("message")
            now.message = message if isinstance(message, str) else None
            now.at = event.at
        else:
            self._append(now, str(d.get("text") or ""))
        while len(self._tasks) > self._tasks_kept:
            self._tasks.popitem(last=False)
        return True

    def _append(self, progress: TaskProgress, text: str) -> None:
        progress.text += text
        over = len(progress.text) - self._text_kept
        if over > 0:
            progress.text = progress.text[over:]
            progress.dropped += over

    def of(self, task_id: str) -> TaskProgress | None:
        """What ``task_id``'s newest attempt reported (None: nothing heard)."""
        return self._tasks.get(task_id)


def progress_line(event: Event) -> str | None:
    """A ``progress`` event as one line for a terminal (``[attempt 2] [████··] 40% parsing``);
    None for any other topic."""
    if event.topic != "progress":
        return None
    d = event.data
    fraction = d.get("fraction")
    shown = TaskProgress(0, fraction=float(fraction) if isinstance(fraction, int | float) else None)
    message = d.get("message")
    parts = [f"[attempt {d.get('attempt')}]", shown.bar()]
    if isinstance(message, str) and message:
        parts.append(message)
    return " ".join(parts)
