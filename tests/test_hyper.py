"""Step 3: the Parquet -> Hyper build, on real .hyper files built into tmp_path.

The Parquet files mirror what BigQuery EXPORT DATA writes: no stored Arrow schema, TIMESTAMP as
UTC-adjusted micros, DATETIME as local micros, NUMERIC as decimal(38,9), TIME as micros.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tableauhyperapi import (
    Connection,
    CreateMode,
    HyperException,
    HyperProcess,
    SqlType,
    TableName,
    Telemetry,
    TypeTag,
)
from tableauhyperapi.hyperexception import ContextId

import flows.hyper as hyper_module
from flows.config import HyperConfig
from flows.errors import BuildError, is_retryable
from flows.hyper import EXTRACT_SCHEMA, EXTRACT_TABLE, HyperExtract, build_hyper, hyper_columns

UTC = dt.UTC

# BigQuery type -> the Arrow type pyarrow reads from EXPORT DATA's Parquet -> Hyper type.
BQ_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),  # INT64
        ("date", pa.date32()),  # DATE
        ("event_ts", pa.timestamp("us", tz="UTC")),  # TIMESTAMP
        ("local dt", pa.timestamp("us")),  # DATETIME (and a space in the name)
        ("cost", pa.float64()),  # FLOAT64
        ("amount", pa.decimal128(38, 9)),  # NUMERIC
        ("キャンペーン", pa.string()),  # STRING (and a Japanese name)
        ("active", pa.bool_()),  # BOOL
        ("payload", pa.binary()),  # BYTES
        ("start_time", pa.time64("us")),  # TIME
        ('say "hi"', pa.string()),  # quotes in a name must be escaped
        ("attrs", pa.json_(pa.string())),  # JSON, if written with Parquet's JSON logical type
    ]
)
BQ_COLUMNS = (
    ("id", "BIGINT"),
    ("date", "DATE"),
    ("event_ts", "TIMESTAMPTZ"),
    ("local dt", "TIMESTAMP"),
    ("cost", "DOUBLE PRECISION"),
    ("amount", "NUMERIC(38,9)"),
    ("キャンペーン", "TEXT"),
    ("active", "BOOLEAN"),
    ("payload", "BYTES"),
    ("start_time", "TIME"),
    ('say "hi"', "TEXT"),
    ("attrs", "TEXT"),
)
ROWS_A = [
    (
        1,
        dt.date(2026, 11, 28),
        dt.datetime(2026, 11, 28, 23, 59, 59, 999999, tzinfo=UTC),
        dt.datetime(2026, 11, 29, 8, 59, 59, 999999),
        0.1,
        Decimal("99999999999999999999999999999.999999999"),
        "秋のセール 🍁",
        True,
        b"\x00\xff\x10",
        dt.time(23, 59, 59, 999999),
        "",
        '{"キー": "値", "n": 1.5}',
    ),
    (2, *([None] * 11)),
]
ROWS_B = [
    (
        3,
        dt.date(1970, 1, 1),
        dt.datetime(2000, 2, 29, 0, 0, 0, 1, tzinfo=UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59),
        -1.5e300,
        Decimal("-0.000000001"),
        "ｶﾀｶﾅ and ASCII",
        False,
        b"",
        dt.time(0, 0),
        "x",
        "[]",
    ),
]


def write_bq_parquet(path: Path, rows: list[tuple], schema: pa.Schema = BQ_SCHEMA) -> Path:
    """Write rows the way EXPORT DATA does: Parquet types only, no stored Arrow schema."""
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    table = pa.table(
        [pa.array(col, type=field.type) for col, field in zip(columns, schema, strict=True)],
        schema=schema,
    )
    pq.write_table(table, path, store_schema=False, compression="snappy")
    return path


def footers(files: list[Path]) -> dict[str, object]:
    """What the download hands the build: the files' one schema and their rows, from the footers."""
    rows = sum(pq.read_metadata(path).num_rows for path in files)
    return {"schema": pq.read_schema(files[0]), "file_rows": rows}


@pytest.fixture
def bq_files(tmp_path: Path) -> list[Path]:
    export = tmp_path / "export"
    export.mkdir()
    return [
        write_bq_parquet(export / "000000000000.parquet", ROWS_A),
        write_bq_parquet(export / "000000000001.parquet", []),  # zero-row shard
        write_bq_parquet(export / "000000000002 日本.parquet", ROWS_B),
    ]


