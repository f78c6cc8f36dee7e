"""Step 1, the export: pure SQL/naming tests, then real exports on the emulators."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from google.api_core import exceptions as gapi
from google.cloud import bigquery, storage

from flows.bigquery import (
    attempt_prefix,
    days_select,
    dry_run_days,
    export_statement,
    export_view,
    fingerprint_days,
    fingerprint_select,
    job_labels,
    numeric_columns_of,
)
from flows.config import BigQueryConfig, GcsConfig
from flows.errors import ConfigError, ExportError, is_retryable
from standins.datamart import SeededMart, ad_rows, scanned_bytes, seed_ad_datamart
from standins.loopback import Request, Response
from tests.plugins.emulators import EMPTY_DATE, EMULATOR_PROJECT, MART_DATES, MART_ROWS_PER_DAY

DAY = date(2026, 11, 3)
GCS = GcsConfig(bucket="stage-bucket", prefix="bq-tableau")
URI = "gs://stage-bucket/bq-tableau/p-roject.mart.v/run_date=2026-11-03/run-1/part-*.parquet"


# --- pure: SQL and names -----------------------------------------------------------------


def test_export_statement_quotes_names_and_binds_the_date() -> None:
    sql = export_statement("my-project.mart.ad_view", "date", URI, "SNAPPY")
    assert sql == (
        f"EXPORT DATA OPTIONS(uri='{URI}', format='PARQUET', compression='SNAPPY', "
        "overwrite=false) AS SELECT * FROM `my-project.mart.ad_view` WHERE `date` IN UNNEST(@days)"
    )


def test_export_statement_without_compression_omits_the_option() -> None:
    sql = export_statement("my-project.mart.ad_view", "day", URI, "NONE")
    assert "compression" not in sql
    assert "WHERE `day` IN UNNEST(@days)" in sql


@pytest.mark.parametrize(
    "view",
    [
        "my-project.mart.v`; DROP TABLE x; --",
        "my-project.mart",
        "my-project.mart.v.extra",
        "my-project.mart.v w",
        "My-Project.mart.v",
        "my-project.ma-rt.v",
        "my-project.mart.v\\",
    ],
)
def test_bad_view_names_are_refused(view: str) -> None:
    with pytest.raises(ConfigError, match=r"bigquery\.view"):
        export_statement(view, "date", URI, "SNAPPY")


def test_a_domain_scoped_project_is_refused_by_the_sql_builder_too() -> None:
    with pytest.raises(ConfigError, match="domain-scoped projects are not supported") as caught:
        export_statement("example.com:my-project.mart.view", "date", URI, "SNAPPY")
    assert str(caught.value).endswith("Fix bigquery.view.")


@pytest.mark.parametrize("column", ["date` = date OR `1", "da te", "1date", "", "date;"])
def test_bad_date_columns_are_refused(column: str) -> None:
    with pytest.raises(ConfigError, match=r"bigquery\.date_column"):
        days_select("my-project.mart.v", column)


@pytest.mark.parametrize(
    "uri",
    [
        "gs://stage-bucket/it's/part-*.parquet",
        "gs://stage-bucket/a/part-*.csv",
        "s3://stage-bucket/a/part-*.parquet",
        "gs://stage-bucket/a b/part-*.parquet",
    ],
)
def test_unsafe_uris_are_refused(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"gcs\.prefix"):
        export_statement("my-project.mart.v", "date", uri, "SNAPPY")


def test_attempt_prefix_layout() -> None:
    assert attempt_prefix(GCS, "my-project.mart.v", DAY, "0f3c-2") == (
        "gs://stage-bucket/bq-tableau/my-project.mart.v/run_date=2026-11-03/0f3c-2/"
    )


@pytest.mark.parametrize("attempt", ["", "..", "../x", "a/b", "a b", "-x", "a'b", "x" * 129])
def test_unsafe_attempt_ids_are_refused(attempt: str) -> None:
    with pytest.raises(ConfigError, match="attempt"):
        attempt_prefix(GCS, "my-project.mart.v", DAY, attempt)


def test_labels_are_valid_label_values() -> None:
    labels = job_labels("My-Project.Mart.Ad_View_" + "x" * 80, DAY)
    assert labels["pipeline"] == "bq-tableau"
    assert labels["run_date"] == "2026-11-03"
    assert labels["view"].startswith("my-project_mart_ad_view_")
    assert len(labels["view"]) == 63


def test_fingerprint_select_hashes_the_row_twice_and_sums_by_position() -> None:
    sql = fingerprint_select("p-roject.mart.v", "date", numeric_columns=("cost", "clicks"))
    hashed = "FARM_FINGERPRINT(TO_JSON_STRING(_view_row))"
    assert sql == (
        "SELECT _view_row.`date` AS fingerprint_date, COUNT(*) AS row_count, "
        f"BIT_XOR({hashed}) AS hash_xor, SUM(CAST({hashed} AS NUMERIC)) AS hash_sum, "
        "SUM(_view_row.`cost`) AS sum_0, SUM(_view_row.`clicks`) AS sum_1 "
        "FROM `p-roject.mart.v` AS _view_row "
        "WHERE _view_row.`date` BETWEEN @start AND @end GROUP BY 1"
    )


def test_fingerprint_columns_hash_a_struct_of_named_fields() -> None:
    sql = fingerprint_select("p-roject.mart.v", "day", columns=("cost", "clicks"))
    struct = "STRUCT(_view_row.`cost` AS `cost`, _view_row.`clicks` AS `clicks`)"
    assert f"BIT_XOR(FARM_FINGERPRINT(TO_JSON_STRING({struct}))) AS hash_xor" in sql
    assert "TO_JSON_STRING(_view_row)" not in sql
    assert "sum_0" not in sql


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"columns": ()}, r"bigquery\.fingerprint_columns is empty"),
        ({"columns": ("cost`) --",)}, r"bigquery\.fingerprint_columns 'cost`\) --' is not a valid"),
        ({"numeric_columns": ("a b",)}, r"Fix numeric_columns\.$"),
    ],
)
def test_fingerprint_select_refuses_unsafe_or_empty_columns(kwargs: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        fingerprint_select("p-roject.mart.v", "date", **kwargs)


def test_numeric_columns_of_a_schema() -> None:
    schema = [
        ("date", "DATE"),
        ("day_number", "INT64"),
        ("campaign", "STRING"),
        ("impressions", "INTEGER"),  # the REST API's legacy names
        ("conversion_value", "FLOAT"),
        ("cost", "NUMERIC"),
        ("budget", "BIGNUMERIC"),
        ("ctr", "FLOAT64"),
        ("hourly_clicks", "ARRAY<INT64>"),
        ("is_brand", "BOOL"),
        ("coût", "NUMERIC"),  # a flexible column name the SQL builder would refuse
    ]
    assert numeric_columns_of(schema, date_column="day_number") == (
        "impressions",
        "conversion_value",
        "cost",
        "budget",
        "ctr",
    )


def test_a_window_ending_before_it_starts_is_refused_before_any_call() -> None:
    bq = BigQueryConfig(view="p-roject.mart.v")
    with pytest.raises(ConfigError, match="ends before it starts"):
        fingerprint_days(object(), bq, DAY, DAY - timedelta(days=1), numeric_columns=())  # type: ignore[arg-type]


def test_an_export_of_no_days_is_refused_before_any_call() -> None:
    bq = BigQueryConfig(view="p-roject.mart.v")
    with pytest.raises(ConfigError, match="No dates to export"):
        export_view(object(), bq, GCS, [], attempt="a1")  # type: ignore[arg-type]


def test_unsafe_config_is_refused_before_any_call() -> None:
    # model_construct skips pydantic's validation: the SQL builder must still refuse.
    bq = BigQueryConfig.model_construct(
        view="p-roject.mart.v`x", date_column="date", location="US", compression="SNAPPY"
    )
    with pytest.raises(ConfigError, match=r"bigquery\.view"):
        export_view(object(), bq, GCS, [DAY], attempt="a1")  # type: ignore[arg-type]


# --- the wait: cancel on interruption (a stand-in job, for this error path only) -----------


class _StuckJob:
    job_id = "bq_tableau_stuck"
    total_bytes_processed = total_bytes_billed = None
    _properties: dict = {}  # noqa: RUF012

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.cancelled = False

    def result(self, **kwargs: object) -> None:
        raise self.error

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class _OneJobClient:
    def __init__(self, job: _StuckJob) -> None:
        self.job = job

    def query(self, sql: str, job_config: bigquery.QueryJobConfig, **kwargs: object) -> object:
        if job_config.dry_run:
            return SimpleNamespace(total_bytes_processed=0, schema=[])
        return self.job


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(1)])
def test_interrupted_wait_cancels_the_job_and_reraises(interrupt: BaseException) -> None:
    job = _StuckJob(interrupt)
    bq = BigQueryConfig(view="p-roject.mart.v")
    with pytest.raises(type(interrupt)):
        export_view(_OneJobClient(job), bq, GCS, [DAY], attempt="a1")  # type: ignore[arg-type]
    assert job.cancelled


# --- on the emulators ----------------------------------------------------------------------


def _config(view: str, **overrides: object) -> BigQueryConfig:
    return BigQueryConfig(view=view, date_column="date", location="US", **overrides)


def _objects(client: storage.Client, bucket: str) -> list[str]:
    return [b.name for b in client.list_blobs(bucket)]


@pytest.mark.emulator
def test_export_writes_the_day_under_the_attempt_prefix(
    proxied_bq_client, bigquery_proxy, gcs_client, ad_datamart, staging_bucket
) -> None:
    gcs = GcsConfig(bucket=staging_bucket, prefix="bq-tableau")
    bq = _config(ad_datamart.view, max_bytes_billed=10**9, job_id_prefix="daily_")

    manifest = export_view(proxied_bq_client, bq, gcs, [DAY], attempt="run-1")

    expected_prefix = (
        f"gs://{staging_bucket}/bq-tableau/{ad_datamart.view}/run_date=2026-11-03/run-1/"
    )
    assert manifest.uri_prefix == expected_prefix
    assert manifest.rows == MART_ROWS_PER_DAY
    assert manifest.files == 1
    assert manifest.job_id.startswith("daily_")
    assert manifest.estimated_bytes == 0  # what local-bigquery always estimates
    assert ("cost", "NUMERIC") in manifest.schema
    assert ("updated_at", "TIMESTAMP") in manifest.schema
    assert len(manifest.schema) == 14
    names = _objects(gcs_client, staging_bucket)
    assert names and all(f"gs://{staging_bucket}/{n}".startswith(expected_prefix) for n in names)
    # What went over the wire: a dry run first, then one job with the limit, labels, location.
    assert len(bigquery_proxy.job_inserts(dry_run=True)) == 1
    (job,) = bigquery_proxy.job_inserts(dry_run=False)
    query = job["configuration"]["query"]
    assert query["maximumBytesBilled"] == str(10**9)
    assert query["queryParameters"] == [
        {
            "name": "days",
            "parameterType": {"type": "ARRAY", "arrayType": {"type": "DATE"}},
            "parameterValue": {"arrayValues": [{"value": "2026-11-03"}]},
        }
    ]
    select = query["query"].split(") AS ", 1)[1]
    assert select.endswith("WHERE `date` IN UNNEST(@days)")  # the dates are a parameter
    assert job["configuration"]["labels"] == job_labels(ad_datamart.view, DAY)
    assert job["jobReference"]["location"] == "US"


@pytest.mark.emulator
def test_estimate_over_the_limit_is_refused_before_any_export(
    proxied_bq_client, bigquery_proxy, gcs_client, ad_datamart, staging_bucket
) -> None:
    bigquery_proxy.dry_run_bytes = 5 * 1024**4  # what a full-table scan of a big mart looks like
    bq = _config(ad_datamart.view, max_bytes_billed=10 * 1024**3)
    gcs = GcsConfig(bucket=staging_bucket)

    with pytest.raises(ExportError, match="max_bytes_billed") as caught:
        export_view(proxied_bq_client, bq, gcs, [DAY], attempt="run-1")

    assert not caught.value.retryable
    assert "5,497,558,138,880 bytes" in str(caught.value)
    assert bigquery_proxy.job_inserts(dry_run=False) == []
    assert _objects(gcs_client, staging_bucket) == []


@pytest.mark.emulator
def test_missing_view_is_permanent_with_a_clear_message(
    bq_client, ad_datamart, staging_bucket
) -> None:
    project, dataset, _ = ad_datamart.view.split(".")
    bq = _config(f"{project}.{dataset}.no_such_view")

    with pytest.raises(ExportError) as caught:
        export_view(bq_client, bq, GcsConfig(bucket=staging_bucket), [DAY], attempt="a1")

    message = str(caught.value)
    assert message.startswith(f"View {project}.{dataset}.no_such_view not found in location US")
    assert message.endswith("Check bigquery.view and bigquery.location.")
    assert isinstance(caught.value.__cause__, gapi.NotFound)
    assert not caught.value.retryable and not is_retryable(caught.value)


@pytest.mark.emulator
def test_unknown_date_column_names_the_setting(bq_client, ad_datamart, staging_bucket) -> None:
    bq = BigQueryConfig(view=ad_datamart.view, date_column="day")
    with pytest.raises(ExportError, match=r"bigquery\.date_column='day'") as caught:
        export_view(bq_client, bq, GcsConfig(bucket=staging_bucket), [DAY], attempt="a1")
    assert not caught.value.retryable


@pytest.mark.emulator
def test_a_timestamp_date_column_is_refused_before_any_export(
    bq_client, gcs_client, ad_datamart, staging_bucket
) -> None:
    bq = BigQueryConfig(view=ad_datamart.view, date_column="updated_at")

    with pytest.raises(
        ExportError, match=r"date_column='updated_at' .* is a TIMESTAMP, not a DATE"
    ):
        export_view(bq_client, bq, GcsConfig(bucket=staging_bucket), [DAY], attempt="a1")

    assert _objects(gcs_client, staging_bucket) == []  # nothing was exported


def _deny(request: Request) -> Response | None:
    if request.method == "POST" and request.path.endswith("/jobs"):
        return Response.json(
            {
                "error": {
                    "code": 403,
                    "message": "Access Denied: Table test-project:mart_src.ad_performance: User "
                    "does not have permission to query table test-project:mart_src.ad_performance",
                    "errors": [{"reason": "accessDenied", "domain": "global", "message": "..."}],
                    "status": "PERMISSION_DENIED",
                }
            },
            status=403,
        )
    return None


@pytest.mark.emulator
def test_access_denied_is_permanent_and_names_the_roles(
    proxied_bq_client, bigquery_proxy, ad_datamart, staging_bucket
) -> None:
    # local-bigquery does not enforce IAM: the proxy answers the dry run as BigQuery does.
    bigquery_proxy.intercept = _deny
    with pytest.raises(ExportError) as caught:
        export_view(
            proxied_bq_client,
            _config(ad_datamart.view),
            GcsConfig(bucket=staging_bucket),
            [DAY],
            attempt="a1",
        )
    message = str(caught.value)
    assert message.startswith(f"Access denied on {ad_datamart.view}")
    assert "roles/bigquery.dataViewer on dataset test-project:mart" in message
    assert "roles/bigquery.jobUser" in message
    assert isinstance(caught.value.__cause__, gapi.Forbidden)
    assert not caught.value.retryable


def _never_finishing(request: Request) -> Response | None:
    """Accept the export job but keep it RUNNING forever; record the cancel."""
    body = request.json() if request.body else {}
    running = {"status": {"state": "RUNNING"}}
    if request.method == "POST" and request.path.endswith("/jobs"):
        if body["configuration"].get("dryRun"):
            return None  # the dry run goes to the emulator
        return Response.json({**body, **running, "id": "x", "statistics": {}})
    if request.method == "POST" and request.path.endswith("/cancel"):
        job_id = request.path.split("/")[-2]
        ref = {"projectId": "test-project", "jobId": job_id, "location": "US"}
        return Response.json({"job": {"jobReference": ref, "status": {"state": "DONE"}}})
    if request.method == "GET" and "/queries/" in request.path:
        job_id = request.path.rsplit("/", 1)[-1]
        ref = {"projectId": "test-project", "jobId": job_id, "location": "US"}
        return Response.json({"jobReference": ref, "jobComplete": False})
    if request.method == "GET" and "/jobs/" in request.path:
        job_id = request.path.rsplit("/", 1)[-1]
        ref = {"projectId": "test-project", "jobId": job_id, "location": "US"}
        return Response.json({"jobReference": ref, "configuration": {"query": {}}, **running})
    return None


@pytest.mark.emulator
def test_job_is_cancelled_when_the_wait_times_out(
    proxied_bq_client, bigquery_proxy, ad_datamart, staging_bucket
) -> None:
    bigquery_proxy.intercept = _never_finishing
    bq = _config(ad_datamart.view, job_timeout_seconds=0.3)

    with pytest.raises(ExportError, match="did not finish within") as caught:
        export_view(proxied_bq_client, bq, GcsConfig(bucket=staging_bucket), [DAY], attempt="a1")

    assert caught.value.retryable
    cancels = [r.path for r in bigquery_proxy.requests if r.path.endswith("/cancel")]
    (job,) = bigquery_proxy.job_inserts(dry_run=False)
    assert cancels == [
        f"/bigquery/v2/projects/test-project/jobs/{job['jobReference']['jobId']}/cancel"
    ]


@pytest.mark.emulator
def test_fingerprint_job_is_cancelled_when_the_wait_times_out(
    proxied_bq_client, bigquery_proxy, ad_datamart
) -> None:
    bigquery_proxy.intercept = _never_finishing
    bq = _config(ad_datamart.view, job_timeout_seconds=0.3)

    with pytest.raises(ExportError, match=r"fingerprint query on .* did not finish") as caught:
        fingerprint_days(proxied_bq_client, bq, DAY, DAY, numeric_columns=())

    assert caught.value.retryable
    (job,) = bigquery_proxy.job_inserts(dry_run=False)
    assert any(
        r.path.endswith(f"/{job['jobReference']['jobId']}/cancel") for r in bigquery_proxy.requests
    )


@pytest.mark.emulator
def test_an_unknown_fingerprint_column_names_the_setting(bq_client, ad_datamart) -> None:
    bq = _config(ad_datamart.view)
    with pytest.raises(ExportError) as caught:
        fingerprint_days(bq_client, bq, DAY, DAY, numeric_columns=(), columns=("no_such_column",))
    message = str(caught.value)
    assert message.startswith(f"BigQuery rejected the fingerprint query on {ad_datamart.view}")
    assert message.endswith("and bigquery.fingerprint_columns are columns of it.")
    assert not caught.value.retryable


@pytest.mark.emulator
def test_every_seeded_date_exports_its_own_rows(bq_client, ad_datamart, staging_bucket) -> None:
    gcs = GcsConfig(bucket=staging_bucket)
    counts = {
        day: export_view(bq_client, _config(ad_datamart.view), gcs, [day], attempt="a1").rows
        for day in (MART_DATES[0], EMPTY_DATE)
    }
    assert counts == {MART_DATES[0]: MART_ROWS_PER_DAY, EMPTY_DATE: 0}


@pytest.mark.emulator
def test_one_export_job_writes_exactly_the_listed_days(
    proxied_bq_client, bigquery_proxy, gcs_client, ad_datamart, staging_bucket
) -> None:
    days = [MART_DATES[3], MART_DATES[1]]  # unsorted, not contiguous
    gcs = GcsConfig(bucket=staging_bucket, prefix="bq-tableau")

    manifest = export_view(proxied_bq_client, _config(ad_datamart.view), gcs, days, attempt="w-1")

    assert manifest.days == (MART_DATES[1], MART_DATES[3])
    assert manifest.run_date == MART_DATES[3]  # the folder and the labels use the last day
    assert f"/run_date={MART_DATES[3].isoformat()}/w-1/" in manifest.uri_prefix
    assert manifest.rows == 2 * MART_ROWS_PER_DAY
    (job,) = bigquery_proxy.job_inserts(dry_run=False)
    (dry,) = bigquery_proxy.job_inserts(dry_run=True)
    for body in (job, dry):
        assert body["configuration"]["query"]["queryParameters"][0]["parameterValue"] == {
            "arrayValues": [{"value": "2026-11-02"}, {"value": "2026-11-04"}]
        }
    assert job["configuration"]["labels"]["run_date"] == "2026-11-04"

    exported = [
        row
        for blob in gcs_client.list_blobs(staging_bucket)
        for row in pq.read_table(io.BytesIO(blob.download_as_bytes())).to_pylist()
    ]
    expected = ad_rows(manifest.days, MART_ROWS_PER_DAY)
    assert sorted((r["date"], r["ad_group_id"], r["cost"]) for r in exported) == sorted(
        (date.fromisoformat(r["date"]), r["ad_group_id"], Decimal(r["cost"])) for r in expected
    )


# --- change detection on the emulator ------------------------------------------------------


@pytest.fixture
def own_mart(bq_client: bigquery.Client) -> Iterator[SeededMart]:
    """A mart of its own for a test that restates rows (3 days x 8 rows)."""
    dataset = f"restated_{uuid.uuid4().hex[:8]}"
    yield seed_ad_datamart(bq_client, EMULATOR_PROJECT, dataset, MART_DATES[:3], 8)
    for name in (dataset, f"{dataset}_src"):
        bq_client.delete_dataset(f"{EMULATOR_PROJECT}.{name}", delete_contents=True)


def _fingerprint(client, mart: SeededMart, **kwargs: object):
    columns = kwargs.pop("numeric_columns", ("cost", "clicks"))
    bq = _config(mart.view)
    return fingerprint_days(
        client, bq, mart.dates[0], mart.dates[-1], numeric_columns=columns, **kwargs
    )


def _run(client: bigquery.Client, sql: str) -> None:
    client.query(sql).result()


@pytest.mark.emulator
def test_fingerprints_of_the_seeded_mart_per_day(
    proxied_bq_client, bigquery_proxy, ad_datamart
) -> None:
    bq = _config(ad_datamart.view, max_bytes_billed=10**9, job_id_prefix="daily_")
    numeric = numeric_columns_of(
        dry_run_days(proxied_bq_client, bq, [DAY]).schema, date_column="date"
    )
    assert numeric == ("impressions", "clicks", "cost", "conversions", "conversion_value", "ctr")
    bigquery_proxy.reset()

    window = (EMPTY_DATE, MART_DATES[-1])  # a day before the mart: no rows, so absent
    prints = fingerprint_days(proxied_bq_client, bq, *window, numeric_columns=numeric)

    assert sorted(prints.days) == list(MART_DATES)
    assert {day.rows for day in prints.days.values()} == {MART_ROWS_PER_DAY}
    assert len({day.digest for day in prints.days.values()}) == len(MART_DATES)
    assert prints.job_id.startswith("daily_")
    rows = ad_rows([MART_DATES[0]], MART_ROWS_PER_DAY)
    assert prints.days[MART_DATES[0]].sums == pytest.approx(
        {
            "impressions": sum(r["impressions"] for r in rows),
            "clicks": sum(r["clicks"] for r in rows),
            "cost": float(sum(Decimal(r["cost"]) for r in rows)),
            "conversions": sum(r["conversions"] or 0 for r in rows),
            "conversion_value": sum(r["conversion_value"] or 0 for r in rows),
            "ctr": sum(r["clicks"] / r["impressions"] for r in rows if r["impressions"]),
        }
    )
    # Deterministic: the same rows give the same fingerprints.
    again = fingerprint_days(proxied_bq_client, bq, *window, numeric_columns=numeric)
    assert again.days == prints.days
    # One query per call, with the export's settings; the dates are parameters.
    assert bigquery_proxy.job_inserts(dry_run=True) == []
    job = bigquery_proxy.job_inserts(dry_run=False)[0]
    query = job["configuration"]["query"]
    assert query["maximumBytesBilled"] == str(10**9)
    assert query["useQueryCache"] is False
    assert job["configuration"]["labels"] == job_labels(ad_datamart.view, MART_DATES[-1])
    assert job["jobReference"]["location"] == "US"
    assert [(p["name"], p["parameterValue"]["value"]) for p in query["queryParameters"]] == [
        ("start", "2026-10-31"),
        ("end", "2026-11-05"),
    ]
    assert "2026-" not in query["query"]


@pytest.mark.emulator
def test_a_restated_value_changes_only_that_days_digest_and_sums(bq_client, own_mart) -> None:
    before = _fingerprint(bq_client, own_mart)
    changed = own_mart.dates[1]

    _run(
        bq_client,
        f"UPDATE `{own_mart.table}` SET cost = cost + 1.5 "
        f"WHERE date = DATE '{changed}' AND campaign_id = 'c-1001'",  # 2 of the day's 8 rows
    )
    after = _fingerprint(bq_client, own_mart)

    assert after.days[changed].digest != before.days[changed].digest
    assert after.days[changed].rows == before.days[changed].rows
    assert after.days[changed].sums["cost"] == pytest.approx(before.days[changed].sums["cost"] + 3)
    assert after.days[changed].sums["clicks"] == before.days[changed].sums["clicks"]
    for day in set(own_mart.dates) - {changed}:
        assert after.days[day] == before.days[day]


@pytest.mark.emulator
def test_duplicate_rows_swapped_keep_count_and_xor_but_change_the_digest(
    bq_client, own_mart
) -> None:
    day = own_mart.dates[0]
    insert = f"INSERT INTO `{own_mart.table}` (date, campaign_id, cost) VALUES "
    _run(bq_client, f"DELETE FROM `{own_mart.table}` WHERE date = DATE '{day}'")
    _run(
        bq_client,
        insert + f"(DATE '{day}', 'A', 1), (DATE '{day}', 'A', 1), (DATE '{day}', 'B', 2)",
    )
    aab = _fingerprint(bq_client, own_mart).days[day]

    _run(
        bq_client, f"DELETE FROM `{own_mart.table}` WHERE date = DATE '{day}' AND campaign_id = 'A'"
    )
    _run(bq_client, insert + f"(DATE '{day}', 'C', 1), (DATE '{day}', 'C', 1)")
    ccb = _fingerprint(bq_client, own_mart).days[day]

    assert (ccb.rows, ccb.sums) == (aab.rows, aab.sums) == (3, {"cost": 4.0, "clicks": 0.0})
    xor = ccb.digest.split(":")[0]
    assert xor == aab.digest.split(":")[0]  # what an XOR alone would see: nothing changed
    assert ccb.digest != aab.digest


@pytest.mark.emulator
def test_fingerprint_columns_restrict_the_hash(bq_client, own_mart) -> None:
    day = own_mart.dates[2]
    metrics = {"columns": ("cost", "clicks")}
    before, before_metrics = (
        _fingerprint(bq_client, own_mart),
        _fingerprint(bq_client, own_mart, **metrics),
    )

    _run(
        bq_client,
        f"UPDATE `{own_mart.table}` SET campaign_name = 'renamed' WHERE date = DATE '{day}'",
    )
    renamed, renamed_metrics = (
        _fingerprint(bq_client, own_mart),
        _fingerprint(bq_client, own_mart, **metrics),
    )
    assert renamed.days[day].digest != before.days[day].digest  # the whole row sees it
    assert renamed_metrics.days == before_metrics.days  # the metrics do not

    _run(bq_client, f"UPDATE `{own_mart.table}` SET clicks = clicks + 1 WHERE date = DATE '{day}'")
    clicked = _fingerprint(bq_client, own_mart, **metrics)
    assert clicked.days[day].digest != renamed_metrics.days[day].digest
    assert clicked.days[own_mart.dates[0]] == renamed_metrics.days[own_mart.dates[0]]


@pytest.mark.emulator
def test_scanned_bytes_follow_bigquerys_data_sizes(bq_client, own_mart) -> None:
    day = own_mart.dates[0]
    _run(bq_client, f"DELETE FROM `{own_mart.table}` WHERE date = DATE '{day}'")
    _run(
        bq_client,
        f"INSERT INTO `{own_mart.table}` (date, campaign_id, cost, clicks) VALUES "
        f"(DATE '{day}', 'A', 1, NULL), (DATE '{day}', 'ab', 2, 5)",
    )
    assert scanned_bytes(bq_client, own_mart, [day], ["date", "cost"]) == 2 * (8 + 16)
    assert scanned_bytes(bq_client, own_mart, [day], ["campaign_id"]) == (2 + 1) + (2 + 2)
    assert scanned_bytes(bq_client, own_mart, [day], ["ctr"]) == 8  # clicks (NULL is 0 bytes)
    assert scanned_bytes(bq_client, own_mart, [day]) == 2 * (8 + 16) + 7 + 8


@pytest.mark.emulator
def test_fingerprint_bytes_against_the_export(bq_client, ad_datamart) -> None:
    """What the fingerprint reads, in BigQuery's billed bytes, against the export of the days.

    local-bigquery reports 0 bytes for every job, so `scanned_bytes` applies BigQuery's
    per-type sizes to the columns each query reads, on a table partitioned by date. The
    whole-row fingerprint reads every column of the window's days, as `SELECT *` does.
    Run with `-s` to see the figures.
    """
    days = list(MART_DATES)
    numeric = ["impressions", "clicks", "cost", "conversions", "conversion_value", "ctr"]
    export = scanned_bytes(bq_client, ad_datamart, days)  # = the whole-row fingerprint
    metrics = scanned_bytes(bq_client, ad_datamart, days, ["date", *numeric])  # columns=metrics
    cost_only = scanned_bytes(bq_client, ad_datamart, days, ["date", "cost"])  # and no sums
    per_day = export / len(days)
    print(
        f"\n{len(days)} days x {MART_ROWS_PER_DAY} rows: export = whole-row fingerprint "
        f"{export:,} B ({per_day:,.0f} B/day); fingerprint of the numeric columns "
        f"{metrics:,} B ({metrics / export:.0%}), of cost alone without sums {cost_only:,} B "
        f"({cost_only / export:.0%}). 28-day window with 2 changed days, against 28 per-date "
        f"exports: whole-row fingerprint + export {(28 + 2) / 28:.2f}x, "
        f"numeric-column fingerprint + export {(28 * metrics / export + 2) / 28:.2f}x"
    )
    assert cost_only < metrics < export
