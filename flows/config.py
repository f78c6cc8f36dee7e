"""PipelineConfig: the one typed model of the pipeline's settings.

It is the daily flow's parameter, so a deployment's parameters are validated on the way in.
It holds block *names*, never secrets: credentials live in blocks.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flows.errors import ConfigError

# The identifier rules, written once: the model validates with them, and flows.bigquery checks
# them again before it quotes a name into SQL or a URI (the SQL builder must be safe on its own).
PROJECT_ID: Final = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
DATASET_ID: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
TABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,1023}")  # a plain subset of BigQuery's
COLUMN_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
PIPELINE_NAME: Final = re.compile(r"[a-z][a-z0-9-]{0,38}[a-z0-9]")  # it names deployments
MAX_LOOKBACK_DAYS: Final = 90
"""The longest window a run covers (ad platforms restate up to 28 days; 90 leaves room)."""
BUCKET_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")  # also inside gs:// URIs
_VIEW_PARTS: Final = (
    ("project id", PROJECT_ID, "6-30 lowercase letters, digits and '-', starting with a letter"),
    ("dataset id", DATASET_ID, "letters, digits and '_'"),
    ("view name", TABLE_NAME, "letters, digits, '_' and '-'"),
)


def split_view(view: str) -> tuple[str, str, str]:
    """Split `project.dataset.view` into its three ids, each checked against its rule.

    Raises:
        ValueError: the name is not three plain ids, or names a domain-scoped project; the
            message names the part and its rule.
    """
    domain, colon, rest = view.partition(":")
    if colon:
        # Legacy domain-scoped ids ("example.com:my-project") hold '.' and ':'. Refused with the
        # reason, rather than half-supported: nothing here is tested with one.
        raise ValueError(
            f"bigquery.view {view!r} names a domain-scoped project "
            f"({domain}:{rest.split('.')[0]}), and domain-scoped projects are not supported: "
            "the pipeline splits bigquery.view on '.' into three plain ids to quote it into SQL, "
            "name the staging folder and label the job, and none of that is tested with such an "
            "id. Create the view in a project with a plain id (a view may read tables of other "
            "projects) and set bigquery.view to it."
        )
    parts = view.split(".")
    if len(parts) != 3:
        raise ValueError(f"bigquery.view {view!r} must be fully qualified as project.dataset.view")
    for part, (what, rule, spelled) in zip(parts, _VIEW_PARTS, strict=True):
        if not rule.fullmatch(part):
            raise ValueError(f"bigquery.view: {part!r} is not a valid BigQuery {what} ({spelled})")
    return parts[0], parts[1], parts[2]


def check_column(column: str, setting: str = "bigquery.date_column") -> str:
    """Return `column` if it is a plain column name (`COLUMN_NAME`).

    Raises:
        ValueError: it is not; the message names `setting`.
    """
    if not COLUMN_NAME.fullmatch(column):
        raise ValueError(
            f"{setting} {column!r} is not a valid column name "
            "(letters, digits and '_', not starting with a digit)"
        )
    return column


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BigQueryConfig(_Model):
    """Which view to read and how the export job runs."""

    view: str = Field(description="The data-mart view as `project.dataset.view`.")
    date_column: str = Field(
        "date", description="The view's DATE column that selects one day's rows."
    )
    location: str = Field("US", description="BigQuery location of the view's dataset.")
    max_bytes_billed: int = Field(
        50 * 1024**3,
        ge=1,
        description="Refuse the export when the dry run estimates more bytes than this; also "
        "set as the job's maximum_bytes_billed. Raise it if a day legitimately grows past it.",
    )
    compression: Literal["SNAPPY", "GZIP", "ZSTD", "NONE"] = Field(
        "SNAPPY", description="Parquet compression of the exported files."
    )
    job_timeout_seconds: float = Field(
        1800, gt=0, description="Cancel the BigQuery job if it has not finished by then."
    )
    job_id_prefix: str = Field(
        "bq_tableau_", pattern=r"^[A-Za-z0-9_-]{0,200}$", description="Prefix of job ids."
    )

    @field_validator("view")
    @classmethod
    def _check_view(cls, value: str) -> str:
        split_view(value)
        return value

    fingerprint_columns: tuple[str, ...] = Field(
        (),
        description="With lookback_days > 1: the columns whose changes count as a restatement "
        "(e.g. the metrics), to scan fewer bytes; empty = the whole row.",
    )

    @field_validator("date_column")
    @classmethod
    def _check_column(cls, value: str) -> str:
        return check_column(value)

    @field_validator("fingerprint_columns")
    @classmethod
    def _check_fingerprint_columns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"bigquery.fingerprint_columns {list(value)} names a column twice")
        return tuple(check_column(c, "bigquery.fingerprint_columns") for c in value)


class GcsConfig(_Model):
    """Where the export is staged and how it is downloaded."""

    bucket: str = Field(description="Staging bucket name (no gs:// prefix).")
    prefix: str = Field(
        "bq-tableau", description="Object prefix under which each attempt gets its own folder."
    )
    download_workers: int = Field(
        8, ge=1, le=64, description="Parallel download threads; raise on large days."
    )
    delete_after_publish: bool = Field(
        True, description="Delete the attempt's files from GCS once Tableau has the day."
    )
    state_prefix: str = Field(
        "bq-tableau-state",
        description="Object prefix of what was last published per date (lookback_days > 1); "
        "keep it out of the staging prefix, whose lifecycle rule deletes old objects.",
    )
    empty_day: Literal["fail", "allow"] = Field(
        "fail",
        description="A day with zero rows usually means the data mart is not refreshed yet: "
        "`fail` stops the run; `allow` publishes the empty day (removing that date's rows).",
    )

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        if not BUCKET_NAME.fullmatch(value):
            raise ValueError(f"gcs.bucket {value!r} is not a valid bucket name (no gs:// prefix)")
        return value

    @field_validator("prefix", "state_prefix")
    @classmethod
    def _check_prefix(cls, value: str, info: ValidationInfo) -> str:
        parts = value.strip("/").split("/")
        if not all(parts) or ".." in parts or "." in parts:
            # An empty segment ("a//b") is dropped by EXPORT DATA's URI but not by our listing.
            raise ValueError(
                f"gcs.{info.field_name} {value!r} must be a relative path of non-empty segments "
                "without "
                "'.', '..' or '//', e.g. 'bq-tableau' or 'exports/bq-tableau'"
            )
        return "/".join(parts)

    @model_validator(mode="after")
    def _check_state_outside_staging(self) -> GcsConfig:
        if f"{self.state_prefix}/".startswith(f"{self.prefix}/") or f"{self.prefix}/".startswith(
            f"{self.state_prefix}/"
        ):
            raise ValueError(
                f"gcs.state_prefix {self.state_prefix!r} overlaps gcs.prefix {self.prefix!r}: the "
                "staging prefix's lifecycle rule would delete the published state (and a lost "
                "state republishes the whole window). Use a sibling, e.g. 'bq-tableau-state'."
            )
        return self


class HyperConfig(_Model):
    """How the Hyper extract is built."""

    file_format_version: Literal[2, 3, 4] = Field(
        3,
        description="Hyper file format. 3 is needed for NUMERIC columns and opens on Tableau "
        "Server 2023.1+ / Cloud; 2 opens on older servers but cannot hold NUMERIC.",
    )
    telemetry: bool = Field(False, description="Send Hyper usage data to Tableau.")


class TableauConfig(_Model):
    """Where and how the extract is published."""

    server_block: str = Field(description="Name of the saved TableauServer block.")
    project: str = Field(description="Project path, nested with '/', e.g. `Marketing/Ads`.")
    datasource: str = Field(description="Datasource name inside the project.")
    mode: Literal["replace_date", "append", "overwrite", "upsert"] = Field(
        "replace_date",
        description="replace_date: replace the run date's rows, or a window's restated dates' "
        "(safe to rerun). append: add rows "
        "(reruns duplicate). overwrite: replace everything with this extract. upsert: update or "
        "insert on `upsert_keys`.",
    )
    upsert_keys: tuple[str, ...] = Field((), description="Key columns for mode=upsert.")
    create_project: bool = Field(False, description="Create the project path if missing.")
    job_timeout_seconds: float = Field(
        1800, gt=0, description="How long to wait for Tableau's update job."
    )

    @model_validator(mode="after")
    def _check_mode(self) -> TableauConfig:
        if self.mode == "upsert" and not self.upsert_keys:
            raise ValueError("tableau.mode='upsert' needs tableau.upsert_keys (key columns)")
        if self.mode != "upsert" and self.upsert_keys:
            raise ValueError("tableau.upsert_keys is only used with tableau.mode='upsert'")
        if not self.datasource.strip() or self.datasource != self.datasource.strip():
            # Tableau names an unnamed publish after the file ("extract"); later runs would then
            # look for a datasource that never appears.
            raise ValueError(
                f"tableau.datasource {self.datasource!r} must be a name without leading or "
                "trailing spaces, e.g. 'ad_performance_daily'"
            )
        if not [p for p in self.project.split("/") if p.strip()]:
            raise ValueError("tableau.project must name a project, e.g. 'Marketing/Ads'")
        return self


class RetryConfig(_Model):
    """How each step retries after a transient failure (permanent ones fail at once)."""

    retries: int = Field(3, ge=0, le=10, description="Retries of a step after the first try.")
    backoff_seconds: float = Field(
        10, ge=0, le=3600, description="First retry delay; it doubles per retry, with jitter."
    )


OnFailure = Literal["fail", "warn", "off"]
"""What a quality check that does not pass does: `fail` publishes nothing, `warn` publishes and
says so in the report (and notifies), `off` skips the check."""


def _check_band(low: float, high: float, what: str) -> None:
    if not low < 1 < high:
        raise ValueError(
            f"quality.{what}: min_ratio {low} and max_ratio {high} must surround 1 "
            "(e.g. 0.5 and 2: half to twice the usual)"
        )


class RowCountCheck(_Model):
    """The day's rows against the median of the last published days."""

    on_failure: OnFailure = Field("fail", description="fail, warn or off.")
    min_ratio: float = Field(
        0.5, gt=0, description="Fewer rows than this times the median do not pass."
    )
    max_ratio: float = Field(
        2.0, gt=0, description="More rows than this times the median do not pass."
    )

    @model_validator(mode="after")
    def _check(self) -> RowCountCheck:
        _check_band(self.min_ratio, self.max_ratio, "row_count")
        return self