@pytest.fixture(scope="session")
def hyper_reader() -> Iterator[HyperProcess]:
    """One Hyper process for reading back the built files (no log written)."""
    with HyperProcess(
        Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_config": ""}
    ) as process:
        yield process


def read_rows(process: HyperProcess, path: Path) -> list[list]:
    with Connection(process.endpoint, path, CreateMode.NONE) as connection:
        rows = connection.execute_list_query('SELECT * FROM "Extract"."Extract" ORDER BY "id"')
    return [[_to_python(v) for v in row] for row in rows]


def _to_python(value: object) -> object:
    to_python = getattr(value, "to_datetime", None) or getattr(value, "to_date", None)
    return to_python() if to_python else value


def hyper_type_for(arrow_type: pa.DataType, *, file_format_version: int = 3) -> str:
    """The Hyper SQL type `hyper_columns` gives one column of `arrow_type` (or its BuildError)."""
    schema = pa.schema([pa.field("<column>", arrow_type)])
    return hyper_columns(schema, file_format_version=file_format_version)[0][1]


_SQL_NAMES = {
    TypeTag.BOOL: "BOOLEAN",
    TypeTag.SMALL_INT: "SMALLINT",
    TypeTag.INT: "INTEGER",
    TypeTag.BIG_INT: "BIGINT",
    TypeTag.DOUBLE: "DOUBLE PRECISION",
    TypeTag.FLOAT: "REAL",
    TypeTag.TEXT: "TEXT",
    TypeTag.BYTES: "BYTES",
    TypeTag.DATE: "DATE",
    TypeTag.TIME: "TIME",
    TypeTag.TIMESTAMP: "TIMESTAMP",
    TypeTag.TIMESTAMP_TZ: "TIMESTAMPTZ",
}


def _sql_type_name(sql_type: SqlType) -> str:
    """Spell a Hyper catalog type the way `hyper_columns` does (e.g. `NUMERIC(38,9)`)."""
    if sql_type.tag == TypeTag.NUMERIC:
        return f"NUMERIC({sql_type.precision},{sql_type.scale})"
    return _SQL_NAMES.get(sql_type.tag, str(sql_type))


def read_extract_columns(process: HyperProcess, path: Path) -> tuple[tuple[str, str], ...]:
    """The (name, Hyper SQL type) columns of "Extract"."Extract" as the file's catalog has them.

    Raises BuildError, as the product module's reader did before it moved here (its only
    users are these tests).
    """
    try:
        with Connection(process.endpoint, path, CreateMode.NONE) as connection:
            table = connection.catalog.get_table_definition(
                TableName(EXTRACT_SCHEMA, EXTRACT_TABLE)
            )
            return tuple((col.name.unescaped, _sql_type_name(col.type)) for col in table.columns)
    except HyperException as exc:
        message = hyper_module._hyper_message(exc)
        raise BuildError(f"Cannot read the columns of {path}: {message}") from exc


def hyperd_command_line(log_dir: Path) -> str:
    for line in (log_dir / "hyperd.log").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("k") == "startup-info":
            return entry["v"]["command-line"]
    raise AssertionError("no startup-info entry in hyperd.log")


def hyperd_log_entries(log_dir: Path, kind: str) -> list[dict]:
    """The hyperd.log entries of one kind (`"k"`), e.g. "query-begin" or "database-close"."""
    lines = (log_dir / "hyperd.log").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry.get("k") == kind]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- the type mapping (pure) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrow_type", "expected"),
    [
        (pa.date32(), "DATE"),
        (pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ"),
        (pa.timestamp("us", tz="Asia/Tokyo"), "TIMESTAMPTZ"),
        (pa.timestamp("us"), "TIMESTAMP"),
        (pa.timestamp("ms"), "TIMESTAMP"),
        (pa.int64(), "BIGINT"),
        (pa.int32(), "INTEGER"),
        (pa.int16(), "SMALLINT"),
        (pa.uint32(), "BIGINT"),
        (pa.string(), "TEXT"),
        (pa.large_string(), "TEXT"),
        (pa.dictionary(pa.int32(), pa.string()), "TEXT"),
        (pa.json_(pa.string()), "TEXT"),
        (pa.float64(), "DOUBLE PRECISION"),
        (pa.float32(), "DOUBLE PRECISION"),  # REAL needs file format 4
        (pa.bool_(), "BOOLEAN"),
        (pa.decimal128(38, 9), "NUMERIC(38,9)"),
        (pa.decimal128(10, 2), "NUMERIC(10,2)"),
        (pa.binary(), "BYTES"),
        (pa.large_binary(), "BYTES"),
        (pa.time64("us"), "TIME"),
    ],
)
def test_hyper_type_for_maps_each_type(arrow_type: pa.DataType, expected: str) -> None:
    assert hyper_type_for(arrow_type, file_format_version=3) == expected


