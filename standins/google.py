"""Google stand-ins: STS token exchange, IAM Credentials impersonation, and token-checking APIs.

`GoogleIdentity` answers, on one loopback server, the two calls google-auth makes for an AWS
Workload Identity credential (https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token,
https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken):

- `POST /v1/token`: checks the form, finds the provider named by `audience`, verifies the signed
  GetCallerIdentity inside the subject token (through `verify`, normally `MotoAws.caller_arn`),
  applies the provider's attribute mapping and condition, and issues a federated token.
  Rejections use Google's own error bodies.
- The mapping and the condition are evaluated here with cel-python and this module's own
  `extract()`, independently of the product's `blocks.cel`: the doctor explains a rejection
  with `blocks.cel`, and a fake sharing that code could never disagree with it.
- `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken`: needs a federated token
  whose principal holds a grant (roles/iam.workloadIdentityUser) on the service account.

`GoogleApis` is a minimal BigQuery + Cloud Storage that only answers requests bearing a token
`GoogleIdentity` issued, so tests can prove real client libraries send the right token.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import celpy
from celpy import celtypes

from standins.aws import AwsRejected
from standins.loopback import LoopbackServer, Request, Response

GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
AWS_TOKEN_TYPE: Final = "urn:ietf:params:aws:token-type:aws4_request"
CONDITION_REJECTED: Final = {
    "error": "unauthorized_client",
    "error_description": "The given credential is rejected by the attribute condition.",
}
INVALID_TARGET: Final = {
    "error": "invalid_target",
    "error_description": (
        'The target service indicated by the "audience" parameters is invalid. This might '
        "either be because the pool or provider is disabled or deleted or because it doesn't "
        "exist."
    ),
}
_GET_ACCESS_TOKEN_DENIED: Final = {
    "error": {
        "code": 403,
        "message": (
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource "
            "(or it may not exist)."
        ),
        "status": "PERMISSION_DENIED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {"permission": "iam.serviceAccounts.getAccessToken"},
            }
        ],
    }
}
_UNAUTHENTICATED: Final = {
    "error": {
        "code": 401,
        "message": (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential."
        ),
        "status": "UNAUTHENTICATED",
    }
}


# Google's documented default mapping for an AWS provider (the console proposes it):
# https://cloud.google.com/iam/docs/workload-identity-federation-with-other-clouds
AWS_DEFAULT_MAPPING: Final[Mapping[str, str]] = {
    "google.subject": "assertion.arn",
    "attribute.aws_role": (
        "assertion.arn.contains('assumed-role')"
        " ? assertion.arn.extract('{account_arn}assumed-role/')"
        " + 'assumed-role/'"
        " + assertion.arn.extract('assumed-role/{role_name}/')"
        " : assertion.arn"
    ),
}


def extract(value: str, template: str) -> str:
    """Google's CEL `extract()`: what `{name}` in `template` stands for in `value`, else ''.

    `extract('arn:aws:sts::1:assumed-role/etl/s1', 'assumed-role/{role}/')` is `'etl'`: the
    template's literal text around the placeholder must match, and an empty tail takes the rest.
    """
    head, brace, rest = template.partition("{")
    name, close, tail = rest.partition("}")
    if not (brace and close and name) or "{" in tail:
        raise ValueError(f"extract() template {template!r} needs one {{name}}")
    match = re.search(re.escape(head) + "(.*?)" + (re.escape(tail) if tail else "$"), value)
    return match.group(1) if match else ""


def _cel_extract(value: celtypes.Value, template: celtypes.Value) -> celtypes.StringType:
    return celtypes.StringType(extract(str(value), str(template)))


@functools.lru_cache(maxsize=128)
def _compile(expression: str) -> celpy.Runner:
    env = celpy.Environment()
    # celpy declares the google.protobuf.* types, whose `google` would hide the condition's
    # `google` variable (google.subject).
    for name in celpy.googleapis:
        env.annotations.pop(name, None)
    return env.program(env.compile(expression), functions={"extract": _cel_extract})


def _run(expression: str, variables: Mapping[str, Any]) -> object:
    result = _compile(expression).evaluate(
        {name: celpy.json_to_cel(value) for name, value in variables.items()}
    )
    if isinstance(result, celpy.CELEvalError):  # celpy may return the error instead of raising
        raise result
    return result


def map_attributes(mapping: Mapping[str, str], assertion: Mapping[str, str]) -> dict[str, str]:
    """Apply a provider's attribute mapping to the AWS assertion (`arn`, `account`)."""
    return {key: str(_run(expr, {"assertion": dict(assertion)})) for key, expr in mapping.items()}


