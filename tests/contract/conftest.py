# ruff: noqa: F401  (fixtures imported from the server helpers are used by name)
"""Fixtures of the source contract suite: the servers (from the existing helpers) and
`kit`, parametrised over every registered source kit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import sftp_server
from tests.conftest import server_missing
from tests.contract.kits import KITS, SourceKit
from tests.graph_server import GraphServer
from tests.objstore_servers import (
    gcp_env,
    gcs_emulator,
    gcs_rejecting_endpoint,
    moto_endpoint,
)
from tests.sql_servers import my_source, pg_source
from tests.warehouse_servers import bq_emulator, fakesnow_server, refusing_token_server


@pytest.fixture(scope="session")
def contract_sshd() -> Iterator[sftp_server.SshServer]:
    """The real OpenSSH sshd of tests/sftp_server.py, once for the suite."""
    with sftp_server.running_sshd() as server:
        yield server


@pytest.fixture(scope="session")
def contract_graph(tmp_path_factory) -> Iterator[GraphServer]:
    """The Graph-like HTTPS server of tests/graph_server.py, once for the suite."""
    with GraphServer(tmp_path_factory.mktemp("graph-cert")) as server:
        yield server


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest) -> Iterator[SourceKit]:
    """One source kit with its server reached and a fresh place at the source."""
    instance = KITS[request.param](request)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
