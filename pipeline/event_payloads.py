"""What an event tells a source run to take: the flow's `trigger` parameter, parsed.

A webhook body or a manual run's `trigger` may name the items to ingest, or the logical
day, in one of these shapes (the real JSON the senders post):

- S3 event notification: `{"Records": [{"eventSource": "aws:s3", "eventName":
  "ObjectCreated:Put", "s3": {"bucket": {"name": B}, "object": {"key": K}}}, ...]}`.
  Keys in these records are URL-encoded (`+` for a space), so they are decoded. Records
  that are not `ObjectCreated:*` (a removal, say) name nothing to take and are ignored.
  S3's `s3:TestEvent` (sent when a notification is set up) names nothing.
- S3 through EventBridge: `{"source": "aws.s3", "detail": {"bucket": {"name": B},
  "object": {"key": K}}}` (keys not encoded there).
- GCS Pub/Sub notification, push body: `{"message": {"attributes": {"bucketId": B,
  "objectId": K, "eventType": "OBJECT_FINALIZE", ...}, "data": base64(JSON_API_V1 object
  resource)}, "subscription": ...}`; the attributes are used, else `data`'s
  `name`/`bucket`. An `eventType` other than `OBJECT_FINALIZE` names nothing.
- a GCS object resource itself (`{"kind": "storage#object", "name": K, "bucket": B}`).
- a plain list: `{"items": ["in/a.csv", "s3://bucket/in/b.csv", "gs://bucket/c.csv"]}`
  (`names`, `keys`, `paths` are the same key): names as the source lists them.
- a logical day: `{"date": "YYYY-MM-DD"}`, alone (list the source for that day) or with
  any of the above.

A trigger with none of these keys (`Records`, `detail`+`source`, `message`, `kind`,
`items`/`names`/`keys`/`paths`, `date`) is a plain notice: logged, and the run lists the
source as before. A trigger that has one of them but not its shape fails with a
`ConfigError` naming the field (`trigger.Records[0].s3.object.key`), before any I/O.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from blocks.core.errors import ConfigError
from blocks.core.source import NamedItem

ITEM_KEYS = ("items", "names", "keys", "paths")
MAX_ITEMS = 10_000  # one event naming more is a mistake, not a delivery


@dataclass(frozen=True)
class EventSelection:
    """What a trigger selects. `items` None: list the source as usual; a tuple (maybe
    empty, e.g. a test event): take exactly these. `date`: the run's logical day, if the
    trigger sets it. `shape` names the payload for the log; `ignored` says what the
    trigger held that names nothing to take (removal records, ...)."""

    items: tuple[NamedItem, ...] | None = None
    date: dt.date | None = None
    shape: str = "none"
    ignored: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """One log line: shape, how many items (the first few), the day, what was ignored."""
        parts = [self.shape]
        if self.items is not None:
            shown = ", ".join(repr(i.name) for i in self.items[:5])
            more = f", ... ({len(self.items)} in all)" if len(self.items) > 5 else ""
            parts.append(f"{len(self.items)} item(s): {shown}{more}" if self.items else "no item")
        if self.date is not None:
            parts.append(f"date {self.date.isoformat()}")
        if self.ignored:
            parts.append("ignored: " + "; ".join(self.ignored[:5]))
        return ", ".join(parts)


def parse_trigger(trigger: Mapping[str, Any] | None) -> EventSelection:
    """The items and/or day a trigger names (see the module docstring).

    Raises ConfigError naming `trigger...` for a recognised key with a bad shape."""
    if not trigger:
        return EventSelection()
    if not isinstance(trigger, Mapping):
        raise ConfigError("trigger", f"must be a JSON object, got {type(trigger).__name__}")
    day = _date(trigger["date"], "trigger.date") if "date" in trigger else None
    parsed: EventSelection | None = None
    if "Records" in trigger:
        parsed = _s3_records(trigger["Records"])
    elif trigger.get("Event") == "s3:TestEvent":
        parsed = EventSelection((), shape="S3 test event", ignored=("s3:TestEvent",))
    elif "detail" in trigger and trigger.get("source") == "aws.s3":
        parsed = _eventbridge(trigger)
    elif "message" in trigger:
        parsed = _pubsub(trigger["message"])
    elif trigger.get("kind") == "storage#object":
        parsed = EventSelection((_gcs_object(trigger, "trigger"),), shape="GCS object")
    else:
        given = [k for k in ITEM_KEYS if k in trigger]
        if len(given) > 1:
            raise ConfigError("trigger", f"give one list of items, not {' and '.join(given)}")
        if given:
            parsed = _plain(trigger[given[0]], f"trigger.{given[0]}")
    if parsed is None:
        if day is None:
            return EventSelection(shape="notice")
        return EventSelection(date=day, shape="date")
    if parsed.items is not None and len(parsed.items) > MAX_ITEMS:
        raise ConfigError("trigger", f"names {len(parsed.items)} items, at most {MAX_ITEMS}")
    return EventSelection(parsed.items, day, parsed.shape, parsed.ignored)


def merge_date(param: dt.date | None, selection: EventSelection) -> dt.date | None:
    """The run's day from the `date` parameter and the trigger's; both set and different
    is a ConfigError naming `trigger.date` (which one did the sender mean?)."""
    if selection.date is None:
        return param
    if param is not None and param != selection.date:
        raise ConfigError(
            "trigger.date",
            f"{selection.date.isoformat()} differs from the date parameter {param.isoformat()}",
        )
    return selection.date


# ----------------------------------------------------------------------------- shapes
def _s3_records(records: Any) -> EventSelection:
    if not isinstance(records, list) or not records:
        raise ConfigError("trigger.Records", "must be a non-empty list of S3 event records")
    items: list[NamedItem] = []
    ignored: list[str] = []
    for i, record in enumerate(records):
        where = f"trigger.Records[{i}]"
        if not isinstance(record, Mapping):
            raise ConfigError(where, "must be an object (an S3 event record)")
        source = record.get("eventSource", "aws:s3")
        if source != "aws:s3":
            raise ConfigError(
                f"{where}.eventSource", f"{source!r} is not an S3 event record ('aws:s3')"
            )
        name = str(record.get("eventName", "ObjectCreated:"))
        bucket = _text(_dig(record, where, "s3", "bucket", "name"), f"{where}.s3.bucket.name")
        raw = _text(_dig(record, where, "s3", "object", "key"), f"{where}.s3.object.key")
        key = unquote_plus(raw)  # S3 notifications URL-encode keys, '+' for a space
        if not name.startswith(("ObjectCreated:", "ObjectRestore:Completed")):
            ignored.append(f"{name} {key!r}")
            continue
        items.append(NamedItem(key, bucket, f"{where}.s3.object.key"))
    return EventSelection(tuple(items), shape="S3 event", ignored=tuple(ignored))


def _eventbridge(trigger: Mapping[str, Any]) -> EventSelection:
    detail_type = str(trigger.get("detail-type", "Object Created"))
    bucket = _detail(trigger, "bucket", "name")
    key = _detail(trigger, "object", "key")
    if detail_type != "Object Created":
        return EventSelection((), shape="S3 EventBridge event", ignored=(f"{detail_type} {key!r}",))
    item = NamedItem(key, bucket, "trigger.detail.object.key")
    return EventSelection((item,), shape="S3 EventBridge event")


def _detail(trigger: Mapping[str, Any], *path: str) -> str:
    return _text(_dig(trigger, "trigger", "detail", *path), f"trigger.detail.{'.'.join(path)}")


def _pubsub(message: Any) -> EventSelection:
    where = "trigger.message"
    if not isinstance(message, Mapping):
        raise ConfigError(where, "must be a Pub/Sub message object (attributes and/or data)")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise ConfigError(f"{where}.attributes", "must be an object")
    event = attributes.get("eventType", "OBJECT_FINALIZE")
    if "objectId" in attributes:
        key = _text(attributes["objectId"], f"{where}.attributes.objectId")
        bucket = _text(attributes.get("bucketId"), f"{where}.attributes.bucketId")
        item = NamedItem(key, bucket, f"{where}.attributes.objectId")
    elif "data" in message:
        item = _gcs_object(_decoded(message["data"], f"{where}.data"), f"{where}.data")
    else:
        raise ConfigError(
            where, "names no object: expected attributes.objectId or data (a GCS notification)"
        )
    if event != "OBJECT_FINALIZE":
        return EventSelection((), shape="GCS notification", ignored=(f"{event} {item.name!r}",))
    return EventSelection((item,), shape="GCS notification")


def _decoded(data: Any, where: str) -> Any:
    try:
        return json.loads(base64.b64decode(_text(data, where), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(where, f"not base64-encoded JSON ({type(exc).__name__})") from None


def _gcs_object(resource: Any, where: str) -> NamedItem:
    if not isinstance(resource, Mapping):
        raise ConfigError(where, "must be a GCS object resource (name, bucket)")
    key = _text(resource.get("name"), f"{where}.name")
    bucket = _text(resource.get("bucket"), f"{where}.bucket")
    return NamedItem(key, bucket, f"{where}.name")


def _plain(values: Any, where: str) -> EventSelection:
    if not isinstance(values, list) or not values:
        raise ConfigError(where, "must be a non-empty list of names (strings)")
    items = []
    for i, value in enumerate(values):
        text = _text(value, f"{where}[{i}]")
        scheme, sep, rest = text.partition("://")
        if sep and scheme in ("s3", "gs"):
            bucket, slash, key = rest.partition("/")
            if not bucket or not slash or not key:
                raise ConfigError(f"{where}[{i}]", f"{text!r}: expected {scheme}://bucket/key")
            items.append(NamedItem(key, bucket, f"{where}[{i}]"))
        elif sep:
            raise ConfigError(f"{where}[{i}]", f"{text!r}: only s3:// and gs:// URLs are known")
        else:
            items.append(NamedItem(text, None, f"{where}[{i}]"))
    return EventSelection(tuple(items), shape="item list")


# ----------------------------------------------------------------------------- helpers
def _dig(value: Any, where: str, *path: str) -> Any:
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            raise ConfigError(f"{where}.{'.'.join(path)}", "missing")
        value = value[key]
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(where, "must be a non-empty string")
    return value


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(_text(value, where))
    except ValueError:
        raise ConfigError(where, f"{value!r} is not a date (YYYY-MM-DD)") from None
