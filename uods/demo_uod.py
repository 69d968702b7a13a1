"""Demo unit: a small simulated chromatography skid.

Equipment (all simulated by :class:`DemoHardware`):

* pump ``PU01`` (0-100 %) drives the flow through inlet valve ``VA01`` (Open/Closed); the
  ``Inlet`` selector feeds ``Buffer`` or ``Sample``;
* flow meter ``FT01`` (L/h) follows the pump speed while the valve is open; a totalizer
  (``Totalizer``, L) integrates it, and the ``Reset`` command zeroes it;
* heater ``HE01`` (0-100 %) and temperature ``TT01`` (degC), which settles towards 20 degC
  plus 0.6 degC per heater percent, and cools back to the 20 degC ambient;
* UV detector ``UV01`` (mAU), high while sample flows through the cell.

The column's volume (``Column Volume``, L) makes ``Base: CV`` thresholds possible; see
``uods/demo_method.pcode`` for a method that runs on this unit.

Run it: ``pectus-engine simulate --uod uods/demo_uod.py uods/demo_method.pcode``.
"""

import math

from pectus.uod import (Colors, PlotAxis, PlotColorRegion, PlotConfiguration, RegexCategorical, RegexNumber,
                        RegisterDirection, SimulatedHardware, SubPlot, UnitOperationDefinition, UodBuilder,
                        UodCommand, tags)

FLOW_PER_PERCENT = 0.6  # L/h per pump percent: 60 L/h at full speed
FLOW_TIME_CONSTANT = 1.0  # s
RIPPLE = 0.01  # relative flow ripple of the pump strokes
RIPPLE_RADIANS_PER_S = 2 * math.pi / 0.7  # one stroke every 0.7 s
AMBIENT = 20.0  # degC
HEATING_PER_PERCENT = 0.6  # degC above ambient per heater percent, at equilibrium
TEMPERATURE_TIME_CONSTANT = 20.0  # s
UV_BASELINE = 0.005  # AU, buffer
UV_SAMPLE = 0.8  # AU, sample
UV_TIME_CONSTANT = 5.0  # s: mixing in the tubing and the flow cell
RESET_TICKS = 30  # the reset signal is held for 30 ticks, 3 s at the engine's 0.1 s tick


class DemoHardware(SimulatedHardware):
    """The skid's physics. Raw values: valves and the reset signal are 0/1, UV01 is in AU."""

    def __init__(self) -> None:
        super().__init__({"PU01": 0.0, "VA01": 0, "Inlet": 0, "HE01": 0.0, "Reset": 0,
                          "FT01": 0.0, "Totalizer": 0.0, "TT01": AMBIENT, "UV01": UV_BASELINE})
        self._flow = 0.0  # the flow without ripple

    def step(self, dt: float) -> None:
        # First-order responses, one Euler step each; min(..., 1) keeps a long step stable.
        v = self.values
        target = FLOW_PER_PERCENT * (v["PU01"] or 0.0) if v["VA01"] else 0.0
        self._flow += (target - self._flow) * min(dt / FLOW_TIME_CONSTANT, 1.0)
        flow = self._flow * (1.0 + RIPPLE * math.sin(RIPPLE_RADIANS_PER_S * self.elapsed))
        v["FT01"] = flow
        v["Totalizer"] = 0.0 if v["Reset"] else v["Totalizer"] + flow * dt / 3600.0
        equilibrium = AMBIENT + HEATING_PER_PERCENT * (v["HE01"] or 0.0)
        v["TT01"] += (equilibrium - v["TT01"]) * min(dt / TEMPERATURE_TIME_CONSTANT, 1.0)
        uv = UV_SAMPLE if v["Inlet"] and flow > 1.0 else UV_BASELINE
        v["UV01"] += (uv - v["UV01"]) * min(dt / UV_TIME_CONSTANT, 1.0)


def _set_percent(cmd: UodCommand, tag_name: str, number: str) -> None:
    # The engine refused a value outside the tag's declared range (0 to 100 %) before this runs.
    cmd.context.tags[tag_name].set_value(float(number), cmd.tick_time)
    cmd.set_complete()


def set_pump(cmd: UodCommand, number: str, number_unit: str) -> None:
    """Set the pump speed, 0 to 100 %. At 50 % the flow is 30 L/h (when VA01 is open).

    PU01: 50 %
    PU01: 0 %
    """
    _set_percent(cmd, "PU01", number)


def set_heater(cmd: UodCommand, number: str, number_unit: str) -> None:
    """Set the heater power, 0 to 100 %. TT01 settles at 20 degC + 0.6 degC per percent.

    HE01: 50 %
    HE01: 0 %
    """
    _set_percent(cmd, "HE01", number)


def set_valve(cmd: UodCommand, option: str) -> None:
    """Open or close the inlet valve VA01.

    VA01: Open
    VA01: Closed
    """
    cmd.context.tags["VA01"].set_value(option, cmd.tick_time)
    cmd.set_complete()


def set_inlet(cmd: UodCommand, option: str) -> None:
    """Choose what the pump feeds: Buffer or Sample (UV01 rises while sample flows).

    Inlet: Sample
    Inlet: Buffer
    """
    cmd.context.tags["Inlet"].set_value(option, cmd.tick_time)
    cmd.set_complete()


def set_column_volume(cmd: UodCommand, number: str, number_unit: str) -> None:
    """Set the column volume that CV thresholds count in (Base: CV).

    Column Volume: 0.5 L
    Column Volume: 250 mL
    """
    cmd.context.tags["Column Volume"].set_value_and_unit(float(number), number_unit, cmd.tick_time)
    cmd.set_complete()


