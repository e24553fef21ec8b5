"""Every source type, one line each: the only shared file a new source adds itself to.

`blocks/__init__.py` (lazy `from blocks import XSource` and `MISSING_EXTRAS`),
`blocks/core/block_lookup.py` (slug -> module for a generic `Block.load("x-source/name")`)
and `tests/tools/check_extras.sh` (extra -> flows to import in a venv with only that
extra) are derived from `SOURCES`; `tests/test_block_lookup.py` checks each line against
the class it names (its `_block_type_slug`, its module's third-party imports, its flow).

Standard library only: `check_extras.sh` reads this file with a bare `python3` before any
project dependency is installed.
"""

from __future__ import annotations

from typing import NamedTuple


class Source(NamedTuple):
    """One source type."""

    class_name: str  # the Block subclass, importable as `from blocks import <class_name>`
    module: str  # the module defining it
    slug: str  # its Prefect block type slug (`_block_type_slug`)
    extra: str | None  # the pip extra with its third-party packages (None: core install)
    flow: str  # "module:function" of its flow (the prefect.yaml entrypoint)


# fmt: off
SOURCES: tuple[Source, ...] = (
    Source("LocalFolderSource", "blocks.local_folder.block", "local-folder-source", None, "flows.local_folder:ingest_local_folder"),  # noqa: E501
    Source("SftpSource", "blocks.sftp.block", "sftp-source", "sftp", "flows.sftp:ingest_sftp"),
    Source("S3Source", "blocks.object_store.s3", "s3-source", "aws", "flows.s3:ingest_s3"),
    Source("GcsSource", "blocks.object_store.gcs", "gcs-source", "gcp", "flows.gcs:ingest_gcs"),
    Source("SharePointSource", "blocks.sharepoint.block", "sharepoint-source", "http", "flows.sharepoint:ingest_sharepoint"),  # noqa: E501
    Source("RestApiSource", "blocks.http.rest_api", "rest-api-source", "http", "flows.rest_api:ingest_rest"),  # noqa: E501
    Source("SqlSource", "blocks.sql.block", "sql-source", "sql", "flows.sql:ingest_sql"),
    Source("SnowflakeQuerySource", "blocks.warehouse.snowflake", "snowflake-query-source", "snowflake", "flows.snowflake:ingest_snowflake"),  # noqa: E501
    Source("BigQueryQuerySource", "blocks.warehouse.bigquery", "bigquery-query-source", "gcp", "flows.bigquery:ingest_bigquery"),  # noqa: E501
)
# fmt: on

BY_CLASS: dict[str, Source] = {s.class_name: s for s in SOURCES}
BY_SLUG: dict[str, Source] = {s.slug: s for s in SOURCES}


def flows_by_extra() -> dict[str, list[Source]]:
    """Sources grouped by their pip extra (core-only sources left out), in table order."""
    grouped: dict[str, list[Source]] = {}
    for source in SOURCES:
        if source.extra is not None:
            grouped.setdefault(source.extra, []).append(source)
    return grouped
