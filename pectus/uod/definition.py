"""The Unit Operation Definition (UOD): everything the engine knows about one unit.

A :class:`UnitOperationDefinition` is what a UOD file's ``create()`` returns, built by
:class:`~pectus.uod.builder.UodBuilder`. It holds the unit's identity, its hardware and
registers, its own tags, its commands, the process values the UI shows, the plot layout and
the base units for thresholds.

Invariants:

* a definition returned by ``build()`` (or :func:`~pectus.uod.loader.load_uod`) has passed
  :meth:`UnitOperationDefinition.validate`: every readable register has a tag, every process
  value is a tag, command functions accept what their parsers give...; the engine re-runs it
  with its own system tag names before it starts;
* a problem is an *error* only where a run would fail; what a run survives (a plot name that
  matches no tag, an overlap group naming no command...) is a *warning*, kept in ``warnings``
  and never refused, as Open Pectus was lenient there;
* every problem names the line of the UOD file that made it (``uod.py:42: with_...(...): ...``),
  recorded by the builder when the call was made, and *all* errors are reported at once in one
  :class:`UodError`;
* ``tags`` holds only the UOD's own tags (including the accumulators it asked for), in the order
  they were added; the engine's system tags are in ``system_tags`` once the engine sets it.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal, SupportsIndex, overload

from pectus.diagram import Binding
from pectus.hardware.base import HardwareLayerBase
from pectus.pcode import units
from pectus.pcode.diagnostics import closest
from pectus.pcode.tags import SystemTagName, Tag, TagTable
from pectus.uod.commands import CommandDefinition, ValueRange
from pectus.uod.plot import PlotConfiguration

#: Records of this logger at WARNING and above go to the UI's error log (``get_logger()``).
USER_UOD_LOGGER = "pectus.uod.user"

#: Tags the engine always has (spec 6). The accumulators are not among them: a UOD adds those.
ENGINE_TAG_NAMES = frozenset(SystemTagName) - {
    SystemTagName.ACCUMULATED_VOLUME, SystemTagName.BLOCK_VOLUME,
    SystemTagName.ACCUMULATED_CV, SystemTagName.BLOCK_CV}

DEFAULT_BASE_UNITS: dict[str, tuple[str, str]] = {
    unit: (SystemTagName.SCOPE_TIME.value, SystemTagName.BLOCK_TIME.value) for unit in ("s", "min", "h")}

EntryDataType = Literal["str", "int", "float", "auto"]
ReadingKind = Literal["reading", "reading_with_entry", "reading_with_choice"]


class UodError(ValueError):
    """A UOD cannot be loaded. ``problems`` lists every problem, each naming its file and line."""

    def __init__(self, problems: list[str], header: str = ""):
        self.problems = list(problems)
        count = len(self.problems)
        header = header or ("A UOD problem" if count == 1 else f"{count} UOD problems")
        super().__init__(header + ":\n" + "\n".join(f"  {p}" for p in self.problems))


@dataclass(frozen=True, slots=True)
class Source:
    """Where a builder call was made: shown as ``file.py:42: with_tag('FT01')``."""

    path: str
    line: int
    call: str

    def __str__(self) -> str:
        return f"{os.path.basename(self.path)}:{self.line}: {self.call}"


#: A problem and the call it is about (None when no call is known).
Problem = tuple[Source | None, str]


def format_problem(problem: Problem) -> str:
    source, message = problem
    return f"{source}: {message}" if source else message


def sort_problems(problems: list[Problem]) -> list[Problem]:
    """In the order of the UOD file's lines, so a reader fixes them top to bottom."""
    return sorted(problems, key=lambda p: (p[0].path, p[0].line) if p[0] else ("", 0))


#: What a source belongs to: ("tag", "FT01"), ("command", "Reset"), ("reading", "<index>"),
#: ("build", "")...
SourceKey = tuple[str, str]


class TagList(list[Tag]):
    """The UOD's tags in order; also indexable by name (``tags["FT01"]``, ``tags.get("FT01")``).

    Open Pectus UODs use ``cmd.context.tags.get(name)``; a list keeps the order the engine needs.
    """

    def get(self, name: str, default: Tag | None = None) -> Tag | None:
        for tag in self:
            if tag.name == name:
                return tag
        return default

    @overload
    def __getitem__(self, key: SupportsIndex) -> Tag: ...
    @overload
    def __getitem__(self, key: slice) -> list[Tag]: ...
    @overload
    def __getitem__(self, key: str) -> Tag: ...

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            tag = self.get(key)
            if tag is None:
                raise KeyError(f"No tag named '{key}'; tags are {', '.join(self.names())}")
            return tag
        return super().__getitem__(key)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return self.get(item) is not None
        return super().__contains__(item)

    def names(self) -> list[str]:
        return [tag.name for tag in self]