def reset(cmd: UodCommand) -> None:
    """Zero the totalizer: holds the reset signal for 3 s, reporting progress.

    Reset
    """
    count = cmd.get_iteration_count()
    if count == 0:
        cmd.context.tags["Reset"].set_value("Reset", cmd.tick_time)
    cmd.set_progress(count / RESET_TICKS)
    if count >= RESET_TICKS:
        cmd.set_complete()


def release_reset(cmd: UodCommand) -> None:
    # Runs when Reset completes and also when it is cancelled: never leave the signal held.
    cmd.context.tags["Reset"].set_value("N/A", cmd.tick_time)


def create() -> UnitOperationDefinition:
    builder = UodBuilder()
    output = tags.TagDirection.Output
    return (
        builder
        .with_instrument("DemoUod")
        .with_author("Demo Author", "demo@pectus.example")
        .with_filename(__file__)
        .with_location("Demo lab / simulated skid")
        .with_hardware(DemoHardware())
        .with_data_log_interval_seconds(1)

        .with_hardware_register("PU01", RegisterDirection.Write, safe_value=0.0)
        .with_hardware_register("VA01", RegisterDirection.Write, safe_value="Closed",
                                from_tag=lambda state: 1 if state == "Open" else 0)
        .with_hardware_register("Inlet", RegisterDirection.Write, safe_value="Buffer",
                                from_tag=lambda inlet: 1 if inlet == "Sample" else 0)
        .with_hardware_register("HE01", RegisterDirection.Write, safe_value=0.0)
        .with_hardware_register("Reset", RegisterDirection.Write, safe_value="N/A",
                                from_tag=lambda state: 1 if state == "Reset" else 0)
        .with_hardware_register("FT01", RegisterDirection.Read)
        .with_hardware_register("Totalizer", RegisterDirection.Read)
        .with_hardware_register("TT01", RegisterDirection.Read)
        .with_hardware_register("UV01", RegisterDirection.Read, to_tag=lambda absorbance: 1000.0 * absorbance)

        .with_tag(tags.Tag("PU01", value=0.0, unit="%", direction=output, minimum=0, maximum=100))
        .with_tag(tags.SelectTag("VA01", "Closed", None, ["Open", "Closed"], direction=output))
        .with_tag(tags.SelectTag("Inlet", "Buffer", None, ["Buffer", "Sample"], direction=output))
        .with_tag(tags.Tag("HE01", value=0.0, unit="%", direction=output, minimum=0, maximum=100))
        .with_tag(tags.SelectTag("Reset", "N/A", None, ["Reset", "N/A"], direction=output))
        .with_tag(tags.ReadingTag("FT01", "L/h"))
        .with_tag(tags.ReadingTag("Totalizer", "L"))
        .with_tag(tags.ReadingTag("TT01", "degC"))
        .with_tag(tags.ReadingTag("UV01", "mAU"))
        .with_tag(tags.Tag("Column Volume", value=0.5, unit="L"))
        .with_accumulated_volume("Totalizer")
        .with_accumulated_cv("Column Volume", "Totalizer")

        .with_command_regex_arguments("PU01", RegexNumber(units=["%"], non_negative=True), set_pump)
        .with_command_regex_arguments("HE01", RegexNumber(units=["%"], non_negative=True), set_heater)
        .with_command_regex_arguments("VA01", RegexCategorical(exclusive_options=["Open", "Closed"]), set_valve)
        .with_command_regex_arguments("Inlet", RegexCategorical(exclusive_options=["Buffer", "Sample"]), set_inlet)
        .with_command_regex_arguments("Column Volume", RegexNumber(units=["L", "mL"], non_negative=True),
                                      set_column_volume)
        .with_command("Reset", reset, finalize_fn=release_reset, arg_parse_fn=None)

        .with_process_value("FT01")
        .with_process_value_entry("PU01")
        .with_process_value_choice("VA01", {"Open": "VA01: Open", "Closed": "VA01: Closed"})
        .with_process_value_choice("Inlet", {"Buffer": "Inlet: Buffer", "Sample": "Inlet: Sample"})
        .with_process_value("TT01")
        .with_process_value_entry("HE01")
        .with_process_value("UV01")
        .with_process_value("Totalizer")
        .with_process_value_choice("Reset", {"Reset": "Reset"})
        .with_process_value("Accumulated Volume")
        .with_process_value("Accumulated CV")
        .with_process_value_entry("Column Volume")
        .with_process_value("Block")
        .with_process_value("Block Time")
        .with_process_value("System State")
        .with_process_value("Run Time")

        .with_plot_configuration(PlotConfiguration(
            process_value_names_to_annotate=["Mark"],
            color_regions=[PlotColorRegion("Block", {"Equilibrate": "#2CA02C22", "Load": "#FF7F0E22",
                                                     "Wash": "#1F77B422", "Elute": "#D6272822"})],
            sub_plots=[
                SubPlot(axes=[PlotAxis("Flow", ["FT01"], y_max=70, y_min=0, color=Colors.C0),
                              PlotAxis("Pump", ["PU01"], y_max=100, y_min=0, color=Colors.C1)]),
                SubPlot(axes=[PlotAxis("Temperature", ["TT01"], y_max=80, y_min=0, color=Colors.C3),
                              PlotAxis("Heater", ["HE01"], y_max=100, y_min=0, color=Colors.C4),
                              PlotAxis("UV", ["UV01"], y_max=1000, y_min=0, color=Colors.C2)]),
            ],
            x_axis_process_value_names=["Process Time", "Run Time"]))
        .with_process_diagram("demo_diagram.svg")
        .build()
    )