class NullRateCheck(_Model):
    """The share of NULLs in listed columns."""

    on_failure: OnFailure = Field("fail", description="fail, warn or off.")
    columns: dict[str, float] = Field(
        default_factory=dict,
        description="Column -> the highest share of NULLs (0-1) a day may have, e.g. "
        "{conversions: 0.2}.",
    )

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: dict[str, float]) -> dict[str, float]:
        for column, rate in value.items():
            check_column(column, "quality.null_rate.columns")
            if not 0 <= rate < 1:
                raise ValueError(
                    f"quality.null_rate.columns.{column}: {rate} must be a share from 0 "
                    "(no NULL allowed) to below 1"
                )
        return value


class SumCheck(_Model):
    """The day's sums of listed numeric columns against their median over the last days."""

    on_failure: OnFailure = Field("fail", description="fail, warn or off.")
    columns: tuple[str, ...] = Field((), description="Numeric columns, e.g. [cost, clicks].")
    min_ratio: float = Field(0.2, gt=0, description="Below this times the median: not passed.")
    max_ratio: float = Field(5.0, gt=0, description="Above this times the median: not passed.")

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"quality.sums.columns {list(value)} names a column twice")
        return tuple(check_column(c, "quality.sums.columns") for c in value)

    @model_validator(mode="after")
    def _check(self) -> SumCheck:
        _check_band(self.min_ratio, self.max_ratio, "sums")
        return self


