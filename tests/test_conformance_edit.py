"""Conformance: live edit, code injection, cancel/force from the run log, static analysis.

Cases of /work/shared/spec/pcode.md covered here, one test per case id:

* EDT-001..008, EDT-010..015 - live edit (spec section 13), asserting OUR behaviour where
  docs/pcode.md fixes a defect of the Open Pectus snapshot;
* INJ-001..003 - code injection (spec section 14);
* QRK-001 - a live edit does not re-run executed lines (Open Pectus re-ran the method from the top);
* ANA-001..016 - static analysis (spec section 15);

plus the live-edit rules of docs/pcode.md that have no case id (stale base version, syntax errors,
lines added above the running position or to a finished block, successive edits, Unpause after a
failed line) and the cancel/force rules of the run log (spec section 7.7).

Live edits address lines by *line id*, as the web editor does. Most methods here are written in
the spec's "numbered" format (``NN content``: ``NN`` is the line id), so that an edit can insert a
line between two others without renumbering them.

Mapping of ANA-001..016. The spec only names the range; the cases follow the rows of the table of
section 15 in order, each mapped onto the diagnostic ids ``pectus.pcode.analyzer.analyze`` reports
(the parser's syntax errors included, since ``analyze`` returns them too):

========  =========================================  ===============================================
case      spec row / Open Pectus id                  Pectus diagnostic id(s)
========  =========================================  ===============================================
ANA-001   unreachable: ``UnreachableCode``           ``UnreachableCode``
ANA-002   infinite block: ``InfiniteBlock``          ``InfiniteBlock``
ANA-003   indentation: ``InvalidIndentation``        ``InvalidIndentation``, ``EmptyBody`` (a header
                                                     followed by same-indentation lines, which Open
                                                     Pectus silently adopted as the body)
ANA-004   threshold order: ``ThresholdOutOfOrder``   ``ThresholdOutOfOrder``, ``ThresholdBaseInvalid``
ANA-005   condition: ``ConditionMissing``,           the same ids, as syntax errors of the parser
          ``MissingTag``, ``MissingOperator``,       (the method is refused whole); ``InvalidCondition``
          ``MissingValue``                           for a mistyped or a second operator
ANA-006   condition: ``UndefinedTag``                ``UndefinedTag`` (did-you-mean; first failing
                                                     check only)
ANA-007   condition: ``UnexpectedUnit``              ``UnexpectedUnit``
ANA-008   condition: ``MissingUnit``                 ``MissingUnit``
ANA-009   condition: ``InvalidUnit``                 ``InvalidUnit``
ANA-010   condition: ``IncompatibleUnits``           ``IncompatibleUnits``, ``NonNumericComparison``
ANA-011   simulate: same ids, ``MissingOperator``    ``MissingOperator``, ``UndefinedTag``,
          when the operator is not ``=``             ``UnexpectedUnit``, ``IncompatibleUnits`` on
                                                     ``Simulate`` / ``Simulate off``; ``MissingUnit``
                                                     as a warning (the run takes a bare number in
                                                     the tag's unit)
ANA-012   command: ``UndefinedCommand``              ``UndefinedCommand`` (did-you-mean),
                                                     ``InvalidInstruction`` (parser)
ANA-013   command: ``CommandNoArguments``            ``ArgumentNotExpected`` (built-ins and unit
                                                     commands), ``MissingArgument``
ANA-014   command: ``CommandArgsInvalid``            ``CommandArgsInvalid`` (unit commands),
                                                     ``InvalidArgument`` (built-in argument specs)
ANA-015   macro errors: ``MacroNameInvalid``,        the same four ids, plus
          ``MacroCallNameInvalid``,                  ``MacroCalledBeforeDefinition``
          ``MacroCalledNotDefined``, ``MacroRecursive``
ANA-016   macro info: ``MacroRedefined``,            ``MacroRedefined``, ``MacroUnused`` (also for a
          ``MacroUnused``                            definition replaced before any call runs it)
========  =========================================  ===============================================

(``BatchNameTagMissing`` has no counterpart: Open Pectus has no such check, and on Pectus
``Batch Name`` is a system tag, so it never fires on a real unit.)
"""

from __future__ import annotations

import re
import textwrap

from pectus.pcode.analyzer import analyze
from pectus.pcode.diagnostics import Diagnostic, Severity
from pectus.testing import Simulator

# --- helpers --------------------------------------------------------------------------------------


def numbered(text: str) -> list[tuple[str, str]]:
    """``NN content`` lines -> (line id, content) pairs; the content keeps its indentation."""
    pairs = []
    for line in textwrap.dedent(text).strip("\n").splitlines():
        match = re.match(r"^(\d+)(?:\s(.*))?$", line)  # "20" alone: a blank line with id 20
        assert match, f"not a numbered line: {line!r}"
        pairs.append((match.group(1), match.group(2) or ""))
    return pairs


def method(text: str) -> str:
    """A method written inline: dedented, without the first and last newline."""
    return textwrap.dedent(text).strip("\n")


def log(sim: Simulator) -> list[tuple[str, str]]:
    """The run log as (name, state) pairs."""
    return [(item.name, item.state.value) for item in sim.run_log]


def snapshot(sim: Simulator) -> tuple:
    """Everything a refused request must leave unchanged."""
    return ([item.as_dict() for item in sim.run_log], sim.marks, sim.method_state, sim.system_state,
            sim.method_status, sim.engine.method_version)


def refused(outcome, *fragments: str) -> None:
    assert not outcome, "the request was accepted"
    for fragment in fragments:
        assert fragment in outcome.reason, outcome.reason


