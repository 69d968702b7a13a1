"""Conformance: control flow of P-code, against shared/spec/pcode.md (Open Pectus) and docs/pcode.md.

Families covered (one test per case id):

* SEQ - sequential execution and unit commands: SEQ-001, 002, 005..012;
* MRK-001 (Mark), BAT-001 (Batch), LOG-003 (run log of Alarm invocations);
* BLK - Block, End block, End blocks: BLK-001, 003, 005..010, 012..017;
* WAT - Watch: WAT-002, 003, 004, 006, 007;
* ALM - Alarm: ALM-002..006;
* MAC - Macro and Call macro: MAC-003..011;
* PARSE - the parser: PARSE-001, 004, 005, 007, 008, 009, 012, 013;
* QRK-005, QRK-006, QRK-007 - parser quirks of Open Pectus that Pectus fixes.

Timing is Pectus': one instruction a tick for the main line and for each running Watch/Alarm
body (Open Pectus spends two). With Start queued before tick 0 the run starts in tick 0 and the
first line runs in tick 1. Where a case describes an Open Pectus quirk that Pectus fixes, the test
asserts Pectus' behaviour and its docstring says what Open Pectus did.
"""

from __future__ import annotations

import textwrap

import pytest

from pectus.pcode.analyzer import analyze
from pectus.pcode.syntax import Kind, parse
from pectus.uod import RegexNumber, UodBuilder, UodCommand, tags


# --- helpers ------------------------------------------------------------------------------------


