"""pectus.testing from a UOD author's side: marks across runs, line states by line id, the
analyzer on the simulator's unit, and a refused method."""

from __future__ import annotations

import pytest

from conftest import DEMO_UOD
from pectus.cli.engine import main
from pectus.testing import Mark, MethodRefused, Simulator


def test_marks_keep_their_tick_time_and_run_across_runs():
    """Before: only sim.marks, the current run's texts (no Mark, no all_marks)."""
    sim = Simulator(DEMO_UOD, "Mark: A\nWait: 0.5 s\nMark: B\nStop")
    sim.start()
    sim.run_until(lambda: sim.tick_index > 2 and sim.system_state == "Stopped")
    sim.start()
    sim.run_until(lambda: sim.marks == ["A"])
    sim.restart()
    sim.run_until(lambda: len(sim.all_marks) == 5, max_seconds=5)

    assert [(m.text, m.run) for m in sim.all_marks] == [("A", 1), ("B", 1), ("A", 2), ("A", 3), ("B", 3)]
    assert sim.marks == ["A", "B"]  # the current run's only
    assert sim.all_marks[0] == Mark("A", tick=1, time=0.1, run=1)  # Start takes effect in tick 0
    assert all(m.time == round(m.tick * 0.1, 9) for m in sim.all_marks)
    # The ticks agree with the engine's own record of when each Mark line ran.
    completed = [(e.arguments, e.tick) for e in sim.events
                 if e.kind == "runlog" and e.instruction == "Mark" and e.state == "completed"]
    assert completed == [(m.text, m.tick) for m in sim.all_marks]


def test_a_mark_made_in_the_tick_that_stops_the_run_belongs_to_that_run():
    """Before: no all_marks."""
    sim = Simulator(DEMO_UOD, "Mark: last\nStop")
    sim.start()
    sim.run_until(lambda: sim.tick_index > 2 and sim.system_state == "Stopped")
    assert [(m.text, m.run) for m in sim.all_marks] == [("last", 1)]


def test_line_states_by_line_id_follow_a_line_that_moves_in_a_live_edit():
    """Before: only method_state, by line number, which changes meaning when lines move."""
    sim = Simulator(DEMO_UOD, [("a", "Mark: A"), ("w", "Wait: 1 s"), ("b", "Mark: B")])
    sim.start()
    sim.run_until(lambda: "w" in sim.line_states)
    assert sim.line_states == {"a": "executed", "w": "started"}
    assert sim.save_method([("a", "Mark: A"), ("w", "Wait: 1 s"), ("n", "Mark: new"), ("b", "Mark: B")])
    sim.run_until(lambda: sim.marks == ["A", "new", "B"], max_seconds=2)
    assert sim.line_states == {"a": "executed", "w": "executed", "n": "executed", "b": "executed"}
    assert sim.method_state == {1: "executed", 2: "executed", 3: "executed", 4: "executed"}


def test_analyze_gives_the_findings_of_validate_on_the_simulators_unit(tmp_path, capsys):
    """Before: no public analysis of a method against a UOD (only the CLI's private _analyze)."""
    text = "Mark: A\nWatch: FT99 > 2 L/h\n    Mark: B\nPU01: lots\n"
    sim = Simulator(DEMO_UOD, text)
    findings = sim.analyze()
    assert [(d.line, d.severity.value, d.id) for d in findings] == [
        (2, "error", "UndefinedTag"), (4, "error", "CommandArgsInvalid")]
    assert sim.analyze("Mark: fine") == []
    method = tmp_path / "m.pcode"
    method.write_text(text, encoding="utf-8")
    main(["validate", "--uod", str(DEMO_UOD), str(method)])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(method))]
    assert printed == [f"{method}:{d.line}: {d.severity}: {d.message}" for d in findings]


def test_a_refused_method_raises_method_refused_with_the_reason():
    """Before: a bare ValueError, not a type a test can name or an outcome it can read."""
    with pytest.raises(MethodRefused, match=r"2 error\(s\)") as refused:
        Simulator(DEMO_UOD, "Mark: a\n  Mark: b\n.5 Mark: c")
    assert isinstance(refused.value, ValueError) and not refused.value.outcome.accepted
    assert "line 2" in refused.value.outcome.reason
