"""EventWriter: the one actor that appends to the event store.

Everyone who records a fact sends an :class:`Append` and waits for its records: the reply comes
only after the transaction committed, so an engine's acknowledgement means "stored for good".
While one transaction runs, new requests queue; the next transaction takes all of them (group
commit), so a burst from many engines is written in few transactions.

Invariants: exactly one writer per store (this actor); a batch is appended in one transaction,
all or nothing; committed records are handed to ``on_commit`` in position order, before any later
batch is written. Backups do not need the writer: SQLite's online backup copies one committed
snapshot of the live file (``pectus-aggregator backup``).

``failure`` tells whether the store is failing: the error of the last append the store could
not write (disk full, a read-only file, another writer), "" once an append succeeds again. A
batch refused for its content (a value JSON cannot encode) is the requester's problem, not the
store's, and leaves it as it was.
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
from pectus.events.store import EventStore, NewEvent, Record, StoreConflict

log = logging.getLogger("pectus.aggregator.writer")

MAX_GROUP = 1000  # requests per transaction
STORE_FAILURES = (PersistenceError, sqlite3.Error, OSError, StoreConflict)


@dataclass(frozen=True, slots=True)
class Append:
    events: Sequence[DomainEvent]
    reply: Reply[list[Record]]


class EventWriter(Actor[Append]):
    def __init__(self, store: EventStore, on_commit: Callable[[list[Record]], Awaitable[None]]) -> None:
        super().__init__("aggregator/writer", capacity=4096)
        self.store = store
        self.on_commit = on_commit
        self.transactions = 0
        self.failure = ""

    async def append(self, events: Sequence[DomainEvent]) -> list[Record]:
        reply: Reply[list[Record]] = Reply()
        await self.send(Append(events, reply))
        return await reply.wait()

    async def run(self) -> None:
        async for message in self.inbox:
            group = [message]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self.inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._write(group)

    async def _write(self, group: list[Append]) -> None:
        new = [NewEvent(event.stream, event.type, event.time, event.to_data())
               for request in group for event in request.events]
        try:
            records = await trio.to_thread.run_sync(self.store.append, new)
        except Exception as error:  # nothing was stored: every requester learns it
            if isinstance(error, STORE_FAILURES):
                if not self.failure:  # once when it starts, not once per batch
                    log.error("the event store cannot write: %s", error)
                self.failure = str(error) or type(error).__name__
            for request in group:
                request.reply.fail(error)
            return
        if self.failure:
            log.warning("the event store writes again")
            self.failure = ""
        self.transactions += 1
        await self.on_commit(records)
        start = 0
        for request in group:
            request.reply.set(records[start:start + len(request.events)])
            start += len(request.events)
