"""Step 3: build a Tableau Hyper extract from Parquet files (the only tableauhyperapi importer).

INTERFACE PINNED BY THE SKELETON; the Hyper/Tableau issue implements it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flows.config import HyperConfig

EXTRACT_SCHEMA = "Extract"
EXTRACT_TABLE = "Extract"


@dataclass(frozen=True)
class HyperExtract:
    """A built .hyper file holding table "Extract"."Extract"."""

    path: Path
    rows: int
    columns: tuple[tuple[str, str], ...]  # (name, Hyper SQL type, e.g. "NUMERIC(38,9)")
    file_format_version: int


def build_hyper(
    files: Sequence[Path],
    out_path: Path,
    config: HyperConfig,
    *,
    expected_rows: int | None,
    log_dir: Path,
) -> HyperExtract:
    """Load the Parquet files into a new .hyper at `out_path` with Hyper's own SQL."""
    raise NotImplementedError
