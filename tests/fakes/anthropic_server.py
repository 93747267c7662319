"""A stand-in for the Anthropic Messages API on 127.0.0.1, for tests: nothing leaves the host.

``POST /v1/messages`` answers as the API documents: a JSON message, or with ``"stream": true``
server-sent events (``message_start`` with the input and cache usage, ``content_block_start``,
``ping``, ``content_block_delta`` text deltas, ``content_block_stop``, ``message_delta`` with
the stop reason and the output tokens, ``message_stop``). The reply is ``echo: <last user
text>``. A marker in that text picks another answer: ``[fake:rate_limit]`` 429 with
``retry-after: 7``; ``[fake:rate_limit_date]`` 429 with an HTTP date 90 s ahead;
``[fake:reset_headers]`` 429 with only ``anthropic-ratelimit-requests-*`` headers (reset 45 s
ahead); ``[fake:overloaded]`` 529 with ``retry-after: 3``; ``[fake:bad_request]`` 400;
``[fake:server_error]`` 500; ``[fake:stream_overloaded]`` a stream that starts, then sends an
``error`` event of type ``overloaded_error``. Every request is recorded (the key's headers
only as present or not).

    with AnthropicServer() as server:
        os.environ["ANTHROPIC_BASE_URL"] = server.url
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

INPUT_TOKENS = 25
CACHE_CREATION_TOKENS = 100
CACHE_READ_TOKENS = 200
OUTPUT_TOKENS = 15
CHUNK = 5
"""Characters per text delta."""

_ERRORS = {
    "rate_limit": (429, "rate_limit_error"),
    "rate_limit_date": (429, "rate_limit_error"),
    "reset_headers": (429, "rate_limit_error"),
    "overloaded": (529, "overloaded_error"),
    "bad_request": (400, "invalid_request_error"),
    "server_error": (500, "api_error"),
}


class AnthropicServer:
    """The stand-in, serving in a thread while the ``with`` block runs."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(_Handler):
            owner = server

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL to give as ``ANTHROPIC_BASE_URL``."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def __repr__(self) -> str:
        return f"<AnthropicServer {self.url} requests={len(self.requests)}>"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    owner: AnthropicServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        headers = {k.lower(): v for k, v in self.headers.items()}
        for secret in ("x-api-key", "authorization"):
            if secret in headers:
                headers[secret] = "<present>"
        self.owner.requests.append({"path": self.path, "headers": headers, "body": body})
        if self.path.split("?")[0] != "/v1/messages":
            self._json(404, _error("not_found_error", f"no route {self.path}"))
            return
        text = _last_user_text(body)
        marker = re.search(r"\[fake:([a-z_]+)\]", text)
        mode = marker.group(1) if marker else "success"
        if mode in _ERRORS:
            status, kind = _ERRORS[mode]
            self._json(status, _error(kind, f"the stand-in answers {status}"), _error_headers(mode))
            return
        reply = f"echo: {text}"
        model = str(body.get("model", "claude-test"))
        if body.get("stream"):
            self._stream(model, reply, fail=mode == "stream_overloaded")
        else:
            self._json(200, _message(model, reply, OUTPUT_TOKENS, done=True))

    def _stream(self, model: str, reply: str, *, fail: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": _message(model, "", 1)}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": _text("")},
            ),
            ("ping", {"type": "ping"}),
        ]
        if fail:
            events.append(("error", _error("overloaded_error", "Overloaded")))
        for start in range(0, len(reply), CHUNK):
            delta = {"type": "text_delta", "text": reply[start : start + CHUNK]}
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            )
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": OUTPUT_TOKENS},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        for name, data in events:
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True

    def _json(
        self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("request-id", "req_stand_in")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        return


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict))
    return ""


def _message(model: str, text: str, output_tokens: int, *, done: bool = False) -> dict[str, Any]:
    return {
        "id": "msg_stand_in",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [_text(text)] if text else [],
        "stop_reason": "end_turn" if done else None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "cache_creation_input_tokens": CACHE_CREATION_TOKENS,
            "cache_read_input_tokens": CACHE_READ_TOKENS,
            "output_tokens": output_tokens,
        },
    }


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_x"}


def _error_headers(mode: str) -> dict[str, str]:
    now = time.time()
    if mode == "rate_limit":
        return {"retry-after": "7"}
    if mode == "rate_limit_date":
        return {"retry-after": email.utils.formatdate(now + 90, usegmt=True)}
    if mode == "reset_headers":
        reset = datetime.fromtimestamp(now + 45, UTC).isoformat().replace("+00:00", "Z")
        return {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
        }
    if mode == "overloaded":
        return {"retry-after": "3"}
    return {}
