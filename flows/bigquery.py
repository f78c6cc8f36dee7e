"""Step 1: export days of a BigQuery view to GCS as Parquet (all the pipeline's BigQuery jobs).

Extract jobs cannot read a view, so the days leave BigQuery through `EXPORT DATA`
(https://cloud.google.com/bigquery/docs/reference/standard-sql/export-statements):

1. a dry run of the days' SELECT (`dry_run_days`, made by the flow's preflight and handed on)
   validates the SQL, the view and the permissions, returns the schema and estimates the bytes;
   above `bigquery.max_bytes_billed`, or with a `date_column` that is not a DATE, we refuse;
2. `EXPORT DATA OPTIONS(uri='gs://.../ATTEMPT/part-*.parquet', ...) AS SELECT * FROM view
   WHERE date_col IN UNNEST(@days)` runs with the dates as an ARRAY<DATE> query parameter,
   labels, a job-id prefix, `maximum_bytes_billed`, and a deadline after which (or on
   interruption) the job is cancelled: any set of days is one job;
3. the manifest records what BigQuery says it wrote (`exportDataStatistics`).

Every attempt writes under its own prefix, so a rerun can never read an earlier attempt's files.

Before exporting a window of days, `fingerprint_days` runs one aggregate query over the window:
per date the row count, an order-independent hash of the rows and the sums of the numeric
columns, so that only the days whose fingerprint changed need exporting (docs/export.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

import pyarrow as pa
import requests
from google.api_core import exceptions as gapi
from google.cloud import bigquery

from flows.config import (
    BUCKET_NAME,
    COLUMN_NAME,
    BigQueryConfig,
    GcsConfig,
    check_column,
    split_view,
)
from flows.errors import ConfigError, ExportError, is_retryable

logger = logging.getLogger(__name__)

PIPELINE_LABEL: Final = "bq-tableau"
"""Value of the `pipeline` label on every job, to find them in INFORMATION_SCHEMA.JOBS."""

_ATTEMPT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_EXPORT_URI_RE: Final = re.compile(
    rf"gs://{BUCKET_NAME.pattern}/[A-Za-z0-9._=:/-]+/part-\*\.parquet"
)
_COMPRESSIONS: Final = frozenset({"SNAPPY", "GZIP", "ZSTD", "NONE"})
_LABEL_VALUE_BAD: Final = re.compile(r"[^a-z0-9_-]")
# How EXPORT DATA ... FORMAT='PARQUET' writes each type (the REST API's legacy names included).
_PARQUET_TYPES: Final[dict[str, pa.DataType]] = {
    "INT64": pa.int64(),
    "INTEGER": pa.int64(),
    "FLOAT64": pa.float64(),
    "FLOAT": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "BOOL": pa.bool_(),
    "BOOLEAN": pa.bool_(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "TIME": pa.time64("us"),
}
# The types whose per-day SUM the fingerprint reports (the REST API's legacy names included).
NUMERIC_TYPES: Final = frozenset({"INT64", "INTEGER", "FLOAT64", "FLOAT", "NUMERIC", "BIGNUMERIC"})
_ROW: Final = "_view_row"  # the view's range variable in the fingerprint query


@dataclass(frozen=True)
class DryRun:
    """What the free dry run of the days' SELECT says, before any byte is billed."""

    estimated_bytes: int
    schema: tuple[tuple[str, str], ...]  # (column, BigQuery type) of the SELECT


@dataclass(frozen=True)
class ExportManifest:
    """What one export attempt wrote, as BigQuery reported it."""

    view: str
    run_date: date  # the last of `days`: it names the attempt's folder and labels the job
    days: tuple[date, ...]  # the dates exported, sorted
    uri_prefix: str  # gs://BUCKET/PREFIX/VIEW/run_date=YYYY-MM-DD/ATTEMPT/  (ends with "/")
    job_id: str
    rows: int | None  # exportDataStatistics.rowCount, when the API gives it
    files: int | None  # exportDataStatistics.fileCount, when the API gives it
    estimated_bytes: int  # from the dry run
    bytes_processed: int | None
    bytes_billed: int | None
    # (column, BigQuery type) of the exported SELECT, from the dry run: the download hands it
    # on (as `parquet_schema`) for an empty day on which the export wrote no file.
    schema: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DayFingerprint:
    """One date of the view as the fingerprint query sees it."""

    rows: int
    # "XOR:SUM" of the rows' FARM_FINGERPRINTs: equal iff both are. The XOR alone cancels
    # identical rows in pairs ({A, A, B} and {C, C, B} agree); the sum does not.
    digest: str
    sums: dict[str, float]  # numeric column -> its SUM that day (0.0 when all NULL)


