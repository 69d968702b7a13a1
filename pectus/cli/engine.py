"""``pectus-engine``: the process next to the equipment, and its offline tools.

    pectus-engine -uod UOD.py [-ahn HOST[,HOST...]] [-ap PORT[,PORT...]] [-s] [--key-file FILE] [--events FILE]
    pectus-engine validate --uod UOD.py [METHOD.pcode] [--connect] [--strict]
    pectus-engine port-uod OLD.py [-o NEW.py] [--force] [--strict]
    pectus-engine simulate --uod UOD.py METHOD.pcode [--max-seconds N] [--events FILE]
                           [--hardware memory [--set REGISTER=VALUE]...]

Without a subcommand the engine runs the unit: it connects the hardware, ticks every 0.1 s,
reports to the aggregator and takes run controls and methods from it (or runs stand-alone with
--standalone). The flags keep Open Pectus' names. Several aggregator addresses (an active
aggregator and its standby) are tried in turn: ``-ahn host1,host2`` or ``-ahn host1:8300,host2:8301``.

Exit codes: 0 success or a clean stop, 1 the UOD, the method, the hardware or the run has
errors, 2 wrong usage.
"""

from __future__ import annotations

import argparse
import json
import os
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("pectus.engine")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pectus-engine",
        description="Pectus engine: runs P-code methods against a unit operation. Without a "
                    "subcommand it runs the unit defined by -uod.")
    parser.add_argument("-uod", "--uod", type=Path, help="the UOD file (Python) of the unit to run")
    parser.add_argument("-ahn", "--aggregator_hostname", default="127.0.0.1",
                        help="host name or IP address of the aggregator (default 127.0.0.1); several, separated by "
                             "commas (an active aggregator and its standby), are tried in turn; each may name its "
                             "port: host1:8300,host2:8301 ([::1]:8300 for an IPv6 address)")
    parser.add_argument("-ap", "--aggregator_port",
                        help="port of the aggregator (default 8300, or 443 with -s), for the hosts that name none; "
                             "one per host, separated by commas, in the order of -ahn")
    parser.add_argument("-s", "--secure", action=argparse.BooleanOptionalAction, default=False,
                        help="connect to the aggregator with TLS (wss://)")
    parser.add_argument("-secret", "--secret", default="",
                        help="Open Pectus' shared secret: accepted so deployment scripts keep working, and ignored "
                             "(each engine has a credential of its own)")
    parser.add_argument("--key-file", type=Path,
                        help="the engine's key, which the aggregator knows it by (default: <engine id>.key "
                             "beside the outbox, made on first start; never logged). With "
                             "PECTUS_ENGINE_CLIENT_ID set the engine signs in with an app token instead")
    parser.add_argument("-sev", "--sentry_event_level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="lowest log level sent to Sentry as an event; Sentry is on only when "
                             "the SENTRY_DSN environment variable is set (default WARNING)")
    parser.add_argument("-rd", "--show_register_details", action="store_true",
                        help="connect the hardware, print every register's value and exit "
                             "(the same as 'validate --connect')")
    parser.add_argument("--events", type=Path, help="append the engine's events to this file as JSON Lines")
    parser.add_argument("--outbox", type=Path,
                        help="the engine's outbox: records not yet stored by the aggregator "
                             "(default data/<engine id>.outbox.sqlite3)")
    parser.add_argument("--standalone", action="store_true", help="do not connect to an aggregator")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="console log level (default INFO)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check a UOD file and, optionally, a method against it",
        description="Load and validate a UOD; with a method, analyse it against the UOD. "
                    "Prints each finding as FILE:LINE: severity: message. UOD warnings (what a run "
                    "survives) do not fail it unless --strict; exit 0 only when there is no error.")
    validate.add_argument("--uod", "-uod", dest="validate_uod", required=True, type=Path,
                          help="the UOD file (Python)")
    validate.add_argument("method", nargs="?", type=Path, help="a P-code method file to analyse")
    validate.add_argument("--connect", action="store_true",
                          help="also connect the hardware, check every register online and print its value")
    validate.add_argument("--strict", action="store_true",
                          help="UOD warnings are errors (exit 1), for CI")

    port = commands.add_parser(
        "port-uod", help="port an Open Pectus UOD: rewrite its imports to pectus.uod, then validate it",
        description="Rewrite every import of an openpectus module in OLD.py to pectus.uod (nothing else "
                    "changes), print each change with its line, write the result and validate it. "
                    "See docs/uod.md, 'Porting an Open Pectus UOD'.")
    port.add_argument("old", type=Path, metavar="OLD.py", help="the Open Pectus UOD file")
    port.add_argument("-o", "--output", type=Path, metavar="NEW.py",
                      help="where to write the ported UOD (default: OLD_pectus.py next to OLD.py)")
    port.add_argument("--force", action="store_true", help="overwrite NEW.py if it exists")
    port.add_argument("--strict", dest="port_strict", action="store_true",
                      help="the ported UOD's warnings are errors (exit 1), for CI")

    simulate = commands.add_parser(
        "simulate", help="run a method against the UOD on a virtual clock",
        description="Start the method on a virtual clock and run it as fast as possible until it "
                    "stops, pauses on an error, or --max-seconds of run time have passed. The UOD's "
                    "hardware is connected as the live engine connects it, or with --hardware memory "
                    "replaced by an in-memory process image (no device needed).")
    simulate.add_argument("--uod", "-uod", dest="simulate_uod", required=True, type=Path,
                          help="the UOD file (Python)")
    simulate.add_argument("method", type=Path, help="the P-code method file")
    simulate.add_argument("--max-seconds", type=float, default=3600.0,
                          help="stop after this much run time in seconds (process time plus time "
                               "paused or on hold; default 3600)")
    simulate.add_argument("--tick", type=float, default=0.1, help="tick length in seconds (default 0.1)")
    simulate.add_argument("--events", dest="simulate_events", type=Path,
                          help="write the engine's events to this file as JSON Lines (see docs/simulate.md)")
    simulate.add_argument("--hardware", choices=["uod", "memory"], default="uod",
                          help="uod: the UOD's own hardware (default); memory: an in-memory process image in "
                               "its place - what is written reads back, inputs hold --set values or follow "
                               "the registers' simulate= functions")
    simulate.add_argument("--set", dest="inputs", action="append", default=[], metavar="REGISTER=VALUE",
                          help="with --hardware memory: the raw value an input register reads (before its "
                               "to_tag), a number, true/false or text; repeatable")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s:%(name)s:%(message)s")
    if args.command == "validate":
        return _validate(args.validate_uod, args.method, args.connect, args.strict)
    if args.command == "port-uod":
        return _port_uod(args.old, args.output, args.force, args.port_strict)
    if args.command == "simulate":
        return _simulate(args)
    if args.uod is None:
        print("pectus-engine: the UOD is missing: run a unit with pectus-engine -uod UOD.py, or use a subcommand "
              "(validate, port-uod, simulate); pectus-engine --help lists every option", file=sys.stderr)
        return EXIT_USAGE
    if args.show_register_details:
        return _validate(args.uod, None, True)
    return _run(args)


