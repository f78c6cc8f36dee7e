"""The doctor, run against the loopback AWS (moto + ECS metadata) and Google (STS/IAM/APIs) fakes.

Every test drives the real chain over HTTP: the supplier reads the fake ECS endpoint, AWS STS
(moto, signatures checked) names the caller, the Google STS fake evaluates the provider's
condition with CEL, the IAM fake checks the workloadIdentityUser grant, and the API fake checks
the bearer token. Failures are injected by misconfiguring the fakes, as a user would the cloud.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.__main__ import main
from blocks.doctor import DoctorOptions, StepResult, diagnose, exit_code, render
from standins.aws import ACCOUNT_ID, OTHER_ROLE, TASK_ROLE
from standins.google import GoogleApis
from standins.loopback import Request, Response
from tests.plugins.aws_google import PROJECT, PROJECT_NUMBER, SERVICE_ACCOUNT, TASK_ROLE_CONDITION

TASK_ARN_PREFIX = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{TASK_ROLE}/"
TASK_ROLE_ATTRIBUTE = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{TASK_ROLE}"
OTHER_ROLE_ATTRIBUTE = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{OTHER_ROLE}"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def apis_env(google_apis: GoogleApis, monkeypatch: pytest.MonkeyPatch) -> GoogleApis:
    """Point the block's BigQuery and Storage clients at the token-checking API fake."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", google_apis.url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", google_apis.url)
    return google_apis


@pytest.fixture
def run_doctor(wif_block, ecs_environ, moto_aws, make_supplier):
    """Run the doctor on the ready block; keyword arguments go to DoctorOptions."""

    def run(environ=None, supplier_kwargs=None, **options) -> tuple[list[StepResult], str]:
        environ = ecs_environ if environ is None else environ
        options.setdefault("aws_sts_endpoint", moto_aws.url)
        supplier = make_supplier(environ, **(supplier_kwargs or {}))
        results = diagnose(wif_block, DoctorOptions(environ=environ, **options), supplier=supplier)
        return results, render(results)

    return run


def _statuses(results: list[StepResult]) -> list[str]:
    return [r.status for r in results]


def _step(results: list[StepResult], prefix: str) -> StepResult:
    return next(r for r in results if r.name.startswith(prefix))


def test_all_pass(run_doctor, ecs, google_identity, apis_env):
    results, text = run_doctor(condition=TASK_ROLE_CONDITION)

    assert _statuses(results) == ["PASS"] * 7, text
    assert exit_code(results) == 0
    details = dict(_step(results, "AWS credentials").details)
    assert details["source"] == "ecs-relative"
    assert details["from"] == ecs.url + ecs.relative_uri
    assert "expires" in details
    arn = dict(_step(results, "Caller ARN").details)["arn"]
    assert arn.startswith(TASK_ARN_PREFIX)
    assert arn in text and f"attribute.aws_role : {TASK_ROLE_ATTRIBUTE}" in text
    assert "result             : admitted" in text
    assert "RESULT: PASS" in text
    # The cheap call really reached the API with the service account's token.
    assert (f"/bigquery/v2/projects/{PROJECT}/jobs", SERVICE_ACCOUNT) in apis_env.seen
    assert [e.outcome for e in google_identity.exchanges][:1] == ["accepted"]


def test_the_doctor_drives_the_blocks_own_credentials(
    run_doctor, wif_block, google_identity, apis_env, sleeps
):
    google_identity.fail_next("sts", 503, times=2)  # the flow's retry policy applies here too

    results, text = run_doctor()

    assert exit_code(results) == 0, text
    assert sleeps.calls == [1.0, 2.0]
    # Step 5 exchanges alone, step 6 refreshes the block's credentials (STS, then IAM) and step
    # 7's client reuses that token: no exchange of the doctor's own.
    assert len(google_identity.requests_to("sts")) == 2 + 2
    assert len(google_identity.requests_to("iam")) == 1
    assert wif_block.get_credentials_from_service_account().valid