# --- EDT: live edit ---------------------------------------------------------------------------------

WAITING = """
    10 Mark: A
    20 Wait: 1 s
    30 Mark: B
    40 Mark: C
"""


def test_EDT_001_edit_of_an_executed_line_is_refused_and_the_run_goes_on(simulate) -> None:
    sim = simulate(numbered(WAITING))
    sim.run_until(lambda: sim.marks == ["A"])
    before = snapshot(sim)

    changed = sim.save_method(numbered(WAITING.replace("Mark: A", "Mark: X")))
    refused(changed, "Line 1 'Mark: A' has already run", "cannot be changed")
    deleted = sim.save_method(numbered(WAITING.replace("    10 Mark: A\n", "")))
    refused(deleted, "Line 1 'Mark: A' has already run", "cannot be deleted")
    assert snapshot(sim) == before

    sim.run_until(lambda: sim.marks == ["A", "B", "C"], max_seconds=2)
    assert [node.text for node in sim.engine.method.lines] == ["Mark: A", "Wait: 1 s", "Mark: B", "Mark: C"]


def test_EDT_002_appended_lines_run_also_when_saved_during_a_wait_at_any_tick(simulate) -> None:
    text = method("""
        Mark: A
        Wait: 0.5 s
        Mark: B
    """)
    for ticks in range(12):  # before, during and after the Wait, and after the method end
        sim = simulate(text)
        sim.run_ticks(ticks)
        assert sim.save_method(text + "\nMark: C"), f"refused after {ticks} ticks"
        sim.run_until(lambda: len(sim.marks) == 3, max_seconds=2)
        assert sim.marks == ["A", "B", "C"], f"saved after {ticks} ticks"


def test_EDT_003_edited_lines_not_yet_reached_run_as_edited(simulate) -> None:
    sim = simulate(numbered(WAITING))
    sim.run_until(lambda: sim.marks == ["A"])
    assert sim.save_method(numbered("""
        10 Mark: A
        20 Wait: 1 s
        30 Mark: B edited
        35 Mark: inserted
        40 Mark: C
    """))
    sim.run_until(lambda: len(sim.marks) == 4, max_seconds=2)
    assert sim.marks == ["A", "B edited", "inserted", "C"]
    assert sim.lines("executed") == [1, 2, 3, 4, 5]


def test_EDT_004_a_running_block_can_be_extended(simulate) -> None:
    sim = simulate(numbered("""
        10 Block: B
        20     Mark: b1
        30 Mark: after
    """))
    sim.run_until(lambda: sim.marks == ["b1"])
    sim.run_ticks(5)  # the body has run out: the block waits for an End block
    assert sim.value("Block") == "B" and sim.marks == ["b1"]

    assert sim.save_method(numbered("""
        10 Block: B
        20     Mark: b1
        21     Mark: b2
        22     End block
        30 Mark: after
    """))
    sim.run_until(lambda: len(sim.marks) == 3, max_seconds=1)
    assert sim.marks == ["b1", "b2", "after"]
    assert sim.value("Block") is None
    assert sim.item("Block: B").state.value == "completed"


def test_EDT_005_an_activated_watch_body_can_be_extended(simulate) -> None:
    sim = simulate(numbered("""
        10 Watch: Counter > 0
        20     Mark: w1
        30     Wait: 1 s
        40 Mark: main
    """))
    sim.run_until(lambda: sim.marks == ["main"])
    sim.set_tag("Counter", 1)
    sim.run_until(lambda: sim.marks == ["main", "w1"], max_seconds=1)
    assert sim.save_method(numbered("""
        10 Watch: Counter > 0
        20     Mark: w1
        30     Wait: 1 s
        31     Mark: w2
        40 Mark: main
    """))
    sim.run_until(lambda: len(sim.marks) == 3, max_seconds=2)
    sim.run_ticks(1)  # the body has run out: the Watch completes
    assert sim.marks == ["main", "w1", "w2"]
    assert sim.item("Watch: Counter > 0").state.value == "completed"


def test_EDT_006_a_trailing_blank_line_becomes_an_instruction_at_any_tick(simulate) -> None:
    text = "Mark: A\n\n"
    for ticks in range(5):  # Open Pectus refused this edit in a one-tick window
        sim = simulate(text)
        sim.run_ticks(ticks)
        assert 2 not in sim.method_state  # the parking line is never started
        assert sim.save_method("Mark: A\nMark: B\n"), f"refused after {ticks} ticks"
        sim.run_until(lambda: len(sim.marks) == 2, max_seconds=1)
        assert sim.marks == ["A", "B"]


def test_EDT_007_trailing_comment_and_blank_lines_become_instructions(simulate) -> None:
    sim = simulate(numbered("""
        10 Mark: A
        20
        30 # more to come
        40
    """))
    sim.run_until(lambda: sim.marks == ["A"])
    sim.run_ticks(3)
    assert sim.method_state == {1: "executed"}
    assert sim.save_method(numbered("""
        10 Mark: A
        20
        30 Mark: B
        40 Mark: C
    """))
    sim.run_until(lambda: len(sim.marks) == 3, max_seconds=1)
    assert sim.marks == ["A", "B", "C"]
    assert sim.method_state == {1: "executed", 3: "executed", 4: "executed"}


def test_EDT_008_a_trailing_blank_line_in_a_running_block_becomes_its_end(simulate) -> None:
    sim = simulate(numbered("""
        10 Block: B
        20     Mark: b1
        30
    """))
    sim.run_until(lambda: sim.marks == ["b1"])
    sim.run_ticks(3)
    assert sim.save_method(numbered("""
        10 Block: B
        20     Mark: b1
        30     End block
        40 Mark: after
    """))
    sim.run_until(lambda: len(sim.marks) == 2, max_seconds=1)
    assert sim.marks == ["b1", "after"]
    assert sim.value("Block") is None


