r"""Example unit: a laboratory balance on a serial port.

The balance speaks a line protocol at 9600 baud, 8N1, CR LF line endings:

* ``W?`` asks for the net weight, answered ``W     12.34 g``;
* ``T`` tares the balance, answered ``OK``.

The register ``Weight`` sends ``W?`` every tick and parses the number out of the reply. The
register ``TARE`` sends ``T`` when its tag becomes ``Tare``. At rest (``N/A``) ``from_tag``
maps it to ``None``, which the driver does not send. The ``Tare`` command pulses that tag, so
an operator or a method line ``Tare`` tares the balance once.

The port is taken from the environment variable ``PECTUS_SERIAL_PORT`` and defaults to
``/dev/ttyUSB0``. Try it without a balance, using the simulated one on a pseudo-terminal::

    python -m pectus.hardware.serial_sim          # prints: Simulated balance on /dev/pts/N
    PECTUS_SERIAL_PORT=/dev/pts/N pectus-engine validate --uod uods/serial_example.py --connect

To adapt this file to your instrument, change ``query``/``pattern`` (Read) and ``command``/
``ack`` (Write) to its manual's commands. See :mod:`pectus.hardware.serial` for every option.
"""

import os

from pectus.uod import (Colors, PlotAxis, PlotConfiguration, RegisterDirection, SerialHardware, SubPlot,
                        UnitOperationDefinition, UodBuilder, UodCommand, tags)

PORT = os.environ.get("PECTUS_SERIAL_PORT", "/dev/ttyUSB0")


def tare(cmd: UodCommand) -> None:
    """Tare the balance: the current weight reads 0 g from now on.

    Tare
    """
    # Tick 0 raises the tag; the engine sends "T" at the end of that tick; tick 1 completes.
    if cmd.get_iteration_count() == 0:
        cmd.context.tags["TARE"].set_value("Tare", cmd.tick_time)
    else:
        cmd.set_complete()


def release_tare(cmd: UodCommand) -> None:
    # Also runs when Tare is cancelled: the tag must rest at N/A, or the next Tare sends nothing.
    cmd.context.tags["TARE"].set_value("N/A", cmd.tick_time)


def create() -> UnitOperationDefinition:
    return (
        UodBuilder()
        .with_instrument("SerialBalance")
        .with_author("Demo Author", "demo@pectus.example")
        .with_filename(__file__)
        .with_location("Demo lab / bench balance")
        # A balance answers within ~50 ms; 0.5 s bounds one tick's wait for a silent one.
        .with_hardware(SerialHardware(PORT, baudrate=9600, timeout=0.5, line_ending="\r\n"))
        .with_data_log_interval_seconds(1)

        .with_hardware_register("Weight", RegisterDirection.Read,
                                query="W?", pattern=r"^W\s+(?P<value>[-+]?[0-9.]+)\s*g$")
        .with_hardware_register("TARE", RegisterDirection.Write, safe_value="N/A",
                                command="T", ack=r"^OK$",
                                from_tag=lambda state: True if state == "Tare" else None)

        .with_tag(tags.ReadingTag("Weight", "g"))
        .with_tag(tags.SelectTag("TARE", "N/A", None, ["Tare", "N/A"], direction=tags.TagDirection.Output))

        .with_command("Tare", tare, finalize_fn=release_tare, arg_parse_fn=None)

        .with_process_value("Weight")
        .with_process_value_choice("TARE", {"Tare": "Tare"})
        .with_process_value("System State")
        .with_process_value("Run Time")

        .with_plot_configuration(PlotConfiguration(
            sub_plots=[SubPlot(axes=[PlotAxis("Weight", ["Weight"], y_max=500, y_min=0, color=Colors.C0)])],
            x_axis_process_value_names=["Process Time", "Run Time"]))
        .build()
    )
