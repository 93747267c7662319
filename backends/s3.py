"""``S3BlobStore``: objects in an S3 bucket (``s3://bucket/prefix?endpoint_url=...``).

Works with AWS and any S3-compatible service (MinIO, Ceph, moto) through ``endpoint_url``;
with an endpoint the client uses path-style addressing, which all of them understand.
Credentials come from the usual boto3 chain (environment, profile, instance role), never from
the URL.

A key ``snapshots/x.json`` in a store rooted at ``s3://b/prod`` is the object
``prod/snapshots/x.json`` of bucket ``b``. boto3 blocks, so each call runs in a worker thread
(``asyncio.to_thread``); a boto3 client is safe to share between threads. Objects of
:data:`MULTIPART_THRESHOLD` bytes or more are uploaded in parts, in parallel; S3 publishes a
multipart object only when the upload completes, so readers still see the old object or the
new one, never part of one. Reads are one GET, so they never mix two versions either.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import re
from collections.abc import Callable
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import boto3
import tenacity
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from agentdeck.backends.files import check_key
from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable, ConfigError, NotFound
from agentdeck.core.ports import BlobInfo
from agentdeck.core.settings import redact_url

T = TypeVar("T")

MiB = 1024 * 1024
#: Objects this large or larger go up in parts of this size, several at once.
MULTIPART_THRESHOLD = 8 * MiB

#: The options an ``s3://`` URL may carry.
URL_OPTIONS = ("endpoint_url", "region")

#: S3's bucket naming rule (the common subset every S3-compatible service accepts).
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

#: Errors on the way to S3 (refused, reset, timed out): retryable.
_NETWORK = (BotoConnectionError, HTTPClientError)
#: S3 error codes that mean the URL or the credentials are wrong: waiting will not help.
_CONFIG_CODES = frozenset(
    {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3BlobStore:
    """A :class:`core.ports.BlobStore` in an S3 bucket, under an optional key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        connect_attempts: int = 5,
        connect_wait: float = 0.2,
    ) -> None:
        """See :meth:`from_url`; ``prefix`` is a key path such as ``prod/blobs`` (or empty)."""
        check_bucket(bucket)
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        if connect_attempts < 1:
            raise ValueError(f"connect_attempts must be at least 1, got {connect_attempts!r}")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.where = f"s3://{bucket}/{prefix}" + (
            f" at {redact_url(endpoint_url)}" if endpoint_url else ""
        )
        """How messages name this store (the endpoint's password, if any, redacted)."""
        self._root = f"{prefix}/" if prefix else ""
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_threshold,
            # The classic transfer manager everywhere: the CRT one is picked only on some
            # hosts, and one code path is easier to reason about.
            preferred_transfer_client="classic",
        )
        self._connect_attempts = connect_attempts
        self._connect_wait = connect_wait
        self._client: Any = None

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock, connect_attempts: int = 5, connect_wait: float = 0.2
    ) -> Self:
        """A store for ``s3://bucket[/prefix][?endpoint_url=http://host:9000&region=name]``.

        The clock is unused: S3 stamps objects itself. Raises ConfigError naming the bad part.
        """
        bucket, prefix, options = parse_s3_url(url)
        return cls(
            bucket,
            prefix,
            endpoint_url=options.get("endpoint_url"),
            region=options.get("region"),
            connect_attempts=connect_attempts,
            connect_wait=connect_wait,
        )

    async def start(self) -> None:
        """Create the client and check that the bucket exists and is ours to use.

        Network errors are retried a few times with backoff, then raise BackendUnavailable;
        a missing bucket, missing credentials or a refusal raise ConfigError (agentdeck never
        creates buckets: their region, policy and lifecycle are the operator's choice).
        """
        if self._client is not None:
            return
        client = await asyncio.to_thread(self._make_client)
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._connect_attempts),
            wait=tenacity.wait_exponential(multiplier=self._connect_wait, max=5.0),
            retry=tenacity.retry_if_exception_type(_NETWORK),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await asyncio.to_thread(client.head_bucket, Bucket=self.bucket)
        except _NETWORK as exc:
            client.close()
            raise BackendUnavailable(
                f"cannot reach S3 for {self.where} after {self._connect_attempts} attempt(s): {exc}"
            ) from exc
        except ClientError as exc:
            client.close()
            code = _code(exc)
            if code in _MISSING_CODES or code == "NoSuchBucket":
                raise ConfigError(
                    f"the bucket {self.bucket!r} does not exist ({self.where}); create it first"
                ) from None
            raise _translate(exc, self.where, "check the bucket") from exc
        except BotoCoreError as exc:
            client.close()
            raise _translate(exc, self.where, "check the bucket") from exc
        self._client = client

    async def close(self) -> None:
        """Close the client's connections (safe to call twice)."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any object there; multipart when large."""
        check_key(key)
        await self._run(f"put {key!r}", self._put, self._root + key, bytes(data))

    async def get(self, key: str) -> bytes:
        """The object's bytes. Raises NotFound."""
        check_key(key)
        return await self._run(
            f"get {key!r}", self._get, self._root + key, missing=f"no blob {key!r} in {self.where}"
        )

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        """Objects whose key starts with ``prefix`` (any string), sorted by key.

        Pages through the listing (S3 returns at most 1,000 keys a request). Objects whose
        name is not a valid key (folder markers ending in ``/``, written by other tools) are
        left out, since ``get`` could not read them.
        """
        return await self._run(f"list {prefix!r}", self._list, prefix)

    async def delete(self, key: str) -> None:
        """Remove the object (no error if absent)."""
        check_key(key)
        await self._run(f"delete {key!r}", self._delete, self._root + key)

    # -- worker-thread side: everything below blocks

    def _make_client(self) -> Any:
        # A session per store: boto3's default session is not safe to create clients from in
        # several threads at once.
        session = boto3.session.Session()
        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            # Enough connections for the parallel parts of a multipart upload.
            max_pool_connections=max(10, self._transfer.max_request_concurrency),
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        return session.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )

    def _put(self, name: str, data: bytes) -> None:
        if len(data) < self._transfer.multipart_threshold:
            # One request; upload_fileobj would start a transfer manager and its threads.
            self._client.put_object(Bucket=self.bucket, Key=name, Body=data)
        else:
            self._client.upload_fileobj(io.BytesIO(data), self.bucket, name, Config=self._transfer)

    def _get(self, name: str) -> bytes:
        response = self._client.get_object(Bucket=self.bucket, Key=name)
        with response["Body"] as body:
            data: bytes = body.read()
        return data

    def _list(self, prefix: str) -> builtins.list[BlobInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._root + prefix):
            for item in page.get("Contents", ()):
                key = item["Key"][len(self._root) :]
                if _is_key(key):
                    found.append(
                        BlobInfo(
                            key=key, size=item["Size"], modified=item["LastModified"].timestamp()
                        )
                    )
        return sorted(found, key=lambda info: info.key)

    def _delete(self, name: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=name)

    # -- plumbing

    async def _run(
        self, action: str, fn: Callable[..., T], *args: Any, missing: str | None = None
    ) -> T:
        """Run ``fn`` in a worker thread, turning boto errors into agentdeck's: NotFound with
        the message ``missing`` when S3 says there is no such key, ConfigError when waiting
        cannot help, BackendUnavailable otherwise."""
        if self._client is None:
            raise BackendUnavailable(f"the S3 blob store {self.where} is not started")
        try:
            return await asyncio.to_thread(fn, *args)
        except ClientError as exc:
            if missing is not None and _code(exc) in _MISSING_CODES:
                raise NotFound(missing) from None
            raise _translate(exc, self.where, action) from exc
        except BotoCoreError as exc:
            raise _translate(exc, self.where, action) from exc

    def __repr__(self) -> str:
        return f"<S3BlobStore {self.where} started={self._client is not None}>"