def test_float32_becomes_real_only_from_file_format_4() -> None:
    assert hyper_type_for(pa.float32(), file_format_version=4) == "REAL"
    assert hyper_type_for(pa.float32(), file_format_version=2) == "DOUBLE PRECISION"


@pytest.mark.parametrize(
    "arrow_type",
    [
        pa.decimal256(76, 38),
        pa.list_(pa.int64()),
        pa.struct([("a", pa.int64())]),
        pa.map_(pa.string(), pa.int64()),
        pa.uint64(),
        pa.time32("ms"),
        pa.null(),
    ],
)
def test_hyper_type_for_refuses_types_extracts_cannot_hold(arrow_type: pa.DataType) -> None:
    with pytest.raises(BuildError, match=r"change the BigQuery view:\n  - '<column>': .*; use "):
        hyper_type_for(arrow_type)


def test_hyper_columns_names_every_unsupported_column_with_its_cast() -> None:
    schema = pa.schema(
        [
            ("ok", pa.int64()),
            ("big", pa.decimal256(76, 38)),
            ("tags", pa.list_(pa.string())),
            ("addr", pa.struct([("city", pa.string())])),
            ("n", pa.uint64()),
        ]
    )
    with pytest.raises(BuildError) as info:
        hyper_columns(schema, file_format_version=3)
    message = str(info.value)
    assert "4 column(s)" in message
    assert "CAST(`big` AS NUMERIC) AS `big`" in message
    assert "TO_JSON_STRING(`tags`) AS `tags`" in message
    assert "TO_JSON_STRING(`addr`) AS `addr`" in message
    assert "CAST(`n` AS INT64) AS `n`" in message
    assert "'ok'" not in message
    assert not info.value.retryable


def test_numeric_needs_file_format_3_and_the_message_says_how() -> None:
    schema = pa.schema([("amount", pa.decimal128(38, 9)), ("small", pa.decimal128(18, 2))])
    with pytest.raises(BuildError) as info:
        hyper_columns(schema, file_format_version=2)
    message = str(info.value)
    assert "'amount' NUMERIC(38,9)" in message
    assert "'small'" not in message  # 18 digits fit in file format 2
    assert "Set hyper.file_format_version=3 (Tableau Server 2023.1+/Cloud)" in message
    assert "FLOAT64" in message
    assert hyper_columns(schema, file_format_version=3)[0] == ("amount", "NUMERIC(38,9)")
    with pytest.raises(BuildError, match="file_format_version=3"):
        hyper_type_for(pa.decimal128(38, 9), file_format_version=2)


def test_hyper_message_keeps_main_message_hint_and_cause_without_context() -> None:
    cause = HyperException(ContextId(0x1234), "disk full", None)
    exc = HyperException(ContextId(0x99), "cannot insert", "free some space")
    exc.__cause__ = cause
    message = hyper_module._hyper_message(exc)
    assert message == "cannot insert\nHint: free some space\ndisk full"
    assert "0x" not in message


# --- building real extracts ---------------------------------------------------------------


@pytest.mark.hyper
def test_build_loads_every_bigquery_type_exactly(
    bq_files: list[Path], tmp_path: Path, hyper_reader: HyperProcess
) -> None:
    out = tmp_path / "out" / "day.hyper"
    extract = build_hyper(
        bq_files,
        out,
        HyperConfig(),
        **footers(bq_files),
        exported_rows=3,
        log_dir=tmp_path / "logs",
    )

    assert extract == HyperExtract(path=out, rows=3, columns=BQ_COLUMNS, file_format_version=3)
    assert read_extract_columns(hyper_reader, out) == BQ_COLUMNS
    expected = [list(r) for r in ROWS_A + ROWS_B]
    assert read_rows(hyper_reader, out) == expected
    assert leftovers(out.parent) == ["day.hyper"]  # no temp file left next to it


