"""Unpacking checks that need no server: format detection, names, zip member checks
(blocks/core/unpack.py). The flows are in tests/test_unpack.py."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from blocks.core.unpack import UnpackError, detect, strip_suffix, zip_members


def zip_bytes(members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            zf.writestr(zipfile.ZipInfo(d), b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_detect_and_names(tmp_path: Path) -> None:
    cases = {
        "g": gzip.compress(b"x"),
        "z": zip_bytes({"a": b"1"}),
        "e": zip_bytes({}),
        "a": b"\n-----BEGIN PGP MESSAGE-----\n",
        "b": bytes([0x85, 0x01, 0x0C]),
        "n": bytes([0xC1, 0x00]),
        "p": b"id,name\n",
    }
    found = {}
    for key, data in cases.items():
        (tmp_path / key).write_bytes(data)
        found[key] = detect(tmp_path / key)
    assert found == {
        "g": "gunzip",
        "z": "zip",
        "e": "zip",
        "a": "pgp",
        "b": "pgp",
        "n": "pgp",
        "p": None,
    }
    assert strip_suffix("in/data.csv.gz", (".gz",)) == "in/data.csv"
    assert strip_suffix("data.CSV.GPG", (".gpg",)) == "data.CSV"
    assert strip_suffix(".gz", (".gz",)) == ".gz"
    assert strip_suffix("data", (".gz",)) == "data"


@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../evil.csv", "'..' path part"),
        ("/etc/evil.csv", "absolute path"),
        ("a/../../evil.csv", "'..' path part"),
        ("..\\evil.csv", "'..' path part"),
        ("C:evil.csv", "absolute path"),
    ],
)
def test_zip_slip_member_refuses_the_archive(member: str, why: str) -> None:
    data = zip_bytes({"ok.csv": b"1", member: b"2"})
    with zipfile.ZipFile(io.BytesIO(data)) as zf, pytest.raises(UnpackError) as caught:
        zip_members(zf, "drop.zip")
    assert "drop.zip: unpack='zip': unsafe member" in str(caught.value)
    assert why in str(caught.value) and "nothing landed" in str(caught.value)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_symlink_encrypted_twice_and_file_folder_members_are_refused() -> None:
    link = zipfile.ZipInfo("link.csv")
    link.external_attr = 0o120777 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(link, b"/etc/passwd")
    with zipfile.ZipFile(buf) as zf, pytest.raises(UnpackError, match="is a symlink"):
        zip_members(zf, "x.zip")
    # zipfile cannot write encrypted members: set the 'encrypted' flag in both headers
    raw = bytearray(zip_bytes({"locked.csv": b"secret"}))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.index(signature) + offset
        raw[at] |= 0x1
    with (
        zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf,
        pytest.raises(UnpackError, match="is encrypted"),
    ):
        zip_members(zf, "x.zip")
    for names, why in ((("a.csv", "a.csv"), "twice"), (("a", "a/b.csv"), "both a file")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for n in names:
                zf.writestr(n, b"1")
        with zipfile.ZipFile(buf) as zf, pytest.raises(UnpackError, match=why):
            zip_members(zf, "x.zip")


def test_auto_peels_each_layer_and_leaves_only_the_items(tmp_path: Path) -> None:
    """gzip of a zip: two layers peeled, the intermediate file removed; a plain file is
    not unpacked (None); a failing layer leaves no staging file behind."""
    from types import SimpleNamespace

    from blocks.core.unpack import expand

    staging = tmp_path / "staging"
    staging.mkdir()
    counter = iter(range(1000))

    def new_file() -> Path:
        return staging / f"{next(counter)}.part"

    source = SimpleNamespace(unpack="auto", unpack_max_bytes=10**9, unpack_max_ratio=200)
    packed = tmp_path / "x.zip.gz"
    packed.write_bytes(gzip.compress(zip_bytes({"a.csv": b"a\n", "d/b.csv": b"b\n"})))
    got = expand(source, packed, "in/x.zip.gz", packed.stat().st_size, new_file)
    assert got is not None
    assert [(u.name, u.path.read_bytes()) for u in got] == [
        ("in/x.zip/a.csv", b"a\n"),
        ("in/x.zip/d/b.csv", b"b\n"),
    ]
    assert sorted(staging.iterdir()) == sorted(u.path for u in got)
    for u in got:
        u.path.unlink()

    plain = tmp_path / "p.csv"
    plain.write_bytes(b"id\n")
    assert expand(source, plain, "p.csv", 3, new_file) is None

    broken = tmp_path / "y.zip.gz"
    broken.write_bytes(gzip.compress(zip_bytes({"a.csv": b"a" * 100})[:40] + b"x" * 40))
    with pytest.raises(UnpackError, match="y.zip: unpack='zip': not a valid zip archive"):
        expand(source, broken, "y.zip.gz", broken.stat().st_size, new_file)
    assert list(staging.iterdir()) == []

    tight = SimpleNamespace(unpack="gunzip", unpack_max_bytes=1000, unpack_max_ratio=200)
    big = tmp_path / "big.gz"
    big.write_bytes(gzip.compress(b"x" * 5000))
    with pytest.raises(UnpackError, match="unpack_max_bytes=1000"):
        expand(tight, big, "big.gz", big.stat().st_size, new_file)
    assert list(staging.iterdir()) == []
