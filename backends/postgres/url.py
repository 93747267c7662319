"""Store URLs for PostgreSQL: what asyncpg is given, what the pool is sized to, and how
messages name the server without its password.

::

    postgresql://user:password@host:5432/agentdeck?min_size=2&max_size=10
    postgres://user@host/agentdeck?sslmode=require&command_timeout=30
    postgresql://user@h1:5432,h2:5432,h3:5432/agentdeck     # a primary and its standbys

Several hosts mean a primary and standbys (e.g. under Patroni): unless the URL says otherwise,
``target_session_attrs=read-write`` is added, so every new connection goes to whichever host
is the primary now, and after a failover the pool's next connections find the new one.

With several hosts the pool keeps no idle connection by default (``min_size`` 0 unless the
URL sets it): an idle connection may lead to a host that has since been cut off, and a pooled
one idle for a few seconds is closed (``backends.postgres.connections.MULTI_HOST_IDLE``).

Our own query options are taken out (:data:`POOL_OPTIONS`); every other one is left in the
URL for asyncpg, which understands libpq's (``sslmode``, ``sslrootcert``, ``passfile``...) and
sends the rest to the server as settings (``application_name``, ``search_path``,
``statement_timeout``...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from agentdeck.core.errors import ConfigError

__all__ = ["DEFAULT_APPLICATION_NAME", "POOL_OPTIONS", "SCHEMES", "PostgresTarget", "parse_url"]

SCHEMES = ("postgresql", "postgres")
DEFAULT_APPLICATION_NAME = "agentdeck"
FORMS = (
    "postgresql://user:password@host:5432/database[?min_size=2&max_size=10] "
    "(several hosts: host1:5432,host2:5432)"
)
#: libpq's ``target_session_attrs`` values asyncpg understands.
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")

#: Query options read by agentdeck, not asyncpg, with their defaults.
POOL_OPTIONS: dict[str, float] = {
    "min_size": 1,  # connections kept open while idle
    "max_size": 10,  # most connections at once; the scheduler needs few, the UI one or two
    "command_timeout": 60.0,  # seconds one statement may run before it counts as failed
    "connect_timeout": 10.0,  # seconds one connection attempt may take
}


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A parsed store URL.

    ``dsn`` and ``password`` are secret (never print them; the dataclass repr hides them);
    ``where`` is ``host:port/database`` for messages.
    """

    dsn: str = field(repr=False)
    where: str
    password: str = field(repr=False)
    application_name: str
    min_size: int
    max_size: int
    command_timeout: float
    connect_timeout: float
    hosts: tuple[tuple[str, int], ...] = ()
    """Every ``(host, port)`` of the URL, in its order."""


def parse_url(url: str) -> PostgresTarget:
    """Split a ``postgresql://`` or ``postgres://`` URL into asyncpg's DSN and pool options.

    Raises ConfigError naming the bad part (never the password).
    """
    try:
        parts = urlsplit(url)
        hosts = _hosts(parts.netloc.rpartition("@")[2])
    except ValueError as exc:  # a port that is not a number, an unclosed IPv6 bracket
        raise ConfigError(f"store URL is not a valid PostgreSQL URL ({exc}); use {FORMS}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"store URL scheme {parts.scheme!r} is not postgresql or postgres; use {FORMS}"
        )
    if parts.fragment:
        raise ConfigError(f"a PostgreSQL store URL takes no #fragment; use {FORMS}")
    database = unquote(parts.path.lstrip("/"))
    user = unquote(parts.username or "")
    if not database and not user:
        raise ConfigError(f"store URL names no database (and no user to default to); use {FORMS}")
    where = ",".join(f"{h}:{p}" for h, p in hosts) + f"/{database or user}"

    options = dict(POOL_OPTIONS)
    if len(hosts) > 1:
        options["min_size"] = 0  # see the module docstring; the URL may still set it
    passed: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in options:
            options[name] = _number(name, value)
        else:
            passed.append((name, value))
    # Named in pg_stat_activity, so operators can tell agentdeck's connections apart.
    application_name = dict(passed).get("application_name") or DEFAULT_APPLICATION_NAME
    if "application_name" not in dict(passed):
        passed.append(("application_name", application_name))
    attrs = dict(passed).get("target_session_attrs")
    if attrs is not None and attrs not in SESSION_ATTRS:
        raise ConfigError(
            f"store URL option target_session_attrs={attrs!r} is not one of "
            f"{', '.join(SESSION_ATTRS)}"
        )
    if len(hosts) > 1 and attrs is None:
        # Several hosts are a primary and its standbys: the Store writes, so only the primary
        # will do; after a failover a new connection finds the new one.
        passed.append(("target_session_attrs", "read-write"))
    min_size, max_size = options["min_size"], options["max_size"]
    if min_size != int(min_size) or max_size != int(max_size) or max_size < 1:
        raise ConfigError(
            f"store URL: min_size and max_size must be whole numbers with max_size >= 1, "
            f"got min_size={min_size:g}, max_size={max_size:g}"
        )
    for name in ("command_timeout", "connect_timeout"):
        if options[name] <= 0:
            raise ConfigError(f"store URL option {name} must be more than 0 seconds")
    if min_size > max_size:
        raise ConfigError(f"store URL: min_size={min_size:g} is larger than max_size={max_size:g}")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(passed), ""))
    return PostgresTarget(
        dsn=dsn,
        where=where,
        password=unquote(parts.password or ""),
        application_name=application_name,
        min_size=int(min_size),
        max_size=int(max_size),
        command_timeout=options["command_timeout"],
        connect_timeout=options["connect_timeout"],
        hosts=tuple(hosts),
    )


def _hosts(netloc: str) -> list[tuple[str, int]]:
    """``h1:5432,h2,[::1]:5433`` -> ``[("h1", 5432), ("h2", 5432), ("[::1]", 5433)]``;
    ValueError naming a bad entry."""
    found: list[tuple[str, int]] = []
    for entry in netloc.split(",") if netloc else [""]:
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            host, port_text = f"[{host}]", rest.removeprefix(":")
        else:
            host, _, port_text = entry.partition(":")
        if not host and len(netloc.split(",")) > 1:
            raise ValueError(f"host entry {entry!r} names no host")
        if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise ValueError(f"port {port_text!r} of {entry!r} is not a port number")
        found.append((host or "localhost", int(port_text) if port_text else 5432))
    return found


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"store URL option {name}={value!r} must be a number of 0 or more")
    return number
