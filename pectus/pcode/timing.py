"""Time in the engine: whole microseconds, so comparisons agree with what the operator wrote.

The engine is ticked with the length of each tick in seconds, a float: the scan cycle passes the
measured, uneven time since the previous tick, the simulator a fixed 0.1. Floats cannot hold
0.1 exactly, so a timer kept as a float sum drifts from the decimal time the operator reasons in:
three ticks of 0.1 s sum to 0.30000000000000004 s (``Watch: Block Time > 0.3 s`` fired a tick
early), and after 40 minutes of 0.1 s ticks the sum is a nanosecond short (a threshold waited a
tick longer than written).

The rule, applied in this module only:

* the engine counts time in whole microseconds (int): each tick's length is rounded to the
  microsecond once, when the tick is counted (:func:`micros`), and the timers are sums and
  differences of those integers - exact however long the run;
* every time a method writes - a threshold in a time Base, a ``Wait``, ``Pause`` or ``Hold``
  duration, a value compared with a tag in seconds - is rounded to the microsecond once, when it is
  read, after any unit conversion (``0.0001 h`` is 0.36000000000000004 s as a float, 360000 µs);
* the time tags show ``micros / 1e6`` (:func:`seconds`): Python's division is correctly rounded,
  so a time that is a whole number of microseconds shows as the float the same decimal parses to,
  and floats keep the order of whole microseconds for 285 years.

So a comparison of times gives what the same comparison of exact decimals gives. A microsecond is
far below a tick (0.1 s) and below any clock jitter, and rounding each tick's length costs at most
half a microsecond per tick, unbiased (a measured tick length's fraction of a microsecond is
jitter): well under a millisecond in a ten-hour run.
"""

from __future__ import annotations

import re

MICROSECONDS_PER_SECOND = 1_000_000
#: The units of a duration (Wait, Pause, Hold) and of a time Base, in seconds.
TIME_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*(?P<number>[0-9]+[.][0-9]*|[.][0-9]+|[0-9]+)\s*(?P<unit>s|min|h)\s*$")


def micros(seconds: float) -> int:
    """``seconds`` as whole microseconds, rounded to the nearest (the one rounding of a time)."""
    return round(seconds * MICROSECONDS_PER_SECOND)


def seconds(microseconds: int) -> float:
    """Whole microseconds as the float number of seconds a time tag shows."""
    return microseconds / MICROSECONDS_PER_SECOND


def parse_duration(argument: str | None) -> int | None:
    """``"5 s"``, ``"1.5min"``, ``".5 h"`` -> whole microseconds; None when not a duration."""
    match = _DURATION_RE.match(argument or "")
    if match is None:
        return None
    return micros(float(match.group("number")) * TIME_UNITS[match.group("unit")])
