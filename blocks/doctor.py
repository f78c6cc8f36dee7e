"""Diagnose the AWS -> Google Workload Identity chain from inside the ECS task, step by step.

The doctor drives the classes the flow uses, one link at a time: the block's AWS supplier
(credentials, region), a signed GetCallerIdentity (the identity Google STS will see), the
provider's mapping and condition in CEL (`blocks.cel`), then the block's own
`WorkloadIdentityCredentials`: the STS exchange alone, the exchange with impersonation, and a
cheap call through the block's client. The first failure stops the run and the later steps are
reported as skipped. A failed step carries the fix from `blocks.explain`'s table, the one the
flow's `CredentialsError`s are written from, filled in with what the doctor found. Nothing
secret is printed: no AWS keys, session tokens or Google access tokens, only where credentials
came from, the caller ARN and the mapped attributes.

    python -m blocks doctor --block NAME [--condition CEL] [--bucket B]
"""

from __future__ import annotations

import os
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

import google.auth.transport.requests
from google.auth import aws, exceptions

from blocks.cel import DEFAULT_AWS_MAPPING, evaluate_condition, evaluate_mapping
from blocks.credentials import AwsWorkloadIdentityCredentials
from blocks.ecs import AwsEcsTaskRoleSupplier
from blocks.errors import CredentialsError
from blocks.explain import FixContext, Stage, admitting_condition, explain_google_auth_error

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]
AWS_STS_ENDPOINT: Final = "https://sts.{region}.amazonaws.com"
_GET_CALLER_IDENTITY: Final = "Action=GetCallerIdentity&Version=2011-06-15"
_TIMEOUT: Final = 30.0
"""Seconds the cheap call may take, retries included."""
_FORM: Final = "application/x-www-form-urlencoded; charset=utf-8"


@dataclass(frozen=True)
class StepResult:
    """The outcome of one step: status, what was found (no secrets) and, on failure, the fix."""

    name: str
    status: Status
    details: tuple[tuple[str, str], ...] = ()
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("PASS", "WARN")


@dataclass(frozen=True)
class DoctorOptions:
    """What to check, from the command line.

    Attributes:
        condition: The provider's attribute condition (CEL) to test the mapped attributes with.
        mapping: The provider's attribute mapping; Google's documented AWS mapping by default.
        bucket: List this bucket as the cheap call instead of a BigQuery dry run.
        aws_sts_endpoint: Send the signed GetCallerIdentity here instead of to the regional
            AWS STS endpoint (a VPC endpoint, or a local stand-in in tests).
        environ: The process environment (read only), to say where the region came from.
    """

    condition: str | None = None
    mapping: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_AWS_MAPPING))
    bucket: str | None = None
    aws_sts_endpoint: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


@dataclass
class _Run:
    """State the steps hand on to each other."""

    block: AwsWorkloadIdentityCredentials
    options: DoctorOptions
    request: Callable[..., Any]
    context: FixContext
    aws_credentials: aws.AwsSecurityCredentials | None = None
    region: str | None = None
    assertion: dict[str, str] = field(default_factory=dict)

    @property
    def supplier(self) -> AwsEcsTaskRoleSupplier:
        return self.block.supplier

    def learn(self, **values: str | None) -> None:
        self.context = replace(self.context, **values)

    def failed(
        self, name: str, exc: BaseException, stage: Stage, details: tuple[tuple[str, str], ...] = ()
    ) -> StepResult:
        """A FAIL result with what failed and the fix the table knows for it."""
        # A CredentialsError's message ends with the flow's fix; the doctor prints its own.
        message = exc.problem if isinstance(exc, CredentialsError) else str(exc)
        message = message or type(exc).__name__
        message = message if len(message) < 600 else message[:600] + " ..."
        fix = explain_google_auth_error(exc, replace(self.context, stage=stage))
        return StepResult(name, "FAIL", (*details, ("error", message)), fix)


# -- the steps ---------------------------------------------------------------------------------


