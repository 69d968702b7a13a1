"""The UOD API: builder, validation with UOD lines, loader, regex helpers, commands, simulated
hardware and the demo unit.

Spec: shared/spec/engine.md sections 7, 8 and 11.2.
"""

from __future__ import annotations

import re
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pectus.hardware.base import HardwareError, NullHardware
from pectus.pcode import units
from pectus.uod import (REGEX_BASE_ARG, REGEX_DURATION, REGEX_DURATION_OPTIONAL, REGEX_INT, REGEX_TEXT, Colors,
                        PlotAxis, PlotColorRegion, PlotConfiguration, RegexCategorical, RegexNumber,
                        RegexNumberOptional, RegexText, Register, RegisterDirection, SimulatedHardware, SubPlot,
                        UnitOperationDefinition, UnitOperationDefinitionBase, UodBuilder, UodCommand, UodError,
                        as_decimal, as_int, load_uod, tags)
from pectus.uod.commands import CommandDefinition
from pectus.uod.regex import describe_accepted, describe_pattern

ROOT = Path(__file__).resolve().parent.parent
DEMO_UOD = ROOT / "uods" / "demo_uod.py"
UOD_GUIDE = ROOT / "docs" / "uod.md"


def minimal() -> UodBuilder:
    """A builder with the required identity and no hardware registers."""
    return (UodBuilder().with_instrument("Unit").with_author("Ann", "ann@example.com")
            .with_filename("unit.py").with_hardware_none())


# --- the demo unit -------------------------------------------------------------------------------


@pytest.fixture
def demo() -> UnitOperationDefinition:
    return load_uod(DEMO_UOD)


def test_demo_loads_and_validates(demo):
    assert isinstance(demo, UnitOperationDefinitionBase)
    assert demo.validate() == []
    assert demo.instrument == "DemoUod"
    assert demo.options == {"uod_name": "DemoUod", "uod_author_name": "Demo Author",
                            "uod_author_email": "demo@pectus.example", "uod_filename": str(DEMO_UOD),
                            "location": "Demo lab / simulated skid"}
    assert demo.data_log_interval_seconds == 1
    assert {"PU01", "VA01", "FT01", "TT01", "UV01", "Totalizer", "Column Volume",
            "Accumulated Volume", "Block Volume", "Accumulated CV", "Block CV"} <= set(demo.tags.names())
    assert demo.base_unit_provider["L"] == ("Accumulated Volume", "Block Volume")
    assert demo.base_unit_provider["CV"] == ("Accumulated CV", "Block CV")
    assert demo.base_unit_provider["min"] == ("Scope Time", "Block Time")
    assert {r.kind for r in demo.readings} == {"reading", "reading_with_entry", "reading_with_choice"}
    assert demo.system_tags is None


def test_demo_examples_all_parse(demo):
    examples = demo.pcode_examples()
    assert "PU01: 50 %" in examples and "Reset" in examples and "VA01: Open" in examples
    for line in examples:
        name, _, argument = line.partition(": ")
        assert demo.commands[name].parse(argument) is not None, line


def test_demo_process_value_entries(demo):
    entries = {r.tag_name: r for r in demo.readings if r.kind == "reading_with_entry"}
    assert demo.entry_data_type(entries["PU01"]) == "float"
    assert demo.valid_value_units(entries["PU01"]) == ["%"]  # narrowed by the command's regex
    assert demo.valid_value_units(entries["Column Volume"]) == ["L", "mL"]


def test_tags_are_a_list_indexable_by_name(demo):
    assert demo.tags["FT01"] is demo.tags.get("FT01") is demo.tags[demo.tags.names().index("FT01")]
    assert "FT01" in demo.tags and "FT99" not in demo.tags
    assert demo.tags.get("FT99") is None
    with pytest.raises(KeyError, match="No tag named 'FT99'"):
        demo.tags["FT99"]


# --- the simulated demo hardware -----------------------------------------------------------------


def run_demo(demo: UnitOperationDefinition, seconds: float, **outputs: object) -> dict:
    """Write raw outputs, tick the hardware at 0.1 s for ``seconds``, return the raw values."""
    hw = demo.hwl
    for name, value in outputs.items():
        hw.write(value, hw.registers[name])
    for _ in range(round(seconds / 0.1)):
        hw.tick(0.0, 0.1)
    reads = [r for r in hw.registers.values() if r.readable]
    return dict(zip([r.name for r in reads], hw.read_batch(reads)))


def test_pump_with_open_valve_gives_flow_and_the_totalizer_integrates_it(demo):
    closed = run_demo(demo, 5, PU01=50.0, VA01=0)
    assert closed["FT01"] == 0.0 and closed["Totalizer"] == 0.0
    opened = run_demo(demo, 10, VA01=1)
    assert opened["FT01"] == pytest.approx(30.0, rel=0.02)  # 0.6 L/h per %, within the ripple
    # About 10 s at 30 L/h less the 1 s start-up lag: 9 s * 30 L/h = 0.075 L.
    assert opened["Totalizer"] == pytest.approx(0.075, rel=0.03)


