"""docs/messages.md describes the messages as core/messages.py defines them: every field of
each, examples that decode, and the keys each event topic carries."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

from agentdeck.agents.feed import AttemptFeed, FeedStream
from agentdeck.backends.memory import MemoryBus
from agentdeck.core.clock import FakeClock
from agentdeck.core.events import task_event, usage_event, workflow_event
from agentdeck.core.messages import (
    Control,
    ErrorModel,
    Event,
    Report,
    TaskMessage,
    UsageModel,
    decode,
)
from agentdeck.core.models import Usage
from agentdeck.core.spec import TaskSpec, WorkflowSpec, build

DOC = (Path(__file__).resolve().parents[2] / "docs" / "messages.md").read_text()
MESSAGES: dict[str, type[BaseModel]] = {
    "task": TaskMessage,
    "report": Report,
    "event": Event,
    "control": Control,
}


def section(kind: str) -> str:
    """The text under ``## `kind` ...`` up to the next section."""
    start = DOC.index(f"## `{kind}`")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else len(DOC)]


def first_column(text: str, header: str) -> list[str]:
    """The first cells of the table whose header row starts with ``| header |``."""
    lines = text[text.index(f"| {header} |") :].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip().strip("`"))
    return rows


def test_each_message_s_table_lists_exactly_its_fields() -> None:
    """No field undocumented, none documented that the model does not have."""
    for kind, model in MESSAGES.items():
        assert first_column(section(kind), "field") == list(model.model_fields), kind


def test_the_error_object_is_described_with_all_its_fields() -> None:
    """A report's ``error`` lists every field of the wire error."""
    row = next(line for line in section("report").splitlines() if line.startswith("| `error` |"))
    described = row.split("|")[3]
    for field in ErrorModel.model_fields:
        assert f"`{field}`" in described


def test_every_example_decodes_as_the_message_it_shows() -> None:
    """Each JSON example is a valid message of its section's kind."""
    for kind, model in MESSAGES.items():
        examples = re.findall(r"```json\n(.*?)```", section(kind), re.S)
        assert len(examples) == 1, kind
        body = examples[0].encode()
        assert json.loads(body)["type"] == kind
        decode(body, model)


def test_the_event_topics_table_gives_the_keys_the_core_sends() -> None:
    """task and workflow events carry exactly the keys the table gives them."""
    workflow, tasks = build(
        WorkflowSpec(name="w", tasks=(TaskSpec(key="a", capability="echo"),)),
        workflow_id="0123456789ab",
        now=1.0,
    )
    rows = section("event").split("| topic |")[1].splitlines()[2:]
    keys = {
        row.split("|")[1].strip().strip("`"): re.findall(r"`([a-z_]+)`", row.split("|")[2])
        for row in rows
        if row.startswith("|")
    }
    assert set(keys) == {
        "task",
        "workflow",
        "breaker",
        "command",
        "log",
        "progress",
        "output",
        "usage",
    }
    assert keys["task"] == list(task_event(tasks[0], 1.0).data)
    assert keys["workflow"] == list(workflow_event(workflow, 1.0).data)
    assert keys["progress"] == list(feed_events()["progress"].data)
    assert keys["output"] == list(feed_events()["output"].data)
    assert keys["usage"] == list(usage_event([(tasks[0], Usage(1, 2))], 1.0).data)


def feed_events() -> dict[str, Event]:
    """One ``progress`` and one ``output`` event as an agent's FeedStream queues them."""
    clock = FakeClock()
    stream = FeedStream(MemoryBus.from_url("memory://", clock=clock), clock, "agent-1")
    feed = AttemptFeed(
        {"task_id": "wf/a", "workflow_id": "wf", "attempt": 1, "agent_id": "agent-1"}, stream
    )
    feed.progress(0.5, "halfway")
    feed.emit("partial text")
    return {event.topic: event for event in stream._lines}  # the queue, not yet published


def test_the_usage_object_is_described_with_all_its_fields() -> None:
    """The report's usage table lists exactly the wire usage's fields."""
    assert first_column(section("report"), "usage field") == list(UsageModel.model_fields)


def test_the_report_example_s_usage_reads_back_as_the_domain_usage() -> None:
    """The documented usage decodes, and Usage → wire → Usage changes nothing."""
    (example,) = re.findall(r"```json\n(.*?)```", section("report"), re.S)
    usage = decode(example.encode(), Report).usage
    assert usage is not None
    domain = usage.to_usage()
    assert domain.total_tokens == 1200 + 310 + 0 + 15635
    assert UsageModel.of(domain) == usage
