"""Step 2, the download: real exports from local-bigquery, downloaded from fake-gcs-server."""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect import flow, task

from flows.bigquery import ExportManifest, export_view, parquet_schema
from flows.config import BigQueryConfig, GcsConfig, HyperConfig
from flows.errors import BuildError, DownloadError, retry_if_transient
from flows.gcs import delete_export, download_export, split_gs_uri
from flows.hyper import build_hyper, hyper_columns
from tests.plugins.emulators import EMPTY_DATE, MART_ROWS_PER_DAY

pytestmark = pytest.mark.emulator

DAY = date(2026, 11, 2)


def _export(bq_client, mart, bucket: str, day: date = DAY, attempt: str = "run-1"):
    bq = BigQueryConfig(view=mart.view, date_column="date")
    return export_view(bq_client, bq, GcsConfig(bucket=bucket), [day], attempt=attempt)


def _rows_from_parquet(files) -> list[dict]:
    return [row for path in files for row in pq.read_table(path).to_pylist()]


def _canonical(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: repr(sorted(r.items())))


def test_download_holds_exactly_the_days_rows(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket)
    gcs = GcsConfig(bucket=staging_bucket, download_workers=4)

    result = download_export(gcs_client, manifest, tmp_path / "work", gcs)

    direct = bq_client.query(
        f"SELECT * FROM `{ad_datamart.view}` WHERE date = DATE '2026-11-02'"
    ).result()
    expected = [dict(row.items()) for row in direct]
    got = _rows_from_parquet(result.files)
    assert len(expected) == MART_ROWS_PER_DAY
    assert _canonical(got) == _canonical(expected)  # NUMERIC, TIMESTAMP, NULLs, Japanese
    assert result.rows == MART_ROWS_PER_DAY
    assert result.bytes == sum(p.stat().st_size for p in result.files) > 0
    assert all(p.parent == tmp_path / "work" for p in result.files)
    assert result.schema.field("cost").type == pa.decimal128(38, 9)  # from the footer
    assert any(r["campaign_name"] == "春の新生活セール" for r in got)
    assert any(r["ctr"] is None for r in got) and any(r["conversions"] is None for r in got)


def test_the_dry_run_schema_foresees_the_files_columns(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    # The preflight compares Tableau's columns with these before anything is exported, and an
    # empty day without files builds from them: they must be what the export really writes.
    manifest = _export(bq_client, ad_datamart, staging_bucket)
    result = download_export(gcs_client, manifest, tmp_path, GcsConfig(bucket=staging_bucket))

    written = pq.read_schema(result.files[0])
    foreseen = parquet_schema(manifest.schema)
    for version in (3, 4):
        assert hyper_columns(foreseen, file_format_version=version) == hyper_columns(
            written, file_format_version=version
        )


def test_second_attempt_never_reads_the_first_attempts_files(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    first = _export(bq_client, ad_datamart, staging_bucket, attempt="run-1")
    # "run-10" starts with "run-1": listing must stop at the attempt's own folder.
    second = _export(bq_client, ad_datamart, staging_bucket, attempt="run-10")
    bucket, day_folder = split_gs_uri(first.uri_prefix.removesuffix("run-1/"))
    gcs_client.bucket(bucket).blob(f"{day_folder}stale.parquet").upload_from_string(b"junk")
    gcs = GcsConfig(bucket=staging_bucket)

    got_first = download_export(gcs_client, first, tmp_path / "a", gcs)
    got_second = download_export(gcs_client, second, tmp_path / "b", gcs)

    assert got_first.rows == got_second.rows == MART_ROWS_PER_DAY
    assert len(got_first.files) == len(got_second.files) == 1
    assert {p.name for p in (tmp_path / "b").iterdir()} == {p.name for p in got_second.files}


def _flip_a_byte(gcs_emulator, manifest: ExportManifest, gcs_client) -> Path:
    bucket, prefix = split_gs_uri(manifest.uri_prefix)
    (blob,) = gcs_client.list_blobs(bucket, prefix=prefix)
    stored = gcs_emulator.object_path(bucket, blob.name)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))  # the server still serves the original CRC32C
    return stored


