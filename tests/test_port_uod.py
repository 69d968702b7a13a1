"""Porting Open Pectus UODs: the names pectus.uod offers, `pectus-engine port-uod`, the ported
corpus (tests/ported_uods/, written in the reference's style) and the reference's own examples.

The reference (the openpectus package) is never a dependency: the test that ports its example
UODs finds it through OPENPECTUS_PYTHON (an interpreter that has it installed) or in this
interpreter, copies the files into a temporary directory, and skips saying why when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import pectus.uod
from conftest import ROOT
from pectus.cli.engine import main
from pectus.pcode import units
from pectus.testing import Simulator
from pectus.uod import load_uod
from pectus.uod.port import NOT_PROVIDED, RAISES_WHEN_USED, REFERENCE_NAMES, port_source

CORPUS = ROOT / "tests" / "ported_uods"


@pytest.fixture(autouse=True)
def scratch_units():
    """A ported UOD may add units (with_measurement_unit); they must not leak into other tests."""
    with units._scratch_units():
        yield


def port(old: Path, new: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    """Run ``pectus-engine port-uod OLD -o NEW``; its exit code and what it printed."""
    code = main(["port-uod", str(old), "-o", str(new), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --- every name a reference UOD imports --------------------------------------------------------


def test_every_reference_name_is_importable_from_pectus_uod():
    """Before: format_time_as_clock, QUANTITY_UNIT_MAP, ReadingTag... raised ImportError."""
    for module, names in REFERENCE_NAMES.items():
        for name in names:
            assert hasattr(pectus.uod, name), f"{module}.{name}"
    for name, reason in RAISES_WHEN_USED.items():
        with pytest.raises(NotImplementedError, match=f"{name} is not available in Pectus: "):
            getattr(pectus.uod, name)()
        assert reason.split(";")[0] in getattr(pectus.uod, name).__doc__
    assert not set(NOT_PROVIDED) & {n for names in REFERENCE_NAMES.values() for n in names}


def test_the_uod_guide_lists_every_name_and_what_raises():
    """docs/uod.md's table is the list port-uod works from, module by module."""
    import re

    text = (ROOT / "docs" / "uod.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(openpectus\.[\w.]+)` \| (.*) \|$", text, flags=re.M)
    assert {module: tuple(re.findall(r"`(\w+)`", names)) for module, names in rows} == REFERENCE_NAMES
    raising = {name for _, names in rows for name in re.findall(r"`(\w+)` \(raises when used\)", names)}
    assert raising == set(RAISES_WHEN_USED)
    assert all(f"`{name}`" in text for name in NOT_PROVIDED)


def test_reference_names_keep_their_meaning():
    """Before: QUANTITY_UNIT_MAP, get_compatible_unit_names... did not exist; as_int('3.0') was None."""
    from pectus.uod import (QUANTITY_UNIT_MAP, as_int, format_time_as_clock, get_compatible_unit_names,
                            get_unit_quantity_name, tags)

    assert "L/h" in QUANTITY_UNIT_MAP["flow"] and QUANTITY_UNIT_MAP is units.SUPPORTED_UNITS
    assert get_compatible_unit_names(None) == [""] and get_compatible_unit_names("L") == ["L", "mL"]
    with pytest.raises(ValueError, match="Invalid unit: 'parsecs'"):
        get_unit_quantity_name("parsecs")
    assert as_int("3.0") == 3 and as_int("3.2") is None
    assert format_time_as_clock(3725) == "01:02:05"
    assert tags.TagFormatFunction is pectus.uod.TagFormatFunction
    units.add_unit("kg/m2/h", quantity_relation={"massflux": "mass / time / area"})  # the reference's dict form
    assert units.quantity_of("kg/m2/h") == "massflux"


