"""Resolve nested blocks among the block classes already imported before importing more.

When a saved block holds another block (an `SqlAlchemyConnector` inside the ledger, an
`AwsCredentials` inside an S3 source), Prefect resolves the nested type with
`Block.get_block_class_from_key`, which first imports every installed Prefect collection
(prefect-aws with boto3, prefect-gcp with the Google clients, prefect-snowflake with its
connector): ~170 MB of RSS in a flow run that needs none of them. Our block modules
import the classes they nest, so the lookup almost always succeeds without that import;
when it does not (a type from a module not yet imported) Prefect's own method runs.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect.utilities.dispatch import lookup_type

_prefects_lookup = Block.get_block_class_from_key.__func__  # type: ignore[attr-defined]


def _imported_first(cls: type[Block], key: str) -> type[Block]:
    try:
        return lookup_type(cls, key)
    except KeyError:
        return _prefects_lookup(cls, key)


def install() -> None:
    """Idempotent; the result of a lookup is the same class either way."""
    Block.get_block_class_from_key = classmethod(_imported_first)  # type: ignore[method-assign]
