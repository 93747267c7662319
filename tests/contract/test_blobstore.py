"""The BlobStore contract, run against every blob backend.

Written against core.ports.BlobStore only: a new engine is one more entry in ``BLOB_URLS``.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from agentdeck.backends import open_blobs
from agentdeck.backends.files import TEMP_PREFIX, FileBlobStore, check_key
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, ConfigError, ConflictError, NotFound
from agentdeck.core.models import new_id
from agentdeck.core.ports import BlobStore

pytestmark = pytest.mark.contract


@functools.cache
def _moto_endpoint() -> str:
    """An S3 server (moto) in this process, started on first use with a bucket ``contract``;
    dummy credentials go in the environment so nothing can reach a real AWS account."""
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    atexit.register(server.stop)
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="contract")
    return endpoint


def _s3_url(folder: Path) -> str:
    """The moto server's bucket, under a key prefix private to the test."""
    return f"s3://contract/{new_id()}?endpoint_url={_moto_endpoint()}"


#: Each backend as a function of a folder private to the test -> the store's URL.
BLOB_URLS: list[object] = [
    pytest.param(lambda folder: f"file://{folder}/blobs", id="file"),
    pytest.param(_s3_url, id="s3"),
]

BAD_KEYS = ["", "/etc/passwd", "a//b", "a/", "../outside", "a/../../b", "./a", "a/./b", "a\\b"]


