"""Example unit on an OPC-UA server: a pump, a valve and a flow meter in a PLC.

Equipment, as variables of the server (``Objects/2:System/2:<name>``):

* pump ``PU01`` (0-100 %), written;
* inlet valve ``VA01``, 0 = Closed, 1 = Open: written, and read back so the UI shows what the PLC
  really did;
* flow meter ``FT01`` (L/h), read;
* ``RESET``, a Boolean the ``Reset`` command holds true for 1 s (the PLC resets its totalizer).

The server is ``PECTUS_OPCUA_HOST`` (default ``opc.tcp://127.0.0.1:48400``). The registers have no
``type`` option: the driver asks the server for each node's type before its first write.

Try it against the test server, which serves these variables (its FT01 follows PU01 while VA01 is
open)::

    python -m pectus.hardware.opcua_server                          # terminal 1, until Ctrl-C
    pectus-engine validate --uod uods/opcua_example.py --connect    # terminal 2: reads every register
    pectus-engine -uod uods/opcua_example.py                        # or run the unit
"""

import os

from pectus.uod import (Colors, PlotAxis, PlotConfiguration, RegexCategorical, RegexNumber, RegisterDirection,
                        SubPlot, UnitOperationDefinition, UodBuilder, UodCommand, tags)

HOST = os.environ.get("PECTUS_OPCUA_HOST", "opc.tcp://127.0.0.1:48400")
RESET_TICKS = 10  # the reset signal is held for 10 ticks, 1 s at the engine's 0.1 s tick


def path(name: str) -> str:
    return f"Objects/2:System/2:{name}"


def set_pump(cmd: UodCommand, number: str, number_unit: str) -> None:
    """Set the pump speed, 0 to 100 %.

    PU01: 50 %
    PU01: 0 %
    """
    percent = float(number)
    if percent > 100:  # the regex already refuses negative numbers
        raise ValueError(f"PU01 takes 0 to 100 %, not {number} %")
    cmd.context.tags["PU01"].set_value(percent, cmd.tick_time)
    cmd.set_complete()


def set_valve(cmd: UodCommand, option: str) -> None:
    """Open or close the inlet valve VA01.

    VA01: Open
    VA01: Closed
    """
    cmd.context.tags["VA01"].set_value(option, cmd.tick_time)
    cmd.set_complete()


def reset(cmd: UodCommand) -> None:
    """Reset the PLC's totalizer: holds RESET for 1 s, reporting progress.

    Reset
    """
    count = cmd.get_iteration_count()
    if count == 0:
        cmd.context.tags["RESET"].set_value("Reset", cmd.tick_time)
    cmd.set_progress(count / RESET_TICKS)
    if count >= RESET_TICKS:
        cmd.set_complete()


def release_reset(cmd: UodCommand) -> None:
    # Runs when Reset completes and also when it is cancelled: never leave the signal held.
    cmd.context.tags["RESET"].set_value("N/A", cmd.tick_time)


def create() -> UnitOperationDefinition:
    output = tags.TagDirection.Output
    return (
        UodBuilder()
        .with_instrument("OpcuaExample")
        .with_author("Demo Author", "demo@pectus.example")
        .with_filename(__file__)
        .with_location("Demo lab / OPC-UA skid")
        .with_hardware_opcua(HOST)
        .with_data_log_interval_seconds(1)

        .with_hardware_register("FT01", RegisterDirection.Read, path=path("FT01"))
        .with_hardware_register("PU01", RegisterDirection.Write, path=path("PU01"), safe_value=0.0)
        .with_hardware_register("VA01", RegisterDirection.Both, path=path("VA01"), safe_value="Closed",
                                to_tag=lambda raw: "Open" if raw else "Closed",
                                from_tag=lambda state: 1 if state == "Open" else 0)
        .with_hardware_register("RESET", RegisterDirection.Write, path=path("RESET"), safe_value="N/A",
                                from_tag=lambda state: state == "Reset")

        .with_tag(tags.ReadingTag("FT01", "L/h"))
        .with_tag(tags.Tag("PU01", value=0.0, unit="%", direction=output))
        .with_tag(tags.SelectTag("VA01", "Closed", None, ["Open", "Closed"], direction=output))
        .with_tag(tags.SelectTag("RESET", "N/A", None, ["Reset", "N/A"], direction=output))

        .with_command_regex_arguments("PU01", RegexNumber(units=["%"], non_negative=True), set_pump)
        .with_command_regex_arguments("VA01", RegexCategorical(exclusive_options=["Open", "Closed"]), set_valve)
        .with_command("Reset", reset, finalize_fn=release_reset, arg_parse_fn=None)

        .with_process_value("FT01")
        .with_process_value_entry("PU01")
        .with_process_value_choice("VA01", {"Open": "VA01: Open", "Closed": "VA01: Closed"})
        .with_process_value_choice("RESET", {"Reset": "Reset"})
        .with_process_value("Block")
        .with_process_value("Run Time")

        .with_plot_configuration(PlotConfiguration(
            process_value_names_to_annotate=["Mark"],
            sub_plots=[SubPlot(axes=[PlotAxis("Flow", ["FT01"], y_max=70, y_min=0, color=Colors.C0),
                                     PlotAxis("Pump", ["PU01"], y_max=100, y_min=0, color=Colors.C1)])],
            x_axis_process_value_names=["Process Time", "Run Time"]))
        .build()
    )
