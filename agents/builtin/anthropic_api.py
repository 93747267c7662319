"""``anthropic``: one Messages API call per attempt, streamed, with the official Python SDK.

The task's input is ``{"prompt": "..."}`` (a template over the upstream outputs, as for the
``claude`` kind: :mod:`agents.builtin._template`) or ``{"messages": [...]}`` (the API's own
list of ``{"role", "content"}``, sent as given), with an optional ``"system"`` (a template).
Options: ``model`` (required), ``max_tokens`` (default 1024), ``temperature`` (0 to 1; left
out when not given, since newer models refuse a non-default one). An unknown option is one
ConfigError when the agent starts.

The text is streamed to ``ctx.emit`` as it comes; the output is ``{"text", "model",
"stop_reason", "id"}``. The usage (tokens with the cache tokens, and the cost from
:mod:`agents.prices`; None for a model without a price) goes to ``ctx.usage``.

The SDK reads ``ANTHROPIC_API_KEY`` (or ``ANTHROPIC_AUTH_TOKEN``) and ``ANTHROPIC_BASE_URL``
from the agent's environment. The key is a secret: it is never an option, never logged and
never part of an error. The SDK's own retries are off: agentdeck's retry policy and
rate-limit holds do the retrying. A 429 or 529 answer fails the attempt as ``rate_limited``
with the wait its headers give (:mod:`agents.builtin._ratelimit`); 408, 409 and 5xx are
retryable ``server_error``; other 4xx are ``client_error``, not retried (the same request
would be refused again); a failed connection is a retryable ``connection`` error.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Mapping
from typing import Any

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.builtin._ratelimit import RATE_LIMIT_STATUSES, retry_after
from agentdeck.agents.builtin._template import render, template_values
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.prices import price_of
from agentdeck.core.errors import ConfigError, RateLimited, TaskFailed
from agentdeck.core.models import JSON

KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
"""Where the SDK finds its credentials; one must be set in the agent's environment."""
_RETRYABLE = frozenset({408, 409})
_RATE_LIMIT_TYPES = frozenset({"rate_limit_error", "overloaded_error"})
_CLIENT_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
    }
)


def make(options: Mapping[str, JSON] | None = None) -> Handler:
    """An anthropic handler. Raises ConfigError for a bad or unknown option, or when the
    environment holds no API key (naming the variables, never a value)."""
    opts = Options("anthropic", options)
    model = opts.string("model")
    max_tokens = opts.integer("max_tokens", 1024, minimum=1)
    temperature = opts.optional_number("temperature", maximum=1.0)
    opts.done()
    if not any(os.environ.get(name) for name in KEY_VARIABLES):
        raise ConfigError(
            f"anthropic agent: no API key in the environment; set {KEY_VARIABLES[0]} "
            f"(or {KEY_VARIABLES[1]}) for the agent process"
        )
    import anthropic  # here, not at the top: only agents of this kind pay for the import

    # Made once: loading the CA store for each attempt's client costs ~50 ms of CPU.
    tls = ssl.create_default_context()

    extra: dict[str, Any] = {}
    if temperature is not None:
        # The SDK no longer names it (newer models refuse it); the API still takes it.
        extra["extra_body"] = {"temperature": temperature}

    async def call(ctx: TaskContext) -> JSON:
        messages, system = request_of(ctx)
        arguments = {**extra, **({"system": system} if system is not None else {})}
        started: Any = None  # the stream, once the answer began
        try:
            # One client per attempt: its connections belong to this event loop.
            async with (
                anthropic.AsyncAnthropic(
                    max_retries=0, http_client=anthropic.DefaultAsyncHttpxClient(verify=tls)
                ) as client,
                client.messages.stream(
                    model=model, max_tokens=max_tokens, messages=messages, **arguments
                ) as stream,
            ):
                started = stream
                async for text in stream.text_stream:
                    ctx.emit(text)
                final = await stream.get_final_message()
        except anthropic.APIStatusError as exc:
            count_partial(ctx, started, model)
            raise _status_error(exc) from None
        except anthropic.APIConnectionError as exc:
            count_partial(ctx, started, model)
            raise TaskFailed(f"anthropic: {exc}", kind="connection") from None
        count_usage(ctx, final.usage, final.model or model)
        return {
            "text": "".join(b.text for b in final.content if b.type == "text"),
            "model": final.model,
            "stop_reason": final.stop_reason,
            "id": final.id,
        }

    return call


