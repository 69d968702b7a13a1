"""Tags: the named values of a unit, with an optional physical unit.

A tag is what a method reads in a condition (``Watch: TT01 > 25 degC``), what a command writes
(``PU01: 10 %``), what the operator sees as a process value and what the archive records. The
engine owns a :class:`TagTable` of system tags (``System State``, ``Block Time``...) followed by
the UOD's tags.

Invariants:

* ``set_value`` stores and reports a change only when the value differs, so a tag's ``changed``
  flag means "different from what was last published";
* ``get_value`` returns the simulated value while a simulation is active (``Simulate:``), the real
  value is kept and comes back with ``Simulate off``;
* a tag's lifecycle hooks (``on_start``, ``on_tick``...) are called by the engine only when the
  tag's class overrides them, so a unit of 500 plain tags costs nothing per tick for hooks.

The class and hook names are those of Open Pectus, so UOD files port unchanged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any, Callable, Iterable, Iterator

from pectus.pcode import units


class TagDirection(StrEnum):
    Input = "input"
    Output = "output"
    NA = "na"
    Unspecified = "unspecified"


class SystemTagName(StrEnum):
    BASE = "Base"
    RUN_COUNTER = "Run Counter"
    BLOCK = "Block"
    PROCESS_TIME = "Process Time"
    RUN_TIME = "Run Time"
    CLOCK = "Clock"
    SYSTEM_STATE = "System State"
    METHOD_STATUS = "Method Status"
    CONNECTION_STATUS = "Connection Status"
    RUN_ID = "Run Id"
    MARK = "Mark"
    BLOCK_TIME = "Block Time"
    SCOPE_TIME = "Scope Time"
    BATCH_NAME = "Batch Name"
    ACCUMULATED_VOLUME = "Accumulated Volume"
    BLOCK_VOLUME = "Block Volume"
    ACCUMULATED_CV = "Accumulated CV"
    BLOCK_CV = "Block CV"


#: The types of tag values and of a tag's display formatter (Open Pectus' names).
TagValueType = Decimal | int | float | str | None
TagFormatFunction = Callable[[Any], str]


def format_time_as_clock(value: Any) -> str:
    """Seconds as ``HH:MM:SS``. Unlike Open Pectus, durations of a day or more do not wrap."""
    if value is None:
        return ""
    seconds = int(value)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_time_as_date_time(value: Any) -> str:
    """Epoch seconds as an ISO 8601 UTC date and time (``2026-03-01T09:30:00Z``): the ``Clock`` tag."""
    if value is None:
        return ""
    return datetime.fromtimestamp(float(value), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class FixedDecimals:
    """A formatter that shows a number with ``decimals`` decimals (``FixedDecimals(1)(2.25)`` is "2.2").

    Give it as a tag's ``format_fn``: unlike any other function it is also known to the UI, whose
    tiles then show the tag's value with as many decimals (see :func:`display_format`).
    """

    decimals: int

    def __post_init__(self) -> None:
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 12:
            raise ValueError(f"FixedDecimals needs a whole number of decimals 0 to 12, not {self.decimals!r}")

    def __call__(self, value: Any) -> str:
        return "" if value is None else f"{float(value):.{self.decimals}f}"


def display_format(format_fn: Callable[[Any], str] | None) -> tuple[str | None, int | None]:
    """How the UI shows a tag whose formatter is ``format_fn``: (format, decimals).

    ``("duration", None)`` for :func:`format_time_as_clock` (HH:MM:SS), ``("date_time", None)`` for
    :func:`format_time_as_date_time`, ``(None, n)`` for :class:`FixedDecimals` ``(n)``; any other
    formatter is Python the browser cannot run, so ``(None, None)``: the UI's own number format.
    """
    if format_fn is format_time_as_clock:
        return "duration", None
    if format_fn is format_time_as_date_time:
        return "date_time", None
    if isinstance(format_fn, FixedDecimals):
        return None, format_fn.decimals
    return None, None


@dataclass(frozen=True, slots=True)
class TagValue:
    """A read-only snapshot of a tag, as published to the aggregator and the UI."""

    name: str
    value: Any
    unit: str | None
    tick_time: float
    direction: TagDirection
    simulated: bool
    value_formatted: str | None = None


class EventListener:
    """Lifecycle hooks. Override the ones you need; the engine skips the others."""

    __slots__ = ()

    def on_engine_configured(self) -> None: ...
    def on_start(self, run_id: str) -> None: ...
    def on_stop(self) -> None: ...
    def on_tick(self, tick_time: float, increment_time: float) -> None: ...
    def on_block_start(self, block_name: str, tick_time: float) -> None: ...
    def on_block_end(self, block_name: str, new_block_name: str | None) -> None: ...
    def on_runstate_change(self, state: str) -> None: ...
    def on_notify_command(self, argument: str) -> None: ...
    def on_method_end(self) -> None: ...
    def on_method_error(self, error: Exception) -> None: ...
    def on_method_edited(self, live: bool) -> None: ...
    def on_connection_status_change(self, status: str) -> None: ...
    def on_engine_shutdown(self) -> None: ...


HOOKS = tuple(name for name in vars(EventListener) if name.startswith("on_"))


def overridden_hooks(listener: object) -> set[str]:
    """The hook names whose implementation differs from EventListener's no-op."""
    cls = type(listener)
    return {h for h in HOOKS if getattr(cls, h, None) is not getattr(EventListener, h)}


