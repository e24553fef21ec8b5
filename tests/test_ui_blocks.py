"""Every block type in the REAL Prefect UI (the default v2 pages), in a REAL headless Chromium.

A real `prefect server start` (throwaway PREFECT_HOME, its database a throwaway PostgreSQL
one, free 127.0.0.1 port), `prefect block register -m blocks`, then for each block
type: open the catalog's create form, fill the required fields, save, and `Block.load` the
document in Python; one block is edited and saved again; a local-folder flow runs against
the server and its run page shows the summary artifact's table. The block logos come from a
web server on 127.0.0.1 (`INGEST_LOGO_BASE_URL`) and must load.

Chromium is Debian's `/usr/bin/chromium` (INGEST_CHROMIUM overrides), driven by Playwright
for Python; `playwright install` is never needed. Without Chromium or Playwright the tests
skip, and fail when INGEST_REQUIRE_SERVERS=1. A failing page leaves a screenshot under the
temp folder named in the assertion message.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect_gcp import BigQueryWarehouse, GcpCredentials
from prefect_snowflake import SnowflakeConnector, SnowflakeCredentials
from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

import blocks as B
from blocks.core.logos import LOGO_DIR
from tests.conftest import server_missing, throwaway_database
from tests.prefect_events import source_events
from tests.test_ops_e2e import ROOT, SERVER_BIN, Env, wait_http

CHROMIUM = os.environ.get("INGEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000  # one page or one save on a loaded 2-core CI machine

pytestmark = [pytest.mark.browser, pytest.mark.prefect_server, pytest.mark.timeout(1200)]


@dataclass
class UI:
    env: Env
    base: str  # the v2 pages
    browser: Any
    shots: Path
    tmp: Path
    logo_base: str

    def page(self) -> Any:
        page = self.browser.new_page(viewport={"width": 1400, "height": 1600})
        page.set_default_timeout(WAIT_MS)
        return page

    def shot(self, page: Any, name: str) -> str:
        path = self.shots / f"{name}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
        except Exception as exc:  # the message must still name the folder
            return f"(no screenshot: {exc}); screenshots in {self.shots}"
        return f"screenshot {path}"


def _serve_logos() -> tuple[ThreadingHTTPServer, str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=LOGO_DIR)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[UI]:
    if not Path(CHROMIUM).exists():
        server_missing("Chromium", f"{CHROMIUM} does not exist (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        server_missing("Playwright for Python", str(exc))
    logos, logo_base = _serve_logos()
    with throwaway_database("postgres", "prefect_ui") as database:
        e = Env(tmp_path_factory.mktemp("ui-blocks"), database)
        e.vars["PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT"] = "false"
        e.vars["INGEST_LOGO_BASE_URL"] = logo_base
        shots = e.tmp / "screenshots"
        shots.mkdir()
        server = e.start(
            "server", str(SERVER_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
            "--port", str(e.port),
        )  # fmt: skip
        try:
            if not wait_http(f"{e.api}/health", 180, server):
                server_missing("prefect server start", e.log("server"))
            e.prefect("block", "register", "-m", "blocks")
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: e.api}), sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    yield UI(e, f"http://127.0.0.1:{e.port}/v2", browser, shots, e.tmp, logo_base)
                finally:
                    browser.close()
        finally:
            for proc in reversed(e.procs):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(20)
                    except Exception:
                        proc.kill()
            logos.shutdown()


# ---------------------------------------------------------------------------- form helpers
def field_box(page: Any, label: str) -> Any:
    """The form field whose label reads `label` (the UI appends ' (Optional)')."""
    lab = page.locator("label").filter(
        has_text=re.compile(rf"^{re.escape(label)}( \(Optional\))?$")
    )
    # each field is a `div.group`: its label row, then its control(s)
    return lab.first.locator(
        "xpath=ancestor::div[contains(concat(' ', @class, ' '), ' group ')][1]"
    )


def fill_text(page: Any, label: str, value: str) -> None:
    box = field_box(page, label)
    for branch in ("str", "password"):  # `str | None`, `SecretStr | None`: not None
        tab = box.get_by_role("tab", name=branch, exact=True)
        if tab.count():
            tab.first.click()
            break
    control = box.locator("textarea, input:not([type=checkbox])").first
    # The form may still re-render with its defaults right after it shows (seen once in
    # three runs on Prefect 3.9.1): fill again until the value holds.
    for _ in range(5):
        control.fill(value)
        page.wait_for_timeout(100)
        if control.input_value() == value:
            return
    raise AssertionError(f"{label}: the form did not keep {value!r}")


def pick_option(page: Any, label: str, value: str) -> None:
    """Choose `value` in the select (an enum / Literal field) labelled `label`."""
    box = field_box(page, label)
    native = box.locator("select")
    if native.count() and native.first.is_visible():
        native.first.select_option(value)
        return
    try:  # the control is labelled "Select <label>" (the first button is the ⋮ menu)
        box.locator(f"button[aria-label='Select {label}']").first.click(timeout=10_000)
        page.locator(".p-select-option, [role=option]").filter(
            has_text=re.compile(rf"^\s*{re.escape(value)}\s*$")
        ).first.click(timeout=10_000)
    except Exception as exc:
        msg = f"{label}: cannot choose {value!r} ({exc}) in {box.inner_html()[:3000]}"
        raise AssertionError(msg) from None


def add_items(page: Any, label: str, items: list[dict[str, str]]) -> None:
    """Fill a list-of-objects field: one "Add item" per entry, then its text fields (the
    n-th label of each name is the n-th item's)."""
    box = field_box(page, label)
    for n, item in enumerate(items):
        box.get_by_role("button", name=re.compile("add", re.I)).first.click()
        for sub, value in item.items():
            lab = box.locator("label").filter(
                has_text=re.compile(rf"^{re.escape(sub)}( \(Optional\))?$")
            )
            control = (
                lab.nth(n)
                .locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' group ')][1]")
                .locator("textarea, input:not([type=checkbox])")
                .first
            )
            control.fill(value)


