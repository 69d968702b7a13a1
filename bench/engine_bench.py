"""Engine benchmark: the real scan cycle, in real time, with a running method.

    python bench/engine_bench.py [--seconds 60]

For the demo unit running its demo method, and for a generated unit of 500 tags whose values all
change every tick, it prints the tick interval (p50, p99, max), the jitter (p99 of |interval -
0.1 s|), the CPU used as % of one core, and the resident memory. Targets on the 2-core machine:
p99 interval error <= 2 ms, CPU <= 3 % (demo) and <= 10 % (500 tags), RSS <= 80 MB.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import trio
from measure import percentile

from pectus.actors.core import ask
from pectus.actors.engine import EngineProcess
from pectus.actors.scan_cycle import Control, SaveMethod
from pectus.hardware.simulated import SimulatedHardware
from pectus.uod import RegisterDirection, UodBuilder, load_uod, tags

ROOT = Path(__file__).resolve().parent.parent


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
          f"RSS {r['rss']:.0f} MB (run {r['state']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    demo_method = (ROOT / "uods" / "demo_method.pcode").read_text().replace("\nStop", "\nWait: 1 h")
    report("demo unit, demo method", trio.run(measure, load_uod(ROOT / "uods" / "demo_uod.py"), demo_method,
                                              args.seconds))
    watch = "Watch: T000 > 2 degC\n    Mark: never\nAlarm: T001 > 2 degC\n    Mark: never\nWait: 1 h"
    report("500 tags, all changing", trio.run(measure, unit_of_500_tags(), watch, args.seconds))


if __name__ == "__main__":
    main()
