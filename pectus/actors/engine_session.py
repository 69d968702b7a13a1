"""EngineSession: one connected engine, from handshake to disconnect.

The session checks the handshake (protocol version, secret, identity), tells the engine the last
record the store has from it, and then, for every frame:

* ``records``: drops the ones already stored (``seq <= last_seq``: a resend after a cut), refuses a
  gap (records must follow each other; the engine resends after reconnecting), turns the rest into
  domain events, has them appended by the EventWriter and acknowledges them once committed;
* ``live``: the latest tag values go to the browsers at once, without being stored;
* ``reply``: answers a user's request that the session forwarded.

A malformed, oversized or unknown frame is refused with a logged reason and the session is
closed cleanly (the engine reconnects and resends); nothing is stored from it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import trio

from pectus.actors.event_writer import EventWriter
from pectus.actors.ui_hub import UiHub
from pectus.events import domain as d
from pectus.events import protocol as p
from pectus.projections.views import Delta

log = logging.getLogger("pectus.aggregator.engines")

ENGINE_ID = re.compile(r"^[\w.\-() ]{1,200}$")
REQUEST_TIMEOUT = 5.0
SILENCE = 15.0  # engines send a heartbeat every 5 s: three missed beats mean the link is dead


class SessionClosed(Exception):
    """The engine's session ended; the message says why."""


@dataclass
class UnitMemory:
    """What the aggregator keeps in memory about a unit between records (rebuilt from the log)."""

    last_seq: int = 0
    state: tuple[str | None, str | None] = (None, None)
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    authors: dict[int, d.Actor] = field(default_factory=dict)  # method version -> who saved it


class Engines:
    """The connected engines and each unit's memory; shared by the sessions and the web backend."""

    def __init__(self, writer: EventWriter, hub: UiHub, secret: str = "", sign_in: bool = False) -> None:
        self.writer = writer
        self.hub = hub
        self.secret = secret
        self.sign_in = sign_in
        self.sessions: dict[str, EngineSession] = {}
        self.units: dict[str, UnitMemory] = {}

    def memory(self, unit: str) -> UnitMemory:
        return self.units.setdefault(unit, UnitMemory())

    def remember(self, type_name: str, data: dict[str, Any]) -> None:
        """Follow the log (at startup and after each commit): the last seq and state per unit."""
        memory = self.memory(data["unit"])
        if data.get("seq"):
            memory.last_seq = max(memory.last_seq, data["seq"])
        if type_name == "StateChanged":
            memory.state = (data["system_state"], data["method_status"])