def dedent(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def run(simulate, text: str, **kwargs):
    """A simulator on the test unit for the dedented method, Start queued."""
    return simulate(dedent(text), **kwargs)


def tick_of(sim, time: float) -> int:
    """The tick index at which a run-log time (clock seconds) was taken."""
    return round((time - sim.start_time) / sim.tick_length)


def mark_ticks(sim) -> list[tuple[str, int]]:
    """(mark, tick) of every completed Mark, in run-log order."""
    return [(i.arguments, tick_of(sim, i.end)) for i in sim.run_log
            if i.instruction == "Mark" and i.state == "completed"]


def items(sim, name: str):
    return [i for i in sim.run_log if i.name == name]


def states(sim, name: str) -> list[str]:
    return [str(i.state) for i in items(sim, name)]


def until_marks(sim, *marks: str, max_seconds: float = 10.0) -> int:
    """Run until the marks are exactly ``marks``; return the ticks run."""
    return sim.run_until(lambda: sim.marks == list(marks), max_seconds=max_seconds)


def events(sim, kind: str):
    return [e for e in sim.events if e.kind == kind]


def paused_on_error(sim, *fragments: str) -> None:
    """The run is paused on an error whose message holds every fragment."""
    assert sim.system_state == "Paused"
    assert sim.method_status == "Error"
    assert len(sim.errors) == 1, sim.errors
    for fragment in fragments:
        assert fragment in sim.errors[0], sim.errors[0]


def only_line(text: str):
    """The node of a one-line method, and the method's syntax errors."""
    method = parse(text)
    assert len(method.lines) == 1
    return method.lines[0], method.errors


def tree(method) -> list[tuple[int, int, str]]:
    """(line, depth, run-log name) of every instruction node, in line order."""
    return [(n.line, n.depth, n.display_name) for n in method.program.walk() if n.kind is not Kind.PROGRAM]


# --- SEQ: sequential execution and unit commands -------------------------------------------------


def test_SEQ_001_sequential_marks_in_order(simulate):
    sim = run(simulate, """
        Mark: A
        Mark: B
        Mark: C
    """)
    sim.run_ticks(10)
    assert sim.marks == ["A", "B", "C"]
    assert states(sim, "Mark: A") == states(sim, "Mark: B") == states(sim, "Mark: C") == ["completed"]
    assert sim.value("Mark") == "C"  # the current mark (Open Pectus joins them: docs/pcode.md)
    assert sim.lines("executed") == [1, 2, 3]


def test_a_run_starts_without_the_previous_runs_mark(simulate):
    sim = run(simulate, "Mark: A\nStop")
    sim.run_ticks(10)
    assert sim.value("Mark") == "A"
    assert sim.start()
    sim.run_ticks(1)
    assert sim.value("Mark") is None


def test_SEQ_002_one_tick_per_instruction(simulate):
    """Timing level. Open Pectus runs `Mark: a/b/c` in ticks 3, 5, 7 (two ticks an instruction);
    Pectus runs one instruction a tick from tick 1 (Start takes effect in tick 0). Blank and
    comment lines cost nothing; a Block takes one tick to start, its body lines follow."""
    sim = run(simulate, """
        Mark: a

        # a comment
        Mark: b
        Mark: c
        Block: B
            Mark: in block
            End block
        Mark: after
    """)
    sim.run_ticks(12)
    assert mark_ticks(sim) == [("a", 1), ("b", 2), ("c", 3), ("in block", 5), ("after", 7)]
    assert tick_of(sim, sim.item("Block: B").start) == 4
    assert tick_of(sim, sim.item("End block").end) == 6


def test_SEQ_005_info_warning_error_log_and_continue(simulate):
    sim = run(simulate, """
        Info: starting
        Warning: low buffer
        Error: sensor drift
        Mark: after
    """)
    sim.run_ticks(8)
    logs = [(e.level, e.message, e.line) for e in events(sim, "log")]
    assert logs == [("info", "starting", 1), ("warning", "low buffer", 2), ("error", "sensor drift", 3)]
    assert sim.marks == ["after"]
    assert sim.method_status == "OK"
    assert sim.system_state == "Running"
    assert sim.errors == []
    assert states(sim, "Error: sensor drift") == ["completed"]


def test_SEQ_006_multi_tick_command_runs_in_background(simulate):
    sim = run(simulate, """
        Reset
        Mark: A
    """)
    until_marks(sim, "A")
    reset = sim.item("Reset")
    assert sim.tick_index == 2
    assert reset.state == "started"
    assert reset.cancellable
    assert 0 < reset.progress < 1
    sim.run_until(lambda: reset.state != "started", max_seconds=5)
    assert reset.state == "completed"
    assert reset.progress == 1.0
    assert (tick_of(sim, reset.start), tick_of(sim, reset.end)) == (1, 10)


def test_SEQ_007_same_command_again_cancels_the_running_one(simulate):
    sim = run(simulate, """
        Reset
        Reset
        Mark: A
    """)
    until_marks(sim, "A")
    first, second = items(sim, "Reset")
    assert first.state == "cancelled" and first.cancelled
    assert tick_of(sim, first.end) == 2
    assert second.state == "started"
    sim.run_until(lambda: second.state != "started", max_seconds=5)
    assert second.state == "completed"
    assert first.state == "cancelled"


def test_SEQ_008_overlapping_command_cancels_the_running_one(simulate):
    sim = run(simulate, """
        Fill
        Drain
        Mark: A
    """)
    until_marks(sim, "A")
    sim.run_ticks(5)
    assert states(sim, "Fill") == ["cancelled"]
    assert states(sim, "Drain") == ["started"]
    assert sim.item("Fill").cancelled
    assert sim.item("Drain").cancellable


def _flow_unit():
    """A unit whose Flow command takes L/h or L/min and sets an L/h tag."""
    def set_flow(cmd: UodCommand, number: str, number_unit: str) -> None:
        """Flow: 2 L/min"""
        cmd.context.tags["FT01"].set_value_and_unit(float(number), number_unit, 0.0)
        cmd.set_complete()

    return (
        UodBuilder()
        .with_instrument("FlowUnit")
        .with_author("Test Author", "test@example.com")
        .with_filename(__file__)
        .with_location("Test lab")
        .with_hardware_none()
        .with_tag(tags.Tag("FT01", value=0.0, unit="L/h"))
        .with_command_regex_arguments("Flow", RegexNumber(units=["L/h", "L/min"]), set_flow)
        .build()
    )


def test_SEQ_009_command_argument_converted_to_tag_unit(simulate):
    sim = run(simulate, """
        Flow: 2 L/min
        Mark: set
    """, uod=_flow_unit())
    until_marks(sim, "set")
    assert sim.item("Flow: 2 L/min").state == "completed"
    value = sim.tag("FT01")
    assert value.value == pytest.approx(120.0)
    assert value.unit == "L/h"


def test_SEQ_010_invalid_command_argument_is_a_run_time_error(simulate):
    sim = run(simulate, """
        Mark: before
        PU01: fifty %
        Mark: after
    """)
    sim.run_ticks(10)
    paused_on_error(sim, "Invalid arguments", "PU01")
    assert sim.marks == ["before"]
    assert states(sim, "PU01: fifty %") == ["failed"]
    assert sim.value("PU01") == 0.0


def test_SEQ_011_notify_raises_a_notification_and_completes(simulate):
    sim = run(simulate, """
        Notify: Column packed
        Mark: after
    """)
    sim.run_ticks(5)
    assert [e.text for e in events(sim, "notify")] == ["Column packed"]
    assert states(sim, "Notify: Column packed") == ["completed"]
    assert mark_ticks(sim) == [("after", 2)]


def test_SEQ_012_run_stays_running_after_the_last_line(simulate):
    sim = run(simulate, """
        Mark: A
    """)
    sim.run_for(5)
    assert sim.marks == ["A"]
    assert sim.system_state == "Running"
    assert sim.method_status == "OK"
    assert len(events(sim, "method_end")) == 1
    assert sim.tick_index == 49
    assert sim.value("Process Time") == pytest.approx(4.9)  # counts from tick 1


# --- MRK, BAT, LOG ------------------------------------------------------------------------------


def test_MRK_001_mark_is_not_forcible(simulate):
    sim = run(simulate, """
        Mark: A
        Mark
    """)
    sim.run_ticks(4)
    mark = sim.item("Mark: A")
    assert not mark.forcible and not mark.cancellable
    assert not sim.force(mark)
    assert not mark.forced
    assert sim.marks == ["A", ""]  # a Mark without argument records an empty mark


def test_BAT_001_batch_sets_the_batch_name_tag(simulate):
    """Open Pectus needs the UOD to define `Batch Name` (the test unit does not); in Pectus it is
    a system tag."""
    sim = run(simulate, """
        Batch: Lot 42
        Mark: after
    """)
    until_marks(sim, "after")
    assert sim.value("Batch Name") == "Lot 42"
    assert states(sim, "Batch: Lot 42") == ["completed"]
    assert sim.errors == []


def test_LOG_003_each_alarm_invocation_has_its_own_items(simulate):
    sim = run(simulate, """
        Alarm: Run Counter < 2
            Mark: x
            Increment run counter
    """)
    sim.run_for(3)
    assert sim.marks == ["x", "x"]
    marks = items(sim, "Mark: x")
    increments = items(sim, "Increment run counter")
    assert [i.state for i in marks + increments] == ["completed"] * 4
    assert len({i.id for i in marks + increments}) == 4
    assert marks[0].end < increments[0].start <= marks[1].start
    assert states(sim, "Alarm: Run Counter < 2") == ["completed", "completed", "started"]


# --- BLK: Block, End block, End blocks ----------------------------------------------------------


def test_BLK_001_end_block_skips_the_rest_of_the_block(simulate):
    sim = run(simulate, """
        Block: A
            Mark: a1
            End block
            Mark: a2
        Mark: after
    """)
    until_marks(sim, "a1")
    assert sim.value("Block") == "A"
    sim.run_ticks(10)
    assert sim.marks == ["a1", "after"]
    assert sim.value("Block") is None
    assert states(sim, "Block: A") == ["completed"]
    assert 4 not in sim.method_state
    assert items(sim, "Mark: a2") == []


def test_BLK_003_block_without_end_block_never_ends(simulate):
    sim = run(simulate, """
        Block: A
            Mark: a1
        Mark: after
    """)
    sim.run_for(10)
    assert sim.marks == ["a1"]
    assert sim.value("Block") == "A"
    assert states(sim, "Block: A") == ["started"]
    assert sim.system_state == "Running"


def test_BLK_005_end_blocks_ends_every_block_and_clears_block_tag(simulate):
    sim = run(simulate, """
        Block: Outer
            Block: Inner
                Mark: inner
                End blocks
        Mark: after
    """)
    until_marks(sim, "inner")
    assert sim.value("Block") == "Inner"
    sim.run_ticks(1)  # End blocks
    assert sim.value("Block") is None
    assert states(sim, "Block: Inner") == states(sim, "Block: Outer") == ["completed"]
    assert sim.item("Block: Inner").end == sim.item("Block: Outer").end
    until_marks(sim, "inner", "after")


def test_BLK_006_end_blocks_three_levels_deep_skips_all_remaining_lines(simulate):
    sim = run(simulate, """
        Block: A
            Block: B
                Block: C
                    Mark: c1
                    End blocks
                    Mark: c2
                Mark: b2
            Mark: a2
        Mark: after
    """)
    sim.run_for(3)
    assert sim.marks == ["c1", "after"]
    assert sim.value("Block") is None
    assert [states(sim, f"Block: {b}") for b in "ABC"] == [["completed"]] * 3


def test_BLK_007_watch_in_the_block_ends_it(simulate):
    sim = run(simulate, """
        Base: s
        Block: A
            Watch: Block Time > 0.95 s
                End block
            Mark: a
        Mark: after
    """)
    sim.run_for(3)
    # Block starts in tick 2; Block Time is 1.0 s at the end of tick 11, the Watch fires in
    # tick 12 and its End block runs in tick 13; the main line goes on in tick 14.
    assert mark_ticks(sim) == [("a", 4), ("after", 14)]
    assert tick_of(sim, sim.item("End block").end) == 13
    assert states(sim, "Block: A") == ["completed"]
    assert sim.value("Block") is None


def test_BLK_008_end_block_outside_a_block_is_a_no_op(simulate):
    sim = run(simulate, """
        End block
        End blocks
        Mark: after
    """)
    sim.run_ticks(5)
    assert sim.marks == ["after"]
    assert states(sim, "End block") == states(sim, "End blocks") == ["completed"]
    assert sim.method_status == "OK"
    assert sim.value("Block") is None


def test_BLK_009_block_ended_by_watch_abandons_its_own_pending_end_block(simulate):
    """The inner block's own `2 End block` is abandoned when a Watch ends the block; it does not
    end the outer block later."""
    sim = run(simulate, """
        Base: s
        Block: Outer
            Block: Inner
                Watch: Block Time > 0.45 s
                    End block
                2 End block
            Mark: in outer
        Mark: after
    """)
    sim.run_for(6)
    assert sim.marks == ["in outer"]
    assert sim.value("Block") == "Outer"
    assert states(sim, "Block: Inner") == ["completed"]
    assert states(sim, "Block: Outer") == ["started"]
    assert [i.line for i in items(sim, "End block")] == [5]
    assert 6 not in sim.method_state


def test_BLK_010_line_waiting_for_threshold_abandoned_at_block_end(simulate):
    sim = run(simulate, """
        Base: s
        Block: A
            Watch: Block Time > 0.45 s
                End block
            2 Mark: late
        Mark: after
    """)
    until_marks(sim, "after")
    sim.run_for(5)
    assert sim.marks == ["after"]
    assert items(sim, "Mark: late") == []
    assert 5 not in sim.method_state


def test_BLK_012_macro_body_abandoned_at_block_end(simulate):
    sim = run(simulate, """
        Base: s
        Macro: M
            Mark: m1
            Wait: 2 s
            Mark: m2
        Block: A
            Watch: Block Time > 0.45 s
                End block
            Call macro: M
            Mark: a2
        Mark: after
    """)
    until_marks(sim, "m1", "after")
    sim.run_for(5)
    assert sim.marks == ["m1", "after"]
    assert states(sim, "Call macro: M") == ["cancelled"]
    assert states(sim, "Wait: 2 s") == ["cancelled"]
    assert items(sim, "Mark: m2") == items(sim, "Mark: a2") == []
    # Nothing runs any more: no line of the ended block may still show as running.
    assert sim.lines("started") == []


def test_BLK_013_running_wait_abandoned_at_block_end(simulate):
    sim = run(simulate, """
        Base: s
        Block: A
            Watch: Block Time > 0.45 s
                End block
            Wait: 3 s
            Mark: a2
        Mark: after
    """)
    until_marks(sim, "after")
    sim.run_for(5)
    assert sim.marks == ["after"]
    wait = sim.item("Wait: 3 s")
    assert wait.state == "cancelled"
    assert not wait.forcible
    assert items(sim, "Mark: a2") == []
    assert sim.lines("started") == []  # the abandoned Wait does not show as running


def test_BLK_014_end_blocks_in_watch_body_ends_all_blocks(simulate):
    sim = run(simulate, """
        Base: s
        Watch: Block = Inner
            Wait: 0.5 s
            End blocks
        Block: Outer
            Block: Inner
                Mark: inner
                Wait: 5 s
                Mark: inner late
            Mark: outer late
        Mark: after
    """)
    until_marks(sim, "inner", "after", max_seconds=3)
    sim.run_for(6)
    assert sim.marks == ["inner", "after"]
    assert sim.value("Block") is None
    assert states(sim, "Block: Outer") == states(sim, "Block: Inner") == ["completed"]
    assert states(sim, "End blocks") == ["completed"]
    assert states(sim, "Wait: 5 s") == ["cancelled"]


def test_BLK_015_outer_block_time_includes_inner_block(simulate):
    sim = run(simulate, """
        Base: s
        Block: Outer
            1 Block: Inner
                1 End block
            Mark: back in outer
            0.5 End block
        Mark: after
    """)
    until_marks(sim, "back in outer")
    # Outer started in tick 2 (Process Time 0.1 s); Inner ran from 1 s to 2 s of Outer's time.
    assert sim.value("Block") == "Outer"
    assert sim.value("Block Time") == pytest.approx(2.2)
    inner = sim.item("Block: Inner")
    assert (tick_of(sim, inner.start), tick_of(sim, inner.end)) == (12, 22)
    until_marks(sim, "back in outer", "after")
    assert sim.value("Block") is None


def test_BLK_016_block_in_watch_body_waits_for_main_line_block(simulate):
    sim = run(simulate, """
        Base: s
        Watch: Run Counter = 0
            Block: W
                Mark: in watch block
                End block
        Block: Main
            Mark: main start
            1 End block
        Mark: after main
    """)
    until_marks(sim, "main start", "after main", "in watch block")
    main = sim.item("Block: Main")
    watch_block = sim.item("Block: W")
    assert watch_block.start >= main.end
    assert mark_ticks(sim)[1:] == [("after main", tick_of(sim, main.end) + 1),
                                   ("in watch block", tick_of(sim, main.end) + 1)]


def test_BLK_017_watch_inside_block_dropped_when_block_ends(simulate):
    sim = run(simulate, """
        Block: A
            Watch: Run Counter > 0
                Mark: watch fired
            Alarm: Run Counter > 0
                Mark: alarm fired
            End block
        Increment run counter
        Mark: after
    """)
    sim.run_for(3)
    assert sim.marks == ["after"]
    assert sim.value("Run Counter") == 1
    assert states(sim, "Watch: Run Counter > 0") == ["cancelled"]
    assert states(sim, "Alarm: Run Counter > 0") == ["cancelled"]
    assert sim.lines("started") == []


# --- WAT: Watch ------------------------------------------------------------------------------------


def test_WAT_002_watch_fires_once_and_is_not_rearmed(simulate):
    sim = run(simulate, """
        Watch: Counter > 0
            Mark: fired
        Mark: main
    """)
    sim.run_ticks(5)
    assert sim.marks == ["main"]
    sim.set_tag("Counter", 1)
    sim.run_for(3)
    assert sim.marks == ["main", "fired"]
    assert states(sim, "Watch: Counter > 0") == ["completed"]
    assert sim.method_state[1] == "executed"


def test_WAT_003_main_line_and_watch_body_alternate(simulate):
    """Open Pectus: `a, b, a1, b1, a2, b2, a3, b3`, two ticks each. Pectus: the same order, the
    main line and the body each run one instruction a tick, the main line first."""
    sim = run(simulate, """
        Watch: Run Counter = 0
            Mark: b
            Mark: b1
            Mark: b2
            Mark: b3
        Mark: a
        Mark: a1
        Mark: a2
        Mark: a3
    """)
    sim.run_ticks(10)
    assert sim.marks == ["a", "b", "a1", "b1", "a2", "b2", "a3", "b3"]
    assert [t for _, t in mark_ticks(sim)] == [2, 2, 3, 3, 4, 4, 5, 5]


def test_WAT_004_nested_watch_registered_when_outer_body_reaches_it(simulate):
    sim = run(simulate, """
        Watch: Counter > 0
            Mark: outer
            Watch: Run Counter > 0
                Mark: inner
        Increment run counter
        Mark: main
    """)
    sim.run_for(2)
    assert sim.marks == ["main"]  # inner's condition is true, but it is not registered
    assert 3 not in sim.method_state
    assert items(sim, "Watch: Run Counter > 0") == []
    sim.set_tag("Counter", 1)
    sim.run_for(2)
    assert sim.marks == ["main", "outer", "inner"]


def test_WAT_006_cancelled_watch_never_runs(simulate):
    sim = run(simulate, """
        Watch: Counter > 0
            Mark: fired
        Mark: main
    """)
    sim.run_ticks(3)
    watch = sim.item("Watch: Counter > 0")
    assert watch.cancellable and watch.forcible
    assert sim.cancel(watch)
    assert watch.state == "cancelled" and watch.cancelled
    sim.set_tag("Counter", 1)
    sim.run_for(3)
    assert sim.marks == ["main"]
    assert not sim.force(watch)


def test_WAT_007_forced_watch_runs_its_body(simulate):
    sim = run(simulate, """
        Watch: Counter > 0
            Mark: fired
        Mark: main
    """)
    sim.run_ticks(3)
    watch = sim.item("Watch: Counter > 0")
    assert sim.force(watch)
    assert watch.forced
    sim.run_ticks(3)
    assert sim.marks == ["main", "fired"]
    assert watch.state == "completed"
    assert not sim.cancel(watch) and not sim.force(watch)
    sim.set_tag("Counter", 1)
    sim.run_for(2)
    assert sim.marks == ["main", "fired"]


# --- ALM: Alarm ------------------------------------------------------------------------------------


def test_ALM_002_alarm_runs_again_while_condition_holds(simulate):
    """Each invocation runs its body, then the Alarm re-arms (one tick) and its condition is
    evaluated again in the next tick: with a one-line body, one run every 3 ticks."""
    sim = run(simulate, """
        Alarm: Counter > 0
            Mark: alarm
    """)
    sim.set_tag("Counter", 1)
    sim.run_ticks(9)
    assert mark_ticks(sim) == [("alarm", 2), ("alarm", 5), ("alarm", 8)]
    sim.set_tag("Counter", 0)
    sim.run_for(2)
    assert sim.marks == ["alarm"] * 3


def test_ALM_003_alarm_stops_when_its_body_makes_condition_false(simulate):
    sim = run(simulate, """
        Alarm: Run Counter < 5
            Increment run counter
    """)
    sim.run_for(5)
    assert sim.value("Run Counter") == 5
    assert states(sim, "Increment run counter") == ["completed"] * 5
    assert states(sim, "Alarm: Run Counter < 5") == ["completed"] * 5 + ["started"]


def test_ALM_004_watch_in_alarm_body_rearmed_each_invocation(simulate):
    sim = run(simulate, """
        Alarm: Run Counter < 3
            Watch: Run Counter >= 0
                Mark: watch
            Increment run counter
    """)
    sim.run_for(5)
    assert sim.value("Run Counter") == 3
    assert sim.marks == ["watch"] * 3
    assert states(sim, "Watch: Run Counter >= 0") == ["completed"] * 3


def test_ALM_005_forced_alarm_runs_once_and_rearms(simulate):
    sim = run(simulate, """
        Alarm: Counter > 0
            Mark: alarm
        Mark: main
    """)
    sim.run_ticks(3)
    assert sim.force(sim.item("Alarm: Counter > 0"))
    sim.run_for(2)
    assert sim.marks == ["main", "alarm"]
    first, armed = items(sim, "Alarm: Counter > 0")
    assert first.state == "completed" and first.forced
    assert armed.state == "started" and armed.cancellable and armed.forcible
    sim.set_tag("Counter", 1)
    sim.run_ticks(3)
    assert sim.marks == ["main", "alarm", "alarm"]


def test_ALM_006_cancelled_alarm_never_runs_and_logs_nothing(simulate):
    """Open Pectus logs an error on every tick after an Alarm is cancelled; Pectus just cancels it."""
    sim = run(simulate, """
        Alarm: Counter > 0
            Mark: alarm
        Mark: main
    """)
    sim.run_ticks(3)
    alarm = sim.item("Alarm: Counter > 0")
    assert sim.cancel(alarm)
    sim.set_tag("Counter", 1)
    sim.run_for(3)
    assert sim.marks == ["main"]
    assert states(sim, "Alarm: Counter > 0") == ["cancelled"]
    assert sim.errors == []
    assert [e for e in events(sim, "log") if e.level in ("error", "warning")] == []
    assert (sim.system_state, sim.method_status) == ("Running", "OK")


# --- MAC: Macro and Call macro ---------------------------------------------------------------------


def test_MAC_003_macro_called_several_times(simulate):
    sim = run(simulate, """
        Macro: Rinse
            Mark: rinse
        Call macro: Rinse
        Call macro: Rinse
        Call macro: Rinse
        Mark: done
    """)
    sim.run_for(2)
    assert sim.marks == ["rinse", "rinse", "rinse", "done"]
    assert states(sim, "Macro: Rinse") == ["completed"]
    assert states(sim, "Call macro: Rinse") == ["completed"] * 3
    assert states(sim, "Mark: rinse") == ["completed"] * 3


def test_MAC_004_nested_macro_calls(simulate):
    sim = run(simulate, """
        Macro: Inner
            Mark: inner
        Macro: Outer
            Mark: outer 1
            Call macro: Inner
            Mark: outer 2
        Call macro: Outer
        Mark: done
    """)
    sim.run_for(2)
    assert sim.marks == ["outer 1", "inner", "outer 2", "done"]
    outer, inner = sim.item("Call macro: Outer"), sim.item("Call macro: Inner")
    assert outer.state == inner.state == "completed"
    assert outer.start < inner.start and inner.end <= outer.end


def test_MAC_005_unknown_macro_is_an_error_listing_macros(simulate):
    sim = run(simulate, """
        Macro: Rinse
            Mark: rinse
        Macro: Flush
            Mark: flush
        Call macro: Clean
        Mark: after
    """)
    sim.run_for(2)
    paused_on_error(sim, '"Clean"', '"Rinse"', '"Flush"')
    assert sim.marks == []
    assert sim.lines("failed") == [5]


def test_MAC_006_macro_calling_itself_refused_before_running(simulate):
    sim = run(simulate, """
        Macro: A
            Mark: a
            Call macro: A
        Mark: before
        Call macro: A
        Mark: after
    """)
    sim.run_for(2)
    paused_on_error(sim, 'Macro "A" calls itself', "A -> A")
    assert sim.marks == ["before"]
    assert sim.lines("failed") == [5]
    assert items(sim, "Mark: a") == []


def test_MAC_007_indirect_recursion_refused_before_running(simulate):
    sim = run(simulate, """
        Macro: A
            Mark: a
            Call macro: B
        Macro: B
            Mark: b
            Call macro: A
        Call macro: A
    """)
    sim.run_for(2)
    paused_on_error(sim, 'Macro "A" calls itself', "A -> B -> A")
    assert sim.marks == []
    assert sim.lines("failed") == [7]


def test_MAC_008_recursion_through_three_macros_refused_from_any_entry(simulate):
    sim = run(simulate, """
        Macro: A
            Call macro: B
        Macro: B
            Mark: b
            Call macro: C
        Macro: C
            Call macro: A
        Macro: Safe
            Mark: safe
        Call macro: Safe
        Call macro: B
    """)
    sim.run_for(2)
    paused_on_error(sim, 'Macro "B" calls itself', "B -> C -> A -> B")
    assert sim.marks == ["safe"]
    assert sim.lines("failed") == [11]


def test_MAC_009_call_before_macro_is_defined_is_an_error(simulate):
    sim = run(simulate, """
        Call macro: Rinse
        Macro: Rinse
            Mark: rinse
    """)
    sim.run_for(2)
    paused_on_error(sim, '"Rinse"')
    assert sim.marks == []
    assert sim.lines("failed") == [1]


def test_MAC_010_macro_called_from_watch_and_alarm_bodies(simulate):
    sim = run(simulate, """
        Macro: Note
            Mark: note
        Watch: Counter > 0
            Call macro: Note
        Alarm: Run Counter < 2
            Call macro: Note
            Increment run counter
    """)
    sim.run_for(2)
    assert sim.marks == ["note", "note"]
    sim.set_tag("Counter", 1)
    sim.run_for(2)
    assert sim.marks == ["note"] * 3
    assert states(sim, "Call macro: Note") == ["completed"] * 3


def test_MAC_011_redefinition_replaces_macro_for_later_calls(simulate):
    sim = run(simulate, """
        Macro: M
            Mark: first
        Call macro: M
        Macro: M
            Mark: second
        Call macro: M
    """)
    sim.run_for(2)
    assert sim.marks == ["first", "second"]
    assert sim.errors == []


# --- PARSE: the parser ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind, argument, threshold, comment", [
    ("1.0 Mark: A # no comment", Kind.MARK, "A", 1.0, "no comment"),
    ("Mark: A#c", Kind.MARK, "A", None, "c"),
    ("Mark # c", Kind.MARK, None, None, "c"),
    ("Mark: a: b", Kind.MARK, "a: b", None, ""),
    ("Mark : A", Kind.MARK, "A", None, ""),
    ("5 Mark: A", Kind.MARK, "A", 5.0, ""),
    ("0.5 Mark: A", Kind.MARK, "A", 0.5, ""),
    ("End block", Kind.END_BLOCK, None, None, ""),
    ("Call macro: Rinse", Kind.CALL_MACRO, "Rinse", None, ""),
    ("Reset", Kind.COMMAND, None, None, ""),
])
def test_PARSE_001_line_anatomy(text, kind, argument, threshold, comment):
    node, errors = only_line(text)
    assert errors == []
    assert (node.kind, node.argument, node.threshold, node.comment) == (kind, argument, threshold, comment)
    assert node.display_name == (f"{node.name}: {argument}" if argument else node.name)


