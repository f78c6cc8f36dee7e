"""Step 2: download one export attempt from GCS, verified (the only GCS importer).

Lists exactly the attempt's prefix (never a parent, so an earlier attempt's files cannot slip
in), downloads the objects in parallel threads with `transfer_manager`, each streamed to disk
and checked against the object's CRC32C, then reads only the Parquet footers to check that the
files hold as many rows as BigQuery said it exported.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow.parquet as pq
import requests
from google.api_core import exceptions as gapi
from google.cloud import storage
from google.cloud.storage import transfer_manager
from google.resumable_media.common import DataCorruption

from flows.bigquery import ExportManifest
from flows.config import BUCKET_NAME, GcsConfig
from flows.errors import DownloadError, is_retryable

logger = logging.getLogger(__name__)

_GS_URI_RE: Final = re.compile(rf"gs://(?P<bucket>{BUCKET_NAME.pattern})/(?P<name>.+/)")
_FILE_NAME_RE: Final = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]{0,254}")
_GCS_ERRORS: Final = (gapi.GoogleAPICallError, gapi.RetryError, requests.RequestException)


@dataclass(frozen=True)
class DownloadedExport:
    """The attempt's Parquet files on local disk, checked against the export."""

    files: tuple[Path, ...]
    bytes: int
    rows: int  # summed from the Parquet footers
    schema: tuple[tuple[str, str], ...] = ()  # (column, Arrow type) from the Parquet footer


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

    Raises:
        DownloadError: nothing to download, a failed or corrupt download (retryable), a row
            count that differs from the export's, or an empty day under `gcs.empty_day=fail`.
            On failure no file of this attempt is left in `dest_dir`.
    """
    bucket_name, prefix = split_gs_uri(manifest.uri_prefix)
    blobs = _list(client, bucket_name, prefix, manifest)
    if not blobs:
        if manifest.rows == 0:
            _empty_day(manifest, gcs)
            return DownloadedExport(files=(), bytes=0, rows=0)
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
        rows, schema = _footer_rows(targets, manifest)
        if manifest.rows is not None and rows != manifest.rows:
            raise DownloadError(
                f"The Parquet files under {manifest.uri_prefix} hold {rows} rows, but BigQuery "
                f"job {manifest.job_id} exported {manifest.rows}. Rerun the export; if it "
                "persists, something else writes under gcs.prefix.",
                retryable=False,
            )
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


def _footer_rows(
    paths: list[Path], manifest: ExportManifest
) -> tuple[int, tuple[tuple[str, str], ...]]:
    """Sum the rows in the Parquet footers (no data pages are read) and check one schema."""
    rows = 0
    schema = None
    for path in paths:
        try:
            metadata = pq.read_metadata(path)
        except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError)
            raise DownloadError(
                f"{path.name} of {manifest.uri_prefix} is not a readable Parquet file ({exc}). "
                "Rerun the export.",
                retryable=False,
            ) from exc
        rows += metadata.num_rows
        columns = tuple((f.name, str(f.type)) for f in metadata.schema.to_arrow_schema())
        if schema is not None and columns != schema:
            raise DownloadError(
                f"The files under {manifest.uri_prefix} disagree on their columns; "
                "rerun the export into a new attempt.",
                retryable=False,
            )
        schema = columns
    return rows, schema or ()


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
