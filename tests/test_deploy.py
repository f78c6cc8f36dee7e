"""`prefect deploy --all` of the real prefect.yaml against a local server and an ECS pool.

prefect.yaml's deployments are rendered from the catalog, deployments/pipelines.yaml (3
pipelines): each gets a scheduled daily and a per-date deployment, and one backfill serves all.
The deploy runs as users run it: a `prefect --no-prompt deploy --all` subprocess in the repo,
including prefect.yaml's build and push steps, whose docker-py client talks to a fake Docker
Engine on loopback (`DOCKER_HOST`). The pool has type `ecs` (`ecs:push` exists only in Prefect
Cloud; same template) and the template of `deployments/ecs_job_template.py`: prefect-aws's own
plus one variable. Deployments are read back with the Prefect client.

The server is the session's `prefect_server`: the CLI needs only an API URL, and the flow tests'
backfill deploys its own pipeline (`local-ads`), so nothing here overwrites theirs. What is read
back is filtered to this module's deployments and pools.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.client.schemas.responses import DeploymentResponse
from prefect.settings import PREFECT_API_URL
from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

from deployments.ecs_job_template import EPHEMERAL_STORAGE_VARIABLE, ecs_base_job_template
from flows import catalog
from flows.config import PipelineConfig
from standins.docker import FakeDockerEngine
from tests import dockerfile

pytestmark = [pytest.mark.prefect, pytest.mark.subprocess]

REPO = Path(__file__).resolve().parents[1]
POOL = "ecs-deploy-test"
IMAGE_REPOSITORY = "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com/bq-view-to-tableau"
TASK_ROLE = "arn:aws:iam::123456789012:role/access2bq"
DEPLOY_ENV: dict[str, str] = {
    "DEPLOY_WORK_POOL": POOL,
    "DEPLOY_IMAGE_REPOSITORY": IMAGE_REPOSITORY,
    "DEPLOY_IMAGE_TAG": "3f2a9c1",
    "DEPLOY_AWS_REGION": "ap-northeast-1",
    "DEPLOY_TASK_ROLE_ARN": TASK_ROLE,
    "DEPLOY_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/PrefectEcsTaskExecutionRole",
    "DEPLOY_ECS_CLUSTER": "prefect-ecs-cluster",
    "DEPLOY_VPC_ID": "vpc-0123456789abcdef0",
}
CATALOG = catalog.load(REPO / "deployments" / "pipelines.yaml")
PIPELINES = {p.name: p for p in CATALOG.pipelines}
DAILY = {p.name: f"bq-view-to-tableau/{p.daily_deployment}" for p in CATALOG.pipelines}
PER_DATE = {p.name: p.per_date_deployment for p in CATALOG.pipelines}
BACKFILL = catalog.BACKFILL_DEPLOYMENT
ALL = [*DAILY.values(), *PER_DATE.values(), BACKFILL]


@dataclass
class Deployed:
    """What one successful `prefect deploy --all` left behind."""

    result: subprocess.CompletedProcess[str]
    deployments: dict[str, DeploymentResponse]
    variables: dict[str, Any]  # the pool's job variables JSON schema, as the server has it


@pytest.fixture(scope="module")
def api_url(prefect_server: None) -> str:
    """The session's Prefect server, which the CLI subprocesses reach over HTTP."""
    return PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[FakeDockerEngine]:
    with FakeDockerEngine() as engine:
        yield engine


