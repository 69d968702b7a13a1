"""UOD commands: their definition (name, functions, argument parser) and one running instance.

A UOD defines a command with an *exec function* ``exec_fn(cmd, **arguments)``. The engine calls
it once per tick until it calls ``cmd.set_complete()``; a command that finishes at once calls it
in its first call. ``cmd`` is a :class:`UodCommand`:

* ``cmd.context`` is the unit's definition (``cmd.context.tags["PU01"]``, ``cmd.context.hwl``);
* ``cmd.get_iteration_count()`` is 0 on the first call and counts the calls made before this one;
* ``cmd.set_progress(p)`` reports 0..1 (or ``True``, "busy", shown as 0.5) for the run log;
* ``cmd.cmd_state`` is a scratch dict for this instance;
* ``cmd.tick_time`` is the engine's time of the current tick, the time to give ``Tag.set_value``.

Lifecycle of one instance, driven by the engine (spec 11.2): ``initialize()`` runs ``init_fn``
once, before the first ``execute``; ``execute(args)`` once per tick while not complete and not
cancelled; ``cancel()`` when replaced by a newer request or cancelled by the user;
``finalize()`` runs ``finalize_fn`` exactly once, after completion or cancellation.

Argument parsing (the ``parser`` of a :class:`CommandDefinition`) turns the text after
``Name:`` into the keyword arguments of ``exec_fn``:

============  ==========================================================
parser        ``exec_fn`` receives
============  ==========================================================
``"default"`` ``value=<the argument text>``
``None``      nothing; the argument must be empty
a regex       every named group (groups that did not match as ``None``)
a callable    the dict it returns
============  ==========================================================

Every parser answers ``None`` for arguments it does not accept. A number argument (a
``RegexNumber`` pattern) may also have a declared range (:class:`ValueRange`: the command's own,
or the ``minimum``/``maximum`` of the tag it sets), and ``parse`` answers ``None`` for a number
outside it too. :meth:`CommandDefinition.refusal` says why and what is valid, e.g.
"PU01: 150 % is not a valid value: expected 0 to 100 %", when the pattern is one of the
``pectus.uod.regex`` helpers; :meth:`CommandDefinition.entry_rules` gives the page the same rules
to check an entry before it is sent.
"""

from __future__ import annotations

import inspect
import itertools
import re
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Literal

from pectus.pcode.tags import check_range
from pectus.pcode.units import convert, quantity_of
from pectus.uod.regex import NumberShape, PatternInfo, describe_accepted, describe_pattern, either, number_shape

ExecFn = Callable[..., None]
LifecycleFn = Callable[["UodCommand"], None]
#: ``"default"``, ``None`` (no arguments), a compiled regex, or ``(str) -> dict | None``.
Parser = Literal["default"] | None | re.Pattern[str] | Callable[[str], dict[str, Any] | None]

ArgumentType = Literal["none", "text", "float", "choice"]

# A number then a word: the word is the unit the argument was written in ('500 L').
_WRITTEN_UNIT_RE = re.compile(r"^\s*-?[0-9.]+\s*(?P<unit>\S+)\s*$")
# A bound converted into another unit may miss by a rounding error: 1000 mL is 1 L.
_RANGE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class ValueRange:
    """The values a command's number may take: ``minimum`` to ``maximum`` (either may be None)
    in ``unit`` (None for a number without unit)."""

    minimum: float | None
    maximum: float | None
    unit: str | None = None

    def __post_init__(self) -> None:
        check_range("A value range", self.minimum, self.maximum)

    def bounds_in(self, unit: str | None) -> tuple[float | None, float | None]:
        """The bounds converted into ``unit`` (a number without unit: as they are)."""
        if not unit or not self.unit or unit == self.unit:
            return self.minimum, self.maximum
        return tuple(None if b is None else convert(b, self.unit, unit)  # type: ignore[return-value]
                     for b in (self.minimum, self.maximum))

    def contains(self, number: float, unit: str | None) -> bool:
        low, high = self.bounds_in(unit)
        slack = _RANGE_TOLERANCE * max(1.0, abs(number))
        return (low is None or number >= low - slack) and (high is None or number <= high + slack)


