"""``make demo``: an aggregator and the simulated demo engine, together, on this machine.

The aggregator serves the UI on http://127.0.0.1:8300 (``PORT=8400 make demo``, or
``python -m pectus.demo --port 8400``, for another port) and keeps its store in ./data; the demo
engine (uods/demo_uod.py) connects to it with the demo method loaded, ready to Start. Ctrl-C stops
both. A port already in use is told in one line, with the way to choose another (exit 1).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path

import trio

from pectus.actors.aggregator import AggregatorProcess
from pectus.actors.core import ask
from pectus.actors.engine import EngineProcess
from pectus.actors.scan_cycle import SaveMethod
from pectus.cli.ports import is_port_in_use, port_in_use_message
from pectus.uod import load_uod

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


async def main(port: int) -> None:
    data = Path("data")
    # The demo engine enrols on first use.
    aggregator = AggregatorProcess(data, host=HOST, port=port, accept_new_engines=True)
    uod = load_uod(ROOT / "uods" / "demo_uod.py")
    engine_id = f"{socket.gethostname()}_{uod.instrument}"
    engine = EngineProcess(uod, uplink={"outbox": data / f"{engine_id}.outbox.sqlite3",
                                        "url": f"ws://{HOST}:{port}/engine", "engine_id": engine_id,
                                        "computer_name": socket.gethostname()})
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: aggregator.run(shutdown=shutdown, task_status=task_status))
        await nursery.start(engine.run)
        method = (ROOT / "uods" / "demo_method.pcode").read_text()
        await ask(engine.scan, lambda reply: SaveMethod(method, None, reply), timeout=5)
        print(f"Pectus demo: open http://{HOST}:{port}/units/{engine_id} - the demo unit is connected\n"
              "with the demo method loaded; press Start. Ctrl-C stops both.", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        await engine.stop()
        shutdown.set()


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pectus.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8300, help="the aggregator's port (default 8300)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    try:
        trio.run(main, args.port)
    except BaseExceptionGroup as error:
        if not is_port_in_use(error):
            raise
        print(port_in_use_message(HOST, args.port, f"PORT={args.port + 1} make demo"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
