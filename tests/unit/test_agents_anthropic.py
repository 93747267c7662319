"""The ``anthropic`` kind against the local Messages API stand-in (tests/fakes/anthropic_server):
streaming, usage and cost, rate limits as ``rate_limited``, no SDK retries, the key kept secret."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentdeck.agents.builtin import BUILTINS, anthropic_api
from agentdeck.agents.context import TaskContext
from agentdeck.agents.prices import PRICES, price_of
from agentdeck.agents.testing import RecordingFeed, make_context
from agentdeck.core.errors import ConfigError, RateLimited, TaskFailed
from agentdeck.core.models import Usage
from tests.fakes import anthropic_server as fake
from tests.fakes.anthropic_server import AnthropicServer

KEY = "sk-ant-test-0123456789-secret"
MODEL = "claude-sonnet-4-5-20250929"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[AnthropicServer]:
    """The stand-in, with the SDK pointed at it and a key in the environment."""
    monkeypatch.setenv("no_proxy", "*")  # a proxy configured on the machine must not intercept
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with AnthropicServer() as running:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", running.url)
        yield running


def context(**input: object) -> TaskContext:
    return make_context(input, upstream={"triage": {"result": "two files changed"}})


def feed(ctx: TaskContext) -> RecordingFeed:
    assert isinstance(ctx.feed, RecordingFeed)
    return ctx.feed


async def test_anthropic_is_a_built_in_kind(server: AnthropicServer) -> None:
    """``anthropic`` builds like any other kind."""
    assert BUILTINS["anthropic"] is anthropic_api.make


async def test_a_streamed_call_gives_text_usage_and_cost(server: AnthropicServer) -> None:
    """The text arrives in deltas through ctx.emit; the usage from message_start and
    message_delta is counted and priced by the model."""
    ctx = context(prompt="Summarise {triage.result}", system="Be brief about {triage.result}")
    output = await anthropic_api.make({"model": MODEL, "max_tokens": 64})(ctx)
    assert output == {
        "text": "echo: Summarise two files changed",
        "model": MODEL,
        "stop_reason": "end_turn",
        "id": "msg_stand_in",
    }
    assert feed(ctx).emitted[:2] == ["echo:", " Summ"]  # as the deltas came
    assert feed(ctx).text == output["text"]
    price = PRICES["claude-sonnet-4-5"]
    assert ctx.feed.usage == Usage(
        input_tokens=fake.INPUT_TOKENS,
        output_tokens=fake.OUTPUT_TOKENS,
        cache_creation_input_tokens=fake.CACHE_CREATION_TOKENS,
        cache_read_input_tokens=fake.CACHE_READ_TOKENS,
        cost_usd=(
            fake.INPUT_TOKENS * price.input
            + fake.OUTPUT_TOKENS * price.output
            + fake.CACHE_CREATION_TOKENS * price.cache_write
            + fake.CACHE_READ_TOKENS * price.cache_read
        )
        / 1_000_000,
        model=MODEL,
    )
    (request,) = server.requests
    assert request["body"]["stream"] is True
    assert request["body"]["max_tokens"] == 64
    assert request["body"]["system"] == "Be brief about two files changed"
    assert request["body"]["messages"] == [
        {"role": "user", "content": "Summarise two files changed"}
    ]
    sent = request["headers"]
    assert "<present>" in (sent.get("x-api-key"), sent.get("authorization"))  # the key went
    assert "temperature" not in request["body"]


async def test_messages_and_temperature_are_sent_as_given(server: AnthropicServer) -> None:
    """A ``messages`` list goes to the API unchanged; ``temperature`` is in the request."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "More"}]},
    ]
    handler = anthropic_api.make({"model": MODEL, "temperature": 0.2})
    output = await handler(context(messages=messages))
    assert output["text"] == "echo: More"
    assert server.requests[0]["body"]["messages"] == messages
    assert server.requests[0]["body"]["temperature"] == 0.2


async def test_a_model_without_a_price_counts_tokens_and_no_cost(server: AnthropicServer) -> None:
    """An unknown model: cost None, tokens still counted."""
    ctx = context(prompt="hi")
    await anthropic_api.make({"model": "claude-next-9"})(ctx)
    usage = ctx.feed.usage
    assert usage is not None and usage.cost_usd is None
    assert usage.input_tokens == fake.INPUT_TOKENS and usage.model == "claude-next-9"


@pytest.mark.parametrize(
    ("marker", "low", "high"),
    [
        ("rate_limit", 7.0, 7.0),
        ("rate_limit_date", 85.0, 91.0),
        ("reset_headers", 40.0, 46.0),
        ("overloaded", 3.0, 3.0),
    ],
)
async def test_429_and_529_are_rate_limited_with_the_wait_asked_for(
    server: AnthropicServer, marker: str, low: float, high: float
) -> None:
    """retry-after in seconds or as a date, or the ratelimit reset headers, give retry_after;
    the SDK does not retry on its own (one request reached the server)."""
    with pytest.raises(RateLimited) as caught:
        await anthropic_api.make({"model": MODEL})(context(prompt=f"go [fake:{marker}]"))
    assert caught.value.kind == "rate_limited" and not caught.value.non_retryable
    assert caught.value.retry_after is not None
    assert low <= caught.value.retry_after <= high
    assert len(server.requests) == 1


