"""Source kits: what the contract suite needs to drive one source type against its server.

A kit reaches its real local server through the existing fixtures and helpers (never its
own start-up code), makes a fresh place per test (folder, bucket, table, ...), builds a
valid block, puts items at the source, and says what it cannot do (no unsafe names, no
secret, connections not observable). Register a kit with `@register`; every contract test
in `test_source_contract.py` then runs against it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text

from blocks.core.source import SourceBlock

KITS: dict[str, type[SourceKit]] = {}


def register(cls: type[SourceKit]) -> type[SourceKit]:
    """Add a kit to the registry every contract test is parametrised over."""
    KITS[cls.name] = cls
    return cls


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def wait_for(count: Callable[[], int | None], want: int = 0, seconds: float = 5.0) -> int | None:
    """Poll a server-side count until it reaches `want` (servers end sessions
    asynchronously after the client closed them); return the last value."""
    deadline = time.monotonic() + seconds
    value = count()
    while value is not None and value != want and time.monotonic() < deadline:
        time.sleep(0.05)
        value = count()
    return value


def client_connections(port: int) -> int:
    """TCP connections this test process holds open to 127.0.0.1:`port` (client side),
    read from /proc: for servers that keep no session list of their own (HTTP APIs),
    what a block did not release is still visible at the client end."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            # state 01: ESTABLISHED; a socket of this process whose far end is the server
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


class SourceKit:
    """One source type's adapter to the contract suite (see the module docstring)."""

    name: ClassVar[str]
    # "files": each item is a landed file (name -> bytes); "rows": items are records of a
    # window file the block names itself (id -> value of `columns[1]`)
    kind: ClassVar[Literal["files", "rows"]] = "files"
    columns: ClassVar[tuple[str, str]] = ("id", "note")
    # why the source cannot hold an item with an unsafe name (None: it can)
    no_unsafe_names: ClassVar[str | None] = None

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.source_id = f"{self.name}-{_uid()}"

    # -- life cycle
    def start(self) -> None:
        """Reach the server (fixtures) and make a fresh place for this test."""

    def stop(self) -> None:
        """Undo `start` where a fixture does not."""

    # -- blocks
    def block(self, **overrides: Any) -> SourceBlock:
        """A valid block on this test's place (retries off: the suite wants fast failures)."""
        raise NotImplementedError

    def bad_config(self) -> tuple[SourceBlock, str]:
        """A block with one bad configuration value and the field `preflight` must name
        ('ClassName.field')."""
        raise NotImplementedError

    def wrong_secret(self) -> tuple[SourceBlock, str] | None:
        """A block whose secret the server refuses, and the secret string; None: the
        source has no secret."""
        return None

    def good_secret(self) -> str | None:
        """The secret the valid block holds (None: it holds none)."""
        return None

    def unreachable(self) -> SourceBlock:
        """A block `test_connection` must reject (default: the wrong-secret block)."""
        found = self.wrong_secret()
        assert found is not None, f"{self.name}: override unreachable()"
        return found[0]

    # -- items
    def put(self, n: int) -> dict[Any, Any]:
        """Put n new items at the source: files {name: bytes}, rows {id: value}."""
        raise NotImplementedError

    def put_unsafe(self) -> list[str]:
        """Put items whose names are unsafe; returns the names as the source lists them."""
        raise NotImplementedError

    # -- observation
    def server_port(self) -> int | None:
        """Port of the local server the block talks to (for `client_connections`)."""
        return None

    def open_connections(self) -> int | None:
        """Connections open at the server for this test (None: not observable). Default:
        the connections this process holds to `server_port()`."""
        port = self.server_port()
        return None if port is None else client_connections(port)

    def requests_seen(self) -> int | None:
        """Requests (or connections) the server has seen so far (None: not observable)."""
        return None


def _file_items(n: int, salt: str) -> dict[str, bytes]:
    # distinct contents: same bytes under two names would be dropped as a duplicate
    return {f"f{i:02d}.csv": f"{i},{salt}\n".encode() for i in range(n)}


