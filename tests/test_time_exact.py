"""Times are exact: the engine's timers and what a method writes about time agree to the microsecond.

The engine is ticked with tick lengths in seconds (floats): the scan cycle passes the measured,
uneven time since the previous tick. Summed as floats, three ticks of 0.1 s are
0.30000000000000004 s, and ``Watch: Block Time > 0.3 s`` fired one tick early (``>`` behaved as
``>=``). The rule docs/pcode.md states: time is counted in whole microseconds - each tick's length
is rounded to the microsecond once - and every time a method writes (a threshold, a Wait or Pause
duration, a value compared with a time tag) is rounded to the microsecond once. So a comparison
gives what the same comparison of exact decimals gives.

Each property drives the engine core directly with generated tick lengths (whole microseconds plus
a sub-microsecond jitter, as measured tick lengths have) and a generated limit (often exactly a sum
of tick lengths, where ``>`` and ``>=`` differ), and checks the tick at which the line runs against
exact integer arithmetic.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, strategies as st

from conftest import make_unit
from pectus.pcode import Engine

START = 1_800_000_000.0  # the wall clock of tick 0, as the scan cycle passes it
UNIT_MICROS = {"ms": 1_000, "s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000}
NOMINAL = [100_000] * 12  # twelve ticks of 0.1 s: the scan cycle's nominal rhythm
# Forty minutes and a few ticks of 0.1 s: a float sum of the tick lengths falls behind the exact time
# by more than a nanosecond after 39 minutes, and by 0.2 µs in ten hours.
LONG = ([0.1] * 24_005, [100_000] * 24_005, 2_400_000_000, "min")


class Run:
    """The test unit's engine core running ``method``; tick 0 starts the run.

    ``elapsed[j]`` is the exact time in microseconds at the end of tick ``j`` (the sum of the
    lengths of ticks 1..j; tick 0 has length 0, as in the scan cycle).
    """

    def __init__(self, method: str, lengths: list[float]):
        self.engine = Engine(make_unit())
        assert self.engine.set_method(method), method
        assert self.engine.execute_control("Start")
        self.engine.tick(START, 0.0)
        self.elapsed = [0]
        self.marked: int | None = None  # the tick in which Mark: fired ran
        self.running_again: int | None = None  # the first tick after a Pause ending Running
        self.shown: list[tuple[float, float]] = []  # (Process Time, Run Time) after each tick
        for length in lengths:
            micros = round(length * 1_000_000)
            self.elapsed.append(self.elapsed[-1] + micros)
            self.engine.tick(START + self.elapsed[-1] / 1_000_000, length)
            tick = self.engine.tick_number
            if self.marked is None and "fired" in self.engine.marks:
                self.marked = tick
            state = self.engine.system_state
            if self.running_again is None and tick > 2 and state == "Running":
                self.running_again = tick
            self.shown.append((self.engine.value("Process Time"), self.engine.value("Run Time")))

    def first(self, ticks: range, reached) -> int | None:
        """The first tick ``j`` of ``ticks`` for which ``reached(j)``, or None."""
        return next((j for j in ticks if j < len(self.elapsed) and reached(j)), None)


def written(micros: int, unit: str) -> str:
    """``micros`` as the exact decimal an operator writes in ``unit`` (never scientific notation)."""
    return format(Decimal(micros) / Decimal(UNIT_MICROS[unit]), "f")


def compare(left: int, op: str, right: int) -> bool:
    return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right,
            "=": left == right}[op]


def measured(micros: list[int], jitter: list[float]) -> list[float]:
    """Tick lengths in seconds: whole microseconds with the sub-microsecond part a clock adds."""
    return [(m + j) / 1_000_000 for m, j in zip(micros, jitter)]


ticks_micros = st.one_of(
    st.just(NOMINAL),
    st.lists(st.integers(99_000, 101_000), min_size=3, max_size=40),  # a real scan cycle's jitter
    st.lists(st.integers(1, 300_000), min_size=3, max_size=40),  # anything
)


@st.composite
def timing(draw, units: tuple[str, ...]):
    """(tick lengths in seconds, exact µs per tick, limit in µs, unit the limit is written in)."""
    micros = draw(ticks_micros)
    jitter = draw(st.lists(st.floats(-0.45, 0.45), min_size=len(micros), max_size=len(micros)))
    unit = draw(st.sampled_from(units))
    step = UNIT_MICROS[unit] // 1_000_000 if unit in ("min", "h") else 1  # an exact decimal in unit
    sums = [sum(micros[i:j]) for i in range(3) for j in range(i, len(micros) + 1)]
    limit = draw(st.one_of(
        st.sampled_from(sums).flatmap(lambda s: st.sampled_from([s - 1, s, s + 1])),  # the edges
        st.integers(0, sum(micros)),
    ))
    limit = max(0, limit - limit % step)
    return measured(micros, jitter), micros, limit, unit


@given(timing(("s", "ms", "min")), st.sampled_from([">", ">=", "<", "<=", "="]),
       st.sampled_from(["Block Time", "Scope Time", "Process Time", "Run Time"]))
@example(([0.1] * 12, NOMINAL, 300_000, "s"), ">", "Block Time")  # the case
def test_a_watch_on_a_time_fires_when_the_exact_time_meets_the_condition(case, op, tag) -> None:
    """Before the fix the issue's example fired one tick early (0.30000000000000004 > 0.3)."""
    lengths, micros, limit, unit = case
    run = Run(f"Mark: go\nBlock: B\n    Watch: {tag} {op} {written(limit, unit)} {unit}\n"
              "        Mark: fired", lengths)
    # The Block starts in tick 2 at the time of the end of tick 1; the Watch is registered and
    # evaluated from tick 3, each tick seeing the time at the end of the tick before.
    since = run.elapsed[1] if tag in ("Block Time", "Scope Time") else 0
    fired = run.first(range(3, len(micros) + 1), lambda j: compare(run.elapsed[j - 1] - since, op, limit))
    assert run.marked == (None if fired is None or fired + 1 > len(micros) else fired + 1)