async def test_an_overloaded_error_inside_a_stream_is_rate_limited(
    server: AnthropicServer,
) -> None:
    """An ``error`` event of type overloaded_error after a 200 start: rate_limited too, and
    the input the answer began with is counted (it was billed)."""
    ctx = context(prompt="[fake:stream_overloaded]")
    with pytest.raises(RateLimited) as caught:
        await anthropic_api.make({"model": MODEL})(ctx)
    assert caught.value.retry_after is None  # the stream's headers gave no time
    assert "overloaded_error" in str(caught.value)
    usage = ctx.feed.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (fake.INPUT_TOKENS, 1)


async def test_a_bad_request_is_not_retried_and_a_server_error_is(server: AnthropicServer) -> None:
    """400 is a permanent client_error; 500 a retryable server_error; neither shows the key
    nor counts usage (no answer began)."""
    handler = anthropic_api.make({"model": MODEL})
    ctx = context(prompt="[fake:bad_request]")
    with pytest.raises(TaskFailed) as bad:
        await handler(ctx)
    assert ctx.feed.usage is None
    assert bad.value.kind == "client_error" and bad.value.non_retryable
    assert "400" in str(bad.value)
    with pytest.raises(TaskFailed) as broken:
        await handler(context(prompt="[fake:server_error]"))
    assert broken.value.kind == "server_error" and not broken.value.non_retryable
    for error in (bad.value, broken.value):
        assert KEY not in str(error)
    assert len(server.requests) == 2


async def test_no_server_is_a_retryable_connection_error(
    server: AnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody listening: ``connection``, retryable."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(TaskFailed) as caught:
        await anthropic_api.make({"model": MODEL})(context(prompt="hi"))
    assert caught.value.kind == "connection" and not caught.value.non_retryable


async def test_a_template_naming_a_missing_upstream_field_is_one_clear_error(
    server: AnthropicServer,
) -> None:
    """The prompt's missing field is bad_input, named; nothing is sent."""
    with pytest.raises(TaskFailed, match=r"names \{triage\.verdict\}") as caught:
        await anthropic_api.make({"model": MODEL})(context(prompt="{triage.verdict}"))
    assert caught.value.kind == "bad_input" and caught.value.non_retryable
    assert server.requests == []


@pytest.mark.parametrize(
    "input",
    [{}, {"prompt": "a", "messages": []}, {"messages": []}, {"prompt": 3}, {"messages": [{}]}],
)
async def test_bad_input_is_refused(server: AnthropicServer, input: dict[str, object]) -> None:
    """A prompt or a list of messages, one of the two, well formed."""
    with pytest.raises(TaskFailed) as caught:
        await anthropic_api.make({"model": MODEL})(make_context(input))
    assert caught.value.kind == "bad_input"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": MODEL, "top_k": 5}, r"unknown option\(s\) 'top_k' \(allowed: max_tokens, "),
        ({}, "option 'model' is required"),
        ({"model": MODEL, "temperature": 1.5}, "'temperature' must be a number >= 0 and <= 1"),
        ({"model": MODEL, "max_tokens": 0}, "'max_tokens' must be a whole number >= 1"),
    ],
)
def test_bad_options_are_one_clear_error_at_start(
    server: AnthropicServer, options: dict[str, object], message: str
) -> None:
    """Each bad or unknown option is one ConfigError when the agent is made."""
    with pytest.raises(ConfigError, match=message):
        anthropic_api.make(options)


def test_no_key_is_a_clear_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key in the environment the agent does not start."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="set ANTHROPIC_API_KEY"):
        anthropic_api.make({"model": MODEL})


def test_prices_match_models_exactly_or_with_a_date() -> None:
    """A dated id takes its model's price; a newer sibling is not priced by prefix."""
    assert price_of("claude-haiku-4-5-20251001") is PRICES["claude-haiku-4-5"]
    assert price_of("claude-opus-4") is PRICES["claude-opus-4"]
    assert price_of("claude-opus-4-9") is None
    assert price_of(None) is None


def test_one_hour_cache_writes_cost_twice_the_input_price() -> None:
    """Of the cache writes, the 1-hour ones are priced at 2x input, the rest at the 5m rate."""
    price = PRICES["claude-haiku-4-5"]
    cost = price.cost(cache_creation_input_tokens=3_000_000, cache_1h_input_tokens=1_000_000)
    assert cost == pytest.approx(2 * 1.25 + 1 * 2.0)
