"""Logging setup: JSON lines or console, level filtering, node and logger names."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from agentdeck.core.logs import configure_logging, get_logger


class TtyStream(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    """Each test starts and ends with structlog's default setup."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def test_json_lines_carry_timestamp_level_event_node_and_keys() -> None:
    """fmt=json writes one JSON object per event, with the standard keys first."""
    out = io.StringIO()
    configure_logging("info", "json", node="n1", stream=out)
    get_logger("agentdeck.core.scheduler", workflow_id="w1").info("task_dispatched", attempt=2)
    line = json.loads(out.getvalue())
    assert list(line)[:4] == ["timestamp", "level", "event", "node"]
    assert line["timestamp"].endswith("Z")
    assert (line["level"], line["event"], line["node"]) == ("info", "task_dispatched", "n1")
    assert (line["logger"], line["workflow_id"], line["attempt"]) == (
        "agentdeck.core.scheduler",
        "w1",
        2,
    )


def test_auto_writes_json_when_not_a_terminal() -> None:
    """fmt=auto on a pipe or file writes JSON."""
    out = io.StringIO()
    configure_logging(fmt="auto", stream=out)
    get_logger("x").info("hello")
    assert json.loads(out.getvalue())["event"] == "hello"


def test_auto_writes_console_lines_on_a_terminal() -> None:
    """fmt=auto on a terminal writes human-readable lines, not JSON."""
    out = TtyStream()
    configure_logging(fmt="auto", stream=out)
    get_logger("x").info("hello", k=1)
    assert "hello" in out.getvalue()
    assert not out.getvalue().startswith("{")


def test_level_filters_less_severe_events() -> None:
    """Events below the configured level are dropped."""
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    log = get_logger("x")
    log.info("quiet")
    log.warning("loud")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


def test_exceptions_are_rendered_in_json() -> None:
    """log.exception adds the traceback as a string."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("x").exception("failed")
    assert "RuntimeError: boom" in json.loads(out.getvalue())["exception"]


def test_reconfiguring_applies_to_existing_loggers() -> None:
    """Calling configure_logging again replaces the setup, even for loggers made earlier."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    log = get_logger("x")
    configure_logging("debug", "json", node="n2", stream=second)
    log.debug("later")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["node"] == "n2"


def test_unknown_level_or_format_is_refused() -> None:
    """A level or format outside the known ones raises ValueError naming it."""
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("info", "xml")
