"""The Tableau Server / Cloud site this pipeline publishes to, and how it signs in.

A sign-in exchanges either a personal access token (PAT: name + secret) or a connected-app JWT
(direct trust: the block mints a fresh, 5-minute JWT per sign-in, signed with the app's secret)
for a REST session token. Nothing is cached: every publish signs in once and always signs out.

Tableau allows ONE session per PAT at a time; a second sign-in with the same token ends the
first session, which then fails with 401002. Publishes that share a token must therefore be
serialized; `TableauServer.concurrency_key` names the Prefect concurrency limit to use.

What Tableau answers is translated here, once, for the sign-in and for every later REST call
(`translate_tableau_errors`): TSC's errors become PublishErrors that say what to fix, with
`retryable` set for 5xx, 408/429 and lost connections.

REST reference: https://help.tableau.com/current/api/rest_api/en-us/REST/rest_api_ref_authentication.htm
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Literal

import jwt
import requests
import tableauserverclient as tsc
from defusedxml import ElementTree as SafeET
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator
from tableauserverclient.server.endpoint.exceptions import (
    FailedSignInError,
    InternalServerError,
    NonXMLResponseError,
    ServerResponseError,
)
from tableauserverclient.server.exceptions import EndpointUnavailableError

from blocks.errors import PipelineError, PublishError
from blocks.retry import TRANSIENT_HTTP_STATUSES

logger = logging.getLogger(__name__)

DEFAULT_JWT_SCOPES: Final[tuple[str, ...]] = (
    "tableau:content:read",
    "tableau:datasources:create",
    "tableau:datasources:update",
    "tableau:datasources:download",
    "tableau:projects:create",
    "tableau:jobs:read",
)
"""What publish() calls: list/download datasources, publish, update data, create projects, jobs."""

JWT_LIFETIME: Final[dt.timedelta] = dt.timedelta(minutes=5)
"""Tableau accepts at most 10 minutes; the JWT is only used for the one sign-in request."""

PAT_SESSION_TAKEN: Final[str] = "401002"
"""Error code Tableau returns when a PAT's session was replaced by another sign-in."""

UPDATE_API_VERSION: Final[str] = "3.13"
"""update_hyper_data needs REST API 3.13 (Tableau Server 2021.3+, Tableau Cloud)."""

PAT_EXPIRY_WARNING: Final[dt.timedelta] = dt.timedelta(days=14)
"""Warn when the signed-in personal access token expires sooner than this."""

_FILTER_UNSAFE: Final[str] = ",&:[]"  # the REST filter grammar cannot escape these

_HINTS_BY_STATUS: Final[dict[str, str]] = {
    "403": " The signing-in user needs site role Creator or Explorer (can publish) and "
    "the Publish permission on the project (plus Overwrite for existing datasources).",
    "404": " Check tableau.project and tableau.datasource.",
    "409": " Another run may have created it concurrently; rerun.",
}
"""What to check, by the HTTP status that starts Tableau's error code."""

_TABLEAU_ERRORS: Final[tuple[type[Exception], ...]] = (
    FailedSignInError,  # 401: at sign-in, or mid-run when the session ended (401002) or expired
    ServerResponseError,  # other 4xx, with Tableau's code, summary and detail
    InternalServerError,  # 5xx
    NonXMLResponseError,  # a 4xx that is not Tableau's XML: a proxy or another server answered
    EndpointUnavailableError,  # TSC refuses a call the server's REST version lacks
    requests.ConnectionError,  # also TLS failures after the sign-in: a dropped connection
    requests.Timeout,
)


@contextmanager
def translate_tableau_errors(doing: str, block: TableauServer) -> Iterator[None]:
    """Turn what Tableau answers while `doing` into a PublishError that says what to fix.

    The one translation of TSC's errors, used by the sign-in and by every REST call of the
    publish. PipelineErrors raised inside, and exceptions it does not know, pass untouched.

    Args:
        doing: What was being done, completing "while trying to ...", e.g. "look up project 'x'".
        block: The block signed in with, named in the messages (never its secrets).

    Raises:
        PublishError: Retryable for 5xx, 408/429, lost connections and timeouts; not for
            refused sign-ins, permissions, missing objects or an old REST version.
    """
    try:
        yield
    except PipelineError:
        raise
    except _TABLEAU_ERRORS as exc:
        # `from None`: the vendor exception references its request, whose body or headers
        # hold the sign-in's secret or the session token; it must not travel into logs or
        # persisted task states.
        error = _explain(exc, doing, block)
        error.code = str(getattr(exc, "code", "") or "") or None  # Tableau's, e.g. "401001"
        raise error from None


