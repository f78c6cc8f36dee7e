"""Step 2: download one export attempt from GCS, verified (all of the pipeline's GCS calls).

Lists exactly the attempt's prefix (never a parent, so an earlier attempt's files cannot slip
in), downloads the objects in parallel threads with `transfer_manager`, each streamed to disk
and checked against the object's CRC32C, then reads only the Parquet footers: their rows and
their one shared schema are handed on to the build, which checks the rows against BigQuery's
exported count and derives the extract's table from the schema.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
import requests
from google.api_core import exceptions as gapi
from google.cloud import storage
from google.cloud.storage import transfer_manager
from google.resumable_media.common import DataCorruption

from flows.bigquery import ExportManifest, parquet_schema
from flows.config import BUCKET_NAME, GcsConfig
from flows.errors import DownloadError, is_retryable

logger = logging.getLogger(__name__)

_GS_URI_RE: Final = re.compile(rf"gs://(?P<bucket>{BUCKET_NAME.pattern})/(?P<name>.+/)")
_FILE_NAME_RE: Final = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]{0,254}")
_GCS_ERRORS: Final = (gapi.GoogleAPICallError, gapi.RetryError, requests.RequestException)


@dataclass(frozen=True)
class DownloadedExport:
    """The attempt's Parquet files on local disk, CRC32C-checked, with what their footers say."""

    files: tuple[Path, ...]
    bytes: int
    rows: int  # summed from the Parquet footers
    # The files' one schema; for a day without files, what the export would have written
    # (`flows.bigquery.parquet_schema` of the dry run's columns).
    schema: pa.Schema


def split_gs_uri(uri_prefix: str) -> tuple[str, str]:
    """Split `gs://BUCKET/some/prefix/` into `("BUCKET", "some/prefix/")`.

    Raises:
        DownloadError: not a gs:// folder URI ending with '/'.
    """
    match = _GS_URI_RE.fullmatch(uri_prefix)
    if not match or "//" in f"/{match['name']}" or ".." in match["name"].split("/"):
        raise DownloadError(f"Export prefix {uri_prefix!r} is not a gs://BUCKET/PATH/ folder URI")
    return match["bucket"], match["name"]


def download_export(
    client: storage.Client, manifest: ExportManifest, dest_dir: Path, gcs: GcsConfig
) -> DownloadedExport:
    """Download exactly the manifest's attempt prefix into `dest_dir`, CRC32C-checked.

    Reads the footers once: the rows and the shared schema are handed on in the result, for the
    build to check against BigQuery's count (`manifest.rows`) and to define the extract with.

    Raises:
        DownloadError: nothing to download, a failed or corrupt download (retryable), files
            that are not Parquet or disagree on their columns, or an empty day under
            `gcs.empty_day=fail`. On failure no file of this attempt is left in `dest_dir`.
    """
    bucket_name, prefix = split_gs_uri(manifest.uri_prefix)
    blobs = _list(client, bucket_name, prefix, manifest)
    if not blobs:
        if manifest.rows == 0:
            _empty_day(manifest, gcs)
            return DownloadedExport(
                files=(), bytes=0, rows=0, schema=parquet_schema(manifest.schema)
            )
        raise DownloadError(
            f"No files under {manifest.uri_prefix}, although BigQuery job {manifest.job_id} "
            f"reported {manifest.rows} rows in {manifest.files} files. Check that gcs.bucket is "
            "the bucket the export wrote to and that no lifecycle rule deletes objects under "
            "gcs.prefix, then rerun the export.",
            retryable=False,
        )

    dest_dir.mkdir(parents=True, exist_ok=True)
    # The listed blobs carry their generation: we download exactly the versions we listed.
    pairs = [(b, dest_dir / _local_name(b.name, prefix)) for b in blobs]
    targets = [path for _, path in pairs]
    try:
        _download(pairs, gcs, manifest)
        rows, schema = _read_footers(targets, manifest)
        if rows == 0:
            _empty_day(manifest, gcs)
    except BaseException:
        for path in targets:  # leave nothing half-verified behind
            path.unlink(missing_ok=True)
        raise

    size = sum(path.stat().st_size for path in targets)
    logger.info(
        "Downloaded %d files, %d bytes, %d rows of %s for %s from %s",
        len(targets),
        size,
        rows,
        manifest.view,
        manifest.run_date,
        manifest.uri_prefix,
    )
    return DownloadedExport(files=tuple(targets), bytes=size, rows=rows, schema=schema)


