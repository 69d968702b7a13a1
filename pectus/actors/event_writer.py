"""EventWriter: the one actor that appends to the event store.

Everyone who records a fact sends an :class:`Append` and waits for its records: the reply comes
only after the transaction committed, so an engine's acknowledgement means "stored for good".
While one transaction runs, new requests queue; the next transaction takes all of them (group
commit), so a burst from many engines is written in few transactions.

Invariants: exactly one writer actor per store; a batch is appended in one transaction, all or
nothing; every record of the store - also one appended by an operator's command such as
``pectus-aggregator engines enroll`` - is handed to ``on_commit`` once, in position order, before
any later batch is written. The writer reads such records when the store says another writer
appended (it then writes its batch again), when asked to (:meth:`EventWriter.catch_up`) and
after ``QUIET_CATCH_UP`` seconds without appends.
One request whose events cannot be stored (a value JSON cannot encode) fails alone: the others
of its group are written without it. Backups do not need the writer: SQLite's online backup
copies one committed snapshot of the live file (``pectus-aggregator backup``).

``failure`` tells whether the store is failing: the error of the last append the store could
not write (disk full, a read-only file, another writer), "" once appends have succeeded for
``FAILURE_HOLD`` seconds with none failing (a nearly full disk takes small batches and refuses
large ones: one small success must not make the store look healthy). A batch refused for its
content (a value JSON cannot encode) is the requester's problem, not the store's, and leaves it
as it was.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

import trio
from eventsourcing.persistence import PersistenceError

from pectus.actors.core import Actor, Reply
from pectus.events.domain import DomainEvent
from pectus.events.store import EventStore, Record, StoreConflict

log = logging.getLogger("pectus.aggregator.writer")

MAX_GROUP = 1000  # requests per transaction
QUIET_CATCH_UP = 5.0  # seconds without appends after which records of other processes are read
FAILURE_HOLD = 10.0  # seconds of successful appends before a failing store counts as healthy again
STORE_FAILURES = (PersistenceError, sqlite3.Error, OSError, StoreConflict)


@dataclass(frozen=True, slots=True)
class Append:
    events: Sequence[DomainEvent]
    reply: Reply[list[Record]]


@dataclass(frozen=True, slots=True)
class CatchUp:
    reply: Reply[list[Record]]


class EventWriter(Actor[Append | CatchUp]):
    def __init__(self, store: EventStore, on_commit: Callable[[list[Record]], Awaitable[None]]) -> None:
        super().__init__("aggregator/writer", capacity=4096)
        self.store = store
        self.on_commit = on_commit
        self.transactions = 0
        self.failure = ""
        self._failed_at = 0.0  # trio time of the last failed append
        self.position: int | None = None  # the last record handed to on_commit

    async def append(self, events: Sequence[DomainEvent]) -> list[Record]:
        reply: Reply[list[Record]] = Reply()
        await self.send(Append(events, reply))
        return await reply.wait()

    async def catch_up(self) -> list[Record]:
        """Hand on what other processes appended since; returns those records."""
        reply: Reply[list[Record]] = Reply()
        await self.send(CatchUp(reply))
        return await reply.wait()

    async def run(self) -> None:
        if self.position is None:
            self.position = self.store.last_position()  # the views were rebuilt up to here
        while True:
            with trio.move_on_after(QUIET_CATCH_UP) as quiet:
                try:
                    message = await self.inbox.receive()
                except trio.EndOfChannel:
                    return
            if quiet.cancelled_caught:  # an operator's enrol or revoke takes effect within seconds
                await self._foreign()
                continue
            if isinstance(message, CatchUp):
                message.reply.set(await self._foreign())
                continue
            group = [message]
            while len(group) < MAX_GROUP:
                try:
                    item = self.inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(item, CatchUp):
                    item.reply.set(await self._foreign())
                else:
                    group.append(item)
            await self._write(group)

    async def _foreign(self) -> list[Record]:
        """Records other processes appended after ``position``, handed on like our own."""
        records = await trio.to_thread.run_sync(self.store.read, self.position or 0)
        if records:
            log.info("%d event(s) appended by another process (from position %d)", len(records),
                     records[0].position)
            await trio.to_thread.run_sync(self.store.refresh)
            await self._commit(records)
        return records

    async def _write(self, group: list[Append], retry: bool = True) -> None:
        new = [event.stored() for request in group for event in request.events]
        try:
            records = await trio.to_thread.run_sync(self.store.append, new)
        except StoreConflict:
            if retry and await self._foreign():
                return await self._write(group, retry=False)  # on top of the other writer's events
            self._failed(group, StoreConflict("another writer keeps appending to the store"))
            return
        except Exception as error:  # nothing was stored
            if isinstance(error, STORE_FAILURES) or len(group) == 1:
                self._failed(group, error)
            else:  # one request's events cannot be stored: find it, and write the others
                for request in group:
                    await self._write([request])
            return
        if self.failure and trio.current_time() - self._failed_at >= FAILURE_HOLD:
            log.warning("the event store writes again")
            self.failure = ""
        self.transactions += 1
        await self._commit(records)
        start = 0
        for request in group:
            request.reply.set(records[start:start + len(request.events)])
            start += len(request.events)

    def _failed(self, group: list[Append], error: Exception) -> None:
        """Every requester of the group learns that nothing of theirs was stored."""
        if isinstance(error, STORE_FAILURES):
            if not self.failure:  # once when it starts, not once per batch
                log.error("the event store cannot write: %s", error)
            self.failure = str(error) or type(error).__name__
            self._failed_at = trio.current_time()
        for request in group:
            request.reply.fail(error)

    async def _commit(self, records: list[Record]) -> None:
        self.position = records[-1].position
        await self.on_commit(records)