def _explain(exc: Exception, doing: str, block: TableauServer) -> PublishError:
    if isinstance(exc, FailedSignInError):
        return PublishError(_explain_sign_in_failure(exc, block), retryable=False)
    if isinstance(exc, EndpointUnavailableError):
        return PublishError(
            f"Tableau cannot {doing}: {exc}. Updating data needs REST API {UPDATE_API_VERSION}+ "
            "(Tableau Server 2021.3+ or Cloud); use tableau.mode=overwrite on older servers.",
            retryable=False,
        )
    if isinstance(exc, InternalServerError):
        return PublishError(
            f"Tableau answered HTTP {exc.code} while trying to {doing}: it is down or "
            "unreachable for now, which is usually transient (retried up to retry.retries times).",
            retryable=True,
        )
    if isinstance(exc, ServerResponseError):
        code = str(exc.code or "")
        status = int(code[:3]) if code[:3].isdigit() else None
        return PublishError(
            f"Tableau refused to {doing}: {code} {exc.summary}: {exc.detail}."
            + _HINTS_BY_STATUS.get(code[:3], ""),
            retryable=status in TRANSIENT_HTTP_STATUSES,
        )
    if isinstance(exc, NonXMLResponseError):
        answer = (exc.args[0] if exc.args else b"") or b""
        text = answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)
        return PublishError(
            f"While trying to {doing}, {block.server_url} answered something that is not a "
            f"Tableau REST error ({' '.join(text.split())[:200]!r}). Check server_url: a proxy "
            "or another server answered.",
            retryable=False,
        )
    return PublishError(
        f"Could not reach {block.server_url} while trying to {doing} ({type(exc).__name__}): "
        "Tableau is down or unreachable, which is usually transient (retried up to "
        "retry.retries times).",
        retryable=True,
    )


def _explain_sign_in_failure(exc: FailedSignInError, block: TableauServer) -> str:
    """Turn a 401 from Tableau into a message that says what to fix (no secrets)."""
    site = repr(block.site) if block.site else "'' (the default site)"
    if str(exc.code) == PAT_SESSION_TAKEN:
        return (
            f"Tableau ended the session of token {block.token_name!r} on {block.server_url} "
            f"site {site} (401002): the token signed in again elsewhere. A personal access "
            "token allows one session at a time, so runs sharing it must not overlap: put "
            f"publishes under the Prefect concurrency limit {block.concurrency_key!r} (limit 1) "
            "or give each deployment its own token."
        )
    who = block.signs_in_as
    if block.auth_method == "pat":
        fix = (
            "Check the token name and secret in the block; PATs expire after 15 days unused "
            "and when revoked — create a new one under My Account Settings"
        )
    else:
        fix = (
            "Check client_id/secret_id/secret_value, that the connected app and its secret are "
            "enabled, that the user exists on the site, that the app allows the scopes "
            f"{list(block.jwt_scopes)}, and that this machine's clock is right (UTC)"
        )
    return (
        f"Tableau rejected the sign-in of {who} to {block.server_url} site {site} "
        f"({exc.code or 401}: {exc.summary}). {fix}. Also check the site: it is the content URL "
        "from the browser address (…/#/site/<content-url>/…), '' for the default site."
    )


