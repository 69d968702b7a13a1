"""The P-code syntax: lines to a typed tree that keeps line numbers.

A method is a list of lines. Each line holds at most one instruction::

    [indent][threshold ]Name[: arguments][ # comment]

Nesting is by indentation, 4 spaces a level; the lines indented below a ``Block``, ``Watch``,
``Alarm`` or ``Macro`` are its body. Blank and comment lines never affect nesting.

Invariants of :func:`parse`:

* it never raises: every problem is a :class:`~pectus.pcode.diagnostics.Diagnostic` with line
  and column, and *all* problems are reported, not the first;
* every line of the text has exactly one :class:`Node` in ``Method.lines`` (index = line - 1),
  also blank and comment lines and lines with errors, so an editor can show all of them;
* only instruction nodes are in the tree (``Node.children``); blank and comment lines are not,
  but every line has its ``parent`` and ``depth``: a blank or comment line belongs to the
  container its next instruction is in (a blank line between two lines of a Block is in the
  Block), or to a deeper open container its indentation reaches (a comment indented under a
  Block's last line is in the Block), so an editor can fold it and a tool can walk it;
* a method with any syntax error (``Method.errors``) must not be run - the engine refuses it
  whole, it is never half-loaded.

Whether a name is a *known* instruction depends on the unit's UOD, so the parser resolves only
the built-in names; every other name becomes a ``Kind.COMMAND`` node that the analyzer and the
interpreter check against the UOD's commands.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterable

from pectus.pcode.diagnostics import Diagnostic, Severity

INDENT = 4


class Kind(StrEnum):
    PROGRAM = "Program"
    BLANK = "Blank"
    COMMENT = "Comment"
    MARK = "Mark"
    BATCH = "Batch"
    NOTIFY = "Notify"
    BLOCK = "Block"
    END_BLOCK = "End block"
    END_BLOCKS = "End blocks"
    WATCH = "Watch"
    ALARM = "Alarm"
    MACRO = "Macro"
    CALL_MACRO = "Call macro"
    BASE = "Base"
    WAIT = "Wait"
    INCREMENT_RUN_COUNTER = "Increment run counter"
    RUN_COUNTER = "Run counter"
    STOP = "Stop"
    PAUSE = "Pause"
    UNPAUSE = "Unpause"
    HOLD = "Hold"
    UNHOLD = "Unhold"
    RESTART = "Restart"
    INFO = "Info"
    WARNING = "Warning"
    ERROR = "Error"
    SIMULATE = "Simulate"
    SIMULATE_OFF = "Simulate off"
    COMMAND = "Command"  # a unit (UOD) command, or an unknown instruction
    INVALID = "Invalid"  # a line that is not an instruction at all


#: Built-in instruction names (case-sensitive, as in Open Pectus) -> node kind.
BUILTINS: dict[str, Kind] = {
    k.value: k
    for k in Kind
    if k not in (Kind.PROGRAM, Kind.BLANK, Kind.COMMENT, Kind.COMMAND, Kind.INVALID)
}
CONTAINERS = frozenset({Kind.PROGRAM, Kind.BLOCK, Kind.WATCH, Kind.ALARM, Kind.MACRO})
CONDITIONAL = frozenset({Kind.WATCH, Kind.ALARM})
WHITESPACE = frozenset({Kind.BLANK, Kind.COMMENT})

#: Comparison operators. At the leftmost operator position the longest operator wins.
OPERATORS = ("<=", ">=", "==", "!=", "<", ">", "=")
_OPERATOR_RE = re.compile(r"<=|>=|==|!=|=<|=>|<|>|=")
#: A number in a condition's value (an exponent is part of the number: ``1e3`` is 1000).
NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_VALUE_RE = re.compile(
    rf"^(?P<number>{NUMBER})\s*(?P<unit>[A-Za-z\u00b5\u03bc\u00b0%][A-Za-z0-9\u00b5\u03bc\u00b0%/*]*)?$"
)
_LINE_RE = re.compile(
    r"(?P<indent>[ \t]*)"
    r"(?:(?P<threshold>\d+(?:\.\d+)?)[ \t]+(?=[A-Za-z_]))?"
    r"(?P<name>[A-Za-z_0-9][^:#]*)"
    r"(?::(?P<argument>[^#]*))?"
    r"(?:#(?P<comment>.*))?$"
)


@dataclass(slots=True)
class Condition:
    """``TAG OP VALUE [unit]`` of a Watch/Alarm, or ``TAG = VALUE [unit]`` of a Simulate.

    ``value`` is a float when the right side is a number, else the text (categorical values
    such as ``Open``). ``unit`` is None when no unit was written.
    """

    tag: str
    op: str
    value: float | str
    unit: str | None
    text: str

    @property
    def is_numeric(self) -> bool:
        return isinstance(self.value, float)


@dataclass(frozen=True, slots=True)
class ConditionProblem:
    """Why a condition is malformed. ``id`` says what is missing, so an editor can offer a fix:

    ``ConditionMissing`` (nothing after the ``:``), ``MissingTag``, ``MissingOperator`` (also a
    Simulate whose operator is not ``=``), ``MissingValue`` - the Open Pectus ids - and
    ``InvalidCondition`` (a mistyped operator such as ``=<``, more than one operator).
    ``fixes`` holds the replacement of the operator when there is a sure one; ``span`` is where that
    operator is in the (stripped) condition text, [start, end).
    """

    id: str
    message: str
    fixes: tuple[str, ...] = ()
    span: tuple[int, int] = (0, 0)


@dataclass(slots=True, eq=False)
class Node:
    """One line of a method. ``line`` is 1-based; ``id`` is the line's identity for live edit.

    ``argument`` is None when the line has no ``:``; otherwise the stripped text after it.
    ``depth`` is the nesting depth (0 for top-level lines), ``indent`` the leading spaces as
    written. ``errors`` holds this line's syntax problems (indentation, malformed condition).
    """

    kind: Kind
    line: int
    id: str
    name: str = ""
    argument: str | None = None
    threshold: float | None = None
    comment: str = ""
    indent: int = 0
    depth: int = 0
    text: str = ""
    parent: "Node | None" = None
    children: "list[Node] | None" = None
    condition: Condition | None = None
    errors: "list[Diagnostic] | None" = None

    @property
    def arguments(self) -> str:
        return self.argument or ""

    @property
    def display_name(self) -> str:
        """The run-log name: ``Name: arguments`` or just ``Name``."""
        return f"{self.name}: {self.argument}" if self.argument else self.name

    @property
    def instruction(self) -> str:
        """The instruction text without threshold and comment, as compared by live edit."""
        return self.display_name if self.kind not in WHITESPACE else ""

    @property
    def is_container(self) -> bool:
        return self.children is not None

    def walk(self) -> Iterable["Node"]:
        """This node and all nodes below it, in line order."""
        yield self
        if self.children:
            for child in self.children:
                yield from child.walk()

    def __repr__(self) -> str:
        return f"<Node {self.line} {self.kind.value} {self.display_name!r}>"


@dataclass(slots=True)
class Method:
    """A parsed method: the tree under ``program``, every line in ``lines``, syntax ``errors``."""

    program: Node
    lines: list[Node]
    errors: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return not self.errors

    def node(self, line: int) -> Node:
        return self.lines[line - 1]


def parse_condition(argument: str | None, *,
                    assignment: bool = False) -> tuple[Condition | None, ConditionProblem | None]:
    """Parse ``TAG OP VALUE [unit]``; return (condition, None) or (None, problem).

    Unlike Open Pectus, a number with an exponent is a number (``1e3`` is 1000, not 1 with
    unit ``e3``) and ``=<``/``=>`` are reported as mistyped operators.
    """
    text = (argument or "").strip()
    what = "an assignment 'Tag = value'" if assignment else "a condition 'Tag > value'"
    if not text:
        return None, ConditionProblem("ConditionMissing", f"Expected {what}, found nothing")
    match = _OPERATOR_RE.search(text)
    if match is None:
        return None, ConditionProblem("MissingOperator", f"Expected {what}: no operator in '{text}'")
    op = match.group()
    if op in ("=<", "=>"):
        return None, ConditionProblem("InvalidCondition", f"Unknown operator '{op}'; did you mean '{op[::-1]}'?",
                                      (op[::-1],), match.span())
    if assignment and op != "=":
        return None, ConditionProblem("MissingOperator", f"Expected '=' in {what}, found '{op}'", ("=",), match.span())
    tag = text[: match.start()].strip()
    right = text[match.end():].strip()
    if not tag:
        return None, ConditionProblem("MissingTag", f"Expected a tag name before '{op}'")
    if not right:
        return None, ConditionProblem("MissingValue", f"Expected a value after '{op}'")
    if _OPERATOR_RE.search(right):
        return None, ConditionProblem("InvalidCondition", f"More than one operator in '{text}'")
    value_match = _VALUE_RE.match(right)
    if value_match:
        number = float(value_match.group("number"))
        return Condition(tag, op, number, value_match.group("unit"), text), None
    return Condition(tag, op, right, None, text), None


def parse(source: str | Iterable[str] | Iterable[tuple[str, str]]) -> Method:
    """Parse a method. ``source`` is the text, a list of line texts, or (line id, text) pairs.

    Line ids default to the 1-based line numbers as strings.
    """
    if isinstance(source, str):
        pairs = [(str(i), t) for i, t in enumerate(source.splitlines(), 1)]
    else:
        pairs = [(str(i), item) if isinstance(item, str) else item for i, item in enumerate(source, 1)]
    # The tree is full of parent/child cycles; the cyclic garbage collector would walk the growing
    # tree again and again while it is built (15 % of a large parse), and it finds nothing to free.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse_pairs(pairs)
    finally:
        if collecting:
            gc.enable()


def _parse_pairs(pairs: list[tuple[str, str]]) -> Method:

    program = Node(Kind.PROGRAM, 0, "root", children=[], depth=-1)
    lines: list[Node] = []
    errors: list[Diagnostic] = []
    # stack[d] is the container whose children are at depth d.
    stack: list[Node] = [program]
    last_instruction: Node | None = None
    # Blank and comment lines since the last instruction, each with the open container its
    # indentation reaches; they are placed when the next instruction is (or at the end).
    whitespace: list[tuple[Node, Node]] = []
    for number, (line_id, text) in enumerate(pairs, 1):
        node = _parse_line(text, number, line_id)
        lines.append(node)
        if node.kind in WHITESPACE:
            whitespace.append((node, stack[min(node.indent // INDENT, len(stack) - 1)]))
            continue
        problems = node.errors if node.errors is not None else []
        depth = node.indent // INDENT
        if node.indent and "\t" in text[: node.indent]:
            problems.append(_problem(number, 1, "InvalidIndentation",
                                     "Indent with spaces, not tabs (4 spaces a level)"))
        elif node.indent % INDENT:
            problems.append(_problem(
                number, 1, "InvalidIndentation",
                f"Indentation must be a multiple of {INDENT} spaces; this line has {node.indent}"))
        if depth >= len(stack):
            if last_instruction is not None and last_instruction.is_container:
                expected = f"at most {INDENT * (len(stack) - 1)} spaces"
            elif len(stack) == 1:
                expected = "no indentation here (only the lines of a Block, Watch, Alarm or Macro are indented)"
            else:
                expected = f"at most {INDENT * (len(stack) - 1)} spaces"
            if not problems:
                problems.append(_problem(number, 1, "InvalidIndentation",
                                         f"Unexpected indentation: expected {expected}"))
            depth = len(stack) - 1
        parent = stack[depth]
        for line, reached in whitespace:
            _place(line, parent if parent.depth >= reached.depth else reached)
        whitespace.clear()
        del stack[depth + 1:]
        node.depth = depth
        node.parent = parent
        parent.children.append(node)
        if node.children is not None:
            stack.append(node)
        last_instruction = node
        if problems:
            node.errors = problems
            errors.extend(problems)
    for line, reached in whitespace:  # after the last instruction: where the indentation reaches
        _place(line, reached)
    return Method(program, lines, errors)


def _place(line: Node, parent: Node) -> None:
    """Give a blank or comment line its parent and depth; it is not one of the parent's children."""
    line.parent = parent
    line.depth = parent.depth + 1


