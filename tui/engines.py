"""Each engine's health per host, for the overview: which broker node the bus is on, which
Redis is the primary, which PostgreSQL is the primary.

Read from the backends' public reports, none of which does I/O when read:

- ``RabbitBus.broker_states``: every broker of the URL as the bus's connections last saw it
  (``connected``, ``lost``, ``down``, ``?``);
- ``RedisRegistry.server_states``: the primary and replicas the sentinels named when last
  asked (a lone server: whether it answered a PING). Asking is ``probe_servers()``, which the
  registry answers from its cache unless a few seconds have passed: :func:`host_rows` starts
  it as a background task (at most one at a time per registry, at most once a second), so a
  repaint never waits for a sentinel;
- ``PostgresStore.host_states``: the host the last new connection reached read-write (the
  primary), the standbys it was refused by, the hosts that did not answer.

Rows are hosts (the host name without the port, so a host running a broker, a Redis and a
PostgreSQL is one row); an engine that lists one host twice (several servers on one machine,
as in tests) is shown by ``host:port``. The embedded engines (memory, SQLite) report nothing:
with none to report, there is no table. No Textual here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from rich.text import Text

from agentdeck.tui.sources import Sources

#: How each state a backend reports is shown (a cell is at most 7 characters wide).
SHOWN = {
    "primary": "primary",
    "replica": "replica",
    "connected": "in use",
    "lost": "lost",
    "down": "down",
    "?": "?",
}
#: The status whose style a cell takes (the theme's colours for task states).
STYLE_OF = {
    "primary": "succeeded",
    "connected": "succeeded",
    "replica": "running",
    "lost": "retrying",
    "down": "failed",
}
COLUMNS = {"broker": 6, "redis": 7, "postgres": 8}
"""Each engine's column and its width (its longest cell or its name)."""
HOST_WIDTH = 11
"""Widest host label shown; longer ones are cut (a ``host:port`` label from its left)."""
ROWS = 3
"""Hosts shown at most (the overview's agents card has room for three at 80x24)."""
PROBE_EVERY = 1.0
"""Seconds between two background probes started for one registry (it caches for longer)."""


@dataclass(frozen=True, slots=True)
class HostRow:
    """One host: the state of the broker, Redis and PostgreSQL on it ("" when that engine
    has none there)."""

    host: str
    broker: str = ""
    redis: str = ""
    postgres: str = ""


def engine_states(sources: Sources) -> dict[str, dict[str, str]]:
    """Each engine's report (``host:port`` -> state), those that report one."""
    reports: dict[str, dict[str, str]] = {}
    for engine, source, name in (
        ("broker", sources.bus, "broker_states"),
        ("redis", sources.registry, "server_states"),
        ("postgres", sources.store, "host_states"),
    ):
        report = getattr(source, name, None) if source is not None else None
        if isinstance(report, Mapping) and report:
            reports[engine] = {str(k): str(v) for k, v in report.items()}
    return reports


def host_rows(sources: Sources) -> list[HostRow]:
    """One row per host of the engines that report theirs, sorted by host (none when
    everything is embedded). Starts a background probe of the registry's servers when due."""
    _probe(sources.registry)
    cells: dict[str, dict[str, str]] = {}
    for engine, report in engine_states(sources).items():
        hosts = [_host(address) for address in report]
        unique = len(set(hosts)) == len(hosts)
        for address, state in report.items():
            cells.setdefault(_host(address) if unique else address, {})[engine] = state
    return [HostRow(host, **cells[host]) for host in sorted(cells)]


def host_table(
    sources: Sources,
    style: Callable[[str], str] = lambda status: "",
    rows: int = ROWS,
    down: Collection[str] = (),
) -> list[Text]:
    """The overview's lines: a header, then at most ``rows`` hosts (with more, the last line
    says how many are not shown). ``style`` gives the style of a task status (the theme's).
    The engines in ``down`` (``redis``, ``postgres``: their source does not answer this
    process) read ``down`` in every cell they have, whatever their last report said."""
    found = [
        replace(row, **{e: "down" for e in down if e in COLUMNS and getattr(row, e)})
        for row in host_rows(sources)
    ]
    if not found:
        return []
    width = min(max(len("host"), *(len(r.host) for r in found)), HOST_WIDTH)
    header = " ".join([f"{'host':<{width}}", *(f"{e:<{w}}" for e, w in COLUMNS.items())])
    lines = [Text(header.rstrip(), style="dim")]
    shown = found if len(found) <= rows else found[: rows - 1]
    for row in shown:
        line = Text(f"{_cut(row.host, width):<{width}}")
        for engine, cell_width in COLUMNS.items():
            state = getattr(row, engine)
            text = SHOWN.get(state, state) if state else "-"
            status = STYLE_OF.get(state)
            line.append(" ")
            line.append(f"{text:<{cell_width}}", style=style(status) if status else "dim")
        lines.append(line)
    if len(shown) < len(found):
        lines.append(Text(f"… {len(found) - len(shown)} more hosts", style="dim"))
    return lines


def _host(address: str) -> str:
    """``h1:5432`` -> ``h1``; ``[::1]:5432`` -> ``[::1]``."""
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() else address


def _cut(label: str, width: int) -> str:
    if len(label) <= width:
        return label
    if ":" in label.lstrip("["):  # host:port: the port tells them apart
        return "…" + label[-(width - 1) :]
    return label[: width - 1] + "…"


_probes: weakref.WeakKeyDictionary[Any, tuple[float, asyncio.Task[Any]]] = (
    weakref.WeakKeyDictionary()
)


def _probe(registry: object) -> None:
    """Start ``registry.probe_servers()`` in the background when it has one, none is running
    and :data:`PROBE_EVERY` has passed; never waits for it."""
    probe = getattr(registry, "probe_servers", None)
    if not callable(probe):
        return
    now = time.monotonic()
    try:
        last = _probes.get(registry)
    except TypeError:  # not weakly referable or not hashable: the registry throttles itself
        last = None
    if last is not None and (not last[1].done() or now - last[0] < PROBE_EVERY):
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not in the event loop: nothing to run it on
        return
    coroutine: Awaitable[Any] = probe()
    task = loop.create_task(_quietly(coroutine), name="probe-servers")
    with contextlib.suppress(TypeError):
        _probes[registry] = (now, task)


async def _quietly(coroutine: Awaitable[Any]) -> None:
    try:
        await coroutine
    except Exception:  # a report must never break the screen (probe_servers never raises)
        return
