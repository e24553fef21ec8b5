"""Transactional outbox relay: hands the ingestion queue's messages to a real broker.

A landed item's queue message is written with its ledger row in one transaction (the
outbox). The relay reads the messages not yet published (`ingest_queue.published_at` is
NULL) in `created_at` order, publishes each one with the broker's confirmation, then sets
`published_at`. It runs at the end of each source run (when the Ingestion Queue block names
a relay block) and as `ingest-ops relay` for stragglers.

Delivery is at-least-once to the broker: a relay that dies after the broker confirmed but
before `published_at` was committed publishes the message again on its next pass. The
deterministic message id is the broker's dedupe key where the broker has one:

- NATS JetStream: the `Nats-Msg-Id` header (dropped as duplicate within the stream's
  duplicate window, 2 minutes by default);
- Amazon SQS FIFO queues (`*.fifo`): `MessageDeduplicationId` (5-minute window);
  standard queues have no dedupe;
- Redis Streams: a `SET NX EX` of the id and the `XADD` in one Lua script (atomic), so a
  second publish within `dedupe_ttl_seconds` adds nothing;
- RabbitMQ: no broker dedupe; the id travels as the `message_id` property so consumers
  can drop repeats.

Consumers must be idempotent on `message_id` either way (outside the windows, or on
RabbitMQ and SQS standard queues, a repeat can reach them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator
from sqlalchemy import func, select, update

from blocks.core import ledger_schema as t
from blocks.core.errors import ConfigError, CredentialsError, IngestError
from blocks.core.ledger import Ledger, utcnow
from blocks.core.logos import code_example, logo_url

BrokerKind = Literal["redis", "rabbitmq", "nats", "sqs"]

_DEFAULT_URLS: dict[str, str] = {
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "nats": "nats://127.0.0.1:4222",
    "sqs": "",
}
_PACKAGES = {"redis": "redis", "rabbitmq": "pika", "nats": "nats-py", "sqs": "boto3"}

# Redis: publish once per id within the TTL. KEYS[1] dedupe key, KEYS[2] stream.
_REDIS_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local args = {'XADD', KEYS[2]}
  if tonumber(ARGV[5]) > 0 then
    table.insert(args, 'MAXLEN'); table.insert(args, '~'); table.insert(args, ARGV[5])
  end
  table.insert(args, '*')
  table.insert(args, 'message_id'); table.insert(args, ARGV[2])
  table.insert(args, 'source'); table.insert(args, ARGV[3])
  table.insert(args, 'payload'); table.insert(args, ARGV[4])
  return redis.call(unpack(args))
end
return false
"""


class RelayError(IngestError):
    """The broker did not take a message. Nothing is lost: the message stays in the outbox
    (`published_at` NULL) and the next relay pass publishes it."""

    retryable = True


class RelayCredentialsError(CredentialsError):
    """The broker refused the relay's credentials (never retried)."""