def test_PARSE_001_line_splitting_and_ids():
    assert parse("").lines == []
    method = parse("Mark: a\r\nMark: b\rMark: c\nMark: d")
    assert [(n.line, n.id, n.argument) for n in method.lines] == [
        (1, "1", "a"), (2, "2", "b"), (3, "3", "c"), (4, "4", "d")]
    assert [n.id for n in parse([("id_7", "Mark: x"), ("id_3", "Mark: y")]).lines] == ["id_7", "id_3"]


def test_PARSE_004_blank_lines_do_not_end_a_block():
    method = parse("\n".join([
        "Block: A",
        "    Mark: a1",
        "",
        "  ",
        "            ",
        "    Mark: a2",
        "",
        "    End block",
        "Mark: after",
    ]))
    assert method.errors == []
    assert tree(method) == [(1, 0, "Block: A"), (2, 1, "Mark: a1"), (6, 1, "Mark: a2"),
                            (8, 1, "End block"), (9, 0, "Mark: after")]
    assert [method.node(n).kind for n in (3, 4, 5, 7)] == [Kind.BLANK] * 4


def test_PARSE_005_comment_lines_at_any_indentation_do_not_end_a_block(simulate):
    text = "\n".join([
        "Block: A",
        "    Mark: a1",
        "# at column 1",
        "  # at column 3",
        "            # deeper than the block",
        "    Mark: a2",
        "    End block",
        "Mark: after",
    ])
    method = parse(text)
    assert method.errors == []
    assert tree(method) == [(1, 0, "Block: A"), (2, 1, "Mark: a1"), (6, 1, "Mark: a2"),
                            (7, 1, "End block"), (8, 0, "Mark: after")]
    assert [(method.node(n).kind, method.node(n).comment) for n in (3, 4, 5)] == [
        (Kind.COMMENT, "at column 1"), (Kind.COMMENT, "at column 3"), (Kind.COMMENT, "deeper than the block")]
    sim = simulate(text)
    until_marks(sim, "a1", "a2", "after")


