"""The command lines: pectus-engine validate and simulate (exit codes, findings with lines, the events file),
and what a new user meets first when starting the engine, the aggregator or the demo."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from conftest import DEMO_UOD, ROOT
from pectus.cli.engine import main

DEMO_METHOD = ROOT / "uods" / "demo_method.pcode"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    shutil.copy(DEMO_UOD.with_name("demo_diagram.svg"), tmp_path)  # a copy of the demo UOD finds its diagram
    return path


def test_validate_a_clean_uod_and_method(capsys):
    assert main(["validate", "--uod", str(DEMO_UOD), str(DEMO_METHOD)]) == 0
    out = capsys.readouterr().out
    assert "UOD 'DemoUod' is valid" in out and "no findings" in out


def test_validate_reports_every_finding_with_its_line(tmp_path, capsys):
    method = write(tmp_path, "m.pcode", "Mark: a\nWatch: TT01 > 30\n    Mark: hot\nPU1: 50 %\n")
    assert main(["validate", "--uod", str(DEMO_UOD), str(method)]) == 1
    out = capsys.readouterr().out
    assert f"{method}:2: error:" in out and "unit" in out
    assert f"{method}:4: error:" in out and "did you mean 'PU01'" in out


def test_validate_a_broken_uod_names_its_line(tmp_path, capsys):
    uod = write(tmp_path, "bad_uod.py", DEMO_UOD.read_text().replace(
        'with_process_value("FT01")', 'with_process_value("FT99")', 1))
    assert uod.read_text() != DEMO_UOD.read_text()
    assert main(["validate", "--uod", str(uod)]) == 1
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(uod.read_text().splitlines(), 1) if '"FT99"' in text)
    assert f"bad_uod.py:{line}" in err and "FT99" in err


def test_validate_prints_warnings_exits_0_and_strict_makes_them_errors(tmp_path, capsys):
    """Before: a plot naming no tag refused the UOD (exit 1) and there was no --strict."""
    uod = write(tmp_path, "plot_uod.py", DEMO_UOD.read_text().replace(
        'process_value_names_to_annotate=["Mark"]', 'process_value_names_to_annotate=["Mark", "Category"]', 1))
    assert uod.read_text() != DEMO_UOD.read_text()
    line = next(i for i, text in enumerate(uod.read_text().splitlines(), 1) if "with_plot_configuration" in text)
    warning = (f"plot_uod.py:{line}: warning: with_plot_configuration(...): no tag named 'Category', "
               "so the plot leaves it out")
    assert main(["validate", "--uod", str(uod)]) == 0
    out = capsys.readouterr().out
    assert warning in out and "is valid" in out and "1 warning" in out
    assert main(["validate", "--uod", str(uod), "--strict"]) == 1
    out = capsys.readouterr().out
    assert warning in out and "--strict: the warnings count as errors" in out
    assert main(["validate", "--uod", str(DEMO_UOD), "--strict"]) == 0


def test_simulate_writes_events_and_a_summary(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    assert main(["simulate", "--uod", str(DEMO_UOD), str(DEMO_METHOD), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert "System State Stopped, Method Status OK" in out
    records = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = {r["event"] for r in records}
    assert {"tag", "runlog", "line", "state", "run_started", "run_stopped", "method"} <= kinds
    assert all("process_time" in r for r in records)
    marks = [r["arguments"] for r in records if r["event"] == "runlog" and r["instruction"] == "Mark"
             and r["state"] == "completed"]
    assert marks[0] == "Method started" and marks[-1] == "Method done"
    states = [r["system_state"] for r in records if r["event"] == "state"]
    assert states[0] == "Running" and states[-1] == "Stopped"
    assert any(r["event"] == "tag" and r["name"] == "FT01" and r["unit"] == "L/h" for r in records)


def test_simulate_stops_on_an_error_and_says_where(tmp_path, capsys):
    method = write(tmp_path, "m.pcode", "Mark: a\nPU01: lots\nMark: b\n")
    assert main(["simulate", "--uod", str(DEMO_UOD), str(method), "--max-seconds", "10"]) == 1
    out = capsys.readouterr().out
    assert "Method Status Error" in out and "line 2" in out


def test_simulate_refuses_a_method_with_syntax_errors_whole(tmp_path, capsys):
    method = write(tmp_path, "m.pcode", "Mark: a\n  Mark: b\n.5 Mark: c\n")
    assert main(["simulate", "--uod", str(DEMO_UOD), str(method)]) == 1
    err = capsys.readouterr().err
    assert "2 error(s)" in err and "line 2" in err and "line 3" in err


def test_simulate_honours_max_seconds(tmp_path, capsys):
    method = write(tmp_path, "m.pcode", "Mark: a\nWait: 1 h\nMark: b\n")
    assert main(["simulate", "--uod", str(DEMO_UOD), str(method), "--max-seconds", "60"]) == 0
    assert "Simulated 60.0 s" in capsys.readouterr().out


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "pectus-engine"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "validate" in result.stdout and "simulate" in result.stdout
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2


def test_the_engine_without_a_uod_says_what_is_missing(capsys):
    """Before: the bare help, with nothing saying that -uod was missing."""
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["pectus-engine: the UOD is missing: run a unit with pectus-engine -uod UOD.py, or use "
                                "a subcommand (validate, port-uod, simulate); pectus-engine --help lists every option"]


def test_the_engine_runs_writes_events_and_stops_cleanly_on_sigterm(tmp_path):
    import signal
    import time

    events = tmp_path / "events.jsonl"
    script = Path(sys.executable).parent / "pectus-engine"
    engine = subprocess.Popen([str(script), "-uod", str(DEMO_UOD), "--standalone", "--events", str(events)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (events.exists() and '"Connection Status"' in events.read_text()):
            assert engine.poll() is None, engine.communicate()
            assert time.monotonic() < deadline, "no events within 30 s"
            time.sleep(0.05)
        engine.send_signal(signal.SIGTERM)
        began = time.monotonic()
        _, err = engine.communicate(timeout=10)
        took = time.monotonic() - began
    finally:
        engine.kill()
    assert engine.returncode == 0, err
    assert took < 2.0 and "engine stopped" in err
    first = json.loads(events.read_text().splitlines()[0])
    assert first["event"] == "tag" and first["tick"] == 0


def test_the_engine_refuses_a_broken_uod_with_its_line(tmp_path):
    uod = write(tmp_path, "broken.py", "def create():\n    return undefined_name\n")
    script = Path(sys.executable).parent / "pectus-engine"
    result = subprocess.run([str(script), "-uod", str(uod)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "broken.py:2" in result.stderr and "undefined_name" in result.stderr


def busy_port() -> socket.socket:
    """A listening socket on a free loopback port: the port is taken while it is open."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken


