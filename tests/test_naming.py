"""Safe names and date templates."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from blocks.core.date_templates import has_date_template, render_date_template
from blocks.core.errors import UnsafeNameError
from blocks.core.naming import check_source_id, landing_path, safe_relative_name, versioned_name


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "a\x00b",
        "..\\x",
        "C:\\x",
        "\\\\server\\share",
        "",
        ".",
        "a//b",
        "line\nbreak",
        "x/./y",
    ],
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        safe_relative_name(name)


@pytest.mark.parametrize(
    "name", ["a.csv", "sub/dir/a.csv", "with space.csv", "ünïcødé €.txt", "..a", "a.."]
)
def test_ordinary_names_pass(name: str) -> None:
    assert str(safe_relative_name(name)) == name


def test_landing_path_is_deterministic_and_inside_root(tmp_path: Path) -> None:
    path = landing_path(tmp_path, "bank", date(2025, 1, 10), "sub/AXIS.csv")
    assert path == tmp_path.resolve() / "bank/2025/01/10/sub/AXIS.csv"
    with pytest.raises(UnsafeNameError):
        landing_path(tmp_path, "bank", date(2025, 1, 10), "../../../x")


def test_symlinked_landing_folder_cannot_be_escaped(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    (root / "bank/2025/01/10").mkdir(parents=True)
    (root / "bank/2025/01/10/link").symlink_to(tmp_path)
    with pytest.raises(UnsafeNameError):
        landing_path(root, "bank", date(2025, 1, 10), "link/x")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-x", "x" * 101])
def test_bad_source_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        check_source_id(bad)


def test_versioned_name() -> None:
    assert versioned_name(Path("/l/report.csv"), "ab" * 32).name == "report~abababababab.csv"
    assert versioned_name(Path("/l/README"), "cd" * 32).name == "README~cdcdcdcdcdcd"


def test_date_templates() -> None:
    day = date(2025, 1, 10)
    assert render_date_template("AXIS_RECON_{date:%Y%m%d}*.csv", day) == "AXIS_RECON_20250110*.csv"
    assert render_date_template("f_{date-1:%Y%m%d}.csv", day) == "f_20250109.csv"
    assert render_date_template("f_{date+1:%d%m%y}.csv", day) == "f_110125.csv"
    assert render_date_template("{date}", day) == "2025-01-10"
    assert render_date_template("*.csv", day) == "*.csv"
    assert has_date_template("x{date:%Y}") and not has_date_template("*.csv")
    with pytest.raises(ValueError, match="malformed"):
        render_date_template("f_{date:%Y", day)