def admits(condition: str, attributes: Mapping[str, str], assertion: Mapping[str, str]) -> bool:
    """Whether a provider's attribute condition admits the mapped attributes.

    A condition that fails or gives no boolean rejects, as Google's does.
    """
    variables: dict[str, Any] = {"assertion": dict(assertion), "google": {}, "attribute": {}}
    for key, value in attributes.items():
        kind, _, name = key.partition(".")
        variables.setdefault(kind, {})[name] = value
    try:
        result = _run(condition, variables)
    except (celpy.CELEvalError, TypeError, ValueError):
        return False
    return isinstance(result, celtypes.BoolType) and bool(result)


def _now() -> datetime:
    # Real time: google-auth judges token expiry by the real clock.
    return datetime.now(UTC)


@dataclass
class Provider:
    """A Workload Identity pool provider for AWS."""

    project_number: str
    pool: str
    provider: str
    account_id: str
    mapping: Mapping[str, str] = field(default_factory=lambda: dict(AWS_DEFAULT_MAPPING))
    condition: str | None = None

    @property
    def pool_name(self) -> str:
        return f"projects/{self.project_number}/locations/global/workloadIdentityPools/{self.pool}"

    @property
    def audience(self) -> str:
        return f"//iam.googleapis.com/{self.pool_name}/providers/{self.provider}"


@dataclass(frozen=True)
class IssuedToken:
    """A token the fake issued; `subject` is the principal or the service account email."""

    kind: Literal["federated", "service_account"]
    subject: str
    scopes: tuple[str, ...]
    expires: datetime
    attributes: Mapping[str, str] = field(default_factory=dict)
    pool_name: str = ""


@dataclass(frozen=True)
class Exchange:
    """One accepted or rejected STS exchange, for assertions."""

    access_key_id: str
    arn: str | None
    audience: str
    outcome: str