def test_a_driver_with_the_reference_tick_is_ticked_by_pectus():
    """Before: Pectus called tick(tick_time, increment_time) on a tick(self) override: TypeError."""
    class Counter(pectus.uod.HardwareLayerBase):
        def __init__(self) -> None:
            super().__init__()
            self.ticks = 0

        def tick(self):
            self.ticks += 1

    counter = Counter()
    pectus.uod.UodBuilder().with_hardware(counter)
    counter.tick(1.0, 0.1)
    assert counter.ticks == 1


# --- port-uod ----------------------------------------------------------------------------------

EVERY_FORM = (
    "# -*- coding: utf-8 -*-  température\r\n"
    "import os, openpectus.engine.hardware as hw\r\n"
    "import openpectus.engine.hardware\r\n"
    "from openpectus.lang.exec import tags_impl as tags, units  # two modules\r\n"
    "from openpectus.engine.uod_builder_api import (UodBuilder,  # the builder\r\n"
    "    RegexNumber as Number,\r\n"
    "    tags as t)\r\n"
    "\r\n"
    "\r\n"
    "class Hw(openpectus.engine.hardware.HardwareLayerBase):\r\n"
    "    def kind(self):\r\n"
    "        from openpectus.engine.opcua_hardware import OPCUA_Hardware\r\n"
    "        return OPCUA_Hardware, openpectus.engine.hardware.RegisterDirection.Read\r\n"
)

PORTED = (
    "# -*- coding: utf-8 -*-  température\r\n"
    "import os, pectus.uod as hw\r\n"
    "import pectus.uod\r\n"
    "from pectus import uod as tags, uod as units  # two modules\r\n"
    "from pectus.uod import (UodBuilder,  # the builder\r\n"
    "    RegexNumber as Number,\r\n"
    "    tags as t)\r\n"
    "\r\n"
    "\r\n"
    "class Hw(pectus.uod.HardwareLayerBase):\r\n"
    "    def kind(self):\r\n"
    "        from pectus.uod import OPCUA_Hardware\r\n"
    "        return OPCUA_Hardware, pectus.uod.RegisterDirection.Read\r\n"
)


def test_port_rewrites_every_import_form_and_keeps_every_other_byte():
    """Before: there was no port-uod; docs/uod.md named one import line to change by hand."""
    result = port_source(EVERY_FORM)
    assert result.text == PORTED
    assert [(c.line, c.message) for c in result.changes] == [
        (2, "openpectus.engine.hardware as hw -> pectus.uod as hw"),
        (3, "openpectus.engine.hardware -> pectus.uod"),
        (4, "openpectus.lang.exec -> pectus"),
        (4, "tags_impl as tags -> uod as tags"),
        (4, "units -> uod as units"),
        (5, "openpectus.engine.uod_builder_api -> pectus.uod"),
        (10, "openpectus.engine.hardware -> pectus.uod"),
        (12, "openpectus.engine.opcua_hardware -> pectus.uod"),
        (13, "openpectus.engine.hardware -> pectus.uod")]
    assert result.problems == [] and result.notes == []
    compile(result.text, "ported.py", "exec")


def test_port_uod_reports_a_name_pectus_lacks_with_its_line_and_keeps_it(tmp_path, capsys):
    """Before: there was no port-uod; a hand-ported file failed to load on its first unknown name."""
    old = tmp_path / "old_uod.py"
    old.write_text("from openpectus.lang.exec.tags import Tag, ChangeListener\n"
                   "import openpectus.engine.engine\n"
                   "engine = openpectus.engine.engine.Engine\n")
    code, out = port(old, tmp_path / "new_uod.py", capsys)
    assert code == 1
    assert ("old_uod.py:1: error: 'ChangeListener' (from openpectus.lang.exec.tags) is not provided by pectus.uod: "
            "Pectus recalculates a DerivedTag every tick") in out
    assert "old_uod.py:3: error: openpectus.engine.engine.Engine: not a name of a UOD module" in out
    assert (tmp_path / "new_uod.py").read_text().startswith("from pectus.uod import Tag, ChangeListener\n")
    assert "The UOD cannot be loaded" in out and "ChangeListener" in out


