"""The outbox relay against the real brokers on this machine: Redis 6379, RabbitMQ 5672
(guest/guest), NATS 4222 with JetStream, and moto's SQS. A broker that is "down" is a
closed port on 127.0.0.1 (the shared services cannot be stopped)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from sqlalchemy import select

from blocks.core import ledger_schema as t
from blocks.core.errors import CredentialsError
from blocks.core.ingestion_queue import IngestionQueue
from blocks.core.ledger import LandedRecord, Ledger
from blocks.core.outbox import (
    BrokerRelay,
    RelayError,
    pending_count,
    relay_outbox,
)
from tests.conftest import server_missing, sqlite_connector

pytest_plugins = ["tests.objstore_servers"]  # moto_endpoint
KINDS = ["redis", "rabbitmq", "nats", "sqs"]
EXAMPLES = int(os.environ.get("INGEST_PROPERTY_EXAMPLES", "8"))


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: the broker is "down"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Broker:
    """A fresh target on a real broker: the relay block for it, and how to read it back."""

    relay: BrokerRelay
    count: Callable[[], int]  # messages the broker holds
    ids: Callable[[], list[str]]  # their message ids, in broker order
    down_url: str  # same broker kind on a closed port
    dedupes: bool  # the broker drops a republished id


def _redis() -> Iterator[Broker]:
    if not _port_open(6379):
        server_missing("Redis at 127.0.0.1:6379", "port closed")
    import redis

    client = redis.Redis()
    stream = f"test-outbox-{uuid.uuid4().hex[:8]}"

    def ids() -> list[str]:
        return [f[b"message_id"].decode() for _id, f in client.xrange(stream)]

    try:
        yield Broker(
            BrokerRelay(kind="redis", target=stream),
            lambda: client.xlen(stream),
            ids,
            f"redis://127.0.0.1:{closed_port()}/0",
            True,
        )
    finally:
        keys = list(client.scan_iter(f"{stream}:published:*")) + [stream]
        client.delete(*keys)
        client.close()


def _rabbitmq() -> Iterator[Broker]:
    if not _port_open(5672):
        server_missing("RabbitMQ at 127.0.0.1:5672", "port closed")
    import pika

    conn = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F"))
    channel = conn.channel()
    name = f"test-outbox-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name, durable=True)

    def count() -> int:
        return channel.queue_declare(name, passive=True).method.message_count

    def ids() -> list[str]:
        out = []
        while True:
            method, props, _body = channel.basic_get(name, auto_ack=False)
            if method is None:
                break
            out.append(props.message_id)
        channel.basic_recover(requeue=True)  # put them back for count()
        return out

    try:
        yield Broker(
            BrokerRelay(kind="rabbitmq", target=name),
            count,
            ids,
            f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F",
            False,
        )
    finally:
        channel.queue_delete(name)
        conn.close()


def _nats() -> Iterator[Broker]:
    if not _port_open(4222):
        server_missing("NATS at 127.0.0.1:4222", "port closed")
    import nats

    stream = f"TESTOUTBOX{uuid.uuid4().hex[:8].upper()}"
    subject = f"ingest.test.{stream.lower()}"

    async def call(fn):
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            return await fn(nc.jetstream(), nc)
        finally:
            await nc.close()

    asyncio.run(call(lambda js, _nc: js.add_stream(name=stream, subjects=[subject])))

    def count() -> int:
        info = asyncio.run(call(lambda js, _nc: js.stream_info(stream)))
        return info.state.messages

    async def _ids(js, _nc) -> list[str]:
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append(msg.headers["Nats-Msg-Id"])
        return out

    try:
        yield Broker(
            BrokerRelay(kind="nats", target=subject),
            count,
            lambda: asyncio.run(call(_ids)),
            f"nats://127.0.0.1:{closed_port()}",
            True,
        )
    finally:
        asyncio.run(call(lambda js, _nc: js.delete_stream(stream)))


def _sqs(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    name = f"test-outbox-{uuid.uuid4().hex[:8]}.fifo"
    url = client.create_queue(
        QueueName=name, Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    )["QueueUrl"]

    def count() -> int:
        attrs = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    def ids() -> list[str]:
        out: list[str] = []
        while True:  # moto: one group per source, delivered in order, 10 at a time
            got = client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                break
            for m in got:
                out.append(m["MessageAttributes"]["message_id"]["StringValue"])
                client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return out

    try:
        yield Broker(
            BrokerRelay(kind="sqs", url=SecretStr(endpoint), target=name, region="us-east-1"),
            count,
            ids,
            f"http://127.0.0.1:{closed_port()}",
            True,
        )
    finally:
        client.delete_queue(QueueUrl=url)


@pytest.fixture(params=KINDS)
def broker(request, monkeypatch) -> Iterator[Broker]:
    if request.param == "sqs":
        yield from _sqs(request.getfixturevalue("moto_endpoint"), monkeypatch)
    else:
        yield from {"redis": _redis, "rabbitmq": _rabbitmq, "nats": _nats}[request.param]()


def land(ledger: Ledger, n: int, source: str = "src", start: int = 0) -> list[str]:
    """Record n landed items with their queue messages; their message ids, in order."""
    queue = IngestionQueue(landing_dir="/tmp/unused-landing", fsync=False)
    out = []
    for i in range(start, start + n):
        rec = LandedRecord(
            source=source,
            name=f"f{i:05d}.csv",
            sha256=f"{i:064x}",
            size=i,
            landed_path=f"/landing/{source}/f{i:05d}.csv",
            flow_run_id=None,
        )
        message = queue.message_for(rec)
        assert ledger.record_landed(rec, message)
        out.append(message.message_id)
    return out


def outbox_rows(ledger: Ledger) -> dict[str, dict]:
    with ledger.transaction() as conn:
        rows = conn.execute(select(t.queue)).mappings().all()
    return {r["message_id"]: dict(r) for r in rows}


# --------------------------------------------------------------------------- tests
def test_publishes_each_message_once_in_order(broker: Broker, sqlite_ledger: Ledger) -> None:
    ids = land(sqlite_ledger, 7)
    result = relay_outbox(sqlite_ledger, broker.relay.model_copy(update={"batch_size": 3}))
    assert (result.published, result.duplicates, result.pending) == (7, 0, 0)
    assert broker.count() == 7
    # a second pass has nothing to publish
    assert relay_outbox(sqlite_ledger, broker.relay).published == 0
    assert broker.count() == 7
    rows = outbox_rows(sqlite_ledger)
    assert all(rows[i]["published_at"] is not None for i in ids)
    assert broker.ids() == ids  # created_at order, the payload's message_id
    body = rows[ids[0]]["payload"]
    assert json.loads(body)["message_id"] == ids[0]


def test_republish_after_crash_is_deduped_where_the_broker_can(
    broker: Broker, sqlite_ledger: Ledger
) -> None:
    """A relay that died after the broker confirmed but before published_at was committed:
    the next pass publishes the same ids again."""
    ids = land(sqlite_ledger, 4)
    publisher = broker.relay.publisher()
    try:
        rows = outbox_rows(sqlite_ledger)
        for mid in ids[:3]:  # confirmed by the broker, never marked
            publisher.publish(mid, "src", rows[mid]["payload"].encode())
    finally:
        publisher.close()
    result = relay_outbox(sqlite_ledger, broker.relay)
    assert result.pending == 0
    if broker.dedupes:
        assert broker.count() == 4  # exactly once at the broker
        if broker.relay.kind in ("redis", "nats"):  # these say so in the confirm
            assert (result.published, result.duplicates) == (1, 3)
    else:  # RabbitMQ: at least once; consumers drop repeats by message_id
        assert broker.count() == 7


def test_broker_down_loses_nothing_and_publishes_later(
    broker: Broker, sqlite_ledger: Ledger
) -> None:
    ids = land(sqlite_ledger, 5)
    down = broker.relay.model_copy(update={"url": SecretStr(broker.down_url), "timeout_seconds": 2})
    with pytest.raises(RelayError) as err:
        relay_outbox(sqlite_ledger, down)
    text = str(err.value)
    port = broker.down_url.rsplit(":", 1)[1].split("/")[0]
    assert broker.relay.kind in text and f"127.0.0.1:{port}" in text, text
    assert "guest:guest" not in text
    assert err.value.relay_result.pending == 5  # type: ignore[attr-defined]
    rows = outbox_rows(sqlite_ledger)
    assert rows[ids[0]]["publish_attempts"] == 1 and rows[ids[0]]["publish_error"]
    assert all(r["published_at"] is None for r in rows.values())
    assert broker.count() == 0
    # the broker is back: everything, once, in order
    result = relay_outbox(sqlite_ledger, broker.relay)
    assert (result.published, result.pending) == (5, 0)
    assert broker.count() == 5
    assert outbox_rows(sqlite_ledger)[ids[0]]["publish_error"] is None


def test_wrong_credentials_are_a_clear_error_without_the_secret(sqlite_ledger: Ledger) -> None:
    for port, kind in ((5672, "rabbitmq"), (6379, "redis")):
        if not _port_open(port):
            server_missing(f"{kind} at 127.0.0.1:{port}", "port closed")
    land(sqlite_ledger, 2)
    secret = "not-the-password-xyz"
    for relay in (
        BrokerRelay(
            kind="rabbitmq", url=SecretStr(f"amqp://guest:{secret}@127.0.0.1:5672/%2F"), target="q"
        ),
        BrokerRelay(
            kind="redis", url=SecretStr(f"redis://bob:{secret}@127.0.0.1:6379"), target="s"
        ),
    ):
        with pytest.raises(CredentialsError) as err:
            relay_outbox(sqlite_ledger, relay)
        assert "refused the credentials" in str(err.value)
        assert relay.kind in str(err.value) and secret not in str(err.value)
        assert err.value.retryable is False
        assert secret not in repr(relay) and secret not in relay.describe()
    assert pending_count(sqlite_ledger) == 2


def test_missing_target_is_a_clear_error(sqlite_ledger: Ledger) -> None:
    if not _port_open(5672) or not _port_open(4222):
        server_missing("RabbitMQ/NATS", "port closed")
    land(sqlite_ledger, 1)
    nowhere = f"no-such-{uuid.uuid4().hex[:6]}"
    with pytest.raises(RelayError, match="no queue is bound to routing key"):
        relay_outbox(sqlite_ledger, BrokerRelay(kind="rabbitmq", target=nowhere))
    with pytest.raises(RelayError, match="no JetStream stream captures subject"):
        relay_outbox(sqlite_ledger, BrokerRelay(kind="nats", target=f"nowhere.{nowhere}"))
    with pytest.raises(ValidationError, match="target"):
        BrokerRelay(kind="redis", target=" ")
    assert pending_count(sqlite_ledger) == 1


def test_two_relays_on_postgresql_do_not_double_publish(ledger: Ledger) -> None:
    """FOR UPDATE SKIP LOCKED: two relays at once take different rows. Checked on RabbitMQ,
    which has no broker dedupe, so any double publish would show in its count."""
    if ledger.dialect != "postgresql":
        pytest.skip("SQLite has one writer; two relays there rely on broker dedupe")
    gen = _rabbitmq()
    broker = next(gen)
    try:
        land(ledger, 60)
        relay = broker.relay.model_copy(update={"batch_size": 5})
        errors: list[BaseException] = []

        def go() -> None:
            try:
                relay_outbox(ledger, relay)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=go) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert broker.count() == 60
        assert pending_count(ledger) == 0
    finally:
        gen.close()


def flaky(fail_at: list[int]):
    """Patch BrokerRelay.publisher so the real Redis publisher fails at the chosen calls
    (the narrowest boundary: a broker dropping the connection mid-batch)."""
    real_publisher = BrokerRelay.publisher
    calls: list[str] = []

    def publisher(self):
        real = real_publisher(self)

        class Flaky:
            def publish(self, mid, source, body):
                calls.append(mid)
                if len(calls) in fail_at:
                    raise ConnectionError("connection reset by peer")
                return real.publish(mid, source, body)

            def close(self):
                real.close()

        return Flaky()

    return patch.object(BrokerRelay, "publisher", publisher)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    n=st.integers(min_value=0, max_value=25),
    batch=st.integers(min_value=1, max_value=8),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=10)),
    fail_at=st.lists(st.integers(min_value=1, max_value=40), max_size=4),
)
def test_relay_passes_with_failures_publish_everything_once_in_order(
    tmp_path_factory, n: int, batch: int, limit: int | None, fail_at: list[int]
) -> None:
    """Whatever the batch size, limit and failures, repeated passes end with every
    message at the broker exactly once (Redis dedupe), in created_at order, none lost."""
    gen = _redis()
    broker = next(gen)
    ledger = Ledger(database=sqlite_connector(Path(tmp_path_factory.mktemp("p")) / "l.db"))
    try:
        ids = land(ledger, n)
        relay = broker.relay.model_copy(update={"batch_size": batch})
        with flaky(fail_at):
            for _ in range(60):
                try:
                    result = relay_outbox(ledger, relay, limit=limit)
                except RelayError as exc:
                    assert "connection reset by peer" in str(exc)
                    continue
                if result.pending == 0:
                    break
        assert pending_count(ledger) == 0
        assert broker.ids() == ids
    finally:
        ledger.dispose()
        gen.close()


def test_sqs_batch_stops_at_the_first_refused_entry(
    sqlite_ledger: Ledger, moto_endpoint: str, monkeypatch
) -> None:
    """SendMessageBatch answers per entry: the messages before the first refused one are
    marked, it gets the error, the rest wait (moto refuses no entry: the answer for the
    third is replaced, the narrowest boundary)."""
    from blocks.core import outbox

    gen = _sqs(moto_endpoint, monkeypatch)
    broker = next(gen)
    real = outbox._SqsPublisher.publish_batch
    calls = []

    def refuse_third(self, items):
        calls.append(len(items))
        if len(calls) > 1:
            return real(self, items)
        took, _ = real(self, items[:2])
        return took, RelayError("sqs: SQS refused message: InvalidParameterValue")

    try:
        ids = land(sqlite_ledger, 12)
        with patch.object(outbox._SqsPublisher, "publish_batch", refuse_third):
            with pytest.raises(RelayError, match="InvalidParameterValue"):
                relay_outbox(sqlite_ledger, broker.relay)
            rows = outbox_rows(sqlite_ledger)
            assert [i for i in ids if rows[i]["published_at"]] == ids[:2]
            assert rows[ids[2]]["publish_attempts"] == 1
            result = relay_outbox(sqlite_ledger, broker.relay)
        assert calls == [10, 10]  # 10 per request, then the 10 left
        assert (result.published, result.pending) == (10, 0)
        assert broker.ids() == ids
    finally:
        gen.close()