@pytest.mark.parametrize("condition, tag, op, value, unit", [
    ("Run Counter > 0", "Run Counter", ">", 0.0, None),
    ("x>0.98", "x", ">", 0.98, None),
    ("x > 0.98 cm", "x", ">", 0.98, "cm"),
    ("x > 5m2", "x", ">", 5.0, "m2"),
    ("x > 5%", "x", ">", 5.0, "%"),
    ("TT01 >= 25.5 degC", "TT01", ">=", 25.5, "degC"),
    ("Flow <= 3 L/min", "Flow", "<=", 3.0, "L/min"),
    ("Block Time != 2 s", "Block Time", "!=", 2.0, "s"),
    ("x < -1.5", "x", "<", -1.5, None),
])
def test_PARSE_007_numeric_conditions(condition, tag, op, value, unit):
    node, errors = only_line(f"Watch: {condition}")
    assert errors == []
    c = node.condition
    assert (c.tag, c.op, c.value, c.unit) == (tag, op, value, unit)
    assert c.is_numeric


@pytest.mark.parametrize("condition, tag, op, value", [
    ("x>0,98", "x", ">", "0,98"),
    ("foo == bar", "foo", "==", "bar"),
    ("Valve = Open", "Valve", "=", "Open"),
    ("Category != Rising fast", "Category", "!=", "Rising fast"),
])
def test_PARSE_008_text_valued_conditions(condition, tag, op, value):
    node, errors = only_line(f"Alarm: {condition}")
    assert errors == []
    c = node.condition
    assert (c.tag, c.op, c.value, c.unit) == (tag, op, value, None)
    assert not c.is_numeric


