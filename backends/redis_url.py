"""Registry URLs for Redis, and the redis-py client each one gives.

Two forms (the key prefix is ours, every other option goes to redis-py):

- ``redis://[user:password@]host[:port][/db][?prefix=name&...]`` (``rediss://`` for TLS): one
  server, through ``Redis.from_url``;
- ``redis+sentinel://[user:password@]h1:26379,h2:26379,h3:26379/service[/db][?...]``: the
  primary of ``service`` as Redis Sentinel names it, through redis-py's public
  ``redis.asyncio.sentinel.Sentinel``. Each new connection asks the sentinels where the
  primary is, and a connection that finds its server demoted (``READONLY``) is dropped, so the
  client follows a failover. The user and password are the data servers'; the sentinels' own,
  if they need one, are the options ``sentinel_username`` and ``sentinel_password``. Each
  sentinel is asked once per discovery, bounded by ``sentinel_timeout`` (seconds,
  :data:`DEFAULT_SENTINEL_TIMEOUT`): one that does not answer is passed over for the next.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import NoBackoff

from agentdeck.backends.redis_servers import ServerStates
from agentdeck.core.clock import Clock
from agentdeck.core.errors import ConfigError
from agentdeck.core.settings import redact_url

DEFAULT_PREFIX = "agentdeck"
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
#: Seconds to connect to one sentinel and get its answer before asking the next one. A sentinel
#: answers from memory in well under a millisecond; one on a host cut off answers never.
DEFAULT_SENTINEL_TIMEOUT = 1.0
_SERVICE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")

#: Query options of a registry URL that redis-py understands and we pass on.
REDIS_OPTIONS = frozenset(
    {
        "socket_timeout",
        "socket_connect_timeout",
        "health_check_interval",
        "max_connections",
        "client_name",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_check_hostname",
        # A client certificate, for a server started with --tls-auth-clients yes.
        "ssl_certfile",
        "ssl_keyfile",
    }
)
#: Options of a sentinel URL: the data connections' (no TLS: ``redis+sentinel`` is plain TCP)
#: and the sentinels' own credentials.
SENTINEL_OPTIONS = frozenset(
    {o for o in REDIS_OPTIONS if not o.startswith("ssl_")}
    | {"sentinel_username", "sentinel_password", "sentinel_timeout"}
)


def check_prefix(prefix: str) -> None:
    """Raise ConfigError unless ``prefix`` is a plain key prefix (no glob characters)."""
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ConfigError(
            f"bad Redis key prefix {prefix!r}: use letters, digits, '_', '.' and '-' only"
        )


def split_registry_url(url: str) -> tuple[str, str]:
    """Split a registry URL into the URL :func:`open_client` gets and the key prefix.

    Raises ConfigError (with the password redacted) for a scheme other than ``redis``,
    ``rediss`` or ``redis+sentinel``, a database that is not a number, an unknown option or a
    bad prefix.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        if parts.scheme != SENTINEL_SCHEME:
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"cannot parse the Redis URL {shown!r}") from None
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    prefix = options.pop("prefix", DEFAULT_PREFIX)
    rest = urlunsplit(parts._replace(query=urlencode(options)))
    if parts.scheme == SENTINEL_SCHEME:
        parse_sentinel_url(rest, shown=shown)  # every check, once, here
        check_prefix(prefix)
        return rest, prefix
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(
            f"expected 'redis://[user:password@]host[:port][/db][?prefix=name]', rediss:// or "
            f"'{SENTINEL_SCHEME}://[user:password@]host:26379[,host:26379...]/service[/db]', "
            f"got {shown!r}"
        )
    database = unquote(parts.path).strip("/")
    if database and not database.isdigit():
        raise ConfigError(
            f"the database in {shown!r} must be a number such as /0, got {database!r}"
        )
    _check_options(options, REDIS_OPTIONS, shown)
    check_prefix(prefix)
    try:
        parse_url(rest)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {shown!r}: {exc}") from None
    return rest, prefix


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """The sentinels to ask and the service whose primary to use; credentials stay out of
    ``repr``."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    connection: Mapping[str, Any] = field(repr=False)
    """redis-py options of the data connections (username, password, timeouts)."""
    sentinel: Mapping[str, Any] = field(repr=False)
    """redis-py options of the connections to the sentinels (their credentials, their
    time-outs and one try each)."""

    @property
    def where(self) -> str:
        """``sentinel h1:26379,h2:26379/service/db``: how messages name it."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"sentinel {hosts}/{self.service}/{self.db}"


