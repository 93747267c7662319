"""The app's side of typed-ahead keys: every key read goes through a :class:`KeyGate`
(``agentdeck.tui.keys``: the bookkeeping, and why) and is forwarded one at a time, laps
behind it, holds during handovers. :class:`TypeAheadApp` is the base of the control centre's
app; screens hold the keys through it (``hold_keys`` / ``release_keys``).
"""

from __future__ import annotations

import asyncio

from textual import events
from textual.app import App
from textual.message import Message
from textual.widgets import Input

from agentdeck.core.logs import get_logger
from agentdeck.tui.keys import Hold, KeyGate, Next, pasted_keys

#: Seconds between looks for a key lap that never came back or a hold nobody released.
KEY_WATCH = 0.25
log = get_logger(__name__)


class KeyLap(Message):
    """Sent behind a forwarded key along its path (focused widget, its parents, the app): back
    at the app, everything the key caused on the way has been handled."""

    def __init__(self, lap: int) -> None:
        super().__init__()
        self.lap = lap


class TypeAheadApp(App[None]):
    """An app that forwards the keys it reads one at a time, each once the last is handled
    (call :meth:`start_key_watch` when mounted, so nothing waits for ever)."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: KeyGate[events.Key] = KeyGate()
        """The keys read and not yet forwarded (one at a time, each once the last is handled)."""
        self._lap = 0
        self._lap_view: tuple[object, object] = (None, None)

    def start_key_watch(self) -> None:
        """Look for lost laps and forgotten holds every :data:`KEY_WATCH` seconds."""
        self.set_interval(KEY_WATCH, self._watch_keys)

    async def on_event(self, event: events.Event) -> None:
        """Keys from the terminal (and a paste, as the keys that type it) wait in the key gate
        and are forwarded one at a time; everything else as Textual does."""
        if isinstance(event, events.Key) and not event.is_forwarded:
            self.keys.offer(event)
            await self._forward_key()
        elif isinstance(event, events.Paste) and not event.is_forwarded:
            for name, char in pasted_keys(event.text):
                key = events.Key(name, char)
                key.set_sender(self)
                self.keys.offer(key)
            await self._forward_key()
        else:
            await super().on_event(event)

    def hold_keys(self, reason: str) -> Hold:
        """Forward no key until :meth:`release_keys` (a handover is under way)."""
        return self.keys.hold(reason, self._key_time())

    def release_keys(self, hold: Hold | None) -> None:
        """The handover is done: the keys typed after it go on (once the view has settled)."""
        if hold is not None and (step := self.keys.release(hold)) is not None:
            self.call_later(self._key_step, step)

    async def _forward_key(self) -> None:
        while (key := self.keys.take()) is not None:
            typing = isinstance(self.focused, Input) and key.is_printable
            await super().on_event(key)
            if not typing:
                self._send_lap()
                return
            # A character typed into a text field moves no focus and opens nothing (the field
            # takes it), and whatever comes next for that field queues behind it: no lap.
            self.keys.handled()

    def _send_lap(self) -> None:
        self._lap += 1
        target = self.focused or self.screen
        self._lap_view = (self.screen, self.focused)
        self.keys.lap_sent(self._key_time())
        if not target.post_message(KeyLap(self._lap)):  # (its widget is closing)
            self.call_later(self._lap_back, self._lap)

    async def on_key_lap(self, message: KeyLap) -> None:
        """A lap came back: send another, or forward the next key."""
        message.stop()
        await self._lap_back(message.lap)

    async def _lap_back(self, lap: int) -> None:
        if lap != self._lap or self.keys.lap_out is None:
            return  # a lap already counted as lost
        changed = self._lap_view != (self.screen, self.focused)
        await self._key_step(self.keys.lap_back(changed))

    async def _key_step(self, step: Next) -> None:
        if step == "lap" and self.keys.lap_out is None:
            self._send_lap()
        elif step == "take":
            await self._forward_key()

    async def _watch_keys(self) -> None:
        now = self._key_time()
        for reason in self.keys.expired_reasons(now):
            log.warning("key_hold_expired", reason=reason)
        lost = self.keys.laps_lost
        step = self.keys.overdue(now)
        if self.keys.laps_lost > lost:
            log.info("key_lap_lost", pending=len(self.keys.pending))
        if step is not None:
            await self._key_step(step)

    def _key_time(self) -> float:
        # The event loop's clock: key handovers are about this process, not the fleet's time.
        return asyncio.get_running_loop().time()
