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

Every parser answers ``None`` for arguments it does not accept; the engine and the analyzer
report that as "Invalid arguments for command '<name>': " and :meth:`CommandDefinition.refusal`,
which says what the command accepts when its pattern is one of the ``pectus.uod.regex`` helpers.
"""

from __future__ import annotations

import inspect
import itertools
import re
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Literal

from pectus.pcode.units import quantity_of
from pectus.uod.regex import PatternInfo, describe_accepted, describe_pattern

ExecFn = Callable[..., None]
LifecycleFn = Callable[["UodCommand"], None]
#: ``"default"``, ``None`` (no arguments), a compiled regex, or ``(str) -> dict | None``.
Parser = Literal["default"] | None | re.Pattern[str] | Callable[[str], dict[str, Any] | None]

ArgumentType = Literal["none", "text", "float", "choice"]

# A number then a word: the word is the unit the argument was written in ('500 L').
_WRITTEN_UNIT_RE = re.compile(r"^\s*-?[0-9.]+\s*(?P<unit>\S+)\s*$")


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

    def parse(self, argument: str) -> dict[str, Any] | None:
        """The keyword arguments for ``exec_fn``, or None when ``argument`` is not accepted."""
        parser = self.parser
        if parser == "default":
            return {"value": argument}
        if parser is None:
            return {} if not argument.strip() else None
        if isinstance(parser, re.Pattern):
            match = parser.search(argument)
            return match.groupdict() if match else None
        return parser(argument)

    def refusal(self, argument: str) -> str:
        """Why ``argument`` is refused, and what would be accepted when the pattern tells.

        "'500 L' is not valid: L is a volume; PU01 takes a number, 0 or more, in % (percentage)".
        Call it only for an argument :meth:`parse` refused.
        """
        refused = f"'{argument.strip()}' is not valid" if argument.strip() else "an argument is needed"
        if self.parser is None:
            return f"{refused}: {self.name} takes no argument"
        accepted = describe_accepted(self.pattern) if self.pattern is not None else None
        if accepted is None:
            return refused
        written = _WRITTEN_UNIT_RE.match(argument)
        unit = written["unit"] if written and self.units and written["unit"] not in self.units else None
        quantity = quantity_of(unit)
        mismatch = f" {unit} is a {quantity};" if quantity is not None else ""
        return f"{refused}:{mismatch} {self.name} takes {accepted}"

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
