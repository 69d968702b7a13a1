"""The trend: a rolling window of each unit's recent values, so its plot is live with no run started.

A unit's plot shows its run from the stored samples, but a unit between runs stores no samples:
with only the run's data, the plot would be empty before Start, with the pump running by hand.
:class:`Trend` keeps, per unit, the plotted tags' values of the last :attr:`Trend.window`
seconds, sampled from the live values the engine sends (``offer``), whether a run is started or
not. The unit page shows it before Start, beside the run while one is started, and after Stop.

Invariants
    * In memory only: nothing here is an event, nothing is stored. After the aggregator restarts,
      a unit's window is empty and fills again from its live values.
    * Rows, per unit, in increasing time: one row at most per data-log interval of the unit's UOD
      (as its run's samples), stamped with the engine's time of the newest value that made it,
      holding the latest value of every plotted tag (the tags of the plot configuration and the
      readings, as a run's plot series). Values offered between two rows change the next row.
    * Bounded: a row older than ``window`` seconds before a unit's newest row is dropped when a
      row is added, so a unit holds at most ``window / interval + 1`` rows of its plotted tags,
      however long it runs. A column of numbers is an array of doubles (8 bytes a cell); a column
      that ever holds text or a truth value is a list whose repeated values share one object.
    * A unit is kept from the moment its UOD is described (:meth:`describe`); values of a unit
      not described yet are ignored. A new description with other plotted tags or another
      interval starts its window afresh (the old rows would not fit its columns).
    * Sans-I/O: no clock is read. Times are the engine's, as in its records, so the window and a
      run's samples lie on one time axis.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pectus.projections.views import plotted_tags

DEFAULT_WINDOW = 30 * 60.0  # seconds
# A row within this much of the interval is due: engines pace live values at 0.25 s, so a row's
# newest value falls a little before or after the interval's end.
DUE_SLACK = 1e-6

Column = array | list  # array("d") of numbers (NaN: no value) or a list of any values


@dataclass
class UnitTrend:
    """One unit's window: ``times`` and one column per tag, the oldest ``start`` rows of each
    already dropped (they are cut off in bulk, so dropping a row costs O(1) on average)."""

    interval: float
    tags: tuple[str, ...]
    times: array = field(default_factory=lambda: array("d"))
    columns: dict[str, Column] = field(default_factory=dict)
    held: dict[str, Any] = field(default_factory=dict)  # tag -> its latest value (the next row's)
    sent: dict[str, Any] = field(default_factory=dict)  # tag -> its value in the newest row
    start: int = 0

    def __post_init__(self) -> None:
        self.columns = {tag: array("d") for tag in self.tags}

    def __len__(self) -> int:
        return len(self.times) - self.start

    @property
    def newest(self) -> float | None:
        return self.times[-1] if len(self) else None


class Trend:
    """Every unit's rolling window of recent values (see the module's invariants)."""

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"the trend window must be a positive number of seconds, not {window!r}")
        self.window = window
        self._units: dict[str, UnitTrend] = {}

    def describe(self, unit: str, description: Mapping[str, Any]) -> None:
        """The unit's UOD as described (a ``UodDescribed`` payload): its plotted tags and its
        data-log interval. The window carries on when neither changed."""
        tags = tuple(plotted_tags(dict(description)))
        interval = float(description.get("data_log_interval_seconds") or 5.0)
        known = self._units.get(unit)
        if known is None or known.tags != tags or known.interval != interval:
            self._units[unit] = UnitTrend(interval, tags)

    def offer(self, unit: str, values: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
        """Live values of ``unit`` (``{name, value, time, ...}``, as engines send them). Returns
        the row it added - ``{time, values, since}``: the values that changed since the row
        before (all of them in a window's first row) and the time of the window's oldest row -
        or None when no row was due."""
        trend = self._units.get(unit)
        if trend is None:
            return None
        newest = None
        for value in values:
            name = value["name"]
            if name in trend.columns:
                trend.held[name] = value["value"]
            time = value["time"]
            if newest is None or time > newest:
                newest = time
        last = trend.newest
        if newest is None or (last is not None and newest < last + trend.interval - DUE_SLACK):
            return None
        return self._append(trend, newest)

    def _append(self, trend: UnitTrend, time: float) -> dict[str, Any]:
        first = not len(trend)
        trend.times.append(time)
        changed = {}
        for tag, column in trend.columns.items():
            value = trend.held.get(tag)
            previous = trend.sent.get(tag)
            if isinstance(column, array):
                if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                    column.append(math.nan if value is None else value)
                else:  # text or a truth value: this column holds objects from now on
                    column = trend.columns[tag] = [_value(number) for number in column]
                    column.append(value)
            else:
                # A repeated value shares the object of the row before (engines send new strings).
                column.append(previous if previous == value else value)
            if first or previous != value:
                changed[tag] = value
            trend.sent[tag] = value
        self._drop_before(trend, time - self.window)
        return {"time": time, "values": changed, "since": trend.times[trend.start]}

    @staticmethod
    def _drop_before(trend: UnitTrend, oldest: float) -> None:
        times = trend.times
        while trend.start < len(times) - 1 and times[trend.start] < oldest:
            trend.start += 1
        if trend.start > 64 and trend.start * 2 > len(times):  # cut off in bulk: O(1) a row on average
            del times[:trend.start]
            for column in trend.columns.values():
                del column[:trend.start]
            trend.start = 0

    def series(self, unit: str) -> dict[str, list[list[Any]]] | None:
        """The window as a run's plot series: ``{tag: [[epoch seconds, value], ...]}``, a point
        where a tag's value changed (and at the first and the newest row, so the plot spans the
        whole window). None for a unit never described."""
        trend = self._units.get(unit)
        if trend is None:
            return None
        times = trend.times[trend.start:]
        result: dict[str, list[list[Any]]] = {}
        for tag, column in trend.columns.items():
            values = [_value(value) for value in column[trend.start:]]
            points = [[time, value] for index, (time, value) in enumerate(zip(times, values))
                      if index == 0 or value != values[index - 1]]
            if len(times) > 1 and points[-1][0] != times[-1]:
                points.append([times[-1], values[-1]])
            result[tag] = points
        return result

    def rows(self, unit: str) -> int:
        """How many rows the unit's window holds (0 for a unit not described)."""
        trend = self._units.get(unit)
        return len(trend) if trend is not None else 0

    def size(self, unit: str) -> int:
        """Bytes the unit's window holds in its arrays and lists (their buffers, not the few
        distinct objects a text column refers to)."""
        trend = self._units.get(unit)
        if trend is None:
            return 0
        return sys.getsizeof(trend.times) + sum(sys.getsizeof(column) for column in trend.columns.values())


def _value(number: Any) -> Any:
    """A cell as JSON has it: NaN (no value) is None."""
    return None if isinstance(number, float) and math.isnan(number) else number
