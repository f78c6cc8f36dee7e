"""The catalog of pipelines: its validation, and prefect.yaml's deployments rendered from it.

Pure: no server. `test_deploy.py` deploys the rendered prefect.yaml to a Prefect server.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import catalog
from flows.catalog import CatalogError
from flows.cli import main
from flows.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DOCUMENT: dict[str, Any] = {
    "schedule": {"hour": 6},
    "defaults": {
        "credentials_block": "gcp-wif",
        "lookback_days": 28,
        "bigquery": {"location": "asia-northeast1"},
        "gcs": {"bucket": "ad-mart-prod-tableau-staging"},
        "tableau": {"server_block": "tableau", "project": "Marketing/Ads"},
    },
    "pipelines": [
        {"name": "campaigns", "view": "ad-mart-prod.ads_mart.v_campaign", "datasource": "camp"},
        {
            "name": "devices",
            "view": "ad-mart-prod.ads_mart.v_device",
            "datasource": "device",
            "date_column": "day",
            "location": "US",
            "project": "Marketing/Devices",
            "lookback_days": 7,
            "schedule_hour": 7,
            "empty_day": "allow",
            "max_bytes_billed": 1024**3,
        },
    ],
}


def _with(*changes: tuple[str, Any]) -> dict[str, Any]:
    """DOCUMENT with `("pipelines.1.view", value)`-style changes (value None deletes)."""
    document = copy.deepcopy(DOCUMENT)
    for path, value in changes:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if value is None:
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return document


def _problems(document: object) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        catalog.parse(document)
    return caught.value.problems


def test_an_entry_is_its_defaults_with_its_overrides() -> None:
    campaigns, devices = catalog.parse(DOCUMENT).pipelines

    assert campaigns.config.name == "campaigns"
    assert campaigns.config.bigquery.view == "ad-mart-prod.ads_mart.v_campaign"
    assert campaigns.config.bigquery.location == "asia-northeast1"
    assert campaigns.config.lookback_days == 28
    assert campaigns.target == "Marketing/Ads/camp"
    assert (campaigns.cron, campaigns.daily_deployment) == ("0 6 * * *", "campaigns-daily")
    assert devices.config.bigquery.date_column == "day"
    assert devices.config.bigquery.location == "US"
    assert devices.config.bigquery.max_bytes_billed == 1024**3
    assert devices.config.tableau.project == "Marketing/Devices"
    assert devices.config.gcs.empty_day == "allow"
    assert (devices.config.lookback_days, devices.cron) == (7, "0 7 * * *")
    assert devices.per_date_deployment == "bq-view-to-tableau/devices-per-date"
    # The defaults are shared, not mutated by an entry's overrides.
    assert campaigns.config.tableau.project == "Marketing/Ads"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            [("pipelines.0.lookback", 3)],
            "pipelines[0] (campaigns): unknown key 'lookback' (did you mean 'lookback_days'?",
        ),
        ([("defaults.bigquery.maximum_bytes", 1)], "bigquery.maximum_bytes: unknown setting"),
        ([("extra", 1)], "unknown top-level key 'extra'"),
        ([("pipelines.1.name", "campaigns")], "pipeline name 'campaigns' is used 2 times"),
        (
            [("pipelines.1.datasource", "camp"), ("pipelines.1.project", "marketing/ads/")],
            "pipelines 'campaigns' and 'devices' both write Tableau datasource",
        ),
        ([("pipelines.0.view", "ads_mart.v_campaign")], "view (bigquery.view): bigquery.view"),
        ([("pipelines.0.view", "Ad-Mart.ads.v")], "'Ad-Mart' is not a valid BigQuery project id"),
        ([("pipelines.1.date_column", "day; DROP")], "is not a valid column name"),
        ([("pipelines.0.name", "Campaigns")], "name 'Campaigns' must be 2-40 lowercase"),
        ([("pipelines.0.datasource", None)], "pipelines[0] (campaigns): 'datasource' is required"),
        ([("pipelines.1.schedule_hour", 24)], "schedule_hour 24 must be 0-23"),
        ([("schedule.minute", 75)], "schedule.minute 75 must be 0-59"),
        ([("defaults.bigquery.view", "p-roject.d.v")], "defaults.bigquery.view: is given per"),
        (
            [("defaults.gcs", None)],
            "pipelines[0] (campaigns): gcs: is required (set it in defaults)",
        ),
        ([("pipelines.1.lookback_days", 91)], "lookback_days: Input should be less than or equal"),
        (
            [("pipelines.1.mode", "append")],
            "lookback_days=7 needs tableau.mode='replace_date'",
        ),
        ([("pipelines", [])], "pipelines: must list at least one pipeline"),
    ],
)
def test_an_invalid_catalog_names_the_entry_the_key_and_the_fix(
    changes: list[tuple[str, Any]], expected: str
) -> None:
    problems = _problems(_with(*changes))

    assert any(expected in problem for problem in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        _with(("pipelines.0.lookback", 3), ("pipelines.1.view", "nope"), ("schedule.hour", -1))
    )

    assert len(problems) == 3, problems


def test_a_file_that_is_not_a_catalog_is_refused_with_its_path(tmp_path: Path) -> None:
    broken = tmp_path / "pipelines.yaml"
    broken.write_text("pipelines: [name: x\n")
    with pytest.raises(
        CatalogError, match=r"(?s)pipelines\.yaml has 1 problem.*not valid YAML.*line 1"
    ):
        catalog.load(broken)
    with pytest.raises(CatalogError, match="cannot read it"):
        catalog.load(tmp_path / "missing.yaml")
    assert _problems(["a list"]) == ["must be a mapping with 'defaults' and 'pipelines'"]


def test_an_unknown_pipeline_name_lists_the_names_and_suggests_one() -> None:
    loaded = catalog.parse(DOCUMENT)
    with pytest.raises(ConfigError, match=r"it has: campaigns, devices\. Did you mean 'devices'"):
        loaded.get("device")


def test_five_views_are_five_short_entries() -> None:
    entries = [
        {"name": n, "view": f"ad-mart-prod.ads_mart.v_{n}", "datasource": n}
        for n in ("campaigns", "ads", "devices", "conversions", "budgets")
    ]
    loaded = catalog.parse({**DOCUMENT, "pipelines": entries})

    rendered = yaml.safe_load(
        catalog.render_prefect_yaml((REPO / "prefect.yaml").read_text(), loaded)
    )
    names = [d["name"] for d in rendered["deployments"]]
    assert len(names) == 11  # a daily and a per-date deployment each, one backfill
    assert names[-1] == "backfill"
    per_entry = yaml.safe_dump(entries[0], sort_keys=False).count("\n")
    assert per_entry == 3


# -- prefect.yaml, rendered from the catalog ---------------------------------------------------


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_the_committed_prefect_yaml_is_the_committed_catalog_rendered() -> None:
    text = (REPO / "prefect.yaml").read_text()
    loaded = catalog.load(REPO / "deployments" / "pipelines.yaml")

    assert catalog.render_prefect_yaml(text, loaded) == text, (
        "prefect.yaml is stale: run `python -m flows catalog render`"
    )


def test_each_pipeline_gets_a_daily_and_a_per_date_deployment_and_one_backfill() -> None:
    loaded = catalog.load(REPO / "deployments" / "pipelines.yaml")
    deployments = {d["name"]: d for d in _prefect_yaml()["deployments"]}

    expected = [n for p in loaded.pipelines for n in (f"{p.name}-daily", f"{p.name}-per-date")]
    assert list(deployments) == [*expected, "backfill"]
    for pipeline in loaded.pipelines:
        daily = deployments[f"{pipeline.name}-daily"]
        per_date = deployments[f"{pipeline.name}-per-date"]
        (schedule,) = daily["schedules"]
        assert (schedule["cron"], schedule["timezone"]) == (pipeline.cron, pipeline.config.timezone)
        assert per_date["schedules"] == []
        for deployment in (daily, per_date):  # the YAML alias gives both the same config
            config = catalog.PipelineConfig.model_validate(deployment["parameters"]["config"])
            assert config == pipeline.config
            assert deployment["work_pool"]["job_variables"]["memory"] == 4096
    backfill = deployments["backfill"]
    assert "parameters" not in backfill  # its pipeline is chosen per run
    assert backfill["work_pool"]["job_variables"]["memory"] == 512


def test_render_rewrites_a_stale_prefect_yaml_and_check_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text((REPO / "prefect.yaml").read_text())
    catalog_file = tmp_path / "pipelines.yaml"
    document = yaml.safe_load((REPO / "deployments" / "pipelines.yaml").read_text())
    document["pipelines"].append(
        {"name": "devices", "view": "ad-mart-prod.ads_mart.v_device_daily", "datasource": "dev"}
    )
    catalog_file.write_text(yaml.safe_dump(document))
    args = ["--catalog", str(catalog_file), "catalog"]

    assert main([*args, "check", "--prefect-file", str(prefect_file)]) == 1
    assert "run `python -m flows catalog render`" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="do not match"):  # the prefect.yaml build step
        catalog.check_deployments(str(catalog_file), str(prefect_file))

    assert main([*args, "render", "--prefect-file", str(prefect_file)]) == 0
    assert "9 deployments (rewritten)" in capsys.readouterr().out
    names = [d["name"] for d in yaml.safe_load(prefect_file.read_text())["deployments"]]
    assert names[-3:] == ["devices-daily", "devices-per-date", "backfill"]
    assert main([*args, "check", "--prefect-file", str(prefect_file)]) == 0
    assert catalog.check_deployments(str(catalog_file), str(prefect_file)) == {
        "pipelines": "campaigns, conversions, budgets, devices"
    }
    head = (REPO / "prefect.yaml").read_text().partition(catalog.GENERATED_MARKER)[0]
    assert prefect_file.read_text().startswith(head)  # the hand-written part is kept as is


def test_a_catalog_error_exits_2_and_names_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog_file = tmp_path / "pipelines.yaml"
    catalog_file.write_text(yaml.safe_dump(_with(("pipelines.1.name", "campaigns"))))

    assert main(["--catalog", str(catalog_file), "pipelines"]) == 2
    err = capsys.readouterr().err
    assert "has 1 problem(s); nothing was deployed or run" in err
    assert "'campaigns' is used 2 times" in err


def test_the_pipelines_command_lists_each_view_and_datasource(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["pipelines"]) == 0
    out = capsys.readouterr().out
    for pipeline in catalog.load().pipelines:
        assert pipeline.name in out
        assert pipeline.config.bigquery.view in out


# -- the documented catalog and its commands ---------------------------------------------------


def _yaml_blocks(markdown: Path) -> list[str]:
    return [block.split("```", 1)[0] for block in markdown.read_text().split("```yaml\n")[1:]]


def test_the_readmes_entry_is_the_committed_catalogs() -> None:
    (block,) = _yaml_blocks(REPO / "README.md")
    (entry,) = yaml.safe_load(block)
    committed = yaml.safe_load((REPO / "deployments" / "pipelines.yaml").read_text())
    assert entry in committed["pipelines"]


def test_the_entry_deployments_readme_adds_is_a_valid_fourth_pipeline() -> None:
    (block,) = _yaml_blocks(REPO / "deployments" / "README.md")
    document = yaml.safe_load((REPO / "deployments" / "pipelines.yaml").read_text())
    document["pipelines"] += yaml.safe_load(block)["pipelines"]

    added = catalog.parse(document).get("devices")

    assert added.config.bigquery.view == "ad-mart-prod.ads_mart.v_device_daily"
    assert added.config.lookback_days == 28  # the defaults'


def _inline_commands(markdown: Path, prefix: str) -> list[str]:
    """Commands starting with `prefix` in the markdown's bash blocks and inline code."""
    text = markdown.read_text()
    found = re.findall(r"^(" + re.escape(prefix) + r"[^#\n`]*)", text, flags=re.MULTILINE)
    found += re.findall(r"`(" + re.escape(prefix) + r"[^`]*)`", text)
    return sorted({" ".join(command.split()) for command in found})