def check_range(owner: str, minimum: Any, maximum: Any) -> None:
    """Raise ValueError naming ``owner`` unless each bound is None or a finite number and
    ``minimum <= maximum``."""
    for label, bound in (("minimum", minimum), ("maximum", maximum)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float, Decimal))
                                  or not math.isfinite(bound)):
            raise ValueError(f"{owner}: {label} must be a finite number or None, not {bound!r}")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueError(f"{owner}: minimum {minimum} is above maximum {maximum}")


class Tag(EventListener):
    """A named value with an optional unit, direction and formatter.

    ``minimum`` and ``maximum`` (in the tag's unit, either or both) declare the values the tag
    may be set to: the command that sets it (named as the tag, or the tag's entry's command)
    then refuses a value outside them before it runs, in the page and in the engine
    (``Tag("PU01", value=0.0, unit="%", minimum=0, maximum=100)``). Open Pectus tags have no
    range; without one nothing changes.
    """

    __slots__ = ("name", "value", "unit", "direction", "format_fn", "choices", "tick_time",
                 "simulated", "simulated_value", "changed", "_table", "minimum", "maximum")

    def __init__(self, name: str, tick_time: float | None = None, value: Any = None,
                 unit: str | None = None, direction: TagDirection = TagDirection.NA,
                 format_fn: Callable[[Any], str] | None = None, *,
                 minimum: float | None = None, maximum: float | None = None):
        if not isinstance(name, str) or not name.strip():
            raise ValueError("A tag needs a non-empty name")
        if unit is not None and not units.is_supported(unit):
            raise ValueError(f"Tag '{name}': unknown unit '{unit}'")
        check_range(f"Tag '{name}'", minimum, maximum)
        self.name = name
        self.value = value
        self.unit = unit or None
        self.direction = direction
        self.format_fn = format_fn
        self.minimum = None if minimum is None else float(minimum)
        self.maximum = None if maximum is None else float(maximum)
        self.choices: list[str] | None = None
        self.tick_time = time.time() if tick_time is None else tick_time
        self.simulated = False
        self.simulated_value: Any = None
        self.changed = False
        self._table: TagTable | None = None

    def get_value(self) -> Any:
        return self.simulated_value if self.simulated else self.value

    def set_value(self, value: Any, tick_time: float) -> None:
        if value != self.value or type(value) is not type(self.value):
            self.value = value
            self.tick_time = tick_time
            if not self.changed:  # _mark_changed, inlined: this is the hottest call of a tick
                self.changed = True
                if self._table is not None:
                    self._table.changed.append(self)

    def set_value_and_unit(self, value: Any, unit: str | None, tick_time: float) -> None:
        """Set a numeric value given in ``unit``, converted into the tag's unit."""
        self.set_value(self._converted(value, unit), tick_time)

    def simulate_value(self, value: Any, tick_time: float) -> None:
        self.simulated = True
        self.simulated_value = value
        self.tick_time = tick_time
        self._mark_changed()

    def simulate_value_and_unit(self, value: Any, unit: str | None, tick_time: float) -> None:
        self.simulate_value(self._converted(value, unit), tick_time)

    def stop_simulation(self) -> None:
        if self.simulated:
            self.simulated = False
            self.simulated_value = None
            self._mark_changed()

    def _converted(self, value: Any, unit: str | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"Tag '{self.name}': '{value}' is not a number") from None
        if not unit or unit == self.unit:
            return number  # a bare number is in the tag's own unit
        if self.unit is None:
            raise ValueError(f"Tag '{self.name}' has no unit; cannot set '{value} {unit}'")
        return units.convert(number, unit, self.unit)

    def _mark_changed(self) -> None:
        if not self.changed:
            self.changed = True
            if self._table is not None:
                self._table.changed.append(self)

    def format(self) -> str | None:
        value = self.get_value()
        if self.format_fn is not None:
            try:
                return self.format_fn(value)
            except Exception:  # a UOD's formatter must never break publishing
                return None
        return None

    def as_readonly(self) -> TagValue:
        return TagValue(self.name, self.get_value(), self.unit, self.tick_time, self.direction,
                        self.simulated, self.format())

    def archive(self) -> str | None:
        value = self.get_value()
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.5f}"
        return str(value)

    def with_builder(self, builder: Any) -> "Tag":
        """Add this tag to a UodBuilder and return it (for inline use)."""
        builder.with_tag(self)
        return self

    def __repr__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"<{type(self).__name__} {self.name}={self.get_value()!r}{unit}>"