class FreshnessCheck(_Model):
    """How old the newest value of a TIMESTAMP (or DATETIME) column is when the run checks."""

    on_failure: OnFailure = Field("warn", description="fail, warn or off.")
    column: str | None = Field(
        None, description="e.g. updated_at; DATETIME values are read in the config's timezone."
    )
    max_age_hours: float = Field(36, gt=0, description="Older than this: not passed.")

    @field_validator("column")
    @classmethod
    def _check_column(cls, value: str | None) -> str | None:
        return None if value is None else check_column(value, "quality.freshness.column")


class QualityConfig(_Model):
    """Checks between build and publish: a day that does not look like the usual days."""

    history_days: int = Field(
        14, ge=1, le=MAX_LOOKBACK_DAYS, description="K: the median is over the last K days."
    )
    min_history_days: int = Field(
        5,
        ge=1,
        description="Warm-up: the row-count and sum checks start once this many published days "
        "are on record (a new pipeline has none).",
    )
    row_count: RowCountCheck = RowCountCheck()
    null_rate: NullRateCheck = NullRateCheck()
    sums: SumCheck = SumCheck()
    freshness: FreshnessCheck = FreshnessCheck()

    @model_validator(mode="after")
    def _check(self) -> QualityConfig:
        if self.min_history_days > self.history_days:
            raise ValueError(
                f"quality.min_history_days {self.min_history_days} is more than "
                f"quality.history_days {self.history_days}: the checks would never start"
            )
        return self


