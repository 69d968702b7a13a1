"""Exports of one run: the CSV of its process values, and its raw events as JSON Lines.

Both read the log once, in order, and yield one line at a time, so a caller can stream them to
a browser or a file. Memory stays flat however long the run: the CSV holds only the current row
(the projector already knows the metadata and the columns), the JSONL only the current record.

The CSV keeps Open Pectus' layout, so spreadsheets and scripts written for it keep working:

* metadata rows ``# <label>,<value>`` with Open Pectus' 14 labels, verbatim and in its order (``# Run Id``,
  ``# Engine Id``, ``# Engine Name``, ``# Engine Computer Name``, ``# Open Pectus Engine
  Version``, ``# Engine Hardware string``, ``# UOD Author Name``, ``# UOD Author Email``,
  ``# UOD File Name``, ``# Aggregator Computer Name``, ``# Open Pectus Aggregator Version``,
  ``# Started Date (UTC)``, ``# Completed Date (UTC)``, ``# Contributors``, the last with one
  cell per contributor; the completed date is empty while the run goes on);
* one empty row;
* a header row of ``Name [unit]`` (``Name`` alone for a tag without a unit);
* one row per data-log sample of the run, ascending, each cell holding the tag's latest value at
  that sample (forward fill) - except ``Mark``: its cell shows the marks made since the row
  before (from the run log, joined with ``"; "``), and is empty in rows without a new mark, as
  in Open Pectus' archive;
* the ``csv`` module's default dialect: comma, minimal quoting (a cell with a comma, a quote or
  a line break is quoted, its quotes doubled), **CRLF** line ends (RFC 4180, and what Open
  Pectus writes). Each yielded string is one row with its ``\\r\\n``.
* **Formula injection is defused** (OWASP's rule for CSV injection): a cell whose text starts
  with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written with a single quote in
  front (``'=HYPERLINK(...)``), so a spreadsheet shows it as text instead of evaluating it. A
  plain number (``-1.5``, ``-3e-4``, ``+2``) is left as it is and stays a number. Every cell is
  treated alike: values, tag names and units in the header, and the metadata, since an engine
  (and its UOD) is no more trusted than a user. A script reading the CSV sees the quote; it is
  the price of opening the file safely in a spreadsheet.

Where Open Pectus' CSV has quirks, this one differs on purpose:

* **Stable column order**: the UOD's tag order, then tags that only appeared in samples, in
  order of first appearance (the reference's order came from a Python set: random per run).
* **All tags of the run**, not only readings and plotted tags.
* **A first column ``Time (UTC)``** with each sample's time (the reference had no time column
  unless a time tag happened to be logged).
* **Dates in ISO 8601 UTC** with milliseconds and ``Z`` (``2025-01-09T20:15:02.926Z``), in the
  metadata and the time column (the reference wrote ``str(datetime)``).
* **Contributors as names**, one per cell (the reference wrote a pydantic repr,
  ``id='...' name='...'``).
* **No back fill**: before a tag's first sample its cell is empty (the reference copied the
  first sample backwards, showing values that were not measured yet); a unit never renders as
  ``[]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from pectus.events.domain import RunLogChanged, TagSamples, decode
from pectus.events.store import Record
from pectus.projections.views import Projector, iso

TIME_COLUMN = "Time (UTC)"
MARK = "Mark"
MARK_ITEM = "Mark: "  # the run-log name of a Mark instruction
_NEEDS_QUOTES = re.compile(r'[",\r\n]')
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet evaluate a cell (OWASP)
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def csv_rows(records: Iterable[Record], run_id: str, projector: Projector) -> Iterator[str]:
    """The CSV of a run, one row at a time. ``records`` is the log (or the unit's part of it), in
    order; ``projector`` has applied it, and gives the metadata and the columns. KeyError for a
    run the projector does not know.

    The projector is read here, at the call; the rows come from ``records`` alone. So the thread
    that owns the projector makes the call, and any one thread at a time may then pull the rows.
    """
    run = projector.run(run_id)
    columns = projector.run_columns(run_id)
    if run is None or columns is None:
        raise KeyError(run_id)
    return _csv_rows(records, run_id, run, columns)


def _csv_rows(records: Iterable[Record], run_id: str, run: dict[str, Any],
              columns: list[tuple[str, str | None]]) -> Iterator[str]:
    for row in _metadata(run):
        yield _line(map(_cell, row))
    yield _line([])
    yield _line(map(_cell, [TIME_COLUMN, *(f"{name} [{unit}]" if unit else name for name, unit in columns)]))
    index = {name: i for i, (name, _) in enumerate(columns, start=1)}
    # Cells keep the formatted text of the latest value: a sample carries only what changed, so
    # most cells are formatted once rather than once per row.
    row = [""] * (len(columns) + 1)
    mark = index.pop(MARK, None)
    marks: list[str] = []  # made since the last row
    marked: set[Any] = set()  # run-log items already counted
    for record in records:
        if record.type == RunLogChanged.type and mark is not None and record.data.get("run") == run_id:
            marks.extend(_new_marks(record.data.get("items", ()), marked))
            continue
        if record.type != TagSamples.type:
            continue  # most of a unit's log is samples; the rest need not be decoded
        event = decode(record.type, record.data)
        assert isinstance(event, TagSamples)
        if event.run != run_id:
            continue
        for sample in event.samples:
            for tag, value in sample["values"].items():
                i = index.get(tag)
                if i is not None:
                    row[i] = _cell(value)
            row[0] = iso(sample["time"])
            if mark is not None:
                row[mark] = _cell("; ".join(marks))
                marks.clear()
            yield _line(row)


def _new_marks(items: Iterable[dict[str, Any]], counted: set[Any]) -> list[str]:
    """The marks of run-log items that completed now (each item counted once)."""
    found = []
    for item in items:
        name = item.get("name") or ""
        if name.startswith(MARK_ITEM) and item.get("state") == "completed" and item.get("id") not in counted:
            counted.add(item.get("id"))
            found.append(name[len(MARK_ITEM):])
    return found


def _cell(value: Any) -> str:
    """A value as a cell of the csv module's default dialect: None is empty, a text a spreadsheet
    would evaluate as a formula gets a leading ``'`` (see the module's docs), and a cell holding
    a comma, a quote or a line break is quoted, its quotes doubled."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        text = "'" + text
    return '"' + text.replace('"', '""') + '"' if _NEEDS_QUOTES.search(text) else text