def test_EDT_010_a_started_line_must_keep_its_content(simulate) -> None:
    text = """
        10 Watch: Counter > 0
        20     Mark: w
        30 Mark: A
        40 Wait: 1 s
        50 Mark: B
    """
    sim = simulate(numbered(text))
    sim.run_until(lambda: sim.marks == ["A"])
    sim.run_ticks(1)
    assert sim.method_state == {1: "started", 3: "executed", 4: "started"}
    before = snapshot(sim)

    refused(sim.save_method(numbered(text.replace("Wait: 1 s", "Wait: 2 s"))),
            "Line 4 'Wait: 1 s'", "cannot be changed")
    refused(sim.save_method(numbered(text.replace("Counter > 0", "Counter > 5"))),
            "Line 1 'Watch: Counter > 0'", "cannot be changed")
    refused(sim.save_method(numbered(text.replace("40 Wait: 1 s", "40 Mark: no wait"))),
            "Line 4 'Wait: 1 s'", "cannot be changed")
    assert snapshot(sim) == before

    # The registered Watch still works with its old condition, the Wait keeps its duration.
    sim.set_tag("Counter", 1)
    sim.run_until(lambda: "B" in sim.marks, max_seconds=2)
    assert sim.marks == ["A", "w", "B"]
    wait = sim.item("Wait: 1 s")
    assert round(wait.end - wait.start, 6) == 1.0


def test_EDT_011_a_method_that_is_not_running_is_replaced(simulate) -> None:
    sim = simulate("Mark: A\nMark: B", start=False)
    assert sim.save_method("Mark: X")
    assert sim.start()
    sim.run_ticks(5)
    assert sim.marks == ["X"]

    # After Stop every line may change: the next run starts from the first line of the new text.
    assert sim.stop()
    sim.run_until(lambda: sim.system_state == "Stopped")
    assert sim.save_method("Mark: Y\nMark: Z")
    assert sim.start()
    sim.run_ticks(5)
    assert sim.marks == ["Y", "Z"]


def test_EDT_012_deleted_lines_not_yet_reached_do_not_run(simulate) -> None:
    sim = simulate(numbered(WAITING))
    sim.run_until(lambda: sim.marks == ["A"])
    assert sim.save_method(numbered("""
        10 Mark: A
        20 Wait: 1 s
        40 Mark: C
    """))
    sim.run_until(lambda: len(sim.marks) == 2, max_seconds=2)
    sim.run_ticks(5)
    assert sim.marks == ["A", "C"]
    assert [name for name, _ in log(sim)] == ["Mark: A", "Wait: 1 s", "Mark: C"]


def test_EDT_013_an_edit_clears_the_error_and_unpause_runs_the_fixed_line(simulate) -> None:
    sim = simulate(method("""
        Mark: A
        Wait: 5
        Mark: B
    """))
    sim.run_until(lambda: sim.method_status == "Error")
    assert (sim.system_state, sim.marks, sim.method_state) == ("Paused", ["A"], {1: "executed", 2: "failed"})
    assert "'5' is not a duration" in sim.errors[0]

    assert sim.save_method("Mark: A\nWait: 0.5 s\nMark: B")
    assert (sim.method_status, sim.system_state) == ("OK", "Paused")
    sim.run_ticks(5)
    assert sim.marks == ["A"]  # still paused: only the user's Unpause resumes

    assert sim.unpause()
    sim.run_until(lambda: sim.marks == ["A", "B"], max_seconds=2)
    assert sim.item("Wait: 0.5 s").state.value == "completed"
    assert (sim.system_state, sim.method_status) == ("Running", "OK")
    assert sim.method_state == {1: "executed", 2: "executed", 3: "executed"}


MACRO = """
    10 Macro: M
    20     Mark: m1
    30 Call macro: M
    40 Wait: 1 s
    50 Call macro: M
"""


def test_EDT_014_a_macro_not_yet_called_can_be_edited(simulate) -> None:
    text = MACRO.replace("    30 Call macro: M\n", "")
    sim = simulate(numbered(text))
    sim.run_until(lambda: sim.method_state.get(3) == "started")  # the Wait; M is defined, not called
    assert sim.save_method(numbered(text.replace("20     Mark: m1", "20     Mark: m2\n    21     Mark: m3")))
    sim.run_until(lambda: len(sim.marks) == 2, max_seconds=2)
    assert sim.marks == ["m2", "m3"]


def test_EDT_015_a_called_macro_cannot_be_changed_or_removed(simulate) -> None:
    sim = simulate(numbered(MACRO))
    sim.run_until(lambda: sim.marks == ["m1"])
    before = snapshot(sim)

    extended = MACRO.replace("20     Mark: m1", "20     Mark: m1\n    21     Mark: m2")
    refused(sim.save_method(numbered(extended)), 'Macro "M" has already been called')
    refused(sim.save_method(numbered(MACRO.replace("    10 Macro: M\n    20     Mark: m1\n", ""))),
            "Line 1 'Macro: M'", "cannot be deleted")
    assert snapshot(sim) == before

    # Blank lines, comment lines and comments are not part of what is compared.
    cosmetic = MACRO.replace("20     Mark: m1", "20     Mark: m1  # the first mark\n    21\n    22     # done")
    assert sim.save_method(numbered(cosmetic))
    sim.run_until(lambda: len(sim.marks) == 2, max_seconds=2)
    assert sim.marks == ["m1", "m1"]