def parse_sentinel_url(url: str, *, shown: str | None = None) -> SentinelTarget:
    """Read ``redis+sentinel://[user:password@]h1[:port][,h2[:port]...]/service[/db][?...]``
    (no ``prefix``). Raises ConfigError naming the bad part and the allowed form."""
    shown = shown or redact_url(url)
    form = f"{SENTINEL_SCHEME}://[user:password@]h1:26379,h2:26379,h3:26379/service[/db]"
    parts = urlsplit(url)
    userinfo, _, host_list = parts.netloc.rpartition("@")
    sentinels = tuple(_sentinel(entry, shown, form) for entry in host_list.split(","))
    path = [unquote(p) for p in parts.path.split("/")[1:] if p]
    if not path or len(path) > 2 or not _SERVICE_PATTERN.fullmatch(path[0]):
        raise ConfigError(
            f"Redis Sentinel URL {shown!r} must name the service (letters, digits, '_', '.', "
            f"'-'), then optionally the database: use {form}"
        )
    if len(path) == 2 and not path[1].isdigit():
        raise ConfigError(f"the database in {shown!r} must be a number such as /0, got {path[1]!r}")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    _check_options(options, SENTINEL_OPTIONS, shown)
    sentinel: dict[str, Any] = {
        key.removeprefix("sentinel_"): options.pop(key)
        for key in ("sentinel_username", "sentinel_password")
        if key in options
    }
    timeout = _sentinel_timeout(options.pop("sentinel_timeout", None), shown)
    # redis-py's own reading of the data options (numbers, credentials), on a stand-in URL.
    stand_in = urlunsplit(("redis", f"{userinfo}@stand-in" if userinfo else "stand-in", "", "", ""))
    try:
        connection: dict[str, Any] = dict(parse_url(f"{stand_in}?{urlencode(options)}"))
    except ValueError as exc:
        raise ConfigError(f"bad Redis Sentinel URL {shown!r}: {exc}") from None
    connection.pop("host", None)
    # Once per sentinel: redis-py's default for a client is 3 more tries with backoff of up to
    # 10 s each, so a sentinel on a cut-off host held every discovery ~15 s before the next
    # sentinel was asked (the standby took the lease 10-17 s after Sentinel's switch). Retrying
    # is the caller's: the data connection's retry and the registry's callers ask again.
    sentinel["socket_timeout"] = sentinel["socket_connect_timeout"] = timeout
    sentinel["retry"] = Retry(NoBackoff(), 0)
    return SentinelTarget(
        sentinels=sentinels,
        service=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        connection=connection,
        sentinel=sentinel,
    )


class FollowingConnection(SentinelManagedConnection):
    """A connection to the primary that asks the sentinels where it is on every connect,
    including the reconnects inside redis-py's retry loop, so that the retry after a
    ``READONLY`` answer (the server was demoted) reaches the new primary. redis-py 7.4 asks
    only on a connection's first connect and retries against the old address
    (redis/redis-py#3874, open): without this, the first call after a failover fails."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )


def open_client(url: str, **defaults: Any) -> tuple[Redis, Sentinel | None]:
    """A client for a URL from :func:`split_registry_url`, with ``defaults`` under the URL's
    own options; for a sentinel URL also the :class:`Sentinel`, whose connections to the
    sentinels the caller closes (:func:`close_client`)."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return Redis.from_url(url, **defaults), None
    target = parse_sentinel_url(url)
    connection = {**defaults, **target.connection}
    sentinel_options = dict(target.sentinel)
    # redis-py leaves Sentinel.__init__ unannotated.
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        target.service, db=target.db, connection_class=FollowingConnection, **connection
    )
    return client, sentinel


async def close_client(client: Redis, sentinel: Sentinel | None) -> None:
    """Close ``client`` and, if any, the connections to the sentinels."""
    await client.aclose()
    for server in sentinel.sentinels if sentinel is not None else ():
        await server.aclose()


def where(url: str) -> str:
    """``host:port/db`` (or ``sentinel h1:26379,.../service/db``) of a URL from
    :func:`split_registry_url`: how we name a server without its credentials."""
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        return parse_sentinel_url(url).where
    parts = urlsplit(url)
    database = unquote(parts.path).strip("/") or "0"
    return f"{parts.hostname}:{parts.port or 6379}/{database}"


def server_states(url: str, clock: Clock, sentinel: Sentinel | None) -> ServerStates:
    """What a registry on ``url`` (from :func:`split_registry_url`) reports of its servers:
    the primary ``sentinel`` names for the URL's service, or the URL's one server."""
    if sentinel is not None:
        return ServerStates(clock, sentinel=sentinel, service=parse_sentinel_url(url).service)
    parts = urlsplit(url)
    return ServerStates(clock, server=f"{parts.hostname}:{parts.port or 6379}")


def _sentinel(entry: str, shown: str, form: str) -> tuple[str, int]:
    """One ``host[:port]`` of a sentinel list."""
    try:
        parts = urlsplit(f"//{entry.strip()}")
        port = parts.port or DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ConfigError(
            f"Redis Sentinel URL {shown!r}: {entry.strip()!r} is not host:port with a port of "
            f"1-65535; use {form}"
        ) from None
    if not parts.hostname or parts.username is not None:
        raise ConfigError(f"Redis Sentinel URL {shown!r} has an empty sentinel host; use {form}")
    return parts.hostname, port


def _sentinel_timeout(text: str | None, shown: str) -> float:
    """The ``sentinel_timeout`` option in seconds (the default when absent)."""
    if text is None:
        return DEFAULT_SENTINEL_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 60:
        raise ConfigError(
            f"sentinel_timeout in {shown!r} must be seconds above 0 and at most 60, got {text!r}"
        )
    return value


def _check_options(options: Mapping[str, str], allowed: frozenset[str], shown: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        listed = ", ".join(sorted({"prefix", *allowed}))
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in {shown!r}; allowed: {listed}")