def test_corrupt_object_is_a_retryable_download_error(
    bq_client, gcs_client, gcs_emulator, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket)
    _flip_a_byte(gcs_emulator, manifest, gcs_client)

    with pytest.raises(DownloadError, match="CRC32C mismatch") as caught:
        download_export(gcs_client, manifest, tmp_path, GcsConfig(bucket=staging_bucket))

    assert caught.value.retryable
    assert type(caught.value.__cause__).__name__ == "DataCorruption"
    assert list(tmp_path.iterdir()) == []  # nothing unverified left behind


def _download_in_retrying_task(gcs_client, manifest, bucket, dest):
    """Run download_export in a Prefect task that retries like the flow's (2 retries, no delay)."""
    calls: list[int] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_if_transient)
    def download() -> int:
        calls.append(1)
        return download_export(gcs_client, manifest, dest, GcsConfig(bucket=bucket)).rows

    @flow
    def run() -> int:
        return download()

    return run(return_state=True), calls


@pytest.mark.prefect
def test_corruption_is_retried_then_fails_clearly_when_it_persists(
    prefect_server, bq_client, gcs_client, gcs_emulator, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket)
    _flip_a_byte(gcs_emulator, manifest, gcs_client)
    state, calls = _download_in_retrying_task(gcs_client, manifest, staging_bucket, tmp_path)

    assert state.is_failed()
    assert len(calls) == 3  # the first try and both retries
    with pytest.raises(DownloadError, match="If it persists, the stored object is damaged"):
        state.result()


@pytest.mark.prefect
def test_empty_day_failure_is_not_retried(
    prefect_server, bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket, day=EMPTY_DATE)
    state, calls = _download_in_retrying_task(gcs_client, manifest, staging_bucket, tmp_path)

    assert state.is_failed()
    assert len(calls) == 1


def test_empty_day_fails_by_default_with_what_to_do(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket, day=EMPTY_DATE)
    assert manifest.rows == 0

    with pytest.raises(DownloadError) as caught:
        download_export(gcs_client, manifest, tmp_path, GcsConfig(bucket=staging_bucket))

    assert str(caught.value) == (
        f"the data mart has no rows for 2026-10-31 in {ad_datamart.view} — usually it has not "
        "been refreshed yet; rerun later or set gcs.empty_day=allow"
    )
    assert not caught.value.retryable
    assert list(tmp_path.iterdir()) == []


def test_empty_day_allowed_returns_the_empty_files_with_their_schema(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket, day=EMPTY_DATE)
    gcs = GcsConfig(bucket=staging_bucket, empty_day="allow")

    result = download_export(gcs_client, manifest, tmp_path, gcs)

    assert result.rows == 0
    assert _rows_from_parquet(result.files) == []
    assert result.schema.names[:2] == ["date", "campaign_id"]


