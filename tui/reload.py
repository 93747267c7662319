"""Reloading what may change without a restart: ``[capability_limits.<cap>]`` and
``[budgets."label=value"]``, re-read from the config file when the daemon gets SIGHUP.

A file that does not load (bad TOML, a bad value anywhere in it) changes nothing: the values in
force stay, and one error line names the bad value and what is allowed (the same message a
start with that file would print). A good one is logged as the names that changed, old and
new values (limits and budgets are never secrets). Each node reloads its own file: SIGHUP
reloads the one process it is sent to at once. The ``reload`` operator action (``agentdeck
reload``, the control centre's ``:reload``) does the same on the leading node, and brings back
what changed or the error; a standby re-reads its file the same way when it takes the lease
(core/scheduler/leadership.py), so a failover runs on the file as it is then. Nothing here
imports Textual (the daemon's path).
"""

from __future__ import annotations

import functools
from pathlib import Path

from agentdeck.core.errors import ConfigError
from agentdeck.core.logs import get_logger
from agentdeck.core.scheduler import Scheduler
from agentdeck.core.settings import Settings

log = get_logger(__name__)

RELOADED = ("capability_limits", "budgets")
"""The settings a reload takes; every other change waits for a restart."""


def reload_or_raise(scheduler: Scheduler, config: Path | None = None) -> list[str]:
    """Read the settings again (``config``, or the file a start would find) and give
    ``scheduler`` their capability limits and label budgets; what changed (empty: nothing).
    A file that does not load raises its ConfigError (logged), the old values kept. The
    ``reload`` operator action and taking the lease call this (:attr:`Scheduler.reload_config`)."""
    try:
        fresh = Settings.load(config_path=config)
    except ConfigError as exc:
        log.error("config_reload_failed", error=str(exc), kept=" and ".join(RELOADED))
        raise
    limits = {cap: lim.to_limits() for cap, lim in fresh.capability_limits.items()}
    changes = scheduler.reconfigure(limits, fresh.budgets)
    log.info("config_reloaded", reloaded=list(RELOADED), changed=len(changes))
    return changes


def reload_limits(scheduler: Scheduler, config: Path | None = None) -> list[str] | None:
    """:func:`reload_or_raise` for SIGHUP: what changed (empty: nothing); None when the file
    did not load, the old values kept and the error logged."""
    try:
        return reload_or_raise(scheduler, config)
    except ConfigError:
        return None


def attach_reload(scheduler: Scheduler, config: Path | None = None) -> None:
    """Let ``scheduler`` carry out the ``reload`` operator action on ``config`` (or the file a
    start would find), exactly as SIGHUP reloads it."""
    scheduler.reload_config = functools.partial(reload_or_raise, scheduler, config)
