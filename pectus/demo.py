"""``make demo``: an aggregator and the simulated demo engine, together, on this machine.

The aggregator serves the UI on http://127.0.0.1:8300 and keeps its store in ./data; the demo
engine (uods/demo_uod.py) connects to it with the demo method loaded, ready to Start. Ctrl-C stops
both.
"""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

import trio

from pectus.actors.aggregator import AggregatorProcess
from pectus.actors.core import ask
from pectus.actors.engine import EngineProcess
from pectus.actors.scan_cycle import SaveMethod
from pectus.uod import load_uod

ROOT = Path(__file__).resolve().parent.parent
PORT = 8300


async def main() -> None:
    data = Path("data")
    aggregator = AggregatorProcess(data, port=PORT, accept_new_engines=True)  # the demo engine enrols on first use
    uod = load_uod(ROOT / "uods" / "demo_uod.py")
    engine_id = f"{socket.gethostname()}_{uod.instrument}"
    engine = EngineProcess(uod, uplink={"outbox": data / f"{engine_id}.outbox.sqlite3",
                                        "url": f"ws://127.0.0.1:{PORT}/engine", "engine_id": engine_id,
                                        "computer_name": socket.gethostname()})
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: aggregator.run(shutdown=shutdown, task_status=task_status))
        await nursery.start(engine.run)
        method = (ROOT / "uods" / "demo_method.pcode").read_text()
        await ask(engine.scan, lambda reply: SaveMethod(method, None, reply), timeout=5)
        print(f"Pectus demo: open http://127.0.0.1:{PORT}/units/{engine_id} - the demo unit is connected\n"
              "with the demo method loaded; press Start. Ctrl-C stops both.", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        await engine.stop()
        shutdown.set()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    trio.run(main)
