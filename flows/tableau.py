"""Step 4: publish a Hyper extract to Tableau, idempotent per date.

The block (`blocks.tableau`) signs in and translates what Tableau answers; this module makes the
publish's REST calls through TSC, each inside `translate_tableau_errors`. A personal access
token allows one session at a time, so `check_target` and `publish` hold the token's publish
slot (`flows.publish_slot`) while signed in; connected-app sign-ins need none.

Modes (`TableauConfig.mode`):
- replace_date: the first publish creates the datasource from the .hyper; every later run sends
  ONE `update_hyper_data` batch ("delete the rows of these dates, insert the extract's rows")
  for a window of one or more dates, which Tableau applies atomically, so a rerun or backfill
  of any date leaves that date's rows once and a window is never half replaced.
- append: publish mode Append (reruns duplicate the day: the classic behaviour).
- overwrite: publish mode Overwrite, the whole datasource becomes this extract.
- upsert: an `upsert` action matching on `upsert_keys`.
The last three take exactly one date: only replace_date knows which rows a window replaces.

Before changing an existing datasource (all modes but overwrite) the published columns are read
from the datasource downloaded WITHOUT its extract (the .tds metadata records; works on Server and
Cloud) and compared with the extract's; a difference raises SchemaDriftError, changing nothing.
`check_target` makes the same checks earlier, at the flow's preflight, against the columns the
extract will have (from the view's dry run), so that they fail before BigQuery spends anything.

REST: https://help.tableau.com/current/api/rest_api/en-us/REST/rest_api_how_to_update_data_to_hyper.htm
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Final
from uuid import UUID

import tableauserverclient as tsc
from defusedxml import ElementTree as ET
from prefect.runtime import flow_run
from tableauserverclient.server.endpoint.exceptions import (
    JobCancelledException,
    JobFailedException,
    ServerResponseError,
)

from blocks.tableau import (
    UPDATE_API_VERSION,
    TableauServer,
    TokenExpiry,
    find_datasource,
    find_project,
    project_not_found,
    token_expiry,
    translate_tableau_errors,
)
from flows.config import TableauConfig
from flows.errors import ConfigError, PublishError, SchemaDriftError
from flows.hyper import EXTRACT_SCHEMA, EXTRACT_TABLE, HyperExtract, write_date_payload
from flows.publish_slot import publish_slot

logger = logging.getLogger(__name__)

SLOT_WAIT_SECONDS: Final[float] = 3 * 3600
"""How long to wait for the token's slot: publishes queue behind other dates (backfills)."""
AS_JOB_MIN_BYTES: Final[int] = 64 * 1024 * 1024
"""Publish files this big as an asynchronous job; TSC also uploads them in chunks from 64 MB."""
RUN_DATE_TABLE: Final[str] = "pipeline_run_date"
"""Payload table of the dates to replace, one row each: a delete's source may hold only
condition columns."""
CREATE_NEW_EXISTS: Final[str] = "403007"
"""Tableau's error code when a CreateNew publish finds a datasource of that name."""

# Tableau's logical types (the .tds <local-type>) of the Hyper SQL types the build writes.
_LOCAL_TYPES: Final[dict[str, str]] = {
    "BOOLEAN": "boolean",
    "SMALLINT": "integer",
    "INTEGER": "integer",
    "BIGINT": "integer",
    "DOUBLE PRECISION": "real",
    "REAL": "real",
    "NUMERIC": "real",
    "TEXT": "string",
    "BYTES": "string",
    "DATE": "date",
    "TIMESTAMP": "datetime",
    "TIMESTAMPTZ": "datetime",
}


@dataclass(frozen=True)
class PublishResult:
    """What Tableau did with the dates."""

    mode: str
    project_path: str
    datasource_name: str
    datasource_id: str
    created: bool  # True when this publish created the datasource
    job_id: str | None  # the async job, when there was one
    rows_sent: int
    days: tuple[date, ...]  # the dates published (replace_date: deleted, then inserted), sorted
    url: str | None  # the datasource's page, for the run report
    slot_wait_seconds: float | None = None  # waited for the token's publish slot; None: no slot


def local_type(hyper_type: str) -> str:
    """Tableau's logical type of a Hyper SQL type, e.g. NUMERIC(38,9) -> real."""
    return _LOCAL_TYPES.get(hyper_type.split("(")[0].strip().upper(), hyper_type.lower())