def _aws_credentials(run: _Run, name: str) -> StepResult:
    try:
        run.aws_credentials = run.supplier.get_aws_security_credentials(None, run.request)
    except exceptions.GoogleAuthError as exc:
        return run.failed(name, exc, "aws")
    source = run.supplier.last_source
    if source is None:  # a supplier without provenance: still usable
        return StepResult(name, "PASS", (("source", "unknown"),))
    details = [("source", source.kind), ("from", source.where)]
    if source.role_arn:
        details.append(("role", source.role_arn))
    details.append(("expires", _expiry(source.expiration)))
    # The supplier's own least-privilege warning, e.g. the EC2 instance role inside ECS.
    return StepResult(name, "WARN" if source.warning else "PASS", tuple(details), source.warning)


def _aws_region(run: _Run, name: str) -> StepResult:
    try:
        run.region = run.supplier.get_aws_region(None, run.request)
    except exceptions.GoogleAuthError as exc:
        return run.failed(name, exc, "aws")
    env = run.options.environ
    origin = next((v for v in ("AWS_REGION", "AWS_DEFAULT_REGION") if env.get(v)), "ECS metadata")
    return StepResult(name, "PASS", (("region", run.region), ("from", origin)))


def _caller_identity(run: _Run, name: str) -> StepResult:
    assert run.aws_credentials is not None and run.region is not None
    signed_url = AWS_STS_ENDPOINT.format(region=run.region) + "/"
    # The same credentials, region and host as the subject token google-auth signs, so AWS
    # names the same caller Google will see. The action goes in a form body, as the AWS SDKs
    # send it (also what moto can verify); the signed Host stays the regional one even when
    # the request is sent to an override.
    signed = aws.RequestSigner(run.region).get_request_options(
        run.aws_credentials,
        signed_url,
        "POST",
        request_payload=_GET_CALLER_IDENTITY,
        additional_headers={"Content-Type": _FORM},
    )
    url = (run.options.aws_sts_endpoint or signed_url).rstrip("/") + "/"
    details: tuple[tuple[str, str], ...] = (("signed for", signed_url),)
    if url != signed_url:
        details += (("sent to", url),)
    try:
        response = run.request(
            url=url,
            method="POST",
            headers=signed["headers"],
            body=_GET_CALLER_IDENTITY.encode(),
            timeout=10,
        )
    except exceptions.TransportError as exc:
        error = exceptions.TransportError(f"AWS STS {url}: cannot connect ({exc})")
        return run.failed(name, error, "aws", details)
    body = response.data.decode() if isinstance(response.data, bytes) else str(response.data)
    fields = _xml_leaves(body)
    if response.status != 200:
        status = f"HTTP {response.status} {fields.get('code', '')}".strip()
        message = fields.get("message") or body[:200]
        error = exceptions.RefreshError(f"AWS STS answered {status}: {message}")
        return run.failed(name, error, "aws", details)
    run.assertion = {k: fields[k] for k in ("arn", "account", "userid") if k in fields}
    run.learn(arn=run.assertion.get("arn"))
    return StepResult(name, "PASS", (*details, *run.assertion.items()))


def _mapping_and_condition(run: _Run, name: str) -> StepResult:
    condition = run.options.condition
    try:
        attributes = evaluate_mapping(run.options.mapping, run.assertion)
    except ValueError as exc:
        return StepResult(name, "FAIL", (("error", str(exc)),), "Fix the --mapping expression.")
    run.learn(role=attributes.get("attribute.aws_role"), condition=condition)
    details = tuple(attributes.items())
    if not condition:
        note = "not given: pass the provider's attributeCondition as --condition to test it"
        return StepResult(name, "PASS", (*details, ("condition", note)))
    details = (*details, ("condition", condition))
    try:
        admitted = evaluate_condition(condition, attributes, assertion=run.assertion)
    except ValueError as exc:
        return StepResult(name, "FAIL", (*details, ("error", str(exc))), "Fix the --condition.")
    if admitted:
        return StepResult(name, "PASS", (*details, ("result", "admitted")))
    role = run.context.role
    fix = (
        f"The condition rejects {run.context.arn} (attribute.aws_role = {role}). Run the task "
        f"with a role it admits, or change the provider's condition to admit this one, e.g. "
        f"{admitting_condition(condition, role)}"
    )
    return StepResult(name, "FAIL", (*details, ("result", "REJECTED")), fix)


