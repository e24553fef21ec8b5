"""Throwaway source databases on the real PostgreSQL and MariaDB servers (127.0.0.1).

Each fixture creates its own database and drops it at the end. A server that is down
skips (locally) or fails (INGEST_REQUIRE_SERVERS=1): `tests.conftest.throwaway_database`.

`mariadb_server_in_tz(tz)` starts a whole extra MariaDB server whose process runs with
`TZ=tz` (its SYSTEM time zone), for behaviour that depends on the server's own clock zone;
`mariadb_database(host, port, user, prefix)` makes a throwaway database on any MariaDB.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver
from sqlalchemy import Engine, create_engine, text

from tests.conftest import (
    MY_HOST,
    MY_PORT,
    MY_USER,
    PG_HOST,
    PG_PORT,
    PG_USER,
    server_missing,
    throwaway_database,
)


@dataclass
class SourceDb:
    """One throwaway database: a SQLAlchemy engine for the test and a connector factory."""

    kind: str
    name: str
    engine: Engine
    # Another server than the session's standing one (e.g. `mariadb_server_in_tz`).
    address: tuple[str, int, str] | None = None

    def connector(self, password: str | None = None) -> SqlAlchemyConnector:
        if self.kind == "postgres":
            driver, host, port, user = SyncDriver.POSTGRESQL_PSYCOPG2, PG_HOST, PG_PORT, PG_USER
        else:
            driver, host, port, user = SyncDriver.MYSQL_PYMYSQL, MY_HOST, MY_PORT, MY_USER
        if self.address is not None:
            host, port, user = self.address
        return SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=driver,
                host=host,
                port=port,
                username=user,
                password=password,
                database=self.name,
            )
        )

    def run(self, *statements: str, **params) -> None:
        with self.engine.begin() as conn:
            for sql in statements:
                conn.execute(text(sql), params)


@pytest.fixture(scope="module")
def pg_source() -> Iterator[SourceDb]:
    with throwaway_database("postgres", "sqlsrc") as name:
        engine = create_engine(f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")
        yield SourceDb("postgres", name, engine)
        engine.dispose()


@pytest.fixture(scope="module")
def my_source() -> Iterator[SourceDb]:
    with throwaway_database("mariadb", "sqlsrc") as name:
        engine = create_engine(f"mysql+pymysql://{MY_USER}@{MY_HOST}:{MY_PORT}/{name}")
        yield SourceDb("mariadb", name, engine)
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mariadb_server_in_tz(tz: str, timeout: float = 60) -> Iterator[tuple[str, int, str]]:
    """Start a throwaway MariaDB server whose process runs with `TZ=tz` (so its SYSTEM time
    zone, `@@system_time_zone`, is `tz`); yield `(host, port, user)`: 127.0.0.1, a free
    port, `root` without a password (with the PROCESS privilege). Its data directory is a
    temp dir; the server is killed and the dir removed at the end. `server_missing` (skip
    locally, fail in CI) when the MariaDB binaries are absent or the server does not start.
    Takes ~5 s (mariadb-install-db) plus ~1 s to answer."""
    install, server = shutil.which("mariadb-install-db"), shutil.which("mariadbd")
    if server is None and Path("/usr/sbin/mariadbd").exists():
        server = "/usr/sbin/mariadbd"
    if install is None or server is None:
        server_missing(f"MariaDB server in TZ={tz}", "mariadb-install-db/mariadbd not installed")
    root = Path(tempfile.mkdtemp(prefix="mariadb-tz-"))
    data, sock, log = root / "data", root / "mysqld.sock", root / "mariadbd.log"
    # mariadbd refuses to run as root unless told to; as another user it runs as that user.
    as_user = ["--user=root"] if os.geteuid() == 0 else []
    env = {**os.environ, "TZ": tz}
    proc: subprocess.Popen | None = None
    try:
        done = subprocess.run(
            [
                install,
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                f"--datadir={data}",
                *as_user,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            server_missing(f"MariaDB server in TZ={tz}", f"mariadb-install-db failed: {tail}")
        port = _free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    server,
                    "--no-defaults",
                    f"--datadir={data}",
                    f"--port={port}",
                    "--bind-address=127.0.0.1",
                    f"--socket={sock}",
                    "--skip-name-resolve",
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-flush-log-at-trx-commit=0",
                    *as_user,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=2).close()
                break
            except pymysql.err.OperationalError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    server_missing(f"MariaDB server in TZ={tz}", f"{exc}; log: {tail}")
                time.sleep(0.1)
        yield "127.0.0.1", port, "root"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mariadb_database(host: str, port: int, user: str, prefix: str) -> Iterator[SourceDb]:
    """A throwaway database on the MariaDB server at (host, port, user), as a `SourceDb`
    whose connector points at that server; dropped at the end. The test engine's sessions
    keep the server's default time zone (SYSTEM unless the server sets another)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = f"mysql+pymysql://{user}@{host}:{port}/"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}`"))
    engine = create_engine(url + name)
    try:
        yield SourceDb("mariadb", name, engine, (host, port, user))
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()
