"""Aggregator benchmark: a real aggregator process, engines and browsers over real WebSockets.

    python bench/aggregator_bench.py [--engines 20] [--seconds 10]

Prints, on this machine:
* ingest: tag-sample records/s from many engines at once, and append-to-ack latency (p50, p99)
  (targets >= 20,000 events/s, p99 <= 50 ms);
* CPU of the aggregator per engine at the demo unit's data rate (live values 10 times a second,
  one sample a second, a few run-log changes) (target <= 0.5 % of a core per engine);
* replay speed of the resulting store (target >= 100,000 events/s);
* the store alone: 1,000 events appended in one transaction, and reads in events/s;
* CSV export of a 24 h run of 200 tags sampled every second (targets <= 10 s, <= 200 MB);
* engine -> browser latency of a tag change (target p95 <= 250 ms).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import tracemalloc
from pathlib import Path

import psutil
import trio
from measure import percentile
from trio_websocket import open_websocket_url

from pectus.events import domain as d
from pectus.events import protocol as p
from pectus.events.signing import ChainSigner, load_or_create_signer
from pectus.events.store import NewEvent, SQLiteEventStore
from pectus.hardware.opcua_server import free_port
from pectus.projections.export import csv_rows
from pectus.projections.views import Projector

BIN = Path(sys.executable).parent
BATCH = 20  # records per frame: an engine's backlog after a short cut; live it sends one or two
TAGS = 10  # tag values per sample record


def start_aggregator(data: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([str(BIN / "pectus-aggregator"), "--port", str(port), "--data-dir", str(data),
                                "--log-level", "WARNING", "--accept-new-engines"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the aggregator did not start")


def hello(name: str) -> str:
    """An emulated engine's hello: its own key (enrolled on first use) and an outbox of its own."""
    outbox = uuid.uuid5(uuid.NAMESPACE_URL, f"pectus-bench:{name}").hex
    return p.encode(p.Hello(p.PROTOCOL_VERSION, name, "bench", name, "0.1.0", f"{name}-key", outbox))


def run_of(name: str) -> str:
    return f"{name}-run"


def run_started(seq: int, name: str) -> dict:
    return {"seq": seq, "kind": "run_started", "time": time.time(), "run": run_of(name), "data": {}}


def sample_record(seq: int, t: float, tags: int, name: str) -> dict:
    return {"seq": seq, "kind": "samples", "time": t, "run": run_of(name),
            "data": {"samples": [{"time": t, "values": {f"T{i:03d}": 20.0 + (seq + i) % 7 for i in range(tags)}}]}}


def runlog_record(seq: int, t: float, name: str) -> dict:
    item = {"id": seq, "line": 1, "name": "Wait: 1 s", "state": "started", "progress": 0.5, "time": t, "start": t,
            "end": None, "start_values": None, "end_values": None, "cancellable": True, "forcible": True,
            "cancelled": False, "forced": False}
    return {"seq": seq, "kind": "runlog", "time": t, "run": run_of(name), "data": {"items": [item]}}


async def engine(port: int, name: str, records: int, batch: int, latencies: list[float],
                 every: float = 0.0) -> None:
    """Send ``records`` sample records in batches, each batch waiting for its ack; with ``every``,
    one batch per ``every`` seconds (a sustained rate), else as fast as the acks come."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/engine") as ws:
        await ws.send_message(hello(name))
        welcome = p.decode(await ws.get_message())
        seq = welcome.last_seq
        if seq == 0:
            await ws.send_message(p.encode(p.Records([run_started(1, name)])))
            seq = 1
        now = time.time()
        # Engines are not in step with each other: each starts at its own phase of the period.
        next_send = trio.current_time() + random.random() * every
        while seq < records:
            if every:
                await trio.sleep_until(next_send)
                next_send += every
            chunk = [sample_record(n, now, TAGS, name) for n in range(seq + 1, min(seq + batch, records) + 1)]
            sent = time.perf_counter()
            await ws.send_message(p.encode(p.Records(chunk)))
            while True:
                answer = p.decode(await ws.get_message())
                if isinstance(answer, p.Ack) and answer.seq >= chunk[-1]["seq"]:
                    break
            latencies.append(time.perf_counter() - sent)
            seq = chunk[-1]["seq"]


async def ingest(port: int, engines: int, per_engine: int, every: float = 0.0,
                 prefix: str = "bench") -> tuple[float, list[float]]:
    latencies: list[float] = []
    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(engines):
            nursery.start_soon(engine, port, f"{prefix}-{i}_Unit", per_engine, BATCH, latencies, every)
    return time.perf_counter() - began, latencies


async def demo_rate_engine(port: int, name: str, seconds: float) -> None:
    """The demo unit's traffic: live values at 10 Hz, a sample and a run-log change every second."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/engine") as ws:
        await ws.send_message(hello(name))
        seq = p.decode(await ws.get_message()).last_seq
        if seq == 0:
            seq = 1
            await ws.send_message(p.encode(p.Records([run_started(seq, name)])))
        end = trio.current_time() + seconds
        tick = 0
        async with trio.open_nursery() as nursery:
            async def drain():
                async for _ in _frames(ws):
                    pass
            nursery.start_soon(drain)
            while trio.current_time() < end:
                values = [{"name": n, "value": tick * 0.1, "unit": "s", "time": time.time(), "simulated": False}
                          for n in ("Process Time", "Run Time", "Clock", "Block Time", "FT01", "TT01", "UV01")]
                await ws.send_message(p.encode(p.Live(values)))
                if tick % 10 == 0:
                    seq += 1
                    records = [sample_record(seq, time.time(), 20, name)]
                    seq += 1
                    records.append(runlog_record(seq, time.time(), name))
                    await ws.send_message(p.encode(p.Records(records)))
                tick += 1
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()