class ReadingTag(Tag):
    """A sensor: an input whose value is a number (or None when unknown)."""

    __slots__ = ()

    def __init__(self, name: str, unit: str | None = None, format_fn: Callable[[Any], str] | None = None):
        super().__init__(name, value=0.0, unit=unit, direction=TagDirection.Input, format_fn=format_fn)

    def set_value(self, value: Any, tick_time: float) -> None:
        if value is not None and type(value) is not float and not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"Reading '{self.name}' got '{value}', which is not a number") from None
        super().set_value(value, tick_time)


class SelectTag(Tag):
    """A tag whose value is one of ``choices`` (e.g. a valve: Open/Closed)."""

    __slots__ = ()

    def __init__(self, name: str, value: Any, unit: str | None, choices: list[str],
                 direction: TagDirection = TagDirection.NA, format_fn: Callable[[Any], str] | None = None):
        if not choices:
            raise ValueError(f"Select tag '{name}' needs at least one choice")
        super().__init__(name, value=value, unit=unit, direction=direction, format_fn=format_fn)
        self.choices = list(choices)

    def set_value(self, value: Any, tick_time: float) -> None:
        if value not in self.choices:
            raise ValueError(f"'{value}' is not a choice of '{self.name}'; choices are {', '.join(map(str, self.choices))}")
        super().set_value(value, tick_time)


class DerivedTag(Tag):
    """A value calculated from other tags: ``fn(*[t.get_value() for t in input_tags])``.

    Recalculated every tick (the engine calls :meth:`calculate`); an exception in ``fn`` gives None.
    """

    __slots__ = ("fn", "input_tags")

    def __init__(self, name: str, fn: Callable[..., Any], input_tags: Iterable[Tag],
                 calculate_on_tick: bool | None = None, tick_time: float | None = None, value: Any = None,
                 unit: str | None = None, direction: TagDirection = TagDirection.NA,
                 format_fn: Callable[[Any], str] | None = None):
        super().__init__(name, tick_time=tick_time, value=value, unit=unit, direction=direction, format_fn=format_fn)
        self.fn = fn
        self.input_tags = list(input_tags)

    def calculate(self, tick_time: float) -> None:
        try:
            value = self.fn(*[t.get_value() for t in self.input_tags])
        except Exception:
            value = None
        self.set_value(value, tick_time)