def aggregator_urls(hosts: str, ports: str | None, secure: bool) -> list[str]:
    """The engine WebSocket URLs of ``-ahn`` and ``-ap``: each host with the port it names, else
    the ``-ap`` port for all hosts (or the one in its place in an ``-ap`` list), else 8300 (443 with
    ``-s``). ValueError, saying what is wrong, for an empty host, a port that is not one, or an
    ``-ap`` list whose length is not the number of hosts."""
    names = [host.strip() for host in hosts.split(",")]
    if not all(names):
        raise ValueError(f"-ahn {hosts!r}: a host name is empty; separate the hosts with single commas")
    default = 443 if secure else 8300
    given = [_port(port.strip(), "-ap") for port in ports.split(",")] if ports else [default]
    if len(given) not in (1, len(names)):
        raise ValueError(f"-ap {ports!r} names {len(given)} ports for the {len(names)} hosts of -ahn {hosts!r}: "
                         "give one port for all, or one per host in the same order")
    scheme = "wss" if secure else "ws"
    urls = []
    for name, fallback in zip(names, given if len(given) > 1 else given * len(names)):
        host, port = _host_and_port(name)
        urls.append(f"{scheme}://{host}:{port or fallback}/engine")
    return urls


def _host_and_port(name: str) -> tuple[str, int | None]:
    """'host', 'host:8300', '10.0.0.5:8300', '[::1]:8300', '[::1]' or '::1' -> (host as in a URL, port or None)."""
    if name.startswith("["):
        host, bracket, rest = name[1:].partition("]")
        if not host or not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"-ahn: {name!r} is not an address: write an IPv6 address as [::1] or [::1]:8300")
        return f"[{host}]", _port(rest[1:], f"-ahn {name}") if rest else None
    if name.count(":") > 1:  # an IPv6 address without a port
        return f"[{name}]", None
    host, colon, port = name.partition(":")
    return host, _port(port, f"-ahn {name}") if colon else None