def check_bucket(bucket: str) -> None:
    """Raise ConfigError unless ``bucket`` follows S3's bucket naming rule."""
    if not BUCKET_PATTERN.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(
            f"bad S3 bucket name {bucket!r}: 3 to 63 lowercase letters, digits, '.' and '-', "
            "starting and ending with a letter or digit"
        )


def parse_s3_url(url: str) -> tuple[str, str, dict[str, str]]:
    """``(bucket, prefix, options)`` of ``s3://bucket/prefix?endpoint_url=...&region=...``.

    Raises ConfigError (the URL shown with secrets redacted) for another scheme, credentials
    in the URL, an unknown option or a bad bucket, prefix or endpoint.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"cannot parse the S3 URL {shown!r}") from None
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(
            "expected 's3://bucket[/prefix][?endpoint_url=http://host:9000&region=name]', "
            f"got {shown!r}"
        )
    if "@" in parts.netloc:
        raise ConfigError(
            f"{shown!r} holds credentials; S3 credentials come from the environment "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), a profile (AWS_PROFILE) or an "
            "instance role, never the URL"
        )
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in URL_OPTIONS:
            raise ConfigError(
                f"unknown option {name!r} in {shown!r}; allowed: {', '.join(URL_OPTIONS)}"
            )
        options[name] = value
    endpoint = options.get("endpoint_url")
    if endpoint is not None and not re.fullmatch(r"https?://[^/?#\s]+/?", endpoint):
        raise ConfigError(
            f"endpoint_url in {shown!r} must be http(s)://host[:port], got {redact_url(endpoint)!r}"
        )
    check_bucket(parts.netloc)
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError as exc:
            raise ConfigError(f"bad key prefix in {shown!r}: {exc}") from None
    return parts.netloc, prefix, options


def _is_key(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception, where: str, action: str) -> ConfigError | BackendUnavailable:
    """The agentdeck error for a boto error: ConfigError when waiting cannot help."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(
            f"S3 {where}: no usable credentials; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance role"
        )
    if isinstance(exc, ClientError):
        code = _code(exc)
        message = exc.response.get("Error", {}).get("Message") or code
        if code in _CONFIG_CODES:
            return ConfigError(f"S3 {where}: {action} refused: {code}: {message}")
        return BackendUnavailable(f"S3 {where}: {action} failed: {code}: {message}")
    return BackendUnavailable(f"S3 {where}: {action} failed: {exc}")