@pytest.mark.parametrize("condition, id", [("foo ==", "MissingValue"), ("foo", "MissingOperator"),
                                           ("A = B = C", "InvalidCondition"), ("== 3", "MissingTag"),
                                           ("", "ConditionMissing")])
def test_PARSE_009_malformed_conditions_are_syntax_errors(simulate, condition, id):
    text = f"Watch: {condition}\n    Mark: a"
    method = parse(text)
    assert [(e.id, e.line) for e in method.errors] == [(id, 1)]
    assert method.node(1).condition is None
    with pytest.raises(ValueError, match="has 1 error"):
        simulate(text)


def test_PARSE_012_argument_needs_no_space_after_colon(simulate):
    """Open Pectus needs ': ' to separate the argument: `Mark:a` and `Mark :A` there mark an
    empty text. Pectus reads the argument after the first ':'."""
    assert only_line("Mark:a")[0].argument == "a"
    assert only_line("Mark :A")[0].argument == "A"
    assert only_line("Mark:")[0].argument == ""
    sim = run(simulate, """
        Mark:a
        Mark :A
    """)
    until_marks(sim, "a", "A")


def test_PARSE_013_lines_that_are_not_known_instructions(simulate):
    """Names are case sensitive, a threshold needs a leading digit and a space before the name,
    a name runs to the first ':'; such lines are unknown instructions (reported when run), and a
    line that cannot be an instruction at all (`.5 Mark: A`) is a syntax error: Open Pectus
    parsed it to an unknown instruction with an empty name and failed only when run."""
    for text, name in [("1Mark: A", "1Mark"), ("mark: A", "mark"), ("MARK: A", "MARK"),
                       ("End  block", "End  block"), ("Watch x > 2", "Watch x > 2")]:
        node, errors = only_line(text)
        assert (node.kind, node.name, errors) == (Kind.COMMAND, name, []), text
    node, errors = only_line(".5 Mark: A")
    assert node.kind is Kind.INVALID
    assert [(e.id, e.line, e.column) for e in errors] == [("InvalidInstruction", 1, 1)]
    with pytest.raises(ValueError, match="not an instruction"):
        simulate(".5 Mark: A")
    sim = run(simulate, """
        Mark: before
        mark: A
        Mark: after
    """)
    sim.run_ticks(5)
    paused_on_error(sim, "Invalid instruction 'mark'", "did you mean 'Mark'")
    assert sim.marks == ["before"]
    assert sim.lines("failed") == [2]


