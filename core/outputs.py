"""Large task outputs by reference: kept in the BlobStore, the task holding a small reference.

When a task succeeds with an output whose JSON is larger than ``limit`` bytes, it is stored
(gzip JSON) under ``outputs/<workflow>/<key>/attempt-<n>.json.gz`` and the Store records a
reference::

    {"$blob": "outputs/wf/key/attempt-1.json.gz", "size": 5242880, "sha256": "..."}

so the Store's rows, its listings and the UI stay small. An agent given an OutputStore (the
same ``blob_url``) does this itself and reports only the reference, so the output does not
travel in its report; the scheduler's own offload is the safety net for agents that send it
inline, and it checks that an agent's reference names an object it can read.

The scheduler hands references on as they are: a dependent's task message carries the
reference, and the agent that runs it fetches the output only when its handler reads it
(:mod:`agents.upstream`), through the OutputStore's :class:`OutputCache`, so an output crosses
the bus at most once. ``agentdeck show`` resolves references itself.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from agentdeck.core.errors import AgentdeckError, NotFound
from agentdeck.core.models import JSON, ErrorInfo
from agentdeck.core.ports import BlobStore

log = structlog.get_logger(__name__)

REF_KEY = "$blob"
PREFIX = "outputs"
GZIP_LEVEL = 1
"""The fastest: on 200 kB of prose (a model's output) 2-3x faster than zlib's default 6 for
objects ~15% larger (docs/performance.md); on rows of JSON nearly the same size. Writing is on
every large output's path to its dependents; storage is cheap."""
THREAD_FROM = 1 << 20
"""Bytes from which (de)compression runs in a thread: below, a thread costs more than it saves."""
CACHE_BYTES = 64 << 20
"""How much output JSON an :class:`OutputCache` keeps by default: 64 MiB."""


def is_ref(value: JSON) -> bool:
    """True if ``value`` is an output reference written by :class:`OutputStore`."""
    return isinstance(value, dict) and isinstance(value.get(REF_KEY), str) and "sha256" in value


class OutputCache:
    """Outputs' JSON text by reference, at most ``max_bytes`` of it, the least recently used
    dropped first; an output larger than the whole cache is not kept.

    It keeps the text, not the decoded value, so every reader decodes its own copy: a handler
    that changes what it was given changes nothing for the next one. Entries are keyed by the
    object's key and sha256, so a cached text is the object the reference names. ``hits`` and
    ``misses`` count :meth:`get`; ``evicted`` counts entries dropped for room.
    """

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 (cache nothing) or more, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = self.evicted = 0
        self._texts: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"<OutputCache entries={len(self._texts)} bytes={self.bytes}/{self.max_bytes}"
            f" hits={self.hits} misses={self.misses} evicted={self.evicted}>"
        )

    def __len__(self) -> int:
        return len(self._texts)

    def get(self, ref: Mapping[str, JSON]) -> bytes | None:
        """The JSON text of the output ``ref`` names, if kept (it becomes the most recent)."""
        name = _name(ref)
        text = self._texts.get(name)
        if text is None:
            self.misses += 1
            return None
        self._texts.move_to_end(name)
        self.hits += 1
        return text

    def put(self, ref: Mapping[str, JSON], text: bytes) -> None:
        """Keep ``text`` as the output ``ref`` names, dropping the least recently used entries
        until the cache is within its bound again."""
        if len(text) > self.max_bytes:
            return
        name = _name(ref)
        old = self._texts.pop(name, None)
        if old is not None:
            self.bytes -= len(old)
        self._texts[name] = text
        self.bytes += len(text)
        while self.bytes > self.max_bytes:
            _, dropped = self._texts.popitem(last=False)
            self.bytes -= len(dropped)
            self.evicted += 1


def _name(ref: Mapping[str, JSON]) -> tuple[str, str]:
    return str(ref[REF_KEY]), str(ref.get("sha256"))