def test_heater_raises_the_temperature_and_it_cools_back_to_ambient(demo):
    assert run_demo(demo, 1)["TT01"] == 20.0
    hot = run_demo(demo, 100, HE01=50.0)["TT01"]
    assert 45 < hot < 50  # settles towards 20 + 0.6 * 50 = 50 degC
    assert run_demo(demo, 200, HE01=0.0)["TT01"] < 21


def test_uv_rises_while_sample_flows(demo):
    baseline = run_demo(demo, 5, PU01=50.0, VA01=1)["UV01"]
    assert baseline == pytest.approx(0.005)  # AU; the register's to_tag makes it mAU
    assert demo.hwl.registers["UV01"].to_tag(baseline) == pytest.approx(5.0)
    assert run_demo(demo, 30, Inlet=1)["UV01"] > 0.7


def test_reset_signal_zeroes_the_totalizer(demo):
    assert run_demo(demo, 10, PU01=100.0, VA01=1)["Totalizer"] > 0
    assert run_demo(demo, 0.1, Reset=1)["Totalizer"] == 0.0
    assert run_demo(demo, 1, Reset=0)["Totalizer"] > 0


def test_simulation_is_deterministic():
    traces = []
    for _ in range(2):
        unit = load_uod(DEMO_UOD)
        trace = [tuple(run_demo(unit, 0.1, PU01=float(i % 100), VA01=i // 50 % 2, HE01=30.0).values())
                 for i in range(300)]
        traces.append(trace)
    assert traces[0] == traces[1]


def test_simulated_hardware_checks_directions_and_connection():
    hw = SimulatedHardware({"FT01": 1.5})
    read, write = Register("FT01", RegisterDirection.Read), Register("PU01", RegisterDirection.Write)
    assert hw.is_connected
    assert hw.read_batch([read]) == [1.5]
    hw.write_batch([42], [write])
    assert hw.values["PU01"] == 42
    with pytest.raises(HardwareError, match="cannot read register 'PU01'"):
        hw.read(write)
    with pytest.raises(HardwareError, match="cannot write register 'FT01'"):
        hw.write(1, read)
    hw.disconnect()
    with pytest.raises(HardwareError, match="not connected"):
        hw.read(read)
    hw.connect()
    hw.tick(100.0, 0.25)
    hw.tick(100.25, 0.25)
    assert hw.elapsed == 0.5


# --- validation names the UOD line ---------------------------------------------------------------

UOD_TEMPLATE = '''\
from pectus.uod import (PlotAxis, PlotColorRegion, PlotConfiguration, RegexNumber, RegisterDirection,
                        SubPlot, UodBuilder, tags)


def set_flow(cmd, number, number_unit):
    cmd.set_complete()


def create():
    return (
        UodBuilder()
{calls}
        .build()
    )
'''

IDENTITY = '''\
        .with_instrument("Test unit")
        .with_author("Ann", "ann@example.com")
        .with_filename(__file__)
        .with_hardware_none()
        .with_tag(tags.ReadingTag("FT01", "L/h"))'''


def write_uod(tmp_path: Path, calls: str, identity: str = IDENTITY) -> Path:
    path = tmp_path / "uod.py"
    body = "\n".join(line for line in (identity, textwrap.indent(textwrap.dedent(calls).strip("\n"), " " * 8)) if line)
    path.write_text(UOD_TEMPLATE.format(calls=body))
    return path


def line_of(path: Path, text: str, occurrence: int = 1) -> int:
    lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return lines[occurrence - 1]


def problems_of(path: Path) -> list[str]:
    with pytest.raises(UodError) as error:
        load_uod(path)
    assert str(path) in str(error.value)
    return error.value.problems


def test_unknown_tag_in_process_value_names_the_line(tmp_path):
    path = write_uod(tmp_path, '.with_process_value("FT99")')
    assert problems_of(path) == [
        f"uod.py:{line_of(path, 'FT99')}: with_process_value('FT99'): no tag named 'FT99'; tags are FT01"]
    path = write_uod(tmp_path, '.with_process_value("FT02")')
    assert problems_of(path) == [
        f"uod.py:{line_of(path, 'FT02')}: with_process_value('FT02'): no tag named 'FT02'; "
        "did you mean 'FT01'?; tags are FT01"]


def test_unknown_tag_in_plot_is_a_warning_with_its_line_and_the_plot_leaves_it_out(tmp_path):
    """Open Pectus draws what exists (before: the UOD was refused with this message as an error)."""
    path = write_uod(tmp_path, '''
        .with_plot_configuration(PlotConfiguration(
            sub_plots=[SubPlot([PlotAxis("Flow", ["FT01", "FT02"], 10, 0, "#ff0000")]),
                       SubPlot([PlotAxis("Gone", ["Nothing"], 10, 0, "#ff0000")])],
            color_regions=[PlotColorRegion("Category", {"Up": "#66ff6633"}),
                           PlotColorRegion("Block", {"A": "#66ff6633"})],
            process_value_names_to_annotate=["Mark", "Category"],
            x_axis_process_value_names=["Process Time", "Time"]))''')
    unit = load_uod(path)
    line = line_of(path, 'with_plot_configuration')
    at = f"uod.py:{line}: with_plot_configuration(...): no tag named"
    assert unit.warnings == [
        f"{at} 'Category', so the plot leaves it out; tags are FT01",
        f"{at} 'FT02', so the plot leaves it out; did you mean 'FT01'?; tags are FT01",
        f"{at} 'Nothing', so the plot leaves it out; tags are FT01",
        f"{at} 'Time', so the plot leaves it out; tags are FT01"]
    plot = unit.plot_configuration.to_dict()
    assert plot == {"process_value_names_to_annotate": ["Mark"],
                    "color_regions": [{"process_value_name": "Block", "value_color_map": {"A": "#66ff6633"}}],
                    "sub_plots": [{"axes": [{"label": "Flow", "process_value_names": ["FT01"], "y_max": 10,
                                             "y_min": 0, "color": "#ff0000"}], "ratio": 1}],
                    "x_axis_process_value_names": ["Process Time"]}


def test_a_uod_batch_name_tag_is_adopted_and_a_different_kind_is_a_warning(tmp_path):
    """Open Pectus needs the UOD's own Batch Name (before: refused as the name of an engine tag)."""
    assert load_uod(write_uod(tmp_path, '.with_tag(tags.Tag("Batch Name"))')).warnings == []
    path = write_uod(tmp_path, '.with_tag(tags.SelectTag("Batch Name", "A", None, ["A", "B"]))')
    [warning] = load_uod(path).warnings
    assert warning.startswith(f"uod.py:{line_of(path, 'Batch Name')}: with_tag('Batch Name'): the engine adopts "
                              "this 'Batch Name' as its batch tag, but it is a SelectTag")


def test_duplicate_tag_and_command_name_both_lines(tmp_path):
    path = write_uod(tmp_path, '''
        .with_tag(tags.Tag("FT01"))
        .with_command_regex_arguments("Flow", RegexNumber(["L/h"]), set_flow)
        .with_command_regex_arguments("Flow", RegexNumber(["L/h"]), set_flow)''')
    first_tag, second_tag = line_of(path, '"FT01"'), line_of(path, '"FT01"', 2)
    first_command, second_command = line_of(path, '"Flow"'), line_of(path, '"Flow"', 2)
    assert problems_of(path) == [
        f"uod.py:{second_tag}: with_tag('FT01'): a tag named 'FT01' already exists (added at line {first_tag})",
        f"uod.py:{second_command}: with_command_regex_arguments('Flow'): a command named 'Flow' already exists "
        f"(added at line {first_command})"]


def test_exec_fn_arguments_must_match_the_regex_groups(tmp_path):
    path = write_uod(tmp_path, '''
        .with_command_regex_arguments("Flow", RegexNumber(["L/h"]), lambda cmd, speed: None)
        .with_command_regex_arguments("Flow2", RegexNumber(["L/h"]), lambda cmd, number, **kwargs: None)
        .with_command("Plain", lambda cmd: None)
        .with_command("Bare", lambda cmd, value: None, arg_parse_fn=None)
        .with_command("First", lambda value: None)''')
    flow, plain, bare, first = (line_of(path, name) for name in ('"Flow"', "Plain", "Bare", "First"))
    assert problems_of(path) == [
        f"uod.py:{flow}: with_command_regex_arguments('Flow'): <lambda>(cmd, speed) does not take 'number', "
        "'number_unit'; the argument pattern's groups are number, number_unit (add the parameter or **kwargs)",
        f"uod.py:{flow}: with_command_regex_arguments('Flow'): <lambda>(cmd, speed) needs 'speed', which it is "
        "never given; the argument pattern's groups are number, number_unit",
        f"uod.py:{plain}: with_command('Plain'): <lambda>(cmd) does not take 'value'; the default parser gives "
        "'value' (add the parameter or **kwargs)",
        f"uod.py:{bare}: with_command('Bare'): <lambda>(cmd, value) needs 'value', which it is never given; "
        "the command takes no arguments",
        f"uod.py:{first}: with_command('First'): the first parameter of <lambda>(value) must be 'cmd'"]


def test_missing_identity_is_reported_at_build(tmp_path):
    path = write_uod(tmp_path, ".with_hardware_none()", identity="")
    build = line_of(path, ".build()")
    assert problems_of(path) == [
        f"uod.py:{build}: build(): the unit needs an instrument name: .with_instrument('My unit')",
        f"uod.py:{build}: build(): the UOD needs an author name and email: .with_author('Name', 'name@example.com')",
        f"uod.py:{build}: build(): the UOD needs its filename: .with_filename(__file__)"]


def test_blank_instrument_is_reported_at_its_call(tmp_path):
    path = write_uod(tmp_path, "", identity=IDENTITY.replace('"Test unit"', '" "'))
    assert problems_of(path) == [f"uod.py:{line_of(path, 'with_instrument')}: with_instrument(' '): "
                                 "the unit needs an instrument name: .with_instrument('My unit')"]


def test_all_problems_are_reported_at_once_in_line_order(tmp_path):
    path = write_uod(tmp_path, '''
        .with_hardware_register("TT01", RegisterDirection.Read)
        .with_hardware_register("PU01", RegisterDirection.Read, safe_value=0)
        .with_process_value("FT01")
        .with_process_value("FT01")
        .with_process_value_entry("FT01", entry_data_type="int")
        .with_process_value_choice("FT01", {})
        .with_command_overlap(["Reset", "Drain"])
        .with_command_overlap(["Reset"])
        .with_data_log_interval_seconds(0)
        .with_base_unit_provider(["g"], "Mass", "Block Mass")
        .with_accumulated_volume("FT01")
        .with_tag(tags.Tag("Run Time"))''')
    problems = problems_of(path)
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines)
    expected = {
        "TT01": "register 'TT01' needs a tag of the same name to be read into",
        "safe_value=0": "safe_value is only for registers that are written (Write or Both)",
        'with_process_value("FT01")': None,
        "int": "'FT01' is already a process value",
        "{}": "'FT01' is already a process value",
        '["Reset", "Drain"]': None,  # a warning: the group overlaps nothing, which a run survives
        '["Reset"])': "an overlap group needs a list of at least two command names",
        "interval": "the data log interval must be a number of seconds > 0",
        '"Mass"': "base unit 'g': no tag named 'Mass'",
        "accumulated_volume": "tag 'FT01' must have a volume unit such as L or mL, not 'L/h'",
        "Run Time": "'Run Time' is the name of an engine tag; choose another name",
    }
    for marker, message in expected.items():
        line = line_of(path, marker)
        at_line = [p for p in problems if p.startswith(f"uod.py:{line}:")]
        if message is None:
            assert at_line == []
        else:
            assert any(message in p for p in at_line), (marker, at_line)
    assert any("base unit 'g': no tag named 'Block Mass'" in p for p in problems)


def test_entry_data_types_are_checked(tmp_path):
    path = write_uod(tmp_path, '''
        .with_tag(tags.Tag("Count", value=3))
        .with_tag(tags.Tag("Note"))
        .with_process_value_entry("Count", entry_data_type="float")
        .with_process_value_entry("FT01", entry_data_type="int")
        .with_process_value_entry("Note")
        .with_process_value_entry("Run Counter", entry_data_type="bytes")''')
    problems = problems_of(path)
    assert len(problems) == 3
    assert "entry_data_type 'int' but tag 'FT01' holds 0.0" in problems[0]
    assert "entry_data_type 'auto' takes the type from the tag's value, but 'Note' is None" in problems[1]
    assert "entry_data_type must be 'str', 'int', 'float' or 'auto', not 'bytes'" in problems[2]


def test_safe_value_must_be_a_choice_and_a_write_register_without_tag_is_a_warning(tmp_path):
    path = write_uod(tmp_path, '''
        .with_hardware_register("Valve", RegisterDirection.Write, safe_value="Shut")
        .with_tag(tags.SelectTag("Valve", "Closed", None, ["Open", "Closed"]))
        .with_hardware_register("PU01", RegisterDirection.Write)''')
    assert problems_of(path) == [
        f"uod.py:{line_of(path, 'Shut')}: with_hardware_register('Valve'): safe_value 'Shut' is not a choice "
        "of tag 'Valve' (Open, Closed)"]
    path = write_uod(tmp_path, '''
        .with_hardware_register("PU01", RegisterDirection.Write)
        .with_command_overlap(["Fill", "Drain"])''')
    assert load_uod(path).warnings == [
        f"uod.py:{line_of(path, 'PU01')}: with_hardware_register('PU01'): register 'PU01' has no tag of the "
        "same name, so it is never written",
        f"uod.py:{line_of(path, 'overlap')}: with_command_overlap(['Fill', 'Drain']): no command named 'Fill', "
        "so it overlaps nothing; commands are (none)",
        f"uod.py:{line_of(path, 'overlap')}: with_command_overlap(['Fill', 'Drain']): no command named 'Drain', "
        "so it overlaps nothing; commands are (none)"]


def test_register_before_hardware(tmp_path):
    path = write_uod(tmp_path, '''
        .with_instrument("Test unit")
        .with_author("Ann", "ann@example.com")
        .with_filename(__file__)
        .with_hardware_register("FT01")
        .with_hardware_none()''', identity="")
    assert problems_of(path) == [f"uod.py:{line_of(path, 'register')}: with_hardware_register('FT01'): "
                                 "set the hardware (with_hardware...) before adding registers"]


def test_command_names_must_be_usable_in_pcode(tmp_path):
    path = write_uod(tmp_path, '''
        .with_command("Stop", lambda cmd, value: None)
        .with_command("Flow: fast", lambda cmd, value: None)
        .with_command_regex_arguments("Broken", "(?P<number", set_flow)''')
    problems = problems_of(path)
    assert "'Stop' is a built-in P-code instruction, so this command could never run" in problems[0]
    assert "a command name must be a text without ':', '#' or surrounding spaces" in problems[1]
    assert "the argument pattern '(?P<number' is not a valid regex" in problems[2]


def test_tag_added_inline_with_builder_names_the_uod_line(tmp_path):
    path = write_uod(tmp_path, '''
        .with_tag(tags.DerivedTag("Double", lambda v: 2 * v, [tags.Tag("FT01").with_builder(builder)]))''')
    path.write_text(path.read_text().replace("    return (\n        UodBuilder()",
                                             "    builder = UodBuilder()\n    return (\n        builder"))
    assert problems_of(path) == [f"uod.py:{line_of(path, 'Double')}: with_tag('FT01'): a tag named 'FT01' "
                                 f"already exists (added at line {line_of(path, 'ReadingTag')})"]


def test_engine_can_validate_with_its_own_system_tags(demo):
    assert demo.validate({"Run Time", "Process Time", "Block", "System State"}) == []
    problems = demo.validate(set())  # Mark, Block Time and Scope Time are always there
    assert len(problems) == 3  # Block, System State and Run Time as process values
    assert len(demo.find_warnings(set())) == 3  # 3 plot names, which the plot leaves out
    line = line_of(DEMO_UOD, '"System State"')
    assert f"demo_uod.py:{line}: with_process_value('System State'): no tag named 'System State'; tags are " \
           "PU01, VA01, Inlet," in "\n".join(problems)


# --- the loader ----------------------------------------------------------------------------------


def test_loader_reports_a_syntax_error_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("from pectus.uod import UodBuilder\n\ndef create(:\n    pass\n")
    with pytest.raises(UodError) as error:
        load_uod(path)
    assert error.value.problems[0].startswith("broken.py:3: syntax error:")


def test_loader_reports_the_uod_line_of_an_exception(tmp_path):
    path = write_uod(tmp_path, '.with_tag(tags.ReadingTag("FT02", "parsecs"))')
    [problem] = problems_of(path)
    assert problem.startswith(f"uod.py:{line_of(path, 'parsecs')}: ValueError: Tag 'FT02': unknown unit 'parsecs'")


def test_loader_needs_create_and_a_definition(tmp_path):
    missing = tmp_path / "nothing.py"
    missing.write_text("x = 1\n")
    assert "defines no create() function" in problems_of(missing)[0]
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def create():\n    return 42\n")
    assert "create() returned int" in problems_of(wrong)[0]
    with pytest.raises(UodError, match="no such file"):
        load_uod(tmp_path / "absent.py")


def test_each_load_is_a_fresh_module(tmp_path):
    first, second = load_uod(DEMO_UOD), load_uod(DEMO_UOD)
    assert first.tags["FT01"] is not second.tags["FT01"]
    assert type(first.hwl) is not type(second.hwl)


# --- the builder ---------------------------------------------------------------------------------


def test_builder_defaults():
    unit = minimal().build()
    assert unit.data_log_interval_seconds == 5
    assert unit.base_unit_provider == {u: ("Scope Time", "Block Time") for u in ("s", "min", "h")}
    assert unit.plot_configuration == PlotConfiguration()
    assert unit.required_roles == set() and unit.location == ""
    assert isinstance(unit.hwl, NullHardware)
    assert unit.get_logger() is UodBuilder().get_logger()


def test_builder_settings():
    plot = PlotConfiguration(process_value_names_to_annotate=["Mark"],
                             color_regions=[PlotColorRegion("Block", {"A": "#66ff6633"})],
                             sub_plots=[SubPlot([PlotAxis("Mass", ["Mass"], 10, 0, Colors.C0)], ratio=2)],
                             x_axis_process_value_names=["Run Time"])
    unit = (minimal()
            .with_location("Site / Building / Room")
            .with_required_roles({"Operator", "Admin"})
            .with_data_log_interval_seconds(0.5)
            .with_tag(tags.Tag("Mass", value=0.0, unit="kg"))
            .with_tag(tags.Tag("Block Mass", value=0.0, unit="kg"))
            .with_base_unit_provider(["g", "kg"], "Mass", "Block Mass")
            .with_command_regex_arguments("Fill", RegexNumber(["kg"]), lambda cmd, **kwargs: None)
            .with_command("Drain", lambda cmd, value: None)
            .with_command_overlap(["Fill", "Drain"])
            .with_plot_configuration(plot)
            .build())
    assert unit.location == "Site / Building / Room"
    assert unit.required_roles == {"Operator", "Admin"}
    assert unit.data_log_interval_seconds == 0.5
    assert unit.base_unit_provider["kg"] == ("Mass", "Block Mass")
    assert unit.overlapping_command_names_lists == [["Fill", "Drain"]]
    assert unit.plot_configuration.to_dict()["sub_plots"][0] == {
        "axes": [{"label": "Mass", "process_value_names": ["Mass"], "y_max": 10, "y_min": 0, "color": "#1F77B4"}],
        "ratio": 2}


def test_accumulators_and_base_units():
    unit = (minimal()
            .with_tag(tags.ReadingTag("Totalizer", "mL"))
            .with_tag(tags.Tag("CV", value=1.0, unit="L"))
            .with_accumulated_volume("Totalizer")
            .with_accumulated_cv("CV", "Totalizer")
            .build())
    assert unit.tags.names() == ["Totalizer", "CV", "Accumulated Volume", "Block Volume",
                                 "Accumulated CV", "Block CV"]
    assert unit.tags["Accumulated Volume"].unit == "mL" and unit.tags["Block CV"].unit == "CV"
    assert unit.base_unit_provider["L"] == unit.base_unit_provider["mL"] == ("Accumulated Volume", "Block Volume")
    assert unit.base_unit_provider["CV"] == ("Accumulated CV", "Block CV")


def test_accumulator_needs_its_tags_first():
    with pytest.raises(UodError) as error:
        minimal().with_accumulated_cv("CV", "Totalizer").build()
    assert len(error.value.problems) == 2
    assert "no tag named 'CV' (yet); tags so far are (none): add it before this call" in error.value.problems[0]


def test_measurement_unit():
    with units._scratch_units():
        unit = (minimal()
                .with_measurement_unit("DV", quantity="diafiltration volume")
                .with_tag(tags.Tag("Diavolumes", value=0.0, unit="DV"))
                .build())
        assert unit.tags["Diavolumes"].unit == "DV"
        with pytest.raises(UodError, match="with_measurement_unit"):
            minimal().with_measurement_unit("not a unit").build()


# --- regex helpers (spec 8.5) --------------------------------------------------------------------


def groups(pattern: str, text: str) -> dict | None:
    match = re.search(pattern, text)
    return match.groupdict() if match else None


def test_regex_number():
    assert groups(RegexNumber(units=["L/h"]), "12 L/h") == {"number": "12", "number_unit": "L/h"}
    assert groups(RegexNumber(units=["L/h"]), "0.14 foo") is None
    assert groups(RegexNumber(units=["L/h"]), "12") is None
    assert groups(RegexNumber(units=["%"]), " 5%  ") == {"number": "5", "number_unit": "%"}
    for text in ("12", "12.", "12.5", ".5", "-3", "-.5"):
        assert groups(RegexNumber(), text) == {"number": text}
    assert groups(RegexNumber(non_negative=True), "-3") is None
    assert groups(RegexNumber(int_only=True), "3.2") is None
    assert groups(RegexNumber(int_only=True), "32") == {"number": "32"}
    assert groups(RegexNumber(), "1٣") is None  # Unicode digits would break float()
    assert r"L\/h" in RegexNumber(units=["L/h"])  # also a valid JavaScript regex


@given(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), st.sampled_from(["L", "mL", "L/h", "%", "degC"]))
def test_regex_number_accepts_any_plain_number(value, unit):
    text = f"{value:.6f}"
    assert groups(RegexNumber(units=["L", "mL", "L/h", "%", "degC"]), f"{text} {unit}") == {
        "number": text, "number_unit": unit}