def _port(text: str, where: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{where}: {text!r} is not a port (a number from 1 to 65535)")
    return int(text)


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


def _validate(uod_path: Path, method: Path | None, connect: bool, strict: bool = False) -> int:
    uod = _load(uod_path)
    if uod is None:
        return EXIT_PROBLEMS
    for warning in uod.warnings:  # "uod.py:12: with_...(...): message", as the builder made it
        where, _, what = warning.partition(": ")
        print(f"{where}: warning: {what}")
    count = len(uod.warnings)
    counted = f", {count} warning{'' if count == 1 else 's'}" if count else ""
    print(f"{uod_path}: UOD '{uod.instrument}' is valid: {len(uod.tags)} tags, {len(uod.commands)} commands{counted}")
    if strict and uod.warnings:
        print(f"{uod_path}: --strict: the warnings count as errors")
        return EXIT_PROBLEMS
    if connect and not _check_connection(uod):
        return EXIT_PROBLEMS
    if method is None:
        return EXIT_OK
    text = _read(method)
    if text is None:
        return EXIT_PROBLEMS
    from pectus.pcode.engine import Engine

    diagnostics = Engine(uod).analyze(text)
    for diagnostic in diagnostics:
        hint = f" (did you mean '{diagnostic.fixes[0]}'?)" if diagnostic.fixes else ""
        print(f"{method}:{diagnostic.line}: {diagnostic.severity}: {diagnostic.message}{hint}")
    if not diagnostics:
        print(f"{method}: no findings")
    return EXIT_PROBLEMS if diagnostics else EXIT_OK


def _port_uod(old: Path, new: Path | None, force: bool, strict: bool) -> int:
    """Rewrite an Open Pectus UOD's imports (pectus.uod.port), write it, validate it.

    The text is read and written as bytes, so line endings and every byte the port did not
    change stay as they were."""
    from pectus.uod.port import port_source

    try:
        text = old.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"Cannot read the UOD file: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = port_source(text, str(old))
    except SyntaxError as error:
        print(f"{old.name}:{error.lineno}: syntax error: {error.msg}; fix it, then port again", file=sys.stderr)
        return EXIT_PROBLEMS
    new = new or old.with_name(f"{old.stem}_pectus.py")
    if new.exists() and not force:
        print(f"{new} exists; pass --force to overwrite it, or -o to write elsewhere", file=sys.stderr)
        return EXIT_USAGE
    for change in result.changes:
        print(f"{old.name}:{change.line}: {change.message}")
    for note in result.notes:
        print(f"{old.name}:{note.line}: note: {note.message}")
    for problem in result.problems:
        print(f"{old.name}:{problem.line}: error: {problem.message}")
    try:
        new.write_bytes(result.text.encode("utf-8"))
    except OSError as error:
        print(f"Cannot write the ported UOD: {error}", file=sys.stderr)
        return EXIT_USAGE
    count = len(result.changes)
    print(f"Wrote {new}: {count} change{'' if count == 1 else 's'}" if count
          else f"Wrote {new}: no Open Pectus import found, the file is unchanged")
    status = _validate(new, None, False, strict)
    return EXIT_PROBLEMS if result.problems else status


def _check_connection(uod) -> bool:
    """Connect the hardware, validate it online and print every register's value."""
    hardware = uod.hwl
    try:
        hardware.validate_offline()
        hardware.connect()
        try:
            hardware.validate_online()
            registers = [r for r in hardware.registers.values() if r.readable]
            values = hardware.read_batch(registers) if registers else []
        finally:
            hardware.disconnect()
    except Exception as error:
        print(f"{hardware}: {error}", file=sys.stderr)
        return False
    for register, value in zip(registers, values):
        shown = f"{value!r} ({type(value).__name__})"
        if register.to_tag is not None:
            try:
                shown += f" -> {register.to_tag(value)!r}"
            except Exception as error:
                shown += f" -> to_tag failed: {error}"
        print(f"  {register.name} = {shown}")
    print(f"{hardware}: connected, {len(hardware.registers)} registers checked")
    return True


def _simulate(args: argparse.Namespace) -> int:
    from pectus.hardware.base import HardwareError
    from pectus.hardware.memory import parse_settings
    from pectus.pcode.events import DiagnosticReported
    from pectus.testing import MethodRefused, Simulator

    if args.inputs and args.hardware != "memory":
        print("--set gives inputs of the in-memory hardware: add --hardware memory", file=sys.stderr)
        return EXIT_USAGE
    try:
        inputs = parse_settings(args.inputs)
    except ValueError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    uod = _load(args.simulate_uod)
    if uod is None:
        return EXIT_PROBLEMS
    text = _read(args.method)
    if text is None:
        return EXIT_PROBLEMS
    record = args.simulate_events is not None
    try:
        sim = Simulator(uod, text, tick=args.tick, start_time=0.0, record_events=record, hardware=args.hardware)
    except MethodRefused as error:
        print(f"{args.method}: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    except HardwareError as error:
        print(f"{args.simulate_uod}: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    try:
        for name, value in inputs.items():
            sim.set_input(name, value)
    except ValueError as error:
        print(f"--set: {error}", file=sys.stderr)
        return EXIT_USAGE
    out = args.simulate_events.open("w", encoding="utf-8") if record else None
    try:
        if out is not None:
            for diagnostic in sim.analyze():
                event = DiagnosticReported(-1, 0.0, 0.0, diagnostic.line, diagnostic.severity.value,
                                           diagnostic.id, diagnostic.message)
                out.write(json.dumps(event.as_dict()) + "\n")
        result = _simulate_run(sim, args, out)
    finally:
        if out is not None:
            out.close()
    return result


def _simulate_run(sim, args: argparse.Namespace, out) -> int:
    """Run until the method stops, pauses on an error or --max-seconds pass; print a summary."""
    def write_events() -> None:
        if out is not None:
            out.writelines(json.dumps(event.as_dict(), default=str) + "\n" for event in sim.take_events())

    engine = sim.engine
    sim.start()
    wall = time.perf_counter()
    while True:
        sim.run_ticks(1)
        write_events()
        stopped = sim.tick_index > 1 and not engine.started
        if stopped or engine.method_status == "Error" or engine.value("Run Time") >= args.max_seconds:
            break
    wall = time.perf_counter() - wall
    number = sim.tick_index + 1
    print(f"Simulated {sim.time:.1f} s in {wall:.2f} s ({number} ticks, {number / wall:,.0f} ticks/s, "
          f"{sim.time / wall:,.0f}x real time)")
    print(f"System State {engine.system_state}, Method Status {engine.method_status}, "
          f"process time {engine.process_time:.1f} s, {len(engine.marks)} marks, "
          f"{len(engine.run_log)} run-log items")
    # Each mark with the simulated time it was set at, on the clock of "Simulated ... s" above.
    for item in engine.run_log:
        if item.instruction == "Mark":
            print(f"  Mark at {item.start:.1f} s (line {item.line}): {item.arguments}")
    error = engine.last_error if engine.method_status == "Error" else None
    sim.close()  # as the engine stops: safe outputs written, hardware disconnected
    write_events()
    if sim.memory is not None:
        print(sim.memory.describe())
    for line in sim.hardware_log:
        print(f"Hardware at {line}")
    if error is not None:
        print(f"{args.method}: the run paused on an error: {error}")
        if any(not connection.recovery.does_io for connection in sim.connections):
            print("The UOD's hardware is not connected; to run the method without the device, "
                  "add --hardware memory (see docs/simulate.md)")
        return EXIT_PROBLEMS
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    """Run the unit until SIGINT/SIGTERM."""
    import trio

    from pectus.actors.engine import EngineProcess
    from pectus.credentials import credential_from_environment
    from pectus.sentry import flush, init_sentry, report_crash

    uod = _load(args.uod)
    if uod is None:
        return EXIT_PROBLEMS
    for warning in uod.warnings:  # what the reference let pass: the unit runs, the engineer should know
        logging.getLogger("pectus.uod.user").warning("%s", warning)
    engine_id = f"{socket.gethostname()}_{uod.instrument}"
    if init_sentry("engine", args.sentry_event_level, {"engine_id": engine_id, "uod_location": uod.location}):
        log.info("Sentry error reporting is on")
    uplink = None
    if args.standalone:
        log.info("engine %s: unit '%s' from %s, stand-alone", engine_id, uod.instrument, args.uod)
    else:
        try:
            urls = aggregator_urls(args.aggregator_hostname, args.aggregator_port, args.secure)
        except ValueError as error:
            print(f"pectus-engine: {error}", file=sys.stderr)
            return EXIT_USAGE
        outbox = args.outbox or Path("data") / f"{engine_id}.outbox.sqlite3"
        outbox.parent.mkdir(parents=True, exist_ok=True)
        credential = credential_from_environment(os.environ, args.key_file or outbox.with_name(f"{engine_id}.key"))
        uplink = {"outbox": outbox, "url": urls, "engine_id": engine_id, "computer_name": socket.gethostname(),
                  "credential": credential}
        log.info("engine %s: unit '%s' from %s; aggregator %s; outbox %s", engine_id, uod.instrument, args.uod,
                 ", then ".join(urls), outbox)
        if args.secret:
            log.warning("-secret is ignored: the engine proves who it is with its own key or app token")
        if not args.secure and any(not _loopback(url) for url in urls):
            log.warning("connecting without -s: the engine's credential travels unencrypted")
    process = EngineProcess(uod, events_path=args.events, uplink=uplink, on_crash=report_crash)
    try:
        trio.run(process.run_until_signal)
    except Exception as error:
        log.error("the engine stopped on an error: %s", error)
        return EXIT_PROBLEMS
    finally:
        flush()
    log.info("engine stopped")
    return EXIT_OK


def _loopback(url: str) -> bool:
    return url.split("://", 1)[1].rsplit(":", 1)[0] in ("127.0.0.1", "[::1]", "localhost")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
