"""The error-recovery state machine, with exact times (it takes ``now``, it never reads a clock)."""

from __future__ import annotations

from pectus.hardware.recovery import Recovery, RecoveryConfig, State

CONFIG = RecoveryConfig(reconnect_timeout_seconds=10, error_timeout_seconds=100,
                        retry_after_seconds=(0.5, 2, 10, 30))


def connected(now: float = 0.0) -> Recovery:
    return Recovery(CONFIG, now=now, connected=True)


def test_starts_ok_when_connected_and_disconnected_otherwise():
    assert connected().state is State.OK and connected().connection_status == "Connected"
    recovery = Recovery(CONFIG, now=0, connected=False)
    assert recovery.state is State.DISCONNECTED and recovery.connection_status == "Disconnected"
    assert recovery.reconnect_due(0) and not recovery.does_io


def test_an_error_is_an_issue_and_a_success_heals_it():
    recovery = connected()
    transition = recovery.failed(1.0, "timeout reading FT01")
    assert (transition.old, transition.new, transition.reason) == (State.OK, State.ISSUE, "timeout reading FT01")
    assert recovery.masking and recovery.does_io and recovery.connection_status == "Connected"
    assert recovery.failed(2.0, "again") is None  # still within the reconnect timeout
    assert recovery.succeeded(3.0).new is State.OK
    assert not recovery.masking


def test_issue_becomes_reconnect_after_the_timeout_since_the_last_success():
    recovery = connected()
    recovery.succeeded(5.0)
    recovery.failed(6.0, "x")
    assert recovery.tick(14.9) is None
    transition = recovery.tick(15.0)
    assert transition.new is State.RECONNECT and "10 s" in transition.reason
    assert recovery.masking and not recovery.does_io and recovery.connection_status == "Connected"


def test_reconnect_attempts_follow_the_schedule_then_repeat_the_last_interval():
    recovery = connected()
    recovery.failed(0.0, "x")
    recovery.tick(10.0)  # Reconnect entered at 10
    due = [t / 10 for t in range(100, 1300) if recovery.reconnect_due(t / 10) and not recovery.reconnect_failed(t / 10)]
    assert due[:4] == [10.5, 12.0, 20.0, 40.0]
    assert due[4] == 70.0  # then every 30 s


def test_reconnect_gives_up_into_error_and_recovers_on_a_reconnect():
    recovery = connected()
    recovery.failed(0.0, "x")
    recovery.tick(10.0)
    assert recovery.tick(109.9) is None
    transition = recovery.tick(110.0)
    assert transition.new is State.ERROR and recovery.connection_status == "Disconnected"
    assert not recovery.masking and not recovery.does_io
    assert recovery.reconnect_due(110.5)
    assert recovery.reconnected(111.0).new is State.OK and recovery.connection_status == "Connected"


def test_a_failed_first_connect_is_retried_with_growing_intervals():
    recovery = Recovery(CONFIG, now=0, connected=False)
    attempts = []
    for tenth in range(0, 500):
        now = tenth / 10
        if recovery.reconnect_due(now):
            attempts.append(now)
            recovery.reconnect_failed(now)
    assert attempts[:4] == [0.0, 0.5, 2.5, 12.5]
