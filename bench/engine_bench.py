"""Engine benchmark: the real scan cycle, in real time, with a running method.

    python bench/engine_bench.py [--seconds 60] [--minutes 30] [--window 90]

Tick steadiness: for the demo unit running its demo method, and for a generated unit of 500 tags
whose values all change every tick (stand-alone engines, ``--seconds`` each), it prints the tick
interval (p50, p99, max), the jitter (p99 of |interval - 0.1 s|), the CPU used as % of one core,
and the resident memory. Targets on the 2-core machine: p99 interval error <= 2 ms, CPU <= 3 %
(demo) and <= 10 % (500 tags), RSS <= 80 MB.

What an engine costs over a long run: the demo unit runs the demo method back to back (each run
ends with its Stop and is started again at once, so every run is a real run, recorded as any
other), with a real uplink to a real aggregator process on loopback (``--accept-new-engines``), so
the outbox is written and acknowledged as in production. In two windows of ``--window`` seconds,
5 s after the first Start and ``--minutes`` after it, it prints per second: the bytes this process
wrote to storage (``write_bytes`` of /proc/self/io: what the kernel sent to the block layer for
it - SQLite's pages, its write-ahead log and their fsyncs), what it handed to write() whether or
not that reached a disk (``wchar``), the outbox files' growth, and the CPU as % of one core (all
its threads); then each figure's later window over its first. Targets: <= 20 KB/s written,
<= 2 % of a core, both flat (the later window within 10 % of the first). The temporary directory
(``TMPDIR``) must be on a disk: a tmpfs sends nothing to a block layer. The default takes about 32
minutes; ``--minutes 2 --window 20`` is a quick look.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import trio
from aggregator_bench import start_aggregator
from measure import percentile

from pectus.actors.core import ask
from pectus.actors.engine import EngineProcess
from pectus.actors.scan_cycle import Control, SaveMethod
from pectus.hardware.opcua_server import free_port
from pectus.hardware.simulated import SimulatedHardware
from pectus.pcode.events import EngineEvent
from pectus.uod import RegisterDirection, UodBuilder, load_uod, tags

ROOT = Path(__file__).resolve().parent.parent
FIRST_WINDOW = 5.0  # s after the first Start: the engine's start (its UOD, its method) is not the run's cost


class Wavy(SimulatedHardware):
    """Every register follows its own slow sine wave: every tag changes every tick."""

    def step(self, dt: float) -> None:
        t = self.elapsed
        values = self.values
        for i, name in enumerate(self.registers):
            values[name] = math.sin(t / 30 + i)


def unit_of_500_tags():
    builder = (UodBuilder().with_instrument("Bench500").with_author("Bench", "bench@pectus.example")
               .with_filename(__file__).with_hardware(Wavy()))
    for i in range(500):
        builder = builder.with_hardware_register(f"T{i:03d}", RegisterDirection.Read)
        builder = builder.with_tag(tags.ReadingTag(f"T{i:03d}", unit="degC"))
    return builder.build()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def demo_uod():
    return load_uod(ROOT / "uods" / "demo_uod.py")


def demo_method() -> str:
    return (ROOT / "uods" / "demo_method.pcode").read_text()


async def measure(uod, method: str, seconds: float) -> dict[str, float]:
    process = EngineProcess(uod)
    async with trio.open_nursery() as nursery:
        await nursery.start(process.run)
        assert await ask(process.scan, lambda r: SaveMethod(method, None, r), timeout=2)
        assert await ask(process.scan, lambda r: Control("Start", r), timeout=2)
        await trio.sleep(2)  # warm up: imports, first conversions
        process.scan.stats.intervals.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        await trio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        intervals = list(process.scan.stats.intervals)
        state = process.engine.system_state
        await process.stop()
    errors = [abs(i - 0.1) for i in intervals]
    return {"ticks": len(intervals), "p50": statistics.median(intervals), "p99": percentile(intervals, 99),
            "max": max(intervals), "jitter": percentile(errors, 99), "cpu": 100 * cpu / wall,
            "rss": rss_mb(), "state": state}


def report(name: str, r: dict) -> None:
    print(f"{name}: {r['ticks']} ticks, interval p50 {r['p50'] * 1000:.2f} ms, p99 {r['p99'] * 1000:.2f} ms, "
          f"max {r['max'] * 1000:.2f} ms, p99 |error| {r['jitter'] * 1000:.2f} ms, CPU {r['cpu']:.1f} % of a core, "
          f"RSS {r['rss']:.0f} MB (run {r['state']})", flush=True)


@dataclass(frozen=True)
class Reading:
    """What the engine process (and the aggregator) had used up to one moment."""

    wall: float  # s
    cpu: float  # s of CPU, every thread of this process
    write_bytes: int  # sent to the block layer for this process
    wchar: int  # handed to write() by this process
    outbox_bytes: int  # the outbox's files (database, write-ahead log, shared memory, dead letters)
    aggregator_cpu: float  # s


def reading(outbox: Path, aggregator: psutil.Process) -> Reading:
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    files = sum(file.stat().st_size for file in outbox.parent.glob(outbox.name + "*"))
    used = aggregator.cpu_times()
    return Reading(time.perf_counter(), time.process_time(), int(io["write_bytes"]), int(io["wchar"]), files,
                   used.user + used.system)


class Looped:
    """Runs the engine's method back to back: each run that stops is started again at once."""

    def __init__(self, process: EngineProcess) -> None:
        self.process = process
        self.runs = 0
        self._stopped_send, self._stopped = trio.open_memory_channel[None](math.inf)
        process.add_sink(self._sink)

    def _sink(self, events: list[EngineEvent]) -> None:  # called by the scan cycle after each tick
        if any(event.kind == "run_stopped" for event in events):
            self._stopped_send.send_nowait(None)

    async def run(self) -> None:
        await self._start()
        async for _ in self._stopped:
            await self._start()

    async def _start(self) -> None:
        assert await ask(self.process.scan, lambda r: Control("Start", r), timeout=2)
        self.runs += 1


