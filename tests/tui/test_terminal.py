"""A terminal that hangs up under the control centre: Textual's output thread must keep draining
its queue, or the event loop blocks for ever on the next frame (the SIGHUP hang)."""

from __future__ import annotations

import errno
import io
import threading

import pytest
from textual.drivers._writer_thread import MAX_QUEUED_WRITES, WriterThread
from textual.drivers.headless_driver import HeadlessDriver
from textual.drivers.linux_driver import LinuxDriver

from agentdeck.tui.terminal import TerminalOutput, hangup_safe

#: Frames written after the hang-up: well past what Textual's output queue holds.
FRAMES = MAX_QUEUED_WRITES * 3


class HungUpTerminal(io.StringIO):
    """A tty after its SSH session dropped: every write fails with EIO."""

    def write(self, text: str) -> int:
        raise OSError(errno.EIO, "Input/output error")


def frames_then_stop(writer: WriterThread) -> bool:
    """Write :data:`FRAMES` frames then stop ``writer`` (as the app does while it exits);
    whether that finished within 5 s (False: the caller's thread is blocked for good)."""

    def exit_like_the_app() -> None:
        for n in range(FRAMES):
            writer.write(f"frame {n}")
        writer.stop()

    caller = threading.Thread(target=exit_like_the_app, daemon=True)
    caller.start()
    caller.join(timeout=5)
    return not caller.is_alive()


def test_the_output_thread_outlives_a_hung_up_terminal() -> None:
    output = TerminalOutput(HungUpTerminal())
    writer = WriterThread(output)  # type: ignore[arg-type]
    writer.start()
    assert frames_then_stop(writer), "writing to a hung-up terminal blocked the app"
    assert output.lost
    assert not writer.is_alive()


# The EIO ending Textual's output thread is the point here, not a stray error.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_textual_alone_blocks_on_a_hung_up_terminal() -> None:
    """Why TerminalOutput exists: without it the first EIO ends Textual's output thread and
    the writes after it fill the queue and block. (If this starts failing, Textual handles a
    lost terminal itself and TerminalOutput can go.)"""
    writer = WriterThread(HungUpTerminal())
    writer.start()
    assert not frames_then_stop(writer)


def test_output_reaches_a_live_terminal_until_it_is_lost() -> None:
    screen = io.StringIO()
    output = TerminalOutput(screen)
    output.write("frame 1")
    output.flush()
    assert screen.getvalue() == "frame 1" and not output.lost
    screen.close()  # now ValueError, not OSError: a bug of ours, not a lost terminal
    with pytest.raises(ValueError):
        output.write("frame 2")


class Resumes(LinuxDriver):
    """A Linux driver that counts resumes and sends no signals (nothing is really suspended)."""

    def __init__(self) -> None:  # no App, no signal handlers: only what the test needs
        self._auto_restart = True
        self._file = io.StringIO()
        self.resumed = 0

    def resume_application_mode(self) -> None:
        self.resumed += 1


def test_a_sigcont_with_nothing_suspended_resumes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SIGCONT that comes with a hang-up must not restart the terminal's threads; the one
    after Ctrl+Z (SIGTSTP) still resumes the app."""
    driver = hangup_safe(Resumes)()
    monkeypatch.setattr("os.kill", lambda pid, sig: None)  # SIGSTOP ourselves: not in a test
    monkeypatch.setattr(driver, "suspend_application_mode", lambda: None)
    driver._sigcont_application()
    assert driver.resumed == 0
    driver._sigtstp_application()
    driver._sigcont_application()
    driver._sigcont_application()
    assert driver.resumed == 1


def test_only_the_terminal_driver_is_wrapped() -> None:
    assert issubclass(hangup_safe(LinuxDriver), LinuxDriver)
    assert hangup_safe(LinuxDriver) is not LinuxDriver
    assert hangup_safe(HeadlessDriver) is HeadlessDriver  # run_test() and snapshots