def test_load_batches_keep_the_file_order_and_the_byte_budget(tmp_path: Path) -> None:
    sizes = {"a": 100, "b": 100, "c": 100, "d": 250, "e": 50, "f": 400}
    files = []
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
        files.append(tmp_path / name)
    batches = hyper_module._load_batches(files, 250)
    # A file that would overflow the batch starts the next one; a bigger file goes alone.
    assert [[path.name for path in batch] for batch in batches] == [
        ["a", "b"],
        ["c"],
        ["d"],
        ["e"],
        ["f"],
    ]
    assert hyper_module._load_batches([], 250) == []


def _varied_rows(count: int, start: int) -> list[tuple]:
    """BigQuery-typed rows with distinct ids and values, from the templates, NULLs included."""
    templates = ROWS_A + ROWS_B
    rows = []
    for i in range(start, start + count):
        row = list(templates[i % len(templates)])
        row[0] = i
        if row[4] is not None:
            row[4] = row[4] / 3 + i  # FLOAT64
        if row[5] is not None and i % 6:  # NUMERIC(38,9); every 6th keeps the template's 38 digits
            row[5] = Decimal(f"-{i}.{i:09d}")
        if row[6] is not None:
            row[6] = f"{row[6]} {i}"
        rows.append(tuple(row))
    return rows


@pytest.mark.hyper
def test_a_load_in_several_batches_equals_the_parquet_rows_and_values(
    tmp_path: Path, hyper_reader: HyperProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    files = []
    for number in range(5):  # 5 files of 4 row groups each, one of them empty
        rows = _varied_rows(0 if number == 2 else 400, number * 400)
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in BQ_SCHEMA]
        table = pa.table(
            [pa.array(c, type=f.type) for c, f in zip(columns, BQ_SCHEMA, strict=True)],
            schema=BQ_SCHEMA,
        )
        path = export / f"{number:012d}.parquet"
        pq.write_table(table, path, store_schema=False, row_group_size=100)
        files.append(path)
    assert pq.ParquetFile(files[0]).num_row_groups == 4
    # A budget of two files per batch: three INSERTs, each on its own connection.
    budget = 2 * max(path.stat().st_size for path in files)
    monkeypatch.setattr(hyper_module, "LOAD_BATCH_BYTES", budget)
    assert len(hyper_module._load_batches(files, budget)) == 3

    out = tmp_path / "window.hyper"
    extract = build_hyper(
        files, out, HyperConfig(), **footers(files), exported_rows=1600, log_dir=tmp_path
    )

    assert (extract.rows, extract.columns) == (1600, BQ_COLUMNS)
    inserts = [
        entry
        for entry in hyperd_log_entries(tmp_path, "query-begin")
        if entry["v"]["query"].startswith("INSERT")
    ]
    assert len({entry["sess"] for entry in inserts}) == len(inserts) == 3
    closes = hyperd_log_entries(tmp_path, "database-close")  # each batch written to the file
    assert sum(e["v"]["path"]["path"].endswith(".building.hyper") for e in closes) >= 3
    expected = [
        [row[name] for name in BQ_SCHEMA.names]
        for path in files
        for row in pq.read_table(path).to_pylist()
    ]
    assert len(expected) == 1600
    assert read_rows(hyper_reader, out) == sorted(expected, key=lambda row: row[0])


def test_an_unreadable_parquet_file_is_a_clear_error(tmp_path: Path) -> None:
    gone = {"schema": BQ_SCHEMA, "file_rows": 1}
    with pytest.raises(BuildError, match=r"Cannot read the downloaded Parquet file .*gone"):
        build_hyper(
            [tmp_path / "gone.parquet"],
            tmp_path / "x.hyper",
            HyperConfig(),
            **gone,
            exported_rows=1,
            log_dir=tmp_path,
        )
    assert leftovers(tmp_path) == []


@pytest.mark.hyper
def test_zero_row_files_give_a_valid_empty_extract(tmp_path: Path, hyper_reader) -> None:
    empty = [write_bq_parquet(tmp_path / f"{i}.parquet", []) for i in range(2)]
    out = tmp_path / "empty.hyper"
    extract = build_hyper(
        empty, out, HyperConfig(), **footers(empty), exported_rows=0, log_dir=tmp_path
    )
    assert extract.rows == 0
    assert read_extract_columns(hyper_reader, out) == BQ_COLUMNS
    assert read_rows(hyper_reader, out) == []


