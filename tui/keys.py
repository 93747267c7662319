"""Typed-ahead keys: every key the terminal delivers reaches the widget that was to receive it,
in order.

A terminal hands keys over in bursts: a paste, a macro, or keys that arrive together over a slow
SSH link. Textual forwards each key to the focused widget the moment it reads it, but a key that
moves the focus (``:`` opens the command line, ``r`` a confirmation, Enter a screen) moves it only
once its handlers have run, a few messages later: the keys read in between went to the old
focus (``:tasks`` + Enter in one burst opened an empty command line, and the ``t`` switched the
theme).

So the app puts every key through a :class:`KeyGate`: one key is *in flight* at a time, and the
next is forwarded only when the last one has been handled. "Handled" is seen, not guessed:

- after forwarding a key the app sends a *lap*, a message that follows the key's path (the
  focused widget, its parents, the app) and comes back behind it. Every message the key caused
  on that path is then ahead of the next lap, so the app sends laps until one comes back with
  the view (screen and focus) as it left, and at least :data:`MIN_LAPS` of them (a table's
  Enter is two hops: the table's RowSelected, then the screen's request to open a row);
- a handover that outlives its messages (a screen opened only once its rows are read, a
  confirmation pushed once its question is built) takes a :class:`Hold` while it runs: no key is
  forwarded while any hold is kept.

Nothing waits for ever: a lap not back after :data:`LAP_LIMIT` seconds (its widget went away
with it) counts as back, and a hold kept longer than :data:`HOLD_LIMIT` seconds expires; both
are counted.

The gate is pure bookkeeping (no Textual): the app owns the sending; the clock is the caller's.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar, runtime_checkable

K = TypeVar("K")

#: Laps every key makes at least (two hops: a widget's message, then its parent's request).
MIN_LAPS = 2
#: Laps after which a key whose view keeps changing counts as handled anyway.
MAX_LAPS = 8
#: Seconds after which a lap that has not come back counts as back.
LAP_LIMIT = 1.0
#: Seconds after which a hold nobody released expires.
HOLD_LIMIT = 5.0

Next = Literal["lap", "wait", "take"]
"""What the app does next: send another lap, wait for the holds, or take the next key."""


@dataclass(eq=False)
class Hold:
    """Keys wait while this is kept: ``reason`` says for what (in logs), ``since`` when it began."""

    reason: str
    since: float


@runtime_checkable
class KeyHolder(Protocol):
    """What keeps the keys waiting during a handover (the app)."""

    def hold_keys(self, reason: str) -> Hold:
        """Forward no key until :meth:`release_keys` (or the hold expires)."""

    def release_keys(self, hold: Hold | None) -> None:
        """The handover is done (None, or releasing twice, is harmless)."""


@dataclass
class KeyGate(Generic[K]):
    """The keys read and not yet forwarded, the one in flight, the holds kept.

    Guarantees: keys are taken in the order offered; none is taken while another is in flight
    or a hold is kept; a key stays in flight until :data:`MIN_LAPS` laps (or more, while the
    view changes or holds come and go) came back, or :data:`MAX_LAPS` did."""

    min_laps: int = MIN_LAPS
    max_laps: int = MAX_LAPS
    lap_limit: float = LAP_LIMIT
    hold_limit: float = HOLD_LIMIT
    pending: deque[K] = field(default_factory=deque)
    in_flight: K | None = None
    lap_out: float | None = None
    """When the lap now out was sent (None: no lap out)."""
    laps: int = 0
    delivered: int = 0
    """Keys handled so far."""
    laps_lost: int = 0
    """Laps that did not come back within ``lap_limit``."""
    holds_expired: int = 0
    """Holds dropped after ``hold_limit``."""
    _holds: list[Hold] = field(default_factory=list)
    _held_in_lap: bool = False

    @property
    def holding(self) -> bool:
        """Whether a hold is kept."""
        return bool(self._holds)

    @property
    def idle(self) -> bool:
        """Whether every key offered has been handled (none waits, none is in flight, no hold)."""
        return not self.pending and self.in_flight is None and not self._holds

    def offer(self, key: K) -> None:
        """A key read from the terminal, to forward in its turn."""
        self.pending.append(key)

    def take(self) -> K | None:
        """The next key to forward now (it is in flight from now on), or None: none is waiting,
        one is in flight, or a hold is kept."""
        if self.in_flight is not None or self._holds or not self.pending:
            return None
        self.in_flight = self.pending.popleft()
        self.laps = 0
        return self.in_flight

    def handled(self) -> None:
        """The key in flight needs no lap (a character typed into a text field)."""
        if self.in_flight is not None:
            self._finish()

    def lap_sent(self, now: float) -> None:
        """A lap went out behind the key in flight."""
        self.lap_out = now
        self._held_in_lap = False

    def lap_back(self, view_changed: bool) -> Next:
        """The lap came back; ``view_changed``: the screen or the focus is not what it was when
        the lap went out. Says what to do next."""
        self.lap_out = None
        self.laps += 1
        if self._holds:
            return "wait"
        more = self.laps < self.min_laps or view_changed or self._held_in_lap
        if more and self.laps < self.max_laps and self.in_flight is not None:
            return "lap"
        self._finish()
        return "take"

    def hold(self, reason: str, now: float) -> Hold:
        """Keep the keys waiting until :meth:`release` (a handover is under way)."""
        hold = Hold(reason, now)
        self._holds.append(hold)
        self._held_in_lap = True
        return hold

    def release(self, hold: Hold) -> Next | None:
        """The handover is done (releasing twice is harmless). Says what to do next: None while
        other holds are kept or a lap is out."""
        if hold in self._holds:
            self._holds.remove(hold)
        return self._after_holds()

    def overdue(self, now: float) -> Next | None:
        """Count a lap out for too long as back and drop holds kept too long; what to do next
        (None: nothing was overdue, or the gate still waits)."""
        expired = [h for h in self._holds if now - h.since >= self.hold_limit]
        for hold in expired:
            self._holds.remove(hold)
        self.holds_expired += len(expired)
        if self.lap_out is not None and now - self.lap_out >= self.lap_limit:
            self.laps_lost += 1
            return self.lap_back(view_changed=False)
        return self._after_holds() if expired else None

    def expired_reasons(self, now: float) -> list[str]:
        """What the holds that :meth:`overdue` would drop now were for (for the log)."""
        return [h.reason for h in self._holds if now - h.since >= self.hold_limit]

    def _after_holds(self) -> Next | None:
        if self._holds or self.lap_out is not None:
            return None
        return "lap" if self.in_flight is not None else "take"

    def _finish(self) -> None:
        self.in_flight = None
        self.delivered += 1


#: How a pasted character is named as a key, where it is not its own name.
_PASTED = {
    "\n": "enter",
    "\r": "enter",
    "\t": "tab",
    "\x1b": "escape",
    " ": "space",
}
#: Unicode names Textual shortens (its key names for these characters).
_SHORTER = {
    "solidus": "slash",
    "reverse_solidus": "backslash",
    "commercial_at": "at",
    "hyphen_minus": "minus",
    "plus_sign": "plus",
    "low_line": "underscore",
}


def key_name(char: str) -> str:
    """The Textual key name of one typed character: ``a`` for ``a``, ``colon`` for ``:``,
    ``enter`` for a newline (what the terminal's reader names it)."""
    if char in _PASTED:
        return _PASTED[char]
    if char.isalnum():
        return char
    try:
        name = unicodedata.name(char).lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return char
    return _SHORTER.get(name, name)


def pasted_keys(text: str) -> list[tuple[str, str | None]]:
    """A pasted text as the keys that type it: ``(key name, character)`` pairs; a CR LF is one
    Enter."""
    keys: list[tuple[str, str | None]] = []
    for char in text.replace("\r\n", "\n"):
        name = key_name(char)
        keys.append((name, char if char.isprintable() else None))
    return keys