def request_of(ctx: TaskContext) -> tuple[list[Any], str | None]:
    """The call's messages and system prompt, from the task's input."""
    data = ctx.input
    if not isinstance(data, Mapping) or ("prompt" in data) == ("messages" in data):
        raise _bad_input(
            'the task input must be an object with a "prompt" string or a "messages" list '
            "(not both)"
        )
    values = template_values(ctx.upstream, {k: v for k, v in data.items() if k != "prompt"})
    system = data.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise _bad_input(f'"system" must be a string, got {type(system).__name__}')
        system = render(system, values, kind="anthropic", what="system prompt")
    if "prompt" in data:
        if not isinstance(data["prompt"], str):
            raise _bad_input(f'"prompt" must be a string, got {type(data["prompt"]).__name__}')
        prompt = render(data["prompt"], values, kind="anthropic", what="prompt")
        return [{"role": "user", "content": prompt}], system
    messages = data["messages"]
    if not isinstance(messages, list) or not messages:
        raise _bad_input('"messages" must be a non-empty list of {"role", "content"} objects')
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not {"role", "content"} <= set(message):
            raise _bad_input(f'"messages"[{index}] must be an object with "role" and "content"')
    return list(messages), system


def count_usage(ctx: TaskContext, usage: Any, model: str) -> None:
    """Report an API ``usage`` object to ``ctx.usage``, priced by ``model``."""
    tokens = {
        "input_tokens": getattr(usage, "input_tokens", 0) or 0,
        "output_tokens": getattr(usage, "output_tokens", 0) or 0,
        "cache_creation_input_tokens": getattr(usage, "cache_creation_input_tokens", 0) or 0,
        "cache_read_input_tokens": getattr(usage, "cache_read_input_tokens", 0) or 0,
    }
    split = getattr(usage, "cache_creation", None)
    hour = getattr(split, "ephemeral_1h_input_tokens", 0) or 0
    price = price_of(model)
    cost = price.cost(**tokens, cache_1h_input_tokens=hour) if price is not None else None
    ctx.usage(**tokens, cost_usd=cost, model=model)


def count_partial(ctx: TaskContext, stream: Any, model: str) -> None:
    """Count the usage of an answer that broke off midway (its input was billed), if it
    got as far as ``message_start``."""
    if stream is None:
        return
    try:
        snapshot = stream.current_message_snapshot
    except Exception:  # no message_start yet: nothing known, nothing to count
        return
    count_usage(ctx, snapshot.usage, snapshot.model or model)


def _status_error(exc: Any) -> TaskFailed:
    """The TaskFailed for an error answer (``exc``: the SDK's APIStatusError).

    An error can also arrive inside a stream that began with 200 (an ``error`` event): then
    its type says what it is, and one that is not a client's mistake is retryable.
    """
    status = int(exc.status_code)
    said = f"anthropic: the API answered {status}: {exc.message}"[:2000]
    kind = _error_type(exc.body)
    if status in RATE_LIMIT_STATUSES or kind in _RATE_LIMIT_TYPES:
        return RateLimited(said, retry_after=retry_after(exc.response.headers, time.time()))
    if status >= 500 or status in _RETRYABLE or (status < 400 and kind not in _CLIENT_TYPES):
        return TaskFailed(said, kind="server_error")
    return TaskFailed(said, non_retryable=True, kind="client_error")


def _error_type(body: Any) -> str | None:
    """The ``error.type`` of an API error body (``rate_limit_error``, ...), if it has one."""
    error = body.get("error") if isinstance(body, Mapping) else None
    kind = error.get("type") if isinstance(error, Mapping) else None
    return kind if isinstance(kind, str) else None


def _bad_input(what: str) -> TaskFailed:
    return TaskFailed(f"anthropic: {what}", non_retryable=True, kind="bad_input")