def test_PARSE_013_two_spaces_after_threshold():
    """Open Pectus: the threshold takes exactly one whitespace character, so `5  Mark: A` is an
    unknown instruction named `5  Mark`. Pectus reads threshold 5 and Mark (not listed among the
    documented differences; see the report)."""
    node, errors = only_line("5  Mark: A")
    assert (node.kind, node.threshold, node.argument, errors) == (Kind.MARK, 5.0, "A", [])


# --- QRK: parser quirks of Open Pectus that Pectus fixes ------------------------------------------


def test_QRK_005_exponent_is_a_number_and_mistyped_operator_is_an_error(simulate):
    """Open Pectus reads `1e3` as 1 with unit `e3`, and `A =< 3` as tag `A =` compared with `<`.
    Pectus reads 1000, and reports `=<` as an error that suggests `<=`."""
    node, errors = only_line("Watch: Counter > 1e3")
    assert errors == []
    assert (node.condition.value, node.condition.unit) == (1000.0, None)
    node, errors = only_line("Watch: Counter =< 3")
    assert node.condition is None
    assert [(e.id, e.fixes) for e in errors] == [("InvalidCondition", ("<=",))]
    assert "did you mean '<='" in errors[0].message
    assert "did you mean '>='" in only_line("Alarm: Counter => 3")[1][0].message
    sim = run(simulate, """
        Watch: Counter > 1e3
            Mark: above a thousand
    """)
    sim.set_tag("Counter", 500)
    sim.run_for(1)
    assert sim.marks == []
    sim.set_tag("Counter", 1500)
    sim.run_for(1)
    assert sim.marks == ["above a thousand"]


