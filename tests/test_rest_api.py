"""REST API source against a real HTTP server on 127.0.0.1 (tests/http_server.py)."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import date

import pytest

from blocks.core.errors import ConfigError, IngestError, PermanentError
from blocks.core.source import Candidate, DiscoverContext, SkipItem
from blocks.http.pagination import PaginationError
from blocks.http.rest_api import RestApiSource
from blocks.http.transport import HttpGiveUp, RateLimiter, retry_after_seconds
from tests.http_server import SECRET, ApiServer

DAY = date(2026, 1, 15)


@pytest.fixture
def api():
    with ApiServer() as server:
        yield server


def src(api: ApiServer, **kw) -> RestApiSource:
    kw.setdefault("records_path", "data")
    kw.setdefault("base_url", api.url)
    return RestApiSource(source_id="rest", backoff_seconds=0.01, **kw)


def pull(source: RestApiSource, watermark=None) -> tuple[list[dict], object]:
    source.preflight()
    (cand,) = list(source.discover(DiscoverContext(partition_date=DAY)))
    if watermark is not None:
        cand.ref["watermark"] = watermark
    out = io.BytesIO()
    state = source.fetch(cand, out)
    text = out.getvalue().decode()
    if source.output_format == "csv":
        return list(csv.DictReader(io.StringIO(text))), state
    return [json.loads(line) for line in text.splitlines()], state


ALL_IDS = list(range(25))


@pytest.mark.parametrize(
    "kw",
    [
        dict(path="/items"),
        dict(path="/offset", pagination="offset", page_size=10),
        dict(path="/page", pagination="page", page_size=10, limit_param="per_page"),
        dict(
            path="/cursor",
            pagination="cursor",
            records_path="items",
            cursor_path="meta.next_cursor",
        ),
        dict(path="/link", pagination="link_header", records_path=None),
        dict(
            path="/nexturl",
            pagination="next_url",
            records_path="value",
            next_url_path="@odata.nextLink",
        ),
    ],
    ids=lambda kw: kw.get("pagination", "none"),
)
def test_every_pagination_style_gets_every_record_once(api, kw):
    records, _ = pull(src(api, **kw))
    assert [r["id"] for r in records] == ALL_IDS


def test_max_pages_with_pages_left_fails_instead_of_landing_a_part(api):
    # was: a warning and 20 of 25 records landed in a Completed run
    with pytest.raises(PaginationError, match="more pages remain after max_pages=2") as err:
        pull(src(api, path="/offset", pagination="offset", page_size=10, max_pages=2))
    assert err.value.retryable is False  # the same pages again would end the same way


@pytest.mark.parametrize(
    "kw",
    [
        dict(path="/auth/bearer", auth="bearer", token=SECRET),
        dict(path="/auth/header", auth="api_key_header", token=SECRET, api_key_name="X-Api-Key"),
        dict(path="/auth/query", auth="api_key_query", token=SECRET, api_key_name="api_key"),
        dict(path="/auth/basic", auth="basic", username="alice", password=SECRET),
    ],
    ids=lambda kw: kw["auth"],
)
def test_every_auth_style_passes_and_a_wrong_secret_fails(api, kw):
    records, _ = pull(src(api, **kw))
    assert len(records) == 25
    bad = {k: ("wrong" if v == SECRET else v) for k, v in kw.items()}
    with pytest.raises(HttpGiveUp, match="HTTP 401") as err:
        pull(src(api, **bad))
    assert SECRET not in str(err.value) and "wrong" not in str(err.value)


def test_oauth2_client_credentials_caches_and_refreshes(api):
    kw = dict(
        path="/auth/oauth",
        pagination="none",
        auth="oauth2",
        oauth_token_url=api.url + "/oauth/token",
        oauth_client_id="cid",
        oauth_client_secret=SECRET,
    )
    source = src(api, **kw)
    with source.make_client() as client:
        auth = source.make_auth(client)
        assert auth.token() == auth.token() == "tok-1"  # cached
        auth._margin = api.state.token_lifetime + 1  # now every token counts as expiring
        assert auth.token() == "tok-2"
    assert api.state.tokens_issued == 2
    records, _ = pull(src(api, **kw))
    assert len(records) == 25
    with pytest.raises(IngestError, match="invalid_client") as err:
        pull(src(api, **{**kw, "oauth_client_secret": "nope"}))
    assert "nope" not in str(err.value)


def test_oauth2_revoked_token_is_replaced_once(api):
    kw = dict(
        path="/auth/oauth",
        auth="oauth2",
        oauth_token_url=api.url + "/oauth/token",
        oauth_client_id="cid",
        oauth_client_secret=SECRET,
    )
    source = src(api, **kw)
    with source.make_client() as client:
        auth = source.make_auth(client)
        assert auth.token() == "tok-1"
        api.state.revoked.add("tok-1")
        pages = source._pull_records(client, io.BytesIO(), None, auth)
    assert pages[0] == 25 and auth.token() == "tok-2" and api.state.tokens_issued == 2


def test_post_with_json_body(api):
    records, _ = pull(src(api, path="/search", method="POST", body={"below": 3}))
    assert [r["id"] for r in records] == [0, 1, 2]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(api, status, monkeypatch):
    api.state.fail_plan["/items"] = [status, status]
    api.state.retry_after = "7"
    slept: list[float] = []
    monkeypatch.setattr("blocks.http.transport._sleep", slept.append)
    records, _ = pull(src(api, path="/items"))
    assert len(records) == 25 and slept == [7.0, 7.0]
    assert api.state.hits["/items"] == 3


def test_flaky_5xx_is_retried_then_succeeds(api):
    api.state.fail_plan["/offset"] = [500, 502]
    records, _ = pull(src(api, path="/offset", pagination="offset", page_size=10))
    assert [r["id"] for r in records] == ALL_IDS


def test_gives_up_after_tries_with_clear_error(api):
    api.state.fail_plan["/items"] = [500] * 10
    with pytest.raises(HttpGiveUp, match=r"gave up after 3 tries, last: HTTP 500"):
        pull(src(api, path="/items", http_tries=3))
    assert api.state.hits["/items"] == 3


def test_retry_after_longer_than_allowed_gives_up(api):
    api.state.fail_plan["/items"] = [429]
    api.state.retry_after = "3600"
    with pytest.raises(HttpGiveUp, match="max_retry_after_seconds"):
        pull(src(api, path="/items", max_retry_after_seconds=60))


def test_connection_errors_are_retried_then_reported():
    with ApiServer() as gone:
        url = gone.url
    source = RestApiSource(source_id="rest", base_url=url, http_tries=2, backoff_seconds=0.01)
    with pytest.raises(HttpGiveUp, match="gave up after 2 tries, last: ConnectError"):
        pull(source)


def test_query_api_key_is_not_in_error_text(api):
    api.state.fail_plan["/auth/query"] = [500] * 5
    with pytest.raises(HttpGiveUp) as err:
        pull(
            src(
                api,
                path="/auth/query",
                auth="api_key_query",
                token=SECRET,
                api_key_name="api_key",
                http_tries=2,
            )
        )
    assert SECRET not in str(err.value)


@pytest.mark.parametrize(
    "path,fmt,extra",
    [("/csv", "csv", {}), ("/xml", "xml", {"xml_record_tag": "item"}), ("/jsonl", "jsonl", {})],
)
def test_csv_xml_jsonl_bodies(api, path, fmt, extra):
    records, _ = pull(src(api, path=path, response_format=fmt, records_path=None, **extra))
    assert [int(r["id"]) for r in records] == ALL_IDS
    assert records[3]["name"] == "item-3"


def test_only_incremental_record_pulls_skip_content_dedupe(api):
    # a window past the watermark is its own delivery; a snapshot equal to one landed
    # before is not landed again (as a SQL 'none'-mode snapshot)
    cand = Candidate(name="x.jsonl")
    incremental = dict(incremental_param="updated_since", watermark_field="updated_at")
    assert src(api, path="/items", **incremental).content_dedupe(cand) is False
    assert src(api, path="/items").content_dedupe(cand) is True
    assert src(api, path="/raw", mode="raw").content_dedupe(cand) is True


def test_csv_output_refuses_a_field_the_first_record_lacked(api):
    # CSV columns come from the first record: a later field would be dropped silently
    with pytest.raises(PermanentError, match=r"record 3 has field\(s\) 'late_field'"):
        pull(src(api, path="/ragged", output_format="csv"))
    records, _ = pull(src(api, path="/ragged", output_format="jsonl"))
    assert records[2] == {"id": 2, "name": "n2", "late_field": "only here"}


def test_csv_output(api):
    records, _ = pull(src(api, path="/items", output_format="csv"))
    assert [r["id"] for r in records] == [str(i) for i in ALL_IDS]


def test_raw_mode_stores_payload_as_is(api):
    source = src(api, path="/raw", mode="raw")
    (cand,) = source.discover(DiscoverContext(partition_date=DAY))
    out = io.BytesIO()
    source.fetch(cand, out)
    assert out.getvalue() == b"raw payload \x00\x01 bytes" and cand.name == "records_20260115.bin"


def test_incremental_param_and_watermark(api):
    source = src(
        api, path="/items", incremental_param="updated_since", watermark_field="updated_at"
    )
    records, state = pull(source)
    newest = max(r["updated_at"] for r in records)
    assert state == {"watermark": newest}
    records2, state2 = pull(source, watermark="2026-01-20T00:00:00")
    assert records2 and all(r["updated_at"] > "2026-01-20T00:00:00" for r in records2)
    with pytest.raises(SkipItem) as skip:
        pull(source, watermark=newest)
    assert skip.value.state == {"watermark": newest}


def test_rate_limiter_spaces_requests():
    slept: list[float] = []
    limiter = RateLimiter(4.0, clock=lambda: 10.0, sleep=slept.append)  # time stands still
    for _ in range(3):
        limiter.wait()
    assert slept == [0.25, 0.5]
    unlimited = RateLimiter(None, clock=lambda: 10.0, sleep=slept.append)
    unlimited.wait()
    unlimited.wait()
    assert slept == [0.25, 0.5]


def test_rate_limit_applies_to_every_page(api, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("blocks.http.transport._sleep", slept.append)
    pull(src(api, path="/offset", pagination="offset", page_size=10, rate_limit_per_second=0.5))
    # 4 requests (10, 10, 5, then the empty page that ends offset paging) at 0.5
    # requests/s, sleep stubbed (no time passes): slots at +2 s, +4 s and +6 s
    assert len(slept) == 3 and 0 < slept[0] <= 2.0 and 2.0 < slept[1] <= 4.0 < slept[2] <= 6.0


def test_retry_after_parsing():
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("garbage") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(base_url="ftp://x"), "base_url"),
        (dict(auth="bearer"), "token"),
        (dict(auth="basic", username="u"), "password"),
        (dict(auth="oauth2", oauth_token_url="http://t"), "oauth_client_id"),
        (dict(body={"a": 1}), "body"),
        (dict(incremental_param="since"), "watermark_field"),
        (dict(mode="raw", pagination="offset"), "pagination"),
        (dict(output_name="x_{date:%Y"), "output_name"),
    ],
)
def test_preflight_names_the_field(kw, field):
    kw.setdefault("base_url", "http://127.0.0.1:1")
    with pytest.raises(ConfigError, match=f"RestApiSource.{field}"):
        RestApiSource(source_id="rest", **kw).preflight()


def test_query_api_key_never_reaches_the_logs(api, caplog):
    caplog.set_level(logging.DEBUG)
    records, _ = pull(
        src(api, path="/auth/query", auth="api_key_query", token=SECRET, api_key_name="api_key")
    )
    assert len(records) == 25
    assert "HTTP Request: GET" in caplog.text  # httpx did log the request...
    assert SECRET not in caplog.text  # ...without the query string


def test_secret_fields_are_masked():
    s = RestApiSource(source_id="r", base_url="http://x", auth="bearer", token=SECRET)
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


# --------------------------------------------------------------------------- through the flow
def test_flow_lands_once_and_dedupes_unchanged_payload(
    api, save_block, sqlite_ledger, queue, tmp_path, caplog
):
    from flows.rest_api import ingest_rest

    caplog.set_level(logging.DEBUG)
    ledger_name = save_block(sqlite_ledger)
    queue_name = save_block(queue)
    kw = dict(path="/auth/bearer", auth="bearer", token=SECRET, incremental_param=None)
    name = save_block(src(api, **kw))
    first = ingest_rest(
        source_block=name, ledger_block=ledger_name, queue_block=queue_name, date=DAY
    )
    assert first["landed"] == 1
    landed = list((tmp_path / "landing").rglob("records_20260115.jsonl"))
    assert len(landed) == 1 and len(landed[0].read_text().splitlines()) == 25
    second = ingest_rest(
        source_block=name, ledger_block=ledger_name, queue_block=queue_name, date=DAY
    )
    assert second["landed"] == 0 and second["skipped"] == 1
    api.state.n = 26  # new content: a new version lands
    third = ingest_rest(
        source_block=name, ledger_block=ledger_name, queue_block=queue_name, date=DAY
    )
    assert third["landed"] == 1
    assert SECRET not in caplog.text


def test_flow_writes_watermark_with_the_ledger_row(api, save_block, sqlite_ledger, queue, tmp_path):
    from flows.rest_api import ingest_rest

    ledger_name = save_block(sqlite_ledger)
    queue_name = save_block(queue)
    name = save_block(
        src(api, path="/items", incremental_param="updated_since", watermark_field="updated_at")
    )
    first = ingest_rest(
        source_block=name, ledger_block=ledger_name, queue_block=queue_name, date=DAY
    )
    assert first["landed"] == 1
    mark = sqlite_ledger.get_state("rest", "watermark")
    assert mark == max(f"2026-01-{1 + i % 28:02d}T00:00:{i % 60:02d}" for i in range(25))
    again = ingest_rest(
        source_block=name, ledger_block=ledger_name, queue_block=queue_name, date=DAY
    )
    assert again["landed"] == 0 and again["skipped"] == 1
    seen = [p for m, p, _ in api.state.requests if m == "GET"]
    assert "updated_since=" in seen[-1]


def test_flow_with_a_capping_server_lands_every_record_or_fails(
    api, save_block, sqlite_ledger, queue, tmp_path
):
    # was: a Completed run landing 50 of the 2,000 records the response announced
    from flows.rest_api import ingest_rest

    ledger_name, queue_name = save_block(sqlite_ledger), save_block(queue)
    api.state.n, api.state.cap = 2000, 50
    kw = dict(path="/capped/offset", pagination="offset", page_size=100, total_path="total")
    name = save_block(src(api, retries=0, **kw))
    result = ingest_rest(
        source_block=name, ledger_block=ledger_name, queue_block=queue_name, date=DAY
    )
    (landed,) = (tmp_path / "landing").rglob("records_20260115.jsonl")
    assert result["landed"] == 1
    assert [json.loads(line)["id"] for line in landed.read_text().splitlines()] == list(range(2000))
    api.state.lossy_pages = True  # page numbers that skip what the cap withheld
    kw = dict(path="/capped/page", pagination="page", limit_param="per_page", page_size=100)
    lossy = save_block(src(api, retries=0, output_name="lossy", total_path="total", **kw))
    with pytest.raises(Exception, match="1000 of the 2000 records"):
        ingest_rest(source_block=lossy, ledger_block=ledger_name, queue_block=queue_name, date=DAY)
    assert not list((tmp_path / "landing").rglob("lossy*"))


def test_unsafe_output_name_fails_the_run_before_any_request(
    api, save_block, sqlite_ledger, queue, tmp_path
):
    from flows.rest_api import ingest_rest

    ledger_name = save_block(sqlite_ledger)
    queue_name = save_block(queue)
    name = save_block(src(api, path="/items", output_name="../escape"))
    with pytest.raises(ConfigError, match="RestApiSource.output_name"):
        ingest_rest(
            source_block=name,
            ledger_block=ledger_name,
            queue_block=queue_name,
            date=DAY,
            fail_on_item_error=False,
        )
    assert not list(tmp_path.rglob("escape*")) and not api.state.requests


# --------------------------------------------------------------------------- query in path
# the /capped and /needs-q endpoint serving each pagination style
CAPPED_KIND = {
    "offset": "offset",
    "page": "page",
    "cursor": "cursor",
    "link_header": "link",
    "next_url": "nexturl",
    "none": "offset?offset=0&limit=1000",
}
NEEDS_Q = [
    dict(pagination="offset", page_size=10),
    dict(pagination="page", page_size=10, limit_param="per_page"),
    dict(pagination="cursor", cursor_path="next"),
    dict(pagination="link_header"),
    dict(pagination="next_url", next_url_path="next"),
]


@pytest.mark.parametrize("kw", NEEDS_Q, ids=lambda kw: kw["pagination"])
def test_query_in_path_is_sent_with_every_request_and_next_page(api, kw):
    # was: httpx replaced the path's query by `params=`, the server answered 422
    kind = CAPPED_KIND[kw["pagination"]]
    records, _ = pull(src(api, path=f"/needs-q/{kind}?q=python", **kw))
    assert [r["id"] for r in records] == ALL_IDS
    sent = [p for m, p, _ in api.state.requests if m == "GET"]
    assert len(sent) >= 3 and all("q=python" in p for p in sent)


def test_query_in_path_merges_with_query_params_in_raw_mode(api):
    source = src(api, path="/needs-q/raw?q=python", mode="raw", query_params={"extra": "1"})
    (cand,) = source.discover(DiscoverContext(partition_date=DAY))
    out = io.BytesIO()
    source.fetch(cand, out)
    assert len(json.loads(out.getvalue())) == 25
    (sent,) = [p for m, p, _ in api.state.requests if m == "GET"]
    assert "q=python" in sent and "extra=1" in sent


def test_query_in_base_url_and_repeated_keys_are_kept(api):
    records, _ = pull(
        src(
            api,
            base_url=f"{api.url}/needs-q?q=python",
            path="offset?tag=a&tag=b",
            pagination="offset",
            page_size=10,
        )
    )
    assert [r["id"] for r in records] == ALL_IDS
    sent = [p for m, p, _ in api.state.requests if m == "GET"]
    assert all(p.startswith("/needs-q/offset?q=python&tag=a&tag=b&offset=") for p in sent)


@pytest.mark.parametrize(
    "kw,field,key",
    [
        (dict(path="/s?q=a", query_params={"q": "b"}), "query_params", "q"),
        (dict(path="/s?limit=5", pagination="offset"), "path", "limit"),
        (dict(query_params={"page": "2"}, pagination="page"), "query_params", "page"),
        (dict(path="/s?cursor=x", pagination="cursor"), "path", "cursor"),
        (
            dict(path="/s?since=1", incremental_param="since", watermark_field="t"),
            "path",
            "since",
        ),
        (
            dict(query_params={"k": "v"}, auth="api_key_query", token="t", api_key_name="k"),
            "query_params",
            "k",
        ),
        (dict(base_url="http://127.0.0.1:1/v1?q=a", path="/s?q=b"), "path", "q"),
    ],
)
def test_query_key_given_twice_is_refused_naming_the_field(kw, field, key):
    kw.setdefault("base_url", "http://127.0.0.1:1")
    with pytest.raises(ConfigError, match=f"RestApiSource.{field}: query param '{key}'"):
        RestApiSource(source_id="rest", **kw).preflight()


# --------------------------------------------------------------------------- short pages
@pytest.mark.parametrize("total_path", [None, "total"])
@pytest.mark.parametrize(
    "kw",
    [dict(pagination="offset"), dict(pagination="page", limit_param="per_page")],
    ids=lambda kw: kw["pagination"],
)
def test_server_capping_the_page_size_still_gives_every_record(api, kw, total_path):
    # was: 50 of 2,000 records, the first short page ended the run
    api.state.n, api.state.cap = 2000, 50
    kind = kw["pagination"]
    records, _ = pull(src(api, path=f"/capped/{kind}", page_size=100, total_path=total_path, **kw))
    assert [r["id"] for r in records] == list(range(2000))
    pages = len([1 for m, _, _ in api.state.requests if m == "GET"])
    assert pages == (40 if total_path else 41)  # without a total, an empty page ends it


def test_page_numbers_that_skip_records_fail_against_the_total(api):
    # the server steps pages by the size asked (100) but sends only 50: half is never sent
    api.state.n, api.state.cap, api.state.lossy_pages = 300, 50, True
    with pytest.raises(PaginationError, match="150 of the 300 records"):
        pull(
            src(
                api,
                path="/capped/page",
                pagination="page",
                limit_param="per_page",
                page_size=100,
                total_path="total",
            )
        )


@pytest.mark.parametrize(
    "kw",
    [
        dict(pagination="offset", page_size=10),
        dict(pagination="page", page_size=10, limit_param="per_page"),
        dict(pagination="cursor", cursor_path="next"),
        dict(pagination="link_header"),
        dict(pagination="next_url", next_url_path="next"),
        dict(pagination="none"),
    ],
    ids=lambda kw: kw["pagination"],
)
def test_fewer_records_than_the_announced_total_fail(api, kw):
    api.state.total_offset = 5  # says 30, has 25
    path = "/capped/" + CAPPED_KIND[kw["pagination"]]
    with pytest.raises(PaginationError, match="25 of the 30 records") as err:
        pull(src(api, path=path, total_path="total", **kw))
    assert err.value.retryable  # records changing while paging may add up next time


def test_more_records_than_the_announced_total_fail(api):
    api.state.total_offset = -5  # says 20, sends 25 in one page
    with pytest.raises(PaginationError, match="more than the total of 20"):
        pull(
            src(api, path="/capped/offset", pagination="offset", page_size=100, total_path="total")
        )


def test_next_page_url_to_another_host_is_not_followed(api):
    # was: the bearer token (and every header and param) went to whatever host the link named
    with ApiServer() as other:
        api.state.next_base = other.url
        source = src(
            api,
            path="/nexturl",
            pagination="next_url",
            records_path="value",
            next_url_path="@odata.nextLink",
            auth="bearer",
            token=SECRET,
        )
        with pytest.raises(PaginationError, match=f"next-page URL goes to {other.url}") as err:
            pull(source)
        assert api.state.hits["/nexturl"] == 1 and not other.state.requests
        assert SECRET not in str(err.value)


def test_missing_total_fails_naming_total_path(api):
    api.state.report_total = False
    with pytest.raises(PaginationError, match="total_path 'total' is not a record count"):
        pull(src(api, path="/capped/offset", pagination="offset", total_path="total"))


@pytest.mark.parametrize(
    "kw",
    [
        dict(pagination="offset", page_size=10),
        dict(pagination="page", page_size=10, limit_param="per_page"),
        dict(pagination="cursor", cursor_path="next"),
        dict(pagination="link_header"),
        dict(pagination="next_url", next_url_path="next"),
    ],
    ids=lambda kw: kw["pagination"],
)
def test_a_server_that_repeats_itself_fails_fast(api, kw):
    # was: the same page over and over until max_pages, then a warning and a Completed run
    api.state.stuck = True
    kind = CAPPED_KIND[kw["pagination"]]
    with pytest.raises(PaginationError, match="same as page 1|already") as err:
        pull(src(api, path=f"/capped/{kind}", max_pages=50, **kw))
    assert err.value.retryable is False
    assert len([1 for m, _, _ in api.state.requests if m == "GET"]) <= 3


# ------------------------------------------------------------- config and test_connection
@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(verify_tls="/nonexistent/ca.pem"), "verify_tls"),
        (dict(verify_tls=__file__), "verify_tls"),  # exists, but is no CA bundle
        (dict(output_name="../escape"), "output_name"),
        (dict(output_name="a/../../escape_{date:%Y}"), "output_name"),
        (dict(output_name="/etc/cron.d/x"), "output_name"),
        (dict(output_name="..\\escape"), "output_name"),
        (dict(total_path="total", response_format="csv"), "total_path"),
    ],
)
def test_preflight_refuses_bad_tls_bundle_and_unsafe_output_name(kw, field):
    with pytest.raises(ConfigError, match=f"RestApiSource.{field}"):
        RestApiSource(source_id="rest", base_url="http://127.0.0.1:1", **kw).preflight()


def test_preflight_accepts_a_real_ca_bundle_and_a_sub_folder_name():
    import certifi

    RestApiSource(
        source_id="rest",
        base_url="http://127.0.0.1:1",
        verify_tls=certifi.where(),
        output_name="{date:%Y}/records",
    ).preflight()


def test_test_connection_makes_one_bounded_request(api):
    result = src(api, path="/capped/offset", pagination="offset", page_size=10).test_connection()
    assert result["ok"] and result["records_on_first_page"] == 10 and result["status"] == 200
    assert api.state.hits["/capped/offset"] == 1  # the first page only


def test_test_connection_reports_an_unreachable_host():
    # was: {"ok": True} without any request
    with ApiServer() as gone:
        url = gone.url
    source = RestApiSource(source_id="rest", base_url=url, path="/items", http_tries=5)
    with pytest.raises(IngestError, match=r"connection test failed: .*ConnectError") as err:
        source.test_connection()
    assert "gave up after 1 tries" in str(err.value)  # bounded: no retries


def test_test_connection_reports_a_wrong_token_without_it(api):
    source = src(
        api, path="/auth/query", auth="api_key_query", token="wrong-1", api_key_name="api_key"
    )
    with pytest.raises(
        IngestError, match="connection test failed: GET .*/auth/query: HTTP 401"
    ) as err:
        source.test_connection()
    assert "wrong-1" not in str(err.value)


def test_test_connection_reports_a_body_that_does_not_parse(api):
    with pytest.raises(IngestError, match="records_path 'nope' not found"):
        src(api, path="/items", records_path="nope").test_connection()
