"""A small, deterministic ad-performance data mart to seed into the BigQuery emulator.

The shape follows a typical marketing mart: a source table of daily ad performance in
`<dataset>_src` and the view the pipeline reads in `<dataset>` (a view over another dataset,
as in production, where the view is authorized or the reader needs both datasets).
The data covers what trips exporters up: NUMERIC money, TIMESTAMPs with microseconds, NULLs,
division by zero turned into NULL by the view, and Japanese campaign names.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from google.cloud import bigquery

VIEW_NAME: Final = "ad_performance_daily"
CAMPAIGN_VIEW_NAME: Final = "campaign_performance_daily"
"""A second view of the mart, per date and campaign: a second pipeline's source."""
TABLE_NAME: Final = "ad_performance"

_CAMPAIGNS: Final = (
    ("c-1001", "春の新生活セール"),
    ("c-1002", "ブランド認知_動画"),
    ("c-1003", "Retargeting – 東京"),
    ("c-1004", "年末年始キャンペーン 🎍"),
    ("c-1005", "Search: generic"),
)
_DEVICES: Final = ("mobile", "desktop", "tablet")

_SCHEMA: Final = (
    bigquery.SchemaField("date", "DATE", mode="REQUIRED"),
    bigquery.SchemaField("campaign_id", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("campaign_name", "STRING"),
    bigquery.SchemaField("ad_group_id", "STRING"),
    bigquery.SchemaField("ad_group_name", "STRING"),
    bigquery.SchemaField("device", "STRING"),
    bigquery.SchemaField("impressions", "INT64"),
    bigquery.SchemaField("clicks", "INT64"),
    bigquery.SchemaField("cost", "NUMERIC"),
    bigquery.SchemaField("conversions", "INT64"),
    bigquery.SchemaField("conversion_value", "FLOAT64"),
    bigquery.SchemaField("is_brand", "BOOL"),
    bigquery.SchemaField("updated_at", "TIMESTAMP"),
)

# The view adds a derived column, as marts do; SAFE_DIVIDE turns 0 impressions into NULL.
_VIEW_SQL: Final = (
    "SELECT date, campaign_id, campaign_name, ad_group_id, ad_group_name, device, impressions, "
    "clicks, cost, conversions, conversion_value, "
    "SAFE_DIVIDE(clicks, impressions) AS ctr, is_brand, updated_at FROM `{table}`"
)


# Marts aggregate: the campaign view sums the day's ads per campaign (NUMERIC stays NUMERIC).
# The integer sums are cast back to INT64: BigQuery's SUM(INT64) is INT64, but the local
# emulator exports it as a DOUBLE while its dry run says INT64, which the preflight would
# rightly call drift on the second run.
_CAMPAIGN_VIEW_SQL: Final = (
    "SELECT date, campaign_id, campaign_name, CAST(SUM(impressions) AS INT64) AS impressions, "
    "CAST(SUM(clicks) AS INT64) AS clicks, SUM(cost) AS cost, "
    "CAST(SUM(conversions) AS INT64) AS conversions, SUM(conversion_value) AS conversion_value, "
    "CAST(COUNT(*) AS INT64) AS ads FROM `{table}` GROUP BY date, campaign_id, campaign_name"
)


# The view's derived columns and the source columns they read (the others read themselves).
_VIEW_SOURCES: Final = {"ctr": ("clicks", "impressions")}
# Logical bytes per non-NULL value, BigQuery's data size calculation
# (https://cloud.google.com/bigquery/pricing#data_size_calculation); a NULL counts 0.
_VALUE_BYTES: Final = {
    "INT64": 8,
    "FLOAT64": 8,
    "NUMERIC": 16,
    "BOOL": 1,
    "DATE": 8,
    "TIMESTAMP": 8,
}


@dataclass(frozen=True)
class SeededMart:
    """What `seed_ad_datamart` created."""

    view: str  # project.dataset.view, what the pipeline's bigquery.view names
    table: str  # project.dataset_src.table behind the view
    dates: tuple[date, ...]
    rows_per_day: int
    campaign_view: str = ""  # project.dataset.campaign_performance_daily, over the same table


def ad_rows(dates: Sequence[date], rows_per_day: int) -> list[dict[str, Any]]:
    """Deterministic rows for `dates`, as JSON-ready dicts (NUMERIC/DATE/TIMESTAMP as strings)."""
    rows: list[dict[str, Any]] = []
    for day in dates:
        rng = random.Random(day.isoformat())  # same day, same rows, every run
        for i in range(rows_per_day):
            campaign_id, campaign_name = _CAMPAIGNS[i % len(_CAMPAIGNS)]
            impressions = 0 if i % 11 == 5 else rng.randint(100, 200_000)
            clicks = 0 if impressions == 0 else rng.randint(0, impressions // 20 + 1)
            cost = (Decimal(rng.randint(0, 5_000_000_000_000)) / Decimal(10**9)).quantize(
                Decimal("0.000000001")
            )
            updated = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
            updated += timedelta(hours=3, microseconds=rng.randint(0, 3_599_999_999))
            rows.append(
                {
                    "date": day.isoformat(),
                    "campaign_id": campaign_id,
                    "campaign_name": campaign_name,
                    "ad_group_id": f"{campaign_id}-ag{i % 7:02d}",
                    "ad_group_name": None if i % 9 == 4 else f"広告グループ {i % 7}",
                    "device": _DEVICES[i % len(_DEVICES)],
                    "impressions": impressions,
                    "clicks": clicks,
                    "cost": str(cost),
                    "conversions": None if i % 6 == 3 else rng.randint(0, clicks + 1),
                    "conversion_value": None if i % 6 == 3 else round(rng.uniform(0, 1e5), 2),
                    "is_brand": i % 4 == 0,
                    "updated_at": updated.isoformat().replace("+00:00", "Z"),
                }
            )
    return rows


def seed_ad_datamart(
    client: bigquery.Client,
    project: str,
    dataset: str,
    dates: Sequence[date],
    rows_per_day: int,
    *,
    location: str = "US",
) -> SeededMart:
    """Create `<dataset>_src.ad_performance` with the rows, and the two views over it in
    `<dataset>`: `ad_performance_daily` (one row per ad) and `campaign_performance_daily`.

    Replaces an earlier seed of the same datasets, so it can be called again.
    """
    source = bigquery.Dataset(f"{project}.{dataset}_src")
    mart = bigquery.Dataset(f"{project}.{dataset}")
    for ds in (source, mart):
        ds.location = location
        client.delete_dataset(ds, delete_contents=True, not_found_ok=True)
        client.create_dataset(ds)
    table_id = f"{project}.{dataset}_src.{TABLE_NAME}"
    client.create_table(bigquery.Table(table_id, schema=list(_SCHEMA)))
    rows = ad_rows(dates, rows_per_day)
    if rows:
        config = bigquery.LoadJobConfig(schema=list(_SCHEMA))
        client.load_table_from_json(rows, table_id, job_config=config, location=location).result()
    view_id = f"{project}.{dataset}.{VIEW_NAME}"
    view = bigquery.Table(view_id)
    view.view_query = _VIEW_SQL.format(table=table_id)
    client.create_table(view)
    campaign_view_id = f"{project}.{dataset}.{CAMPAIGN_VIEW_NAME}"
    campaign_view = bigquery.Table(campaign_view_id)
    campaign_view.view_query = _CAMPAIGN_VIEW_SQL.format(table=table_id)
    client.create_table(campaign_view)
    return SeededMart(
        view=view_id,
        table=table_id,
        dates=tuple(dates),
        rows_per_day=rows_per_day,
        campaign_view=campaign_view_id,
    )


def scanned_bytes(
    client: bigquery.Client,
    mart: SeededMart,
    days: Sequence[date],
    columns: Sequence[str] | None = None,
) -> int:
    """The bytes BigQuery on demand would process to read `columns` of the view on `days`.

    The emulator reports 0 for every job, so this sums BigQuery's per-type sizes over the
    source rows of `days` (STRING 2 + its UTF-8 bytes), as a table partitioned on `date`
    would be billed: only the partitions of `days`, only the source columns the view's
    `columns` read (all of them if None). The on-demand minimum of 10 MB per table is left out.
    """
    wanted = {f.name for f in _SCHEMA} if columns is None else set()
    for column in columns or ():
        wanted.update(_VIEW_SOURCES.get(column, (column,)))
    if unknown := wanted - {f.name for f in _SCHEMA}:
        raise ValueError(f"Not columns of the view {mart.view}: {sorted(unknown)}")
    sizes = [
        f"IF(`{f.name}` IS NULL, 0, 2 + BYTE_LENGTH(`{f.name}`))"
        if f.field_type == "STRING"
        else f"IF(`{f.name}` IS NULL, 0, {_VALUE_BYTES[f.field_type]})"
        for f in _SCHEMA
        if f.name in wanted
    ]
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("days", "DATE", list(days))]
    )
    sql = f"SELECT SUM({' + '.join(sizes)}) FROM `{mart.table}` WHERE `date` IN UNNEST(@days)"
    (row,) = client.query(sql, job_config=config).result()
    return int(row[0] or 0)


def restate(client: bigquery.Client, table: str, days: Sequence[date]) -> None:
    """Late conversions: cost and conversions of these days change, as an ad platform
    restates them (rows stay; a NULL conversions stays NULL)."""
    listed = ", ".join(f"DATE '{d.isoformat()}'" for d in days)
    client.query(
        f"UPDATE `{table}` SET cost = cost * 1.5, conversions = conversions + 1 "
        f"WHERE date IN ({listed})"
    ).result()