@dataclass(eq=False)
class ProcessValue:
    """A tag the UI shows: read-only, with an entry field, or with a list of choices.

    An entry sends ``"<execute_command_name>: <value>[ <unit>]"``; a choice injects the P-code
    mapped to the chosen display name in ``command_options``.
    """

    kind: ReadingKind
    tag_name: str
    entry_data_type: EntryDataType | None = None
    execute_command_name: str | None = None
    command_options: dict[str, str] | None = None


@dataclass(frozen=True)
class ProcessDiagram:
    """The unit's process diagram (``with_process_diagram``): its sanitised SVG, and the elements
    that name a tag with their SVG lines. ``origin`` is the SVG file's name, "" for SVG text."""

    svg: str
    origin: str = ""
    bindings: list[Binding] = field(default_factory=list)

    def at(self, line: int) -> str:
        """Where a line of the SVG is, for a message: ``demo_diagram.svg:17`` or ``SVG line 17``."""
        return f"{self.origin}:{line}" if self.origin else f"SVG line {line}"


@dataclass(eq=False)
class UnitOperationDefinition:
    """The built UOD. Made by ``UodBuilder.build()``; the engine reads it, never a UOD file."""

    instrument: str = ""
    author_name: str = ""
    author_email: str = ""
    filename: str = ""
    location: str = ""
    hwl: HardwareLayerBase | None = None
    tags: TagList = field(default_factory=TagList)
    readings: list[ProcessValue] = field(default_factory=list)
    commands: dict[str, CommandDefinition] = field(default_factory=dict)
    overlapping_command_names_lists: list[list[str]] = field(default_factory=list)
    plot_configuration: PlotConfiguration = field(default_factory=PlotConfiguration)
    required_roles: set[str] = field(default_factory=set)
    data_log_interval_seconds: float = 5.0
    base_unit_provider: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_BASE_UNITS))
    sources: dict[SourceKey, Source] = field(default_factory=dict)
    #: The process diagram (``with_process_diagram``), if the UOD has one.
    process_diagram: ProcessDiagram | None = None
    #: The engine's system tags; set by the engine when it starts.
    system_tags: TagTable | None = None
    #: What ``build()`` warned about, each naming its UOD line, in the order of the file's lines.
    warnings: list[str] = field(default_factory=list)

    @property
    def options(self) -> dict[str, str]:
        """The identity sent when the engine registers with the aggregator."""
        return {"uod_name": self.instrument, "uod_author_name": self.author_name,
                "uod_author_email": self.author_email, "uod_filename": self.filename,
                "location": self.location}

    def get_logger(self) -> logging.Logger:
        return logging.getLogger(USER_UOD_LOGGER)

    def entry_data_type(self, reading: ProcessValue) -> Literal["str", "int", "float"] | None:
        """The type an entry's value is parsed as; ``auto`` follows the tag's default value."""
        if reading.kind != "reading_with_entry":
            return None
        if reading.entry_data_type != "auto":
            return reading.entry_data_type
        tag = self.tags.get(reading.tag_name)
        value = tag.get_value() if tag is not None else None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        return "int" if isinstance(value, int) else "float" if isinstance(value, float) else "str"

    def valid_value_units(self, reading: ProcessValue) -> list[str]:
        """Units an entry may be given in: its command's regex units, else the units that fit
        the tag's quantity (:func:`~pectus.pcode.units.settable_units`: a pump in % only in %),
        else ``[""]`` (no unit)."""
        command = self.commands.get(reading.execute_command_name or reading.tag_name)
        if command is not None and command.units:
            return command.units
        tag = self.tags.get(reading.tag_name)
        if tag is None or tag.unit is None:
            return [""]
        return units.settable_units(tag.unit) or [tag.unit]

    def entry_rules(self, reading: ProcessValue) -> dict[str, Any] | None:
        """What the page checks an entry's value against before sending it (the engine checks
        it again when it arrives): the command's argument rules when its pattern tells (see
        :meth:`CommandDefinition.argument_rules`: type, units with their ranges, choices, what is
        expected); else the entry's data type and the units that fit the tag, without range.
        None for a reading without entry."""
        if reading.kind != "reading_with_entry":
            return None
        command = self.commands.get(reading.execute_command_name or reading.tag_name)
        rules = command.argument_rules() if command is not None else None
        if rules is not None:
            return rules
        data_type = self.entry_data_type(reading)
        return {"type": "number" if data_type in ("int", "float") else "text", "int_only": data_type == "int",
                "optional": False, "expected": "",
                "units": [{"unit": u, "minimum": None, "maximum": None} for u in self.valid_value_units(reading) if u]}

    def command_tag(self, name: str) -> Tag | None:
        """The tag command ``name`` sets: the tag of the entry that runs it, else the tag of its name."""
        for reading in self.readings:
            if reading.kind == "reading_with_entry" and (reading.execute_command_name or reading.tag_name) == name:
                return self.tags.get(reading.tag_name)
        return self.tags.get(name)

    def apply_tag_ranges(self) -> None:
        """Give every number command without a range of its own the range of the tag it sets
        (:meth:`command_tag`), so the command refuses a value outside it. Idempotent."""
        for name, command in self.commands.items():
            tag = self.command_tag(name)
            if command.value_range is None and command.takes_number and tag is not None and _has_range(tag):
                self.commands[name] = replace(command, value_range=ValueRange(tag.minimum, tag.maximum, tag.unit))

    def pcode_examples(self) -> list[str]:
        """Example P-code lines for every command and every choice (``--validate`` runs them)."""
        lines = [line for command in self.commands.values() for line in command.examples()]
        lines += [code for r in self.readings for code in (r.command_options or {}).values()]
        return list(dict.fromkeys(lines))

    # --- validation

    def validate(self, system_tag_names: Iterable[str] = ENGINE_TAG_NAMES) -> list[str]:
        """Every error of this definition, each naming its UOD line; [] when it can run.

        ``system_tag_names`` are the engine's own tags, which process values, plots and base
        units may name besides the UOD's tags (and which no UOD tag may reuse, except
        ``Batch Name``: a UOD's own is adopted as the engine's, as Open Pectus needs one).
        """
        return [format_problem(p) for p in sort_problems(self.find_problems(system_tag_names))]

    def find_problems(self, system_tag_names: Iterable[str] = ENGINE_TAG_NAMES) -> list[Problem]:
        """:meth:`validate`'s errors with their sources, unsorted."""
        return self._check(system_tag_names)[0]

    def find_warnings(self, system_tag_names: Iterable[str] = ENGINE_TAG_NAMES) -> list[Problem]:
        """What a run survives but the author should hear of, with sources, unsorted."""
        return self._check(system_tag_names)[1]

    def known_tag_names(self, system_tag_names: Iterable[str] = ENGINE_TAG_NAMES) -> list[str]:
        """The UOD's tags, then the engine's: every name a process value or plot may use."""
        system = set(system_tag_names) | {SystemTagName.MARK, SystemTagName.BLOCK_TIME, SystemTagName.SCOPE_TIME}
        return self.tags.names() + sorted(system - set(self.tags.names()))

    def _check(self, system_tag_names: Iterable[str]) -> tuple[list[Problem], list[Problem]]:
        """(errors, warnings): an error where a run would fail, a warning where it would not."""
        system = set(system_tag_names) | {SystemTagName.MARK, SystemTagName.BLOCK_TIME, SystemTagName.SCOPE_TIME}
        known = self.known_tag_names(system)
        errors: list[Problem] = []
        warnings: list[Problem] = []

        def source(key: SourceKey) -> Source | None:
            return self.sources.get(key) or self.sources.get(("build", ""))

        def report(key: SourceKey, message: str) -> None:
            errors.append((source(key), message))

        def warn(key: SourceKey, message: str) -> None:
            warnings.append((source(key), message))

        for key, message in self._identity_problems():
            report(key, message)
        for tag in self.tags:
            if tag.name == SystemTagName.BATCH_NAME:
                message = _batch_name_difference(tag)
                if message:
                    warn(("tag", tag.name), message)
            elif tag.name in system:
                report(("tag", tag.name), f"'{tag.name}' is the name of an engine tag; choose another name")
        for key, message, is_error in self._register_problems():
            (report if is_error else warn)(key, message)
        for key, message in self._reading_problems(known):
            report(key, message)
        for index, reading in enumerate(self.readings):
            message = self._entry_command_warning(reading) if reading.tag_name in known else None
            if message:
                warn(("reading", str(index)), message)
        for name, command in self.commands.items():
            for message in command_signature_problems(command):
                report(("command", name), message)
            for message in _range_problems(command):
                report(("command", name), message)
        for tag in filter(_has_range, self.tags):
            command = next((c for c in self.commands.values() if self.command_tag(c.name) is tag), None)
            if command is None or command.value_range is None:
                warn(("tag", tag.name), f"the range of tag '{tag.name}' is not checked: "
                     + (f"its command '{command.name}' does not take a number (RegexNumber)" if command
                        else "no command sets it (a command of its name, or its entry's)"))
        for index, group in enumerate(self.overlapping_command_names_lists):
            for name in group:
                if name not in self.commands:
                    warn(("overlap", str(index)), f"no command named '{name}', so it overlaps nothing; commands "
                                                  f"are {', '.join(self.commands) or '(none)'}")
        for name in self.plot_configuration.process_value_names():
            if name not in known:
                warn(("plot", ""), f"no tag named '{name}', so the plot leaves it out"
                                   + _did_you_mean(name, known) + f"; tags are {', '.join(self.tags.names())}")
        for message in self._plot_unit_warnings():
            warn(("plot", ""), message)
        if self.process_diagram is not None:
            for binding in self.process_diagram.bindings:
                if binding.tag not in known:
                    report(("diagram", ""), f"{self.process_diagram.at(binding.line)}: data-tag '{binding.tag}': "
                                            + _no_tag(binding.tag, known))
        for unit, tag_names in self.base_unit_provider.items():
            for name in tag_names:
                if name not in known:
                    report(("base_unit", unit), f"base unit '{unit}': " + _no_tag(name, known))
        return errors, warnings

    def _identity_problems(self) -> list[tuple[SourceKey, str]]:
        problems: list[tuple[SourceKey, str]] = []
        if not self.instrument.strip():
            problems.append((("instrument", ""), "the unit needs an instrument name: .with_instrument('My unit')"))
        if not self.author_name.strip() or not self.author_email.strip():
            problems.append((("author", ""), "the UOD needs an author name and email: "
                                             ".with_author('Name', 'name@example.com')"))
        if not self.filename.strip():
            problems.append((("filename", ""), "the UOD needs its filename: .with_filename(__file__)"))
        if self.hwl is None:
            problems.append((("hardware", ""), "the unit needs hardware: .with_hardware(...) "
                                               "or .with_hardware_none()"))
        return problems

    def _register_problems(self) -> list[tuple[SourceKey, str, bool]]:
        """(key, message, is_error): a register read into no tag fails the run; one written from
        no tag is never written, which a run survives."""
        problems: list[tuple[SourceKey, str, bool]] = []
        registers = self.hwl.registers.values() if self.hwl is not None else ()
        for register in registers:
            key = ("register", register.name)
            tag = self.tags.get(register.name)
            if tag is None:
                hint = _did_you_mean(register.name, self.tags.names())
                if register.readable:
                    problems.append((key, f"register '{register.name}' needs a tag of the same name to be "
                                          f"read into{hint}", True))
                else:
                    problems.append((key, f"register '{register.name}' has no tag of the same name, so it is "
                                          f"never written{hint}", False))
            elif register.has_safe_value and tag.choices and register.safe_value not in tag.choices:
                problems.append((key, f"safe_value {register.safe_value!r} is not a choice of tag "
                                      f"'{tag.name}' ({', '.join(map(str, tag.choices))})", True))
        return problems

    def _reading_problems(self, known: list[str]) -> list[tuple[SourceKey, str]]:
        problems: list[tuple[SourceKey, str]] = []
        seen: set[str] = set()
        for index, reading in enumerate(self.readings):
            key = ("reading", str(index))
            if reading.tag_name in seen:
                problems.append((key, f"'{reading.tag_name}' is already a process value; a tag can be shown once"))
                continue
            seen.add(reading.tag_name)
            if reading.tag_name not in known:
                problems.append((key, _no_tag(reading.tag_name, known) + f"; tags are {', '.join(self.tags.names())}"))
                continue
            if reading.kind == "reading_with_choice" and not reading.command_options:
                problems.append((key, "a choice needs command_options: {display name: P-code}"))
            if reading.kind == "reading_with_entry":
                problems += [(key, m) for m in self._entry_problems(reading)]
        return problems

    def _entry_problems(self, reading: ProcessValue) -> list[str]:
        declared = reading.entry_data_type
        if declared not in ("str", "int", "float", "auto"):
            return [f"entry_data_type must be 'str', 'int', 'float' or 'auto', not {declared!r}"]
        tag = self.tags.get(reading.tag_name)
        if tag is None:  # an engine tag: its value is the engine's business
            return []
        value = tag.get_value()
        if declared == "auto" and self.entry_data_type(reading) is None:
            return [f"entry_data_type 'auto' takes the type from the tag's value, but '{tag.name}' is "
                    f"{value!r}; give the tag a default value or an explicit entry_data_type"]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (declared == "int" and (not isinstance(value, int) or isinstance(value, bool))) or \
                (declared == "float" and not numeric):
            return [f"entry_data_type '{declared}' but tag '{tag.name}' holds {value!r}"]
        return []

    def _entry_command_warning(self, reading: ProcessValue) -> str | None:
        """An entry whose command the unit lacks: entering a value is then an unknown instruction."""
        command = reading.execute_command_name or reading.tag_name
        if reading.kind != "reading_with_entry" or command in self.commands:
            return None
        return f"entry '{reading.tag_name}' executes '{command}', which is not a command of this unit"

    def _plot_unit_warnings(self) -> list[str]:
        warnings = []
        for plot in self.plot_configuration.sub_plots:
            for axis in plot.axes:
                axis_units = {tag.unit for name in axis.process_value_names if (tag := self.tags.get(name))}
                if len(axis_units) > 1:
                    warnings.append(f"plot axis '{axis.label}' mixes units {', '.join(sorted(map(str, axis_units)))}")
        return warnings


