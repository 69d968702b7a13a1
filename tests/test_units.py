"""Units: the supported table, comparability rules, fast cached conversion, UOD-added units.

Spec: shared/spec/pcode.md section 6, shared/spec/engine.md section 8.8.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pectus.pcode import units
from pectus.pcode.units import (
    SUPPORTED_UNITS,
    UnitError,
    add_unit,
    check_comparable,
    compatible_units,
    convert,
    converter,
    is_supported,
    quantity_of,
)


@pytest.fixture
def scratch_units():
    with units._scratch_units():
        yield


# --- the table ---------------------------------------------------------------------------------


def test_supported_table_is_the_spec_table():
    assert SUPPORTED_UNITS == {
        "time": ["s", "min", "h", "ms"],
        "length": ["m", "cm"],
        "area": ["m**2", "m2", "dm2", "cm2"],
        "mass": ["kg", "g"],
        "density": ["kg/L", "g/L"],
        "temperature": ["degC", "degF", "K", "°C", "°F"],
        "amount of substance": ["mol"],
        "volume": ["L", "mL"],
        "flow": ["L/h", "L/min", "L/d"],
        "frequency": ["Hz", "kHz"],
        "pressure": ["Pa", "bar", "pascal"],
        "mass flow rate": ["kg/h", "g/s", "g/min", "g/h"],
        "conductivity": ["mS/cm", "µS/cm"],
        "percentage": ["%", "vol%", "wt%", "mol%"],
        "column volume": ["CV"],
        "absorbance": ["AU", "mAU", "milliAU"],
        "permeability": ["LMH/bar", "L/m2/h/bar", "L/h/m2/bar"],
        "flux": ["LMH", "L/m2/h", "L/h/m2"],
    }


def test_is_supported():
    assert is_supported(None)
    assert is_supported("")
    assert all(is_supported(u) for us in SUPPORTED_UNITS.values() for u in us)
    assert not is_supported("Lh")
    assert not is_supported("mbar")  # pint knows it, but it is not in the table
    assert not is_supported("l/h")  # units are case-sensitive


def test_quantity_of():
    assert quantity_of("L/h") == "flow"
    assert quantity_of("°C") == "temperature"
    assert quantity_of("µS/cm") == "conductivity"
    assert quantity_of("CV") == "column volume"
    assert quantity_of("Lh") is None
    assert quantity_of("") is None


def test_compatible_units():
    assert compatible_units("L/h") == ["L/h", "L/min", "L/d"]
    assert compatible_units("CV") == ["CV"]
    assert compatible_units(None) == []
    assert compatible_units("") == []
    assert compatible_units("Lh") == []
    # the percentage rule: a '%' tag takes every percentage, a 'vol%' tag only vol%
    assert compatible_units("%") == ["%", "vol%", "wt%", "mol%"]
    assert compatible_units("vol%") == ["vol%"]


def test_compatible_units_is_a_copy():
    compatible_units("L/h").append("furlong/fortnight")
    assert SUPPORTED_UNITS["flow"] == ["L/h", "L/min", "L/d"]


def test_importing_does_not_load_pint():
    # pint takes a quarter of a second to load; the parser and analyzer should not pay for it.
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = (
        "import sys; from pectus.pcode import units;"
        "units.check_comparable('L/h', 'L/min'); units.is_supported('K');"
        "assert 'pint' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)


# --- conversions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, from_unit, expected, to_unit",
    [
        (60, "L/h", 1, "L/min"),
        (1, "L/min", 60, "L/h"),
        (48, "L/d", 2, "L/h"),
        (0, "degC", 32, "degF"),
        (0, "degC", 273.15, "K"),
        (32, "degF", 0, "degC"),
        (100, "degC", 212, "degF"),
        (0, "°C", 32, "°F"),
        (1, "m2", 100, "dm2"),
        (1, "m**2", 10_000, "cm2"),
        (1000, "mAU", 1, "AU"),
        (1, "milliAU", 1, "mAU"),
        (1, "mS/cm", 1000, "µS/cm"),
        (1500, "mL", 1.5, "L"),
        (0.01, "min", 0.6, "s"),
        (1, "bar", 100_000, "Pa"),
        (1, "g/s", 3.6, "kg/h"),
        (1, "LMH", 1, "L/m2/h"),
        (1, "L/h/m2/bar", 1, "LMH/bar"),
        (5, "vol%", 5, "%"),
    ],
)
def test_conversions_are_exact(value, from_unit, expected, to_unit):
    # Exact, not approximately equal: '==' conditions depend on it (1 L/min == 60 L/h).
    assert convert(value, from_unit, to_unit) == expected


def test_conditions_from_the_spec():
    # CND-002: Flow > 1 L/min with Flow = 120 L/h: the value is converted into the tag's unit.
    assert 120 > convert(1, "L/min", "L/h")
    # CND-001: TT01 > 100 degF with TT01 = 40 degC (100 degF = 37.8 degC)
    assert 40 > convert(100, "degF", "degC")
    assert convert(100, "degF", "degC") == pytest.approx(37.7777777778)
    # SEQ-009: 'Flow: 2 L/min' sets a L/h tag to 120
    assert convert(2, "L/min", "L/h") == 120


def test_same_unit_and_no_unit_convert_to_themselves():
    assert convert(7.5, "L/h", "L/h") == 7.5
    assert convert(7.5, None, None) == 7.5
    assert convert(7.5, "", None) == 7.5
    assert convert(3, "CV", "CV") == 3


def _comparable_pairs():
    pairs = []
    for unit_list in SUPPORTED_UNITS.values():
        for a in unit_list:
            for b in unit_list:
                try:
                    check_comparable(a, b)
                    check_comparable(b, a)
                except UnitError:
                    continue
                pairs.append((a, b))
    return pairs


@functools.cache
def _float_pint():
    # An independent, plain (float) pint with the same extra definitions, as a reference.
    import pint

    ureg = pint.UnitRegistry(on_redefinition="ignore")
    for definition in units._BASE_DEFINITIONS:
        ureg.define(definition)
    for name, definition in units._DEFINITIONS_IF_MISSING.items():
        if name not in ureg:
            ureg.define(definition)
    return ureg


@given(pair=st.sampled_from(_comparable_pairs()), value=st.floats(-1e6, 1e6))
def test_conversion_agrees_with_pint_and_round_trips(pair, value):
    from_unit, to_unit = pair
    result = convert(value, from_unit, to_unit)
    reference = _float_pint().Quantity(value, units._pint_name(from_unit))
    expected = reference.to(units._pint_name(to_unit)).magnitude
    assert result == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert convert(result, to_unit, from_unit) == pytest.approx(value, rel=1e-12, abs=1e-9)


def test_converter_is_cached():
    assert converter("L/h", "L/min") is converter("L/h", "L/min")


def test_cached_converter_does_not_call_pint(monkeypatch):
    to_lpm = converter("L/h", "L/min")
    to_degf = converter("degC", "degF")

    class NoPint:
        def __getattr__(self, name):
            raise AssertionError(f"pint used on the hot path ({name})")

    def no_registry():
        raise AssertionError("pint used on the hot path")

    monkeypatch.setattr(units, "_ureg", NoPint())
    monkeypatch.setattr(units, "_registry", no_registry)
    assert to_lpm(120.0) == 2.0
    assert to_degf(40.0) == 104.0
    # the lookup is served from the cache too
    assert converter("L/h", "L/min")(60.0) == 1.0
    assert convert(0.0, "degC", "degF") == 32.0
    check_comparable("L/h", "L/min")


def test_converter_refuses_what_check_comparable_refuses():
    with pytest.raises(UnitError, match="'L/h' and 'degC'"):
        converter("degC", "L/h")  # from the value's unit to the tag's unit
    with pytest.raises(UnitError, match="Unknown unit 'Lh'"):
        convert(1, "Lh", "L/h")
    with pytest.raises(UnitError):
        convert(1, "L/h", None)
    # the direction matters for percentages: a vol% value fits a % tag, not the other way round
    assert convert(5, "vol%", "%") == 5
    with pytest.raises(UnitError):
        converter("%", "vol%")


def test_converter_has_a_readable_name():
    assert "degC" in converter("degC", "degF").__name__
    assert "degF" in repr(converter("degC", "degF"))


# --- comparability -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag_unit, value_unit",
    [
        (None, None),
        ("", None),
        (None, ""),
        ("L/h", "L/h"),
        ("L/h", "L/min"),
        ("L/min", "L/d"),
        ("degC", "degF"),
        ("K", "°C"),
        ("m2", "m**2"),
        ("mAU", "AU"),
        ("mS/cm", "µS/cm"),
        ("LMH", "L/h/m2"),
        ("CV", "CV"),
        ("%", "%"),
        ("%", "vol%"),
        ("%", "wt%"),
        ("%", "mol%"),
        ("vol%", "vol%"),
        ("mol%", "mol%"),
    ],
)
def test_comparable(tag_unit, value_unit):
    check_comparable(tag_unit, value_unit)


@pytest.mark.parametrize(
    "tag_unit, value_unit",
    [
        ("L/h", None),  # CND-006: a tag with a unit, a bare number
        (None, "L/h"),  # CND-007: a tag without a unit, a number with one
        ("L/h", "degC"),  # CND-008: different quantities
        ("L", "CV"),  # a column volume is not a volume
        ("CV", "mL"),
        ("L", "L/h"),
        ("AU", "%"),
        ("vol%", "wt%"),  # different bases
        ("wt%", "mol%"),
        ("mol%", "vol%"),
        ("vol%", "%"),  # a basis on the tag asks for the same basis in the value
        ("L/h", "Lh"),  # CND-011: unknown unit
        ("Lh", "L/h"),
        ("Lh", "Lh"),  # unknown even when equal
        (None, "foo"),
    ],
)
def test_not_comparable(tag_unit, value_unit):
    with pytest.raises(UnitError):
        check_comparable(tag_unit, value_unit)


def test_unit_error_is_a_value_error():
    # Tag.set_value_and_unit is specified to raise ValueError for bad units.
    assert issubclass(UnitError, ValueError)


def test_incompatible_message_names_units_and_quantities():
    with pytest.raises(UnitError) as info:
        check_comparable("L/h", "degC")
    message = str(info.value)
    assert message.startswith("Cannot compare values with incompatible units 'L/h' and 'degC'")
    assert "flow" in message and "temperature" in message


def test_cv_message():
    with pytest.raises(UnitError) as info:
        check_comparable("CV", "L")
    assert "'CV' and 'L'" in str(info.value)
    assert "column volume" in str(info.value)


def test_percentage_messages_name_the_bases():
    with pytest.raises(UnitError) as info:
        check_comparable("vol%", "wt%")
    assert "'vol%' and 'wt%'" in str(info.value)
    assert "by volume" in str(info.value) and "by weight" in str(info.value)
    with pytest.raises(UnitError) as info:
        check_comparable("vol%", "%")
    assert "'vol%' and '%'" in str(info.value)


def test_missing_unit_messages():
    with pytest.raises(UnitError) as info:
        check_comparable("L/h", None)
    assert "'L/h'" in str(info.value) and "no unit" in str(info.value)
    assert "L/min" in str(info.value)  # says which units would do
    with pytest.raises(UnitError) as info:
        check_comparable(None, "L/h")
    assert "'L/h'" in str(info.value) and "without a unit" in str(info.value)


@pytest.mark.parametrize(
    "typed, meant",
    [
        ("Lh", "L/h"),
        ("Lmin", "L/min"),
        ("degc", "degC"),
        ("mAu", "mAU"),
        ("cv", "CV"),
        # spellings pint understands: the same unit, written differently
        ("ml", "mL"),
        ("L/hr", "L/h"),
        ("uS/cm", "µS/cm"),
        ("μS/cm", "µS/cm"),  # Greek mu instead of the micro sign
        ("m^2", "m**2"),
    ],
)
def test_unknown_unit_message_suggests_the_likely_unit(typed, meant):
    with pytest.raises(UnitError) as info:
        check_comparable("L/h", typed)
    message = str(info.value)
    assert message.startswith(f"Unknown unit '{typed}'")
    assert f"Did you mean '{meant}'?" in message
    quantity = quantity_of(meant)
    # the list stays short: the units of the quantity meant, not all of them
    assert ", ".join(SUPPORTED_UNITS[quantity]) in message
    assert "kg/h" not in message or quantity == "mass flow rate"


def test_unknown_unit_that_pint_knows_says_how_to_add_it():
    with pytest.raises(UnitError) as info:
        check_comparable("bar", "mbar")
    message = str(info.value)
    assert "Unknown unit 'mbar'" in message
    assert "pressure" in message and "Pa, bar, pascal" in message
    assert "with_measurement_unit" in message


def test_unknown_unit_without_a_likely_match_lists_the_supported_units():
    with pytest.raises(UnitError) as info:
        check_comparable("L/h", "xyzzy")
    message = str(info.value)
    assert message.startswith("Unknown unit 'xyzzy'. Known units: ")
    assert "L/min" in message and "degC" in message


# --- add_unit ------------------------------------------------------------------------------------


def test_add_unit_against_an_existing_quantity_with_a_relation(scratch_units):
    add_unit("mm", unit_relation="10 mm = 1 cm", quantity="length")
    assert is_supported("mm")
    assert quantity_of("mm") == "length"
    assert "mm" in compatible_units("cm")
    assert convert(25, "mm", "cm") == 2.5
    check_comparable("m", "mm")


def test_add_unit_defines_a_new_unit_by_its_relation(scratch_units):
    add_unit("bottle", unit_relation="1 bottle = 2.5 L")  # quantity taken from L
    assert quantity_of("bottle") == "volume"
    assert convert(2, "bottle", "mL") == 5000
    assert convert(5, "L", "bottle") == 2
    # the relation may be written either way round
    add_unit("crate", unit_relation="12 bottle = 1 crate")
    assert convert(1, "crate", "L") == 30


def test_add_unit_that_pint_knows_needs_no_relation(scratch_units):
    add_unit("mbar", quantity="pressure")
    assert convert(1000, "mbar", "bar") == 1
    add_unit("kPa")  # only pressure has this dimension
    assert quantity_of("kPa") == "pressure"


def test_add_unit_as_a_quantity_derived_from_existing_ones(scratch_units):
    add_unit("mg/mL", quantity="concentration", quantity_relation="mass / volume")
    assert quantity_of("mg/mL") == "concentration"
    add_unit("mg/L", quantity="concentration")
    assert convert(1, "mg/mL", "mg/L") == 1000
    # a new quantity: not comparable with density although the dimension is the same
    with pytest.raises(UnitError, match="concentration"):
        check_comparable("g/L", "mg/mL")
    add_unit("mol/L", quantity="molarity", quantity_relation="amount of substance / volume")
    assert quantity_of("mol/L") == "molarity"
    # pint dimensions work too
    add_unit("g/L/h", quantity="productivity", quantity_relation="[mass] / [length]**3 / [time]")
    assert quantity_of("g/L/h") == "productivity"


def test_add_unit_as_a_free_standing_quantity(scratch_units):
    add_unit("DV", quantity="diafiltration volume")
    assert is_supported("DV")
    assert quantity_of("DV") == "diafiltration volume"
    assert compatible_units("DV") == ["DV"]
    check_comparable("DV", "DV")
    assert convert(3, "DV", "DV") == 3
    with pytest.raises(UnitError, match="'DV' and 'L'"):
        check_comparable("DV", "L")
    # more units of the new quantity relate to it
    add_unit("mDV", unit_relation="1000 mDV = 1 DV")
    assert quantity_of("mDV") == "diafiltration volume"
    assert convert(500, "mDV", "DV") == 0.5


def test_add_unit_twice_with_the_same_meaning_is_a_no_op(scratch_units):
    add_unit("DV", quantity="diafiltration volume")
    add_unit("DV", quantity="diafiltration volume")
    add_unit("DV", quantity="Diafiltration Volume")  # quantity names ignore case
    add_unit("mm", unit_relation="10 mm = 1 cm", quantity="length")
    add_unit("mm", unit_relation="1 mm = 0.1 cm")
    add_unit("L/h", quantity="flow")
    assert SUPPORTED_UNITS["diafiltration volume"] == ["DV"]
    assert SUPPORTED_UNITS["length"] == ["m", "cm", "mm"]
    assert SUPPORTED_UNITS["flow"] == ["L/h", "L/min", "L/d"]


@pytest.mark.parametrize(
    "args, kwargs, words",
    [
        (("mm",), {"unit_relation": "1 mm = 1 cm"}, ["'mm'", "0.1 cm"]),  # contradicts pint
        (("L/h",), {"quantity": "time"}, ["'L/h'", "flow"]),  # already another quantity's
        (("mm",), {"quantity": "pressure"}, ["'mm'", "pressure"]),  # wrong dimension
        (("DV",), {}, ["'DV'", "quantity="]),  # says nothing about what it is
        (("DV",), {"quantity": "volume"}, ["'DV'", "unit_relation="]),  # no size given
        (("bad name",), {}, ["'bad name'"]),
        (("",), {}, ["''"]),
        (("x",), {"unit_relation": "1 y = 2 L"}, ["'x'"]),  # relation does not mention x
        (("x",), {"unit_relation": "1 x = 2 foo"}, ["'foo'"]),
        (("x",), {"unit_relation": "1 x == 2 L"}, ["'x'"]),
        (("x",), {"unit_relation": "0 x = 2 L"}, ["positive"]),
        (("x",), {"unit_relation": "1 x = 2 degC"}, ["'degC'", "offset"]),
        (("x",), {"unit_relation": "1 x = 1 L", "quantity": "mass"}, ["'x'", "mass"]),
        (("x/y",), {"unit_relation": "1 x/y = 2 L"}, ["'x/y'"]),
        (("m**4",), {}, ["'m**4'", "quantity="]),
        (("mg/mL",), {"quantity_relation": "mass / volume"}, ["quantity="]),
        (("mg/mL",), {"quantity": "c", "quantity_relation": "mass / volme"}, ["'volme'"]),
        (("mg/mL",), {"quantity": "c", "quantity_relation": "mass / time"}, ["'mg/mL'"]),
        (("kg",), {"quantity_relation": "volume"}, ["'kg'", "mass"]),
    ],
)
def test_add_unit_rejects_what_does_not_add_up(scratch_units, args, kwargs, words):
    before = {q: list(us) for q, us in SUPPORTED_UNITS.items()}
    with pytest.raises(UnitError) as info:
        add_unit(*args, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert SUPPORTED_UNITS == before  # nothing half-added


def test_add_unit_refuses_to_redefine_a_free_standing_unit(scratch_units):
    add_unit("DV", quantity="diafiltration volume")
    with pytest.raises(UnitError, match="'DV'"):
        add_unit("DV", unit_relation="1 DV = 5 L")
    with pytest.raises(UnitError, match="'DV'"):
        add_unit("DV", quantity="volume")


def test_an_added_unit_clears_the_unknown_unit_answer(scratch_units):
    with pytest.raises(UnitError, match="Unknown unit 'mbar'"):
        check_comparable("bar", "mbar")
    add_unit("mbar")
    check_comparable("bar", "mbar")


def test_scratch_units_forgets_added_units():
    with units._scratch_units():
        add_unit("DV", quantity="diafiltration volume")
        add_unit("mbar")
        assert convert(1000, "mbar", "bar") == 1
    assert not is_supported("DV")
    assert not is_supported("mbar")
    assert "diafiltration volume" not in SUPPORTED_UNITS
    with pytest.raises(UnitError):
        converter("mbar", "bar")
    # DV can be added again, with another meaning, in another test
    with units._scratch_units():
        add_unit("DV", unit_relation="1 DV = 5 L")
        assert convert(1, "DV", "L") == 5
    assert not is_supported("DV")