def test_regex_number_optional():
    assert groups(RegexNumberOptional(units=["s"]), "") == {"number": None, "number_unit": None}
    assert groups(RegexNumberOptional(units=["s"]), "5 s") == {"number": "5", "number_unit": "s"}
    assert groups(RegexNumberOptional(units=["s"]), "5") is None


def test_regex_categorical():
    pattern = RegexCategorical(exclusive_options=["Open", "Closed"], additive_options=["VA01", "VA02", "VA03"])
    assert groups(pattern, "VA01+VA02") == {"option": "VA01+VA02"}
    assert groups(pattern, "Open") == {"option": "Open"}
    for refused in ("Closed+VA01", "Open+Closed", "VA01+", "+VA01", "Half"):
        assert groups(pattern, refused) is None, refused
    assert groups(RegexCategorical(additive_options=["1", "2"]), "2+1") == {"option": "2+1"}
    with pytest.raises(TypeError):
        RegexCategorical()


def test_regex_text_and_predefined_patterns():
    assert groups(RegexText(), "any text: here") == {"text": "any text: here"}
    assert groups(RegexText(), "") is None
    assert groups(RegexText(allow_empty=True), "") == {"text": ""}
    assert groups(REGEX_TEXT, "") == {"text": ""}
    assert groups(REGEX_DURATION, ".5s") == {"number": ".5", "number_unit": "s"}
    assert groups(REGEX_DURATION, "2 min") == {"number": "2", "number_unit": "min"}
    assert groups(REGEX_DURATION, "2") is None and groups(REGEX_DURATION, "-2 s") is None
    assert groups(REGEX_DURATION_OPTIONAL, "") == {"number": None, "number_unit": None}
    assert groups(REGEX_INT, "7") == {"number": "7"} and groups(REGEX_INT, "-7") is None
    assert [o for o in "L h min s mL CV DV g kg".split() if groups(REGEX_BASE_ARG, o)] == "L h min s mL CV DV g kg".split()
    assert groups(REGEX_BASE_ARG, "kL") is None