@dataclass(frozen=True)
class Fingerprints:
    """The fingerprint of each date of a window that has rows; dates without rows are absent."""

    days: dict[date, DayFingerprint]
    job_id: str
    bytes_processed: int | None


# --- pure functions: names and SQL ---------------------------------------------------------


def quote_view(view: str) -> str:
    """Return `view` (`project.dataset.view`) as a backquoted identifier, after validating it.

    Raises:
        ConfigError: the name breaks the config's identifier rules (`flows.config.split_view`).
    """
    try:
        split_view(view)
    except ValueError as exc:
        raise ConfigError(f"{exc}. Fix bigquery.view.") from exc
    # One pair of backquotes is enough: the rules admit no backquote, backslash or space.
    return f"`{view}`"


def quote_column(column: str, *, setting: str = "bigquery.date_column") -> str:
    """Return `column` backquoted, after validating it.

    Args:
        setting: The config field the name comes from, named in the error.

    Raises:
        ConfigError: not a plain column name (`flows.config.check_column`).
    """
    try:
        check_column(column, setting)
    except ValueError as exc:
        raise ConfigError(f"{exc}. Fix {setting}.") from exc
    return f"`{column}`"


def days_select(view: str, date_column: str) -> str:
    """The SELECT of some days of the view; the dates are the `@days` ARRAY<DATE> parameter."""
    return f"SELECT * FROM {quote_view(view)} WHERE {quote_column(date_column)} IN UNNEST(@days)"


