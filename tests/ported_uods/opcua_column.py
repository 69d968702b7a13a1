"""A chromatography column on an OPC-UA PLC, written for Open Pectus in its users' other styles.

Covers: OPC-UA registers with ';' paths (the reference's documentation style), a plain
`import openpectus.engine.hardware` used dotted, module aliases, a from-import of modules,
imports inside a function, a unit of the UOD's own with base units counting on its tags, commands
with init and finalize functions and an overlap group, the unit's own Batch Name tag, to_tag and
from_tag conversions, and a plot that names a tag the unit does not have (as opcua_test.py does).
"""
import openpectus.engine.hardware
import openpectus.lang.exec.tags_impl as tags
from openpectus.lang.exec import units
from openpectus.lang.exec.regex import RegexNumber, REGEX_DURATION  # noqa: F401


def create():
    from openpectus.engine.uod_builder_api import (UodBuilder, UodCommand,
                                                   PlotConfiguration, SubPlot, PlotAxis, PlotColorRegion)
    Read = openpectus.engine.hardware.RegisterDirection.Read
    Write = openpectus.engine.hardware.RegisterDirection.Write

    def start_fill(cmd: UodCommand):
        cmd.cmd_state["target"] = 3

    def fill(cmd: UodCommand, number, number_unit):
        """# Run the feed pump at a rate
        Fill: 2 L/min
        """
        if cmd.get_iteration_count() == 0:
            cmd.context.tags["FeedRate"].set_value_and_unit(float(number), number_unit, cmd.tick_time)
        cmd.set_progress(min(1.0, cmd.get_iteration_count() / cmd.cmd_state["target"]))
        if cmd.get_iteration_count() >= cmd.cmd_state["target"]:
            cmd.set_complete()

    def stop_feed(cmd: UodCommand):
        cmd.context.tags["FeedRate"].set_value(0.0, cmd.tick_time)

    def drain(cmd: UodCommand):
        """# Drain the column
        Drain
        """
        cmd.context.tags["FeedRate"].set_value(0.0, cmd.tick_time)
        cmd.set_complete()

    return (
        UodBuilder()
        .with_instrument("Column 3")
        .with_author("Grace Hopper", "grace@example.com")
        .with_filename(__file__)
        .with_location("Downstream / Suite B")
        .with_hardware_opcua(host="opc.tcp://127.0.0.1:48400")
        .with_measurement_unit("DV", quantity="diavolume")
        .with_hardware_register("FeedRate", Write, path='Objects;2:System;2:FeedRate', safe_value=0.0)
        .with_hardware_register("UV", Read, path='Objects;2:System;2:UV', to_tag=lambda au: 1000 * au)
        .with_hardware_register("Valve", Write, path="Objects;2:System;2:Valve", safe_value="Closed",
                                from_tag=lambda v: v == "Open")
        .with_hardware_register("Diavolumes", Read, path='Objects;2:System;2:Diavolumes')
        .with_hardware_register("Block Diavolumes", Read, path='Objects;2:System;2:BlockDiavolumes')
        .with_tag(tags.Tag("FeedRate", value=0.0, unit="L/h", direction=tags.TagDirection.Output))
        .with_tag(tags.ReadingTag("UV", "mAU"))
        .with_tag(tags.SelectTag("Valve", "Closed", None, ["Open", "Closed"], direction=tags.TagDirection.Output))
        .with_tag(tags.ReadingTag("Diavolumes", "DV"))
        .with_tag(tags.ReadingTag("Block Diavolumes", "DV"))
        .with_tag(tags.Tag("Batch Name"))
        .with_base_unit_provider(["DV"], "Diavolumes", "Block Diavolumes")
        .with_command_regex_arguments("Fill", RegexNumber(units=["L/h", "L/min"], non_negative=True), fill,
                                      init_fn=start_fill, finalize_fn=stop_feed)
        .with_command("Drain", drain, arg_parse_fn=None)
        .with_command("Valve", lambda cmd, value: (cmd.context.tags["Valve"].set_value(value, cmd.tick_time),
                                                   cmd.set_complete()))
        .with_command_overlap(["Fill", "Drain"])
        .with_process_value("UV")
        .with_process_value("Batch Name")
        .with_process_value_entry("FeedRate", execute_command_name="Fill")
        .with_process_value_choice("Valve", {"Open": "Valve: Open", "Closed": "Valve: Closed"})
        .with_plot_configuration(PlotConfiguration(
            color_regions=[PlotColorRegion(process_value_name="Block",
                                           value_color_map={"Equilibrate": "#1F77B422", "Load": "#FF7F0E22"})],
            sub_plots=[SubPlot(axes=[PlotAxis(label="UV", process_value_names=["UV"], y_max=2000, y_min=0,
                                              color="#2CA02C")], ratio=2),
                       SubPlot(axes=[PlotAxis(label="Conductivity", process_value_names=["CT01"], y_max=100,
                                              y_min=0, color="#D62728")], ratio=1)],
            process_value_names_to_annotate=["Mark"],
            x_axis_process_value_names=["Process Time", "Diavolumes"]))
        .build()
    )


assert units.is_supported_unit("L/h")
