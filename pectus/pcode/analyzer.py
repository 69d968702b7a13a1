"""Static analysis of a P-code method: what will go wrong, found before the run starts.

The parser (:mod:`pectus.pcode.syntax`) says whether each line is well-formed. The analyzer reads
the tree as a whole and, when it knows the unit (its tags, its commands, its Base units), checks
what the parser cannot: a Block that can never end, a tag that does not exist, a value in a unit
the tag cannot be compared with, a macro called before it is defined... Each finding is a
:class:`~pectus.pcode.diagnostics.Diagnostic` with a stable id (the Open Pectus id where there is
one), a severity and the line, in words a scientist understands.

Invariants of :func:`analyze`:

* it never raises, whatever the text and whatever a UOD argument parser does: a problem is a
  diagnostic, never an exception;
* every diagnostic points at an existing line (``1 <= line <= end_line <= number of lines``);
* the result holds the parser's syntax errors and all analyzer findings, sorted by line; on the
  same line the syntax errors come first;
* the analyzer only advises: a method with warnings (or analyzer errors) may still be run; only
  syntax errors make the engine refuse a method;
* what the caller does not know is not checked: ``tags=None`` skips the tag checks,
  ``commands=None`` skips the command names and arguments;
* each family of checks walks the tree once (a Block's end is searched in its own body), so a
  1,000-line method takes a few milliseconds.

Families and ids (severity):

* structure - ``UnreachableCode`` (warning), ``InfiniteBlock`` (warning), ``EmptyBody`` (warning);
* thresholds - ``ThresholdOutOfOrder`` (warning on the later line, info on the line that limits
  it), ``ThresholdBaseInvalid`` (error);
* conditions of Watch, Alarm, Simulate and Simulate off - ``UndefinedTag``, ``UnexpectedUnit``,
  ``MissingUnit``, ``InvalidUnit``, ``IncompatibleUnits``, ``NonNumericComparison`` (errors; the
  first failing check of a line only). A bare number for a tag with a unit is ``MissingUnit`` in
  a Simulate too, as a warning: the run takes it in the tag's unit, where a Watch stops on it.
  (A malformed condition is a syntax error of the parser, with an id that says what is missing:
  ``ConditionMissing``, ``MissingTag``, ``MissingOperator``, ``MissingValue``; see
  :class:`~pectus.pcode.syntax.ConditionProblem`);
* instructions and commands - ``UndefinedCommand``, ``CommandArgsInvalid``, ``MissingArgument``,
  ``InvalidArgument``, ``ArgumentNotExpected`` (errors; also for a unit command that takes no
  argument, when the caller gives its :class:`CommandSpec`), ``BatchNameTagMissing`` (info);
* macros - ``MacroNameInvalid``, ``MacroCallNameInvalid``, ``MacroCalledNotDefined``,
  ``MacroRecursive`` (errors), ``MacroCalledBeforeDefinition`` (warning), ``MacroRedefined``,
  ``MacroUnused`` (info; also a definition that no call can run, because it is defined again
  on the main line before any call reaches it).
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterable, Iterator, Literal, Mapping, Protocol, runtime_checkable

from pectus.pcode import units
from pectus.pcode.diagnostics import Diagnostic, Severity, closest
from pectus.pcode.syntax import BUILTINS, CONDITIONAL, NUMBER, Condition, Kind, Method, Node, parse
from pectus.pcode.timing import parse_duration

__all__ = ["CommandSpec", "analyze"]

ArgumentParser = Callable[[str], object | None]


@runtime_checkable
class CommandSpec(Protocol):
    """A unit command as the analyzer reads it; ``pectus.uod``'s command definitions are ones.

    ``parse`` returns None for an argument text the command does not accept;
    ``argument_names`` is the empty set for a command that takes no argument (None when its
    own parser decides).
    """

    @property
    def argument_names(self) -> set[str] | None: ...

    def parse(self, argument: str) -> object | None: ...


@runtime_checkable
class ExplainsRefusal(Protocol):
    """A command that can say why an argument is refused and what it accepts (a UOD's can):
    "PU01: 150 % is not a valid value: expected 0 to 100 %"."""

    def refusal(self, argument: str) -> str: ...


# (id, message, fixes), and the unit the fixes replace when the finding is about the value's unit
Problem = tuple[str, str, tuple[str, ...]] | tuple[str, str, tuple[str, ...], str]

#: The Base of thresholds before any ``Base:`` line (as in Open Pectus).
DEFAULT_BASE = "min"
BATCH_NAME_TAG = "Batch Name"

_BODY_KINDS = frozenset({Kind.BLOCK, Kind.WATCH, Kind.ALARM, Kind.MACRO})
_ENDS_ALL_BLOCKS = frozenset({Kind.END_BLOCKS, Kind.STOP, Kind.RESTART})
_ENDS_BLOCK = frozenset({Kind.END_BLOCK, Kind.END_BLOCKS})
_ORDERING = frozenset({"<", ">", "<=", ">="})
_NO_ARGUMENT = frozenset({
    Kind.INCREMENT_RUN_COUNTER, Kind.END_BLOCK, Kind.END_BLOCKS, Kind.STOP, Kind.RESTART,
    Kind.UNPAUSE, Kind.UNHOLD,
})
_COUNT_RE = re.compile(r"^\s*\d+\s*$")
_NUMBER_THEN_TEXT_RE = re.compile(rf"^{NUMBER}\s*(?P<unit>\S.*)$")  # '5 deg C': a unit mistyped


def analyze(method: Method | str, *, tags: Mapping[str, str | None] | None = None,
            commands: Mapping[str, ArgumentParser | CommandSpec] | None = None,
            base_units: Iterable[str] = ("s", "min", "h")) -> list[Diagnostic]:
    """All diagnostics of ``method``: its syntax errors and the analyzer's findings, by line.

    ``tags`` maps every tag name of the unit (system and UOD tags) to its unit, or None for a
    tag without unit. ``commands`` maps every UOD command name to its :class:`CommandSpec` (a
    UOD's ``commands`` as they are), or to just its argument parser, which returns None when an
    argument text is invalid for the command (then a command that takes no argument is not
    known as one: its argument is only "not valid"). ``base_units`` are the
    units ``Base:`` and thresholds accept on this unit (time always; volumes or column volumes
    when the UOD has the accumulators). None for ``tags`` or ``commands`` means "not known":
    those checks are skipped rather than guessed.
    """
    if isinstance(method, str):
        method = parse(method)
    program = method.program
    macros = _macro_definitions(program)
    findings = [
        *_check_structure(program, macros),
        *_check_thresholds(program, tuple(base_units)),
        *_check_conditions(program, tags),
        *_check_instructions(program, commands, tuple(base_units), tags),
        *_check_macros(program, macros),
    ]
    # A stable sort keeps each line's syntax errors ahead of its findings.
    return sorted([*method.errors, *findings], key=lambda d: d.line)


# --- helpers shared by the families ----------------------------------------------------------


Where = Literal["argument", "name", "last"]


def _at(node: Node, id: str, severity: Severity, message: str, *, fragment: str = "", where: Where = "argument",
        end_line: int = 0, fixes: tuple[str, ...] = ()) -> Diagnostic:
    """A diagnostic on ``node``'s line, pointing at ``fragment`` (found as ``where`` says): the text
    its ``fixes`` replace."""
    # Every message is written as full sentences, so the editor can append "Did you mean ...?".
    message = message if message.endswith((".", "?")) else message + "."
    column = _column(node, fragment, where)
    return Diagnostic(id, severity, node.line, message, column=column, end_line=end_line, fixes=fixes,
                      end_column=column + len(fragment) if column else 0)


def _column(node: Node, fragment: str, where: Where = "argument") -> int:
    """1-based column of ``fragment`` on the line, 0 (whole line) if absent: its first occurrence in
    the argument part of the line, in the instruction's name (``name``), or its last one before a
    comment (``last``: the unit at the end of a condition, which may also be part of the tag)."""
    text = node.text
    if not fragment:
        return 0
    if where == "name":
        return text.find(fragment) + 1
    if where == "last":
        comment = text.find("#")
        return text.rfind(fragment, 0, comment if comment >= 0 else len(text)) + 1
    return text.find(fragment, max(text.find(":"), 0)) + 1


def _last_line(node: Node) -> int:
    while node.children:
        node = node.children[-1]
    return node.line


def _is_inside(node: Node, ancestor: Node) -> bool:
    parent = node.parent
    while parent is not None:
        if parent is ancestor:
            return True
        parent = parent.parent
    return False


def _instructions(program: Node) -> Iterator[Node]:
    """Every instruction node in line order, the program root excluded.

    A loop, not ``Node.walk``: a method may nest deeper than Python's recursion limit.
    """
    stack = list(reversed(program.children or ()))
    while stack:
        node = stack.pop()
        yield node
        if node.children:
            stack.extend(reversed(node.children))


def _macro_definitions(program: Node) -> dict[str, list[Node]]:
    definitions: dict[str, list[Node]] = {}
    for node in _instructions(program):
        if node.kind is Kind.MACRO:
            definitions.setdefault(node.arguments, []).append(node)
    return definitions


def _quote(text: str) -> str:
    return f"'{text}'"


# --- structure: unreachable lines, blocks that never end, empty bodies ------------------------


def _check_structure(program: Node, macros: Mapping[str, list[Node]]) -> Iterator[Diagnostic]:
    # Watches and Alarms that can end the block running when they fire, wherever they are.
    enders = [n for n in _instructions(program) if n.kind in CONDITIONAL and _can_end_block(n, macros)]
    for node in _instructions(program):
        if node.kind in _BODY_KINDS and not node.children:
            yield _at(node, "EmptyBody", Severity.WARNING,
                      f"{_quote(node.display_name)} has no body: indent the lines that belong to it "
                      f"by 4 spaces more than the {node.name} line")
        elif node.kind is Kind.BLOCK:
            yield from _unreachable_after_end_block(node)
            if not _can_end_block(node, macros) and all(_is_inside(w, node) for w in enders):
                yield _at(node, "InfiniteBlock", Severity.WARNING,
                          f"Block {_quote(node.arguments)} never ends: nothing runs 'End block' for it, "
                          "so the method cannot continue after it. Add 'End block' at the end of its "
                          "body, or in a Watch such as 'Watch: Block Time > 10 min'")
    yield from _unreachable_after_stop(program)


def _can_end_block(container: Node, macros: Mapping[str, list[Node]]) -> bool:
    """Whether running ``container``'s body can end the block it runs in.

    ``End block`` inside a nested Block ends only that block; ``End blocks``, ``Stop`` and
    ``Restart`` end every block. A macro body runs in place of its call, so calls are followed;
    a macro definition itself runs nothing.
    """
    seen: set[tuple[str, bool]] = set()
    stack = [(container, False)]  # (a body to search, whether it is inside a nested Block)
    while stack:
        body, nested = stack.pop()
        for child in body.children or ():
            if child.kind in _ENDS_ALL_BLOCKS or (child.kind is Kind.END_BLOCK and not nested):
                return True
            if child.kind is Kind.CALL_MACRO:
                if (child.arguments, nested) not in seen:
                    seen.add((child.arguments, nested))
                    stack.extend((macro, nested) for macro in macros.get(child.arguments, ()))
            elif child.children and child.kind is not Kind.MACRO:
                stack.append((child, nested or child.kind is Kind.BLOCK))
    return False


def _unreachable_after_end_block(block: Node) -> Iterator[Diagnostic]:
    children = block.children or []
    for index, node in enumerate(children):
        if node.kind in _ENDS_BLOCK:
            for later in children[index + 1:]:
                yield _at(later, "UnreachableCode", Severity.WARNING,
                          f"This line never runs: {_quote(node.name)} on line {node.line} ends "
                          f"block {_quote(block.arguments)} before it", end_line=_last_line(later))
            return


def _unreachable_after_stop(program: Node) -> Iterator[Diagnostic]:
    # Only a Stop on the main line ends the run for sure; in a Watch, Alarm or Block it may
    # never be reached.
    children = program.children or []
    for index, node in enumerate(children):
        if node.kind in (Kind.STOP, Kind.RESTART) and index + 1 < len(children):
            first = children[index + 1]
            effect = "ends the run" if node.kind is Kind.STOP else "restarts the method from its first line"
            yield _at(first, "UnreachableCode", Severity.WARNING,
                      f"The lines from here on never run: {_quote(node.name)} on line {node.line} {effect}",
                      end_line=_last_line(program))
            return


# --- thresholds --------------------------------------------------------------------------------


def _check_thresholds(program: Node, base_units: tuple[str, ...]) -> Iterator[Diagnostic]:
    base, base_origin = DEFAULT_BASE, "the default Base"
    # Per parent: the highest threshold (and its line) since the start or the last Base line.
    highest: dict[int, tuple[float, Node]] = {}
    limiting_reported: set[int] = set()
    for node in _instructions(program):
        threshold = node.threshold
        if threshold is not None:
            if base not in base_units:
                yield _at(node, "ThresholdBaseInvalid", Severity.ERROR,
                          f"Threshold {threshold:g} is in {_quote(base)} ({base_origin}), but this unit "
                          f"measures thresholds only in {', '.join(base_units)}")
            limit = highest.get(id(node.parent))
            if limit is not None and threshold < limit[0]:
                limit_threshold, limit_node = limit
                yield _at(node, "ThresholdOutOfOrder", Severity.WARNING,
                          f"Threshold {threshold:g} is lower than {limit_threshold:g} on line "
                          f"{limit_node.line}: a threshold counts from the start of its block, Watch or "
                          "method, it is not a delay, so this line runs as soon as line "
                          f"{limit_node.line} has")
                if limit_node.line not in limiting_reported:
                    limiting_reported.add(limit_node.line)
                    yield _at(limit_node, "ThresholdOutOfOrder", Severity.INFO,
                              f"Threshold {limit_threshold:g} is higher than threshold {threshold:g} on "
                              f"line {node.line} below it, so line {node.line} runs right after this line")
            else:
                highest[id(node.parent)] = (threshold, node)
        if node.kind is Kind.BASE:
            highest.pop(id(node.parent), None)
            if node.arguments:
                base, base_origin = node.arguments, f"set by 'Base' on line {node.line}"


# --- conditions of Watch, Alarm and Simulate ----------------------------------------------------


def _check_conditions(program: Node, tags: Mapping[str, str | None] | None) -> Iterator[Diagnostic]:
    for node in _instructions(program):
        if node.kind in CONDITIONAL or node.kind is Kind.SIMULATE:
            if node.condition is None:  # the parser reported InvalidCondition
                continue
            tag = node.condition.tag
            found = _condition_problem(node.condition, tags, is_assignment=node.kind is Kind.SIMULATE)
        elif node.kind is Kind.SIMULATE_OFF and node.arguments:
            tag = node.arguments
            found = _tag_problem(tag, tags)
        else:
            continue
        if found:
            id, message, fixes, *unit = found
            # The run takes a bare number in a Simulate in the tag's unit (as Open Pectus, whose
            # Simulate took no unit at all): a warning, where a Watch stops the run on it.
            severity = Severity.WARNING if id == "MissingUnit" and node.kind is Kind.SIMULATE else Severity.ERROR
            if unit:  # the finding (and its fixes) are about the value's unit
                yield _at(node, id, severity, message, fragment=unit[0], where="last", fixes=fixes)
            else:
                yield _at(node, id, severity, message, fragment=tag, fixes=fixes)


def _tag_problem(tag: str, tags: Mapping[str, str | None] | None) -> Problem | None:
    if tags is None or tag in tags:
        return None
    return "UndefinedTag", f"This unit has no tag named {_quote(tag)}", closest(tag, tuple(tags))


def _condition_problem(condition: Condition, tags: Mapping[str, str | None] | None, *,
                       is_assignment: bool) -> Problem | None:
    """The first failing check of a condition, or None.

    A Simulate assignment may give a bare number: the run takes it in the tag's own unit, and
    the finding says so.
    """
    tag, unit = condition.tag, condition.unit
    undefined = _tag_problem(tag, tags)
    if undefined:
        return undefined
    tag_unit = tags.get(tag) if tags is not None else None
    if tags is not None and unit and not tag_unit:
        return ("UnexpectedUnit", f"Tag {_quote(tag)} has no unit, so the value cannot have one: "
                f"remove {_quote(unit)}", ())
    if tag_unit and not unit and condition.is_numeric:
        example = f"e.g. '{condition.value:g} {tag_unit}'"
        if is_assignment:
            return ("MissingUnit", f"Tag {_quote(tag)} is measured in {tag_unit}: the number is taken "
                    f"in {tag_unit}; write the unit to say so, {example}", ())
        return ("MissingUnit", f"Tag {_quote(tag)} is measured in {tag_unit}: write the value with "
                f"its unit, {example}", ())
    number_then_text = None if condition.is_numeric else _NUMBER_THEN_TEXT_RE.match(str(condition.value))
    if number_then_text and not is_assignment and (condition.op in _ORDERING or tag_unit):
        unit = number_then_text.group("unit")  # a number with a unit the parser could not read
    if unit and not units.is_supported(unit):
        # Our own message: the units module's explanation would load pint (a quarter second).
        candidates = units.compatible_units(tag_unit) or [
            known for same_quantity in units.SUPPORTED_UNITS.values() for known in same_quantity]
        return ("InvalidUnit", f"{_quote(unit)} is not a known unit.{_accepted(tag, tag_unit)}",
                closest(unit, candidates), unit)
    if unit and tag_unit:
        try:
            units.check_comparable(tag_unit, unit)
        except units.UnitError as error:
            return "IncompatibleUnits", f"{error}{_accepted(tag, tag_unit)}", ()
    if not condition.is_numeric and not is_assignment and (condition.op in _ORDERING or tag_unit):
        why = (f"tag {_quote(tag)} is measured in {tag_unit}, e.g. '{tag} {condition.op} 5 {tag_unit}'"
               if tag_unit else f"{_quote(condition.op)} compares numbers")
        return "NonNumericComparison", f"{_quote(str(condition.value))} is not a number: {why}", ()
    return None


def _accepted(tag: str, tag_unit: str | None) -> str:
    """The units a tag can be compared with, as the last sentence of a message."""
    if not tag_unit:
        return ""
    return f" Tag {_quote(tag)} accepts: {', '.join(units.compatible_units(tag_unit)) or tag_unit}."


# --- instructions and unit commands -------------------------------------------------------------


def _check_instructions(program: Node, commands: Mapping[str, ArgumentParser] | None,
                        base_units: tuple[str, ...],
                        tags: Mapping[str, str | None] | None) -> Iterator[Diagnostic]:
    for node in _instructions(program):
        kind, argument = node.kind, node.arguments
        if kind is Kind.COMMAND:
            if commands is not None:
                found = _command_problem(node, commands)
                if found:
                    yield found
        elif kind is Kind.BASE:
            if not argument:
                yield _at(node, "MissingArgument", Severity.ERROR,
                          f"Base needs a unit, one of: {', '.join(base_units)}")
            elif argument not in base_units:
                yield _at(node, "InvalidArgument", Severity.ERROR,
                          f"This unit has no {_quote(argument)} timeline for thresholds; Base can be one "
                          f"of: {', '.join(base_units)}", fragment=argument,
                          fixes=closest(argument, base_units))
        elif kind is Kind.WAIT:
            if not argument:
                yield _at(node, "MissingArgument", Severity.ERROR, "Wait needs a duration, e.g. 'Wait: 5 s'")
            elif parse_duration(argument) is None:
                yield _invalid_duration(node)
        elif kind in (Kind.PAUSE, Kind.HOLD):
            if argument and parse_duration(argument) is None:
                yield _invalid_duration(node)
        elif kind is Kind.RUN_COUNTER:
            if not argument:
                yield _at(node, "MissingArgument", Severity.ERROR,
                          "Run counter needs the new count, e.g. 'Run counter: 0'")
            elif not _COUNT_RE.match(argument):
                yield _at(node, "InvalidArgument", Severity.ERROR,
                          f"{_quote(argument)} is not a count: write a whole number, 0 or more",
                          fragment=argument)
        elif kind in _NO_ARGUMENT:
            if argument:
                yield _argument_not_expected(node)
        elif kind is Kind.SIMULATE_OFF:
            if not argument:
                yield _at(node, "MissingArgument", Severity.ERROR,
                          "Simulate off needs the tag name, e.g. 'Simulate off: TT01'")
        elif kind is Kind.BATCH and tags is not None and BATCH_NAME_TAG not in tags:
            yield _at(node, "BatchNameTagMissing", Severity.INFO,
                      f"This unit has no {_quote(BATCH_NAME_TAG)} tag, so the batch name is not recorded")


def _argument_not_expected(node: Node) -> Diagnostic:
    return _at(node, "ArgumentNotExpected", Severity.ERROR,
               f"{node.name} takes no argument: remove ': {node.arguments}'", fragment=node.arguments)


def _invalid_duration(node: Node) -> Diagnostic:
    return _at(node, "InvalidArgument", Severity.ERROR,
               f"{_quote(node.arguments)} is not a duration: write a number and a unit s, min or h, "
               f"e.g. '{node.name}: 5 s'", fragment=node.arguments)


def _command_problem(node: Node, commands: Mapping[str, ArgumentParser | CommandSpec]) -> Diagnostic | None:
    name, argument = node.name, node.arguments
    parser = spec = commands.get(name)
    if parser is None:
        return _undefined_command(node, commands)
    if isinstance(parser, CommandSpec):
        if argument and parser.argument_names == set():
            return _argument_not_expected(node)
        parser = parser.parse
    try:
        valid = parser(argument) is not None
    except Exception:  # a UOD parser is the unit author's code; raising means "not valid"
        valid = False
    if valid:
        return None
    if isinstance(spec, ExplainsRefusal):  # names the command and says what is valid
        message = spec.refusal(argument)
    else:
        shown = f"{_quote(argument)} is not valid" if argument else "an argument is needed"
        message = f"Invalid arguments for command {_quote(name)}: {shown}"
    return _at(node, "CommandArgsInvalid", Severity.ERROR, message, fragment=argument)


def _undefined_command(node: Node, commands: Mapping[str, ArgumentParser | CommandSpec]) -> Diagnostic:
    name = node.name
    if name == "Start":
        return _at(node, "UndefinedCommand", Severity.ERROR,
                   "'Start' is not a method instruction: it is a run control (the Start button). "
                   "The method runs from its first line when the run starts")
    known = [*BUILTINS, *commands]
    # 'Watch x > 2' or 'Mark A': a known name followed by its arguments without ': '.
    for candidate in sorted(known, key=len, reverse=True):
        if name.startswith(candidate + " "):
            fix = f"{candidate}: {name[len(candidate):].strip()}"
            return _at(node, "UndefinedCommand", Severity.ERROR,
                       f"Invalid instruction {_quote(name)}: separate {_quote(candidate)} from its "
                       "arguments with ': '", fragment=name, where="name", fixes=(fix,))
    fixes = closest(name, known)
    case_hint = " (names are case-sensitive)" if fixes and fixes[0].lower() == name.lower() else ""
    return _at(node, "UndefinedCommand", Severity.ERROR,
               f"Invalid instruction {_quote(name)}: neither a P-code instruction nor a command of "
               f"this unit{case_hint}", fragment=name, where="name", fixes=fixes)


# --- macros ------------------------------------------------------------------------------------


def _check_macros(program: Node, definitions: Mapping[str, list[Node]]) -> Iterator[Diagnostic]:
    calls: list[Node] = [n for n in _instructions(program) if n.kind is Kind.CALL_MACRO]
    called = {c.arguments for c in calls}
    for call in calls:
        name = call.arguments
        if not name:
            yield _at(call, "MacroCallNameInvalid", Severity.ERROR,
                      "Call macro needs the name of a macro, e.g. 'Call macro: Prime'")
        elif name not in definitions:
            yield _at(call, "MacroCalledNotDefined", Severity.ERROR,
                      f"No macro named {_quote(name)} is defined in this method", fragment=name,
                      fixes=closest(name, [n for n in definitions if n]))
        elif _on_main_line(call) and call.line < definitions[name][0].line:
            yield _at(call, "MacroCalledBeforeDefinition", Severity.WARNING,
                      f"Macro {_quote(name)} is called before its definition on line "
                      f"{definitions[name][0].line} has run: a macro exists only once its Macro line "
                      "has run, so move the definition above this line", fragment=name)
    graph = {name: [c.arguments for d in nodes for c in _calls_in(d)] for name, nodes in definitions.items()}
    for name, nodes in definitions.items():
        if not name:
            for node in nodes:
                yield _at(node, "MacroNameInvalid", Severity.ERROR,
                          "A macro needs a name, e.g. 'Macro: Prime'")
            continue
        cycle = _cycle_from(name, graph)
        its_calls = [c for c in calls if c.arguments == name]
        for index, node in enumerate(nodes):
            if cycle:
                yield _at(node, "MacroRecursive", Severity.ERROR,
                          f"Macro {_quote(name)} calls itself ({' -> '.join(cycle)}): a macro may not "
                          "call itself, directly or through other macros")
            if index:
                yield _at(node, "MacroRedefined", Severity.INFO,
                          f"Macro {_quote(name)} is defined again (first on line {nodes[0].line}); "
                          "calls after this line run this definition")
            if name not in called:
                yield _at(node, "MacroUnused", Severity.INFO, f"Macro {_quote(name)} is never called")
            elif len(nodes) > 1:  # (a single definition called too early is MacroCalledBeforeDefinition)
                replaced_by = nodes[index + 1] if index + 1 < len(nodes) else None
                if not _runs_for_a_call(node, replaced_by, its_calls):
                    why = (f"it is defined again on line {replaced_by.line} before any call runs it"
                           if replaced_by is not None and _on_main_line(replaced_by)
                           else "every call of it comes before it")
                    yield _at(node, "MacroUnused", Severity.INFO,
                              f"This definition of macro {_quote(name)} is never called: {why}")


def _runs_for_a_call(definition: Node, replaced_by: Node | None, calls: list[Node]) -> bool:
    """Whether a call can run ``definition``: a call runs the definition whose Macro line ran last.

    On the main line, lines run in line order, so a definition there serves the main-line calls
    between it and the next main-line definition of the name. A definition or a call elsewhere (a
    Watch or Alarm body, a macro body) runs at a time the analyzer cannot know: it may be served.
    """
    if not _on_main_line(definition):
        return bool(calls)
    end = replaced_by.line if replaced_by is not None and _on_main_line(replaced_by) else math.inf
    return any(not _on_main_line(call) or definition.line < call.line < end for call in calls)


def _on_main_line(node: Node) -> bool:
    """Whether ``node`` runs in line order from the start, not later from a Watch, Alarm or call."""
    parent = node.parent
    while parent is not None:
        if parent.kind not in (Kind.PROGRAM, Kind.BLOCK):
            return False
        parent = parent.parent
    return True


def _calls_in(macro: Node) -> Iterator[Node]:
    """The calls a macro's body makes while it runs: in place and in nested Blocks, not in
    Watch/Alarm bodies (they run later, not as a nested call) nor nested macro definitions."""
    stack = [macro]
    while stack:
        for child in stack.pop().children or ():
            if child.kind is Kind.CALL_MACRO:
                yield child
            elif child.kind is Kind.BLOCK:
                stack.append(child)


def _cycle_from(name: str, graph: Mapping[str, list[str]]) -> list[str]:
    """The call path ``name -> ... -> name`` when ``name`` can reach itself, else []."""
    came_from: dict[str, str] = {}
    stack = [name]
    while stack:
        current = stack.pop()
        for callee in graph.get(current, ()):
            if callee == name:
                path = [current]
                while path[-1] != name:
                    path.append(came_from[path[-1]])
                return [*reversed(path), name]
            if callee not in came_from and callee in graph:
                came_from[callee] = current
                stack.append(callee)
    return []