class GoogleIdentity(LoopbackServer):
    """Google STS and IAM Credentials on one loopback server.

    Args:
        verify: Checks a signed GetCallerIdentity (url, method, headers) and returns the
            caller ARN, raising `AwsRejected` otherwise; normally `MotoAws.caller_arn`.
    """

    def __init__(self, verify: Callable[[str, str, dict[str, str]], str]) -> None:
        self._verify = verify
        super().__init__()
        self.reset()

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.providers: dict[str, Provider] = {}
            self.grants: dict[str, set[str]] = {}
            self.tokens: dict[str, IssuedToken] = {}
            self.exchanges: list[Exchange] = []
            self._failures: dict[str, list[int]] = {"sts": [], "iam": []}

    # -- configuration -------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.url}/v1/token"

    def impersonation_url(self, email: str) -> str:
        return f"{self.url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"

    def add_provider(self, provider: Provider) -> str:
        """Create (or replace) a provider; returns its audience.

        Raises:
            celpy.CELParseError: the mapping or the condition is not CEL (Google refuses to
                create such a provider).
        """
        for expression in (*provider.mapping.values(), provider.condition or "true"):
            _compile(expression)
        with self._lock:
            self.providers[provider.audience] = provider
        return provider.audience

    def grant(self, service_account: str, member: str) -> None:
        """Give `member` (principal://... or principalSet://...) workloadIdentityUser."""
        with self._lock:
            self.grants.setdefault(service_account, set()).add(member)

    def fail_next(self, api: Literal["sts", "iam"], status: int, times: int = 1) -> None:
        """Answer the next `times` calls to `api` with HTTP `status`."""
        with self._lock:
            self._failures[api].extend([status] * times)

    def validate_access_token(self, authorization: str | None) -> IssuedToken | None:
        """The token behind an `Authorization: Bearer ...` header, if issued and unexpired."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        with self._lock:
            token = self.tokens.get(authorization.removeprefix("Bearer "))
        return token if token and token.expires > _now() else None

    def requests_to(self, api: Literal["sts", "iam"]) -> list[Request]:
        with self._lock:
            if api == "sts":
                return [r for r in self.requests if r.path == "/v1/token"]
            return [r for r in self.requests if r.path.endswith(":generateAccessToken")]

    # -- HTTP ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/v1/token":
            return self._failure("sts") or self._sts(request)
        if request.method == "POST" and request.path.endswith(":generateAccessToken"):
            return self._failure("iam") or self._generate(request)
        return Response.json({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)

    def _failure(self, api: str) -> Response | None:
        with self._lock:
            status = self._failures[api].pop(0) if self._failures[api] else None
        if status is None:
            return None
        if api == "sts":
            body = {"error": "server_error", "error_description": "injected failure"}
            return Response.json(body, status=status)
        body = {"error": {"code": status, "message": "injected failure", "status": "UNAVAILABLE"}}
        return Response.json(body, status=status)

    def _sts(self, request: Request) -> Response:
        form = request.form()
        for name, expected in (
            ("grant_type", GRANT_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token_type", AWS_TOKEN_TYPE),
        ):
            if form.get(name) != expected:
                return _oauth_error("invalid_request", f'Invalid value for "{name}".')
        audience = form.get("audience", "").removeprefix("https:")
        with self._lock:
            provider = self.providers.get(audience)
        if provider is None:
            return Response.json(INVALID_TARGET, status=400)
        try:
            signed = json.loads(unquote(form.get("subject_token", "")))
            headers = {h["key"]: h["value"] for h in signed["headers"]}
            url, method = signed["url"], signed["method"]
        except (ValueError, KeyError, TypeError):
            return _oauth_error("invalid_grant", "The subject token is not a signed AWS request.")
        key_id = _access_key_id(headers)
        problem = _check_target(url, headers, audience)
        if problem:
            self._record(key_id, None, audience, "invalid_grant")
            return _oauth_error("invalid_grant", problem)
        try:
            arn = self._verify(url, method, headers)
        except AwsRejected as exc:
            self._record(key_id, None, audience, "invalid_grant")
            return _oauth_error(
                "invalid_grant",
                f"Received invalid AWS response of type {exc.code} with error message: "
                f"{exc.message}",
            )
        if arn.split(":")[4] != provider.account_id:
            self._record(key_id, arn, audience, "invalid_grant")
            return _oauth_error(
                "invalid_grant", "The AWS account is not configured for this provider."
            )
        assertion = {"arn": arn, "account": arn.split(":")[4]}
        attributes = map_attributes(provider.mapping, assertion)
        if provider.condition and not admits(provider.condition, attributes, assertion):
            self._record(key_id, arn, audience, "rejected")
            return Response.json(CONDITION_REJECTED, status=400)
        token = "fed." + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = IssuedToken(
                kind="federated",
                subject=attributes["google.subject"],
                scopes=tuple(form.get("scope", "").split()),
                expires=_now() + timedelta(hours=1),
                attributes=attributes,
                pool_name=provider.pool_name,
            )
        self._record(key_id, arn, audience, "accepted")
        return Response.json(
            {
                "access_token": token,
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        )

    def _record(self, key_id: str, arn: str | None, audience: str, outcome: str) -> None:
        with self._lock:
            self.exchanges.append(Exchange(key_id, arn, audience, outcome))

    def _generate(self, request: Request) -> Response:
        federated = self.validate_access_token(request.headers.get("authorization"))
        if federated is None or federated.kind != "federated":
            return Response.json(_UNAUTHENTICATED, status=401)
        email = request.path.rsplit("/", 1)[-1].removesuffix(":generateAccessToken")
        with self._lock:
            members = set(self.grants.get(email, ()))
        if not _granted(federated, members):
            return Response.json(_GET_ACCESS_TOKEN_DENIED, status=403)
        body = request.json() or {}
        lifetime = int(str(body.get("lifetime", "3600s")).removesuffix("s"))
        if not 1 <= lifetime <= 43200:
            return Response.json(
                {
                    "error": {
                        "code": 400,
                        "message": "Invalid lifetime.",
                        "status": "INVALID_ARGUMENT",
                    }
                },
                status=400,
            )
        expires = (_now() + timedelta(seconds=lifetime)).replace(microsecond=0)
        token = "ya29.fake." + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = IssuedToken(
                kind="service_account",
                subject=email,
                scopes=tuple(body.get("scope") or ()),
                expires=expires,
            )
        return Response.json(
            {"accessToken": token, "expireTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
        )


def _oauth_error(code: str, description: str) -> Response:
    return Response.json({"error": code, "error_description": description}, status=400)


def _access_key_id(headers: Mapping[str, str]) -> str:
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    return authorization.partition("Credential=")[2].partition("/")[0]


def _check_target(url: str, headers: Mapping[str, str], audience: str) -> str | None:
    """Google accepts only GetCallerIdentity at an AWS STS host, bound to this audience."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or ""
    if not (host.startswith("sts.") and host.endswith(".amazonaws.com")):
        return f"The subject token's URL host {host!r} is not an AWS STS endpoint."
    if query.get("Action") != ["GetCallerIdentity"]:
        return "The subject token must be a signed GetCallerIdentity request."
    target = {k.lower(): v for k, v in headers.items()}.get("x-goog-cloud-target-resource", "")
    if target.removeprefix("https:") != audience:
        return "The x-goog-cloud-target-resource header does not match the audience."
    return None