@pytest.fixture(params=BLOB_URLS)
async def blobs(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[BlobStore]:
    """A started blob store of each backend, closed after the test."""
    url_for: Callable[[Path], str] = request.param
    instance = open_blobs(url_for(tmp_path), clock=clock)
    await instance.start()
    yield instance
    await instance.close()


async def test_backend_implements_the_port(blobs: BlobStore) -> None:
    """Every blob backend satisfies the BlobStore protocol."""
    assert isinstance(blobs, BlobStore)


async def test_put_then_get_returns_the_same_bytes(blobs: BlobStore) -> None:
    """An object reads back exactly as written, nested keys and empty objects included."""
    payload = bytes(range(256)) * 100
    await blobs.put("snapshots/2024/01/state.json", payload)
    await blobs.put("empty", b"")
    assert await blobs.get("snapshots/2024/01/state.json") == payload
    assert await blobs.get("empty") == b""


async def test_put_replaces_an_existing_object(blobs: BlobStore) -> None:
    """A second put under a key replaces the object whole."""
    await blobs.put("outputs/t1", b"a much longer first version")
    await blobs.put("outputs/t1", b"short")
    assert await blobs.get("outputs/t1") == b"short"
    assert [(b.key, b.size) for b in await blobs.list()] == [("outputs/t1", 5)]


async def test_get_of_a_missing_object_raises_not_found(blobs: BlobStore) -> None:
    """get of a key never written raises NotFound naming the key."""
    with pytest.raises(NotFound, match="outputs/nothing"):
        await blobs.get("outputs/nothing")


async def test_delete_removes_the_object_and_ignores_missing_ones(blobs: BlobStore) -> None:
    """After delete the object is gone; deleting a missing key is not an error."""
    await blobs.put("outputs/t1", b"x")
    await blobs.delete("outputs/t1")
    await blobs.delete("outputs/t1")
    await blobs.delete("never/written")
    with pytest.raises(NotFound):
        await blobs.get("outputs/t1")
    assert await blobs.list() == []


async def test_list_is_sorted_by_key_with_sizes(blobs: BlobStore) -> None:
    """list() returns every object, sorted by key, with its size and a modification time."""
    for key, data in [("b", b"22"), ("a/z", b"1"), ("a/b/c", b"333"), ("c", b"")]:
        await blobs.put(key, data)
    listed = await blobs.list()
    assert [(b.key, b.size) for b in listed] == [("a/b/c", 3), ("a/z", 1), ("b", 2), ("c", 0)]
    assert all(b.modified > 0 for b in listed)


async def test_list_filters_by_a_plain_string_prefix(blobs: BlobStore) -> None:
    """A prefix matches the start of the key as a string, not only whole folder names."""
    for key in ("snapshots/2024-01.json", "snapshots/2025-01.json", "snapshotx", "outputs/s"):
        await blobs.put(key, b"x")
    assert [b.key for b in await blobs.list("snapshots/2024")] == ["snapshots/2024-01.json"]
    assert [b.key for b in await blobs.list("snap")] == [
        "snapshots/2024-01.json",
        "snapshots/2025-01.json",
        "snapshotx",
    ]
    assert [b.key for b in await blobs.list("snapshots/")] == [
        "snapshots/2024-01.json",
        "snapshots/2025-01.json",
    ]
    assert await blobs.list("nothing/") == []


async def test_list_of_an_empty_store_is_empty(blobs: BlobStore) -> None:
    """A fresh store lists nothing."""
    assert await blobs.list() == []


async def test_concurrent_puts_to_one_key_leave_one_whole_object(blobs: BlobStore) -> None:
    """Writers racing on one key leave exactly one of their objects, never a mix."""
    versions = [bytes([n]) * 100_000 for n in range(8)]
    await asyncio.wait_for(
        asyncio.gather(*(blobs.put("race", v) for v in versions)), 20
    )  # a bound on a hang, not a speed test
    assert await blobs.get("race") in versions
    assert [b.key for b in await blobs.list()] == ["race"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_refused_by_every_operation(blobs: BlobStore, key: str) -> None:
    """Empty, absolute, '..'/'.' or empty-segment keys are refused with a message naming the key."""
    for attempt in (blobs.put(key, b"x"), blobs.get(key), blobs.delete(key)):
        with pytest.raises(ValueError, match="bad blob key"):
            await attempt


# -------------------------------------------------------------------------- FileBlobStore only


@pytest.mark.parametrize("key", BAD_KEYS)
def test_check_key_names_the_key_and_the_rule(key: str) -> None:
    """check_key's message quotes the key and says what a key may be."""
    with pytest.raises(ValueError) as caught:
        check_key(key)
    assert repr(key) in str(caught.value)
    assert "relative path" in str(caught.value)


async def test_file_store_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    """After puts only the objects are on disk; a stray temporary file is never listed."""
    store = FileBlobStore(tmp_path)
    await store.put("a/b", b"1")
    await store.put("a/b", b"2")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]
    (tmp_path / "a" / f"{TEMP_PREFIX}dead-b").write_bytes(b"half written")
    assert [b.key for b in await store.list()] == ["a/b"]


async def test_file_store_refuses_keys_that_look_like_temporary_files(tmp_path: Path) -> None:
    """Keys may not use the temporary-file prefix, so list can skip such files safely."""
    with pytest.raises(ValueError, match="reserved"):
        await FileBlobStore(tmp_path).put(f"a/{TEMP_PREFIX}x", b"1")


async def test_file_store_start_creates_the_root_folder(tmp_path: Path) -> None:
    """start() creates the root folder and its parents."""
    root = tmp_path / "deep" / "blobs"
    await FileBlobStore(root).start()
    assert root.is_dir()


async def test_file_store_reports_an_object_in_the_way_of_a_folder(tmp_path: Path) -> None:
    """A key under another object's key is a ConflictError, and the old object stays."""
    store = FileBlobStore(tmp_path)
    await store.put("a", b"object")
    with pytest.raises(ConflictError, match="'a/b'"):
        await store.put("a/b", b"nested")
    await store.put("c/d", b"nested")
    with pytest.raises(ConflictError, match="'c'"):
        await store.put("c", b"object")
    assert await store.get("a") == b"object"
    with pytest.raises(NotFound):
        await store.get("c")


async def test_file_store_start_where_a_folder_cannot_be_is_backend_unavailable(
    tmp_path: Path,
) -> None:
    """start() that cannot create the root raises BackendUnavailable naming the folder."""
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(BackendUnavailable, match="a-file/blobs"):
        await FileBlobStore(tmp_path / "a-file" / "blobs").start()


@pytest.mark.parametrize(
    ("url", "root"),
    [("file:///srv/blobs", "/srv/blobs"), ("file://localhost/srv/b%20b", "/srv/b b")],
)
def test_file_url_names_an_absolute_folder(clock: FakeClock, url: str, root: str) -> None:
    """file:///abs and file://localhost/abs name the absolute folder."""
    store = open_blobs(url, clock=clock)
    assert isinstance(store, FileBlobStore)
    assert store.root == Path(root)


@pytest.mark.parametrize("url", ["file://relative/blobs", "file:", "file:///srv?x=1"])
def test_open_blobs_refuses_other_file_urls(clock: FakeClock, url: str) -> None:
    """A file URL that is not file:///absolute/path is a ConfigError naming blob_url."""
    with pytest.raises(ConfigError, match=r"^blob_url: expected 'file:///absolute"):
        open_blobs(url, clock=clock)
