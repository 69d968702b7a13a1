"""An engine's records cost the same per minute in the tenth hour of running as in the first.

The demo unit runs the demo method back to back (each run ends with its Stop and is started again
at once) on a virtual clock, and its events go through the uplink's real RecordBuilder and are
encoded as the outbox encodes them. Invariant: nothing a record carries grows with the run or
with the runs before it - so a 10-hour run's records grow linearly with its length, and an
outbox write costs the disk the same few pages at any hour.

These tests fail on the old behaviour. With the Mark tag joining every mark of every run and the
run-log items sent whole at each change (as before records carried what changed), every snapshot
carries the history of marks: 226 KB of records per minute in the first hour, 2.8 MB in the tenth.
With the outbox's pages at SQLite's 4 KiB, a write appended 7.6 KB to the log instead of 2.6 KB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pectus.actors.uplink import Outbox, RecordBuilder, _encode
from pectus.testing import Simulator

ROOT = Path(__file__).resolve().parent.parent
TICK = 0.1  # s, the engine's scan cycle
TICKS_PER_HOUR = round(3600 / TICK)


def looped_demo(ticks: int) -> Iterator[list[dict[str, Any]]]:
    """The records of each of ``ticks`` ticks of the demo method run back to back."""
    sim = Simulator(ROOT / "uods" / "demo_uod.py", (ROOT / "uods" / "demo_method.pcode").read_text(), tick=TICK)
    builder = RecordBuilder(sim.engine)
    assert sim.start()
    for _ in range(ticks):
        sim.run_ticks(1)
        records: list[dict[str, Any]] = []
        if sim.events:
            records, _ = builder.feed(sim.events)
            sim.events.clear()
        if sim.system_state == "Stopped":  # the method's own Stop ended the run: the next one starts
            assert sim.start()
        yield records


def test_a_ten_hour_run_writes_as_much_per_minute_in_its_last_hour_as_in_its_first() -> None:
    per_hour = [0] * 10
    for tick, records in enumerate(looped_demo(10 * TICKS_PER_HOUR)):
        per_hour[tick // TICKS_PER_HOUR] += sum(len(_encode(record).encode()) for record in records)
    first, last = per_hour[0] / 60, per_hour[-1] / 60
    assert abs(last - first) <= 0.1 * first, (
        f"bytes per simulated minute: {first:,.0f} in the first hour, {last:,.0f} in the last; per hour {per_hour}")


def test_an_outbox_write_appends_a_few_pages_to_its_log(tmp_path: Path) -> None:
    """Half a second of records and the acknowledgement of the ones before, in one transaction as
    the uplink writes them: each write appends two or three 1 KiB pages to the write-ahead log. (With
    SQLite's 4 KiB pages a write appended over 8 KiB, some 12 KB for the disk twice a second: more
    than the 20 KB/s an engine may write.)"""
    outbox = Outbox(tmp_path / "engine.outbox.sqlite3")
    log = tmp_path / "engine.outbox.sqlite3-wal"
    ticks = looped_demo(100 * 5)
    acknowledged = outbox.write([record for _ in range(5) for record in next(ticks)])
    before = log.stat().st_size
    writes = 99  # 300 pages at most: the log is not checkpointed (at 1,000) in between
    for _ in range(writes):
        half_second = [record for _ in range(5) for record in next(ticks)]
        # the aggregator has acknowledged what was written before (0: nothing written now)
        acknowledged = outbox.write(half_second, acknowledged) or acknowledged
    per_write = (log.stat().st_size - before) / writes
    outbox.close()
    assert per_write <= 3 * (1024 + 24), f"{per_write:,.0f} bytes appended to the write-ahead log per write"