def test_bucket_listing_instead_of_bigquery(run_doctor, apis_env):
    results, text = run_doctor(bucket="exports")
    assert exit_code(results) == 0, text
    assert "list gs://exports" in results[-1].name
    assert ("/storage/v1/b/exports/o", SERVICE_ACCOUNT) in apis_env.seen


def test_missing_bucket_says_so(run_doctor, apis_env):
    results, _ = run_doctor(bucket="nope")
    assert _statuses(results)[-1] == "FAIL"
    assert "gs://nope does not exist" in results[-1].fix


def test_condition_rejected_by_google(run_doctor, ecs, google_identity, apis_env):
    ecs.role = OTHER_ROLE  # the task runs with a role the provider does not admit

    results, text = run_doctor()

    assert _statuses(results) == ["PASS"] * 4 + ["FAIL", "SKIP", "SKIP"], text
    assert exit_code(results) == 1
    sts = _step(results, "Google STS")
    assert "rejected by the attribute condition" in dict(sts.details)["error"]
    assert f"{OTHER_ROLE_ATTRIBUTE}/ecs-task-" in sts.fix  # the ARN
    assert f"attribute.aws_role = {OTHER_ROLE_ATTRIBUTE}" in sts.fix
    assert "--workload-identity-pool=bq-pool" in sts.fix and "aws-provider" in sts.fix
    assert "FIX: The provider's attribute condition rejects" in text
    # One request, no retry storm, and nothing after it.
    assert len(google_identity.requests_to("sts")) == 1
    assert google_identity.requests_to("iam") == []
    assert apis_env.seen == []


def test_condition_rejected_locally_before_asking_google(run_doctor, ecs, google_identity):
    ecs.role = OTHER_ROLE

    results, text = run_doctor(condition=TASK_ROLE_CONDITION)

    step = _step(results, "Attribute mapping")
    assert step.status == "FAIL" and exit_code(results) == 1
    assert dict(step.details)["result"] == "REJECTED"
    assert dict(step.details)["condition"] == TASK_ROLE_CONDITION
    assert f"({TASK_ROLE_CONDITION}) || attribute.aws_role == '{OTHER_ROLE_ATTRIBUTE}'" in step.fix
    assert f"{OTHER_ROLE_ATTRIBUTE}/ecs-task-" in text
    assert google_identity.requests_to("sts") == []


def test_condition_admitted_locally_but_rejected_by_google(run_doctor, ecs, google_identity):
    ecs.role = OTHER_ROLE
    results, _ = run_doctor(condition=f"attribute.aws_role.endsWith('{OTHER_ROLE}')")
    sts = _step(results, "Google STS")
    assert sts.status == "FAIL"
    assert "the provider's real condition differs" in sts.fix


def test_bad_condition_is_a_clear_failure(run_doctor, google_identity):
    results, _ = run_doctor(condition="attribute.aws_role ==")
    step = _step(results, "Attribute mapping")
    assert step.status == "FAIL" and "does not parse" in dict(step.details)["error"]
    assert google_identity.requests_to("sts") == []


def test_missing_workload_identity_user_grant(run_doctor, google_identity, apis_env):
    google_identity.grants.clear()

    results, text = run_doctor()

    step = _step(results, "Service-account impersonation")
    assert step.status == "FAIL", text
    member = (
        f"principalSet://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
        f"workloadIdentityPools/bq-pool/attribute.aws_role/{TASK_ROLE_ATTRIBUTE}"
    )
    assert f'--member="{member}"' in step.fix
    assert f"add-iam-policy-binding {SERVICE_ACCOUNT} --role=roles/iam.workloadIdentityUser" in (
        step.fix
    )
    assert _statuses(results)[-1] == "SKIP"


def test_wrong_audience(run_doctor, wif_block):
    wif_block.credential_config["audience"] = (
        f"//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
        "workloadIdentityPools/bq-pool/providers/typo-provider"
    )

    results, _ = run_doctor()

    step = _step(results, "Google STS")
    assert step.status == "FAIL"
    assert 'audience" parameters is invalid' in dict(step.details)["error"]
    assert "project NUMBER" in step.fix
    assert "providers describe typo-provider --workload-identity-pool=bq-pool" in step.fix


