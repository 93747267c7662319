"""The DAG map: one line per level of a workflow, one coloured mark per task.

Readable for 5 tasks and for 500: a level that fits shows one mark per task in key order; a level
with more tasks than the width shows counts per state instead (``✓480 ✗3 ▶12``). Levels come
from :func:`core.dag.levels`, so tasks on one line can run side by side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from rich.text import Text
from textual.widgets import Static

from agentdeck.core.models import Task
from agentdeck.core.states import TaskStatus

#: One glyph per state, so the map reads without colour too (high-contrast, screen readers).
GLYPHS: dict[TaskStatus, str] = {
    TaskStatus.BLOCKED: "·",
    TaskStatus.READY: "○",
    TaskStatus.DISPATCHED: "◔",
    TaskStatus.RUNNING: "▶",
    TaskStatus.SUCCEEDED: "✓",
    TaskStatus.FAILED: "✗",
    TaskStatus.RETRYING: "↻",
    TaskStatus.CANCELLED: "⊘",
    TaskStatus.SKIPPED: "-",
}


def render_map(
    tasks: Sequence[Task],
    depth: dict[str, int],
    width: int,
    style: Callable[[TaskStatus], str],
) -> Text:
    """The map as text: ``L0 ✓✓✗`` per level, or counts when a level is wider than ``width``."""
    by_level: dict[int, list[Task]] = {}
    for task in sorted(tasks, key=lambda t: (depth.get(t.key, 0), t.key)):
        by_level.setdefault(depth.get(task.key, 0), []).append(task)
    out = Text()
    room = max(8, width - 6)
    for level, members in sorted(by_level.items()):
        if out:
            out.append("\n")
        out.append(f"L{level:<3} ", style="dim")
        if len(members) <= room:
            for task in members:
                out.append(GLYPHS[task.status], style=style(task.status))
        else:
            counts = Counter(t.status for t in members)
            for status in TaskStatus:
                if counts[status]:
                    out.append(f"{GLYPHS[status]}{counts[status]} ", style=style(status))
    return out


class DagMap(Static):
    """A compact, always-whole picture of a workflow's DAG (the table below has the details)."""

    def show(
        self, tasks: Sequence[Task], depth: dict[str, int], style: Callable[[TaskStatus], str]
    ) -> None:
        """Draw ``tasks`` at their levels, colouring each state with ``style``."""
        self.update(render_map(tasks, depth, self.size.width or 76, style))