def fingerprint_select(
    view: str,
    date_column: str,
    *,
    numeric_columns: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> str:
    """The one aggregate query fingerprinting each date from `@start` to `@end` (DATE parameters).

    Per date: `row_count`; `hash_xor` and `hash_sum`, the BIT_XOR and the NUMERIC SUM of
    `FARM_FINGERPRINT(TO_JSON_STRING(row))` over the whole row, or over `columns` only; and
    `sum_0`, `sum_1`, ... the SUMs of `numeric_columns`, in their order. The hash sum cannot
    overflow: NUMERIC holds 29 integer digits and each hash fewer than 20, so a day may have
    up to 10^10 rows.

    Raises:
        ConfigError: an unsafe name, or `columns` is empty.
    """
    day = f"{_ROW}.{quote_column(date_column)}"
    if columns is None:
        row = f"TO_JSON_STRING({_ROW})"
    elif not columns:
        raise ConfigError(
            "bigquery.fingerprint_columns is empty, so nothing would be hashed. List the "
            "columns that restate (e.g. the metrics), or leave it unset to hash the whole row."
        )
    else:
        # Named fields, so that BigQuery and the emulator write the same JSON keys.
        quoted = [quote_column(c, setting="bigquery.fingerprint_columns") for c in columns]
        row = f"TO_JSON_STRING(STRUCT({', '.join(f'{_ROW}.{q} AS {q}' for q in quoted)}))"
    hashed = f"FARM_FINGERPRINT({row})"
    sums = [
        f"SUM({_ROW}.{quote_column(c, setting='numeric_columns')}) AS sum_{i}"
        for i, c in enumerate(numeric_columns)
    ]
    select = [
        f"{day} AS fingerprint_date",
        "COUNT(*) AS row_count",
        f"BIT_XOR({hashed}) AS hash_xor",
        f"SUM(CAST({hashed} AS NUMERIC)) AS hash_sum",
        *sums,
    ]
    return (
        f"SELECT {', '.join(select)} FROM {quote_view(view)} AS {_ROW} "
        f"WHERE {day} BETWEEN @start AND @end GROUP BY 1"  # by position: no alias can clash
    )


def numeric_columns_of(schema: Sequence[tuple[str, str]], *, date_column: str) -> tuple[str, ...]:
    """The numeric columns of a dry run's (column, BigQuery type)s, whose sums the report shows.

    INT64, FLOAT64, NUMERIC and BIGNUMERIC (and the legacy INTEGER, FLOAT), without the date
    column and without the names the SQL builder would refuse (BigQuery's flexible column
    names): those still count in the whole-row hash, only their sums are not reported.
    """
    return tuple(
        name
        for name, kind in schema
        if kind in NUMERIC_TYPES and name != date_column and COLUMN_NAME.fullmatch(name)
    )


def export_statement(view: str, date_column: str, uri: str, compression: str) -> str:
    """The `EXPORT DATA` statement writing the `@days` of `view` to `uri` as Parquet.

    Raises:
        ConfigError: a name, the URI or the compression is not safe to put into SQL.
    """
    if not _EXPORT_URI_RE.fullmatch(uri):
        raise ConfigError(
            f"Export URI {uri!r} is not a plain gs://BUCKET/PATH/part-*.parquet URI. "
            "Check gcs.bucket and gcs.prefix (letters, digits, '.', '_', '-', '=' and '/')."
        )
    if compression not in _COMPRESSIONS:
        raise ConfigError(f"bigquery.compression {compression!r} is not one of {_COMPRESSIONS}")
    options = [f"uri='{uri}'", "format='PARQUET'", "overwrite=false"]
    if compression != "NONE":  # Parquet is uncompressed when the option is absent
        options.insert(2, f"compression='{compression}'")
    return f"EXPORT DATA OPTIONS({', '.join(options)}) AS {days_select(view, date_column)}"


def attempt_prefix(gcs: GcsConfig, view: str, run_date: date, attempt: str) -> str:
    """The attempt's folder, `gs://BUCKET/PREFIX/VIEW/run_date=YYYY-MM-DD/ATTEMPT/`.

    Raises:
        ConfigError: `attempt` is not a single safe path segment.
    """
    if not _ATTEMPT_RE.fullmatch(attempt):
        raise ConfigError(
            f"Export attempt id {attempt!r} must be 1-128 letters, digits, '_' or '-' "
            "(e.g. the flow run id and task run count)."
        )
    quote_view(view)
    return f"gs://{gcs.bucket}/{gcs.prefix}/{view}/run_date={run_date.isoformat()}/{attempt}/"


def job_labels(view: str, run_date: date) -> dict[str, str]:
    """Labels for the job: lowercase letters, digits, '_' and '-', at most 63 characters."""

    def clean(value: str) -> str:
        return _LABEL_VALUE_BAD.sub("_", value.lower())[:63]

    return {"pipeline": PIPELINE_LABEL, "view": clean(view), "run_date": run_date.isoformat()}


# --- the export ----------------------------------------------------------------------------


def export_view(
    client: bigquery.Client,
    bq: BigQueryConfig,
    gcs: GcsConfig,
    days: Sequence[date],
    *,
    attempt: str,
    dry_run: DryRun | None = None,
) -> ExportManifest:
    """Export the rows of exactly `days` of the view, in one job, to a prefix unique to `attempt`.

    Args:
        days: The dates to export (one day is `[day]`); the folder and labels use the last.
        dry_run: The days' dry run, when the preflight already made it; made here if None.

    Raises:
        ConfigError: unsafe names or attempt id, or no days.
        ExportError: BigQuery refused or failed the export; `retryable` says if a rerun can help.
    """
    days = _sorted_days(days)
    run_date = days[-1]
    prefix = attempt_prefix(gcs, bq.view, run_date, attempt)
    statement = export_statement(bq.view, bq.date_column, f"{prefix}part-*.parquet", bq.compression)
    if dry_run is None:
        dry_run = dry_run_days(client, bq, days)

    job = _start(client, bq, gcs, statement, [_days_parameter(days)], run_date, stage="export")
    logger.info("Exporting %s for %s to %s (job %s)", bq.view, _days_text(days), prefix, job.job_id)
    _wait(job, bq, gcs, stage="export")

    # google-cloud-bigquery has no accessor for exportDataStatistics: read the job resource.
    stats = job._properties.get("statistics", {}).get("query", {}).get("exportDataStatistics")
    manifest = ExportManifest(
        view=bq.view,
        run_date=run_date,
        days=days,
        uri_prefix=prefix,
        job_id=job.job_id,
        rows=_int_or_none((stats or {}).get("rowCount")),
        files=_int_or_none((stats or {}).get("fileCount")),
        estimated_bytes=dry_run.estimated_bytes,
        bytes_processed=job.total_bytes_processed,
        bytes_billed=job.total_bytes_billed,
        schema=dry_run.schema,
    )
    logger.info(
        "Exported %s rows in %s files of %s for %s (job %s, %s bytes processed, %s billed)",
        manifest.rows,
        manifest.files,
        bq.view,
        _days_text(days),
        job.job_id,
        manifest.bytes_processed,
        manifest.bytes_billed,
    )
    return manifest


def dry_run_days(client: bigquery.Client, bq: BigQueryConfig, days: Sequence[date]) -> DryRun:
    """Dry-run the days' SELECT: the view, the permissions, the schema and the bytes, for free.

    Raises:
        ConfigError: unsafe names, or no days.
        ExportError: BigQuery refused the query, the estimate is above
            `bigquery.max_bytes_billed`, or `bigquery.date_column` is not a DATE.
    """
    days = _sorted_days(days)
    dry = _dry_run(client, bq, days_select(bq.view, bq.date_column), [_days_parameter(days)])
    estimate = int(dry.total_bytes_processed or 0)
    if estimate > bq.max_bytes_billed:
        raise ExportError(
            f"Refusing to export {bq.view} for {_days_text(days)}: the dry run estimates "
            f"{estimate:,} bytes, above bigquery.max_bytes_billed={bq.max_bytes_billed:,}. "
            "Raise bigquery.max_bytes_billed if the day legitimately grew, or partition/cluster "
            f"the table behind the view on {bq.date_column}.",
            retryable=False,
        )
    schema = tuple(_column(field) for field in dry.schema or ())
    _check_date_column(schema, bq, _days_text(days))
    logger.info(
        "Dry run of %s for %s: %d columns, %s bytes to scan (limit %s)",
        bq.view, _days_text(days), len(schema), f"{estimate:,}", f"{bq.max_bytes_billed:,}",
    )  # fmt: skip
    return DryRun(estimated_bytes=estimate, schema=schema)


# --- change detection ----------------------------------------------------------------------


def fingerprint_days(
    client: bigquery.Client,
    bq: BigQueryConfig,
    start: date,
    end: date,
    *,
    numeric_columns: Sequence[str],
    columns: Sequence[str] | None = None,
) -> Fingerprints:
    """Fingerprint each date from `start` to `end` (inclusive) of the view in one query.

    It reads the window's rows of the hashed and summed columns only: with a table partitioned
    on the date column, the whole-row fingerprint of N days costs what their export does.

    Args:
        numeric_columns: The columns whose per-day sums are reported (`numeric_columns_of`).
        columns: Hash only these columns (`bigquery.fingerprint_columns`); the whole row if None.

    Raises:
        ConfigError: unsafe names, an empty `columns`, or `end` before `start`.
        ExportError: BigQuery refused or failed the query; `retryable` says if a rerun can help.
    """
    if end < start:
        raise ConfigError(
            f"The fingerprint window {start}..{end} ends before it starts; check lookback_days."
        )
    numeric_columns = tuple(dict.fromkeys(numeric_columns))
    sql = fingerprint_select(
        bq.view, bq.date_column, numeric_columns=numeric_columns, columns=columns
    )
    params = [
        bigquery.ScalarQueryParameter("start", "DATE", start),
        bigquery.ScalarQueryParameter("end", "DATE", end),
    ]
    job = _start(client, bq, None, sql, params, end, stage="fingerprint")
    rows = _wait(job, bq, None, stage="fingerprint")
    try:
        days = {
            row["fingerprint_date"]: DayFingerprint(
                rows=int(row["row_count"]),
                digest=f"{int(row['hash_xor'])}:{int(row['hash_sum'])}",
                sums={
                    column: float(row[f"sum_{i}"] or 0) for i, column in enumerate(numeric_columns)
                },
            )
            for row in rows  # one page: at most one row per date of the window
        }
    except (gapi.GoogleAPICallError, gapi.RetryError, requests.RequestException) as exc:
        raise _translate(exc, bq, None, stage="fingerprint") from exc
    logger.info(
        "Fingerprinted %s from %s to %s: %d of %d dates have rows (job %s, %s bytes processed)",
        bq.view, start, end, len(days), (end - start).days + 1, job.job_id,
        job.total_bytes_processed,
    )  # fmt: skip
    return Fingerprints(days=days, job_id=job.job_id, bytes_processed=job.total_bytes_processed)


def parquet_schema(schema: Sequence[tuple[str, str]]) -> pa.Schema:
    """The Arrow schema BigQuery's Parquet export writes for these (column, BigQuery type)s.

    Lets the preflight foresee the extract's columns, and an export with no file still build
    an empty extract. Types without a Parquet twin here (GEOGRAPHY, JSON, INTERVAL, RANGE) come
    out as strings, as BigQuery writes them.
    """
    return pa.schema([pa.field(name, _arrow_type(kind)) for name, kind in schema])


def _arrow_type(kind: str) -> pa.DataType:
    if kind.startswith("ARRAY<"):
        return pa.list_(_arrow_type(kind.removeprefix("ARRAY<").removesuffix(">")))
    if kind in {"RECORD", "STRUCT"}:
        return pa.struct([])
    return _PARQUET_TYPES.get(kind, pa.string())


def _dry_run(
    client: bigquery.Client,
    bq: BigQueryConfig,
    sql: str,
    params: list[bigquery.ArrayQueryParameter],
) -> bigquery.QueryJob:
    config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, query_parameters=params)
    try:
        return client.query(sql, job_config=config, location=bq.location)
    except (gapi.GoogleAPICallError, gapi.RetryError, requests.RequestException) as exc:
        raise _translate(exc, bq, None, stage="dry run") from exc