def schema_drift(
    published: Sequence[tuple[str, str]],
    extract: Sequence[tuple[str, str]],
    *,
    side: str = "extract",
) -> list[str]:
    """Column-by-column differences between the published datasource and the extract.

    Args:
        published: (name, Tableau logical type) from the datasource's .tds.
        extract: (name, Hyper SQL type) of the extract, or of the extract-to-be.
        side: What `extract` describes, for the lines: "extract" or "view".

    Returns:
        One line per added, removed or retyped column; empty when they match.
    """
    old = dict(published)
    new = {name: (sql, local_type(sql)) for name, sql in extract}
    lines = [f"  + {n}: {sql} (new column)" for n, (sql, _) in new.items() if n not in old]
    lines += [
        f"  - {n}: {kind} (missing from the {side})" for n, kind in old.items() if n not in new
    ]
    lines += [
        f"  ~ {n}: published {old[n]}, {side} {sql} ({kind})"
        for n, (sql, kind) in new.items()
        if n in old and old[n] != kind
    ]
    return lines


def parse_tds_columns(content: bytes) -> list[tuple[str, str]]:
    """(name, logical type) of the extract table's columns in a downloaded .tds or .tdsx."""
    if content[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = [n for n in archive.namelist() if n.endswith(".tds")]
            if not names:
                return []
            content = archive.read(names[0])
    columns = []
    for record in ET.fromstring(content).iter("metadata-record"):
        parent = record.findtext("parent-name") or f"[{EXTRACT_TABLE}]"
        if record.get("class") == "column" and parent == f"[{EXTRACT_TABLE}]":
            columns.append(
                (record.findtext("remote-name") or "", record.findtext("local-type") or "")
            )
    return columns


@contextmanager
def _token_slot(block: TableauServer) -> Iterator[float | None]:
    """Hold the token's publish slot (one session per PAT); yield the seconds waited for it.

    Connected-app sessions do not displace each other: they take no slot and yield None.
    """
    if block.auth_method == "jwt":
        yield None
        return
    run_id = flow_run.id  # None outside a flow run
    with publish_slot(
        block.concurrency_key,
        timeout_seconds=SLOT_WAIT_SECONDS,
        holder_run=UUID(run_id) if run_id else None,
        holder_name=flow_run.name or "",
    ) as hold:
        yield hold.waited_seconds


class SignInError(PublishError):
    """Tableau refused the sign-in or could not be reached for it: nothing was read or changed
    (`python -m flows` tells this apart: a system it could not get an answer from)."""


@contextmanager
def _signed_in(block: TableauServer) -> Iterator[tsc.Server]:
    """`block.sign_in()`, a failure to sign in raised as a SignInError (same message, same
    retry verdict); errors of the calls made signed in pass unchanged."""
    with ExitStack() as stack:
        try:
            session = stack.enter_context(block.sign_in())
        except PublishError as exc:
            raise SignInError(str(exc), retryable=exc.retryable) from None
        yield session


def _resolve_project(
    session: tsc.Server, config: TableauConfig, block: TableauServer
) -> tsc.ProjectItem:
    """The project, created if missing and `tableau.create_project` is set."""
    project, missing = find_project(session, config.project, block, create=config.create_project)
    if project is None:
        raise project_not_found(missing, block)
    return project


def _wait(
    session: tsc.Server, job_id: str, what: str, config: TableauConfig, block: TableauServer
) -> None:
    try:
        with translate_tableau_errors(f"follow job {job_id} ({what})", block):
            job = session.jobs.wait_for_job(job_id, timeout=config.job_timeout_seconds)
    except JobCancelledException as exc:
        raise PublishError(
            f"Tableau job {job_id} ({what}) was cancelled; nothing was changed. Rerun.",
            retryable=True,
        ) from exc
    except JobFailedException as exc:
        notes = "; ".join(n for n in (exc.notes or []) if n) or "no notes"
        raise PublishError(
            f"Tableau job {job_id} ({what}) failed: {notes}. The batch is atomic, so the "
            "datasource is unchanged; fix the cause and rerun.",
            retryable=False,
        ) from exc
    except TimeoutError as exc:
        raise PublishError(
            f"Tableau job {job_id} ({what}) did not finish within {config.job_timeout_seconds:g}"
            " s; it may still complete. Raise tableau.job_timeout_seconds if jobs are slow. "
            + ("Rerunning is safe." if config.mode != "append" else "Check before rerunning."),
            retryable=config.mode != "append",
        ) from exc
    logger.info("Tableau job %s (%s) finished: finish code %s", job_id, what, job.finish_code)


def _publish_file(
    session: tsc.Server,
    project: tsc.ProjectItem,
    name: str,
    path: Path,
    mode: str,
    *,
    config: TableauConfig,
    block: TableauServer,
    as_job_min_bytes: int,
) -> tuple[tsc.DatasourceItem, str | None]:
    as_job = path.stat().st_size >= as_job_min_bytes
    item = tsc.DatasourceItem(project.id, name=name)
    with translate_tableau_errors(f"publish datasource {name!r} ({mode})", block):
        try:
            result = session.datasources.publish(item, str(path), mode, as_job=as_job)
        except ServerResponseError as exc:
            if mode != "CreateNew" or str(exc.code) != CREATE_NEW_EXISTS:
                raise
            raise PublishError(
                f"Tableau refused to publish datasource {name!r} ({mode}): the datasource "
                "appeared since it was looked up (a concurrent run created it). A retry "
                "updates it instead.",
                retryable=True,
            ) from None
    if not as_job:
        return result, None
    _wait(session, result.id, f"publish {mode}", config, block)
    datasource = find_datasource(session, project, name, block)
    if datasource is None:
        raise PublishError(
            f"Tableau's publish job {result.id} finished but datasource {name!r} is not in "
            "the project; check the job on the server.",
            retryable=True,
        )
    return datasource, result.id


def _check_drift(
    session: tsc.Server,
    ds: tsc.DatasourceItem,
    columns: Sequence[tuple[str, str]],
    block: TableauServer,
    *,
    side: str = "extract",
) -> int:
    """Refuse columns that differ from the datasource's; return how many were compared."""
    with translate_tableau_errors(f"download datasource {ds.name!r} without its extract", block):
        content = session.datasources.download(
            ds.id, io.BytesIO(), include_extract=False
        ).getvalue()
    published = parse_tds_columns(content)
    if not published:
        logger.warning("Datasource %r has no column metadata; schema drift not checked", ds.name)
        return 0
    lines = schema_drift(published, columns, side=side)
    if lines:
        before = "nothing was exported or changed" if side == "view" else "nothing was changed"
        raise SchemaDriftError(
            f"The {side}'s columns differ from Tableau datasource {ds.name!r}; {before}:\n"
            + "\n".join(lines)
            + "\nEither fix the view so its columns match again, or rebuild the datasource by "
            "running once with tableau.mode=overwrite (this replaces ALL its rows with the "
            "extract: use a full-history extract or backfill afterwards).",
            retryable=False,
        )
    return len(published)


def _target(action: str, source_table: str) -> dict[str, str]:
    return {
        "action": action,
        "source-schema": EXTRACT_SCHEMA,
        "source-table": source_table,
        "target-schema": EXTRACT_SCHEMA,
        "target-table": EXTRACT_TABLE,
    }


def replace_date_actions(date_column: str) -> list[dict[str, object]]:
    """Delete the rows of the payload date table's dates, insert the extract's rows."""
    delete = _target("delete", RUN_DATE_TABLE)
    delete["condition"] = {"op": "eq", "target-col": date_column, "source-col": date_column}
    return [delete, _target("insert", EXTRACT_TABLE)]


def upsert_actions(keys: Sequence[str]) -> list[dict[str, object]]:
    """Update rows whose keys match the extract's, insert the others."""
    conditions = [{"op": "eq", "target-col": k, "source-col": k} for k in keys]
    upsert = _target("upsert", EXTRACT_TABLE)
    upsert["condition"] = (
        conditions[0] if len(conditions) == 1 else {"op": "and", "args": conditions}
    )
    return [upsert]


def _check_columns(
    columns: Sequence[tuple[str, str]], config: TableauConfig, date_column: str, side: str
) -> None:
    types = dict(columns)
    if config.mode == "replace_date" and types.get(date_column, "").upper() != "DATE":
        raise ConfigError(
            f"tableau.mode=replace_date needs a DATE column {date_column!r} in the {side} "
            f"(found {types.get(date_column, 'no such column')}); set bigquery.date_column."
        )
    missing = [k for k in config.upsert_keys if k not in types]
    if missing:
        raise ConfigError(
            f"tableau.upsert_keys {missing} are not columns of the {side}; fix tableau.upsert_keys."
        )


@dataclass(frozen=True)
class TargetCheck:
    """What the preflight found on the Tableau side, before BigQuery spends anything."""

    signed_in_as: str
    rest_version: str
    project_path: str
    datasource_name: str
    datasource_id: str | None  # None: the first publish will create the datasource
    columns_compared: int  # published columns compared with the view's; 0 when not compared
    # A plan's check (`plan_only`): the first project of the path that is missing, which a run
    # would create (tableau.create_project); None: the project exists.
    project_to_create: str | None = None
    # The PAT's expiry where Tableau lists it (Cloud), and the run report's warning when it
    # is near (`blocks.tableau.PAT_EXPIRY_WARNING`); None: not near, or not known.
    token_expires_at: datetime | None = None
    token_warning: str | None = None

    @property
    def verdict(self) -> str:
        """One line for logs and the run report."""
        if self.project_to_create is not None:
            return (
                f"does not exist yet: a run would create project {self.project_to_create!r} "
                "(tableau.create_project) and then the datasource"
            )
        if self.datasource_id is None:
            return "does not exist yet; the first publish creates it"
        if self.columns_compared:
            return f"exists; its {self.columns_compared} published columns match the view's"
        return "exists; columns not compared (overwrite mode, or no column metadata)"


def check_target(
    block: TableauServer,
    config: TableauConfig,
    columns: Sequence[tuple[str, str]],
    *,
    date_column: str,
    plan_only: bool = False,
) -> TargetCheck:
    """Preflight: sign in, resolve (or create) the project, and compare the datasource's
    published columns with the extract-to-be, so that Tableau problems fail before the export.

    Args:
        block: The Tableau block, signed in to and out again under its token's publish slot.
        config: Project, datasource, mode, upsert keys.
        columns: (name, Hyper SQL type) the extract will have, from the view's dry-run schema.
        date_column: The DATE column that replace_date deletes by.
        plan_only: Change nothing (`python -m flows plan`): a missing project that a run would
            create is reported in `project_to_create` instead.

    Raises:
        ConfigError: The view lacks the date column or the upsert keys.
        SchemaDriftError: The view's columns differ from the datasource's (not in overwrite).
        SignInError: Tableau refused the sign-in, or could not be reached.
        PublishError: The project or the REST version is refused, or the token's publish
            slot stayed taken for `SLOT_WAIT_SECONDS`.
    """
    _check_columns(columns, config, date_column, "view")
    with _token_slot(block), _signed_in(block) as session:
        token = _token_expiry(session, block)
        create = config.create_project and not plan_only
        project, missing = find_project(session, config.project, block, create=create)
        if project is None and not config.create_project:
            raise project_not_found(missing, block)
        if project is None:
            check = TargetCheck(
                signed_in_as=block.signs_in_as,
                rest_version=str(session.version),
                project_path=config.project,
                datasource_name=config.datasource,
                datasource_id=None,
                columns_compared=0,
                project_to_create=missing,
                **token,
            )
            logger.info(
                "Plan: Tableau datasource %s/%s %s",
                config.project,
                config.datasource,
                check.verdict,
            )
            return check
        ds = find_datasource(session, project, config.datasource, block)
        compared = 0
        if ds is not None:
            _check_update_api(session, config, block)
            if config.mode != "overwrite":  # overwrite is the way out of drift
                compared = _check_drift(session, ds, columns, block, side="view")
        check = TargetCheck(
            signed_in_as=block.signs_in_as,
            rest_version=str(session.version),
            project_path=config.project,
            datasource_name=config.datasource,
            datasource_id=ds.id if ds is not None else None,
            columns_compared=compared,
            **token,
        )
    logger.info(
        "Preflight: Tableau datasource %s/%s %s", config.project, config.datasource, check.verdict
    )
    return check


def _token_expiry(session: tsc.Server, block: TableauServer) -> dict[str, object]:
    """TargetCheck's token fields: the PAT's expiry where Tableau lists it (Cloud), and the
    warning when it is near. A lookup that cannot answer only logs why."""
    expiry: TokenExpiry = token_expiry(session, block)
    if expiry.unknown_because:
        logger.debug("Token expiry not checked: %s", expiry.unknown_because)
    elif expiry.expires_at is not None:
        logger.info("Tableau token %r expires %s", expiry.token_name, expiry.expires_at)
    return {"token_expires_at": expiry.expires_at, "token_warning": expiry.warning(block)}


def download_extract(block: TableauServer, config: TableauConfig, dest: Path) -> Path | None:
    """Download the published datasource with its extract and unpack the .hyper into `dest`,
    signed in under the token's publish slot; changes nothing.

    Returns:
        The .hyper file, or None when the project or the datasource does not exist.

    Raises:
        SignInError: Tableau refused the sign-in, or could not be reached.
        PublishError: Tableau refused or failed the download, or the datasource holds no
            extract (a live connection).
    """
    with _token_slot(block), _signed_in(block) as session:
        project, _ = find_project(session, config.project, block, create=False)
        ds = find_datasource(session, project, config.datasource, block) if project else None
        if ds is None:
            logger.info(
                "Tableau datasource %s/%s does not exist", config.project, config.datasource
            )
            return None
        with translate_tableau_errors(f"download datasource {ds.name!r} with its extract", block):
            archive = Path(session.datasources.download(ds.id, str(dest), include_extract=True))
    logger.info("Downloaded %s (%d bytes) of %s", archive.name, archive.stat().st_size, ds.name)
    if not zipfile.is_zipfile(archive):  # a .tds alone: the datasource is not an extract
        raise PublishError(
            f"Tableau datasource {ds.name!r} holds no extract (a .tds without data came back): "
            "it is not one this pipeline publishes, so its rows cannot be counted.",
            retryable=False,
        )
    with zipfile.ZipFile(archive) as content:
        members = [n for n in content.namelist() if n.endswith(".hyper")]
        if not members:
            raise PublishError(
                f"Tableau datasource {ds.name!r} holds no .hyper extract; its rows cannot be "
                "counted.",
                retryable=False,
            )
        extract = dest / "published.hyper"  # our own name: never a path from the archive
        with content.open(members[0]) as source, extract.open("wb") as target:
            shutil.copyfileobj(source, target, length=1024 * 1024)
    archive.unlink()
    return extract


def _describe_days(days: Sequence[date]) -> str:
    """Dates for messages, consecutive runs shortened: "2026-11-01..2026-11-03, 2026-11-07"."""
    runs: list[list[date]] = []
    for day in sorted(set(days)):
        if runs and (day - runs[-1][-1]).days == 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}" for run in runs)


