"""Agent drain/undrain, capability pause/resume and dead-letter requeue from the keyboard (and
the CLI), checked against what the scheduler did in the core."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.core.client import Client
from agentdeck.core.clock import SystemClock
from agentdeck.core.holds import CapabilityHolds
from agentdeck.core.messages import Control, decode
from agentdeck.core.models import CommandStatus
from agentdeck.core.scheduler import Scheduler
from agentdeck.core.scheduler.commands import STANDBYS
from agentdeck.core.settings import Settings
from agentdeck.core.states import TaskStatus as T
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.cli import main
from agentdeck.tui.reload import attach_reload
from agentdeck.tui.screens.agents import AgentsScreen
from agentdeck.tui.screens.capabilities import CapabilitiesScreen
from agentdeck.tui.screens.dead_letters import DeadLettersScreen
from agentdeck.tui.screens.modals import ConfirmScreen
from agentdeck.tui.widgets.command_line import CommandLine
from agentdeck.tui.wiring import store_only
from tests.tui.conftest import DEAD_LETTER, WF_RUNNING, World
from tests.tui.test_app import ready, settle, table

pytestmark = pytest.mark.tui
SIZE = (80, 24)
P1 = f"{WF_RUNNING}/p1"  # a ready echo task in the fixed world


async def confirm(pilot: object, key: str, question: str, *, yes: bool = True) -> None:
    """Press ``key``, check the confirmation names the target, answer it."""
    await pilot.press(key)  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]
    app = pilot.app  # type: ignore[attr-defined]
    assert isinstance(app.screen, ConfirmScreen)
    assert app.screen.question == question
    await pilot.press("y" if yes else "n")  # type: ignore[attr-defined]
    await settle(pilot)  # type: ignore[arg-type]


async def test_drain_and_undrain_an_agent_send_control_orders(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`d` then `u` on the agents screen: the scheduler tells that agent to drain, then resume."""
    control = world.bus.subscribe_control()
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("4")
        await settle(pilot)
        assert isinstance(app.screen, AgentsScreen)
        assert table(app).cursor_key == "chaos-1"
        await confirm(pilot, "d", "Drain agent chaos-1?")
        await world.scheduler.tick()
        await confirm(pilot, "u", "Undrain agent chaos-1?")
        await world.scheduler.tick()
    orders = [decode(await anext(control), Control) for _ in range(2)]
    assert [(o.action, o.target) for o in orders] == [("drain", "chaos-1"), ("resume", "chaos-1")]
    undrain, drain, _old = await world.store.list_commands()
    assert (drain.action, drain.status) == ("drain", CommandStatus.DONE)
    assert (undrain.action, undrain.status) == ("undrain", CommandStatus.DONE)


async def test_draining_an_unknown_agent_fails_the_command(world: World) -> None:
    """The scheduler refuses to drain an agent the registry does not know."""
    await world.sources.client.command("drain", "ghost-9", wait=None)
    await world.scheduler.tick()
    newest = (await world.store.list_commands())[0]
    assert newest.status == CommandStatus.FAILED
    assert "no live agent 'ghost-9'" in newest.result