class BrokerRelay(Block):
    """Broker relay of the ingestion queue's outbox (Redis Streams, RabbitMQ, NATS
    JetStream or Amazon SQS).

    Name it in the Ingestion Queue block's `relay_block` to publish each run's messages at
    the end of the run, and run `ingest-ops relay --block NAME` for anything left over
    (e.g. after the broker was down). The message body is the queue message's JSON payload;
    its deterministic `message_id` is the broker's dedupe key where the broker has one.
    """

    _block_type_name = "Broker Relay"
    _block_type_slug = "broker-relay"
    _logo_url = logo_url("broker-relay")
    _code_example = code_example("BrokerRelay", "relay", "print(relay.describe())")
    _description = (
        "Publishes the ingestion queue's messages (the transactional outbox) to Redis "
        "Streams, RabbitMQ, NATS JetStream or Amazon SQS, at least once, deduplicated by "
        "message id where the broker can."
    )

    kind: BrokerKind = Field(description="The broker: redis, rabbitmq, nats or sqs.")
    target: str = Field(
        description=(
            "Where messages go: the Redis stream key, the RabbitMQ routing key (queue name "
            "on the default exchange), the NATS subject (a JetStream stream must capture "
            "it) or the SQS queue name or URL (*.fifo: deduplicated)."
        ),
    )
    url: SecretStr | None = Field(
        default=None,
        description=(
            "Broker URL, may hold credentials: redis://[:password@]host:6379/0, "
            "amqp://user:password@host:5672/%2F, nats://[user:password@]host:4222. "
            "Empty: the local default. SQS: empty (AWS endpoint) or an endpoint URL."
        ),
    )
    exchange: str = Field(default="", description="RabbitMQ exchange ('' = the default exchange).")
    region: str | None = Field(default=None, description="SQS: AWS region.")
    aws_credentials_block: str | None = Field(
        default=None,
        description=(
            "SQS: name of a saved prefect-aws 'AWS Credentials' block (its client "
            "parameters, e.g. endpoint_url, apply). Empty: boto3's default chain."
        ),
    )
    dedupe_ttl_seconds: int = Field(
        default=86400,
        ge=60,
        description="Redis: how long a published id blocks a second publish (seconds).",
    )
    redis_maxlen: int = Field(
        default=0, ge=0, description="Redis: approximate stream MAXLEN (0 = unbounded)."
    )
    batch_size: int = Field(
        default=100, ge=1, le=10000, description="Messages read and marked per transaction."
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Connect and confirm timeout (seconds)."
    )

    @field_validator("target")
    @classmethod
    def _target_set(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty; name the stream, queue or subject to publish to")
        return value.strip()

    # ----------------------------------------------------------------- naming
    def broker_url(self) -> str:
        """The URL in use, with its secret (not for logs: see `describe`)."""
        given = self.url.get_secret_value().strip() if self.url else ""
        return given or _DEFAULT_URLS[self.kind]

    def describe(self) -> str:
        """Where messages go, safe for logs (no password)."""
        where = _mask(self.broker_url()) or "AWS"
        return f"{self.kind} {self.target!r} at {where}"

    def _scrub(self, text: str) -> str:
        """Remove the URL's secrets from an error text."""
        for secret in _secrets_in(self.broker_url()):
            text = text.replace(secret, "***")
        return text

    def publisher(self) -> Publisher:
        """Connect to the broker (RelayError / RelayCredentialsError when it cannot)."""
        makers: dict[str, Callable[[BrokerRelay], Publisher]] = {
            "redis": _RedisPublisher,
            "rabbitmq": _RabbitPublisher,
            "nats": _NatsPublisher,
            "sqs": _SqsPublisher,
        }
        try:
            return makers[self.kind](self)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "BrokerRelay.kind",
                f"{self.kind} needs the {_PACKAGES[self.kind]!r} package: "
                "pip install 'prefect-ingest[brokers]'",
            ) from exc
        except IngestError:
            raise
        except Exception as exc:
            raise self.error(exc, "cannot connect") from exc

    def error(self, exc: BaseException, doing: str) -> IngestError:
        """A broker exception as RelayError (or RelayCredentialsError), naming the broker,
        with no secret in its text."""
        if isinstance(exc, IngestError):
            return exc
        text = self._scrub(_reason(exc)[:500])
        if _is_auth_error(exc):
            return RelayCredentialsError(
                "BrokerRelay.url", f"{self.describe()} refused the credentials ({text})"
            )
        return RelayError(f"{self.describe()}: {doing}: {text}")


class Publisher(Protocol):
    def publish(self, message_id: str, source: str, body: bytes) -> bool:
        """Publish with the broker's confirmation; True when the broker dropped it as a
        duplicate (where it can tell)."""

    def close(self) -> None: ...


# --------------------------------------------------------------------- publishers
class _RedisPublisher:
    def __init__(self, relay: BrokerRelay) -> None:
        import redis

        self.relay = relay
        self.client = redis.Redis.from_url(
            relay.broker_url(),
            socket_connect_timeout=relay.timeout_seconds,
            socket_timeout=relay.timeout_seconds,
        )
        self.client.ping()  # fail here (down, wrong password) rather than on the first message
        self.script = self.client.register_script(_REDIS_ONCE)

    def publish(self, message_id: str, source: str, body: bytes) -> bool:
        stream = self.relay.target
        added = self.script(
            keys=[f"{stream}:published:{message_id}", stream],
            args=[self.relay.dedupe_ttl_seconds, message_id, source, body, self.relay.redis_maxlen],
        )
        return added is None

    def close(self) -> None:
        self.client.close()