# --- live-edit rules of docs/pcode.md without a case id -------------------------------------------


def test_edit_based_on_a_stale_version_is_refused_as_a_conflict(simulate) -> None:
    sim = simulate(method("""
        Mark: A
        Wait: 1 s
    """))
    sim.run_until(lambda: sim.marks == ["A"])
    version = sim.engine.method_version
    assert sim.save_method("Mark: A\nWait: 1 s\nMark: B", base_version=version)
    assert sim.engine.method_version == version + 1
    before = snapshot(sim)

    refused(sim.save_method("Mark: A\nWait: 1 s\nMark: C", base_version=version),
            "changed by someone else", f"version {version + 1}", f"you edited version {version}")
    assert snapshot(sim) == before
    sim.run_until(lambda: len(sim.marks) == 2, max_seconds=2)
    sim.run_ticks(3)
    assert sim.marks == ["A", "B"]


def test_edit_with_syntax_errors_is_refused_whole_with_every_error(simulate) -> None:
    sim = simulate(method("""
        Mark: A
        Wait: 1 s
    """))
    sim.run_until(lambda: sim.marks == ["A"])
    before = snapshot(sim)
    outcome = sim.save_method(method("""
        Mark: A
        Wait: 1 s
        Mark: B
          Mark: badly indented
        Watch: Counter >
            Mark: w
        Mark: C
    """))
    refused(outcome, "2 error(s)", "line 4", "multiple of 4", "line 5", "Expected a value after '>'")
    assert snapshot(sim) == before
    sim.run_for(2)
    assert sim.marks == ["A"]  # nothing of the refused version ran


def test_edit_adding_a_line_above_the_running_position_is_refused(simulate) -> None:
    sim = simulate(numbered("""
        10 Mark: A
        20
        30 Wait: 1 s
        40 Mark: B
    """))
    sim.run_until(lambda: sim.method_state.get(3) == "started")
    before = snapshot(sim)
    # A new line, and a blank line above the Wait turned into an instruction: neither would run.
    for text in ("10 Mark: A\n15 Mark: new\n20 \n30 Wait: 1 s\n40 Mark: B",
                 "10 Mark: A\n20 Mark: was blank\n30 Wait: 1 s\n40 Mark: B"):
        refused(sim.save_method(numbered(text)), "above the line now running", "would never run")
    assert snapshot(sim) == before
    sim.run_until(lambda: sim.marks == ["A", "B"], max_seconds=2)


def test_edit_moving_an_executed_line_is_refused(simulate) -> None:
    sim = simulate(numbered("""
        10 Mark: A
        20 Mark: B
        30 Wait: 1 s
        40 Mark: C
    """))
    sim.run_until(lambda: sim.marks == ["A", "B"])
    before = snapshot(sim)
    # Below the running Wait, A would run a second time; above it, the text would no longer say
    # in which order the lines ran.
    for text in ("20 Mark: B\n30 Wait: 1 s\n40 Mark: C\n10 Mark: A",
                 "20 Mark: B\n10 Mark: A\n30 Wait: 1 s\n40 Mark: C"):
        refused(sim.save_method(numbered(text)), "Line 1 'Mark: A' has already run", "moved")
    assert snapshot(sim) == before
    sim.run_for(2)
    assert sim.marks == ["A", "B", "C"]


def test_edit_adding_lines_to_a_finished_block_is_refused(simulate) -> None:
    # Open Pectus re-ran the finished block after such an edit (its bug #842).
    text = """
        10 Block: B
        20     Mark: b
        30     End block
        40 Mark: after
        50 Wait: 1 s
    """
    sim = simulate(numbered(text))
    sim.run_until(lambda: sim.marks == ["b", "after"])
    before = snapshot(sim)
    extended = text.replace("30     End block", "25     Mark: b2\n        30     End block")
    refused(sim.save_method(numbered(extended)),
            "Line 3 'Mark: b2'", "'Block: B', which has already finished")
    assert snapshot(sim) == before
    sim.run_for(2)
    assert sim.marks == ["b", "after"]
    assert [name for name, _ in log(sim)].count("Block: B") == 1


def test_several_successive_edits_keep_the_run_going(simulate) -> None:
    # Open Pectus applied the second edit of a run as a full replace, i.e. a restart.
    text = "Increment run counter\nMark: 1"
    sim = simulate(text)
    sim.run_until(lambda: sim.marks == ["1"])
    for n in range(2, 6):
        text += f"\nWait: 0.2 s\nMark: {n}"
        assert sim.save_method(text)
        sim.run_until(lambda: len(sim.marks) == n, max_seconds=1)
    sim.run_ticks(5)
    assert sim.marks == ["1", "2", "3", "4", "5"]
    assert sim.value("Run Counter") == 1
    assert sim.engine.method_version == 5
    assert log(sim)[0] == ("Increment run counter", "completed")
    assert len(log(sim)) == 2 + 2 * 4


def test_unpause_without_a_fix_goes_on_after_the_failed_line(simulate) -> None:
    # Open Pectus raised the stored error again one tick after the Unpause (its quirk QRK-002).
    sim = simulate("Mark: A\nFrobnicate\nMark: B\nWait: 0.5 s\nMark: C")
    sim.run_until(lambda: sim.system_state == "Paused")
    assert sim.errors == ["Invalid instruction 'Frobnicate'"]
    assert sim.unpause()
    sim.run_until(lambda: sim.marks == ["A", "B", "C"], max_seconds=2)
    assert sim.system_state == "Running"
    assert sim.errors == ["Invalid instruction 'Frobnicate'"]  # not raised again
    assert sim.method_state == {1: "executed", 2: "failed", 3: "executed", 4: "executed", 5: "executed"}


