"""Start-up bench: how long a real aggregator takes to answer its first HTTP request, with a
checkpoint of its views and without (a replay of the whole log), and its memory.

    python bench/startup_bench.py [--events 1000000 10000000] [--units 20] [--runs 1000] [--keep DIR]
    python bench/startup_bench.py --failover ROUNDS [--engines 3]

For each store size: a store of that many events is written as an aggregator writes it, then a
real ``pectus-aggregator`` process is started on it and timed from its launch to the first
``200`` of ``GET /api/process_units`` (it serves only once its views are ready):

* **full replay**: the store has no checkpoint (its first start: the views are rebuilt from the
  whole log, and a checkpoint saved on the way);
* **checkpoint**: the next start, after a clean stop (the checkpoint is at the log's end);
* **checkpoint + tail**: as after a crash just before the next periodic save: events appended
  after the checkpoint, as many as the aggregator folds between two saves (SAVE_EVERY_EVENTS).

With each start its RSS (psutil) once it serves. ``--runs`` builds one more store, of that many
finished runs with ``--units`` units each in a run (live), and prints the aggregator's RSS after
start and after reading every finished run's views through the API (loaded on demand, a few kept).

``--failover`` measures instead a standby's takeover (the start-up that matters when the active
aggregator dies): on tests/failover.py's site - a PostgreSQL store (fsync on), two aggregator
processes, ``--engines`` demo engines given both addresses and running a method - the active
aggregator is SIGKILLed ROUNDS times, back and forth (the killed one started again as the standby),
each time timed to the standby's first ``200`` of ``/health`` and to every engine reconnected to it.

The store tells the truth: the demo UOD and method run on a virtual clock through the engine's own
RecordBuilder (bench/aggregator_bench.py's ``demo_traffic``); each unit replays those records with
its own times and run ids, and each record becomes the event an engine session stores (the
session's own conversion, ``EngineSession._event``), after the events a session stores when an
engine enrols and connects. The events are appended in batches of 2,000, each batch one signed
transaction, as the aggregator's writer appends them.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import psutil
from aggregator_bench import BIN, ROOT, SIM_START, demo_traffic, render, replay

from pectus.actors.aggregator import SIGNING_KEY_FILE, STORE_FILE
from pectus.actors.engine_session import Engines, EngineSession, UnitMemory
from pectus.credentials import key_digest
from pectus.events import domain as d
from pectus.events import records as r
from pectus.events.signing import load_or_create_signer
from pectus.events.store import NewEvent, SQLiteEventStore
from pectus.hardware.opcua_server import free_port
from pectus.projections.checkpoint import SAVE_EVERY_EVENTS

BATCH = 2_000  # events per transaction
START = 1_900_000_000.0  # the first unit's clock at its first record


class Unit:
    """One emulated demo unit's stored events, tick by tick, as its engine session stores them."""

    _session = EngineSession(Engines(writer=None, hub=None), send=None, receive=None)  # type: ignore[arg-type]

    def __init__(self, number: int) -> None:
        self.name = f"bench-{number:03d}_DemoUod"
        self.actor = d.Actor.engine(self.name)
        self.outbox = uuid.uuid5(uuid.NAMESPACE_URL, f"pectus-bench:{self.name}").hex  # an outbox id, as engines make
        self.memory = UnitMemory()
        self.state: tuple[str | None, str | None] = (None, None)
        self.seq = 0
        self.running = False
        began = START + number * 0.37
        traffic = demo_traffic()
        # What the Uplink's outbox holds at start (the UOD, the method), then (live frame, record
        # texts) per 0.1 s tick.
        present = (None, [render(record, began - SIM_START, {}) for record in traffic.present])
        self.ticks = itertools.chain([present], replay(traffic, began))
        self.time = began

    def connected(self) -> list[d.DomainEvent]:
        """What is stored when the engine is enrolled and connects."""
        base = {"time": self.time, "unit": self.name}
        return [d.EngineEnrolled(**base, key_sha256=key_digest(f"{self.name}-key")),
                d.EngineRegistered(**base, actor=self.actor, outbox=self.outbox, computer_name="bench",
                                   uod_name="DemoUod", engine_version="0.1.0", protocol=1, credential="key"),
                d.EngineConnected(**base, actor=self.actor)]

    def tick(self) -> list[d.DomainEvent]:
        """The events of the unit's next tick (most ticks have none)."""
        _, texts = next(self.ticks)
        events = []
        for text in texts:
            self.seq += 1
            record = r.check_record(f'{{"seq":{self.seq},{text[1:]}')  # numbered as the Uplink sends it
            self.time = record.time
            base = {"unit": self.name, "actor": self.actor, "seq": self.seq, "outbox": self.outbox}
            event = self._session._event(record, base, self.memory, self.state)
            if isinstance(event, d.StateChanged):
                self.state = (event.system_state, event.method_status)
            self.running = isinstance(event, d.RunStarted) or self.running and not isinstance(event, d.RunStopped)
            events.append(event)
        return events


