"""Live socket benchmark: many browsers following 20 running engines through one real aggregator.

    python bench/live_bench.py [--subscribers 200 1000] [--engines 20] [--follow N] [--seconds 20] [--no-deflate]
                               [--py-spy FILE]

For each number of subscribers, a fresh aggregator process gets ``--engines`` engines at the demo
unit's rate (``demo_rate_engine`` of aggregator_bench: live values 10 times a second, a sample and
a run-log change every second) and that many browser-like WebSocket clients, each subscribed to
every unit (the worst case: a page showing the whole plant live), or to ``--follow N`` of them
(browser k follows units k .. k+N-1, round robin: ``--follow 1`` is a unit page). Like Chromium,
a client offers permessage-deflate (``--no-deflate``: it does not), so the aggregator compresses
what it sends as it does for real browsers. Prints, over the measured window (after connecting
and a warm-up):

* subscribers held to the end and closed (with their close codes);
* the aggregator's CPU (% of one core) and this process's (the browsers and engines);
* the CPU other processes used meanwhile (the figures are only comparable on a quiet machine);
* the latency of live values from the engine's send (the value's time) to a browser's receipt,
  p50 and p99 over every live-values delta received by one browser in ten (the others only count
  their frames), and the frames, deltas and kB of JSON (what the aggregator compresses for it)
  each browser received per second (the hub sends at most one frame per round: ``PACE``).

Target: 1,000 subscribers on 20 engines hold, none closed, on a two-core machine; live-value
latency p99 well under a second; the aggregator under 1.5 cores.

Measured on a two-core machine with nothing else running, 15 s windows; "before" is the fan-out
that queued every change for every browser (one frame per browser each time it was ready):

=====================================  ================  ===============  ======================
subscribers on 20 engines              aggregator CPU    latency p50/p99  per browser: frames/s
=====================================  ================  ===============  ======================
200, every unit, before                100 % (saturated) 181 / 479 ms     12.1 (246 kB)
200, every unit                        45 %              159 / 437 ms     3.9 (133 kB)
1,000, every unit, before              100 % (saturated) 10.0 / 14.0 s    1.6 (47 kB)
1,000, every unit                      66 %              0.71 / 2.1 s     0.7 (48 kB)
1,000, every unit, no deflate (*)      81 %              0.28 / 1.3 s     2.9 (79 kB)
1,000, one unit each, before           100 % (saturated) 4.4 / 8.1 s      3.2 (4 kB)
1,000, one unit each                   74 %              302 / 616 ms     2.1 (4 kB)
=====================================  ================  ===============  ======================

(*) with other work using 13 % of the machine. None was closed in any run. What bounds the worst
case (every browser following the whole plant live) is permessage-deflate: hypercorn compresses
every frame for each connection (zlib level 6, context takeover: about 0.5 ms for a 46 kB frame
here, and no option to change it), so for 1,000 such browsers a round's fan-out takes about
0.7 s, the hub spaces the rounds to keep it under half the event loop, and the latency is that
of ~1.4 s rounds. (Level 1, tried by patching the library, gave p99 1.4 s.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil
import trio
from aggregator_bench import BIN, demo_rate_engine, start_aggregator
from measure import percentile
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from pectus.hardware.opcua_server import free_port

CONNECTING = 50  # browsers opening their socket at once (the listen backlog is finite)
WARM_UP = 5.0  # seconds between the engines starting and the measured window
TIMED = 10  # one browser in so many parses its frames and times its live values


@dataclass
class Tally:
    """What the browsers saw; latencies and counts only inside the measured window."""

    measuring: bool = False
    latencies: list[float] = field(default_factory=list)
    frames: int = 0
    bytes: int = 0  # of the frames' JSON text, before compression
    deltas: int = 0  # received by the timed browsers
    connected: int = 0
    closed: Counter = field(default_factory=Counter)  # close code (or the error) -> browsers


async def browser(port: int, units: list[str], deflate: bool, tally: Tally, connecting: trio.Semaphore,
                  timed: bool) -> None:
    """One browser tab on the live socket: subscribe to ``units``, then read every frame (and, if
    ``timed``, parse it and time its live values: a sample of the browsers, so that this process
    spends less of the machine than the aggregator it measures)."""
    async with connecting:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        extensions = [PerMessageDeflate()] if deflate else []
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/api/ws", extensions=extensions)))
        while not isinstance(event := await _next_event(stream, ws), AcceptConnection):
            if isinstance(event, RejectConnection):
                tally.closed["rejected"] += 1
                return
        await stream.send_all(ws.send(TextMessage(orjson.dumps({"subscribe": units}).decode())))
    tally.connected += 1
    parts: list[str] = []
    try:
        while True:
            event = await _next_event(stream, ws)
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    _received("".join(parts), tally, timed)
                    parts = []
            elif isinstance(event, Ping):
                await stream.send_all(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                tally.closed[event.code] += 1
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as error:
        tally.closed[type(error).__name__] += 1
    finally:
        await stream.aclose()


async def _next_event(stream: trio.SocketStream, ws: WSConnection):
    for event in ws.events():
        return event
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError("the aggregator closed the connection")
        ws.receive_data(data)
        for event in ws.events():
            return event


def _received(text: str, tally: Tally, timed: bool) -> None:
    if not tally.measuring or not text.startswith("["):  # a frame of deltas, or a reply
        return
    tally.frames += 1
    tally.bytes += len(text)
    if not timed:
        return
    now = time.time()
    frame = orjson.loads(text)
    tally.deltas += len(frame)
    for delta in frame:
        if delta["topic"] == "values" and isinstance(delta["data"], list):
            # live values carry the engine's send time; a coalesced delta, its newest one's
            tally.latencies.append(now - max(value["time"] for value in delta["data"]))


async def measure(port: int, pid: int, subscribers: int, engines: int, follow: int, seconds: float, deflate: bool,
                  py_spy: Path | None = None) -> dict:
    units = [f"live-{n}_Unit" for n in range(engines)]
    tally = Tally()
    aggregator = psutil.Process(pid)
    me = psutil.Process()
    async with trio.open_nursery() as nursery:
        # The browsers connect first (as after an aggregator restart, they are there when the
        # engines come back), then the engines run until the measurement is over.
        connecting = trio.Semaphore(CONNECTING)
        for k in range(subscribers):
            followed = [units[(k + n) % engines] for n in range(min(follow, engines))]
            nursery.start_soon(browser, port, followed, deflate, tally, connecting, k % TIMED == 0)
        with trio.fail_after(120):
            while tally.connected + sum(tally.closed.values()) < subscribers:
                await trio.sleep(0.1)
        for unit in units:
            nursery.start_soon(demo_rate_engine, port, unit, 3600.0)
        await trio.sleep(WARM_UP)
        aggregator.cpu_percent(), me.cpu_percent(), psutil.cpu_percent()
        tally.measuring, began = True, time.perf_counter()
        if py_spy is not None:
            await trio.to_thread.run_sync(lambda: subprocess.run(
                [shutil.which("py-spy") or str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration",
                 str(int(seconds)), "--rate", "100", "--format", "raw", "--output", str(py_spy)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        await trio.sleep(max(0.0, seconds - (time.perf_counter() - began)))
        tally.measuring = False
        elapsed = time.perf_counter() - began
        cpu, own_cpu = aggregator.cpu_percent(), me.cpu_percent()
        machine = psutil.cpu_percent() * psutil.cpu_count()  # % of one core, all processes
        nursery.cancel_scope.cancel()
    per_browser = elapsed * max(1, subscribers)
    return {"held": tally.connected - sum(count for code, count in tally.closed.items() if code != "rejected"),
            "closed": dict(tally.closed), "cpu": cpu, "own_cpu": own_cpu, "others": machine - cpu - own_cpu,
            "latencies": tally.latencies, "frames": tally.frames / per_browser,
            "deltas": tally.deltas / (elapsed * len(range(0, subscribers, TIMED)) or 1),
            "bytes": tally.bytes / per_browser}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--engines", type=int, default=20)
    parser.add_argument("--follow", type=int, default=0, help="units each browser follows (default: all)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured window")
    parser.add_argument("--no-deflate", dest="deflate", action="store_false",
                        help="browsers do not offer permessage-deflate")
    parser.add_argument("--py-spy", type=Path, help="record the aggregator with py-spy (raw format) into FILE, "
                                                     "during the measured window of the last level")
    args = parser.parse_args()
    for subscribers in args.subscribers:
        spy = args.py_spy if subscribers == args.subscribers[-1] else None
        with tempfile.TemporaryDirectory() as folder:
            port = free_port()
            aggregator = start_aggregator(Path(folder) / "data", port)
            try:
                result = trio.run(measure, port, aggregator.pid, subscribers, args.engines, args.follow or args.engines,
                                  args.seconds, args.deflate, spy)
            finally:
                aggregator.terminate()
                aggregator.wait(10)
        latencies = result["latencies"]
        p50 = f"{statistics.median(latencies) * 1000:.0f}" if latencies else "-"
        p99 = f"{percentile(latencies, 99) * 1000:.0f}" if latencies else "-"
        following = f", each following {args.follow}" if args.follow else ""
        print(f"{subscribers} subscribers on {args.engines} engines{following}{'' if args.deflate else ' (no deflate)'}: "
              f"held {result['held']}, closed {sum(result['closed'].values())} {result['closed'] or ''}; "
              f"aggregator CPU {result['cpu']:.0f} % of a core (this process, browsers and engines: "
              f"{result['own_cpu']:.0f} %; other processes: {max(0.0, result['others']):.0f} %); "
              f"live values engine -> browser p50 {p50} ms, p99 {p99} ms; per browser and second "
              f"{result['frames']:.1f} frames carrying {result['deltas']:.0f} deltas, {result['bytes'] / 1000:.0f} kB")


if __name__ == "__main__":
    main()
