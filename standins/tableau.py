"""A loopback fake of the Tableau REST API, as much of it as tableauserverclient uses to publish.

Answers in the XML shapes of TSC's own test assets (tableauserverclient `test/assets/`):
serverInfo; sign-in/out with a PAT or a connected-app JWT (one session per PAT: a second
sign-in ends the first, whose next call gets 401002; `peak_pat_sessions` records whether that
ever happened); projects (nested, paged, created);
datasources (list filtered by name/project, get, publish single or multipart-chunked via
fileUploads, CreateNew/Overwrite/Append, asJob, download as .tdsx with or without the extract);
`PATCH .../data` (update_hyper_data, idempotent per RequestID) returning a job; jobs by id.

It stores real .hyper files and applies changes with the Hyper API (`HyperStore`), so tests
assert real rows. Failure injection: `fail_signin`, `fail` (status N times on a route),
`fail_jobs` (the next update job fails before it starts), `fail_mid_batch` (the next update
batch fails part-way, e.g. between its delete and its insert, and is rolled back),
`hold_jobs` (a slow job that waits on an Event). `reset()` clears everything.

What the Tableau doctor reads, with state of its own: the user's site role (`set_site_role`)
and groups (`add_group`), permission rules on projects, datasources and a project's default
datasource permissions (`grant`, `lock_project`), enforced on publish, update and download
with Tableau's precedence (administrators, owners and project leaders first; then the user's
own rules, Deny winning; then the groups', Deny winning; else not allowed); the PAT list of
Tableau Cloud with each token's `expiresAt` (`pat_expires`; an expired token's sign-in gets
401001, as a revoked one: `revoke_pat`), which Tableau Server lacks (`cloud=False`: 404003);
a disabled connected app (`disable_app`); and the server's product and REST versions.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
import tempfile
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import jwt

from standins.loopback import LoopbackServer, Request, Response
from standins.tableau_hyper import ActionError, BatchFault, HyperStore

NS = "http://tableau.com/api"
_HEAD = (
    f"<?xml version='1.0' encoding='UTF-8'?><tsResponse xmlns=\"{NS}\" "
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
)
_API = re.compile(r"^/api/(?P<version>[0-9.]+)/(?P<rest>.*)$")
ADMIN_ROLES = frozenset(
    {"ServerAdministrator", "SiteAdministratorCreator", "SiteAdministratorExplorer"}
)
PUBLISH_ROLES = ADMIN_ROLES | {"Creator", "ExplorerCanPublish"}
"""Site roles that may publish at all (Tableau's: a Viewer or Explorer cannot)."""
PAT_LIFETIME = dt.timedelta(days=180)  # Tableau Cloud's default expiry of a new token
_SITE = re.compile(r"^sites/(?P<site>[^/]+)/(?P<rest>.*)$")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _xml(body: str, status: int = 200) -> Response:
    return Response.xml(f"{_HEAD}{body}</tsResponse>", status)


def _error(status: int, code: str, summary: str, detail: str) -> Response:
    return _xml(
        f'<error code="{code}"><summary>{summary}</summary><detail>{detail}</detail></error>',
        status,
    )


def _denied(action: str, name: str) -> Response:
    return _error(403, "403004", "Forbidden", f"The user may not {action} datasource {name!r}")


def _multipart(request: Request) -> dict[str, bytes]:
    """Split a multipart/mixed body into {part name: content}."""
    boundary = request.headers.get("content-type", "").partition("boundary=")[2].strip('"')
    parts: dict[str, bytes] = {}
    for chunk in request.body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name:
            parts[name.group(1).decode()] = content[:-2]  # drop the CRLF before the boundary
    return parts


@dataclass
class _Session:
    site_id: str
    user_id: str
    pat: str | None
    ended: str | None = None  # None = live; else the error code a call gets


@dataclass
class _Project:
    id: str
    name: str
    parent_id: str | None
    owner_id: str
    content_permissions: str = "ManagedByOwner"


@dataclass
class _Datasource:
    id: str
    name: str
    project_id: str
    created_at: str
    updated_at: str
    owner_id: str = ""
    type: str = "hyper"  # published from a .hyper file: live-to-Hyper, updatable


@dataclass(frozen=True)
class _BatchFault:
    after_actions: int
    notes: str
    finish_code: int  # 1 failed, 2 cancelled (TSC's JobItem.FinishCode)


@dataclass
class _Job:
    id: str
    type: str
    ds: _Datasource | None
    finish_code: int | None = None  # None while running; 0 success, 1 failed, 2 cancelled
    notes: str = ""
    created_at: str = field(default_factory=_now)
    completed_at: str | None = None


class FakeTableauServer(LoopbackServer):
    """A fake Tableau Server on 127.0.0.1 with one site, a PAT and a connected app."""

    def __init__(
        self,
        *,
        site: str = "acme",
        token_name: str = "pipeline",
        token_secret: str = "pat-secret-value",
        client_id: str = "app-client-id",
        secret_id: str = "app-secret-id",
        secret_value: str = "app-secret-value-0123456789abcdef",
        username: str = "etl@example.com",
        rest_version: str = "3.22",
        product_version: str = "2024.2.0",
    ) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="fake-tableau-"))
        self.store = HyperStore(self._root)
        self.site_content_url = site
        self.site_id = str(uuid.uuid4())
        self._initial = (dict({token_name: token_secret}), rest_version, product_version)
        self.apps = {client_id: (secret_id, secret_value)}
        self.users = {username: str(uuid.uuid4())}
        self.admin_id = str(uuid.uuid4())  # owns what the tests' user did not create
        self._init_state()
        super().__init__()

    def _init_state(self) -> None:
        self.pats: dict[str, str] = dict(self._initial[0])
        self.rest_version, self.product_version = self._initial[1], self._initial[2]
        self.cloud = True  # lists PATs, as Tableau Cloud does; False: as Tableau Server
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.pat_expires: dict[str, dt.datetime] = {n: now + PAT_LIFETIME for n in self.pats}
        self.pat_last_used: dict[str, dt.datetime] = {}
        self.disabled_apps: set[str] = set()
        self.site_roles = {user_id: "SiteAdministratorCreator" for user_id in self.users.values()}
        self.groups: dict[str, tuple[str, set[str]]] = {
            str(uuid.uuid4()): ("All Users", set(self.users.values()))
        }
        # (kind, id) -> [(grantee kind, grantee id, {capability: mode})]; kind "project",
        # "datasource" or "project-datasources" (a project's default datasource permissions)
        self.permissions: dict[tuple[str, str], list[tuple[str, str, dict[str, str]]]] = {}
        self.hide_permissions = False  # permissions answer 403, as to a user who may not read them
        self.sessions: dict[str, _Session] = {}
        self.signins = 0
        self.signouts = 0
        # The most sessions of one PAT live at once, counting the one a sign-in ended: 2 means
        # two clients overlapped on a token (real Tableau ends the older session too).
        self.peak_pat_sessions = 0
        self.projects: dict[str, _Project] = {}
        self.datasources: dict[str, _Datasource] = {}
        self.uploads: dict[str, bytearray] = {}
        self.jobs: dict[str, _Job] = {}
        self.request_ids: dict[str, str] = {}
        self.update_batches: list[list[dict[str, Any]]] = []
        self.chunks_received = 0
        self._signin_failures: list[tuple[int, str]] = []
        self._route_failures: list[list[Any]] = []  # [method, regex, status, code, times]
        self._job_failures: list[str] = []
        self._batch_faults: list[_BatchFault] = []
        self.discarded: list[int] = []  # rows each faulted batch had changed before rollback
        self._job_gate: threading.Event | None = None
        self._job_threads: list[threading.Thread] = []
        self.add_project("default")

    # ---- test helpers -------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything: sessions, projects, datasources, jobs and injected failures."""
        self.release_jobs()
        with self._lock:
            super().reset()
            for path in self._root.glob("*.hyper"):
                path.unlink()
            self._init_state()

    def close(self) -> None:
        self.release_jobs()
        super().close()
        self.store.close()
        shutil.rmtree(self._root, ignore_errors=True)

    def add_project(
        self, name: str, parent_id: str | None = None, *, owner_id: str | None = None
    ) -> str:
        project = _Project(str(uuid.uuid4()), name, parent_id, owner_id or self.admin_id)
        self.projects[project.id] = project
        return project.id

    def add_datasource(
        self, name: str, project_id: str, *, type: str = "hyper", owner_id: str | None = None
    ) -> str:
        """A datasource without stored rows (what the doctor reads: name, type, owner)."""
        ds = _Datasource(
            str(uuid.uuid4()), name, project_id, _now(), _now(), owner_id or self.admin_id, type
        )
        self.datasources[ds.id] = ds
        return ds.id

    @property
    def user_id(self) -> str:
        """The user the PAT and the connected app sign in as."""
        return next(iter(self.users.values()))

    def set_site_role(self, role: str) -> None:
        self.site_roles[self.user_id] = role

    def add_group(self, name: str, *, member: bool = True) -> str:
        group_id = str(uuid.uuid4())
        self.groups[group_id] = (name, {self.user_id} if member else set())
        return group_id

    def grant(
        self,
        kind: str,
        resource_id: str,
        capability: str,
        mode: str = "Allow",
        *,
        group_id: str | None = None,
    ) -> None:
        """A permission rule for the user (or `group_id`) on a project, a datasource, or a
        project's default datasource permissions (kind "project-datasources")."""
        grantee = ("group", group_id) if group_id else ("user", self.user_id)
        rules = self.permissions.setdefault((kind, resource_id), [])
        for g_kind, g_id, capabilities in rules:
            if (g_kind, g_id) == grantee:
                capabilities[capability] = mode
                return
        rules.append((*grantee, {capability: mode}))

    def lock_project(self, project_id: str) -> None:
        """Content permissions locked to the project: its default datasource rules apply."""
        self.projects[project_id].content_permissions = "LockedToProject"

    def revoke_pat(self, name: str) -> None:
        self.pats.pop(name, None)

    def disable_app(self, client_id: str) -> None:
        self.disabled_apps.add(client_id)

    def allowed(self, user_id: str, kind: str, resource_id: str, capability: str) -> bool:
        """Whether Tableau lets the user do `capability` on a project or datasource."""
        role = self.site_roles.get(user_id, "Unlicensed")
        if role in ADMIN_ROLES:
            return True
        if capability in {"Write", "Delete"} and role not in PUBLISH_ROLES:
            return False
        ds = self.datasources.get(resource_id) if kind == "datasource" else None
        project = self.projects[ds.project_id if ds else resource_id]
        if (ds is not None and ds.owner_id == user_id) or project.owner_id == user_id:
            return True
        if self._mode(user_id, ("project", project.id), "ProjectLeader") == "Allow":
            return True
        key = (kind, resource_id)
        if ds is not None and project.content_permissions.startswith("LockedToProject"):
            key = ("project-datasources", project.id)
        return self._mode(user_id, key, capability) == "Allow"

    def _mode(self, user_id: str, key: tuple[str, str], capability: str) -> str | None:
        rules = self.permissions.get(key, [])
        mine = {c.get(capability) for k, i, c in rules if (k, i) == ("user", user_id)}
        groups = {g for g, (_, members) in self.groups.items() if user_id in members}
        theirs = {c.get(capability) for k, i, c in rules if k == "group" and i in groups}
        for modes in (mine, theirs):  # the user's own rules first, then the groups'
            if "Deny" in modes:
                return "Deny"
            if "Allow" in modes:
                return "Allow"
        return None

    def fail_signin(self, code: str = "401001", status: int = 401, times: int = 1) -> None:
        """The next `times` sign-ins fail with this error code."""
        self._signin_failures += [(status, code)] * times

    def fail(
        self, method: str, path_regex: str, status: int, *, times: int = 1, code: str = ""
    ) -> None:
        """Answer `status` to the next `times` requests whose method and path match."""
        self._route_failures.append(
            [method.upper(), re.compile(path_regex), status, code or f"{status}000", times]
        )

    def fail_jobs(self, notes: str = "Hyper update failed: injected by the test") -> None:
        """The next update job fails with these notes before running any action."""
        self._job_failures.append(notes)

    def fail_mid_batch(
        self,
        after_actions: int = 1,
        *,
        notes: str = "Hyper update failed part-way: injected by the test",
        cancelled: bool = False,
    ) -> None:
        """The next update batch fails after its first `after_actions` actions (one shot).

        Those actions really run (the default, 1, is the delete of a replace_date batch),
        on the batch's working copy; then the job ends as Tableau reports a job that broke
        off: finish code 1 (failed) with `notes`, or 2 (cancelled, e.g. by an administrator)
        when `cancelled`. The copy is discarded, so the datasource stays exactly as it was;
        `discarded` gets the rows the applied actions had changed, to show that they ran.
        A batch of fewer actions fails after its last one, still before the commit.
        """
        self._batch_faults.append(_BatchFault(after_actions, notes, 2 if cancelled else 1))

    def hold_jobs(self) -> threading.Event:
        """Jobs stay in progress until the returned Event is set (or `release_jobs`)."""
        self._job_gate = threading.Event()
        return self._job_gate

    def release_jobs(self) -> None:
        """Let held jobs run and wait until they have finished."""
        gate, threads = self._job_gate, list(self._job_threads)
        if gate is not None:
            gate.set()
        for thread in threads:
            thread.join(timeout=30)
        self._job_gate = None
        self._job_threads.clear()

    @property
    def active_sessions(self) -> int:
        """Sessions signed in and neither signed out nor ended by Tableau."""
        return sum(1 for s in self.sessions.values() if s.ended is None)

    def datasource(self, name: str) -> _Datasource:
        matches = [d for d in self.datasources.values() if d.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} datasources named {name!r}")
        return matches[0]

    def stored_file(self, name: str) -> Path:
        return self.store.path(self.datasource(name).id)

    def rows(self, name: str, columns: str = "*", order_by: str = "") -> list[list[Any]]:
        """Rows of the stored extract (SQL column list, optional ORDER BY clause)."""
        order = f" ORDER BY {order_by}" if order_by else ""
        return self.store.query(self.datasource(name).id, f"SELECT {columns} FROM {{table}}{order}")

    def rows_by_date(self, name: str, date_column: str = "date") -> dict[dt.date, int]:
        """How many rows the stored extract holds per date."""
        col = '"' + date_column.replace('"', '""') + '"'
        rows = self.store.query(
            self.datasource(name).id, f"SELECT {col}, COUNT(*) FROM {{table}} GROUP BY {col}"
        )
        return {dt.date(d.year, d.month, d.day): int(n) for d, n in rows}

    def project_path(self, project_id: str) -> str:
        parts, current = [], self.projects.get(project_id)
        while current is not None:
            parts.append(current.name)
            current = self.projects.get(current.parent_id or "")
        return "/".join(reversed(parts))

    # ---- HTTP ---------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        match = _API.match(request.path)
        if not match:
            return _error(404, "404000", "Resource Not Found", request.path)
        rest = match["rest"]
        with self._lock:
            for failure in self._route_failures:
                method, regex, status, code, times = failure
                if times > 0 and method == request.method and regex.search(rest):
                    failure[4] -= 1
                    return _error(status, code, "Injected failure", f"{request.method} {rest}")
        if rest == "serverInfo":
            return self._server_info()
        if rest == "auth/signin" and request.method == "POST":
            with self._lock:  # two sign-ins of one PAT at once: one must see the other
                return self._sign_in(request)
        session = self.sessions.get(request.headers.get("x-tableau-auth", ""))
        if rest == "auth/signout" and request.method == "POST":
            if session is not None and session.ended is None:
                session.ended = "signed-out"
                self.signouts += 1
            return Response(204)
        if session is None:
            return _error(401, "401000", "Unauthorized", "Missing or unknown auth token")
        if session.ended is not None:
            return _error(
                401, "401002", "Unauthorized Access", "Invalid authentication credentials"
            )
        site = _SITE.match(rest)
        if not site or site["site"] != self.site_id:
            return _error(404, "404000", "Resource Not Found", rest)
        with self._lock:
            return self._route(request, site["rest"])

    def _route(self, request: Request, rest: str) -> Response:
        method, parts = request.method, rest.split("/")
        user_id = self.sessions[request.headers.get("x-tableau-auth", "")].user_id
        if parts[0] == "users" and len(parts) >= 2 and method == "GET":
            return self._users(request, parts[1], parts[2:], user_id)
        if method == "GET" and parts[2:] in (
            ["permissions"],
            ["default-permissions", "datasources"],
        ):
            return self._permissions(parts)
        if parts[0] == "projects":
            if method == "GET":
                return self._list_projects(request)
            if method == "POST":
                return self._create_project(request)
        if parts[0] == "fileUploads":
            if method == "POST" and len(parts) == 1:
                upload_id = f"{uuid.uuid4().hex}:0"
                self.uploads[upload_id] = bytearray()
                return _xml(f'<fileUpload uploadSessionId="{upload_id}" fileSize="0"/>', 201)
            if method == "PUT" and len(parts) == 2:
                return self._append_upload(request, parts[1])
        if parts[0] == "datasources":
            if len(parts) == 1 and method == "GET":
                return self._list_datasources(request)
            if len(parts) == 1 and method == "POST":
                return self._publish(request)
            ds = self.datasources.get(parts[1]) if len(parts) > 1 else None
            if ds is None:
                return _error(404, "404011", "Resource Not Found", f"Datasource {parts[1:]}")
            if len(parts) == 2 and method == "GET":
                return _xml(self._ds_xml(ds))
            if parts[2:] == ["content"] and method == "GET":
                if not self.allowed(user_id, "datasource", ds.id, "ExportXml"):
                    return _denied("download", ds.name)
                return self._download(request, ds)
            if parts[2:] == ["data"] and method == "PATCH":
                if not self.allowed(user_id, "datasource", ds.id, "Write"):
                    return _denied("update", ds.name)
                return self._update_data(request, ds)
        if parts[0] == "jobs" and len(parts) == 2 and method == "GET":
            job = self.jobs.get(parts[1])
            if job is None:
                return _error(404, "404031", "Resource Not Found", f"Job {parts[1]}")
            return _xml(self._job_xml(job))
        return _error(405, "405000", "Method Not Allowed", f"{method} {rest}")

    def _server_info(self) -> Response:
        return _xml(
            f'<serverInfo><productVersion build="{self.product_version.replace(".", "")}.24.0101">'
            f"{self.product_version}</productVersion>"
            f"<restApiVersion>{self.rest_version}</restApiVersion></serverInfo>"
        )

    def _sign_in(self, request: Request) -> Response:
        if self._signin_failures:
            status, code = self._signin_failures.pop(0)
            return _error(status, code, "Signin Error", "Injected sign-in failure")
        creds = ET.fromstring(request.body).find("credentials")
        if creds is None:
            return _error(400, "400000", "Bad Request", "No credentials element")
        site = creds.find("site")
        if site is None or site.get("contentUrl") != self.site_content_url:
            return _error(401, "401001", "Signin Error", "Site not found")
        pat, user_id = creds.get("personalAccessTokenName"), None
        if pat is not None:
            if self.pats.get(pat) != creds.get("personalAccessTokenSecret"):
                return _error(401, "401001", "Signin Error", "Error signing in to Tableau Server")
            now = dt.datetime.now(dt.UTC)
            if self.pat_expires.get(pat, now) <= now:  # expired: Tableau answers as to a typo
                return _error(401, "401001", "Signin Error", "Error signing in to Tableau Server")
            self.pat_last_used[pat] = now.replace(microsecond=0)
            user_id = self.user_id
            live = [s for s in self.sessions.values() if s.pat == pat and s.ended is None]
            self.peak_pat_sessions = max(self.peak_pat_sessions, len(live) + 1)
            for other in live:  # one session per PAT: the older one ends
                other.ended = "401002"
        elif creds.get("jwt") is not None:
            user_id = self._check_jwt(creds.get("jwt", ""))
            if user_id is None:
                return _error(401, "401001", "Signin Error", "Invalid JWT")
        else:
            return _error(401, "401001", "Signin Error", "Unsupported credentials")
        token = uuid.uuid4().hex
        self.sessions[token] = _Session(self.site_id, user_id, pat)
        self.signins += 1
        return _xml(
            f'<credentials token="{token}"><site id="{self.site_id}" '
            f'contentUrl="{self.site_content_url}"/><user id="{user_id}"/></credentials>'
        )

    def _check_jwt(self, token: str) -> str | None:
        try:
            header = jwt.get_unverified_header(token)
            secret_id, secret = self.apps[header["iss"]]
            if header.get("kid") != secret_id or header["iss"] in self.disabled_apps:
                return None
            claims = jwt.decode(token, secret, algorithms=["HS256"], audience="tableau")
        except (jwt.PyJWTError, KeyError):
            return None
        if "scp" not in claims or "jti" not in claims:
            return None
        return self.users.get(claims.get("sub", ""))

    def _users(self, request: Request, user_id: str, rest: list[str], caller: str) -> Response:
        """A user (site role), its groups, its PATs: to itself or to an administrator."""
        name = next((n for n, i in self.users.items() if i == user_id), None)
        if name is None:
            return _error(404, "404002", "Resource Not Found", f"User {user_id}")
        if caller != user_id and self.site_roles.get(caller) not in ADMIN_ROLES:
            return _error(403, "403133", "Forbidden", "Only administrators may query other users")
        if not rest:
            return _xml(
                f'<user id="{user_id}" name={quoteattr(name)} '
                f'siteRole="{self.site_roles[user_id]}" authSetting="ServerDefault" '
                f'lastLogin="{_now()}" externalAuthUserId="" fullName="" email=""/>'
            )
        if rest == ["groups"]:
            items = [
                f'<group id="{g}" name={quoteattr(n)}><domain name="local"/></group>'
                for g, (n, members) in self.groups.items()
                if user_id in members
            ]
            return self._paged(request, items, "groups")
        if rest == ["personal-access-tokens"] and self.cloud:
            now = dt.datetime.now(dt.UTC)
            tokens = "".join(
                f"<personalAccessToken tokenName={quoteattr(n)} "
                f'tokenGuid="{uuid.uuid5(uuid.NAMESPACE_OID, n)}" '
                f'lastUsedAt="{self.pat_last_used.get(n, now):%Y-%m-%dT%H:%M:%SZ}" '
                f'expiresAt="{self.pat_expires[n]:%Y-%m-%dT%H:%M:%SZ}"/>'
                for n in self.pats
                if self.pat_expires.get(n, now) > now
            )
            return _xml(f"<personalAccessTokens>{tokens}</personalAccessTokens>")
        # Tableau Server has no PAT list: an unknown resource, as for any path it lacks.
        return _error(404, "404003", "Resource Not Found", f"Unknown resource users/{user_id}")

    def _permissions(self, parts: list[str]) -> Response:
        kind = {"projects": "project", "datasources": "datasource"}.get(parts[0], "")
        resource_id = parts[1] if len(parts) > 1 else ""
        known = self.projects if kind == "project" else self.datasources
        if resource_id not in known:
            return _error(404, "404000", "Resource Not Found", "/".join(parts))
        if self.hide_permissions:
            return _error(403, "403004", "Forbidden", "Not allowed to read the permissions")
        if parts[2] == "default-permissions":
            kind = "project-datasources"
        owner = known[resource_id].owner_id
        rules = "".join(
            f'<granteeCapabilities><{g_kind} id="{g_id}"/><capabilities>'
            + "".join(f'<capability name="{c}" mode="{m}"/>' for c, m in capabilities.items())
            + "</capabilities></granteeCapabilities>"
            for g_kind, g_id, capabilities in self.permissions.get((kind, resource_id), [])
        )
        tag = "datasource" if kind == "datasource" else "project"
        return _xml(
            f'<permissions><{tag} id="{resource_id}"><owner id="{owner}"/></{tag}>'
            f"{rules}</permissions>"
        )

    def _paged(self, request: Request, items: list[str], tag: str) -> Response:
        size = int(request.arg("pageSize", "100") or 100)
        number = int(request.arg("pageNumber", "1") or 1)
        page = items[(number - 1) * size : number * size]
        return _xml(
            f'<pagination pageNumber="{number}" pageSize="{size}" totalAvailable="{len(items)}"/>'
            f"<{tag}>{''.join(page)}</{tag}>"
        )

    @staticmethod
    def _filters(request: Request) -> dict[str, str]:
        result = {}
        for clause in (request.arg("filter") or "").split(","):
            field_name, op, value = ([*clause.split(":", 2), "", ""])[:3]
            if field_name and op == "eq":
                result[field_name] = value
        return result

    def _list_projects(self, request: Request) -> Response:
        filters = self._filters(request)
        items = [
            f'<project id="{p.id}" name={quoteattr(p.name)} description="" '
            f'contentPermissions="{p.content_permissions}"'
            + (f' parentProjectId="{p.parent_id}"' if p.parent_id else "")
            + f'><owner id="{p.owner_id}"/></project>'
            for p in self.projects.values()
            if filters.get("name", p.name) == p.name
            and filters.get("parentProjectId", p.parent_id or "") == (p.parent_id or "")
        ]
        return self._paged(request, items, "projects")

    def _create_project(self, request: Request) -> Response:
        element = ET.fromstring(request.body).find("project")
        assert element is not None
        name, parent = element.get("name", ""), element.get("parentProjectId")
        if any(p.name == name and p.parent_id == parent for p in self.projects.values()):
            return _error(409, "409006", "Conflict", f"Project {name!r} already exists")
        owner = self.sessions[request.headers.get("x-tableau-auth", "")].user_id
        project_id = self.add_project(name, parent, owner_id=owner)
        extra = f' parentProjectId="{parent}"' if parent else ""
        return _xml(f'<project id="{project_id}" name={quoteattr(name)}{extra}/>', 201)

    def _ds_xml(self, ds: _Datasource) -> str:
        project = self.projects[ds.project_id]
        return (
            f'<datasource id="{ds.id}" name={quoteattr(ds.name)} contentUrl="{ds.id[:8]}" '
            f'type="{ds.type}" createdAt="{ds.created_at}" updatedAt="{ds.updated_at}" '
            f'hasExtracts="false" webpageUrl="{self.url}/#/site/{self.site_content_url}/'
            f'datasources/{ds.id}"><project id="{project.id}" name={quoteattr(project.name)}/>'
            f'<owner id="{ds.owner_id}"/><tags/></datasource>'
        )

    def _list_datasources(self, request: Request) -> Response:
        filters = self._filters(request)
        items = [
            self._ds_xml(d)
            for d in self.datasources.values()
            if filters.get("name", d.name) == d.name
            and filters.get("projectName", self.projects[d.project_id].name)
            == self.projects[d.project_id].name
        ]
        return self._paged(request, items, "datasources")

    def _append_upload(self, request: Request, upload_id: str) -> Response:
        if upload_id not in self.uploads:
            return _error(404, "404000", "Resource Not Found", f"Upload {upload_id}")
        self.uploads[upload_id] += _multipart(request).get("tableau_file", b"")
        self.chunks_received += 1
        size = len(self.uploads[upload_id]) // (1024 * 1024)
        return _xml(f'<fileUpload uploadSessionId="{upload_id}" fileSize="{size}"/>')

    def _take_upload(self, request: Request) -> bytes | None:
        upload_id = request.arg("uploadSessionId")
        return bytes(self.uploads.pop(upload_id)) if upload_id in self.uploads else None

    def _publish(self, request: Request) -> Response:
        parts = _multipart(request)
        element = ET.fromstring(parts.get("request_payload", b"<x/>")).find("datasource")
        project_el = element.find("project") if element is not None else None
        if element is None or project_el is None:
            return _error(400, "400011", "Bad Request", "datasource name and project required")
        name, project_id = element.get("name", ""), project_el.get("id", "")
        if project_id not in self.projects:
            return _error(404, "404005", "Resource Not Found", f"Project {project_id}")
        content = self._take_upload(request) if request.arg("uploadSessionId") else None
        content = content if content is not None else parts.get("tableau_datasource")
        if content is None:
            return _error(400, "400011", "Bad Request", "No file in the publish request")
        existing = [
            d for d in self.datasources.values() if d.name == name and d.project_id == project_id
        ]
        user_id = self.sessions[request.headers.get("x-tableau-auth", "")].user_id
        if not (
            self.allowed(user_id, "datasource", existing[0].id, "Write")
            if existing
            else self.allowed(user_id, "project", project_id, "Write")
        ):
            return _denied("publish", name)
        mode = next(
            (m for m in ("overwrite", "append", "createnew") if request.arg(m) == "true"), ""
        )
        if mode == "createnew" and existing:
            # What Tableau answers when CreateNew meets an existing name (flows.tableau reads it).
            return _error(403, "403007", "Forbidden", f"Datasource {name!r} already exists")
        ds = (
            existing[0]
            if existing
            else _Datasource(str(uuid.uuid4()), name, project_id, _now(), _now(), user_id)
        )
        with tempfile.NamedTemporaryFile(dir=self._root, suffix=".upload") as tmp:
            Path(tmp.name).write_bytes(content)
            try:
                if mode == "append" and existing:
                    self.store.append(ds.id, Path(tmp.name))
                else:
                    self.store.store(ds.id, Path(tmp.name))
            except ActionError as exc:
                return _error(400, "400011", "Bad Request", str(exc))
        ds.updated_at = _now()
        self.datasources[ds.id] = ds
        if request.arg("asJob") == "true":
            job = _Job(str(uuid.uuid4()), "PublishDatasource", ds, 0, completed_at=_now())
            self.jobs[job.id] = job
            return _xml(self._job_xml(job), 202)
        return _xml(self._ds_xml(ds), 201)

    def _download(self, request: Request, ds: _Datasource) -> Response:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"{ds.name}.tds", self.store.tds(ds.id, ds.name))
            if (request.arg("includeExtract") or "true").lower() != "false":
                archive.write(self.store.path(ds.id), f"Data/Extracts/{ds.id}.hyper")
        return Response(
            200,
            buffer.getvalue(),
            {
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{ds.id[:8]}.tdsx"',
            },
        )

    def _update_data(self, request: Request, ds: _Datasource) -> Response:
        request_id = request.headers.get("requestid")
        if not request_id:
            return _error(400, "400000", "Bad Request", "RequestID header is required")
        if request_id in self.request_ids:  # the same request again: the same job, not re-run
            return _xml(self._job_xml(self.jobs[self.request_ids[request_id]]), 202)
        payload = self._take_upload(request) if request.arg("uploadSessionId") else None
        actions = json.loads(request.body)["actions"]
        self.update_batches.append(actions)
        job = _Job(str(uuid.uuid4()), "UpdateUploadedFile", ds)
        self.jobs[job.id] = job
        self.request_ids[request_id] = job.id
        fail = self._job_failures.pop(0) if self._job_failures else None
        fault = self._batch_faults.pop(0) if self._batch_faults else None
        args = (job, actions, payload, fail, fault)
        if self._job_gate is not None:
            thread = threading.Thread(
                target=self._run_job, args=(*args, self._job_gate), daemon=True
            )
            self._job_threads.append(thread)
            thread.start()
        else:
            self._run_job(*args, None)
        return _xml(self._job_xml(job), 202)

    def _run_job(
        self,
        job: _Job,
        actions: list[dict[str, Any]],
        payload: bytes | None,
        fail: str | None,
        fault: _BatchFault | None,
        gate: threading.Event | None,
    ) -> None:
        if gate is not None:
            gate.wait()
        assert job.ds is not None
        with self._lock, tempfile.TemporaryDirectory(dir=self._root) as work:
            payload_path = None
            if payload is not None:
                payload_path = Path(work) / "payload.hyper"
                payload_path.write_bytes(payload)
            if fail is not None:
                job.finish_code, job.notes = 1, fail
            else:
                after = fault.after_actions if fault is not None else None
                try:
                    self.store.apply(job.ds.id, actions, payload_path, fail_after=after)
                    job.finish_code = 0
                    job.ds.updated_at = _now()
                except BatchFault as exc:
                    assert fault is not None
                    self.discarded.append(exc.changed)
                    job.finish_code, job.notes = fault.finish_code, fault.notes
                except ActionError as exc:
                    job.finish_code, job.notes = 1, str(exc)
            job.completed_at = _now()

    def _job_xml(self, job: _Job) -> str:
        done = f' completedAt="{job.completed_at}" finishCode="{job.finish_code}"'
        inner = ""
        if job.ds is not None:
            inner = (
                f'<updateUploadedFileJob><datasource id="{job.ds.id}" '
                f"name={quoteattr(job.ds.name)}/>"
                + (f"<notes>{escape(job.notes)}</notes>" if job.notes else "")
                + "</updateUploadedFileJob>"
            )
        return (
            f'<job id="{job.id}" mode="Asynchronous" type="{job.type}" '
            f'progress="{100 if job.completed_at else 0}" createdAt="{job.created_at}"'
            f"{done if job.completed_at else ''}>{inner}</job>"
        )
