"""``pectus-engine``: the process next to the equipment, and its offline tools.

Subcommands available now:

* ``validate --uod FILE.py [METHOD.pcode]`` - load and check a UOD, and analyse a method
  against it. Prints every finding with its line; exit 0 only when there is none.
* ``simulate --uod FILE.py METHOD.pcode`` - run a method on the UOD's simulated hardware on a
  virtual clock, as fast as the CPU allows, writing the engine's events as JSON Lines.

Exit codes: 0 success, 1 the UOD, the method or the run has errors, 2 wrong usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pectus-engine",
        description="Pectus engine: runs P-code methods against a unit operation.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check a UOD file and, optionally, a method against it",
        description="Load and validate a UOD; with a method, analyse it against the UOD. "
                    "Prints each finding as FILE:LINE: severity: message. Exit 0 only when clean.")
    validate.add_argument("--uod", "-uod", required=True, type=Path, help="the UOD file (Python)")
    validate.add_argument("method", nargs="?", type=Path, help="a P-code method file to analyse")

    simulate = commands.add_parser(
        "simulate", help="run a method on the UOD's simulated hardware on a virtual clock",
        description="Start the method on a virtual clock and run it as fast as possible until it "
                    "stops, pauses on an error, or --max-seconds of run time have passed.")
    simulate.add_argument("--uod", "-uod", required=True, type=Path, help="the UOD file (Python)")
    simulate.add_argument("method", type=Path, help="the P-code method file")
    simulate.add_argument("--max-seconds", type=float, default=3600.0,
                          help="stop after this much run time in seconds (process time plus time "
                               "paused or on hold; default 3600)")
    simulate.add_argument("--tick", type=float, default=0.1, help="tick length in seconds (default 0.1)")
    simulate.add_argument("--events", type=Path,
                          help="write the engine's events to this file as JSON Lines (see docs/simulate.md)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args)
    if args.command == "simulate":
        return _simulate(args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _load(path: Path):
    from pectus.uod import UodError, load_uod

    try:
        return load_uod(path)
    except UodError as error:
        print(f"The UOD cannot be loaded:\n{error}", file=sys.stderr)
    except OSError as error:
        print(f"Cannot read the UOD file: {error}", file=sys.stderr)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"Cannot read the method file: {error}", file=sys.stderr)
        return None


def _analyze(engine, text: str) -> list:
    """The analyzer's findings for ``text`` on the engine's unit (its tags, commands, base units)."""
    from pectus.pcode.analyzer import analyze

    uod = engine.uod
    return analyze(text, tags={tag.name: tag.unit for tag in engine.tags},
                   commands={name: command.parse for name, command in uod.commands.items()},
                   base_units=list(uod.base_unit_provider))


def _validate(args: argparse.Namespace) -> int:
    uod = _load(args.uod)
    if uod is None:
        return EXIT_PROBLEMS
    print(f"{args.uod}: UOD '{uod.instrument}' is valid: {len(uod.tags)} tags, {len(uod.commands)} commands")
    if args.method is None:
        return EXIT_OK
    text = _read(args.method)
    if text is None:
        return EXIT_PROBLEMS
    from pectus.pcode.engine import Engine

    diagnostics = _analyze(Engine(uod), text)
    for diagnostic in diagnostics:
        hint = f" (did you mean '{diagnostic.fixes[0]}'?)" if diagnostic.fixes else ""
        print(f"{args.method}:{diagnostic.line}: {diagnostic.severity}: {diagnostic.message}{hint}")
    if not diagnostics:
        print(f"{args.method}: no findings")
    return EXIT_PROBLEMS if diagnostics else EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from pectus.pcode.engine import Engine

    uod = _load(args.uod)
    if uod is None:
        return EXIT_PROBLEMS
    text = _read(args.method)
    if text is None:
        return EXIT_PROBLEMS
    record = args.events is not None
    engine = Engine(uod, record_events=record)
    outcome = engine.set_method(text)
    if not outcome:
        print(f"{args.method}: {outcome.reason}", file=sys.stderr)
        return EXIT_PROBLEMS
    out = args.events.open("w", encoding="utf-8") if record else None
    try:
        if out is not None:
            for diagnostic in _analyze(engine, text):
                out.write(json.dumps({"event": "diagnostic", "tick": -1, "time": 0.0, "process_time": 0.0,
                                      "line": diagnostic.line, "severity": diagnostic.severity.value,
                                      "id": diagnostic.id, "message": diagnostic.message}) + "\n")
        result = _run(engine, args, out)
    finally:
        if out is not None:
            out.close()
    return result


def _run(engine, args: argparse.Namespace, out) -> int:
    tick, start = args.tick, 0.0
    engine.execute_control("Start")
    wall = time.perf_counter()
    number = 0
    while True:
        engine.tick(start + number * tick, tick if number else 0.0)
        number += 1
        if out is not None:
            for event in engine.take_events():
                out.write(json.dumps(event.as_dict(), default=str) + "\n")
        stopped = number > 2 and not engine.started
        if stopped or engine.method_status == "Error" or engine.value("Run Time") >= args.max_seconds:
            break
    wall = time.perf_counter() - wall
    virtual = (number - 1) * tick  # the first tick is at time 0
    print(f"Simulated {virtual:.1f} s in {wall:.2f} s ({number} ticks, {number / wall:,.0f} ticks/s, "
          f"{virtual / wall:,.0f}x real time)")
    print(f"System State {engine.system_state}, Method Status {engine.method_status}, "
          f"process time {engine.process_time:.1f} s, {len(engine.marks)} marks, "
          f"{len(engine.run_log)} run-log items")
    if engine.method_status == "Error":
        print(f"{args.method}: the run paused on an error: {engine.last_error}")
        return EXIT_PROBLEMS
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
