"""Flows `process-items` and `process-item`: run a processor command on landed items.

For formats the pipeline only lands (complex binaries, archives, documents), a processor
container turns each landed item into something a loader can read. How landed items are
announced is the Ingestion Queue's `event_per`, and each mode has its deployment in
`prefect.processor.yaml`:

- `event_per: batch` (the default): one `ingest.items.landed` event per landing batch,
  payload `{count, items: [...]}` with each item's own payload (landed_path, sha256,
  source, name, ...). The deployment `process-items` triggers on it: one flow run per
  event gets the batch's `items`, and each item runs as its own task run (its own state
  in the UI; one item's failure does not stop the others; the run fails at the end naming
  every failed item).
- `event_per: item`: one `ingest.item.landed` event per landed item. The deployment
  `process-item` triggers on it: one flow run per item, the item's landed path a parameter.

Either way a trigger's action carries the event's idempotency key, so an event starts one
run. On a kubernetes work pool the deployment's `image` job variable is the processor image
(this project's image plus the processor tool), so the flow runs in that container and
calls the tool; on a process pool (the tests' stand-in for the cluster) it calls a local
command. The command is configured in the deployment, never taken from the event: the
event supplies only the path, which is checked (absolute, a regular file, under
`landing_root` when set, the event's sha256) and passed as one argument (no shell).
A landed object (`s3://`/`gs://`, when the queue lands into a bucket) is read through the
`queue_block`'s bucket block into a private temporary file, checked the same way, and
removed after the command; it must lie in that queue's landing bucket.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.core.errors import ConfigError, PermanentError
from blocks.core.events import emit_source_event
from blocks.core.ingestion_queue import IngestionQueue, sha256_file
from blocks.core.landing_store import is_object_uri
from pipeline.block_loading import load_named_block

PROCESSED_EVENT = "ingest.item.processed"
PLACEHOLDERS = ("path", "uri", "sha256", "source", "name")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
OUTPUT_TAIL = 2000  # characters of the command's output kept in the log and the result


def resolve_landed(landed_path: str, landing_root: str | None = None) -> Path:
    """The landed file named by a path or a `file://` URI, resolved with symlinks.

    Refused naming `landed_path` (ConfigError): empty, relative, another URI scheme, not
    an existing regular file, or (with `landing_root`) outside that folder."""
    raw = (landed_path or "").strip()
    if not raw:
        raise ConfigError("landed_path", "is empty")
    if "://" in raw:
        uri = urlparse(raw)
        if uri.scheme != "file" or uri.netloc not in ("", "localhost"):
            raise ConfigError(
                "landed_path", f"{raw!r}: only local paths and file:// URIs are supported"
            )
        raw = unquote(uri.path)
    path = Path(raw)
    if not path.is_absolute():
        raise ConfigError("landed_path", f"{raw!r} is not an absolute path")
    resolved = path.resolve()
    if landing_root:
        root = Path(landing_root).resolve()
        if not resolved.is_relative_to(root):
            raise ConfigError("landed_path", f"{raw!r} is not under landing_root {str(root)!r}")
    if not resolved.is_file():
        raise ConfigError("landed_path", f"{raw!r} is not an existing file")
    return resolved


def render_command(command: list[str], values: dict[str, str]) -> list[str]:
    """Each argument with `{path}`, `{sha256}`, `{source}`, `{name}` replaced; one argument
    stays one argument whatever the values hold (no shell)."""
    if not isinstance(command, list) or not command:
        raise ConfigError("command", "must be a non-empty list, one item per argument")
    if not all(isinstance(arg, str) and arg for arg in command):
        raise ConfigError("command", "must be a non-empty list of non-empty strings")
    # One pass: a value holding "{name}" is not substituted again.
    return [_PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), arg) for arg in command]


def fetch_object(queue: IngestionQueue, uri: str, folder: Path) -> tuple[Path, str]:
    """Stream a landed object (`s3://`/`gs://` in the queue's landing bucket) to a file in
    `folder`; returns its path and sha256. A URI outside that bucket fails naming
    `IngestionQueue.landing_bucket` (`open_landed`)."""
    name = Path(uri.rsplit("/", 1)[-1]).name or "item"
    target = folder / name
    digest = hashlib.sha256()
    with queue.open_landed(uri) as src, open(target, "wb") as out:
        while chunk := src.read(1024 * 1024):
            digest.update(chunk)
            out.write(chunk)
    return target, digest.hexdigest()


@flow(name="process-item", description="Run the processor command on one landed item.")
def process_item(
    landed_path: str,
    command: list[str],
    sha256: str | None = None,
    source: str | None = None,
    name: str | None = None,
    landing_root: str | None = None,
    queue_block: str | None = None,
    timeout_seconds: float = 3600,
) -> dict[str, Any]:
    """Run `command` on one landed item and emit `ingest.item.processed`.

    Args:
        landed_path: The item's landed path, `file://` URI, or `s3://`/`gs://` URI when the
            queue lands into a bucket (the trigger passes `{{ event.payload.landed_path }}`).
        command: The processor command, one list item per argument; `{path}` (a local
            file: the landed file, or a temporary copy of a landed object), `{uri}` (the
            landed path as given), `{sha256}`, `{source}`, `{name}` are replaced. Set in the
            deployment, not by the event.
        sha256: The landed content's sha256 from the event; checked before the command
            runs (a file replaced or pruned since fails instead of being processed).
        source: The source id (payload `source`): for the command and the processed event.
        name: The item's name at the source (payload `name`).
        landing_root: When set, a local path must lie under this folder (symlinks resolved).
        queue_block: The Ingestion Queue block whose `landing_bucket` holds landed objects
            (needed for `s3://`/`gs://` paths: its bucket block's credentials read them).
        timeout_seconds: The command is killed after this long (1..86400).

    Returns the exit code, seconds and the tail of the command's output; a non-zero exit,
    a timeout or a bad path fails the run with the reason.
    """
    _check_timeout(timeout_seconds)
    queue = queue_for([landed_path], queue_block)
    return process_landed(
        landed_path, command, sha256, source, name, landing_root, queue, timeout_seconds
    )


def queue_for(landed_paths: list[str], queue_block: str | None) -> IngestionQueue | None:
    """The Ingestion Queue block that reads landed objects, loaded once when any of
    `landed_paths` is an `s3://`/`gs://` URI; None when all are local. An object without a
    `queue_block` fails naming that field."""
    objects = [path for path in landed_paths if is_object_uri(path)]
    if not objects:
        return None
    if not queue_block:
        raise _no_queue_block(objects[0])
    return load_named_block(IngestionQueue, queue_block, "queue_block")


def _no_queue_block(landed_path: str) -> ConfigError:
    return ConfigError("queue_block", f"name the Ingestion Queue block that landed {landed_path!r}")


def _check_timeout(timeout_seconds: Any) -> None:
    if (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, int | float)
        or not 1 <= timeout_seconds <= 86400
    ):
        raise ConfigError("timeout_seconds", "must be between 1 and 86400")


def process_landed(
    landed_path: str,
    command: list[str],
    sha256: str | None,
    source: str | None,
    name: str | None,
    landing_root: str | None,
    queue: IngestionQueue | None,
    timeout_seconds: float,
) -> dict[str, Any]:
    """Check one landed item and run `command` on it (the body of both flows): a local
    path through `resolve_landed`, an `s3://`/`gs://` one through `queue`'s landing bucket
    into a private temporary copy; the content must still hold `sha256` when given."""
    values = {
        "uri": landed_path,
        "sha256": sha256 or "",
        "source": source or "",
        "name": name or "",
    }
    if not is_object_uri(landed_path):
        path = resolve_landed(landed_path, landing_root)
        if sha256 and sha256_file(path) != sha256.lower():
            raise PermanentError(f"landed_path: {str(path)!r} no longer holds sha256 {sha256}")
        return _run(command, path, values, source, timeout_seconds)
    if queue is None:
        raise _no_queue_block(landed_path)
    folder = Path(tempfile.mkdtemp(prefix="ingest-process-"))
    try:  # processor tools want a local file: a private copy, removed afterwards
        path, digest = fetch_object(queue, landed_path, folder)
        if sha256 and digest != sha256.lower():
            raise PermanentError(f"landed_path: {landed_path!r} no longer holds sha256 {sha256}")
        return _run(command, path, values, source, timeout_seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(
    command: list[str], path: Path, values: dict[str, str], source: str | None, timeout: float
) -> dict[str, Any]:
    logger = get_run_logger()
    sha256 = values["sha256"] or None
    argv = render_command(command, {**values, "path": str(path)})
    logger.info("processing %s with %s", values["uri"], argv[0])
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env={**os.environ, "INGEST_ITEM_PATH": str(path), "INGEST_ITEM_SHA256": sha256 or ""},
        )
    except FileNotFoundError:
        raise ConfigError("command", f"{argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise PermanentError(
            f"{argv[0]} on {values['uri']}: no result after {timeout:g}s"
        ) from None
    seconds = round(time.monotonic() - started, 2)
    output = (done.stdout + done.stderr)[-OUTPUT_TAIL:]
    if output:
        logger.info("%s output (tail):\n%s", argv[0], output)
    if done.returncode != 0:
        raise PermanentError(
            f"{argv[0]} on {values['uri']} exited {done.returncode}: {output[-500:]}"
        )
    landed = values["uri"] if is_object_uri(values["uri"]) else str(path)
    result = {"landed_path": landed, "exit_code": 0, "seconds": seconds, "output_tail": output}
    if source:
        emit_source_event(
            PROCESSED_EVENT,
            source,
            {"landed_path": landed, "sha256": sha256, "name": values["name"], "seconds": seconds},
        )
    return result


# ---------------------------------------------------------------- process-items (batches)

ITEM_KEYS = ("sha256", "source", "name")  # optional payload keys the processor uses
MAX_PARALLEL = 16
REASON_CHARS = 300  # of each failed item's reason in the run's final message


def check_items(items: Any) -> list[dict[str, Any]]:
    """The `items` parameter checked: a list of item payloads (objects), each with a
    non-empty `landed_path` and, when present, string `sha256`/`source`/`name`; other keys
    are ignored. ConfigError naming the field (`items`, `items[2].landed_path`, ...)."""
    if not isinstance(items, list):
        raise ConfigError(
            "items",
            f"must be a list of landed items (the ingest.items.landed payload's items), "
            f"not {type(items).__name__}",
        )
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(
                f"items[{i}]", f"must be an object with landed_path, not {type(item).__name__}"
            )
        landed_path = item.get("landed_path")
        if not isinstance(landed_path, str) or not landed_path.strip():
            raise ConfigError(f"items[{i}].landed_path", "is missing or empty")
        for key in ITEM_KEYS:
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ConfigError(
                    f"items[{i}].{key}", f"must be a string, not {type(item[key]).__name__}"
                )
    return items


def item_label(item: dict[str, Any]) -> str:
    """How a run names an item: `name (landed_path)`, or the landed path alone."""
    name, landed_path = item.get("name"), item["landed_path"]
    return f"{name} ({landed_path})" if name else landed_path


def _task_run_name(parameters: dict[str, Any]) -> str:
    item = parameters.get("item") or {}
    return f"process {item.get('name') or Path(str(item.get('landed_path', ''))).name}"


@task(
    name="process-landed-item",
    task_run_name=_task_run_name,
    retries=0,
    persist_result=False,  # no result storage, no cache: each item runs every time
    cache_policy=NO_CACHE,
)
def process_landed_item(
    item: dict[str, Any],
    command: list[str],
    landing_root: str | None,
    queue: IngestionQueue | None,
    timeout_seconds: float,
) -> dict[str, Any]:
    """One item of a `process-items` run: the same checks and command as `process-item`."""
    return process_landed(
        item["landed_path"],
        command,
        item.get("sha256"),
        item.get("source"),
        item.get("name"),
        landing_root,
        queue,
        timeout_seconds,
    )


@flow(
    name="process-items",
    description="Run the processor command on each item of a landing batch.",
    validate_parameters=False,  # check_items and the checks below name the bad field
)
def process_items(
    items: list[dict[str, Any]],
    command: list[str],
    landing_root: str | None = None,
    queue_block: str | None = None,
    timeout_seconds: float = 3600,
    max_parallel: int = 1,
) -> dict[str, Any]:
    """Run `command` on each landed item of a batch, one task run per item, and emit
    `ingest.item.processed` for each item processed.

    Args:
        items: The batch's item payloads (the trigger passes the `ingest.items.landed`
            event's `items`): each an object with `landed_path` (a path, `file://` URI,
            or `s3://`/`gs://` URI when the queue lands into a bucket) and `sha256`,
            `source`, `name`; other keys are ignored.
        command: The processor command, one list item per argument; `{path}` (a local
            file: the landed file, or a temporary copy of a landed object), `{uri}` (the
            landed path as given), `{sha256}`, `{source}`, `{name}` are replaced with the
            item's values. Set in the deployment, not by the event.
        landing_root: When set, a local path must lie under this folder (symlinks resolved).
        queue_block: The Ingestion Queue block whose `landing_bucket` holds landed objects
            (needed for `s3://`/`gs://` paths: its bucket block's credentials read them).
        timeout_seconds: Each item's command is killed after this long (1..86400).
        max_parallel: Items processed at the same time (1..16; 1: one after the other).
            Raise it together with the pod's cpu/memory requests.

    Each item is checked like `process-item`'s (absolute or `file://`, an existing file,
    under `landing_root`, still holding its sha256) and runs in its own task run, so one
    item's failure does not stop the others. Returns the count and each item's exit code
    and seconds; if any item failed, the run fails at the end with a message naming each
    failed item (`name (landed_path)`) and its reason. A malformed `items` (not a list, an
    item without `landed_path`) fails before any item runs, naming the field.
    """
    items = check_items(items)
    _check_timeout(timeout_seconds)
    if (
        isinstance(max_parallel, bool)
        or not isinstance(max_parallel, int)
        or not (1 <= max_parallel <= MAX_PARALLEL)
    ):
        raise ConfigError("max_parallel", f"must be between 1 and {MAX_PARALLEL}")
    render_command(command, {})  # a bad command fails once, not once per item
    for field, value in (("landing_root", landing_root), ("queue_block", queue_block)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(field, f"must be a string, not {type(value).__name__}")
    logger = get_run_logger()
    queue = queue_for([item["landed_path"] for item in items], queue_block)
    states = []
    for start in range(0, len(items), max_parallel):
        futures = [
            process_landed_item.submit(item, command, landing_root, queue, timeout_seconds)
            for item in items[start : start + max_parallel]
        ]
        for future in futures:
            future.wait()
        states += [future.state for future in futures]
    done, failed = [], []
    for item, state in zip(items, states, strict=True):
        if state.is_completed():
            result = state.result()
            done.append({k: result[k] for k in ("landed_path", "exit_code", "seconds")})
        else:
            failed.append(f"{item_label(item)}: {_reason(state)}")
    logger.info("processed %d of %d items", len(done), len(items))
    if failed:
        raise PermanentError(f"{len(failed)} of {len(items)} items failed: " + "; ".join(failed))
    return {"count": len(items), "processed": done}


def _reason(state: Any) -> str:
    """A failed task run's exception text (its state message if the exception is gone)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a crashed run may hold no result
        exc = None
    reason = str(exc) if isinstance(exc, BaseException) else (state.message or state.name)
    reason = " ".join(reason.split())
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."