def _window(days: Sequence[date], config: TableauConfig) -> tuple[date, ...]:
    window = tuple(sorted(set(days)))
    if not window:
        raise ConfigError("publish needs at least one date; none was given.")
    if len(window) > 1 and config.mode != "replace_date":
        raise ConfigError(
            f"tableau.mode={config.mode} publishes one date at a time, but the window holds "
            f"{len(window)} ({_describe_days(window)}); a window of dates needs "
            "tableau.mode=replace_date (or run the dates one by one)."
        )
    return window


def _date_payload(
    extract: HyperExtract, days: tuple[date, ...], date_column: str, work: Path
) -> Path:
    """The replace_date payload, refusing an extract with rows outside `days`."""
    payload, stray = write_date_payload(extract, days, date_column, work, date_table=RUN_DATE_TABLE)
    if stray:
        raise PublishError(
            f"{stray} of the extract's {extract.rows} rows have {date_column} other than "
            f"{_describe_days(days)}; replace_date would keep them on reruns, so nothing was "
            "sent. Check bigquery.date_column and the view's filter.",
            retryable=False,
        )
    return payload


def publish(
    block: TableauServer,
    extract: HyperExtract,
    days: Sequence[date],
    config: TableauConfig,
    *,
    date_column: str,
    as_job_min_bytes: int = AS_JOB_MIN_BYTES,
) -> PublishResult:
    """Publish the extract according to `config.mode` (default: replace the rows of `days`).

    In replace_date mode ONE batch deletes the rows of every date in `days` (a date without
    rows in the extract is deleted: restated to nothing) and inserts the extract's rows; an
    extract without rows sends the delete alone. Tableau applies the batch all or nothing.

    Args:
        block: The Tableau block to sign in with (signed out again in every case), under
            its token's publish slot.
        extract: The .hyper file ("Extract"."Extract") holding the rows of `days`.
        days: The dates the extract holds, in any order; exactly one unless the mode is
            replace_date.
        config: Project path, datasource name, mode, job timeout.
        date_column: The extract's DATE column that holds the dates.
        as_job_min_bytes: Publish files at least this big as an asynchronous job.

    Returns:
        What was done: datasource id, whether it was created, the job id, rows sent, the
        dates (sorted), and how long it waited for the publish slot (None for a connected
        app: no slot).

    Raises:
        ConfigError: No date, several dates outside replace_date mode, or an extract lacking
            the date column or the upsert keys.
        SchemaDriftError: The extract's columns differ from the datasource's; nothing changed.
        PublishError: Rows outside `days` (replace_date; refused before signing in), or
            Tableau refused or failed; `retryable` tells whether a rerun can help.
    """
    window = _window(days, config)
    _check_columns(extract.columns, config, date_column, "extract")
    if config.mode == "append":
        logger.warning(
            "tableau.mode=append adds the day's rows again on every rerun or backfill of %s; "
            "use replace_date to keep one copy per date",
            window[0],
        )
    with tempfile.TemporaryDirectory(dir=extract.path.parent, prefix=".payload-") as work:
        # Built before signing in: a refused extract never takes the token's slot, and the
        # first publish is checked too, though it sends the extract itself.
        payload = None
        if config.mode == "replace_date":
            payload = _date_payload(extract, window, date_column, Path(work))
        with _token_slot(block) as slot_wait_seconds, _signed_in(block) as session:
            ds, created, job_id = _publish_signed_in(
                session, extract, window, payload, config, block, date_column, as_job_min_bytes
            )
            result = PublishResult(
                mode=config.mode,
                project_path=config.project,
                datasource_name=config.datasource,
                datasource_id=ds.id,
                created=created,
                job_id=job_id,
                rows_sent=extract.rows,
                days=window,
                url=ds.webpage_url,
                slot_wait_seconds=slot_wait_seconds,
            )
    logger.info(
        "Published %d rows of %s to %s/%s (%s%s, job %s)",
        extract.rows,
        _describe_days(window),
        config.project,
        config.datasource,
        config.mode,
        ", created" if created else "",
        job_id,
    )
    return result


