"""UodBuilder: how a UOD file describes its unit, one chained call at a time.

::

    def create() -> UnitOperationDefinition:
        return (UodBuilder()
                .with_instrument("Filtration skid 2")
                .with_author("Ada", "ada@example.com")
                .with_filename(__file__)
                .with_hardware(MyHardware())
                .with_hardware_register("FT01", RegisterDirection.Read)
                .with_tag(tags.ReadingTag("FT01", "L/h"))
                .with_process_value("FT01")
                .build())

Invariants:

* every ``with_*`` call records the line of the UOD file that made it, so that each problem,
  whether found at the call or by validation in :meth:`UodBuilder.build`, names that line:
  ``uod.py:42: with_process_value('FT99'): no tag named 'FT99'; did you mean 'FT01'?``;
* a bad call does not raise: it is recorded and building goes on, so ``build()`` reports *all*
  problems of the file in one :class:`~pectus.uod.definition.UodError`;
* what a run survives is a warning, not an error: the built definition lists them in
  ``warnings`` (with their lines), and its plot configuration leaves out the names that match
  no tag, so the UI is only ever sent names it can draw;
* method and argument names are those of Open Pectus, so UOD files port by changing the import.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pectus
from pectus.diagram import DiagramError, read_diagram
from pectus.hardware.base import HardwareLayerBase, NullHardware, Register, RegisterDirection
from pectus.pcode import units
from pectus.pcode.syntax import BUILTINS
from pectus.pcode.tags import SystemTagName, Tag
from pectus.uod.commands import CommandDefinition, ExecFn, LifecycleFn, Parser, ValueRange
from pectus.uod.definition import (DEFAULT_BASE_UNITS, USER_UOD_LOGGER, EntryDataType, Problem, ProcessDiagram,
                                   ProcessValue, Source, SourceKey, TagList, UnitOperationDefinition, UodError,
                                   format_problem, sort_problems)
from pectus.uod.plot import PlotConfiguration

_PECTUS_DIR = os.path.dirname(os.path.abspath(pectus.__file__)) + os.sep
MAX_REMOVALS_LISTED = 10  # warnings about a diagram's removed parts; the rest are counted


def _caller_frame() -> Any:
    """The innermost frame outside the pectus package: the UOD line that called the builder
    (also through helpers such as ``Tag.with_builder``)."""
    frame = sys._getframe(2)
    first = frame
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PECTUS_DIR):
        frame = frame.f_back
    return frame or first


class UodBuilder:
    """Collects a unit's definition; :meth:`build` validates it and returns it."""

    def __init__(self) -> None:
        self._instrument = ""
        self._author_name = ""
        self._author_email = ""
        self._filename = ""
        self._location = ""
        self._hwl: HardwareLayerBase | None = None
        self._tags = TagList()
        self._readings: list[ProcessValue] = []
        self._commands: dict[str, CommandDefinition] = {}
        self._overlaps: list[list[str]] = []
        self._plot = PlotConfiguration()
        self._diagram: ProcessDiagram | None = None
        self._roles: set[str] = set()
        self._data_log_interval = 5.0
        self._base_units = dict(DEFAULT_BASE_UNITS)
        self._sources: dict[SourceKey, Source] = {}
        self._problems: list[Problem] = []
        self._warnings: list[Problem] = []

    # --- bookkeeping

    def _here(self, call: str, key: SourceKey | None = None) -> Source:
        """Where the UOD made this call; remembered under ``key`` for validation messages."""
        frame = _caller_frame()
        source = Source(frame.f_code.co_filename, frame.f_lineno, call)
        if key is not None:
            self._sources[key] = source
        return source

    def _problem(self, source: Source, message: str) -> None:
        self._problems.append((source, message))

    def get_logger(self) -> logging.Logger:
        """The UOD's logger: its WARNING and higher records reach the UI's error log."""
        return logging.getLogger(USER_UOD_LOGGER)

    # --- identity

    # Blank identity values are reported by validation, at the line of the call.

    def with_instrument(self, name: str) -> UodBuilder:
        """The unit's display name (``uod_name``), part of the engine's id. Required."""
        self._here(f"with_instrument({name!r})", ("instrument", ""))
        self._instrument = _text(name)
        return self

    def with_author(self, name: str, email: str) -> UodBuilder:
        """Who wrote the UOD. Required."""
        self._here(f"with_author({name!r}, {email!r})", ("author", ""))
        self._author_name, self._author_email = _text(name), _text(email)
        return self

    def with_filename(self, filename: str) -> UodBuilder:
        """The UOD's file name, usually ``__file__``. Required."""
        self._here(f"with_filename({filename!r})", ("filename", ""))
        self._filename = _text(filename)
        return self

    def with_location(self, location: str) -> UodBuilder:
        """Where the unit is, e.g. "Site / Building / Room"."""
        self._here(f"with_location({location!r})", ("location", ""))
        self._location = _text(location)
        return self

    # --- hardware

    def with_hardware(self, hwl: HardwareLayerBase) -> UodBuilder:
        """The unit's hardware: a driver, or a simulation (``SimulatedHardware``). Required."""
        source = self._here(f"with_hardware({type(hwl).__name__})")
        if not isinstance(hwl, HardwareLayerBase):
            self._problem(source, f"{hwl!r} is not hardware (a HardwareLayerBase)")
        elif self._hwl is not None:
            self._problem(source, "the hardware is already set; a unit has one hardware layer")
        else:
            _adapt_reference_tick(hwl)
            self._hwl = hwl
            self._sources[("hardware", "")] = source
        return self

    def with_hardware_none(self) -> UodBuilder:
        """No equipment (NullHardware): reads give None, writes are dropped. For tests."""
        return self.with_hardware(NullHardware())

    def with_hardware_opcua(self, host: str) -> UodBuilder:
        """The OPC-UA server at ``host`` (``opc.tcp://...``); registers take a ``path`` option."""
        from pectus.hardware.opcua import OPCUAHardware  # asyncua loads only for the units that use it
        return self.with_hardware(OPCUAHardware(host))

    def with_hardware_labjack(self, serial_number: str | None = None) -> UodBuilder:
        raise NotImplementedError(f"with_hardware_labjack({serial_number!r}): LabJack devices are not "
                                  "supported (they need LabJack's native LJM library); use with_hardware() "
                                  "with a driver of your own")

    def with_hardware_register(self, name: str, direction: RegisterDirection = RegisterDirection.Read,
                               **options: Any) -> UodBuilder:
        """Add a register; its name ties it to the tag of the same name.

        Special options: ``to_tag`` (raw -> tag value after each read), ``from_tag`` (tag value ->
        raw before each write), ``safe_value`` (writable registers only: the tag's value at
        start, on Pause and on Stop), ``simulate`` (``hw -> raw value``: what the register reads
        when the unit is dry-run on in-memory hardware, ``simulate --hardware memory``). Other
        options belong to the hardware (``path``...).
        """
        source = self._here(f"with_hardware_register({name!r})")
        problems = []
        if self._hwl is None:
            problems.append("set the hardware (with_hardware...) before adding registers")
        elif name in self._hwl.registers:
            problems.append(f"a register named '{name}' already exists")
        if not isinstance(name, str) or not name.strip():
            problems.append("a register needs a non-empty name")
        if not isinstance(direction, RegisterDirection):
            problems.append(f"direction must be RegisterDirection.Read, Write or Both, not {direction!r}")
        elif "safe_value" in options and not direction & RegisterDirection.Write:
            problems.append("safe_value is only for registers that are written (Write or Both)")
        problems += [f"{option} must be a function" for option in ("to_tag", "from_tag", "simulate")
                     if option in options and not callable(options[option])]
        for message in problems:
            self._problem(source, message)
        if not problems and self._hwl is not None:
            if isinstance(options.get("hardware"), HardwareLayerBase):  # a device of CompositeHardware
                _adapt_reference_tick(options["hardware"])
            self._hwl.registers[name] = Register(name, direction, **options)
            self._sources[("register", name)] = source
        return self

    # --- tags

    def with_tag(self, tag: Tag) -> UodBuilder:
        name = getattr(tag, "name", tag)
        source = self._here(f"with_tag({name!r})")
        self._add_tag(tag, source)
        return self

    def _add_tag(self, tag: Tag, source: Source) -> bool:
        if not isinstance(tag, Tag):
            self._problem(source, f"{tag!r} is not a tag")
            return False
        existing = self._tags.get(tag.name)
        if existing is not None:
            first = self._sources.get(("tag", tag.name))
            self._problem(source, f"a tag named '{tag.name}' already exists"
                                  + (f" (added at line {first.line})" if first and first != source else ""))
            return False
        self._sources[("tag", tag.name)] = source
        self._tags.append(tag)
        return True

    def _existing_tag(self, source: Source, name: str, volume: bool) -> Tag | None:
        """The UOD tag ``name`` added so far; with ``volume``, it must have a volume unit."""
        tag = self._tags.get(name)
        if tag is None:
            self._problem(source, f"no tag named '{name}' (yet); tags so far are "
                                  f"{', '.join(self._tags.names()) or '(none)'}: add it before this call")
            return None
        if volume and not _is_volume(tag.unit):
            self._problem(source, f"tag '{name}' must have a volume unit such as L or mL, not {tag.unit!r}")
            return None
        return tag

    def with_accumulated_volume(self, totalizer_tag_name: str) -> UodBuilder:
        """Add ``Accumulated Volume`` and ``Block Volume`` from a totalizer tag, and make its
        volume units base units (``Base: L`` then measures thresholds in litres)."""
        source = self._here(f"with_accumulated_volume({totalizer_tag_name!r})")
        totalizer = self._existing_tag(source, totalizer_tag_name, volume=True)
        if totalizer is not None:
            from pectus.pcode.tags import AccumulatorBlockTag, AccumulatorTag
            main, block = SystemTagName.ACCUMULATED_VOLUME.value, SystemTagName.BLOCK_VOLUME.value
            added = [self._add_tag(AccumulatorTag(main, totalizer), source),
                     self._add_tag(AccumulatorBlockTag(block, totalizer), source)]
            if all(added):
                self._set_base_units(source, units.compatible_units(totalizer.unit), main, block)
        return self

    def with_accumulated_cv(self, cv_tag_name: str, totalizer_tag_name: str) -> UodBuilder:
        """Add ``Accumulated CV`` and ``Block CV`` (volume / column volume) and base unit ``CV``."""
        source = self._here(f"with_accumulated_cv({cv_tag_name!r}, {totalizer_tag_name!r})")
        cv_tag = self._existing_tag(source, cv_tag_name, volume=False)
        totalizer = self._existing_tag(source, totalizer_tag_name, volume=True)
        if cv_tag is not None and cv_tag.unit is not None and not _is_volume(cv_tag.unit):
            self._problem(source, f"the column volume tag '{cv_tag_name}' must have a volume unit, not {cv_tag.unit!r}")
        elif cv_tag is not None and totalizer is not None:
            from pectus.pcode.tags import AccumulatedColumnVolume, BlockColumnVolume
            main, block = SystemTagName.ACCUMULATED_CV.value, SystemTagName.BLOCK_CV.value
            added = [self._add_tag(AccumulatedColumnVolume(main, cv_tag, totalizer), source),
                     self._add_tag(BlockColumnVolume(block, cv_tag, totalizer), source)]
            if all(added):
                self._set_base_units(source, ["CV"], main, block)
        return self

    def with_base_unit_provider(self, units: list[str], provider_tag_name: str,
                                provider_block_tag_name: str) -> UodBuilder:
        """Measure thresholds in ``units`` (after ``Base: <unit>``) by the given tags: the main
        tag outside blocks, the block tag inside a block."""
        source = self._here(f"with_base_unit_provider({units!r}, {provider_tag_name!r}, {provider_block_tag_name!r})")
        if isinstance(units, str) or not units:
            self._problem(source, "units must be a non-empty list such as ['g', 'kg']")
        else:
            self._set_base_units(source, list(units), provider_tag_name, provider_block_tag_name)
        return self

    def _set_base_units(self, source: Source, unit_names: list[str], main: str, block: str) -> None:
        for unit in dict.fromkeys(unit_names):
            previous = self._base_units.get(unit)
            if previous is not None and previous != (main, block):
                self._warnings.append((source, f"base unit '{unit}' now counts on {main!r} and {block!r} "
                                               f"instead of {previous[0]!r} and {previous[1]!r}"))
            self._base_units[unit] = (main, block)
            self._sources[("base_unit", unit)] = source

    def with_measurement_unit(self, unit: str, unit_relation: str | None = None,
                              quantity_relation: str | None = None, quantity: str | None = None) -> UodBuilder:
        """Add a unit to the unit registry, e.g. ``with_measurement_unit("DV", quantity="diavolume")``.
        Call it before the tags that use the unit."""
        source = self._here(f"with_measurement_unit({unit!r})")
        try:
            units.add_unit(unit, unit_relation=unit_relation, quantity_relation=quantity_relation, quantity=quantity)
        except (units.UnitError, ValueError) as error:
            self._problem(source, str(error))
        return self

    # --- commands

    def with_command(self, name: str, exec_fn: ExecFn, init_fn: LifecycleFn | None = None,
                     finalize_fn: LifecycleFn | None = None,
                     arg_parse_fn: Callable[[str], dict[str, Any] | None] | str | None = "default") -> UodBuilder:
        """Add a command. ``arg_parse_fn``: ``"default"`` passes the argument text as ``value``;
        ``None`` means no arguments; a function ``(str) -> dict | None`` is a custom parser."""
        source = self._here(f"with_command({name!r})")
        if arg_parse_fn is not None and arg_parse_fn != "default" and not callable(arg_parse_fn):
            self._problem(source, "arg_parse_fn must be 'default', None or a function; "
                                  "for a regex use with_command_regex_arguments")
            return self
        self._add_command(source, CommandDefinition(name, exec_fn, init_fn, finalize_fn, arg_parse_fn))
        return self

    def with_command_regex_arguments(self, name: str, arg_parse_regex: str, exec_fn: ExecFn,
                                     init_fn: LifecycleFn | None = None,
                                     finalize_fn: LifecycleFn | None = None, *,
                                     minimum: float | None = None, maximum: float | None = None) -> UodBuilder:
        """Add a command whose argument must match ``arg_parse_regex``; its named groups become
        the keyword arguments of ``exec_fn`` (see :mod:`pectus.uod.regex`).

        ``minimum``/``maximum`` declare the range of a ``RegexNumber`` argument, in the pattern's
        first unit; without them the command takes the range of the tag it sets, if that has one
        (``Tag(..., minimum=0, maximum=100)``)."""
        source = self._here(f"with_command_regex_arguments({name!r})")
        try:
            parser: Parser = re.compile(arg_parse_regex)
        except (re.error, TypeError) as error:
            self._problem(source, f"the argument pattern {arg_parse_regex!r} is not a valid regex: {error}")
            return self
        command = CommandDefinition(name, exec_fn, init_fn, finalize_fn, parser)
        if minimum is not None or maximum is not None:
            if not command.takes_number:
                self._problem(source, "minimum and maximum need a number argument: a RegexNumber pattern")
                return self
            try:
                command.value_range = ValueRange(minimum, maximum, (command.units or [None])[0])
            except ValueError as error:
                self._problem(source, str(error))
                return self
        self._add_command(source, command)
        return self

    def _add_command(self, source: Source, command: CommandDefinition) -> None:
        name = command.name
        problems = []
        if not isinstance(name, str) or not name.strip() or name != name.strip() or re.search("[:#]", name):
            problems.append("a command name must be a text without ':', '#' or surrounding spaces")
        elif name in BUILTINS:
            problems.append(f"'{name}' is a built-in P-code instruction, so this command could never run")
        elif name in self._commands:
            first = self._sources.get(("command", name))
            problems.append(f"a command named '{name}' already exists"
                            + (f" (added at line {first.line})" if first and first != source else ""))
        if not callable(command.exec_fn):
            problems.append("exec_fn must be a function exec_fn(cmd, ...)")
        problems += [f"{label} must be a function of cmd, or None"
                     for label, fn in (("init_fn", command.init_fn), ("finalize_fn", command.finalize_fn))
                     if fn is not None and not callable(fn)]
        for message in problems:
            self._problem(source, message)
        if not problems:
            self._sources[("command", name)] = source
            self._commands[name] = command

    def with_command_overlap(self, command_names: list[str]) -> UodBuilder:
        """At most one command of the group runs at a time: starting one cancels the others."""
        index = len(self._overlaps)
        source = self._here(f"with_command_overlap({command_names!r})", ("overlap", str(index)))
        if isinstance(command_names, str) or len(command_names) < 2:
            self._problem(source, "an overlap group needs a list of at least two command names")
        else:
            self._overlaps.append(list(command_names))
        return self

    # --- process values, plot, run settings

    def _add_reading(self, call: str, reading: ProcessValue) -> None:
        self._here(call, ("reading", str(len(self._readings))))
        self._readings.append(reading)

    def with_process_value(self, tag_name: str) -> UodBuilder:
        """Show the tag in the UI, read-only."""
        self._add_reading(f"with_process_value({tag_name!r})", ProcessValue("reading", tag_name))
        return self

    def with_process_value_entry(self, tag_name: str, entry_data_type: EntryDataType = "auto",
                                 execute_command_name: str | None = None) -> UodBuilder:
        """Show the tag with an entry field; entering ``v`` runs ``<command>: v[ unit]``, the
        command being the tag's name unless ``execute_command_name`` is given."""
        self._add_reading(f"with_process_value_entry({tag_name!r})",
                          ProcessValue("reading_with_entry", tag_name, entry_data_type, execute_command_name))
        return self

    def with_process_value_choice(self, tag_name: str, command_options: dict[str, str]) -> UodBuilder:
        """Show the tag with a list of choices: display name -> P-code it runs."""
        self._add_reading(f"with_process_value_choice({tag_name!r})",
                          ProcessValue("reading_with_choice", tag_name, command_options=dict(command_options or {})))
        return self

    def with_plot_configuration(self, plot_configuration: PlotConfiguration) -> UodBuilder:
        source = self._here("with_plot_configuration(...)", ("plot", ""))
        if not isinstance(plot_configuration, PlotConfiguration):
            self._problem(source, f"{plot_configuration!r} is not a PlotConfiguration")
        else:
            self._plot = plot_configuration
        return self

    def with_process_diagram(self, path_or_svg: str | os.PathLike[str]) -> UodBuilder:
        """A process diagram of the unit (SVG, P&ID style) whose elements show its tags live: the
        path of an SVG file (relative to the UOD file) or the SVG text itself (starting with ``<``).

        Elements name tags with ``data-tag``, ``data-show``, ``data-kind`` and ``data-on`` (see
        docs/uod.md, "Process diagram"). The SVG is sanitised here, so what the engine sends is
        already safe: what was removed is a warning naming its SVG line; a diagram that cannot be
        read, a misused attribute or a data-tag that names no tag is an error."""
        inline = isinstance(path_or_svg, str) and path_or_svg.lstrip().startswith("<")
        shown = "<SVG text>" if inline else repr(os.fspath(path_or_svg) if _is_path(path_or_svg) else path_or_svg)
        source = self._here(f"with_process_diagram({shown})", ("diagram", ""))
        if self._diagram is not None:
            self._problem(source, "the unit already has a process diagram; a unit has one")
            return self
        if inline:
            origin, text = "", str(path_or_svg)
        elif _is_path(path_or_svg):
            path = Path(source.path).parent / path_or_svg
            origin = path.name
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                reason = "it is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else \
                    error.strerror or str(error)
                self._problem(source, f"cannot read the diagram {path}: {reason}")
                return self
        else:
            self._problem(source, "give the path of an SVG file or the SVG text (starting with '<')")
            return self
        diagram = ProcessDiagram("", origin)
        try:
            read = read_diagram(text)
        except DiagramError as error:
            self._problem(source, (f"{diagram.at(error.line)}: " if error.line else "") + str(error))
            return self
        for line, message in read.problems:
            self._problem(source, f"{diagram.at(line)}: {message}")
        for removal in read.removed[:MAX_REMOVALS_LISTED]:
            self._warnings.append((source, f"{diagram.at(removal.line)}: removed the {removal.what}"))
        if len(read.removed) > MAX_REMOVALS_LISTED:
            self._warnings.append((source, f"and {len(read.removed) - MAX_REMOVALS_LISTED} more parts of the "
                                           "diagram were removed"))
        self._diagram = ProcessDiagram(read.svg, origin, read.bindings)
        return self

    def with_required_roles(self, roles: Iterable[str]) -> UodBuilder:
        """Only users holding at least one of these roles can see and use the unit."""
        source = self._here(f"with_required_roles({roles!r})")
        if isinstance(roles, str) or not all(isinstance(r, str) for r in roles):
            self._problem(source, "roles must be a set of role names, e.g. {'Operator'}")
        else:
            self._roles = set(roles)
        return self

    def with_data_log_interval_seconds(self, data_log_interval_seconds: float) -> UodBuilder:
        """Seconds between archive rows and stored plot samples (default 5)."""
        source = self._here(f"with_data_log_interval_seconds({data_log_interval_seconds!r})")
        value = data_log_interval_seconds
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            self._problem(source, "the data log interval must be a number of seconds > 0")
        else:
            self._data_log_interval = float(value)
        return self

    # --- the result

    def build(self) -> UnitOperationDefinition:
        """The definition, validated; raises UodError listing every error of the UOD file.

        Its ``warnings`` list what a run survives; its plot configuration draws what exists."""
        self._here("build()", ("build", ""))
        definition = UnitOperationDefinition(
            instrument=self._instrument, author_name=self._author_name, author_email=self._author_email,
            filename=self._filename, location=self._location, hwl=self._hwl, tags=self._tags,
            readings=self._readings, commands=self._commands, overlapping_command_names_lists=self._overlaps,
            plot_configuration=self._plot, process_diagram=self._diagram, required_roles=self._roles,
            data_log_interval_seconds=self._data_log_interval, base_unit_provider=self._base_units,
            sources=self._sources)
        definition.apply_tag_ranges()
        problems = sort_problems(self._problems + definition.find_problems())
        if problems:
            raise UodError([format_problem(p) for p in problems])
        definition.warnings = [format_problem(p) for p in sort_problems(self._warnings + definition.find_warnings())]
        definition.plot_configuration = self._plot.restricted_to(definition.known_tag_names())
        return definition


def _adapt_reference_tick(hwl: HardwareLayerBase) -> None:
    """Open Pectus calls a driver's ``tick()`` without arguments, Pectus calls ``tick(tick_time,
    increment_time)``: a driver written for Open Pectus gets, on its instance, a ``tick`` that
    takes Pectus' arguments and calls its own."""
    own_tick = hwl.tick
    try:
        takes_nothing = not inspect.signature(own_tick).parameters
    except (TypeError, ValueError):  # a builtin: it is not a Python override
        return
    if takes_nothing:
        hwl.tick = lambda tick_time, increment_time: own_tick()  # type: ignore[method-assign]


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _is_volume(unit: str | None) -> bool:
    return "L" in units.compatible_units(unit)
