"""The one retry decision, as a table of exceptions and verdicts.

Tableau's errors reach it already translated; their verdicts are tabled in test_tableau_block.py.
"""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gapi
from google.auth import exceptions as gauth
from google.cloud.storage.exceptions import DataCorruption

from flows.errors import ConfigError, CredentialsError, ExportError, PublishError, is_retryable


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(response=response)


def _refresh_error(retryable: bool) -> gauth.RefreshError:
    exc = gauth.RefreshError("exchange failed")
    exc._retryable = retryable
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (gapi.TooManyRequests("slow down"), True),
        (gapi.InternalServerError("oops"), True),
        (gapi.ServiceUnavailable("later"), True),
        (gapi.BadRequest("x", errors=[{"reason": "backendError"}]), True),
        (gapi.Forbidden("x", errors=[{"reason": "rateLimitExceeded"}]), True),
        (gapi.BadRequest("Syntax error", errors=[{"reason": "invalidQuery"}]), False),
        (gapi.Forbidden("Access Denied", errors=[{"reason": "accessDenied"}]), False),
        (gapi.NotFound("Not found: Table"), False),
        (gapi.Forbidden("x", errors=[{"reason": "bytesBilledLimitExceeded"}]), False),
        (DataCorruption(None, "crc32c mismatch"), True),
        (_refresh_error(True), True),
        (_refresh_error(False), False),
        (gauth.TransportError("connection reset"), True),
        (requests.ConnectionError("reset by peer"), True),
        (requests.Timeout("read timed out"), True),
        (_http_error(503), True),
        (_http_error(404), False),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (CredentialsError("STS kept failing (HTTP 503)", retryable=True), True),
        (CredentialsError("rejected by the attribute condition"), False),
        (ConfigError("bad date"), False),
        (ExportError("flaky", retryable=True), True),
        (PublishError("drift"), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_retryable(exc: BaseException, expected: bool) -> None:
    assert is_retryable(exc) is expected


@pytest.mark.parametrize("retryable", [True, False])
def test_credentials_error_is_also_google_auths_refresh_error_with_one_flag(retryable) -> None:
    exc = CredentialsError("exchange failed", fix="Grant the role.", retryable=retryable)

    assert isinstance(exc, gauth.RefreshError)
    assert str(exc) == "exchange failed Grant the role."
    assert (exc.problem, exc.fix) == ("exchange failed", "Grant the role.")
    # google-auth's `retryable` property and PipelineError's flag are the same value.
    assert exc.retryable is retryable and exc._retryable is retryable
    exc.retryable = not retryable
    assert gauth.RefreshError.retryable.fget(exc) is (not retryable)
