"""google-auth's AWS Workload Identity credentials, with bounded retries and errors that help.

`google.auth.aws.Credentials` exchanges a SigV4-signed GetCallerIdentity request at Google STS
for a federated token and, with impersonation, that token at IAM Credentials
`generateAccessToken` for a service-account token. google-auth retries neither call: a 503 from
STS surfaces as an `OAuthError` and a 503 from IAM as a bare `RefreshError`. And its messages
don't say which AWS role was rejected or which grant is missing.

`WorkloadIdentityCredentials` adds both: the STS and IAM calls go through a retrying wrapper
around google-auth's transport (connection errors and 429/5xx, bounded, with backoff), and the
final errors become `RefreshError`s that name the AWS role, the provider and the fix. 4xx are
never retried: a rejected condition is one STS request, not a retry storm.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from google.auth import aws, exceptions

from blocks.ecs import CredentialSource

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES: Final[frozenset[int]] = frozenset({429, 500, 502, 503, 504})
"""Statuses of Google STS / IAM Credentials worth another attempt."""

_SECRET_KEYS: Final = frozenset(
    {
        "authorization",
        "x-amz-security-token",
        "subject_token",
        "secretaccesskey",
        "token",
        "sessiontoken",
        "access_token",
        "accesstoken",
    }
)
_GOOGLE_TRANSPORT_LOGGERS: Final = (
    "google.auth.transport.requests",
    "google.auth.transport.urllib3",
    "google.auth.transport._http_client",
)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: "<redacted>"
            if str(k).lower() in _SECRET_KEYS and isinstance(v, str | bytes)
            else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


class _RedactHttpSecrets(logging.Filter):
    """Scrub what google-auth's DEBUG logs carry in `extra`.

    With DEBUG on the `google` logger, google-auth logs every request's headers and body,
    hashing only OAuth field names: the STS `subject_token` (with the AWS session token) and
    `Authorization: Bearer` headers would be written out as they are.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for attr in ("httpRequest", "httpResponse"):
            if hasattr(record, attr):
                setattr(record, attr, _redact(getattr(record, attr)))
        return True


for _name in _GOOGLE_TRANSPORT_LOGGERS:
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _RedactHttpSecrets) for f in _logger.filters):
        _logger.addFilter(_RedactHttpSecrets())


class WorkloadIdentityError(exceptions.RefreshError):
    """The AWS -> Google exchange failed; the message names the cause and the fix."""