class UodCommand:
    """One running instance of a UOD command: what ``exec_fn`` receives as ``cmd``."""

    def __init__(self, definition: CommandDefinition, context: Any, instance_id: str,
                 clock: Callable[[], float] = time.time):
        self.definition = definition
        self.context = context
        self.name = definition.name
        self.instance_id = instance_id
        self.cmd_state: dict[str, Any] = {}
        self._clock = clock
        self._iterations = 0
        self._progress: float | Literal[True] | None = None
        self._initialized = False
        self._complete = False
        self._cancelled = False
        self._finalized = False

    # --- what exec_fn uses

    @property
    def tick_time(self) -> float:
        return self._clock()

    def get_iteration_count(self) -> int:
        return self._iterations

    def set_progress(self, progress: float | Literal[True]) -> None:
        """Report progress 0..1 (clamped), or ``True`` for "busy, amount unknown"."""
        if progress is True:
            self._progress = True
        elif isinstance(progress, (int, float)) and not isinstance(progress, bool):
            self._progress = min(max(float(progress), 0.0), 1.0)
        else:
            raise ValueError(f"Command '{self.name}': progress must be a number 0..1 or True, not {progress!r}")

    @property
    def progress(self) -> float | None:
        """Reported progress 0..1, 0.5 for ``True``, None when never reported."""
        return 0.5 if self._progress is True else self._progress

    def set_complete(self) -> None:
        self._complete = True

    def is_complete(self) -> bool:
        return self._complete

    def is_cancelled(self) -> bool:
        return self._cancelled

    # --- the engine's side

    @property
    def is_finalized(self) -> bool:
        return self._finalized

    def initialize(self) -> None:
        """Run ``init_fn`` unless it already ran."""
        if not self._initialized:
            self._initialized = True
            if self.definition.init_fn is not None:
                self.definition.init_fn(self)

    def execute(self, args: dict[str, Any]) -> None:
        """Call ``exec_fn(cmd, **args)`` (initialising first if needed), then count the call."""
        self.initialize()
        self.definition.exec_fn(self, **args)
        self._iterations += 1

    def cancel(self) -> None:
        self._cancelled = True

    def finalize(self) -> None:
        """Run ``finalize_fn`` unless it already ran; after this the instance is done."""
        if not self._finalized:
            self._finalized = True
            if self.definition.finalize_fn is not None:
                self.definition.finalize_fn(self)

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "complete" if self._complete else "running"
        return f"<UodCommand {self.name} {self.instance_id} {state} iteration={self._iterations}>"