@pytest.mark.subprocess
def test_the_documented_catalog_commands_work_verbatim(tmp_path: Path) -> None:
    commands = _inline_commands(REPO / "README.md", "python -m flows catalog")
    commands += _inline_commands(REPO / "deployments" / "README.md", "python -m flows catalog")
    assert set(commands) == {"python -m flows catalog check", "python -m flows catalog render"}
    # In a copy of the project's two files: render writes prefect.yaml in the working directory.
    shutil.copy(REPO / "prefect.yaml", tmp_path / "prefect.yaml")
    edited = tmp_path / "pipelines.yaml"
    edited.write_text(
        (REPO / "deployments" / "pipelines.yaml")
        .read_text()
        .replace("schedule_hour: 7", "schedule_hour: 8")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PYTHON"))}
    env |= {
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
        "PIPELINES_CATALOG": str(edited),
    }

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    stale = run("python -m flows catalog check")
    assert stale.returncode == 1, stale.stderr
    assert "do not match" in stale.stderr
    rendered = run("python -m flows catalog render")
    assert rendered.returncode == 0, rendered.stderr
    assert "7 deployments (rewritten)" in rendered.stdout
    assert 'cron: "0 8 * * *"' in (tmp_path / "prefect.yaml").read_text()
    fresh = run("python -m flows catalog check")
    assert fresh.returncode == 0, fresh.stderr
    assert "catalog OK: 3 pipeline(s)" in fresh.stdout