def _file_format_version(path: Path) -> int:
    # Observed layout of .hyper headers (b"Hyper" ... version as uint16 LE at offset 10);
    # not a documented API, so the tests below also check the behaviour each version implies.
    return int.from_bytes(path.read_bytes()[10:12], "little")


@pytest.mark.hyper
@pytest.mark.parametrize("version", [2, 3, 4])
def test_file_format_version_is_honoured(
    version: int, tmp_path: Path, hyper_reader: HyperProcess
) -> None:
    schema = pa.schema([("id", pa.int64()), ("ratio", pa.float32())])
    src = write_bq_parquet(tmp_path / "f.parquet", [(1, 0.5)], schema)
    out = tmp_path / "f.hyper"
    extract = build_hyper(
        [src],
        out,
        HyperConfig(file_format_version=version),
        **footers([src]),
        exported_rows=1,
        log_dir=tmp_path,
    )
    assert extract.file_format_version == version
    assert _file_format_version(out) == version
    assert f"--default-database-version={version}" in hyperd_command_line(tmp_path)
    ratio_type = "REAL" if version >= 4 else "DOUBLE PRECISION"
    assert extract.columns == (("id", "BIGINT"), ("ratio", ratio_type))
    # What each version can store: NUMERIC(38,9) from 3, 32-bit REAL from 4.
    with Connection(hyper_reader.endpoint, out, CreateMode.NONE) as connection:
        for sql_type, since, refusal in (
            ("NUMERIC(38,9)", 3, "128-bit numerics"),
            ("REAL", 4, "32-bit floating points"),
        ):
            create = f"CREATE TABLE probe_{since} (x {sql_type})"
            if version < since:
                with pytest.raises(HyperException, match=refusal):
                    connection.execute_command(create)
            else:
                connection.execute_command(create)


