"""Former home of the S3 and GCS flows, kept so deployments whose entrypoint still says
`flows.object_store:ingest_s3` / `:ingest_gcs` load. Each name is imported on first use,
so an install with only the `aws` (or only the `gcp`) extra loads its own flow."""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {"ingest_s3": "flows.s3", "ingest_gcs": "flows.gcs"}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