def test_port_uod_never_overwrites_without_force(tmp_path, capsys):
    """Before: there was no port-uod."""
    old = shutil.copy(CORPUS / "filtration_skid.py", tmp_path / "skid.py")
    code, out = port(Path(old), tmp_path / "skid.py", capsys)
    assert code == 2 and "exists; pass --force to overwrite it" in out
    assert main(["port-uod", str(old)]) == 0  # the default: OLD_pectus.py next to OLD.py
    assert "from pectus.uod import" in (tmp_path / "skid_pectus.py").read_text()


# --- the ported corpus: each file ported with port-uod, then a method run in the simulator -----

SKID_METHOD = """\
Base: L
VA01: Open
PU01: 50 %
Note: feed started
0.005 Mark: five mL
PU01: 0 %
Mark: done
"""

BALANCE_METHOD = """\
Stir: 300 rpm
Wait: 1 s
Mark: weighed
"""


def check_skid(sim: Simulator) -> None:
    assert sim.value("FT01") == 0.0 and sim.value("Note") == "feed started"
    assert 0.005 <= sim.value("Accumulated Volume") < 0.007
    assert sim.value("Accumulated CV") == pytest.approx(sim.value("Accumulated Volume") / 0.01)
    assert sim.value("Uptime") > 0, "the driver's tick() was not called (Open Pectus calls it every tick)"
    assert sim.tag("Uptime").value_formatted.startswith("00:00:0")


def check_balance(sim: Simulator) -> None:
    assert sim.value("Stirrer") == 300
    assert sim.value("Weight") > 100.0  # the balance was read


#: Corpus files run through the simulator on their own hardware: the method and what to check.
RUN: dict[str, tuple[str, Callable[[Simulator], None]]] = {
    "filtration_skid.py": (SKID_METHOD, check_skid),
    "composite_balance.py": (BALANCE_METHOD, check_balance),
}
#: OPC-UA corpus files: no device here, so they run on the in-memory hardware (see the test below).
OPCUA = ["opcua_column.py"]


def test_every_corpus_file_is_ported_by_a_test():
    assert sorted(RUN) + OPCUA == sorted([*RUN, *OPCUA]) and \
        sorted(p.name for p in CORPUS.glob("*.py")) == sorted([*RUN, *OPCUA])


@pytest.mark.parametrize("name", sorted(RUN))
def test_a_ported_corpus_uod_runs_a_method_in_the_simulator(name, tmp_path, capsys):
    """Before: port-uod did not exist and a hand port failed (format_time_as_clock missing, tick())."""
    old = Path(shutil.copy(CORPUS / name, tmp_path / name))
    new = tmp_path / f"ported_{name}"
    code, out = port(old, new, capsys)
    assert code == 0, out
    assert port_source(new.read_text()).changes == []  # no openpectus import is left
    method, check = RUN[name]
    sim = Simulator(new, method)
    sim.start()
    last_mark = method.strip().splitlines()[-1].split(": ")[1]
    sim.run_until(lambda: last_mark in sim.marks or sim.method_status == "Error", max_seconds=10)
    assert sim.method_status == "OK", sim.errors
    check(sim)


COLUMN_METHOD = """\
Batch: Lot 7
Valve: Open
Fill: 2 L/min
Mark: filled
"""


