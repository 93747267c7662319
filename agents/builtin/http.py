"""``http``: POSTs the task's input as JSON to a URL and returns the answer.

Server errors (5xx), 408, 425 and connection failures are retryable (a ``Retry-After`` in
seconds or as an HTTP date becomes the retry delay); other 4xx answers are permanent: the same
request would be refused again. 429 and 529 are rate limits: the attempt fails as
``rate_limited`` (:class:`~core.errors.RateLimited`), with the wait the answer's headers ask
for. Only the standard library is used: ``urllib`` in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import Message

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.builtin._ratelimit import RATE_LIMIT_STATUSES, retry_after
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.core.errors import ConfigError, RateLimited, TaskFailed
from agentdeck.core.models import JSON
from agentdeck.core.settings import redact_url

_RETRYABLE_4XX = frozenset({408, 425})
"""Client errors that mean "not now" rather than "never"."""


def make(options: Mapping[str, JSON] | None = None) -> Handler:
    """An http handler. Options: ``url`` (required, http or https), ``headers`` (a table),
    ``timeout`` (seconds per request, default 30), ``max_response`` (bytes kept, default 1 MiB).
    """
    opts = Options("http", options)
    url = opts.string("url")
    headers = opts.string_map("headers", secret=True)
    timeout = opts.number("timeout", 30.0, above=True)
    max_response = opts.integer("max_response", 1 << 20, minimum=1)
    opts.done()
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"http agent: option 'url' must start with http:// or https://, got {redact_url(url)!r}"
        )
    shown = redact_url(url)

    async def http(ctx: TaskContext) -> JSON:
        try:
            body = json.dumps(ctx.input, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TaskFailed(
                f"http: the task input is not JSON: {exc}", non_retryable=True, kind="bad_input"
            ) from None
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json, text/*;q=0.5",
                # Lets the service spot a repeated attempt (delivery is at-least-once).
                "X-Agentdeck-Task": ctx.task_id,
                "X-Agentdeck-Attempt": str(ctx.attempt),
                **headers,
            },
        )
        # On cancel the thread runs on until ``timeout``: urllib cannot be interrupted.
        return await asyncio.to_thread(_post, request, shown, timeout, max_response)

    return http


def _post(
    request: urllib.request.Request, shown: str, timeout: float, limit: int
) -> dict[str, JSON]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
            return {
                "status": status,
                "body": _body(response.read(limit + 1), response.headers, limit),
            }
    except urllib.error.HTTPError as exc:
        with exc:
            answer = _body(exc.read(limit + 1), exc.headers, limit)
        status = exc.code
        wait = retry_after(exc.headers, time.time())  # HTTP dates are wall-clock times
        said = f"http: POST {shown} answered {status} {exc.reason}: {json.dumps(answer)[:2000]}"
        if status in RATE_LIMIT_STATUSES:
            raise RateLimited(said, retry_after=wait) from None
        retryable = status >= 500 or status in _RETRYABLE_4XX
        raise TaskFailed(
            said,
            non_retryable=not retryable,
            retry_after=wait,
            kind="server_error" if status >= 500 else "client_error",
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise TaskFailed(f"http: POST {shown} failed: {reason}", kind="connection") from None


def _body(data: bytes, headers: Message, limit: int) -> JSON:
    """The answer as JSON when it says so and parses, else as (capped) text."""
    truncated = len(data) > limit
    data = data[:limit]
    charset = headers.get_content_charset() or "utf-8"
    if not truncated and headers.get_content_type().endswith("json"):
        try:
            return json.loads(data.decode(charset))
        except (ValueError, LookupError):
            pass  # a server that mislabels its answer: keep it as text
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:
        text = data.decode("utf-8", errors="replace")
    return text + (f"\n[truncated at {limit} bytes]" if truncated else "")
