"""The Tableau doctor, run against the fake Tableau's failure modes over real HTTP.

Each failure is made as a user would meet it on a real site: an expired, revoked or mistyped
token, a wrong site, a disabled connected app, an old server, a missing nested project, a
datasource that is not live-to-Hyper, a site role or permission rule that forbids the publish
(the fake enforces the same rules on the publish itself), a token that expires soon, and
Tableau Server, which does not list tokens. Nothing secret may reach the output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tableauserverclient as tsc
from prefect.settings import PREFECT_API_URL
from tableauserverclient.server.endpoint.exceptions import ServerResponseError

from blocks.__main__ import main
from blocks.doctor import StepResult, exit_code, render
from blocks.tableau import TableauServer
from blocks.tableau_doctor import DOCTOR_TITLE, TableauDoctorOptions, diagnose_tableau
from flows.bigquery import DryRun
from flows.config import TableauConfig
from flows.report import RunReport, render_markdown
from flows.tableau import check_target
from standins.tableau import FakeTableauServer

REPO = Path(__file__).resolve().parents[1]
PROJECT, DATASOURCE = "Marketing/Ads", "campaign_performance_daily"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the wire carries whole seconds


@pytest.fixture
def target(tableau_fake: FakeTableauServer) -> dict[str, str]:
    """Marketing/Ads (and a top-level Ads, which must not be taken) and a live-to-Hyper
    datasource in it, owned by an administrator."""
    marketing = tableau_fake.add_project("Marketing")
    tableau_fake.add_project("Ads")
    ads = tableau_fake.add_project("Ads", marketing)
    ds = tableau_fake.add_datasource(DATASOURCE, ads)
    return {"marketing": marketing, "ads": ads, "ds": ds}


@pytest.fixture
def doctor(tableau_fake, tableau_block, target):
    """Run the doctor on a block (the PAT one by default) for Marketing/Ads."""

    def run(block=None, project=PROJECT, datasource=DATASOURCE) -> tuple[list[StepResult], str]:
        results = diagnose_tableau(
            block or tableau_block, TableauDoctorOptions(project, datasource)
        )
        assert tableau_fake.active_sessions == 0  # always signed out
        return results, render(results, doctor=DOCTOR_TITLE)

    return run


def _statuses(results: list[StepResult]) -> list[str]:
    return [r.status for r in results]


def _details(result: StepResult) -> dict[str, str]:
    return dict(result.details)


def test_all_pass(doctor, tableau_fake, target):
    results, text = doctor()

    assert _statuses(results) == ["PASS"] * 5, text
    assert exit_code(results) == 0
    server, sign_in, found, rights, token = results
    assert _details(server)["REST API version"] == "3.22"
    assert _details(server)["product version"].startswith("2024.2.0 (build ")
    assert _details(server)["update API"].startswith("available")
    assert _details(sign_in)["user id"] == tableau_fake.user_id
    assert target["ads"] in _details(found)["project"]  # the nested one, not the top-level Ads
    assert _details(found)["live-to-Hyper"].startswith("yes")
    assert "SiteAdministratorCreator" in _details(rights)["verdict"]
    expires = tableau_fake.pat_expires["pipeline"]
    assert _details(token)["expires"].startswith(f"{expires:%Y-%m-%d %H:%M} UTC (in 179 day(s)")
    assert "RESULT: PASS" in text and text.startswith("Tableau doctor")


def test_a_datasource_still_to_create_passes_and_says_so(doctor):
    results, _ = doctor(datasource="new_daily")
    assert exit_code(results) == 0
    assert "first publish creates it" in _details(results[2])["datasource"]


def test_without_a_project_it_checks_the_site_and_says_what_to_pass(doctor):
    results, _ = doctor(project=None, datasource=None)
    assert exit_code(results) == 0
    assert "--tableau-project" in _details(results[2])["project"]


def test_old_server_fails_before_signing_in(doctor, tableau_fake):
    tableau_fake.rest_version = "3.12"  # Tableau Server 2021.2

    results, text = doctor()

    assert _statuses(results) == ["FAIL"] + ["SKIP"] * 4, text
    assert exit_code(results) == 1
    assert _details(results[0])["update API"] == "NOT available (needs REST 3.13+)"
    assert "2021.3" in results[0].fix and "tableau.mode: overwrite" in results[0].fix
    assert tableau_fake.signins == 0


def test_unreachable_server_names_server_url():
    block = TableauServer(
        server_url="http://127.0.0.1:9", token_name="pipeline", token_secret="x", http_timeout=5
    )
    results = diagnose_tableau(block)
    assert _statuses(results) == ["FAIL"] + ["SKIP"] * 4
    assert "Could not reach http://127.0.0.1:9" in _details(results[0])["error"]
    assert "server_url" in results[0].fix and "pod" in results[0].fix


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda fake: fake.pat_expires.update(pipeline=NOW), id="expired"),
        pytest.param(lambda fake: fake.revoke_pat("pipeline"), id="revoked"),
        pytest.param(lambda fake: fake.pats.update(pipeline="rotated-secret"), id="wrong-secret"),
    ],
)
def test_a_refused_token_says_where_to_make_a_new_one(doctor, tableau_fake, break_it):
    break_it(tableau_fake)

    results, text = doctor()

    assert _statuses(results) == ["PASS", "FAIL", "SKIP", "SKIP", "SKIP"], text
    fix = results[1].fix
    assert "401001" in fix and "expired token" in fix and "revoked" in fix
    assert "My Account Settings > Personal Access Tokens" in fix
    assert "deployments/register_blocks.sh" in fix and "TABLEAU_TOKEN_NAME=" in fix
    assert "The site: the block says 'acme'" in fix
    assert "pat-secret-value" not in text and "rotated-secret" not in text


def test_a_wrong_site_is_the_first_thing_to_check(doctor, tableau_block):
    results, _ = doctor(block=tableau_block.model_copy(update={"site": "Acme Corp"}))
    assert results[1].status == "FAIL"
    assert "1. The site: the block says 'Acme Corp'" in results[1].fix
    assert "…/#/site/<content-url>/home" in results[1].fix


def test_a_disabled_connected_app(doctor, tableau_fake, tableau_jwt_block):
    tableau_fake.disable_app("app-client-id")

    results, text = doctor(block=tableau_jwt_block)

    assert results[1].status == "FAIL", text
    assert "Settings > Connected Apps" in results[1].fix
    assert "'app-client-id'" in results[1].fix and "'app-secret-id'" in results[1].fix
    assert "TABLEAU_CLIENT_ID" in results[1].fix
    assert "app-secret-value" not in text


def test_a_connected_app_has_no_token_to_expire(doctor, tableau_jwt_block):
    results, text = doctor(block=tableau_jwt_block)
    assert _statuses(results) == ["PASS"] * 4 + ["SKIP"], text
    assert exit_code(results) == 0
    assert "connected app" in _details(results[4])["not listable"]


def test_missing_nested_project(doctor):
    results, _ = doctor(project="Marketing/Conversions")
    step = results[2]
    assert step.status == "FAIL" and _statuses(results)[3:] == ["SKIP", "SKIP"]
    assert _details(step)["error"] == (
        "project 'Marketing/Conversions' does not exist ('Marketing' does)"
    )
    assert "Explore > Marketing > New > Project" in step.fix
    assert "tableau.create_project: true" in step.fix


def test_missing_top_project(doctor):
    results, _ = doctor(project="Sales/Ads")
    assert _details(results[2])["error"] == "project 'Sales' does not exist"


def test_a_datasource_that_is_not_live_to_hyper(doctor, tableau_fake, target):
    tableau_fake.datasources[target["ds"]].type = "bigquery"  # an extract of a connection

    results, _ = doctor()

    step = results[2]
    assert step.status == "FAIL"
    assert _details(step)["live-to-Hyper"].startswith("no (bigquery)")
    assert "only changes live-to-Hyper datasources" in step.fix


# -- rights ------------------------------------------------------------------------------------


def _publish_anyway(block: TableauServer, fake: FakeTableauServer, project_id: str, tmp: Path):
    """What Tableau answers a CreateNew publish into the project (refused before any file is
    read when the rights are missing)."""
    dummy = tmp / "new.hyper"
    dummy.write_bytes(b"not read when refused")
    with block.sign_in() as session:
        session.datasources.publish(tsc.DatasourceItem(project_id, name="new"), dummy, "CreateNew")


def test_a_creator_without_publish_on_the_project(
    doctor, tableau_fake, tableau_block, target, tmp_path
):
    tableau_fake.set_site_role("Creator")

    results, text = doctor(datasource="new")

    step = results[3]
    assert step.status == "FAIL", text
    assert _details(step)["project 'Marketing/Ads'"] == "View not granted, Publish not granted"
    assert "lacks View, Publish" in step.fix and "Explore > Marketing/Ads > Actions" in step.fix
    # The server agrees: the publish itself is refused.
    with pytest.raises(ServerResponseError) as refused:
        _publish_anyway(tableau_block, tableau_fake, target["ads"], tmp_path)
    assert refused.value.code == "403004"


def test_group_rules_grant_and_a_users_deny_wins(doctor, tableau_fake, tableau_block, target):
    tableau_fake.set_site_role("Creator")
    etl = tableau_fake.add_group("etl")
    for capability in ("Read", "Write"):
        tableau_fake.grant("project", target["ads"], capability, group_id=etl)

    results, text = doctor(datasource="new")
    assert results[3].status == "PASS", text
    assert _details(results[3])["groups"] == "All Users, etl"
    assert _details(results[3])["project 'Marketing/Ads'"] == "View Allow, Publish Allow"

    tableau_fake.grant("project", target["ads"], "Write", "Deny")  # the user's own rule
    results, _ = doctor(datasource="new")
    assert _details(results[3])["project 'Marketing/Ads'"] == "View Allow, Publish Deny"
    assert results[3].status == "FAIL" and "lacks Publish" in results[3].fix


def test_a_group_deny_wins_over_another_groups_allow(doctor, tableau_fake, target):
    tableau_fake.set_site_role("Creator")
    allow, deny = tableau_fake.add_group("etl"), tableau_fake.add_group("contractors")
    for capability in ("Read", "Write"):
        tableau_fake.grant("project", target["ads"], capability, group_id=allow)
    tableau_fake.grant("project", target["ads"], "Write", "Deny", group_id=deny)

    results, _ = doctor(datasource="new")

    assert results[3].status == "FAIL" and "lacks Publish" in results[3].fix


def test_an_existing_datasource_needs_overwrite_and_download(
    doctor, tableau_fake, tableau_block, target
):
    tableau_fake.set_site_role("Creator")
    for capability in ("Read", "Write"):
        tableau_fake.grant("project", target["ads"], capability)
    tableau_fake.grant("datasource", target["ds"], "Read")

    results, text = doctor()

    step = results[3]
    assert step.status == "FAIL", text
    assert _details(step)[f"datasource '{DATASOURCE}'"] == (
        "View Allow, Overwrite not granted, Download not granted"
    )
    assert f"Explore > Marketing/Ads > {DATASOURCE} > Actions" in step.fix
    assert not tableau_fake.allowed(tableau_fake.user_id, "datasource", target["ds"], "Write")


def test_a_locked_project_rules_its_datasources(doctor, tableau_fake, target):
    tableau_fake.set_site_role("ExplorerCanPublish")
    tableau_fake.lock_project(target["ads"])
    for capability in ("Read", "Write"):
        tableau_fake.grant("project", target["ads"], capability)
    tableau_fake.grant("datasource", target["ds"], "Write")  # ignored: the project is locked
    for capability in ("Read", "Write", "ExportXml"):
        tableau_fake.grant("project-datasources", target["ads"], capability)

    results, text = doctor()

    assert results[3].status == "PASS", text
    assert _details(results[3])[f"datasource '{DATASOURCE}'"] == (
        "View Allow, Overwrite Allow, Download Allow"
    )


def test_owners_need_no_rules(doctor, tableau_fake, target):
    tableau_fake.set_site_role("Creator")
    tableau_fake.projects[target["ads"]].owner_id = tableau_fake.user_id
    results, _ = doctor()
    assert results[3].status == "PASS"
    assert "owner or project leader" in _details(results[3])["project"]


def test_a_site_role_that_cannot_publish(doctor, tableau_fake):
    tableau_fake.set_site_role("Explorer")
    results, _ = doctor()
    assert results[3].status == "FAIL"
    assert "site role Explorer cannot publish at all" in results[3].fix
    assert "Creator or Explorer (can publish)" in results[3].fix


def test_permissions_it_may_not_read_are_a_warning(doctor, tableau_fake):
    tableau_fake.set_site_role("Creator")
    tableau_fake.hide_permissions = True

    results, text = doctor()

    assert results[3].status == "WARN", text
    assert "could not read the permissions (403004)" in results[3].fix
    assert exit_code(results) == 3


# -- the token's expiry ------------------------------------------------------------------------


def test_a_token_expiring_within_14_days_warns(doctor, tableau_fake):
    tableau_fake.pat_expires["pipeline"] = NOW + dt.timedelta(days=3, hours=5)

    results, text = doctor()

    step = results[4]
    assert step.status == "WARN" and exit_code(results) == 3, text
    assert "(in 3 day(s) 4 h)" in _details(step)["expires"]
    assert "expires" in step.fix and "401001" in step.fix
    assert "My Account Settings > Personal Access Tokens > Create new token" in step.fix
    assert "NOTE: Tableau personal access token 'pipeline' expires" in text


def test_tableau_server_does_not_list_tokens(doctor, tableau_fake):
    tableau_fake.cloud = False

    results, text = doctor()

    assert _statuses(results) == ["PASS"] * 4 + ["SKIP"], text
    assert exit_code(results) == 0
    why = _details(results[4])["not listable"]
    assert "only Tableau Cloud does" in why and "404003" in why


def test_no_secret_in_the_output(doctor, tableau_fake, tableau_jwt_block):
    texts = [doctor()[1], doctor(block=tableau_jwt_block)[1]]
    texts += [json.dumps([[r.name, r.status, r.details, r.fix] for r in doctor()[0]])]
    secrets = [*tableau_fake.pats.values(), *(v for _, v in tableau_fake.apps.values())]
    secrets += list(tableau_fake.sessions)  # every session token the fake handed out
    assert len(secrets) >= 5
    for text in texts:
        for secret in secrets:
            assert secret not in text


# -- the daily run's preflight warns too -------------------------------------------------------


@pytest.mark.prefect
def test_the_preflight_reads_the_expiry_and_the_report_warns(
    prefect_server, tableau_fake, tableau_block, target
):
    tableau_fake.pat_expires["pipeline"] = NOW + dt.timedelta(days=5)
    config = TableauConfig(server_block="tableau", project=PROJECT, datasource="new_daily")

    check = check_target(tableau_block, config, [("date", "DATE")], date_column="date")

    assert check.token_expires_at == tableau_fake.pat_expires["pipeline"]
    assert check.token_warning and "'pipeline' expires" in check.token_warning
    report = RunReport(dt.date(2026, 11, 20), "p.d.v", "new_daily")
    report.add((DryRun(0, (("date", "DATE"),)), check), 1.0)
    assert report.warnings == [check.token_warning]
    assert "## Warnings" in render_markdown(report)

    tableau_fake.pat_expires["pipeline"] = NOW + dt.timedelta(days=30)
    later = check_target(tableau_block, config, [("date", "DATE")], date_column="date")
    assert later.token_warning is None and later.token_expires_at is not None
    tableau_fake.cloud = False  # Tableau Server: nothing to warn about, nothing fails
    server = check_target(tableau_block, config, [("date", "DATE")], date_column="date")
    assert server.token_expires_at is None and server.token_warning is None


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tableau", "t", "--condition", "x"], "--condition check Google access"),
        (["--tableau", "t", "--project", "p"], "--project check Google access"),
        (["--tableau", "t", "--datasource", "d"], "--datasource needs --tableau-project"),
        (["--block", "b", "--tableau-project", "p"], "go with --tableau NAME"),
        (["--block", "b", "--tableau", "t"], "not allowed with argument"),
    ],
)
def test_cli_usage_errors(argv, message, capsys):
    try:
        code = main(["doctor", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def documented_commands() -> list[str]:
    """`python -m blocks doctor --tableau ...` as docs/doctor.md and README.md print them: the
    lines of their bash blocks, and the README's inline ones (docs/doctor.md's name BLOCK)."""
    commands = []
    for doc in ("docs/doctor.md", "README.md"):
        text = (REPO / doc).read_text().replace("\\\n", " ")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            commands += [
                " ".join(line.split("#", 1)[0].split())
                for line in block.splitlines()
                if line.strip().startswith("python -m blocks doctor --tableau")
            ]
        if doc == "README.md":
            commands += re.findall(r"`(python -m blocks doctor --tableau [^`]+)`", text)
    return commands


@pytest.fixture
def saved_block(prefect_server, tableau_block, target) -> str:
    """The Tableau block saved as `tableau`, the name the catalog and the docs use."""
    tableau_block.save("tableau", overwrite=True)
    return "tableau"


@pytest.mark.prefect
def test_cli_documented_commands_run_verbatim(saved_block, tableau_fake, capsys):
    commands = documented_commands()
    assert len(commands) >= 4, commands  # two in docs/doctor.md, two in the README
    for command in commands:
        words = shlex.split(command)
        assert words[:3] == ["python", "-m", "blocks"]
        code = main(words[3:])
        out = capsys.readouterr().out
        assert code == 0, f"{command}\n{out}"
        if "--json" in words:
            assert [s["status"] for s in json.loads(out)["steps"]] == ["PASS"] * 5
        else:
            assert out.startswith("Tableau doctor for block 'tableau'") and "RESULT: PASS" in out


@pytest.mark.prefect
def test_cli_a_block_that_is_not_saved(prefect_server, capsys):
    assert main(["doctor", "--tableau", "no-such-block"]) == 2
    assert "Cannot load TableauServer block 'no-such-block'" in capsys.readouterr().err


@pytest.mark.prefect
def test_cli_json_fix_names_the_saved_block(saved_block, tableau_fake, capsys):
    tableau_fake.revoke_pat("pipeline")
    code = main(["doctor", "--tableau", "tableau", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == report["exit_code"] == 1
    assert "Prefect UI > Blocks > tableau > Edit" in report["steps"][1]["fix"]
    assert "TABLEAU_BLOCK=tableau" in report["steps"][1]["fix"]


@pytest.mark.subprocess
@pytest.mark.prefect
def test_cli_subprocess_the_documented_command(saved_block, tableau_fake, tmp_path):
    command = documented_commands()[0]
    done = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]],
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("[PASS]") == 5
    assert f"{PROJECT} (id " in done.stdout and "live-to-Hyper : yes" in done.stdout
    for secret in (*tableau_fake.pats.values(), *tableau_fake.sessions):
        assert secret not in done.stdout + done.stderr
