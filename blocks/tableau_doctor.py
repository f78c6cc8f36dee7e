"""Diagnose the Tableau side of the pipeline, step by step, with the saved `TableauServer` block.

The Google doctor's sibling (`blocks.doctor`: the same results, rendering and exit codes). It
drives what the flow uses: the block's own TSC session and sign-in (`TableauServer.sign_in`),
the shared lookups of the project path and the datasource (`blocks.tableau.find_project`,
`find_datasource`) and of the token's expiry (`token_expiry`, also read by the daily run's
preflight), then reads what decides whether a publish can succeed:

1. the server answers serverInfo: product and REST API version; `update_hyper_data` (the
   replace_date and upsert modes) needs REST 3.13+ (Tableau Server 2021.3+, Cloud);
2. the sign-in, each classic refusal with where to fix it;
3. the site, the nested project path and the datasource (or that the first publish creates
   it), and whether it is live-to-Hyper (the only kind `update_hyper_data` updates);
4. the signed-in user's site role and permissions on the project and datasource;
5. the personal access token's expiry, where Tableau lists it (Tableau Cloud).

The first failure stops the run; later steps are SKIPped. Nothing secret is printed: no token
secret, JWT or session token, only names, ids, versions, roles and dates.

    python -m blocks doctor --tableau BLOCK [--tableau-project PATH [--datasource NAME]]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Final

import tableauserverclient as tsc

from blocks.doctor import StepResult
from blocks.errors import PublishError
from blocks.tableau import (
    DEFAULT_JWT_SCOPES,
    PAT_EXPIRY_WARNING,
    UPDATE_API_VERSION,
    TableauServer,
    describe_left,
    find_datasource,
    find_project,
    token_expiry,
    translate_tableau_errors,
)

DOCTOR_TITLE: Final = "Tableau doctor"
SIGN_IN_REFUSED: Final = "401001"
"""Tableau's answer to a wrong token name or secret, an expired or revoked token, a wrong site
and a refused connected-app JWT alike."""

ADMIN_ROLES: Final = frozenset(
    {"ServerAdministrator", "SiteAdministrator", "SiteAdministratorCreator",
     "SiteAdministratorExplorer"}
)  # fmt: skip
"""Site roles that bypass content permissions."""
PUBLISH_ROLES: Final = ADMIN_ROLES | {
    "Creator", "ExplorerCanPublish", "Publisher", "ViewerWithPublish", "UnlicensedWithPublish"
}  # fmt: skip
"""Site roles that may publish at all (the last three are pre-2018 names of the same)."""

# The capabilities a publish needs, by REST name, with the name Tableau's UI shows.
PROJECT_NEEDS: Final = {"Read": "View", "Write": "Publish"}
"""On the project: see it, and publish into it (creating the datasource, or overwriting)."""
DATASOURCE_NEEDS: Final = {"Read": "View", "Write": "Overwrite", "ExportXml": "Download"}
"""On an existing datasource: find it, update or overwrite its data, and download its .tds
(the schema-drift check reads the published columns from it)."""


@dataclass(frozen=True)
class TableauDoctorOptions:
    """What to check, from the command line.

    Attributes:
        project: The Tableau project path (`Marketing/Ads`); None: steps 3-4 check the site
            and the site role only.
        datasource: The datasource name in that project.
        now: The time expiries are measured from (default: now).
    """

    project: str | None = None
    datasource: str | None = None
    now: dt.datetime | None = None


@dataclass
class _Run:
    """State the steps hand on to each other."""

    block: TableauServer
    options: TableauDoctorOptions
    stack: ExitStack
    rest_version: str | None = None
    session: tsc.Server | None = None
    project: tsc.ProjectItem | None = None
    datasource: tsc.DatasourceItem | None = None

    @property
    def name(self) -> str:
        """The block's saved name, for the fixes."""
        return getattr(self.block, "_block_document_name", None) or "BLOCK"


# -- the steps ---------------------------------------------------------------------------------


