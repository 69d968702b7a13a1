"""Run views: what the UI and the REST API show, folded from the event log.

The :class:`Projector` reads stored records one by one, in log order, and keeps a small model
of every unit and every run: who the unit is and whether it is online, its latest process
values, its method and line states, the run log, the error log, the audit trail, the plot
series. Queries turn that model into plain JSON-able dicts and lists, which the REST API serves
as they are; :meth:`Projector.apply` also says what changed (:class:`Delta`), so the UI hub can
push it to live browsers.

Invariants
    * The projection is a pure fold: the same records in the same order give the same state,
      so a projector rebuilt by replaying the log from zero equals the live one byte for byte
      (:meth:`Projector.snapshot`). Nothing here reads a clock or the environment; every time
      is the event's own (UTC epoch seconds inside, ISO 8601 UTC with ``Z`` in query results,
      except plot series, which keep epoch seconds because charts want numbers).
    * Records are applied once, in increasing position (asserted).
    * Unit-level facts (connection, UOD, system state, latest values, the method) update the
      unit whatever run the event names. Run-scoped facts (run log, line states, errors,
      requests, samples for plots and CSV, method revisions, state changes for the audit) go
      to the run named in the event's envelope: a late event of a finished run still lands in
      that run. Without a run, errors go to the unit's idle error log (those since the last run
      started or stopped) and requests, run-log items and revisions are in no run's record.
    * Live views of a unit (``run_log``, ``error_log``, ``method``...) show its active run; a
      delta is emitted only when one of those live views changed.
    * Memory grows with the number of units and runs, and with the views of the runs in memory:
      each run's log, errors, revisions, audit entries and plot series (one point per change of a
      plotted tag; every other tag keeps only its latest value). Every run's :class:`RunSummary`
      is in memory; its :class:`RunView` while the run is active, and once it ended only while
      recently used, when the projector has somewhere to load it from again (``load_run``: a
      checkpoint, :mod:`pectus.projections.checkpoint`). Without one, every view stays.
    * Every query returns fresh objects (callers may serialize them later) and ``None`` for an
      id it does not know.
    * A stored event the projector cannot fold (written by an older version, or by a bug) never
      stops it: it is skipped, listed in :attr:`Projector.unfoldable` with its position and the
      reason, and the views carry on with the next event.

Differences from Open Pectus, on purpose: a unit card also shows ``paused`` and ``holding``
(the reference shows them as ready); the method keeps its revision history per run; contributors
are users whose request was accepted (a refused request changed nothing); error-log times are
UTC (the reference used local time).
"""

from __future__ import annotations

import copy
import gc
import itertools
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Callable, Iterable, overload

import msgspec

from pectus.events.domain import (DomainEvent, EngineConnected, EngineDisconnected, EngineRegistered,
                                  ErrorLogged, LinesChanged, MethodRevised, RecordRefused, RequestAnswered,
                                  RunInterrupted, RunLogChanged, RunStarted, RunStopped, StateChanged, UodDescribed,
                                  UserRequested, decode)
from pectus.events.store import Record
from pectus.notifications import TOPIC, Before, derive, may_notify

_log = logging.getLogger("pectus.projections")

# An idle unit in a fault loop may log distinct errors for months; keep only the newest ones.
IDLE_ERROR_LIMIT = 200

_ENVELOPE = {f.name for f in fields(DomainEvent)}


@dataclass(frozen=True, slots=True)
class Delta:
    """A live view that changed: ``unit`` (None for the global list of runs), the topic, and
    what changed.

    Views that are small carry their whole new content: ``units`` (:meth:`Projector.unit`),
    ``control_state``, ``method`` (the unit's query of that name) and ``runs``
    (:meth:`Projector.run` of the run that changed). Views that grow carry only what changed,
    for the browser to merge by key, so a long run costs the same per event as a short one:
    ``values`` is {tag: {value, time}}; ``run_log`` and ``error_log`` are {run, changed}, the
    items or entries added or updated (by their ``id``) in the log of that run (None: the unit
    is between runs). When ``run`` differs from the one a browser shows, its view starts
    afresh: a run start or stop sends each of them with ``changed`` empty."""

    unit: str | None
    topic: str
    data: Any