# Names a POSIX folder can hold that must still never be landed as they are: Windows-style
# parent references and a control character (`/` cannot be in a file name; names starting
# with '.' are hidden files, not listed at all).
_FS_UNSAFE = ["a\\..\\..\\evil.csv", "bad\nname.csv"]
# Names an object store can hold.
_KEY_UNSAFE = ["../evil.csv", "a//b.csv"]


# ----------------------------------------------------------------------------- local folder
@register
class LocalFolderKit(SourceKit):
    name = "local"

    def start(self) -> None:
        factory = self.request.getfixturevalue("tmp_path_factory")
        self.folder = factory.mktemp("contract-local")  # outside the test's tmp_path

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import LocalFolderSource

        fields = dict(
            source_id=self.source_id,
            directory=str(self.folder),
            retries=0,
            retry_delay_seconds=0,
        )
        return LocalFolderSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = _file_items(n, _uid())
        for name, data in items.items():
            (self.folder / name).write_bytes(data)
        return items

    def put_unsafe(self) -> list[str]:
        for name in _FS_UNSAFE:
            (self.folder / name).write_bytes(b"evil\n")
        return list(_FS_UNSAFE)

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(pattern="x_{date:%Y"), "LocalFolderSource.pattern"

    def unreachable(self) -> SourceBlock:
        return self.block(directory=str(self.folder / "no-such-folder"))


# ----------------------------------------------------------------------------- SFTP
@register
class SftpKit(SourceKit):
    name = "sftp"

    def start(self) -> None:
        self.server = self.request.getfixturevalue("contract_sshd")
        self.folder = self.server.folder(f"c-{_uid()}")

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import SftpSource
        from tests import sftp_server

        fields = dict(
            source_id=self.source_id,
            **sftp_server.login_fields(self.server, self.folder),
            retries=0,
            retry_delay_seconds=0,
        )
        return SftpSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = _file_items(n, _uid())
        for name, data in items.items():
            self.server.put(self.folder, name, data)
        return items

    def put_unsafe(self) -> list[str]:
        for name in _FS_UNSAFE:
            self.server.put(self.folder, name, b"evil\n")
        return list(_FS_UNSAFE)

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(host_key=None), "SftpSource.host_key"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"wrong-sftp-pw-{_uid()}"
        return self.block(password=secret), secret

    def open_connections(self) -> int:
        return len(self.server.session_pids())

    def requests_seen(self) -> int:
        return self.server.log().count("Connection from")

    def good_secret(self) -> str:
        from tests import sftp_server

        return sftp_server.PASSWORD


# ----------------------------------------------------------------------------- S3 (moto)
@register
class S3Kit(SourceKit):
    name = "s3"
    no_unsafe_names = None

    def start(self) -> None:
        import boto3

        self.endpoint = self.request.getfixturevalue("moto_endpoint")
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing-secret",
        )
        self.bucket = f"c-{_uid()}"
        self.client.create_bucket(Bucket=self.bucket)

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import S3Source
        from tests.objstore_servers import aws_credentials

        fields = dict(
            source_id=self.source_id,
            aws_credentials=aws_credentials(self.endpoint),
            bucket=self.bucket,
            retries=0,
            retry_delay_seconds=0,
        )
        return S3Source(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = _file_items(n, _uid())
        for name, data in items.items():
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data)
        return items

    def put_unsafe(self) -> list[str]:
        for name in _KEY_UNSAFE:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=b"evil\n")
        return list(_KEY_UNSAFE)

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(endpoint_url="ftp://127.0.0.1:1"), "S3Source.endpoint_url"

    def server_port(self) -> int | None:
        return urlsplit(self.endpoint).port

    def good_secret(self) -> str:
        return "testing-secret"  # tests.objstore_servers.aws_credentials' default

    def _moto_auth(self, count: str) -> None:
        """moto's IAM authentication is a process-wide switch ('0': from now on every
        request is checked; 'inf': never)."""
        import urllib.request

        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).read()

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        from tests.objstore_servers import aws_credentials

        secret = f"wrong-s3-secret-{_uid()}"
        self._moto_auth("0")
        self.request.addfinalizer(lambda: self._moto_auth("inf"))
        creds = aws_credentials(self.endpoint, "AKIAUNKNOWNKEY000000", secret)
        return self.block(aws_credentials=creds), secret