def _has_range(tag: Tag) -> bool:
    return getattr(tag, "minimum", None) is not None or getattr(tag, "maximum", None) is not None


def _range_problems(command: CommandDefinition) -> list[str]:
    """Why ``command``'s range cannot be applied to every unit its argument may be written in."""
    value_range = command.value_range
    if value_range is None:
        return []
    if value_range.unit is None:
        if len(command.units) > 1:
            return [f"the range of '{command.name}' has no unit, but its argument may be given in "
                    f"{', '.join(command.units)}: give the tag (or the range) a unit"]
        return []
    wrong = [unit for unit in command.units if unit not in units.settable_units(value_range.unit)]
    if wrong:
        return [f"the range of '{command.name}' is in {value_range.unit}, which cannot be converted to "
                f"{', '.join(wrong)}: give the range in a unit of the argument's quantity"]
    return []


def _batch_name_difference(tag: Tag) -> str | None:
    """Why a UOD's own ``Batch Name`` is not like the engine's (a text tag that ``Batch:`` sets),
    or None when it is."""
    if type(tag) is Tag and tag.unit is None:
        return None
    kind = type(tag).__name__ + (f" in {tag.unit}" if tag.unit else "")
    return (f"the engine adopts this 'Batch Name' as its batch tag, but it is a {kind} while the engine's is "
            "a text Tag without unit that 'Batch: <name>' sets to the name; a name it refuses pauses the run")