async def _frames(ws):
    while True:
        yield await ws.get_message()


async def browser_latency(port: int, samples: int) -> list[float]:
    """A tag change sent by an engine, timed until a subscribed browser receives it."""
    latencies: list[float] = []
    unit = "latency_Unit"
    async with open_websocket_url(f"ws://127.0.0.1:{port}/engine") as engine_ws:
        await engine_ws.send_message(hello(unit))
        await engine_ws.get_message()
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/ws") as browser:
            await browser.send_message(json.dumps({"subscribe": [unit]}))
            for i in range(samples):
                sent = time.perf_counter()
                await engine_ws.send_message(p.encode(p.Live([{"name": "FT01", "value": i, "unit": "L/h",
                                                                "time": time.time(), "simulated": False}])))
                while True:
                    frame = json.loads(await browser.get_message())  # deltas come in arrays, a reply alone
                    if isinstance(frame, list) and any(delta["topic"] == "values" and any(
                            v.get("value") == i for v in delta["data"]) for delta in frame):
                        break
                latencies.append(time.perf_counter() - sent)
                await trio.sleep(0.1)
    return latencies



def store_bench(folder: Path, signer: ChainSigner | None = None) -> None:
    """The store alone; with ``signer``, as the aggregator runs it: each transaction signed."""
    store = SQLiteEventStore(folder / f"store-{'signed' if signer else 'unsigned'}.sqlite3", signer)
    batch = [NewEvent("unit:bench_Unit", "TagSamples", float(i), {"unit": "bench_Unit", "samples": [
        {"time": float(i), "values": {f"T{t:03d}": 20.0 + t for t in range(TAGS)}}]}) for i in range(1_000)]

    def timed(action) -> float:
        began = time.perf_counter()
        action()
        return time.perf_counter() - began

    append = min(timed(lambda: store.append(batch)) for _ in range(3))
    single = min(timed(lambda: store.append(batch[:1])) for _ in range(300))
    for _ in range(97):
        store.append(batch)
    read = min(timed(lambda: sum(1 for _ in store.iter())) for _ in range(3))
    count = store.last_position()
    store.close()
    print(f"store{', signing each transaction' if signer else ''}: 1,000 events appended in "
          f"{append * 1000:.1f} ms (one transaction), 1 event in {single * 1e6:.0f} µs; reads {count / read:,.0f} events/s")