def pick_block(page: Any, label: str, document: str) -> None:
    box = field_box(page, label)
    box.get_by_label("Select a block").first.click()
    page.get_by_role("option", name=document, exact=True).click()


@dataclass
class Case:
    slug: str
    cls: type[Block]
    texts: dict[str, str]
    expect: dict[str, Any]
    nested: dict[str, str] = field(default_factory=dict)
    check: Callable[[Any], None] | None = None
    selects: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[dict[str, str]]] = field(default_factory=dict)


def _secret(value: str) -> Callable[[Any], None]:
    def check(block: Any) -> None:
        for name in ("client_secret", "secret"):
            if hasattr(block, name):
                assert getattr(block, name).get_secret_value() == value

    return check


CASES = [
    Case(
        "local-folder-source",
        B.LocalFolderSource,
        {"Source Id": "ui-folder", "Directory": "/data/in", "File Pattern": "*.csv"},
        {"source_id": "ui-folder", "directory": "/data/in", "pattern": "*.csv", "unpack": "gunzip"},
        selects={"Unpack": "gunzip"},  # a file source's unpack field (blocks/core/unpack.py)
    ),
    Case(
        "sftp-source",
        B.SftpSource,
        {
            "Source Id": "ui-sftp",
            "Host": "sftp.example.test",
            "Username": "ingest",
            "File Pattern": "AXIS_{date:%Y%m%d}*.csv",
        },
        {"host": "sftp.example.test", "username": "ingest", "pattern": "AXIS_{date:%Y%m%d}*.csv"},
    ),
    Case(
        "s3-source",
        B.S3Source,
        {"Source Id": "ui-s3", "Bucket": "exports", "Key Pattern": "*.parquet"},
        {"bucket": "exports", "pattern": "*.parquet"},
    ),
    Case(
        "gcs-source",
        B.GcsSource,
        {"Source Id": "ui-gcs", "Bucket": "exports", "Key Pattern": "*"},
        {"bucket": "exports", "pattern": "*"},
    ),
    Case(
        "rest-api-source",
        B.RestApiSource,
        {"Source Id": "ui-rest", "Base Url": "https://api.example.test/v1"},
        {"base_url": "https://api.example.test/v1"},
    ),
    Case(
        "sharepoint-source",
        B.SharePointSource,
        {
            "Source Id": "ui-sharepoint",
            "Tenant Id": "contoso.onmicrosoft.com",
            "Client Id": "11111111-2222-3333-4444-555555555555",
            "Client Secret": "not-a-real-secret",
            "Site": "contoso.sharepoint.com:/sites/fin",
        },
        {"site": "contoso.sharepoint.com:/sites/fin"},
        check=_secret("not-a-real-secret"),
    ),
    Case(
        "sql-source",
        B.SqlSource,
        {"Source Id": "ui-sql", "Table": "orders"},
        {"table": "orders"},
        nested={"Source database": "ui-sqlite"},
        check=lambda b: (
            b.database.connection_info.database.endswith("ui.db") or pytest.fail(str(b.database))
        ),
    ),
    Case(
        "snowflake-query-source",
        B.SnowflakeQuerySource,
        {"Source Id": "ui-snowflake", "Query": "select * from orders"},
        {"query": "select * from orders"},
        nested={"Snowflake connection": "ui-snowflake"},
        check=lambda b: b.snowflake.database == "ANALYTICS" or pytest.fail(str(b.snowflake)),
    ),
    Case(
        "bigquery-query-source",
        B.BigQueryQuerySource,
        {"Source Id": "ui-bigquery", "Query": "select 1"},
        {"query": "select 1"},
        nested={"BigQuery warehouse": "ui-bigquery"},
        check=lambda b: b.bigquery.fetch_size == 7 or pytest.fail(str(b.bigquery)),
    ),
    Case(
        "ingest-ledger",
        B.Ledger,
        {},
        {"table_check": True},
        nested={"Ledger database": "ui-sqlite"},
        check=lambda b: (
            b.database.connection_info.database.endswith("ui.db") or pytest.fail(str(b.database))
        ),
    ),
    Case(
        "ingestion-queue",
        B.IngestionQueue,
        {"Landing Dir": "/data/landing"},
        {"landing_dir": "/data/landing", "event_per": "item"},
        selects={"Event Per": "item"},  # away from the default (batch)
    ),
    Case(
        "ingest-webhook-endpoint",
        B.WebhookEndpoint,
        {
            "Source": "ui-folder",
            "Deployment": "ingest-local-folder/ui-folder",
            "Secret": "0123456789abcdef-secret",
        },
        {"deployment": "ingest-local-folder/ui-folder"},
        check=_secret("0123456789abcdef-secret"),
    ),
    Case(
        "broker-relay",
        B.BrokerRelay,
        {"Target": "ingest.landed", "Url": "redis://:not-a-real-pw@127.0.0.1:6379/0"},
        {"kind": "redis", "target": "ingest.landed"},
        selects={"Kind": "redis"},
        check=lambda b: (
            b.url.get_secret_value() == "redis://:not-a-real-pw@127.0.0.1:6379/0"
            or pytest.fail("url not saved")
        ),
    ),
    Case(
        "day-complete-rule",
        B.DayCompleteRule,
        {"Rule Id": "ui-recon", "Deployment": "reconcile/daily"},
        {"rule_id": "ui-recon", "deployment": "reconcile/daily"},
        lists={
            "Expected": [
                {"Source": "ui-folder", "Name Glob": "BANK_{date:%Y%m%d}*.csv"},
                {"Source": "ui-sftp", "Name Glob": "GW_*.json"},
            ]
        },
        check=lambda b: (
            [(e.source, e.name_glob) for e in b.expected]
            == [("ui-folder", "BANK_{date:%Y%m%d}*.csv"), ("ui-sftp", "GW_*.json")]
            or pytest.fail(str(b.expected))
        ),
    ),
]


