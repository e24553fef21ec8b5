"""The relay step at the end of a source run and `ingest-ops relay`, on the Prefect test
API and the real Redis: a broker that is down during the run loses nothing, and the CLI
publishes the stragglers later, once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from blocks import IngestionQueue, LocalFolderSource
from blocks.core.ledger import Ledger
from blocks.core.outbox import pending_count, relay_outbox
from flows.local_folder import ingest_local_folder
from ops.cli import app
from tests.landed_rows import landed
from tests.objstore_servers import aws_credentials
from tests.test_outbox import _redis, _sqs, land

pytest_plugins = ["tests.objstore_servers"]  # moto_endpoint
pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, ["--json", *args])


def test_broker_down_during_run_then_ingest_ops_relay(
    save_block, sqlite_ledger: Ledger, tmp_path: Path, inbox: Path
) -> None:
    gen = _redis()
    broker = next(gen)
    try:
        ledger_name = save_block(sqlite_ledger, "ledger")
        secret = "pw-not-in-logs"
        down_url = broker.down_url.replace("redis://", f"redis://:{secret}@")
        down = broker.relay.model_copy(update={"url": SecretStr(down_url)})
        down_name = save_block(down, "relay-down")
        up_name = save_block(broker.relay, "relay")
        source = LocalFolderSource(source_id="relayed", directory=str(inbox))
        source_name = save_block(source, "source")

        def run(relay_block: str):
            queue = IngestionQueue(
                landing_dir=str(tmp_path / "landing"), fsync=False, relay_block=relay_block
            )
            return ingest_local_folder(
                source_block=source_name,
                ledger_block=ledger_name,
                queue_block=save_block(queue, "queue"),
                return_state=True,
            )

        for name in ("a.csv", "b.csv", "c.csv"):
            (inbox / name).write_text(f"{name},1\n")

        # The broker is down: items land, the run fails naming the broker, nothing lost.
        state = run(down_name)
        assert state.is_failed()
        assert "redis" in state.message and broker.down_url[8:] in state.message
        assert "Connection refused" in state.message and secret not in state.message
        assert len(landed(sqlite_ledger, "relayed")) == 3
        assert pending_count(sqlite_ledger, "relayed") == 3
        assert broker.count() == 0

        # Later, from the command line: all three, once.
        result = cli("relay", "--block", up_name, "--ledger-block", ledger_name)
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert (out["published"], out["pending"], out["error"]) == (3, 0, None)
        assert broker.count() == 3
        again = json.loads(cli("relay", "--block", up_name, "--ledger-block", ledger_name).stdout)
        assert again["published"] == 0 and broker.count() == 3

        # The broker is up: the next run publishes its own message at the end.
        (inbox / "d.csv").write_text("d,1\n")
        state = run(up_name)
        assert state.is_completed(), state.message
        totals = state.result()
        assert (totals["landed"], totals["published"], totals["unpublished"]) == (1, 1, 0)
        assert broker.count() == 4

        # A queue naming a relay block that does not exist: Failed, naming the field.
        state = run("no-such-relay")
        assert state.is_failed() and "IngestionQueue.relay_block" in state.message

        # A relay block that does not exist: one line naming the option.
        bad = cli("relay", "--block", "no-such-relay", "--ledger-block", ledger_name)
        assert bad.exit_code == 1
        assert "--block" in bad.output and "no-such-relay" in bad.output
    finally:
        gen.close()


def test_sqs_relay_with_a_prefect_aws_credentials_block(
    save_block, sqlite_ledger: Ledger, moto_endpoint: str, monkeypatch
) -> None:
    """`aws_credentials_block`: the saved prefect-aws block's keys and endpoint are used."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    gen = _sqs(moto_endpoint, monkeypatch)
    broker = next(gen)
    try:
        creds = save_block(aws_credentials(moto_endpoint), "aws")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(key)  # only the block's keys remain
        relay = broker.relay.model_copy(update={"url": None, "aws_credentials_block": creds})
        land(sqlite_ledger, 3)
        assert relay_outbox(sqlite_ledger, relay).published == 3
        assert broker.count() == 3
    finally:
        gen.close()
