"""Store URLs for PostgreSQL: what asyncpg is given, what the pool is sized to, and how
messages name the server without its password.

::

    postgresql://user:password@host:5432/agentdeck?min_size=2&max_size=10
    postgres://user@host/agentdeck?sslmode=require&command_timeout=30

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
FORMS = "postgresql://user:password@host:5432/database[?min_size=2&max_size=10]"

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


def parse_url(url: str) -> PostgresTarget:
    """Split a ``postgresql://`` or ``postgres://`` URL into asyncpg's DSN and pool options.

    Raises ConfigError naming the bad part (never the password).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
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
    host = parts.hostname or "localhost"
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    where = f"{host}:{port or 5432}/{database or user}"

    options = dict(POOL_OPTIONS)
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
    )


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"store URL option {name}={value!r} must be a number of 0 or more")
    return number