def _sts_exchange(run: _Run, name: str) -> StepResult:
    config = run.block.credential_config
    details = (("audience", str(config.get("audience"))), ("token_url", str(config["token_url"])))
    try:
        credentials = run.block.get_credentials_from_service_account().without_impersonation()
        credentials.refresh(run.request)
    except (exceptions.GoogleAuthError, ValueError) as exc:
        result = run.failed(name, exc, "sts", details)
        if run.context.condition and "condition" in (result.fix or ""):
            # Our CEL said yes but Google said no: the provider's condition is another one.
            extra = (
                " The --condition you passed admits this role, so the provider's real condition "
                "differs: read it with `gcloud iam workload-identity-pools providers describe` "
                "and pass it as --condition."
            )
            result = replace(result, fix=(result.fix or "") + extra)
        return result
    return StepResult(name, "PASS", (*details, ("federated token", "issued")))


def _impersonation(run: _Run, name: str) -> StepResult:
    email = run.block.service_account_email
    if not email:
        none = "none: the federated identity calls Google APIs directly"
        return StepResult(name, "PASS", (("service account", none),))
    details = (("service account", email),)
    try:
        # The block's own credentials, as the flow refreshes them: STS, then IAM Credentials.
        run.block.get_credentials_from_service_account().refresh(run.request)
    except exceptions.GoogleAuthError as exc:
        return run.failed(name, exc, "iam", details)
    return StepResult(name, "PASS", (*details, ("access token", "issued")))


def _cheap_call(run: _Run, name: str) -> StepResult:
    bucket = run.options.bucket
    project = run.block.project
    try:
        if bucket:
            name = f"{name}: list gs://{bucket}"
            client = run.block.get_cloud_storage_client()
            found = sum(1 for _ in client.list_blobs(bucket, max_results=1, timeout=_TIMEOUT))
            return StepResult(name, "PASS", (("objects seen", str(found)),))
        name = f"{name}: BigQuery dry run in project {project}"
        from google.cloud import bigquery  # the doctor's only BigQuery use

        job = run.block.get_bigquery_client().query(
            "SELECT 1",
            job_config=bigquery.QueryJobConfig(dry_run=True, use_query_cache=False),
            # A diagnosis should report, not wait out the client's 10-minute retry deadline.
            retry=bigquery.DEFAULT_RETRY.with_deadline(_TIMEOUT),
            timeout=_TIMEOUT,
        )
        return StepResult(name, "PASS", (("bytes processed", str(job.total_bytes_processed)),))
    except Exception as exc:  # any client error is a finding here, and it is translated
        return run.failed(name, exc, "api")


STEPS: Final[tuple[tuple[str, Callable[[_Run, str], StepResult]], ...]] = (
    ("AWS credentials", _aws_credentials),
    ("AWS region", _aws_region),
    ("Caller ARN (AWS STS GetCallerIdentity)", _caller_identity),
    ("Attribute mapping and condition (CEL)", _mapping_and_condition),
    ("Google STS token exchange", _sts_exchange),
    ("Service-account impersonation (IAM generateAccessToken)", _impersonation),
    ("A cheap real call with the final credentials", _cheap_call),
)
"""The checks in order; each gets the shared state and its title."""