def _server(run: _Run, name: str) -> StepResult:
    block = run.block
    details: tuple[tuple[str, str], ...] = (("server", block.server_url),)
    try:
        with translate_tableau_errors("read the server's version (serverInfo)", block):
            info = block.new_session().server_info.get()
    except PublishError as exc:
        fix = (
            f"Check server_url in the block ({block.server_url}): the base URL of Tableau "
            "Server, or your Tableau Cloud pod (https://prod-apnortheast-a.online.tableau.com, "
            "https://10az.online.tableau.com, ...), without /#/site/...; that this network can "
            "reach it on 443 (egress, proxy, security group); and, for TLS errors, the server's "
            "CA certificate (REQUESTS_CA_BUNDLE)."
        )
        return StepResult(name, "FAIL", (*details, ("error", str(exc))), fix)
    if info is None:
        error = "serverInfo did not answer Tableau's XML: a proxy or another server answered"
        fix = f"Check server_url in the block ({block.server_url})."
        return StepResult(name, "FAIL", (*details, ("error", error)), fix)
    run.rest_version = info.rest_api_version
    details += (
        ("product version", f"{info.product_version} (build {info.build_number})"),
        ("REST API version", str(info.rest_api_version)),
    )
    probe = block.new_session()
    probe.version = info.rest_api_version  # TSC's own comparison of REST versions
    if not probe.check_at_least_version(UPDATE_API_VERSION):
        fix = (
            f"This server speaks REST API {info.rest_api_version}; updating a datasource's data "
            f"(update_hyper_data: PATCH .../datasources/{{id}}/data, the replace_date and upsert "
            f"modes) needs {UPDATE_API_VERSION}+, i.e. Tableau Server 2021.3 or later, or Tableau "
            "Cloud. Upgrade the server, or set tableau.mode: overwrite for this pipeline (each "
            "run then replaces the whole datasource with that day's extract)."
        )
        update = f"NOT available (needs REST {UPDATE_API_VERSION}+)"
        return StepResult(name, "FAIL", (*details, ("update API", update)), fix)
    available = f"available (REST {UPDATE_API_VERSION}+: replace_date, upsert)"
    return StepResult(name, "PASS", (*details, ("update API", available)))


def _sign_in(run: _Run, name: str) -> StepResult:
    block = run.block
    site = block.site or "(default site)"
    details: tuple[tuple[str, str], ...] = (("as", block.signs_in_as), ("site", site))
    try:
        run.session = run.stack.enter_context(block.sign_in())  # signed out when the run ends
    except PublishError as exc:
        error = str(exc).split(". ", 1)[0]  # what failed; the doctor's fix replaces the rest
        return StepResult(name, "FAIL", (*details, ("error", error)), _sign_in_fix(run, exc))
    session = run.session
    return StepResult(
        name,
        "PASS",
        (
            *details,
            ("site id", str(session.site_id)),
            ("user id", str(session.user_id)),
            ("REST API used", str(session.version)),
        ),
    )


def _sign_in_fix(run: _Run, exc: PublishError) -> str:
    block, name = run.block, run.name
    if exc.code is None or not exc.code.startswith("401"):
        return f"Tableau could not be asked: {exc}"
    site = (
        f"The site: the block says {block.site!r}; it must be the site's content URL, the part "
        "after /site/ in the browser's address (…/#/site/<content-url>/home), or '' for the "
        "Default site of Tableau Server."
    )
    if block.auth_method == "pat":
        return "\n".join(
            (
                f"Tableau answers {exc.code} alike for a wrong token name or secret, an expired "
                "token (unused for 15 days, or past the site's expiry), a revoked token and a "
                "wrong site. Check, in this order:",
                f"1. {site}",
                f"2. The token: in Tableau, sign in as the pipeline's user > your avatar > My "
                f"Account Settings > Personal Access Tokens. If {block.token_name!r} is not "
                "listed it has expired or was revoked; if you do not hold its secret, it cannot "
                "be recovered. Create new token, and copy the secret (shown once).",
                f"3. Save the name and secret in block {name!r}: Prefect UI > Blocks > {name} > "
                "Edit (token_name, token_secret), or rerun deployments/register_blocks.sh with "
                f"TABLEAU_TOKEN_NAME=<new name> TABLEAU_BLOCK={name} (it asks for the secret).",
            )
        )
    return "\n".join(
        (
            f"Tableau refused the connected app's JWT ({exc.code}). Check, in this order:",
            f"1. {site}",
            f"2. In Tableau: Settings > Connected Apps > the app with client ID "
            f"{block.client_id!r}: it is enabled, the secret with ID {block.secret_id!r} is "
            "enabled (Generate New Secret if not, and save it), and its access level admits "
            "the project.",
            f"3. User {block.username!r} exists on the site (Users), with a site role that "
            f"can publish; the app allows the scopes {list(block.jwt_scopes)}; this machine's "
            "clock is right (the JWT lives 5 minutes).",
            f"4. Save client_id, secret_id, secret_value and username in block {name!r}: "
            f"Prefect UI > Blocks > {name} > Edit, or deployments/register_blocks.sh with "
            f"TABLEAU_CLIENT_ID, TABLEAU_SECRET_ID, TABLEAU_USERNAME, TABLEAU_BLOCK={name}.",
        )
    )


