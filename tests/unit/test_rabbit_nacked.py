"""Which publish failures make RabbitBus replace its publishing channel: a broker's nack only."""

from __future__ import annotations

from types import SimpleNamespace

from aiormq.exceptions import ChannelInvalidStateError, DeliveryError, PublishError
from pamqp import commands

from agentdeck.backends.rabbitmq.failures import nacked


def test_a_basic_nack_is_nacked() -> None:
    """The broker refusing a confirmed publish (basic.nack) counts."""
    assert nacked(DeliveryError(None, commands.Basic.Nack(delivery_tag=7)))


def test_a_returned_unroutable_message_is_not_nacked() -> None:
    """A message returned as unroutable (basic.return) is another matter: its queue is missing."""
    returned = commands.Basic.Return(reply_code=312, reply_text="NO_ROUTE")
    message = SimpleNamespace(delivery=returned)  # what aiormq hands over: the returned message
    assert not nacked(PublishError(message, returned))  # type: ignore[arg-type]


def test_a_lost_channel_is_not_nacked() -> None:
    """A channel that went with its connection is the robust connection's business."""
    assert not nacked(ChannelInvalidStateError("No active transport in channel"))