def test_ecs_endpoint_down(run_doctor, sleeps):
    results, _ = run_doctor(supplier_kwargs={"ecs_host": "http://127.0.0.1:9"})

    step = results[0]
    assert step.status == "FAIL" and _statuses(results)[1:] == ["SKIP"] * 6
    assert "after 3 attempts" in dict(step.details)["error"]
    assert step.fix.startswith("The ECS credentials endpoint did not answer")
    assert "taskRoleArn" in step.fix
    assert len(sleeps.calls) == 2  # bounded retries, no real waiting


def test_ecs_endpoint_refuses_token(run_doctor, ecs, ecs_environ):
    ecs.auth_token = "expected-token"
    environ = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.full_uri,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "stale-token",
        "AWS_REGION": "us-east-1",
    }
    results, _ = run_doctor(environ=environ)
    assert results[0].status == "FAIL"
    assert "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" in results[0].fix


def test_ec2_instance_role_trap(run_doctor, ecs, google_identity, apis_env):
    # ECS on EC2 without a task role: no AWS_CONTAINER_CREDENTIALS_*, IMDS answers instead.
    environ = {"ECS_CONTAINER_METADATA_URI_V4": ecs.metadata_uri, "AWS_REGION": "us-east-1"}

    results, text = run_doctor(environ=environ)

    step = results[0]
    assert step.status == "WARN", text
    assert dict(step.details)["source"] == "imds"
    assert "EC2 *instance* role" in step.fix and "taskRoleArn" in step.fix
    assert "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in step.fix
    assert "NOTE: These are the EC2 *instance* role" in text
    assert exit_code(results) == 3  # works, but not as it should


def test_no_region(run_doctor, ecs):
    environ = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": ecs.relative_uri}

    results, _ = run_doctor(environ=environ)

    assert _statuses(results)[:2] == ["PASS", "FAIL"]
    assert results[1].fix.startswith("Set AWS_REGION")


def test_region_from_task_metadata(run_doctor, apis_env):
    results, _ = run_doctor()
    assert dict(results[1].details) == {"region": "us-east-1", "from": "ECS metadata"}


def test_aws_sts_unreachable(run_doctor):
    results, _ = run_doctor(aws_sts_endpoint="http://127.0.0.1:9")
    step = _step(results, "Caller ARN")
    assert step.status == "FAIL"
    assert "sts.REGION.amazonaws.com" in step.fix and "--aws-sts-endpoint" in step.fix


def test_aws_refuses_the_credentials(run_doctor, google_identity):
    # Keys AWS does not know (e.g. revoked, or copied from an old session into env vars).
    environ = {
        "AWS_ACCESS_KEY_ID": "ASIAUNKNOWN0000000000",
        "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
        "AWS_REGION": "us-east-1",
    }
    results, text = run_doctor(environ=environ)
    assert dict(results[0].details)["source"] == "env"
    step = _step(results, "Caller ARN")
    assert step.status == "FAIL", text
    assert "InvalidClientTokenId" in dict(step.details)["error"]
    assert step.fix.startswith("AWS itself refuses these credentials")
    assert "not-a-real-secret" not in text
    assert google_identity.requests_to("sts") == []


class _DenyingApis(GoogleApis):
    """The API fake, but BigQuery answers 403 as it does without roles/bigquery.jobUser."""

    def handle(self, request: Request) -> Response:
        if "/bigquery/" in request.path:
            message = (
                f"Access Denied: Project {PROJECT}: User does not have bigquery.jobs.create "
                f"permission in project {PROJECT}."
            )
            error = {"message": message, "domain": "global", "reason": "accessDenied"}
            body = {
                "code": 403,
                "message": message,
                "errors": [error],
                "status": "PERMISSION_DENIED",
            }
            return Response.json({"error": body}, status=403)
        return super().handle(request)


def test_missing_bigquery_role(run_doctor, google_identity, monkeypatch):
    with _DenyingApis(google_identity) as apis:
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", apis.url)
        results, _ = run_doctor()
    step = results[-1]
    assert step.status == "FAIL"
    assert f"Grant roles/bigquery.jobUser on project {PROJECT} to {SERVICE_ACCOUNT}" in step.fix


