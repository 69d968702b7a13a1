"""The UOD API: everything a Unit Operation Definition file imports.

A UOD file defines ``create()``, which describes the unit with a :class:`UodBuilder` and returns
its ``build()``. It imports from this one module::

    from pectus.uod import (HardwareLayerBase, PlotAxis, PlotColorRegion, PlotConfiguration, Register,
                            RegisterDirection, RegexNumber, SubPlot, UodBuilder, UodCommand, tags)

Invariant: every name an Open Pectus UOD imports from the reference's UOD-facing modules (its
``uod_builder_api``, hardware base classes, tags, units, regex helpers, plot models...) is here
under the same name with the same meaning, so ``pectus-engine port-uod`` only changes where
names come from (the list is ``pectus.uod.port.REFERENCE_NAMES``). A name whose reference
behaviour Pectus does not have is here too, and raises an error that says so when it is used.

See docs/uod.md for the guide.
"""

from typing import Any, NoReturn

from pectus.hardware.base import (HardwareError, HardwareLayerBase, HardwareLayerException, NullHardware, Register,
                                  RegisterDirection)
from pectus.hardware.composite import CompositeHardware
from pectus.hardware.serial import SerialHardware
from pectus.hardware.simulated import SimulatedHardware
from pectus.pcode import tags, units
from pectus.pcode.tags import (AccumulatedColumnVolume, AccumulatorBlockTag, AccumulatorTag, DerivedTag, ReadingTag,
                               SelectTag, SystemTagName, Tag, TagDirection, TagFormatFunction, TagValueType,
                               format_time_as_clock)
from pectus.pcode.units import (BASE_VALID_UNITS, QUANTITY_UNIT_MAP, add_unit, are_comparable, as_decimal, as_int,
                                convert_value_to_unit, get_compatible_unit_names, get_supported_units,
                                get_unit_quantity_name, get_volume_units, is_supported_unit)
from pectus.uod.builder import UodBuilder
from pectus.uod.commands import CommandDefinition, UodCommand
from pectus.uod.definition import EntryDataType, UnitOperationDefinition, UodError
from pectus.uod.loader import load_uod
from pectus.uod.plot import Colors, PlotAxis, PlotColorRegion, PlotConfiguration, SubPlot
from pectus.uod.regex import (REGEX_BASE_ARG, REGEX_DURATION, REGEX_DURATION_OPTIONAL, REGEX_INT, REGEX_TEXT,
                              RegexCategorical, RegexNumber, RegexNumberOptional, RegexText)

#: The Open Pectus name of the definition type.
UnitOperationDefinitionBase = UnitOperationDefinition
#: The Open Pectus name of :class:`CompositeHardware`.
Composite_Hardware = CompositeHardware


def _unsupported(name: str, reason: str) -> type:
    """A class named ``name`` that refuses to be made, saying ``reason``: a ported UOD that
    imports it loads, and fails with this message at the line that uses it."""

    def refuse(cls: type, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(f"{name} is not available in Pectus: {reason}")

    return type(name, (), {"__new__": refuse, "__doc__": f"Not available in Pectus: {reason}"})


Labjack_Hardware = _unsupported(
    "Labjack_Hardware", "LabJack devices need LabJack's native LJM library; use with_hardware() with a driver of "
                        "your own")
MarkTag = _unsupported("MarkTag", "the engine makes its own Mark tag; a UOD cannot add another")
BlockTimeTag = _unsupported("BlockTimeTag", "the engine makes its own Block Time tag; a UOD cannot add another")
ScopeTimeTag = _unsupported("ScopeTimeTag", "the engine makes its own Scope Time tag; a UOD cannot add another")
ErrorRecoveryDecorator = _unsupported(
    "ErrorRecoveryDecorator", "the engine runs every hardware under its own recovery state machine (OK, Issue, "
                              "Reconnect, Error); pass the hardware itself to with_hardware()")


def __getattr__(name: str) -> Any:
    # The OPC-UA driver loads asyncua, which only the units that use it should pay for.
    if name in ("OPCUAHardware", "OPCUA_Hardware"):
        from pectus.hardware.opcua import OPCUAHardware
        return OPCUAHardware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AccumulatedColumnVolume", "AccumulatorBlockTag", "AccumulatorTag", "BASE_VALID_UNITS", "BlockTimeTag",
    "Colors", "CommandDefinition", "CompositeHardware", "Composite_Hardware", "DerivedTag", "EntryDataType",
    "ErrorRecoveryDecorator", "HardwareError", "HardwareLayerBase", "HardwareLayerException", "Labjack_Hardware",
    "MarkTag", "NullHardware", "OPCUAHardware", "OPCUA_Hardware", "PlotAxis", "PlotColorRegion", "PlotConfiguration",
    "QUANTITY_UNIT_MAP", "REGEX_BASE_ARG", "REGEX_DURATION", "REGEX_DURATION_OPTIONAL", "REGEX_INT", "REGEX_TEXT",
    "ReadingTag", "RegexCategorical", "RegexNumber", "RegexNumberOptional", "RegexText", "Register",
    "RegisterDirection", "ScopeTimeTag", "SelectTag", "SerialHardware", "SimulatedHardware", "SubPlot",
    "SystemTagName", "Tag", "TagDirection", "TagFormatFunction", "TagValueType", "UnitOperationDefinition",
    "UnitOperationDefinitionBase", "UodBuilder", "UodCommand", "UodError", "add_unit", "are_comparable",
    "as_decimal", "as_int", "convert_value_to_unit", "format_time_as_clock", "get_compatible_unit_names",
    "get_supported_units", "get_unit_quantity_name", "get_volume_units", "is_supported_unit", "load_uod", "tags",
    "units",
]
