"""Aggregator benchmark: a real aggregator process, engines and browsers over real WebSockets.

    python bench/aggregator_bench.py curve [--units 20 50 100 200] [--seconds 40] [--py-spy FILE]
    python bench/aggregator_bench.py compare [--engines 5] [--seconds 40]
    python bench/aggregator_bench.py ingest [--engines 20] [--records 3000]
    python bench/aggregator_bench.py stores [--engines 20] [--records 3000]

``curve``: for each number of running units, a fresh aggregator process and that many emulated
demo engines (below), driven from bench processes of their own. Over the measured window (after
the engines connected and warmed up) it prints one row: the aggregator's CPU (% of one core,
psutil on its pid: the bench's own CPU is not in it) and RSS, the p99 latency of a reader polling
GET routes a few times a second (the units list, one unit's process values and run log),
the p99 of record-frame-to-ack latency, and whether the engines' backlog (records sent, not yet
acknowledged) grows. Targets: 200 running units under 100 % of one core, API p99 <= 50 ms, no
growing backlog. ``--py-spy FILE`` records the aggregator with py-spy (when installed) during
the last level's window and prints the functions that hold the loop.

``compare``: the same aggregator measure for a few REAL engine processes (``pectus-engine`` with
the demo UOD, the demo method saved and started through the API) and then for as many emulated
engines: the two per-engine figures should agree (within ~20 %).

``ingest``: tag-sample records/s as fast as acks come and sustained, replay speed, the store
alone, a 24 h CSV export, and engine -> browser latency (the targets are printed with them).

``stores``: the same ingest (saturation: as fast as acks come; p99 at a sustained rate), replay
rate and store-alone figures for each backend, side by side: the SQLite file, and PostgreSQL - a
throwaway server of Debian's postgresql package on loopback (the tests' tests/postgres.py), with
fsync on as in a deployment, on the same disk.

The emulated engine tells the truth: it sends what the demo engine sends, record for record and
frame for frame. The demo UOD and method run once, on a virtual clock, through the engine's own
:class:`~pectus.actors.uplink.RecordBuilder` (:func:`demo_traffic`); each emulated engine then
replays those ticks on a real 0.1 s clock, with the times moved to its own clock and the run ids
made its own, and ships them as the Uplink does: a ``live`` frame every LIVE_INTERVAL with the
newest value of each tag that changed, the records in a ``records`` frame every half second (the outbox's flush), a heartbeat
every 5 s, acknowledgements received and timed as they come (the Uplink does not stop sending
while it waits for them).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import math
import multiprocessing
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import msgspec
import psutil
import trio
from measure import percentile
from trio_websocket import ConnectionClosed, open_websocket_url

from pectus.actors.uplink import FLUSH_INTERVAL, LIVE_INTERVAL, RecordBuilder
from pectus.events import domain as d
from pectus.events import protocol as p
from pectus.events.signing import ChainSigner, load_or_create_signer
from pectus.events.store import NewEvent, SQLiteEventStore, open_store
from pectus.hardware.opcua_server import free_port
from pectus.projections.export import csv_rows
from pectus.projections.views import Projector
from pectus.testing import Simulator

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMO_UOD = ROOT / "uods" / "demo_uod.py"
DEMO_METHOD = ROOT / "uods" / "demo_method.pcode"
BATCH = 20  # records per frame: an engine's backlog after a short cut; live it sends one or two
TAGS = 10  # tag values per sample record
TICK = 0.1  # the engine's scan interval (s)
FLUSH_TICKS = round(FLUSH_INTERVAL / TICK)  # ticks per outbox write: records go out in a frame per write
LIVE_TICKS = math.ceil(LIVE_INTERVAL / TICK - 1e-9)  # ticks per live frame of a unit whose tags change every tick
HEARTBEAT_TICKS = 50  # a heartbeat every 5 s
SIM_START = 1_800_000_000.0  # the virtual clock's start: every time the demo produced lies after it
SIM_SPAN = 10_000_000.0  # ... and before SIM_START + SIM_SPAN; no tag value of the demo does
ENGINES_PER_WORKER = 100  # emulated engines per bench process
RAMP = 5.0  # seconds over which the engines of a level connect
WARM_UP = 5.0  # seconds between the last engine connecting and the measured window


# -- the demo engine's traffic --------------------------------------------------------------

Template = tuple  # an encoded frame or record: literal texts, and holes (a time: float; a run id: (id,))


@dataclass(frozen=True)
class Tick:
    """What one scan of the demo engine hands the Uplink: the tags that changed (its live frame,
    None when none did) and the records the tick produced (kept until the next outbox write)."""

    live: Template | None
    records: list[Template]


@dataclass(frozen=True)
class Traffic:
    """The demo engine's frames and records, tick by tick, encoded as the Uplink encodes them.

    ``present``: what the Uplink puts in the outbox at start (the UOD and the method);
    ``prelude``: a second of idle ticks, then the demo method saved; ``body``: the method started,
    run to its end and a few idle seconds, for ``runs`` runs - repeated for as long as an engine
    runs (the demo method looped). ``runs`` are the run ids the body names."""

    present: list[Template]
    prelude: list[Tick]
    body: list[Tick]
    runs: frozenset[str]


@functools.lru_cache(maxsize=1)
def demo_traffic(runs: int = 2) -> Traffic:
    """Runs the demo UOD and method on a virtual clock through the engine's RecordBuilder."""
    sim = Simulator(DEMO_UOD, start_time=SIM_START)
    builder = RecordBuilder(sim.engine)
    present = builder.present(SIM_START)
    ticks: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []

    def tick() -> None:
        sim.run_ticks(1)
        events, sim.events = sim.events, []
        records, live = builder.feed(events) if events else ([], [])  # the scan cycle skips an empty tick
        ticks.append((live, records))

    for _ in range(10):
        tick()
    saved = sim.save_method(DEMO_METHOD.read_text())
    assert saved, saved.reason
    tick()
    prelude = len(ticks)
    for _ in range(runs):
        started = sim.start()
        assert started, started.reason
        for _ in range(100_000):
            tick()
            if any(record["kind"] == "run_stopped" for record in ticks[-1][1]):
                break
        else:
            raise RuntimeError("the demo method did not stop within 10,000 s")
        for _ in range(20):
            tick()
    run_ids = frozenset(record["run"] for _, records in ticks for record in records if record["run"])

    def frame(live: list[dict[str, Any]], records: list[dict[str, Any]]) -> Tick:
        return Tick(template(live, run_ids, lambda values: p.encode(p.Live(values))) if live else None,
                    [template(record, run_ids, _record_text) for record in records])

    def paced(ticks: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> list[Tick]:
        """The Uplink's live pacing: the newest value of each tag, one frame per LIVE_INTERVAL."""
        pending: dict[str, dict[str, Any]] = {}
        frames = []
        for k, (live, records) in enumerate(ticks):
            pending.update((value["name"], value) for value in live)
            due = k % LIVE_TICKS == 0
            frames.append(frame(list(pending.values()) if due else [], records))
            if due:
                pending = {}
        return frames

    return Traffic([template(record, run_ids, _record_text) for record in present],
                   paced(ticks[:prelude]), paced(ticks[prelude:]), run_ids)


def _record_text(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)  # as the Uplink's outbox stores it


_HOLE = re.compile(r'"@@(\d+)@@"')


def template(value: Any, runs: frozenset[str], encode: Callable[[Any], str]) -> Template:
    """``value`` encoded, its times (floats in the virtual clock's span) and run ids left open."""
    holes: list[float | tuple[str]] = []

    def mark(item: Any) -> Any:
        if isinstance(item, float) and SIM_START <= item < SIM_START + SIM_SPAN or isinstance(item, str) and item in runs:
            holes.append(item if isinstance(item, float) else (item,))
            return f"@@{len(holes) - 1}@@"
        if isinstance(item, dict):
            return {str(key): mark(inner) for key, inner in item.items()}  # tag names may be str enums
        if isinstance(item, list):
            return [mark(inner) for inner in item]
        return item

    pieces = _HOLE.split(encode(mark(value)))
    return tuple(piece if i % 2 == 0 else holes[int(piece)] for i, piece in enumerate(pieces))


def render(parts: Template, shift: float, runs: dict[str, str]) -> str:
    """A template's text with its times moved by ``shift`` seconds and its run ids renamed."""
    return "".join(part if type(part) is str else repr(part + shift) if type(part) is float
                   else f'"{runs[part[0]]}"' for part in parts)


def replay(traffic: Traffic, began: float) -> Iterator[tuple[str | None, list[str]]]:
    """One engine's ticks from ``began`` (its wall-clock start), as (live frame, record texts):
    the prelude, then the body again and again, each pass with fresh run ids and its times one
    pass later."""
    shift = began - SIM_START
    runs: dict[str, str] = {}
    for tick in traffic.prelude:
        yield (render(tick.live, shift, runs) if tick.live else None), [render(r, shift, runs) for r in tick.records]
    length = len(traffic.body) * TICK
    while True:
        runs = {run: str(uuid.uuid4()) for run in traffic.runs}
        for tick in traffic.body:
            yield (render(tick.live, shift, runs) if tick.live else None), [render(r, shift, runs)
                                                                             for r in tick.records]
        shift += length


# -- emulated engines -----------------------------------------------------------------------

@dataclass
class Tally:
    """What the engines of one bench process saw. Times are wall-clock; latencies and lateness
    only inside the measured window."""

    window: tuple[float, float]
    acks: list[float] = field(default_factory=list)  # records frame -> its ack (s)
    late: list[float] = field(default_factory=list)  # how late the bench sent a tick (s)
    backlog: dict[int, int] = field(default_factory=dict)  # second of the window -> records not yet acked
    frames: int = 0
    records: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)

    def measuring(self, now: float) -> bool:
        return self.window[0] <= now < self.window[1]


