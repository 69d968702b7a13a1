"""A wide unit: 1,000 simulated sensors, each with a long name and a value that changes on every
tick, logged on every tick (a data-log interval of 0.1 s). A minute of its records is many
megabytes: the shape of unit whose backlog after an outage outgrows one frame."""

import math

from pectus.uod import RegisterDirection, SimulatedHardware, UnitOperationDefinition, UodBuilder, tags

SENSORS = [f"Manifold sensor {number:04d} (absorbance at its outlet)" for number in range(1000)]


class WideHardware(SimulatedHardware):
    """Every sensor follows its own sine wave, so every value differs from the last sample's."""

    def __init__(self) -> None:
        super().__init__({name: 0.0 for name in SENSORS})

    def step(self, dt: float) -> None:
        for number, name in enumerate(SENSORS):
            self.values[name] = math.sin(self.elapsed + number)


def create() -> UnitOperationDefinition:
    builder = (UodBuilder()
               .with_instrument("WideUod")
               .with_author("Test Author", "test@example.com")
               .with_filename(__file__)
               .with_location("Test lab")
               .with_hardware(WideHardware())
               .with_data_log_interval_seconds(0.1))
    for name in SENSORS:
        builder = builder.with_hardware_register(name, RegisterDirection.Read).with_tag(tags.ReadingTag(name, "AU"))
    return builder.build()
