"""``FileBlobStore``: objects as files under a local folder (``file:///abs/path``).

A key ``snapshots/2024-01-01.json`` is the file ``<root>/snapshots/2024-01-01.json``. A write
goes to a temporary file in the same folder, is fsynced, then renamed over the target
(``os.replace`` is atomic on one file system), so a reader sees the old object or the new
one, never part of one. Folders left empty by ``delete`` stay; they cost nothing and removing
them would race with a concurrent ``put`` into the same folder.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit

from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable, ConfigError, ConflictError, NotFound
from agentdeck.core.ports import BlobInfo
from agentdeck.core.settings import redact_url

#: Temporary files start with this; keys may not, so ``list`` can skip them safely.
TEMP_PREFIX = ".agentdeck-tmp-"


def check_key(key: str) -> None:
    """Raise ValueError unless ``key`` is a relative ``/``-separated path of plain names.

    Every blob store applies the same rule, so a key valid on one backend is valid on all.
    """
    problem = _key_problem(key)
    if problem:
        raise ValueError(
            f"bad blob key {key!r}: {problem}; a key is a relative path of non-empty names "
            "separated by '/', such as 'snapshots/2024-01-01.json'"
        )


def _key_problem(key: str) -> str | None:
    if not isinstance(key, str) or not key:
        return "it is empty"
    if key.startswith("/"):
        return "it is absolute"
    if "\\" in key or "\0" in key:
        return "it contains a backslash or NUL"
    for segment in key.split("/"):
        if not segment:
            return "it has an empty segment"
        if segment in (".", ".."):
            return f"it has a {segment!r} segment"
        if segment.startswith(TEMP_PREFIX):
            return f"names starting with {TEMP_PREFIX!r} are reserved for temporary files"
    return None


def file_root(url: str) -> Path:
    """The folder of a ``file:///abs/path`` URL. Raises ConfigError for any other form."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if (
        parts.scheme != "file"
        or parts.netloc not in ("", "localhost")
        or parts.query
        or not path.startswith("/")
    ):
        raise ConfigError(
            f"expected 'file:///absolute/path/to/folder' (three slashes), got {redact_url(url)!r}"
        )
    return Path(path)


class FileBlobStore:
    """A :class:`core.ports.BlobStore` over a local folder; file I/O runs off the event loop."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock) -> Self:
        """A store for ``file:///abs/path`` (the clock is unused: files carry their own times)."""
        return cls(file_root(url))

    async def start(self) -> None:
        """Create the root folder if it is missing. Raises BackendUnavailable if it cannot."""
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"cannot create the blob folder {self.root}: {exc}") from exc

    async def close(self) -> None:
        """Nothing to release."""

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` atomically under ``key``. Raises ConflictError when a folder is in
        the way (``a`` exists as a folder of ``a/b``, or ``a`` is an object and ``a/b`` asked)."""
        check_key(key)
        try:
            await asyncio.to_thread(self._put, self._path(key), bytes(data))
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            raise ConflictError(
                f"cannot store {key!r}: a part of its path is both an object and a folder"
            ) from exc

    async def get(self, key: str) -> bytes:
        """The object's bytes. Raises NotFound."""
        check_key(key)
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"no blob {key!r} in {self.root}") from None

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        """Objects whose key starts with ``prefix`` (any string), sorted by key."""
        return await asyncio.to_thread(_list_files, self.root, prefix)

    async def delete(self, key: str) -> None:
        """Remove the object (no error if absent)."""
        check_key(key)
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except (NotADirectoryError, IsADirectoryError):
            return  # a folder, or under a file: no object has this key

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _put(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{target.name}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)  # make the rename itself survive a crash

    def __repr__(self) -> str:
        return f"<FileBlobStore root={self.root}>"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _list_files(root: Path, prefix: str) -> list[BlobInfo]:
    """The objects under ``root`` whose key starts with ``prefix``, sorted by key."""
    # Walk only the folder the prefix points into: "snapshots/2024" starts at "snapshots".
    folder, _, _ = prefix.rpartition("/")
    if folder and _key_problem(folder):
        return []
    start = root.joinpath(*folder.split("/")) if folder else root
    found: list[BlobInfo] = []
    for dirpath, _dirs, files in os.walk(start):
        base = Path(dirpath).relative_to(root).as_posix()
        for name in files:
            key = name if base == "." else f"{base}/{name}"
            if name.startswith(TEMP_PREFIX) or not key.startswith(prefix):
                continue
            try:
                stat = os.stat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue  # deleted while we walked
            found.append(BlobInfo(key=key, size=stat.st_size, modified=stat.st_mtime))
    return sorted(found, key=lambda info: info.key)
