"""A filtration skid with hardware of its own, written for Open Pectus as its users write UODs.

Covers: a HardwareLayerBase subclass (connect, disconnect, tick, read, write, read_batch,
write_batch), registers with ';' paths (this driver's own, so they stay as they are), derived and
select tags, regex arguments, process value entries and choices, a plot with colour regions,
accumulated volume and column volumes, required roles, a parenthesised import with comments.
"""
from typing import Any, Sequence

from openpectus.engine.uod_builder_api import (
    UnitOperationDefinitionBase, UodBuilder, UodCommand,  # the builder
    as_decimal,
    tags,
    PlotConfiguration, SubPlot, PlotAxis, PlotColorRegion,
    RegexNumber, RegexCategorical, RegexText,
    HardwareLayerBase, Register, RegisterDirection  # needed by the skid's own hardware
)
from openpectus.lang.exec.tags import format_time_as_clock


class SkidHardware(HardwareLayerBase):
    """The skid's PLC, modelled: flow follows the pump while the valve is open."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, Any] = {"PU01": 0.0, "VA01": 0, "FT01": 0.0, "Totalizer": 0.0, "Uptime": 0.0}

    def connect(self):
        super().connect()

    def disconnect(self):
        super().disconnect()

    def tick(self):  # Open Pectus calls it once per tick, without arguments
        self.values["Uptime"] += 0.1

    def read(self, r: Register) -> Any:
        return self.values[r.name]

    def scan(self):
        """One scan of the PLC (0.1 s): the flow follows the pump while the valve is open."""
        flow = 0.6 * self.values["PU01"] if self.values["VA01"] else 0.0  # L/h
        self.values["FT01"] = flow
        self.values["Totalizer"] += flow * 0.1 / 3600

    def write(self, value: Any, r: Register):
        self.values[r.name] = value

    def read_batch(self, registers: Sequence[Register]) -> list[Any]:
        self.scan()
        return [self.read(r) for r in registers]

    def write_batch(self, values: Sequence[Any], registers: Sequence[Register]):
        for value, r in zip(values, registers):
            self.write(value, r)


def create() -> UnitOperationDefinitionBase:
    builder = UodBuilder()

    def set_pump(cmd: UodCommand, number: str, number_unit: str):
        """# Set the pump speed
        PU01: 50 %
        """
        cmd.context.tags.get("PU01").set_value(float(as_decimal(number)), cmd.tick_time)
        cmd.set_complete()

    def set_valve(cmd: UodCommand, option: str):
        """# Open or close the valve
        VA01: Open
        """
        cmd.context.tags.get("VA01").set_value(option, cmd.tick_time)
        cmd.set_complete()

    def note(cmd: UodCommand, text: str):
        """# Note a text
        Note: filter changed
        """
        cmd.context.tags["Note"].set_value(text, cmd.tick_time)
        cmd.set_complete()

    def set_column_volume(cmd: UodCommand, value):
        cmd.context.tags["Column Volume"].set_value(float(value), cmd.tick_time)
        cmd.set_complete()

    def permeate(flow):
        return None if flow is None else round(flow / 2, 6)

    return (
        builder
        .with_instrument("Filtration skid")
        .with_author("Ada Lovelace", "ada@example.com")
        .with_filename(__file__)
        .with_location("Pilot plant / Hall 2")
        .with_hardware(SkidHardware())
        .with_required_roles({"Operator", "Engineer"})
        .with_hardware_register("PU01", RegisterDirection.Write, path="Objects;2:Skid;2:PU01", safe_value=0.0)
        .with_hardware_register("VA01", RegisterDirection.Write, path="Objects;2:Skid;2:VA01", safe_value="Closed",
                                from_tag=lambda x: 1 if x == "Open" else 0)
        .with_hardware_register("FT01", RegisterDirection.Read, path="Objects;2:Skid;2:FT01")
        .with_hardware_register("Totalizer", RegisterDirection.Read, path="Objects;2:Skid;2:Totalizer")
        .with_hardware_register("Uptime", RegisterDirection.Read)
        .with_tag(tags.Tag("PU01", value=0.0, unit="%", direction=tags.TagDirection.Output))
        .with_tag(tags.SelectTag("VA01", value="Closed", unit=None, choices=["Open", "Closed"],
                                 direction=tags.TagDirection.Output))
        .with_tag(tags.DerivedTag("Permeate", fn=permeate, input_tags=[
            tags.ReadingTag("FT01", "L/h").with_builder(builder)], unit="L/h"))
        .with_tag(tags.ReadingTag("Totalizer", "L"))
        .with_tag(tags.ReadingTag("Uptime", unit="s", format_fn=format_time_as_clock))
        .with_tag(tags.Tag("Column Volume", value=0.01, unit="L"))
        .with_tag(tags.Tag("Note", value=""))
        .with_accumulated_volume("Totalizer")
        .with_accumulated_cv("Column Volume", "Totalizer")
        .with_command_regex_arguments("PU01", RegexNumber(units=["%"], non_negative=True), set_pump)
        .with_command_regex_arguments("VA01", RegexCategorical(exclusive_options=["Open", "Closed"]), set_valve)
        .with_command_regex_arguments("Note", RegexText(allow_empty=True), note)
        .with_command(name="Column Volume", exec_fn=set_column_volume)
        .with_process_value("FT01")
        .with_process_value("Permeate")
        .with_process_value("Uptime")
        .with_process_value_entry("PU01")
        .with_process_value_entry("Column Volume", entry_data_type="float")
        .with_process_value_choice("VA01", command_options={"Open": "VA01: Open", "Closed": "VA01: Closed"})
        .with_process_value("Accumulated CV")
        .with_plot_configuration(PlotConfiguration(
            color_regions=[PlotColorRegion(process_value_name="VA01",
                                           value_color_map={"Open": "#66ff6633", "Closed": "#6666ff33"})],
            sub_plots=[SubPlot(axes=[
                PlotAxis(label="Flow", process_value_names=["FT01", "Permeate"], y_max=70, y_min=0, color="#ff0000"),
                PlotAxis(label="Pump", process_value_names=["PU01"], y_max=100, y_min=0, color="#0000ff"),
            ], ratio=1)],
            process_value_names_to_annotate=["Mark"],
            x_axis_process_value_names=["Process Time", "Accumulated Volume"],
        ))
        .build()
    )