def _start(
    client: bigquery.Client,
    bq: BigQueryConfig,
    gcs: GcsConfig | None,
    sql: str,
    params: Sequence[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter],
    run_date: date,
    *,
    stage: str,
) -> bigquery.QueryJob:
    """Start a billed job with the pipeline's settings: location, labels, limit, no cache."""
    config = bigquery.QueryJobConfig(
        query_parameters=list(params),
        labels=job_labels(bq.view, run_date),
        maximum_bytes_billed=bq.max_bytes_billed,
        use_query_cache=False,
    )
    try:
        return client.query(
            sql, job_config=config, location=bq.location, job_id_prefix=bq.job_id_prefix
        )
    except (gapi.GoogleAPICallError, gapi.RetryError, requests.RequestException) as exc:
        raise _translate(exc, bq, gcs, stage=stage) from exc


def _wait(
    job: bigquery.QueryJob, bq: BigQueryConfig, gcs: GcsConfig | None, *, stage: str
) -> bigquery.table.RowIterator:
    """Wait for the job; cancel it on timeout or interruption so it stops costing money."""
    doing = "exporting" if stage == "export" else f"running the {stage} query on"
    try:
        # job_retry=None: a failed export is retried by the task, into a new attempt prefix,
        # never by the client into the same one (overwrite=false would refuse it anyway).
        return job.result(timeout=bq.job_timeout_seconds, job_retry=None)
    except TimeoutError as exc:  # concurrent.futures.TimeoutError is TimeoutError since 3.11
        _cancel(job)
        raise ExportError(
            f"BigQuery job {job.job_id} {doing} {bq.view} did not finish within "
            f"bigquery.job_timeout_seconds={bq.job_timeout_seconds:g}; it was cancelled. "
            "Retry, or raise bigquery.job_timeout_seconds if the day is large.",
            retryable=True,
        ) from exc
    except (gapi.GoogleAPICallError, gapi.RetryError, requests.RequestException) as exc:
        raise _translate(exc, bq, gcs, stage=stage) from exc
    except BaseException:  # KeyboardInterrupt, Prefect cancellation/timeouts: stop the job too
        _cancel(job)
        raise