@dataclass
class Written:
    events: int
    runs: int  # finished
    seconds: float
    size: int  # bytes of the store file


def write_store(data: Path, units: list[Unit], *, events: int = 0, finished_runs: int = 0) -> Written:
    """Appends to the store in ``data`` the units' traffic, round robin tick by tick, until at least
    ``events`` events and ``finished_runs`` finished runs are stored, then until every unit is in
    a run. The store is signed with the data directory's key, as the aggregator's."""
    data.mkdir(parents=True, exist_ok=True)
    store = SQLiteEventStore(data / STORE_FILE, load_or_create_signer(data / SIGNING_KEY_FILE))
    began, written, runs = time.perf_counter(), 0, 0
    pending: list[NewEvent] = []

    def stored(produced: list[d.DomainEvent]) -> None:
        nonlocal written, runs
        pending.extend(event.stored() for event in produced)
        runs += sum(isinstance(event, d.RunStopped) for event in produced)
        if len(pending) >= BATCH:
            store.append(pending)
            written += len(pending)
            pending.clear()

    if not store.last_position():
        for unit in units:
            stored(unit.connected())
    for _ in itertools.count():
        for unit in units:
            stored(unit.tick())
        if written + len(pending) >= events and runs >= finished_runs and all(unit.running for unit in units):
            break
    store.append(pending)
    written += len(pending)
    store.close()
    return Written(written, runs, time.perf_counter() - began, (data / STORE_FILE).stat().st_size)


@dataclass
class Start:
    seconds: float  # launch to the first 200
    rss: float  # MB, once serving
    how: str  # the aggregator's own words


def start(data: Path) -> tuple[subprocess.Popen, Start, int]:
    """A real aggregator process on ``data``, timed to its first 200."""
    port = free_port()
    log = data / "aggregator.log"
    began = time.perf_counter()
    process = subprocess.Popen([str(BIN / "pectus-aggregator"), "--port", str(port), "--data-dir", str(data),
                                "--log-level", "INFO"], stderr=log.open("w"))
    deadline = time.monotonic() + 3600
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
        while time.monotonic() < deadline:
            try:
                if api.get("/api/process_units").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.01)
        else:
            raise RuntimeError("the aggregator did not serve within the hour")
    seconds = time.perf_counter() - began
    how = next((line.split(":", 2)[-1].strip() for line in log.read_text().splitlines() if "views " in line), "?")
    return process, Start(seconds, psutil.Process(process.pid).memory_info().rss / 1e6, how), port


def stop(process: subprocess.Popen) -> None:
    """A clean stop (SIGTERM): the aggregator saves its checkpoint on the way out."""
    process.terminate()
    process.wait(600)


def starts(data: Path, tail: list[Unit]) -> list[tuple[str, Start]]:
    measured = []
    for label in ("full replay", "checkpoint"):
        process, figure, _ = start(data)
        stop(process)
        measured.append((label, figure))
    write_store(data, tail, events=SAVE_EVERY_EVENTS)
    process, figure, _ = start(data)
    stop(process)
    measured.append((f"checkpoint + {SAVE_EVERY_EVENTS:,} events", figure))
    return measured


