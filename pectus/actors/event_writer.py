"""EventWriter: the one actor that appends to the event store.

Everyone who records a fact sends an :class:`Append` and waits for its records: the reply comes
only after the transaction committed, so an engine's acknowledgement means "stored for good".
While one transaction runs, new requests queue; the next transaction takes all of them (group
commit), so a burst from many engines is written in few transactions.

Invariants: exactly one writer per store (this actor); a batch is appended in one transaction,
all or nothing; committed records are handed to ``on_commit`` in position order, before any later
batch is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import trio

from pectus.actors.core import Actor, Reply
from pectus.events.domain import DomainEvent
from pectus.events.store import EventStore, NewEvent, Record, SQLiteEventStore, backup

MAX_GROUP = 1000  # requests per transaction


@dataclass(frozen=True, slots=True)
class Append:
    events: Sequence[DomainEvent]
    reply: Reply[list[Record]]


@dataclass(frozen=True, slots=True)
class Backup:
    dest: Path
    reply: Reply[int]


class EventWriter(Actor[Append | Backup]):
    def __init__(self, store: EventStore, on_commit: Callable[[list[Record]], Awaitable[None]]) -> None:
        super().__init__("aggregator/writer", capacity=4096)
        self.store = store
        self.on_commit = on_commit
        self.transactions = 0

    async def append(self, events: Sequence[DomainEvent]) -> list[Record]:
        reply: Reply[list[Record]] = Reply()
        await self.send(Append(events, reply))
        return await reply.wait()

    async def run(self) -> None:
        async for message in self.inbox:
            if isinstance(message, Backup):
                await self._backup(message)
                continue
            group = [message]
            while len(group) < MAX_GROUP:
                try:
                    more = self.inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(more, Backup):
                    await self._write(group)
                    group = []
                    await self._backup(more)
                    continue
                group.append(more)
            if group:
                await self._write(group)

    async def _write(self, group: list[Append]) -> None:
        new = [NewEvent(event.stream, event.type, event.time, event.to_data())
               for request in group for event in request.events]
        try:
            records = await trio.to_thread.run_sync(self.store.append, new)
        except Exception as error:  # nothing was stored: every requester learns it
            for request in group:
                request.reply.fail(error)
            return
        self.transactions += 1
        await self.on_commit(records)
        start = 0
        for request in group:
            request.reply.set(records[start:start + len(request.events)])
            start += len(request.events)

    async def _backup(self, message: Backup) -> None:
        if not isinstance(self.store, SQLiteEventStore):
            message.reply.fail(ValueError("only a SQLite store can be backed up"))
            return
        try:
            message.reply.set(await trio.to_thread.run_sync(backup, self.store, message.dest))
        except Exception as error:
            message.reply.fail(error)
