"""Known failures of the AWS -> Google Workload Identity chain, and the fix for each.

One ordered table maps what an error says (google-auth's `OAuthError` from Google STS, the
`RefreshError` of IAM Credentials or of the ECS supplier, a 403 from BigQuery/GCS) to what to
change. It is the only explanation of these failures: `blocks.federation` raises every failed
exchange as `credentials_error(...)`, a `CredentialsError` whose message ends with the fix
filled in with what the flow knows (the AWS role, the provider, the service account), and the
doctor fills in the same entry with what it found (the caller ARN, the mapped role, the
condition being tested). `explain_google_auth_error(exc)` works without any context too.
Google's wording as it reaches users: e.g. google-github-actions/auth#161 (invalid audience);
the rejected condition is STS's own `unauthorized_client` answer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Final, Literal

from blocks.errors import CredentialsError

Stage = Literal["aws", "sts", "iam", "api"]
"""Where the error came from: AWS credentials/region, Google STS, IAM Credentials, a Google API."""

_AUDIENCE: Final = re.compile(
    r"^//iam\.googleapis\.com/projects/(?P<number>[^/]+)/locations/(?P<location>[^/]+)"
    r"/workloadIdentityPools/(?P<pool>[^/]+)/providers/(?P<provider>[^/]+)$"
)
_SERVICE_ACCOUNT: Final = re.compile(r"/serviceAccounts/(?P<email>[^/:]+):generateAccessToken")


@dataclass(frozen=True)
class FixContext:
    """What is known about the failing setup; every field is optional.

    Attributes:
        stage: Limit the table to failures of this stage.
        arn: The caller ARN the task presents (the doctor asks AWS GetCallerIdentity; the flow
            knows only the role ARN the ECS endpoint names).
        role: The mapped `attribute.aws_role`.
        condition: The attribute condition being tested.
        audience: `credential_config["audience"]`.
        service_account: The impersonated service account's email.
        project: The Google Cloud project of the cheap call.
        bucket: The GCS bucket of the cheap call.
    """

    stage: Stage | None = None
    arn: str | None = None
    role: str | None = None
    condition: str | None = None
    audience: str | None = None
    service_account: str | None = None
    project: str | None = None
    bucket: str | None = None


@dataclass(frozen=True)
class Provider:
    """The parts of a Workload Identity provider's resource name."""

    number: str
    location: str
    pool: str
    provider: str


def parse_audience(audience: str | None) -> Provider | None:
    """Split `//iam.googleapis.com/projects/N/locations/L/workloadIdentityPools/P/providers/Q`."""
    match = _AUDIENCE.match(audience or "")
    return Provider(**match.groupdict()) if match else None


def service_account_of(impersonation_url: str | None) -> str | None:
    """The email in a `.../serviceAccounts/EMAIL:generateAccessToken` URL."""
    match = _SERVICE_ACCOUNT.search(impersonation_url or "")
    return match.group("email") if match else None


def principal_set(audience: str | None, role: str | None) -> str:
    """The IAM member that stands for every session of an AWS role in the pool."""
    provider = parse_audience(audience)
    pool = (
        f"projects/{provider.number}/locations/{provider.location}/workloadIdentityPools/"
        f"{provider.pool}"
        if provider
        else "projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/POOL_ID"
    )
    return f"principalSet://iam.googleapis.com/{pool}/attribute.aws_role/{role or 'ROLE_ARN'}"


def admitting_condition(condition: str | None, role: str | None) -> str:
    """A condition that admits `role`, keeping what the given condition already admits."""
    clause = f"attribute.aws_role == '{role or 'ROLE_ARN'}'"
    return f"({condition}) || {clause}" if condition else clause


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownFailure:
    """One recognisable failure: where it happens, how its message reads, and the fix."""

    key: str
    stages: frozenset[str]
    pattern: re.Pattern[str]
    fix: str  # str.format template over _placeholders()


