"""The engine's durable records: one typed schema per kind, checked at both ends of the link.

A *record* is what an engine writes to its outbox and the aggregator turns into a domain event:
``{seq, kind, time, run, data}``. Every kind has a schema here (msgspec structs, decoded from JSON
in one pass), and nothing else decides what a valid record is:

* the engine checks each record before it enters the outbox, so a value that could never be
  stored (a lone surrogate in a method line, a time of NaN) goes to its dead-letter file at once
  instead of blocking the records behind it;
* the aggregator checks each record again before storing it (it trusts no client), and stores a
  ``RecordRefused`` event in its place when it fails.

Invariants of a record that passes :func:`check_record`: every number is finite and every time
lies between 1970 and 3000 (so it formats as a date); every string is valid Unicode (no lone
surrogates) and bounded; no field is missing, of another type, or unknown; lists and maps are
bounded; nesting is fixed by the schema (no free-form JSON). So the projector can fold it without
guarding each field, and every route that shows it can format it.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec

from pectus.diagram import MAX_DIAGRAM_CHARS

__all__ = ["Record", "RecordError", "check_record", "MAX_RECORD", "RECORD_TYPES"]

MAX_RECORD = 1024 * 1024  # bytes of one encoded record; a frame carries many

Time = Annotated[float, msgspec.Meta(ge=0, le=32_503_680_000)]  # 1970-01-01 .. 3000-01-01
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Label = Annotated[str, msgspec.Meta(max_length=1_000)]
Text = Annotated[str, msgspec.Meta(max_length=65_536)]
RunId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[\w.:\-]+$")]
Number = Annotated[float, msgspec.Meta(ge=-1e300, le=1e300)]
Scalar = Union[None, bool, int, float, Text]
Values = Annotated[dict[Name, Scalar], msgspec.Meta(max_length=20_000)]


class RecordError(ValueError):
    """A record that does not match its kind's schema; the message names the field."""


class _Data(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What every record's data has in common: nothing unknown."""


class UodTag(_Data):
    name: Name
    unit: Label | None
    direction: Label
    # How the UI shows the value (pectus.pcode.tags.display_format); absent when the UI's own
    # number format applies, and from older engines' records.
    format: Literal["duration", "date_time"] | None = None
    decimals: Annotated[int, msgspec.Meta(ge=0, le=12)] | None = None


class UnitRange(_Data):
    """A unit an entry may be given in ("" for a number without unit) and the range in it."""

    unit: Label
    minimum: Number | None = None
    maximum: Number | None = None


class EntryRules(_Data):
    """What an entry's value must be, for the page to check it before sending it
    (pectus.uod.definition.UnitOperationDefinition.entry_rules); the engine checks it again."""

    type: Literal["number", "choice", "text"]
    expected: Text = ""  # in words, for the message: "0 to 100 %"
    int_only: bool = False
    optional: bool = False
    units: Annotated[list[UnitRange], msgspec.Meta(max_length=1_000)] = []
    options: Annotated[list[Label], msgspec.Meta(max_length=1_000)] = []


class Reading(_Data):
    kind: Literal["reading", "reading_with_entry", "reading_with_choice"]
    tag_name: Name
    entry_data_type: Label | None = None
    execute_command_name: Label | None = None
    command_options: Annotated[dict[Label, Text], msgspec.Meta(max_length=1_000)] | None = None
    entry: EntryRules | None = None  # an entry's rules; absent from older engines' records


class CommandInfo(_Data):
    name: Name
    help: Text = ""
    examples: Annotated[list[Text], msgspec.Meta(max_length=100)] = []
    takes_argument: bool | None = None  # None: its own parser decides


class PlotAxis(_Data):
    label: Label
    process_value_names: Annotated[list[Name], msgspec.Meta(max_length=1_000)]
    y_max: Number
    y_min: Number
    color: Label


class SubPlot(_Data):
    axes: Annotated[list[PlotAxis], msgspec.Meta(max_length=100)]
    ratio: Number = 1


class ColorRegion(_Data):
    process_value_name: Name
    value_color_map: Annotated[dict[Label, Label], msgspec.Meta(max_length=1_000)]


class PlotConfiguration(_Data):
    process_value_names_to_annotate: Annotated[list[Name], msgspec.Meta(max_length=1_000)] = []
    color_regions: Annotated[list[ColorRegion], msgspec.Meta(max_length=100)] = []
    sub_plots: Annotated[list[SubPlot], msgspec.Meta(max_length=100)] = []
    x_axis_process_value_names: Annotated[list[Name], msgspec.Meta(max_length=1_000)] = []


class UodData(_Data):
    uod_name: Name
    uod_author_name: Label
    uod_author_email: Label
    uod_filename: Text
    location: Label
    hardware: Text
    tags: Annotated[list[UodTag], msgspec.Meta(max_length=20_000)]
    readings: Annotated[list[Reading], msgspec.Meta(max_length=20_000)]
    commands: Annotated[list[CommandInfo], msgspec.Meta(max_length=20_000)]
    plot_configuration: PlotConfiguration
    data_log_interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)]
    required_roles: Annotated[list[Name], msgspec.Meta(max_length=100)] = []
    # The UOD's process diagram, sanitised SVG (pectus.diagram); absent from older engines' records.
    process_diagram: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DIAGRAM_CHARS)] | None = None