@dataclass(eq=False)
class CommandDefinition:
    """A command as the UOD defined it; :meth:`create` makes a running instance."""

    name: str
    exec_fn: ExecFn
    init_fn: LifecycleFn | None = None
    finalize_fn: LifecycleFn | None = None
    parser: Parser = "default"
    #: The range of a number argument: the command's own, or the range of the tag it sets
    #: (given to it by ``UodBuilder.build``). Only checked for a ``RegexNumber`` pattern.
    value_range: ValueRange | None = None

    def parse(self, argument: str) -> dict[str, Any] | None:
        """The keyword arguments for ``exec_fn``, or None when ``argument`` is not accepted
        (also a number outside :attr:`value_range`)."""
        parser = self.parser
        if parser == "default":
            return {"value": argument}
        if parser is None:
            return {} if not argument.strip() else None
        if isinstance(parser, re.Pattern):
            match = parser.search(argument)
            if match is None:
                return None
            groups = match.groupdict()
            return groups if self._in_range(groups) else None
        return parser(argument)

    def _in_range(self, groups: dict[str, Any]) -> bool:
        number = groups.get("number")
        if self.value_range is None or number is None or self._number is None:
            return True
        return self.value_range.contains(float(number), groups.get("number_unit") or None)

    def refusal(self, argument: str) -> str:
        """Why ``argument`` is refused and what is valid, naming the command: what the engine
        answers a refused entry or injection, and the analyzer's message. Call it only for an
        argument :meth:`parse` refused.

        "PU01: 150 % is not a valid value: expected 0 to 100 %";
        "PU01: 500 L is not a valid value: expected 0 to 100 %; L is a volume, not a percentage";
        "VA01: Foo is not a valid value: expected one of Open or Closed".
        """
        return f"{self.name}: {self.problem(argument)}"

    def problem(self, argument: str) -> str:
        """:meth:`refusal` without the command's name (the run says it in its own words)."""
        written = argument.strip()
        refused = f"{written} is not a valid value" if written else "a value is needed"
        expected = self.expected()
        if expected is None:
            return refused
        return f"{refused}: expected {expected}{self._unit_mismatch(argument)}"

    def expected(self) -> str | None:
        """What a valid argument is, in words ("0 to 100 %", "one of Open or Closed", "no
        argument"); None when the parser does not tell (a custom parser or a hand-written pattern)."""
        if self.parser is None:
            return "no argument"
        if self.pattern is None:
            return None
        shape, value_range = self._number, self.value_range
        if shape is None or value_range is None:
            return describe_accepted(self.pattern)
        unit = value_range.unit if value_range.unit in shape.units else (shape.units or ("",))[0]
        low, high = self._bounds(shape, unit)
        shown = f" {unit}" if unit else ""
        if low is not None and high is not None:
            text = f"{_number(low)} to {_number(high)}{shown}"
        elif low is not None:
            text = f"{_number(low)}{shown} or more"
        else:
            text = f"{_number(high)}{shown} or less"
        if shape.int_only:
            text = "a whole number, " + text
        others = [other for other in shape.units if other != unit]
        if others:
            text += f" (or the same in {either(others)})"
        return text + (", or nothing" if shape.optional else "")

    def _bounds(self, shape: NumberShape, unit: str) -> tuple[float | None, float | None]:
        """The range in ``unit`` ("" for none), narrowed to 0 or more for a non-negative pattern."""
        low, high = self.value_range.bounds_in(unit or None) if self.value_range else (None, None)
        if shape.non_negative and (low is None or low < 0):
            low = 0.0
        return low, high

    def _unit_mismatch(self, argument: str) -> str:
        """"; L is a volume, not a percentage" when the argument's unit is not one the command takes."""
        written = _WRITTEN_UNIT_RE.match(argument)
        unit = written["unit"] if written and self.units and written["unit"] not in self.units else None
        quantity = quantity_of(unit)
        if quantity is None:
            return ""
        wanted = {quantity_of(u) for u in self.units} - {None}
        instead = f", not {_a(next(iter(wanted)))}" if len(wanted) == 1 and quantity not in wanted else ""
        return f"; {unit} is {_a(quantity)}{instead}"

    def argument_rules(self) -> dict[str, Any] | None:
        """The rules of a number or choice argument, for the page to check an entry before it is
        sent; None when only the parser knows (the engine still checks). A number lists each unit
        it may be written in ("" for none) with the range in that unit::

            {"type": "number", "int_only": False, "optional": False, "expected": "0 to 100 %",
             "units": [{"unit": "%", "minimum": 0.0, "maximum": 100.0}]}
            {"type": "choice", "options": ["Open", "Closed"], "expected": "one of Open or Closed"}
        """
        shape = self._number
        if shape is not None:
            units = []
            for unit in shape.units or ("",):
                low, high = self._bounds(shape, unit)
                units.append({"unit": unit, "minimum": low, "maximum": high})
            return {"type": "number", "int_only": shape.int_only, "optional": shape.optional,
                    "units": units, "expected": self.expected() or ""}
        if self.argument_type == "choice" and self.expected() is not None:
            return {"type": "choice", "options": self.options, "expected": self.expected()}
        return None

    def create(self, context: Any, instance_id: str, clock: Callable[[], float] = time.time) -> UodCommand:
        """A new instance. ``clock`` gives ``cmd.tick_time``: the engine passes its tick clock."""
        return UodCommand(self, context, instance_id, clock)

    @property
    def pattern(self) -> str | None:
        """The regex source when the parser is a regex (for the editor), else None."""
        return self.parser.pattern if isinstance(self.parser, re.Pattern) else None

    @property
    def argument_names(self) -> set[str] | None:
        """The keyword arguments ``exec_fn`` is called with; None when a custom parser decides."""
        if self.parser == "default":
            return {"value"}
        if self.parser is None:
            return set()
        if isinstance(self.parser, re.Pattern):
            return set(self.parser.groupindex)
        return None

    @cached_property
    def _info(self) -> PatternInfo:
        return describe_pattern(self.pattern or "")

    @cached_property
    def _number(self) -> NumberShape | None:
        return number_shape(self.pattern) if self.pattern is not None else None

    @property
    def help(self) -> str:
        """The exec function's docstring: the command's help text, with P-code examples."""
        return inspect.getdoc(self.exec_fn) or ""

    @property
    def argument_type(self) -> ArgumentType:
        """What the argument is, for the UI: none, a number (``float``), a ``choice``, or text."""
        if self.parser is None:
            return "none"
        if "number" in self._info.groups:
            return "float"
        if "option" in self._info.groups:
            return "choice"
        return "text"

    @property
    def takes_number(self) -> bool:
        """Whether the argument is a number of the ``RegexNumber`` helpers (then a range applies)."""
        return self._number is not None

    @property
    def units(self) -> list[str]:
        """The units the argument accepts (a regex's ``number_unit`` group); [] when free."""
        return list(self._info.units)

    @property
    def exclusive_options(self) -> list[str]:
        return list(self._info.exclusive_options)

    @property
    def additive_options(self) -> list[str]:
        return list(self._info.additive_options)

    @property
    def options(self) -> list[str]:
        """Every option word the argument may use: exclusive ones, then additive ones."""
        return [*self._info.exclusive_options, *self._info.additive_options]

    def examples(self) -> list[str]:
        """P-code lines that use this command (spec 8.6), for ``--validate`` and the docs.

        First the lines of the docstring that start with the command's name (``#`` lines are
        comments, so they are skipped naturally); then generated lines, kept only when they
        parse: ``Name: 0.5 <unit>`` for each unit (``0.5``, ``10``, ``32.6`` without units),
        every exclusive option and every combination of additive options.
        """
        documented = [line.strip() for line in self.help.splitlines()
                      if line.strip() == self.name or line.strip().startswith(self.name + ":")]
        arguments: list[str] = []
        if self.parser is None:
            arguments.append("")
        if self.argument_type == "float":
            arguments += [f"0.5 {unit}" for unit in self.units] or ["0.5", "10", "32.6"]
        additive = self._info.additive_options
        arguments += [*self._info.exclusive_options,
                      *("+".join(c) for n in range(1, len(additive) + 1) for c in itertools.combinations(additive, n))]
        generated = [f"{self.name}: {a}" if a else self.name for a in arguments if self.parse(a) is not None]
        return list(dict.fromkeys(documented + generated))


def _number(value: float) -> str:
    """A bound as people write it: 100, not 100.0; 0.5."""
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def _a(word: str) -> str:
    """The word with its article: "a volume", "an absorbance"."""
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"