def test_a_ported_opcua_uod_validates_and_runs_a_method_on_the_in_memory_hardware(tmp_path, capsys):
    """Before: ';' paths were refused by the OPC-UA driver and the plot's unknown CT01 refused the UOD."""
    for name in OPCUA:
        old = Path(shutil.copy(CORPUS / name, tmp_path / name))
        new = tmp_path / f"ported_{name}"
        code, out = port(old, new, capsys)
        assert code == 0, out
        assert f"{name}:52: 'Objects;2:System;2:FeedRate' -> 'Objects/2:System/2:FeedRate'" in out
        assert "warning: with_plot_configuration(...): no tag named 'CT01', so the plot leaves it out" in out
        unit = load_uod(new)
        assert all(";" not in r.options["path"] for r in unit.hwl.registers.values())
        assert main(["validate", "--uod", str(new), "--strict"]) == 1
        # No OPC-UA server here: the in-memory process image takes the hardware's place.
        sim = Simulator(new, COLUMN_METHOD, hardware="memory")
        for register, raw in (("UV", 0.5), ("Diavolumes", 0.0), ("Block Diavolumes", 0.0)):
            sim.set_input(register, raw)
        sim.start()
        sim.run_until(lambda: "filled" in sim.marks or sim.method_status == "Error", max_seconds=10)
        assert sim.method_status == "OK", sim.errors
        assert (sim.value("Batch Name"), sim.value("Valve"), sim.value("UV")) == ("Lot 7", "Open", 500.0)


# --- the reference's own example UODs ----------------------------------------------------------

REFERENCE_EXAMPLES = ["engine/configuration/demo_uod.py", "engine/configuration/opcua_test.py",
                      "test/integration/heavy_uod.py"]


def reference_package() -> Path | None:
    """The openpectus package folder: in the interpreter OPENPECTUS_PYTHON names, or in this one."""
    python = os.environ.get("OPENPECTUS_PYTHON")
    if python:
        found = subprocess.run([python, "-c", "import importlib.util, json; s = importlib.util.find_spec("
                                "'openpectus'); print(json.dumps(s and s.submodule_search_locations[0]))"],
                               capture_output=True, text=True, timeout=60)
        folder = json.loads(found.stdout or "null") if found.returncode == 0 else None
        return Path(folder) if folder else None
    spec = importlib.util.find_spec("openpectus")
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def test_the_reference_example_uods_port_validate_and_run(tmp_path, capsys):
    """Before: demo_uod.py and heavy_uod.py failed on their imports, opcua_test.py on its plot names."""
    package = reference_package()
    if package is None:
        pytest.skip("the openpectus package is not installed here; set OPENPECTUS_PYTHON to an interpreter "
                    "that has it to port its example UODs")
    for example in REFERENCE_EXAMPLES:
        old = Path(shutil.copy(package / example, tmp_path / Path(example).name))
        code, out = port(old, tmp_path / f"{old.stem}_pectus.py", capsys)
        assert code == 0, out
        assert "is valid" in out and "error" not in out
    sim = Simulator(tmp_path / "demo_uod_pectus.py", "Mark: a\nTestInt: 5\nCmdWithRegexArgs: 5 dm2\nMark: b\n")
    sim.start()
    sim.run_until(lambda: "b" in sim.marks or sim.method_status == "Error", max_seconds=10)
    assert sim.method_status == "OK", sim.errors
    assert sim.value("TestInt") == 5 and sim.value("CmdWithRegexArgs") == 5.0  # the tag is in dm2


def test_the_reference_modules_have_the_names_pectus_offers_for_them():
    """The table of names is the reference's own: each name exists in the module it is listed under."""
    python = os.environ.get("OPENPECTUS_PYTHON")
    if not python:
        pytest.skip("set OPENPECTUS_PYTHON to an interpreter with the openpectus package to check the table")
    script = ("import importlib, json, sys\nmissing = []\n"
              "for module, names in json.loads(sys.argv[1]).items():\n"
              "    m = importlib.import_module(module)\n"
              "    missing += [f'{module}.{n}' for n in names if not hasattr(m, n)]\n"
              "print(json.dumps(missing))\n")
    table = {m: n for m, n in REFERENCE_NAMES.items() if m != "openpectus.engine.labjack_hardware"}
    found = subprocess.run([python, "-c", script, json.dumps(table)], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == []
