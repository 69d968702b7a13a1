"""Entries checked before they are sent: a command's argument rules and its tag's declared range.

A value outside them (150 into the demo's PU01, 0 to 100 %) is refused before anything runs - by
the command's ``parse``, the analyzer, an injection and a process value's entry alike - with a
message that says what is valid; it never pauses the run. The page gets the same rules.
"""

from __future__ import annotations

import re

import pytest
import trio

from conftest import DEMO_UOD, demo_aggregator, demo_unit, wait_for
from pectus.actors.uplink import RecordBuilder
from pectus.events.records import check_record
from pectus.pcode.engine import Engine
from pectus.pcode.tags import FixedDecimals, Tag, display_format, format_time_as_clock, format_time_as_date_time
from pectus.pcode.units import settable_units
from pectus.testing import Simulator
from pectus.uod import RegexCategorical, RegexNumber, RegexNumberOptional, UodBuilder, UodError, load_uod, tags
from pectus.uod.commands import CommandDefinition, ValueRange
from pectus.web.app import ROUTES, check

PUMP = "PU01: 150 % is not a valid value: expected 0 to 100 %"


def noop(cmd, **arguments) -> None:
    cmd.set_complete()


def number_command(name: str, units: list[str] | None, value_range: ValueRange | None, *, optional: bool = False,
                   int_only: bool = False) -> CommandDefinition:
    helper = RegexNumberOptional if optional else RegexNumber
    return CommandDefinition(name, noop, parser=re.compile(helper(units, non_negative=True, int_only=int_only)),
                             value_range=value_range)


# -- the rules and their messages --------------------------------------------------------------------


def test_a_number_outside_the_declared_range_is_refused_saying_what_is_valid():
    pump = number_command("PU01", ["%"], ValueRange(0, 100, "%"))
    assert pump.parse("100 %") == {"number": "100", "number_unit": "%"} and pump.parse("0 %") is not None
    assert pump.parse("150 %") is None and pump.parse("100.001 %") is None
    assert pump.refusal("150 %") == PUMP
    assert pump.refusal("500 L") == ("PU01: 500 L is not a valid value: expected 0 to 100 %; "
                                     "L is a volume, not a percentage")
    assert pump.refusal("-5 %") == "PU01: -5 % is not a valid value: expected 0 to 100 %"
    assert pump.refusal("") == "PU01: a value is needed: expected 0 to 100 %"
    valve = CommandDefinition("VA01", noop, parser=re.compile(RegexCategorical(["Open", "Closed"])))
    assert valve.refusal("Foo") == "VA01: Foo is not a valid value: expected one of Open or Closed"


def test_a_range_applies_in_every_unit_the_argument_may_be_written_in():
    column = number_command("Column Volume", ["L", "mL"], ValueRange(None, 1, "L"))
    assert column.parse("1000 mL") is not None and column.parse("1 L") is not None
    assert column.parse("1001 mL") is None
    assert column.refusal("1001 mL") == ("Column Volume: 1001 mL is not a valid value: expected 0 to 1 L "
                                         "(or the same in mL)")
    assert column.argument_rules() == {
        "type": "number", "int_only": False, "optional": False, "expected": "0 to 1 L (or the same in mL)",
        "units": [{"unit": "L", "minimum": 0.0, "maximum": 1}, {"unit": "mL", "minimum": 0.0, "maximum": 1000.0}]}


def test_whole_numbers_open_ranges_and_optional_arguments_are_said_too():
    count = number_command("Cycles", None, ValueRange(1, None), int_only=True)
    assert count.parse("0") is None and count.parse("3") is not None and count.parse("2.5") is None
    assert count.refusal("0") == "Cycles: 0 is not a valid value: expected a whole number, 1 or more"
    delay = number_command("Delay", ["s"], ValueRange(None, 60, "s"), optional=True)
    assert delay.parse("") is not None and delay.parse("61 s") is None
    assert delay.refusal("61 s") == "Delay: 61 s is not a valid value: expected 0 to 60 s, or nothing"


def test_without_a_declared_range_nothing_changes_for_open_pectus_uods():
    pump = number_command("PU01", ["%"], None)
    assert pump.parse("150 %") is not None
    assert pump.argument_rules()["units"] == [{"unit": "%", "minimum": 0.0, "maximum": None}]
    assert CommandDefinition("Free", noop).argument_rules() is None  # the default parser: only it knows


def test_a_range_must_be_a_range():
    with pytest.raises(ValueError, match="Tag 'PU01': minimum 100 is above maximum 0"):
        Tag("PU01", unit="%", minimum=100, maximum=0)
    with pytest.raises(ValueError, match="maximum must be a finite number"):
        Tag("PU01", unit="%", maximum=float("inf"))


def test_a_pump_in_percent_is_set_in_percent_only():
    """Before: the entry offered vol%, wt% and mol% for a pump in %."""
    assert settable_units("%") == ["%"]
    assert settable_units("vol%") == ["vol%"]
    assert settable_units("L/h") == ["L/h", "L/min", "L/d"]
    assert settable_units(None) == []


# -- the UOD declares ranges ------------------------------------------------------------------------


def unit_builder() -> UodBuilder:
    return (UodBuilder().with_instrument("RangeUnit").with_author("A", "a@example.com").with_filename(__file__)
            .with_hardware_none())


def test_a_tag_range_becomes_its_commands_and_its_entrys_rules():
    uod = (unit_builder()
           .with_tag(tags.Tag("Speed", value=0.0, unit="%", minimum=0, maximum=100))
           .with_tag(tags.Tag("Flow", value=0.0, unit="L/h", minimum=0, maximum=60))
           .with_command_regex_arguments("Speed", RegexNumber(units=["%"]), noop)
           .with_command_regex_arguments("Set flow", RegexNumber(units=["L/h", "L/min"]), noop)
           .with_process_value_entry("Flow", execute_command_name="Set flow")
           .with_process_value_entry("Speed")
           .build())
    assert uod.commands["Speed"].value_range == ValueRange(0, 100, "%")
    assert uod.commands["Set flow"].value_range == ValueRange(0, 60, "L/h")  # the entry's tag
    assert uod.commands["Set flow"].refusal("2 L/min") == (
        "Set flow: 2 L/min is not a valid value: expected 0 to 60 L/h (or the same in L/min)")
    flow = next(r for r in uod.readings if r.tag_name == "Flow")
    assert uod.entry_rules(flow)["units"] == [{"unit": "L/h", "minimum": 0, "maximum": 60},
                                              {"unit": "L/min", "minimum": 0, "maximum": 1}]


def test_a_command_may_declare_its_own_range_in_its_first_unit():
    uod = (unit_builder().with_tag(tags.Tag("Heater", value=0.0, unit="%"))
           .with_command_regex_arguments("Heater", RegexNumber(units=["%"]), noop, minimum=0, maximum=80)
           .build())
    assert uod.commands["Heater"].refusal("90 %") == "Heater: 90 % is not a valid value: expected 0 to 80 %"


def test_a_range_that_cannot_apply_is_an_error_or_a_warning_naming_the_line():
    with pytest.raises(UodError) as raised:
        (unit_builder().with_tag(tags.Tag("Flow", value=0.0, unit="%", minimum=0, maximum=100))
         .with_command_regex_arguments("Flow", RegexNumber(units=["L/h"]), noop).build())
    assert re.search(r"test_entry\.py:\d+: with_command_regex_arguments\('Flow'\): the range of 'Flow' is in %, "
                     r"which cannot be converted to L/h", str(raised.value))
    with pytest.raises(UodError, match="minimum and maximum need a number argument"):
        unit_builder().with_command_regex_arguments("Valve", RegexCategorical(["Open"]), noop, maximum=1).build()
    free = (unit_builder().with_tag(tags.Tag("Level", value=0.0, unit="L", minimum=0))
            .with_command("Level", noop).build())
    assert len(free.warnings) == 1 and re.search(
        r"test_entry\.py:\d+: with_tag\('Level'\): the range of tag 'Level' is not checked: its command 'Level' "
        r"does not take a number \(RegexNumber\)", free.warnings[0])


def test_the_demo_declares_its_pump_and_heater_0_to_100_percent():
    demo = load_uod(DEMO_UOD)
    for name in ("PU01", "HE01"):
        assert demo.commands[name].value_range == ValueRange(0, 100, "%")
    entry = next(r for r in demo.readings if r.tag_name == "PU01")
    assert demo.entry_rules(entry) == {"type": "number", "int_only": False, "optional": False,
                                       "expected": "0 to 100 %",
                                       "units": [{"unit": "%", "minimum": 0.0, "maximum": 100.0}]}


# -- the engine refuses before anything runs ----------------------------------------------------------


def running_demo() -> Simulator:
    sim = Simulator(DEMO_UOD, "Mark: A\nWait: 1 h")
    assert sim.start()
    sim.run_until(lambda: sim.marks == ["A"])
    return sim


def test_an_injection_outside_the_range_is_refused_and_the_run_goes_on():
    """Before: accepted, then 'PU01 takes 0 to 100 %, not 150 %' paused the run."""
    sim = running_demo()
    refused = sim.inject("PU01: 150 %")
    assert (refused.accepted, refused.reason) == (False, PUMP + ".")
    sim.run_ticks(10)
    assert (sim.system_state, sim.method_status, sim.value("PU01"), sim.errors) == ("Running", "OK", 0.0, [])
    assert not sim.items("PU01: 150 %")
    assert sim.inject("PU01: 100 %")
    sim.run_ticks(1)
    assert sim.value("PU01") == 100.0


def test_a_refused_line_is_named_when_the_code_has_several():
    sim = running_demo()
    refused = sim.inject("Mark: B\nVA01: Foo\nWatch: FT1 > 2 L/h\n    Mark: C")
    assert refused.reason == ("line 2: VA01: Foo is not a valid value: expected one of Open or Closed. "
                              "line 3: This unit has no tag named 'FT1'. Did you mean 'FT01'?")
    sim.run_ticks(5)
    assert sim.marks == ["A"] and sim.system_state == "Running"