def test_describe_pattern():
    info = describe_pattern(RegexNumber(units=["L/h", "m2"]))
    assert info.groups == ("number", "number_unit") and info.units == ("L/h", "m2")
    info = describe_pattern(RegexCategorical(["A", "B"], ["1", "2", "3"]))
    assert info.exclusive_options == ("A", "B") and info.additive_options == ("1", "2", "3")
    # A hand-written pattern: only the literal alternatives are units.
    assert describe_pattern(r"^(?P<number>\d+) (?P<number_unit>[a-z]+|kg|\%)$").units == ("kg", "%")



def test_describe_accepted_says_what_a_helper_pattern_takes():
    assert describe_accepted(RegexNumber(units=["%"], non_negative=True)) == "a number, 0 or more, in % (percentage)"
    assert describe_accepted(RegexNumber(units=["L", "mL", "L/h"])) == "a number in L or mL (volume) or L/h (flow)"
    assert describe_accepted(REGEX_INT) == "a whole number, 0 or more"
    assert describe_accepted(REGEX_DURATION_OPTIONAL) == "a number, 0 or more, in s, min or h (time), or nothing"
    assert describe_accepted(RegexCategorical(["Open", "Closed"])) == "one of Open or Closed"
    assert describe_accepted(RegexCategorical(["Off"], ["1", "2"])) == (
        "one of Off; or 1 or 2, or several of them joined by '+' (e.g. 1+2)")
    # What the helpers did not build is not guessed at.
    assert describe_accepted(REGEX_TEXT) is None
    assert describe_accepted(r"^(?P<number>\d+) (?P<number_unit>kg)$") is None


