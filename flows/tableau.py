"""Step 4: publish a Hyper extract to Tableau, idempotent per date (the only TSC importer).

INTERFACE PINNED BY THE SKELETON; the Hyper/Tableau issue implements it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from flows.config import TableauConfig
from flows.hyper import HyperExtract

if TYPE_CHECKING:
    from blocks.tableau import TableauServer


@dataclass(frozen=True)
class PublishResult:
    """What Tableau did with the day."""

    mode: str
    project_path: str
    datasource_name: str
    datasource_id: str
    created: bool  # True when this publish created the datasource
    job_id: str | None  # the async job, when there was one
    rows_sent: int
    url: str | None  # the datasource's page, for the run report


def publish(
    server: TableauServer,
    extract: HyperExtract,
    run_date: date,
    config: TableauConfig,
    *,
    date_column: str,
) -> PublishResult:
    """Publish the extract according to `config.mode` (default: replace run_date's rows)."""
    raise NotImplementedError
