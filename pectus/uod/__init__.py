"""The UOD API: everything a Unit Operation Definition file imports.

A UOD file defines ``create()``, which describes the unit with a :class:`UodBuilder` and returns
its ``build()``. An Open Pectus UOD ports by changing its import lines to::

    from pectus.uod import (HardwareLayerBase, PlotAxis, PlotColorRegion, PlotConfiguration, Register,
                            RegisterDirection, RegexNumber, SubPlot, UodBuilder, UodCommand, tags)

See docs/uod.md for the guide.
"""

from pectus.hardware.base import HardwareError, HardwareLayerBase, Register, RegisterDirection
from pectus.hardware.composite import CompositeHardware
from pectus.hardware.serial import SerialHardware
from pectus.hardware.simulated import SimulatedHardware
from pectus.pcode import tags, units
from pectus.uod.builder import UodBuilder
from pectus.uod.commands import CommandDefinition, UodCommand, as_decimal, as_int
from pectus.uod.definition import UnitOperationDefinition, UodError
from pectus.uod.loader import load_uod
from pectus.uod.plot import Colors, PlotAxis, PlotColorRegion, PlotConfiguration, SubPlot
from pectus.uod.regex import (REGEX_BASE_ARG, REGEX_DURATION, REGEX_DURATION_OPTIONAL, REGEX_INT, REGEX_TEXT,
                              RegexCategorical, RegexNumber, RegexNumberOptional, RegexText)

#: The Open Pectus name of the definition type.
UnitOperationDefinitionBase = UnitOperationDefinition

__all__ = [
    "CommandDefinition", "Colors", "CompositeHardware", "HardwareError", "HardwareLayerBase", "PlotAxis",
    "PlotColorRegion", "SerialHardware",
    "PlotConfiguration", "REGEX_BASE_ARG", "REGEX_DURATION", "REGEX_DURATION_OPTIONAL", "REGEX_INT",
    "REGEX_TEXT", "Register", "RegisterDirection", "RegexCategorical", "RegexNumber", "RegexNumberOptional",
    "RegexText", "SimulatedHardware", "SubPlot", "UnitOperationDefinition", "UnitOperationDefinitionBase", "UodBuilder",
    "UodCommand", "UodError", "as_decimal", "as_int", "load_uod", "tags", "units",
]