@pytest.fixture(scope="module")
def pool_variables(api_url: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        pool = client.create_work_pool(
            WorkPoolCreate(name=POOL, type="ecs", base_job_template=ecs_base_job_template())
        )
    return pool.base_job_template["variables"]


def _deploy(
    api_url: str,
    engine: FakeDockerEngine,
    home: Path,
    env: dict[str, str],
    command: tuple[str, ...] = ("prefect", "--no-prompt", "deploy", "--all"),
) -> subprocess.CompletedProcess[str]:
    # Only what the deploy needs: no developer AWS/GCP/Docker settings leak in. The project's
    # environment is active (its bin/ first on PATH), as deployments/README.md says.
    leaks = ("DEPLOY_", "DOCKER_", "PREFECT_", "AWS_", "GOOGLE_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(leaks)}
    base["PATH"] = f"{Path(sys.executable).parent}:{base.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run(
        list(command),
        cwd=REPO,
        env={
            **base,
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(home),
            "DOCKER_HOST": engine.docker_host,
            "DOCKER_CONFIG": str(home / "docker"),  # no registry credentials of the host
            "PYTHONWARNINGS": "ignore",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def deployed(
    api_url: str,
    docker_engine: FakeDockerEngine,
    pool_variables: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Deployed:
    # The README's deploy command, verbatim (DEPLOY_IMAGE_TAG given: no git commit to read).
    home = tmp_path_factory.mktemp("prefect-home")
    result = _deploy(api_url, docker_engine, home, DEPLOY_ENV, ("deployments/deploy.sh",))
    assert result.returncode == 0, f"deploy failed:\n{result.stdout}\n{result.stderr}"
    assert "deploy settings OK" in result.stdout
    assert "catalog OK: 3 pipeline(s)" in result.stdout  # the build step checked the catalog
    with get_client(sync_client=True) as client:
        deployments = {name: client.read_deployment_by_name(name) for name in ALL}
    return Deployed(result, deployments, pool_variables)


def test_the_catalog_of_three_pipelines_deploys_two_deployments_each_and_one_backfill(
    deployed: Deployed,
) -> None:
    assert len(PIPELINES) == 3
    with get_client(sync_client=True) as client:
        ours = client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL]))
        )
    assert sorted(f"{d.flow_id}/{d.name}" for d in ours) == sorted(
        f"{deployed.deployments[name].flow_id}/{name.split('/')[1]}" for name in ALL
    )
    for name, pipeline in PIPELINES.items():
        for deployment in (deployed.deployments[DAILY[name]], deployed.deployments[PER_DATE[name]]):
            assert f"pipeline:{name}" in deployment.tags
            assert pipeline.config.bigquery.view in (deployment.description or "")


def test_deploy_builds_and_pushes_the_image_once_for_all_deployments(
    deployed: Deployed, docker_engine: FakeDockerEngine
) -> None:
    # Seven deployments share one build step; prefect-docker's step cache makes it one build.
    assert len(docker_engine.builds) == 1
    build = docker_engine.builds[0]
    assert build.query["dockerfile"] == "Dockerfile"
    assert build.query["platform"] == "linux/amd64"
    assert docker_engine.pushes == [f"{IMAGE_REPOSITORY}:{DEPLOY_ENV['DEPLOY_IMAGE_TAG']}"]
    image = f"{IMAGE_REPOSITORY}:{DEPLOY_ENV['DEPLOY_IMAGE_TAG']}"
    for deployment in deployed.deployments.values():
        assert deployment.job_variables["image"] == image


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_else(
    deployed: Deployed, docker_engine: FakeDockerEngine
) -> None:
    files = set(docker_engine.builds[0].files)
    allowed = (
        *("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "flows/", "blocks/"),
        "deployments/pipelines.yaml",  # the command line in the image reads the catalog
    )
    strays = sorted(f for f in files if not f.startswith(allowed))
    assert not strays, f".dockerignore lets these into the build context: {strays[:10]}"
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    copies = [copy for stage in dockerfile.parse() for copy in stage.ops("COPY")]
    for copy in copies:
        if "from" in copy.flags:
            continue  # copied from another stage, not the context
        for source in copy.args[:-1]:
            source = source.rstrip("/")
            assert any(f == source or f.startswith(source + "/") for f in files), (
                f"Dockerfile copies {source!r} but the build context lacks it"
            )
    assert "flows/daily.py" in files
    assert "blocks/__init__.py" in files


@pytest.mark.parametrize(
    ("name", "cron"), [("campaigns", "0 6 * * *"), ("conversions", "0 7 * * *")]
)
def test_each_daily_runs_at_its_pipelines_hour_in_tokyo_and_the_others_are_unscheduled(
    deployed: Deployed, name: str, cron: str
) -> None:
    daily = deployed.deployments[DAILY[name]]
    (schedule,) = daily.schedules
    assert schedule.active
    assert schedule.schedule.cron == cron == PIPELINES[name].cron
    assert schedule.schedule.timezone == "Asia/Tokyo"
    # "Yesterday" is taken in the config's zone: it must be the schedule's.
    assert PipelineConfig.model_validate(daily.parameters["config"]).timezone == "Asia/Tokyo"
    assert deployed.deployments[PER_DATE[name]].schedules == []
    assert deployed.deployments[BACKFILL].schedules == []


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        *((name, 1) for name in DAILY.values()),
        *((name, 3) for name in PER_DATE.values()),
        (BACKFILL, 1),
    ],
)
def test_concurrency_limits_queue_instead_of_cancelling(
    deployed: Deployed, name: str, limit: int
) -> None:
    deployment = deployed.deployments[name]
    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == limit
    assert deployment.concurrency_options is not None
    assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE


