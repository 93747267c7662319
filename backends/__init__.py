"""The engines behind the ports, chosen by URL scheme.

Each table maps a scheme to ``"module:Class"``; the module is imported only when a URL asks
for it, so the embedded default never loads aio-pika, asyncpg, redis or boto3. Every class
has ``from_url(url, *, clock)``. This package imports only ``core``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit

from agentdeck.core.clock import Clock
from agentdeck.core.errors import ConfigError
from agentdeck.core.ports import BlobStore, Bus, Registry, Store
from agentdeck.core.settings import redact_url

BUS: Mapping[str, str] = {
    "memory": "agentdeck.backends.memory:MemoryBus",
    "amqp": "agentdeck.backends.rabbitmq:RabbitBus",
    "amqps": "agentdeck.backends.rabbitmq:RabbitBus",
}
STORE: Mapping[str, str] = {
    "sqlite": "agentdeck.backends.sqlite.store:SqliteStore",
    "postgresql": "agentdeck.backends.postgres:PostgresStore",
    "postgres": "agentdeck.backends.postgres:PostgresStore",
}
REGISTRY: Mapping[str, str] = {
    "memory": "agentdeck.backends.memory:MemoryRegistry",
    "sqlite": "agentdeck.backends.sqlite.registry:SqliteRegistry",
    "redis": "agentdeck.backends.redis:RedisRegistry",
    "rediss": "agentdeck.backends.redis:RedisRegistry",
    "redis+sentinel": "agentdeck.backends.redis:RedisRegistry",
}
BLOBS: Mapping[str, str] = {
    "file": "agentdeck.backends.files:FileBlobStore",
    "s3": "agentdeck.backends.s3:S3BlobStore",
}

#: Third-party driver module -> the distribution that provides it (for install hints).
DRIVERS: Mapping[str, str] = {
    "aio_pika": "aio-pika",
    "aiormq": "aio-pika",
    "asyncpg": "asyncpg",
    "redis": "redis",
    "boto3": "boto3",
    "botocore": "boto3",
}


def open_bus(url: str, *, clock: Clock) -> Bus:
    """The Bus for ``url`` (not started). Raises ConfigError naming ``bus_url``."""
    return cast(Bus, _open("bus_url", BUS, url, clock))


def open_store(url: str, *, clock: Clock) -> Store:
    """The Store for ``url`` (not migrated). Raises ConfigError naming ``store_url``."""
    return cast(Store, _open("store_url", STORE, url, clock))


def open_registry(url: str, *, clock: Clock) -> Registry:
    """The Registry for ``url`` (not started). Raises ConfigError naming ``registry_url``."""
    return cast(Registry, _open("registry_url", REGISTRY, url, clock))


def open_blobs(url: str, *, clock: Clock) -> BlobStore:
    """The BlobStore for ``url`` (not started). Raises ConfigError naming ``blob_url``."""
    return cast(BlobStore, _open("blob_url", BLOBS, url, clock))


def _open(field: str, table: Mapping[str, str], url: str, clock: Clock) -> Any:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"{field}: {redact_url(url)!r} is not a valid URL") from None
    known = ", ".join(f"{s}://" for s in table)
    if not scheme:
        raise ConfigError(f"{field}: {redact_url(url)!r} is not a URL; use one of {known}")
    target = table.get(scheme)
    if target is None:
        raise ConfigError(f"{field}: unknown scheme {scheme!r}; known schemes: {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(_missing(field, scheme, module_name, exc.name or "")) from None
    try:
        return getattr(module, class_name).from_url(url, clock=clock)
    except ConfigError as exc:
        raise ConfigError(f"{field}: {exc}") from None


def _missing(field: str, scheme: str, module_name: str, missing: str) -> str:
    """Say what is missing for a known scheme: our backend module, or its driver."""
    if module_name == missing or module_name.startswith(f"{missing}."):
        return (
            f"{field}: the {scheme}:// backend ({module_name}) is not part of this build of "
            "agentdeck; upgrade agentdeck or choose another backend"
        )
    top = missing.partition(".")[0]
    package = DRIVERS.get(top, top)
    return (
        f"{field}: the {scheme}:// backend needs the Python package {package!r}, which is not "
        f"installed; install it with: pip install {package}"
    )
