"""AWS credentials of the ECS task role, supplied to google-auth's Workload Identity exchange.

google-auth's AWS source only reads `AWS_*` env vars or the EC2 metadata server; on ECS/Fargate
the task role lives behind the container credentials endpoint instead. `AwsEcsTaskRoleSupplier`
implements google-auth's `AwsSecurityCredentialsSupplier` hook and looks, in this order, at:

1. `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (relative to http://169.254.170.2),
2. `AWS_CONTAINER_CREDENTIALS_FULL_URI` (with the AWS SDKs' host rules) plus an `Authorization`
   header from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (re-read on every fetch, ECS rotates it)
   or `AWS_CONTAINER_AUTHORIZATION_TOKEN`,
3. static `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`,
4. the EC2 metadata server with IMDSv2.

google-auth does not cache what a supplier returns: it calls it on every STS exchange. So the
supplier caches the credentials until `refresh_margin` before their `Expiration` and fetches the
rotated ones after that, under a lock. It never writes to `os.environ`.
See https://docs.aws.amazon.com/sdkref/latest/guide/feature-container-credentials.html.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import requests
from google.auth import aws, exceptions

from blocks.retry import RetriesExhausted, call_with_retries

logger = logging.getLogger(__name__)

ECS_CREDENTIALS_HOST: Final = "http://169.254.170.2"
IMDS_HOST: Final = "http://169.254.169.254"

# Hosts the AWS SDKs accept over plain http for AWS_CONTAINER_CREDENTIALS_FULL_URI (EKS Pod
# Identity and ECS agents), besides loopback.
_ALLOWED_HTTP_HOSTS: Final[frozenset[str]] = frozenset(
    {"169.254.170.2", "169.254.170.23", "fd00:ec2::23"}
)
_REGION_IN_ARN: Final = re.compile(r"^arn:aws[a-z-]*:ecs:([a-z0-9-]+):")
_REGION_IN_ZONE: Final = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d+)")

SourceKind = Literal["ecs-relative", "ecs-full", "env", "imds"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CredentialSource:
    """Where the last AWS credentials came from (no secrets: safe to log and show).

    Attributes:
        kind: Which of the four sources answered.
        where: The URL or the variable names that were read.
        expiration: When AWS expires the credentials (None for static keys).
        role_arn: The IAM role the credentials belong to, when the source says so.
        access_key_id_suffix: The last 4 characters of the access key id, to tell keys apart.
        warning: A least-privilege hazard worth reporting, e.g. the EC2 instance role on ECS.
    """

    kind: SourceKind
    where: str
    expiration: datetime | None = None
    role_arn: str | None = None
    access_key_id_suffix: str = ""
    warning: str | None = None


@dataclass(frozen=True, repr=False)
class _Fetched:
    credentials: aws.AwsSecurityCredentials
    source: CredentialSource


class AwsEcsTaskRoleSupplier(aws.AwsSecurityCredentialsSupplier):
    """Supplies the ECS task role's AWS credentials and region to `google.auth.aws.Credentials`.

    HTTP goes through the supplier's own `requests` session, not the `request` transport
    google-auth passes in: google-auth's transport debug-logs response bodies, redacting only
    OAuth field names (so `SecretAccessKey`/`Token` would reach the logs), and follows the
    `HTTP(S)_PROXY` variables, while the metadata endpoints are link-local and must be reached
    directly (as the AWS SDKs do). The session ignores proxy variables and never redirects.

    Args:
        environ: Where to read the `AWS_*`/`ECS_*` variables; defaults to `os.environ`
            (read only).
        clock: Returns the current UTC time; tests advance it to force a rotation.
        sleep: Waits between attempts; tests pass a recorder.
        refresh_margin: Fetch new credentials this long before they expire.
        attempts: Tries per endpoint on connection errors and transient statuses
            (`blocks.retry`).
        backoff_seconds: First wait between attempts, doubled each time.
        timeout_seconds: Per-request timeout; the metadata endpoints answer in milliseconds.
        ecs_host: Base URL of `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
        imds_host: Base URL of the EC2 metadata server.
        use_imds: Whether to fall back to the EC2 metadata server at all.
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
        refresh_margin: timedelta = timedelta(minutes=5),
        attempts: int = 3,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 2.0,
        ecs_host: str = ECS_CREDENTIALS_HOST,
        imds_host: str = IMDS_HOST,
        use_imds: bool = True,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}.")
        self._environ = os.environ if environ is None else environ
        self._clock = clock
        self._sleep = sleep
        self._margin = refresh_margin
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._timeout = timeout_seconds
        self._ecs_host = ecs_host.rstrip("/")
        self._imds_host = imds_host.rstrip("/")
        self._use_imds = use_imds
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies / netrc for link-local endpoints
        self._cached: _Fetched | None = None
        self._region: str | None = None
        self.last_source: CredentialSource | None = None
        self.fetch_count = 0
        """How many times credentials were fetched from a source (cache misses)."""

    def __repr__(self) -> str:
        source = self.last_source.kind if self.last_source else None
        return f"{type(self).__name__}(last_source={source!r})"

    # -- the google-auth contract ------------------------------------------------------------

    def get_aws_security_credentials(
        self, context: Any, request: Any = None
    ) -> aws.AwsSecurityCredentials:
        """Return cached credentials, or fetch them when they are near `Expiration`.

        `context` and `request` (google-auth's) are unused; see the class docstring.

        Raises:
            google.auth.exceptions.RefreshError: No source gave credentials; the message names
                what was tried and what to check.
        """
        with self._lock:
            cached = self._cached
            expiration = cached.source.expiration if cached else None
            if cached and expiration and self._clock() < expiration - self._margin:
                return cached.credentials
            fetched = self._fetch()
            self.fetch_count += 1
            # Static keys have no expiration: read them again every time (cheap, no HTTP).
            self._cached = fetched if fetched.source.expiration else None
            self.last_source = fetched.source
            logger.info(
                "AWS credentials from %s (%s), expire %s",
                fetched.source.kind,
                fetched.source.where,
                fetched.source.expiration.isoformat() if fetched.source.expiration else "never",
            )
            if fetched.source.warning:
                logger.warning(fetched.source.warning)
            return fetched.credentials

    def get_aws_region(self, context: Any, request: Any = None) -> str:
        """Return `AWS_REGION`, `AWS_DEFAULT_REGION`, or the region of the ECS task.

        Raises:
            google.auth.exceptions.RefreshError: No variable set and no task metadata.
        """
        with self._lock:
            if self._region is None:
                self._region = self._resolve_region()
            return self._region

    def invalidate(self) -> None:
        """Forget the cached credentials so the next call fetches again."""
        with self._lock:
            self._cached = None

    # -- credentials -------------------------------------------------------------------------

    def _fetch(self) -> _Fetched:
        env = self._environ
        if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
            url = self._ecs_host + env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]
            return self._from_container(url, "ecs-relative", headers={})
        if env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
            url = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
            _check_full_uri(url)
            return self._from_container(url, "ecs-full", headers=self._auth_header())
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            return self._from_env()
        if self._use_imds:
            return self._from_imds()
        raise exceptions.RefreshError(
            "No AWS credentials: none of AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, "
            "AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY is set "
            "and the EC2 metadata server is disabled. On ECS, give the task definition a "
            "taskRoleArn."
        )

    def _auth_header(self) -> dict[str, str]:
        env = self._environ
        token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        if token_file:
            try:
                with open(token_file, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError as exc:
                raise exceptions.RefreshError(
                    f"Cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={token_file!r} "
                    f"({exc.strerror}). Check that the file is mounted into the container."
                ) from None
            return {"Authorization": token}
        token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
        return {"Authorization": token} if token else {}

    def _from_container(self, url: str, kind: SourceKind, headers: dict[str, str]) -> _Fetched:
        variable = (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
            if kind == "ecs-relative"
            else "AWS_CONTAINER_CREDENTIALS_FULL_URI"
        )
        status, body = self._get("GET", url, headers, what=f"{variable} ({url})")
        if status in (401, 403):
            token_var = (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
                if "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" in self._environ
                else "AWS_CONTAINER_AUTHORIZATION_TOKEN"
            )
            raise exceptions.RefreshError(
                f"The ECS credentials endpoint {url} (from {variable}) refused the request with "
                f"HTTP {status}. Check {token_var}: the authorization token is missing, stale or "
                "wrong."
            )
        if status != 200:
            raise exceptions.RefreshError(
                f"The ECS credentials endpoint {url} (from {variable}) answered HTTP {status}. "
                "Check that the task definition has a taskRoleArn and that the ECS agent is "
                "healthy."
            )
        credentials, expiration = _parse_credentials(body, url)
        role_arn = _json(body).get("RoleArn")
        return _Fetched(
            credentials,
            CredentialSource(
                kind=kind,
                where=url,
                expiration=expiration,
                role_arn=role_arn,
                access_key_id_suffix=credentials.access_key_id[-4:],
            ),
        )

    def _from_env(self) -> _Fetched:
        env = self._environ
        credentials = aws.AwsSecurityCredentials(
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
        )
        names = "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
        if credentials.session_token:
            names += ", AWS_SESSION_TOKEN"
        return _Fetched(
            credentials,
            CredentialSource(
                kind="env", where=names, access_key_id_suffix=credentials.access_key_id[-4:]
            ),
        )

    def _from_imds(self) -> _Fetched:
        base = self._imds_host
        what = f"the EC2 metadata server ({base})"
        hint = (
            " None of AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, AWS_CONTAINER_CREDENTIALS_FULL_URI, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY is set either. On ECS, give the task "
            "definition a taskRoleArn; elsewhere, set the variables."
        )
        status, token = self._get(
            "PUT",
            f"{base}/latest/api/token",
            {"X-aws-ec2-metadata-token-ttl-seconds": "21600"},
            what=what,
            hint=hint,
        )
        if status != 200:
            raise exceptions.RefreshError(
                f"{what} refused an IMDSv2 session token (HTTP {status}).{hint}"
            )
        headers = {"X-aws-ec2-metadata-token": token.decode().strip()}
        roles_url = f"{base}/latest/meta-data/iam/security-credentials/"
        status, body = self._get("GET", roles_url, headers, what=what, hint=hint)
        role = body.decode().strip().splitlines()[0] if status == 200 and body.strip() else ""
        if not role:
            raise exceptions.RefreshError(
                f"{what} lists no IAM role at {roles_url} (HTTP {status}). Attach an instance "
                f"profile, or run where a task role is available.{hint}"
            )
        url = roles_url + role
        status, body = self._get("GET", url, headers, what=what)
        if status != 200:
            raise exceptions.RefreshError(f"{what} answered HTTP {status} for {url}.")
        credentials, expiration = _parse_credentials(body, url)
        warning = None
        if self._environ.get("ECS_CONTAINER_METADATA_URI_V4"):
            # ECS on EC2 without a task role: IMDS hands out the *instance* role, shared by
            # every task on the host. Works, but is not what the WIF condition should admit.
            warning = (
                "These are the EC2 *instance* role's credentials, not a task role's: this runs "
                "in an ECS task (ECS_CONTAINER_METADATA_URI_V4 is set) but the container got no "
                f"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, so the EC2 instance role {role!r} from "
                f"{base} answered. Every task on the host shares it (least privilege). Set "
                "taskRoleArn in the task definition, and make the provider's condition admit "
                "only that task role."
            )
        return _Fetched(
            credentials,
            CredentialSource(
                kind="imds",
                where=url,
                expiration=expiration,
                access_key_id_suffix=credentials.access_key_id[-4:],
                warning=warning,
            ),
        )

    # -- region ------------------------------------------------------------------------------

    def _resolve_region(self) -> str:
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if self._environ.get(name):
                return self._environ[name]
        metadata = self._environ.get("ECS_CONTAINER_METADATA_URI_V4")
        if not metadata:
            raise exceptions.RefreshError(
                "No AWS region: AWS_REGION, AWS_DEFAULT_REGION and ECS_CONTAINER_METADATA_URI_V4 "
                "are all unset. Set AWS_REGION (ECS sets it for tasks it starts)."
            )
        url = metadata.rstrip("/") + "/task"
        status, body = self._get("GET", url, {}, what=f"ECS task metadata ({url})")
        task = _json(body) if status == 200 else {}
        match = _REGION_IN_ARN.match(str(task.get("TaskARN", ""))) or _REGION_IN_ZONE.match(
            str(task.get("AvailabilityZone", ""))
        )
        if not match:
            raise exceptions.RefreshError(
                f"No AWS region: AWS_REGION and AWS_DEFAULT_REGION are unset and the ECS task "
                f"metadata at {url} (ECS_CONTAINER_METADATA_URI_V4) gave HTTP {status} without "
                "TaskARN/AvailabilityZone. Set AWS_REGION."
            )
        return match.group(1)

    # -- HTTP --------------------------------------------------------------------------------

    def _get(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        what: str,
        hint: str = "",
    ) -> tuple[int, bytes]:
        """One idempotent metadata call, retried on connection errors and transient statuses."""
        try:
            response = call_with_retries(
                lambda: self._session.request(
                    method, url, headers=headers, timeout=self._timeout, allow_redirects=False
                ),
                what=what,
                status=lambda answer: answer.status_code,
                connection_errors=(requests.RequestException,),
                attempts=self._attempts,
                backoff_seconds=self._backoff,
                sleep=self._sleep,
            )
        except RetriesExhausted as exc:
            raise exceptions.RefreshError(
                f"Could not get AWS credentials from {what}: {exc.problem} after "
                f"{exc.attempts} attempts. Check that the endpoint is reachable from the "
                f"container.{hint}",
                retryable=True,
            ) from exc.__cause__
        return response.status_code, response.content


def _check_full_uri(url: str) -> None:
    """Apply the AWS SDKs' rule: https anywhere, plain http only to loopback or the ECS/EKS hosts.

    Raises:
        google.auth.exceptions.RefreshError: The URL is not allowed; no request was made.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and (host in _ALLOWED_HTTP_HOSTS or is_loopback(host)):
        return
    raise exceptions.RefreshError(
        f"AWS_CONTAINER_CREDENTIALS_FULL_URI={url!r} is not allowed: it must use https, or http "
        "to a loopback address or to 169.254.170.2, 169.254.170.23 or fd00:ec2::23 (the rule the "
        "AWS SDKs apply). No request was sent. Check the task definition's environment."
    )


def is_loopback(host: str) -> bool:
    """True for a loopback address, or `localhost` resolving only to loopback addresses."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host != "localhost":
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _parse_credentials(body: bytes, url: str) -> tuple[aws.AwsSecurityCredentials, datetime | None]:
    payload = _json(body)
    if not payload.get("AccessKeyId") or not payload.get("SecretAccessKey"):
        # Never echo the body: it may hold half a secret.
        raise exceptions.RefreshError(
            f"The credentials answer of {url} has no AccessKeyId/SecretAccessKey. Check that the "
            "URL points at an ECS credentials endpoint or the EC2 metadata server."
        )
    expiration = None
    if payload.get("Expiration"):
        try:
            expiration = datetime.fromisoformat(payload["Expiration"])
        except ValueError:
            raise exceptions.RefreshError(
                f"The credentials answer of {url} has an unreadable Expiration "
                f"{payload['Expiration']!r}."
            ) from None
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=UTC)
    credentials = aws.AwsSecurityCredentials(
        payload["AccessKeyId"], payload["SecretAccessKey"], payload.get("Token")
    )
    return credentials, expiration