def registered_block_types() -> dict[str, type[Block]]:
    """What `prefect block register -m blocks` registers: every Block class among the
    module's members (prefect/cli/block.py `_register_blocks_in_module`)."""
    import inspect

    return {
        cls.get_block_type_slug(): cls
        for _, cls in inspect.getmembers(B)
        if cls is not None and Block.is_block_class(cls)
    }


def test_every_registered_block_type_has_a_ui_case():
    """No browser: a new block type without a Case here (or without a logo, a code
    example, a docstring or titled nested-block fields) fails the suite."""
    registered = registered_block_types()
    cased = {c.slug: c.cls for c in CASES}
    assert sorted(set(registered) - set(cased)) == [], "block types without a UI Case"
    assert sorted(set(cased) - set(registered)) == [], "Cases of unregistered block types"
    for slug, cls in registered.items():
        assert cased[slug] is cls, slug
        assert cls._logo_url, f"{slug}: no _logo_url (blocks/core/logos.py HOSTED)"
        assert os.path.exists(os.path.join(LOGO_DIR, f"{slug}.svg")), f"{slug}: no SVG"
        assert cls._code_example, f"{slug}: no _code_example"
        assert (cls.__doc__ or "").strip(), f"{slug}: no docstring"
        for name, info in cls.model_fields.items():
            kinds = [info.annotation, *getattr(info.annotation, "__args__", ())]
            if any(Block.is_block_class(k) for k in kinds):
                assert info.title, f"{slug}.{name}: a nested block field needs a title"


