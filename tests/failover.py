"""A site on loopback for failover: a PostgreSQL store (tests/postgres.py's throwaway server), two
aggregator processes on it - the active one and its standby - and demo engines, each its own
process, given both aggregators' addresses (``-ahn 127.0.0.1:PORT1,127.0.0.1:PORT2``).

Used by tests/test_failover.py and bench/failover_bench.py. Every wait is a poll with a deadline
(:func:`until`); the processes' logs go to the site's folder.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pectus.actors.standby import WAITING
from pectus.events.store import read_store
from pectus.hardware.opcua_server import free_port

BIN = Path(sys.executable).parent
DEMO = Path(__file__).resolve().parent.parent / "uods"
METHOD = "Base: s\n" + "".join(f"Mark: m{i}\nWait: 0.5 s\n" for i in range(1000)) + "Stop\n"  # marks for 8 minutes
T = TypeVar("T")


def until(condition: Callable[[], T], timeout: float, what: str, step: float = 0.05) -> T:
    """``condition()``'s first truthy value, polled every ``step`` s; AssertionError naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(step)


class Site:
    """Aggregators 0 and 1 on one store (``url``), each with a data directory of its own and the
    same chain signing key; ``engines`` demo units, ``FailoverUnit1``... (the demo UOD under
    another instrument name: one engine identity each)."""

    def __init__(self, folder: Path, url: str, engines: int = 3) -> None:
        self.folder, self.url = folder, url
        self.ports = [free_port(), free_port()]
        self.key = folder / "chain-signing.key"
        self.aggregators: list[subprocess.Popen[bytes] | None] = [None, None]
        self.engines: list[subprocess.Popen[bytes]] = []
        self.units = [f"{socket.gethostname()}_FailoverUnit{n}" for n in range(1, engines + 1)]
        self.outboxes = [folder / f"unit{n}.outbox.sqlite3" for n in range(1, engines + 1)]
        self.http = httpx.Client(timeout=5, headers={"X-Pectus-User": "Ann"})

    def start_aggregator(self, index: int) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [str(BIN / "pectus-aggregator"), "--port", str(self.ports[index]), "--data-dir",
             str(self.folder / f"aggregator{index}"), "--store", self.url, "--signing-key", str(self.key),
             "--accept-new-engines"],
            stdout=subprocess.DEVNULL, stderr=(self.folder / f"aggregator{index}.log").open("ab"))
        self.aggregators[index] = process
        return process

    def start_engines(self) -> None:
        addresses = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        template = (DEMO / "demo_uod.py").read_text(encoding="utf-8")
        (self.folder / "demo_diagram.svg").write_bytes((DEMO / "demo_diagram.svg").read_bytes())
        for n, outbox in enumerate(self.outboxes, 1):
            uod = self.folder / f"unit{n}.py"
            uod.write_text(template.replace('.with_instrument("DemoUod")', f'.with_instrument("FailoverUnit{n}")'),
                           encoding="utf-8")
            self.engines.append(subprocess.Popen(
                [str(BIN / "pectus-engine"), "-uod", str(uod), "-ahn", addresses, "--outbox", str(outbox)],
                stdout=subprocess.DEVNULL, stderr=(self.folder / f"engine{n}.log").open("ab")))

    def health(self, index: int) -> dict[str, Any] | None:
        """Aggregator ``index``'s /health report (with its HTTP status), or None when it does not answer."""
        try:
            answer = self.http.get(f"http://127.0.0.1:{self.ports[index]}/health")
            return {**answer.json(), "http": answer.status_code}
        except (httpx.HTTPError, ValueError):
            return None

    def waiting(self, index: int) -> dict[str, Any] | None:
        """Aggregator ``index``'s /health report while it waits as a standby for an active one to go."""
        report = self.health(index)
        return report if report is not None and report.get("detail") == WAITING else None

    def serving(self, index: int, engines: int = 0) -> bool:
        """Aggregator ``index`` is the active one (200, ok), with at least ``engines`` engines connected."""
        report = self.health(index)
        return report is not None and report["http"] == 200 and report["engines"] >= engines

    def api(self, index: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, f"http://127.0.0.1:{self.ports[index]}{path}", **kwargs)

    def start_run(self, index: int, unit: str, method: str) -> None:
        """Saves ``method`` as the unit's method and starts it, through aggregator ``index``."""
        base = f"/api/process_units/{unit}"
        version = self.api(index, "GET", f"{base}/method").json()["version"]
        lines = [{"id": str(i), "text": text} for i, text in enumerate(method.splitlines(), 1)]
        saved = self.api(index, "POST", f"{base}/method", json={"lines": lines, "version": version})
        assert saved.status_code == 200, saved.text
        started = self.api(index, "POST", f"{base}/control", json={"command": "Start"})
        assert started.status_code == 200, started.text

    def marks(self, index: int, unit: str) -> int:
        """The marks of the unit's current run that aggregator ``index`` shows completed (0 when it
        does not answer)."""
        try:
            items = self.api(index, "GET", f"/api/process_units/{unit}/run_log").json()
        except (httpx.HTTPError, ValueError):
            return 0
        items = items.get("items", items) if isinstance(items, dict) else items
        return sum(1 for item in items if item["name"].startswith("Mark") and item["state"] == "completed")

    def lock_session(self, index: int) -> str:
        """The application_name of aggregator ``index``'s active-lock connection."""
        return f"pectus-aggregator {socket.gethostname()} 127.0.0.1:{self.ports[index]}"

    def outbox(self, path: Path) -> tuple[str, int, int]:
        """An engine's outbox: its id, the last sequence number it gave, the records it still holds."""
        with sqlite3.connect(path) as db:
            identity = db.execute("SELECT id FROM identity").fetchone()[0]
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            held = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        return identity, row[0] if row else 0, held

    def stored(self) -> dict[str, list[int]]:
        """Per outbox id, the sequence numbers of the records the store holds from it, in store order."""
        seqs: dict[str, list[int]] = defaultdict(list)
        for record in read_store(self.url):
            if record.data.get("outbox") is not None and record.data.get("seq") is not None:
                seqs[record.data["outbox"]].append(record.data["seq"])
        return seqs

    def close(self) -> None:
        """Stops every process still running (SIGTERM, then SIGKILL after 20 s)."""
        processes = [p for p in [*self.engines, *self.aggregators] if p is not None and p.poll() is None]
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.http.close()
