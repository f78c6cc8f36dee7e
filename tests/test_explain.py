"""The table of known Workload Identity failures gives the right fix, filled with the details."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from google.api_core import exceptions as gapi
from google.auth import exceptions

from blocks.errors import CredentialsError
from blocks.explain import (
    FixContext,
    credentials_error,
    explain_google_auth_error,
    find_known_failure,
    parse_audience,
    principal_set,
    service_account_of,
)

AUDIENCE = (
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/aws-pool"
    "/providers/aws-prov"
)
ARN = "arn:aws:sts::111122223333:assumed-role/access2bq/task-1"
ROLE = "arn:aws:sts::111122223333:assumed-role/access2bq"
SA = "exporter@proj.iam.gserviceaccount.com"
CONTEXT = FixContext(
    arn=ARN,
    role=ROLE,
    condition="attribute.aws_role == 'arn:aws:sts::111122223333:assumed-role/other'",
    audience=AUDIENCE,
    service_account=SA,
    project="proj",
    bucket="exports",
)


def _oauth_error(error: str, description: str) -> exceptions.OAuthError:
    body = json.dumps({"error": error, "error_description": description})
    return exceptions.OAuthError(f"Error code {error}: {description}", body)


def _iam_error(code: int, status: str, message: str) -> exceptions.RefreshError:
    body = json.dumps({"error": {"code": code, "message": message, "status": status}})
    return exceptions.RefreshError("Unable to acquire impersonated credentials", body)


def test_condition_rejected_names_arn_condition_and_the_admitting_command():
    exc = _oauth_error(
        "unauthorized_client", "The given credential is rejected by the attribute condition."
    )
    fix = explain_google_auth_error(exc, CONTEXT)
    assert ARN in fix and ROLE in fix and CONTEXT.condition in fix
    assert "providers update-aws aws-prov --workload-identity-pool=aws-pool" in fix
    assert f"({CONTEXT.condition}) || attribute.aws_role == '{ROLE}'" in fix


@pytest.mark.parametrize(
    "description",
    [
        'The target service indicated by the "audience" parameters is invalid. This might either '
        "be because the pool or provider is disabled or deleted or because it doesn't exist.",
        'Invalid value for "audience". This value should be the full resource name of the '
        "Identity Provider.",
    ],
)
def test_wrong_audience_points_at_pool_and_provider(description):
    code = "invalid_target" if "target" in description else "invalid_request"
    fix = explain_google_auth_error(_oauth_error(code, description), CONTEXT)
    assert "project NUMBER" in fix
    assert "providers describe aws-prov --workload-identity-pool=aws-pool" in fix


def test_invalid_aws_signature_at_google_sts():
    exc = _oauth_error("invalid_grant", "The AWS request signature is expired.")
    fix = explain_google_auth_error(exc, FixContext(stage="sts"))
    assert "clock" in fix and "ECS endpoint" in fix


def test_missing_workload_identity_user_gives_the_principal_set_grant():
    exc = _iam_error(
        403,
        "PERMISSION_DENIED",
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
    )
    fix = explain_google_auth_error(exc, CONTEXT)
    member = (
        "principalSet://iam.googleapis.com/projects/123456/locations/global/"
        f"workloadIdentityPools/aws-pool/attribute.aws_role/{ROLE}"
    )
    assert f'--member="{member}"' in fix
    assert f"add-iam-policy-binding {SA} --role=roles/iam.workloadIdentityUser" in fix


def test_iam_credentials_api_disabled_comes_before_permission_denied():
    exc = _iam_error(
        403,
        "PERMISSION_DENIED",
        "IAM Service Account Credentials API has not been used in project 123456 before or it "
        "is disabled. Enable it by visiting ... SERVICE_DISABLED",
    )
    fix = explain_google_auth_error(exc, CONTEXT)
    assert fix.startswith("Enable the IAM Service Account Credentials API")
    assert "--project proj" in fix


def test_unknown_service_account():
    exc = _iam_error(404, "NOT_FOUND", f"Not found; Gaia id not found for email {SA}")
    assert "does not exist" in explain_google_auth_error(exc, FixContext(stage="iam"))


def test_supplier_errors_without_context():
    no_region = exceptions.RefreshError(
        "No AWS region: AWS_REGION, AWS_DEFAULT_REGION and ECS_CONTAINER_METADATA_URI_V4 are all "
        "unset. Set AWS_REGION (ECS sets it for tasks it starts)."
    )
    assert explain_google_auth_error(no_region).startswith("Set AWS_REGION")
    down = exceptions.RefreshError(
        "Could not get AWS credentials from AWS_CONTAINER_CREDENTIALS_RELATIVE_URI "
        "(http://169.254.170.2/v2/credentials/x): cannot connect (ConnectionError) after 3 "
        "attempts."
    )
    assert find_known_failure(down).key == "ecs-endpoint-down"


@pytest.mark.parametrize(
    ("exc", "key"),
    [
        (
            gapi.Forbidden(
                "Access Denied: Project proj: User does not have bigquery.jobs.create permission"
            ),
            "bigquery-job-user",
        ),
        (
            gapi.Forbidden("Access Denied: Table proj:ds.view: User does not have permission"),
            "bigquery-data-viewer",
        ),
        (
            gapi.Forbidden("exporter@... does not have storage.objects.list access to the bucket"),
            "storage-object-admin",
        ),
    ],
)
def test_google_api_403s(exc, key):
    assert find_known_failure(exc, "api").key == key
    assert SA in explain_google_auth_error(exc, replace(CONTEXT, stage="api"))


def test_unknown_error_has_no_fix():
    assert explain_google_auth_error(ValueError("something else entirely")) is None


def test_stage_limits_the_table():
    exc = _oauth_error("unauthorized_client", "rejected by the attribute condition")
    assert find_known_failure(exc, "iam") is None
    assert find_known_failure(exc, "sts").key == "condition-rejected"


def test_parsers():
    provider = parse_audience(AUDIENCE)
    assert (provider.number, provider.pool, provider.provider) == ("123456", "aws-pool", "aws-prov")
    assert parse_audience("//iam.googleapis.com/projects/1/pools") is None
    url = f"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{SA}:generateAccessToken"
    assert service_account_of(url) == SA
    assert principal_set(None, None).endswith(
        "workloadIdentityPools/POOL_ID/attribute.aws_role/ROLE_ARN"
    )


def test_the_flows_error_and_the_doctors_fix_come_from_the_same_entry():
    exc = _oauth_error(
        "unauthorized_client", "The given credential is rejected by the attribute condition."
    )
    flow_context = FixContext(
        stage="sts", arn="arn:aws:iam::111122223333:role/other", audience=AUDIENCE
    )

    error = credentials_error("Google STS refused the exchange: " + exc.args[0], exc, flow_context)

    assert isinstance(error, CredentialsError) and error.known == "condition-rejected"
    assert str(error) == f"{error.problem} {error.fix}"
    assert "rejects arn:aws:iam::111122223333:role/other" in error.fix
    assert "python -m blocks doctor --condition" in error.fix  # the flow cannot test it
    # The doctor fills the same entry in with what it found, ignoring the flow's wording.
    doctor_fix = explain_google_auth_error(error, CONTEXT)
    assert doctor_fix == explain_google_auth_error(exc, CONTEXT)
    assert ARN in doctor_fix and CONTEXT.condition in doctor_fix


def test_token_endpoints_that_keep_failing():
    error = credentials_error(
        "https://sts.googleapis.com/v1/token kept failing (HTTP 503) after 3 attempts.",
        None,
        FixContext(stage="sts"),
        retryable=True,
    )
    assert error.known == "google-unavailable" and error.retryable is True
    assert "a later attempt can succeed" in error.fix


def test_an_unknown_failure_is_raised_without_a_fix():
    error = credentials_error("IAM said something new.", ValueError("new"), FixContext(stage="iam"))
    assert (str(error), error.fix, error.known) == ("IAM said something new.", None, None)