def test_entrypoints_and_pull_step_match_the_image(deployed: Deployed) -> None:
    for name in [*DAILY.values(), *PER_DATE.values()]:
        assert deployed.deployments[name].entrypoint == "flows/daily.py:daily_refresh"
    assert deployed.deployments[BACKFILL].entrypoint == "flows/backfill.py:backfill"
    workdir = dockerfile.parse()[-1].ops("WORKDIR")[-1].args[0]
    for deployment in deployed.deployments.values():
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": workdir}}
        ]
        assert (REPO / deployment.entrypoint.split(":")[0]).is_file()


def test_parameters_are_each_pipelines_config_from_the_catalog(deployed: Deployed) -> None:
    for name, pipeline in PIPELINES.items():
        for deployment in (deployed.deployments[DAILY[name]], deployed.deployments[PER_DATE[name]]):
            assert deployment.enforce_parameter_schema
            config = PipelineConfig.model_validate(deployment.parameters["config"])
            assert config == pipeline.config
            assert config.name == name
            assert config.tableau.mode == "replace_date"  # the only mode that is safe to rerun
            # The daily run's date comes from its schedule: no fixed run_date.
            assert "run_date" not in deployment.parameters
    # The overrides of the catalog's entries reached their own deployments only.
    conversions = PipelineConfig.model_validate(
        deployed.deployments[PER_DATE["conversions"]].parameters["config"]
    )
    assert conversions.bigquery.date_column == "conversion_date"
    assert conversions.tableau.project == "Marketing/Conversions"
    budgets = PipelineConfig.model_validate(
        deployed.deployments[DAILY["budgets"]].parameters["config"]
    )
    assert (budgets.lookback_days, budgets.gcs.empty_day) == (1, "allow")
    assert budgets.bigquery.max_bytes_billed == 1024**3
    # The backfill is told the pipeline per run: no fixed parameters.
    assert deployed.deployments[BACKFILL].parameters == {}


def test_custom_run_form_starts_with_a_plain_date_picker(deployed: Deployed) -> None:
    # The UI orders fields by `position` and shows `format: date` as a date picker; a schema
    # without `anyOf`/null has no "None" toggle. A rerun is then "pick a date, Submit".
    for name in (PER_DATE["campaigns"], DAILY["campaigns"]):
        properties = deployed.deployments[name].parameter_openapi_schema["properties"]
        field = min(properties.values(), key=lambda p: p["position"])
        assert field["title"] == "run_date"
        assert (field["type"], field["format"]) == ("string", "date")
        assert "anyOf" not in field and "custom run must pick it" in field["description"]
    per_date = deployed.deployments[PER_DATE["campaigns"]]
    run_date = per_date.parameter_openapi_schema["properties"]["run_date"]
    jsonschema.validate("2026-11-20", run_date)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(20261120, run_date)
    # The backfill's form asks for the pipeline first; its range and list are each optional:
    # their null toggles stay, so a form that fills only one of them is still valid.
    backfill = deployed.deployments[BACKFILL].parameter_openapi_schema
    order = sorted(backfill["properties"], key=lambda n: backfill["properties"][n]["position"])
    assert order[:2] == ["pipeline", "start"]
    assert backfill["required"] == ["pipeline"]
    assert "name in the catalog" in backfill["properties"]["pipeline"]["description"]
    jsonschema.validate(
        {"start": None, "end": None, "dates": ["2026-11-03"]},
        {"properties": {k: backfill["properties"][k] for k in ("start", "end", "dates")}},
    )


