"""An engine session ends when its engine falls silent, and only then; the reason is recorded.

Against a real aggregator over a real WebSocket. The silence limit is shortened (15 s in service)
so that the tests take a second: the session watches silence with one task that sleeps until the
limit, so what is checked here is that task, not a deadline per frame.
"""

from __future__ import annotations

import trio
from test_aggregator import HELLO, run_against_aggregator
from trio_websocket import ConnectionClosed, open_websocket_url

from pectus.actors import engine_session
from pectus.events import protocol as p

LIMIT = 0.5  # seconds of silence that end a session in these tests


def disconnect_reasons(aggregator) -> list[str]:
    return [r.data["reason"] for r in aggregator.store.read() if r.type == "EngineDisconnected"]


async def hello(ws) -> None:
    await ws.send_message(p.encode(HELLO))
    assert isinstance(p.decode(await ws.get_message()), p.Welcome)


def test_a_silent_engine_is_disconnected_and_a_talking_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_session, "SILENCE", LIMIT)

    async def scenario(port, aggregator):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/engine", disconnect_timeout=1) as ws:
            await hello(ws)
            # Heartbeats every 0.2 s for six times the limit: each is answered, the session stays.
            for _ in range(15):
                await ws.send_message(p.encode(p.Heartbeat()))
                last_sent = trio.current_time()
                assert isinstance(p.decode(await ws.get_message()), p.Heartbeat)
                await trio.sleep(LIMIT * 0.4)
            assert disconnect_reasons(aggregator) == []
            # Then silence: the aggregator closes the socket once the limit has passed.
            with trio.fail_after(10):
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed:
                    pass
            silent_for = trio.current_time() - last_sent
        with trio.fail_after(10):
            while not disconnect_reasons(aggregator):
                await trio.sleep(0.05)
        return silent_for, disconnect_reasons(aggregator)

    silent_for, reasons = run_against_aggregator(tmp_path, scenario)
    assert LIMIT <= silent_for < LIMIT + 2
    assert reasons == [f"no message for {LIMIT:g} s"]


def test_an_engine_that_closes_its_socket_is_recorded_as_gone(tmp_path):
    async def scenario(port, aggregator):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/engine", disconnect_timeout=1) as ws:
            await hello(ws)
        with trio.fail_after(10):
            while not disconnect_reasons(aggregator):
                await trio.sleep(0.05)
        return disconnect_reasons(aggregator)

    assert run_against_aggregator(tmp_path, scenario) == ["connection closed"]