class EngineSession:
    def __init__(self, engines: Engines, send: Callable[[str], Awaitable[None]],
                 receive: Callable[[], Awaitable[str | bytes]]) -> None:
        self.engines = engines
        self._send = send
        self._receive = receive
        self.unit = ""
        self._pending: dict[int, trio.MemorySendChannel[p.Reply]] = {}
        self._next_request = 1
        self._scope = trio.CancelScope()

    async def serve(self, now: Callable[[], float]) -> None:
        """Run the session until the engine goes away; raises nothing for a bad engine."""
        engines = self.engines
        try:
            hello = await self._handshake()
        except SessionClosed as reason:
            log.warning("engine handshake refused: %s", reason)
            return
        self.unit = unit = hello.engine_id
        memory = engines.memory(unit)
        previous = engines.sessions.get(unit)
        if previous is not None:  # the engine restarted before its old link timed out: the new one wins
            log.warning("engine %s connected again; closing its previous session", unit)
            previous.close()
        engines.sessions[unit] = self
        actor = d.Actor.engine(unit)
        reason = "the aggregator is stopping"
        try:
            await engines.writer.append([
                d.EngineRegistered(time=now(), unit=unit, actor=actor, computer_name=hello.computer_name,
                                   uod_name=hello.uod_name, engine_version=hello.engine_version,
                                   protocol=hello.protocol),
                d.EngineConnected(time=now(), unit=unit, actor=actor)])
            await self._send(p.encode(p.Welcome(p.PROTOCOL_VERSION, unit, memory.last_seq)))
            log.info("engine %s connected; it resumes after record %d", unit, memory.last_seq)
            with self._scope:
                reason = await self._follow(memory, actor)
            if self._scope.cancelled_caught:
                reason = "replaced by a new connection of the same engine"
        except (SessionClosed, p.ProtocolError) as error:
            reason = str(error)
            log.warning("engine %s: %s; closing its session", unit, reason)
        finally:
            if engines.sessions.get(unit) is self:
                del engines.sessions[unit]
            for channel in self._pending.values():
                channel.close()
            # Shielded, so a cancelled session still records that it ended; bounded, for a stopping writer.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
                await engines.writer.append([d.EngineDisconnected(time=now(), unit=unit, actor=actor,
                                                                  reason=reason)])

    async def _handshake(self) -> p.Hello:
        with trio.move_on_after(10) as scope:
            frame = await self._receive()
        if scope.cancelled_caught:
            raise SessionClosed("no hello within 10 s")
        try:
            hello = p.decode(frame, allowed=frozenset({"hello"}))
        except p.ProtocolError as error:
            await self._refuse(f"expected a hello: {error}")
        if hello.protocol != p.PROTOCOL_VERSION:
            await self._refuse(f"engine speaks protocol version {hello.protocol}; this aggregator speaks "
                               f"version {p.PROTOCOL_VERSION}: upgrade the older of the two")
        if hello.secret != self.engines.secret:
            await self._refuse("the secret does not match the aggregator's")
        if not ENGINE_ID.match(hello.engine_id):
            await self._refuse(f"engine id {hello.engine_id!r} is not valid")
        return hello

    def close(self) -> None:
        self._scope.cancel()

    async def _refuse(self, reason: str) -> None:
        await self._send(p.encode(p.Refused(reason)))
        raise SessionClosed(reason)

    async def _follow(self, memory: UnitMemory, actor: d.Actor) -> str:
        while True:
            try:
                with trio.fail_after(SILENCE):
                    frame = await self._receive()
            except trio.TooSlowError:
                return f"no message for {SILENCE:g} s"
            except (ConnectionError, trio.ClosedResourceError, trio.BrokenResourceError):
                return "connection closed"
            if frame is None:
                return "connection closed"
            message = p.decode(frame, allowed=p.FROM_ENGINE)
            if isinstance(message, p.Records):
                await self._store(message.records, memory, actor)
            elif isinstance(message, p.Live):
                for value in message.values:
                    if isinstance(value, dict) and isinstance(value.get("name"), str):
                        memory.live[value["name"]] = value
                self.engines.hub.publish([Delta(self.unit, "values", message.values)])
            elif isinstance(message, p.Reply):
                channel = self._pending.pop(message.request_id, None)
                if channel is not None:
                    channel.send_nowait(message)
            elif isinstance(message, p.Heartbeat):
                await self._send(p.encode(p.Heartbeat()))  # so the engine knows the link is alive
            elif isinstance(message, p.Hello):
                raise SessionClosed("a second hello in one session")

    async def _store(self, records: list[dict[str, Any]], memory: UnitMemory, actor: d.Actor) -> None:
        fresh = [r for r in records if r["seq"] > memory.last_seq]
        expected = memory.last_seq + 1
        for record in fresh:
            if record["seq"] != expected:
                raise SessionClosed(f"record {record['seq']} arrived where {expected} was due")
            expected += 1
        if not fresh:
            if records:  # all resent duplicates: acknowledge again so the engine can forget them
                await self._send(p.encode(p.Ack(memory.last_seq)))
            return
        events = [self._event(record, memory, actor) for record in fresh]
        await self.engines.writer.append(events)
        memory.last_seq = fresh[-1]["seq"]
        await self._send(p.encode(p.Ack(memory.last_seq)))

    def _event(self, record: dict[str, Any], memory: UnitMemory, actor: d.Actor) -> d.DomainEvent:
        base = {"time": float(record["time"]), "unit": self.unit, "run": record.get("run"), "actor": actor,
                "seq": record["seq"]}
        data = record["data"]
        kind = record["kind"]
        try:
            if kind == "uod":
                described = d.UodDescribed(**base, **data)
                if described.required_roles and not self.engines.sign_in:
                    log.warning("unit %s requires the role(s) %s, but sign-in is off: nobody holds a role, so "
                                "nobody can see the unit", self.unit, ", ".join(described.required_roles))
                return described
            if kind == "run_started":
                return d.RunStarted(**base)
            if kind == "run_stopped":
                return d.RunStopped(**base)
            if kind == "state":
                old = memory.state
                memory.state = (data["system_state"], data["method_status"])
                return d.StateChanged(**base, system_state=data["system_state"], method_status=data["method_status"],
                                      old_system_state=old[0], old_method_status=old[1])
            if kind == "samples":
                return d.TagSamples(**base, samples=data["samples"])
            if kind == "runlog":
                return d.RunLogChanged(**base, items=data["items"])
            if kind == "lines":
                return d.LinesChanged(**base, version=data["version"], states=data["states"])
            if kind == "method":
                author = memory.authors.pop(data["version"], actor)
                return d.MethodRevised(**{**base, "actor": author}, version=data["version"], lines=data["lines"])
            if kind == "error":
                return d.ErrorLogged(**base, severity=data["severity"], message=data["message"], line=data.get("line"))
        except (KeyError, TypeError) as error:
            raise p.ProtocolError(f"record {record['seq']} ({kind}): bad data: {error}") from None
        raise p.ProtocolError(f"record {record['seq']}: unknown kind {kind!r}")

    async def request(self, request: str, detail: dict[str, Any], user: d.Actor) -> p.Reply:
        """Forward a user's request to the engine and wait for its answer."""
        request_id = self._next_request
        self._next_request += 1
        send, receive = trio.open_memory_channel[p.Reply](1)
        self._pending[request_id] = send
        if request == "save_method":
            self.engines.memory(self.unit).authors[int(detail["version"]) + 1] = user
        await self._send(p.encode(p.Request(request_id, request, detail, {"kind": user.kind, "id": user.id,
                                                                          "name": user.name})))
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                return await receive.receive()
            except trio.EndOfChannel:
                return p.Reply(request_id, False, "the engine disconnected before it answered")
        self._pending.pop(request_id, None)
        return p.Reply(request_id, False, f"the engine did not answer within {REQUEST_TIMEOUT:g} s")