class _RetryingRequest:
    """google-auth transport wrapper that retries the token endpoints' transient failures."""

    def __init__(
        self,
        inner: Callable[..., Any],
        urls: set[str],
        attempts: int,
        backoff: float,
        sleep: Callable[[float], None],
    ) -> None:
        self._inner = inner
        self._urls = {_endpoint(u) for u in urls if u}
        self._attempts = attempts
        self._backoff = backoff
        self._sleep = sleep
        self.exhausted: tuple[str, str] | None = None
        """(url, problem) of the last call that failed on every attempt."""

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        if _endpoint(url) not in self._urls:
            return self._inner(url=url, method=method, **kwargs)
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._inner(url=url, method=method, **kwargs)
            except exceptions.TransportError as exc:
                if attempt == self._attempts:
                    self.exhausted = (url, f"connection failed ({exc})")
                    raise
                problem = "connection failed"
            else:
                if response.status not in RETRYABLE_STATUSES:
                    return response
                if attempt == self._attempts:
                    self.exhausted = (url, f"HTTP {response.status}")
                    return response
                problem = f"HTTP {response.status}"
            logger.info(
                "Transient %s from %s; retrying (attempt %s/%s)",
                problem,
                url,
                attempt,
                self._attempts,
            )
            self._sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class WorkloadIdentityCredentials(aws.Credentials):
    """`google.auth.aws.Credentials` with retried token calls and actionable errors.

    Args:
        retry_attempts: Tries per STS/IAM call on connection errors and 429/5xx.
        retry_backoff_seconds: First wait between tries, doubled each time.
        retry_sleep: Waits between tries; tests pass a recorder.
        *args: Passed to `google.auth.aws.Credentials`.
        **kwargs: Passed to `google.auth.aws.Credentials`.
    """

    def __init__(
        self,
        *args: Any,
        retry_attempts: int = 3,
        retry_backoff_seconds: float = 1.0,
        retry_sleep: Callable[[float], None] = time.sleep,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._retry_attempts = retry_attempts
        self._retry_backoff = retry_backoff_seconds
        self._retry_sleep = retry_sleep

    def _constructor_args(self) -> dict[str, Any]:
        # google-auth rebuilds the credentials from these for copies and for the source
        # credentials of impersonation; keep our settings (and the same supplier) on them.
        args = super()._constructor_args()
        args.update(
            retry_attempts=self._retry_attempts,
            retry_backoff_seconds=self._retry_backoff,
            retry_sleep=self._retry_sleep,
        )
        return args

    @property
    def supplier(self) -> aws.AwsSecurityCredentialsSupplier:
        """The AWS credentials supplier (shared by every copy of these credentials)."""
        return self._aws_security_credentials_supplier

    def refresh(self, request: Any) -> None:
        """Exchange AWS credentials for a Google token, retrying transient failures.

        Raises:
            WorkloadIdentityError: STS or IAM refused or kept failing; the message says why.
            google.auth.exceptions.RefreshError: The supplier found no AWS credentials.
        """
        if isinstance(request, _RetryingRequest):  # inner credentials of impersonation
            super().refresh(request)
            return
        retrying = _RetryingRequest(
            request,
            {self._token_url, self._service_account_impersonation_url},
            self._retry_attempts,
            self._retry_backoff,
            self._retry_sleep,
        )
        try:
            super().refresh(retrying)
        except WorkloadIdentityError:
            raise
        except exceptions.OAuthError as exc:
            raise self._explain_sts(exc, retrying.exhausted) from None
        except exceptions.RefreshError as exc:
            if retrying.exhausted:
                raise self._exhausted(retrying.exhausted) from None
            if self._is_iam_error(exc):
                raise self._explain_iam(exc) from None
            raise
        except exceptions.TransportError:
            if retrying.exhausted:
                raise self._exhausted(retrying.exhausted) from None
            raise

    # -- translation -------------------------------------------------------------------------

    def _source(self) -> CredentialSource | None:
        return getattr(self.supplier, "last_source", None)

    def _who(self) -> str:
        source = self._source()
        if source is None:
            return "the AWS identity"
        role = source.role_arn or "an unknown role"
        text = f"AWS role {role} (credentials from {source.kind}: {source.where})"
        assumed = assumed_role_of(source.role_arn)
        if assumed:
            text += f", which Google sees as attribute.aws_role = {assumed!r}"
        return text

    def _exhausted(self, exhausted: tuple[str, str]) -> WorkloadIdentityError:
        url, problem = exhausted
        return WorkloadIdentityError(
            f"{url} kept failing ({problem}) after {self._retry_attempts} attempts. This is on "
            "Google's side or the network's; a later run can succeed.",
            retryable=True,
        )

    def _explain_sts(
        self, exc: exceptions.OAuthError, exhausted: tuple[str, str] | None
    ) -> WorkloadIdentityError:
        if exhausted:
            return self._exhausted(exhausted)
        body = _json(exc.args[1] if len(exc.args) > 1 else "")
        code = body.get("error") if isinstance(body.get("error"), str) else ""
        description = str(body.get("error_description") or exc.args[0])
        prefix = (
            f"Google STS ({self._token_url}) refused the exchange for provider {self._audience}"
        )
        if code == "unauthorized_client" and "attribute condition" in description:
            return WorkloadIdentityError(
                f"{prefix}: {description} The caller is {self._who()}. Change the provider's "
                "attribute condition to admit this role (e.g. attribute.aws_role == "
                '"arn:aws:sts::ACCOUNT:assumed-role/ROLE"), or run the task with a role it '
                "admits. `python -m blocks doctor` shows the mapped attributes."
            )
        if code == "invalid_target":
            return WorkloadIdentityError(
                f"{prefix}: {description} Check credential_config['audience']: project NUMBER "
                "(not id), pool and provider ids, and that the provider is enabled."
            )
        if code == "invalid_grant":
            # Revoked or expired AWS keys: fetch fresh ones on the next attempt.
            invalidate = getattr(self.supplier, "invalidate", None)
            if invalidate:
                invalidate()
            return WorkloadIdentityError(
                f"{prefix}: {description} The AWS credentials of {self._who()} were not "
                "accepted; they are fetched again on the next attempt.",
                retryable=True,
            )
        return WorkloadIdentityError(f"{prefix}: {description}")

    def _is_iam_error(self, exc: exceptions.RefreshError) -> bool:
        return bool(self._service_account_impersonation_url) and len(exc.args) > 1

    def _explain_iam(self, exc: exceptions.RefreshError) -> WorkloadIdentityError:
        body = _json(exc.args[1])
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        status, message = error.get("status", ""), error.get("message", str(exc.args[0]))
        email = self.service_account_email
        prefix = f"IAM Credentials refused to issue a token for {email}: {message}"
        if status == "PERMISSION_DENIED":
            return WorkloadIdentityError(
                f"{prefix} Grant roles/iam.workloadIdentityUser on {email} to the pool's "
                f"principal for {self._who()} (principalSet://iam.googleapis.com/projects/"
                ".../locations/global/workloadIdentityPools/POOL/attribute.aws_role/...), and "
                "check that the IAM Service Account Credentials API is enabled."
            )
        return WorkloadIdentityError(f"{prefix} ({status or 'no status'}).")


def assumed_role_of(role_arn: str | None) -> str | None:
    """The STS assumed-role ARN prefix Google maps to `attribute.aws_role` for an IAM role ARN.

    `arn:aws:iam::123456789012:role/path/access2bq` becomes
    `arn:aws:sts::123456789012:assumed-role/access2bq`.
    """
    if not role_arn or ":role/" not in role_arn:
        return None
    head, _, resource = role_arn.partition(":role/")
    partition, account = head.split(":")[1], head.split(":")[-1]
    return f"arn:{partition}:sts::{account}:assumed-role/{resource.rsplit('/', 1)[-1]}"


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