def _granted(token: IssuedToken, members: set[str]) -> bool:
    base = f"iam.googleapis.com/{token.pool_name}"
    wanted = {f"principal://{base}/subject/{token.subject}", f"principalSet://{base}/*"}
    for key, value in token.attributes.items():
        if key.startswith("attribute."):
            wanted.add(f"principalSet://{base}/{key}/{value}")
    return bool(wanted & members)


class GoogleApis(LoopbackServer):
    """Minimal BigQuery and Cloud Storage JSON APIs that check the bearer token.

    Point clients at it with `client_options={"api_endpoint": apis.url}`. `seen` records
    (path, token subject) of each authorized call.
    """

    def __init__(self, identity: GoogleIdentity) -> None:
        self.identity = identity
        super().__init__()
        self.reset()

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.seen: list[tuple[str, str]] = []
            self.objects: dict[str, list[str]] = {"exports": ["day=2026-11-28/part-0.parquet"]}

    def handle(self, request: Request) -> Response:
        token = self.identity.validate_access_token(request.headers.get("authorization"))
        if token is None:
            return Response.json(_UNAUTHENTICATED, status=401)
        with self._lock:
            self.seen.append((request.path, token.subject))
        parts = request.path.strip("/").split("/")
        if parts[:2] == ["bigquery", "v2"] and len(parts) >= 5:
            return self._bigquery(request, parts[3], parts[4])
        if parts[:3] == ["storage", "v1", "b"] and len(parts) == 5 and parts[4] == "o":
            return self._storage(parts[3])
        return Response.json({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)

    def _bigquery(self, request: Request, project: str, collection: str) -> Response:
        if collection == "datasets" and request.method == "GET":
            return Response.json(
                {
                    "kind": "bigquery#datasetList",
                    "datasets": [
                        {
                            "kind": "bigquery#dataset",
                            "id": f"{project}:marts",
                            "datasetReference": {"projectId": project, "datasetId": "marts"},
                            "location": "US",
                        }
                    ],
                }
            )
        if collection == "jobs" and request.method == "POST":
            job: dict[str, Any] = request.json() or {}
            reference = job.get("jobReference") or {}
            reference.setdefault("projectId", project)
            reference.setdefault("jobId", "job_" + secrets.token_hex(6))
            reference.setdefault("location", "US")
            stats = {"totalBytesProcessed": "1024", "query": {"totalBytesProcessed": "1024"}}
            return Response.json(
                {
                    "kind": "bigquery#job",
                    "id": f"{project}:US.{reference['jobId']}",
                    "jobReference": reference,
                    "configuration": job.get("configuration", {}),
                    "status": {"state": "DONE"},
                    "statistics": stats,
                }
            )
        return Response.json({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)

    def _storage(self, bucket: str) -> Response:
        with self._lock:
            names = self.objects.get(bucket)
        if names is None:
            return Response.json({"error": {"code": 404, "message": "Not Found"}}, status=404)
        items = [
            {"kind": "storage#object", "name": n, "bucket": bucket, "size": "4"} for n in names
        ]
        return Response.json({"kind": "storage#objects", "items": items})
