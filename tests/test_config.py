"""PipelineConfig refuses settings that would only fail later, naming the setting and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flows.config import PipelineConfig


def _config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "credentials_block": "gcp-wif",
        "bigquery": {"view": "ad-mart-prod.ads_mart.v_daily_ads"},
        "gcs": {"bucket": "ad-mart-prod-tableau-staging"},
        "tableau": {"server_block": "tableau", "project": "Marketing/Ads", "datasource": "daily"},
    }
    for path, value in changes.items():
        section, _, key = path.rpartition("__")
        (config[section] if section else config)[key] = value
    return config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tableau__datasource": ""}, r"tableau.datasource '' must be a name"),
        ({"tableau__datasource": "  "}, r"tableau.datasource '  ' must be a name"),
        ({"tableau__datasource": " daily"}, "without leading or trailing spaces"),
        ({"gcs__prefix": "a//b"}, r"gcs.prefix 'a//b' must be a relative path of non-empty"),
        ({"gcs__prefix": "a/../b"}, "without '.', '..' or '//'"),
        ({"gcs__prefix": "./a"}, "without '.', '..' or '//'"),
        ({"gcs__prefix": "/"}, "non-empty segments"),
    ],
)
def test_settings_that_would_fail_later_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PipelineConfig.model_validate(_config(**changes))


def test_a_work_dir_that_is_a_file_is_refused_by_name(tmp_path: Path) -> None:
    file = tmp_path / "scratch"
    file.write_text("not a directory")

    with pytest.raises(ValidationError, match=r"work_dir '.*scratch' is a file, not a directory"):
        PipelineConfig.model_validate(_config(work_dir=str(file)))
    assert PipelineConfig.model_validate(_config(work_dir=str(tmp_path / "new"))).work_dir


@pytest.mark.parametrize(
    ("prefix", "normalized"), [("bq-tableau", "bq-tableau"), ("/exports/bq/", "exports/bq")]
)
def test_good_prefixes_are_kept_without_outer_slashes(prefix: str, normalized: str) -> None:
    assert PipelineConfig.model_validate(_config(gcs__prefix=prefix)).gcs.prefix == normalized