def _target(run: _Run, name: str) -> StepResult:
    assert run.session is not None
    block, path, ds_name = run.block, run.options.project, run.options.datasource
    details: tuple[tuple[str, str], ...] = (
        ("site", f"{block.site or '(default)'} (id {run.session.site_id})"),
    )
    if not path:
        note = "not given: pass --tableau-project PATH (and --datasource NAME) to check them"
        return StepResult(name, "PASS", (*details, ("project", note)))
    try:
        project, missing = find_project(run.session, path, block)
    except PublishError as exc:
        return StepResult(name, "FAIL", (*details, ("error", str(exc))), _refused_fix(exc))
    if project is None:
        found = missing.rsplit("/", 1)[0] if "/" in missing else None
        error = f"project {missing!r} does not exist" + (f" ({found!r} does)" if found else "")
        fix = (
            f"Create project {missing!r} in Tableau (Explore > "
            + (f"{found} > " if found else "")
            + "New > Project), or fix tableau.project in the catalog (the path from the top, "
            "nested with /). A pipeline with tableau.create_project: true creates it on its "
            "first run, if the user may: a site administrator for a top-level project, the "
            "parent's project leader or owner for a nested one."
        )
        return StepResult(name, "FAIL", (*details, ("project", path), ("error", error)), fix)
    run.project = project
    details += (
        ("project", f"{path} (id {project.id}, permissions {project.content_permissions})"),
    )
    if not ds_name:
        return StepResult(name, "PASS", (*details, ("datasource", "not given (--datasource)")))
    try:
        run.datasource = find_datasource(run.session, project, ds_name, block)
    except PublishError as exc:
        return StepResult(name, "FAIL", (*details, ("error", str(exc))), _refused_fix(exc))
    ds = run.datasource
    if ds is None:
        absent = f"{ds_name!r} does not exist yet: the first publish creates it"
        return StepResult(name, "PASS", (*details, ("datasource", absent)))
    details += (
        ("datasource", f"{ds.name} (id {ds.id}, type {ds.datasource_type}, owner {ds.owner_id})"),
        ("updated", str(ds.updated_at)),
    )
    if ds.datasource_type != "hyper":
        fix = (
            f"Datasource {ds.name!r} is of type {ds.datasource_type!r}: an extract of (or a "
            "live connection to) another source, not a .hyper file published as such. Tableau's "
            "update API (replace_date, upsert) only changes live-to-Hyper datasources, so every "
            "run would fail at its publish. Let the pipeline create its own (another "
            "tableau.datasource name: the first run publishes it), or set tableau.mode: "
            "overwrite."
        )
        live = f"no ({ds.datasource_type}): update_hyper_data cannot change it"
        return StepResult(name, "FAIL", (*details, ("live-to-Hyper", live)), fix)
    live = "yes (published from a .hyper file: update_hyper_data applies)"
    return StepResult(name, "PASS", (*details, ("live-to-Hyper", live)))