def _publish_signed_in(
    session: tsc.Server,
    extract: HyperExtract,
    days: tuple[date, ...],
    payload: Path | None,
    config: TableauConfig,
    block: TableauServer,
    date_column: str,
    as_job_min_bytes: int,
) -> tuple[tsc.DatasourceItem, bool, str | None]:
    """Create, overwrite, append or update; return the datasource, created, the job id."""
    project = _resolve_project(session, config, block)
    ds = find_datasource(session, project, config.datasource, block)
    publish_kw = {"config": config, "block": block, "as_job_min_bytes": as_job_min_bytes}
    if ds is None:
        ds, job_id = _publish_file(
            session, project, config.datasource, extract.path, "CreateNew", **publish_kw
        )
        return ds, True, job_id
    if config.mode == "overwrite":  # no drift check: overwrite is the way out of drift
        ds, job_id = _publish_file(
            session, project, config.datasource, extract.path, "Overwrite", **publish_kw
        )
        return ds, False, job_id
    _check_drift(session, ds, extract.columns, block)
    if config.mode == "append":
        ds, job_id = _publish_file(
            session, project, config.datasource, extract.path, "Append", **publish_kw
        )
        return ds, False, job_id
    return ds, False, _update(session, ds, extract, days, payload, config, block, date_column)