class _RabbitPublisher:
    def __init__(self, relay: BrokerRelay) -> None:
        import pika

        pika_log = logging.getLogger("pika")
        if pika_log.level == logging.NOTSET:
            # pika logs a failed connect at ERROR, traceback and all, five times over; the
            # RelayError says it once, naming the broker.
            pika_log.setLevel(logging.CRITICAL)
        self.relay = relay
        self.pika = pika
        params = pika.URLParameters(relay.broker_url())
        params.socket_timeout = relay.timeout_seconds
        params.blocked_connection_timeout = relay.timeout_seconds
        params.connection_attempts = 1
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()  # basic_publish returns once the broker confirmed

    def publish(self, message_id: str, source: str, body: bytes) -> bool:
        props = self.pika.BasicProperties(
            message_id=message_id,
            content_type="application/json",
            delivery_mode=2,  # persistent
            headers={"source": source},
        )
        try:
            # mandatory: a message no queue takes is returned (UnroutableError), not lost
            self.channel.basic_publish(
                self.relay.exchange, self.relay.target, body, props, mandatory=True
            )
        except self.pika.exceptions.UnroutableError as exc:
            raise RelayError(
                f"{self.relay.describe()}: no queue is bound to routing key "
                f"{self.relay.target!r} on exchange {self.relay.exchange!r}; declare it"
            ) from exc
        return False  # RabbitMQ has no broker-side dedupe

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:  # already closed by the broker
            pass


class _NatsPublisher:
    """nats-py is asyncio-only: its loop runs in a thread of its own, so the relay works
    the same from a sync flow, a task thread or a CLI."""

    def __init__(self, relay: BrokerRelay) -> None:
        import nats

        self.relay = relay
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nc = None
        seen: list[BaseException] = []

        async def keep(exc: BaseException) -> None:
            seen.append(exc)  # the real cause, behind nats-py's NoServersError

        try:
            self.nc = self._run(
                nats.connect(
                    relay.broker_url(),
                    connect_timeout=max(1, int(relay.timeout_seconds)),
                    allow_reconnect=False,
                    # 0 would mean "retry forever" on the first connect; 1: two tries
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.2,
                    error_cb=keep,
                    disconnected_cb=_ignore,
                    closed_cb=_ignore,
                )
            )
            self.js = self.nc.jetstream(timeout=relay.timeout_seconds)
        except nats.errors.NoServersError as exc:
            self.close()
            raise seen[-1] if seen else exc from exc
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(
            timeout=self.relay.timeout_seconds * 3
        )

    def publish(self, message_id: str, source: str, body: bytes) -> bool:
        from nats.errors import NoRespondersError
        from nats.js.errors import NoStreamResponseError

        try:
            ack = self._run(
                self.js.publish(
                    self.relay.target,
                    body,
                    headers={"Nats-Msg-Id": message_id, "Ingest-Source": source},
                )
            )
        except (NoRespondersError, NoStreamResponseError) as exc:
            raise RelayError(
                f"{self.relay.describe()}: no JetStream stream captures subject "
                f"{self.relay.target!r}; create one (nats stream add)"
            ) from exc
        return bool(ack.duplicate)

    def close(self) -> None:
        if self.nc is not None:
            try:
                self._run(self.nc.close())
            except Exception:
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class _SqsPublisher:
    def __init__(self, relay: BrokerRelay) -> None:
        from botocore.config import Config

        self.relay = relay
        config = Config(
            connect_timeout=relay.timeout_seconds,
            read_timeout=relay.timeout_seconds,
            retries={"max_attempts": 2},
        )
        endpoint = relay.broker_url() or None
        if relay.aws_credentials_block:
            from prefect_aws import AwsCredentials

            from pipeline.block_loading import load_named_block

            creds = load_named_block(
                AwsCredentials, relay.aws_credentials_block, "BrokerRelay.aws_credentials_block"
            )
            session = creds.get_boto3_session()
            params = creds.aws_client_parameters.get_params_override()
            if "config" in params:  # the block's own botocore config, our timeouts on top
                config = params.pop("config").merge(config)
            params.setdefault("region_name", relay.region or creds.region_name)
            if endpoint:
                params["endpoint_url"] = endpoint
            self.client = session.client("sqs", config=config, **params)
        else:
            import boto3

            self.client = boto3.client(
                "sqs", region_name=relay.region, endpoint_url=endpoint, config=config
            )
        target = relay.target
        self.fifo = target.endswith(".fifo")
        if "://" in target:
            self.queue_url = target
        else:  # a name: also checks the credentials and that the queue exists
            self.queue_url = self.client.get_queue_url(QueueName=target)["QueueUrl"]

    def publish(self, message_id: str, source: str, body: bytes) -> bool:
        self.client.send_message(
            QueueUrl=self.queue_url, MessageBody=body.decode(), **self._fields(message_id, source)
        )
        return False  # SQS does not say whether it dropped a duplicate

    batch = 10  # SendMessageBatch's maximum

    def publish_batch(self, items: list[tuple[str, str, bytes]]) -> tuple[int, Exception | None]:
        """One SendMessageBatch; (messages taken from the start, the first entry's error).
        Entries after a failed one that SQS took anyway are published again next pass
        (FIFO: deduplicated; standard: a repeat for idempotent consumers)."""
        entries = [
            {"Id": str(i), "MessageBody": body.decode(), **self._fields(mid, source)}
            for i, (mid, source, body) in enumerate(items)
        ]
        answer = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        failed = {int(f["Id"]): f for f in answer.get("Failed", [])}
        if not failed:
            return len(items), None
        first = min(failed)
        entry = failed[first]
        return first, RelayError(
            f"{self.relay.describe()}: SQS refused message {items[first][0]}: "
            f"{entry.get('Code')}: {entry.get('Message', '')}",
            retryable=not entry.get("SenderFault", False),
        )

    def _fields(self, message_id: str, source: str) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "MessageAttributes": {
                "message_id": {"DataType": "String", "StringValue": message_id},
                "source": {"DataType": "String", "StringValue": source},
            }
        }
        if self.fifo:
            # FIFO: the id is the dedupe key; one group per source keeps a source's order.
            fields |= {"MessageDeduplicationId": message_id, "MessageGroupId": source}
        return fields

    def close(self) -> None:
        self.client.close()


