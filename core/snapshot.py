"""State snapshots: the whole Store (workflows, tasks, usage, events, commands) as objects in
the BlobStore, and back.

A snapshot ``<id>`` is a folder of objects under a prefix (``snapshots/`` by default)::

    snapshots/<id>/part-00000.jsonl.gz   records, one JSON object per line, gzip-compressed
    snapshots/<id>/part-00001.jsonl.gz
    snapshots/<id>/manifest.json         format, version, counts, and each part's sha256

The manifest is written last: a snapshot without one was interrupted and is not listed.
Parts hold workflows first, then tasks (by id, never splitting a workflow's tasks between two
parts), then the attempts' usage records, then events (by seq), then commands, so each part
can be loaded in one transaction. Snapshots older than usage records have none, and restore.

A restore checks everything before writing anything: the manifest's format and version, every
part's size and checksum, and every record's shape. It refuses a store that is not empty.

Snapshots are *fuzzy*: the tables are read one after the other while the scheduler may be
running, so a task may be a step ahead of or behind its last event. Every record is whole, and
records that would dangle (a task of a workflow submitted after the workflows were read) are
left out; a scheduler that takes over a restored store recovers in-flight work as after any
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError, ConflictError, NotFound
from agentdeck.core.models import (
    JSON,
    AttemptUsage,
    Budget,
    Command,
    CommandStatus,
    ErrorInfo,
    Task,
    TaskEvent,
    Usage,
    Workflow,
)
from agentdeck.core.ports import BlobStore, Store
from agentdeck.core.states import TaskStatus, WorkflowStatus

log = structlog.get_logger(__name__)

FORMAT = "agentdeck-snapshot"
VERSION = 1
"""The snapshot format this code writes and reads."""

MANIFEST = "manifest.json"
PAGE = 1000
"""Records read from the Store per call."""
PART_RECORDS = 20_000
"""Records per part (a part may hold more to keep one workflow's tasks together)."""


class SnapshotError(AgentdeckError):
    """A snapshot cannot be read or restored: unknown, damaged, of an unknown version, or the
    target store is not empty."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What a manifest says about one snapshot."""

    id: str
    created_at: float
    node: str
    counts: Mapping[str, int]
    size: int
    """Bytes of all its parts."""


# ------------------------------------------------------------------------------ records


def _encode(kind: str, record: Any) -> dict[str, JSON]:
    data = dataclasses.asdict(record)
    for name, value in data.items():
        if isinstance(value, tuple):
            data[name] = list(value)
    return {"t": kind, "r": data}


def _decode(line: Mapping[str, Any]) -> tuple[str, Any]:
    """One record from its JSON form. Raises KeyError/TypeError/ValueError when malformed."""
    kind, r = line["t"], dict(line["r"])
    if kind == "workflow":
        r["status"] = WorkflowStatus(r["status"])
        if r.get("budget") is not None:  # absent from snapshots older than budgets
            r["budget"] = Budget(**r["budget"])
        return kind, Workflow(**r)
    if kind == "task":
        r["status"] = TaskStatus(r["status"])
        r["needs"] = tuple(r["needs"])
        r["error"] = ErrorInfo.from_dict(r["error"]) if r["error"] is not None else None
        return kind, Task(**r)
    if kind == "event":
        for name in ("from_status", "to_status"):
            r[name] = TaskStatus(r[name]) if r[name] is not None else None
        return kind, TaskEvent(**r)
    if kind == "command":
        r["status"] = CommandStatus(r["status"])
        return kind, Command(**r)
    if kind == "usage":
        r["usage"] = Usage(**r["usage"])
        return kind, AttemptUsage(**r)
    raise ValueError(f"unknown record type {kind!r}")


def _pack(lines: list[dict[str, JSON]]) -> bytes:
    text = "\n".join(json.dumps(line, separators=(",", ":")) for line in lines)
    return gzip.compress(text.encode(), mtime=0)


def _unpack(data: bytes) -> Iterator[tuple[str, Any]]:
    text = gzip.decompress(data).decode()
    for line in text.splitlines():
        yield _decode(json.loads(line))


# ------------------------------------------------------------------------------- create


def new_snapshot_id(now: float) -> str:
    """A sortable id: UTC time to the second, then a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(3)


class _Writer:
    """Collects records into parts and uploads each when full."""

    def __init__(self, blobs: BlobStore, folder: str) -> None:
        self.blobs, self.folder = blobs, folder
        self.lines: list[dict[str, JSON]] = []
        self.parts: list[dict[str, JSON]] = []

    async def add(self, kind: str, record: Any, *, may_cut: bool = True) -> None:
        if may_cut and len(self.lines) >= PART_RECORDS:
            await self.flush()
        self.lines.append(_encode(kind, record))

    async def flush(self) -> None:
        if not self.lines:
            return
        data = _pack(self.lines)
        key = f"{self.folder}/part-{len(self.parts):05d}.jsonl.gz"
        await self.blobs.put(key, data)
        self.parts.append(
            {
                "key": key,
                "records": len(self.lines),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        self.lines = []


async def create_snapshot(
    store: Store, blobs: BlobStore, clock: Clock, *, node: str = "", prefix: str = "snapshots/"
) -> SnapshotInfo:
    """Write the whole state of ``store`` as a new snapshot; returns its manifest."""
    snapshot_id = new_snapshot_id(clock.now())
    folder = f"{prefix.rstrip('/')}/{snapshot_id}"
    writer = _Writer(blobs, folder)
    counts = dict.fromkeys(("workflows", "tasks", "events", "commands", "usage"), 0)

    workflow_ids: set[str] = set()
    after = ""
    while page := await store.dump_workflows(after=after, limit=PAGE):
        for w in page:
            await writer.add("workflow", w)
            workflow_ids.add(w.id)
        after = page[-1].id
    counts["workflows"] = len(workflow_ids)

    task_ids: set[str] = set()
    after, current = "", ""
    while tasks := await store.dump_tasks(after=after, limit=PAGE):
        for t in tasks:
            if t.workflow_id not in workflow_ids:
                continue  # submitted after the workflows were read
            # Never cut a part inside one workflow's tasks: load() needs them together.
            await writer.add("task", t, may_cut=t.workflow_id != current)
            current = t.workflow_id
            task_ids.add(t.id)
        after = tasks[-1].id
    counts["tasks"] = len(task_ids)

    # Usage goes with its tasks: a restored store sums the same spending (budgets included).
    last: tuple[str, int] = ("", 0)
    while used := await store.dump_usage(after=last, limit=PAGE):
        for u in used:
            if u.task_id in task_ids:
                await writer.add("usage", u)
                counts["usage"] += 1
        last = (used[-1].task_id, used[-1].attempt)

    seq = 0
    while events := await store.events_since(seq, limit=PAGE):
        for e in events:
            if e.task_id in task_ids:
                await writer.add("event", e)
                counts["events"] += 1
        seq = events[-1].seq

    after = ""
    while commands := await store.dump_commands(after=after, limit=PAGE):
        for c in commands:
            await writer.add("command", c)
            counts["commands"] += 1
        after = commands[-1].id
    await writer.flush()

    now = clock.now()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "id": snapshot_id,
        "created_at": now,
        "node": node,
        "counts": counts,
        "parts": writer.parts,
    }
    await blobs.put(f"{folder}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    return _info(manifest)


# --------------------------------------------------------------------------------- read


def _info(manifest: Mapping[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(
        id=str(manifest["id"]),
        created_at=float(manifest["created_at"]),
        node=str(manifest.get("node", "")),
        counts={str(k): int(v) for k, v in manifest["counts"].items()},
        size=sum(int(p["size"]) for p in manifest["parts"]),
    )


async def _manifest(blobs: BlobStore, prefix: str, snapshot_id: str) -> dict[str, Any]:
    key = f"{prefix.rstrip('/')}/{snapshot_id}/{MANIFEST}"
    try:
        raw = await blobs.get(key)
    except NotFound:
        raise NotFound(f"no snapshot {snapshot_id!r} (no {key})") from None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise SnapshotError(f"snapshot {snapshot_id}: damaged manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError(f"snapshot {snapshot_id}: {key} is not an agentdeck snapshot manifest")
    if manifest.get("version") != VERSION:
        raise SnapshotError(
            f"snapshot {snapshot_id} has format version {manifest.get('version')!r}; this "
            f"agentdeck reads version {VERSION}"
        )
    try:
        _info(manifest)
        for part in manifest["parts"]:
            str(part["key"]), int(part["records"]), int(part["size"]), str(part["sha256"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"snapshot {snapshot_id}: damaged manifest ({exc!r})") from None
    return manifest


async def list_snapshots(blobs: BlobStore, *, prefix: str = "snapshots/") -> list[SnapshotInfo]:
    """Complete snapshots (those with a readable manifest), oldest first."""
    found = []
    for blob in await blobs.list(prefix):
        rest = blob.key[len(prefix) :].lstrip("/")
        snapshot_id, _, name = rest.partition("/")
        if name != MANIFEST:
            continue
        with contextlib.suppress(SnapshotError, NotFound):
            found.append(_info(await _manifest(blobs, prefix, snapshot_id)))
    return sorted(found, key=lambda s: (s.created_at, s.id))


async def delete_snapshot(
    blobs: BlobStore, snapshot_id: str, *, prefix: str = "snapshots/"
) -> None:
    """Remove a snapshot: its manifest first, so a half-deleted one is never listed."""
    folder = f"{prefix.rstrip('/')}/{snapshot_id}"
    await blobs.delete(f"{folder}/{MANIFEST}")
    for blob in await blobs.list(f"{folder}/"):
        await blobs.delete(blob.key)


# ------------------------------------------------------------------------------ restore


async def _verified_parts(blobs: BlobStore, manifest: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """Every part's bytes, each checked against the manifest and decoded once."""
    snapshot_id = manifest["id"]
    parts = []
    for part in manifest["parts"]:
        key = part["key"]
        try:
            data = await blobs.get(key)
        except NotFound:
            raise SnapshotError(f"snapshot {snapshot_id}: part {key} is missing") from None
        if len(data) != part["size"] or hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise SnapshotError(
                f"snapshot {snapshot_id}: part {key} is damaged (size or sha256 differs "
                "from the manifest)"
            )
        try:
            count = sum(1 for _ in _unpack(data))
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(
                f"snapshot {snapshot_id}: part {key} does not decode: {exc!r}"
            ) from None
        if count != part["records"]:
            raise SnapshotError(
                f"snapshot {snapshot_id}: part {key} holds {count} records, the manifest "
                f"says {part['records']}"
            )
        parts.append((key, data))
    return parts


async def store_is_empty(store: Store) -> bool:
    """True when the store holds no workflow and no command."""
    return not await store.dump_workflows(limit=1) and not await store.dump_commands(limit=1)


async def restore_snapshot(
    store: Store, blobs: BlobStore, snapshot_id: str, *, prefix: str = "snapshots/"
) -> SnapshotInfo:
    """Load snapshot ``snapshot_id`` into ``store``, which must be empty.

    Raises NotFound for an unknown snapshot, and SnapshotError — before writing anything —
    for an unknown format version, a damaged manifest or part, or a store that is not empty.
    Each part loads in one transaction; should a write fail half-way, empty the store and
    run the restore again.
    """
    manifest = await _manifest(blobs, prefix, snapshot_id)
    parts = await _verified_parts(blobs, manifest)
    if not await store_is_empty(store):
        raise SnapshotError(
            "the store is not empty; restore into an empty database (a new SQLite file or "
            "PostgreSQL database)"
        )
    for key, data in parts:
        batch: dict[str, list[Any]] = {
            "workflow": [],
            "task": [],
            "event": [],
            "command": [],
            "usage": [],
        }
        for kind, record in _unpack(data):
            batch[kind].append(record)
        try:
            await store.load(
                workflows=batch["workflow"],
                tasks=batch["task"],
                events=batch["event"],
                commands=batch["command"],
                usage=batch["usage"],
            )
        except ConflictError as exc:
            raise SnapshotError(f"snapshot {snapshot_id}: part {key} did not load: {exc}") from exc
    return _info(manifest)


# ------------------------------------------------------------------------------ service


class SnapshotService:
    """Takes a snapshot every ``interval`` seconds and keeps the newest ``keep``.

    ``active`` says whether this node should take them (the scheduler leader does, so several
    daemon nodes do not all write the same state).
    """

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        clock: Clock,
        *,
        interval: float,
        keep: int = 24,
        prefix: str = "snapshots/",
        node: str = "",
        active: Callable[[], bool] | None = None,
    ) -> None:
        self.store, self.blobs, self.clock = store, blobs, clock
        self.interval, self.keep, self.prefix, self.node = interval, keep, prefix, node
        self.active = active or (lambda: True)
        self.taken = 0
        self._stopped = asyncio.Event()

    def __repr__(self) -> str:
        return f"<SnapshotService every={self.interval:g}s taken={self.taken}>"

    async def run(self) -> None:
        """Snapshot every ``interval`` until :meth:`stop`; a failure is logged, not fatal."""
        while not self._stopped.is_set():
            sleeper = asyncio.ensure_future(self.clock.sleep(self.interval))
            stopper = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                stopper.cancel()
            if self._stopped.is_set() or not self.active():
                continue
            await self.once()

    async def once(self) -> SnapshotInfo | None:
        """Take one snapshot and prune old ones; None if it failed (logged)."""
        try:
            info = await create_snapshot(
                self.store, self.blobs, self.clock, node=self.node, prefix=self.prefix
            )
            self.taken += 1
            log.info("snapshot_created", snapshot=info.id, size=info.size, **dict(info.counts))
            for old in (await list_snapshots(self.blobs, prefix=self.prefix))[: -self.keep]:
                await delete_snapshot(self.blobs, old.id, prefix=self.prefix)
            return info
        except AgentdeckError as exc:
            log.error("snapshot_failed", error=str(exc), kind=type(exc).__name__)
            return None

    async def stop(self, grace: float = 0.0) -> None:
        """Stop after the snapshot in progress, if any."""
        self._stopped.set()