def anonymous_gcp(mp: pytest.MonkeyPatch) -> None:
    """GcpCredentials hand out anonymous credentials: nothing here calls Google (the seam
    tests/warehouse_servers.py `anonymous_google` uses; without it the block asks
    google.auth for the machine's default credentials when it is built or loaded)."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    mp.setattr(
        GcpCredentials, "get_credentials_from_service_account", lambda self: AnonymousCredentials()
    )
    # a GcpCredentials without a project (the GCS Source's default) asks for the default one
    mp.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "ui-project"))


def save_nested_documents(tmp: Path) -> None:
    """The saved blocks the nested-block fields pick from."""
    SqlAlchemyConnector(
        connection_info=ConnectionComponents(
            driver=SyncDriver.SQLITE_PYSQLITE, database=str(tmp / "ui.db")
        )
    ).save("ui-sqlite", overwrite=True, _sync=True)
    SnowflakeConnector(
        credentials=SnowflakeCredentials(account="acme", user="ingest", password="pw"),
        database="ANALYTICS",
        warehouse="WH",
        schema="PUBLIC",
    ).save("ui-snowflake", overwrite=True, _sync=True)
    BigQueryWarehouse(gcp_credentials=GcpCredentials(project="p"), fetch_size=7).save(
        "ui-bigquery", overwrite=True, _sync=True
    )


@pytest.fixture(scope="module")
def nested_documents(ui: UI) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        anonymous_gcp(mp)
        save_nested_documents(ui.tmp)
        yield


def save_form(ui: UI, page: Any, name: str) -> None:
    page.get_by_role("button", name="Save", exact=True).click()
    try:
        # The block's page, not the create or edit form (an edit starts on .../edit, which
        # a glob on "**/blocks/block/**" matches before the save has even been sent).
        page.wait_for_url(
            lambda url: "/blocks/block/" in url and not url.rstrip("/").endswith("/edit"),
            timeout=WAIT_MS,
        )
    except Exception:
        raise AssertionError(
            f"{name}: the UI did not save the block; page says: "
            f"{page.locator('main').inner_text()[:600]!r}; {ui.shot(page, name)}"
        ) from None


def test_all_block_types_are_in_the_catalog_with_a_logo(ui: UI):
    page = ui.page()
    try:
        page.goto(f"{ui.base}/blocks/catalog")
        for case in CASES:
            page.get_by_text(case.cls._block_type_name, exact=True).first.wait_for()
        page.wait_for_load_state("networkidle")
        logos = page.evaluate(
            "() => Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth])"
        )
        loaded = {src.rsplit("/", 1)[-1] for src, width in logos if width}
        missing = [c.slug for c in CASES if f"{c.slug}.svg" not in loaded]
        assert not missing, f"logos not shown: {missing}; {logos}; {ui.shot(page, 'catalog')}"
    finally:
        page.close()


@pytest.mark.parametrize("case", CASES, ids=[c.slug for c in CASES])
def test_create_in_the_ui_then_load_in_python(ui: UI, nested_documents, case: Case):
    page = ui.page()
    name = f"ui-{case.slug}"
    try:
        page.goto(f"{ui.base}/blocks/catalog/{case.slug}/create")
        page.get_by_role("button", name="Save", exact=True).wait_for()
        page.wait_for_load_state("networkidle")
        labels = [t.strip() for t in page.locator("label").all_inner_texts()]
        assert "Name" in labels[:1], labels
        required = [f for f in case.cls.model_json_schema().get("required", [])]
        if required:  # identity first: the required fields are the first ones on the form
            firsts = [lab for lab in labels[1 : 1 + len(required)] if "(Optional)" in lab]
            assert not firsts, f"optional fields before required ones: {labels}"
        page.locator("input[name=blockName]").fill(name)
        for label, value in case.texts.items():
            fill_text(page, label, value)
        for label, document in case.nested.items():
            pick_block(page, label, document)
        for label, value in case.selects.items():
            pick_option(page, label, value)
        for label, items in case.lists.items():
            add_items(page, label, items)
        save_form(ui, page, name)
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"{name}: {exc}; {ui.shot(page, name)}") from None
    finally:
        page.close()
    block = case.cls.load(name, _sync=True)
    for attr, value in case.expect.items():
        assert getattr(block, attr) == value, (attr, getattr(block, attr))
    if case.check:
        case.check(block)


def test_edit_in_the_ui_keeps_the_glob(ui: UI):
    """Edit a Local Folder Source whose saved glob is not a regex, save, load in Python."""
    B.LocalFolderSource(source_id="ui-edit", directory="/data/a", pattern="*").save(
        "ui-edit", overwrite=True, _sync=True
    )
    doc_id = B.LocalFolderSource.load("ui-edit", _sync=True)._block_document_id
    page = ui.page()
    try:
        page.goto(f"{ui.base}/blocks/block/{doc_id}/edit")
        page.get_by_role("button", name="Save", exact=True).wait_for()
        fill_text(page, "Directory", "/data/b")
        fill_text(page, "File Pattern", "*.csv")
        save_form(ui, page, "ui-edit")
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"ui-edit: {exc}; {ui.shot(page, 'ui-edit')}") from None
    finally:
        page.close()
    block = B.LocalFolderSource.load("ui-edit", _sync=True)
    assert (block.directory, block.pattern) == ("/data/b", "*.csv")


def test_a_document_saved_under_the_old_key_still_loads(ui: UI):
    """Documents saved before the glob was shown as `file_pattern` hold it under `pattern`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentCreate

    block = B.LocalFolderSource(source_id="old", directory="/data/old")
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("local-folder-source")
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
        client.create_block_document(
            BlockDocumentCreate(
                name="ui-old-key",
                data={"source_id": "old", "directory": "/data/old", "pattern": "OLD_*.txt"},
                block_schema_id=schema.id,
                block_type_id=block_type.id,
            )
        )
    assert block.load("ui-old-key", _sync=True).pattern == "OLD_*.txt"