class TagTable:
    """The tags of one unit, in a stable order: system tags first, then the UOD's.

    ``changed`` lists the tags that changed since :meth:`take_changes` was last called, each once,
    in the order they changed: publishing is O(changes), not O(tags).
    """

    __slots__ = ("_tags", "_order", "changed", "names")

    def __init__(self, tags: Iterable[Tag] = ()):
        self._tags: dict[str, Tag] = {}
        self._order: list[Tag] = []
        self.names: tuple[str, ...] = ()
        self.changed: list[Tag] = []
        for tag in tags:
            self.add(tag)

    def add(self, tag: Tag) -> Tag:
        if tag.name in self._tags:
            raise ValueError(f"Duplicate tag name '{tag.name}'")
        self._tags[tag.name] = tag
        self._order.append(tag)
        self.names += (tag.name,)
        tag._table = self
        tag.changed = False
        tag._mark_changed()  # a new tag is published once
        return tag

    def __getitem__(self, name: str) -> Tag:
        return self._tags[name]

    def get(self, name: str) -> Tag | None:
        return self._tags.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tags

    def __iter__(self) -> Iterator[Tag]:
        return iter(self._tags.values())

    def __len__(self) -> int:
        return len(self._tags)

    def take_changes(self) -> list[Tag]:
        changed, self.changed = self.changed, []
        for tag in changed:
            tag.changed = False
        return changed

    def values(self) -> dict[str, Any]:
        """Name -> current value of every tag."""
        return dict(zip(self.names, self.snapshot()))

    def snapshot(self) -> tuple[Any, ...]:
        """The current values in the order of ``names`` (taken for every run-log item: keep it cheap)."""
        return tuple([tag.simulated_value if tag.simulated else tag.value for tag in self._order])


def is_number(value: Any) -> bool:
    """A real number (not a bool, not NaN). The exact-type test first: this is on the tick path."""
    kind = type(value)
    if kind is float:
        return value == value  # NaN is not equal to itself
    return kind is int or (isinstance(value, (int, float)) and not isinstance(value, bool)
                           and not math.isnan(value))


class AccumulatorTag(Tag):
    """``Accumulated Volume``: the totalizer's increase since Start."""

    __slots__ = ("totalizer", "_start")

    def __init__(self, name: str, totalizer: Tag):
        super().__init__(name, value=0.0, unit=totalizer.unit)
        self.totalizer = totalizer
        self._start = 0.0

    def _total(self) -> float:
        value = self.totalizer.get_value()
        return value if type(value) is float else (float(value) if is_number(value) else 0.0)

    def _accumulated(self) -> float:
        return self._total() - self._start

    def on_start(self, run_id: str) -> None:
        self._start = self._total()
        self.set_value(0.0, self.tick_time)

    def on_tick(self, tick_time: float, increment_time: float) -> None:
        self.set_value(self._accumulated(), tick_time)


class AccumulatorBlockTag(AccumulatorTag):
    """``Block Volume``: the totalizer's increase since the current block started.

    The block's start is captured when the block starts (not a tick later as in Open Pectus),
    so the first threshold check in a new block already sees 0.
    """

    __slots__ = ("_stack",)

    def __init__(self, name: str, totalizer: Tag):
        super().__init__(name, totalizer)
        self._stack: list[float] = []

    def on_start(self, run_id: str) -> None:
        self._stack = []
        super().on_start(run_id)

    def on_block_start(self, block_name: str, tick_time: float) -> None:
        self._stack.append(self._start)
        self._start = self._total()
        self.set_value(0.0, tick_time)

    def on_block_end(self, block_name: str, new_block_name: str | None) -> None:
        if self._stack:
            self._start = self._stack.pop()
        self.set_value(self._accumulated(), self.tick_time)


class _ColumnVolumes:
    """Mixin: accumulate in column volumes of ``cv_tag`` (0 while the column volume is not positive)."""

    __slots__ = ()

    def _accumulated(self) -> float:
        cv = self.cv_tag.get_value()
        if not is_number(cv) or cv <= 0:
            return 0.0
        if self.cv_tag.unit and self.totalizer.unit and self.cv_tag.unit != self.totalizer.unit:
            cv = units.convert(cv, self.cv_tag.unit, self.totalizer.unit)
        return (self._total() - self._start) / cv


class AccumulatedColumnVolume(_ColumnVolumes, AccumulatorTag):
    """``Accumulated CV``: column volumes passed since Start."""

    __slots__ = ("cv_tag",)

    def __init__(self, name: str, cv_tag: Tag, totalizer: Tag):
        AccumulatorTag.__init__(self, name, totalizer)
        self.unit = "CV"
        self.cv_tag = cv_tag


class BlockColumnVolume(_ColumnVolumes, AccumulatorBlockTag):
    """``Block CV``: column volumes passed since the current block started."""

    __slots__ = ("cv_tag",)

    def __init__(self, name: str, cv_tag: Tag, totalizer: Tag):
        AccumulatorBlockTag.__init__(self, name, totalizer)
        self.unit = "CV"
        self.cv_tag = cv_tag
