"""The parser: line anatomy, nesting, syntax errors with line and column, and its property:
any text either parses or yields diagnostics with a line number - never an exception."""

from __future__ import annotations

from textwrap import dedent

import pytest
from hypothesis import given, settings, strategies as st

from pectus.pcode.syntax import Kind, parse, parse_condition


def test_line_anatomy():
    node = parse("    " * 0 + "1.5 Mark: A: b  # why").lines[0]
    assert (node.kind, node.threshold, node.name, node.argument, node.comment) == (Kind.MARK, 1.5, "Mark", "A: b", "why")
    assert node.display_name == "Mark: A: b"


def test_instruction_names_keep_spaces_and_case():
    method = parse("End block\nCall macro: M\nend block\nSet area: 2 m2")
    kinds = [n.kind for n in method.lines]
    assert kinds == [Kind.END_BLOCK, Kind.CALL_MACRO, Kind.COMMAND, Kind.COMMAND]
    assert method.lines[3].name == "Set area" and method.lines[3].argument == "2 m2"


def test_nesting_builds_the_tree_and_keeps_line_numbers():
    method = parse(dedent("""\
        Block: A
            Watch: Counter > 1
                Mark: w

            # comment at any indentation
          # even this one
            Mark: a
        Mark: b
        """))
    block = method.lines[0]
    assert [n.line for n in block.children] == [2, 7]
    assert [n.line for n in block.children[0].children] == [3]
    assert [n.line for n in method.program.children] == [1, 8]
    assert method.lines[6].parent is block and method.lines[6].depth == 1
    assert method.ok


def test_all_syntax_errors_are_reported_with_line_and_column():
    method = parse(dedent("""\
        Mark: ok
          Mark: two spaces
        .5 Mark: x
        Watch: Counter
            Mark: body
        \tMark: tab
        Watch: A =< 3
            Mark: y
        """))
    found = [(e.line, e.column, e.id) for e in method.errors]
    assert found == [(2, 1, "InvalidIndentation"), (3, 1, "InvalidInstruction"), (4, 8, "MissingOperator"),
                     (6, 1, "InvalidIndentation"), (7, 10, "InvalidCondition")]
    # A mistyped operator is pointed at exactly: its fix replaces columns 10 to 12 ('=<').
    assert "did you mean '<='" in method.errors[-1].message
    assert (method.errors[-1].end_column, method.errors[-1].fixes) == (12, ("<=",))


@pytest.mark.parametrize("line, id, message", [
    ("Watch", "ConditionMissing", "Watch: Expected a condition 'Tag > value', found nothing"),
    ("Watch: TT01 5 degC", "MissingOperator", "no operator in 'TT01 5 degC'"),
    ("Alarm: > 5 degC", "MissingTag", "Expected a tag name before '>'"),
    ("Watch: TT01 >=", "MissingValue", "Expected a value after '>='"),
    ("Simulate: TT01 == 5", "MissingOperator", "Expected '=' in an assignment"),
    ("Watch: A =< 3", "InvalidCondition", "did you mean '<='?"),
    ("Watch: A = B = C", "InvalidCondition", "More than one operator"),
])
def test_a_malformed_condition_says_what_is_missing(line, id, message):
    """Before the fix every one of them was InvalidCondition: an editor could not tell them apart."""
    (error,) = parse(line).errors
    assert (error.id, error.line) == (id, 1)
    assert message in error.message


def test_blank_and_comment_lines_have_their_depth_and_parent():
    """Before the fix every blank or comment line had depth 0 and no parent, also inside a block."""
    method = parse(dedent("""\
        Block: A

            Mark: a
        # between two lines of A: in A
            Watch: Counter > 1
                # indented under the Watch: in the Watch
            # back at A's indentation: in A

        Mark: b
            # indented under a line that has no body: top level
        """))
    block, watch = method.lines[0], method.lines[4]
    found = [(n.line, n.depth, n.parent) for n in method.lines if n.kind in (Kind.BLANK, Kind.COMMENT)]
    assert found == [(2, 1, block), (4, 1, block), (6, 2, watch), (7, 1, block), (8, 0, method.program),
                     (10, 0, method.program)]
    assert [n.line for n in block.children] == [3, 5]  # the tree itself holds instructions only


def test_unexpected_indentation_says_what_was_expected():
    method = parse("Mark: a\n    Mark: b")
    assert method.errors[0].line == 2
    assert "Unexpected indentation" in method.errors[0].message


def test_conditions():
    assert parse_condition("Run Counter >= 3")[0].tag == "Run Counter"
    condition, _ = parse_condition("TT01 > 1e2 degC")
    assert (condition.value, condition.unit) == (100.0, "degC")
    condition, _ = parse_condition("Valve = Open")
    assert (condition.op, condition.value, condition.unit) == ("=", "Open", None)
    assert parse_condition("x>0,98")[0].value == "0,98"
    assert parse_condition("A = B = C")[1].message == "More than one operator in 'A = B = C'"
    assert "Expected a value" in parse_condition("foo ==")[1].message
    assert "no operator" in parse_condition("foo")[1].message
    assert "Expected '='" in parse_condition("A == 3", assignment=True)[1].message


def test_ids_come_from_the_editor_when_given():
    method = parse([("a1", "Mark: A"), ("b7", "Mark: B")])
    assert [n.id for n in method.lines] == ["a1", "b7"]


def test_empty_text_has_no_lines():
    method = parse("")
    assert method.lines == [] and method.ok


_pcode_line = st.one_of(
    st.text(max_size=40),
    st.builds(lambda indent, threshold, name, arg, comment: f"{' ' * indent}{threshold}{name}{arg}{comment}",
              st.integers(0, 13),
              st.sampled_from(["", "1 ", "0.5 ", "1e3 ", ".5 "]),
              st.sampled_from(["Mark", "Block", "Watch", "Alarm", "Macro", "End block", "Wait", "PU01", "Simulate",
                               "", "#", "Call macro", ":", "Base"]),
              st.sampled_from(["", ": A", ":B", ": x > 3 L/h", ": TT01 =< 3", ": = 3", ": a = b = c", ":"]),
              st.sampled_from(["", " # c", "#", "  "])),
)


@settings(max_examples=400)
@given(st.lists(_pcode_line, max_size=25), st.sampled_from(["\n", "\r\n", "\r"]))
def test_any_text_parses_or_yields_diagnostics_with_a_line(lines, newline):
    text = newline.join(lines)
    method = parse(text)
    count = len(text.splitlines())
    assert len(method.lines) == count
    for error in method.errors:
        assert 1 <= error.line <= count and error.column >= 0 and error.message
    for node in method.lines:  # every line, blank and comment lines too, is somewhere in the tree
        assert node.parent is not None and node.depth == node.parent.depth + 1
