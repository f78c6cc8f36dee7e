"""Step 3: build a Tableau Hyper extract from Parquet files (the pipeline's Hyper calls).

Hyper reads the Parquet files itself with `INSERT ... SELECT ... FROM external(ARRAY[...])`
(https://tableau.github.io/hyper-db/docs/sql/external/syntax), so no row passes through Python
and the process stays small. The files' schema and row count come from the download, which has
read their footers; the table definition follows from the schema by the mapping of
`hyper_columns`, documented in docs/hyper.md. The files are loaded in batches of at most
`LOAD_BATCH_BYTES`, one connection each, so hyperd's memory stays bounded for a long
restatement window (docs/hyper.md, "Memory").

The build checks the footers' rows against BigQuery's exported count, writes a temporary file
next to `out_path`, verifies the loaded count, and only then moves it into place, so a failed
build never leaves a half-written extract behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from tableauhyperapi import (
    Connection,
    CreateMode,
    HyperException,
    HyperProcess,
    TableName,
    Telemetry,
    escape_name,
    escape_string_literal,
)

from flows.config import HyperConfig
from flows.errors import BuildError

logger = logging.getLogger(__name__)

EXTRACT_SCHEMA = "Extract"
EXTRACT_TABLE = "Extract"

NUMERIC128_MIN_VERSION: Final[int] = 3
"""File format that first stores NUMERIC with precision 19-38 (BigQuery NUMERIC is 38,9)."""
REAL_MIN_VERSION: Final[int] = 4
"""File format that first stores 32-bit REAL; older formats get DOUBLE PRECISION instead."""
LOAD_BATCH_BYTES: Final[int] = 256 * 2**20
"""Parquet bytes per INSERT. hyperd maps a statement's input files and keeps the rows it wrote
dirty until the database's last connection closes; a connection per batch bounds both. Smaller
batches cost CPU for no lower peak (128 MB: +5-20% at 8M-16M rows); a day below this is one
statement, as before. Figures: bench/README.md."""
_NUMERIC64_MAX_PRECISION: Final[int] = 18
_NUMERIC_MAX_PRECISION: Final[int] = 38


@dataclass(frozen=True)
class HyperExtract:
    """A built .hyper file holding table "Extract"."Extract"."""

    path: Path
    rows: int
    columns: tuple[tuple[str, str], ...]  # (name, Hyper SQL type, e.g. "NUMERIC(38,9)")
    file_format_version: int


@dataclass(frozen=True)
class _Refusal:
    """Why a Parquet type cannot go into an extract, and the BigQuery fix for a column `{c}`."""

    reason: str
    fix: str


def _unwrap(arrow_type: pa.DataType) -> pa.DataType:
    # Dictionary-encoded and extension columns are stored as their plain value type.
    if pa.types.is_dictionary(arrow_type):
        return _unwrap(arrow_type.value_type)
    if isinstance(arrow_type, pa.BaseExtensionType):
        return _unwrap(arrow_type.storage_type)
    return arrow_type


_SIMPLE_TYPES: Final[dict[pa.DataType, str]] = {
    pa.bool_(): "BOOLEAN",
    pa.int8(): "SMALLINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.uint8(): "SMALLINT",
    pa.uint16(): "INTEGER",
    pa.uint32(): "BIGINT",
    pa.float64(): "DOUBLE PRECISION",
    pa.date32(): "DATE",
    pa.date64(): "DATE",
    # Hyper reads Parquet TIME_MICROS only (BigQuery's TIME); not TIME_MILLIS/TIME_NANOS.
    pa.time64("us"): "TIME",
}


def _map_type(arrow_type: pa.DataType, version: int) -> str | _Refusal:
    t = _unwrap(arrow_type)
    if t in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[t]
    if t == pa.float32():
        return "REAL" if version >= REAL_MIN_VERSION else "DOUBLE PRECISION"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "TEXT"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "BYTES"
    if pa.types.is_timestamp(t):
        # Parquet keeps only "adjusted to UTC" or not: any zone means an instant (TIMESTAMPTZ).
        return "TIMESTAMPTZ" if t.tz is not None else "TIMESTAMP"
    if pa.types.is_decimal(t):
        if t.precision > _NUMERIC_MAX_PRECISION:
            return _Refusal(
                f"decimal({t.precision},{t.scale}) (BIGNUMERIC) exceeds Hyper's 38 digits",
                "CAST({c} AS NUMERIC) AS {c} (or AS FLOAT64 if values exceed NUMERIC)",
            )
        return f"NUMERIC({t.precision},{t.scale})"
    if pa.types.is_uint64(t):
        return _Refusal("uint64 has no Hyper type", "CAST({c} AS INT64) AS {c}")
    if pa.types.is_float16(t):
        return _Refusal("float16 has no Hyper type", "CAST({c} AS FLOAT64) AS {c}")
    if pa.types.is_nested(t):
        return _Refusal(
            f"{t} (ARRAY/STRUCT/MAP) cannot go into a Tableau extract",
            "TO_JSON_STRING({c}) AS {c}",
        )
    if pa.types.is_time(t):
        return _Refusal(f"{t}: Hyper reads TIME only in microseconds", "CAST({c} AS STRING) AS {c}")
    if pa.types.is_null(t):
        return _Refusal("the column has no type (all NULL)", "CAST(NULL AS STRING) AS {c}")
    return _Refusal(f"{t} has no Hyper type", "CAST({c} AS STRING) AS {c}")


def _bq_name(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def hyper_columns(schema: pa.Schema, *, file_format_version: int) -> tuple[tuple[str, str], ...]:
    """Derive the extract's columns (name, Hyper SQL type) from a Parquet file's Arrow schema.

    Args:
        schema: The Arrow schema of the files (all columns become nullable in Hyper).
        file_format_version: The Hyper file format the extract will have.

    Returns:
        One (name, Hyper SQL type) per column, in the file's order.

    Raises:
        BuildError: Naming every column that cannot be stored, with the cast to add to the
            view, and every NUMERIC column that needs a newer file format.
    """
    columns: list[tuple[str, str]] = []
    refused: list[str] = []
    too_new: list[str] = []
    for field in schema:
        mapped = _map_type(field.type, file_format_version)
        if isinstance(mapped, _Refusal):
            fix = mapped.fix.format(c=_bq_name(field.name))
            refused.append(f"  - {field.name!r}: {mapped.reason}; use {fix}")
            continue
        if (
            file_format_version < NUMERIC128_MIN_VERSION
            and pa.types.is_decimal(_unwrap(field.type))
            and _unwrap(field.type).precision > _NUMERIC64_MAX_PRECISION
        ):
            too_new.append(f"{field.name!r} {mapped}")
        columns.append((field.name, mapped))
    problems: list[str] = []
    if refused:
        problems.append(
            f"{len(refused)} column(s) have types Tableau extracts cannot hold; change the "
            "BigQuery view:\n" + "\n".join(refused)
        )
    if too_new:
        problems.append(
            f"NUMERIC with more than 18 digits needs Hyper file format >= "
            f"{NUMERIC128_MIN_VERSION}, but hyper.file_format_version={file_format_version}: "
            f"{', '.join(too_new)}. Set hyper.file_format_version=3 (Tableau Server 2023.1+/Cloud) "
            "or CAST the column to FLOAT64 in the view."
        )
    if problems:
        raise BuildError("\n".join(problems))
    return tuple(columns)


def _hyper_message(exc: HyperException) -> str:
    """The readable part of a Hyper error: main message, hint and causes, without context ids."""
    parts: list[str] = []
    cause: BaseException | None = exc
    while isinstance(cause, HyperException):
        if cause.main_message:
            parts.append(cause.main_message.strip())
        if cause.hint:
            parts.append(f"Hint: {cause.hint.strip()}")
        cause = cause.__cause__
    return "\n".join(parts) or type(exc).__name__


def _process_parameters(config: HyperConfig, log_dir: Path) -> dict[str, str]:
    return {
        "log_dir": str(log_dir),
        "default_database_version": str(config.file_format_version),
    }


def _telemetry(config: HyperConfig) -> Telemetry:
    if config.telemetry:
        return Telemetry.SEND_USAGE_DATA_TO_TABLEAU
    return Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU


def _load_batches(files: Sequence[Path], budget: int) -> list[list[Path]]:
    """Group the files, in order, into batches of at most `budget` bytes (a bigger file alone)."""
    batches: list[list[Path]] = []
    size = 0
    for path in files:
        file_size = path.stat().st_size
        if batches and size + file_size <= budget:
            batches[-1].append(path)
            size += file_size
        else:
            batches.append([path])
            size = file_size
    return batches


def _create_and_load(
    hyper: HyperProcess,
    path: Path,
    columns: Sequence[tuple[str, str]],
    batches: Sequence[Sequence[Path]],
) -> int:
    table = TableName(EXTRACT_SCHEMA, EXTRACT_TABLE)
    definition = ", ".join(f"{escape_name(name)} {sql_type}" for name, sql_type in columns)
    names = ", ".join(escape_name(name) for name, _ in columns)
    connection = Connection(hyper.endpoint, path, CreateMode.CREATE)
    try:
        connection.catalog.create_schema(EXTRACT_SCHEMA)
        connection.execute_command(f"CREATE TABLE {table} ({definition})")
        for number, batch in enumerate(batches):  # none on an empty day: the table alone
            if number:
                # Hyper writes the database's dirty pages to the file when its last connection
                # closes (not at COMMIT): a new connection per batch bounds them to one batch.
                connection.close()
                connection = Connection(hyper.endpoint, path, CreateMode.NONE)
            # One external() over an ARRAY of absolute paths: local globs are not expanded.
            sources = ", ".join(escape_string_literal(str(file.resolve())) for file in batch)
            connection.execute_command(
                f"INSERT INTO {table} ({names}) "
                f"SELECT {names} FROM external(ARRAY[{sources}], FORMAT => 'parquet')"
            )
        return int(connection.execute_scalar_query(f"SELECT COUNT(*) FROM {table}"))
    finally:
        connection.close()


def build_hyper(
    files: Sequence[Path],
    out_path: Path,
    config: HyperConfig,
    *,
    schema: pa.Schema,
    file_rows: int,
    exported_rows: int | None,
    log_dir: Path,
) -> HyperExtract:
    """Load the Parquet files into a new .hyper at `out_path` with Hyper's own SQL.

    Args:
        files: The downloaded Parquet files of one export. None (an empty day on which the
            export wrote no file) builds an empty extract with the columns of `schema`.
        out_path: Where the extract goes; replaced atomically only after a verified build.
        config: File format version and telemetry.
        schema: The files' one Arrow schema, as the download read it from their footers
            (`DownloadedExport.schema`); no footer is read again here.
        file_rows: The rows the footers hold (`DownloadedExport.rows`).
        exported_rows: BigQuery's exported row count (the export manifest's `rows`); None when
            BigQuery gave none, and then the footers' count is all there is to check against.
        log_dir: Directory for hyperd.log (created if missing), e.g. the run's work dir.

    Returns:
        The built extract with its row count and (name, Hyper SQL type) columns.

    Raises:
        BuildError: Files holding another row count than BigQuery exported, unsupported column
            types, a file that cannot be read, a loaded count that differs, or a Hyper failure.
            Nothing is left at out_path.
    """
    started = time.monotonic()
    files = [Path(f) for f in files]
    if exported_rows is not None and exported_rows != file_rows:
        raise BuildError(
            f"The export manifest says {exported_rows} rows but the {len(files)} Parquet files "
            f"hold {file_rows}: the files are not what BigQuery exported, so nothing was "
            "built. Rerun the date (a new export attempt); if it persists, something else "
            "writes or deletes under gcs.prefix."
        )
    columns = hyper_columns(schema, file_format_version=config.file_format_version)
    out_path, log_dir = Path(out_path), Path(log_dir)
    for directory in (out_path.parent, log_dir):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BuildError(f"Cannot create directory {directory}: {exc}") from exc
    # Same directory as out_path, so os.replace is an atomic rename on one filesystem.
    tmp_path = out_path.with_name(f".{out_path.stem}.{uuid.uuid4().hex}.building.hyper")
    try:
        rows = _build(files, tmp_path, columns, config, log_dir)
        if rows != file_rows:  # = exported_rows, checked above
            raise BuildError(
                f"Hyper loaded {rows} rows from {len(files)} Parquet files that hold "
                f"{file_rows}; the extract was not written. Rerun the date."
            )
        os.replace(tmp_path, out_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    size = out_path.stat().st_size
    logger.info(
        "Built %s: %d rows, %d columns, %d files, %.1f MB, file format %d, in %.1f s",
        out_path.name,
        rows,
        len(columns),
        len(files),
        size / 1e6,
        config.file_format_version,
        time.monotonic() - started,
    )
    return HyperExtract(
        path=out_path,
        rows=rows,
        columns=columns,
        file_format_version=config.file_format_version,
    )


def _build(
    files: Sequence[Path],
    tmp_path: Path,
    columns: Sequence[tuple[str, str]],
    config: HyperConfig,
    log_dir: Path,
) -> int:
    try:
        batches = _load_batches(files, LOAD_BATCH_BYTES)
    except OSError as exc:
        raise BuildError(
            f"Cannot read the downloaded Parquet file {exc.filename}: {exc.strerror}. "
            "Rerun the date (a new download)."
        ) from exc
    try:
        with HyperProcess(
            telemetry=_telemetry(config), parameters=_process_parameters(config, log_dir)
        ) as hyper:
            return _create_and_load(hyper, tmp_path, columns, batches)
    except HyperException as exc:
        names = ", ".join(path.name for path in files[:5]) + (" ..." if len(files) > 5 else "")
        raise BuildError(
            f"Hyper could not build the extract from {names}: {_hyper_message(exc)}\n"
            f"(hyperd.log is in {log_dir})"
        ) from exc


def write_date_payload(
    extract: HyperExtract,
    days: Sequence[date],
    date_column: str,
    out_dir: Path,
    *,
    date_table: str,
) -> tuple[Path, int]:
    """Copy the extract to `out_dir` and add a table `date_table` holding one row per date.

    Tableau's delete action matches target rows against a payload table that may hold only the
    columns its condition uses, so the extract's rows cannot serve; and a date without rows
    (restated to nothing, or an empty day) must still be deleted.

    Args:
        extract: The extract whose rows the batch inserts.
        days: The dates the batch replaces (duplicates are stored once).
        date_column: The extract's DATE column; also the date table's one column.
        out_dir: Where the payload is written (`payload.hyper`).
        date_table: The date table's name in schema "Extract".

    Returns:
        The payload's path, and how many of the extract's rows have a `date_column` value
        outside `days`, NULL included (a correct export has none).

    Raises:
        BuildError: Hyper could not write the payload.
    """
    path = out_dir / "payload.hyper"
    shutil.copyfile(extract.path, path)
    col = escape_name(date_column)
    values = ", ".join(
        f"(DATE {escape_string_literal(day.isoformat())})" for day in sorted(set(days))
    )
    rows, dates = TableName(EXTRACT_SCHEMA, EXTRACT_TABLE), TableName(EXTRACT_SCHEMA, date_table)
    try:
        with (
            HyperProcess(
                Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_config": ""}
            ) as hyper,
            Connection(hyper.endpoint, str(path), CreateMode.NONE) as conn,
        ):
            conn.execute_command(f"CREATE TABLE {dates} ({col} DATE NOT NULL)")
            if values:
                conn.execute_command(f"INSERT INTO {dates} VALUES {values}")
            # NOT EXISTS also counts NULL dates: NULL = d is never true.
            stray = conn.execute_scalar_query(
                f"SELECT COUNT(*) FROM {rows} AS r WHERE NOT EXISTS "
                f"(SELECT 1 FROM {dates} AS d WHERE d.{col} = r.{col})"
            )
    except HyperException as exc:
        raise BuildError(f"Cannot write the update payload {path}: {_hyper_message(exc)}") from exc
    return path, int(stray or 0)


@dataclass(frozen=True)
class DateTotals:
    """What an extract holds for one date: its rows and the sums of its numeric columns."""

    rows: int
    sums: dict[str, float]  # column -> SUM (0.0 when all NULL), for the columns the extract has


@dataclass(frozen=True)
class DateProfile:
    """One date of an extract as the quality checks see it."""

    rows: int
    sums: dict[str, float]  # column -> SUM (0.0 when all NULL)
    nulls: dict[str, int]  # column -> NULL count
    newest: datetime | None  # MAX of the freshness column; None: no column, or all NULL


@contextmanager
def _read_extract(path: Path, date_column: str, log_dir: Path) -> Iterator[_Extract]:
    """A read-only connection to an extract's "Extract"."Extract", which must hold
    `date_column`, with the columns it has."""
    table = TableName(EXTRACT_SCHEMA, EXTRACT_TABLE)
    try:
        with (
            HyperProcess(
                Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_dir": str(log_dir)}
            ) as hyper,
            Connection(hyper.endpoint, str(path), CreateMode.NONE) as conn,
        ):
            if not conn.catalog.has_table(table):
                raise BuildError(
                    f"{path.name} has no table {table}: it is not an extract this pipeline "
                    "built or published, so its rows cannot be counted."
                )
            present = {
                str(c.name.unescaped) for c in conn.catalog.get_table_definition(table).columns
            }
            if date_column not in present:
                raise BuildError(
                    f"The extract has no column {date_column!r} (bigquery.date_column), so its "
                    "rows cannot be counted per date."
                )
            yield _Extract(conn, str(table), frozenset(present), escape_name(date_column))
    except HyperException as exc:
        raise BuildError(f"Hyper could not read {path.name}: {_hyper_message(exc)}") from exc


@dataclass(frozen=True)
class _Extract:
    conn: Connection
    table: str
    columns: frozenset[str]
    day: str  # the escaped date column


def _as_date(value: object) -> date:
    d: Any = value
    return date(d.year, d.month, d.day)


def totals_by_date(
    path: Path,
    date_column: str,
    numeric_columns: Sequence[str],
    start: date,
    end: date,
    *,
    log_dir: Path,
) -> tuple[dict[date, DateTotals], tuple[str, ...]]:
    """Count the rows and sum the numeric columns of each date from `start` to `end` of an
    extract ("Extract"."Extract"), with Hyper's SQL; the file is opened read-only.

    Returns:
        The totals of each date that has rows, and the `numeric_columns` the extract lacks
        (their sums cannot be compared).

    Raises:
        BuildError: the file has no "Extract"."Extract" table with `date_column`, or Hyper
            failed to read it.
    """
    with _read_extract(path, date_column, log_dir) as extract:
        summed = [c for c in numeric_columns if c in extract.columns]
        sums = "".join(f", SUM({escape_name(c)})" for c in summed)
        rows = extract.conn.execute_list_query(
            f"SELECT {extract.day}, COUNT(*){sums} FROM {extract.table} "
            f"WHERE {extract.day} BETWEEN DATE {escape_string_literal(start.isoformat())} "
            f"AND DATE {escape_string_literal(end.isoformat())} GROUP BY 1"
        )
    totals = {
        _as_date(d): DateTotals(
            rows=int(count),
            sums={c: float(v or 0) for c, v in zip(summed, values, strict=True)},
        )
        for d, count, *values in rows
    }
    return totals, tuple(c for c in numeric_columns if c not in extract.columns)


def profile_by_date(
    path: Path,
    date_column: str,
    *,
    sums: Sequence[str] = (),
    nulls: Sequence[str] = (),
    newest: str | None = None,
    log_dir: Path,
) -> dict[date, DateProfile]:
    """Each date's rows, sums of `sums`, NULL counts of `nulls` and MAX of `newest` in an
    extract, in one grouped query; the file is opened read-only.

    Raises:
        BuildError: a column is not in the extract (the preflight checks the view has them),
            or Hyper failed to read the file.
    """
    with _read_extract(path, date_column, log_dir) as extract:
        wanted = [*sums, *nulls, *([newest] if newest else [])]
        if missing := [c for c in dict.fromkeys(wanted) if c not in extract.columns]:
            raise BuildError(
                f"The extract has no column {', '.join(map(repr, missing))} that the quality "
                "checks read: fix quality in the pipeline's config."
            )
        selected = [
            *(f"SUM({escape_name(c)})" for c in sums),
            *(f"COUNT(*) - COUNT({escape_name(c)})" for c in nulls),
            *([f"MAX({escape_name(newest)})"] if newest else []),
        ]
        rows = extract.conn.execute_list_query(
            f"SELECT {extract.day}, COUNT(*){''.join(', ' + s for s in selected)} "
            f"FROM {extract.table} GROUP BY 1"
        )
    profiles = {}
    for d, count, *values in rows:
        if d is None:
            continue  # a NULL date is not a day (the publish refuses such rows)
        summed, counted, latest = (
            values[: len(sums)],
            values[len(sums) : len(sums) + len(nulls)],
            values[len(sums) + len(nulls) :],
        )
        profiles[_as_date(d)] = DateProfile(
            rows=int(count),
            sums={c: float(v or 0) for c, v in zip(sums, summed, strict=True)},
            nulls={c: int(v) for c, v in zip(nulls, counted, strict=True)},
            newest=latest[0].to_datetime() if latest and latest[0] is not None else None,
        )
    return profiles
