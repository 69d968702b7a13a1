"""Conformance: running a method, against shared/spec/pcode.md (Open Pectus) and docs/pcode.md.

Families covered (one test per case id, at least):

* THR - thresholds and Base: THR-001, 005, 007, 009, 011, 013, 014, 015, 016;
* WAI - Wait: WAI-001, 003, 004, 005;
* PAU - Pause/Unpause, Hold/Unhold: PAU-001, 003, 004, 005, 009, 011;
* STP - Stop and Restart: STP-001, 002, 003, 004, 005, 007, 008;
* RCN - Increment run counter / Run counter: RCN-001, 002, 003;
* SIM - Simulate / Simulate off: SIM-001, 002, 003;
* CND - conditions and units: CND-001..004, 006..012, 014;
* ERR - run-time errors: ERR-001, 002, 003, 005;
* QRK-002, 003, 004, 008, 009, 010 - Open Pectus quirks that Pectus fixes (the test asserts
  Pectus' behaviour, its docstring says what Open Pectus did);
* safe values: Pause drives the outputs that have one to it, Unpause restores them, Stop applies them.

Timing is Pectus': one instruction a tick. With Start queued before tick 0 the run starts in tick
0 and the first line runs in tick 1 at Process Time 0. In a tick the interpreter runs before the
time tags advance, so an instruction sees (and its run-log item records in ``start_values``) the
Process Time / Block Time / Scope Time of the end of the previous tick: that is the position on
the timeline at which it ran.
"""

from __future__ import annotations

import textwrap

import pytest

from pectus.uod import UodBuilder, tags

# --- helpers ------------------------------------------------------------------------------------


