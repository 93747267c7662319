"""Where the control centre reaches each engine of a cluster: the broker node its bus is
connected to now, the Redis and PostgreSQL it was told to use (the overview shows them).

Read from the backends' public attributes: ``RabbitBus.brokers`` (role -> ``host:port`` of
the broker each open connection reached last: with several brokers, the live one) and the
``where`` of ``RedisRegistry`` and ``PostgresStore`` (the target as configured, without
credentials: several hosts or a Sentinel set as written; which of them is the primary now is
not something those backends report yet). The embedded engines (memory, SQLite) have none of
these: nothing is shown for them. No Textual here.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentdeck.tui.sources import Sources


def engine_lines(sources: Sources) -> list[tuple[str, str]]:
    """``(engine, where)`` for the bus, the registry and the store, those that say where they
    are (none when everything is embedded)."""
    lines: list[tuple[str, str]] = []
    brokers = getattr(sources.bus, "brokers", None) if sources.bus is not None else None
    if isinstance(brokers, Mapping) and brokers:
        by_host: dict[str, list[str]] = {}
        for role, host in sorted(brokers.items()):
            by_host.setdefault(str(host), []).append(str(role))
        lines.append(("bus", ", ".join(f"{h} ({'+'.join(r)})" for h, r in by_host.items())))
    for name, engine in (("registry", sources.registry), ("store", sources.store)):
        where = getattr(engine, "where", None)
        if isinstance(where, str) and where:
            lines.append((name, where))
    return lines