def diagnose(
    block: AwsWorkloadIdentityCredentials,
    options: DoctorOptions | None = None,
    *,
    supplier: AwsEcsTaskRoleSupplier | None = None,
    request: Callable[..., Any] | None = None,
) -> list[StepResult]:
    """Run the steps in order and stop at the first failure.

    Args:
        block: The credentials block under test.
        options: What to check.
        supplier: The AWS supplier to use (default: the block's); the block then uses it too.
        request: google-auth transport for every HTTP call of steps 1-6.

    Returns:
        One result per step; those after a failure have status SKIP.
    """
    options = options or DoctorOptions()
    # New Google credentials for this run (with this supplier, if one is given).
    block.with_runtime(supplier=supplier)
    run = _Run(
        block=block,
        options=options,
        request=request or google.auth.transport.requests.Request(),
        context=FixContext(
            audience=block.credential_config.get("audience"),
            service_account=block.service_account_email,
            project=block.project,
            bucket=options.bucket,
            condition=options.condition,
        ),
    )
    results: list[StepResult] = []
    for index, (name, step) in enumerate(STEPS):
        result = step(run, name)
        results.append(result)
        if not result.ok:
            results.extend(
                StepResult(later, "SKIP", (("skipped", "an earlier step failed"),))
                for later, _ in STEPS[index + 1 :]
            )
            break
    return results


EXIT_PASS: Final = 0
EXIT_FAIL: Final = 1
EXIT_WARN: Final = 3
"""Works, but not as it should (e.g. the EC2 instance role instead of a task role)."""


def exit_code(results: list[StepResult]) -> int:
    """0 when every step passed, 1 when one failed, 3 when all passed but with warnings."""
    if any(r.status == "FAIL" for r in results):
        return EXIT_FAIL
    return EXIT_WARN if any(r.status == "WARN" for r in results) else EXIT_PASS


def render(
    results: list[StepResult],
    *,
    block_name: str | None = None,
    doctor: str = "Workload Identity doctor",
) -> str:
    """Plain text for a terminal or CloudWatch: one block per step, then the verdict."""
    title = doctor + (f" for block {block_name!r}" if block_name else "")
    lines = [title, "=" * len(title)]
    for number, result in enumerate(results, 1):
        lines.append(f"{number}. [{result.status}] {result.name}")
        width = max((len(k) for k, _ in result.details), default=0)
        lines.extend(f"     {key.ljust(width)} : {value}" for key, value in result.details)
        if result.fix:
            label = "FIX" if result.status == "FAIL" else "NOTE"
            lines.extend(_wrap(f"{label}: {result.fix}"))
    failed = next((r for r in results if r.status == "FAIL"), None)
    warned = [r for r in results if r.status == "WARN"]
    if failed:
        lines.append(f"RESULT: FAIL at '{failed.name}'")
    else:
        lines.append("RESULT: PASS" + (f" with {len(warned)} warning(s)" if warned else ""))
    return "\n".join(lines) + "\n"


def _wrap(text: str) -> list[str]:
    """Indent and wrap prose at 100 columns; command lines (indented) stay whole to copy."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(" "):
            lines.append("     " + line)
        else:
            lines.extend(
                textwrap.wrap(
                    line,
                    100,
                    initial_indent="     ",
                    subsequent_indent="       ",
                    break_long_words=False,  # ARNs and URLs stay whole
                    break_on_hyphens=False,
                )
            )
    return lines


def _expiry(expiration: datetime | None) -> str:
    if expiration is None:
        return "never (static keys)"
    left = expiration - datetime.now(UTC)
    minutes = int(left.total_seconds() // 60)
    when = f"in {minutes // 60}h {minutes % 60:02d}m" if minutes >= 0 else "ALREADY EXPIRED"
    return f"{expiration.isoformat()} ({when})"


def _xml_leaves(body: str) -> dict[str, str]:
    """The leaf elements of an AWS STS answer by lowercased local name (`Arn` -> `arn`).

    Covers both shapes: GetCallerIdentityResult's Arn/Account/UserId and Error's Code/Message.
    """
    try:
        root = ET.fromstring(body)  # noqa: S314 - AWS STS's answer, no entities
    except ET.ParseError:
        return {}
    return {
        leaf.tag.rsplit("}", 1)[-1].lower(): (leaf.text or "").strip()
        for leaf in root.iter()
        if len(leaf) == 0
    }