def delete_export(client: storage.Client, manifest: ExportManifest) -> int:
    """Delete the attempt's objects; return how many were deleted.

    Raises:
        DownloadError: listing or deleting failed (e.g. missing storage.objects.delete).
    """
    bucket_name, prefix = split_gs_uri(manifest.uri_prefix)
    deleted = 0
    for blob in _list(client, bucket_name, prefix, manifest):
        try:
            blob.delete()
        except gapi.NotFound:
            continue  # already gone: that is what we wanted
        except _GCS_ERRORS as exc:
            raise _translate(exc, manifest, "deleting objects under") from exc
        deleted += 1
    logger.info("Deleted %d objects under %s", deleted, manifest.uri_prefix)
    return deleted


def delete_staging(client: storage.Client, manifest: ExportManifest) -> None:
    """Delete the attempt's files after the publish; a failure only warns (Tableau has the
    day, and the bucket's lifecycle rule removes what is left)."""
    try:
        delete_export(client, manifest)  # logs what it deleted
    except Exception as exc:
        logger.warning(
            "Could not delete %s (%s); a bucket lifecycle rule will.", manifest.uri_prefix, exc
        )


def _list(
    client: storage.Client, bucket: str, prefix: str, manifest: ExportManifest
) -> list[storage.Blob]:
    try:
        return [b for b in client.list_blobs(bucket, prefix=prefix) if not b.name.endswith("/")]
    except _GCS_ERRORS as exc:
        raise _translate(exc, manifest, "listing") from exc


def _local_name(name: str, prefix: str) -> str:
    relative = name[len(prefix) :]
    if not _FILE_NAME_RE.fullmatch(relative):
        raise DownloadError(
            f"Unexpected object gs://.../{name} under the export prefix: only the export's own "
            "part files belong there. Remove it, or use a gcs.prefix nothing else writes to.",
            retryable=False,
        )
    return relative


def _download(
    pairs: list[tuple[storage.Blob, Path]], gcs: GcsConfig, manifest: ExportManifest
) -> None:
    results = transfer_manager.download_many(
        [(blob, str(path)) for blob, path in pairs],
        download_kwargs={"checksum": "crc32c"},
        max_workers=gcs.download_workers,
        worker_type=transfer_manager.THREAD,
        raise_exception=False,  # wait for every worker, then report all failures at once
    )
    failures = [(b.name, r) for (b, _), r in zip(pairs, results, strict=True) if r is not None]
    if not failures:
        return
    name, first = failures[0]
    retryable = all(is_retryable(exc) for _, exc in failures)
    if isinstance(first, DataCorruption):
        message = (
            f"CRC32C mismatch downloading gs://.../{name} of {manifest.uri_prefix} "
            f"({len(failures)} of {len(pairs)} files failed). The bytes received differ from "
            "the stored checksum; a retry usually fixes a network fault. If it persists, the "
            "stored object is damaged: rerun the export, which writes a new attempt."
        )
    else:
        message = _translate(first, manifest, f"downloading {name} of").args[0]
    raise DownloadError(message, retryable=retryable) from first


def _read_footers(paths: list[Path], manifest: ExportManifest) -> tuple[int, pa.Schema]:
    """Sum the rows in the Parquet footers (no data pages are read) and check one schema."""
    rows = 0
    schema: pa.Schema | None = None
    for path in paths:
        try:
            with pq.ParquetFile(path) as parquet:
                file_schema = parquet.schema_arrow
                rows += parquet.metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise DownloadError(
                f"Cannot read the Parquet footer of {path.name} of {manifest.uri_prefix} "
                f"({exc}). Rerun the export.",
                retryable=False,
            ) from exc
        if schema is None:
            schema = file_schema
        elif not _same_columns(schema, file_schema):
            raise DownloadError(
                f"{path.name} does not have the same columns as {paths[0].name}; all files of "
                f"one export must share a schema; rerun the export into a new attempt "
                f"({manifest.uri_prefix}):\n" + _schema_diff(schema, file_schema),
                retryable=False,
            )
    assert schema is not None  # download_export calls this with at least one file
    return rows, schema


def _same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    # Nullability and metadata may differ between writers; names and types may not.
    return [(f.name, f.type) for f in a] == [(f.name, f.type) for f in b]


def _schema_diff(a: pa.Schema, b: pa.Schema) -> str:
    """Column-by-column differences of `b` against `a`, by name."""
    types_a = {f.name: f.type for f in a}
    types_b = {f.name: f.type for f in b}
    lines = [f"  missing: {n!r} {t}" for n, t in types_a.items() if n not in types_b]
    lines += [f"  extra: {n!r} {t}" for n, t in types_b.items() if n not in types_a]
    lines += [
        f"  {n!r}: {t} vs {types_b[n]}"
        for n, t in types_a.items()
        if n in types_b and types_b[n] != t
    ]
    if not lines:
        lines = [f"  same columns in another order: {', '.join(map(repr, b.names))}"]
    return "\n".join(lines)


