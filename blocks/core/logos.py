"""Logos of the block types in the Prefect UI's block catalog.

Prefect stores a block type's logo as an http(s) URL (its client validates `logo_url` as
`HttpUrl`, so a `data:` URL is refused) and the UI shows it with a plain `<img>`: the image
must come from a web server the browser reaches. By default each block type points at the
Prefect-hosted image of the same kind of block (the images Prefect's own and integration
blocks register). A site whose browsers have no internet access serves the SVGs in
`blocks/logos/` from any web server it has (e.g. `python -m http.server -d blocks/logos`)
and sets `INGEST_LOGO_BASE_URL` to it before `prefect block register -m blocks`.
"""

from __future__ import annotations

import os

LOGO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "logos")

_PREFECT_ASSETS = (
    "https://raw.githubusercontent.com/PrefectHQ/prefect/"
    "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/"
)
_SANITY = "https://cdn.sanity.io/images/3ugk85nk/production/"
_SQLALCHEMY = _SANITY + "3c7dff04f70aaf4528e184a3b028f9e40b98d68c-250x250.png"
_GCP = _SANITY + "10424e311932e31c477ac2b9ef3d53cefbaad708-250x250.png"

HOSTED: dict[str, str] = {
    "local-folder-source": _PREFECT_ASSETS + "filesystem.png",
    "sftp-source": _PREFECT_ASSETS + "filesystem.png",
    "s3-source": _SANITY + "d74b16fe84ce626345adf235a47008fea2869a60-225x225.png",
    "gcs-source": _GCP,
    "rest-api-source": _PREFECT_ASSETS + "webhook.png",
    "sharepoint-source": _PREFECT_ASSETS + "microsoft-teams.png",
    "sql-source": _SQLALCHEMY,
    "snowflake-query-source": _SANITY + "bd359de0b4be76c2254bd329fe3a267a1a3879c2-250x250.png",
    "bigquery-query-source": _GCP,
    "ingest-ledger": _SQLALCHEMY,
    "ingestion-queue": _PREFECT_ASSETS + "filesystem.png",
    "ingest-webhook-endpoint": _PREFECT_ASSETS + "webhook.png",
    "broker-relay": _PREFECT_ASSETS + "webhook.png",
    "day-complete-rule": _PREFECT_ASSETS + "webhook.png",
}


def logo_url(slug: str) -> str | None:
    """The logo URL to register for block type `slug` (read when `blocks` is imported);
    None for a block type with no logo here yet (a new source shows Prefect's default)."""
    if slug not in HOSTED:
        return None
    base = os.environ.get("INGEST_LOGO_BASE_URL", "").strip()
    if base:
        return f"{base.rstrip('/')}/{slug}.svg"
    return HOSTED[slug]


def code_example(class_name: str, variable: str, usage: str) -> str:
    """The `_code_example` the block's catalog page shows: load a saved block, use it."""
    return (
        f"```python\nfrom blocks import {class_name}\n\n"
        f'{variable} = {class_name}.load("BLOCK_NAME")\n{usage}\n```\n'
    )
