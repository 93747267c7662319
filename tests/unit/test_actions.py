"""The one table of operator actions, and the client and the scheduler that both go by it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.actions import ACTIONS, LEADER, Action, TargetKind, parse_action
from agentdeck.core.breakers import Breakers
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import AgentdeckError, NotFound
from agentdeck.core.models import Change, Command, CommandStatus, Usage, new_id
from agentdeck.core.ports import OutgoingTask
from agentdeck.core.scheduler import Scheduler
from agentdeck.core.scheduler.commands import HANDLERS, STANDBYS
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T
from agentdeck.tui.reload import attach_reload

ONE_TASK = "name: one\ntasks:\n  - {key: a, capability: echo}\n"


@dataclass
class Deck:
    """A store, a bus, a registry, a leading scheduler with breakers, and a client."""

    store: SqliteStore
    bus: MemoryBus
    scheduler: Scheduler
    client: Client
    clock: FakeClock

    async def submit(self) -> str:
        """Submit a one-task workflow; its id."""
        spec = parse_spec(ONE_TASK, fmt="yaml", limits=SpecLimits())
        return (await self.client.submit(spec)).id

    async def carry_out(self, action: str, target: str, value: str | None = None) -> Command:
        """Queue a command through the client and let the scheduler carry it out."""
        queued = await self.client.command(action, target, value, wait=None)
        await self.scheduler.tick()
        return await self.store.get_command(queued.id)

    async def dead_letter(self) -> str:
        """Reject a message to the dead letters; its id."""
        await self.bus.publish_tasks([OutgoingTask("junk", b"not a task", {})])
        consumer = self.bus.consume_tasks(["junk"], prefetch=1)
        delivery = await asyncio.wait_for(anext(consumer), 2)
        await delivery.reject("unreadable")
        await consumer.aclose()  # type: ignore[attr-defined]
        (letter,) = await self.bus.dead_letters()
        return letter.id


@pytest.fixture
async def deck(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Deck]:
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    breakers = Breakers(registry, bus, clock)
    scheduler = Scheduler(store, bus, registry, clock, node="node-1", breakers=breakers)
    await scheduler.tick()  # takes the lease
    yield Deck(store, bus, scheduler, Client(store, clock, poll=0.001), clock)
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


async def _running_workflow(deck: Deck) -> str:
    return await deck.submit()


async def _paused_workflow(deck: Deck) -> str:
    workflow_id = await deck.submit()
    assert (await deck.carry_out("pause", workflow_id)).status == CommandStatus.DONE
    return workflow_id


async def _cancelled_task(deck: Deck) -> str:
    workflow_id = await deck.submit()
    assert (await deck.carry_out("cancel", workflow_id)).status == CommandStatus.DONE
    assert (await deck.store.get_task(f"{workflow_id}/a")).status == T.CANCELLED
    return f"{workflow_id}/a"


async def _capability(deck: Deck) -> str:
    return "echo"


async def _tripped_breaker(deck: Deck) -> str:
    assert (await deck.carry_out("trip", "echo")).status == CommandStatus.DONE
    return "capability:echo"


async def _paused_capability(deck: Deck) -> str:
    assert (await deck.carry_out("pause-capability", "echo")).status == CommandStatus.DONE
    return "echo"


async def _every_agent(deck: Deck) -> str:
    return "*"


async def _leader_with_a_config(deck: Deck) -> str:
    deck.scheduler.reload_config = list  # a file that changes nothing
    return LEADER


#: For each action, how to make a target it can be carried out on (a new action needs a row).
TARGETS: dict[Action, Callable[[Deck], Awaitable[str]]] = {
    Action.CANCEL: _running_workflow,
    Action.PAUSE: _running_workflow,
    Action.RESUME: _paused_workflow,
    Action.RETRY: _cancelled_task,
    Action.TRIP: _capability,
    Action.RESET: _tripped_breaker,
    Action.DRAIN: _every_agent,
    Action.UNDRAIN: _every_agent,
    Action.PAUSE_CAPABILITY: _capability,
    Action.RESUME_CAPABILITY: _paused_capability,
    Action.REQUEUE: Deck.dead_letter,
    Action.BUDGET: _running_workflow,
    Action.RELOAD: _leader_with_a_config,
}

#: The value given to each action that takes one (ActionSpec.value).
VALUES = {Action.BUDGET: "usd=10"}

#: For each kind of target, one the client refuses before queueing anything.
BAD_TARGETS = {
    TargetKind.WORKFLOW: "no-such-workflow",
    TargetKind.TASK_OR_WORKFLOW: "no-such-workflow/a",
    TargetKind.BREAKER: "queue:x",
    TargetKind.AGENT: "two words",
    TargetKind.CAPABILITY: "Not A Capability!",
    TargetKind.DEAD_LETTER: "",
    TargetKind.NODE: "two words",
}


def test_every_action_has_its_spec() -> None:
    """The table has one row per Action, filed under that Action."""
    assert set(ACTIONS) == set(Action)
    assert all(spec.action is action for action, spec in ACTIONS.items())


def test_every_action_that_takes_a_value_has_one_in_the_walk() -> None:
    """The table walk below gives a value to exactly the actions that take one."""
    assert set(VALUES) == {a for a, spec in ACTIONS.items() if spec.value is not None}


async def test_the_client_refuses_a_missing_stray_or_bad_value(deck: Deck) -> None:
    """budget needs a value of its form; other actions take none; nothing is queued."""
    workflow_id = await deck.submit()
    with pytest.raises(AgentdeckError, match=r"budget needs a value: usd=N\|tokens=N"):
        await deck.client.command("budget", workflow_id, wait=None)
    with pytest.raises(AgentdeckError, match="pause takes no value"):
        await deck.client.command("pause", workflow_id, "usd=1", wait=None)
    with pytest.raises(AgentdeckError, match=r"budget.usd must be a positive number.*-1"):
        await deck.client.command("budget", workflow_id, "usd=-1", wait=None)
    with pytest.raises(AgentdeckError, match="'dollars=5' is not usd=N or tokens=N"):
        await deck.client.command("budget", workflow_id, "dollars=5", wait=None)
    assert await deck.store.pending_commands(limit=10) == []


def test_the_scheduler_has_a_handler_for_every_action() -> None:
    """Every Action maps to the scheduler method that carries it out."""
    assert set(HANDLERS) == set(Action)


@pytest.mark.parametrize("action", list(Action))
async def test_the_client_queues_and_the_scheduler_carries_out_every_action(
    deck: Deck, action: Action
) -> None:
    """Walking the table: each action, given a fitting target, is queued by the client and
    carried out by the scheduler."""
    target = await TARGETS[action](deck)
    command = await deck.carry_out(action.value, target, VALUES.get(action))
    assert (command.action, command.status) == (action.value, CommandStatus.DONE), command.result


@pytest.mark.parametrize("action", list(Action))
async def test_the_client_refuses_a_bad_target_of_every_action(deck: Deck, action: Action) -> None:
    """Each action's target is checked by its kind before anything is queued."""
    with pytest.raises(AgentdeckError):
        await deck.client.command(
            action.value, BAD_TARGETS[ACTIONS[action].target], VALUES.get(action), wait=None
        )
    assert await deck.store.pending_commands(limit=10) == []