def _did_you_mean(name: str, candidates: list[str]) -> str:
    hint = closest(name, candidates)
    return f"; did you mean '{hint[0]}'?" if hint else ""


def _no_tag(name: str, candidates: list[str]) -> str:
    return f"no tag named '{name}'" + _did_you_mean(name, candidates)


def command_signature_problems(command: CommandDefinition) -> list[str]:
    """Why ``exec_fn`` cannot be called as ``exec_fn(cmd, **parsed)`` (spec 8.4); [] when it can."""
    try:
        signature = inspect.signature(command.exec_fn)
    except (TypeError, ValueError):  # a builtin or C function: its first call will tell
        return []
    shown = f"{getattr(command.exec_fn, '__name__', 'exec_fn')}{signature}"
    params = list(signature.parameters.values())
    if not params or params[0].name != "cmd" or params[0].kind is inspect.Parameter.KEYWORD_ONLY:
        return [f"the first parameter of {shown} must be 'cmd'"]
    given = command.argument_names
    if given is None:  # a custom parser: what it returns is only known at run time
        return []
    passable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    rest = params[1:]
    accepted = {p.name for p in rest if p.kind in passable}
    has_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest)
    if command.parser is None:
        gives = "the command takes no arguments"
    elif command.parser == "default":
        gives = "the default parser gives 'value'"
    else:
        gives = f"the argument pattern's groups are {', '.join(sorted(given)) or '(none)'}"
    problems = []
    not_taken = sorted(given - accepted) if not has_kwargs else []
    if not_taken:
        problems.append(f"{shown} does not take {', '.join(map(repr, not_taken))}; {gives} "
                        f"(add the parameter or **kwargs)")
    never_given = [p.name for p in rest if p.default is p.empty and (
        p.kind is inspect.Parameter.POSITIONAL_ONLY or (p.kind in passable and p.name not in given))]
    if never_given:
        problems.append(f"{shown} needs {', '.join(map(repr, never_given))}, which it is never given; {gives}")
    return problems
