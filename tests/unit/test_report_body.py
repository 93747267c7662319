"""The succeeded report written around its already-encoded output (:func:`succeeded_body`)
reads back as the Report the model would have written, byte for byte in the usual case."""

from __future__ import annotations

from typing import Any

import pytest

from agentdeck.agents.attempt import check_output
from agentdeck.agents.reports import succeeded_body
from agentdeck.core.messages import Report, TaskMessage, decode, decode_batch, encode

AT = 1_765_130_000.123456


def _message(
    task_id: str = "0192f0c2-7a9e-7c1d-8e4b-123456789abc", attempt: int = 3
) -> TaskMessage:
    return TaskMessage(
        task_id=task_id,
        workflow_id="wf",
        key="k",
        capability="cap",
        attempt=attempt,
        timeout=30,
        dispatched_at=AT,
    )


def _model(message: TaskMessage, agent: str, output: Any, started_at: float | None) -> Report:
    return Report(
        kind="succeeded",
        task_id=message.task_id,
        attempt=message.attempt,
        agent_id=agent,
        at=AT,
        output=output,
        started_at=started_at,
    )


@pytest.mark.parametrize(
    "output",
    [
        None,
        {"slept": 0.0},
        {"text": "plain", "n": 3, "ok": True, "list": [1, 2.5, None, "x"]},
        {"nested": {"deeper": [{"a": [[], {}]}]}},
        "a string",
        0,
    ],
)
def test_the_usual_reports_are_the_models_bytes(output: Any) -> None:
    """Ids, times and plain outputs: the same bytes as encode(Report(...))."""
    message = _message()
    error, encoded = check_output(output)
    assert error is None
    body = succeeded_body("bench0@host-1", message, AT, AT - 0.25, encoded)
    assert body == encode(_model(message, "bench0@host-1", output, AT - 0.25))


@pytest.mark.parametrize(
    "output",
    [
        {"unicode": "é ü 中文 🚀", "quote": 'say "hi"\\n', "ctrl": "\x00\x1f\t"},
        {"big": 2**80, "neg": -(2**70), "tiny": 1e-7, "huge": 1e16, "exp": 1.5e300},
        [1, [2, [3, [4]]], {"1": "int-like key"}],
        {"\u2028": "line separator", "emoji🙂": "key"},
    ],
)
@pytest.mark.parametrize("started_at", [None, AT, 1.0])
def test_odd_outputs_and_ids_read_back_as_the_model(output: Any, started_at: float | None) -> None:
    """Non-ASCII, escapes, big numbers, exponents, ids with quotes: the body decodes, alone
    and inside a batch, to exactly the Report the model makes."""
    message = _message(task_id='wf/"odd" \\ tâche', attempt=7)
    agent = 'agent ü "x"'
    error, encoded = check_output(output)
    assert error is None
    body = succeeded_body(agent, message, AT, started_at, encoded)
    expected = _model(message, agent, output, started_at)
    assert decode(body, Report) == expected
    assert decode(encode(expected), Report) == expected
    (item,) = decode_batch(body, Report)
    assert item.message == expected
