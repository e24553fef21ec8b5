"""Turn one response body into records: JSON (records at a path), JSON lines, CSV, XML."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from blocks.core.errors import IngestError


def json_path(body: Any, path: str | None) -> Any:
    """Dotted path into parsed JSON: 'data.items', 'meta.next_cursor', '@odata.nextLink'
    (a key containing dots is tried whole first). Empty path: the body itself."""
    if not path:
        return body
    if isinstance(body, dict) and path in body:
        return body[path]
    node = body
    parts = path.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(node, dict):
            return None
        # longest key first so '@odata.nextLink' works inside a nested object too
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in node:
                node, i = node[key], j
                break
        else:
            return None
    return node


def _xml_record(elem: ET.Element) -> dict[str, Any]:
    record: dict[str, Any] = dict(elem.attrib)
    for child in elem:
        record[child.tag] = _xml_record(child) if len(child) else (child.text or "")
    return record


def parse_records(
    data: bytes, fmt: str, records_path: str | None, xml_record_tag: str | None
) -> tuple[Any, list[Any]]:
    """(parsed body for pagination, records of this page). One page at a time in memory."""
    if fmt == "json":
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise IngestError(f"response is not JSON: {exc}") from None
        records = json_path(body, records_path)
        if records is None:
            raise IngestError(f"records_path {records_path!r} not found in the response")
        if not isinstance(records, list):
            records = [records]
        return body, records
    if fmt == "jsonl":
        text = data.decode("utf-8")
        return None, [json.loads(line) for line in text.splitlines() if line.strip()]
    if fmt == "csv":
        return None, list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    if fmt == "xml":
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise IngestError(f"response is not XML: {exc}") from None
        tag = xml_record_tag or (root[0].tag if len(root) else "")
        return None, [_xml_record(e) for e in root.iter(tag)] if tag else []
    raise IngestError(f"unknown response format {fmt!r}")


def iter_jsonl(records: list[Any]) -> Iterator[bytes]:
    for rec in records:
        yield json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