def test_a_failed_line_fixed_by_an_edit_runs_after_unpause(simulate) -> None:
    sim = simulate("Mark: A\nFrobnicate\nMark: B")
    sim.run_until(lambda: sim.system_state == "Paused")
    assert sim.save_method("Mark: A\nMark: fixed\nMark: B")
    assert sim.unpause()
    sim.run_until(lambda: len(sim.marks) == 3, max_seconds=1)
    assert sim.marks == ["A", "fixed", "B"]
    assert len(sim.errors) == 1


# --- QRK-001 ----------------------------------------------------------------------------------------


def test_QRK_001_live_edit_does_not_rerun_executed_lines(simulate) -> None:
    # Open Pectus restarted the merged method from its first line: the counter went to 2.
    text = method("""
        Increment run counter
        Mark: A
        Wait: 1 s
        Mark: B
    """)
    sim = simulate(text)
    sim.run_until(lambda: sim.marks == ["A"])
    assert sim.value("Run Counter") == 1
    assert sim.save_method(text + "\nMark: C")
    sim.run_until(lambda: len(sim.marks) == 3, max_seconds=2)
    sim.run_ticks(5)
    assert sim.marks == ["A", "B", "C"]
    assert sim.value("Run Counter") == 1
    assert log(sim) == [("Increment run counter", "completed"), ("Mark: A", "completed"),
                        ("Wait: 1 s", "completed"), ("Mark: B", "completed"), ("Mark: C", "completed")]


# --- INJ: code injection ------------------------------------------------------------------------------


def test_INJ_001_injected_code_runs_beside_the_main_line(simulate) -> None:
    sim = simulate("Mark: A\nMark: B\nMark: C")
    sim.run_until(lambda: sim.marks == ["A"])
    assert sim.inject("Mark: I")
    sim.run_ticks(3)
    # Timing: in the next tick the main line runs B, then the injected snippet runs I.
    assert sim.marks == ["A", "B", "I", "C"]
    assert ("Mark: I", "completed") in log(sim)


def test_INJ_002_injected_code_runs_after_the_method_end(simulate) -> None:
    sim = simulate("Mark: A")
    sim.run_until(lambda: sim.marks == ["A"])
    sim.run_ticks(10)
    assert sim.inject("Mark: I\nWait: 0.5 s\nMark: J")
    sim.run_until(lambda: len(sim.marks) == 3, max_seconds=1)
    assert sim.marks == ["A", "I", "J"]
    wait = sim.item("Wait: 0.5 s")
    assert round(wait.end - wait.start, 6) == 0.5
    assert sim.system_state == "Running"


def test_INJ_003_an_error_in_injected_code_pauses_the_run(simulate) -> None:
    sim = simulate("Mark: A\nWait: 10 s\nMark: B")
    sim.run_until(lambda: sim.marks == ["A"])
    assert sim.inject("Mark: I\nCall macro: Nope")
    sim.run_until(lambda: sim.method_status == "Error", max_seconds=1)
    assert sim.system_state == "Paused"
    assert sim.marks == ["A", "I"]
    assert sim.errors == ['No macro named "Nope" is defined at this point. Defined macros: none']


def test_INJ_003_deviation_what_would_fail_is_refused_before_it_runs(simulate) -> None:
    """Open Pectus runs 'Frobnicate' and pauses the run on it; Pectus refuses the injection with the
    reason (and its line) and nothing of it runs."""
    sim = simulate("Mark: A\nWait: 10 s\nMark: B")
    sim.run_until(lambda: sim.marks == ["A"])
    refused(sim.inject("Mark: I\nFrobnicate"),
            "line 2: Invalid instruction 'Frobnicate': neither a P-code instruction nor a command of this unit.")
    sim.run_ticks(5)
    assert (sim.system_state, sim.method_status, sim.marks) == ("Running", "OK", ["A"])


def test_injection_while_stopped_runs_only_unit_commands(simulate) -> None:
    sim = simulate("Mark: A", start=False)
    refused(sim.inject("Mark: I"), "only unit commands run while the unit is Stopped")
    refused(sim.inject("Frobnicate"), "only unit commands")
    assert sim.inject("PU01: 40 %")
    sim.run_ticks(1)
    assert sim.value("PU01") == 40.0
    assert sim.system_state == "Stopped" and sim.marks == []


# --- cancel and force from the run log (spec section 7.7) ----------------------------------------------


def test_wait_is_forcible_and_not_cancellable(simulate) -> None:
    sim = simulate("Wait: 10 s\nMark: after")
    sim.run_ticks(3)
    wait = sim.item("Wait: 10 s")
    assert (wait.state.value, wait.cancellable, wait.forcible) == ("started", False, True)
    before = snapshot(sim)
    refused(sim.cancel(wait), "'Wait: 10 s' cannot be cancelled")
    assert snapshot(sim) == before

    assert sim.force(wait)
    sim.run_ticks(1)
    assert sim.marks == ["after"]
    assert (wait.state.value, wait.forced, wait.cancelled) == ("completed", True, False)
    refused(sim.force(wait), "cannot be forced")


def test_watch_is_cancellable_before_activation_and_its_body_never_runs(simulate) -> None:
    sim = simulate("Watch: Counter > 0\n    Mark: w\nMark: A")
    sim.run_until(lambda: sim.marks == ["A"])
    watch = sim.item("Watch: Counter > 0")
    assert (watch.state.value, watch.cancellable, watch.forcible) == ("started", True, True)
    assert sim.cancel(watch)
    sim.set_tag("Counter", 1)
    sim.run_ticks(10)
    assert sim.marks == ["A"]
    assert (watch.state.value, watch.cancelled) == ("cancelled", True)
    refused(sim.force(watch), "cannot be forced")


