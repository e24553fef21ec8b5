# ruff: noqa: F811  (pytest fixtures imported from tests/sql_servers.py)
"""Column-wise extraction paths of the SQL source on the real servers (issue 17).

- PostgreSQL -> Parquet through COPY + pyarrow's CSV reader (`blocks/sql/arrow_copy.py`):
  every supported type round-trips to the values the row path writes and to the values
  psycopg2 reads (zones, numerics, NULL vs empty, text with commas/newlines/quotes, bytea),
  across several COPY chunks, and an unsupported column keeps the row path.
- MySQL/MariaDB: mysqlclient is chosen automatically when installed (pymysql otherwise, or
  when asked) and writes the same CSV bytes and Parquet values as pymysql.
- The CSV writer's column-wise pass-through writes what `csv_text` per cell wrote.
- PostgreSQL `parallel_streams`: key ranges under one exported snapshot give the same file
  as one stream, and a consistent one while writers move values between ranges.
"""

from __future__ import annotations

import io
import math
import os
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from blocks.core import file_formats as formats
from blocks.core.errors import ConfigError
from blocks.core.source import Candidate, SkipItem
from blocks.sql import arrow_copy, mysql_driver, parallel_copy
from blocks.sql.block import SqlSource, Window
from tests.sql_servers import SourceDb, my_source, pg_source  # noqa: F401

TYPES_TABLE = """CREATE TABLE {name} (
    id bigint PRIMARY KEY, updated_at timestamptz(6) NOT NULL, naive timestamp(3),
    d date, n numeric(12,4), nu numeric, f4 real, f8 double precision, b boolean,
    s text, vc varchar(20), ch char(4), u uuid, by bytea, i2 smallint, i4 int)"""

TEXTS = ["", 'a,"b"\nc', "plain", "tab\tand\r\nCRLF", "üñí €", "NULL", "\\N", " lead", ","]
BLOBS = [b"", b"\x00\x01\xff", bytes(range(256)), b"\\x00"]
FLOATS = [0.1, -1.5e-30, 3.4e38, float("nan"), float("inf"), float("-inf"), 0.0]


