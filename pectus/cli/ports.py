"""A port that is already taken, told in one line instead of a traceback.

The aggregator binds its port inside hypercorn's ``serve``, several nurseries deep, so a busy
port reaches ``trio.run`` as an ExceptionGroup nesting the ``OSError``. The programs that start
an aggregator (``pectus-aggregator``, ``make demo``) catch it around ``trio.run`` and print
:func:`port_in_use_message` instead.
"""

from __future__ import annotations

import errno


def _in_use(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno == errno.EADDRINUSE


def is_port_in_use(error: BaseException) -> bool:
    """Whether ``error`` is, or holds at any depth of its exception groups, EADDRINUSE."""
    if isinstance(error, BaseExceptionGroup):
        matched, _ = error.split(_in_use)  # split walks nested groups and tests their leaves
        return matched is not None
    return _in_use(error)


def port_in_use_message(host: str, port: int, how_to_choose: str) -> str:
    """One line: which address is taken and the two ways out (``how_to_choose`` names the option)."""
    return (f"port {port} on {host} is already in use (another aggregator, or `make demo`, may be running): "
            f"stop what uses it, or choose another port with {how_to_choose}")