def test_a_refused_argument_says_what_the_command_accepts():
    """Before: only "'500 L' is not valid" and "'Foo' is not valid"."""
    pump = CommandDefinition("PU01", noop, parser=re.compile(RegexNumber(units=["%"], non_negative=True)))
    assert pump.refusal("500 L") == ("PU01: 500 L is not a valid value: expected a number, 0 or more, in % "
                                     "(percentage); L is a volume, not a percentage")
    assert pump.refusal("-5 %") == "PU01: -5 % is not a valid value: expected a number, 0 or more, in % (percentage)"
    assert pump.refusal("") == "PU01: a value is needed: expected a number, 0 or more, in % (percentage)"
    valve = CommandDefinition("VA01", noop, parser=re.compile(RegexCategorical(["Open", "Closed"])))
    assert valve.refusal(" Foo ") == "VA01: Foo is not a valid value: expected one of Open or Closed"
    no_argument = CommandDefinition("Reset", noop, parser=None)
    assert no_argument.refusal("now") == "Reset: now is not a valid value: expected no argument"
    custom = CommandDefinition("A", noop, parser=lambda text: None)
    assert custom.refusal("x") == "A: x is not a valid value"


def test_as_decimal_and_as_int():
    assert as_decimal("3.25") == Decimal("3.25") and as_decimal(" 2 ") == Decimal(2)
    assert as_decimal("abc") is None and as_decimal("nan") is None and as_decimal("") is None
    assert as_int("3") == 3 and as_int("3.2") is None and as_int("x") is None