def fill(db: SourceDb, name: str, rows: int) -> None:
    db.run(f"DROP TABLE IF EXISTS {name}", TYPES_TABLE.format(name=name))
    base = datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=UTC)
    values = []
    for i in range(1, rows + 1):
        null = i % 5 == 0  # every fifth row: NULL in every nullable column
        values.append(
            {
                "id": i,
                "updated_at": base + timedelta(seconds=i * 7, microseconds=i),
                "naive": None if null else datetime(1999, 12, 31, 23, 59, 59, 123000),
                "d": None if null else date(2026, 2, 28) + timedelta(days=i),
                "n": None if null else Decimal(f"{(-1) ** i * i * 1234.5678:.4f}"),
                "nu": None if null else Decimal("1.50") * i,
                "f4": None if null else FLOATS[i % len(FLOATS)],
                "f8": None if null else FLOATS[(i + 1) % len(FLOATS)] / 3,
                "b": None if null else i % 2 == 0,
                "s": None if null else TEXTS[i % len(TEXTS)],
                "vc": None if null else TEXTS[(i + 3) % len(TEXTS)][:20],
                "ch": None if null else "ab",
                "u": None if null else f"00000000-0000-0000-0000-{i:012d}",
                "by": None if null else BLOBS[i % len(BLOBS)],
                "i2": None if null else -(i % 32768),
                "i4": None if null else i * 1000,
            }
        )
    with db.engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {name} VALUES (:id, :updated_at, :naive, :d, :n, :nu, :f4, "
                ":f8, :b, :s, :vc, :ch, :u, :by, :i2, :i4)"
            ),
            values,
        )


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_tables_equal(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        g, w = got[name].to_pylist(), want[name].to_pylist()
        bad = [(i, x, y) for i, (x, y) in enumerate(zip(g, w, strict=True)) if not same(x, y)]
        assert not bad, f"column {name}: first differences {bad[:3]}"


def fetch_file(source: SqlSource, tmp_path) -> bytes:
    """The bytes the block's own fetch writes for the whole table."""
    path = tmp_path / f"{source.source_id}.{source.output_format}"
    try:
        with open(path, "wb") as out:
            source.fetch(Candidate(name="t", ref=Window("full")), out)
    finally:
        source.close()
    return path.read_bytes()


def extract(source: SqlSource, tmp_path) -> pa.Table:
    """The block's own fetch of the whole table (the flow around it is tested elsewhere:
    tests/test_sql.py, tests/test_sql_no_loss_property.py with output_format parquet)."""
    path = tmp_path / f"{source.source_id}.parquet"
    try:
        with open(path, "wb") as out:
            source.fetch(Candidate(name="t", ref=Window("full")), out)
    finally:
        source.close()
    return pq.read_table(path)


def test_pg_parquet_arrow_path_equals_row_path_and_database(pg_source, tmp_path) -> None:
    """Several COPY chunks (copy_chunk_rows=7) into the Arrow path; the Parquet file equals
    the row path's file (use_copy=False) and the values psycopg2 reads."""
    fill(pg_source, "types_a", 60)
    common = dict(
        table="types_a",
        primary_key=["id"],
        output_format="parquet",
        retries=0,
    )
    fast = SqlSource(database=pg_source.connector(), source_id="arrow", copy_chunk_rows=7, **common)
    slow = SqlSource(database=pg_source.connector(), source_id="rows", use_copy=False, **common)
    assert fast._extraction_path(fast._prepare()) == "arrow"
    got = extract(fast, tmp_path)
    want = extract(slow, tmp_path)
    assert_tables_equal(got, want)
    assert str(got.schema.field("updated_at").type) == "timestamp[us, tz=UTC]"
    assert str(got.schema.field("n").type) == "decimal128(12, 4)"
    assert str(got.schema.field("by").type) == "binary"
    with pg_source.engine.connect() as conn:
        db_rows = conn.execute(text("SELECT * FROM types_a ORDER BY id")).all()
    rows = got.to_pylist()
    assert len(rows) == len(db_rows) == 60
    for row, db_row in zip(rows, db_rows, strict=True):
        expected = dict(db_row._mapping)
        expected["by"] = None if expected["by"] is None else bytes(expected["by"])
        expected["nu"] = None if expected["nu"] is None else str(expected["nu"])
        expected["u"] = None if expected["u"] is None else str(expected["u"])
        for key, value in expected.items():
            if key == "f4" and isinstance(value, float) and not math.isnan(value):
                assert row[key] == pytest.approx(value, rel=1e-6), (key, row)
            else:
                assert same(row[key], value), (key, row[key], value)
    assert rows[1]["s"] == TEXTS[2] and rows[0]["s"] == TEXTS[1]
    assert rows[8]["s"] == "" and rows[4]["s"] is None  # empty string vs NULL
    assert rows[0]["by"] == BLOBS[1] and rows[3]["by"] == BLOBS[0]


def test_pg_parquet_unsupported_column_keeps_row_path(pg_source, tmp_path) -> None:
    """A json or array column keeps the row path (its text forms differ from COPY's)."""
    pg_source.run(
        "DROP TABLE IF EXISTS types_j",
        "CREATE TABLE types_j (id int PRIMARY KEY, j jsonb, a int[])",
        "INSERT INTO types_j VALUES (1, '{\"b\": 1, \"a\": [1, 2]}', '{1,2}')",
    )
    source = SqlSource(
        database=pg_source.connector(),
        source_id="json",
        table="types_j",
        primary_key=["id"],
        output_format="parquet",
        retries=0,
    )
    assert source._extraction_path(source._prepare()) == "rows"
    table = extract(source, tmp_path)
    assert table.to_pylist() == [{"id": 1, "j": '{"a": [1, 2], "b": 1}', "a": "[1, 2]"}]


def test_pg_parquet_arrow_path_empty_table(pg_source, tmp_path) -> None:
    """No row: no parser thread, a valid Parquet file with the schema, SkipItem."""
    pg_source.run("DROP TABLE IF EXISTS types_e", TYPES_TABLE.format(name="types_e"))
    source = SqlSource(
        database=pg_source.connector(),
        source_id="empty",
        table="types_e",
        primary_key=["id"],
        output_format="parquet",
        retries=0,
    )
    with pytest.raises(SkipItem):
        extract(source, tmp_path)
    table = pq.read_table(tmp_path / "empty.parquet")
    assert table.num_rows == 0 and table.schema.field("by").type == pa.binary()


def test_hex_to_binary_with_nulls_and_slices() -> None:
    arr = pa.array(["\\x00ff", None, "\\x", "\\xAbCd", None], pa.string())
    assert arrow_copy._hex_to_binary(arr).to_pylist() == [b"\x00\xff", None, b"", b"\xab\xcd", None]
    assert arrow_copy._hex_to_binary(arr.slice(1, 3)).to_pylist() == [None, b"", b"\xab\xcd"]
    with pytest.raises(ValueError, match="not"):
        arrow_copy._hex_to_binary(pa.array(["\\xzz"]))


MY_TABLE = """CREATE TABLE {name} (
    id int PRIMARY KEY, big bigint, dec4 decimal(12,4), dt datetime(6), ts timestamp(3) NULL,
    d date, t time(6), vc varchar(40), tx text, bl blob, flag tinyint(1), f float, g double,
    j json)"""


def test_mysql_driver_choice_and_identical_files(my_source, tmp_path) -> None:
    """auto picks mysqlclient when it is importable; its CSV bytes and Parquet values equal
    pymysql's, over several keyset chunks, for every type (NULLs, commas, newlines, quotes,
    zero microseconds, blobs)."""
    if not mysql_driver.mysqlclient_available():
        if os.environ.get("INGEST_REQUIRE_SERVERS") == "1":
            pytest.fail("mysqlclient is not installed (the sql-fast extra; .ci/run builds it)")
        pytest.skip("mysqlclient is not installed")
    my_source.run("DROP TABLE IF EXISTS my_types", MY_TABLE.format(name="my_types"))
    rows = []
    for i in range(1, 41):
        null = i % 6 == 0
        rows.append(
            {
                "id": i,
                "big": None if null else -(2**62) + i,
                "dec4": None if null else Decimal(f"{(-1) ** i * i * 12.3456:.4f}"),
                "dt": None if null else datetime(2026, 3, 1, 12, 0, 0, (i % 3) * 1000),
                "ts": None if null else datetime(2026, 3, 1, 12, 0, i, (i % 2) * 500000),
                "d": None if null else date(2026, 1, 1) + timedelta(days=i),
                "t": None if null else timedelta(hours=i, microseconds=i % 2),
                "vc": None if null else TEXTS[i % len(TEXTS)],
                "tx": None if null else TEXTS[(i + 1) % len(TEXTS)] * 3,
                "bl": None if null else BLOBS[i % len(BLOBS)],
                "flag": None if null else i % 2,
                "f": None if null else 1.5 * i,
                "g": None if null else 0.1 * i,
                "j": None if null else '{"a": [1, "x,y"]}',
            }
        )
    with my_source.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO my_types VALUES (:id, :big, :dec4, :dt, :ts, :d, :t, :vc, :tx, "
                ":bl, :flag, :f, :g, :j)"
            ),
            rows,
        )
    files = {}
    for driver in ("auto", "pymysql"):
        for fmt in ("csv", "parquet"):
            source = SqlSource(
                database=my_source.connector(),
                source_id=f"my-{driver}-{fmt}",
                table="my_types",
                primary_key=["id"],
                chunk_size=7,
                output_format=fmt,
                mysql_driver=driver,
                retries=0,
            )
            used = source._prepare().engine.dialect.driver
            assert used == ("mysqldb" if driver == "auto" else "pymysql")
            files[driver, fmt] = fetch_file(source, tmp_path)
    assert files["auto", "csv"] == files["pymysql", "csv"]
    text_csv = files["auto", "csv"].decode()
    assert text_csv.count("\n") > 40 and '"a,""b""\nc"' in text_csv
    fast = pq.read_table(io.BytesIO(files["auto", "parquet"]))
    slow = pq.read_table(io.BytesIO(files["pymysql", "parquet"]))
    assert_tables_equal(fast, slow)
    assert fast.num_rows == 40