async def _ignore(*_args: Any) -> None:
    return None


# --------------------------------------------------------------------- relay
@dataclass
class RelayResult:
    """One relay pass: how many messages the broker took, and whether it stopped early."""

    broker: str
    published: int = 0
    duplicates: int = 0  # confirmed by the broker as already there (dedupe)
    pending: int = 0  # still unpublished in the outbox after this pass (for the filter)
    seconds: float = 0.0
    error: str | None = None

    def row(self) -> dict[str, Any]:
        return asdict(self)


def relay_outbox(
    ledger: Ledger,
    relay: BrokerRelay,
    *,
    source: str | None = None,
    limit: int | None = None,
) -> RelayResult:
    """Publish the unpublished queue messages (of `source`, or all) in `created_at` order,
    at most `limit`. Raises RelayError (or RelayCredentialsError) naming the broker when it
    stops on a failure; the messages published before it are marked, the failed one gets
    `publish_attempts` + 1 and `publish_error`, the rest wait for the next pass."""
    started = time.monotonic()
    result = RelayResult(broker=relay.describe())
    publisher: Publisher | None = None
    failure: IngestError | None = None
    try:
        while limit is None or result.published + result.duplicates < limit:
            taken = result.published + result.duplicates
            room = relay.batch_size if limit is None else min(relay.batch_size, limit - taken)
            with ledger.transaction() as conn:
                rows = conn.execute(_unpublished(ledger.dialect, source, room)).all()
                if not rows:
                    break
                if publisher is None:
                    try:
                        publisher = relay.publisher()
                    except IngestError as exc:
                        failure = exc
                        _mark_failed(conn, rows[0].message_id, str(exc))
                        break
                done: list[str] = []
                for chunk in _chunks(rows, getattr(publisher, "batch", 1)):
                    took, duplicates, exc = _send(publisher, chunk)
                    _count(result, done, chunk[:took], duplicates)
                    if exc is not None:
                        failure = relay.error(exc, f"publishing message {chunk[took].message_id}")
                        break
                if done:
                    conn.execute(
                        update(t.queue)
                        .where(t.queue.c.message_id.in_(done))
                        .values(published_at=utcnow(), publish_error=None)
                    )
                if failure is not None:
                    # Keep order: stop at the first message the broker did not take.
                    _mark_failed(conn, rows[len(done)].message_id, str(failure))
                    break
                if len(rows) < room:
                    break
    finally:
        if publisher is not None:
            publisher.close()
        result.pending = pending_count(ledger, source)
        result.seconds = round(time.monotonic() - started, 3)
    if failure is not None:
        result.error = str(failure)
        failure.relay_result = result  # type: ignore[attr-defined]
        raise failure
    return result


