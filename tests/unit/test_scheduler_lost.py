"""Lost attempts (no report came) through the scheduler: they spend no attempt of the retry
budget, count in no breaker, back off, and are bounded by ``max_lost`` of their own."""

from __future__ import annotations

import asyncio

from agentdeck.core.breaker import BreakerPolicy
from agentdeck.core.breakers import Breakers
from agentdeck.core.messages import Control, TaskMessage, decode
from agentdeck.core.models import ErrorInfo
from agentdeck.core.states import TaskStatus as T
from tests.unit.test_scheduler import A_TO_B, Deck, register_agent
from tests.unit.test_scheduler import deck as deck  # the fixture

ONE_TASK = """
name: one
tasks:
  - {key: a, capability: echo, retry: {max_attempts: 2, max_lost: 3}}
"""


async def lose(deck: Deck, expected_attempt: int) -> TaskMessage:
    """Take the next message of ``a`` and let its dispatch deadline pass unanswered (an agent of
    the capability has a free slot all along): the attempt fails as lost. Returns the message."""
    [(msg, _)] = await deck.take("echo")
    assert msg.attempt == expected_attempt
    deck.clock.advance(deck.scheduler.config.dispatch_timeout + 1)
    await deck.settle()
    return msg


async def due(deck: Deck, task_id: str) -> None:
    """Move the clock to the task's retry time and run the scheduler."""
    task = await deck.store.get_task(task_id)
    assert task.status == T.RETRYING and task.not_before is not None
    deck.clock.advance(task.not_before - deck.clock.now() + 0.01)
    await deck.settle()


async def test_lost_attempts_spend_no_attempt_of_the_budget(deck: Deck) -> None:
    """Three lost attempts in a row, more than ``max_attempts`` (2), leave the whole budget:
    the task still has both of its attempts, and a real failure after them is retried."""
    await register_agent(deck, in_flight=0)
    wf = await deck.submit(ONE_TASK)
    await deck.settle()
    for n in (1, 2, 3):
        await lose(deck, n)
        task = await deck.store.get_task(f"{wf}/a")
        assert task.status == T.RETRYING and task.error is not None
        assert (task.error.kind, task.attempts_used) == ("lost", 0)
        await due(deck, task.id)
    [(msg, _)] = await deck.take("echo")
    await deck.report(msg, "failed", error={"kind": "error", "message": "boom"})
    await deck.settle()
    task = await deck.store.get_task(f"{wf}/a")
    assert (task.status, task.attempts_used) == (T.RETRYING, 1)  # attempt 1 of 2 spent
    await due(deck, task.id)
    [(msg, _)] = await deck.take("echo")
    await deck.finish(msg, "done")
    await deck.settle()
    assert await deck.status(f"{wf}/a") == T.SUCCEEDED


async def test_a_task_lost_more_than_max_lost_times_fails(deck: Deck) -> None:
    """A poison task (every attempt lost) ends: the fourth lost attempt, past ``max_lost`` (3),
    fails it for good, with the reason in its history."""
    await register_agent(deck, in_flight=0)
    wf = await deck.submit(ONE_TASK)
    await deck.settle()
    for n in (1, 2, 3):
        await lose(deck, n)
        await due(deck, f"{wf}/a")
    await lose(deck, 4)
    task = await deck.store.get_task(f"{wf}/a")
    assert task.status == T.FAILED
    [last] = [e for e in await deck.store.task_events(task.id) if e.kind == "failed"]
    assert last.detail["reason"] == "lost 4 times, more than max_lost (3)"


async def test_lost_retries_back_off(deck: Deck) -> None:
    """The waits after lost attempts follow the policy's backoff (1 s doubling, no jitter)."""
    await register_agent(deck, in_flight=0)
    wf = await deck.submit(ONE_TASK)
    await deck.settle()
    delays = []
    for n in (1, 2, 3):
        await lose(deck, n)
        task = await deck.store.get_task(f"{wf}/a")
        assert task.not_before is not None
        delays.append(round(task.not_before - deck.clock.now(), 3))
        await due(deck, task.id)
    assert delays == [1.0, 2.0, 4.0]


async def test_an_operator_retry_gives_a_fresh_lost_budget(deck: Deck) -> None:
    """After a task failed on ``max_lost``, an operator's retry lets it be lost again as often."""
    from tests.unit.test_scheduler import run_command

    await register_agent(deck, in_flight=0)
    wf = await deck.submit(ONE_TASK)
    await deck.settle()
    for n in (1, 2, 3, 4):
        await lose(deck, n)
        if n < 4:
            await due(deck, f"{wf}/a")
    assert await deck.status(f"{wf}/a") == T.FAILED
    await run_command(deck, "retry", f"{wf}/a")
    await lose(deck, 5)
    task = await deck.store.get_task(f"{wf}/a")
    assert task.status == T.RETRYING and task.error is not None and task.error.kind == "lost"


async def test_lost_attempts_open_no_breaker(deck: Deck) -> None:
    """Lost attempts, however many, are not outcomes: the capability's breaker stays closed
    (an outage loses every attempt in flight, healthy agents' too)."""
    breakers = Breakers(
        deck.registry, deck.bus, deck.clock, default=BreakerPolicy(failure_threshold=2)
    )
    deck.scheduler.breakers = breakers
    await register_agent(deck, in_flight=0)
    wf = await deck.submit(ONE_TASK)
    await deck.settle()
    for n in (1, 2, 3):
        await lose(deck, n)
        await due(deck, f"{wf}/a")
    assert await deck.status(f"{wf}/a") == T.DISPATCHED
    assert await breakers.all() == []  # not even a count was written


async def test_a_lost_running_attempt_of_a_vanished_agent_spends_no_attempt(deck: Deck) -> None:
    """The other ways to be lost (past timeout + grace) follow the same rule."""
    wf = await deck.submit(A_TO_B)
    await deck.settle()
    [(a, _)] = await deck.take("echo")
    await deck.report(a, "started")
    await deck.settle()
    deck.clock.advance(60 + 6)
    await deck.settle()
    task = await deck.store.get_task(f"{wf}/a")
    assert task.status == T.RETRYING and task.error == ErrorInfo(
        "lost", "no result 60s (+5s grace) after it started"
    )
    assert (task.attempt, task.attempts_used) == (1, 0)


async def test_the_cancel_of_a_lost_attempt_names_that_attempt(deck: Deck) -> None:
    """The order that stops a lost attempt (its agent may be alive, cut off) names the attempt,
    so an agent already running the retry does not cancel that too (a cancelled attempt fails
    its task for good)."""
    await register_agent(deck, in_flight=0)
    wf = await deck.submit(ONE_TASK)
    await deck.settle()
    control = deck.bus.subscribe_control()
    await lose(deck, 1)
    order = decode(await asyncio.wait_for(anext(control), 2), Control)
    assert (order.action, order.target, order.attempt) == ("cancel", f"{wf}/a", 1)