def memory_with_runs(data: Path, units: int, runs: int) -> None:
    written = write_store(data, [Unit(i) for i in range(units)], finished_runs=runs)
    process, _, _ = start(data)  # the first start replays and saves the checkpoint
    stop(process)
    process, figure, port = start(data)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as api:
            finished = [run["run_id"] for run in api.get("/api/runs").json() if run["completed_date"]]
            began = time.perf_counter()
            for run in finished:
                for view in ("run_log", "method", "error_log", "plot_log", "audit"):
                    assert api.get(f"/api/runs/{run}/{view}").status_code == 200
            read = time.perf_counter() - began
            after = psutil.Process(process.pid).memory_info().rss / 1e6
    finally:
        stop(process)
    print(f"{written.runs:,} finished runs, {units} units in a run ({written.events:,} events): RSS {figure.rss:.0f} MB "
          f"once serving (start {figure.seconds:.2f} s); {after:.0f} MB after every finished run's views were read "
          f"through the API ({len(finished) * 5:,} requests in {read:.1f} s, each run's views loaded on demand)")


def failover(folder: Path, rounds: int, engines: int) -> None:
    """The standby's takeover after the active aggregator's SIGKILL, ``rounds`` times (see the docstring)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from failover import METHOD, Site, until  # the failover test's site
    from postgres import PostgreSQLServer  # the tests' throwaway server

    server = PostgreSQLServer(fsync=True)
    server.start()
    site = Site(folder, server.new_database(), engines)
    try:
        site.start_aggregator(0)
        until(lambda: site.serving(0), 60, "the first aggregator serving")
        site.start_aggregator(1)
        site.start_engines()
        until(lambda: site.serving(0, engines), 60, "the engines connected")
        for unit in site.units:
            site.start_run(0, unit, METHOD)
        serving, reconnected = [], []
        for round_ in range(rounds):
            active, standby = round_ % 2, 1 - round_ % 2
            until(partial(site.waiting, standby), 60, "the standby waiting")
            killed = time.perf_counter()
            site.aggregators[active].kill()
            until(partial(site.serving, standby), 60, "the standby serving", step=0.01)
            serving.append(time.perf_counter() - killed)
            until(partial(site.serving, standby, engines), 60, "the engines reconnected", step=0.01)
            reconnected.append(time.perf_counter() - killed)
            site.aggregators[active].wait()
            site.start_aggregator(active)  # back, as the standby
    finally:
        site.close()
        server.remove()
    print(f"failover, the active aggregator SIGKILLed with {engines} engines running methods ({rounds} times): the "
          f"standby's first HTTP 200 after {statistics.median(serving):.2f} s (median; {min(serving):.2f} to "
          f"{max(serving):.2f} s), every engine reconnected after {statistics.median(reconnected):.2f} s "
          f"({min(reconnected):.2f} to {max(reconnected):.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--units", type=int, default=20, help="units, each in a run at the end")
    parser.add_argument("--runs", type=int, default=1_000, help="finished runs of the memory figure (0: none)")
    parser.add_argument("--keep", type=Path, help="build the stores here and keep them (default: a temporary folder)")
    parser.add_argument("--failover", type=int, metavar="ROUNDS",
                        help="measure a standby's takeover ROUNDS times instead of the start-ups")
    parser.add_argument("--engines", type=int, default=3, help="engines running during --failover")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="pectus-startup-"))
    if args.failover:
        try:
            failover(folder, args.failover, args.engines)
        finally:
            if args.keep is None:
                shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        if args.runs:
            memory_with_runs(folder / "runs", args.units, args.runs)
        for events in args.events:
            data = folder / f"events-{events}"
            units = [Unit(i) for i in range(args.units)]
            written = write_store(data, units, events=events)
            print(f"store of {written.events:,} events ({written.runs:,} finished runs, {args.units} units in a run, "
                  f"{written.size / 2**20:,.0f} MiB) written in {written.seconds:.0f} s")
            for label, figure in starts(data, units):
                print(f"  start to first HTTP 200, {label}: {figure.seconds:.2f} s, RSS {figure.rss:.0f} MB "
                      f"({figure.how})")
            sys.stdout.flush()
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