@dataclass
class Link:
    """One emulated engine's position: the last record sent, the last acknowledged, and the
    records frames waiting for their ack (last seq, when sent)."""

    sent: int = 0
    acked: int = 0
    waiting: collections.deque = field(default_factory=collections.deque)


def emulated_hello(name: str, newest: int) -> str:
    """An emulated engine's hello: its own key (enrolled on first use) and an outbox of its own
    (a fresh one per bench run: welcome's last_seq is 0)."""
    return p.encode(p.Hello(p.PROTOCOL_VERSION, name, "bench", "DemoUod", "0.1.0", f"{name}-key",
                            uuid.uuid4().hex, newest))


def records_frame(texts: list[str], first_seq: int) -> str:
    """Records as the Uplink sends them from its outbox: each numbered, in one ``records`` frame."""
    return p.encode(p.Records([msgspec.Raw(f'{{"seq":{seq},{text[1:]}')
                               for seq, text in enumerate(texts, first_seq)]))


async def emulated_engine(port: int, name: str, until: float, tally: Tally, link: Link | None = None) -> None:
    """One demo engine from connect until the wall-clock time ``until``."""
    link = link or Link()
    traffic = demo_traffic()
    async with open_websocket_url(f"ws://127.0.0.1:{port}/engine", max_message_size=p.MAX_FRAME) as ws:
        await ws.send_message(emulated_hello(name, len(traffic.present)))
        welcome = p.decode(await ws.get_message(), allowed=p.FROM_AGGREGATOR)
        if not isinstance(welcome, p.Welcome):
            raise RuntimeError(f"{name}: {welcome}")

        async def send_records(records: list[str]) -> None:
            frame = records_frame(records, link.sent + 1)
            link.sent += len(records)
            link.waiting.append((link.sent, time.time()))
            await ws.send_message(frame)
            tally.frames += 1
            tally.records += len(records)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_receive, ws, link, tally)
            began = time.time()
            await send_records([render(record, began - SIM_START, {}) for record in traffic.present])
            clock = trio.current_time()
            outbox: list[str] = []
            for k, (live, records) in enumerate(replay(traffic, began)):
                due = clock + k * TICK
                if began + k * TICK >= until:
                    break
                await trio.sleep_until(due)
                if tally.measuring(time.time()):
                    tally.late.append(trio.current_time() - due)
                if live is not None:
                    await ws.send_message(live)
                    tally.frames += 1
                outbox += records
                if k % FLUSH_TICKS == FLUSH_TICKS - 1 and outbox:
                    await send_records(outbox)
                    outbox = []
                if k % HEARTBEAT_TICKS == HEARTBEAT_TICKS - 1:
                    await ws.send_message(p.encode(p.Heartbeat()))
            nursery.cancel_scope.cancel()


