"""The failover: a real PostgreSQL server, two real aggregator processes on it (one active, one
standby) and three real demo engines, each given both addresses, running methods.

1. The active aggregator is SIGKILLed mid-run: the standby is the active one within 10 s
   (measured), the engines reconnect to it, and the runs' records keep flowing.
2. The killed one, started again, waits as a standby: /health says so (503), it refuses the API
   and the engines' handshakes.
3. The new active one is cut off from the database - its lock connection is killed with
   pg_terminate_backend, as the server does to a client it finds gone - and stops serving: its
   process ends before the standby serves (never two actives). The standby takes over.

At the end every record the engines wrote is stored exactly once, in order, and ``verify`` is
green (the chain, and its signatures).
"""

from __future__ import annotations

import subprocess
import time

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from failover import BIN, METHOD, Site, until
from pectus.events import protocol as p

TAKEOVER = 10.0  # seconds from the active aggregator's death to the standby serving, at most


@pytest.fixture
def site(tmp_path, postgresql_url):
    running = Site(tmp_path, postgresql_url)
    try:
        yield running
    finally:
        running.close()


def test_the_standby_takes_over_and_nothing_is_lost_or_stored_twice(site, postgresql_server):
    site.start_aggregator(0)
    until(lambda: site.serving(0), 30, "the first aggregator serving")
    site.start_aggregator(1)  # after the first made the shared signing key
    until(lambda: site.waiting(1), 30, "the second aggregator waiting as a standby")
    site.start_engines()
    until(lambda: site.serving(0, engines=3), 60, "the three engines connected to the active aggregator")
    for unit in site.units:
        site.start_run(0, unit, METHOD)
    until(lambda: all(site.marks(0, unit) >= 3 for unit in site.units), 60, "the runs under way")

    # 1. The active aggregator dies.
    site.aggregators[0].kill()
    killed = time.monotonic()
    site.aggregators[0].wait()
    until(lambda: site.serving(1), TAKEOVER, "the standby serving after the active one died")
    took_over = time.monotonic() - killed
    until(lambda: site.serving(1, engines=3), 30, "the engines reconnected to the new active aggregator")
    reconnected = time.monotonic() - killed
    print(f"\nfailover after SIGKILL: serving in {took_over:.2f} s, 3 engines back in {reconnected:.2f} s")
    before = {unit: site.marks(1, unit) for unit in site.units}
    until(lambda: all(site.marks(1, unit) >= before[unit] + 3 for unit in site.units), 30, "the runs going on")

    # 2. Started again, the old active one is a standby: /health, the API and engines are told so.
    site.start_aggregator(0)
    standby = until(lambda: site.waiting(0), 30, "the restarted aggregator waiting as a standby")
    assert standby["status"] == "standby" and standby["http"] == 503
    refused = site.api(0, "GET", "/api/process_units")
    assert refused.status_code == 503 and refused.json()["status"] == "standby"
    assert trio.run(_handshake, site.ports[0]) == p.STANDBY
    assert site.serving(1, engines=3)  # the engines stayed with the active one

    # 3. The active one loses its lock connection (a partition, as the server sees it): it stops.
    database = site.url.rsplit("/", 1)[1]
    with postgresql_server.connect(database) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                              "WHERE application_name = %s", (site.lock_session(1),)).fetchall()
    cut = time.monotonic()
    assert ended == [(True,)]
    active = site.aggregators[1]
    # It ends before the standby serves: never two actives.
    first = until(lambda: "ended" if active.poll() is not None else "served" if site.serving(0) else None,
                  TAKEOVER, "the cut-off aggregator ending, or the standby serving")
    assert first == "ended" and active.returncode == 1, "the standby served while the cut-off one still ran"
    stopped = time.monotonic() - cut
    assert "lost the store's active lock" in (site.folder / "aggregator1.log").read_text()
    until(lambda: site.serving(0), TAKEOVER, "the standby serving after the active one was cut off")
    took_over_again = time.monotonic() - cut
    until(lambda: site.serving(0, engines=3), 30, "the engines reconnected")
    print(f"failover after a cut lock connection: the cut-off one ended in {stopped:.2f} s, the standby "
          f"serving in {took_over_again:.2f} s")
    before = {unit: site.marks(0, unit) for unit in site.units}
    until(lambda: all(site.marks(0, unit) >= before[unit] + 3 for unit in site.units), 30, "the runs going on")

    # The runs end; once every engine's outbox is empty, the store must hold each record once.
    for unit in site.units:
        stopped_run = site.api(0, "POST", f"/api/process_units/{unit}/control", json={"command": "Stop"})
        assert stopped_run.status_code == 200, stopped_run.text
    until(lambda: all(not site.api(0, "GET", f"/api/process_units/{unit}/control_state").json()["is_running"]
                      for unit in site.units), 30, "the runs stopped")
    until(lambda: all(site.outbox(path)[2] == 0 for path in site.outboxes), 30, "every outbox acknowledged")
    outboxes = [site.outbox(path) for path in site.outboxes]  # before the store: all it had is acknowledged
    stored = site.stored()
    for path, (outbox, produced, _) in zip(site.outboxes, outboxes):
        seqs = stored[outbox]
        assert seqs == list(range(1, len(seqs) + 1)), f"{path.name}: a record stored twice, or one missing"
        # Every record written is stored (a run's samples, marks and states: dozens across the three turns).
        assert len(seqs) >= produced > 30, f"{path.name}: {produced} records written, {len(seqs)} stored"
    site.close()
    verified = subprocess.run([str(BIN / "pectus-aggregator"), "--store", site.url, "verify", "--public-key",
                               str(site.key.with_suffix(".pub"))], capture_output=True, text=True, check=False,
                              timeout=120)
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout and "signed up to its last event" in verified.stdout


async def _handshake(port: int) -> str:
    """The refusal code of an engine's WebSocket handshake with the aggregator on ``port``."""
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/engine"):
            pass
    refusal = p.standby_refusal(rejected.value.status_code, rejected.value.body)
    return refusal.code if refusal is not None else f"not a standby's refusal: {rejected.value}"
