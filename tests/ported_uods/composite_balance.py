"""A balance and a stirrer on two devices of one unit, with the builder API imported as a module.

Covers: `import openpectus.engine.uod_builder_api as api` used as api.Name, Composite_Hardware
with a device per register, NullHardware, the units module (QUANTITY_UNIT_MAP), a custom argument
parser, the data log interval and the UOD's logger.
"""
from typing import Any

import openpectus.engine.uod_builder_api as api
from openpectus.engine.composite_hardware import Composite_Hardware
from openpectus.engine.hardware import NullHardware, HardwareLayerException
from openpectus.lang.exec.units import QUANTITY_UNIT_MAP

MASS_UNITS = QUANTITY_UNIT_MAP["mass"]


class Balance(api.HardwareLayerBase):
    def __init__(self) -> None:
        super().__init__()
        self.grams = 100.0

    def read(self, r: api.Register) -> Any:
        if r.name != "Weight":
            raise HardwareLayerException(f"The balance has no register {r.name}")
        self.grams += 0.5  # the vessel fills between two weighings
        return self.grams

    def write(self, value: Any, r: api.Register):
        raise HardwareLayerException("The balance takes no writes")


def parse_speed(argument: str):
    """'<rpm> rpm' -> {'rpm': <text>}; anything else is refused."""
    number, _, unit = argument.strip().partition(" ")
    return {"rpm": number} if unit == "rpm" and api.as_int(number) is not None else None


def create() -> api.UnitOperationDefinitionBase:
    builder = api.UodBuilder()
    builder.get_logger().info("building the balance unit")
    balance, stirrer = Balance(), NullHardware()

    def stir(cmd: api.UodCommand, rpm: str):
        """# Stir at a speed
        Stir: 300 rpm
        """
        cmd.context.tags["Stirrer"].set_value(api.as_int(rpm), cmd.tick_time)
        cmd.set_complete()

    return (
        builder
        .with_instrument("Balance unit")
        .with_author("Emmy Noether", "emmy@example.com")
        .with_filename(__file__)
        .with_hardware(Composite_Hardware())
        .with_data_log_interval_seconds(1)
        .with_hardware_register("Weight", api.RegisterDirection.Read, hardware=balance)
        .with_hardware_register("Stirrer", api.RegisterDirection.Write, hardware=stirrer, safe_value=0)
        .with_tag(api.tags.ReadingTag("Weight", "g" if "g" in MASS_UNITS else None))
        .with_tag(api.tags.Tag("Stirrer", value=0))
        .with_command("Stir", stir, arg_parse_fn=parse_speed)
        .with_process_value("Weight")
        .with_process_value_entry("Stirrer", entry_data_type="int", execute_command_name="Stir")
        .build()
    )