async def _receive(ws, link: Link, tally: Tally) -> None:
    while True:
        message = p.decode(await ws.get_message(), allowed=p.FROM_AGGREGATOR)
        if isinstance(message, p.Ack):
            now = time.time()
            link.acked = message.seq
            while link.waiting and link.waiting[0][0] <= message.seq:
                _, sent = link.waiting.popleft()
                if tally.measuring(now):
                    tally.acks.append(now - sent)
            if message.refused:
                tally.errors[f"refused: {message.refused[0].reason}"] += len(message.refused)


async def drive(port: int, names: list[str], starts: list[float], until: float,
                window: tuple[float, float]) -> Tally:
    """Emulated engines ``names``, each connecting at its wall-clock start, until ``until``."""
    tally = Tally(window)
    links = [Link() for _ in names]

    async def one(name: str, start: float, link: Link) -> None:
        await trio.sleep(max(0.0, start - time.time()))
        try:
            await emulated_engine(port, name, until, tally, link)
        except (OSError, ConnectionClosed, RuntimeError, p.ProtocolError) as error:
            tally.errors[f"{type(error).__name__}: {error}"[:200]] += 1

    async def sample() -> None:
        """Records sent and not yet acknowledged, over all engines, once a second of the window."""
        await trio.sleep(max(0.0, window[0] - time.time()))
        second = 0
        while time.time() < window[1]:
            tally.backlog[second] = sum(link.sent - link.acked for link in links)
            second += 1
            await trio.sleep(1.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        for name, start, link in zip(names, starts, links):
            nursery.start_soon(one, name, start, link)
    return tally


def _worker(port: int, names: list[str], starts: list[float], until: float, window: tuple[float, float],
            results: Any) -> None:
    demo_traffic()  # before the first engine's start: a level's processes are all ready in time
    results.put(trio.run(drive, port, names, starts, until, window))


def run_emulated(port: int, units: int, window: tuple[float, float], ramp: float, began: float,
                 prefix: str = "bench") -> tuple[list[Any], Any]:
    """Start ``units`` emulated engines in bench processes of their own (``ENGINES_PER_WORKER``
    each); returns the processes and the queue their tallies arrive on."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    names = [f"{prefix}-{i}_DemoUod" for i in range(units)]
    # Real engines tick, flush and send in phases of their own: emulated ones in step would reach the
    # aggregator in bursts, and be written together, costing it less than real ones (what compare found).
    starts = [began + ramp * i / max(1, units) + random.random() * FLUSH_INTERVAL for i in range(units)]
    workers = []
    for chunk in range(0, units, ENGINES_PER_WORKER):
        worker = context.Process(target=_worker, args=(port, names[chunk:chunk + ENGINES_PER_WORKER],
                                                       starts[chunk:chunk + ENGINES_PER_WORKER],
                                                       window[1] + 1.0, window, results), daemon=True)
        worker.start()
        workers.append(worker)
    return workers, results


def collect(workers: list, results: Any) -> Tally:
    tallies = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(10)
    total = Tally(tallies[0].window)
    for tally in tallies:
        total.acks += tally.acks
        total.late += tally.late
        total.frames += tally.frames
        total.records += tally.records
        total.errors.update(tally.errors)
        for second, count in tally.backlog.items():
            total.backlog[second] = total.backlog.get(second, 0) + count
    return total


def backlog_grows(backlog: dict[int, int], units: int) -> bool:
    """Records waiting for their ack in the window's last quarter exceed those of its first
    quarter by more than one outbox write per unit: the aggregator does not keep up."""
    seconds = sorted(backlog)
    if len(seconds) < 4:
        return False
    quarter = len(seconds) // 4
    first = statistics.mean(backlog[s] for s in seconds[:quarter])
    last = statistics.mean(backlog[s] for s in seconds[-quarter:])
    return last > first + 5 * units


# -- the aggregator under load ----------------------------------------------------------------

def start_aggregator(data: Path, port: int, store: str | None = None) -> subprocess.Popen:
    """An aggregator process on ``port``; its store in ``data``, or the PostgreSQL ``store`` URL."""
    options = ["--store", store] if store else []
    process = subprocess.Popen([str(BIN / "pectus-aggregator"), *options, "--port", str(port), "--data-dir",
                                str(data), "--log-level", "WARNING", "--accept-new-engines"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the aggregator did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def poll_api(port: int, until: float, latencies: list[float], errors: collections.Counter,
                   every: float = 0.25) -> None:
    """A reader of the API: the units, then one running unit's process values and run log,
    ``every`` seconds until the wall-clock time ``until``."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
        units: list[str] = []
        while time.time() < until:
            began = time.perf_counter()
            for route in ["/api/process_units"] + ([f"/api/process_units/{random.choice(units)}/{view}"
                                                    for view in ("process_values", "run_log")] if units else []):
                sent = time.perf_counter()
                try:
                    answer = await api.get(route)
                    answer.raise_for_status()
                except httpx.HTTPError as error:
                    errors[f"{route.split('/')[-1]}: {type(error).__name__}"] += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                if route == "/api/process_units":
                    units = [unit["id"] for unit in answer.json() if unit["state"] == "online"]
            await trio.sleep(max(0.0, every - (time.perf_counter() - began)))


@dataclass
class Level:
    """One row of the curve."""

    units: int
    cpu: float  # % of one core
    rss: float  # MiB
    bench: float  # % of one core the bench processes used
    others: float  # % of one core everything else on the machine used (the figures need a quiet one)
    waited: float  # % of the window the aggregator's loop was ready to run but waited for a core
    api: list[float]
    api_errors: collections.Counter
    tally: Tally

    def row(self) -> str:
        t = self.tally
        acks = f"{percentile(t.acks, 99) * 1000:8.0f}" if t.acks else "       -"
        api = f"{percentile(self.api, 99) * 1000:7.1f}" if self.api else "      -"
        late = f"{percentile(t.late, 99) * 1000:6.0f}" if t.late else "     -"
        grows = "GROWS" if backlog_grows(t.backlog, self.units) else "flat"
        waiting = t.backlog[max(t.backlog)] if t.backlog else 0
        problems = sum(t.errors.values()) + sum(self.api_errors.values())
        return (f"{self.units:5d} {self.cpu:7.1f} {self.cpu / self.units:8.2f} {self.rss:6.0f} {api} {acks} "
                f"{waiting:8d} {grows:>6} {late} {problems:6d} {self.bench:6.0f} {self.others:6.0f} {self.waited:6.0f}")


HEADER = (f"{'units':>5} {'CPU %':>7} {'%/unit':>8} {'RSS MB':>6} {'API p99':>7} {'ack p99':>8} "
          f"{'unacked':>8} {'backlog':>6} {'late':>6} {'errors':>6} {'bench':>6} {'others':>6} {'waited':>6}\n"
          f"{'':>5} {'(1 core)':>7} {'':>8} {'':>6} {'(ms)':>7} {'(ms)':>8} {'(end)':>8} {'':>6} {'(ms)':>6} "
          f"{'':>6} {'CPU %':>6} {'CPU %':>6} {'%':>6}")


def measure_level(units: int, seconds: float, folder: Path, py_spy: Path | None = None,
                  ramp: float = RAMP, warm_up: float = WARM_UP) -> Level:
    """A fresh aggregator, ``units`` emulated demo engines, and the measured window."""
    data, port = folder / f"data-{units}", free_port()
    aggregator = start_aggregator(data, port)
    try:
        began = time.time() + 3.0  # the bench processes start and make the demo's traffic meanwhile
        window = (began + ramp + warm_up, began + ramp + warm_up + seconds)
        workers, results = run_emulated(port, units, window, ramp, began)
        usage = psutil.Process(aggregator.pid)
        time.sleep(max(0.0, window[0] - time.time()))
        spy = None
        if py_spy is not None:
            spy = subprocess.Popen([shutil.which("py-spy") or str(BIN / "py-spy"), "record", "--pid",
                                    str(aggregator.pid), "--duration", str(int(seconds)), "--rate", "200", "--gil",
                                    "--format", "raw", "--output", str(py_spy)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench = [psutil.Process(worker.pid) for worker in workers] + [psutil.Process()]
        before, wall = [_busy(usage), sum(map(_busy, bench)), _busy(), _waited(usage)], time.perf_counter()
        latencies: list[float] = []
        api_errors: collections.Counter = collections.Counter()
        trio.run(poll_api, port, window[1], latencies, api_errors)
        cpu, ours, machine, waited = [100 * (after - then) / (time.perf_counter() - wall) for after, then in
                                      zip([_busy(usage), sum(map(_busy, bench)), _busy(), _waited(usage)], before)]
        rss = usage.memory_info().rss / 2**20
        tally = collect(workers, results)
        if spy is not None:
            spy.wait(30)
        return Level(units, cpu, rss, ours, machine - cpu - ours, waited, latencies, api_errors, tally)
    finally:
        stop(aggregator)


def _busy(process: psutil.Process | None = None) -> float:
    """CPU seconds used so far: by ``process``, or by the whole machine."""
    if process is None:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)
    times = process.cpu_times()
    return times.user + times.system


def _waited(process: psutil.Process) -> float:
    """Seconds the process's main thread (the Trio loop) was ready to run but waited for a core
    (Linux schedstat): the time other processes took from the loop. 0 where the kernel does not say."""
    try:
        return int(Path(f"/proc/{process.pid}/task/{process.pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def print_problems(level: Level) -> None:
    for problem, count in (level.tally.errors + level.api_errors).most_common(5):
        print(f"      {count} x {problem}")


# -- py-spy's raw output: what holds the loop ----------------------------------------------------

def profile_summary(path: Path, top: int = 15) -> str:
    """The functions most often on the stack (inclusive) and at its top (own time), from py-spy's
    raw (collapsed-stack) output, as % of the samples."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in frame else frame for frame in stack.split(";")]
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples; own time:"]
    lines += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in own.most_common(top)]
    lines.append("on the stack (inclusive):")
    lines += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def curve(args: argparse.Namespace) -> None:
    print("aggregator under truthful emulated demo engines (each: a live frame every "
          f"{LIVE_INTERVAL:g} s, records every "
          f"{FLUSH_INTERVAL:g} s, heartbeats); window {args.seconds:.0f} s per level")
    print(HEADER)
    with tempfile.TemporaryDirectory() as folder:
        for units in args.units:
            spy = args.py_spy if units == args.units[-1] else None
            level = measure_level(units, args.seconds, Path(folder), spy)
            print(level.row(), flush=True)
            print_problems(level)
    if args.py_spy is not None and args.py_spy.exists():
        print(f"\nprofile of the aggregator at {args.units[-1]} units ({args.py_spy}):")
        print(profile_summary(args.py_spy))
    print("targets: 200 running units under 100 % of one core, API p99 <= 50 ms, backlog flat")


# -- real engines, to check the emulation against -----------------------------------------------

def start_real_engines(folder: Path, port: int, count: int) -> tuple[list[subprocess.Popen], list[str]]:
    """``count`` pectus-engine processes on the demo UOD, each under its own instrument name (an
    engine's id is its host and instrument: one host, several ids)."""
    processes, units = [], []
    text = DEMO_UOD.read_text()
    shutil.copy(DEMO_UOD.with_name("demo_diagram.svg"), folder)  # the demo UOD's process diagram, beside it
    for i in range(count):
        instrument = f"DemoUod{i}"
        uod = folder / f"demo_uod_{i}.py"
        uod.write_text(text.replace('with_instrument("DemoUod")', f'with_instrument("{instrument}")'))
        processes.append(subprocess.Popen(
            [str(BIN / "pectus-engine"), "-uod", str(uod), "-ahn", "127.0.0.1", "-ap", str(port),
             "--outbox", str(folder / f"engine-{i}.outbox.sqlite3"), "--log-level", "WARNING"],
            stderr=subprocess.DEVNULL, cwd=folder))
        units.append(f"{socket.gethostname()}_{instrument}")
    return processes, units


async def start_runs(port: int, units: list[str]) -> None:
    """Save the demo method on each unit and start it, through the API, once all are online."""
    lines = [{"id": str(n), "text": text} for n, text in enumerate(DEMO_METHOD.read_text().splitlines(), 1)]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
        with trio.fail_after(60):
            while {u["id"] for u in (await api.get("/api/process_units")).json() if u["state"] == "online"} < set(units):
                await trio.sleep(0.2)
        for unit in units:
            version = (await api.get(f"/api/process_units/{unit}/method")).json()["version"]
            (await api.post(f"/api/process_units/{unit}/method", json={"lines": lines, "version": version})
             ).raise_for_status()
            (await api.post(f"/api/process_units/{unit}/control", json={"command": "Start"})).raise_for_status()


def compare(args: argparse.Namespace) -> None:
    """Aggregator CPU per engine: real demo engines, then as many emulated ones."""
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        aggregator = start_aggregator(Path(folder) / "data-real", port)
        engines: list[subprocess.Popen] = []
        try:
            engines, units = start_real_engines(Path(folder), port, args.engines)
            trio.run(start_runs, port, units)
            time.sleep(WARM_UP)
            usage = psutil.Process(aggregator.pid)
            cpu, wall = sum(usage.cpu_times()[:2]), time.perf_counter()
            trio.run(poll_api, port, time.time() + args.seconds, [], collections.Counter())  # as measure_level
            real = 100 * (sum(usage.cpu_times()[:2]) - cpu) / (time.perf_counter() - wall)
        finally:
            for engine in engines:
                stop(engine)
            stop(aggregator)
        print(f"{args.engines} real demo engines: aggregator CPU {real:.1f} % of a core = "
              f"{real / args.engines:.2f} % per engine")
        level = measure_level(args.engines, args.seconds, Path(folder), ramp=0.0)
        print(f"{args.engines} emulated demo engines: aggregator CPU {level.cpu:.1f} % of a core = "
              f"{level.cpu / args.engines:.2f} % per engine ({level.tally.frames / args.seconds / args.engines:.1f} "
              f"frames/s per engine sent)")
        print_problems(level)
        print(f"emulated / real: {level.cpu / real:.2f} (should be within 0.8-1.2)")


# -- ingest, store, export, browser latency ----------------------------------------------------------

def hello(name: str) -> str:
    """An emulated engine's hello: its own key (enrolled on first use) and an outbox of its own."""
    outbox = uuid.uuid5(uuid.NAMESPACE_URL, f"pectus-bench:{name}").hex
    return p.encode(p.Hello(p.PROTOCOL_VERSION, name, "bench", name, "0.1.0", f"{name}-key", outbox))


def run_of(name: str) -> str:
    return f"{name}-run"


def run_started(seq: int, name: str) -> dict:
    return {"seq": seq, "kind": "run_started", "time": time.time(), "run": run_of(name), "data": {}}


def sample_record(seq: int, t: float, tags: int, name: str) -> dict:
    return {"seq": seq, "kind": "samples", "time": t, "run": run_of(name),
            "data": {"samples": [{"time": t, "values": {f"T{i:03d}": 20.0 + (seq + i) % 7 for i in range(tags)}}]}}


async def engine(port: int, name: str, records: int, batch: int, latencies: list[float],
                 every: float = 0.0) -> None:
    """Send ``records`` sample records in batches, each batch waiting for its ack; with ``every``,
    one batch per ``every`` seconds (a sustained rate), else as fast as the acks come."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/engine") as ws:
        await ws.send_message(hello(name))
        welcome = p.decode(await ws.get_message())
        seq = welcome.last_seq
        if seq == 0:
            await ws.send_message(p.encode(p.Records([run_started(1, name)])))
            seq = 1
        now = time.time()
        # Engines are not in step with each other: each starts at its own phase of the period.
        next_send = trio.current_time() + random.random() * every
        while seq < records:
            if every:
                await trio.sleep_until(next_send)
                next_send += every
            chunk = [sample_record(n, now, TAGS, name) for n in range(seq + 1, min(seq + batch, records) + 1)]
            sent = time.perf_counter()
            await ws.send_message(p.encode(p.Records(chunk)))
            while True:
                answer = p.decode(await ws.get_message())
                if isinstance(answer, p.Ack) and answer.seq >= chunk[-1]["seq"]:
                    break
            latencies.append(time.perf_counter() - sent)
            seq = chunk[-1]["seq"]


async def ingest(port: int, engines: int, per_engine: int, every: float = 0.0,
                 prefix: str = "bench") -> tuple[float, list[float]]:
    latencies: list[float] = []
    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(engines):
            nursery.start_soon(engine, port, f"{prefix}-{i}_Unit", per_engine, BATCH, latencies, every)
    return time.perf_counter() - began, latencies


async def browser_latency(port: int, samples: int) -> list[float]:
    """A tag change sent by an engine, timed until a subscribed browser receives it."""
    latencies: list[float] = []
    unit = "latency_Unit"
    async with open_websocket_url(f"ws://127.0.0.1:{port}/engine") as engine_ws:
        await engine_ws.send_message(hello(unit))
        await engine_ws.get_message()
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/ws") as browser:
            await browser.send_message(json.dumps({"subscribe": [unit]}))
            for i in range(samples):
                sent = time.perf_counter()
                await engine_ws.send_message(p.encode(p.Live([{"name": "FT01", "value": i, "unit": "L/h",
                                                                "time": time.time(), "simulated": False}])))
                while True:
                    frame = json.loads(await browser.get_message())  # deltas come in arrays, a reply alone
                    if isinstance(frame, list) and any(delta["topic"] == "values" and any(
                            v.get("value") == i for v in delta["data"]) for delta in frame):
                        break
                latencies.append(time.perf_counter() - sent)
                await trio.sleep(0.1)
    return latencies



def store_bench(folder: Path, signer: ChainSigner | None = None, location: str | None = None) -> None:
    """The store alone; with ``signer``, as the aggregator runs it: each transaction signed. In the
    SQLite file in ``folder``, or in the PostgreSQL database at ``location``."""
    store = open_store(location or folder / f"store-{'signed' if signer else 'unsigned'}.sqlite3", signer)
    batch = [NewEvent("unit:bench_Unit", "TagSamples", float(i), {"unit": "bench_Unit", "samples": [
        {"time": float(i), "values": {f"T{t:03d}": 20.0 + t for t in range(TAGS)}}]}) for i in range(1_000)]

    def timed(action) -> float:
        began = time.perf_counter()
        action()
        return time.perf_counter() - began

    append = min(timed(lambda: store.append(batch)) for _ in range(3))
    single = min(timed(lambda: store.append(batch[:1])) for _ in range(300))
    for _ in range(97):
        store.append(batch)
    read = min(timed(lambda: sum(1 for _ in store.iter())) for _ in range(3))
    count = store.last_position()
    store.close()
    print(f"store{' (PostgreSQL)' if location else ''}{', signing each transaction' if signer else ''}: "
          f"1,000 events appended in "
          f"{append * 1000:.1f} ms (one transaction), 1 event in {single * 1e6:.0f} µs; reads {count / read:,.0f} events/s")


def csv_export_bench(folder: Path) -> None:
    store = SQLiteEventStore(folder / "csv.sqlite3")
    unit, run, start = "csv_Unit", "csv-run", 1_800_000_000.0
    tags = [{"name": f"T{i:03d}", "unit": "degC", "direction": "input"} for i in range(200)]
    base = {"unit": unit, "actor": d.Actor.engine(unit)}
    events: list[d.DomainEvent] = [
        d.UodDescribed(time=start, **base, uod_name="Csv", uod_author_name="Bench", uod_author_email="b@x",
                       uod_filename="csv.py", location="", hardware="", tags=tags, readings=[], commands=[],
                       plot_configuration={}, data_log_interval_seconds=1.0),
        d.RunStarted(time=start, run=run, **base)]
    store.append([NewEvent(e.stream, e.type, e.time, e.to_data()) for e in events])
    batch = []
    for second in range(86_400):
        values = {t["name"]: 20.0 + ((second + i) % 50) * 0.1 for i, t in enumerate(tags) if (second + i) % 10 == 0}
        batch.append(d.TagSamples(time=start + second, run=run, **base, samples=[{"time": start + second,
                                                                                   "values": values}]))
        if len(batch) == 2000:
            store.append([NewEvent(e.stream, e.type, e.time, e.to_data()) for e in batch])
            batch = []
    stop = d.RunStopped(time=start + 86_400, run=run, **base)
    store.append([NewEvent(e.stream, e.type, e.time, e.to_data()) for e in batch + [stop]])
    views = Projector(aggregator_name="bench", aggregator_version="bench")
    began = time.perf_counter()
    views.replay(store.iter())
    replay = time.perf_counter() - began
    count = store.last_position()
    began = time.perf_counter()
    rows = sum(1 for _ in csv_rows(store.iter(), run, views))
    elapsed = time.perf_counter() - began
    tracemalloc.start()  # a second pass for the memory: tracing slows Python several times over
    sum(1 for _ in csv_rows(store.iter(), run, views))
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    store.close()
    print(f"csv: 24 h x 200 tags at 1 s = {rows:,} lines in {elapsed:.1f} s, peak {peak:.0f} MB traced "
          f"(targets <= 10 s, <= 200 MB); replay of that store: {count:,} events in {replay:.1f} s = "
          f"{count / replay:,.0f} events/s")




async def demo_rate_engine(port: int, name: str, seconds: float) -> None:
    """One emulated demo engine for ``seconds`` (what other benches put load with)."""
    await emulated_engine(port, name, time.time() + seconds, Tally((0.0, 0.0)))


def ingest_figures(port: int, args: argparse.Namespace, label: str = "") -> None:
    """Ingest into the aggregator on ``port``: as fast as the acks come, then at a sustained rate."""
    elapsed, latencies = trio.run(ingest, port, args.engines, args.records)
    total = args.engines * args.records
    print(f"ingest{label}, as fast as it goes: {args.engines} engines, {total:,} sample records ({TAGS} tag values "
          f"each, {BATCH} records a frame) in {elapsed:.1f} s = {total / elapsed:,.0f} records/s = "
          f"{TAGS * total / elapsed:,.0f} tag samples/s; append-to-ack p50 "
          f"{statistics.median(latencies) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms")
    # Sustained: the offered rate, spread over the engines, with a margin over the target so
    # that connecting and the engines' random phases do not pull the measured rate below it.
    every = args.engines * BATCH * TAGS / args.rate
    seconds = 10
    elapsed, latencies = trio.run(ingest, port, args.engines, int(seconds / every) * BATCH, every, "steady")
    total = args.engines * int(seconds / every) * BATCH
    print(f"ingest{label}, sustained: {TAGS * total / elapsed:,.0f} tag samples/s ({total / elapsed:,.0f} records/s) "
          f"for {elapsed:.0f} s; append-to-ack p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {percentile(latencies, 99) * 1000:.1f} ms (targets >= 20,000 tag-sample events/s, "
          f"p99 <= 50 ms)")


def replay_figure(data: Path, store: str | None = None, label: str = "") -> None:
    """``pectus-aggregator replay`` on the store, as a start-up replays it."""
    options = ["--store", store] if store else []
    began = time.perf_counter()
    out = subprocess.run([str(BIN / "pectus-aggregator"), *options, "--data-dir", str(data), "replay"],
                         capture_output=True, text=True, check=True).stdout.strip()
    print(f"replay{label} (CLI, whole process {time.perf_counter() - began:.1f} s): {out}")


def ingest_benches(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        data, port = Path(folder) / "data", free_port()
        aggregator = start_aggregator(data, port)
        try:
            ingest_figures(port, args)
            latencies = trio.run(browser_latency, port, 100)
            print(f"engine -> browser: p50 {statistics.median(latencies) * 1000:.1f} ms, "
                  f"p95 {percentile(latencies, 95) * 1000:.1f} ms (target p95 <= 250 ms)")
        finally:
            stop(aggregator)
        replay_figure(data)
        store_bench(Path(folder))
        store_bench(Path(folder), load_or_create_signer(Path(folder) / "chain-signing.key"))
        csv_export_bench(Path(folder))


def store_benches(args: argparse.Namespace) -> None:
    """Each backend in turn, the same load: SQLite, then PostgreSQL."""
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres import PostgreSQLServer  # the tests' throwaway server

    server = PostgreSQLServer(fsync=True)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            signer = load_or_create_signer(Path(folder) / "chain-signing.key")
            for label, url in [(" [sqlite]", None), (" [postgresql]", server.new_database())]:
                data, port = Path(folder) / f"data{label.strip(' []')}", free_port()
                aggregator = start_aggregator(data, port, url)
                try:
                    ingest_figures(port, args, label)
                finally:
                    stop(aggregator)
                replay_figure(data, url, label)
            store_bench(Path(folder), signer)
            with server.database() as url:
                store_bench(Path(folder), signer, url)
    finally:
        server.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("curve", help="aggregator CPU, RSS, API and ack latency per number of running units")
    load.add_argument("--units", type=int, nargs="+", default=[20, 50, 100, 200])
    load.add_argument("--seconds", type=float, default=40.0, help="measured window per level (s)")
    load.add_argument("--py-spy", type=Path, help="record the aggregator at the last level with py-spy into FILE")
    check = commands.add_parser("compare", help="real demo engines against emulated ones")
    check.add_argument("--engines", type=int, default=5)
    check.add_argument("--seconds", type=float, default=40.0)
    throughput = commands.add_parser("ingest", help="ingest throughput, replay, store, CSV, browser latency")
    throughput.add_argument("--engines", type=int, default=20)
    throughput.add_argument("--records", type=int, default=3000, help="sample records per engine")
    throughput.add_argument("--rate", type=float, default=25_000, help="offered tag samples/s, sustained")
    backends = commands.add_parser("stores", help="ingest, replay and the store alone on SQLite and on PostgreSQL")
    backends.add_argument("--engines", type=int, default=20)
    backends.add_argument("--records", type=int, default=3000, help="sample records per engine")
    backends.add_argument("--rate", type=float, default=25_000, help="offered tag samples/s, sustained")
    args = parser.parse_args()
    {"curve": curve, "compare": compare, "ingest": ingest_benches, "stores": store_benches}[args.command](args)


if __name__ == "__main__":
    main()