async def test_a_paused_capability_keeps_its_ready_tasks_ready(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`z` pauses the capability under the cursor: its ready task stays ready; `a` frees it."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("7")
        await settle(pilot)
        assert isinstance(app.screen, CapabilitiesScreen)
        assert table(app).keys == ["chaos", "echo", "sleep"]
        await pilot.press("j")
        await confirm(pilot, "z", "Pause capability echo?")
        await world.scheduler.tick()
        await world.scheduler.tick()
        assert await world.status(P1) == T.READY
        assert await CapabilityHolds(world.registry, world.clock).paused() == {"echo"}
        await settle(pilot)
        assert str(table(app).get_row("echo")[1]) == "paused"
        await pilot.press("6")  # the pause is not shown as a breaker
        await settle(pilot)
        assert table(app).keys == ["capability:chaos", "capability:echo"]
        await pilot.press("7")
        await settle(pilot)
        await pilot.press("j")
        await confirm(pilot, "a", "Resume capability echo?")
        # A polled command runs after the round's dispatch (core.scheduler.loop.tick); that
        # round was busy, so the next, which dispatches what it freed, follows at once.
        assert await world.scheduler.tick()
        await world.scheduler.tick()
        assert await world.status(P1) == T.DISPATCHED
        assert await CapabilityHolds(world.registry, world.clock).paused() == set()


async def test_a_bad_capability_name_is_refused_before_queueing(world: World) -> None:
    """pause-capability names the bad value and what is allowed; nothing is queued."""
    client: Client = world.sources.client
    with pytest.raises(Exception, match="'a b' is not a capability name"):
        await client.command("pause-capability", "a b", wait=None)
    assert len(await world.store.list_commands()) == 1  # only the fixed world's old command


async def test_requeue_a_dead_letter_after_confirmation(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`8` lists dead letters; `n` leaves it, `r` + `y` puts it back on its queue."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("8")
        await settle(pilot)
        assert isinstance(app.screen, DeadLettersScreen)
        assert table(app).keys == [DEAD_LETTER]
        await confirm(pilot, "r", f"Requeue dead letter {DEAD_LETTER}?", yes=False)
        assert len(await world.store.list_commands()) == 1
        await confirm(pilot, "r", f"Requeue dead letter {DEAD_LETTER}?")
        await world.scheduler.tick()
        await settle(pilot)
        assert table(app).keys == []
    assert await world.bus.dead_letters() == []
    newest = (await world.store.list_commands())[0]
    assert (newest.action, newest.target, newest.status) == (
        "requeue",
        DEAD_LETTER,
        CommandStatus.DONE,
    )


async def test_read_only_has_no_agent_capability_or_requeue_actions(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """With --read-only the new action keys do nothing and queue nothing."""
    app = app_for(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for screen, key in (("4", "d"), ("7", "z"), ("8", "r")):
            await pilot.press(screen)
            await settle(pilot)
            await pilot.press(key)
            await settle(pilot)
            assert not isinstance(app.screen, ConfirmScreen)
    assert len(await world.store.list_commands()) == 1


def test_cli_queues_drain_and_capability_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agentdeck drain`, `undrain`, `pause-capability`, `resume-capability` queue commands."""
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for var in ("BUS", "STORE", "REGISTRY", "BLOB"):
        monkeypatch.delenv(f"AGENTDECK_{var}_URL", raising=False)
    runner = CliRunner()
    for args, expected in (
        (["drain", "echo-1"], "queued drain echo-1"),
        (["undrain", "*"], "queued undrain *"),
        (["pause-capability", "echo"], "queued pause-capability echo"),
        (["resume-capability", "echo"], "queued resume-capability echo"),
        (["requeue", "abc123"], "queued requeue abc123"),
    ):
        result = runner.invoke(main, [*args, "--no-wait"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(expected)
    bad = runner.invoke(main, ["pause-capability", "a:b", "--no-wait"])
    assert bad.exit_code == 1
    assert "is not a capability name" in bad.output


async def test_b_sets_a_workflow_budget_after_asking_for_the_value(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`B` on a workflow asks for the value, confirms naming workflow and value, and the
    scheduler sets that budget; Esc at the question sends nothing."""
    from agentdeck.tui.screens.modals import AskScreen

    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press(":", *"wf", "space", *WF_RUNNING, "enter")
        await settle(pilot)
        await pilot.press("B")
        await pilot.pause()
        assert isinstance(app.screen, AskScreen)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, AskScreen | ConfirmScreen)
        await pilot.press("B")
        await pilot.pause()
        await pilot.press(*"usd=7.5", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question == f"Set the budget of workflow {WF_RUNNING} to usd=7.5?"
        await pilot.press("y")
        await settle(pilot)
        await world.scheduler.tick()
    (command, *_) = await world.store.list_commands()
    assert (command.action, command.target, command.status) == (
        "budget",
        WF_RUNNING,
        CommandStatus.DONE,
    )
    budget = (await world.store.get_workflow(WF_RUNNING)).budget
    assert budget is not None and budget.usd == 7.5


async def _reload_outcome(pilot: object, world: World) -> list[str]:
    """Let the leader carry out the queued reload; the toasts the app shows of it."""
    app = pilot.app  # type: ignore[attr-defined]
    for _ in range(200):  # the app waits for the command in a worker: tick until it is done
        await world.scheduler.tick()
        await pilot.pause()  # type: ignore[attr-defined]
        if any("reload" in (n.title or "") for n in app._notifications):
            break
    return [f"{n.title}: {n.message}" for n in app._notifications if "reload" in (n.title or "")]


async def test_reload_from_the_overview_shows_what_changed_or_why_not(
    world: World, app_for: Callable[..., AgentdeckApp], tmp_path: Path
) -> None:
    """`R` on the overview asks to reload the leader's limits; once confirmed the leader
    re-reads its file and the toast says what changed; a bad file's toast names the bad value
    and the limits stay. `:reload` asks the same."""
    config = tmp_path / "agentdeck.toml"
    config.write_text("[capability_limits.echo]\nmax_concurrency = 3\n")
    await world.scheduler.tick()  # elected (a node re-reads its file then: none wired yet)
    attach_reload(world.scheduler, config)
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question == "Reload the limits of node leader?"
        await pilot.press("y")  # (not settled: the app waits for the outcome in a worker)
        assert await _reload_outcome(pilot, world) == [
            f"reload done: reloaded the limits on node-1 ({STANDBYS}): "
            "capability_limits.echo: - -> max_concurrency=3"
        ]
        assert world.scheduler.limiter.limits["echo"].max_concurrency == 3
        app.clear_notifications()
        config.write_text("[capability_limits.echo]\nmax_concurrency = -1\n")
        await pilot.press("colon")
        app.screen.query_one(CommandLine).value = "reload"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question == "Reload the limits of node leader?"
        await pilot.press("y")
        [failed] = await _reload_outcome(pilot, world)
        assert failed.startswith("reload failed: ")
        assert "capability_limits.echo.max_concurrency" in failed and "(got -1)" in failed
        assert failed.endswith("the limits in force on node-1 are kept")
        assert world.scheduler.limiter.limits["echo"].max_concurrency == 3


@contextlib.contextmanager
def leading_scheduler(config: Path) -> Iterator[None]:
    """A scheduler node ``cli-node`` on ``config``'s Store, leading and reloading ``config``,
    in a thread of its own (the CLI under test runs its own event loop), stopped on the way
    out."""
    elected, stop = threading.Event(), threading.Event()

    async def run() -> None:
        clock = SystemClock()
        async with store_only(Settings.load(config_path=config), clock) as store:
            bus = MemoryBus.from_url("memory://", clock=clock)
            registry = MemoryRegistry.from_url("memory://", clock=clock)
            scheduler = Scheduler(store, bus, registry, clock, node="cli-node")
            attach_reload(scheduler, config)
            try:
                while not stop.is_set():
                    await scheduler.tick()
                    if scheduler.is_leader:
                        elected.set()
                    await asyncio.sleep(0.01)
            finally:
                await scheduler.stop()

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    try:
        assert elected.wait(30), "the scheduler thread did not take the lease"
        yield
    finally:
        stop.set()
        thread.join(30)


def test_agentdeck_reload_prints_what_the_leader_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agentdeck reload` (no argument: the leader) waits for the leading scheduler and prints
    its result; a bad file exits 1 with the error naming the value."""
    monkeypatch.chdir(tmp_path)
    for var in ("AGENTDECK_BUS_URL", "AGENTDECK_STORE_URL", "AGENTDECK_REGISTRY_URL"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "daemon.toml"  # the daemon's file; the CLI's own points at the Store
    store = f'store_url = "sqlite:///{tmp_path}/deck.db"\n'
    config.write_text(store)
    (tmp_path / "cli.toml").write_text(store)
    cli = ["--config", str(tmp_path / "cli.toml"), "reload"]
    with leading_scheduler(config):
        config.write_text(store + '[budgets."team=a"]\nusd = 5\n')
        result = CliRunner().invoke(main, cli)
        # (the scheduler thread's log lines share the captured stdout: the CLI's is the last)
        assert (result.exit_code, result.output.splitlines()[-1]) == (
            0,
            f'reloaded the limits on cli-node ({STANDBYS}): budgets."team=a": - -> usd=5.0',
        )
        config.write_text(store + "[capability_limits.echo]\nmax_concurrency = 0\n")
        result = CliRunner().invoke(main, [*cli, "cli-node"])
        assert result.exit_code == 1
        [error] = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert "capability_limits.echo.max_concurrency" in error and "(got 0)" in error
        assert error.endswith("the limits in force on cli-node are kept")
