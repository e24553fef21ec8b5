"""Resolve nested blocks among the block classes already imported before importing more.

When a saved block holds another block (an `SqlAlchemyConnector` inside the ledger, an
`AwsCredentials` inside an S3 source), Prefect resolves the nested type with
`Block.get_block_class_from_key`, which first imports every installed Prefect collection
(prefect-aws with boto3, prefect-gcp with the Google clients, prefect-snowflake with its
connector): ~170 MB of RSS in a flow run that needs none of them. Our block modules
import the classes they nest, so the lookup almost always succeeds without that import;
when it does not (a type from a module not yet imported) Prefect's own method runs.

Our sources are imported lazily (see `blocks/__init__.py`), so a generic
`Block.load("sftp-source/name")` (as in `ingest-ops test-connection`) would find no class
for the slug: Prefect's fallback imports installed collections, never our modules. So the
lookup first imports the module of one of our own slugs, named in `blocks/registry.py`.

Nothing installs this on import: every `Block.load` runs the lookup (for the saved block's
own type too), and a patch of Prefect's class applied as a side effect of `import blocks`
would change Prefect for whoever imports any block module. The entry points that load
blocks call `install()` themselves: `pipeline.block_loading.load_named_block` (every flow:
sources, backfill, health, the demo), the `ingest-ops` CLI and the webhook receiver.
"""

from __future__ import annotations

import importlib

from prefect.blocks.core import Block
from prefect.utilities.dispatch import lookup_type

from blocks.registry import BY_SLUG

# Block type slug -> module defining it, for our blocks not imported by `import blocks`.
SOURCE_MODULES: dict[str, str] = {slug: source.module for slug, source in BY_SLUG.items()}

_prefects_lookup = Block.get_block_class_from_key.__func__  # type: ignore[attr-defined]


def _imported_first(cls: type[Block], key: str) -> type[Block]:
    try:
        return lookup_type(cls, key)
    except KeyError:
        pass
    module = SOURCE_MODULES.get(key)
    if module is not None:
        # A missing extra (e.g. no boto3) raises ModuleNotFoundError naming the package.
        importlib.import_module(module)
        return lookup_type(cls, key)
    return _prefects_lookup(cls, key)


def install() -> None:
    """Make `Block.get_block_class_from_key` find our blocks (importing the module of one
    of our slugs) before Prefect imports every installed collection. Call it once at an
    entry point, before the first `Block.load`; idempotent, and the result of a lookup is
    the same class either way."""
    Block.get_block_class_from_key = classmethod(_imported_first)  # type: ignore[method-assign]


def installed() -> bool:
    """Whether `install()` has run in this process."""
    return getattr(Block.get_block_class_from_key, "__func__", None) is _imported_first
