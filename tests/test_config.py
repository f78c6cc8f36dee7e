"""PipelineConfig refuses settings that would only fail later, naming the setting and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flows.bigquery import quote_view
from flows.config import PipelineConfig
from flows.errors import ConfigError


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


@pytest.mark.parametrize(
    "view",
    [
        "ad-mart-prod.ads_mart.v_daily_ads",
        "not-a-view",
        "my-project.mart",
        "my-project.mart.v.extra",
        "My-Project.mart.v",
        "my-project.ma-rt.v",
        "my-project.mart.v`x",
        "proj.mart.v",  # a project id has at least 6 characters
        "p" * 31 + ".mart.v",  # and at most 30
        "example.com:my-project.mart.view",
    ],
)
def test_the_config_and_the_sql_builder_judge_view_names_alike(view: str) -> None:
    # One set of rules (flows.config) serves both: a name the config accepts is one the SQL
    # builder quotes, and a name it refuses is refused there too, with the same reason.
    try:
        PipelineConfig.model_validate(_config(bigquery__view=view))
    except ValidationError as exc:
        (error,) = exc.errors()
        with pytest.raises(ConfigError) as refused:
            quote_view(view)
        assert str(refused.value).startswith(error["msg"].removeprefix("Value error, "))
    else:
        assert quote_view(view) == f"`{view}`"


def test_a_domain_scoped_project_is_refused_saying_it_is_not_supported_and_why() -> None:
    with pytest.raises(ValidationError) as caught:
        PipelineConfig.model_validate(_config(bigquery__view="example.com:my-project.mart.view"))
    message = str(caught.value)
    assert "names a domain-scoped project (example.com:my-project)" in message
    assert "domain-scoped projects are not supported" in message
    assert "splits bigquery.view on '.' into three plain ids" in message  # why
    assert "Create the view in a project with a plain id" in message  # what to do


def test_a_bucket_name_with_a_scheme_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"gcs.bucket 'gs://b-1' is not a valid bucket"):
        PipelineConfig.model_validate(_config(gcs__bucket="gs://b-1"))
