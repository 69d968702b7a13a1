"""The trend: a rolling window of each unit's recent values, so its plot is live with no run started.

A unit's plot shows its run from the stored samples, but a unit between runs stores no samples:
with only the run's data, the plot would be empty before Start, with the pump running by hand.
:class:`Trend` keeps, per unit, the plotted tags' values of the last :attr:`Trend.window`
seconds, sampled from the live values the engine sends (``offer``), whether a run is started or
not. The unit page shows it before Start, beside the run while one is started, and after Stop.
An idle unit's engine sends nothing while nothing changes, so rows are not made as values
arrive: :meth:`Trend.sample`, called on a timer for each connected unit
(:func:`pectus.actors.trend_sampler.sample_trends`), adds a row when one is due.

Invariants
    * In memory only: nothing here is an event, nothing is stored. After the aggregator restarts,
      a unit's window is empty and fills again from its live values.
    * Rows, per unit, in increasing time: a row per data-log interval of the unit's UOD (as its
      run's samples) while it is sampled, holding the latest value of every plotted tag (the tags
      of the plot configuration and the readings, as a run's plot series). Values offered between
      two rows change the next row.
    * Rows are stamped with the engine's clock, as its records are, so that the window and a run's
      samples lie on one time axis even when the two computers' clocks disagree: the time of a
      sample is the sampler's, moved by how far the engine's clock was from the sampler's when the
      unit's newest live values arrived (their newest time minus their arrival).
    * Bounded: a row older than ``window`` seconds before a unit's newest row is dropped when a
      row is added, so a unit holds at most ``window / interval + 1`` rows of its plotted tags,
      however long it runs. A column of numbers is an array of doubles (8 bytes a cell); a column
      that ever holds text or a truth value is a list whose repeated values share one object.
    * A unit has a window from the moment its UOD is described (:meth:`describe`); values offered
      before (an engine's first live values may arrive before its description is stored) are held
      for its first row. A new description with other plotted tags or another interval starts the
      window afresh (the old rows would not fit its columns).
    * Sans-I/O: no clock is read; the caller gives every time.
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
# How early a row may come and still be due: the sampler's period, less a little, so that rows
# keep to the interval on average rather than drift to a period later each time.
DUE_SLACK = 0.2

Column = array | list  # array("d") of numbers (NaN: no value) or a list of any values


@dataclass
class UnitTrend:
    """One unit's window: ``times`` and one column per tag, the oldest ``start`` rows of each
    already dropped (they are cut off in bulk, so dropping a row costs O(1) on average)."""

    interval: float | None  # None: not described yet
    tags: tuple[str, ...]
    times: array = field(default_factory=lambda: array("d"))
    columns: dict[str, Column] = field(default_factory=dict)
    held: dict[str, Any] = field(default_factory=dict)  # tag -> its latest value (the next row's), any tag offered
    offset: float | None = None  # the engine's clock minus the caller's, as last offered (None: nothing yet)
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
            fresh = self._units[unit] = UnitTrend(interval, tags)
            if known is not None:
                fresh.held, fresh.offset = known.held, known.offset

    def offer(self, unit: str, values: Iterable[Mapping[str, Any]], received: float) -> None:
        """Live values of ``unit`` (``{name, value, time, ...}``, as engines send them, times on
        the engine's clock) that arrived at ``received`` (the caller's clock): held for its next row."""
        trend = self._units.get(unit)
        if trend is None:
            trend = self._units[unit] = UnitTrend(None, ())
        newest = None
        held = trend.held
        for value in values:
            held[value["name"]] = value["value"]
            time = value["time"]
            if newest is None or time > newest:
                newest = time
        if newest is not None:
            trend.offset = newest - received

    def sample(self, unit: str, now: float) -> dict[str, Any] | None:
        """At ``now`` (the caller's clock, as ``received`` in :meth:`offer`): the row added to the
        unit's window if one was due - ``{time, values, since}``: its time (the engine's clock), the
        values that changed since the row before (all of them in a window's first row), the time of
        the window's oldest row - else None (not due, or nothing offered yet)."""
        trend = self._units.get(unit)
        if trend is None or trend.interval is None or trend.offset is None:
            return None
        time = now + trend.offset
        last = trend.newest
        if last is not None and time < last + trend.interval - DUE_SLACK:
            return None
        return self._append(trend, time)

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
        if trend is None or trend.interval is None:
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
