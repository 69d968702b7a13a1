"""TrendSampler: every :data:`PERIOD` seconds, a row of the trend of each connected unit that is
due one (:meth:`pectus.projections.trend.Trend.sample`), published to the browsers that follow
the unit as a ``trend`` delta ``{time, values, since}``.

Why a timer and not the live values: an idle unit's engine sends nothing while nothing changes,
and its trend must go on all the same (a flat line up to now, not a plot that stops).
Only connected units are sampled: an offline unit's window keeps what it had.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from pectus.actors.core import Actor
from pectus.actors.engine_session import Engines
from pectus.projections.views import Delta

PERIOD = 0.25  # seconds between two rounds; a unit's rows follow its data-log interval (pectus.projections.trend)


class TrendSampler(Actor[None]):
    """Takes no messages. ``clock`` is the one the engine sessions offer live values with
    (wall-clock epoch seconds); the rounds keep to Trio's clock, on deadlines (no drift)."""

    def __init__(self, engines: Engines, clock: Callable[[], float] = time.time, period: float = PERIOD) -> None:
        super().__init__("aggregator/trend", capacity=1)
        self.engines = engines
        self.clock = clock
        self.period = period

    async def run(self) -> None:
        deadline = trio.current_time()
        while True:
            deadline += self.period
            await trio.sleep_until(deadline)
            now = self.clock()
            deltas = []
            for unit in list(self.engines.sessions):
                row = self.engines.trend.sample(unit, now)
                if row is not None:
                    deltas.append(Delta(unit, "trend", row))
            if deltas:
                self.engines.hub.publish(deltas)