def _line(cells: Iterable[str]) -> str:
    # Joining pre-formatted cells is twenty times faster than csv.writer on a 200-column row.
    return ",".join(cells) + "\r\n"


def _metadata(run: dict[str, Any]) -> list[list[str]]:
    return [
        ["# Run Id", run["run_id"]],
        ["# Engine Id", run["engine_id"]],
        ["# Engine Name", run["engine_name"]],
        ["# Engine Computer Name", run["engine_computer_name"]],
        ["# Open Pectus Engine Version", run["engine_version"]],
        ["# Engine Hardware string", run["engine_hardware_str"]],
        ["# UOD Author Name", run["uod_author_name"]],
        ["# UOD Author Email", run["uod_author_email"]],
        ["# UOD File Name", run["uod_filename"]],
        ["# Aggregator Computer Name", run["aggregator_computer_name"]],
        ["# Open Pectus Aggregator Version", run["aggregator_version"]],
        ["# Started Date (UTC)", run["started_date"]],
        ["# Completed Date (UTC)", run["completed_date"] or ""],
        ["# Contributors", *(contributor["name"] for contributor in run["contributors"])],
    ]


def jsonl_lines(records: Iterable[Record], run_id: str) -> Iterator[str]:
    """The run's stored events, in log order, one JSON object per line (ending ``\\n``): position,
    stream, type, time, prev_hash, hash and data, as stored. The hashes let an auditor match each
    line against the store; the chain itself links every event of the store, so checking it
    needs the whole log (``pectus-aggregator verify``), not one run's part."""
    for record in records:
        if record.data.get("run") != run_id:
            continue
        yield json.dumps({"position": record.position, "stream": record.stream, "type": record.type,
                          "time": record.time, "prev_hash": record.prev_hash, "hash": record.hash,
                          "data": record.data}, sort_keys=True, ensure_ascii=False) + "\n"