def _rights(run: _Run, name: str) -> StepResult:
    block = run.block
    details: list[tuple[str, str]] = []
    problems: list[str] = []
    warnings: list[str] = []
    if block.auth_method == "jwt":
        needed = [s for s in DEFAULT_JWT_SCOPES if s not in block.jwt_scopes]
        details.append(("JWT scopes", " ".join(block.jwt_scopes)))
        if needed:
            problems.append(
                f"the block's jwt_scopes lack {needed}, which the publish calls: add them to "
                f"jwt_scopes in block {run.name!r} (and allow them in the connected app)"
            )
    role, group_ids = _role_and_groups(run, details, warnings)
    if role in ADMIN_ROLES:
        details.append(("verdict", f"{role}: may publish and update all content on the site"))
        return _verdict(name, details, problems, warnings)
    if role is not None and role not in PUBLISH_ROLES:
        problems.append(
            f"site role {role} cannot publish at all: a site administrator sets it to Creator "
            "or Explorer (can publish) in Tableau (Users > the user > Actions > Site Role)"
        )
    if run.project is not None:
        _check_project(run, group_ids, details, problems, warnings)
    return _verdict(name, details, problems, warnings)


def _role_and_groups(
    run: _Run, details: list[tuple[str, str]], warnings: list[str]
) -> tuple[str | None, set[str]]:
    assert run.session is not None
    session = run.session
    try:
        with translate_tableau_errors("read the signed-in user's site role", run.block):
            user = session.users.get_by_id(session.user_id)
            session.users.populate_groups(user)
            groups = list(user.groups)
    except PublishError as exc:
        warnings.append(f"could not read the user's site role and groups ({exc.code}): {exc}")
        details.append(("site role", "unknown"))
        return None, set()
    details.append(("user", f"{user.name} (site role {user.site_role})"))
    details.append(("groups", ", ".join(g.name for g in groups) or "none"))
    return user.site_role, {g.id for g in groups}


def _check_project(
    run: _Run,
    group_ids: set[str],
    details: list[tuple[str, str]],
    problems: list[str],
    warnings: list[str],
) -> None:
    assert run.session is not None and run.project is not None
    session, project, ds = run.session, run.project, run.datasource
    user_id = str(session.user_id)
    path = run.options.project
    try:
        with translate_tableau_errors(f"read the permissions of project {path!r}", run.block):
            session.projects.populate_permissions(project)
            project_rules = list(project.permissions)
            locked = (project.content_permissions or "").startswith("LockedToProject")
            ds_rules: list[tsc.PermissionsRule] = []
            if ds is not None and locked:  # the project's default rules apply to its content
                session.projects.populate_datasource_default_permissions(project)
                ds_rules = list(project.default_datasource_permissions)
            elif ds is not None:
                session.datasources.populate_permissions(ds)
                ds_rules = list(ds.permissions)
    except PublishError as exc:
        warnings.append(
            f"could not read the permissions ({exc.code}): only administrators, project "
            "leaders and owners may; a publish answers 403 if they are missing"
        )
        return
    leader = project.owner_id == user_id or (
        _mode(project_rules, user_id, group_ids, "ProjectLeader") == "Allow"
    )
    if leader:
        details.append(("project", f"{path}: owner or project leader: all capabilities"))
    else:
        _needs(
            f"project {path!r}",
            PROJECT_NEEDS,
            project_rules,
            user_id,
            group_ids,
            details,
            problems,
            f"Tableau: Explore > {path} > Actions (…) > Permissions",
        )
    if ds is None:
        details.append(("datasource", "publishing creates it, owned by this user"))
    elif ds.owner_id == user_id or leader:
        details.append(("datasource", f"{ds.name}: owned by this user or its project leader"))
    else:
        where = (
            f"Tableau: Explore > {path} > Actions (…) > Permissions > Data Sources tab (the "
            "project is locked: its default rules apply)"
            if locked
            else f"Tableau: Explore > {path} > {ds.name} > Actions (…) > Permissions"
        )
        _needs(
            f"datasource {ds.name!r}",
            DATASOURCE_NEEDS,
            ds_rules,
            user_id,
            group_ids,
            details,
            problems,
            where,
        )


def _needs(
    what: str,
    needs: dict[str, str],
    rules: list[tsc.PermissionsRule],
    user_id: str,
    group_ids: set[str],
    details: list[tuple[str, str]],
    problems: list[str],
    where: str,
) -> None:
    """Add what the user may do on `what` to the details, and what it may not to `problems`."""
    modes = {cap: _mode(rules, user_id, group_ids, cap) for cap in needs}
    shown = ", ".join(f"{needs[c]} {m or 'not granted'}" for c, m in modes.items())
    details.append((what, shown))
    missing = [needs[c] for c, m in modes.items() if m != "Allow"]
    if missing:
        problems.append(
            f"on {what} the user lacks {', '.join(missing)}: in {where}, allow "
            f"{', '.join(missing)} for the user or one of its groups (a Deny for the user, or "
            "for any of its groups when the user has no rule of its own, wins over an Allow)"
        )


