"""Whether a value can travel as JSON in a message, and if not, what is wrong and where.

An agent's output crosses the bus inside a report, is stored, and is handed on to the tasks
that need it. Python's ``json`` and pydantic disagree at the edges (pydantic writes ``NaN`` as
``null`` and a ``set`` as a list, ``json`` refuses both; pydantic stops at 255 levels of
nesting, ``json`` at about 1000; pydantic refuses a lone surrogate, ``json`` escapes it), so
"it encoded here" is no promise that it can be sent, stored and read back.
:func:`find_problem` is the one rule, stricter than both, and names the first value that
breaks it by its path::

    >>> str(find_problem({"items": [1, 2, 3, {"when": datetime.now()}]}))
    'output.items[3].when: datetime is not JSON (use .isoformat())'

Allowed: ``dict`` with ``str`` keys (an ``int`` key is written as its digits, as every JSON
encoder does), ``list`` and ``tuple``, ``str`` that UTF-8 can encode, ``int``, finite ``float``,
``bool`` and ``None``, subclasses included, at most
:data:`MAX_DEPTH` containers deep. Pure functions; the walk keeps its own stack, so no value,
however deep or cyclic, makes it raise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

MAX_DEPTH: Final = 200
"""The most containers a value may nest, the outermost one counted. Pydantic writes 255 levels
of an untyped value in a report, a task message or an event, and no more; 200 leaves room for
a wrapper or two (SQLite's limit is 1000). Outputs that hold their upstream grow with each
step: the ``echo`` agent's output in a chain of 100 tasks is 200 levels deep."""

PATH_CHARS: Final = 200
"""A path longer than this is shown with parts cut out of its middle."""

_HINTS: Final = {
    "set": "make it a list",
    "frozenset": "make it a list",
    "bytes": "decode it or base64 it",
    "bytearray": "decode it or base64 it",
    "memoryview": "decode it or base64 it",
    "datetime": "use .isoformat()",
    "date": "use .isoformat()",
    "time": "use .isoformat()",
    "timedelta": "use .total_seconds()",
    "Decimal": "use str() or float()",
    "complex": "store .real and .imag",
    "UUID": "use str()",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a value cannot travel as JSON: ``path`` to the value (``output.items[3].when``)
    and ``what`` is wrong with it."""

    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


_Step = tuple[Any, "str | int", object]
"""One link of a path: (the parent's link or None, the key or index taken, the value there).
Chains are walked back only to name a problem; plain tuples, as the walk makes one for every
container it enters."""

_CONTAINERS: Final = (dict, list, tuple)


def find_problem(
    value: object,
    where: str = "output",
    max_depth: int = MAX_DEPTH,
    max_values: int | None = None,
) -> Problem | None:
    """A value in ``value`` that cannot travel as JSON (when there are several, the one met
    first, each container's own items before what nests in them), or None.

    ``where`` names the root in the path (``output``, ``usage``). ``max_values``: stop, with
    a problem, after that many values (None: no limit), so a container shared many times
    over (``x = [x, x]`` fifty times: a few objects, 2**50 values once written) cannot keep
    the walk going for hours. Never raises, whatever ``value`` holds: a cycle is named, not
    followed. Linear in the size of ``value`` as written.
    """
    root: _Step = (None, where, value)
    if not isinstance(value, _CONTAINERS):
        problem = _scalar_problem(value)
        return Problem(where, problem) if problem else None
    stack: list[tuple[_Step, int]] = [(root, 1)]
    budget = max_values if max_values is not None else -1
    while stack:
        step, depth = stack.pop()
        item: Any = step[2]  # a dict, list or tuple: only those are pushed
        if depth > max_depth:
            return _cycle(step) or Problem(
                _format(step), f"nested more than {max_depth} levels deep"
            )
        if budget >= 0:
            budget -= len(item)
            if budget < 0:  # a cycle with siblings at each turn may use it up first
                return _cycle(step) or Problem(where, f"holds more than {max_values} values")
        inner: list[tuple[_Step, int]] = []
        pairs: Iterable[tuple[Any, Any]]
        if isinstance(item, dict):
            pairs = item.items()
            keyed = True
        else:
            pairs = enumerate(item)
            keyed = False
        for part, child in pairs:
            if (
                keyed
                and not (type(part) is str and part.isascii())
                and (problem := _key_problem(part)) is not None
            ):
                return Problem(_format(step), problem)
            kind = type(child)
            # The common cases first, with no call and no path link: a list of a million
            # numbers costs a million cheap checks.
            if kind is int or kind is bool or child is None:
                continue
            if kind is str and child.isascii():
                continue
            if kind is float and math.isfinite(child):
                continue
            if isinstance(child, _CONTAINERS):
                inner.append(((step, part, child), depth + 1))
            elif (problem := _scalar_problem(child)) is not None:
                return Problem(_format((step, part, child)), problem)
        stack.extend(reversed(inner))
    return None


def largest_text(value: object, where: str = "output") -> tuple[str, int] | None:
    """The path and length (characters) of the longest string in ``value`` (None: it holds no
    string), so a message about a value too large can say where most of it is. ``value``
    must have passed :func:`find_problem`."""
    best: tuple[_Step, int] | None = None
    stack: list[_Step] = [(None, where, value)]
    while stack:
        step = stack.pop()
        item = step[2]
        if isinstance(item, str):
            if best is None or len(item) > best[1]:
                best = (step, len(item))
        elif isinstance(item, dict):
            stack.extend((step, k, v) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((step, i, v) for i, v in enumerate(item))
    return (_format(best[0]), best[1]) if best else None


def size_text(size: int) -> str:
    """``size`` bytes for people: ``512 bytes``, ``3.0 KiB``, ``12.5 MiB``, ``1.2 GiB``."""
    if size < 1024:
        return f"{size} bytes"
    scaled = size / 1024
    for unit in ("KiB", "MiB"):
        if scaled < 1024:
            return f"{scaled:.1f} {unit}"
        scaled /= 1024
    return f"{scaled:.1f} GiB"


def safe_text(text: object, limit: int = 4000) -> str:
    """``text`` as a string that always encodes: lone surrogates written as ``\\udXXX``, and
    cut to ``limit`` characters with a note of how many were left out (an error message may
    quote a whole document)."""
    value = text if isinstance(text, str) else str(text)
    if not value.isascii():
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(value) > limit:
        value = f"{value[:limit]}... ({len(value) - limit} more characters)"
    return value


# ----------------------------------------------------------------------------- the rules


def _scalar_problem(value: object) -> str | None:
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, str):
        problem = _text_problem(value)
        return f"the text {problem}" if problem else None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return f"{name} is not JSON (use null, or a string)"
    name = type(value).__name__
    hint = _HINTS.get(name)
    return f"{name} is not JSON ({hint})" if hint else f"{name} is not JSON"


def _text_problem(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        return f"has a lone surrogate ({ascii(bad)[1:-1]} at {exc.start}) UTF-8 cannot encode"
    return None


def _key_problem(key: object) -> str | None:
    if isinstance(key, str):
        problem = _text_problem(key)
        return f"a key {problem}" if problem else None
    if isinstance(key, int) and not isinstance(key, bool):
        return None  # written as its digits by every encoder
    shown = safe_text(repr(key), 40)
    return f"a key is a {type(key).__name__} ({shown}); JSON object keys are strings"


def _cycle(step: _Step) -> Problem | None:
    """The problem when a container on the path to ``step`` holds itself, named at the
    outermost container that comes round again; None when none does."""
    chain: list[_Step] = []
    link: _Step | None = step
    while link is not None:
        chain.append(link)
        link = link[0]
    chain.reverse()
    first: dict[int, _Step] = {}
    for link in chain:
        seen = first.setdefault(id(link[2]), link)
        if seen is not link:
            return Problem(_format(seen), f"contains itself (at {_format(link)})")
    return None


def _format(step: _Step) -> str:
    parts: list[str] = []
    link: _Step | None = step
    while link is not None:
        parent = link[0]
        parts.append(
            str(link[1]) if parent is None else _part(link[1], isinstance(parent[2], dict))
        )
        link = parent
    parts.reverse()
    text = "".join(parts)
    if len(text) <= PATH_CHARS:
        return text
    # Cut whole parts out of the middle: the head says where it starts, the tail how it ends.
    head: list[str] = []
    for part in parts[:-2]:
        if sum(map(len, head)) + len(part) > PATH_CHARS - 60:
            break
        head.append(part)
    tail = parts[-2:]
    left_out = len(parts) - len(head) - len(tail)
    return f"{''.join(head)}...({left_out} more)...{''.join(tail)}"


def _part(part: str | int, keyed: bool) -> str:
    if not keyed:
        return f"[{part}]"
    key = str(part)
    if key.isidentifier() and key.isascii():
        return f".{key}"
    return f"[{safe_text(repr(key), 60)}]"
