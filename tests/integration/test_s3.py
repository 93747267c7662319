"""S3BlobStore against an S3 server (moto, from ``s3_endpoint``): what the contract suite
cannot see — multipart uploads, paged listings, prefixes in a shared bucket, start-up errors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from moto.s3.models import s3_backends

from agentdeck.backends import open_blobs
from agentdeck.backends.s3 import MULTIPART_THRESHOLD, MiB, S3BlobStore, parse_s3_url
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, ConfigError, NotFound
from agentdeck.core.models import new_id

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[Any]:
    """A plain boto3 client on the server, to look behind the store's back."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def bucket(s3: Any) -> str:
    """A new, empty bucket for the test."""
    name = f"test-{new_id()}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def store(s3_endpoint: str, bucket: str, clock: FakeClock) -> AsyncIterator[S3BlobStore]:
    """A started store rooted at ``s3://<bucket>/deck``."""
    instance = S3BlobStore.from_url(
        f"s3://{bucket}/deck?endpoint_url={s3_endpoint}&region=us-east-1", clock=clock
    )
    await instance.start()
    yield instance
    await instance.close()


async def test_round_trip_lives_under_the_prefix(store: S3BlobStore, s3: Any, bucket: str) -> None:
    """put/get/list/delete work on keys relative to the URL's prefix, stored under it."""
    await store.put("snapshots/one.json", b'{"n": 1}')
    assert await store.get("snapshots/one.json") == b'{"n": 1}'
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert names == ["deck/snapshots/one.json"]
    (info,) = await store.list()
    assert (info.key, info.size) == ("snapshots/one.json", 8)
    await store.delete("snapshots/one.json")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


async def test_stores_with_different_prefixes_share_a_bucket_without_mixing(
    store: S3BlobStore, s3_endpoint: str, bucket: str, clock: FakeClock
) -> None:
    """Another prefix in the same bucket sees none of this store's objects, even a lookalike
    prefix (``deck2`` is not under ``deck``)."""
    other = S3BlobStore.from_url(f"s3://{bucket}/deck2?endpoint_url={s3_endpoint}", clock=clock)
    await other.start()
    try:
        await store.put("a", b"mine")
        await other.put("b", b"theirs")
        assert [b.key for b in await store.list()] == ["a"]
        assert [b.key for b in await other.list()] == ["b"]
        with pytest.raises(NotFound):
            await other.get("a")
    finally:
        await other.close()


async def test_large_object_is_uploaded_in_parts(store: S3BlobStore, s3: Any, bucket: str) -> None:
    """A 20 MiB object goes up as a multipart upload of 8 MiB parts (its ETag says '-3') and
    reads back whole; a small one is a single PUT."""
    big = bytes(range(256)) * (20 * MiB // 256)
    await store.put("outputs/big", big)
    await store.put("outputs/small", b"x" * (MULTIPART_THRESHOLD - 1))
    assert s3.head_object(Bucket=bucket, Key="deck/outputs/big")["ETag"].strip('"').endswith("-3")
    assert "-" not in s3.head_object(Bucket=bucket, Key="deck/outputs/small")["ETag"]
    assert await store.get("outputs/big") == big


async def test_listing_more_than_one_page_returns_every_key_sorted(
    store: S3BlobStore, bucket: str
) -> None:
    """list() pages past S3's 1,000 keys a request, sorted by key, and filters by prefix."""
    keys = [f"many/{n:04d}" for n in reversed(range(1005))]
    # Seeded straight into moto's in-process backend: 1,005 PUTs over HTTP take seconds, and
    # the listing, not the upload, is under test here.
    partition, account = s3_backends.bucket_accounts[bucket]
    for key in keys:
        s3_backends[account][partition].put_object(bucket, f"deck/{key}", b"")
    await store.put("other", b"x")
    listed = await store.list("many/")
    assert [b.key for b in listed] == sorted(keys)
    assert len(await store.list()) == 1006
    assert [b.key for b in await store.list("many/100")] == [f"many/100{n}" for n in range(5)]


async def test_objects_that_are_not_valid_keys_are_not_listed(
    store: S3BlobStore, s3: Any, bucket: str
) -> None:
    """Folder markers and other names agentdeck could not read back are left out of list()."""
    s3.put_object(Bucket=bucket, Key="deck/folder/", Body=b"")
    s3.put_object(Bucket=bucket, Key="deck/a//b", Body=b"")
    await store.put("folder/real", b"1")
    assert [b.key for b in await store.list()] == ["folder/real"]


async def test_missing_object_is_not_found(store: S3BlobStore) -> None:
    """get of a key never written raises NotFound naming the key and the bucket."""
    with pytest.raises(NotFound, match=r"'outputs/none' in s3://test-\w+/deck"):
        await store.get("outputs/none")


async def test_missing_bucket_fails_start_with_a_config_error(
    s3_endpoint: str, clock: FakeClock
) -> None:
    """start() on a bucket that does not exist raises ConfigError naming it."""
    store = S3BlobStore.from_url(
        f"s3://no-such-bucket-{new_id()}?endpoint_url={s3_endpoint}", clock=clock
    )
    with pytest.raises(ConfigError, match=r"bucket 'no-such-bucket-\w+' does not exist"):
        await store.start()


async def test_unreachable_endpoint_fails_start_after_bounded_retries(clock: FakeClock) -> None:
    """start() against a port where nothing listens raises BackendUnavailable naming the
    endpoint once its attempts are spent."""
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = S3BlobStore.from_url(
        f"s3://some-bucket?endpoint_url=http://127.0.0.1:{port}",
        clock=clock,
        connect_attempts=2,
        connect_wait=0.01,
    )
    with pytest.raises(BackendUnavailable, match=rf"127\.0\.0\.1:{port} after 2 attempt"):
        await store.start()


async def test_calls_before_start_are_backend_unavailable(clock: FakeClock) -> None:
    """Using a store that was never started raises BackendUnavailable, not AttributeError."""
    store = S3BlobStore("some-bucket")
    with pytest.raises(BackendUnavailable, match="not started"):
        await store.get("a")


# --------------------------------------------------------------------------------- URLs


def test_url_gives_bucket_prefix_endpoint_and_region(clock: FakeClock) -> None:
    """s3://bucket/a/b?endpoint_url=...&region=... is opened through open_blobs."""
    store = open_blobs(
        "s3://my-bucket/a/b/?endpoint_url=http://minio:9000&region=eu-west-1", clock=clock
    )
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.endpoint_url, store.region) == (
        "my-bucket",
        "a/b",
        "http://minio:9000",
        "eu-west-1",
    )
    assert parse_s3_url("s3://my-bucket") == ("my-bucket", "", {})


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("s3://", "expected 's3://bucket"),
        ("s3://Bad_Bucket/x", "bad S3 bucket name 'Bad_Bucket'"),
        ("s3://my-bucket?endpoint=http://x", "unknown option 'endpoint'"),
        ("s3://my-bucket?endpoint_url=minio:9000", "endpoint_url .* must be http"),
        ("s3://my-bucket/a/../b", "bad key prefix"),
        ("s3://AKIA:hunter2@my-bucket/x", "credentials come from the environment"),
    ],
)
def test_bad_urls_are_config_errors_without_secrets(
    clock: FakeClock, url: str, complaint: str
) -> None:
    """A malformed s3 URL is one ConfigError naming blob_url and the problem, never echoing a
    secret."""
    with pytest.raises(ConfigError, match=complaint) as caught:
        open_blobs(url, clock=clock)
    assert str(caught.value).startswith("blob_url: ")
    assert "hunter2" not in str(caught.value)