def _mode(
    rules: Iterable[tsc.PermissionsRule], user_id: str, group_ids: set[str], capability: str
) -> str | None:
    """Tableau's effective mode of a capability: the user's own rules first (Deny wins), then
    its groups' (Deny wins); None when nothing grants it (not allowed)."""
    rules = list(rules)
    mine = {
        r.capabilities.get(capability)
        for r in rules
        if r.grantee.tag_name == "user" and r.grantee.id == user_id
    }
    theirs = {
        r.capabilities.get(capability)
        for r in rules
        if r.grantee.tag_name == "group" and r.grantee.id in group_ids
    }
    for modes in (mine, theirs):
        if "Deny" in modes:
            return "Deny"
        if "Allow" in modes:
            return "Allow"
    return None


def _verdict(
    name: str, details: list[tuple[str, str]], problems: list[str], warnings: list[str]
) -> StepResult:
    if problems:
        return StepResult(name, "FAIL", tuple(details), "\n".join(f"- {p}" for p in problems))
    if warnings:
        return StepResult(name, "WARN", tuple(details), "\n".join(f"- {w}" for w in warnings))
    return StepResult(name, "PASS", tuple(details))


def _token(run: _Run, name: str) -> StepResult:
    assert run.session is not None
    expiry = token_expiry(run.session, run.block)
    if expiry.unknown_because is not None or expiry.expires_at is None:
        why = expiry.unknown_because or "unknown"
        details: tuple[tuple[str, str], ...] = (("not listable", why),)
        if run.block.auth_method == "pat":
            details += (
                (
                    "on Tableau Server",
                    "the server's own setting decides (a year after creation by default) and "
                    "15 days unused; note the token's creation date",
                ),
            )
        return StepResult(name, "SKIP", details)
    now = run.options.now or dt.datetime.now(dt.UTC)
    left = expiry.left(now)
    assert left is not None
    details = (
        ("token", str(expiry.token_name)),
        ("expires", f"{expiry.expires_at:%Y-%m-%d %H:%M} UTC ({describe_left(left)})"),
        ("last used", f"{expiry.last_used_at:%Y-%m-%d %H:%M} UTC" if expiry.last_used_at else "?"),
        ("unused expiry", "15 days after its last use (the daily run uses it)"),
    )
    warning = expiry.warning(run.block, now)
    if warning:
        return StepResult(name, "WARN", details, warning)
    limit = f"more than {PAT_EXPIRY_WARNING.days} days left"
    return StepResult(name, "PASS", (*details, ("verdict", limit)))


def _refused_fix(exc: PublishError) -> str:
    return f"Tableau refused or failed the lookup ({exc.code or 'no code'}); see the error."


STEPS: Final[tuple[tuple[str, Callable[[_Run, str], StepResult]], ...]] = (
    ("Tableau server and REST API version (serverInfo)", _server),
    ("Sign-in", _sign_in),
    ("Site, project and datasource", _target),
    ("Site role and permissions to publish and update", _rights),
    ("Personal access token expiry", _token),
)
"""The checks in order; each gets the shared state and its title."""


def diagnose_tableau(
    block: TableauServer, options: TableauDoctorOptions | None = None
) -> list[StepResult]:
    """Run the steps in order, stop at the first failure, and always sign out.

    Returns:
        One result per step; those after a failure have status SKIP.
    """
    options = options or TableauDoctorOptions()
    results: list[StepResult] = []
    with ExitStack() as stack:
        run = _Run(block=block, options=options, stack=stack)
        for index, (name, step) in enumerate(STEPS):
            result = step(run, name)
            results.append(result)
            if result.status == "FAIL":
                results.extend(
                    StepResult(later, "SKIP", (("skipped", "an earlier step failed"),))
                    for later, _ in STEPS[index + 1 :]
                )
                break
    return results