def test_mysql_driver_forced_and_connect_args(my_source) -> None:
    """`pymysql` keeps pymysql; connect_args (driver-specific keywords) keep pymysql in
    auto; `mysqlclient` without the package is a ConfigError naming the field."""
    connector = my_source.connector()
    connector.connect_args = {"connect_timeout": 5}
    engine = mysql_driver.choose(connector, "auto", "SqlSource.mysql_driver")
    assert engine.dialect.driver == "pymysql"
    engine.dispose()


@pytest.mark.parametrize("style", [formats.POSTGRES, formats.PLAIN])
def test_csv_writer_pass_through_equals_per_cell_text(style) -> None:
    import csv

    values = [
        (1, "a,b\n", 1.5, Decimal("1.20"), None, datetime(2026, 1, 1, tzinfo=UTC), True),
        (2, "", float("nan"), Decimal("NaN"), b"\x00", datetime(2026, 1, 1, 1), {"k": [1]}),
        (3, "x", 2.0, None, None, date(2026, 1, 2), None),
    ]
    cols = [formats.Column(f"c{i}") for i in range(7)]
    out = io.BytesIO()
    writer = formats.CsvWriter(out, cols, style)
    writer.write(values)
    want = io.StringIO()
    plain = csv.writer(want, lineterminator="\n")
    plain.writerow([c.name for c in cols])
    plain.writerows([[formats.csv_text(v, style) for v in row] for row in values])
    assert out.getvalue().decode() == want.getvalue()