RUN_FLOW = """
import json, sys
from flows.local_folder import ingest_local_folder
name = sys.argv[1]
state = ingest_local_folder(
    source_block=name, ledger_block=name + "-ledger", queue_block=name + "-landing",
    return_state=True,
)
print(json.dumps({"completed": state.is_completed(), "id": str(state.state_details.flow_run_id)}))
"""


def run_local_folder_flow(
    ui: UI, tmp_path: Path, source: Any, name: str, **queue_fields: Any
) -> dict:
    """Save `source`, a SQLite ledger and a landing queue as `name`, `name-ledger` and
    `name-landing`, run the local folder flow on them in its own process (the flow engine
    must not run inside Playwright's event loop) and return {completed, id}."""
    source.save(name, overwrite=True, _sync=True)
    B.Ledger(
        database=SqlAlchemyConnector(
            connection_info=ConnectionComponents(
                driver=SyncDriver.SQLITE_PYSQLITE, database=str(tmp_path / "ledger.db")
            )
        )
    ).save(f"{name}-ledger", overwrite=True, _sync=True)
    B.IngestionQueue(landing_dir=str(tmp_path / "landing"), fsync=False, **queue_fields).save(
        f"{name}-landing", overwrite=True, _sync=True
    )
    out = subprocess.run(
        [sys.executable, "-c", RUN_FLOW, name],
        cwd=ROOT,
        env=ui.env.vars,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["completed"], out.stderr[-3000:]
    return run


def test_a_finished_run_shows_its_summary_table(ui: UI, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for n in ("a.csv", "b.csv"):
        (inbox / n).write_text(n)
    source = B.LocalFolderSource(source_id="ui-run", directory=str(inbox), pattern="*.csv")
    run = run_local_folder_flow(ui, tmp_path, source, "ui-run")
    page = ui.page()
    try:
        # run page -> Artifacts tab -> the summary's card -> its newest version: the table
        page.goto(f"{ui.base}/runs/flow-run/{run['id']}")
        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("ingest-summary-ui-run", exact=True).first.click()
        page.locator("main a[href*='/artifacts/artifact/']").first.click()
        table = page.locator("main table").filter(has_text="listed").first
        table.wait_for()
        text = table.inner_text()
        assert "landed" in text and "bytes" in text, text
    except Exception as exc:
        raise AssertionError(f"summary table not shown: {exc}; {ui.shot(page, 'run')}") from None
    finally:
        page.close()


def test_a_batch_event_shows_in_the_event_feed_with_its_items(ui: UI, tmp_path):
    """With the queue's default `event_per: batch`, the run's `ingest.items.landed` event
    is in the UI's event feed, and its page shows the batch's items."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"batch-{i}.csv" for i in range(3)]
    for n in names:
        (inbox / n).write_text(n)
    source = B.LocalFolderSource(  # one worker: the three files form one land-batch
        source_id="ui-batch", directory=str(inbox), pattern="*.csv", max_parallel=1
    )
    run_local_folder_flow(ui, tmp_path, source, "ui-batch")
    # stored by the server's event persister (it flushes every few seconds)
    (event,) = source_events("ingest.items.landed", "ui-batch", timeout=60)
    assert event["payload"]["count"] == 3, event
    page = ui.page()
    try:
        # the classic UI's event feed (the v2 one listed no events at all here, Prefect 3.9)
        page.goto(f"{ui.base.removesuffix('/v2')}/events")
        page.get_by_text("ingest.items.landed", exact=True).first.wait_for()
        page.get_by_role("link", name="Ingest items landed").first.click()
        page.wait_for_url("**/events/event/**")
        page.get_by_text("Raw", exact=True).click()
        page.get_by_text('"count"').first.wait_for()
        raw = page.locator("body").inner_text()
        assert '"count": 3' in raw or '"count":3' in raw, raw[:2000]
        for n in names:
            assert n in raw, (n, raw[:2000])
    except Exception as exc:
        raise AssertionError(
            f"batch event not shown: {exc}; {ui.shot(page, 'batch-event')}"
        ) from None
    finally:
        page.close()
