"""The RabbitMQ connection's writer: the frames of one event-loop turn leave in one write."""

from __future__ import annotations

import asyncio
from typing import cast

from agentdeck.backends.rabbitmq.transport import CoalescingWriter


class FakeStreamWriter:
    """Records what reaches the socket, like a StreamWriter over a real transport."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.drains = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def drain(self) -> None:
        self.drains += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def can_write_eof(self) -> bool:
        return True


def coalescing() -> tuple[CoalescingWriter, FakeStreamWriter]:
    inner = FakeStreamWriter()
    return CoalescingWriter(cast(asyncio.StreamWriter, inner)), inner


async def test_frames_of_one_turn_leave_in_one_write_in_order() -> None:
    """Frames written in one turn of the loop reach the socket as one write, in order."""
    writer, inner = coalescing()
    for frame in (b"a", b"bb", b"ccc"):
        writer.write(frame)
    assert inner.writes == []
    await asyncio.sleep(0)
    assert inner.writes == [b"abbccc"]
    writer.write(b"d")
    await asyncio.sleep(0)
    assert inner.writes == [b"abbccc", b"d"]


async def test_drain_waits_on_the_socket_and_flushes_past_the_limit() -> None:
    """drain() always waits on the real writer; past LIMIT pending bytes it flushes at once."""
    writer, inner = coalescing()
    writer.write(b"small")
    await writer.drain()
    assert (inner.writes, inner.drains) == ([], 1)
    writer.write(b"x" * CoalescingWriter.LIMIT)
    await writer.drain()
    assert inner.writes == [b"small" + b"x" * CoalescingWriter.LIMIT]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert len(inner.writes) == 1


async def test_close_and_eof_flush_what_is_pending_first() -> None:
    """close() and write_eof() send the pending frames (e.g. Connection.Close) before closing."""
    writer, inner = coalescing()
    writer.write(b"close-frame")
    writer.write_eof()
    writer.close()
    assert inner.writes == [b"close-frame", b"<eof>"]
    assert writer.is_closing()


async def test_nothing_is_written_to_a_writer_already_closing() -> None:
    """Frames pending when the connection dropped are dropped with it, not written."""
    writer, inner = coalescing()
    writer.write(b"late")
    inner.closing = True
    await asyncio.sleep(0)
    assert inner.writes == []
