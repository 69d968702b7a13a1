"""The examples of the docs run as tests.

* docs/pcode.md: each ```pcode block runs on the demo unit and is followed by an HTML comment
  that states what its run must show, e.g. ``<!-- marks: A, B; state: Stopped -->``: the marks
  in order and, optionally, the System State once the marks are there.
* docs/uod.md, docs/testing.md and docs/engine.md: each ```python block runs as a script from the
  project root.
"""

from __future__ import annotations

import re

import pytest

from conftest import DEMO_UOD, ROOT
from pectus.pcode import units
from pectus.testing import Simulator

_EXAMPLE = re.compile(r"```pcode\n(?P<code>.*?)```\n<!-- (?P<expect>.*?) -->", re.S)


def _examples():
    text = (ROOT / "docs" / "pcode.md").read_text(encoding="utf-8")
    found = []
    for match in _EXAMPLE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        expect = dict(part.strip().split(": ", 1) for part in match.group("expect").split(";"))
        found.append(pytest.param(match.group("code"), expect, id=f"pcode.md:{line}"))
    return found


def test_every_example_states_what_it_shows():
    text = (ROOT / "docs" / "pcode.md").read_text(encoding="utf-8")
    assert text.count("```pcode") == len(_examples()) >= 8


@pytest.mark.parametrize("code, expect", _examples())
def test_example(code, expect):
    sim = Simulator(DEMO_UOD, code)
    sim.start()
    marks = [m.strip() for m in expect["marks"].split(",")]
    sim.run_until(lambda: sim.marks == marks or len(sim.marks) > len(marks), max_seconds=120)
    assert sim.marks == marks
    assert sim.method_status == "OK"
    if "state" in expect:
        sim.run_until(lambda: sim.system_state == expect["state"], max_seconds=10)


def _python_examples():
    found = []
    for guide in ("uod.md", "testing.md", "engine.md"):
        text = (ROOT / "docs" / guide).read_text(encoding="utf-8")
        for match in re.finditer(r"```python\n(.*?)```", text, flags=re.S):
            line = text.count("\n", 0, match.start()) + 2
            found.append(pytest.param(guide, line, match.group(1), id=f"{guide}:{line}"))
    return found


@pytest.mark.parametrize("guide, line, code", _python_examples())
def test_python_example(guide, line, code, monkeypatch):
    monkeypatch.chdir(ROOT)
    with units._scratch_units():  # an example may add units; they must not leak into other tests
        exec(compile("\n" * (line - 1) + code, f"docs/{guide}", "exec"),
             {"__name__": "example", "__file__": str(ROOT / "docs" / guide)})