class OutputStore:
    """Moves outputs over ``limit`` bytes of JSON to ``blobs`` and brings them back.

    ``limit`` 0 moves nothing but still resolves references (ones an agent made). ``cache``
    keeps the text of outputs read (and of those this store wrote for an agent), so readers
    in this process fetch each object once; the composition root makes one OutputStore per
    process, so this is the process's cache. Default: a fresh :class:`OutputCache`.
    """

    def __init__(self, blobs: BlobStore, *, limit: int, cache: OutputCache | None = None) -> None:
        if limit < 0:
            raise ValueError(f"limit must be 0 (keep every output inline) or more, got {limit}")
        self.blobs, self.limit = blobs, limit
        self.cache = cache if cache is not None else OutputCache()
        self._reading: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self.offloaded = 0
        self.fetched = 0
        """Objects read from the blob store (cache misses that went to it)."""

    def __repr__(self) -> str:
        return f"<OutputStore limit={self.limit} offloaded={self.offloaded} fetched={self.fetched}>"

    async def offload(
        self,
        task_id: str,
        attempt: int,
        output: JSON,
        *,
        size_hint: int | None = None,
        encoded: bytes | None = None,
        remember: bool = True,
    ) -> JSON:
        """``output`` itself when small, else a reference to it, stored in the BlobStore.

        ``size_hint`` (the size of the message that carried it) skips the measuring when it
        is already under the limit: most outputs are small, and this runs for every success.
        ``encoded``, the output's compact JSON when the caller has it, saves encoding it again.
        ``remember``: keep the text in the cache too, since a dependent run by this process
        (a pipeline's next step) is its likeliest reader.
        Whatever the BlobStore raises goes to the caller.
        """
        if output is None or self.limit == 0 or (size_hint is not None and size_hint <= self.limit):
            return output
        text = (
            encoded if encoded is not None else json.dumps(output, separators=(",", ":")).encode()
        )
        if len(text) <= self.limit:
            return output
        data = await _in_thread_if_large(gzip.compress, text, GZIP_LEVEL, mtime=0)
        key = f"{PREFIX}/{task_id}/attempt-{attempt}.json.gz"
        await self.blobs.put(key, data)
        self.offloaded += 1
        ref: dict[str, JSON] = {
            REF_KEY: key,
            "size": len(text),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if remember:
            self.cache.put(ref, text)
        return ref

    async def keep(
        self, task_id: str, attempt: int, output: JSON, *, size_hint: int | None = None
    ) -> JSON:
        """:meth:`offload` for the scheduler: should the BlobStore fail, the output stays inline
        (logged), since the Store can hold it and a success must not be lost for want of S3.
        Not cached: the scheduler never reads outputs, its agents may live elsewhere."""
        try:
            return await self.offload(task_id, attempt, output, size_hint=size_hint, remember=False)
        except Exception as exc:  # any engine's error, not only BackendUnavailable
            log.warning("output_offload_failed", task_id=task_id, fallback="inline", error=str(exc))
            return output

    async def unreadable(self, value: JSON) -> ErrorInfo | None:
        """For an output an agent reported: when it is a reference to an object this BlobStore
        does not hold (the agent's ``blob_url`` is not this one), the error that fails its
        attempt, so no dependent is sent an input nobody can read. None for anything else, and
        when the BlobStore cannot be asked (resolving it for a dependent will tell)."""
        if not is_ref(value):
            return None
        key = value[REF_KEY]
        try:
            if any(info.key == key for info in await self.blobs.list(key)):
                return None
        except Exception as exc:  # any engine's error: an outage says nothing of the object
            log.warning("output_check_failed", key=key, error=str(exc))
            return None
        return ErrorInfo(
            "output_missing",
            f"the agent stored its output as {key}, which is not in the scheduler's blob store "
            "(give the agent the daemon's blob_url)",
        )

    async def resolve(self, value: JSON) -> JSON:
        """The output a reference stands for (anything else is returned as it is). Raises
        AgentdeckError if the object is missing or damaged."""
        if not is_ref(value):
            return value
        assert isinstance(value, dict)  # is_ref says so
        return json.loads(await self.text(value))

    async def text(self, ref: Mapping[str, JSON]) -> bytes:
        """The JSON text of the output ``ref`` names: from the cache, else read (:meth:`read`)
        and cached. Readers that ask at once for the same object share one read (a fan-out's
        dependents starting together). Raises as :meth:`read` does."""
        text = self.cache.get(ref)
        if text is not None:
            return text
        name = _name(ref)
        reading = self._reading.get(name)
        if reading is None:
            reading = self._reading[name] = asyncio.ensure_future(self.read(ref))
            reading.add_done_callback(lambda done: self._read_done(name, ref, done))
        # Shielded: a reader cancelled (its task timed out) does not cancel the others' read.
        return await asyncio.shield(reading)

    def _read_done(
        self, name: tuple[str, str], ref: Mapping[str, JSON], done: asyncio.Future[bytes]
    ) -> None:
        if self._reading.get(name) is done:
            del self._reading[name]
        # exception() also marks a failure seen, should no reader be left to take it.
        if not done.cancelled() and done.exception() is None:
            self.cache.put(ref, done.result())

    async def read(self, ref: Mapping[str, JSON]) -> bytes:
        """The JSON text of the output ``ref`` names, read from the blob store and checked
        against its sha256 (the cache is neither asked nor filled). Raises AgentdeckError if
        the object is missing or damaged; whatever else the BlobStore raises (an outage) goes
        to the caller."""
        key = str(ref[REF_KEY])
        try:
            data = await self.blobs.get(key)
        except NotFound:
            raise AgentdeckError(f"output object {key} is missing from the blob store") from None
        self.fetched += 1
        if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
            raise AgentdeckError(f"output object {key} is damaged (sha256 differs)")
        return await _in_thread_if_large(gzip.decompress, data)


async def _in_thread_if_large(
    work: Callable[..., bytes], data: bytes, *args: Any, **kwargs: Any
) -> bytes:
    """``work(data, ...)``, in a thread when ``data`` is large: zlib lets go of the GIL, so the
    event loop (heartbeats, the lease, other tasks) runs on while megabytes are (de)compressed."""
    if len(data) < THREAD_FROM:
        return work(data, *args, **kwargs)
    return await asyncio.to_thread(work, data, *args, **kwargs)
