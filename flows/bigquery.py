"""Step 1: export one day of a BigQuery view to GCS as Parquet (the only BigQuery importer).

INTERFACE PINNED BY THE SKELETON; the export issue implements it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from google.cloud import bigquery

from flows.config import BigQueryConfig, GcsConfig


@dataclass(frozen=True)
class ExportManifest:
    """What one export attempt wrote, as BigQuery reported it."""

    view: str
    run_date: date
    uri_prefix: str  # gs://BUCKET/PREFIX/VIEW/run_date=YYYY-MM-DD/ATTEMPT/  (ends with "/")
    job_id: str
    rows: int | None  # exportDataStatistics.rowCount, when the API gives it
    files: int | None  # exportDataStatistics.fileCount, when the API gives it
    estimated_bytes: int  # from the dry run
    bytes_processed: int | None
    bytes_billed: int | None
    schema: tuple[tuple[str, str], ...]  # (column, BigQuery type) of the exported SELECT


def export_view(
    client: bigquery.Client,
    bq: BigQueryConfig,
    gcs: GcsConfig,
    run_date: date,
    *,
    attempt: str,
) -> ExportManifest:
    """Export `run_date`'s rows of the view to a GCS prefix unique to `attempt`."""
    raise NotImplementedError