# --- commands: parsers, descriptions, examples, lifecycle ----------------------------------------


def noop(cmd, **kwargs):
    """Does nothing.

    # a comment line is not an example
    Noop: 1 L
    Something else
    """


def test_parsers():
    assert CommandDefinition("A", noop).parse("any text") == {"value": "any text"}
    no_args = CommandDefinition("A", noop, parser=None)
    assert no_args.parse("") == {} and no_args.parse("  ") == {} and no_args.parse("x") is None
    regex = CommandDefinition("A", noop, parser=re.compile(RegexNumber(units=["L", "mL"])))
    assert regex.parse("3 mL") == {"number": "3", "number_unit": "mL"} and regex.parse("3 kg") is None
    optional = CommandDefinition("A", noop, parser=re.compile(RegexNumberOptional(units=["s"])))
    assert optional.parse("") == {"number": None, "number_unit": None}
    custom = CommandDefinition("A", noop, parser=lambda text: {"n": int(text)} if text.isdigit() else None)
    assert custom.parse("12") == {"n": 12} and custom.parse("x") is None


def test_command_descriptions_and_examples():
    number = CommandDefinition("Noop", noop, parser=re.compile(RegexNumber(units=["L", "mL"])))
    assert number.help.startswith("Does nothing.")
    assert (number.argument_type, number.units) == ("float", ["L", "mL"])
    assert number.examples() == ["Noop: 1 L", "Noop: 0.5 L", "Noop: 0.5 mL"]
    free = CommandDefinition("Free", noop, parser=re.compile(RegexNumber(int_only=True)))
    assert free.examples() == ["Free: 10"]  # generated examples are kept only when they parse
    choice = CommandDefinition("Valves", noop, parser=re.compile(RegexCategorical(["Off"], ["1", "2", "3"])))
    assert choice.argument_type == "choice" and choice.options == ["Off", "1", "2", "3"]
    assert choice.examples() == ["Valves: Off", "Valves: 1", "Valves: 2", "Valves: 3", "Valves: 1+2",
                                 "Valves: 1+3", "Valves: 2+3", "Valves: 1+2+3"]
    assert CommandDefinition("Go", noop, parser=None).argument_type == "none"
    assert CommandDefinition("Go", noop, parser=None).examples() == ["Go"]
    assert CommandDefinition("Say", noop).argument_type == "text"