# ----------------------------------------------------------------------------- GCS (emulator)
@register
class GcsKit(SourceKit):
    name = "gcs"

    def start(self) -> None:
        from tests.objstore_servers import gcp_credentials

        self.request.getfixturevalue("gcp_env")
        self.client = gcp_credentials().get_cloud_storage_client()
        self.bucket = f"c-{_uid()}"
        self.client.create_bucket(self.bucket)

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import GcsSource
        from tests.objstore_servers import gcp_credentials

        fields = dict(
            source_id=self.source_id,
            gcp_credentials=gcp_credentials(),
            bucket=self.bucket,
            retries=0,
            retry_delay_seconds=0,
        )
        return GcsSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = _file_items(n, _uid())
        for name, data in items.items():
            self.client.bucket(self.bucket).blob(name).upload_from_string(data)
        return items

    def put_unsafe(self) -> list[str]:
        # the emulator stores objects as files and refuses '..' keys; these it stores
        names = ["a//b.csv", "/abs.csv"]
        for name in names:
            self.client.bucket(self.bucket).blob(name).upload_from_string(b"evil\n")
        return names

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(prefix="in/{date:%Y"), "GcsSource.prefix"

    def server_port(self) -> int | None:
        return urlsplit(self.request.getfixturevalue("gcs_emulator")).port

    def good_secret(self) -> str:
        from tests.objstore_servers import ACCESS_TOKEN

        return ACCESS_TOKEN

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        """The emulator accepts any token: a local endpoint that refuses every request as
        GCS refuses a credential without access stands in (tests/objstore_servers.py);
        the secret is the access token the client sends."""
        from tests.objstore_servers import ACCESS_TOKEN

        endpoint = self.request.getfixturevalue("gcs_rejecting_endpoint")
        self.request.getfixturevalue("monkeypatch").setenv("STORAGE_EMULATOR_HOST", endpoint)
        return self.block(), ACCESS_TOKEN


# ----------------------------------------------------------------------------- SharePoint
@register
class SharePointKit(SourceKit):
    name = "sharepoint"

    def start(self) -> None:
        self.graph = self.request.getfixturevalue("contract_graph")
        self.graph.state.files = {}
        self.graph.state.hits.clear()

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import SharePointSource
        from tests.graph_server import CLIENT_ID, CLIENT_SECRET, TENANT

        fields = dict(
            source_id=self.source_id,
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            authority_host=self.graph.url,
            graph_base_url=self.graph.url + "/v1.0",
            site="contoso.sharepoint.com:/sites/finance",
            drive="Documents",
            folder_path="/In/Daily/",
            file_pattern="*.csv",
            verify_tls=str(self.graph.cert),
            backoff_seconds=0.01,
            retries=0,
            retry_delay_seconds=0,
        )
        return SharePointSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = _file_items(n, _uid())
        self.graph.state.files.update(items)
        return items

    def put_unsafe(self) -> list[str]:
        for name in _KEY_UNSAFE:
            self.graph.state.files[name] = b"evil\n"
        return list(_KEY_UNSAFE)

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(file_pattern="A_{date:%Y"), "SharePointSource.file_pattern"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"wrong-graph-secret-{_uid()}"
        return self.block(client_secret=secret), secret

    def requests_seen(self) -> int:
        return sum(self.graph.state.hits.values())

    def server_port(self) -> int | None:
        return urlsplit(self.graph.url).port

    def good_secret(self) -> str:
        from tests.graph_server import CLIENT_SECRET

        return CLIENT_SECRET


