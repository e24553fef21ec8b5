"""Source kits, one module per source (`local_folder.py`, `sftp.py`, ...) plus `base.py`
(the `SourceKit` interface and shared helpers).

Every module of this package is imported here, so each one's `@register` kits land in
`KITS`, the set every contract test is parametrised over: a new source's kit is a new file
in this folder, nothing else to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from tests.contract.kits.base import KITS, SourceKit, register, wait_for

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["KITS", "SourceKit", "register", "wait_for"]