def test_command_lifecycle():
    calls: list[str] = []

    def run(cmd: UodCommand, value: str) -> None:
        count = cmd.get_iteration_count()
        calls.append(f"exec {count} {value}")
        cmd.cmd_state.setdefault("seen", 0)
        cmd.cmd_state["seen"] += 1
        cmd.set_progress(True if count == 0 else count / 2)
        if count == 2:
            cmd.set_complete()

    definition = CommandDefinition("Run", run, init_fn=lambda cmd: calls.append("init"),
                                   finalize_fn=lambda cmd: calls.append("finalize"))
    cmd = definition.create("the context", "id-1", clock=lambda: 12.5)
    assert (cmd.context, cmd.name, cmd.instance_id, cmd.tick_time) == ("the context", "Run", "id-1", 12.5)
    assert cmd.progress is None and cmd.get_iteration_count() == 0
    cmd.initialize()
    cmd.execute({"value": "a"})
    assert cmd.progress == 0.5 and not cmd.is_complete()
    cmd.initialize()  # init_fn runs once
    cmd.execute({"value": "b"})
    assert cmd.progress == 0.5
    cmd.execute({"value": "c"})
    assert cmd.is_complete() and cmd.progress == 1.0 and cmd.get_iteration_count() == 3
    cmd.finalize()
    cmd.finalize()
    assert calls == ["init", "exec 0 a", "exec 1 b", "exec 2 c", "finalize"]
    assert cmd.cmd_state == {"seen": 3} and cmd.is_finalized