@pytest.mark.hyper
def test_numeric_with_file_format_2_is_refused_and_nothing_written(
    bq_files: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out" / "day.hyper"
    with pytest.raises(BuildError, match=r"'amount' NUMERIC\(38,9\).*file_format_version=3"):
        build_hyper(
            bq_files,
            out,
            HyperConfig(file_format_version=2),
            **footers(bq_files),
            exported_rows=3,
            log_dir=tmp_path / "logs",
        )
    assert leftovers(out.parent) == []


@pytest.mark.hyper
def test_unsupported_types_are_refused_with_every_column_and_nothing_written(
    tmp_path: Path,
) -> None:
    table = pa.table(
        {
            "id": pa.array([1], pa.int64()),
            "big": pa.array([Decimal("1.5")], pa.decimal256(76, 38)),
            "tags": pa.array([["a", "b"]], pa.list_(pa.string())),
            "addr": pa.array([{"city": "東京"}], pa.struct([("city", pa.string())])),
        }
    )
    src = tmp_path / "bad.parquet"
    pq.write_table(table, src, store_schema=False)
    out = tmp_path / "out" / "bad.hyper"
    with pytest.raises(BuildError) as info:
        build_hyper(
            [src], out, HyperConfig(), **footers([src]), exported_rows=1, log_dir=tmp_path / "logs"
        )
    message = str(info.value)
    for fix in ("CAST(`big` AS NUMERIC)", "TO_JSON_STRING(`tags`)", "TO_JSON_STRING(`addr`)"):
        assert fix in message
    assert leftovers(out.parent) == []


@pytest.mark.hyper
def test_row_count_differing_from_the_manifest_fails_and_keeps_the_old_extract(
    bq_files: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "day.hyper"
    out.write_bytes(b"previous extract")
    with pytest.raises(BuildError, match="manifest says 4 rows but the 3 Parquet files hold 3"):
        build_hyper(
            bq_files,
            out,
            HyperConfig(),
            **footers(bq_files),
            exported_rows=4,
            log_dir=tmp_path / "logs",
        )
    assert out.read_bytes() == b"previous extract"
    assert leftovers(tmp_path) == ["day.hyper", "export"]


@pytest.mark.hyper
def test_loaded_count_is_verified_after_the_build(
    bq_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hyper_module._create_and_load

    def lose_a_row(*args, **kwargs) -> int:  # Hyper loading fewer rows than the footers hold
        return real(*args, **kwargs) - 1

    monkeypatch.setattr(hyper_module, "_create_and_load", lose_a_row)
    out = tmp_path / "day.hyper"
    out.write_bytes(b"previous extract")
    with pytest.raises(BuildError, match=r"Hyper loaded 2 rows .* hold 3"):
        build_hyper(
            bq_files,
            out,
            HyperConfig(),
            **footers(bq_files),
            exported_rows=3,
            log_dir=tmp_path / "logs",
        )
    assert out.read_bytes() == b"previous extract"
    assert leftovers(tmp_path) == ["day.hyper", "export", "logs"]


@pytest.mark.hyper
def test_hyper_engine_errors_become_build_errors_naming_the_file(tmp_path: Path) -> None:
    # Hyper cannot decompress Brotli (it reads SNAPPY, GZIP, ZSTD, LZ4_RAW): a real engine error.
    src = tmp_path / "brotli.parquet"
    pq.write_table(pa.table({"id": [1, 2]}), src, compression="brotli")
    out = tmp_path / "out" / "x.hyper"
    with pytest.raises(BuildError) as info:
        build_hyper(
            [src], out, HyperConfig(), **footers([src]), exported_rows=2, log_dir=tmp_path / "logs"
        )
    message = str(info.value)
    assert "brotli.parquet" in message
    assert "Unsupported compression codec 'BROTLI'" in message
    assert "Context: 0x" not in message
    assert isinstance(info.value.__cause__, HyperException)
    assert not is_retryable(info.value)
    assert leftovers(out.parent) == []


def test_no_files_while_bigquery_exported_rows_is_a_clear_error(tmp_path: Path) -> None:
    # Footers of unreadable or disagreeing files are refused by the download (tests/test_gcs.py).
    none = {"schema": BQ_SCHEMA, "file_rows": 0}
    with pytest.raises(BuildError, match="manifest says 2 rows but the 0 Parquet files hold 0"):
        build_hyper(
            [], tmp_path / "x.hyper", HyperConfig(), **none, exported_rows=2, log_dir=tmp_path
        )
    assert not (tmp_path / "x.hyper").exists()


@pytest.mark.hyper
def test_a_day_without_files_builds_an_empty_extract_from_the_handed_on_schema(
    tmp_path: Path, hyper_reader: HyperProcess
) -> None:
    out = tmp_path / "empty.hyper"
    extract = build_hyper(
        [], out, HyperConfig(), schema=BQ_SCHEMA, file_rows=0, exported_rows=0, log_dir=tmp_path
    )
    assert (extract.rows, extract.columns) == (0, BQ_COLUMNS)
    assert read_extract_columns(hyper_reader, out) == BQ_COLUMNS
    assert read_rows(hyper_reader, out) == []


@pytest.mark.hyper
def test_hyperd_log_goes_to_log_dir_not_cwd_and_telemetry_is_off_by_default(
    bq_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    log_dir = tmp_path / "run" / "logs"  # created by the build
    build_hyper(
        bq_files,
        tmp_path / "x.hyper",
        HyperConfig(),
        **footers(bq_files),
        exported_rows=3,
        log_dir=log_dir,
    )
    assert leftovers(cwd) == []
    command_line = hyperd_command_line(log_dir)
    assert f"--log-dir={log_dir}" in command_line
    assert "--telemetry-opt-in" not in command_line


@pytest.mark.hyper
def test_telemetry_is_sent_only_when_configured(bq_files: list[Path], tmp_path: Path) -> None:
    build_hyper(
        bq_files,
        tmp_path / "x.hyper",
        HyperConfig(telemetry=True),
        **footers(bq_files),
        exported_rows=3,
        log_dir=tmp_path / "logs",
    )
    assert "--telemetry-opt-in" in hyperd_command_line(tmp_path / "logs")


@pytest.mark.hyper
def test_read_extract_columns_of_a_file_without_the_extract_table(
    tmp_path: Path, hyper_reader: HyperProcess
) -> None:
    path = tmp_path / "other.hyper"
    with (
        HyperProcess(
            Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_config": ""}
        ) as process,
        Connection(process.endpoint, path, CreateMode.CREATE) as connection,
    ):
        connection.execute_command("CREATE TABLE t (x INT)")
    with pytest.raises(BuildError, match=r"Cannot read the columns of .*other.hyper"):
        read_extract_columns(hyper_reader, path)


def test_an_uncreatable_log_dir_is_a_clear_error(bq_files: list[Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BuildError, match=r"Cannot create directory .*file"):
        build_hyper(
            bq_files,
            tmp_path / "x.hyper",
            HyperConfig(),
            **footers(bq_files),
            exported_rows=3,
            log_dir=blocker / "logs",
        )