def test_watch_forced_before_activation_runs_its_body_then_neither_is_possible(simulate) -> None:
    sim = simulate("Watch: Counter > 0\n    Mark: w\n    Wait: 1 s\nMark: A")
    sim.run_until(lambda: sim.marks == ["A"])
    watch = sim.item("Watch: Counter > 0")
    assert sim.force(watch)
    refused(sim.cancel(watch), "cannot be cancelled")  # forced: it cannot be cancelled any more
    sim.run_until(lambda: sim.marks == ["A", "w"], max_seconds=1)
    assert watch.forced and watch.running
    assert (watch.cancellable, watch.forcible) == (False, False)
    before = snapshot(sim)
    refused(sim.cancel(watch), "cannot be cancelled")
    refused(sim.force(watch), "cannot be forced")
    assert snapshot(sim) == before
    sim.run_for(1.5)
    assert watch.state.value == "completed"


def test_activated_watch_is_neither_cancellable_nor_forcible(simulate) -> None:
    sim = simulate("Watch: Counter > 0\n    Wait: 1 s\nMark: A")
    sim.run_until(lambda: sim.marks == ["A"])
    sim.set_tag("Counter", 1)
    sim.run_until(lambda: "Wait: 1 s" in [name for name, _ in log(sim)], max_seconds=1)
    watch = sim.item("Watch: Counter > 0")
    assert (watch.state.value, watch.cancellable, watch.forcible) == ("started", False, False)
    refused(sim.cancel(watch), "cannot be cancelled")
    refused(sim.force(watch), "cannot be forced")


def test_alarm_is_cancellable_and_forcible_only_before_each_activation(simulate) -> None:
    sim = simulate("Alarm: Counter > 0\n    Mark: alarm\n    Wait: 1 s\nMark: A")
    sim.run_until(lambda: sim.marks == ["A"])
    first = sim.item("Alarm: Counter > 0")
    assert (first.cancellable, first.forcible) == (True, True)
    sim.set_tag("Counter", 1)
    sim.run_until(lambda: sim.marks == ["A", "alarm"], max_seconds=1)
    assert (first.state.value, first.cancellable, first.forcible) == ("started", False, False)
    refused(sim.cancel(first), "cannot be cancelled")
    refused(sim.force(first), "cannot be forced")

    # After its body, the Alarm is armed again with a new run-log item, cancellable again.
    sim.set_tag("Counter", 0)
    sim.run_until(lambda: len([name for name, _ in log(sim) if name.startswith("Alarm")]) == 2, max_seconds=2)
    second = sim.item("Alarm: Counter > 0")
    assert second is not first and first.state.value == "completed"
    assert (second.state.value, second.cancellable, second.forcible) == ("started", True, True)
    assert sim.cancel(second)
    sim.set_tag("Counter", 1)
    sim.run_ticks(10)
    assert sim.marks == ["A", "alarm"]
    assert second.state.value == "cancelled"


def test_unit_command_is_cancellable(simulate) -> None:
    sim = simulate("Fill\nMark: A")
    sim.run_until(lambda: sim.marks == ["A"])
    sim.run_ticks(5)
    fill = sim.item("Fill")
    assert (fill.state.value, fill.cancellable) == ("started", True)
    assert sim.cancel(fill)
    sim.run_ticks(1)
    assert (fill.state.value, fill.cancelled) == ("cancelled", True)
    assert (fill.cancellable, fill.forcible) == (False, False)
    refused(sim.cancel(fill), "cannot be cancelled")


def test_pause_and_hold_with_a_duration_are_cancellable_not_forcible(simulate) -> None:
    for control, state in (("Pause", "Paused"), ("Hold", "Holding")):
        sim = simulate(f"{control}: 10 s\nMark: A")
        sim.run_until(lambda: sim.system_state == state)
        item = sim.item(f"{control}: 10 s")
        assert (item.cancellable, item.forcible) == (True, False), control
        refused(sim.force(item), "cannot be forced")
        assert sim.cancel(item)
        assert sim.system_state == "Running", control  # cancelling ends it at once
        sim.run_ticks(1)
        assert sim.marks == ["A"], control
        assert item.state.value == "cancelled", control


def test_pause_without_duration_is_neither_cancellable_nor_forcible(simulate) -> None:
    sim = simulate("Pause\nMark: A")
    sim.run_until(lambda: sim.system_state == "Paused")
    pause = sim.item("Pause")
    assert (pause.cancellable, pause.forcible) == (False, False)
    refused(sim.cancel(pause), "cannot be cancelled")
    refused(sim.force(pause), "cannot be forced")
    sim.run_ticks(5)
    assert (sim.system_state, sim.marks) == ("Paused", [])


def test_mark_is_not_forcible(simulate) -> None:
    sim = simulate("Mark: A\nWait: 1 s")
    sim.run_until(lambda: sim.marks == ["A"])
    mark = sim.item("Mark: A")
    # The item as published when it started, before it completed in the same tick.
    first = next(e for e in sim.events if e.kind == "runlog" and e.id == mark.id)
    assert (first.state, first.forcible, first.cancellable) == ("started", False, False)
    assert (mark.forcible, mark.cancellable) == (False, False)
    refused(sim.force(mark), "'Mark: A' cannot be forced")
    refused(sim.cancel(mark), "'Mark: A' cannot be cancelled")