async def window(looped: Looped, outbox: Path, aggregator: psutil.Process, seconds: float) -> dict[str, float]:
    """The engine's costs per second over the next ``seconds``."""
    scan = looped.process.scan
    scan.stats.intervals.clear()
    before, runs = reading(outbox, aggregator), looped.runs
    await trio.sleep(seconds)
    after = reading(outbox, aggregator)
    wall = after.wall - before.wall
    errors = [abs(i - scan.interval) for i in scan.stats.intervals]
    return {"written": (after.write_bytes - before.write_bytes) / wall / 1024,
            "wchar": (after.wchar - before.wchar) / wall / 1024,
            "outbox": (after.outbox_bytes - before.outbox_bytes) / wall / 1024,
            "cpu": 100 * (after.cpu - before.cpu) / wall, "jitter": percentile(errors, 99),
            "aggregator": 100 * (after.aggregator_cpu - before.aggregator_cpu) / wall,
            "runs": looped.runs - runs,
            "pending": await trio.to_thread.run_sync(looped.process.uplink.outbox.count)}


async def long_run(uod, method: str, minutes: float, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """The method looped with a real uplink: the costs in the window ``FIRST_WINDOW`` s after the
    first Start, and in the one ``minutes`` after it (each printed when it is measured)."""
    with tempfile.TemporaryDirectory(prefix="pectus-engine-bench-") as folder:
        port = free_port()
        aggregator = start_aggregator(Path(folder) / "aggregator", port)
        try:
            outbox = Path(folder) / "engine" / "bench.outbox.sqlite3"
            outbox.parent.mkdir()
            process = EngineProcess(uod, uplink={"outbox": outbox, "url": f"ws://127.0.0.1:{port}/engine",
                                                 "engine_id": "bench-engine", "computer_name": "bench"})
            looped = Looped(process)
            async with trio.open_nursery() as nursery:
                await nursery.start(process.run)
                with trio.fail_after(30):  # as in a plant: the engine is connected when a run starts
                    while not process.uplink.connected:
                        await trio.sleep(0.05)
                assert await ask(process.scan, lambda r: SaveMethod(method, None, r), timeout=2)
                began = trio.current_time()
                nursery.start_soon(looped.run)
                await trio.sleep_until(began + FIRST_WINDOW)
                first = await window(looped, outbox, psutil.Process(aggregator.pid), seconds)
                report_window(f"demo method looped, seconds {FIRST_WINDOW:g}-{FIRST_WINDOW + seconds:g}", first)
                await trio.sleep_until(began + 60 * minutes)
                later = await window(looped, outbox, psutil.Process(aggregator.pid), seconds)
                report_window(f"demo method looped, minutes {minutes:g}-{minutes + seconds / 60:g}", later)
                await process.stop()
                nursery.cancel_scope.cancel()
        finally:
            aggregator.terminate()
            aggregator.wait(10)
    return first, later


def report_window(name: str, w: dict[str, float]) -> None:
    print(f"{name}: written {w['written']:.1f} KB/s (wchar {w['wchar']:.1f} KB/s, outbox files "
          f"{w['outbox']:+.2f} KB/s), CPU {w['cpu']:.2f} % of a core, tick p99 |error| {w['jitter'] * 1000:.2f} ms; "
          f"aggregator CPU {w['aggregator']:.1f} %; {w['runs']:.0f} runs started, {w['pending']:.0f} records "
          f"not yet acknowledged at the end", flush=True)


def report_ratios(first: dict[str, float], later: dict[str, float]) -> None:
    print(f"later / first: written {later['written'] / first['written']:.2f}, wchar "
          f"{later['wchar'] / first['wchar']:.2f}, CPU {later['cpu'] / first['cpu']:.2f} "
          f"(targets: <= 20 KB/s written, <= 2 % of a core, each ratio within 0.90-1.10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="each tick measurement (default 60 s)")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="when the long run's second window starts, after the first Start (default 30)")
    parser.add_argument("--window", type=float, default=90.0, help="each window of the long run (default 90 s)")
    args = parser.parse_args()
    if args.window <= 0 or 60 * args.minutes < FIRST_WINDOW + args.window:
        parser.error(f"--minutes must leave room for the first window ({FIRST_WINDOW:g} s + --window) before the "
                     f"second, and --window must be positive")
    report("demo unit, demo method", trio.run(measure, demo_uod(), demo_method().replace("\nStop", "\nWait: 1 h"),
                                              args.seconds))
    watch = "Watch: T000 > 2 degC\n    Mark: never\nAlarm: T001 > 2 degC\n    Mark: never\nWait: 1 h"
    report("500 tags, all changing", trio.run(measure, unit_of_500_tags(), watch, args.seconds))
    report_ratios(*trio.run(long_run, demo_uod(), demo_method(), args.minutes, args.window))


if __name__ == "__main__":
    main()