# ----------------------------------------------------------------------------- REST
@register
class RestKit(SourceKit):
    name = "rest"
    kind = "rows"
    columns = ("id", "name")
    no_unsafe_names = "the block names its one file per run itself (output_name)"

    def start(self) -> None:
        from tests.http_server import ApiServer, ApiState

        self.api = ApiServer(ApiState(n=0)).__enter__()

    def stop(self) -> None:
        self.api.__exit__(None, None, None)

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import RestApiSource
        from tests.http_server import SECRET

        fields = dict(
            source_id=self.source_id,
            base_url=self.api.url,
            path="/auth/bearer",
            auth="bearer",
            token=SECRET,
            records_path="data",
            backoff_seconds=0.01,
            retries=0,
            retry_delay_seconds=0,
        )
        return RestApiSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[int, str]:
        from tests.http_server import record

        first = self.api.state.n
        self.api.state.n += n
        return {i: record(i)["name"] for i in range(first, first + n)}

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(output_name="x_{date:%Y"), "RestApiSource.output_name"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"wrong-token-{_uid()}"
        return self.block(token=secret), secret

    def requests_seen(self) -> int:
        return sum(self.api.state.hits.values())

    def server_port(self) -> int | None:
        return urlsplit(self.api.url).port

    def good_secret(self) -> str:
        from tests.http_server import SECRET

        return SECRET


# ----------------------------------------------------------------------------- SQL
class _SqlKit(SourceKit):
    kind = "rows"
    no_unsafe_names = "the block names its files itself (output_name, checked in preflight)"
    fixture: ClassVar[str]

    def start(self) -> None:
        self.db = self.request.getfixturevalue(self.fixture)
        self.table = f"c_{_uid()}"
        self.db.run(f"CREATE TABLE {self.table} (id INT PRIMARY KEY, note VARCHAR(60))")
        self.next_id = 1

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import SqlSource

        fields = dict(
            source_id=self.source_id,
            database=self.db.connector(),
            table=self.table,
            primary_key=["id"],
            incremental_mode="none",
            retries=0,
            retry_delay_seconds=0,
        )
        return SqlSource(**{**fields, **overrides})

    def put(self, n: int) -> dict[int, str]:
        rows = {i: f"n{i}-{_uid()}" for i in range(self.next_id, self.next_id + n)}
        self.next_id += n
        for i, note in rows.items():
            self.db.run(f"INSERT INTO {self.table} (id, note) VALUES (:i, :n)", i=i, n=note)
        self.db.engine.dispose()  # the test's own pool is no connection of the source's
        return rows

    def bad_config(self) -> tuple[SourceBlock, str]:
        # timestamp mode without its column
        return self.block(incremental_mode="timestamp"), "SqlSource.incremental_column"

    def _count_sql(self) -> tuple[str, str]:
        raise NotImplementedError

    def open_connections(self) -> int:
        url, sql = self._count_sql()
        admin = create_engine(url)
        try:
            with admin.connect() as conn:
                return int(conn.execute(text(sql), {"db": self.db.name}).scalar_one())
        finally:
            admin.dispose()


@register
class PostgresKit(_SqlKit):
    name = "sql-postgres"
    fixture = "pg_source"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        """The test server trusts 127.0.0.1 (any password of a known role is taken): an
        unknown role with a password is the credential it refuses."""
        from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

        from tests.conftest import PG_HOST, PG_PORT

        secret = f"wrong-pg-pw-{_uid()}"
        connector = SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.POSTGRESQL_PSYCOPG2,
                host=PG_HOST,
                port=PG_PORT,
                username=f"nobody_{_uid()}",
                password=secret,
                database=self.db.name,
            )
        )
        return self.block(database=connector), secret

    def _count_sql(self) -> tuple[str, str]:
        from tests.conftest import PG_HOST, PG_PORT, PG_USER

        return (
            f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :db",
        )


@register
class MariaDbKit(_SqlKit):
    name = "sql-mariadb"
    fixture = "my_source"

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"wrong-my-pw-{_uid()}"  # root has no password: any password is wrong
        return self.block(database=self.db.connector(password=secret)), secret

    def _count_sql(self) -> tuple[str, str]:
        from tests.conftest import MY_HOST, MY_PORT, MY_USER

        return (
            f"mysql+pymysql://{MY_USER}@{MY_HOST}:{MY_PORT}/",
            "SELECT count(*) FROM information_schema.processlist WHERE db = :db",
        )