def test_an_allowed_empty_day_without_files_hands_on_the_dry_runs_schema(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    # local-bigquery always writes a file; BigQuery may write none for zero rows.
    manifest = _export(bq_client, ad_datamart, staging_bucket, day=EMPTY_DATE)
    none = dataclasses.replace(manifest, uri_prefix=manifest.uri_prefix.replace("run-1", "run-2"))
    gcs = GcsConfig(bucket=staging_bucket, empty_day="allow")

    result = download_export(gcs_client, none, tmp_path, gcs)

    assert (result.files, result.rows, result.bytes) == ((), 0, 0)
    assert result.schema == parquet_schema(manifest.schema)
    assert result.schema.names[:2] == ["date", "campaign_id"]


def test_nothing_under_the_prefix_is_a_clear_error(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket)
    gone = dataclasses.replace(manifest, uri_prefix=manifest.uri_prefix.replace("run-1", "run-2"))

    with pytest.raises(DownloadError, match=r"No files under gs://.*/run-2/, although BigQuery"):
        download_export(gcs_client, gone, tmp_path, GcsConfig(bucket=staging_bucket))


def test_row_count_differing_from_the_export_fails(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    # The download hands the footers' count on; the build checks it against BigQuery's.
    manifest = dataclasses.replace(_export(bq_client, ad_datamart, staging_bucket), rows=41)
    files = download_export(
        gcs_client, manifest, tmp_path / "work", GcsConfig(bucket=staging_bucket)
    )
    assert files.rows == 40

    out = tmp_path / "day.hyper"
    with pytest.raises(BuildError, match=r"manifest says 41 rows .* the 1 Parquet files hold 40"):
        build_hyper(
            files.files,
            out,
            HyperConfig(),
            schema=files.schema,
            file_rows=files.rows,
            exported_rows=manifest.rows,
            log_dir=tmp_path,
        )
    assert not out.exists()


def _put_beside_the_export(gcs_client, manifest: ExportManifest, name: str, data: bytes) -> None:
    bucket, prefix = split_gs_uri(manifest.uri_prefix)
    gcs_client.bucket(bucket).blob(f"{prefix}{name}").upload_from_string(data)


def test_files_with_different_schemas_are_refused(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket)
    exported = download_export(
        gcs_client, manifest, tmp_path / "a", GcsConfig(bucket=staging_bucket)
    )
    table = pq.read_table(exported.files[0]).drop_columns(["device"])
    table = table.set_column(
        table.schema.get_field_index("clicks"), "clicks", table["clicks"].cast(pa.string())
    )
    odd = pa.BufferOutputStream()
    pq.write_table(table, odd)
    _put_beside_the_export(gcs_client, manifest, "part-odd.parquet", odd.getvalue().to_pybytes())

    dest = tmp_path / "b"
    with pytest.raises(DownloadError) as info:
        download_export(gcs_client, manifest, dest, GcsConfig(bucket=staging_bucket))
    message = str(info.value)
    assert re.search(
        r"part-odd.parquet does not have the same columns as part-\w+\.parquet", message
    )
    assert "missing: 'device' string" in message
    assert "'clicks': int64 vs string" in message
    assert not info.value.retryable
    assert list(dest.iterdir()) == []


def test_a_file_that_is_not_parquet_is_a_clear_error(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket)
    _put_beside_the_export(gcs_client, manifest, "part-junk.parquet", b"not parquet at all")

    with pytest.raises(DownloadError, match=r"Cannot read the Parquet footer of part-junk.parquet"):
        download_export(gcs_client, manifest, tmp_path, GcsConfig(bucket=staging_bucket))
    assert list(tmp_path.iterdir()) == []


def test_foreign_object_under_the_prefix_is_refused(
    bq_client, gcs_client, ad_datamart, staging_bucket, tmp_path
) -> None:
    manifest = _export(bq_client, ad_datamart, staging_bucket)
    bucket, prefix = split_gs_uri(manifest.uri_prefix)
    gcs_client.bucket(bucket).blob(f"{prefix}nested/part.parquet").upload_from_string(b"x")

    with pytest.raises(DownloadError, match="Unexpected object"):
        download_export(gcs_client, manifest, tmp_path / "work", GcsConfig(bucket=staging_bucket))
    assert not (tmp_path / "work" / "nested").exists()


def test_delete_export_removes_only_that_attempt(
    bq_client, gcs_client, ad_datamart, staging_bucket
) -> None:
    first = _export(bq_client, ad_datamart, staging_bucket, attempt="run-1")
    second = _export(bq_client, ad_datamart, staging_bucket, attempt="run-10")

    assert delete_export(gcs_client, first) == 1
    assert delete_export(gcs_client, first) == 0

    remaining = [b.name for b in gcs_client.list_blobs(staging_bucket)]
    assert remaining and all("/run-10/" in name for name in remaining)
    assert split_gs_uri(second.uri_prefix)[1] in remaining[0]


@pytest.mark.parametrize(
    "uri", ["s3://b/x/", "gs://stage-bucket/x", "gs://stage-bucket/../x/", "gs://stage-bucket//x/"]
)
def test_bad_prefixes_are_refused(uri: str) -> None:
    with pytest.raises(DownloadError, match=r"is not a gs://BUCKET/PATH/ folder URI"):
        split_gs_uri(uri)
