"""Bus URLs with several brokers, and the order in which a connection tries them."""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

import pytest

from agentdeck.backends.rabbitmq import transport
from agentdeck.backends.rabbitmq.transport import BrokerRing
from agentdeck.backends.rabbitmq.url import parse_url
from agentdeck.core.errors import ConfigError


def test_a_list_of_brokers_is_read_with_default_ports() -> None:
    """Each ``host[:port]`` of the list is a broker; a missing port is the scheme's default."""
    config = parse_url("amqps://u:pw@h1:5671,h2,[::1]:6000/agents?prefix=blue")
    assert config.hosts == (("h1", 5671), ("h2", 5671), ("::1", 6000))
    assert config.where == "h1:5671,h2:5671,[::1]:6000/agents"


def test_the_driver_url_names_the_first_broker_and_the_password_stays_out_of_reprs() -> None:
    """The URL handed to aiormq is a one-host URL; repr and ``where`` never show the password."""
    config = parse_url("amqp://u:pw@h1:5672,h2:5673/vh?heartbeat=30")
    assert config.url == "amqp://u:pw@h1:5672/vh?heartbeat=30"
    assert "pw" not in repr(config) and "pw" not in config.where


def test_quorum_is_the_one_queue_type() -> None:
    """``queue_type=quorum`` is accepted; another type is refused, naming what is allowed."""
    assert parse_url("amqp://h/?queue_type=quorum").hosts == (("h", 5672),)
    with pytest.raises(ConfigError, match=r"queue_type='classic' .* allowed: quorum"):
        parse_url("amqp://h/?queue_type=classic")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("amqp://u:pw@h1,,h3/", "has an empty host"),
        ("amqp://u:pw@h1,h2:0x/", "'h2:0x' is not host:port with a port of 1-65535"),
        ("amqp://u:pw@h1,h2:70000/", "'h2:70000' is not host:port"),
    ],
)
def test_a_bad_broker_in_the_list_is_named(url: str, complaint: str) -> None:
    """One ConfigError names the bad entry and the allowed form, with the password masked."""
    with pytest.raises(ConfigError) as caught:
        parse_url(url)
    assert complaint in str(caught.value)
    assert "h1:5672,h2:5672,h3:5672" in str(caught.value)
    assert ":pw@" not in str(caught.value)


def test_each_connection_starts_after_the_broker_it_last_reached() -> None:
    """A reconnection tries the other nodes before the one it just lost, then that one."""
    ring = BrokerRing([("a", 1), ("b", 2), ("c", 3)])
    assert ring.order() == [("a", 1), ("b", 2), ("c", 3)]
    ring.reached(("b", 2))
    assert ring.current == ("b", 2)
    assert ring.order() == [("c", 3), ("a", 1), ("b", 2)]
    ring.reached(("c", 3))
    assert ring.order() == [("a", 1), ("b", 2), ("c", 3)]


def test_a_list_of_whole_urls_joined_by_commas_is_one_cluster() -> None:
    """A settings list joined with commas gives the brokers of every URL, in order."""
    config = parse_url("amqp://u:pw@h1/vh?prefix=a, amqp://u:pw@h2:5673,h3/vh?prefix=a")
    assert config.hosts == (("h1", 5672), ("h2", 5673), ("h3", 5672))
    assert config.url == "amqp://u:pw@h1/vh"  # the driver's URL: the first broker
    assert config.prefix == "a"


def test_urls_of_a_list_must_differ_in_their_hosts_only() -> None:
    """Another user, password, vhost or option in the list is refused, passwords masked."""
    with pytest.raises(ConfigError) as caught:
        parse_url("amqp://u:pw1@h1/vh,amqp://u:pw2@h2/vh")
    message = str(caught.value)
    assert "differ in more than their hosts" in message
    assert "amqp://u:***@h1/vh,amqp://u:***@h2/vh" in message
    assert "pw1" not in message and "pw2" not in message


def test_a_connection_that_failed_to_open_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each connection ``connect`` made and could not open is closed before the error goes up:
    left open, aio-pika's ``__del__`` makes a ``close()`` coroutine that no loop runs once
    the loop is gone ("coroutine ... was never awaited" at garbage collection)."""
    made: list[transport.Connection] = []

    class Recorded(transport.Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(transport, "Connection", Recorded)
    with socket.socket() as probe:  # a port nothing listens on: bound once, then freed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def refused() -> None:
        with pytest.raises(ConnectionError):
            await transport.connect(
                f"amqp://guest:guest@127.0.0.1:{port}/",
                brokers=[("127.0.0.1", port)],
                attempts=2,
                timeout=2.0,
                reconnect_interval=0.1,
            )

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(refused())
        assert len(made) == 2
        assert all(connection.close_called for connection in made)
        asyncio.set_event_loop(loop)  # where aio-pika's __del__ would put a close() task
        made.clear()  # collected while the loop is not running, not yet closed
        gc.collect()
        assert asyncio.all_tasks(loop) == set()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