def test_a_custom_run_offers_the_window_and_force_described(deployed: Deployed) -> None:
    properties = deployed.deployments[PER_DATE["campaigns"]].parameter_openapi_schema["properties"]
    lookback, force = properties["lookback_days"], properties["force"]
    assert "only the dates BigQuery restated" in lookback["description"]
    assert "Republish every date of the window" in force["description"]
    assert force["default"] is False
    jsonschema.validate(28, lookback)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(0, lookback)
    backfill = deployed.deployments[BACKFILL].parameter_openapi_schema["properties"]
    assert "windows of at most this many days" in backfill["window_days"]["description"]


def test_job_variables_are_all_declared_by_the_pool_template(deployed: Deployed) -> None:
    # The server accepts unknown job variables silently; an unknown key would never reach ECS.
    declared = set(deployed.variables["properties"])
    prefect_aws = set(ECSWorker.get_default_base_job_template()["variables"]["properties"])
    assert declared == prefect_aws | {EPHEMERAL_STORAGE_VARIABLE}
    for name, deployment in deployed.deployments.items():
        unknown = set(deployment.job_variables) - declared
        assert not unknown, f"{name}: job variables the ECS template lacks: {unknown}"
        schema = {**deployed.variables, "required": []}
        jsonschema.validate(deployment.job_variables, schema)


@pytest.mark.parametrize("name", [DAILY["campaigns"], PER_DATE["budgets"], BACKFILL])
def test_job_variables_render_into_the_ecs_task(deployed: Deployed, name: str) -> None:
    """Render the pool template with the deployment's variables as the ECS worker does."""
    deployment = deployed.deployments[name]
    template = ecs_base_job_template()
    config = asyncio.run(
        ECSJobConfiguration.from_template_and_values(template, deployment.job_variables)
    )
    overrides = config.task_run_request["overrides"]
    assert overrides["taskRoleArn"] == TASK_ROLE
    assert config.task_definition["executionRoleArn"] == DEPLOY_ENV["DEPLOY_EXECUTION_ROLE_ARN"]
    assert config.task_definition["containerDefinitions"][0]["image"].startswith(IMAGE_REPOSITORY)
    assert config.task_definition["family"].startswith("bq-view-to-tableau")
    assert config.task_definition["ephemeralStorage"]["sizeInGiB"] >= 21
    assert config.task_run_request["cluster"] == DEPLOY_ENV["DEPLOY_ECS_CLUSTER"]
    assert config.vpc_id == DEPLOY_ENV["DEPLOY_VPC_ID"]
    assert config.configure_cloudwatch_logs is True
    assert config.cloudwatch_logs_options["awslogs-region"] == DEPLOY_ENV["DEPLOY_AWS_REGION"]
    assert config.env["AWS_REGION"] == DEPLOY_ENV["DEPLOY_AWS_REGION"]
    assert config.match_latest_revision_in_family is True
    if name == BACKFILL:
        assert (config.task_definition["cpu"], config.task_definition["memory"]) == (256, 512)
    else:
        assert (config.task_definition["cpu"], config.task_definition["memory"]) == (1024, 4096)
        assert config.task_definition["ephemeralStorage"]["sizeInGiB"] == 50