def _cancel(job: bigquery.QueryJob) -> None:
    try:
        job.cancel()
        logger.warning("Cancelled BigQuery job %s", job.job_id)
    except Exception as exc:  # the original failure matters more than a failed cancel
        logger.warning("Could not cancel BigQuery job %s: %s", job.job_id, exc)


def _translate(
    exc: BaseException, bq: BigQueryConfig, gcs: GcsConfig | None, *, stage: str
) -> ExportError:
    """Turn a vendor error into an ExportError whose message says what to fix."""
    reasons = {e.get("reason") for e in getattr(exc, "errors", None) or [] if isinstance(e, dict)}
    detail = getattr(exc, "message", None) or str(exc)
    project, dataset, _ = split_view(bq.view)
    fingerprint = stage == "fingerprint"  # one more setting can be at fault
    if "bytesBilledLimitExceeded" in reasons:
        fewer = ", or set bigquery.fingerprint_columns to hash fewer columns" if fingerprint else ""
        message = (
            f"BigQuery stopped the {stage} of {bq.view}: it would bill more than "
            f"bigquery.max_bytes_billed={bq.max_bytes_billed:,} bytes. Raise the limit if the "
            f"day legitimately grew{fewer}."
        )
    elif isinstance(exc, gapi.NotFound) and stage == "export" and "gs://" in detail:
        message = f"Staging bucket not found ({detail}). Check gcs.bucket."
    elif isinstance(exc, gapi.NotFound):
        message = (
            f"View {bq.view} not found in location {bq.location} ({detail}). "
            "Check bigquery.view and bigquery.location."
        )
    elif isinstance(exc, gapi.Forbidden) and not is_retryable(exc):
        if stage == "export" and gcs is not None and ("gs://" in detail or "storage" in detail):
            message = (
                f"Access denied writing to gs://{gcs.bucket} ({detail}): grant "
                f"roles/storage.objectAdmin on bucket {gcs.bucket} to the service account."
            )
        else:
            message = (
                f"Access denied on {bq.view} ({detail}): grant roles/bigquery.dataViewer on "
                f"dataset {project}:{dataset} (and on the datasets of the tables the view reads, "
                "unless it is an authorized view) and roles/bigquery.jobUser on the job's "
                "project to the service account."
            )
    elif isinstance(exc, gapi.BadRequest) and "invalidQuery" in reasons:
        also = " and bigquery.fingerprint_columns are columns of it" if fingerprint else ""
        message = (
            f"BigQuery rejected the {stage} query on {bq.view} ({detail}). "
            f"Check bigquery.view and that bigquery.date_column={bq.date_column!r} is a DATE "
            f"column of the view{also}."
        )
    else:
        message = f"BigQuery {stage} of {bq.view} failed: {type(exc).__name__}: {detail}"
    return ExportError(message, retryable=is_retryable(exc))


