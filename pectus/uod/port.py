"""Porting an Open Pectus UOD: point its imports at ``pectus.uod``, change nothing else.

:func:`port_source` reads the file with :mod:`ast` to find every import of an ``openpectus``
module, whatever its form::

    from openpectus.engine.uod_builder_api import UodBuilder, tags      # -> from pectus.uod import ...
    from openpectus.engine.uod_builder_api import (UodBuilder,          # the same, comments kept
                                                   tags)  # a comment
    import openpectus.lang.exec.units as units                           # -> import pectus.uod as units
    from openpectus.lang.exec import tags_impl as tags                   # -> from pectus import uod as tags
    import openpectus.engine.hardware                                    # -> import pectus.uod
    class Hw(openpectus.engine.hardware.HardwareLayerBase): ...          # -> pectus.uod.HardwareLayerBase

and imports inside functions alike. It then edits the source text at those spans only, so
comments, layout and every other byte stay as they were.

Invariants:

* ``pectus.uod`` holds every name of :data:`REFERENCE_NAMES` under its reference name, so a
  port only changes *where* names come from, never the names the UOD's code uses (a module
  alias such as ``units`` becomes ``pectus.uod`` itself, which has every name of every module);
* a name Pectus does not provide is never dropped: the import keeps it (so loading the file
  fails at that line) and the port reports it with its line and the reason;
* OPC-UA browse paths written with ``;`` between elements (as the reference's documentation
  shows; its driver only takes ``/``) become ``/`` paths, in units with OPC-UA hardware only:
  a UOD's own hardware may read ``path`` as it likes.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

#: Open Pectus' UOD-facing modules and the names of each that ``pectus.uod`` provides.
REFERENCE_NAMES: dict[str, tuple[str, ...]] = {
    "openpectus.engine.uod_builder_api": (
        "HardwareLayerBase", "PlotAxis", "PlotColorRegion", "PlotConfiguration", "RegexCategorical", "RegexNumber",
        "RegexText", "Register", "RegisterDirection", "SubPlot", "UnitOperationDefinitionBase", "UodBuilder",
        "UodCommand", "as_decimal", "as_int", "tags", "units"),
    "openpectus.engine.hardware": (
        "HardwareLayerBase", "HardwareLayerException", "NullHardware", "Register", "RegisterDirection"),
    "openpectus.engine.composite_hardware": ("Composite_Hardware",),
    "openpectus.engine.opcua_hardware": ("OPCUA_Hardware",),
    "openpectus.engine.labjack_hardware": ("Labjack_Hardware",),
    "openpectus.engine.hardware_recovery": ("ErrorRecoveryDecorator",),
    "openpectus.lang.exec.uod": ("EntryDataType", "UnitOperationDefinitionBase", "UodBuilder", "UodCommand"),
    "openpectus.lang.exec.regex": (
        "BASE_VALID_UNITS", "REGEX_BASE_ARG", "REGEX_DURATION", "REGEX_DURATION_OPTIONAL", "REGEX_INT", "REGEX_TEXT",
        "RegexCategorical", "RegexNumber", "RegexNumberOptional", "RegexText"),
    "openpectus.lang.exec.tags": (
        "SystemTagName", "Tag", "TagDirection", "TagFormatFunction", "TagValueType", "format_time_as_clock"),
    "openpectus.lang.exec.tags_impl": (
        "AccumulatedColumnVolume", "AccumulatorBlockTag", "AccumulatorTag", "BlockTimeTag", "DerivedTag", "MarkTag",
        "ReadingTag", "ScopeTimeTag", "SelectTag", "SystemTagName", "Tag", "TagDirection", "TagFormatFunction",
        "TagValueType", "format_time_as_clock"),
    "openpectus.lang.exec.units": (
        "BASE_VALID_UNITS", "QUANTITY_UNIT_MAP", "add_unit", "are_comparable", "as_decimal", "as_int",
        "convert_value_to_unit", "get_compatible_unit_names", "get_supported_units", "get_unit_quantity_name",
        "get_volume_units", "is_supported_unit"),
    "openpectus.protocol.models": (
        "Colors", "EntryDataType", "PlotAxis", "PlotColorRegion", "PlotConfiguration", "SubPlot", "SystemTagName",
        "TagDirection"),
}

#: Names ``pectus.uod`` has, but which raise when used: the reference's behaviour is not Pectus'.
RAISES_WHEN_USED: dict[str, str] = {
    "Labjack_Hardware": "LabJack devices need LabJack's native LJM library",
    "MarkTag": "the engine makes its own Mark tag",
    "BlockTimeTag": "the engine makes its own Block Time tag",
    "ScopeTimeTag": "the engine makes its own Scope Time tag",
    "ErrorRecoveryDecorator": "the engine runs every hardware under its own recovery state machine",
}

#: Reference names a UOD might import that Pectus does not provide, and what to do instead.
NOT_PROVIDED: dict[str, str] = {
    "ChangeListener": "Pectus recalculates a DerivedTag every tick; use one instead of listening to changes",
    "MARK_SEPARATOR": "Pectus' Mark tag holds the latest mark, not every mark joined",
    "ErrorRecoveryConfig": "the engine's recovery state machine is configured by the engine, not the UOD",
    "ErrorRecoveryState": "the engine reports its recovery state itself",
    "compare_values": "compare numbers after convert_value_to_unit, or check are_comparable",
    "QUANTITY_PINT_MAP": "Pectus' unit registry is internal; add units with UodBuilder.with_measurement_unit",
    "ureg": "Pectus' unit registry is internal; add units with UodBuilder.with_measurement_unit",
    "Q_": "Pectus' unit registry is internal; use convert_value_to_unit",
}

_TARGET = "pectus.uod"
_OPCUA_PATH = re.compile(r"^(0:)?Objects;")


@dataclass(frozen=True)
class Finding:
    """One thing the port did or found, at a line of the old file."""

    line: int
    message: str


@dataclass
class PortResult:
    text: str
    #: What was rewritten, in line order.
    changes: list[Finding] = field(default_factory=list)
    #: Names Pectus does not provide (the file will not load until they are replaced), in line order.
    problems: list[Finding] = field(default_factory=list)
    #: Names that import but raise when used, in line order.
    notes: list[Finding] = field(default_factory=list)


def port_source(text: str, filename: str = "<uod>") -> PortResult:
    """``text`` with its Open Pectus imports pointed at ``pectus.uod``; a SyntaxError if it is not Python."""
    tree = ast.parse(text, filename)
    porter = _Porter(text)
    plain_roots = porter.imports(tree)
    porter.dotted_uses(tree, plain_roots)
    if _uses_opcua(tree):
        porter.opcua_paths(tree)
    return porter.result()


class _Porter:
    """Collects span edits (in characters) and findings, then applies the edits back to front."""

    def __init__(self, text: str):
        self.text = text
        # Only \r\n, \r and \n end a line for Python (str.splitlines also splits at \f, \x1c...).
        self.lines = re.findall(r".*?(?:\r\n|\r|\n)|.+$", text, flags=re.S)
        self._line_starts = [0]
        for line in self.lines:
            self._line_starts.append(self._line_starts[-1] + len(line))
        self.edits: list[tuple[int, int, str]] = []
        self.changes: list[Finding] = []
        self.problems: list[Finding] = []
        self.notes: list[Finding] = []

    # --- positions: ast columns count UTF-8 bytes, edits count characters

    def offset(self, line: int, byte_column: int) -> int:
        text = self.lines[line - 1] if line <= len(self.lines) else ""
        return self._line_starts[line - 1] + len(text.encode("utf-8")[:byte_column].decode("utf-8"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offset(node.lineno, node.col_offset),  # type: ignore[attr-defined]
                self.offset(node.end_lineno, node.end_col_offset))  # type: ignore[attr-defined]

    def replace(self, start: int, end: int, new: str, line: int) -> None:
        old = self.text[start:end]
        self.edits.append((start, end, new))
        self.changes.append(Finding(line, f"{_one_line(old)} -> {_one_line(new)}"))

    # --- imports

    def imports(self, tree: ast.AST) -> set[str]:
        """Rewrite every import of an openpectus module; the names bound by plain ``import
        openpectus...`` statements (always ``openpectus``) are returned for :meth:`dotted_uses`."""
        plain_roots: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_reference(node.module or ""):
                self._import_from(node)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _is_reference(alias.name):
                        plain_roots |= self._import(alias)
        return plain_roots

    def _import_from(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        modules = [a for a in node.names if _module_of(f"{module}.{a.name}") is not None]
        names = [a for a in node.names if a not in modules]
        for alias in names:
            self._check_name(module, alias.name, node.lineno)
        start, end = self.span(node)
        if not modules:
            match = re.match(r"from\s+(openpectus(?:\s*\.\s*\w+)*)", self.text[start:end])
            assert match is not None  # the statement starts with its module, by the grammar
            self.replace(start + match.start(1), start + match.end(1), _TARGET, node.lineno)
        elif not names:
            match = re.match(r"from\s+(openpectus(?:\s*\.\s*\w+)*)", self.text[start:end])
            assert match is not None
            self.replace(start + match.start(1), start + match.end(1), "pectus", node.lineno)
            for alias in modules:
                self._check_module(f"{module}.{alias.name}", alias.lineno)
                self.replace(*self.span(alias), f"uod as {alias.asname or alias.name}", alias.lineno)
        else:  # names and modules in one statement: two statements on its line
            for alias in modules:
                self._check_module(f"{module}.{alias.name}", alias.lineno)
            shown = ", ".join(_alias_text(a) for a in names)
            aliased = ", ".join(f"uod as {a.asname or a.name}" for a in modules)
            self.replace(start, end, f"from {_TARGET} import {shown}; from pectus import {aliased}", node.lineno)

    def _import(self, alias: ast.alias) -> set[str]:
        if alias.asname is not None:
            self._check_module(alias.name, alias.lineno)
            self.replace(*self.span(alias), f"{_TARGET} as {alias.asname}", alias.lineno)
            return set()
        # ``import openpectus.x.y`` binds ``openpectus``; its uses are rewritten one by one.
        self.replace(*self.span(alias), _TARGET, alias.lineno)
        return {"openpectus"}

    def _check_module(self, module: str, line: int) -> None:
        if _module_of(module) is None:
            self.problems.append(Finding(line, f"{module} is not a UOD module of Open Pectus that Pectus "
                                               f"provides; its names are not in {_TARGET}"))

    def _check_name(self, module: str, name: str, line: int) -> None:
        if name == "*":
            self.notes.append(Finding(line, f"'from {module} import *' now imports every name of {_TARGET}"))
        elif name in REFERENCE_NAMES.get(module, ()):
            if name in RAISES_WHEN_USED:
                self.notes.append(Finding(line, f"'{name}' imports, but raises when used: "
                                                f"{RAISES_WHEN_USED[name]}"))
        else:
            reason = NOT_PROVIDED.get(name, f"{module} has no '{name}' that a UOD can use in Pectus")
            self.problems.append(Finding(line, f"'{name}' (from {module}) is not provided by {_TARGET}: {reason}; "
                                               "the ported file keeps the import, so it will not load until you "
                                               "replace it"))

    # --- openpectus.x.y.Name after a plain import

    def dotted_uses(self, tree: ast.AST, roots: set[str]) -> None:
        if not roots:
            return
        inner: set[int] = set()  # the chains inside a rewritten or reported one
        for node in ast.walk(tree):
            if id(node) in inner or not isinstance(node, ast.Attribute):
                continue
            dotted = _dotted(node)
            if dotted is None or dotted.split(".")[0] not in roots:
                continue
            module = _longest_module(dotted)
            chain = node
            while _dotted(chain) != module and isinstance(chain, ast.Attribute):
                chain = chain.value  # type: ignore[assignment]
            inner |= {id(n) for n in ast.walk(node)}
            if module is None:
                self.problems.append(Finding(node.lineno, f"{dotted}: not a name of a UOD module of Open Pectus "
                                                          f"that Pectus provides"))
                continue
            name = dotted[len(module) + 1:].split(".")[0]
            if name:
                self._check_name(module, name, node.lineno)
            self.replace(*self.span(chain), _TARGET, node.lineno)

    # --- OPC-UA paths

    def opcua_paths(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "with_hardware_register"):
                continue
            for keyword in node.keywords:
                value = keyword.value
                if (keyword.arg == "path" and isinstance(value, ast.Constant) and isinstance(value.value, str)
                        and _OPCUA_PATH.match(value.value)):
                    start, end = self.span(value)
                    self.replace(start, end, self.text[start:end].replace(";", "/"), value.lineno)

    def result(self) -> PortResult:
        text = self.text
        for start, end, new in sorted(self.edits, reverse=True):
            text = text[:start] + new + text[end:]

        def in_order(findings: list[Finding]) -> list[Finding]:
            return sorted(findings, key=lambda f: f.line)

        return PortResult(text, in_order(self.changes), in_order(self.problems), in_order(self.notes))


def _is_reference(module: str) -> bool:
    return module == "openpectus" or module.startswith("openpectus.")


def _module_of(dotted: str) -> str | None:
    return dotted if dotted in REFERENCE_NAMES else None


def _longest_module(dotted: str) -> str | None:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in REFERENCE_NAMES:
            return ".".join(parts[:end])
    return None


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _alias_text(alias: ast.alias) -> str:
    return alias.name + (f" as {alias.asname}" if alias.asname else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _uses_opcua(tree: ast.AST) -> bool:
    """Whether the unit's hardware is OPC-UA (``with_hardware_opcua`` or the driver class)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("with_hardware_opcua", "OPCUA_Hardware"):
            return True
        if isinstance(node, ast.Name) and node.id == "OPCUA_Hardware":
            return True
    return False
