"""EngineSession: one connected engine, from handshake to disconnect.

The aggregator trusts no client. A session admits an engine only when:

* its address is not throttled (too many failed handshakes from it in a short time);
* its hello is well formed and speaks this protocol version;
* it proves its identity: the credential matches the engine's enrolment (a key whose SHA-256 was
  enrolled, or an OpenID Connect application token of the enrolled app), or - on an aggregator
  that accepts new engines - the engine id was never enrolled and is enrolled now, on first use;
* no other session of the same engine is live: a second connection is refused, never a
  takeover (two live engines with one identity are a cloned PC image or a copied disk, and ops
  are told so in the unit's error log).

It then tells the engine the last record the store holds *from that engine's outbox* (an outbox
has its own id, so a new outbox starts from nothing and never trims against another's numbers),
and for every frame:

* ``records``: drops the ones already stored (``seq <= last_seq``: a resend after a cut), refuses a
  gap (records must follow each other; the engine resends after reconnecting), checks each one
  against its schema (:mod:`pectus.events.records`) and against the runs this unit started, has
  the good ones appended as domain events and the bad ones as ``RecordRefused`` (their content is
  never stored), and acknowledges the lot once committed, listing the refused ones;
* ``live``: the latest tag values go to the browsers at once, without being stored, and are held
  for the unit's trend (:mod:`pectus.projections.trend`: a rolling window in memory);
* ``reply``: answers a user's request that the session forwarded.

A run the unit had open is closed as interrupted once the engine is back without it and every
record its outbox held at the hello is stored (so a run it stopped while away ends normally).

A malformed, oversized or unknown frame is refused with a logged reason and the session is
closed cleanly (the engine reconnects and resends); nothing is stored from it.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import msgspec
import trio

from pectus.actors.event_writer import EventWriter
from pectus.actors.ui_hub import UiHub
from pectus.credentials import key_digest
from pectus.events import domain as d
from pectus.events import protocol as p
from pectus.events import records as r
from pectus.projections.trend import Trend
from pectus.projections.views import Delta
from pectus.web.auth import SignIn, SignInError

log = logging.getLogger("pectus.aggregator.engines")

ENGINE_ID = re.compile(r"^[\w.\-() ]{1,200}$")
REQUEST_TIMEOUT = 5.0
SILENCE = 15.0  # engines send a heartbeat every 5 s: three missed beats mean the link is dead
CLAIM_REPORT_INTERVAL = 600.0  # seconds between two error-log entries about a contested identity


class SessionClosed(Exception):
    """The engine's session ended; the message says why."""


