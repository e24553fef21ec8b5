"""Flow `process-item`: run a processor command on one landed item.

For formats the pipeline only lands (complex binaries, archives, documents), a processor
container turns each landed item into something a loader can read. Every landed item emits
`ingest.item.landed` (payload: landed_path, sha256, source, name, ...); the deployment
`process-item` (`prefect.processor.yaml`) triggers on that event and gets the item's
landed path as a parameter, one flow run per event (the trigger's action carries the
event's idempotency key).

On a kubernetes work pool the deployment's `image` job variable is the processor image
(this project's image plus the processor tool), so this flow runs in that container and
calls the tool; on a process pool (the tests' stand-in for the cluster) it calls a local
command. Either way the command is configured in the deployment, never taken from the
event: the event supplies only the path, which is checked (absolute, a regular file,
under `landing_root` when set, the event's sha256) and passed as one argument (no shell).
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

from prefect import flow, get_run_logger

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
    if not 1 <= timeout_seconds <= 86400:
        raise ConfigError("timeout_seconds", "must be between 1 and 86400")
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
    if not queue_block:
        raise ConfigError(
            "queue_block", f"name the Ingestion Queue block that landed {landed_path!r}"
        )
    queue = load_named_block(IngestionQueue, queue_block, "queue_block")
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
