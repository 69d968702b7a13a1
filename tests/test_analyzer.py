"""The static analyzer: one test per rule, with the smallest method that shows it."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pectus.pcode.analyzer import analyze
from pectus.pcode.diagnostics import Diagnostic, Severity
from pectus.pcode.syntax import parse
from pectus.uod.commands import CommandDefinition

TAGS: dict[str, str | None] = {
    "Base": None, "Run Counter": None, "Block": None, "Block Time": "s", "Scope Time": "s",
    "Process Time": "s", "Run Time": "s", "System State": None, "Mark": None,
    "TT01": "degC", "FT01": "L/h", "PU01": "%", "Inlet": None, "Batch Name": None,
}


def _percent(argument: str) -> float | None:
    number, _, unit = argument.partition(" ")
    return float(number) if unit == "%" and number.replace(".", "", 1).isdigit() else None


def _no_argument(argument: str) -> str | None:
    return argument if argument == "" else None


COMMANDS = {
    "Reset": _no_argument,
    "PU01": _percent,
    "Inlet": lambda argument: argument if argument in ("VA01", "VA02") else None,
}


def check(text: str, **kwargs) -> list[Diagnostic]:
    kwargs.setdefault("tags", TAGS)
    kwargs.setdefault("commands", COMMANDS)
    return analyze(text, **kwargs)


def only(text: str, id: str, **kwargs) -> list[Diagnostic]:
    """The diagnostics with ``id``; fails when the method has findings with other ids."""
    found = check(text, **kwargs)
    assert {d.id for d in found} == {id}, found
    return found


def one(text: str, id: str, severity: Severity, line: int, fragment: str, **kwargs) -> Diagnostic:
    found = only(text, id, **kwargs)
    assert len(found) == 1, found
    (diagnostic,) = found
    assert (diagnostic.severity, diagnostic.line) == (severity, line), diagnostic
    assert fragment in diagnostic.message, diagnostic.message
    return diagnostic


# --- whole method -------------------------------------------------------------------------------

CLEAN_METHOD = """\
# Equilibrate, load and elute a column
Base: min
Batch: Run 42
Inlet: VA01
PU01: 30 %
Alarm: TT01 > 40 degC
    Pause
    Warning: Temperature too high
Block: Equilibration
    Watch: FT01 < 10 L/h
        Info: Low flow
    0.5 Mark: Flow checked
    2 End block
Macro: Wash
    Inlet: VA02
    Wait: 30 s
Block: Load
    Call macro: Wash
    Watch: Block Time > 5 min
        End block
Base: s
Block: Elution
    Simulate: TT01 = 25 degC
    10 Simulate off: TT01
    20 Reset
    30 End blocks
Increment run counter
Watch: Run Counter >= 3
    Stop