def accounts(db: SourceDb, name: str, n: int, key: str = "bigint") -> None:
    db.run(
        f"DROP TABLE IF EXISTS {name}",
        f"CREATE TABLE {name} (id {key} PRIMARY KEY, bal int NOT NULL, note text)",
        f"INSERT INTO {name} SELECT g, 100, 'n,' || g FROM generate_series(1, {n}) g "
        "WHERE g % 7 <> 3",  # gaps in the key
    )


def kept(n: int) -> int:
    return sum(1 for g in range(1, n + 1) if g % 7 != 3)


def pg_block(db: SourceDb, table: str, **fields) -> SqlSource:
    fields.setdefault("primary_key", ["id"])
    return SqlSource(database=db.connector(), table=table, retries=0, **fields)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_pg_parallel_streams_equal_one_stream(pg_source, tmp_path, fmt) -> None:
    accounts(pg_source, "acc_p", 3000)
    one = fetch_file(pg_block(pg_source, "acc_p", source_id="one", output_format=fmt), tmp_path)
    many = fetch_file(
        pg_block(pg_source, "acc_p", source_id="many", output_format=fmt, parallel_streams=4),
        tmp_path,
    )
    if fmt == "csv":
        assert many == one and many.count(b"\n") == 1 + kept(3000)
    else:
        assert_tables_equal(pq.read_table(io.BytesIO(many)), pq.read_table(io.BytesIO(one)))


