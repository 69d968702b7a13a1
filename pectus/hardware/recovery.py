"""Error recovery for a hardware connection: a state machine without I/O.

A connection to real equipment breaks now and then: a switch reboots, a cable is pulled, a PLC
restarts. Recovery hides short breaks from the running method (it keeps using the last values
that were read), retries in the background, and only when the equipment stays away long enough
stops the run, so a person can look.

States (the names are Open Pectus'):

=============  ==================  ==========================================================
state          Connection Status   what happens
=============  ==================  ==========================================================
Disconnected   Disconnected        not connected yet; reads and writes fail
OK             Connected           reads and writes go to the equipment
Issue          Connected           an I/O error happened; reads and writes still go to the
                                   equipment, failures are masked with the last good values
Reconnect      Connected           no I/O; the last good values are used while reconnect
                                   attempts run on a schedule
Error          Disconnected        recovery gave up: reads and writes fail, the run pauses on
                                   error; reconnect attempts go on
=============  ==================  ==========================================================

Transitions: OK -> Issue on an error; Issue -> OK on a success; Issue -> Reconnect when there has
been no success for ``reconnect_timeout_seconds``; Reconnect -> Error after
``error_timeout_seconds`` in Reconnect; Reconnect/Error/Disconnected -> OK when a (re)connect
succeeds. Reconnect attempts in Reconnect and Error follow ``retry_after_seconds`` (counted from
entering the state), then repeat at the last interval.

Invariants: the machine never does I/O and never reads a clock - every method takes ``now``
(monotonic seconds) - so its timing is tested exactly; every transition is returned as a
:class:`Transition` for the caller to log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    DISCONNECTED = "Disconnected"
    OK = "OK"
    ISSUE = "Issue"
    RECONNECT = "Reconnect"
    ERROR = "Error"


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    reconnect_timeout_seconds: float = 10.0
    error_timeout_seconds: float = 5 * 3600.0
    retry_after_seconds: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0, 120.0, 1800.0)


@dataclass(frozen=True, slots=True)
class Transition:
    time: float
    old: State
    new: State
    reason: str

    def __str__(self) -> str:
        return f"connection {self.old} -> {self.new}: {self.reason}"


class Recovery:
    """The recovery state of one connection."""

    __slots__ = ("config", "state", "last_success", "entered", "_attempts", "_next_attempt")

    def __init__(self, config: RecoveryConfig | None = None, *, now: float, connected: bool) -> None:
        self.config = config or RecoveryConfig()
        self.state = State.OK if connected else State.DISCONNECTED
        self.last_success = now
        self.entered = now
        self._attempts = 0
        self._next_attempt = now  # a Disconnected connection is tried at once

    @property
    def connection_status(self) -> str:
        return "Disconnected" if self.state in (State.DISCONNECTED, State.ERROR) else "Connected"

    @property
    def does_io(self) -> bool:
        """Reads and writes go to the equipment (OK and Issue)."""
        return self.state is State.OK or self.state is State.ISSUE

    @property
    def masking(self) -> bool:
        """Failures are hidden behind the last good values (Issue and Reconnect)."""
        return self.state is State.ISSUE or self.state is State.RECONNECT

    def succeeded(self, now: float) -> Transition | None:
        self.last_success = now
        if self.state is State.ISSUE:
            return self._move(now, State.OK, "I/O works again")
        return None

    def failed(self, now: float, error: str) -> Transition | None:
        if self.state is State.OK:
            return self._move(now, State.ISSUE, error)
        return self.tick(now) if self.state is State.ISSUE else None

    def tick(self, now: float) -> Transition | None:
        """The time-based transitions; call once per scan."""
        if self.state is State.ISSUE and now - self.last_success >= self.config.reconnect_timeout_seconds:
            return self._move(now, State.RECONNECT,
                              f"no successful read or write for {self.config.reconnect_timeout_seconds:g} s")
        if self.state is State.RECONNECT and now - self.entered >= self.config.error_timeout_seconds:
            return self._move(now, State.ERROR,
                              f"not reconnected within {self.config.error_timeout_seconds:g} s")
        return None

    def reconnect_due(self, now: float) -> bool:
        return self.state in (State.RECONNECT, State.ERROR, State.DISCONNECTED) and now >= self._next_attempt

    def reconnect_failed(self, now: float) -> None:
        schedule = self.config.retry_after_seconds
        self._attempts += 1
        if self.state is State.DISCONNECTED:
            self._next_attempt = now + schedule[min(self._attempts, len(schedule)) - 1]
            return
        if self._attempts < len(schedule):
            self._next_attempt = self.entered + schedule[self._attempts]
        else:
            self._next_attempt = now + schedule[-1]

    def reconnected(self, now: float) -> Transition:
        self.last_success = now
        return self._move(now, State.OK, "connected")

    def _move(self, now: float, new: State, reason: str) -> Transition:
        transition = Transition(now, self.state, new, reason)
        self.state = new
        self.entered = now
        self._attempts = 0
        self._next_attempt = now + self.config.retry_after_seconds[0]
        return transition