class PipelineConfig(_Model):
    """Everything one daily run needs, by block name and value."""

    name: str | None = Field(
        None,
        description="The pipeline's name in the catalog (deployments/pipelines.yaml); it names "
        "the runs. Empty: the view's name.",
    )
    credentials_block: str = Field(
        description="Name of the saved AwsWorkloadIdentityCredentials block."
    )
    bigquery: BigQueryConfig
    gcs: GcsConfig
    hyper: HyperConfig = HyperConfig()
    tableau: TableauConfig
    retry: RetryConfig = RetryConfig()
    quality: QualityConfig = QualityConfig()
    timezone: str = Field(
        "Asia/Tokyo", description="Time zone in which 'yesterday' of a scheduled run is taken."
    )
    earliest_date: date | None = Field(
        None, description="Refuse run dates before this (the data mart's first day)."
    )
    lookback_days: int = Field(
        1,
        ge=1,
        le=MAX_LOOKBACK_DAYS,
        description="Days each run covers, ending on its run date: 1 publishes the run date; "
        "more (ad data: 28) republishes the days of the window that BigQuery restated.",
    )
    work_dir: Path | None = Field(
        None, description="Parent of each run's scratch directory; default: the system temp dir."
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not PIPELINE_NAME.fullmatch(value):
            raise ValueError(
                f"name {value!r} must be 2-40 lowercase letters, digits and '-', starting with "
                "a letter (it names the pipeline's deployments and runs)"
            )
        return value

    @field_validator("work_dir")
    @classmethod
    def _check_work_dir(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(
                f"work_dir {str(value)!r} is a file, not a directory: point it at a directory "
                "(created if missing) or leave it unset for the system temp dir"
            )
        return value

    @model_validator(mode="after")
    def _check_lookback_mode(self) -> PipelineConfig:
        if self.lookback_days > 1 and self.tableau.mode != "replace_date":
            raise ValueError(
                f"lookback_days={self.lookback_days} needs tableau.mode='replace_date' (a window "
                f"is republished by deleting and inserting its dates); mode "
                f"{self.tableau.mode!r} can only publish one date: set lookback_days to 1"
            )
        return self

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone {value!r} is not an IANA time zone name") from exc
        return value


LookbackDays = Annotated[int | None, Field(ge=1, le=MAX_LOOKBACK_DAYS)]
"""A run's `lookback_days` parameter: None takes the config's."""


def with_lookback(config: PipelineConfig, lookback_days: int | None) -> PipelineConfig:
    """`config` with a run's own `lookback_days`, checked like the config's.

    Raises:
        ConfigError: the window does not fit the config (e.g. a mode other than replace_date).
    """
    if lookback_days is None or lookback_days == config.lookback_days:
        return config
    try:
        return PipelineConfig.model_validate(
            {**config.model_dump(), "lookback_days": lookback_days}
        )
    except ValidationError as exc:
        problems = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        raise ConfigError(
            f"lookback_days={lookback_days} does not fit the config: {problems}"
        ) from exc
