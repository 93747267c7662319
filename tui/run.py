"""Running the control centre in a terminal: the log file, the signals, the exit watchdog.

Textual is imported here (through the app): the command line imports this module only when
it opens the control centre, never on the daemon's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
import threading

from agentdeck.core.errors import ConfigError
from agentdeck.core.logs import configure_logging, get_logger
from agentdeck.core.settings import Settings
from agentdeck.themes import load_theme
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.sources import Connect
from agentdeck.tui.terminal import end_stuck_exit, hangup_safe
from agentdeck.tui.theming import is_colour

log = get_logger(__name__)
#: Seconds after SIGHUP/SIGTERM before the process ends itself if a clean exit is stuck
#: (longer than the runtime's drain grace, so a clean shutdown always gets its chance).
EXIT_WATCHDOG = 20.0


def run_app(settings: Settings, connect: Connect, *, read_only: bool) -> None:
    """Run the control centre on the sources ``connect`` opens (``compose.control_centre``)
    until quit, SIGHUP/SIGTERM, or the terminal going away."""
    try:
        # A bad theme is a config error before the screen changes.
        load_theme(settings.theme, is_colour)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    # Logs would scribble over the screen: they go to a file while the TUI runs.
    log_file = (home / "agentdeck-tui.log").open("a")
    configure_logging(settings.log_level, "json", node=settings.node, stream=log_file)
    app = AgentdeckApp(
        connect,
        read_only=read_only,
        theme=settings.theme,
        freeze_heap=True,
    )

    # Textual's terminal threads must not keep the process alive after a hang-up (tui/terminal.py).
    app.driver_class = hangup_safe(app.driver_class)
    hung_up = threading.Event()
    signals: list[int] = []

    def hang_up(loop: asyncio.AbstractEventLoop, signum: int, frame: object) -> None:
        # The terminal is gone (SIGHUP) or we are told to stop (SIGTERM): leave cleanly, which
        # stops the runtime. A plain signal handler, not loop.add_signal_handler: it runs even
        # while the event loop is blocked, as Textual blocks it when the terminal stops reading
        # without hanging up (a frozen SSH link) and its output queue is full. Only for that
        # (or a blocked exit not yet understood) a watchdog ends the process, logging
        # `exit_watchdog` and every thread's stack, if leaving takes longer than the drain grace.
        if hung_up.is_set():
            return
        hung_up.set()
        signals.append(signum)  # (logged on the way out: a handler must not write the log)
        watchdog = threading.Timer(EXIT_WATCHDOG, end_stuck_exit, args=(128 + signum, log_file))
        watchdog.daemon = True
        watchdog.start()
        with contextlib.suppress(RuntimeError):  # the loop is closed: the app has left already
            loop.call_soon_threadsafe(app.request_exit)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, functools.partial(hang_up, loop))
        await app.run_async()

    try:
        asyncio.run(go())
    finally:
        how = signal.Signals(signals[0]).name if signals else "error" if app.return_code else "quit"
        log.info("tui_exited", how=how, return_code=app.return_code or 0)
        log_file.close()
    if app.return_code:
        raise SystemExit(app.return_code)
