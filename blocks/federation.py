"""google-auth's AWS Workload Identity credentials, with bounded retries and errors that help.

`google.auth.aws.Credentials` exchanges a SigV4-signed GetCallerIdentity request at Google STS
for a federated token and, with impersonation, that token at IAM Credentials
`generateAccessToken` for a service-account token. google-auth retries neither call: a 503 from
STS surfaces as an `OAuthError` and a 503 from IAM as a bare `RefreshError`. And its messages
don't say which AWS role was rejected or which grant is missing.

`WorkloadIdentityCredentials` adds both: the STS and IAM calls go through `blocks.retry`
(connection errors and transient statuses, a few tries with a short backoff), and every failure
is raised as a `blocks.errors.CredentialsError` (still a google-auth `RefreshError`): Google's
answer, then the fix from `blocks.explain`'s table filled in with the AWS role the supplier
reported. 4xx are never retried: a rejected condition is one STS request, not a retry storm.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from google.auth import aws, exceptions

from blocks.errors import CredentialsError
from blocks.explain import FixContext, Stage, credentials_error
from blocks.retry import RetriesExhausted, call_with_retries

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


class _RetryingRequest:
    """google-auth transport wrapper that retries the token endpoints' transient failures."""

    def __init__(self, inner: Callable[..., Any], credentials: WorkloadIdentityCredentials) -> None:
        self._inner = inner
        self._credentials = credentials

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        credentials = self._credentials
        stage = credentials._stage_of(url)
        if stage is None:
            return self._inner(url=url, method=method, **kwargs)
        try:
            return call_with_retries(
                lambda: self._inner(url=url, method=method, **kwargs),
                what=url,
                status=lambda response: response.status,
                connection_errors=(exceptions.TransportError,),
                attempts=credentials._retry_attempts,
                backoff_seconds=credentials._retry_backoff,
                sleep=credentials._retry_sleep,
            )
        except RetriesExhausted as exc:
            # Raised inside google-auth's refresh, which passes it through untouched.
            cause = exc.__cause__
            raise credentials_error(
                f"{url} kept failing ({exc.problem}) after {exc.attempts} attempts.",
                cause,
                credentials._fix_context(stage),
                retryable=True,
            ) from cause


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class WorkloadIdentityCredentials(aws.Credentials):
    """`google.auth.aws.Credentials` with retried token calls and actionable errors.

    Args:
        retry_attempts: Tries per STS/IAM call on connection errors and transient statuses.
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

    def without_impersonation(self) -> WorkloadIdentityCredentials:
        """A copy that stops at Google STS's federated token, as google-auth builds the source
        credentials of impersonation (the doctor checks that exchange on its own)."""
        args = self._constructor_args()
        args.update(
            service_account_impersonation_url=None, service_account_impersonation_options={}
        )
        return type(self)(**args)

    def refresh(self, request: Any) -> None:
        """Exchange AWS credentials for a Google token, retrying transient failures.

        Raises:
            CredentialsError: The supplier found no AWS credentials, or STS or IAM refused or
                kept failing; the message says why and what to fix, `retryable` whether a
                later attempt can succeed.
        """
        if isinstance(request, _RetryingRequest):  # inner credentials of impersonation
            super().refresh(request)
            return
        try:
            super().refresh(_RetryingRequest(request, self))
        except CredentialsError:
            raise
        except exceptions.OAuthError as exc:  # Google STS answered with an error
            raise self._sts_error(exc) from exc
        except exceptions.RefreshError as exc:
            if self._service_account_impersonation_url and len(exc.args) > 1:  # IAM's answer
                raise self._iam_error(exc) from exc
            # The supplier's: its message already names what was tried and what to check.
            message = str(exc.args[0]) if exc.args else type(exc).__name__
            raise CredentialsError(message, retryable=exc.retryable) from exc
        except exceptions.TransportError as exc:  # a connection error outside the token calls
            raise CredentialsError(f"No answer: {exc}", retryable=True) from exc

    # -- translation -------------------------------------------------------------------------

    def _stage_of(self, url: str) -> Stage | None:
        """`sts` or `iam` for the token endpoints, None for any other URL."""
        endpoint = _endpoint(url)
        if endpoint == _endpoint(self._token_url):
            return "sts"
        impersonation = self._service_account_impersonation_url
        return "iam" if impersonation and endpoint == _endpoint(impersonation) else None

    def _fix_context(self, stage: Stage) -> FixContext:
        """What the credentials know for the fix: the provider, the account, the AWS role."""
        source = getattr(self.supplier, "last_source", None)
        role_arn = source.role_arn if source else None
        return FixContext(
            stage=stage,
            arn=role_arn,
            role=assumed_role_of(role_arn),
            audience=self._audience,
            service_account=self.service_account_email,
        )

    def _sts_error(self, exc: exceptions.OAuthError) -> CredentialsError:
        body = _json(exc.args[1] if len(exc.args) > 1 else "")
        description = str(body.get("error_description") or exc.args[0])
        retryable = body.get("error") == "invalid_grant"
        if retryable:
            # Revoked or expired AWS keys: fetch fresh ones on the next attempt.
            invalidate = getattr(self.supplier, "invalidate", None)
            if invalidate:
                invalidate()
            description += " The AWS credentials are fetched again on the next attempt."
        return credentials_error(
            f"Google STS refused the exchange: {description}",  # the fixes name the provider
            exc,
            self._fix_context("sts"),
            retryable=retryable,
        )

    def _iam_error(self, exc: exceptions.RefreshError) -> CredentialsError:
        body = _json(exc.args[1])
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        status, message = error.get("status", ""), error.get("message", str(exc.args[0]))
        return credentials_error(
            f"IAM Credentials refused to issue a token for {self.service_account_email}: "
            f"{message} ({status or 'no status'}).",
            exc,
            self._fix_context("iam"),
        )


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