async def test_a_workflow_action_refuses_a_task_id(deck: Deck) -> None:
    """cancel, pause and resume name a workflow: a task id is refused with what they take."""
    workflow_id = await deck.submit()
    with pytest.raises(AgentdeckError, match="cancel takes a workflow id"):
        await deck.client.command("cancel", f"{workflow_id}/a", wait=None)


async def test_the_client_queues_a_workflows_full_id_for_a_prefix(deck: Deck) -> None:
    """A unique prefix of a workflow id is queued as the full id the scheduler looks up."""
    workflow_id = await deck.submit()
    command = await deck.carry_out("pause", workflow_id[:8])
    assert (command.target, command.status) == (workflow_id, CommandStatus.DONE)


async def test_the_client_queues_a_breakers_full_name(deck: Deck) -> None:
    """A bare capability given to trip is queued as the breaker ``capability:<name>``."""
    command = await deck.client.command("trip", "echo", wait=None)
    assert command.target == "capability:echo"


def test_an_unknown_actions_error_names_the_known_ones() -> None:
    """parse_action refuses a misspelt action and lists every known one."""
    with pytest.raises(AgentdeckError, match="unknown action 'explode'") as caught:
        parse_action("explode")
    assert all(action.value in str(caught.value) for action in Action)


async def test_the_client_refuses_an_unknown_action(deck: Deck) -> None:
    """The client queues nothing for an unknown action and names the known ones."""
    with pytest.raises(AgentdeckError, match="known: cancel, pause") as caught:
        await deck.client.command("explode", "x", wait=None)
    assert all(action.value in str(caught.value) for action in Action)
    assert await deck.store.pending_commands(limit=10) == []


async def test_the_scheduler_fails_a_queued_unknown_action_naming_the_known_ones(
    deck: Deck,
) -> None:
    """A command row with an unknown action (an older or newer client) fails, saying which
    actions this scheduler knows."""
    command = Command(new_id(), "explode", "x", deck.clock.now())
    await deck.store.add_command(command)
    await deck.scheduler.tick()
    done = await deck.store.get_command(command.id)
    assert done.status == CommandStatus.FAILED
    assert done.result == f"unknown action 'explode'; known: {', '.join(Action)}"