@overload
def iso(time: float) -> str: ...
@overload
def iso(time: None) -> None: ...
def iso(time: float | None) -> str | None:
    """UTC epoch seconds as ISO 8601 with milliseconds and ``Z``; None stays None."""
    if time is None:
        return None
    return datetime.fromtimestamp(time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class MethodState:
    """A method as the unit holds it, and the state of its lines in the current run."""

    version: int = 0
    lines: list[dict[str, str]] = field(default_factory=list)
    last_author: str | None = None
    line_states: dict[str, str] = field(default_factory=dict)

    def without_states(self) -> MethodState:
        return MethodState(self.version, self.lines, self.last_author)

    def view(self) -> dict[str, Any]:
        return {"version": self.version, "lines": [dict(line) for line in self.lines],
                "line_states": dict(self.line_states), "last_author": self.last_author}


@dataclass
class ErrorLog:
    """Errors oldest first; a repeat of the last entry (same severity and message) counts up
    ``occurrences`` and moves its ``time`` forward instead of adding an entry. Each entry has an
    ``id``, its number in the log (0, 1, ...), which stays when older entries are dropped."""

    limit: int | None = None
    added: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, event: ErrorLogged) -> dict[str, Any]:
        """The entry added or counted up, as :meth:`view` shows it."""
        last = self.entries[-1] if self.entries else None
        if last is not None and (last["severity"], last["message"]) == (event.severity, event.message):
            last["occurrences"] += 1
            last["time"] = event.time
            last["line"] = event.line
            return _error_view(last)
        entry = {"id": self.added, "severity": event.severity, "message": event.message, "line": event.line,
                 "first_time": event.time, "time": event.time, "occurrences": 1}
        self.added += 1
        self.entries.append(entry)
        if self.limit is not None:
            del self.entries[:-self.limit]
        return _error_view(entry)

    def view(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [_error_view(entry) for entry in reversed(self.entries)]


def _error_view(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "first_time": iso(entry["first_time"]), "time": iso(entry["time"])}


@dataclass
class Asked:
    """A request stored before the unit was asked, waiting for its answer. Its audit entry is at
    ``index`` in the audit of ``run``, the run it was asked in; asked outside a run, the entry is
    ``entry`` itself, which joins a run's audit only when the answer names one. (An index, not the
    entry: a checkpoint keeps a run's audit apart from its unit.)"""

    run: str | None
    index: int = 0
    entry: dict[str, Any] | None = None


@dataclass
class UnitView:
    id: str
    computer_name: str = ""
    uod_name: str = ""
    engine_version: str = ""
    protocol: int = 0
    online: bool = False
    last_seen: float | None = None
    description: dict[str, Any] = field(default_factory=dict)  # the UodDescribed fields
    system_state: str | None = None
    method_status: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # tag -> latest value
    value_times: dict[str, float] = field(default_factory=dict)  # tag -> time of that value
    method: MethodState = field(default_factory=MethodState)
    run: str | None = None  # the active run
    last_run: str | None = None  # the run that ended last (the page links to it between runs)
    idle_errors: ErrorLog = field(default_factory=lambda: ErrorLog(IDLE_ERROR_LIMIT))
    # Requests stored before the unit was asked, until their answer (a Start is in no run until its
    # answer names one).
    unanswered: dict[str, Asked] = field(default_factory=dict)
    # Answered requests whose answer names a run not recorded yet (its start is on its way): run id
    # -> their audit entries, which join the run when it starts.
    awaiting: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.computer_name} ({self.uod_name})"


@dataclass
class RunSummary:
    """What the list of runs shows of a run: small, always in memory. ``identity`` is never changed
    in place (it is replaced), so the runs of a unit share one while it stays the same."""

    id: str
    unit: str
    started: float
    number: int  # its place among the runs, in order of start: 0, 1, ...
    completed: float | None = None  # set: the run ended
    last_event: float = 0.0  # the time of the newest thing its engine reported: where an interrupted run ends
    interrupted: str | None = None  # why the run ended without the engine stopping it
    identity: dict[str, Any] = field(default_factory=dict)  # engine and UOD metadata
    contributors: dict[str, str] = field(default_factory=dict)  # user id -> name, first come first


@dataclass
class RunView:
    """The views of a run that grow with it: in memory while it is active, loaded on demand once
    it ended (see :class:`Projector`)."""

    method: MethodState  # shared with the unit while the run is active
    initial_method: dict[str, Any]  # version, lines and author in force at the start
    plot_configuration: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, str | None] = field(default_factory=dict)  # tag -> unit, in CSV order
    series: dict[str, list[tuple[float, Any]]] = field(default_factory=dict)  # plotted tags only
    revisions: list[dict[str, Any]] = field(default_factory=list)
    run_log: dict[str, dict[str, Any]] = field(default_factory=dict)  # item id -> latest item
    errors: ErrorLog = field(default_factory=ErrorLog)
    audit: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LiveViews:
    """The views but the runs' summaries and views: what a checkpoint keeps as one part (the
    others are parts of their own). ``shared_methods`` are the units whose method is their active
    run's (one object: a line state changes both), for :meth:`Projector.resume` to join again."""

    position: int
    units: dict[str, UnitView]
    shared_methods: list[str]
    unfoldable: list[dict[str, Any]]


# Facts about who may connect, and browsers' push subscriptions (pectus.actors.push): nothing any view shows.
_NOT_SHOWN = frozenset({"EngineEnrolled", "EngineRevoked", "PushSubscribed", "PushUnsubscribed"})


