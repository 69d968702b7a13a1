"""What P-code a unit understands, for the method editor: its vocabulary (tags with units,
commands with examples, instructions, Base units) and diagnostics of a text (the editor's lint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from pectus.pcode import units as pcode_units
from pectus.pcode.analyzer import analyze
from pectus.pcode.diagnostics import Diagnostic
from pectus.web.api import ApiError, Backend
from pectus.web.units import merge_process_values

# The engine's system tags and their units (pectus.pcode.engine): every unit has them.
# The accumulator tags (Accumulated Volume, Block CV...) exist only on some units; they come
# from the unit's own tag list.
SYSTEM_TAGS: dict[str, str | None] = {
    "Base": None, "Run Counter": None, "Block": None, "Process Time": "s", "Run Time": "s",
    "Clock": "s", "System State": None, "Method Status": None, "Connection Status": None,
    "Run Id": None, "Mark": None, "Block Time": "s", "Scope Time": "s", "Batch Name": None,
}
TIME_BASE_UNITS = ("s", "min", "h")
# One example of each built-in instruction, for the commands panel and completion.
INSTRUCTION_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Mark", "Mark: Equilibration done"),
    ("Info", "Info: Sample taken"),
    ("Warning", "Warning: Check the pressure"),
    ("Error", "Error: Column packed wrongly"),
    ("Wait", "Wait: 30 s"),
    ("Block", "Block: Wash\n    Wait: 2 min\n    End block"),
    ("End block", "End block"),
    ("End blocks", "End blocks"),
    ("Watch", "Watch: Block Time > 5 min\n    Mark: Five minutes in the block"),
    ("Alarm", "Alarm: Run Time > 2 h\n    Pause"),
    ("Base", "Base: min"),
    ("Pause", "Pause"),
    ("Unpause", "Unpause"),
    ("Hold", "Hold"),
    ("Unhold", "Unhold"),
    ("Stop", "Stop"),
    ("Restart", "Restart"),
    ("Batch", "Batch: Lot 2024-17"),
    ("Notify", "Notify: Ready for the next step"),
    ("Run counter", "Run counter: 0"),
    ("Increment run counter", "Increment run counter"),
    ("Macro", "Macro: Rinse\n    Wait: 10 s"),
    ("Call macro", "Macro: Rinse\n    Wait: 10 s\nCall macro: Rinse"),
    ("Simulate", "Simulate: Run Time = 10 s"),
    ("Simulate off", "Simulate off: Run Time"),
)


@dataclass(frozen=True)
class _DescribedCommand:
    """A unit command as the UOD's description tells it: whether it takes an argument, not its
    parser (that stays with the engine), so any argument of one that takes one may be right."""

    takes_argument: bool | None

    @property
    def argument_names(self) -> set[str] | None:
        return set() if self.takes_argument is False else None

    def parse(self, argument: str | None) -> bool:
        return True


def _vocabulary(backend: Backend, unit: str) -> dict[str, Any]:
    """The tag names with their units, the UOD commands and the Base units of ``unit``.

    The UOD's own description wins when the Projector offers it (query ``uod_description``);
    otherwise the tags are the unit's known process values plus the system tags, and the
    command names are unknown (``commands`` None: the analyzer then does not check them; the
    commands of the process values are still ``listed`` for the commands panel).
    """
    views = backend.views
    if views.unit(unit) is None:
        raise ApiError(404, f"unknown process unit {unit!r}")
    tags: dict[str, str | None] = dict(SYSTEM_TAGS)
    listed: dict[str, dict[str, Any]] = {}
    for value in merge_process_values(views.process_values(unit), backend.live_values(unit)) or ():
        tags[value["name"]] = value.get("unit") or None
        for command in value.get("commands") or ():
            if command.get("name"):
                listed.setdefault(command["name"], {"name": command["name"], "help": command.get("help", ""),
                                                    "reading": True})
    description = views.uod_description(unit)
    commands: dict[str, dict[str, Any]] | None = None
    if description:
        for tag in description.get("tags", ()):
            tags[tag["name"]] = tag.get("unit") or None
        commands = {command["name"]: command for command in description.get("commands", ())}
        for reading in description.get("readings", ()):
            name = reading.get("execute_command_name") or reading["tag_name"]
            # Only the unit's commands: a sensor or an engine tag shown as a process value is none.
            if reading["kind"] != "reading" and name in commands:
                commands[name] = {**commands[name], "reading": True}
        listed = commands
    base_units = list(TIME_BASE_UNITS)
    if "Accumulated Volume" in tags:
        base_units += pcode_units.compatible_units(tags["Accumulated Volume"]) or [tags["Accumulated Volume"] or "L"]
    if "Accumulated CV" in tags:
        base_units.append("CV")
    return {"tags": tags, "commands": commands, "listed": listed, "base_units": list(dict.fromkeys(base_units))}


def diagnostic_json(diagnostic: Diagnostic) -> dict[str, Any]:
    return {"line": diagnostic.line, "end_line": diagnostic.end_line, "column": diagnostic.column,
            "end_column": diagnostic.end_column, "severity": str(diagnostic.severity), "id": diagnostic.id,
            "message": diagnostic.message, "fixes": list(diagnostic.fixes)}


async def diagnose(backend: Backend, body: dict, unit: str) -> dict[str, Any]:
    vocabulary = _vocabulary(backend, unit)
    commands = vocabulary["commands"]
    parsers = ({name: _DescribedCommand(command.get("takes_argument")) for name, command in commands.items()}
               if commands is not None else None)

    def run() -> list[Diagnostic]:
        return analyze(body["text"], tags=vocabulary["tags"], commands=parsers, base_units=vocabulary["base_units"])

    # a few milliseconds for a real method; a megabyte of text must not stall the loop
    diagnostics = await trio.to_thread.run_sync(run) if len(body["text"]) > 20_000 else run()
    return {"diagnostics": [diagnostic_json(diagnostic) for diagnostic in diagnostics]}


async def vocabulary_route(backend: Backend, unit: str) -> dict[str, Any]:
    vocabulary = _vocabulary(backend, unit)
    return {
        "tags": [{"name": name, "unit": tag_unit,
                  "valid_units": list(dict.fromkeys(
                      ([tag_unit] if tag_unit else []) + pcode_units.compatible_units(tag_unit)))}
                 for name, tag_unit in vocabulary["tags"].items()],
        "commands": [{"name": name, "help": command.get("help", ""),
                      "examples": list(command.get("examples") or []),
                      "reading": bool(command.get("reading"))}
                     for name, command in vocabulary["listed"].items()],
        "instructions": [{"name": name, "example": example} for name, example in INSTRUCTION_EXAMPLES],
        "base_units": vocabulary["base_units"],
    }