def test_deploy_without_an_image_repository_fails_before_building(
    deployed: Deployed,
    api_url: str,
    docker_engine: FakeDockerEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    builds_before = len(docker_engine.builds)
    env = {k: v for k, v in DEPLOY_ENV.items() if k != "DEPLOY_IMAGE_REPOSITORY"}
    env["DEPLOY_IMAGE_TAG"] = "never-deployed"
    # What deploy.sh runs; one deployment alone (`--name backfill`) runs the same build steps.
    home = tmp_path_factory.mktemp("prefect-home")
    result = _deploy(api_url, docker_engine, home, env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "DEPLOY_IMAGE_REPOSITORY is not set" in output
    assert len(docker_engine.builds) == builds_before  # nothing built or pushed
    _assert_not_redeployed()


def _assert_not_redeployed() -> None:
    with get_client(sync_client=True) as client:
        for name in ALL:
            image = client.read_deployment_by_name(name).job_variables["image"]
            assert image.endswith(":3f2a9c1"), f"{name} was redeployed with image {image!r}"


def test_deploy_of_a_catalog_edited_since_the_render_fails_before_building(
    deployed: Deployed,
    api_url: str,
    docker_engine: FakeDockerEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    edited = tmp_path_factory.mktemp("catalog") / "pipelines.yaml"
    text = (REPO / "deployments" / "pipelines.yaml").read_text()
    edited.write_text(text.replace("schedule_hour: 7", "schedule_hour: 8"))
    builds_before = len(docker_engine.builds)
    env = {**DEPLOY_ENV, "DEPLOY_IMAGE_TAG": "never-deployed", "PIPELINES_CATALOG": str(edited)}

    result = _deploy(api_url, docker_engine, tmp_path_factory.mktemp("home"), env)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "deployments do not match" in output
    assert "run `python -m flows catalog render`" in output
    assert len(docker_engine.builds) == builds_before
    _assert_not_redeployed()


def test_check_pool_prints_the_pool_defaults_as_exports(
    pool_variables: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from deployments import check_pool

    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name="ecs-provisioned",
                type="ecs",
                base_job_template=ecs_base_job_template(task_role_arn=TASK_ROLE)
                | {"variables": _with_defaults(cluster="prefect-ecs-cluster")},
            )
        )
    assert check_pool.main(["ecs-provisioned"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "export DEPLOY_WORK_POOL=ecs-provisioned" in out
    assert "export DEPLOY_ECS_CLUSTER=prefect-ecs-cluster" in out
    assert f"export DEPLOY_TASK_ROLE_ARN={TASK_ROLE}" in out
    assert any(line.startswith("# DEPLOY_VPC_ID:") for line in out)
    assert check_pool.main(["no-such-pool"]) == 1
    assert "not found" in capsys.readouterr().err


def _with_defaults(**defaults: str) -> dict[str, Any]:
    variables = ecs_base_job_template(task_role_arn=TASK_ROLE)["variables"]
    for name, value in defaults.items():
        variables["properties"][name]["default"] = value
    return variables


def _documented_run_commands() -> list[str]:
    """`prefect deployment run ...` commands of deployments/README.md's code blocks."""
    text = (REPO / "deployments" / "README.md").read_text()
    blocks = text.split("```bash\n")[1:]
    lines = " ".join(block.split("```", 1)[0] for block in blocks).replace("\\\n", " ")
    commands = [" ".join(line.split()) for line in lines.splitlines()]
    return [c for c in commands if c.startswith("prefect deployment run")]


def test_the_readmes_run_and_backfill_commands_work_verbatim(
    deployed: Deployed, api_url: str, tmp_path: Path
) -> None:
    commands = _documented_run_commands()
    assert len(commands) == 3
    # The README's own (inline) rerun and backfill commands are the first two of these.
    readme = " ".join((REPO / "README.md").read_text().replace("`", "").split())
    assert commands[0] in readme and commands[1] in readme
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "DEPLOY_"))}
    env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path), PYTHONWARNINGS="ignore")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    created = []
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        created.append(result.stdout)
    ids = [d.id for d in deployed.deployments.values()]
    with get_client(sync_client=True) as client:  # the session's other runs are not ours
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=ids))
        )
    by_deployment: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        name = next(n for n, d in deployed.deployments.items() if d.id == run.deployment_id)
        by_deployment.setdefault(name, []).append(run.parameters)
    (rerun,) = by_deployment[PER_DATE["campaigns"]]
    assert rerun["run_date"] == "2026-11-20"
    assert PipelineConfig.model_validate(rerun["config"]) == PIPELINES["campaigns"].config
    ranges = sorted(by_deployment[BACKFILL], key=lambda p: "dates" in p)
    assert {r["pipeline"] for r in ranges} == {"campaigns"}
    assert (ranges[0]["start"], ranges[0]["end"]) == ("2026-11-01", "2026-11-07")
    assert ranges[1]["dates"] == ["2026-11-03", "2026-11-05"]
    assert (ranges[1]["max_concurrency"], ranges[1]["dry_run"]) == (2, True)