@given(timing(("s", "min")))
@example(LONG)
def test_a_threshold_is_reached_at_the_exact_time(case) -> None:
    """Before the fix ``40 Mark`` (Base min) ran a tick late: the float sum fell behind its tolerance."""
    lengths, micros, limit, unit = case
    run = Run(f"Base: {unit}\nBlock: B\n    {written(limit, unit)} Mark: fired", lengths)
    # The block starts in tick 2 (at the end of tick 1); its body's first step is in tick 3.
    expected = run.first(range(3, len(micros) + 1), lambda j: run.elapsed[j - 1] - run.elapsed[1] >= limit)
    assert run.marked == expected


@given(timing(("s", "min", "h")))
@example(LONG)
def test_a_wait_ends_at_the_exact_time(case) -> None:
    """Before the fix ``Wait: 40 min`` ended a tick late: the float sum fell behind its tolerance."""
    lengths, micros, limit, unit = case
    run = Run(f"Mark: go\nWait: {written(limit, unit)} {unit}\nMark: fired", lengths)
    # The Wait starts in tick 2 at the end of tick 1; the line after it runs in the tick it ends.
    expected = run.first(range(2, len(micros) + 1), lambda j: run.elapsed[j - 1] - run.elapsed[1] >= limit)
    assert run.marked == expected


@given(timing(("s", "min")))
@example(([0.1] * 12, NOMINAL, 300_000, "s"))
def test_a_pause_with_a_duration_ends_at_the_exact_time(case) -> None:
    """Before the fix a Pause ended up to 100 µs early (the wall clock compared with a tolerance)."""
    lengths, micros, limit, unit = case
    run = Run(f"Mark: go\nPause: {written(limit, unit)} {unit}", lengths)
    # Pause is scheduled and starts in tick 2, after the time tags advanced; it counts Run Time,
    # which goes on while the unit is paused, and ends in the first tick its duration has passed.
    expected = run.first(range(3, len(micros) + 1), lambda j: run.elapsed[j] - run.elapsed[2] >= limit)
    assert run.running_again == expected


@given(timing(("s",)))
def test_the_time_tags_show_the_exact_sum_of_the_tick_lengths(case) -> None:
    """Before the fix Process Time after three 0.1 s ticks showed 0.30000000000000004."""
    lengths, micros, _, _ = case
    run = Run("Mark: go", lengths)
    assert run.shown == [(e / 1_000_000, e / 1_000_000) for e in run.elapsed[1:]]


@pytest.mark.parametrize("written_time", ["0.0001 h", "0.006 min", "360 ms"])
def test_a_time_in_another_unit_is_the_same_time(written_time) -> None:
    """Before the fix 0.0001 h became 0.36000000000000004 s, and '>=' fired one tick late."""
    run = Run(f"Watch: Process Time >= {written_time}\n    Mark: fired", [0.12] * 6)
    # 0.36 s is reached at the end of tick 3 (3 x 0.12 s); the Watch sees it in tick 4 and fires;
    # its body's Mark runs in tick 5.
    assert run.marked == 5