class Projector:
    """Folds stored records into unit and run views; sans-I/O, one instance per log reader.

    Every run's :class:`RunSummary` is in memory. Its :class:`RunView` is while the run is active;
    once it ended, at most ``resident_runs`` views of finished runs stay (the least recently used
    go first, at :meth:`trim`; None: every view stays), and ``load_run`` gives one back when a
    query or a late event wants it (it blocks: where that matters, load the views first, in a
    worker thread: :meth:`wanted`, :meth:`absent`, :meth:`admit`). A run whose summary or view
    changed since it was saved (:meth:`unsaved_views`, :meth:`saved`) keeps its view in memory
    until its owner saved it: dropping it would lose the change. Which views are in memory never
    changes what any query answers."""

    def __init__(self, aggregator_name: str, aggregator_version: str, *,
                 load_run: Callable[[str], RunView] | None = None, resident_runs: int | None = None) -> None:
        self.aggregator_name = aggregator_name
        self.aggregator_version = aggregator_version
        self.load_run = load_run
        self.resident_runs = resident_runs
        self._position = 0
        self._units: dict[str, UnitView] = {}
        self._runs: dict[str, RunSummary] = {}  # every run, in order of start
        self._views: OrderedDict[str, RunView] = OrderedDict()  # in memory, the least recently used first
        self._unsaved: set[str] = set()  # runs whose summary or view changed since they were saved
        self._identities: dict[bytes, dict[str, Any]] = {}  # one object per distinct run identity
        self.unfoldable: list[dict[str, Any]] = []  # {position, type, reason} of each event skipped
        # Whether apply() derives notifications (pectus.notifications): the live aggregator sets it once
        # its start-up replay is done; replay() never does, so what happened before is not told again.
        self.notifying = False

    @property
    def position(self) -> int:
        """The position of the last record applied (0 before any)."""
        return self._position

    # -- folding -------------------------------------------------------------------------------

    def replay(self, records: Iterable[Record]) -> int:
        """Folds ``records`` exactly as :meth:`apply` does, but without working out what changed:
        the way to rebuild the views from the log while no browser is watching. Returns how
        many records were folded.

        A replay makes millions of small objects and no reference cycles, while the cyclic
        garbage collector would scan the ever larger views again and again (a third of the time),
        so the collector is paused while it runs."""
        count = 0
        collecting = gc.isenabled()
        gc.disable()
        notifying, self.notifying = self.notifying, False
        try:
            for record in records:
                if record.type == "TagSamples":
                    self._advance(record)
                    try:
                        self._fold_samples(record.data)
                    except Exception as error:  # noqa: BLE001 - see _skip
                        self._skip(record, error)
                else:
                    self.apply(record)
                count += 1
        finally:
            self.notifying = notifying
            if collecting:
                gc.enable()
        return count

    def _advance(self, record: Record) -> None:
        assert record.position > self._position, f"record {record.position} after {self._position}"
        self._position = record.position

    # -- where the views of runs are ---------------------------------------------------------

    def wanted(self, records: Iterable[Record]) -> list[str]:
        """The runs whose views folding ``records`` reads: the known run each names, and the run
        each answered request was asked in (:meth:`absent` says which are not in memory)."""
        named: list[object] = []
        for record in records:
            data = record.data
            if isinstance(data, dict):
                named.append(data.get("run"))
                if record.type == RequestAnswered.type:
                    named.append(self._asked_in(data))
        return list(dict.fromkeys(run for run in named if isinstance(run, str) and run in self._runs))

    def _asked_in(self, data: dict[str, Any]) -> str | None:
        unit, request = data.get("unit"), data.get("request_id")
        if not (isinstance(unit, str) and isinstance(request, str) and unit in self._units):
            return None
        asked = self._units[unit].unanswered.get(request)
        return asked.run if asked is not None else None

    def absent(self, ids: Iterable[object]) -> list[str]:
        """The runs among ``ids`` (anything: a unit id, None...) known, whose views are not in memory."""
        return list(dict.fromkeys(run for run in ids
                                  if isinstance(run, str) and run in self._runs and run not in self._views))

    def admit(self, run_id: str, view: RunView) -> None:
        """A finished run's view, loaded elsewhere: kept, unless memory holds it already (that one
        may have changed since)."""
        if run_id in self._runs and run_id not in self._views:
            self._views[run_id] = view

    def unsaved_views(self) -> list[tuple[str, RunView]]:
        """The runs whose summaries or views changed since :meth:`saved` was told of them, by id."""
        return [(run_id, self._views[run_id]) for run_id in sorted(self._unsaved)]

    def saved(self, run_ids: Iterable[str]) -> None:
        """These views were saved as they are (nothing folded since): they may leave memory."""
        self._unsaved.difference_update(run_ids)

    def trim(self, keep: Iterable[str] = ()) -> None:
        """Lets the least recently used views of finished runs beyond ``resident_runs`` go (saved
        ones only, and none of those to ``keep``)."""
        if self.resident_runs is None:
            return
        finished = [run_id for run_id in self._views if self._runs[run_id].completed is not None]
        excess = len(finished) - self.resident_runs
        kept = self._unsaved.union(keep)
        for run_id in finished:
            if excess <= 0:
                return
            if run_id not in kept:
                del self._views[run_id]
                excess -= 1

    def _view(self, run_id: str) -> RunView:
        """The view of a known run, to fold into: unsaved from now on."""
        view = self._resident(run_id)
        self._unsaved.add(run_id)
        return view

    def _resident(self, run_id: str) -> RunView:
        view = self._views.get(run_id)
        if view is not None:
            self._views.move_to_end(run_id)
            return view
        if self.load_run is None:
            raise LookupError(f"the view of run {run_id!r} is not in memory, and there is nowhere to load it from")
        view = self._views[run_id] = self.load_run(run_id)
        return view

    def _shown(self, run_id: str) -> RunView | None:
        """The view of a run for a query; None for an unknown run."""
        return self._resident(run_id) if run_id in self._runs else None

    def live(self) -> LiveViews:
        """The views but the runs' summaries and views, as they are (not copies: encode them
        before the next fold)."""
        shared = [unit.id for unit in self._units.values()
                  if unit.run is not None and unit.method is self._views[unit.run].method]
        return LiveViews(self._position, self._units, shared, self.unfoldable)

    @property
    def run_count(self) -> int:
        return len(self._runs)

    def summaries(self, first: int, count: int) -> dict[str, RunSummary]:
        """The summaries of the runs numbered ``first`` to ``first + count - 1``, as they are (not
        copies). A finished run's summary changes only in a fold that changes its view too."""
        return dict(itertools.islice(self._runs.items(), first, first + count))

    def number_of(self, run_id: str) -> int:
        return self._runs[run_id].number

    def resume(self, live: LiveViews, runs: dict[str, RunSummary], active: dict[str, RunView]) -> None:
        """Takes up where a checkpoint's views left off: ``live``, ``runs`` (every run's summary in
        order of start) and ``active`` (the views of the active runs), objects of their own,
        decoded; the views of finished runs come from ``load_run`` when wanted. Only for a fresh
        projector."""
        assert self._position == 0 and not self._units, "resume a fresh projector only"
        self._position, self._units, self._runs = live.position, live.units, runs
        for run in self._runs.values():
            run.identity = self._shared(run.identity)
        self.unfoldable = live.unfoldable
        self._views = OrderedDict(active)
        for unit_id in live.shared_methods:
            unit = self._units[unit_id]
            assert unit.run is not None
            unit.method = self._views[unit.run].method

    def apply(self, record: Record) -> list[Delta]:
        """Folds one record and says which live views changed, and (while :attr:`notifying`) which
        notifications it makes: deltas of topic ``notification`` of its unit, last."""
        self._advance(record)
        try:
            if record.type == "TagSamples":
                return self._values_delta(self._fold_samples(record.data), record.data["samples"])
            if record.type in _NOT_SHOWN:
                return []
            event = decode(record.type, record.data)
            told = self._notifications(event, record.position) if self.notifying and may_notify(event) else []
            return self._fold(event) + told
        except Exception as error:  # noqa: BLE001 - see _skip
            self._skip(record, error)
            return []

    def _notifications(self, event: DomainEvent, position: int) -> list[Delta]:
        """What ``event`` tells people (pectus.notifications.derive), from the views before it is
        folded. A notification that cannot be made is logged; the event is still folded."""
        unit = self._units.get(event.unit) or UnitView(event.unit)
        run = self._runs.get(event.run) if event.run is not None else None
        errors = self._resident(unit.run).errors if unit.run is not None else unit.idle_errors
        before = Before(name=unit.name if unit.uod_name else unit.id, run=unit.run, known_run=run is not None,
                        method_status=unit.method_status,
                        last_error=errors.entries[-1]["message"] if errors.entries else None,
                        items=self._resident(run.id).run_log if run is not None else {})
        try:
            told = derive(event, position, iso(event.time), before)
        except Exception:  # noqa: BLE001 - telling is secondary to keeping the record
            _log.exception("event %d (%s): its notification cannot be made", position, event.type)
            return []
        # A global topic of the hub: it goes to each browser that may see the unit, following it or not.
        roles = list(unit.description.get("required_roles", []))
        return [Delta(event.unit, TOPIC, {**msgspec.structs.asdict(notification), "required_roles": roles})
                for notification in told]

    def _skip(self, record: Record, error: Exception) -> None:
        """An event that cannot be folded is reported and skipped: the record stays readable
        (every other event still shows), and the process that folds it keeps running."""
        reason = f"{type(error).__name__}: {error}"
        self.unfoldable.append({"position": record.position, "type": record.type, "reason": reason})
        _log.error("event %d (%s) cannot be shown and is skipped: %s", record.position, record.type, reason)

    def _fold(self, event: DomainEvent) -> list[Delta]:
        unit = self._units.get(event.unit)
        if unit is None:
            unit = self._units[event.unit] = UnitView(event.unit)
        # A user's request tells nothing about whether the engine is alive.
        if event.actor.kind != "user":
            unit.last_seen = event.time if unit.last_seen is None else max(unit.last_seen, event.time)
        run = self._runs.get(event.run) if event.run is not None else None
        if run is not None and run.id == unit.run and event.actor.kind == "engine":
            run.last_event = max(run.last_event, event.time)  # what the engine reported of the run
            self._unsaved.add(run.id)
        match event:
            case EngineRegistered():
                return self._registered(unit, event)
            case EngineConnected():
                unit.online = True
                return [self._delta(unit, "units")]
            case EngineDisconnected():
                unit.online = False
                return [self._delta(unit, "units")]
            case UodDescribed():
                return self._described(unit, event)
            case RunStarted():
                return self._run_started(unit, event)
            case RunStopped():
                return self._run_stopped(unit, event)
            case RunInterrupted():
                return self._run_interrupted(unit, event)
            case StateChanged():
                return self._state_changed(unit, run, event)
            case RunLogChanged():
                return self._run_log_changed(unit, run, event)
            case LinesChanged():
                return self._lines_changed(unit, run, event)
            case MethodRevised():
                return self._method_revised(unit, run, event)
            case ErrorLogged():
                return self._error_logged(unit, run, event)
            case RecordRefused():
                return self._error_logged(unit, run, ErrorLogged(
                    time=event.time, unit=event.unit, run=event.run, severity="error",
                    message=f"a {event.kind} record from the engine was refused and not stored: {event.reason}"))
            case UserRequested():
                return self._user_requested(unit, run, event)
            case RequestAnswered():
                return self._request_answered(unit, run, event)
        raise AssertionError(f"no projection for {event.type}")

    def _registered(self, unit: UnitView, event: EngineRegistered) -> list[Delta]:
        unit.computer_name = event.computer_name
        unit.uod_name = event.uod_name
        unit.engine_version = event.engine_version
        unit.protocol = event.protocol
        self._refresh_active_run(unit)
        return [self._delta(unit, "units")]

    def _described(self, unit: UnitView, event: UodDescribed) -> list[Delta]:
        unit.description = {name: value for name, value in event.to_data().items() if name not in _ENVELOPE}
        self._refresh_active_run(unit)
        return [self._delta(unit, "units")]

    def _run_started(self, unit: UnitView, event: RunStarted) -> list[Delta]:
        if event.run is None or event.run in self._runs:
            return []  # a duplicate start changes nothing
        deltas = (self._interrupt(unit, self._runs[unit.run], "a new run started before it ended")
                  if unit.run is not None else [])
        unit.method = unit.method.without_states()
        initial = {"version": unit.method.version, "lines": unit.method.lines, "last_author": unit.method.last_author}
        run = self._runs[event.run] = RunSummary(event.run, unit.id, event.time, len(self._runs))
        view = self._views[event.run] = RunView(unit.method, initial)
        self._unsaved.add(run.id)
        unit.run = run.id
        unit.idle_errors = ErrorLog(IDLE_ERROR_LIMIT)
        self._refresh_active_run(unit)
        for entry in unit.awaiting.pop(run.id, ()):  # the requests that started it, answered before it was recorded
            view.audit.append(entry)
            self._contributed(unit, run, entry)
        return deltas + self._run_deltas(unit, run)

    def _run_stopped(self, unit: UnitView, event: RunStopped) -> list[Delta]:
        if event.run is None or event.run != unit.run:
            return []  # a duplicate or late stop changes nothing
        return self._close_run(unit, event.time)

    def _run_interrupted(self, unit: UnitView, event: RunInterrupted) -> list[Delta]:
        if event.run is None or event.run != unit.run:
            return []  # the run ended meanwhile: nothing to interrupt
        return self._interrupt(unit, self._runs[event.run], event.reason)

    def _interrupt(self, unit: UnitView, run: RunSummary, reason: str) -> list[Delta]:
        """A run the engine did not stop ends where its record ends, marked with the reason."""
        run.interrupted = reason
        return self._close_run(unit, run.last_event or run.started)

    def _close_run(self, unit: UnitView, time: float) -> list[Delta]:
        assert unit.run is not None
        run = self._runs[unit.run]
        run.completed = time
        self._unsaved.add(run.id)
        unit.run = None
        unit.last_run = run.id
        # The run keeps the method object it shared with the unit; the unit carries on with a copy.
        unit.method = unit.method.without_states()
        unit.idle_errors = ErrorLog(IDLE_ERROR_LIMIT)
        return self._run_deltas(unit, run)

    def _refresh_active_run(self, unit: UnitView) -> None:
        """Copy the unit's identity and UOD into its active run: an engine that reconnects
        during a run registers and describes itself again, possibly with a new UOD."""
        if unit.run is None:
            return
        run = self._runs[unit.run]
        description = unit.description
        run.identity = self._shared({
            "engine_name": unit.name, "engine_computer_name": unit.computer_name,
            "engine_version": unit.engine_version, "engine_hardware_str": description.get("hardware", ""),
            "uod_name": unit.uod_name, "uod_filename": description.get("uod_filename", ""),
            "uod_author_name": description.get("uod_author_name", ""),
            "uod_author_email": description.get("uod_author_email", ""),
            "location": description.get("location", ""),
            "required_roles": list(description.get("required_roles", [])),
        })
        view = self._view(run.id)
        view.plot_configuration = description.get("plot_configuration", {})
        for tag in description.get("tags", []):
            view.columns[tag["name"]] = tag.get("unit") or None
        for name in plotted_tags(description):
            view.series.setdefault(name, [])

    def _shared(self, identity: dict[str, Any]) -> dict[str, Any]:
        """The one object of identities equal to ``identity``: thousands of runs, a few identities."""
        return self._identities.setdefault(msgspec.json.encode(identity), identity)

    def _state_changed(self, unit: UnitView, run: RunSummary | None, event: StateChanged) -> list[Delta]:
        old_system = event.old_system_state if event.old_system_state is not None else unit.system_state
        old_status = event.old_method_status if event.old_method_status is not None else unit.method_status
        unit.system_state = event.system_state
        unit.method_status = event.method_status
        if run is not None:
            self._audit(self._view(run.id), event, "state changed", {
                "old": {"system_state": old_system, "method_status": old_status},
                "new": {"system_state": event.system_state, "method_status": event.method_status}})
        return [self._delta(unit, "units"), self._delta(unit, "control_state")]

    def _fold_samples(self, data: dict[str, Any]) -> UnitView:
        """TagSamples, folded straight from the stored payload: most events of a log are samples,
        so this path skips building the event object (the other kinds go through ``decode``) and
        leaves the per-tag work to dict operations, which run in C."""
        unit = self._units.get(data["unit"])
        if unit is None:
            unit = self._units[data["unit"]] = UnitView(data["unit"])
        time = data["time"]
        unit.last_seen = time if unit.last_seen is None else max(unit.last_seen, time)
        run_id = data.get("run")
        run = self._runs.get(run_id) if run_id is not None else None
        if run is not None and run.id == unit.run:
            run.last_event = max(run.last_event, time)
        view = self._view(run.id) if run is not None else None  # (marks the run unsaved)
        values_of_unit, times_of_unit = unit.values, unit.value_times
        for sample in data["samples"]:
            time, values = sample["time"], sample["values"]
            values_of_unit.update(values)
            times_of_unit.update(dict.fromkeys(values, time))
            if view is not None:
                series = view.series
                for tag in series.keys() & values.keys():
                    series[tag].append((time, values[tag]))
                if not view.columns.keys() >= values.keys():
                    view.columns.update((tag, None) for tag in values if tag not in view.columns)
        return unit

    @staticmethod
    def _values_delta(unit: UnitView, samples: list[dict[str, Any]]) -> list[Delta]:
        """The latest value and time of every tag the samples carried."""
        tags = dict.fromkeys(tag for sample in samples for tag in sample["values"])
        if not tags:
            return []
        times = unit.value_times
        stamps = {time: iso(time) for time in {times[tag] for tag in tags}}  # a few times, many tags
        return [Delta(unit.id, "values", {tag: {"value": unit.values[tag], "time": stamps[times[tag]]}
                                          for tag in tags})]

    def _run_log_changed(self, unit: UnitView, run: RunSummary | None, event: RunLogChanged) -> list[Delta]:
        if run is None:
            return []  # a run log outside a run has nowhere to go
        log = self._view(run.id).run_log
        changed: dict[str, dict[str, Any]] = {}
        for item in event.items:
            key = str(item["id"])
            changed[key] = log[key] = {**log.get(key, {}), **item}
        for moved in event.progress:
            key = str(moved["id"])
            if key in log:
                changed[key] = log[key] = {**log[key], "progress": moved["progress"], "time": moved["time"]}
        if run.id != unit.run or not changed:
            return []
        return [_log_delta(unit, "run_log", [dict(item) for item in changed.values()])]

    def _lines_changed(self, unit: UnitView, run: RunSummary | None, event: LinesChanged) -> list[Delta]:
        method = self._view(run.id).method if run is not None else unit.method
        method.line_states.update(event.states)
        if run is None and unit.run is not None and unit.method is self._views[unit.run].method:
            self._unsaved.add(unit.run)  # one object with the active run's method: that view changed too
        return [self._delta(unit, "method")] if method is unit.method else []

    def _method_revised(self, unit: UnitView, run: RunSummary | None, event: MethodRevised) -> list[Delta]:
        if unit.run is not None and event.run != unit.run:
            # The engine's method outside the unit's open run: the engine lost that run (it is
            # interrupted next), whose method must stay as it was.
            unit.method = unit.method.without_states()
        old_version = unit.method.version
        unit.method.version = event.version
        unit.method.lines = event.lines
        unit.method.last_author = event.actor.name
        if run is not None:
            view = self._view(run.id)
            view.revisions.append({"time": event.time, "author": _actor(event), "version": event.version,
                                   "base_version": event.base_version, "lines": event.lines})
            self._audit(view, event, "method revised", {
                "old_version": old_version, "new_version": event.version, "base_version": event.base_version})
        return [self._delta(unit, "method")]

    def _error_logged(self, unit: UnitView, run: RunSummary | None, event: ErrorLogged) -> list[Delta]:
        entry = (self._view(run.id).errors if run is not None else unit.idle_errors).add(event)
        shown = run.id if run is not None else None
        return [_log_delta(unit, "error_log", [entry])] if shown == unit.run else []

    def _user_requested(self, unit: UnitView, run: RunSummary | None, event: UserRequested) -> list[Delta]:
        entry = _audit_entry(event, event.request, {"asked": event.detail, "accepted": event.accepted,
                                                    "reason": event.reason})
        asked = Asked(None, entry=entry)
        if run is not None:
            audit = self._view(run.id).audit
            audit.append(entry)
            asked = Asked(run.id, len(audit) - 1)
        if event.request_id is not None and event.accepted is None:  # stored before the unit was asked
            unit.unanswered[event.request_id] = asked
            return []
        return self._contributed(unit, run, entry) if run is not None else []

    def _request_answered(self, unit: UnitView, run: RunSummary | None, event: RequestAnswered) -> list[Delta]:
        """The answer completes the request's audit entry; a request made outside a run whose
        answer names one (the Start that began it) enters that run's audit now."""
        asked = unit.unanswered.pop(event.request_id, None)
        if asked is None:
            return []
        if asked.run is not None:  # the entry is in the audit of the run it was asked in
            run = self._runs[asked.run]
            entry = _answered(self._view(asked.run).audit[asked.index], event)
        elif run is not None:
            entry = _answered(asked.entry, event)
            self._view(run.id).audit.append(entry)
        elif event.run is not None and event.run not in self._runs:
            unit.awaiting.setdefault(event.run, []).append(_answered(asked.entry, event))
            return []
        else:
            return []  # outside a run there is no audit trail to add to
        return self._contributed(unit, run, entry)

    def _contributed(self, unit: UnitView, run: RunSummary, entry: dict[str, Any]) -> list[Delta]:
        """A user whose request a unit accepted contributed to its run."""
        actor = entry["actor"]
        if not entry["detail"]["accepted"] or actor["kind"] != "user" or actor["id"] in run.contributors:
            return []
        run.contributors[actor["id"]] = actor["name"]
        self._unsaved.add(run.id)
        deltas = [Delta(None, "runs", self.run(run.id))]
        return [self._delta(unit, "units"), *deltas] if run.id == unit.run else deltas

    @staticmethod
    def _audit(view: RunView, event: DomainEvent, what: str, detail: dict[str, Any]) -> None:
        view.audit.append(_audit_entry(event, what, detail))

    def _run_deltas(self, unit: UnitView, run: RunSummary) -> list[Delta]:
        """A run started or ended: every live view of the unit changed. The run log and the
        error log of the unit now belong to another run (or none), and start empty."""
        return [self._delta(unit, "units"), self._delta(unit, "control_state"), self._delta(unit, "method"),
                _log_delta(unit, "run_log", []), _log_delta(unit, "error_log", []),
                Delta(None, "runs", self.run(run.id))]

    def _delta(self, unit: UnitView, topic: str) -> Delta:
        queries = {"units": self.unit, "control_state": self.control_state, "method": self.method}
        return Delta(unit.id, topic, queries[topic](unit.id))

    # -- unit queries --------------------------------------------------------------------------

    def units(self) -> list[dict[str, Any]]:
        """Every unit ever seen, in order of first appearance: identity, ``state`` (online or
        offline), ``run_state`` (ready, running, paused, holding, error or offline), the active
        run with its start, ``run_time`` (the engine's ``Run Time`` tag, s) and contributors."""
        return [self._unit_summary(unit) for unit in self._units.values()]

    def unit(self, unit_id: str) -> dict[str, Any] | None:
        unit = self._units.get(unit_id)
        return self._unit_summary(unit) if unit is not None else None

    def _unit_summary(self, unit: UnitView) -> dict[str, Any]:
        run = self._runs[unit.run] if unit.run is not None else None
        run_time = unit.values.get("Run Time") if run is not None else None
        description = unit.description
        return {
            "id": unit.id, "name": unit.name, "computer_name": unit.computer_name, "uod_name": unit.uod_name,
            "engine_version": unit.engine_version, "location": description.get("location", ""),
            "uod_author_name": description.get("uod_author_name", ""),
            "uod_author_email": description.get("uod_author_email", ""),
            "state": "online" if unit.online else "offline", "run_state": _run_state(unit),
            "last_seen": iso(unit.last_seen), "run_id": unit.run,
            "run_started": iso(run.started) if run is not None else None,
            "run_time": run_time,
            "last_run_id": unit.last_run,
            "last_run_completed": iso(self._runs[unit.last_run].completed) if unit.last_run is not None else None,
            "contributors": _contributors(run) if run is not None else [],
            "required_roles": list(description.get("required_roles", [])),
            "process_diagram": bool(description.get("process_diagram")),
        }

    def process_diagram(self, unit_id: str) -> str | None:
        """The process diagram's SVG as the engine sent it (sanitise it before serving it): ""
        when the unit has none, None for an unknown unit."""
        unit = self._units.get(unit_id)
        return (unit.description.get("process_diagram") or "") if unit is not None else None

    def uod_description(self, unit_id: str) -> dict[str, Any] | None:
        """The unit's UOD as it described itself: tags with units, readings, commands, plot..."""
        unit = self._units.get(unit_id)
        if unit is None or not unit.description:
            return None
        return copy.deepcopy(unit.description)

    def process_values(self, unit_id: str) -> list[dict[str, Any]] | None:
        """The latest value of every sampled tag and every process value (None before its first
        sample): UOD tags in the UOD's order, then the rest."""
        unit = self._units.get(unit_id)
        if unit is None:
            return None
        tags = {tag["name"]: tag for tag in unit.description.get("tags", [])}
        readings = {reading["tag_name"]: reading for reading in unit.description.get("readings", [])}
        helps = {command["name"]: command.get("help", "") for command in unit.description.get("commands", [])}
        values = []
        # Process values (the UOD's readings) are listed before their first sample too: the UI
        # shows their tiles and commands from the start.
        order = [*(name for name in tags if name in unit.values or name in readings),
                 *(name for name in unit.values if name not in tags)]
        for name in order:
            value, time = unit.values.get(name), unit.value_times.get(name)
            tag = tags.get(name, {})
            reading = readings.get(name)
            values.append({"name": name, "value": value, "unit": tag.get("unit") or None, "time": iso(time),
                           "direction": tag.get("direction"), "format": tag.get("format"),
                           "decimals": tag.get("decimals"),
                           "kind": reading["kind"] if reading is not None else None,
                           "commands": _reading_commands(reading, helps) if reading is not None else []})
        return values

    def control_state(self, unit_id: str) -> dict[str, Any] | None:
        """``is_running`` while a run is active (also paused or holding); paused and holding
        follow System State, where paused wins when both hold."""
        unit = self._units.get(unit_id)
        if unit is None:
            return None
        return {"system_state": unit.system_state, "method_status": unit.method_status,
                "is_running": unit.run is not None, "is_paused": unit.system_state == "Paused",
                "is_holding": unit.system_state == "Holding"}

    def method(self, unit_id: str) -> dict[str, Any] | None:
        unit = self._units.get(unit_id)
        return unit.method.view() if unit is not None else None

    def run_log(self, unit_id: str) -> list[dict[str, Any]] | None:
        """The active run's items, in order of first appearance; empty without a run."""
        unit = self._units.get(unit_id)
        if unit is None:
            return None
        return self.run_log_of(unit.run) if unit.run is not None else []

    def error_log(self, unit_id: str) -> list[dict[str, Any]] | None:
        """The active run's errors newest first; without a run, those since the last run."""
        unit = self._units.get(unit_id)
        if unit is None:
            return None
        return self._resident(unit.run).errors.view() if unit.run is not None else unit.idle_errors.view()

    def plot_configuration(self, unit_or_run_id: str) -> dict[str, Any] | None:
        """A unit's current plot configuration, or the one a run used."""
        unit = self._units.get(unit_or_run_id)
        if unit is not None:
            return copy.deepcopy(unit.description.get("plot_configuration", {}))
        view = self._shown(unit_or_run_id)
        return copy.deepcopy(view.plot_configuration) if view is not None else None

    def plot_series(self, unit_or_run_id: str) -> dict[str, list[list[Any]]] | None:
        """{tag: [[epoch seconds, value], ...]} for every plotted tag (plot configuration and
        readings) of a run, or of a unit's active run ({} without one). One point per change:
        a value holds until the next point."""
        unit = self._units.get(unit_or_run_id)
        if unit is not None:
            return self.plot_series(unit.run) if unit.run is not None else {}
        view = self._shown(unit_or_run_id)
        if view is None:
            return None
        return {tag: [[time, value] for time, value in points] for tag, points in view.series.items()}

    # -- run queries ---------------------------------------------------------------------------

    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first, each as :meth:`run` gives it."""
        return [self._run_summary(run) for run in reversed(self._runs.values())]

    def run(self, run_id: str) -> dict[str, Any] | None:
        run = self._runs.get(run_id)
        return self._run_summary(run) if run is not None else None

    def _run_summary(self, run: RunSummary) -> dict[str, Any]:
        return {"run_id": run.id, "engine_id": run.unit, **run.identity,
                "aggregator_computer_name": self.aggregator_name, "aggregator_version": self.aggregator_version,
                "started_date": iso(run.started), "completed_date": iso(run.completed),
                "interrupted": run.interrupted, "contributors": _contributors(run)}

    def run_columns(self, run_id: str) -> list[tuple[str, str | None]] | None:
        """The tags of a run with their units, in CSV column order: the UOD's tags in the UOD's
        order, then tags only seen in samples, in order of first appearance."""
        view = self._shown(run_id)
        return list(view.columns.items()) if view is not None else None

    def run_method(self, run_id: str) -> dict[str, Any] | None:
        """The run's final method and line states, the method in force at its start, and every
        revision saved during the run."""
        view = self._shown(run_id)
        if view is None:
            return None
        initial = view.initial_method
        return {**view.method.view(),
                "initial": {**initial, "lines": [dict(line) for line in initial["lines"]]},
                "revisions": [{**revision, "time": iso(revision["time"]), "author": dict(revision["author"]),
                               "lines": [dict(line) for line in revision["lines"]]}
                              for revision in view.revisions]}

    def run_log_of(self, run_id: str) -> list[dict[str, Any]] | None:
        view = self._shown(run_id)
        return [dict(item) for item in view.run_log.values()] if view is not None else None

    def run_error_log(self, run_id: str) -> list[dict[str, Any]] | None:
        view = self._shown(run_id)
        return view.errors.view() if view is not None else None

    def audit_trail(self, run_id: str) -> list[dict[str, Any]] | None:
        """Who did what and when in a run, in log order: every request (accepted or refused,
        with the reason), method revision (old -> new version) and state change (old -> new)."""
        view = self._shown(run_id)
        if view is None:
            return None
        return [copy.deepcopy({**entry, "time": iso(entry["time"])}) for entry in view.audit]

    # -- the whole state -----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The projected state as canonical JSON (sorted keys, no spaces): equal projections
        give equal bytes. Every run's view is loaded for it (for tests and tools)."""
        runs = {run_id: {**vars(run), **vars(self._resident(run_id))} for run_id, run in self._runs.items()}
        state = {"position": self._position, "units": self._units, "runs": runs}
        return json.dumps(state, default=vars, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _audit_entry(event: DomainEvent, what: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {"time": event.time, "actor": _actor(event), "what": what, "detail": detail}


def _answered(entry: dict[str, Any] | None, event: RequestAnswered) -> dict[str, Any]:
    """A request's audit entry, completed with its answer."""
    assert entry is not None
    entry["detail"]["accepted"], entry["detail"]["reason"] = event.accepted, event.reason
    return entry


def _log_delta(unit: UnitView, topic: str, changed: list[dict[str, Any]]) -> Delta:
    return Delta(unit.id, topic, {"run": unit.run, "changed": changed})


def _actor(event: DomainEvent) -> dict[str, str]:
    return {"kind": event.actor.kind, "id": event.actor.id, "name": event.actor.name}


def _contributors(run: RunSummary) -> list[dict[str, str]]:
    return [{"id": user_id, "name": name} for user_id, name in run.contributors.items()]


def _run_state(unit: UnitView) -> str:
    """offline > error (a run interrupted by an error) > running / paused / holding > ready."""
    if not unit.online:
        return "offline"
    if unit.run is not None and unit.method_status == "Error":
        return "error"
    return {"Running": "running", "Paused": "paused", "Holding": "holding"}.get(unit.system_state or "", "ready")


def plotted_tags(description: dict[str, Any]) -> list[str]:
    """The tags a run keeps series of: those its plot configuration mentions, then readings."""
    plot = description.get("plot_configuration", {})
    names = [*plot.get("process_value_names_to_annotate", []),
             *(region["process_value_name"] for region in plot.get("color_regions", [])),
             *(name for sub_plot in plot.get("sub_plots", []) for axis in sub_plot["axes"]
               for name in axis["process_value_names"]),
             *plot.get("x_axis_process_value_names", []),
             *(reading["tag_name"] for reading in description.get("readings", []))]
    return list(dict.fromkeys(names))


_ENTRY_VALUE_TYPES = {"number": "float", "text": "str", "choice": "choice"}  # an entry's rules' type -> value_type


def _reading_commands(reading: dict[str, Any], helps: dict[str, str]) -> list[dict[str, Any]]:
    """What a user can do with a process value: enter a value, or pick one of the choices."""
    if reading["kind"] == "reading_with_entry":
        name = reading.get("execute_command_name") or reading["tag_name"]
        rules = reading.get("entry")  # what the page checks before sending (None from older engines)
        if not rules:
            return [{"name": name, "value_type": reading.get("entry_data_type"), "help": helps.get(name, ""),
                     "rules": None}]
        value_type = "int" if rules.get("int_only") else _ENTRY_VALUE_TYPES[rules["type"]]
        return [{"name": name, "value_type": value_type, "help": helps.get(name, ""), "rules": rules,
                 **({"options": rules["options"]} if value_type == "choice" else {})}]
    if reading["kind"] == "reading_with_choice":
        options = reading.get("command_options") or {}
        return [{"name": reading["tag_name"], "value_type": "choice", "options": list(options)}]
    return []
