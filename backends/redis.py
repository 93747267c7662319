"""``RedisRegistry``: agents, breakers and the leader lease in Redis (``redis://host:6379/0``,
or the primary Redis Sentinel names: ``redis+sentinel://h1:26379,h2:26379/mymaster``).

Redis holds what may be lost and rebuilt: an agent that finds its record gone registers
again on its next heartbeat, a lost breaker starts closed, a lost lease is taken again with a
larger token. Nothing here ever touches the Store.

Keys, all under the URL's ``prefix`` (default ``agentdeck``) so several deployments or test
runs can share one database::

    {prefix}:agent:{id}            hash  one agent's record and its ``expires_at``
    {prefix}:agents                set   ids of registered agents (cleaned lazily)
    {prefix}:capability:{name}     set   ids of agents serving a capability (cleaned lazily)
    {prefix}:breaker:{name}        hash  state, data (JSON) and version of one breaker
    {prefix}:breakers              set   names of breakers with shared state
    {prefix}:lease:{name}          hash  holder, token and expires_at of a lease
    {prefix}:lease-token:{name}    str   the last fencing token handed out; never deleted

Expiry follows the injected clock, as in every registry backend: a record carries
``expires_at = clock.now() + ttl`` and readers compare it with their own ``clock.now()``.
Nodes must therefore keep their clocks in step (NTP), well within a lease ttl. Redis's own
key TTLs (the ttl plus :data:`GC_MARGIN`) only collect the garbage of processes that died;
they never fire before the logical expiry, so a record cannot vanish under a live holder.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self, TypeVar

import tenacity
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentdeck.backends.memory import check_ttl
from agentdeck.backends.redis_servers import ServerStates
from agentdeck.backends.redis_url import (
    DEFAULT_PREFIX,
    check_prefix,
    close_client,
    open_client,
    server_states,
    split_registry_url,
    where,
)
from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.models import AgentRecord, AgentState
from agentdeck.core.ports import BreakerRecord, Lease

T = TypeVar("T")

#: Seconds a record outlives its logical expiry in Redis before Redis deletes it. Generous
#: because the logical expiry, not this, decides liveness; it only has to exceed clock skew.
GC_MARGIN = 60.0

#: Errors that mean "Redis cannot serve us right now": retryable, reported as BackendUnavailable.
#: ReadOnlyError is a replica answering during a failover.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)
#: Error replies that say the same: a primary cut off from its replicas refuses writes
#: (NOREPLICAS, ``min-replicas-to-write``), a replica lost its primary (MASTERDOWN), a server
#: still loading its data (LOADING). Before, NOREPLICAS escaped as a ResponseError and killed
#: a daemon whose host was cut off (found by tests/e2e/test_cluster_faults.py).
_UNAVAILABLE_REPLIES = ("NOREPLICAS", "MASTERDOWN", "LOADING")


def _unavailable_reply(exc: BaseException) -> bool:
    """True for an error reply that means Redis cannot serve us right now."""
    return isinstance(exc, ResponseError) and str(exc).startswith(_UNAVAILABLE_REPLIES)


# Refresh a live agent record; 0 when it is missing or expired by the caller's clock.
# KEYS: agent hash. ARGV: now, expires_at, in_flight, state, succeeded, failed, gc_ms.
_HEARTBEAT = """
local expires_at = redis.call('HGET', KEYS[1], 'expires_at')
if not expires_at or tonumber(expires_at) < tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'last_seen', ARGV[1], 'expires_at', ARGV[2],
  'in_flight', ARGV[3], 'state', ARGV[4], 'succeeded', ARGV[5], 'failed', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
