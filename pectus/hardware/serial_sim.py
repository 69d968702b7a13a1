"""Simulated serial instruments on a real pseudo-terminal, for tests, examples and the demo.

A pty pair is the kernel's stand-in for a serial cable. A program that opens the *slave* side
(``/dev/pts/N``) sees a serial port, and pyserial configures it like any tty. Whoever holds the
*master* side plays the instrument. :class:`~pectus.hardware.serial.SerialHardware` is tested
this way through the same termios, select and read calls it makes on a real RS-232 port.

:class:`SerialInstrument` serves the master side on a daemon thread. It reads request lines
and answers each with :meth:`SerialInstrument.reply`, which subclasses implement.
:class:`SimulatedBalance` is one such instrument.

Switches for failure tests, which can be set at any time:

* ``garbled = True``: replies arrive with the high bit of every byte flipped, as they do with
  a wrong parity setting; the line ending is left intact, so the client reads a whole line;
* ``silent = True``: requests are read and ignored, as by an instrument that is off or busy;
* ``stop()``: closes the pty, so the client's next I/O fails as when a USB adapter is unplugged.

Restarting: ``start()`` after ``stop()`` opens a *new* pty, and the kernel may give it a new
path. Pass ``link=PATH`` for a stable port name. The simulator keeps a symlink at PATH pointing
to the current pty, and removes it while stopped. This is how the ``/dev/serial/by-id/...`` link
of a USB adapter behaves: it vanishes when the adapter is unplugged and comes back when it is
plugged in again. A client reconnects to the same name.

Try it: ``python -m pectus.hardware.serial_sim [LINK]`` starts a balance, prints its port and
logs every exchange until Ctrl-C (see ``uods/serial_example.py``).

Invariants:

* POSIX only (``os.openpty``);
* the slave side is put in raw mode before any client opens it, so nothing is echoed or
  translated, even before pyserial configures the port;
* the instrument holds its own slave descriptor while it runs, so clients may come and go;
* replying never blocks the thread: the master side is non-blocking, and a reply that the
  client does not read is dropped once the kernel buffer is full, as a real instrument's
  output would be lost;
* ``stop()`` returns only when the thread has ended, every descriptor is closed and the link is
  gone. Calling it on a stopped instrument does nothing.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)


class SerialInstrument:
    """A line-protocol instrument on a pty. Override :meth:`reply`."""

    def __init__(self, *, line_ending: str = "\r\n", encoding: str = "ascii",
                 link: str | os.PathLike[str] | None = None) -> None:
        self.line_ending = line_ending
        self.encoding = encoding
        self.link = Path(link) if link is not None else None
        #: Send every reply with the high bit of each byte flipped (not the line ending's).
        self.garbled = False
        #: Read requests and do not answer.
        self.silent = False
        #: The slave side's path while running (``/dev/pts/N``), else None.
        self.pty_path: str | None = None
        self._thread: threading.Thread | None = None
        self._fds: tuple[int, int, int, int] | None = None  # master, slave, wake-up pipe (read, write)

    @property
    def port(self) -> str:
        """The path a client opens: the link if one was given, else the current pty."""
        if self.link is not None:
            return str(self.link)
        if self.pty_path is None:
            raise RuntimeError(f"{type(self).__name__} is not running: call start() first")
        return self.pty_path

    def reply(self, line: str) -> str | None:
        """The answer to one request line (without line endings), or None for no answer."""
        raise NotImplementedError

    def start(self) -> str:
        """Open a new pty, serve it and return :attr:`port`."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already running on {self.pty_path}")
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        wake_read, wake_write = os.pipe()
        self._fds = (master, slave, wake_read, wake_write)
        self.pty_path = os.ttyname(slave)
        if self.link is not None:
            # Via a temporary name and rename, so a stale link left by a crashed run is replaced.
            temporary = self.link.with_name(self.link.name + ".new")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(self.pty_path)
            temporary.replace(self.link)
        self._thread = threading.Thread(target=self._serve, args=(master, wake_read),
                                        name=f"{type(self).__name__} {self.pty_path}", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Close the pty (clients see the port vanish) and end the thread."""
        if self._thread is None or self._fds is None:
            return
        master, slave, wake_read, wake_write = self._fds
        os.write(wake_write, b"x")
        self._thread.join()
        self._thread = None
        self._fds = None
        for fd in (master, slave, wake_read, wake_write):
            os.close(fd)
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        self.pty_path = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, master: int, wake: int) -> None:
        end = self.line_ending.encode(self.encoding)
        pending = b""
        while True:
            readable, _, _ = select.select([master, wake], [], [])
            if wake in readable:
                return
            try:
                pending += os.read(master, 4096)
            except BlockingIOError:
                continue
            while end in pending:
                request, pending = pending.split(end, 1)
                self._answer(master, request.decode(self.encoding, errors="replace"), end)

    def _answer(self, master: int, request: str, end: bytes) -> None:
        if self.silent:
            log.debug("%s < %r (silent)", self.pty_path, request)
            return
        answer = self.reply(request)
        log.debug("%s < %r > %r", self.pty_path, request, answer)
        if answer is None:
            return
        data = answer.encode(self.encoding)
        if self.garbled:
            data = bytes(byte ^ 0x80 for byte in data)
        try:
            os.write(master, data + end)
        except BlockingIOError:
            log.warning("%s: the client is not reading; reply %r dropped", self.pty_path, answer)


class SimulatedBalance(SerialInstrument):
    """A laboratory balance.

    ==========  ==================  ================================================
    request     reply               effect
    ==========  ==================  ================================================
    ``W?``      ``W     12.34 g``   the net weight: gross minus tare, in grams
    ``T``       ``OK``              tare: the current gross weight reads zero
    ``S12.5``   ``OK``              set the target weight (a dosing target), grams
    other       ``ERR``
    ==========  ==================  ================================================

    ``load`` is the gross weight on the pan; tests set it directly. ``fill_rate`` (g/s) makes it
    grow in real time, for a demo whose plot moves.
    """

    def __init__(self, load: float = 0.0, fill_rate: float = 0.0, *, line_ending: str = "\r\n",
                 link: str | os.PathLike[str] | None = None) -> None:
        super().__init__(line_ending=line_ending, link=link)
        self.load = load
        self.fill_rate = fill_rate
        self.tare_offset = 0.0
        self.target: float | None = None
        self._since = time.monotonic()

    @property
    def gross(self) -> float:
        """The weight on the pan now, in grams (``load`` plus what has been filled since creation)."""
        return self.load + self.fill_rate * (time.monotonic() - self._since)

    def reply(self, line: str) -> str | None:
        if line == "W?":
            return f"W {self.gross - self.tare_offset:9.2f} g"
        if line == "T":
            self.tare_offset = self.gross
            return "OK"
        if line.startswith("S"):
            try:
                self.target = float(line[1:])
            except ValueError:
                return "ERR"
            return "OK"
        return "ERR"


def main(argv: list[str]) -> None:
    """Serve a filling balance until Ctrl-C or SIGTERM; ``argv[1]``, if given, is a link path for its port."""
    logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(message)s")
    balance = SimulatedBalance(load=250.0, fill_rate=0.5, link=argv[1] if len(argv) > 1 else None)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops it cleanly too
    port = balance.start()
    print(f"Simulated balance on {port} (Ctrl-C stops it). In another shell:\n"
          f"  PECTUS_SERIAL_PORT={port} pectus-engine validate --uod uods/serial_example.py --connect",
          flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        balance.stop()


if __name__ == "__main__":
    main(sys.argv)
