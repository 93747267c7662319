"""The outputs of the tasks a task needs, as its handler sees them: fetched when first read.

A task message carries each upstream output as the Store holds it: small ones inline, large
ones as a reference to the blob store (:mod:`core.outputs`). :class:`Upstream` is the mapping
``ctx.upstream``; it gives a handler the whole output, as a plain dict did, but reads a
referenced one from the blob store only when the handler first reads it, through the
process's :class:`~core.outputs.OutputCache`. An output a handler never reads is never
fetched.
It is a read-only Mapping, not a dict: ``dict(ctx.upstream)`` when a plain dict is needed
(``json.dumps``), which reads every output.

Reading ``ctx.upstream["a"]`` is synchronous, so an output not yet in the cache is read in a
thread of its own while the handler's event loop waits (a local file: a millisecond; S3: a
round trip). ``await ctx.load_upstream("a")`` fetches without holding the loop; the worker
does so by itself for the outputs the task's input names in a template (``{a.result}``).

An output that cannot be read (no blob store on this agent, the object missing or damaged,
the store down) fails the attempt with one error kind, ``upstream_unreadable``, retryable:
another agent, or the store once back, may read it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import string
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from agentdeck.core.errors import TaskFailed
from agentdeck.core.models import JSON
from agentdeck.core.outputs import REF_KEY, THREAD_FROM, OutputStore, is_ref

T = TypeVar("T")

UNREADABLE = "upstream_unreadable"
"""The error kind of an attempt whose handler read an upstream output that cannot be read."""

_FORMATTER = string.Formatter()
_SCAN_DEPTH = 16
"""How deep :func:`named_in` looks into a task's input for template strings."""


class Upstream(Mapping[str, JSON]):
    """``values`` (upstream outputs by task key, references among them) read lazily through
    ``outputs`` (None: this agent has no blob store, so a reference cannot be read).

    Within one attempt each output is decoded once and the same value returned on every
    read, as from a dict; each attempt decodes its own copy. ``fetched`` counts the outputs
    this mapping has decoded from references (from the cache or the blob store).
    """

    def __init__(self, values: Mapping[str, JSON], outputs: OutputStore | None = None) -> None:
        self._raw = dict(values)
        self._outputs = outputs
        self._loaded: dict[str, JSON] = {}
        self.fetched = 0

    def __repr__(self) -> str:
        parts = [
            f"{k}={'ref' if is_ref(v) else 'inline'}{'*' if k in self._loaded else ''}"
            for k, v in self._raw.items()
        ]
        return f"<Upstream {' '.join(parts)}>"

    def __getitem__(self, key: str) -> JSON:
        raw = self._raw[key]
        if not is_ref(raw):
            return raw
        if key not in self._loaded:
            self._loaded[key] = json.loads(self._text_now(key, raw))
            self.fetched += 1
        return self._loaded[key]

    def __contains__(self, key: object) -> bool:
        return key in self._raw  # without fetching anything

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    @property
    def refs(self) -> dict[str, Mapping[str, JSON]]:
        """The references among the values, by task key, as the task message carried them
        (to hand an output on without reading it)."""
        return {k: v for k, v in self._raw.items() if isinstance(v, dict) and is_ref(v)}

    async def load(self, *keys: str) -> None:
        """Fetch the referenced outputs of ``keys`` (none given: all of them) without holding
        the event loop, so reading them afterwards is instant. Raises KeyError for a key that
        is not upstream, TaskFailed (``upstream_unreadable``) for an output that cannot be
        read."""
        refs = self.refs
        for key in keys or tuple(refs):
            if key not in self._raw:
                known = ", ".join(map(repr, self._raw)) or "none"
                raise KeyError(f"{key!r} is not an upstream task of this one (there is: {known})")
            ref = refs.get(key)
            if ref is None or key in self._loaded:
                continue
            outputs = self._reader(key, ref)
            try:
                text = await outputs.text(ref)
            except Exception as exc:  # any engine's error: the handler gets one kind
                raise _unreadable(key, ref, str(exc)) from exc
            if len(text) >= THREAD_FROM:
                self._loaded[key] = await asyncio.to_thread(json.loads, text)
            else:
                self._loaded[key] = json.loads(text)
            self.fetched += 1

    def _text_now(self, key: str, ref: Mapping[str, JSON]) -> bytes:
        outputs = self._reader(key, ref)
        text = outputs.cache.get(ref)
        if text is not None:
            return text
        # A synchronous read by the handler: the BlobStore's methods are coroutines, which
        # cannot run on this thread's loop while it is busy running the handler, so they run
        # on a loop of their own in a thread, and this one waits.
        try:
            text = _run_in_thread(outputs.read(ref))
        except Exception as exc:  # any engine's error: the handler gets one kind
            raise _unreadable(key, ref, str(exc)) from exc
        outputs.cache.put(ref, text)
        return text

    def _reader(self, key: str, ref: Mapping[str, JSON]) -> OutputStore:
        if self._outputs is None:
            raise _unreadable(
                key,
                ref,
                "this agent has no blob store to read it from (give the agent the daemon's "
                "blob_url: AGENTDECK_BLOB_URL or blob_url in its config file)",
            )
        return self._outputs


def named_in(value: JSON, keys: Iterable[str]) -> list[str]:
    """Those of ``keys`` that a template string somewhere in ``value`` (a task's input) names
    as ``{key}``, ``{key.field}`` or ``{key[0]}``, in the order of ``keys``."""
    wanted = set(keys)
    if not wanted:
        return []
    found: set[str] = set()

    def scan(item: JSON, depth: int) -> None:
        if depth > _SCAN_DEPTH or found == wanted:
            return
        if isinstance(item, str):
            if "{" in item:
                found.update(_template_names(item) & wanted)
        elif isinstance(item, dict):
            for child in item.values():
                scan(child, depth + 1)
        elif isinstance(item, list):
            for child in item:
                scan(child, depth + 1)

    scan(value, 0)
    return [k for k in keys if k in found]


def _template_names(template: str) -> set[str]:
    """The names a ``str.format``-style template reads (``{a.b}`` reads ``a``); none for a
    string that is not a template."""
    try:
        fields = [field for _, field, _, _ in _FORMATTER.parse(template) if field]
    except ValueError:
        return set()
    names = set()
    for field in fields:
        end = min((i for i in (field.find("."), field.find("[")) if i >= 0), default=len(field))
        names.add(field[:end])
    return names


def _unreadable(key: str, ref: Mapping[str, JSON], why: str) -> TaskFailed:
    if "missing" in why and "blob_url" not in why:
        # Most often this agent's blob store is not the daemon's (another machine, no shared
        # blob_url): say how to fix that, not only what is absent.
        why += " (is this agent's blob_url the daemon's? set AGENTDECK_BLOB_URL to it)"
    return TaskFailed(
        f"the output of upstream task {key!r} ({ref[REF_KEY]}, {ref.get('size')} bytes of "
        f"JSON) cannot be read: {why}",
        kind=UNREADABLE,
    )


def _run_in_thread(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end on an event loop of its own, in a thread, and return what it
    returned (or raise what it raised)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="agentdeck-upstream") as pool:
        return pool.submit(asyncio.run, work).result()