def _known(key: str, stages: str, pattern: str, fix: str) -> KnownFailure:
    flags = re.IGNORECASE | re.DOTALL
    return KnownFailure(key, frozenset(stages.split()), re.compile(pattern, flags), fix)


KNOWN_FAILURES: Final[tuple[KnownFailure, ...]] = (
    # -- AWS side: the supplier's RefreshErrors ------------------------------------------------
    _known(
        "no-region",
        "aws",
        r"No AWS region",
        "Set AWS_REGION (or AWS_DEFAULT_REGION) in the container's environment. ECS sets both "
        "for the tasks it starts; a custom entrypoint or `env -i` can drop them.",
    ),
    _known(
        "full-uri-not-allowed",
        "aws",
        r"AWS_CONTAINER_CREDENTIALS_FULL_URI=.* is not allowed",
        "Point AWS_CONTAINER_CREDENTIALS_FULL_URI at https, loopback or 169.254.170.2/.23; "
        "the AWS SDKs refuse other plain-http hosts, and so do we.",
    ),
    _known(
        "ecs-endpoint-refused",
        "aws",
        r"credentials endpoint .* refused the request with HTTP 40[13]",
        "The ECS credentials endpoint wants the authorization token: check that "
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE points at a readable, current file (it is "
        "re-read each time) or that AWS_CONTAINER_AUTHORIZATION_TOKEN is set.",
    ),
    _known(
        "ecs-endpoint-down",
        "aws",
        r"AWS_CONTAINER_CREDENTIALS_(RELATIVE|FULL)_URI.*"
        r"(cannot connect|no answer|after \d+ attempts|HTTP \d{3})",
        "The ECS credentials endpoint did not answer. Run this inside the task (ECS Exec), not "
        "on a laptop with copied variables; check that the task definition has a taskRoleArn, "
        "that the ECS agent is running, and, with bridge/host networking, that nothing blocks "
        "169.254.170.2 from the container.",
    ),
    _known(
        "imds-down",
        "aws",
        r"EC2 metadata server",
        "No AWS credentials were found. On ECS give the task definition a taskRoleArn (the "
        "container then gets AWS_CONTAINER_CREDENTIALS_RELATIVE_URI); on EC2 attach an instance "
        "profile and allow IMDSv2 (hop limit 2 for containers).",
    ),
    _known(
        "no-aws-credentials",
        "aws",
        r"No AWS credentials",
        "Give the ECS task definition a taskRoleArn; the container then gets "
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI.",
    ),
    _known(
        "aws-rejects-credentials",
        "aws",
        r"ExpiredToken|InvalidClientTokenId|SignatureDoesNotMatch"
        r"|security token .* (expired|invalid)",
        "AWS itself refuses these credentials: they expired, were revoked, or the container "
        "clock is off. Take them from the ECS endpoint on every exchange (never copy them into "
        "AWS_* variables once: ECS rotates them) and check the clock.",
    ),
    _known(
        "aws-sts-unreachable",
        "aws",
        r"AWS STS .*(cannot connect|connection)",
        "The regional AWS STS endpoint is unreachable from the task. Google STS only needs the "
        "signed request, but this check needs egress to sts.REGION.amazonaws.com (NAT gateway "
        "or an STS VPC endpoint); pass --aws-sts-endpoint to use another one.",
    ),
    # -- Google STS ----------------------------------------------------------------------------
    _known(
        "google-unreachable",
        "sts iam api",
        r"Max retries exceeded|Connection refused|NewConnectionError|Name or service not known"
        r"|timed out|ConnectTimeout",
        "Google's endpoint is unreachable from the task: allow egress to *.googleapis.com:443 "
        "(NAT gateway, proxy, or firewall rules), or check token_url / "
        "service_account_impersonation_url in the credential configuration.",
    ),
    _known(
        "google-unavailable",
        "sts iam",
        r"kept failing \(HTTP \d{3}\)",
        "Google STS or IAM Credentials is failing or throttling: this is on Google's side or "
        "the network's, and a later attempt can succeed (the flow's steps retry it). If it "
        "lasts, check https://status.cloud.google.com and any proxy between the task and "
        "*.googleapis.com.",
    ),
    _known(
        "condition-rejected",
        "sts",
        r"unauthorized_client|rejected by the attribute condition",
        "The provider's attribute condition rejects {arn} (attribute.aws_role = {role}); "
        "condition tested: {condition}. Either run the task with a role the condition admits, or "
        "change the condition to admit it, e.g.\n"
        "  gcloud iam workload-identity-pools providers update-aws {provider} "
        '--workload-identity-pool={pool} --location={location} --attribute-condition="{admit}"',
    ),
    _known(
        "invalid-audience",
        "sts",
        r"invalid_target|audience",
        "Google STS knows no enabled provider {audience}. credential_config['audience'] must be "
        "//iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/"
        "POOL_ID/providers/PROVIDER_ID with the project NUMBER (not its id), and the pool and "
        "provider must exist and be enabled (a deleted one stays blocked for 30 days): "
        "gcloud iam workload-identity-pools providers describe {provider} "
        "--workload-identity-pool={pool} --location={location}. Download the configuration "
        "again with `gcloud iam workload-identity-pools create-cred-config`.",
    ),
    _known(
        "sts-rejects-aws-signature",
        "sts",
        r"invalid_grant|signature|expired|security token",
        "Google STS could not verify the signed AWS request: the AWS credentials expired or "
        "were revoked, the container clock is off, or the request was signed for another "
        "region. Check the credentials' expiry and the region (the doctor's first two steps show "
        "them), and that credentials come from the ECS endpoint each time rather than from AWS_* "
        "variables copied once.",
    ),
    # -- IAM Credentials (service-account impersonation) ---------------------------------------
    _known(
        "iamcredentials-disabled",
        "iam",
        r"SERVICE_DISABLED|has not been used in project|API has not been|is disabled",
        "Enable the IAM Service Account Credentials API in the service account's project: "
        "gcloud services enable iamcredentials.googleapis.com --project {project}.",
    ),
    _known(
        "missing-workload-identity-user",
        "iam",
        r"iam\.serviceAccounts\.getAccessToken|PERMISSION_DENIED",
        "The federated identity may not impersonate {service_account}. Grant it "
        "roles/iam.workloadIdentityUser:\n"
        "  gcloud iam service-accounts add-iam-policy-binding {service_account} "
        '--role=roles/iam.workloadIdentityUser --member="{principal_set}"',
    ),
    _known(
        "service-account-not-found",
        "iam",
        r"NOT_FOUND|\b404\b|not found",
        "Service account {service_account} does not exist. Check "
        "service_account_impersonation_url in the credential configuration, or create it.",
    ),
    # -- the cheap Google API call -------------------------------------------------------------
    _known(
        "bigquery-job-user",
        "api",
        r"bigquery\.jobs\.create",
        "Grant roles/bigquery.jobUser on project {project} to {service_account} (it runs the "
        "export's query jobs).",
    ),
    _known(
        "bigquery-data-viewer",
        "api",
        r"bigquery\.tables\.getData|Access Denied: (Table|Dataset|View)",
        "Grant roles/bigquery.dataViewer on the view's dataset (and the datasets the view "
        "reads, unless it is authorized) to {service_account}.",
    ),
    _known(
        "storage-object-admin",
        "api",
        r"storage\.(objects|buckets)\.\w+",
        "Grant roles/storage.objectAdmin on gs://{bucket} to {service_account} (the export "
        "writes, the download reads and the cleanup deletes).",
    ),
    _known(
        "bucket-not-found",
        "api",
        r"\b404\b.*(/storage/v1/b/|bucket)|bucket .*does not exist|The specified bucket",
        "Bucket gs://{bucket} does not exist or is in another project: check gcs.bucket.",
    ),
    _known(
        "token-not-accepted",
        "api",
        r"\b401\b|invalid authentication credentials|UNAUTHENTICATED",
        "The Google API did not accept the access token. Check quota_project_id and that the "
        "API is enabled in project {project}.",
    ),
)
"""Ordered: the first entry whose stage fits and whose pattern matches gives the fix."""


def _error_text(exc: BaseException) -> str:
    """Everything the exception says: its args (google-auth puts the response body second)."""
    parts = [str(arg) for arg in exc.args] or [str(exc)]
    code = getattr(exc, "code", None)  # google.api_core errors keep the HTTP status here
    if isinstance(code, int):
        parts.append(f"HTTP {code}")
    message = getattr(exc, "message", None)
    if message:
        parts.append(str(message))
    for error in getattr(exc, "errors", None) or []:
        parts.append(str(error))
    return "\n".join(parts)


class _Placeholders(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return key.upper()


def _placeholders(context: FixContext) -> _Placeholders:
    values = _Placeholders({k: v for k, v in asdict(context).items() if v})
    values.setdefault("arn", "the caller ARN")
    values.setdefault("role", "the mapped role")
    values.setdefault(
        "condition", "unknown here (pass the provider's to `python -m blocks doctor --condition`)"
    )
    values.setdefault("service_account", "the service account")
    values["admit"] = admitting_condition(context.condition, context.role)
    values["principal_set"] = principal_set(context.audience, context.role)
    provider = parse_audience(context.audience)
    if provider:
        values.update(pool=provider.pool, provider=provider.provider, location=provider.location)
    else:
        values.update(pool="POOL_ID", provider="PROVIDER_ID", location="global")
    return values


_BY_KEY: Final[dict[str, KnownFailure]] = {known.key: known for known in KNOWN_FAILURES}


def find_known_failure(exc: BaseException, stage: Stage | None = None) -> KnownFailure | None:
    """The first table entry (of `stage`, or any) whose pattern the error's text matches.

    A `CredentialsError` was matched once already, on Google's own words: its entry is reused.
    """
    if isinstance(exc, CredentialsError) and exc.known in _BY_KEY:
        return _BY_KEY[exc.known]
    return _match(_error_text(exc), stage)


def _match(text: str, stage: Stage | None) -> KnownFailure | None:
    for known in KNOWN_FAILURES:
        if (stage is None or stage in known.stages) and known.pattern.search(text):
            return known
    return None


def explain_google_auth_error(exc: BaseException, context: FixContext | None = None) -> str | None:
    """Say how to fix a failure of the AWS -> Google chain, or None if it is not a known one.

    Args:
        exc: What google-auth, the supplier or a Google client raised.
        context: What is known about the setup; fills the ARN, role, pool, ... into the fix.

    Returns:
        The fix, in a sentence or two plus a command where one helps.
    """
    context = context or FixContext()
    known = find_known_failure(exc, context.stage)
    return known.fix.format_map(_placeholders(context)) if known else None


def credentials_error(
    problem: str,
    cause: BaseException | None,
    context: FixContext,
    *,
    retryable: bool = False,
) -> CredentialsError:
    """The error a failed exchange is raised as: `problem`, then the table's fix for it.

    Args:
        problem: What failed, with Google's or AWS's own words.
        cause: The vendor error, matched against the table first; without one (or without a
            match) `problem` itself is matched.
        context: What the caller knows; `stage` limits the table.
        retryable: Whether a later attempt can succeed.
    """
    known = find_known_failure(cause, context.stage) if cause is not None else None
    known = known or _match(problem, context.stage)
    return CredentialsError(
        problem,
        fix=known.fix.format_map(_placeholders(context)) if known else None,
        known=known.key if known else None,
        retryable=retryable,
    )