def _problem(line: int, column: int, id: str, message: str) -> Diagnostic:
    return Diagnostic(id, Severity.ERROR, line, message, column)


def _parse_line(text: str, number: int, line_id: str) -> Node:
    stripped = text.strip()
    if not stripped:
        return Node(Kind.BLANK, number, line_id, text=text, indent=len(text))
    indent = text.find(stripped[0])
    if stripped[0] == "#":
        return Node(Kind.COMMENT, number, line_id, comment=stripped[1:].strip(), indent=indent, text=text)
    match = _LINE_RE.match(text)
    if match is None:
        return Node(Kind.INVALID, number, line_id, name=stripped, indent=indent, text=text, errors=[_problem(
            number, indent + 1, "InvalidInstruction",
            f"'{stripped}' is not an instruction: a line starts with an optional threshold "
            "number and a name, e.g. '0.5 Mark: A'")])
    _, threshold, name, argument, comment = match.groups()
    name = name.strip()
    if argument is not None:
        argument = argument.strip()
    kind = BUILTINS.get(name, Kind.COMMAND)
    node = Node(kind, number, line_id, name=name, argument=argument,
                threshold=float(threshold) if threshold is not None else None,
                comment=comment.strip() if comment else "", indent=indent, text=text)
    if kind in CONTAINERS:
        node.children = []
        if kind in CONDITIONAL:
            node.condition, problem = parse_condition(argument)
            if problem:
                column = _argument_column(text) if argument is not None else len(text.rstrip()) + 1
                node.errors = [_condition_error(number, column, name, problem)]
    elif kind is Kind.SIMULATE:
        node.condition, problem = parse_condition(argument, assignment=True)
        if problem:
            node.errors = [_condition_error(number, _argument_column(text), name, problem)]
    return node


def _condition_error(line: int, column: int, name: str, problem: ConditionProblem) -> Diagnostic:
    """The problem of the condition that starts at ``column``; with a fix, at the operator it replaces."""
    start, end = problem.span
    if problem.fixes:
        column, end_column = column + start, column + end
    else:
        end_column = 0
    return Diagnostic(problem.id, Severity.ERROR, line, f"{name}: {problem.message}", column, fixes=problem.fixes,
                      end_column=end_column)


def _argument_column(text: str) -> int:
    """The 1-based column where the argument after the first ':' begins."""
    colon = text.find(":")
    return colon + 2 + len(text[colon + 1:]) - len(text[colon + 1:].lstrip())