def _check_update_api(session: tsc.Server, config: TableauConfig, block: TableauServer) -> None:
    if config.mode in {"replace_date", "upsert"} and not session.check_at_least_version(
        UPDATE_API_VERSION
    ):
        raise PublishError(
            f"tableau.mode={config.mode} needs REST API {UPDATE_API_VERSION}+ (Tableau Server "
            f"2021.3+ or Cloud); {block.server_url} speaks {session.version}. Use mode=overwrite.",
            retryable=False,
        )


def _update(
    session: tsc.Server,
    ds: tsc.DatasourceItem,
    extract: HyperExtract,
    days: tuple[date, ...],
    payload: Path | None,
    config: TableauConfig,
    block: TableauServer,
    date_column: str,
) -> str:
    _check_update_api(session, config, block)
    if config.mode == "replace_date":
        assert payload is not None  # built by publish before signing in
        actions = replace_date_actions(date_column)
        if extract.rows == 0:  # nothing to insert (an empty day): only remove the dates
            actions = actions[:1]
    else:
        payload, actions = extract.path, upsert_actions(config.upsert_keys)
    # A fresh request id per attempt: Tableau runs a request id only once, so reusing it
    # on a retried attempt would silently skip the retry.
    request_id = str(uuid.uuid4())
    with translate_tableau_errors(f"send the {config.mode} batch to datasource {ds.name!r}", block):
        job = session.datasources.update_hyper_data(
            ds, request_id=request_id, actions=actions, payload=str(payload)
        )
    _wait(session, job.id, f"{config.mode} {_describe_days(days)}", config, block)
    return job.id
