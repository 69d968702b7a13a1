"""Nothing lost, nothing doubled: a real aggregator and a real engine, each its own process, and a
run that goes through an aggregator SIGKILL and restart, a cut connection, and an engine SIGKILL
and restart. Afterwards every record the engine produced is stored exactly once, in order, and the
store's chain verifies."""

from __future__ import annotations

import functools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from conftest import DEMO_UOD, wait_for
from pectus.actors.aggregator import STORE_FILE
from pectus.events.store import SQLiteEventStore, verify
from pectus.hardware.opcua_server import free_port

BIN = Path(sys.executable).parent
UNIT = f"{socket.gethostname()}_DemoUod"
METHOD = "Base: s\n" + "".join(f"Mark: m{i}\nWait: 0.5 s\n" for i in range(60)) + "Stop\n"


# Servers restart during this test: a refused connection is "not yet", not a failure.
patiently = functools.partial(wait_for, timeout=30, step=0.1, ignore=(httpx.HTTPError, OSError))


class Relay:
    """A TCP relay between engine and aggregator that can cut every connection through it."""

    def __init__(self, listen: int, target: int) -> None:
        self.listen, self.target = listen, target
        self.scopes: list[trio.CancelScope] = []

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.listen, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._pump, listeners)

    async def _pump(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self.scopes.append(scope)
            try:
                server = await trio.open_tcp_stream("127.0.0.1", self.target)
            except OSError:
                return
            async with client, server, trio.open_nursery() as nursery:
                nursery.start_soon(self._copy, client, server)
                nursery.start_soon(self._copy, server, client)

    @staticmethod
    async def _copy(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        with trio.CancelScope(shield=True):
            await sink.aclose()

    def cut(self) -> None:
        for scope in self.scopes:
            scope.cancel()
        self.scopes = []


def test_kills_restarts_and_cuts_lose_and_double_nothing(tmp_path):
    port, relay_port = free_port(), free_port()
    data, outbox = tmp_path / "data", tmp_path / "engine.outbox.sqlite3"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = tmp_path / "logs"
    logs.mkdir()

    # The engine is enrolled as ops would do it: the CLI makes its key and writes it where the engine looks.
    engine_id = f"{socket.gethostname()}_DemoUod"
    subprocess.run([str(BIN / "pectus-aggregator"), "--data-dir", str(data), "engines", "enroll", engine_id,
                    "--key-file", str(outbox.with_name(f"{engine_id}.key"))], check=True, env=env,
                   stdout=subprocess.DEVNULL)

    def aggregator() -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "pectus-aggregator"), "--port", str(port), "--data-dir", str(data)],
                                env=env, stdout=subprocess.DEVNULL, stderr=(logs / "aggregator.log").open("a"))

    def engine() -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "pectus-engine"), "-uod", str(DEMO_UOD), "-ap", str(relay_port),
                                 "--outbox", str(outbox)],
                                env=env, stdout=subprocess.DEVNULL, stderr=(logs / "engine.log").open("a"))

    processes: list[subprocess.Popen] = []

    async def main():
        relay = Relay(relay_port, port)
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            processes.extend([aggregator(), engine()])
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
                async def online():
                    units = (await api.get("/api/process_units")).json()
                    return any(u["id"] == UNIT and u["state"] == "online" for u in units)

                async def marks():
                    items = (await api.get(f"/api/process_units/{UNIT}/run_log")).json()
                    items = items.get("items", items) if isinstance(items, dict) else items
                    return [i["name"] for i in items if i["name"].startswith("Mark") and i["state"] == "completed"]

                await patiently(online)
                version = (await api.get(f"/api/process_units/{UNIT}/method")).json()["version"]
                lines = [{"id": str(i), "text": t} for i, t in enumerate(METHOD.splitlines(), 1)]
                assert (await api.post(f"/api/process_units/{UNIT}/method",
                                       json={"lines": lines, "version": version})).status_code == 200
                assert (await api.post(f"/api/process_units/{UNIT}/control",
                                       json={"command": "Start"})).status_code == 200
                await patiently(lambda: _at_least(marks, 4))

                processes[0].send_signal(signal.SIGKILL)  # the aggregator dies mid-run
                processes[0].wait()
                await trio.sleep(1.5)  # the engine runs on; its records wait in the outbox
                processes[0] = aggregator()
                await patiently(online)
                await patiently(lambda: _at_least(marks, 10))

                relay.cut()  # the network drops every connection
                await patiently(lambda: _at_least(marks, 16))

                processes[1].send_signal(signal.SIGKILL)  # the engine dies mid-run
                processes[1].wait()
                before = _produced(outbox)
                processes[1] = engine()
                # The restarted engine describes its unit again (a new record) and sends what the
                # dead one left in the outbox; done when everything is acknowledged.
                await patiently(lambda: _sent_all_after(outbox, before), timeout=30)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    produced = _produced(outbox)
    store = SQLiteEventStore(data / STORE_FILE)
    records = [r for r in store.iter() if r.data.get("unit") == UNIT]
    store.close()
    seqs = [r.data["seq"] for r in records if r.data.get("seq") is not None]
    assert seqs == list(range(1, produced + 1))  # every record once, in order
    stored_marks = [item["name"] for r in records if r.type == "RunLogChanged" for item in r.data.get("items", ())
                    if item["name"].startswith("Mark") and item["state"] == "completed"]
    assert len(stored_marks) == len(set(stored_marks)) >= 16  # each mark of the first run once
    # The cut and the engine's death are recorded; the killed aggregator could record nothing.
    assert sum(1 for r in records if r.type == "EngineDisconnected") >= 2
    assert sum(1 for r in records if r.type == "EngineConnected") >= 4
    assert verify(data / STORE_FILE).ok


async def _at_least(query, count: int) -> bool:
    return len(await query()) >= count


def _produced(path: Path) -> int:
    """The last sequence number the engine's outbox handed out."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0]


async def _sent_all_after(path: Path, before: int) -> bool:
    def check() -> bool:
        with sqlite3.connect(path) as db:
            return _produced(path) > before and db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    return await trio.to_thread.run_sync(check)