def test_pg_parallel_streams_read_one_snapshot(pg_source, tmp_path) -> None:
    """Writers move balance from a row of the first range to a row of the last range, one
    committed transaction at a time, during each extraction: every extracted file sums to
    the constant total (ranges read under different snapshots would not, in general)."""
    accounts(pg_source, "acc_s", 40000)
    with pg_source.engine.connect() as conn:
        total, count = conn.execute(text("SELECT sum(bal), count(*) FROM acc_s")).one()
    stop = threading.Event()

    def move() -> None:
        with pg_source.engine.connect() as conn:
            i = 0
            while not stop.is_set():
                i += 1
                low, high = 1 + i % 500, 39000 + i % 500
                low, high = (low + 1, high + 1) if low % 7 == 3 or high % 7 == 3 else (low, high)
                conn.execute(text("UPDATE acc_s SET bal = bal - 1 WHERE id = :i"), {"i": low})
                conn.execute(text("UPDATE acc_s SET bal = bal + 1 WHERE id = :i"), {"i": high})
                conn.commit()

    writer = threading.Thread(target=move, daemon=True)
    writer.start()
    try:
        for n in range(3):
            source = pg_block(
                pg_source, "acc_s", source_id=f"snap{n}", output_format="parquet",
                parallel_streams=4, columns=["id", "bal"],
            )  # fmt: skip
            table = pq.read_table(io.BytesIO(fetch_file(source, tmp_path)))
            assert table.num_rows == count
            assert sum(table["bal"].to_pylist()) == total
    finally:
        stop.set()
        writer.join(10)


def test_pg_parallel_streams_id_window_and_fallbacks(pg_source, tmp_path) -> None:
    accounts(pg_source, "acc_i", 500)
    source = pg_block(
        pg_source, "acc_i", source_id="ids", incremental_mode="id", incremental_column="id",
        parallel_streams=3, output_format="parquet",
    )  # fmt: skip
    path = tmp_path / "ids.parquet"
    with open(path, "wb") as out:
        source.fetch(Candidate(name="t", ref=Window("incremental", {"through": 100}, 400)), out)
    source.close()
    ids = pq.read_table(path)["id"].to_pylist()
    assert ids == [i for i in range(101, 401) if i % 7 != 3]
    # a text key: checked at run time, one stream, same rows
    accounts(pg_source, "acc_t", 50, key="text")
    text_key = pg_block(pg_source, "acc_t", source_id="txt", parallel_streams=2)
    rows = fetch_file(text_key, tmp_path).decode().splitlines()
    assert len(rows) == 1 + kept(50)
    with pytest.raises(ConfigError, match="parallel_streams"):
        pg_block(
            pg_source, "acc_i", source_id="ts", incremental_mode="timestamp",
            incremental_column="id", parallel_streams=2,
        ).preflight()  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    lo=st.integers(-(2**62), 2**62),
    span=st.integers(1, 2**64),
    n=st.integers(1, 20),
    lead=st.sampled_from([1.0, 0.75, 0.5, 0.01]),
)
def test_split_ranges_cover_without_overlap(lo, span, n, lead) -> None:
    hi = lo + span - 1
    ranges = parallel_copy.split_ranges(lo, hi, n, lead)
    assert ranges[0][0] == lo and ranges[-1][1] == hi + 1 and len(ranges) <= n
    assert all(a < b for a, b in ranges)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    if span >= 1000 * n and n > 1:  # the lead's share as asked, to rounding
        share = (ranges[0][1] - lo) / span
        assert abs(share - lead / (lead + n - 1)) < 0.01


def test_split_ranges_examples() -> None:
    assert parallel_copy.split_ranges(1, 10, 2) == [(1, 6), (6, 11)]
    assert parallel_copy.split_ranges(1, 100, 2, 0.75) == [(1, 43), (43, 101)]
    assert parallel_copy.split_ranges(3, 4, 8) == [(3, 4), (4, 5)]
    assert parallel_copy.split_ranges(1, 1, 4) == [(1, 2)]