class TableauServer(Block):
    """A Tableau Server or Cloud site and how to sign in to it (PAT or connected-app JWT).

    Secrets are `SecretStr`: they never appear in reprs, logs, exceptions or the block
    document shown by the UI/API.

    Example:
        ```python
        from blocks.tableau import TableauServer

        block = TableauServer.load("BLOCK_NAME")
        with block.sign_in() as session:
            projects, _ = session.projects.get()
        ```
    """

    _block_type_name = "Tableau Server"
    _block_type_slug = "tableau-server"
    _description = "A Tableau Server/Cloud site, signed in to with a PAT or a connected-app JWT."
    _documentation_url = (
        "https://help.tableau.com/current/api/rest_api/en-us/REST/rest_api_concepts_auth.htm"
    )

    server_url: str = Field(
        description="Base URL of Tableau Server or Cloud, e.g. https://prod-apnortheast-a.online.tableau.com."
    )
    site: str = Field(
        "",
        description="Site content URL (the part after /site/ in the browser); '' = default site.",
    )
    token_name: str | None = Field(None, description="Personal access token name (PAT auth).")
    token_secret: SecretStr | None = Field(
        None, description="Personal access token secret (PAT auth)."
    )
    client_id: str | None = Field(None, description="Connected app client ID (JWT auth).")
    secret_id: str | None = Field(None, description="Connected app secret ID (JWT auth).")
    secret_value: SecretStr | None = Field(
        None, description="Connected app secret value (JWT auth)."
    )
    username: str | None = Field(
        None, description="Tableau user the connected app signs in as (JWT auth)."
    )
    jwt_scopes: tuple[str, ...] = Field(
        DEFAULT_JWT_SCOPES, description="Scopes requested in the JWT (JWT auth)."
    )
    verify_ssl: bool = Field(
        True, description="Verify the server's TLS certificate. Turn off only for tests."
    )
    http_timeout: float = Field(
        600,
        gt=0,
        description="Seconds to wait for one HTTP response; raise it if large publishes time out.",
    )

    @field_validator("server_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"server_url {value!r} must start with https://")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> TableauServer:
        pat = (self.token_name, self.token_secret)
        app = (self.client_id, self.secret_id, self.secret_value, self.username)
        if any(pat) and any(app):
            raise ValueError(
                "Choose one auth method: token_name/token_secret (PAT) or "
                "client_id/secret_id/secret_value/username (connected app), not both"
            )
        if any(pat) and not all(pat):
            raise ValueError("PAT auth needs both token_name and token_secret")
        if any(app) and not all(app):
            names = ("client_id", "secret_id", "secret_value", "username")
            missing = [n for n, v in zip(names, app, strict=True) if not v]
            raise ValueError(f"Connected-app auth is missing {', '.join(missing)}")
        if not any(pat) and not any(app):
            raise ValueError(
                "No credentials: set token_name + token_secret (PAT), or client_id + secret_id + "
                "secret_value + username (connected app)"
            )
        return self

    @property
    def auth_method(self) -> Literal["pat", "jwt"]:
        """Which credentials the block holds."""
        return "pat" if self.token_name else "jwt"

    @property
    def signs_in_as(self) -> str:
        """Who signs in, for logs and messages: the token's or app's name, never a secret."""
        if self.auth_method == "pat":
            return f"personal access token {self.token_name!r}"
        return f"connected app {self.client_id!r} (user {self.username!r})"

    @property
    def concurrency_key(self) -> str:
        """Name of the Prefect concurrency limit that serializes sign-ins sharing a token.

        Derived from server, site and token name (or app client id + user); no secret inside.
        """
        who = self.token_name if self.auth_method == "pat" else f"{self.client_id}/{self.username}"
        digest = hashlib.sha256(f"{self.server_url}|{self.site}|{who}".encode()).hexdigest()
        return f"tableau-{self.auth_method}-{digest[:12]}"

    def _mint_jwt(self, now: dt.datetime | None = None) -> str:
        assert self.secret_value is not None  # the validator guarantees it
        now = now or dt.datetime.now(dt.UTC)
        claims = {
            "iss": self.client_id,
            "sub": self.username,
            "aud": "tableau",
            "exp": now + JWT_LIFETIME,
            "jti": str(uuid.uuid4()),
            "scp": list(self.jwt_scopes),
        }
        headers = {"kid": self.secret_id, "iss": self.client_id}
        return jwt.encode(
            claims, self.secret_value.get_secret_value(), algorithm="HS256", headers=headers
        )

    def _credentials(self) -> tsc.models.tableau_auth.Credentials:
        if self.auth_method == "pat":
            assert self.token_secret is not None
            return tsc.PersonalAccessTokenAuth(
                self.token_name, self.token_secret.get_secret_value(), site_id=self.site
            )
        return tsc.JWTAuth(self._mint_jwt(), site_id=self.site)

    def new_session(self) -> tsc.Server:
        """A TSC server for this block's URL and HTTP options, not signed in."""
        return tsc.Server(
            self.server_url,
            use_server_version=True,  # else TSC stays on REST 2.4; update_hyper_data needs 3.13
            http_options={"timeout": self.http_timeout, "verify": self.verify_ssl},
        )

    @contextmanager
    def sign_in(self) -> Iterator[tsc.Server]:
        """Sign in, yield the session (a TSC server on the site's REST version), always sign out.

        Raises:
            PublishError: the sign-in was refused (not retryable; the message says what to
                fix) or Tableau could not be reached (retryable unless it is a TLS problem).
        """
        session = self.new_session()
        try:
            self._sign_in(session)
            logger.info(
                "Signed in to %s site %r with %s (REST API %s)",
                self.server_url,
                self.site,
                self.signs_in_as,
                session.version,
            )
            yield session
        finally:
            self._sign_out(session)

    def _sign_in(self, session: tsc.Server) -> None:
        with translate_tableau_errors(f"sign in to {self.server_url} (site {self.site!r})", self):
            try:
                session.auth.sign_in(self._credentials())
            except requests.exceptions.SSLError as exc:
                # At the first contact a TLS failure is the setup's (CA, URL), not a blip.
                raise PublishError(
                    f"TLS verification of {self.server_url} failed ({type(exc).__name__}). Install "
                    "the server's CA certificate (REQUESTS_CA_BUNDLE) or fix server_url.",
                    retryable=False,
                ) from None

    def _sign_out(self, session: tsc.Server) -> None:
        try:
            if session.is_signed_in():
                session.auth.sign_out()
                logger.info("Signed out of %s", self.server_url)
        except Exception as exc:  # never hide the publish's own outcome behind a sign-out error
            logger.warning(
                "Sign-out from %s failed (%s); the session expires on its own",
                self.server_url,
                type(exc).__name__,
            )
        finally:
            session.close()


# -- lookups shared by the publish (flows.tableau) and the doctor (blocks.tableau_doctor) -------


def _by_name(endpoint: object, name: str) -> Iterator[object]:
    options = tsc.RequestOptions(pagesize=1000)
    if not any(c in name for c in _FILTER_UNSAFE):
        options.filter.add(tsc.Filter("name", tsc.RequestOptions.Operator.Equals, name))
    return (item for item in tsc.Pager(endpoint, options) if item.name == name)


def project_parts(path: str) -> list[str]:
    """The names of a nested project path, top first: "Marketing/Ads" -> ["Marketing", "Ads"]."""
    return [p.strip() for p in path.split("/") if p.strip()]


def find_project(
    session: tsc.Server, path: str, block: TableauServer, *, create: bool = False
) -> tuple[tsc.ProjectItem | None, str]:
    """Walk the project path (`A/B`) from the top; create missing parts when `create`.

    Returns:
        The project and `path`, or None and the first path that does not exist (without
        `create`).

    Raises:
        PublishError: Tableau refused or failed a lookup or a creation.
    """
    parts = project_parts(path)
    parent_id: str | None = None
    project = None
    for depth, name in enumerate(parts):
        prefix = "/".join(parts[: depth + 1])
        with translate_tableau_errors(f"look up project {prefix!r}", block):
            found = [
                p for p in _by_name(session.projects, name) if (p.parent_id or None) == parent_id
            ]
        if found:
            project = found[0]
        elif create:
            with translate_tableau_errors(f"create project {prefix!r}", block):
                project = session.projects.create(tsc.ProjectItem(name, parent_id=parent_id))
            logger.info("Created Tableau project %r", prefix)
        else:
            return None, prefix
        parent_id = project.id
    assert project is not None
    return project, path


def project_not_found(path: str, block: TableauServer) -> PublishError:
    """The error of a missing project (`path` is the first part that does not exist)."""
    return PublishError(
        f"Tableau project {path!r} not found on site {block.site!r}. Create it, fix "
        "tableau.project, or set tableau.create_project=true.",
        retryable=False,
    )


def find_datasource(
    session: tsc.Server, project: tsc.ProjectItem, name: str, block: TableauServer
) -> tsc.DatasourceItem | None:
    """The datasource `name` in `project`, or None."""
    with translate_tableau_errors(f"look up datasource {name!r}", block):
        found = [d for d in _by_name(session.datasources, name) if d.project_id == project.id]
    return found[0] if found else None


@dataclass(frozen=True)
class TokenExpiry:
    """When the signed-in personal access token expires, as far as Tableau says.

    Tableau Cloud lists a user's PATs with their expiry (REST `GET .../users/{id}/
    personal-access-tokens`); Tableau Server has no such method and connected apps sign in
    with no PAT: then `expires_at` is None and `unknown_because` says why.
    """

    token_name: str | None
    expires_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    unknown_because: str | None = None

    def left(self, now: dt.datetime | None = None) -> dt.timedelta | None:
        """Time until expiry; None when unknown."""
        if self.expires_at is None:
            return None
        return self.expires_at - (now or dt.datetime.now(dt.UTC))

    def warning(self, block: TableauServer, now: dt.datetime | None = None) -> str | None:
        """A line for the run report when the token expires within `PAT_EXPIRY_WARNING`."""
        left = self.left(now)
        if left is None or left > PAT_EXPIRY_WARNING:
            return None
        assert self.expires_at is not None
        return (
            f"Tableau personal access token {self.token_name!r} expires "
            f"{self.expires_at:%Y-%m-%d %H:%M} UTC ({describe_left(left)}); after that every "
            "run fails at sign-in (401001). Create a new token in Tableau (your avatar > My "
            "Account Settings > Personal Access Tokens > Create new token) and save its name "
            f"and secret in the TableauServer block{_saved_name(block)} (Prefect UI > Blocks > "
            "Edit: token_name, token_secret; or rerun deployments/register_blocks.sh)."
        )


def _saved_name(block: TableauServer) -> str:
    name = getattr(block, "_block_document_name", None)
    return f" {name!r}" if name else ""


def describe_left(left: dt.timedelta) -> str:
    """ "in 3 days 4 h", "in 5 h", or "ALREADY EXPIRED"."""
    if left.total_seconds() < 0:
        return "ALREADY EXPIRED"
    days, hours = left.days, left.seconds // 3600
    return f"in {days} day(s) {hours} h" if days else f"in {hours} h"


def token_expiry(session: tsc.Server, block: TableauServer) -> TokenExpiry:
    """The signed-in PAT's expiry from Tableau Cloud's list of the user's tokens.

    Never raises: what cannot be known (Tableau Server, a connected app, a refused or failed
    listing) comes back with `unknown_because`. The answer holds no secret: names and dates.
    """
    if block.auth_method == "jwt":
        return TokenExpiry(
            None,
            unknown_because="a connected app signs in with a new JWT each time: no personal "
            "access token to expire",
        )
    url = f"{session.users.baseurl}/{session.user_id}/personal-access-tokens"
    try:
        with translate_tableau_errors("list the user's personal access tokens", block):
            content = session.users.get_request(url).content
        root = SafeET.fromstring(content)
    except (PublishError, SafeET.ParseError) as exc:
        if isinstance(exc, PublishError) and exc.retryable:  # down or unreachable for now
            why = f"Tableau could not list the personal access tokens now: {_first_line(exc)}"
        else:  # Tableau Server answers 4xx: only Tableau Cloud lists PATs
            why = (
                "Tableau did not list the user's personal access tokens (only Tableau Cloud "
                f"does; Tableau Server has no such REST method): {_first_line(exc)}"
            )
        return TokenExpiry(block.token_name, unknown_because=why)
    tokens = [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "personalAccessToken"]
    mine = next((e for e in tokens if e.get("tokenName") == block.token_name), None)
    if mine is None:
        return TokenExpiry(
            block.token_name,
            unknown_because=f"the token is not among the {len(tokens)} the user's list holds",
        )
    return TokenExpiry(
        block.token_name,
        expires_at=_timestamp(mine.get("expiresAt")),
        last_used_at=_timestamp(mine.get("lastUsedAt")),
        unknown_because=None if mine.get("expiresAt") else "Tableau gave no expiresAt",
    )


def _timestamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).astimezone(dt.UTC)
    except ValueError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 300 else text[:300] + " ..."