# SendMessageBatch refuses a request over 256 KiB in all; stay well under it.
_BATCH_BYTES = 200_000


def _chunks(rows: Any, step: int) -> Iterator[Any]:
    """Rows in order, up to `step` and _BATCH_BYTES of payload per chunk (one at least)."""
    chunk: list[Any] = []
    size = 0
    for row in rows:
        n = len(row.payload.encode())
        if chunk and (len(chunk) == step or size + n > _BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += n
    if chunk:
        yield chunk


def _send(publisher: Publisher, chunk: Any) -> tuple[int, list[bool], Exception | None]:
    """Publish one message, or a batch where the publisher takes several per request (SQS):
    (how many from the start the broker took, their duplicate flags, the error if any)."""
    try:
        if len(chunk) > 1:
            taken, exc = publisher.publish_batch(  # type: ignore[attr-defined]
                [(r.message_id, r.source, r.payload.encode()) for r in chunk]
            )
            return taken, [False] * taken, exc
        row = chunk[0]
        return 1, [publisher.publish(row.message_id, row.source, row.payload.encode())], None
    except Exception as exc:
        return 0, [], exc


def _count(result: RelayResult, done: list[str], rows: Any, duplicates: list[bool]) -> None:
    for row, duplicate in zip(rows, duplicates, strict=True):
        done.append(row.message_id)
        if duplicate:
            result.duplicates += 1
        else:
            result.published += 1


def _unpublished(dialect: str, source: str | None, limit: int) -> Any:
    q = t.queue.c
    stmt = select(q.message_id, q.source, q.payload).where(q.published_at.is_(None))
    if source is not None:
        stmt = stmt.where(q.source == source)
    stmt = stmt.order_by(q.created_at, q.message_id).limit(limit)
    if dialect == "postgresql":
        # Two relays take different rows instead of publishing the same ones twice.
        stmt = stmt.with_for_update(skip_locked=True)
    return stmt


def _mark_failed(conn: Any, message_id: str, error: str) -> None:
    q = t.queue.c
    conn.execute(
        update(t.queue)
        .where(q.message_id == message_id)
        .values(
            publish_attempts=func.coalesce(q.publish_attempts, 0) + 1,
            publish_error=error[:4000],
        )
    )


def pending_count(ledger: Ledger, source: str | None = None) -> int:
    """Messages not yet published to the broker (of `source`, or all)."""
    stmt = select(func.count()).select_from(t.queue).where(t.queue.c.published_at.is_(None))
    if source is not None:
        stmt = stmt.where(t.queue.c.source == source)
    with ledger.transaction() as conn:
        return int(conn.execute(stmt).scalar() or 0)


# --------------------------------------------------------------------- helpers
def _mask(url: str) -> str:
    """`scheme://user:***@host/...` (no password, no token); '' stays ''."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username and parts.password:
        host = f"{quote(parts.username)}:***@{host}"
    elif parts.username:
        host = f"***@{host}"  # nats://token@host: the user part is the secret
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _reason(exc: BaseException) -> str:
    """`Type: first line` of the innermost useful error (pika wraps the socket error in
    errors whose text is empty or a list of attempts)."""
    attempts = getattr(exc, "exceptions", None)
    if attempts:
        return _reason(attempts[-1])
    wrapped = getattr(exc, "exception", None)  # pika's connector errors
    if isinstance(wrapped, BaseException):
        return _reason(wrapped)
    text = str(exc).strip()
    inner = [a for a in exc.args if isinstance(a, BaseException)]
    if inner and (not text or hasattr(inner[0], "exceptions")):
        return _reason(inner[0])
    if not text and exc.__cause__ is not None:
        return _reason(exc.__cause__)
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _secrets_in(url: str) -> list[str]:
    if not url:
        return []
    parts = urlsplit(url)
    found = [parts.password, parts.username if not parts.password else None]
    return [s for s in found if s and len(s) >= 3]


def _is_auth_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    if "Authentication" in name:  # redis AuthenticationError, pika ProbableAuthenticationError
        return True
    text = str(exc).lower()
    if "authorization violation" in text or "access_refused" in text:
        return True  # nats, pika
    if name == "ResponseError" and text.startswith(("auth", "wrongpass", "noauth")):
        return True  # redis: AUTH refused, or a password given to a server without one
    code = getattr(exc, "response", {}) or {}
    if isinstance(code, dict):
        err = (code.get("Error") or {}).get("Code", "")
        return err in {
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "UnrecognizedClientException",
            "AccessDenied",
            "AccessDeniedException",
        }
    return False


def summary_line(result: RelayResult) -> str:
    return json.dumps(result.row(), default=str)


# --------------------------------------------------------------------- end of a run
def load_relay(name: str, where: str) -> BrokerRelay:
    """The saved BrokerRelay `name`; ConfigError naming `where` when it cannot load."""
    from pipeline.block_loading import load_named_block

    return load_named_block(BrokerRelay, name, where)


def relay_after_run(
    ledger: Ledger, relay_block: str | None, source_id: str, totals: dict[str, Any]
) -> IngestError | None:
    """The relay step at the end of a source run: publish this source's unpublished
    messages (this run's and any a broker outage left behind). Returns the error instead
    of raising, so the caller decides the run's state after cleaning up; the landed items
    stay landed either way and the messages wait in the outbox."""
    if not relay_block:
        return None
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    try:
        result = relay_task(ledger, relay_block, source_id)
    except IngestError as exc:
        result = getattr(exc, "relay_result", None)
        if result is not None:
            totals["published"] = result.published + result.duplicates
            totals["unpublished"] = result.pending
        logger.error(
            "relay: %s. The landed items stay landed and their messages stay in the outbox: "
            "the next run's relay or `ingest-ops relay` publishes them",
            exc,
        )
        return exc
    totals["published"] = result.published + result.duplicates
    totals["unpublished"] = result.pending
    logger.info(
        "relay: %d message(s) published to %s (%d already there), %d left",
        result.published + result.duplicates,
        result.broker,
        result.duplicates,
        result.pending,
    )
    return None


def _relay_task(ledger: Ledger, relay_block: str, source_id: str) -> RelayResult:
    relay = load_relay(relay_block, "IngestionQueue.relay_block")
    return relay_outbox(ledger, relay, source=source_id)


def _make_task() -> Any:
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    # A task of its own: the relay step shows in the run's graph with its own state.
    return task(name="relay", cache_policy=NO_CACHE, persist_result=False)(_relay_task)


relay_task = _make_task()


def relay_from_cli(
    ledger: Ledger,
    block: str | None,
    queue_block: str | None,
    source: str | None = None,
    limit: int | None = None,
) -> RelayResult:
    """`ingest-ops relay`: the relay block named by --block, else the one the Ingestion
    Queue block --queue-block names in its `relay_block`."""
    if not block and queue_block:
        from blocks.core.ingestion_queue import IngestionQueue
        from pipeline.block_loading import load_named_block

        block = load_named_block(IngestionQueue, queue_block, "--queue-block").relay_block
        if not block:
            raise ConfigError(
                "--queue-block", f"Ingestion Queue {queue_block!r} names no relay_block"
            )
    if not block:
        raise ConfigError("--block", "name a saved 'Broker Relay' block (or give --queue-block)")
    return relay_outbox(ledger, load_relay(block, "--block"), source=source, limit=limit)