def test_cancel_and_progress_rules():
    finalized = []
    definition = CommandDefinition("Fill", noop, finalize_fn=finalized.append)
    cmd = definition.create(None, "id-2")
    cmd.execute({})  # execute initialises when the engine did not
    cmd.cancel()
    assert cmd.is_cancelled() and not cmd.is_complete()
    cmd.finalize()
    assert finalized == [cmd]
    cmd.set_progress(1.7)
    assert cmd.progress == 1.0
    with pytest.raises(ValueError, match="progress must be a number 0..1 or True"):
        cmd.set_progress("half")  # type: ignore[arg-type]


def test_demo_reset_command_takes_three_seconds_and_releases_on_cancel(demo):
    reset = demo.commands["Reset"]
    cmd = reset.create(demo, "r1", clock=lambda: 0.0)
    for _ in range(30):
        cmd.execute(reset.parse(""))
        assert demo.tags["Reset"].value == "Reset" and not cmd.is_complete()
    assert cmd.progress == pytest.approx(29 / 30)
    cmd.execute({})
    assert cmd.is_complete() and cmd.progress == 1.0
    cmd.finalize()
    assert demo.tags["Reset"].value == "N/A"
    cancelled = reset.create(demo, "r2", clock=lambda: 0.0)
    cancelled.execute({})
    cancelled.cancel()
    cancelled.finalize()
    assert demo.tags["Reset"].value == "N/A"


def test_demo_pump_command_refuses_more_than_100_percent(demo):
    pump = demo.commands["PU01"]
    cmd = pump.create(demo, "p1", clock=lambda: 1.0)
    cmd.execute(pump.parse("40 %"))
    assert cmd.is_complete() and demo.tags["PU01"].value == 40.0
    assert pump.parse("-5 %") is None
    # The tag's declared range (0 to 100 %) is the command's: 150 % is refused before it runs.
    assert pump.parse("100 %") is not None and pump.parse("150 %") is None
    assert pump.refusal("150 %") == "PU01: 150 % is not a valid value: expected 0 to 100 %"
