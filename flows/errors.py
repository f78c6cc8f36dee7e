"""Errors of the pipeline, and the one decision of what is worth retrying.

```
PipelineError              root; `retryable` says whether a retry can help
 ├─ ConfigError            bad or missing settings, invalid dates (never retried)
 ├─ CredentialsError       the AWS -> Google exchange failed
 ├─ ExportError            step 1: BigQuery EXPORT DATA
 ├─ DownloadError          step 2: GCS listing/download/verification
 ├─ BuildError             step 3: the Hyper extract
 ├─ QualityError           the day did not pass a quality check set to fail (flows.quality)
 └─ PublishError           step 4: Tableau
     ├─ SchemaDriftError   the day's columns differ from the published datasource
     └─ SignInError        Tableau refused the sign-in or could not be reached (flows.tableau)
```

The root, CredentialsError and PublishError live in `blocks.errors` (the bottom floor, so that
`blocks/` raises its own errors); this module adds the rest. Stage modules translate vendor
errors at their boundary with `raise XError(msg, retryable=is_retryable(exc)) from exc`, so the
message says what to fix and the flag keeps the vendor's verdict. Tableau's errors are
translated where its sign-in lives (`blocks.tableau.translate_tableau_errors`), so they reach
`is_retryable` as PublishErrors. Tasks retry through `retry_if_transient`, which asks
`is_retryable`. The transient HTTP statuses are `blocks.retry.TRANSIENT_HTTP_STATUSES`, the one
set the retries inside a step use too.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Final

import requests
from google.api_core import exceptions as gapi
from google.auth import exceptions as gauth
from google.cloud.storage.exceptions import DataCorruption as StorageDataCorruption
from google.resumable_media.common import DataCorruption as MediaDataCorruption

from blocks.errors import CredentialsError, PipelineError, PublishError
from blocks.retry import TRANSIENT_HTTP_STATUSES

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import State, TaskRun

__all__ = [
    "BuildError",
    "ConfigError",
    "CredentialsError",
    "DownloadError",
    "ExportError",
    "FileProblemsError",
    "PipelineError",
    "PublishError",
    "QualityError",
    "SchemaDriftError",
    "is_retryable",
    "note_retries_spent",
    "retry_if_transient",
]

logger = logging.getLogger(__name__)

TRANSIENT_BIGQUERY_REASONS: Final[frozenset[str]] = frozenset(
    {"backendError", "rateLimitExceeded", "internalError", "jobBackendError", "jobInternalError"}
)
"""BigQuery error `reason`s that Google documents as retryable."""


class ConfigError(PipelineError):
    """Settings or parameters are wrong or missing; fix them and run again."""


class FileProblemsError(ConfigError):
    """A settings file is not valid; `problems` lists each problem, one line each."""

    consequence = "nothing was changed"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"{source} has {len(problems)} problem(s); {self.consequence}:\n"
            + "\n".join(f"  - {p}" for p in problems),
            retryable=False,
        )


class ExportError(PipelineError):
    """BigQuery could not export the day of the view."""


class DownloadError(PipelineError):
    """The exported files could not be listed, downloaded or verified."""


class BuildError(PipelineError):
    """The Hyper extract could not be built from the downloaded files."""


class QualityError(PipelineError):
    """The day is well-formed but unlike the usual days; nothing was published."""


class SchemaDriftError(PublishError):
    """The day's columns or types differ from the published datasource."""


def _transient_bigquery_reason(exc: gapi.GoogleAPICallError) -> bool:
    return any(err.get("reason") in TRANSIENT_BIGQUERY_REASONS for err in exc.errors or [])


def is_retryable(exc: BaseException) -> bool:
    """Tell whether running the same step again can succeed.

    Transient: HTTP 408/429/5xx, BigQuery backendError/rateLimitExceeded/internalError,
    connection resets and timeouts, checksum mismatches on download. Everything else
    (invalid query, access denied, not found, a rejected attribute condition, limits,
    bad configuration) is permanent and fails the run at once.
    """
    if isinstance(exc, PipelineError):
        return exc.retryable
    if isinstance(exc, StorageDataCorruption | MediaDataCorruption):
        return True
    if isinstance(exc, gapi.GoogleAPICallError):
        return exc.code in TRANSIENT_HTTP_STATUSES or _transient_bigquery_reason(exc)
    if isinstance(exc, gapi.RetryError):
        return True
    if isinstance(exc, gauth.RefreshError):
        # google-auth's own (the WIF exchange raises CredentialsError, a PipelineError, above):
        # it marks 5xx/timeouts from its token endpoints retryable, 4xx not.
        return bool(getattr(exc, "retryable", False))
    if isinstance(exc, gauth.TransportError):
        return True
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code in TRANSIENT_HTTP_STATUSES
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True
    return isinstance(exc, ConnectionError | TimeoutError | socket.timeout)


def retry_if_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect `retry_condition_fn`: retry only what `is_retryable` calls transient."""
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises the task's exception
        retry = is_retryable(exc)
        logger.info(
            "%s attempt %s of %s failed with %s: %s. %s",
            task.name,
            task_run.run_count,
            task.retries + 1,
            type(exc).__name__,
            _first_line(exc),
            "Transient: retrying." if retry else "Permanent: not retrying; fix the cause.",
        )
        return retry
    return False


def note_retries_spent(exc: Exception, step: str, retries: int) -> None:
    """Make the final error say that retrying did not help, and what to check next."""
    verdict = (
        f"The {step} step was retried {retries} time(s) (retry.retries) and failed "
        "each time: the cause persisted. Check that system's status or limits, then rerun the "
        "date; raise retry.retries or retry.backoff_seconds if outages there last longer."
    )
    logger.error(verdict)
    if isinstance(exc, PipelineError):
        exc.args = (f"{exc} {verdict}",)  # what the run's state, report and UI show
    else:
        exc.add_note(verdict)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return "(no message)"
    return text[0] if len(text[0]) <= limit else text[0][:limit].rstrip() + "…"
