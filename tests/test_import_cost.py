"""What a bare import loads: `import blocks` and the SFTP range worker must not import Prefect.

Each range worker is a fresh process; with Prefect imported it started in 2.5-3.6 s and
117 MB instead of about 0.5 s (measured), which ate the gain of a ranged download.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded_modules(statement: str) -> set[str]:
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); {statement}; "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return {line.split(".")[0] for line in out.splitlines()}


@pytest.mark.parametrize("statement", ["import blocks", "import blocks.sftp.range_worker"])
def test_bare_import_loads_no_prefect(statement: str) -> None:
    assert "prefect" not in _loaded_modules(statement)


def test_core_names_still_import_from_the_package() -> None:
    import blocks

    assert blocks.Ledger.__module__ == "blocks.core.ledger"
    assert "IngestionQueue" in dir(blocks)
