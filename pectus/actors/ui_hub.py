"""UiHub: fans live changes out to the browsers' WebSocket subscriptions.

Each subscription has a bounded buffer. Publishing never waits: a browser too slow to keep up
(its buffer full) is dropped - its subscription ends with ``overflowed`` set - so it reconnects
and refetches, and the other browsers and the engines are never held back by it.
"""

from __future__ import annotations

from typing import Any, Iterable

import trio

BUFFER = 1000


class Subscription:
    """What one browser receives: async-iterate it; ``close()`` when the browser leaves."""

    def __init__(self, hub: "UiHub") -> None:
        self._hub = hub
        self._send, self._receive = trio.open_memory_channel[Any](BUFFER)
        self.overflowed = False

    def offer(self, delta: Any) -> None:
        try:
            self._send.send_nowait(delta)
        except trio.WouldBlock:
            self.overflowed = True
            self.close()
        except trio.ClosedResourceError:
            pass

    def close(self) -> None:
        self._hub._subscriptions.discard(self)
        self._send.close()

    def __aiter__(self):
        return self._receive.__aiter__()


class UiHub:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, deltas: Iterable[Any]) -> None:
        deltas = list(deltas)
        if not deltas:
            return
        for subscription in list(self._subscriptions):
            for delta in deltas:
                subscription.offer(delta)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)