async def test_trip_fails_clearly_when_breakers_are_off(tmp_path: Path, clock: FakeClock) -> None:
    """A node without breakers fails trip and reset saying so, not as an unknown action."""
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    await store.migrate()
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    scheduler = Scheduler(store, bus, registry, clock, node="node-1")
    try:
        with pytest.raises(AgentdeckError, match="circuit breakers are off"):
            await scheduler.execute(Command("c1", "trip", "capability:echo", clock.now()))
    finally:
        await scheduler.stop()
        await store.close()


async def test_requeue_of_a_missing_dead_letter_fails_the_command(deck: Deck) -> None:
    """Requeueing a dead letter that is not there fails the command with NotFound's text."""
    with pytest.raises(NotFound, match="no dead letter"):
        await deck.scheduler.execute(Command("c1", "requeue", "nope", deck.clock.now()))


async def test_the_client_sums_usage_by_each_grouping_and_label(deck: Deck) -> None:
    """Client.usage groups as the Store does, folds by label, and refuses another grouping
    naming the allowed ones."""
    spec = parse_spec(
        "name: l\nlabels: {team: a}\ntasks:\n  - {key: a, capability: echo}\n",
        limits=SpecLimits(),
    )
    workflow_id = (await deck.client.submit(spec)).id
    task = f"{workflow_id}/a"
    await deck.store.apply(
        [Change(task, T.DISPATCHED, frozenset({T.READY}), attempt=0, values={"attempt": 1})],
        deck.clock.now(),
    )
    done = Change(task, T.SUCCEEDED, frozenset({T.DISPATCHED}), attempt=1, usage=Usage(7, 3))
    await deck.store.apply([done], deck.clock.now())
    assert [(t.key, t.tokens) for t in await deck.client.usage("label")] == [("team=a", 10)]
    assert [t.key for t in await deck.client.usage("task")] == [task]
    assert await deck.client.usage("model", since=deck.clock.now() + 1) == []
    with pytest.raises(AgentdeckError, match="by: workflow, task, capability, model, label"):
        await deck.client.usage("agent")


# ------------------------------------------------------------------------------- reload

LIMITED = '[capability_limits.echo]\nmax_concurrency = 2\n[budgets."team=a"]\nusd = 5\n'


async def test_reload_rereads_the_leaders_file_and_says_what_changed(
    deck: Deck, tmp_path: Path
) -> None:
    """``reload`` (the leader by default, or by its node name) gives the scheduler the file's
    limits and budgets as SIGHUP does; the command's result lists what changed, then that
    nothing did."""
    config = tmp_path / "agentdeck.toml"
    config.write_text(LIMITED)
    attach_reload(deck.scheduler, config)
    done = await deck.carry_out("reload", LEADER)
    assert (done.status, done.result) == (
        CommandStatus.DONE,
        "reloaded the limits on node-1 (standbys read their own file when they lead, or at "
        "once on SIGHUP): capability_limits.echo: - -> max_concurrency=2; "
        'budgets."team=a": - -> usd=5.0',
    )
    assert deck.scheduler.limiter.limits["echo"].max_concurrency == 2
    again = await deck.carry_out("reload", "node-1")
    assert (again.status, again.result) == (
        CommandStatus.DONE,
        f"reloaded the limits on node-1 ({STANDBYS}): nothing changed",
    )


async def test_reload_of_a_bad_file_fails_naming_the_value_and_keeps_the_limits(
    deck: Deck, tmp_path: Path
) -> None:
    """A file with a bad value fails the command with the error a start would print (the
    setting, what is allowed, the value) and the limits in force stay as they were."""
    config = tmp_path / "agentdeck.toml"
    config.write_text(LIMITED)
    attach_reload(deck.scheduler, config)
    assert (await deck.carry_out("reload", LEADER)).status == CommandStatus.DONE
    config.write_text("[capability_limits.echo]\nmax_concurrency = 0\n")
    failed = await deck.carry_out("reload", LEADER)
    assert failed.status == CommandStatus.FAILED
    assert failed.result is not None
    assert "capability_limits.echo.max_concurrency" in failed.result
    assert "(got 0)" in failed.result
    assert failed.result.endswith("the limits in force on node-1 are kept")
    assert deck.scheduler.limiter.limits["echo"].max_concurrency == 2
    assert set(deck.scheduler.config.label_budgets) == {"team=a"}


async def test_reload_naming_another_node_or_without_a_file_fails_saying_why(
    deck: Deck,
) -> None:
    """Only the leader carries out commands: one naming a standby fails, naming the leader and
    SIGHUP; a scheduler given no file to read (not started by the composition root) says so."""
    other = await deck.carry_out("reload", "node-2")
    assert other.status == CommandStatus.FAILED
    assert other.result == (
        "node 'node-2' does not lead (node-1 does) and only the leader carries out commands: "
        "reload leader, or send SIGHUP to 'node-2'"
    )
    unset = await deck.carry_out("reload", LEADER)
    assert unset.status == CommandStatus.FAILED
    assert unset.result is not None and "node node-1 has no config file" in unset.result
