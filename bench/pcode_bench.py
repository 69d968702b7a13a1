"""P-code benchmarks: parse rate and simulation speed.

    python bench/pcode_bench.py

Prints:
* parse rate in lines/s for a generated 100,000-line method (target >= 300,000 lines/s);
* analysis (the method editor's lint) of a 1,000-line method on the demo unit (target well under
  50 ms);
* simulation speed in ticks/s and multiple of real time for a generated 1,000-line method with
  blocks, watches and alarms on the demo unit (target >= 50,000 ticks/s, >= 5,000x real time),
  once dense (a block a second: an instruction almost every tick) and once with 30 s blocks.
Each figure is the best of several rounds, so a busy machine shows its capacity, not its noise.
"""

from __future__ import annotations

import time
from pathlib import Path

from pectus.pcode.engine import Engine
from pectus.pcode.syntax import parse
from pectus.uod import load_uod

ROOT = Path(__file__).resolve().parent.parent


def generated_method(lines: int, seconds: float = 1.0) -> str:
    """Blocks of a realistic shape: thresholds, a Watch, marks, a Wait, unit commands, End block.

    A block lasts ``seconds``: 1 s is dense (an instruction nearly every tick), 30 s is closer to
    a real method, whose phases last minutes.
    """
    text = ["Base: s", "Alarm: TT01 > 95 degC", "    HE01: 0 %", "    Mark: Overheated",
            "VA01: Open", "PU01: 40 %"]
    block = 0
    while len(text) + 8 < lines:
        text += [f"Block: Phase {block}",
                 f"    Watch: Block Time > {seconds / 2} s",
                 "        Mark: watch fired",
                 f"    PU01: {20 + block % 60} %",
                 f"    {seconds / 5} Mark: phase {block} # reached",
                 f"    Wait: {seconds * 0.3} s",
                 "    HE01: 10 %",
                 f"    {seconds} End block"]
        block += 1
    text += ["Mark: done"] * (lines - len(text) - 1)
    return "\n".join(text + ["Stop"])


def best_of(rounds: int, run) -> float:
    return min(run() for _ in range(rounds))


def bench_parse() -> None:
    text = generated_method(100_000)

    def run() -> float:
        start = time.perf_counter()
        method = parse(text)
        elapsed = time.perf_counter() - start
        assert method.ok and len(method.lines) == 100_000
        return elapsed

    elapsed = best_of(5, run)
    print(f"parse: 100,000 lines in {elapsed * 1000:.0f} ms = {100_000 / elapsed:,.0f} lines/s (target >= 300,000)")


def bench_analyze() -> None:
    from pectus.cli.engine import _analyze

    engine = Engine(load_uod(ROOT / "uods" / "demo_uod.py"))
    text = generated_method(1_000)
    _analyze(engine, text)  # warm the caches (units, regexes)

    def run() -> float:
        start = time.perf_counter()
        _analyze(engine, text)
        return time.perf_counter() - start

    print(f"analyze: 1,000 lines in {best_of(5, run) * 1000:.1f} ms (target well under 50 ms)")


def bench_simulate(seconds_per_block: float) -> None:
    text = generated_method(1_000, seconds_per_block)
    tick = 0.1

    def run() -> tuple[float, int]:
        engine = Engine(load_uod(ROOT / "uods" / "demo_uod.py"))
        assert engine.set_method(text)
        engine.execute_control("Start")
        ticks = 0
        start = time.perf_counter()
        while (ticks < 3 or engine.started) and engine.method_status == "OK":
            engine.tick(ticks * tick, tick if ticks else 0.0)
            ticks += 1
        elapsed = time.perf_counter() - start
        assert engine.method_status == "OK", engine.last_error
        return elapsed, ticks

    results = [run() for _ in range(3)]
    elapsed, ticks = min(results)
    rate = ticks / elapsed
    print(f"simulate: 1,000-line method, {seconds_per_block:g} s per block, {ticks:,} ticks ({ticks * tick:,.0f} s of process) in {elapsed:.2f} s "
          f"= {rate:,.0f} ticks/s = {rate * tick:,.0f}x real time (target >= 50,000 ticks/s, >= 5,000x)")


if __name__ == "__main__":
    bench_parse()
    bench_analyze()
    bench_simulate(1.0)
    bench_simulate(30.0)
