"""Large task outputs by reference: kept in the BlobStore, the task holding a small reference.

When a task succeeds with an output whose JSON is larger than ``limit`` bytes, it is stored
(gzip JSON) under ``outputs/<workflow>/<key>/attempt-<n>.json.gz`` and the Store records a
reference::

    {"$blob": "outputs/wf/key/attempt-1.json.gz", "size": 5242880, "sha256": "..."}

so the Store's rows, its listings and the UI stay small. An agent given an OutputStore (the
same ``blob_url``) does this itself and reports only the reference, so the output does not
travel in its report; the scheduler's own offload is the safety net for agents that send it
inline, and it checks that an agent's reference names an object it can read.
Consumers resolve it: the scheduler when it hands the output to the tasks that need it (their
``upstream``), and ``agentdeck show``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from agentdeck.core.errors import AgentdeckError, NotFound
from agentdeck.core.models import JSON, ErrorInfo
from agentdeck.core.ports import BlobStore

log = structlog.get_logger(__name__)

REF_KEY = "$blob"
PREFIX = "outputs"
GZIP_LEVEL = 6
"""zlib's default: on JSON nearly as small as level 9, several times faster."""
THREAD_FROM = 1 << 20
"""Bytes from which (de)compression runs in a thread: below, a thread costs more than it saves."""


def is_ref(value: JSON) -> bool:
    """True if ``value`` is an output reference written by :class:`OutputStore`."""
    return isinstance(value, dict) and isinstance(value.get(REF_KEY), str) and "sha256" in value


class OutputStore:
    """Moves outputs over ``limit`` bytes of JSON to ``blobs`` and brings them back.

    ``limit`` 0 moves nothing but still resolves references (ones an agent made).
    """

    def __init__(self, blobs: BlobStore, *, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be 0 (keep every output inline) or more, got {limit}")
        self.blobs, self.limit = blobs, limit
        self.offloaded = 0

    def __repr__(self) -> str:
        return f"<OutputStore limit={self.limit} offloaded={self.offloaded}>"

    async def offload(
        self,
        task_id: str,
        attempt: int,
        output: JSON,
        *,
        size_hint: int | None = None,
        encoded: bytes | None = None,
    ) -> JSON:
        """``output`` itself when small, else a reference to it, stored in the BlobStore.

        ``size_hint`` (the size of the message that carried it) skips the measuring when it
        is already under the limit: most outputs are small, and this runs for every success.
        ``encoded``, the output's compact JSON when the caller has it, saves encoding it again.
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
        return {REF_KEY: key, "size": len(text), "sha256": hashlib.sha256(data).hexdigest()}

    async def keep(
        self, task_id: str, attempt: int, output: JSON, *, size_hint: int | None = None
    ) -> JSON:
        """:meth:`offload` for the scheduler: should the BlobStore fail, the output stays inline
        (logged), since the Store can hold it and a success must not be lost for want of S3."""
        try:
            return await self.offload(task_id, attempt, output, size_hint=size_hint)
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
        key = value[REF_KEY]
        try:
            data = await self.blobs.get(key)
        except NotFound:
            raise AgentdeckError(f"output object {key} is missing from the blob store") from None
        if hashlib.sha256(data).hexdigest() != value["sha256"]:
            raise AgentdeckError(f"output object {key} is damaged (sha256 differs)")
        return json.loads(await _in_thread_if_large(gzip.decompress, data))

    async def resolve_all(self, outputs: Mapping[str, JSON]) -> dict[str, JSON]:
        """``outputs`` with every reference among its values resolved."""
        return {k: await self.resolve(v) if is_ref(v) else v for k, v in outputs.items()}


async def _in_thread_if_large(
    work: Callable[..., bytes], data: bytes, *args: Any, **kwargs: Any
) -> bytes:
    """``work(data, ...)``, in a thread when ``data`` is large: zlib lets go of the GIL, so the
    event loop (heartbeats, the lease, other tasks) runs on while megabytes are (de)compressed."""
    if len(data) < THREAD_FROM:
        return work(data, *args, **kwargs)
    return await asyncio.to_thread(work, data, *args, **kwargs)
