"""Large task outputs by reference: kept in the BlobStore, the task holding a small reference.

When a task succeeds with an output whose JSON is larger than ``limit`` bytes, the scheduler
stores it (gzip JSON) under ``outputs/<workflow>/<key>/attempt-<n>.json.gz`` and records in the
Store a reference::

    {"$blob": "outputs/wf/key/attempt-1.json.gz", "size": 5242880, "sha256": "..."}

so the Store's rows, its listings and the UI stay small. Consumers resolve it: the scheduler
when it hands the output to the tasks that need it (their ``upstream``), and ``agentdeck show``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Mapping

from core.errors import AgentdeckError, NotFound
from core.models import JSON
from core.ports import BlobStore

REF_KEY = "$blob"
PREFIX = "outputs"


def is_ref(value: JSON) -> bool:
    """True if ``value`` is an output reference written by :class:`OutputStore`."""
    return isinstance(value, dict) and isinstance(value.get(REF_KEY), str) and "sha256" in value


class OutputStore:
    """Moves outputs over ``limit`` bytes of JSON to ``blobs`` and brings them back."""

    def __init__(self, blobs: BlobStore, *, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1 byte, got {limit}")
        self.blobs, self.limit = blobs, limit
        self.offloaded = 0

    def __repr__(self) -> str:
        return f"<OutputStore limit={self.limit} offloaded={self.offloaded}>"

    async def offload(
        self, task_id: str, attempt: int, output: JSON, *, size_hint: int | None = None
    ) -> JSON:
        """``output`` itself when small, else a reference to it, stored in the BlobStore.

        ``size_hint`` (the size of the message that carried it) skips the measuring when it
        is already under the limit: most outputs are small, and this runs for every success.
        """
        if output is None or (size_hint is not None and size_hint <= self.limit):
            return output
        text = json.dumps(output, separators=(",", ":"))
        if len(text.encode()) <= self.limit:
            return output
        data = gzip.compress(text.encode(), mtime=0)
        key = f"{PREFIX}/{task_id}/attempt-{attempt}.json.gz"
        await self.blobs.put(key, data)
        self.offloaded += 1
        return {
            REF_KEY: key,
            "size": len(text.encode()),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

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
        return json.loads(gzip.decompress(data))

    async def resolve_all(self, outputs: Mapping[str, JSON]) -> dict[str, JSON]:
        """``outputs`` with every reference among its values resolved."""
        return {k: await self.resolve(v) if is_ref(v) else v for k, v in outputs.items()}
