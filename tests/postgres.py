"""A real, throwaway PostgreSQL server for the tests (and the bench): Debian's ``postgresql``
package, run with ``initdb`` and ``pg_ctl`` in a temporary directory, on a free loopback port.

No system cluster is touched: the server has its own data directory, listens on 127.0.0.1 only
(its unix socket sits in the same temporary directory), and is stopped and removed at the end.
PostgreSQL refuses to run as root, so as root (CI, containers) the server runs as the ``postgres``
user the Debian package creates, through ``runuser``; as anyone else it runs as that user.

Connections over TCP need a password (scram-sha-256), as in a deployment: :data:`SUPERUSER` and
:data:`PASSWORD` name the superuser. Each test gets an empty database of its own
(:meth:`PostgreSQLServer.database`, the ``postgresql_url`` fixture).

``make test`` installs the package when it is missing; without it the fixture fails, saying so.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

SUPERUSER = "postgres"
PASSWORD = "throwaway-superuser-password"
OS_USER = "postgres"  # who runs the server when the tests run as root
INSTALL = "apt-get install postgresql (make test does)"


def binaries() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: Debian keeps them per major version, off the
    PATH (the newest installed wins); elsewhere they are on the PATH."""
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if installed:
        return installed[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(f"PostgreSQL's initdb was not found: {INSTALL}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgreSQLServer:
    """One server in its own temporary directory. ``fsync`` off (the tests' default) trades
    durability across a power cut, which a throwaway server does not need, for speed; the bench
    keeps it on, as a deployment does."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.fsync = fsync
        self.bin = binaries()
        self.port = 0
        self.directory = Path(tempfile.mkdtemp(prefix="pectus-postgresql-"))
        self._names = itertools.count(1)
        self._free: list[str] = []  # emptied databases, to hand out again
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                user = pwd.getpwnam(OS_USER)
            except KeyError:
                raise RuntimeError(f"no '{OS_USER}' user to run PostgreSQL as (it refuses root): {INSTALL}") from None
            os.chown(self.directory, user.pw_uid, user.pw_gid)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", OS_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}\n{log}")

    def start(self) -> None:
        """Creates the cluster on first start; a restart keeps its data and its port."""
        if not self.data.exists():
            self._initdb()
        settings = ["listen_addresses=127.0.0.1", f"unix_socket_directories={self.directory}",
                    f"fsync={'on' if self.fsync else 'off'}", "max_connections=200"]
        if not self.fsync:
            settings += ["synchronous_commit=off", "full_page_writes=off"]
        for attempt in range(3):  # another program may take the free port before the server does
            self.port = self.port or _free_port()
            options = " ".join(f"-c {setting}" for setting in [f"port={self.port}", *settings])
            try:
                self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60",
                          "-o", options)
                return
            except RuntimeError:
                if attempt == 2 or "could not bind" not in self.log_file.read_text(errors="replace"):
                    raise
                self.port = 0

    def _initdb(self) -> None:
        password_file = self.directory / "password"
        password_file.write_text(PASSWORD + "\n")
        if self._as_root:
            shutil.chown(password_file, OS_USER)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(password_file),
                  "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C.UTF-8")
        password_file.unlink()

    def stop(self) -> None:
        """Stops the server (fast: open connections are cut); its data stays for a restart."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")

    def remove(self) -> None:
        """Stops the server if it runs, and removes its directory."""
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str = PASSWORD) -> str:
        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        """A superuser connection in autocommit mode (administration, and what a tamperer types)."""
        return psycopg.connect(self.url(database), autocommit=True)

    def new_database(self) -> str:
        """The URL of a new, empty database (as the superuser)."""
        name = f"store_{os.getpid()}_{next(self._names)}"
        with self.connect() as admin:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """The URL of an empty database, for the block. Databases are recycled - emptied (their
        schema dropped and made anew, as a new database has it) instead of dropped - as creating one
        copies a template (a second, on a busy disk) where emptying one takes milliseconds."""
        url = self._free.pop() if self._free else self.new_database()
        try:
            yield url
        finally:
            self._empty(url)
            self._free.append(url)

    def _empty(self, url: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with self.connect(name) as admin:
            # Whatever a failed test left connected goes first (it would hold locks on the tables).
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            admin.execute("DROP SCHEMA public CASCADE")
            admin.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
            admin.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgreSQLServer]:
    """One server for the whole test session."""
    server = PostgreSQLServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgresql_url(postgresql_server: PostgreSQLServer) -> Iterator[str]:
    """An empty database for one test, emptied again after it."""
    with postgresql_server.database() as url:
        yield url
