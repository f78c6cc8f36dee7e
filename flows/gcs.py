"""Step 2: download one export attempt from GCS, verified (the only GCS importer).

INTERFACE PINNED BY THE SKELETON; the export issue implements it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.cloud import storage

from flows.bigquery import ExportManifest
from flows.config import GcsConfig


@dataclass(frozen=True)
class DownloadedExport:
    """The attempt's Parquet files on local disk, checked against the export."""

    files: tuple[Path, ...]
    bytes: int
    rows: int  # summed from the Parquet footers


def download_export(
    client: storage.Client, manifest: ExportManifest, dest_dir: Path, gcs: GcsConfig
) -> DownloadedExport:
    """Download exactly the manifest's attempt prefix into `dest_dir`, CRC32C-checked."""
    raise NotImplementedError


def delete_export(client: storage.Client, manifest: ExportManifest) -> int:
    """Delete the attempt's objects; return how many were deleted."""
    raise NotImplementedError