"""

# Drop ids from an index whose agent hash is gone or no longer lists the capability. The check
# runs here, not in Python, so an agent that registers meanwhile is never dropped.
# KEYS: the index set, then the agent hashes. ARGV: capability ('' for the all-agents
# index), then the ids in the order of their hashes.
_CLEAN_INDEX = """
local removed = 0
for i = 2, #KEYS do
  local caps = redis.call('HGET', KEYS[i], 'capabilities')
  local keep = false
  if caps then
    if ARGV[1] == '' then
      keep = true
    else
      for _, cap in ipairs(cjson.decode(caps)) do
        if cap == ARGV[1] then keep = true break end
      end
    end
  end
  if not keep then removed = removed + redis.call('SREM', KEYS[1], ARGV[i]) end
end
return removed
"""

# Compare-and-set a breaker on its version. KEYS: breaker hash, breakers set.
# ARGV: expected version ('' = must not exist), state, data, new version, name.
_PUT_BREAKER = """
local version = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '' then
  if version then return 0 end
elseif version ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'data', ARGV[3], 'version', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
return 1
"""

# Take, extend or refuse a lease (the rule of backends.memory.claim_lease, done atomically).
# KEYS: lease hash, token counter. ARGV: holder, now, expires_at, token floor, gc_ms.
# Returns {token, expires_at} as strings, or nil when another holder has it.
#
# Why the floor: the counter is the only memory of past tokens, and Redis may lose it (a
# restart without persistence, FLUSHALL, a failover to a replica that missed the INCR). A
# counter starting again at 1 would hand the new leader a token smaller than the deposed
# leader's, and the Store would refuse every write of the new leader. So a new token is
# max(counter + 1, now in microseconds). Past tokens are at most a few above the time they
# were issued in microseconds (one new token per takeover, and a takeover waits for the
# previous lease to expire, seconds later), so a token taken after a loss still exceeds them
# all, provided the nodes' clocks agree within the lease ttl. Microseconds keep tokens exact
# in Lua's doubles (< 2**53) until the year 2255. Numbers go back to Redis as the strings we
# were given or read: Lua would print a 16-digit number in exponent form.
_ACQUIRE_LEASE = """
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder then
  local expires_at = redis.call('HGET', KEYS[1], 'expires_at')
  if tonumber(ARGV[2]) <= tonumber(expires_at) then
    if holder ~= ARGV[1] then return nil end
    redis.call('HSET', KEYS[1], 'expires_at', ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    return {redis.call('HGET', KEYS[1], 'token'), ARGV[3]}
  end
end
local token = redis.call('INCR', KEYS[2])
if token < tonumber(ARGV[4]) then
  redis.call('SET', KEYS[2], ARGV[4])
end
local token_text = redis.call('GET', KEYS[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token_text, 'expires_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {token_text, ARGV[3]}
"""

# Delete a lease only for its holder. KEYS: lease hash. ARGV: holder.
_RELEASE_LEASE = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisRegistry:
    """The registry (:class:`core.ports.Registry`) in Redis, shared by every node.

    Every read-modify-write is one Lua script or one MULTI transaction, so nodes never
    interleave inside an update. A connection lost during a call is retried briefly by
    redis-py, then raised as :class:`BackendUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock,
        prefix: str = DEFAULT_PREFIX,
        connect_attempts: int = 5,
        connect_wait: float = 0.2,
    ) -> None:
        """``url`` is a redis-py URL without ``prefix``; see :meth:`from_url` for checks."""
        check_prefix(prefix)
        if connect_attempts < 1:
            raise ValueError(f"connect_attempts must be at least 1, got {connect_attempts!r}")
        self._url = url  # may hold a password: never put it in a message
        self._clock = clock
        self.prefix = prefix
        self.where = where(url)
        """``host:port/db`` or ``sentinel h1:26379,.../service/db``: how messages name this
        Redis (no credentials)."""
        self._connect_attempts = connect_attempts
        self._connect_wait = connect_wait
        self._redis: Redis | None = None
        self._sentinel: Sentinel | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._servers: ServerStates | None = None

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock, connect_attempts: int = 5, connect_wait: float = 0.2
    ) -> Self:
        """A registry for ``redis://[user:password@]host[:port][/db][?prefix=name&...]``.

        ``rediss://`` uses TLS. Besides ``prefix`` the query may carry the redis-py options in
        :data:`REDIS_OPTIONS`. Raises ConfigError naming the bad part.
        """
        redis_url, prefix = split_registry_url(url)
        return cls(
            redis_url,
            clock=clock,
            prefix=prefix,
            connect_attempts=connect_attempts,
            connect_wait=connect_wait,
        )

    async def start(self) -> None:
        """Connect and check that Redis answers, retrying a few times with backoff.

        Raises BackendUnavailable naming ``host:port/db`` when it still cannot.
        """
        if self._redis is not None:
            return
        client, sentinel = open_client(
            self._url,
            decode_responses=True,
            # Redis answers in well under a millisecond; a call stuck for seconds must fail
            # fast, within a lease ttl (10 s by default, renewed every third of it). The URL's
            # socket_timeout / socket_connect_timeout options override these.
            socket_connect_timeout=2.0,
            socket_timeout=2.0,
            health_check_interval=30,
            # One quick retry inside redis-py rides over a dropped pooled connection (Redis
            # restarted); anything longer surfaces as BackendUnavailable to the caller.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        )
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._connect_attempts),
            wait=tenacity.wait_exponential(multiplier=self._connect_wait, max=5.0),
            # Wrong credentials will not get better by waiting.
            retry=tenacity.retry_if_exception_type(_UNAVAILABLE)
            & tenacity.retry_if_not_exception_type((AuthenticationError, AuthorizationError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await _done(client.ping())
        except (AuthenticationError, AuthorizationError) as exc:
            await close_client(client, sentinel)
            raise BackendUnavailable(f"Redis at {self.where} refused the login: {exc}") from exc
        except _UNAVAILABLE as exc:
            await close_client(client, sentinel)
            raise BackendUnavailable(
                f"cannot reach Redis at {self.where} after {self._connect_attempts} attempt(s): "
                f"{exc}"
            ) from exc
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("heartbeat", _HEARTBEAT),
                ("clean_index", _CLEAN_INDEX),
                ("put_breaker", _PUT_BREAKER),
                ("acquire_lease", _ACQUIRE_LEASE),
                ("release_lease", _RELEASE_LEASE),
            )
        }
        self._redis, self._sentinel = client, sentinel
        self._servers = server_states(self._url, self._clock, sentinel)

    async def close(self) -> None:
        """Disconnect (safe to call twice)."""
        client, self._redis = self._redis, None
        if client is not None:
            await close_client(client, self._sentinel)

    # -- reports

    @property
    def server_states(self) -> dict[str, str]:
        """Each Redis server (``host:port``) as last asked by :meth:`probe_servers`:
        ``primary``, ``replica``, ``down``, ``connected`` (a lone server) or ``?``; empty
        before :meth:`start`. No I/O."""
        return dict(self._servers.states) if self._servers is not None else {}

    async def probe_servers(self) -> dict[str, str]:
        """Ask the sentinels which server is the primary now (a lone server: PING it), at
        most every few seconds of the registry's clock (``redis_servers.INTERVAL``; a call
        sooner returns the last answer), bounded in time; never raises. For reports only."""
        if self._servers is None:
            return {}
        return dict(await self._servers.refresh(self._redis))

    # -- agents

    async def register(self, agent: AgentRecord, ttl: float) -> None:
        """Store the record (replacing any with the same id) and index it, in one transaction."""
        check_ttl(ttl)
        redis = self._client()
        now = self._clock.now()
        key = self._agent_key(agent.id)
        with self._guard("register"):
            async with redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)  # no field of an older record may survive
                pipe.hset(key, mapping=_agent_fields(agent, last_seen=now, expires_at=now + ttl))
                pipe.pexpire(key, _gc_ms(ttl))
                pipe.sadd(self._key("agents"), agent.id)
                for capability in agent.capabilities:
                    pipe.sadd(self._capability_key(capability), agent.id)
                await pipe.execute()

    async def heartbeat(
        self,
        agent_id: str,
        ttl: float,
        *,
        in_flight: int,
        state: AgentState,
        succeeded: int = 0,
        failed: int = 0,
    ) -> bool:
        """Refresh a live record atomically; False if it expired, was lost or never existed."""
        check_ttl(ttl)
        now = self._clock.now()
        args: list[str | int] = [repr(now), repr(now + ttl), in_flight, AgentState(state).value]
        with self._guard("heartbeat"):
            refreshed = await self._script("heartbeat")(
                keys=[self._agent_key(agent_id)], args=[*args, succeeded, failed, _gc_ms(ttl)]
            )
        return bool(refreshed)

    async def deregister(self, agent_id: str) -> None:
        """Remove the record and its index entries (no error if absent)."""
        redis = self._client()
        key = self._agent_key(agent_id)
        with self._guard("deregister"):
            capabilities = await _done(redis.hget(key, "capabilities"))
            async with redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.srem(self._key("agents"), agent_id)
                for capability in json.loads(capabilities) if capabilities else ():
                    pipe.srem(self._capability_key(capability), agent_id)
                await pipe.execute()

    async def agents(self, capability: str | None = None) -> list[AgentRecord]:
        """Live agents (by this registry's clock), by name then id.

        Index entries whose record Redis has collected are removed on the way.
        """
        redis = self._client()
        index = self._key("agents") if capability is None else self._capability_key(capability)
        with self._guard("list agents"):
            ids = sorted(await _done(redis.smembers(index)))
            rows = await self._hgetall_many([self._agent_key(i) for i in ids])
            stale = [
                agent_id
                for agent_id, row in zip(ids, rows, strict=True)
                if not row or (capability is not None and capability not in _capabilities(row))
            ]
            if stale:
                # A read-only ACL user (a viewer) may not tidy the index: the listing below
                # skips the stale entries all the same, and a node tidies them.
                with contextlib.suppress(NoPermissionError):
                    await self._script("clean_index")(
                        keys=[index, *(self._agent_key(i) for i in stale)],
                        args=[capability or "", *stale],
                    )
        now = self._clock.now()
        records = [
            _agent_record(row)
            for row in rows
            if row
            and now <= float(row["expires_at"])
            and (capability is None or capability in _capabilities(row))
        ]
        return sorted(records, key=lambda r: (r.name, r.id))

    # -- breakers

    async def get_breaker(self, name: str) -> BreakerRecord | None:
        """The breaker's shared state, if any."""
        with self._guard("read breaker"):
            row = await _done(self._client().hgetall(self._breaker_key(name)))
        return _breaker(name, row) if row else None

    async def put_breaker(self, record: BreakerRecord, expected_version: int | None) -> bool:
        """Compare-and-set on the stored version (None: must not exist), atomically."""
        expected = "" if expected_version is None else str(int(expected_version))
        with self._guard("write breaker"):
            written = await self._script("put_breaker")(
                keys=[self._breaker_key(record.name), self._key("breakers")],
                args=[
                    expected,
                    record.state,
                    json.dumps(dict(record.data)),
                    str(int(record.version)),
                    record.name,
                ],
            )
        return bool(written)

    async def breakers(self) -> list[BreakerRecord]:
        """Every breaker with shared state, by name."""
        with self._guard("list breakers"):
            names = sorted(await _done(self._client().smembers(self._key("breakers"))))
            rows = await self._hgetall_many([self._breaker_key(n) for n in names])
        return [_breaker(name, row) for name, row in zip(names, rows, strict=True) if row]

    # -- leases

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease if free or expired (a larger token), extend it for its holder (same
        token), or None if another holder has it. One atomic script."""
        check_ttl(ttl)
        now = self._clock.now()
        with self._guard("acquire lease"):
            granted = await self._script("acquire_lease")(
                keys=[self._lease_key(name), self._key("lease-token", name)],
                args=[holder, repr(now), repr(now + ttl), str(math.floor(now * 1e6)), _gc_ms(ttl)],
            )
        if granted is None:
            return None
        token, expires_at = granted
        return Lease(name=name, holder=holder, token=int(token), expires_at=float(expires_at))

    async def release_lease(self, name: str, holder: str) -> None:
        """Drop the lease if ``holder`` holds it; the token counter stays, so tokens grow."""
        with self._guard("release lease"):
            await self._script("release_lease")(keys=[self._lease_key(name)], args=[holder])

    async def get_lease(self, name: str) -> Lease | None:
        """The unexpired lease (by this registry's clock), if any."""
        with self._guard("read lease"):
            row = await _done(self._client().hgetall(self._lease_key(name)))
        if not row or self._clock.now() > float(row["expires_at"]):
            return None
        return Lease(
            name=name,
            holder=row["holder"],
            token=int(row["token"]),
            expires_at=float(row["expires_at"]),
        )

    # -- plumbing

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _agent_key(self, agent_id: str) -> str:
        return self._key("agent", agent_id)

    def _capability_key(self, capability: str) -> str:
        return self._key("capability", capability)

    def _breaker_key(self, name: str) -> str:
        return self._key("breaker", name)

    def _lease_key(self, name: str) -> str:
        return self._key("lease", name)

    def _client(self) -> Redis:
        if self._redis is None:
            raise BackendUnavailable(f"the Redis registry at {self.where} is not started")
        return self._redis

    def _script(self, name: str) -> AsyncScript:
        self._client()  # raises if not started
        return self._scripts[name]

    async def _hgetall_many(self, keys: Sequence[str]) -> list[dict[str, str]]:
        """HGETALL of each key in one round trip ({} for a missing key)."""
        if not keys:
            return []
        async with self._client().pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            return list(await pipe.execute())

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn Redis being unreachable into BackendUnavailable naming host:port/db."""
        try:
            yield
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"Redis at {self.where}: {action} failed: {exc}") from exc
        except ResponseError as exc:
            if not _unavailable_reply(exc):
                raise
            raise BackendUnavailable(f"Redis at {self.where}: {action} failed: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"<RedisRegistry {self.where} prefix={self.prefix!r}"
            f" connected={self._redis is not None}>"
        )


async def _done(value: Awaitable[T] | T) -> T:
    """Await a redis-py command. redis-py types each command for its sync and async clients
    at once (a value or an awaitable); on the async client it is always an awaitable."""
    return await value if inspect.isawaitable(value) else value


def _gc_ms(ttl: float) -> int:
    """Milliseconds Redis keeps a record of ``ttl`` seconds before collecting it."""
    return math.ceil((ttl + GC_MARGIN) * 1000)


def _agent_fields(agent: AgentRecord, *, last_seen: float, expires_at: float) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "capabilities": json.dumps(list(agent.capabilities)),
        "concurrency": agent.concurrency,
        "state": AgentState(agent.state).value,
        "started_at": repr(agent.started_at),
        "last_seen": repr(last_seen),
        "in_flight": agent.in_flight,
        "host": agent.host,
        "pid": agent.pid,
        "succeeded": agent.succeeded,
        "failed": agent.failed,
        "expires_at": repr(expires_at),
    }


def _capabilities(row: Mapping[str, str]) -> list[str]:
    return list(json.loads(row["capabilities"]))


def _agent_record(row: Mapping[str, str]) -> AgentRecord:
    return AgentRecord(
        id=row["id"],
        name=row["name"],
        capabilities=tuple(_capabilities(row)),
        concurrency=int(row["concurrency"]),
        state=AgentState(row["state"]),
        started_at=float(row["started_at"]),
        last_seen=float(row["last_seen"]),
        in_flight=int(row["in_flight"]),
        host=row["host"],
        pid=int(row["pid"]),
        succeeded=int(row["succeeded"]),
        failed=int(row["failed"]),
    )


def _breaker(name: str, row: Mapping[str, str]) -> BreakerRecord:
    return BreakerRecord(
        name=name, state=row["state"], data=json.loads(row["data"]), version=int(row["version"])
    )
