"""Bus URLs read into a :class:`RabbitConfig`: ``amqp[s]://user:pass@host:port/vhost?options``,
or several brokers of one cluster, ``amqp://user:pass@h1:5672,h2:5672,h3:5672/vhost``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agentdeck.core.errors import ConfigError
from agentdeck.core.settings import redact_url

DEFAULT_PREFIX = "agentdeck"
#: Deliveries of one message before the broker dead-letters it (a poison message that kills
#: every agent taking it, or a task requeued by drains over and over).
DEFAULT_DELIVERY_LIMIT = 10
#: What a prefix may hold: it starts every queue and exchange name.
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Query options handed to aiormq untouched (TLS files, heartbeat, connection name, auth).
_DRIVER_OPTIONS = frozenset(
    {
        "heartbeat",
        "name",
        "auth",
        "cafile",
        "capath",
        "cadata",
        "keyfile",
        "certfile",
        "no_verify_ssl",
    }
)
#: Where a list of whole URLs joined by commas splits: before each further scheme.
_URL_LIST_RE = re.compile(r",\s*(?=amqps?://)")
_OWN_OPTIONS = frozenset({"prefix", "delivery_limit", "reconnect_interval", "queue_type"})
#: The queue types agentdeck can declare its task, report and dead queues as. Only quorum: the
#: delivery limit that bounds a poison message, and replication across a cluster, need it.
QUEUE_TYPES = ("quorum",)


@dataclass(frozen=True, slots=True)
class RabbitConfig:
    """Where the brokers are and how to use them, from a bus URL.

    ``url`` still holds the password, so it is left out of ``repr``; it names the first broker
    (the transport picks the one to connect to from ``hosts``). ``where`` is the
    ``host:port,.../vhost`` shown in messages.
    """

    url: str = field(repr=False)
    where: str
    hosts: tuple[tuple[str, int], ...]
    prefix: str = DEFAULT_PREFIX
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    reconnect_interval: float = 1.0


def parse_url(url: str) -> RabbitConfig:
    """Read ``amqp[s]://user:pass@host:port[,host:port...]/vhost?prefix=...``, or a list of such
    URLs joined by commas (a settings list), which must differ in their hosts only. Raises
    ConfigError naming the bad part and what is allowed."""
    several = _URL_LIST_RE.split(url.strip())
    if len(several) > 1:
        shown = ",".join(redact_url(one) for one in several)
        return _joined([parse_url(one) for one in several], shown)
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"bad RabbitMQ URL {shown!r}: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"expected an amqp:// or amqps:// URL, got {shown!r}")
    userinfo, at, host_list = parts.netloc.rpartition("@")
    entries = host_list.split(",")
    default_port = 5671 if parts.scheme == "amqps" else 5672
    hosts = tuple(_host(entry, default_port, shown) for entry in entries)
    own: dict[str, str] = {}
    driver: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OWN_OPTIONS:
            own[key] = value
        elif key in _DRIVER_OPTIONS:
            driver.append((key, value))
        else:
            allowed = ", ".join(sorted(_OWN_OPTIONS | _DRIVER_OPTIONS))
            raise ConfigError(f"unknown option {key!r} in {shown!r}; allowed: {allowed}")
    prefix = own.get("prefix", DEFAULT_PREFIX)
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigError(
            f"prefix {prefix!r} in {shown!r} is not allowed; use 1-64 of A-Z a-z 0-9 _ . -"
        )
    queue_type = own.get("queue_type", QUEUE_TYPES[0])
    if queue_type not in QUEUE_TYPES:
        raise ConfigError(
            f"queue_type={queue_type!r} in {shown!r} is not supported; allowed: "
            f"{', '.join(QUEUE_TYPES)} (delivery limits and replication need quorum queues)"
        )
    delivery_limit = _number(own, "delivery_limit", DEFAULT_DELIVERY_LIMIT, int, shown)
    reconnect_interval = _number(own, "reconnect_interval", 1.0, float, shown)
    vhost = parts.path[1:] if parts.path.startswith("/") else parts.path
    first = f"{userinfo}{at}{entries[0].strip()}"
    return RabbitConfig(
        url=urlunsplit(parts._replace(netloc=first, query=urlencode(driver))),
        where=f"{','.join(_show(h, p) for h, p in hosts)}/{vhost}",
        hosts=hosts,
        prefix=prefix,
        delivery_limit=delivery_limit,
        reconnect_interval=reconnect_interval,
    )


def _joined(configs: list[RabbitConfig], shown: str) -> RabbitConfig:
    """One config with the brokers of every URL of a list, which must agree on the rest."""

    def rest(config: RabbitConfig) -> tuple[object, ...]:
        parts = urlsplit(config.url)
        userinfo = parts.netloc.rpartition("@")[0]
        return (parts.scheme, userinfo, parts.path, parts.query, config.prefix,
                config.delivery_limit, config.reconnect_interval)  # fmt: skip

    first = configs[0]
    if any(rest(config) != rest(first) for config in configs[1:]):
        raise ConfigError(
            f"the RabbitMQ URLs in {shown!r} differ in more than their hosts (user, password, "
            "vhost or options); list the brokers of one cluster as one URL: "
            "amqp://user:pass@h1:5672,h2:5672,h3:5672/vhost"
        )
    hosts = tuple(host for config in configs for host in config.hosts)
    vhost = first.where.partition("/")[2]
    return RabbitConfig(
        url=first.url,
        where=f"{','.join(_show(h, p) for h, p in hosts)}/{vhost}",
        hosts=hosts,
        prefix=first.prefix,
        delivery_limit=first.delivery_limit,
        reconnect_interval=first.reconnect_interval,
    )


def _host(entry: str, default_port: int, shown: str) -> tuple[str, int]:
    """One ``host[:port]`` of the URL's list, as (host, port)."""
    form = "amqp://user:pass@host:5672/ or amqp://user:pass@h1:5672,h2:5672,h3:5672/"
    try:
        parts = urlsplit(f"//{entry.strip()}")
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(
            f"RabbitMQ URL {shown!r}: {entry.strip()!r} is not host:port with a port of "
            f"1-65535; use {form}"
        ) from None
    if not parts.hostname or parts.username is not None:
        what = f"has an empty host in {entry!r}" if entry.strip() else "has an empty host"
        raise ConfigError(f"RabbitMQ URL {shown!r} {what}; use {form}")
    return parts.hostname, port


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


N = TypeVar("N", int, float)


def _number(options: Mapping[str, str], key: str, default: N, kind: type[N], shown: str) -> N:
    if key not in options:
        return default
    try:
        value = kind(options[key])
    except ValueError:
        value = kind(0)
    if not value > 0:
        raise ConfigError(f"{key}={options[key]!r} in {shown!r} must be a positive {kind.__name__}")
    return value