def test_a_unit_command_while_stopped_is_checked_too():
    sim = Simulator(DEMO_UOD)
    assert sim.inject("HE01: 101 %").reason == "HE01: 101 % is not a valid value: expected 0 to 100 %."
    assert sim.inject("HE01: 30 %")
    sim.run_ticks(1)
    assert sim.value("HE01") == 30.0


def test_a_method_line_outside_the_range_still_stops_where_open_pectus_stops():
    """A method's line is the method's: it fails when it runs (as in Open Pectus), with the same words."""
    sim = Simulator(DEMO_UOD, "PU01: 150 %")
    assert sim.start()
    sim.run_until(lambda: sim.method_status == "Error", max_seconds=2)
    assert sim.errors == ["Command 'PU01' failed: Invalid arguments for command 'PU01': "
                          "150 % is not a valid value: expected 0 to 100 %"]
    assert [d.message for d in sim.engine.analyze("PU01: 150 %")] == [PUMP + "."]


# -- what the page is sent -----------------------------------------------------------------------------


def test_the_uod_record_carries_the_entry_rules_and_the_tags_formats():
    record = RecordBuilder(Engine(load_uod(DEMO_UOD))).describe(1_800_000_000.0)
    data = check_record(__import__("json").dumps({**record, "seq": 1})).data
    readings = {reading.tag_name: reading for reading in data.readings}
    assert readings["PU01"].entry.expected == "0 to 100 %"
    assert [(u.unit, u.minimum, u.maximum) for u in readings["PU01"].entry.units] == [("%", 0, 100)]
    assert readings["FT01"].entry is None and readings["VA01"].entry is None
    formats = {tag.name: (tag.format, tag.decimals) for tag in data.tags}
    assert formats["Clock"] == ("date_time", None) and formats["Run Time"] == ("duration", None)
    assert formats["FT01"] == (None, None)


def test_display_formats_the_ui_knows():
    assert display_format(format_time_as_clock) == ("duration", None)
    assert display_format(format_time_as_date_time) == ("date_time", None)
    assert display_format(FixedDecimals(2)) == (None, 2) and FixedDecimals(2)(1.0 / 3) == "0.33"
    assert display_format(lambda value: f"{value:.1f}") == (None, None)  # Python the browser cannot run
    assert format_time_as_date_time(1_800_000_000.0) == "2027-01-15T08:00:00Z"
    with pytest.raises(ValueError, match="whole number of decimals"):
        FixedDecimals(-1)


# -- through the aggregator: the refusal reaches the page and the audit trail --------------------------


def test_a_refused_entry_is_answered_422_recorded_as_refused_and_the_run_keeps_running(tmp_path):
    aggregator = demo_aggregator(tmp_path)

    async def main():
        async with demo_unit(tmp_path, aggregator) as unit:
            api, base = unit.api, unit.base

            async def described():
                return next((v for v in await unit.get("/process_values") if v["name"] == "PU01" and v.get("commands")),
                            None)
            pump = await wait_for(described, timeout=20)
            assert (await api.post(f"{base}/control", json={"command": "Start"})).status_code == 200

            async def running():
                return (await unit.get("/control_state"))["is_running"]
            await wait_for(running, timeout=20)
            refused = await api.post(f"{base}/process_values/PU01", json={"value": 150, "unit": "%"})
            injected = await api.post(f"{base}/inject", json={"code": "PU01: 150 %"})
            control = await unit.get("/control_state")
            run = (await unit.get())["run_id"]
            audit = (await api.get(f"/api/runs/{run}/audit")).json()
            errors = await unit.get("/error_log")
            values = await unit.get("/process_values")
        return pump, refused, injected, control, audit, errors, values

    pump, refused, injected, control, audit, errors, values = trio.run(main)
    # What the route answers is what its document (the route table, the OpenAPI document) says.
    check(next(r.schema for r in ROUTES if r.path == "/api/process_units/<unit>/process_values"), values)
    clock = next(v for v in values if v["name"] == "Clock")
    assert pump["commands"] == [{"name": "PU01", "value_type": "float", "help": pump["commands"][0]["help"],
                                 "rules": {"type": "number", "expected": "0 to 100 %", "int_only": False,
                                           "optional": False, "options": [],
                                           "units": [{"unit": "%", "minimum": 0.0, "maximum": 100.0}]}}]
    assert clock["format"] == "date_time"
    for answer in (refused, injected):
        assert answer.status_code == 422
        assert answer.json()["error"]["message"] == PUMP + "."
    assert refused.json()["error"]["field"] == "value" and injected.json()["error"]["field"] == "code"
    assert (control["is_running"], control["is_paused"], control["method_status"]) == (True, False, "OK")
    assert errors == []
    asked = [entry["detail"] for entry in audit if entry["what"] in ("process_value", "inject")]
    assert asked == [{"asked": {"tag": "PU01", "value": 150, "unit": "%", "old": 0.0}, "accepted": False,
                      "reason": PUMP + "."},
                     {"asked": {"code": "PU01: 150 %"}, "accepted": False, "reason": PUMP + "."}]