def dedent(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def run(simulate, text: str, **kwargs):
    """A simulator on the test unit for the dedented method (line 1 = first line), Start queued."""
    return simulate(dedent(text), **kwargs)


def approx(value: float):
    return pytest.approx(value, abs=1e-6)


def at(sim, name: str, tag: str = "Process Time") -> float:
    """The value of a time tag when the run-log item ``name`` started: where on the timeline it ran."""
    return sim.item(name).start_values[tag]


def record(sim, ticks: int, what=lambda sim: sim.system_state) -> list:
    """``what(sim)`` after each of the next ``ticks`` ticks."""
    seen = []
    for _ in range(ticks):
        sim.run_ticks(1)
        seen.append(what(sim))
    return seen


def outputs(sim) -> tuple:
    """The two outputs of the test unit that have a safe value (PU01 0 %, Valve Closed)."""
    return sim.value("PU01"), sim.value("Valve")


def assert_paused_on_error(sim, line: int, message: str) -> None:
    """The run paused on one error at ``line``, whose message contains ``message``."""
    assert (sim.system_state, sim.method_status) == ("Paused", "Error")
    assert sim.lines("failed") == [line]
    assert len(sim.errors) == 1, sim.errors
    assert message in sim.errors[0]


def refused(sim, text: str) -> str:
    """Save a method that must be refused; return the reason."""
    outcome = sim.save_method(dedent(text))
    assert not outcome
    return outcome.reason


def bare_unit(*, volume: bool):
    """A unit with a totalizer tag, with or without the volume accumulators (never a column volume)."""
    builder = (UodBuilder().with_instrument("BareUnit").with_author("Test Author", "test@example.com")
               .with_filename(__file__).with_location("Test lab").with_hardware_none()
               .with_tag(tags.Tag("Totalizer", value=0.0, unit="L")))
    if volume:
        builder = builder.with_accumulated_volume("Totalizer")
    return builder.build()


def event_kinds(sim, *kinds: str) -> list[str]:
    return [e.kind for e in sim.events if e.kind in kinds]


# --- THR: thresholds and Base -----------------------------------------------------------------


def test_THR_001_default_base_is_minutes(simulate):
    sim = run(simulate, """
        Mark: start
        1 Mark: A1
    """)
    sim.run_for(1.5)
    assert sim.value("Base") == "min"
    assert sim.marks == ["start"]
    sim.run_until(lambda: "A1" in sim.marks, max_seconds=70)
    assert at(sim, "Mark: A1") == approx(60.0)


def test_THR_005_threshold_is_a_position_on_the_timeline_not_a_delay(simulate):
    sim = run(simulate, """
        Base: s
        1 Mark: a
        1 Mark: b
        0.5 Mark: c
    """)
    sim.run_for(3)
    assert sim.marks == ["a", "b", "c"]
    # a at 1 s; b and c are past their position already and follow one a tick.
    assert [at(sim, f"Mark: {m}") for m in "abc"] == [approx(1.0), approx(1.1), approx(1.2)]


def test_THR_007_base_min_fraction(simulate):
    sim = run(simulate, """
        Base: min
        Mark: start
        0.01 Mark: A
    """)
    sim.run_until(lambda: "A" in sim.marks, max_seconds=2)
    assert at(sim, "Mark: A") == approx(0.6)  # 0.01 min = 0.6 s


def test_THR_009_base_with_an_unknown_unit_is_a_run_time_error(simulate):
    sim = run(simulate, """
        Mark: a
        Base: xyz
        Mark: b
    """)
    sim.run_ticks(5)
    assert_paused_on_error(sim, 2, "Base unit 'xyz' is not available on this unit")
    assert sim.marks == ["a"]
    assert sim.value("Base") == "min"
    assert sim.item("Base: xyz").state == "failed"


def test_THR_011_volume_threshold_converts_from_base_unit(simulate):
    sim = run(simulate, """
        Base: mL
        1500 Mark: A
    """)
    sim.set_tag("Totalizer", 10.0)  # before Start: Accumulated Volume counts from here
    sim.run_ticks(3)
    sim.set_tag("Totalizer", 11.49)
    sim.run_ticks(5)
    assert sim.value("Accumulated Volume") == approx(1.49)
    assert sim.marks == []
    sim.set_tag("Totalizer", 11.5)
    sim.run_ticks(2)
    assert sim.marks == ["A"]
    assert at(sim, "Mark: A", "Accumulated Volume") == approx(1.5)


def test_THR_013_volume_base_needs_a_volume_accumulator(simulate):
    sim = simulate("Mark: a\nBase: L\nMark: b", uod=bare_unit(volume=False))
    sim.run_ticks(4)
    assert_paused_on_error(sim, 2, "Base unit 'L' is not available on this unit; it offers s, min, h")
    assert sim.marks == ["a"]


def test_THR_014_cv_base_needs_a_column_volume_accumulator(simulate):
    sim = simulate("Mark: a\nBase: CV\nMark: b", uod=bare_unit(volume=True))
    sim.run_ticks(4)
    assert_paused_on_error(sim, 2, "Base unit 'CV' is not available on this unit; it offers s, min, h, L, mL")
    assert sim.marks == ["a"]


def test_THR_015_thresholds_in_a_watch_body_count_from_activation(simulate):
    sim = run(simulate, """
        Base: s
        Watch: Counter > 0
            Mark: fired
            1 Mark: one second later
        Mark: main
    """)
    sim.run_for(2)
    sim.set_tag("Counter", 1)
    activated = sim.value("Process Time")  # the Watch sees it in the next tick, at this Process Time
    sim.run_for(2)
    assert sim.marks == ["main", "fired", "one second later"]
    assert at(sim, "Mark: one second later") == approx(activated + 1.0)
    assert at(sim, "Mark: one second later", "Scope Time") == approx(1.0)


def test_THR_016_line_awaiting_its_threshold_is_not_in_the_run_log(simulate):
    sim = run(simulate, """
        Base: s
        Mark: a
        2 Mark: b
    """)
    sim.run_for(1)
    assert [i.name for i in sim.run_log] == ["Base: s", "Mark: a"]
    assert 3 not in sim.method_state
    sim.run_for(1.5)
    assert [(i.name, i.state) for i in sim.run_log] == [
        ("Base: s", "completed"), ("Mark: a", "completed"), ("Mark: b", "completed")]
    assert sim.lines("executed") == [1, 2, 3]


# --- WAI: Wait ------------------------------------------------------------------------------------


def test_WAI_001_wait_holds_the_sequence_for_its_duration(simulate):
    sim = run(simulate, """
        Mark: a
        Wait: 0.5 s
        Mark: b
    """)
    sim.run_for(0.6)
    assert sim.marks == ["a"]
    sim.run_until(lambda: "b" in sim.marks, max_seconds=2)
    wait = sim.item("Wait: 0.5 s")
    assert wait.state == "completed"
    assert wait.end - wait.start == approx(0.5)
    assert wait.end_values["Process Time"] - wait.start_values["Process Time"] == approx(0.5)
    assert sim.item("Mark: b").start == wait.end  # the sequence goes on in the tick the Wait ends


@pytest.mark.parametrize("argument", ["5", "5 L", "five s", ""])
def test_WAI_003_wait_without_a_valid_duration_is_a_run_time_error(simulate, argument):
    sim = run(simulate, f"""
        Mark: a
        Wait: {argument}
        Mark: b
    """)
    sim.run_ticks(5)
    assert_paused_on_error(sim, 2, f"Wait: '{argument}' is not a duration")
    assert sim.marks == ["a"]


def test_WAI_004_wait_is_forcible_not_cancellable(simulate):
    sim = run(simulate, """
        Wait: 10 s
        Mark: b
    """)
    sim.run_ticks(5)
    wait = sim.item("Wait: 10 s")
    assert (wait.cancellable, wait.forcible) == (False, True)
    outcome = sim.cancel(wait)
    assert not outcome and "cannot be cancelled" in outcome.reason
    assert wait.state == "started"
    assert sim.force(wait)
    sim.run_ticks(1)  # the forced Wait ends in the next tick, and the sequence goes on in it
    assert (wait.state, wait.forced, wait.cancelled) == ("completed", True, False)
    assert wait.end == approx(sim.start_time + sim.time)
    assert sim.marks == ["b"]
    assert sim.item("Mark: b").start == wait.end


def test_WAI_005_wait_reports_its_progress(simulate):
    sim = run(simulate, """
        Wait: 1 s
        Mark: b
    """)
    sim.run_ticks(2)  # Start, Wait begins
    wait = sim.item("Wait: 1 s")
    assert wait.progress == 0.0
    sim.run_for(0.5)
    assert wait.progress == approx(0.5)
    sim.run_for(0.5)
    assert (wait.state, wait.progress) == ("completed", 1.0)


# --- PAU: Pause / Unpause, Hold / Unhold ------------------------------------------------------


def test_PAU_001_pause_with_a_duration_unpauses_itself(simulate):
    sim = run(simulate, """
        Mark: a
        Pause: 0.5 s
        Mark: b
    """)
    sim.run_ticks(3)  # Start, Mark: a, Pause
    pause = sim.item("Pause: 0.5 s")
    assert sim.system_state == "Paused"
    assert (pause.state, pause.cancellable, pause.forcible) == ("started", True, False)
    paused_at = sim.value("Process Time")
    assert record(sim, 5) == ["Paused"] * 4 + ["Running"]  # paused for 5 ticks = 0.5 s
    assert (pause.state, pause.end - pause.start) == ("completed", approx(0.5))
    sim.run_ticks(1)
    assert sim.marks == ["a", "b"]
    assert at(sim, "Mark: b") == approx(paused_at)  # Process Time stood still


def test_PAU_003_unpause_resumes_the_timers(simulate):
    sim = run(simulate, """
        Block: B
            Mark: in
    """)
    sim.run_ticks(5)
    assert sim.pause()
    sim.run_ticks(1)
    timers = ("Process Time", "Block Time", "Scope Time")
    frozen = [sim.value(t) for t in timers]
    run_time = sim.value("Run Time")
    sim.run_for(2)
    assert sim.system_state == "Paused"
    assert [sim.value(t) for t in timers] == frozen
    assert sim.value("Run Time") == approx(run_time + 2.0)
    assert sim.unpause()
    sim.run_ticks(1)
    assert sim.system_state == "Running"
    assert [sim.value(t) for t in timers] == frozen  # they resume one tick later
    sim.run_ticks(1)
    assert [sim.value(t) for t in timers] == [approx(v + 0.1) for v in frozen]


def test_PAU_003_unpause_returns_to_holding_when_a_hold_is_active(simulate):
    sim = run(simulate, """
        Mark: a
        Wait: 10 s
    """)
    sim.run_ticks(3)
    steps = []
    for control in (sim.hold, sim.pause, sim.unpause, sim.unhold):
        assert control()
        sim.run_ticks(1)
        steps.append(sim.system_state)
    assert steps == ["Holding", "Paused", "Holding", "Running"]


def test_PAU_004_hold_keeps_outputs_and_stops_the_method(simulate):
    sim = run(simulate, """
        PU01: 50 %
        Valve: Open
        Hold
        Mark: b
    """)
    sim.run_ticks(4)
    hold = sim.item("Hold")
    assert sim.system_state == "Holding"
    assert (hold.state, hold.cancellable, hold.forcible) == ("completed", False, False)
    held_at = sim.value("Process Time")
    sim.run_for(3)
    assert sim.system_state == "Holding"
    assert outputs(sim) == (50.0, "Open")
    assert sim.marks == []
    assert sim.value("Process Time") == held_at
    assert sim.unhold()
    sim.run_ticks(2)
    assert sim.system_state == "Running"
    assert sim.marks == ["b"]
    assert at(sim, "Mark: b") == approx(held_at)


def test_PAU_005_cancelling_a_pause_with_duration_unpauses_at_once(simulate):
    sim = run(simulate, """
        Valve: Open
        Pause: 10 s
        Mark: b
    """)
    sim.run_ticks(5)
    pause = sim.item("Pause: 10 s")
    assert (sim.system_state, outputs(sim)) == ("Paused", (0.0, "Closed"))
    outcome = sim.force(pause)
    assert not outcome and "cannot be forced" in outcome.reason
    assert sim.cancel(pause)
    assert (pause.state, pause.cancelled) == ("cancelled", True)
    assert (sim.system_state, outputs(sim)) == ("Running", (0.0, "Open"))
    sim.run_ticks(1)
    assert sim.marks == ["b"]


def test_PAU_009_user_stop_works_while_paused(simulate):
    sim = run(simulate, """
        Valve: Open
        Mark: a
        Pause
        Mark: b
    """)
    sim.run_ticks(5)
    assert sim.system_state == "Paused"
    assert sim.stop()
    sim.run_ticks(1)
    assert (sim.system_state, sim.method_status) == ("Stopped", "OK")
    assert outputs(sim) == (0.0, "Closed")
    sim.run_for(2)
    assert sim.marks == ["a"]
    assert not sim.unpause()


def test_PAU_011_pause_without_duration_lasts_until_unpause(simulate):
    sim = run(simulate, """
        Mark: a
        Pause
        Mark: b
    """)
    sim.run_ticks(3)
    pause = sim.item("Pause")
    assert (pause.state, pause.cancellable, pause.forcible) == ("completed", False, False)
    assert not sim.cancel(pause)
    assert not sim.force(pause)
    sim.run_for(30)
    assert (sim.system_state, sim.marks) == ("Paused", ["a"])
    assert sim.unpause()
    assert record(sim, 2, lambda s: (s.system_state, s.marks)) == [
        ("Running", ["a"]), ("Running", ["a", "b"])]


# --- safe values ------------------------------------------------------------------------------


def test_safe_values_pause_drives_outputs_to_them_and_unpause_restores(simulate):
    sim = run(simulate, """
        PU01: 50 %
        Valve: Open
        Mark: set
    """)
    sim.set_tag("Counter", 7)
    sim.run_ticks(4)
    assert outputs(sim) == (50.0, "Open")
    assert sim.pause()
    sim.run_ticks(1)
    assert outputs(sim) == (0.0, "Closed")
    sim.run_for(1)
    assert outputs(sim) == (0.0, "Closed")
    assert sim.value("Counter") == 7  # not an output with a safe value
    assert sim.unpause()
    sim.run_ticks(1)
    assert outputs(sim) == (50.0, "Open")


def test_safe_values_stop_applies_them(simulate):
    sim = run(simulate, """
        PU01: 50 %
        Valve: Open
        Wait: 1 s
        Stop
    """)
    sim.run_ticks(4)
    assert outputs(sim) == (50.0, "Open")
    sim.run_until(lambda: sim.system_state == "Stopped", max_seconds=2)
    assert outputs(sim) == (0.0, "Closed")
    sim.run_for(1)
    assert outputs(sim) == (0.0, "Closed")


# --- STP: Stop and Restart ---------------------------------------------------------------------


def test_STP_001_stop_in_a_method_ends_the_run(simulate):
    sim = run(simulate, """
        Mark: a
        Stop
        Mark: never
    """)
    sim.run_ticks(3)
    assert (sim.system_state, sim.method_status) == ("Stopped", "OK")
    assert sim.value("Run Id") is None
    ended_at = sim.value("Process Time")
    sim.run_for(2)
    assert sim.marks == ["a"]
    assert [i.name for i in sim.run_log] == ["Mark: a"]  # Stop is not in the run log
    assert sim.value("Process Time") == ended_at  # kept until the next Start
    assert event_kinds(sim, "run_started", "run_stopped") == ["run_started", "run_stopped"]


def test_STP_002_start_after_stop_runs_the_method_again_from_the_top(simulate):
    sim = run(simulate, """
        Mark: a
        Increment run counter
        Stop
        Mark: never
    """)
    sim.run_ticks(4)
    first_run = sim.engine.run_log
    assert sim.system_state == "Stopped"
    assert sim.start()
    sim.run_ticks(1)
    assert sim.value("Run Id") is not None
    assert (sim.marks, list(sim.run_log)) == ([], [])
    sim.run_ticks(3)
    assert (sim.system_state, sim.marks, sim.value("Run Counter")) == ("Stopped", ["a"], 2)
    assert [i.name for i in sim.run_log] == ["Mark: a", "Increment run counter"]
    assert sim.engine.run_log is not first_run


def test_STP_003_restart_starts_a_new_run_and_keeps_the_run_counter(simulate):
    """Restarting for one tick, then Running with a new Run Id, an empty run log and the Run Counter
    kept. Nothing of the method runs while Restarting: the new run's first line runs once.
    (Open Pectus also shows Stopped for one tick in between; Pectus goes on to Running.)"""
    sim = run(simulate, """
        Increment run counter
        Mark: a
        Restart
    """)
    sim.run_ticks(3)
    first_id = sim.value("Run Id")
    assert sim.marks == ["a"]
    assert record(sim, 2, lambda s: (s.system_state, s.value("Run Id"), s.marks)) == [
        ("Restarting", None, ["a"]), ("Running", sim.value("Run Id"), [])]
    assert sim.value("Run Id") not in (None, first_id)
    assert sim.value("Run Counter") == 1
    assert list(sim.run_log) == []
    sim.run_ticks(2)
    assert (sim.marks, sim.value("Run Counter")) == (["a"], 2)
    assert event_kinds(sim, "run_started", "run_stopped") == ["run_started", "run_stopped", "run_started"]


def test_STP_004_run_counter_and_restart_loop_until_a_watch_stops(simulate):
    sim = run(simulate, """
        Watch: Run Counter >= 3
            Mark: done
            Stop
        Mark: run
        Increment run counter
        Wait: 1 s
        Restart
    """)
    sim.run_until(lambda: sim.system_state == "Stopped", max_seconds=20)
    assert sim.value("Run Counter") == 3
    assert sim.marks == ["run", "done"]
    assert event_kinds(sim, "run_started") == ["run_started"] * 3
    sim.run_for(3)
    assert sim.system_state == "Stopped"


def test_STP_005_stop_cancels_running_commands(simulate):
    sim = run(simulate, """
        Reset
        Fill
        Wait: 0.3 s
        Stop
    """)
    sim.run_ticks(3)
    reset, fill = sim.item("Reset"), sim.item("Fill")
    assert (reset.state, fill.state) == ("started", "started")
    sim.run_until(lambda: sim.system_state == "Stopped", max_seconds=2)
    assert (reset.state, reset.cancelled) == ("cancelled", True)
    assert reset.progress < 1.0  # Reset (10 ticks) never got to complete
    assert (fill.state, fill.cancelled) == ("cancelled", True)
    sim.run_for(2)
    assert (reset.state, fill.state) == ("cancelled", "cancelled")


def test_STP_007_stop_ends_simulations(simulate):
    sim = run(simulate, """
        Simulate: TT01 = 80 degC
        Wait: 0.5 s
        Stop
    """)
    sim.set_tag("TT01", 21.0)
    sim.run_ticks(3)
    assert (sim.value("TT01"), sim.tag("TT01").simulated) == (80.0, True)
    sim.run_until(lambda: sim.system_state == "Stopped", max_seconds=2)
    assert (sim.value("TT01"), sim.tag("TT01").simulated) == (21.0, False)


def test_STP_008_restart_resets_process_time_and_run_time(simulate):
    """Open Pectus keeps Process Time and Run Time running across a Restart; in Pectus a Restart
    starts a new run, and like every Start its times begin at 0 (Run Counter is kept)."""
    sim = run(simulate, """
        Mark: a
        Wait: 1 s
        Restart
    """)
    sim.run_until(lambda: sim.system_state == "Restarting", max_seconds=3)
    assert sim.value("Process Time") >= 1.0
    sim.run_ticks(1)
    assert sim.system_state == "Running"
    assert (sim.value("Process Time"), sim.value("Run Time")) == (0.0, 0.0)
    sim.run_ticks(1)
    assert (sim.value("Process Time"), sim.value("Run Time")) == (approx(0.1), approx(0.1))


# --- RCN: run counter ---------------------------------------------------------------------------


def test_RCN_001_increment_run_counter(simulate):
    sim = run(simulate, """
        Increment run counter
        Increment run counter
        Mark: a
        Run counter: 7
        Increment run counter
    """)
    assert sim.value("Run Counter") == 0
    sim.run_ticks(3)
    assert sim.value("Run Counter") == 2
    sim.run_ticks(3)
    assert sim.value("Run Counter") == 8


def test_RCN_002_negative_run_counter_is_refused(simulate):
    """Open Pectus accepts ``Run counter: -1`` at run time (its editor rule does not); Pectus
    refuses it as the editor's rule says: the run pauses on the error."""
    sim = run(simulate, """
        Run counter: 4
        Run counter: -1
        Mark: b
    """)
    sim.run_ticks(4)
    assert_paused_on_error(sim, 2, "Run counter: '-1' is not a whole number of 0 or more")
    assert sim.value("Run Counter") == 4
    assert sim.marks == []


@pytest.mark.parametrize("argument", ["abc", "2.5", ""])
def test_RCN_003_run_counter_needs_an_integer(simulate, argument):
    sim = run(simulate, f"""
        Mark: a
        Run counter: {argument}
        Mark: b
    """)
    sim.run_ticks(4)
    assert_paused_on_error(sim, 2, f"Run counter: '{argument}' is not a whole number")
    assert sim.value("Run Counter") == 0
    assert sim.marks == ["a"]


# --- SIM: Simulate / Simulate off ----------------------------------------------------------------


def test_SIM_001_simulate_overrides_what_everyone_sees(simulate):
    sim = run(simulate, """
        Simulate: TT01 = 80 degC
        Watch: TT01 > 70 degC
            Mark: hot
    """)
    sim.set_tag("TT01", 25.0)
    sim.run_until(lambda: "hot" in sim.marks, max_seconds=1)
    sim.set_tag("TT01", 30.0)  # the process goes on under the simulation
    tag = sim.tag("TT01")
    assert (tag.value, tag.unit, tag.simulated) == (80.0, "degC", True)
    assert sim.engine.tags["TT01"].value == 30.0


def test_SIM_002_simulate_off_returns_the_real_value(simulate):
    sim = run(simulate, """
        Simulate: TT01 = 80 degC
        Mark: simulated
        Simulate off: TT01
        Watch: TT01 < 30 degC
            Mark: real again
    """)
    sim.set_tag("TT01", 25.0)
    sim.run_ticks(3)  # Start, Simulate, Mark
    assert (sim.value("TT01"), sim.tag("TT01").simulated) == (80.0, True)
    sim.run_ticks(1)
    assert (sim.value("TT01"), sim.tag("TT01").simulated) == (25.0, False)
    sim.run_for(1)
    assert sim.marks == ["simulated", "real again"]


@pytest.mark.parametrize("line", ["Simulate: TT02 = 5 degC", "Simulate off: TT02"])
def test_SIM_003_simulate_of_an_unknown_tag_is_a_run_time_error(simulate, line):
    sim = run(simulate, f"""
        Mark: a
        {line}
        Mark: b
    """)
    sim.run_ticks(4)
    assert_paused_on_error(sim, 2, "Unknown tag 'TT02'; did you mean 'TT01'?")
    assert sim.marks == ["a"]
    assert sim.item(line).state == "failed"


# --- CND: conditions and units -------------------------------------------------------------------


def watch(simulate, condition: str):
    """A method that marks 'yes' when ``condition`` holds, with 'a' before and 'b' after the Watch."""
    return run(simulate, f"""
        Mark: a
        Watch: {condition}
            Mark: yes
        Mark: b
    """)


def fires(sim, seconds: float = 1.0) -> bool:
    sim.run_for(seconds)
    return "yes" in sim.marks


def test_CND_001_temperature_units_are_converted(simulate):
    sim = watch(simulate, "TT01 > 100 degF")
    sim.set_tag("TT01", 37.0)  # 98.6 degF
    assert not fires(sim)
    sim.set_tag("TT01", 40.0)  # 104 degF
    assert fires(sim)


def test_CND_002_flow_units_are_converted(simulate):
    sim = watch(simulate, "FT01 > 1 L/min")
    sim.set_tag("FT01", 50.0)  # L/h
    assert not fires(sim)
    sim.set_tag("FT01", 120.0)
    assert fires(sim)


def test_CND_003_text_values_compare_categorical_tags(simulate):
    sim = watch(simulate, "Valve = Open")
    assert not fires(sim)
    sim.set_tag("Valve", "Open")
    assert fires(sim)


def test_CND_004_numbers_compare_numerically(simulate):
    sim = watch(simulate, "Counter = 3.0")
    sim.set_tag("Counter", 3)
    assert fires(sim)
    sim = watch(simulate, "Category == 3")
    sim.set_tag("Category", "3.0")  # a text that is a number
    assert fires(sim)
    sim = watch(simulate, "Counter != 3")
    sim.set_tag("Counter", 3)
    assert not fires(sim)


def assert_condition_error(sim, message: str) -> None:
    """The Watch on line 2 failed when first evaluated, in the tick it was registered."""
    sim.run_ticks(4)
    assert_paused_on_error(sim, 2, message)
    assert sim.marks == ["a"]
    # As in Open Pectus, only the method state shows the failure; the Watch's item stays started.
    assert sim.item(sim.engine.method.node(2).display_name).state == "started"


def test_CND_006_tag_with_unit_against_a_bare_number_is_an_error(simulate):
    sim = watch(simulate, "TT01 > 30")
    assert_condition_error(sim, "the tag has unit 'degC' but the value has no unit")


def test_CND_007_tag_without_unit_against_a_value_with_unit_is_an_error(simulate):
    sim = watch(simulate, "Counter > 3 L")
    assert_condition_error(sim, "the value has unit 'L' but the tag has no unit")


def test_CND_008_units_of_different_quantities_are_an_error(simulate):
    sim = watch(simulate, "TT01 > 5 L")
    assert_condition_error(sim, "Cannot compare values with incompatible units 'degC' and 'L'")


def test_CND_009_unknown_tag_in_a_condition_is_an_error(simulate):
    sim = watch(simulate, "TT02 > 5 degC")
    assert_condition_error(sim, "Unknown tag 'TT02'; did you mean 'TT01'?")


def test_CND_010_order_comparison_needs_numbers(simulate):
    sim = watch(simulate, "Category > abc")
    assert_condition_error(sim, "'abc' is text; text can only be compared with =, == or !=")
    sim = watch(simulate, "Category > 3")  # Category holds the text 'Rising'
    assert_condition_error(sim, "tag 'Category' has the text value 'Rising', which cannot be compared "
                                "with a number")


def test_CND_011_unknown_unit_is_an_error(simulate):
    sim = watch(simulate, "TT01 > 5 xyz")
    assert_condition_error(sim, "Unknown unit 'xyz'")


@pytest.mark.parametrize("condition, message", [
    ("TT01 >", "Expected a value after '>'"),
    ("TT01", "no operator in 'TT01'"),
    ("> 5 degC", "Expected a tag name before '>'"),
    ("A = B = C", "More than one operator"),
])
def test_CND_012_malformed_condition_refuses_the_method(simulate, condition, message):
    """Open Pectus loads the method and fails when the Watch is evaluated; Pectus refuses a method
    with a syntax error as a whole, so nothing of it runs."""
    sim = simulate("Mark: old", start=False)
    reason = refused(sim, f"""
        Mark: a
        Watch: {condition}
            Mark: yes
    """)
    assert "line 2" in reason and message in reason
    sim.start()
    sim.run_ticks(3)
    assert sim.marks == ["old"]


def test_CND_014_block_time_outside_a_block_counts_from_the_start(simulate):
    sim = run(simulate, """
        Wait: 0.5 s
        Watch: Block Time > 0.95 s
            Mark: fired
    """)
    sim.run_until(lambda: "fired" in sim.marks, max_seconds=3)
    # The Watch (registered at 0.5 s) sees Block Time reach 1 s since Start; its body runs a tick later.
    assert at(sim, "Mark: fired") == approx(1.1)
    assert at(sim, "Mark: fired", "Block Time") == approx(1.1)


# --- ERR: run-time errors ----------------------------------------------------------------------


def test_ERR_001_unknown_instruction_pauses_the_run_on_error(simulate):
    sim = run(simulate, """
        PU01: 10 %
        Increment run counter
        Mark: a
        Mrak: b
        Mark: c
    """)
    sim.run_ticks(6)
    assert_paused_on_error(sim, 4, "Invalid instruction 'Mrak'; did you mean 'Mark'?")
    # Lines before the failure keep their effects; nothing after it runs.
    assert (sim.value("PU01"), sim.value("Run Counter"), sim.marks) == (10.0, 1, ["a"])
    assert sim.lines("executed") == [1, 2, 3]
    assert [(i.name, i.state) for i in sim.run_log] == [
        ("PU01: 10 %", "completed"), ("Increment run counter", "completed"), ("Mark: a", "completed"),
        ("Mrak: b", "failed")]


def test_ERR_002_instruction_names_are_case_sensitive(simulate):
    sim = run(simulate, """
        Mark: a
        mark: b
        Mark: c
    """)
    sim.run_ticks(4)
    assert_paused_on_error(sim, 2, "Invalid instruction 'mark'; did you mean 'Mark'?")
    assert sim.marks == ["a"]


def test_ERR_003_start_is_not_a_method_instruction(simulate):
    sim = run(simulate, """
        Mark: a
        Start
        Mark: b
    """)
    sim.run_ticks(4)
    assert_paused_on_error(sim, 2, "Invalid instruction 'Start'")
    assert sim.marks == ["a"]
    assert not sim.start()  # as a user control it is only for a Stopped unit


def test_ERR_005_mis_indented_lines_refuse_the_method(simulate):
    """Open Pectus loads a mis-indented method and runs the lines wherever they landed (only
    the analyzer complains); Pectus refuses a method with a syntax error as a whole."""
    sim = simulate("Mark: old", start=False)
    reason = refused(sim, """
        Block: A
            Mark: a
              Mark: b
            End block
    """)
    assert "line 3, column 1" in reason and "multiple of 4" in reason
    sim.start()
    sim.run_ticks(3)
    assert sim.marks == ["old"]
    reason = refused(sim, """
        Mark: old
        Mark: x
            Mark: y
    """)
    assert "line 3" in reason and "Unexpected indentation" in reason
    sim.run_ticks(2)
    assert (sim.system_state, sim.marks) == ("Running", ["old"])


# --- QRK: Open Pectus quirks that Pectus fixes -------------------------------------------------


def test_QRK_002_unpause_after_an_error_continues_after_the_failed_line(simulate):
    """Open Pectus continues after the failed line but raises the stored error again at the end of
    that tick, so the run is paused on error again. Pectus just continues."""
    sim = run(simulate, """
        Mark: a
        Mrak: b
        Mark: c
        Mark: d
    """)
    sim.run_ticks(4)
    assert_paused_on_error(sim, 2, "Invalid instruction 'Mrak'")
    assert sim.unpause()
    sim.run_ticks(3)
    assert sim.system_state == "Running"
    assert sim.marks == ["a", "c", "d"]
    assert len(sim.errors) == 1
    assert (sim.lines("failed"), sim.lines("executed")) == ([2], [1, 3, 4])


def test_QRK_003_top_level_threshold_keeps_its_own_timeline(simulate):
    """Open Pectus measures a top-level threshold on the timer of the most recently activated scope,
    so a Watch that fires meanwhile delays it; in Pectus it counts on the method's own timeline."""
    sim = run(simulate, """
        Base: s
        Watch: Counter > 0
            Mark: fired
            5 Mark: late
        3 Mark: top
    """)
    sim.run_for(2)
    sim.set_tag("Counter", 1)
    activated = sim.value("Process Time")
    sim.run_for(6)
    assert sim.marks == ["fired", "top", "late"]
    assert at(sim, "Mark: top") == approx(3.0)
    assert at(sim, "Mark: late") == approx(activated + 5.0)


@pytest.mark.parametrize("stop, go", [("pause", "unpause"), ("hold", "unhold")])
def test_QRK_004_wait_does_not_count_paused_or_held_time(simulate, stop, go):
    """Open Pectus measures Wait in tick (wall-clock) time, so time spent paused or on hold counts
    toward the Wait. In Pectus a Wait counts only time in which the method ran."""
    sim = run(simulate, """
        Mark: a
        Wait: 1 s
        Mark: b
    """)
    sim.run_ticks(5)
    assert getattr(sim, stop)()
    sim.run_for(3)
    assert getattr(sim, go)()
    sim.run_for(0.5)
    assert sim.marks == ["a"]
    sim.run_for(1)
    assert sim.marks == ["a", "b"]
    wait = sim.item("Wait: 1 s")
    assert wait.end_values["Process Time"] - wait.start_values["Process Time"] == approx(1.0)
    assert wait.end - wait.start == approx(4.0)  # 1 s running + 3 s stopped


def test_QRK_008_hold_freezes_block_time_and_scope_time(simulate):
    """Open Pectus freezes Block Time and Scope Time during Pause but not during Hold. Pectus freezes
    them in both: a threshold counts only time in which the method ran."""
    sim = run(simulate, """
        Base: s
        Block: B
            2 Mark: late
            End block
    """)
    sim.run_ticks(8)
    assert sim.hold()
    sim.run_ticks(1)
    timers = ("Block Time", "Scope Time", "Process Time")
    frozen = [sim.value(t) for t in timers]
    sim.run_for(3)
    assert (sim.system_state, [sim.value(t) for t in timers]) == ("Holding", frozen)
    assert sim.unhold()
    sim.run_until(lambda: "late" in sim.marks, max_seconds=3)
    assert at(sim, "Mark: late", "Block Time") == approx(2.0)
    block = sim.item("Block: B")
    # 2 s of Block Time, 3 s on hold, and the tick in which the Unhold took effect.
    assert sim.item("Mark: late").start - block.start == approx(2.0 + 3.0 + 0.1)


def test_QRK_009_block_volume_starts_at_zero_when_the_block_starts(simulate):
    """In Open Pectus Block Volume is updated on the tick, so the first volume threshold checked
    right after a block starts sees the outer block's volume. In Pectus it sees 0."""
    sim = run(simulate, """
        Base: L
        5 Block: Elute
            1 Mark: one litre into the block
            End block
    """)
    sim.run_ticks(3)
    sim.set_tag("Totalizer", 5.0)
    sim.run_ticks(5)
    assert sim.value("Block") == "Elute"
    assert sim.value("Block Volume") == 0.0
    assert sim.marks == []
    sim.set_tag("Totalizer", 5.9)
    sim.run_ticks(3)
    assert sim.marks == []
    sim.set_tag("Totalizer", 6.0)
    sim.run_ticks(2)
    assert sim.marks == ["one litre into the block"]
    assert at(sim, "Mark: one litre into the block", "Block Volume") == approx(1.0)


@pytest.mark.parametrize("assignment, tag, value, unit", [
    ("TT01 = 176 degF", "TT01", 80.0, "degC"),
    ("FT01 = 1 L/min", "FT01", 60.0, "L/h"),
    ("TT01 = 0", "TT01", 0.0, "degC"),
    ("Counter = 0", "Counter", 0, None),
    ("Counter = 5", "Counter", 5, None),
])
def test_QRK_010_simulate_converts_units_and_keeps_numbers(simulate, assignment, tag, value, unit):
    """Open Pectus fails ``Simulate`` with a unit on a number tag and simulates 0 as the text "0".
    Pectus converts the value into the tag's unit, and numbers stay numbers."""
    sim = run(simulate, f"""
        Simulate: {assignment}
        Mark: done
    """)
    sim.run_ticks(3)
    assert (sim.system_state, sim.marks) == ("Running", ["done"])
    simulated = sim.tag(tag)
    assert (simulated.value, simulated.unit, simulated.simulated) == (approx(value), unit, True)
    assert type(simulated.value) is type(value)


# -- further differences from Open Pectus that docs/pcode.md lists --------------------------------

def test_a_wait_shorter_than_a_tick_completes(simulate):
    """Open Pectus skips such a Wait without marking it completed (its quirk #16)."""
    sim = simulate(dedent("""
        Wait: 0.05 s
        Mark: after
        """))
    sim.run_until(lambda: sim.marks == ["after"], max_seconds=2)
    assert sim.item("Wait: 0.05 s").state == "completed"


def test_stop_with_an_argument_pauses_on_the_error_instead_of_stopping(simulate):
    """Open Pectus logs an error for ``Stop: x`` and then stops anyway (its quirk #14)."""
    sim = simulate("Stop: x\nMark: after")
    sim.run_until(lambda: sim.method_status == "Error", max_seconds=2)
    assert sim.system_state == "Paused" and "takes no argument" in sim.errors[0]
    sim.run_for(1)
    assert sim.system_state == "Paused" and sim.marks == []