def csv_export_bench(folder: Path) -> None:
    store = SQLiteEventStore(folder / "csv.sqlite3")
    unit, run, start = "csv_Unit", "csv-run", 1_800_000_000.0
    tags = [{"name": f"T{i:03d}", "unit": "degC", "direction": "input"} for i in range(200)]
    base = {"unit": unit, "actor": d.Actor.engine(unit)}
    events: list[d.DomainEvent] = [
        d.UodDescribed(time=start, **base, uod_name="Csv", uod_author_name="Bench", uod_author_email="b@x",
                       uod_filename="csv.py", location="", hardware="", tags=tags, readings=[], commands=[],
                       plot_configuration={}, data_log_interval_seconds=1.0),
        d.RunStarted(time=start, run=run, **base)]
    store.append([NewEvent(e.stream, e.type, e.time, e.to_data()) for e in events])
    batch = []
    for second in range(86_400):
        values = {t["name"]: 20.0 + ((second + i) % 50) * 0.1 for i, t in enumerate(tags) if (second + i) % 10 == 0}
        batch.append(d.TagSamples(time=start + second, run=run, **base, samples=[{"time": start + second,
                                                                                   "values": values}]))
        if len(batch) == 2000:
            store.append([NewEvent(e.stream, e.type, e.time, e.to_data()) for e in batch])
            batch = []
    stop = d.RunStopped(time=start + 86_400, run=run, **base)
    store.append([NewEvent(e.stream, e.type, e.time, e.to_data()) for e in batch + [stop]])
    views = Projector(aggregator_name="bench", aggregator_version="bench")
    began = time.perf_counter()
    views.replay(store.iter())
    replay = time.perf_counter() - began
    count = store.last_position()
    began = time.perf_counter()
    rows = sum(1 for _ in csv_rows(store.iter(), run, views))
    elapsed = time.perf_counter() - began
    tracemalloc.start()  # a second pass for the memory: tracing slows Python several times over
    sum(1 for _ in csv_rows(store.iter(), run, views))
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    store.close()
    print(f"csv: 24 h x 200 tags at 1 s = {rows:,} lines in {elapsed:.1f} s, peak {peak:.0f} MB traced "
          f"(targets <= 10 s, <= 200 MB); replay of that store: {count:,} events in {replay:.1f} s = "
          f"{count / replay:,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=20)
    parser.add_argument("--records", type=int, default=3000, help="sample records per engine for the ingest")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the demo-rate CPU measurement")
    parser.add_argument("--rate", type=float, default=25_000, help="offered tag samples/s for the sustained ingest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data, port = Path(folder) / "data", free_port()
        aggregator = start_aggregator(data, port)
        try:
            elapsed, latencies = trio.run(ingest, port, args.engines, args.records)
            total = args.engines * args.records
            print(f"ingest, as fast as it goes: {args.engines} engines, {total:,} sample records ({TAGS} tag values "
                  f"each, {BATCH} records a frame) in {elapsed:.1f} s = {total / elapsed:,.0f} records/s = "
                  f"{TAGS * total / elapsed:,.0f} tag samples/s; append-to-ack p50 "
                  f"{statistics.median(latencies) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms")
            # Sustained: the offered rate, spread over the engines, with a margin over the target so
            # that connecting and the engines' random phases do not pull the measured rate below it.
            every = args.engines * BATCH * TAGS / args.rate
            seconds = 10
            elapsed, latencies = trio.run(ingest, port, args.engines, int(seconds / every) * BATCH, every, "steady")
            total = args.engines * int(seconds / every) * BATCH
            print(f"ingest, sustained: {TAGS * total / elapsed:,.0f} tag samples/s ({total / elapsed:,.0f} records/s) "
                  f"for {elapsed:.0f} s; append-to-ack p50 {statistics.median(latencies) * 1000:.1f} ms, "
                  f"p99 {percentile(latencies, 99) * 1000:.1f} ms (targets >= 20,000 tag-sample events/s, "
                  f"p99 <= 50 ms)")
            usage = psutil.Process(aggregator.pid)
            usage.cpu_percent()
            began = time.perf_counter()

            async def demo_engines():
                async with trio.open_nursery() as nursery:
                    for i in range(args.engines):
                        nursery.start_soon(demo_rate_engine, port, f"demo-{i}_Unit", args.seconds)
            trio.run(demo_engines)
            cpu = usage.cpu_percent() * (time.perf_counter() - began) / args.seconds
            print(f"demo rate: {args.engines} engines for {args.seconds:.0f} s: aggregator CPU {cpu:.1f} % of a core "
                  f"= {cpu / args.engines:.2f} % per engine (target <= 0.5 %)")
            latencies = trio.run(browser_latency, port, 100)
            print(f"engine -> browser: p50 {statistics.median(latencies) * 1000:.1f} ms, "
                  f"p95 {percentile(latencies, 95) * 1000:.1f} ms (target p95 <= 250 ms)")
        finally:
            aggregator.terminate()
            aggregator.wait(10)
        began = time.perf_counter()
        out = subprocess.run([str(BIN / "pectus-aggregator"), "--data-dir", str(data), "replay"],
                             capture_output=True, text=True, check=True).stdout.strip()
        print(f"replay (CLI, whole process {time.perf_counter() - began:.1f} s): {out}")
        store_bench(Path(folder))
        store_bench(Path(folder), load_or_create_signer(Path(folder) / "chain-signing.key"))
        csv_export_bench(Path(folder))


if __name__ == "__main__":
    main()
