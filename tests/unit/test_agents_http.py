"""The http agent against a small server on 127.0.0.1: answers, retryable and permanent errors."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentdeck.agents.builtin import http
from agentdeck.agents.testing import make_context
from agentdeck.core.errors import ConfigError, RateLimited, TaskFailed

Server = tuple[str, list[dict[str, object]]]
"""A running server's base URL and the requests it has seen."""


class _Handler(BaseHTTPRequestHandler):
    """Answers by path: /json echoes the request, /text, /status/<n>, /big."""

    seen: list[dict[str, object]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        if self.path == "/json":
            self._answer(200, "application/json", json.dumps({"got": json.loads(body)}))
        elif self.path == "/text":
            self._answer(200, "text/plain; charset=utf-8", "plain words")
        elif self.path == "/big":
            self._answer(200, "application/json", json.dumps({"x": "y" * 200}))
        elif self.path.startswith("/status/"):
            status = int(self.path.rsplit("/", 1)[1])
            headers = {"Retry-After": "7"} if status in (429, 503) else {}
            if status == 529:  # an HTTP date, 90 s after the date the server sends
                headers = {"Retry-After": email.utils.formatdate(time.time() + 90, usegmt=True)}
            self._answer(status, "application/json", json.dumps({"error": "nope"}), headers)

    def _answer(
        self, status: int, ctype: str, text: str, headers: dict[str, str] | None = None
    ) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        return


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A local server's base URL and the requests it saw."""
    monkeypatch.setenv("no_proxy", "*")  # a proxy configured on the machine must not intercept
    monkeypatch.setenv("NO_PROXY", "*")
    seen: list[dict[str, object]] = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


async def test_posts_input_as_json_and_returns_the_json_answer(server: Server) -> None:
    """The input goes out as a JSON body; a JSON answer comes back parsed, with its status."""
    base, seen = server
    handler = http.make({"url": f"{base}/json", "headers": {"Authorization": "Bearer t"}})
    output = await handler(make_context({"n": 1}, attempt=2))
    assert output == {"status": 200, "body": {"got": {"n": 1}}}
    headers = seen[0]["headers"]
    assert isinstance(headers, dict)
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer t"
    assert (headers["X-Agentdeck-Task"], headers["X-Agentdeck-Attempt"]) == ("wf/t", "2")


async def test_text_answer_is_returned_as_text(server: Server) -> None:
    """A non-JSON answer is returned as its text."""
    base, _ = server
    assert await http.make({"url": f"{base}/text"})(make_context()) == {
        "status": 200,
        "body": "plain words",
    }


async def test_large_answer_is_truncated_as_text(server: Server) -> None:
    """An answer over ``max_response`` bytes is kept as capped text with a note."""
    base, _ = server
    output = await http.make({"url": f"{base}/big", "max_response": 50})(make_context())
    assert output["body"].endswith("[truncated at 50 bytes]")
    assert len(output["body"]) < 100


async def test_server_error_is_retryable_with_retry_after(server: Server) -> None:
    """A 5xx is a retryable failure; a Retry-After in seconds becomes the retry delay."""
    base, _ = server
    with pytest.raises(TaskFailed, match="answered 503") as caught:
        await http.make({"url": f"{base}/status/503"})(make_context())
    assert not caught.value.non_retryable
    assert caught.value.kind == "server_error"
    assert caught.value.retry_after == 7.0


async def test_client_error_is_permanent(server: Server) -> None:
    """A 4xx (but 408, 425 and the 429 rate limit) is not retried: it would fail the same way."""
    base, _ = server
    with pytest.raises(TaskFailed, match=r'answered 404 .*"error": "nope"') as caught:
        await http.make({"url": f"{base}/status/404"})(make_context())
    assert caught.value.non_retryable
    assert caught.value.kind == "client_error"


async def test_too_many_requests_is_rate_limited(server: Server) -> None:
    """429 means "not now": ``rate_limited``, retryable, after the delay the server asked for."""
    base, _ = server
    with pytest.raises(RateLimited) as caught:
        await http.make({"url": f"{base}/status/429"})(make_context())
    assert caught.value.kind == "rate_limited"
    assert not caught.value.non_retryable
    assert caught.value.retry_after == 7.0


async def test_overloaded_is_rate_limited_with_an_http_date(server: Server) -> None:
    """529 is a rate limit too; a Retry-After given as an HTTP date becomes seconds from now."""
    base, _ = server
    with pytest.raises(RateLimited) as caught:
        await http.make({"url": f"{base}/status/529"})(make_context())
    assert caught.value.retry_after is not None
    assert 85 <= caught.value.retry_after <= 91  # whole seconds in the date, a test's run time


async def test_connection_refused_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that is not there is a retryable connection failure."""
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TaskFailed, match=r"failed: .*refused") as caught:
        await http.make({"url": f"http://127.0.0.1:{port}/", "timeout": 2})(make_context())
    assert not caught.value.non_retryable
    assert caught.value.kind == "connection"


async def test_input_that_is_not_json_fails_permanently() -> None:
    """An input that cannot be sent as JSON is a non-retryable failure."""
    handler = http.make({"url": "http://127.0.0.1:9/"})
    with pytest.raises(TaskFailed, match="not JSON") as caught:
        await handler(make_context({"x": float("nan")}))
    assert caught.value.non_retryable


def test_url_must_be_http_and_its_password_is_not_shown() -> None:
    """A non-http URL is refused, with any password in it masked."""
    with pytest.raises(
        ConfigError, match=r"must start with http://.*'ftp://bob:\*\*\*@h/'"
    ) as caught:
        http.make({"url": "ftp://bob:s3cret@h/"})
    assert "s3cret" not in str(caught.value)


def test_header_values_are_not_shown_in_errors() -> None:
    """A malformed headers table is refused without echoing its values (they may be tokens)."""
    with pytest.raises(ConfigError, match="option 'headers' must be a table") as caught:
        http.make({"url": "http://h/", "headers": {"Authorization": ["Bearer s3cret"]}})
    assert "s3cret" not in str(caught.value)