# ----------------------------------------------------------------------------- warehouses
@register
class SnowflakeKit(SourceKit):
    name = "snowflake"
    kind = "rows"
    columns = ("ID", "NOTE")
    no_unsafe_names = "the block names its files itself (file_name, checked in preflight)"

    def start(self) -> None:
        self.server = self.request.getfixturevalue("fakesnow_server")
        self.table = f"C_{_uid().upper()}"
        self.server.run(f"CREATE TABLE {self.table} (ID INT, NOTE VARCHAR)")
        self.next_id = 1

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import SnowflakeQuerySource

        fields = dict(
            source_id=self.source_id,
            snowflake=self.server.connector(),
            query=f"SELECT ID, NOTE FROM {self.table} ORDER BY ID",
            retries=0,
            retry_delay_seconds=0,
            **self.server.block_kwargs(),
        )
        return SnowflakeQuerySource(**{**fields, **overrides})

    def put(self, n: int) -> dict[int, str]:
        rows = {i: f"n{i}-{_uid()}" for i in range(self.next_id, self.next_id + n)}
        self.next_id += n
        self.server.run(
            f"INSERT INTO {self.table} VALUES (%(id)s, %(note)s)",
            rows=[{"id": i, "note": note} for i, note in rows.items()],
        )
        return rows

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(incremental_column="bad col"), "SnowflakeQuerySource.incremental_column"

    def server_port(self) -> int | None:
        return self.server.port

    def good_secret(self) -> str:
        return self.server.password

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        secret = f"Wr0ng-sf-{_uid()}"
        return self.block(snowflake=self.server.connector(secret)), secret


@register
class BigQueryKit(SourceKit):
    name = "bigquery"
    kind = "rows"
    no_unsafe_names = "the block names its files itself (file_name, checked in preflight)"

    def start(self) -> None:
        from google.auth.credentials import AnonymousCredentials
        from prefect_gcp import GcpCredentials

        self.emu = self.request.getfixturevalue("bq_emulator")
        # as the `anonymous_google` fixture (the emulator checks no credentials), but a
        # block with a real service-account key still goes to its (local) token endpoint
        real = GcpCredentials.get_credentials_from_service_account

        def credentials(creds: GcpCredentials) -> Any:
            return real(creds) if creds.service_account_info else AnonymousCredentials()

        self.request.getfixturevalue("monkeypatch").setattr(
            GcpCredentials, "get_credentials_from_service_account", credentials
        )
        self.table = f"{self.emu.dataset()}.items"
        self.emu.run(f"CREATE TABLE {self.table} (id INT64, note STRING)")
        self.next_id = 1

    def block(self, **overrides: Any) -> SourceBlock:
        from prefect_gcp import GcpCredentials
        from prefect_gcp.bigquery import BigQueryWarehouse

        from blocks import BigQueryQuerySource

        fields = dict(
            source_id=self.source_id,
            bigquery=BigQueryWarehouse(gcp_credentials=GcpCredentials(project=self.emu.project)),
            api_endpoint=self.emu.endpoint,
            query=f"SELECT id, note FROM {self.table} ORDER BY id",
            retries=0,
            retry_delay_seconds=0,
        )
        return BigQueryQuerySource(**{**fields, **overrides})

    def put(self, n: int) -> dict[int, str]:
        rows = {i: f"n{i}-{_uid()}" for i in range(self.next_id, self.next_id + n)}
        self.next_id += n
        values = ", ".join(f"({i}, '{note}')" for i, note in rows.items())
        self.emu.run(f"INSERT INTO {self.table} (id, note) VALUES {values}")
        return rows

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(incremental_column="bad col"), "BigQueryQuerySource.incremental_column"

    def server_port(self) -> int | None:
        return urlsplit(self.emu.endpoint).port

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        """A real service-account key whose (local) token endpoint refuses it, as Google
        does for a revoked key; the secret is a line of the private key."""
        from prefect_gcp import GcpCredentials
        from prefect_gcp.bigquery import BigQueryWarehouse

        from tests.warehouse_servers import service_account_info

        token_uri = self.request.getfixturevalue("refusing_token_server")
        info = service_account_info(token_uri)
        creds = GcpCredentials(service_account_info=info, project=self.emu.project)
        secret = info["private_key"].splitlines()[1]
        return self.block(bigquery=BigQueryWarehouse(gcp_credentials=creds)), secret