def test_no_secret_in_output(run_doctor, ecs, google_identity, apis_env):
    results, text = run_doctor(condition=TASK_ROLE_CONDITION)
    assert exit_code(results) == 0
    as_json = json.dumps([[r.name, r.status, r.details, r.fix] for r in results])
    secrets = [google_token for google_token in google_identity.tokens]
    for issued in ecs.issued:
        secrets += [issued.access_key_id, issued.secret_access_key, issued.token]
    assert len(secrets) >= 5  # AWS key, secret, session token; federated and SA tokens
    for secret in secrets:
        assert secret not in text and secret not in as_json


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def cli_setup(tmp_path, credential_config, ecs, moto_aws, google_identity, apis_env):
    """A config file and the task's environment, as `python -m blocks doctor` would see them."""
    config = tmp_path / "wif.json"
    config.write_text(json.dumps(credential_config))
    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.full_uri,
        "AWS_REGION": "us-east-1",
        "BIGQUERY_EMULATOR_HOST": apis_env.url,
    }
    args = ["--config", str(config), "--project", PROJECT, "--aws-sts-endpoint", moto_aws.url]
    return args, env


@pytest.mark.subprocess
def test_cli_subprocess_all_pass(cli_setup, ecs):
    args, env = cli_setup
    # Importing prefect takes a while on a busy machine; the run itself takes ~1 s.
    done = subprocess.run(
        [sys.executable, "-m", "blocks", "doctor", *args, "--condition", TASK_ROLE_CONDITION],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("[PASS]") == 7
    assert TASK_ARN_PREFIX in done.stdout and "source  : ecs-full" in done.stdout
    assert ecs.issued
    for issued in ecs.issued:
        for secret in (issued.access_key_id, issued.secret_access_key, issued.token):
            assert secret not in done.stdout + done.stderr


def test_cli_json_rejection(cli_setup, monkeypatch, capsys):
    args, env = cli_setup
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    condition = f"attribute.aws_role == '{OTHER_ROLE_ATTRIBUTE}'"

    code = main(["doctor", *args, "--condition", condition, "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == report["exit_code"] == 1
    assert [s["status"] for s in report["steps"]] == ["PASS"] * 3 + ["FAIL"] + ["SKIP"] * 3
    assert report["steps"][3]["details"]["result"] == "REJECTED"
    assert OTHER_ROLE_ATTRIBUTE in report["steps"][3]["fix"]


def test_cli_custom_mapping(cli_setup, monkeypatch, capsys):
    args, env = cli_setup
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    mapping = [
        "--mapping",
        "google.subject=assertion.arn",
        "--mapping",
        "attribute.acct=assertion.account",
    ]

    code = main(["doctor", *args, *mapping, "--condition", f"attribute.acct == '{ACCOUNT_ID}'"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert f"attribute.acct : {ACCOUNT_ID}" in out and "aws_role" not in out


@pytest.mark.prefect
def test_cli_save_credentials_then_doctor_the_block(cli_setup, monkeypatch, capsys, prefect_server):
    args, env = cli_setup
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config, project, sts = args[1], args[3], args[5]

    saved = main(
        ["save-credentials", "--config", config, "--project", project, "--name", "wif-doc"]
    )
    assert (
        saved == 0 and "Saved aws-workload-identity-credentials/wif-doc" in capsys.readouterr().out
    )
    code = main(["doctor", "--block", "wif-doc", "--aws-sts-endpoint", sts])

    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("Workload Identity doctor for block 'wif-doc'")
    assert out.count("[PASS]") == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "/nonexistent/wif.json", "--project", "p"], "Cannot read credential config"),
        (["--config", "/nonexistent/wif.json"], "--config needs --project"),
        (["--config", "x", "--project", "p", "--mapping", "nonsense"], "must be KEY=EXPR"),
        (["--project", "p"], "one of the arguments --block --config --tableau is required"),
    ],
)
def test_cli_usage_errors(argv, message, capsys):
    try:
        code = main(["doctor", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