def test_the_aggregator_on_a_busy_port_says_so_in_one_line(tmp_path):
    """Before: a 61-line ExceptionGroup traceback from inside hypercorn's serve."""
    script = Path(sys.executable).parent / "pectus-aggregator"
    with busy_port() as taken:
        port = taken.getsockname()[1]
        result = subprocess.run([str(script), "-p", str(port), "--data-dir", str(tmp_path)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = f"port {port} on 127.0.0.1 is already in use"
    said = [text for text in result.stderr.splitlines() if line in text]
    assert len(said) == 1 and said[0].endswith("choose another port with -p PORT"), result.stderr


def test_the_demo_takes_its_port_from_make_and_says_when_it_is_busy(tmp_path):
    # --no-print-directory: run from within `make test`, make would add "Entering directory" lines.
    dry_run = subprocess.run(["make", "--no-print-directory", "-n", "demo"], cwd=ROOT,
                             env={**os.environ, "PORT": "8411"}, capture_output=True, text=True, timeout=60)
    assert dry_run.stdout.splitlines()[-1].endswith("-m pectus.demo --port 8411"), dry_run.stdout
    with busy_port() as taken:
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "pectus.demo", "--port", str(port)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"port {port} on 127.0.0.1 is already in use (another aggregator, or `make demo`, may be running): "
        f"stop what uses it, or choose another port with PORT={port + 1} make demo")


def test_every_option_of_both_programs_has_help_text():
    """Before: pectus-aggregator --help showed --log-level with no word about it."""
    from pectus.cli import aggregator, engine

    for parser in (engine._parser(), aggregator._parser()):
        unexplained = [action.option_strings for action in parser._actions
                       if action.option_strings and not action.help]
        assert unexplained == [], parser.prog


def test_a_refused_argument_says_what_is_valid_in_validate_and_in_the_run(tmp_path, capsys):
    """The analyzer and the run give the same reason, naming the range, units and choices."""
    method = write(tmp_path, "m.pcode", "VA01: Foo\nPU01: 500 L\n")
    assert main(["validate", "--uod", str(DEMO_UOD), str(method)]) == 1
    out = capsys.readouterr().out
    valve = "Foo is not a valid value: expected one of Open or Closed"
    pump = "500 L is not a valid value: expected 0 to 100 %; L is a volume, not a percentage"
    assert f"{method}:1: error: VA01: {valve}." in out and f"{method}:2: error: PU01: {pump}." in out
    assert main(["simulate", "--uod", str(DEMO_UOD), str(method), "--max-seconds", "10"]) == 1
    assert (f"the run paused on an error: line 1: Command 'VA01' failed: Invalid arguments for command 'VA01': "
            f"{valve}") in capsys.readouterr().out


def test_validate_and_the_run_use_the_same_word_for_an_unknown_instruction(tmp_path, capsys):
    """Before: the analyzer said "Unknown instruction" where the run said "Invalid instruction"."""
    method = write(tmp_path, "m.pcode", "Danger: now\n")
    assert main(["validate", "--uod", str(DEMO_UOD), str(method)]) == 1
    assert f"{method}:1: error: Invalid instruction 'Danger': " in capsys.readouterr().out
    assert main(["simulate", "--uod", str(DEMO_UOD), str(method), "--max-seconds", "10"]) == 1
    assert "the run paused on an error: line 1: Invalid instruction 'Danger'" in capsys.readouterr().out


def test_simulate_lists_the_marks_with_their_time(tmp_path, capsys):
    """Before: only "2 marks"."""
    method = write(tmp_path, "m.pcode", "Mark: first\nWait: 2 s\nMark: second one\n")
    assert main(["simulate", "--uod", str(DEMO_UOD), str(method)]) == 0
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.startswith("  Mark at")]
    assert listed == ["  Mark at 0.1 s (line 1): first", "  Mark at 2.2 s (line 3): second one"], out


def test_docs_engine_lists_every_option_of_the_engine():
    """Before: docs/engine.md left out --standalone (and, earlier, --outbox)."""
    from pectus.cli import engine

    table = (ROOT / "docs" / "engine.md").read_text(encoding="utf-8")
    missing = [action.option_strings[-1] for action in engine._parser()._actions
               if action.option_strings and action.dest != "help" and f"`{action.option_strings[-1]}" not in table]
    assert missing == []


def test_the_licence_is_an_spdx_expression_so_make_demo_installs_without_warnings():
    """Before: `license = { text = "MIT" }`, which setuptools warns about on every `make demo` install."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]  # the first to read an SPDX string