class Empty(_Data):
    pass


class StateData(_Data):
    system_state: Name
    method_status: Name


class Sample(_Data):
    time: Time
    values: Values


class SamplesData(_Data):
    samples: Annotated[list[Sample], msgspec.Meta(min_length=1, max_length=10_000)]


class RunLogItem(_Data):
    """A run-log item that started or changed state. The tag snapshots travel once each:
    ``start_values`` when the item first appears, ``end_values`` when it ends; a record without
    them leaves the ones already recorded as they are."""

    id: int
    line: int | None
    name: Text
    state: Name
    progress: Number | None
    time: Time
    start: Time | None
    end: Time | None
    cancellable: bool
    forcible: bool
    cancelled: bool
    forced: bool
    start_values: Values | None | msgspec.UnsetType = msgspec.UNSET
    end_values: Values | None | msgspec.UnsetType = msgspec.UNSET


class Progress(_Data):
    """A running item's progress moved (by 1 % or more, at most a few times a second)."""

    id: int
    progress: Number
    time: Time


class RunLogData(_Data):
    items: Annotated[list[RunLogItem], msgspec.Meta(max_length=10_000)] = []
    progress: Annotated[list[Progress], msgspec.Meta(max_length=10_000)] = []


class LinesData(_Data):
    version: Annotated[int, msgspec.Meta(ge=0)]
    states: Annotated[dict[Name, Name], msgspec.Meta(max_length=100_000)]


class MethodLine(_Data):
    id: Name
    text: Text


class MethodData(_Data):
    version: Annotated[int, msgspec.Meta(ge=0)]
    lines: Annotated[list[MethodLine], msgspec.Meta(max_length=100_000)]


class ErrorData(_Data):
    severity: Literal["error", "warning", "info"]
    message: Text
    line: int | None = None


class _Record(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, tag_field="kind"):
    seq: Annotated[int, msgspec.Meta(ge=1)]
    time: Time
    run: RunId | None = None


class UodRecord(_Record, tag="uod"):
    data: UodData


class RunStartedRecord(_Record, tag="run_started"):
    run: RunId  # a run starts and stops under its id
    data: Empty


class RunStoppedRecord(_Record, tag="run_stopped"):
    run: RunId
    data: Empty


class StateRecord(_Record, tag="state"):
    data: StateData


class SamplesRecord(_Record, tag="samples"):
    data: SamplesData


class RunLogRecord(_Record, tag="runlog"):
    data: RunLogData


class LinesRecord(_Record, tag="lines"):
    data: LinesData


class MethodRecord(_Record, tag="method"):
    data: MethodData


class ErrorRecord(_Record, tag="error"):
    data: ErrorData


Record = Union[UodRecord, RunStartedRecord, RunStoppedRecord, StateRecord, SamplesRecord, RunLogRecord,
               LinesRecord, MethodRecord, ErrorRecord]
RECORD_TYPES: dict[str, type] = {cls.__struct_config__.tag: cls for cls in Record.__args__}  # type: ignore[attr-defined]

_decoder = msgspec.json.Decoder(Record)


def check_record(encoded: bytes | str) -> Record:
    """One encoded record to its typed form; :class:`RecordError` saying what is wrong (and
    where, as a JSON path) when it does not match its kind's schema."""
    if len(encoded) > MAX_RECORD:
        raise RecordError(f"the record is {len(encoded):,} bytes, over the limit of {MAX_RECORD:,}")
    try:
        return _decoder.decode(encoded)
    except msgspec.ValidationError as error:
        raise RecordError(str(error)) from None
    except msgspec.DecodeError as error:
        raise RecordError(f"not valid JSON: {error}{unicode_hint(str(error))}") from None
    except RecursionError:
        raise RecordError("the record nests too deeply") from None


def unicode_hint(message: str) -> str:
    """What a JSON decoder's message about escapes usually means, for the person reading the log."""
    if "escape" in message or "surrogate" in message:
        return (" (a string holds a broken \\u escape, or half of a surrogate pair such as \\ud800: text that is "
                "not valid Unicode)")
    return ""
