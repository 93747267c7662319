"""Prompts written as templates over the outputs of the tasks a task needs.

``"Review {triage.result} with care"`` takes the ``result`` field of the output of the
upstream task ``triage``. A name is an upstream task's key (its output) or a key of the task's
own input (which wins when both have it); ``.field`` and ``[field]`` go into objects, ``[0]``
into lists. Strings go in as they are, anything else as compact JSON. ``{{`` and ``}}`` are
literal braces. There is no attribute access, conversion or call: a template reads data only.

The values are read lazily (:func:`template_values`): only the upstream outputs a template
names are read, so a large one it does not name is never fetched from the blob store.

A field the data does not have is one clear error (TaskFailed, ``bad_input``, not retryable:
the same upstream outputs would fail the same way) naming the field and what there is.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator, Mapping

from agentdeck.core.errors import TaskFailed
from agentdeck.core.models import JSON

_PART = re.compile(r"\.([^.\[\]]+)|\[([^\[\]]+)\]")
_FORMATTER = string.Formatter()


class _Values(Mapping[str, JSON]):
    """``inputs`` over ``upstream``, reading a value only when asked for it."""

    def __init__(self, upstream: Mapping[str, JSON], inputs: Mapping[str, JSON]) -> None:
        self._upstream, self._inputs = upstream, inputs

    def __getitem__(self, key: str) -> JSON:
        return self._inputs[key] if key in self._inputs else self._upstream[key]

    def __contains__(self, key: object) -> bool:
        return key in self._inputs or key in self._upstream

    def __iter__(self) -> Iterator[str]:
        yield from self._upstream
        yield from (k for k in self._inputs if k not in self._upstream)

    def __len__(self) -> int:
        return len(self._upstream) + sum(1 for k in self._inputs if k not in self._upstream)


def template_values(upstream: Mapping[str, JSON], inputs: Mapping[str, JSON]) -> Mapping[str, JSON]:
    """What a template is filled from: the task's ``inputs`` (which win) and its ``upstream``
    outputs, as ``{**upstream, **inputs}`` but read only when a template names them."""
    return _Values(upstream, inputs)


def render(template: str, values: Mapping[str, JSON], *, kind: str, what: str) -> str:
    """``template`` filled from ``values``; errors say ``<kind>: the <what> ...``."""
    out: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise _bad(
            f"{kind}: the {what} is not a valid template ({exc}); write {{{{ for a brace"
        ) from None
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        if conversion or spec:
            written = (
                field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            )
            raise _bad(
                f"{kind}: the {what} writes {{{written}}}; only plain names are allowed, "
                "e.g. {triage.result}"
            )
        out.append(_text(_lookup(field, values, kind, what)))
    return "".join(out)


def _lookup(field: str, values: Mapping[str, JSON], kind: str, what: str) -> JSON:
    name_end = min((i for i in (field.find("."), field.find("[")) if i >= 0), default=len(field))
    name, rest = field[:name_end], field[name_end:]
    if not name:
        raise _bad(f"{kind}: the {what} has an empty field {{{field}}}; name an upstream task")
    if name not in values:
        known = ", ".join(map(repr, values)) or "none"
        raise _bad(
            f"{kind}: the {what} names {{{field}}}, but there is no upstream output or input "
            f"field {name!r} (there is: {known})"
        )
    value = values[name]
    path = name
    position = 0
    for match in _PART.finditer(rest):
        if match.start() != position:
            break
        position = match.end()
        key = match.group(1) or match.group(2)
        value = _step(value, key, field, path, kind, what)
        path += match.group(0)
    if position != len(rest):
        raise _bad(f"{kind}: the {what} names {{{field}}}, which is not a field path")
    return value


def _step(value: JSON, key: str, field: str, path: str, kind: str, what: str) -> JSON:
    if isinstance(value, Mapping):
        if key in value:
            return value[key]
        has = ", ".join(map(repr, value)) or "nothing"
        raise _bad(
            f"{kind}: the {what} names {{{field}}}, but {path} has no field {key!r} (it has: {has})"
        )
    if isinstance(value, list) and key.lstrip("-").isdigit():
        index = int(key)
        if -len(value) <= index < len(value):
            return value[index]
        raise _bad(
            f"{kind}: the {what} names {{{field}}}, but {path} has {len(value)} item(s), "
            f"no [{index}]"
        )
    raise _bad(
        f"{kind}: the {what} names {{{field}}}, but {path} is a {type(value).__name__}, "
        f"which has no field {key!r}"
    )


def _text(value: JSON) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _bad(message: str) -> TaskFailed:
    return TaskFailed(message, non_retryable=True, kind="bad_input")
