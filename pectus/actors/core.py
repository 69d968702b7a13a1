"""A small actor toolkit on Trio.

An *actor* is a long-lived task that owns its state and talks to others only through messages:
its mailbox is a bounded Trio memory channel, so a slow actor slows its senders (back-pressure)
instead of growing a queue without end. Nothing is shared, nothing is locked.

* :class:`Actor` - subclass it and write ``async def run(self)``, which reads ``self.inbox``.
  Others call :meth:`Actor.send` (waits when the mailbox is full) or :meth:`Actor.offer`
  (never waits; False when full).
* :func:`ask` - request/reply with a deadline: the message carries a :class:`Reply` that the
  actor fills; the asker gets the value, the actor's exception, or :class:`ActorTimeout`.
* :func:`supervise` - runs actors in one nursery. An actor that crashes is reported with its
  path (``engine/hardware/opcua``) and restarted after a back-off, as its :class:`Restart` policy
  allows; when the policy is exhausted the crash propagates, which cancels every actor and brings
  the process down cleanly. A crash is never swallowed.

Invariants: cancellation reaches every actor (they all live in the supervisor's nursery); an
actor object, its mailbox and its state survive its restarts - only ``run`` is called again.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

import trio

M = TypeVar("M")
T = TypeVar("T")

log = logging.getLogger("pectus.actors")


class ActorTimeout(Exception):
    """An actor did not answer in time."""


class ActorCrashed(Exception):
    """An actor failed more often than its restart policy allows."""

    def __init__(self, path: str, crashes: int):
        super().__init__(f"actor {path} crashed {crashes} time(s); giving up")
        self.path = path


class Actor(Generic[M]):
    """Base class. ``path`` names the actor in logs and crash reports."""

    def __init__(self, path: str, capacity: int = 64) -> None:
        self.path = path
        self._send, self.inbox = trio.open_memory_channel[M](capacity)

    async def send(self, message: M) -> None:
        await self._send.send(message)

    def offer(self, message: M) -> bool:
        """Deliver without waiting; False when the mailbox is full."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    async def run(self) -> None:
        raise NotImplementedError


class Reply(Generic[T]):
    """A one-shot answer slot carried by a request message."""

    __slots__ = ("_event", "_value", "_error")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    async def wait(self) -> T:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value


async def ask(actor: Actor[M], make: Callable[[Reply[T]], M], timeout: float) -> T:
    """Send ``make(reply)`` to ``actor`` and wait for the reply, at most ``timeout`` seconds."""
    reply: Reply[T] = Reply()
    with trio.move_on_after(timeout) as scope:
        await actor.send(make(reply))
        return await reply.wait()
    assert scope.cancelled_caught
    raise ActorTimeout(f"{actor.path} did not answer within {timeout:g} s")


@dataclass(frozen=True, slots=True)
class Restart:
    """How often an actor may crash and be restarted before its crash brings the process down.

    ``limit`` crashes within ``window`` seconds are tolerated (``math.inf`` for always);
    restarts wait ``backoff`` seconds, doubling up to ``max_backoff``.
    """

    limit: float = 3
    window: float = 60.0
    backoff: float = 0.5
    max_backoff: float = 30.0


NEVER = Restart(limit=0)
ALWAYS = Restart(limit=math.inf)


class RateLimitedLog:
    """Log a recurring condition at most once per ``interval`` seconds, with a count of the rest.

    A broken connection or a slow scan must not write a line every tick.
    """

    __slots__ = ("logger", "interval", "_last", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last = -math.inf
        self._suppressed = 0

    def __call__(self, level: int, message: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self._last < self.interval:
            self._suppressed += 1
            return False
        if self._suppressed:
            message += f" ({self._suppressed} similar message(s) suppressed)"
        self.logger.log(level, message)
        self._last = now
        self._suppressed = 0
        return True


def first_failure(error: BaseException) -> BaseException:
    """The first failure inside a (possibly nested) exception group, or ``error`` itself: of a
    nursery's group, the one that says what happened."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def supervise(actors: list[tuple[Actor[Any], Restart]],
                    on_crash: Callable[[str, BaseException], None] | None = None) -> None:
    """Run ``actors`` until all return; restart crashed ones as their policy says.

    Raises :class:`ActorCrashed` (not an exception group) when an actor's policy is exhausted.
    """
    try:
        async with trio.open_nursery() as nursery:
            for actor, policy in actors:
                nursery.start_soon(_keep_running, actor, policy, on_crash, name=actor.path)
    except BaseExceptionGroup as group:
        crashed = group.subgroup(ActorCrashed)
        if crashed is None:
            raise
        while isinstance(crashed, BaseExceptionGroup):
            crashed = crashed.exceptions[0]
        raise crashed from group


async def _keep_running(actor: Actor[Any], policy: Restart,
                        on_crash: Callable[[str, BaseException], None] | None) -> None:
    crashes: list[float] = []
    backoff = policy.backoff
    while True:
        try:
            await actor.run()
            return
        except Exception as error:
            now = trio.current_time()
            crashes = [t for t in crashes if now - t < policy.window] + [now]
            log.error("actor %s crashed: %s", actor.path, error, exc_info=error)
            if on_crash is not None:
                on_crash(actor.path, error)
            if len(crashes) > policy.limit:
                raise ActorCrashed(actor.path, len(crashes)) from error
            log.warning("restarting actor %s in %g s", actor.path, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, policy.max_backoff)