def test_refused_cancel_and_force_give_a_reason_and_change_nothing(simulate) -> None:
    sim = simulate("Fill\nMark: A\nWait: 5 s")
    sim.run_until(lambda: sim.marks == ["A"])
    sim.run_ticks(2)
    before = snapshot(sim)
    refused(sim.cancel(999), "No run-log item 999")
    refused(sim.force(999), "No run-log item 999")
    refused(sim.force(sim.item("Fill")), "'Fill' cannot be forced")
    refused(sim.cancel(sim.item("Wait: 5 s")), "'Wait: 5 s' cannot be cancelled")
    refused(sim.cancel(sim.item("Mark: A")), "cannot be cancelled")
    assert snapshot(sim) == before


# --- ANA: static analysis -----------------------------------------------------------------------------


def diagnose(simulate, text: str) -> list[Diagnostic]:
    """The analyzer's findings for ``text`` on the test unit (its tags, commands and Base units)."""
    engine = simulate(start=False).engine
    return analyze(method(text), tags={tag.name: tag.unit for tag in engine.tags}, commands=engine.uod.commands,
                   base_units=list(engine.uod.base_unit_provider))


def found(diagnostics: list[Diagnostic]) -> list[tuple[str, Severity, int]]:
    return [(d.id, d.severity, d.line) for d in diagnostics]


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO


def test_ANA_001_unreachable_code(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Block: A
            End block
            Mark: x
            Mark: y
        Watch: Counter > 0
            Stop
        Mark: reached
        Stop
        Mark: z
        Mark: w
    """)
    assert found(diagnostics) == [("UnreachableCode", W, 3), ("UnreachableCode", W, 4),
                                  ("UnreachableCode", W, 9)]
    assert "'End block' on line 2 ends block 'A'" in diagnostics[0].message
    assert diagnostics[2].end_line == 10  # one item spanning to the end
    assert "'Stop' on line 8 ends the run" in diagnostics[2].message


def test_ANA_002_infinite_block(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Block: A
            Block: B
                Mark: b
                End block
        Mark: after
    """)
    assert found(diagnostics) == [("InfiniteBlock", W, 1)]  # the End block of B does not end A
    assert "Block 'A' never ends" in diagnostics[0].message
    for ending in ("Block: A\n    End blocks", "Block: A\n    Stop",
                   "Watch: Block Time > 1 s\n    End block\nBlock: A\n    Mark: a"):
        assert diagnose(simulate, ending) == [], ending


def test_ANA_003_invalid_indentation(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Mark: a
          Mark: b
        Block: B
        Mark: c
            End block
    """)
    assert found(diagnostics) == [("InvalidIndentation", E, 2), ("EmptyBody", W, 3),
                                  ("InvalidIndentation", E, 5)]
    assert "multiple of 4 spaces" in diagnostics[0].message
    # The same indentation is a sibling, not the body (Open Pectus adopted it as the body).
    assert "'Block: B' has no body" in diagnostics[1].message


def test_ANA_004_threshold_out_of_order(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Base: s
        3 Mark: a
        1 Mark: b
        Block: B
            1 Mark: in block
            2 End block
        Base: min
        0.5 Mark: c
        Base: DV
        1 Mark: d
    """)
    assert found(diagnostics) == [("ThresholdOutOfOrder", I, 2), ("ThresholdOutOfOrder", W, 3),
                                  ("InvalidArgument", E, 9), ("ThresholdBaseInvalid", E, 10)]
    assert "Threshold 1 is lower than 3 on line 2" in diagnostics[1].message
    assert "'DV'" in diagnostics[3].message and "s, min, h, L, mL, CV" in diagnostics[3].message


def test_ANA_005_malformed_conditions(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Watch
            Mark: condition missing
        Watch: TT01
            Mark: operator missing
        Watch: TT01 >
            Mark: value missing
        Alarm: > 5 degC
            Mark: tag missing
    """)
    assert found(diagnostics) == [("ConditionMissing", E, 1), ("MissingOperator", E, 3), ("MissingValue", E, 5),
                                  ("MissingTag", E, 7)]
    assert [d.message for d in diagnostics] == [
        "Watch: Expected a condition 'Tag > value', found nothing",
        "Watch: Expected a condition 'Tag > value': no operator in 'TT01'",
        "Watch: Expected a value after '>'",
        "Alarm: Expected a tag name before '>'",
    ]


def test_ANA_006_undefined_tag(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Watch: TT1 > 5 degC
            Mark: a
        Watch: Nothing Like Any Tag > 5
            Mark: b
        Alarm: TT02 > 5 nounit
            Mark: c
    """)
    # Only the first failing check of a condition is reported (TT02's unit is not checked).
    assert found(diagnostics) == [("UndefinedTag", E, 1), ("UndefinedTag", E, 3), ("UndefinedTag", E, 5)]
    assert diagnostics[0].fixes == ("TT01",)
    assert diagnostics[0].column == len("Watch: ") + 1
    assert diagnostics[1].fixes == ()  # Open Pectus' analyzer crashed on a dissimilar name


def test_ANA_007_unexpected_unit(simulate) -> None:
    (diagnostic,) = diagnose(simulate, "Watch: Counter > 3 L\n    Mark: a")
    assert (diagnostic.id, diagnostic.severity, diagnostic.line) == ("UnexpectedUnit", E, 1)
    assert "Tag 'Counter' has no unit" in diagnostic.message and "remove 'L'" in diagnostic.message