def test_QRK_006_same_indentation_after_header_is_a_sibling(simulate):
    """Open Pectus adopts the lines at the header's indentation as the body (`Block: A` /
    `Mark: B` puts the Mark in the block). In Pectus they are siblings and the empty body is
    reported."""
    text = dedent("""
        Watch: Counter > 0
        Mark: B
    """)
    method = parse(text)
    assert method.errors == []
    assert tree(method) == [(1, 0, "Watch: Counter > 0"), (2, 0, "Mark: B")]
    assert method.node(1).children == []
    assert [(d.id, d.line) for d in analyze(method) if d.id == "EmptyBody"] == [("EmptyBody", 1)]
    sim = simulate(text)
    until_marks(sim, "B")
    block = parse("Block: A\nMark: B\nEnd block")
    assert tree(block) == [(1, 0, "Block: A"), (2, 0, "Mark: B"), (3, 0, "End block")]


def test_QRK_007_blank_line_after_header_keeps_the_block(simulate):
    """Open Pectus: an unindented blank line right after a header clears the expected indent, the
    first body line becomes an indentation error and the structure goes wrong. In Pectus blank
    lines never change the structure."""
    text = "Block: A\n\n    Mark: B\n    End block\nMark: C"
    method = parse(text)
    assert method.errors == []
    assert tree(method) == [(1, 0, "Block: A"), (3, 1, "Mark: B"), (4, 1, "End block"), (5, 0, "Mark: C")]
    sim = simulate(text)
    until_marks(sim, "B", "C")
    assert states(sim, "Block: A") == ["completed"]
