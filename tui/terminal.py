"""The terminal under the control centre, made safe to lose (a dropped SSH session, a killed
tmux pane). Two ways Textual 8 keeps a process alive after its terminal hangs up:

- Its *output thread* writes frames taken from a queue of 30; the first write to the hung-up
  tty fails (``EIO``) and ends that thread. Nothing drains the queue any more, and the app,
  winding down, queues ~20 more writes: when the queue was a third full at the hang-up, the
  event loop blocks in ``Queue.put`` for ever. :class:`TerminalOutput` swallows output once the
  terminal is lost instead, so the thread keeps draining.
- The kernel sends SIGCONT along with SIGHUP to a session leader whose terminal hangs up (the
  command of a tmux pane, say), and Textual's SIGCONT handler "resumes" application mode
  though nothing was suspended: a second input thread, reading the dead tty, where ``read``
  returns at once. One of the two is never stopped; it spins at 100% CPU and, not being a
  daemon, keeps the exiting interpreter waiting for ever. :func:`hangup_safe` resumes only
  after a suspension (Ctrl+Z).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
from typing import Any, TextIO

import structlog
from textual.driver import Driver

log = structlog.get_logger(__name__)


class TerminalOutput:
    """A text stream over the terminal that drops everything once the terminal is gone.

    The first ``OSError`` from ``write`` or ``flush`` (``EIO`` after a hang-up, ``EPIPE``,
    ``EBADF``) marks the terminal lost: from then on output goes nowhere. Nothing written can
    reach a screen that no longer exists, and an error here would only end the thread writing.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost = False
        """Whether the terminal has gone away (output is being dropped)."""

    def write(self, text: str) -> int:
        """Write ``text``, or drop it if the terminal is lost."""
        if not self.lost:
            try:
                return self._stream.write(text)
            except OSError:
                self.lost = True
        return len(text)

    def flush(self) -> None:
        """Flush, unless the terminal is lost."""
        if not self.lost:
            try:
                self._stream.flush()
            except OSError:
                self.lost = True

    def __getattr__(self, name: str) -> Any:
        # fileno(), isatty(), encoding...: whatever else the driver asks of its file.
        return getattr(self._stream, name)


def hangup_safe(driver_class: type[Driver]) -> type[Driver]:
    """``driver_class`` writing through a :class:`TerminalOutput` (the Linux/macOS driver;
    any other driver is returned as it is)."""
    try:
        from textual.drivers.linux_driver import LinuxDriver
    except ImportError:  # pragma: no cover - Windows has no termios
        return driver_class
    if not issubclass(driver_class, LinuxDriver):
        return driver_class

    class HangupSafeDriver(driver_class):  # type: ignore[valid-type, misc]
        _file: Any  # sys.__stderr__ in LinuxDriver; what its output thread writes to

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._file = TerminalOutput(self._file)
            self._suspended = False

        def _sigtstp_application(self, *args: Any) -> None:
            self._suspended = self._auto_restart  # Ctrl+Z: SIGCONT will resume what this stops
            super()._sigtstp_application(*args)

        def _sigcont_application(self, *args: Any) -> None:
            # Resume only what SIGTSTP suspended. The kernel sends SIGCONT along with SIGHUP
            # when the terminal hangs up; resuming then would start a second input thread on
            # the dead tty, which spins (read() returns 0 at once) and, not being a daemon,
            # keeps the exiting process alive at 100% CPU for ever.
            if self._suspended:
                self._suspended = False
                super()._sigcont_application(*args)

    return HangupSafeDriver


def end_stuck_exit(code: int, stream: TextIO) -> None:
    """The exit watchdog's last resort: log it, dump every thread's stack to ``stream`` (the
    TUI log file, so the next such hang names its blocked thread), and end the process."""
    try:
        with contextlib.suppress(Exception):  # the log may be closed already: ending matters more
            log.error("exit_watchdog", code=code)
            stream.flush()
            faulthandler.dump_traceback(stream, all_threads=True)
    finally:
        os._exit(code)