def _check_date_column(schema: tuple[tuple[str, str], ...], bq: BigQueryConfig, days: str) -> None:
    """Refuse a date column that is not a DATE, from the dry run, before anything is exported.

    A TIMESTAMP compared with the DATE parameters matches only midnight (so the days look empty)
    and the publish's per-date replace needs a DATE in Tableau.
    """
    kind = dict(schema).get(bq.date_column)
    if kind is not None and kind != "DATE":
        raise ExportError(
            f"bigquery.date_column={bq.date_column!r} of {bq.view} is a {kind}, not a DATE, so "
            f"{days} cannot select one day's rows. Add a DATE column to the view (e.g. "
            f"`DATE({bq.date_column}, 'Asia/Tokyo') AS day`) and set bigquery.date_column to it. "
            "Nothing was exported.",
            retryable=False,
        )


def _sorted_days(days: Sequence[date]) -> tuple[date, ...]:
    if not days:
        raise ConfigError("No dates to export: pass at least one day (a single day is [day]).")
    return tuple(sorted(set(days)))


def _days_parameter(days: Sequence[date]) -> bigquery.ArrayQueryParameter:
    return bigquery.ArrayQueryParameter("days", "DATE", list(days))


def _days_text(days: Sequence[date]) -> str:
    """`2026-11-03`, or `3 days in 2026-11-01..2026-11-05`, for messages and logs."""
    if len(days) == 1:
        return days[0].isoformat()
    return f"{len(days)} days in {days[0]}..{days[-1]}"


def _column(field: bigquery.SchemaField) -> tuple[str, str]:
    kind = field.field_type
    return field.name, f"ARRAY<{kind}>" if field.mode == "REPEATED" else kind


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(str(value))