def test_ANA_008_missing_unit(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Watch: TT01 > 25
            Mark: a
        Watch: Block Time > 5
            Mark: b
        Watch: Counter > 5
            Mark: c
    """)
    assert found(diagnostics) == [("MissingUnit", E, 1), ("MissingUnit", E, 3)]
    assert "e.g. '25 degC'" in diagnostics[0].message
    assert "e.g. '5 s'" in diagnostics[1].message


def test_ANA_009_invalid_unit(simulate) -> None:
    (diagnostic,) = diagnose(simulate, "Watch: FT01 > 5 l/min\n    Mark: a")
    assert (diagnostic.id, diagnostic.severity, diagnostic.line) == ("InvalidUnit", E, 1)
    assert "'l/min' is not a known unit" in diagnostic.message
    assert diagnostic.fixes[0] == "L/min"


def test_ANA_010_incompatible_units(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Watch: FT01 > 5 degC
            Mark: a
        Watch: TT01 > hot
            Mark: b
        Watch: FT01 > 1 L/min
            Mark: converted
        Watch: Valve = Open
            Mark: text
    """)
    assert found(diagnostics) == [("IncompatibleUnits", E, 1), ("NonNumericComparison", E, 3)]
    assert "incompatible units 'L/h' and 'degC'" in diagnostics[0].message
    assert "'hot' is not a number" in diagnostics[1].message


def test_ANA_011_simulate_and_simulate_off(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Simulate: TT01 == 5 degC
        Simulate: TT02 = 5
        Simulate off: TT02
        Simulate: Counter = 5 L
        Simulate: TT01 = 5 L
        Simulate: TT01 = 50
        Simulate off: TT01
    """)
    assert found(diagnostics) == [("MissingOperator", E, 1), ("UndefinedTag", E, 2), ("UndefinedTag", E, 3),
                                  ("UnexpectedUnit", E, 4), ("IncompatibleUnits", E, 5), ("MissingUnit", W, 6)]
    assert "Expected '=' in an assignment" in diagnostics[0].message and diagnostics[0].fixes == ("=",)
    assert "the number is taken in degC" in diagnostics[5].message
    assert diagnostics[2].fixes == ("TT01",)


def test_ANA_012_undefined_command(simulate) -> None:
    diagnostics = diagnose(simulate, """
        mark: A
        Rest
        Start
        Watch TT01 > 5 degC
        .5 Mark: A
        Reset
        Mark: fine
    """)
    assert found(diagnostics) == [("UndefinedCommand", E, 1), ("UndefinedCommand", E, 2),
                                  ("UndefinedCommand", E, 3), ("UndefinedCommand", E, 4),
                                  ("InvalidInstruction", E, 5)]
    assert diagnostics[0].fixes[0] == "Mark" and "case-sensitive" in diagnostics[0].message
    assert diagnostics[1].fixes[0] == "Reset"
    assert "run control" in diagnostics[2].message
    assert diagnostics[3].fixes == ("Watch: TT01 > 5 degC",)


def test_ANA_013_argument_count_of_commands(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Increment run counter: 2
        End block: now
        Unpause: x
        Wait
        Base
        Run counter
        Reset: now
        Stop: now
    """)
    assert found(diagnostics) == [("ArgumentNotExpected", E, 1), ("ArgumentNotExpected", E, 2),
                                  ("ArgumentNotExpected", E, 3), ("MissingArgument", E, 4),
                                  ("MissingArgument", E, 5), ("MissingArgument", E, 6),
                                  ("ArgumentNotExpected", E, 7), ("ArgumentNotExpected", E, 8)]
    assert "Reset takes no argument: remove ': now'" in diagnostics[6].message
    assert "Increment run counter takes no argument: remove ': 2'" in diagnostics[0].message
    assert "Wait needs a duration" in diagnostics[3].message


def test_ANA_014_invalid_command_arguments(simulate) -> None:
    diagnostics = diagnose(simulate, """
        PU01: 120 L
        PU01: 50 %
        Wait: 5
        Pause: soon
        Run counter: -1
        Base: kg
        Wait: .5 min
    """)
    assert found(diagnostics) == [("CommandArgsInvalid", E, 1), ("InvalidArgument", E, 3),
                                  ("InvalidArgument", E, 4), ("InvalidArgument", E, 5),
                                  ("InvalidArgument", E, 6)]
    assert diagnostics[0].message == ("PU01: 120 L is not a valid value: expected a number in % (percentage); "
                                      "L is a volume, not a percentage.")
    assert diagnostics[0].column == len("PU01: ") + 1
    assert "'-1' is not a count" in diagnostics[3].message


def test_ANA_015_macro_errors(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Macro:
            Mark: a
        Call macro
        Call macro: Rins
        Call macro: Later
        Macro: Rinse
            Call macro: Dry
        Macro: Dry
            Call macro: Rinse
        Call macro: Rinse
        Macro: Later
            Mark: later
    """)
    assert found(diagnostics) == [("MacroNameInvalid", E, 1), ("MacroCallNameInvalid", E, 3),
                                  ("MacroCalledNotDefined", E, 4), ("MacroCalledBeforeDefinition", W, 5),
                                  ("MacroRecursive", E, 6), ("MacroRecursive", E, 8)]
    assert diagnostics[2].fixes == ("Rinse",)
    assert "Rinse -> Dry -> Rinse" in diagnostics[4].message


def test_ANA_016_macro_redefined_and_unused(simulate) -> None:
    diagnostics = diagnose(simulate, """
        Macro: M
            Mark: a
        Macro: M
            Mark: b
        Macro: Unused
            Mark: c
        Call macro: M
    """)
    assert found(diagnostics) == [("MacroUnused", I, 1), ("MacroRedefined", I, 3), ("MacroUnused", I, 5)]
    assert "defined again on line 3 before any call runs it" in diagnostics[0].message
    assert "first on line 1" in diagnostics[1].message
    assert "'Unused' is never called" in diagnostics[2].message