def _empty_day(manifest: ExportManifest, gcs: GcsConfig) -> None:
    if gcs.empty_day == "allow":
        logger.warning(
            "%s has no rows for %s; continuing (gcs.empty_day=allow)",
            manifest.view,
            manifest.run_date,
        )
        return
    raise DownloadError(
        f"the data mart has no rows for {manifest.run_date.isoformat()} in {manifest.view} — "
        "usually it has not been refreshed yet; rerun later or set gcs.empty_day=allow",
        retryable=False,
    )


def _translate(exc: BaseException, manifest: ExportManifest, doing: str) -> DownloadError:
    detail = getattr(exc, "message", None) or str(exc)
    bucket, _ = split_gs_uri(manifest.uri_prefix)
    if isinstance(exc, gapi.Forbidden) and not is_retryable(exc):
        message = (
            f"Access denied {doing} {manifest.uri_prefix} ({detail}): grant "
            f"roles/storage.objectAdmin on bucket {bucket} to the service account."
        )
    elif isinstance(exc, gapi.NotFound):
        message = (
            f"Not found while {doing} {manifest.uri_prefix} ({detail}). Check gcs.bucket; "
            "an object that vanished mid-run means something else deletes under gcs.prefix."
        )
    else:
        message = f"GCS failed {doing} {manifest.uri_prefix}: {type(exc).__name__}: {detail}"
    return DownloadError(message, retryable=is_retryable(exc))


# --- the record of what was published per date (flows.window) --------------------------------

_RECORD_WRITES: Final[int] = 5
"""Tries of a record write that another run's write got ahead of (each re-reads and merges)."""


def read_record(
    client: storage.Client, bucket: str, name: str
) -> tuple[dict[str, Any] | None, int]:
    """The JSON record `gs://bucket/name` and its generation; `(None, 0)` when there is none.

    An unreadable record counts as lost (the window is republished), with a warning.

    Raises:
        DownloadError: GCS refused or failed the read (e.g. missing storage.objects.get).
    """
    blob = client.bucket(bucket).blob(name)
    try:
        text = blob.download_as_text()
    except gapi.NotFound:
        return None, 0
    except _GCS_ERRORS as exc:
        raise _record_error(exc, bucket, name, "reading") from exc
    generation = int(blob.generation or 0)
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        logger.warning("gs://%s/%s is not a JSON record; treating it as lost", bucket, name)
        return None, generation
    return payload, generation


def write_record(
    client: storage.Client,
    bucket: str,
    name: str,
    payload: dict[str, Any],
    *,
    generation: int,
    merge: Callable[[dict[str, Any] | None], dict[str, Any]],
) -> None:
    """Write the record unless another run wrote it after `generation` was read (0: it did not
    exist); then re-read it, `merge` ours into theirs and try again.

    Raises:
        DownloadError: GCS refused or failed the write (e.g. missing storage.objects.create).
    """
    blob = client.bucket(bucket).blob(name)
    for _ in range(_RECORD_WRITES):
        try:
            blob.upload_from_string(
                json.dumps(payload, indent=1, sort_keys=True),
                content_type="application/json",
                if_generation_match=generation,
            )
        except gapi.PreconditionFailed:
            theirs, generation = read_record(client, bucket, name)
            payload = merge(theirs)
            continue
        except _GCS_ERRORS as exc:
            raise _record_error(exc, bucket, name, "writing") from exc
        logger.info("Recorded the published dates in gs://%s/%s", bucket, name)
        return
    raise DownloadError(
        f"gs://{bucket}/{name} kept changing while this run wrote it ({_RECORD_WRITES} tries): "
        "other runs of the same datasource are writing at once. The next run republishes "
        "the dates this one could not record.",
        retryable=True,
    )


def _record_error(exc: BaseException, bucket: str, name: str, doing: str) -> DownloadError:
    detail = getattr(exc, "message", None) or str(exc)
    fix = (
        f" Grant roles/storage.objectAdmin on bucket {bucket} to the service account."
        if isinstance(exc, gapi.Forbidden)
        else ""
    )
    return DownloadError(
        f"GCS failed {doing} the published record gs://{bucket}/{name}: {type(exc).__name__}: "
        f"{detail}.{fix}",
        retryable=is_retryable(exc),
    )
