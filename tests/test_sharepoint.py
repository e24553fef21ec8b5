"""SharePoint source against a Graph-like HTTPS server on 127.0.0.1 (tests/graph_server.py).

msal and httpx talk to it for real; the only test-specific settings are the overridable
authority host / Graph base URL and the test CA given as `verify_tls`.
"""

from __future__ import annotations

import io
from datetime import date

import pytest

from blocks.core.errors import ConfigError, PermanentError
from blocks.core.source import DiscoverContext
from blocks.sharepoint.block import SharePointSource
from tests.graph_server import CLIENT_ID, CLIENT_SECRET, TENANT, GraphServer

DAY = date(2026, 1, 15)


@pytest.fixture
def graph(tmp_path_factory):
    with GraphServer(tmp_path_factory.mktemp("cert")) as server:
        server.state.files = {
            "AXIS_20260115_a.csv": b"a,1\n",
            "AXIS_20260115_b.csv": b"b,2\n",
            "AXIS_20260114_old.csv": b"old\n",
            "notes.txt": b"skip me\n",
        }
        yield server


def block(graph: GraphServer, **kw) -> SharePointSource:
    kw.setdefault("client_secret", CLIENT_SECRET)
    return SharePointSource(
        source_id="sp",
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        authority_host=graph.url,
        graph_base_url=graph.url + "/v1.0",
        site="contoso.sharepoint.com:/sites/finance",
        drive=kw.pop("drive", "Documents"),
        folder_path="/In/Daily/",
        file_pattern=kw.pop("file_pattern", "AXIS_{date:%Y%m%d}_*.csv"),
        verify_tls=str(graph.cert),
        backoff_seconds=0.01,
        **kw,
    )


def test_lists_with_nextlink_paging_and_date_pattern(graph):
    source = block(graph)
    source.preflight()
    names = [c.name for c in source.discover(DiscoverContext(partition_date=DAY))]
    assert names == ["AXIS_20260115_a.csv", "AXIS_20260115_b.csv"]
    # 5 children at 2 per page: 3 pages
    assert graph.state.hits["/v1.0/drives/drive-1/root:/In/Daily:/children"] == 3
    assert graph.state.tokens_issued == 1  # msal cached the token across calls


def test_a_repeating_next_link_fails_instead_of_looping(graph):
    graph.state.loop_next_link = True
    with pytest.raises(PermanentError, match="nextLink repeats after 2 page"):
        list(block(graph).discover(DiscoverContext(partition_date=DAY)))
    assert graph.state.hits["/v1.0/drives/drive-1/root:/In/Daily:/children"] == 2


def test_default_drive_and_unknown_drive(graph):
    names = [c.name for c in block(graph, drive=None).discover(DiscoverContext(partition_date=DAY))]
    assert len(names) == 2
    with pytest.raises(ConfigError, match="SharePointSource.drive.*Documents"):
        list(block(graph, drive="Nope").discover(DiscoverContext(partition_date=DAY)))


def test_download_streams_content_and_honours_retry_after(graph, monkeypatch):
    graph.state.fail_plan["AXIS_20260115_a.csv"] = [429, 503]
    graph.state.retry_after = "3"
    slept: list[float] = []
    monkeypatch.setattr("blocks.http.transport._sleep", slept.append)
    source = block(graph)
    cand = next(iter(source.discover(DiscoverContext(partition_date=DAY))))
    out = io.BytesIO()
    source.fetch(cand, out)
    assert out.getvalue() == b"a,1\n" and slept == [3.0, 3.0]


def test_untrusted_certificate_is_refused(graph):
    source = block(graph)
    source.verify_tls = True  # system CAs only: the self-signed test cert is not trusted
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        list(source.discover(DiscoverContext(partition_date=DAY)))


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(authority_host="http://login.example"), "authority_host"),
        (dict(graph_base_url="ftp://g"), "graph_base_url"),
        (dict(client_secret=""), "client_secret"),
        (dict(verify_tls="/nonexistent/ca.pem"), "verify_tls"),
        (dict(verify_tls=__file__), "verify_tls"),  # exists, but is no CA bundle
    ],
)
def test_preflight_names_the_field(kw, field):
    base = dict(source_id="sp", tenant_id="t", client_id="c", client_secret="s", site="h:/sites/x")
    with pytest.raises(ConfigError, match=f"SharePointSource.{field}"):
        SharePointSource(**{**base, **kw}).preflight()


def test_flow_lands_new_files_once_and_downloads_only_new_ones(
    graph, save_block, sqlite_ledger, queue, tmp_path
):
    from flows.sharepoint import ingest_sharepoint

    names = dict(
        source_block=save_block(block(graph, file_pattern="*{date:%Y%m%d}*.csv")),
        ledger_block=save_block(sqlite_ledger),
        queue_block=save_block(queue),
        date=DAY,
    )
    first = ingest_sharepoint(**names)
    assert first["landed"] == 2 and first["failed"] == 0
    landed = sorted(p.name for p in (tmp_path / "landing").rglob("*.csv"))
    assert landed == ["AXIS_20260115_a.csv", "AXIS_20260115_b.csv"]
    downloads = sum(v for k, v in graph.state.hits.items() if k.startswith("/download/"))
    graph.state.files["AXIS_20260115_c.csv"] = b"c,3\n"
    second = ingest_sharepoint(**names)
    assert second["landed"] == 1  # only the new file
    after = sum(v for k, v in graph.state.hits.items() if k.startswith("/download/"))
    assert after == downloads + 1  # only c is downloaded; a and b are known by name