Restart
"""


def test_a_clean_realistic_method_has_no_diagnostics() -> None:
    assert check(CLEAN_METHOD) == []


def test_syntax_errors_come_first_on_their_line_then_findings_by_line() -> None:
    found = check("Mark: A\n  Wait: 5\nWatch: TT01\n    Mark: B")
    assert [(d.line, d.id) for d in found] == [
        (2, "InvalidIndentation"), (2, "InvalidArgument"), (3, "MissingOperator")]


def test_a_parsed_method_is_accepted_as_well_as_text() -> None:
    assert analyze(parse("Wait: 5"))[0].id == "InvalidArgument"


def test_unknown_tags_and_commands_skip_those_checks() -> None:
    assert analyze("Watch: Nope > 3 L\n    Frobnicate: x\nSimulate off: Nope") == []


def test_empty_text_has_no_diagnostics() -> None:
    assert check("") == []


# --- structure ------------------------------------------------------------------------------------


def test_unreachable_code_after_end_block_one_item_per_line() -> None:
    found = only("Block: A\n    End block\n    Mark: x\n    Watch: Run Counter > 1\n        Mark: y\n"
                 "Mark: after", "UnreachableCode")
    assert [(d.line, d.end_line, d.severity) for d in found] == [
        (3, 3, Severity.WARNING), (4, 5, Severity.WARNING)]
    assert "'End block' on line 2 ends block 'A'" in found[0].message


def test_unreachable_code_after_end_blocks() -> None:
    one("Block: A\n    End blocks\n    Mark: x", "UnreachableCode", Severity.WARNING, 3, "'End blocks'")


def test_end_block_in_a_watch_body_makes_nothing_unreachable() -> None:
    assert check("Watch: Run Counter > 1\n    End block\n    Mark: x") == []


def test_unreachable_code_after_top_level_stop_spans_to_the_end() -> None:
    diagnostic = one("Mark: a\nStop\nMark: b\n\nBlock: B\n    End block\n# end",
                     "UnreachableCode", Severity.WARNING, 3, "'Stop' on line 2 ends the run")
    assert diagnostic.end_line == 6


def test_unreachable_code_after_top_level_restart() -> None:
    one("Restart\nMark: b", "UnreachableCode", Severity.WARNING, 2, "restarts the method")


@pytest.mark.parametrize("parent", ["Watch: Run Counter > 1", "Alarm: Run Counter > 1", "Block: A"])
def test_stop_below_the_program_makes_nothing_unreachable(parent: str) -> None:
    found = check(f"{parent}\n    Stop\nMark: b")
    assert "UnreachableCode" not in {d.id for d in found}


def test_stop_as_the_last_line_is_fine() -> None:
    assert check("Mark: a\nStop\n# done\n") == []


def test_infinite_block() -> None:
    one("Block: A\n    Mark: a\nMark: b", "InfiniteBlock", Severity.WARNING, 1, "Block 'A' never ends")


def test_end_block_of_a_nested_block_does_not_end_the_outer_block() -> None:
    one("Block: A\n    Block: B\n        End block", "InfiniteBlock", Severity.WARNING, 1, "'A'")


@pytest.mark.parametrize("ending", [
    "Block: A\n    Mark: a\n    End block",
    "Block: A\n    Watch: Block Time > 1 s\n        End block",
    "Block: A\n    Block: B\n        End blocks",
    "Block: A\n    Block: B\n        Watch: Run Counter > 1\n            Stop",
    "Block: A\n    Restart",
    "Watch: Block Time > 1 s\n    End block\nBlock: A\n    Mark: a",
    "Block: Outer\n    Block: A\n        Mark: a\n    End block\nAlarm: TT01 > 50 degC\n    End block",
    "Macro: Finish\n    End block\nBlock: A\n    Call macro: Finish",
])
def test_a_block_that_can_end_is_not_infinite(ending: str) -> None:
    assert "InfiniteBlock" not in {d.id for d in check(ending)}


def test_a_watch_inside_a_nested_block_cannot_end_the_outer_block() -> None:
    found = check("Block: A\n    Block: B\n        Watch: Block Time > 1 s\n            End block\n"
                  "        End block")
    assert [(d.id, d.line) for d in found] == [("InfiniteBlock", 1)]


def test_recursive_macro_calls_do_not_hang_the_infinite_block_check() -> None:
    found = check("Macro: M\n    Call macro: M\nBlock: A\n    Call macro: M")
    assert {(d.id, d.line) for d in found} == {("MacroRecursive", 1), ("InfiniteBlock", 3)}


@pytest.mark.parametrize("header", ["Block: A", "Watch: Run Counter > 1", "Alarm: Run Counter > 1",
                                    "Macro: M"])
def test_empty_body(header: str) -> None:
    # The same indentation as the header is not a body: the Mark runs after it.
    found = check(f"{header}\nMark: not the body\nCall macro: M\nMacro: M\n    Mark: m")
    empty = [d for d in found if d.id == "EmptyBody"]
    assert [(d.line, d.severity) for d in empty] == [(1, Severity.WARNING)]
    assert "indent the lines that belong to it by 4 spaces" in empty[0].message


# --- thresholds -----------------------------------------------------------------------------------


def test_threshold_out_of_order_warns_on_the_later_line_and_informs_on_the_limiting_one() -> None:
    found = only("1 Mark: a\n3 Mark: b\n2 Mark: c\n2.5 Mark: d", "ThresholdOutOfOrder")
    assert [(d.line, d.severity) for d in found] == [
        (2, Severity.INFO), (3, Severity.WARNING), (4, Severity.WARNING)]
    assert "Threshold 2 is lower than 3 on line 2" in found[1].message
    assert "not a delay" in found[1].message


def test_thresholds_are_ordered_per_block() -> None:
    assert check("5 Mark: a\nBlock: A\n    1 Mark: b\n    2 End block\n6 Mark: c") == []


def test_base_resets_the_threshold_order() -> None:
    assert check("Base: min\n2 Mark: a\nBase: s\n30 Mark: b") == []


def test_threshold_base_invalid() -> None:
    found = check("Base: CV\n1 Mark: a")
    assert [(d.id, d.line, d.severity) for d in found] == [
        ("InvalidArgument", 1, Severity.ERROR), ("ThresholdBaseInvalid", 2, Severity.ERROR)]
    assert "'CV' (set by 'Base' on line 1)" in found[1].message
    assert "s, min, h" in found[1].message


def test_registered_base_units_are_accepted() -> None:
    assert check("Base: CV\n1 Mark: a\nBase: mL\n1500 Mark: b",
                 base_units=("s", "min", "h", "L", "mL", "CV")) == []


def test_default_base_min_must_be_registered_for_thresholds() -> None:
    one("1 Mark: a", "ThresholdBaseInvalid", Severity.ERROR, 1, "the default Base", base_units=("s",))


# --- conditions -------------------------------------------------------------------------------------


def test_undefined_tag_with_did_you_mean() -> None:
    diagnostic = one("Watch: TT1 > 5 degC\n    Mark: a", "UndefinedTag", Severity.ERROR, 1, "'TT1'")
    assert diagnostic.fixes[0] == "TT01"
    assert diagnostic.column == len("Watch: ") + 1


def test_undefined_tag_not_similar_to_any_tag_does_not_crash() -> None:
    # Open Pectus's analyzer crashes here (quirk 17); ours reports it without a fix.
    diagnostic = one("Alarm: Completely Unknown Thing > 5\n    Mark: a", "UndefinedTag",
                     Severity.ERROR, 1, "no tag named 'Completely Unknown Thing'")
    assert diagnostic.fixes == ()


def test_unexpected_unit() -> None:
    one("Watch: Run Counter > 3 L\n    Mark: a", "UnexpectedUnit", Severity.ERROR, 1, "remove 'L'")


def test_missing_unit() -> None:
    one("Watch: TT01 > 25\n    Mark: a", "MissingUnit", Severity.ERROR, 1, "'25 degC'")


def test_invalid_unit_with_did_you_mean() -> None:
    diagnostic = one("Watch: FT01 > 5 l/min\n    Mark: a", "InvalidUnit", Severity.ERROR, 1,
                     "'l/min' is not a known unit")
    assert "L/h, L/min, L/d" in diagnostic.message
    assert diagnostic.fixes[0] == "L/min"


def test_invalid_unit_is_checked_even_when_the_tags_are_unknown() -> None:
    diagnostic = one("Watch: X > 5 degc\n    Mark: a", "InvalidUnit", Severity.ERROR, 1, "'degc'",
                     tags=None)
    assert diagnostic.fixes[0] == "degC"


def test_incompatible_units() -> None:
    one("Watch: FT01 > 5 degC\n    Mark: a", "IncompatibleUnits", Severity.ERROR, 1,
        "incompatible units 'L/h' and 'degC'")


def test_compatible_units_are_fine() -> None:
    assert check("Watch: FT01 > 1 L/min\n    Mark: a\nWatch: TT01 < 100 degF\n    Mark: b") == []


def test_non_numeric_comparison_of_an_ordering_operator() -> None:
    one("Watch: Inlet > VA01\n    Mark: a", "NonNumericComparison", Severity.ERROR, 1,
        "'VA01' is not a number: '>' compares numbers")


def test_non_numeric_comparison_on_a_tag_with_a_unit() -> None:
    one("Watch: TT01 == hot\n    Mark: a", "NonNumericComparison", Severity.ERROR, 1,
        "tag 'TT01' is measured in degC")


def test_text_equality_on_a_tag_without_unit_is_fine() -> None:
    assert check("Watch: Inlet == VA01\n    Mark: a\nWatch: System State != Paused\n    Mark: b") == []


def test_only_the_first_failing_condition_check_is_reported() -> None:
    one("Watch: TT02 > 5 foo\n    Mark: a", "UndefinedTag", Severity.ERROR, 1, "'TT02'")


def test_simulate_checks_tag_and_units_and_a_bare_number_is_a_warning() -> None:
    one("Simulate: TT01 = 25", "MissingUnit", Severity.WARNING, 1, "the number is taken in degC")
    assert check("Simulate: TT01 = 25 degC") == []
    one("Simulate: TT02 = 25", "UndefinedTag", Severity.ERROR, 1, "'TT02'")
    one("Simulate: TT01 = 25 L", "IncompatibleUnits", Severity.ERROR, 1, "'degC' and 'L'")


def test_simulate_off_checks_the_tag_name() -> None:
    diagnostic = one("Simulate off: Tt01", "UndefinedTag", Severity.ERROR, 1, "'Tt01'")
    assert diagnostic.fixes[0] == "TT01"
    one("Simulate off", "MissingArgument", Severity.ERROR, 1, "needs the tag name")


# --- instructions and commands --------------------------------------------------------------------


def test_undefined_command_with_did_you_mean_for_a_miscased_instruction() -> None:
    diagnostic = one("mark: A", "UndefinedCommand", Severity.ERROR, 1, "case-sensitive")
    assert diagnostic.fixes[0] == "Mark"


def test_undefined_command_did_you_mean_a_unit_command() -> None:
    diagnostic = one("Rest", "UndefinedCommand", Severity.ERROR, 1, "'Rest'")
    assert diagnostic.fixes[0] == "Reset"


def test_undefined_command_start_is_a_run_control() -> None:
    one("Start", "UndefinedCommand", Severity.ERROR, 1, "run control")


def test_undefined_command_missing_colon_suggests_the_fixed_line() -> None:
    diagnostic = one("Watch Run Counter > 2\nMark: a", "UndefinedCommand", Severity.ERROR, 1, "': '")
    assert diagnostic.fixes == ("Watch: Run Counter > 2",)


def test_command_args_invalid_shows_the_argument() -> None:
    diagnostic = one("PU01: 120 L", "CommandArgsInvalid", Severity.ERROR, 1, "'120 L' is not valid")
    assert diagnostic.column == len("PU01: ") + 1
    one("Inlet", "CommandArgsInvalid", Severity.ERROR, 1, "an argument is needed")


def test_a_uod_parser_that_raises_means_invalid_arguments() -> None:
    def explode(argument: str) -> object:
        raise ValueError(argument)

    one("Boom: 1", "CommandArgsInvalid", Severity.ERROR, 1, "'Boom'", commands={"Boom": explode})


def test_valid_uod_commands() -> None:
    assert check("Reset\nPU01: 12.5 %\nInlet: VA02") == []


def test_a_unit_command_that_takes_no_argument_given_one() -> None:
    """Before the fix it was only CommandArgsInvalid ("'now' is not valid"), unlike 'Stop: now'."""
    commands = {"Reset": CommandDefinition("Reset", lambda cmd: None, parser=None),
                "Dose": CommandDefinition("Dose", lambda cmd, value: None)}
    diagnostic = one("Reset: now", "ArgumentNotExpected", Severity.ERROR, 1,
                     "Reset takes no argument: remove ': now'", commands=commands)
    assert diagnostic.column == len("Reset: ") + 1
    assert check("Reset\nDose: 5 mL", commands=commands) == []


@pytest.mark.parametrize("condition, unit, fix", [
    ("TT01 > 5 deg C", "deg C", "degC"), ("FT01 < 2 L / h", "L / h", "L/h"),
    ("Block Time >= 3 min.", "min.", "min"),
])
def test_a_number_with_an_unreadable_unit_is_an_invalid_unit(condition: str, unit: str, fix: str) -> None:
    """Before the fix it was NonNumericComparison ("'5 deg C' is not a number")."""
    diagnostic = one(f"Watch: {condition}\n    Mark: a", "InvalidUnit", Severity.ERROR, 1,
                     f"'{unit}' is not a known unit")
    assert fix in diagnostic.fixes


def test_base_invalid_argument_names_the_supported_units() -> None:
    diagnostic = one("Base: ml", "InvalidArgument", Severity.ERROR, 1, "one of: s, min, h, L, mL",
                     base_units=("s", "min", "h", "L", "mL"))
    assert diagnostic.fixes[0] == "mL"


@pytest.mark.parametrize("text, id, fragment", [
    ("Base", "MissingArgument", "Base needs a unit"),
    ("Wait", "MissingArgument", "Wait needs a duration"),
    ("Wait: 5", "InvalidArgument", "'5' is not a duration"),
    ("Wait: 5 L", "InvalidArgument", "unit s, min or h"),
    ("Pause: soon", "InvalidArgument", "'soon' is not a duration"),
    ("Hold: 2 days", "InvalidArgument", "'2 days'"),
    ("Run counter", "MissingArgument", "new count"),
    ("Run counter: -1", "InvalidArgument", "whole number, 0 or more"),
    ("Run counter: 2.5", "InvalidArgument", "'2.5'"),
])
def test_builtin_argument_specs(text: str, id: str, fragment: str) -> None:
    one(text, id, Severity.ERROR, 1, fragment)


@pytest.mark.parametrize("text", ["Wait: 5 s", "Wait: 0.5min", "Wait: .5 h", "Wait: 2. s", "Pause",
                                  "Pause: 10 s", "Hold", "Hold: 1 min", "Run counter: 0",
                                  "Run counter: 12", "Info", "Warning: x", "Error: bad thing"])
def test_valid_builtin_arguments(text: str) -> None:
    assert check(text) == []


@pytest.mark.parametrize("name", ["Increment run counter", "End block", "End blocks", "Stop",
                                  "Restart", "Unpause", "Unhold"])
def test_argument_not_expected(name: str) -> None:
    one(f"{name}: now", "ArgumentNotExpected", Severity.ERROR, 1, f"{name} takes no argument")


def test_batch_without_batch_name_tag() -> None:
    tags = {name: unit for name, unit in TAGS.items() if name != "Batch Name"}
    one("Batch: B1", "BatchNameTagMissing", Severity.INFO, 1, "'Batch Name'", tags=tags)


# --- macros -------------------------------------------------------------------------------------------


def test_macro_name_invalid() -> None:
    found = check("Macro:\n    Mark: a")
    assert [(d.id, d.severity, d.line) for d in found] == [("MacroNameInvalid", Severity.ERROR, 1)]


def test_macro_call_name_invalid() -> None:
    one("Call macro", "MacroCallNameInvalid", Severity.ERROR, 1, "needs the name of a macro")


def test_macro_called_not_defined_with_did_you_mean() -> None:
    found = check("Macro: Wash\n    Mark: w\nCall macro: Wsh")
    assert [(d.id, d.line) for d in found] == [("MacroUnused", 1), ("MacroCalledNotDefined", 3)]
    assert found[1].fixes == ("Wash",)
    assert "No macro named 'Wsh'" in found[1].message


def test_a_macro_defined_twice_reports_the_definition_no_call_runs_as_unused() -> None:
    """Before the fix only MacroRedefined was reported: the first definition looked used."""
    found = check("Macro: M\n    Mark: a\nMacro: M\n    Mark: b\nCall macro: M")
    assert [(d.id, d.line) for d in found] == [("MacroUnused", 1), ("MacroRedefined", 3)]
    assert "defined again on line 3 before any call runs it" in found[0].message
    # A call between the definitions runs the first; a call from a Watch may run either.
    served = "Macro: M\n    Mark: a\nCall macro: M\nMacro: M\n    Mark: b\nCall macro: M"
    assert [d.id for d in check(served)] == ["MacroRedefined"]
    from_a_watch = "Macro: M\n    Mark: a\nWatch: Run Counter > 0\n    Call macro: M\nMacro: M\n    Mark: b"
    assert [d.id for d in check(from_a_watch)] == ["MacroRedefined"]
    # The last definition after every call: no call runs it.
    late = check("Macro: M\n    Mark: a\nCall macro: M\nMacro: M\n    Mark: b")
    assert [(d.id, d.line) for d in late] == [("MacroRedefined", 4), ("MacroUnused", 4)]
    assert "every call of it comes before it" in late[1].message


def test_macro_called_before_definition() -> None:
    one("Block: A\n    Call macro: M\n    End block\nMacro: M\n    Mark: m",
        "MacroCalledBeforeDefinition", Severity.WARNING, 2, "before its definition on line 4")


def test_macro_called_from_a_watch_before_its_definition_is_fine() -> None:
    assert check("Watch: Run Counter > 1\n    Call macro: M\nMacro: M\n    Mark: m") == []


def test_macro_recursive_direct() -> None:
    one("Macro: A\n    Call macro: A", "MacroRecursive", Severity.ERROR, 1, "(A -> A)")


def test_macro_recursive_through_other_macros_and_blocks() -> None:
    found = only("Macro: A\n    Block: X\n        Call macro: B\n        End block\n"
                 "Macro: B\n    Call macro: A\nCall macro: A", "MacroRecursive")
    assert [(d.line, d.severity) for d in found] == [(1, Severity.ERROR), (5, Severity.ERROR)]
    assert "(A -> B -> A)" in found[0].message
    assert "(B -> A -> B)" in found[1].message


def test_a_macro_calling_a_recursive_macro_is_not_itself_recursive() -> None:
    found = check("Macro: A\n    Call macro: B\nMacro: B\n    Call macro: B\nCall macro: A")
    assert [(d.id, d.line) for d in found] == [("MacroRecursive", 3)]


def test_a_macro_calling_itself_from_a_watch_is_not_recursive() -> None:
    assert check("Macro: A\n    Watch: Run Counter > 1\n        Call macro: A\nCall macro: A") == []


def test_macro_redefined() -> None:
    found = check("Macro: M\n    Mark: 1\nCall macro: M\nMacro: M\n    Mark: 2\nCall macro: M")
    assert [(d.id, d.severity, d.line) for d in found] == [("MacroRedefined", Severity.INFO, 4)]
    assert "first on line 1" in found[0].message


def test_macro_unused() -> None:
    one("Macro: M\n    Mark: m", "MacroUnused", Severity.INFO, 1, "'M' is never called")


# --- robustness and speed -----------------------------------------------------------------------

_WORDS = ["Block: A", "End block", "End blocks", "Watch: TT01 > 3 degC", "Alarm: X < y", "Macro: M",
          "Macro:", "Call macro: M", "Call macro: N", "Stop", "Restart", "Base: s", "Base: CV",
          "1 Mark: a", "0.5 Wait: 2 s", "Simulate: TT01 = 5", "Simulate off: Q", "PU01: 5 %",
          "Inlet", "mark", "Start", "# c", "", "Run counter: x"]
_LINES = st.one_of(
    st.builds(lambda indent, word: " " * indent + word, st.integers(0, 9), st.sampled_from(_WORDS)),
    st.text(alphabet=st.sampled_from(list("ab MW:#<>=.1 \t%/-")), max_size=20),
    st.text(max_size=20),
)


def _raising_parser(argument: str) -> object:
    if argument:
        raise RuntimeError("UOD bug")
    return argument


@settings(max_examples=300)
@given(lines=st.lists(_LINES, max_size=25), separator=st.sampled_from(["\n", "\r\n", "\r"]),
       known=st.booleans())
def test_analyze_never_raises_and_points_at_existing_lines(lines: list[str], separator: str,
                                                          known: bool) -> None:
    text = separator.join(lines)
    if known:
        found = analyze(text, tags={**TAGS, "X": "foo"}, commands={**COMMANDS, "Inlet": _raising_parser},
                        base_units=("s", "CV"))
    else:
        found = analyze(text)
    count = max(len(text.splitlines()), 1)
    assert all(1 <= d.line <= d.end_line <= count for d in found), found
    assert [d.line for d in found] == sorted(d.line for d in found)


@given(st.text(max_size=200))
def test_analyze_never_raises_on_any_text(text: str) -> None:
    found = analyze(text, tags=TAGS, commands=COMMANDS)
    assert all(1 <= d.line <= d.end_line <= max(len(text.splitlines()), 1) for d in found)
