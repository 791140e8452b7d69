"""A throwaway PostgreSQL cluster for tests: a real server, on a free loopback port, in a temp dir.

Tests that need PostgreSQL take the ``postgres_dsn`` fixture (a fresh, empty database per test)
or ``postgres_server`` (the session's cluster, for restart and crash tests). conftest.py makes
them available with::

    from .support.postgres import postgres_dsn, postgres_server  # noqa: F401

If PostgreSQL cannot start, the fixtures raise ``PostgresUnavailable`` with a message saying how
to fix it: the PostgreSQL tests fail, they are never skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psycopg
import pytest
from psycopg import sql

# The version the issue names (Debian bookworm's); any other installed one is a fallback.
PREFERRED_BIN = "/usr/lib/postgresql/15/bin"
BIN_ENV = "CERTWIDGET_POSTGRES_BIN"
SUPERUSER = "postgres"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

_HOW_TO_FIX = (
    "Install PostgreSQL with `make postgres` (as root: `apt-get install postgresql`), "
    f"or set {BIN_ENV} to the directory holding initdb and postgres "
    "(e.g. /usr/lib/postgresql/15/bin)."
)

_PR_SET_PDEATHSIG = 1


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be found or started; the message says how to fix it."""


def find_bin_dir() -> Path:
    """The directory of initdb and postgres: $CERTWIDGET_POSTGRES_BIN, else Debian's, else PATH."""
    configured = os.environ.get(BIN_ENV)
    if configured:
        candidates = [Path(configured)]
    else:
        # Newest major version first, after the preferred one.
        installed = sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(m.group(1)) if (m := re.search(r"/(\d+)/bin$", p)) else 0,
            reverse=True,
        )
        candidates = [Path(p) for p in [PREFERRED_BIN, *installed]]
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in ("initdb", "postgres")):
            return candidate
    where = f"{BIN_ENV}={configured}" if configured else f"{PREFERRED_BIN} or on PATH"
    raise PostgresUnavailable(f"PostgreSQL's initdb/postgres not found ({where}). {_HOW_TO_FIX}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster (initdb'd once, started and stopped at will) in its own temp dir.

    The postmaster is our direct child (``postgres -D``, no pg_ctl), in its own process group,
    so ``kill()`` can SIGKILL the postmaster and all its backends at once, like a crashed host.
    """

    def __init__(self, bin_dir: Path | None = None, *, shared_buffers: str = "32MB") -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.shared_buffers = shared_buffers
        self.password = secrets.token_hex(16)
        self.port = 0
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._atexit_registered = False
        # initdb and postgres refuse to run as root: as root, run them as the postgres OS user.
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "Running as root, and there is no `postgres` OS user to run PostgreSQL as "
                    "(initdb refuses root). `apt-get install postgresql` creates it; or run the "
                    "tests as a non-root user."
                ) from None

    # -- addresses ---------------------------------------------------------------------------

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """The DSN of the cluster's default database, ``postgres`` (superuser)."""
        return self.dsn_for("postgres")

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "start() the server first"
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "start() the server first"
        return self.root / "postgres.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """initdb on first call, then start the postmaster and wait until it accepts connections."""
        if self.running:
            return self
        if self.root is None:
            self._initdb()
        if self.port:
            # A restart keeps its port, so DSNs handed out before stay valid.
            self._launch()
            return self
        # Another process may take the free port between our probe and postgres's bind: retry.
        for attempt in range(3):
            self.port = _free_port()
            try:
                self._launch()
                return self
            except PostgresUnavailable:
                if attempt == 2 or "could not bind" not in self.log_tail():
                    raise
        return self  # pragma: no cover - the loop returns or raises

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, clients are disconnected."""
        self._signal_and_wait(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, as a crash would; the next start recovers
        from the WAL. (The OS page cache survives, so this proves crash recovery, not fsync.)"""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start again if an earlier test stopped or killed the shared cluster."""
        if not self.running:
            self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its temp dir (data and log)."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- databases ---------------------------------------------------------------------------

    def create_database(self, name: str, template: str = "template1") -> str:
        """Create an empty database copied from ``template`` and return its DSN."""
        # PostgreSQL 15's default strategy (WAL_LOG): ~25 ms here for an empty template, where
        # FILE_COPY takes ~60 ms (it forces a checkpoint, with fsync on).
        self._admin(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        # FORCE: a pool a test leaked must not keep the database (and the disk) alive.
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _admin(self, statement: sql.Composed) -> None:
        # CREATE/DROP DATABASE cannot run in a transaction: autocommit.
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    # -- internals ---------------------------------------------------------------------------

    def _initdb(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="certwidget-postgres-"))
        self.root = root
        if not self._atexit_registered:
            # Also cleans up when the session dies on an error before the fixture's finalizer.
            atexit.register(self.cleanup)
            self._atexit_registered = True
        if self._run_as is not None:
            os.chown(root, self._run_as.pw_uid, self._run_as.pw_gid)
        pwfile = root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._run_as is not None:
            os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
        command = [
            str(self.bin_dir / "initdb"),
            f"--pgdata={root / 'data'}",
            f"--username={SUPERUSER}",
            f"--pwfile={pwfile}",
            # A generated password, so a test that dials a stale port reaches no other cluster.
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            # C collation: fast, and the same ordering on every machine.
            "--locale=C",
            # Skips fsync of initdb's own files only (a crash mid-setup is of no interest);
            # the running server keeps fsync on.
            "--no-sync",
            "--no-instructions",
        ]
        run_as = self._run_as
        result = subprocess.run(
            command,
            capture_output=True,
            check=False,
            cwd=root,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
        pwfile.unlink()
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            hint = ""
            if self._run_as is not None:
                hint = f" The postgres user must be able to enter {root.parent} (try TMPDIR=/tmp)."
            raise PostgresUnavailable(
                f"initdb failed (exit {result.returncode}): {output[-2000:]}{hint} {_HOW_TO_FIX}"
            )

    def _launch(self) -> None:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in cleanup()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            # No Unix socket: /var/run/postgresql may not exist or belong to a system cluster.
            "unix_socket_directories": "",
            # Durability is under test: these are the defaults, stated so no one "speeds up"
            # the test cluster by turning them off.
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            # Several clusters may run at once (pytest-xdist): keep each one small.
            "shared_buffers": self.shared_buffers,
            "max_connections": "100",
            # JIT compilation only adds latency to the small queries tests run.
            "jit": "off",
            "timezone": "UTC",
            "log_timezone": "UTC",
        }
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            # Own process group: kill() takes the backends down with the postmaster.
            start_new_session=True,
            preexec_fn=self._child_setup(),
        )
        self._wait_until_ready()

    def _child_setup(self) -> Callable[[], None]:
        """Runs in the forked child before exec: drop to the postgres user, then ask the kernel
        to stop the postmaster if pytest dies (even by SIGKILL), so no cluster is orphaned."""
        run_as = self._run_as
        # A parent-death signal fires when the *thread* that forked exits: only ask for it from
        # the main thread, or a restart from a worker thread would die with that thread.
        death_signal = (
            signal.SIGQUIT if threading.current_thread() is threading.main_thread() else 0
        )
        # Resolved here, in the parent: the child must not import or load anything.
        prctl = ctypes.CDLL(None, use_errno=True).prctl

        def setup() -> None:
            if run_as is not None:
                # Not Popen(user=...): it changes uid after preexec_fn, and a credential
                # change clears the parent-death signal.
                os.setgroups([])
                os.setgid(run_as.pw_gid)
                os.setuid(run_as.pw_uid)
            if death_signal:
                prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)

        return setup

    def _wait_until_ready(self) -> None:
        """Wait for postmaster.pid to say "ready" for *this* postmaster (a stale file left by a
        killed one says "ready" too, with the old pid)."""
        assert self._process is not None
        pid_file = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise PostgresUnavailable(
                    f"PostgreSQL exited at startup; its log ({self.log_path}) ends with:\n"
                    f"{self.log_tail()}\n{_HOW_TO_FIX}"
                )
            try:
                lines = pid_file.read_text().splitlines()
            except (FileNotFoundError, PermissionError):
                lines = []
            ours = len(lines) >= 8 and lines[0].strip() == str(self._process.pid)
            if ours and lines[7].strip() == "ready":
                return
            time.sleep(0.02)
        self.kill()
        raise PostgresUnavailable(
            f"PostgreSQL did not accept connections within {START_TIMEOUT:.0f} s; its log "
            f"({self.log_path}) ends with:\n{self.log_tail()}"
        )

    def _signal_and_wait(self, signum: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# -- pytest fixtures -------------------------------------------------------------------------

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL cluster. A test may stop, kill or restart it: the next
    ``postgres_dsn`` starts it again."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A DSN of a new, empty database for this test alone, dropped after it."""
    postgres_server.ensure_running()
    # Named after the test, so a leftover is easy to trace; 63 bytes is PostgreSQL's limit.
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    name = f"t{next(_database_numbers)}_{slug}"[:63]
    dsn = postgres_server.create_database(name)
    yield dsn
    postgres_server.ensure_running()
    postgres_server.drop_database(name)
