"""Injectable clocks: every piece of core that asks the time takes one of these."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A callback waiting for its time (:meth:`Clock.call_later`)."""

    def cancel(self) -> None:
        """Do not call it (nothing happens if it was called already)."""
        ...


class Clock(Protocol):
    """Wall time in seconds since the epoch, and ways to wait on that time."""

    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback`` on the running event loop after ``seconds`` of this clock's time
        (at once, on the loop's next turn, for 0 or less), unless cancelled first. Costs no
        task: for a deadline that is usually cancelled before it comes (a task's timeout)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)


class FakeClock:
    """A clock that only moves when told to; ``sleep`` returns once ``advance`` passes its
    deadline, and a ``call_later`` callback is called by the ``advance`` that passes its time.

    Tests use it so nothing in them ever waits on real time.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._timers: list[_FakeTimer] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, fut))
        await fut

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        if seconds <= 0:
            return asyncio.get_running_loop().call_soon(callback)
        timer = _FakeTimer(self._now + seconds, callback)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, wake every sleeper whose deadline has passed and call every
        timer whose time has come (in order of their times)."""
        self._now += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self._now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._now]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)
        timers = sorted((t for t in self._timers if t.due <= self._now), key=lambda t: t.due)
        self._timers = [t for t in self._timers if t.due > self._now and not t.cancelled]
        for timer in timers:
            if not timer.cancelled:
                timer.cancelled = True  # called once
                timer.callback()


class _FakeTimer:
    """A :meth:`FakeClock.call_later` callback and its time."""

    __slots__ = ("callback", "cancelled", "due")

    def __init__(self, due: float, callback: Callable[[], object]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