class Refusal(SessionClosed):
    """The handshake failed: ``code`` for the engine's program, the message for a person."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True, slots=True)
class Enrolment:
    key_sha256: str | None = None
    client_id: str | None = None


@dataclass
class UnitMemory:
    """What the aggregator keeps in memory about a unit between records (rebuilt from the log)."""

    outboxes: dict[str, int] = field(default_factory=dict)  # outbox id ("" before ids) -> last seq stored
    run: str | None = None  # the run the unit has open in the record
    state: tuple[str | None, str | None] = (None, None)
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    authors: dict[int, d.Actor] = field(default_factory=dict)  # method version -> who saved it
    contested: float = -math.inf  # when a second claim to this identity was last reported


class Throttle:
    """Counts failed handshakes per address: after ``limit`` within ``window`` seconds, the
    address is refused without further checks until the window has passed.

    Memory is bounded: addresses whose window passed are forgotten when a new failure arrives."""

    def __init__(self, limit: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, list[float]] = {}

    def blocked(self, address: str) -> bool:
        recent = self._recent(address)
        return len(recent) >= self.limit

    def failed(self, address: str) -> None:
        now = self.clock()
        if len(self._failures) > 10_000:
            self._failures = {a: t for a, t in self._failures.items() if t and now - t[-1] < self.window}
        self._recent(address).append(now)

    def _recent(self, address: str) -> list[float]:
        now = self.clock()
        recent = [t for t in self._failures.get(address, ()) if now - t < self.window]
        self._failures[address] = recent
        return recent


class Engines:
    """The connected engines, their enrolments and each unit's memory; shared by the sessions and
    the web backend. :meth:`remember` keeps it in step with the log (at start-up and after each
    commit), so what a session checks is always what the store says."""

    def __init__(self, writer: EventWriter, hub: UiHub, *, sign_in: SignIn | None = None,
                 accept_new: bool = False, throttle: Throttle | None = None, trend: Trend | None = None) -> None:
        self.writer = writer
        self.hub = hub
        self.trend = trend if trend is not None else Trend()
        self.sign_in = sign_in
        self.accept_new = accept_new
        self.throttle = throttle or Throttle()
        self.sessions: dict[str, EngineSession] = {}
        self.units: dict[str, UnitMemory] = {}
        self.enrolments: dict[str, Enrolment] = {}
        self.revoked: set[str] = set()  # engine ids revoked and not enrolled since: never enrolled on first use
        self.run_units: dict[str, str] = {}  # run id -> the unit that started it

    @property
    def signing_in(self) -> bool:
        return self.sign_in is not None and self.sign_in.config.enabled

    def memory(self, unit: str) -> UnitMemory:
        return self.units.setdefault(unit, UnitMemory())

    def remember(self, type_name: str, data: dict[str, Any]) -> None:
        """Follow the log: the last seq per outbox, the open run and state per unit, enrolments.
        An event it cannot read (hand-made, or from a bug) is skipped with a log line: the
        aggregator must start on any store."""
        try:
            self._remember(type_name, data)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            log.error("a stored %s event cannot be read (%s: %s); skipped", type_name, type(error).__name__, error)

    def _remember(self, type_name: str, data: dict[str, Any]) -> None:
        unit = data["unit"]
        if not isinstance(unit, str):
            raise TypeError(f"unit is {type(unit).__name__}, not a string")
        memory = self.memory(unit)
        seq = data.get("seq")
        if isinstance(seq, int) and seq > 0:
            outbox = data.get("outbox") or ""
            memory.outboxes[outbox] = max(memory.outboxes.get(outbox, 0), seq)
        if type_name == "StateChanged":
            memory.state = (data["system_state"], data["method_status"])
        elif type_name == "RunStarted" and data.get("run"):
            self.run_units.setdefault(data["run"], unit)
            memory.run = data["run"]
        elif type_name in ("RunStopped", "RunInterrupted") and data.get("run") == memory.run:
            memory.run = None
        elif type_name == "UodDescribed":
            self.trend.describe(unit, data)
        elif type_name == "EngineEnrolled":
            self.enrolments[unit] = Enrolment(data.get("key_sha256"), data.get("client_id"))
            self.revoked.discard(unit)
        elif type_name == "EngineRevoked":
            self.enrolments.pop(unit, None)
            self.revoked.add(unit)
            session = self.sessions.get(unit)
            if session is not None:  # a revoked credential no longer holds a connection open
                session.close("its enrolment was revoked")

    async def admit(self, hello: p.Hello, now: float) -> str:
        """Check the hello's credential against the engine's enrolment; enrol on first use when
        allowed. Returns how the engine proved itself; raises :class:`Refusal`."""
        unit = hello.engine_id
        enrolment = self.enrolments.get(unit)
        if enrolment is None or (enrolment.key_sha256 is not None
                                 and not hmac.compare_digest(key_digest(hello.credential), enrolment.key_sha256)):
            # Enrolled (or enrolled again) a moment ago by an operator's command, perhaps: read the
            # store's tail before refusing. Failed handshakes are throttled, so this stays cheap.
            await self.writer.catch_up()
            enrolment = self.enrolments.get(unit)
        if enrolment is None:
            if unit in self.revoked:
                raise Refusal(f"engine '{unit}' was revoked: enrol it again with 'pectus-aggregator engines enroll "
                              f"{unit}' if it may connect", "identity")
            if not self.accept_new:
                raise Refusal(f"engine '{unit}' is not enrolled at this aggregator: enrol it with "
                              f"'pectus-aggregator engines enroll {unit}' and give the engine its key", "identity")
            if not hello.credential:
                raise Refusal("the hello carries no credential: the engine must present its key", "credential")
            await self.writer.append([d.EngineEnrolled(time=now, unit=unit, key_sha256=key_digest(hello.credential),
                                                       how="first use")])
            log.warning("engine %s enrolled on first use (this aggregator accepts new engines)", unit)
            return "key"
        if enrolment.client_id is not None:
            if self.sign_in is None or not self.sign_in.config.enabled:
                raise Refusal(f"engine '{unit}' is enrolled for sign-in with an app token, but sign-in is off "
                              "at this aggregator", "credential")
            try:
                app = await self.sign_in.identify_app(hello.credential)
            except SignInError as error:
                raise Refusal(f"the engine's app token was refused: {error}", "credential") from None
            if app.client_id != enrolment.client_id:
                raise Refusal(f"the app token is for app {app.client_id}, not the app enrolled for engine '{unit}'",
                              "credential")
            return f"app {app.client_id}"
        if not hmac.compare_digest(key_digest(hello.credential), enrolment.key_sha256 or ""):
            raise Refusal(f"the key does not match the one enrolled for engine '{unit}'", "credential")
        return "key"


class _Head(msgspec.Struct):
    """The part of a record read before its schema is checked: where it sits in the sequence."""

    seq: int
    kind: Any = None


_head = msgspec.json.Decoder(_Head)


class EngineSession:
    def __init__(self, engines: Engines, send: Callable[[str], Awaitable[None]],
                 receive: Callable[[], Awaitable[str | bytes]], address: str = "") -> None:
        self.engines = engines
        self._send = send
        self._receive = receive
        self.address = address
        self.unit = ""
        self.outbox = ""
        self._pending: dict[int, trio.MemorySendChannel[p.Reply]] = {}
        self._next_request = 1
        self._scope = trio.CancelScope()
        self._closing = "closed by the aggregator"
        self._interrupt: tuple[str, int] | None = None  # (run, seq): close the run once seq is stored
        self._heard = 0.0  # trio's time when the session began waiting for the engine's next frame
        self._listening = False  # waiting for a frame (not handling one)

    async def serve(self, now: Callable[[], float]) -> None:
        """Run the session until the engine goes away; raises nothing for a bad engine."""
        engines = self.engines
        try:
            hello, credential = await self._handshake(now)
        except SessionClosed as reason:
            log.warning("engine handshake from %s refused: %s", self.address or "an unknown address", reason)
            return
        self.unit = unit = hello.engine_id
        self.outbox = outbox = hello.outbox or ""
        memory = engines.memory(unit)
        engines.sessions[unit] = self
        actor = d.Actor.engine(unit)
        reason = "the aggregator is stopping"
        try:
            await engines.writer.append([
                d.EngineRegistered(time=now(), unit=unit, actor=actor, outbox=outbox, computer_name=hello.computer_name,
                                   uod_name=hello.uod_name, engine_version=hello.engine_version,
                                   protocol=hello.protocol, credential=credential),
                d.EngineConnected(time=now(), unit=unit, actor=actor)])
            last_seq = memory.outboxes.get(outbox, 0)
            await self._send(p.encode(p.Welcome(p.PROTOCOL_VERSION, unit, last_seq, outbox)))
            log.info("engine %s connected (outbox %s); it resumes after record %d", unit, outbox, last_seq)
            if memory.run is not None and hello.run != memory.run:
                self._interrupt = (memory.run, hello.outbox_seq)
                await self._interrupt_when_caught_up(memory, now)
            with self._scope:
                reason = await self._follow(memory, actor, now)
            if self._scope.cancelled_caught:
                reason = self._closing
        except (SessionClosed, p.ProtocolError) as error:
            reason = str(error) or type(error).__name__
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

    async def _handshake(self, now: Callable[[], float]) -> tuple[p.Hello, str]:
        """The hello, checked; refusals are counted against the address."""
        engines = self.engines
        if engines.throttle.blocked(self.address):
            await self._refuse(Refusal("too many failed handshakes from this address: try again in a minute",
                                       "throttled"))
        try:
            hello = await self._hello()
            credential = await engines.admit(hello, now())
        except Refusal as refusal:
            engines.throttle.failed(self.address)
            await self._refuse(refusal)
        if hello.engine_id in engines.sessions:
            await self._contested(hello, now())
        return hello, credential

    async def _hello(self) -> p.Hello:
        with trio.move_on_after(10) as scope:
            frame = await self._receive()
        if scope.cancelled_caught:
            raise Refusal("no hello within 10 s", "protocol")
        version = p.protocol_of(frame)
        if isinstance(version, int) and version != p.PROTOCOL_VERSION:
            raise Refusal(f"engine speaks protocol version {version}; this aggregator speaks version "
                          f"{p.PROTOCOL_VERSION}: upgrade the older of the two", "protocol")
        try:
            hello = p.decode(frame, allowed=frozenset({"hello"}))
        except p.ProtocolError as error:
            raise Refusal(f"expected a hello: {error}", "protocol") from None
        assert isinstance(hello, p.Hello)
        if not ENGINE_ID.match(hello.engine_id):
            raise Refusal(f"engine id {hello.engine_id!r} is not valid", "identity")
        if hello.outbox is None:
            raise Refusal("the hello names no outbox: the engine must say which outbox it sends from", "protocol")
        return hello

    async def _contested(self, hello: p.Hello, now: float) -> None:
        """A second live claim to one identity: refuse it, and tell ops (at most every 10 minutes)."""
        unit = hello.engine_id
        live = self.engines.sessions[unit]
        same = "the same outbox" if live.outbox == hello.outbox else f"another outbox ({hello.outbox})"
        reason = (f"engine '{unit}' is already connected (from {live.address or 'an unknown address'}); a second "
                  f"engine with its identity and {same} tried to connect from {self.address or 'an unknown address'}"
                  f" ({hello.computer_name}): a cloned PC image or a copied disk? Give each engine its own name "
                  "and enrolment")
        memory = self.engines.memory(unit)
        if now - memory.contested >= CLAIM_REPORT_INTERVAL:
            memory.contested = now
            await self.engines.writer.append([d.ErrorLogged(time=now, unit=unit, severity="error", message=reason)])
        await self._refuse(Refusal(reason, "duplicate"))

    def close(self, reason: str) -> None:
        """End the session (its engine will be refused or welcomed anew when it reconnects)."""
        self._closing = reason
        self._scope.cancel()

    async def _refuse(self, refusal: Refusal) -> None:
        await self._send(p.encode(p.Refused(str(refusal), refusal.code)))
        raise refusal

    async def _follow(self, memory: UnitMemory, actor: d.Actor, now: Callable[[], float]) -> str:
        """The engine's frames until it goes away, or falls silent for :data:`SILENCE` seconds
        while the session waits for its next frame.

        Silence is watched by one task that sleeps until that moment (and sleeps on when a frame
        came meanwhile), not by a deadline around each receive: an engine sends a dozen frames a
        second, and entering and leaving a cancel scope for each was a tenth of the loop's time."""
        reason: str | None = None
        failure: SessionClosed | p.ProtocolError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_silence, nursery.cancel_scope)
            try:
                reason = await self._frames(memory, actor, now)
            except (SessionClosed, p.ProtocolError) as error:
                failure = error  # raised as itself below, not inside the nursery's exception group
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return reason if reason is not None else f"no message for {SILENCE:g} s"

    async def _watch_silence(self, scope: trio.CancelScope) -> None:
        while True:
            due, current = self._heard + SILENCE, trio.current_time()
            if current >= due and self._listening:
                scope.cancel()
                return
            # Overdue while a frame is handled (a slow commit is no silence): look again later.
            await trio.sleep_until(due if current < due else current + SILENCE)

    async def _frames(self, memory: UnitMemory, actor: d.Actor, now: Callable[[], float]) -> str:
        while True:
            self._heard, self._listening = trio.current_time(), True
            try:
                frame = await self._receive()
            except (ConnectionError, trio.ClosedResourceError, trio.BrokenResourceError):
                return "connection closed"
            self._listening = False
            if frame is None:
                return "connection closed"
            message = p.decode(frame, allowed=p.FROM_ENGINE)
            if isinstance(message, p.Records):
                await self._store(message.records, memory, actor, now)
                await self._interrupt_when_caught_up(memory, now)
            elif isinstance(message, p.Live):
                values = [msgspec.structs.asdict(value) for value in message.values]
                for value in values:
                    memory.live[value["name"]] = value
                self.engines.trend.offer(self.unit, values, now())
                self.engines.hub.publish([Delta(self.unit, "values", values)])
            elif isinstance(message, p.Reply):
                channel = self._pending.pop(message.request_id, None)
                if channel is not None:
                    channel.send_nowait(message)
            elif isinstance(message, p.Heartbeat):
                await self._send(p.encode(p.Heartbeat()))  # so the engine knows the link is alive
            elif isinstance(message, p.Hello):
                raise SessionClosed("a second hello in one session")

    async def _interrupt_when_caught_up(self, memory: UnitMemory, now: Callable[[], float]) -> None:
        if self._interrupt is None:
            return
        run, seq = self._interrupt
        if memory.outboxes.get(self.outbox, 0) < seq:
            return  # records from before the hello may still stop the run normally
        self._interrupt = None
        if memory.run == run:
            await self.engines.writer.append([d.RunInterrupted(
                time=now(), unit=self.unit, run=run,
                reason="the engine came back without this run (it restarted or lost its state)")])

    async def _store(self, raws: list[msgspec.Raw], memory: UnitMemory, actor: d.Actor,
                     now: Callable[[], float]) -> None:
        last = memory.outboxes.get(self.outbox, 0)
        events: list[d.DomainEvent] = []
        refused: list[p.RefusedRecord] = []
        started: set[str] = set()  # runs this frame starts: its later records may name them
        state = memory.state
        for raw in raws:
            # Each record is decoded once: checked against its schema, or - only when that fails -
            # read for where it sits in the sequence.
            record: r.Record | None = None
            try:
                record = r.check_record(raw)
                seq, problem = record.seq, ""
            except r.RecordError as error:
                try:
                    head = _head.decode(raw)
                except msgspec.MsgspecError as unreadable:
                    raise p.ProtocolError(f"a record without a readable seq: {unreadable}") from None
                seq, problem = head.seq, str(error)
            if seq <= last:
                continue  # stored before: a resend after a cut
            if last and seq != last + 1:
                raise SessionClosed(f"record {seq} arrived where {last + 1} was due")
            last = seq
            base = {"unit": self.unit, "actor": actor, "seq": seq, "outbox": self.outbox}
            if record is not None:
                try:
                    self._check_run(record, started)
                except r.RecordError as error:
                    problem = str(error)
            if problem:
                kind = record.__struct_config__.tag if record is not None else head.kind
                kind = kind if isinstance(kind, str) and len(kind) <= 50 else "?"
                refused.append(p.RefusedRecord(seq, problem))
                events.append(d.RecordRefused(time=now(), **base, run=memory.run, kind=kind, reason=problem))
                continue
            assert record is not None
            event = self._event(record, base, memory, state)
            if isinstance(event, d.StateChanged):
                state = (event.system_state, event.method_status)
            events.append(event)
        if refused:
            log.warning("engine %s: %d record(s) refused, first: %s", self.unit, len(refused), refused[0].reason)
        if events:
            await self.engines.writer.append(events)
        if raws:  # all resent duplicates too: acknowledge again so the engine can forget them
            await self._send(p.encode(p.Ack(memory.outboxes.get(self.outbox, 0), refused)))

    def _check_run(self, record: r.Record, started: set[str]) -> None:
        """Records are accepted only for runs this unit started (and a run id is started once)."""
        run = record.run
        if run is None:
            return
        owner = self.engines.run_units.get(run)
        if isinstance(record, r.RunStartedRecord):
            if owner is not None or run in started:
                raise r.RecordError(f"run '{run}' was started before: a run id is started once")
            started.add(run)
        elif owner != self.unit and run not in started:
            raise r.RecordError(f"run '{run}' was not started by this unit")

    def _event(self, record: r.Record, base: dict[str, Any], memory: UnitMemory,
               state: tuple[str | None, str | None]) -> d.DomainEvent:
        """A checked record as its domain event; the schema guarantees every field."""
        base = {**base, "time": record.time, "run": record.run}
        data = msgspec.to_builtins(record.data)
        match record:
            case r.UodRecord():
                described = d.UodDescribed(**base, **data)
                if described.required_roles and not self.engines.signing_in:
                    log.warning("unit %s requires the role(s) %s, but sign-in is off: nobody holds a role, so "
                                "nobody can see the unit", self.unit, ", ".join(described.required_roles))
                return described
            case r.RunStartedRecord():
                return d.RunStarted(**base)
            case r.RunStoppedRecord():
                return d.RunStopped(**base)
            case r.StateRecord():
                return d.StateChanged(**base, **data, old_system_state=state[0], old_method_status=state[1])
            case r.SamplesRecord() | r.RunLogRecord() | r.LinesRecord() | r.ErrorRecord():
                cls = {r.SamplesRecord: d.TagSamples, r.RunLogRecord: d.RunLogChanged, r.LinesRecord: d.LinesChanged,
                       r.ErrorRecord: d.ErrorLogged}[type(record)]
                return cls(**base, **data)
            case r.MethodRecord():
                author = memory.authors.pop(record.data.version, base["actor"])
                return d.MethodRevised(**{**base, "actor": author}, **data)
        raise AssertionError(f"no event for {type(record).__name__}")

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
                reply = await receive.receive()
            except trio.EndOfChannel:
                return p.Reply(request_id, False, "the engine disconnected before it answered")
            if reply.accepted:
                self.engines.hub.hurry(self.unit)  # what it does is on its way, and someone waits for it
            return reply
        self._pending.pop(request_id, None)
        return p.Reply(request_id, False, f"the engine did not answer within {REQUEST_TIMEOUT:g} s")
