"""Alerts as code (deployments/alerts.py) against `prefect server start`, with Prefect's own
Slack and SendGrid blocks delivering to loopback.

The session's `prefect_server` is Prefect's ephemeral test server: it runs the automation
services but not the late-runs service, and a late alert of a run that never started needs
Prefect to mark it Late. So this module starts its own server, as an operator runs it, with
short service loops and PREFECT_UI_URL (the messages' links). Its notifications go through
`standins.notify`, an HTTPS proxy that answers for hooks.slack.com and api.sendgrid.com, so the
blocks' real apprise plugins build and send the real requests.

Runs are real flow runs of `<pipeline>-daily` deployments of flow `bq-view-to-tableau`, executed
in this process by Prefect's engine: the real daily flow with a missing block (it fails with our
own error), and tiny flows of the same name that finish, hang, or emit the quality event.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from prefect.states import Scheduled

import flows.daily as daily
from deployments import alerts
from flows import catalog
from flows.catalog import FLOW_NAME
from flows.config import PipelineConfig
from flows.dates import default_run_date
from flows.quality import CheckResult, QualityResult, emit_warned
from standins.emulators import free_port
from standins.notify import Delivery, NotificationServices
from tests.plugins.prefect_process import prefect_server_process

pytestmark = [pytest.mark.prefect, pytest.mark.subprocess]

REPO = Path(__file__).resolve().parents[1]
CATALOG = catalog.load(REPO / "deployments" / "pipelines.yaml")
PIPELINE = CATALOG.get("campaigns")
TOKEN = "s3cr3tW3bh00kT0k3nAbCdEf"  # the secret part of the Slack webhook URL
WEBHOOK = f"https://hooks.slack.com/services/T0ALERTS/B0ALERTS/{TOKEN}"
SENDGRID_KEY = "SG.alerts-test-key.s3cr3t"
LATE_AFTER = "06:00:12"  # 12 s after campaigns' 06:00 run: the late window of these tests


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotificationServices]:
    with NotificationServices(tmp_path_factory.mktemp("notify")) as running:
        yield running


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, services: NotificationServices
) -> Iterator[dict[str, Any]]:
    """`prefect server start` with its services, quick loops, and the proxy for its blocks."""
    home = tmp_path_factory.mktemp("prefect-alerts")
    port = free_port()
    env = {
        **services.environ(),
        "PREFECT_UI_URL": f"http://127.0.0.1:{port}",  # what ui_url links to
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "1",
        "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",
    }
    with prefect_server_process(home, port, env) as url:
        yield {
            "url": url,
            "ui": f"http://127.0.0.1:{port}",
            "log": home / "server.log",
            "home": home,
        }


def _command(
    command: str, server: dict[str, Any], services: NotificationServices, **env: str
) -> subprocess.CompletedProcess[str]:
    """A documented command as a user types it, in a shell: from the repository root, with the
    project's environment active (its bin/ first on PATH), the server in PREFECT_API_URL."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ALERTS_"))}
    return subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        env={
            **base,
            **services.environ(),
            "PATH": f"{Path(sys.executable).parent}:{base.get('PATH', '/usr/bin:/bin')}",
            "PREFECT_API_URL": server["url"],
            "PREFECT_HOME": str(server["home"] / "client"),
            "PYTHONWARNINGS": "ignore",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _in_process(command: str, services: NotificationServices, **env: str) -> tuple[int, str]:
    """A documented `python deployments/alerts.py ...` command, run by its `main` here: the
    same words and code without a second interpreter's start-up (one command runs as a real
    process, in `applied`)."""
    words = shlex.split(command)
    assert words[:2] == ["python", "deployments/alerts.py"], command
    out = io.StringIO()
    with (
        _environ({**services.environ(), **env}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(out),
    ):
        code = alerts.main(words[2:])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    """Everything the commands printed, for the secret check."""
    return []


RAN: list[str] = []  # the documented commands `applied` ran, as typed


@pytest.fixture(scope="module")
def applied(
    server: dict[str, Any],
    services: NotificationServices,
    outputs: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, UUID]:
    """The block and the automations, by deployments/README.md's commands, verbatim; then the
    same file with a 12 s late window for campaigns (`--file`), so a late alert fires here."""
    result = _command(
        "python deployments/alerts.py save-block",
        server,
        services,
        ALERTS_SLACK_WEBHOOK_URL=WEBHOOK,
    )
    outputs.append(result.stdout + result.stderr)
    RAN.append("python deployments/alerts.py save-block")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "saved Slack Webhook block 'bq-tableau-alerts' (slack)" in result.stdout

    def run(command: str) -> str:
        code, out = _in_process(command, services)
        outputs.append(out)
        RAN.append(command)
        assert code == 0, f"{command}:\n{out}"
        return out

    assert "sent a test message" in run("python deployments/alerts.py send-test")
    assert "alerts OK: 3 pipeline(s), 3 with a late alert" in run(
        "python deployments/alerts.py check"
    )
    dry = run("python deployments/alerts.py apply --dry-run")
    assert dry.count("created") == 5 and "would change 5 automation(s)" in dry
    with get_client(sync_client=True) as client:
        assert not client.read_automations()  # a dry run changes nothing
    first = run("python deployments/alerts.py apply")
    assert first.count("created") == 5, first
    again = run("python deployments/alerts.py apply")
    assert again.count("unchanged") == 5 and "changed 0 automation(s)" in again, again

    document = yaml.safe_load((REPO / "deployments" / "alerts.yaml").read_text())
    document["pipelines"]["campaigns"] = {"late_after": LATE_AFTER}
    short = tmp_path_factory.mktemp("alerts") / "alerts.yaml"
    short.write_text(yaml.safe_dump(document))
    changed = run(f"python deployments/alerts.py --file {short} apply")
    assert f"updated   {alerts.PREFIX}campaigns-daily late" in changed, changed
    assert changed.count("unchanged") == 4, changed
    with get_client(sync_client=True) as client:
        return {a.name: a.id for a in client.read_automations()}


def test_every_command_of_the_alerts_section_ran_as_written(applied: dict[str, UUID]) -> None:
    readme = (REPO / "deployments" / "README.md").read_text()
    section = readme.split("## 8. Alerts", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    documented = [
        line.split("#", 1)[0].strip()
        for line in block.splitlines()
        if line.startswith("python deployments/alerts.py")
    ]
    assert len(documented) == 5
    assert [c for c in documented if c not in RAN] == []


def test_the_test_message_reaches_slack_at_the_webhook_url(
    applied: dict[str, UUID], services: NotificationServices
) -> None:
    [test] = services.wait_for(lambda d: "test alert" in d.text(), timeout=5)
    assert (test.host, test.path) == ("hooks.slack.com", f"/services/T0ALERTS/B0ALERTS/{TOKEN}")
    assert "alerts of campaigns, conversions, budgets reach you here" in test.text()


def test_apply_twice_keeps_one_automation_per_name_with_the_same_ids(
    applied: dict[str, UUID], server: dict[str, Any], services: NotificationServices
) -> None:
    assert sorted(applied) == sorted(
        f"{alerts.PREFIX}{name}"
        for name in (
            "daily run failed",
            "campaigns-daily late",
            "conversions-daily late",
            "budgets-daily late",
            "quality warning",
        )
    )
    with get_client(sync_client=True) as client:
        automations = {a.name: a for a in client.read_automations()}
    assert {name: a.id for name, a in automations.items()} == applied  # updated in place
    late = automations[f"{alerts.PREFIX}campaigns-daily late"].trigger
    assert late.within == timedelta(seconds=12) and late.posture == "Proactive"
    conversions = automations[f"{alerts.PREFIX}conversions-daily late"].trigger
    assert conversions.within == timedelta(hours=2)  # 09:00 - its 07:00 run
    failed = automations[f"{alerts.PREFIX}daily run failed"].trigger
    deployments = failed.match_related[1]["prefect.resource.name"]
    assert sorted(deployments) == ["budgets-daily", "campaigns-daily", "conversions-daily"]


# -- runs ---------------------------------------------------------------------------------------


def _deployment(client: Any, name: str) -> UUID:
    flow_id = client.create_flow_from_name(FLOW_NAME)
    return client.create_deployment(
        flow_id=flow_id,
        name=name,
        parameters={"config": PIPELINE.config.model_dump(mode="json")},
    )


@pytest.fixture(scope="module")
def deployments(server: dict[str, Any]) -> dict[str, UUID]:
    with get_client(sync_client=True) as client:
        return {
            name: _deployment(client, name)
            for name in (PIPELINE.daily_deployment, f"{PIPELINE.name}-per-date")
        }


def _start(
    deployment_id: UUID, function: Any, parameters: dict[str, Any] | None = None
) -> tuple[UUID, threading.Thread]:
    """A flow run of the deployment, executed by Prefect's engine in a thread of this process."""
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    # The thread runs in a copy of this context: Prefect's settings (the API URL) are there.
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(run_flow,),
        kwargs={
            "flow": function,
            "flow_run": run,
            "parameters": run.parameters,
            "return_type": "state",
        },
        daemon=True,
    )
    thread.start()
    return run.id, thread


def _about(run_id: UUID) -> Any:
    return lambda delivery: str(run_id) in delivery.text()


def _message(services: NotificationServices, run_id: UUID, timeout: float = 60) -> Delivery:
    found = services.wait_for(_about(run_id), timeout=timeout)
    assert found, f"no notification about flow run {run_id} within {timeout} s"
    assert len(found) == 1, [d.text() for d in found]
    return found[0]


def test_a_failed_daily_run_notifies_with_the_error_its_fix_and_the_rerun(
    applied: dict[str, UUID],
    deployments: dict[str, UUID],
    server: dict[str, Any],
    services: NotificationServices,
) -> None:
    # The real daily flow, with a credentials block that does not exist: it fails with our
    # ConfigError, whose message names the fix. The same failure under per-date must not page.
    config = PIPELINE.config.model_copy(update={"credentials_block": "alerts-test-missing"})
    parameters = {"config": config.model_dump(mode="json")}
    rerun_id, rerun = _start(
        deployments[f"{PIPELINE.name}-per-date"], daily.daily_refresh, parameters
    )
    rerun.join(60)
    run_id, thread = _start(deployments[PIPELINE.daily_deployment], daily.daily_refresh, parameters)
    thread.join(60)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.state.is_failed()
    day = default_run_date(run.expected_start_time, PIPELINE.config.timezone).isoformat()
    assert run.name == f"campaigns-{day}"

    text = _message(services, run_id).text()
    assert f"[bq-view-to-tableau] campaigns {day}: daily run Failed" in text
    assert f"The daily run of campaigns for {day} ended Failed." in text
    assert (
        "Error: ConfigError: No AwsWorkloadIdentityCredentials block named "
        "'alerts-test-missing'" in text
    )
    assert "Save it first (see deployments/README.md)" in text  # the error's own fix
    assert "Flow run encountered an exception" not in text
    assert (
        f"prefect deployment run 'bq-view-to-tableau/campaigns-per-date' --param run_date={day}"
        in text
    )
    assert f"Run: {server['ui']}/runs/flow-run/{run_id}" in text
    assert not services.wait_for(_about(rerun_id), timeout=0)  # per-date: no page


@flow(name=FLOW_NAME, flow_run_name=daily._run_name)
def _finishes(run_date: str | None = None, *, config: dict[str, Any]) -> str:
    return "done"


_release = threading.Event()


@flow(name=FLOW_NAME, flow_run_name=daily._run_name)
def _hangs(run_date: str | None = None, *, config: dict[str, Any]) -> str:
    _release.wait(90)  # a hung step: it runs on until the test has seen the late alert
    return "released"


def test_a_daily_run_not_completed_in_time_notifies_whether_it_hangs_or_never_started(
    applied: dict[str, UUID],
    deployments: dict[str, UUID],
    server: dict[str, Any],
    services: NotificationServices,
) -> None:
    daily_id = deployments[PIPELINE.daily_deployment]
    done_id, done = _start(daily_id, _finishes)  # first: its window closes first
    done.join(30)
    hung_id, hung = _start(daily_id, _hangs)
    with get_client(sync_client=True) as client:
        # Never started: no worker picks it up, so Prefect marks it Late.
        never = client.create_flow_run_from_deployment(
            daily_id, state=Scheduled(scheduled_time=datetime.now(UTC))
        )
    started = time.monotonic()
    try:
        hung_text = _message(services, hung_id).text()
        never_text = _message(services, never.id).text()
    finally:
        _release.set()
        hung.join(30)
    waited = time.monotonic() - started
    assert waited >= 10, f"a late alert came after {waited:.1f} s, before the 12 s window"

    with get_client(sync_client=True) as client:
        hung_run = client.read_flow_run(hung_id)
        never_run = client.read_flow_run(never.id)
    zone = PIPELINE.config.timezone
    hung_day = default_run_date(hung_run.expected_start_time, zone).isoformat()
    never_day = default_run_date(never_run.expected_start_time, zone).isoformat()
    title = "daily run not completed by 06:00:12 Asia/Tokyo"
    assert f"[bq-view-to-tableau] campaigns {hung_day}: {title}" in hung_text
    assert "It started but is still running" in hung_text and "it is Running" in hung_text
    assert f"Run: {server['ui']}/runs/flow-run/{hung_id}" in hung_text
    # The never-started run has no `<pipeline>-<date>` name: its date comes from its schedule.
    assert never_run.name != f"campaigns-{never_day}"
    assert f"[bq-view-to-tableau] campaigns {never_day}: {title}" in never_text
    assert "It never started" in never_text and "it is Late" in never_text
    assert f"--param run_date={never_day}" in never_text
    assert f"Run: {server['ui']}/runs/flow-run/{never.id}" in never_text
    assert not services.wait_for(_about(done_id), timeout=0)  # completed in time: no alert


@flow(name=FLOW_NAME, flow_run_name=daily._run_name)
def _warns(run_date: str | None = None, *, config: dict[str, Any]) -> str:
    # The daily flow's own emitter, as its quality step calls it on a `warn` result.
    day = date(2026, 12, 1)
    warned = CheckResult(
        "row_count", day, "4,000 rows", "6,000..24,000", "warn",
        detail="0.5x-2x the median 12,000 of 14 published days",
    )  # fmt: skip
    emit_warned(
        QualityResult((warned,), "the record of published fingerprints"),
        PipelineConfig.model_validate(config),
        day,
    )
    return "warned"


def test_a_quality_warning_notifies_with_the_summary_the_fix_and_the_run(
    applied: dict[str, UUID],
    deployments: dict[str, UUID],
    server: dict[str, Any],
    services: NotificationServices,
) -> None:
    run_id, thread = _start(deployments[PIPELINE.daily_deployment], _warns)
    thread.join(30)
    text = _message(services, run_id).text()
    assert "[bq-view-to-tableau] campaigns 2026-12-01: quality warning" in text
    assert "published, but a quality check set to warn did not pass" in text
    assert (
        "Check: 2026-12-01 row_count: 4,000 rows, expected 6,000..24,000 (0.5x-2x the median "
        "12,000 of 14 published days)" in text
    )
    assert "What to do: The day was published (the check is set to warn)" in text
    assert "rerun the date from the `campaigns-per-date` deployment" in text
    assert f"Run: {server['ui']}/runs/flow-run/{run_id}" in text


def test_no_secret_in_the_automations_the_block_document_the_logs_or_the_output(
    applied: dict[str, UUID], server: dict[str, Any], outputs: list[str]
) -> None:
    with get_client(sync_client=True) as client:
        automations = [a.model_dump_json() for a in client.read_automations()]
        document = client.read_block_document_by_name(
            "bq-tableau-alerts", block_type_slug="slack-webhook", include_secrets=False
        )
        secret = client.read_block_document_by_name(
            "bq-tableau-alerts", block_type_slug="slack-webhook", include_secrets=True
        )
    assert secret.data["url"] == WEBHOOK  # the block holds it...
    for text in (*automations, document.model_dump_json(), server["log"].read_text(), *outputs):
        assert TOKEN not in text  # ...and nothing else shows it


def test_an_email_block_sends_through_sendgrid(
    server: dict[str, Any], services: NotificationServices, tmp_path: Path
) -> None:
    file = tmp_path / "alerts.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "notify": {
                    "block": "bq-tableau-mail",
                    "kind": "email",
                    "email": {"from": "prefect@example.com", "to": ["data@example.com"]},
                }
            }
        )
    )
    for command in ("save-block", "send-test"):
        code, out = _in_process(
            f"python deployments/alerts.py --file {file} {command}",
            services,
            ALERTS_SENDGRID_API_KEY=SENDGRID_KEY,
        )
        assert code == 0, out
        assert SENDGRID_KEY not in out
    [mail] = services.wait_for(lambda d: d.host == "api.sendgrid.com", timeout=10)
    assert (mail.method, mail.path) == ("POST", "/v3/mail/send")
    assert mail.headers["authorization"] == f"Bearer {SENDGRID_KEY}"
    body = mail.json()
    assert body["from"]["email"] == "prefect@example.com"
    assert body["personalizations"][0]["to"] == [{"email": "data@example.com"}]
    assert body["subject"] == "[bq-view-to-tableau] test alert"


# -- bad input: a clear error, nothing changed --------------------------------------------------


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"defaults": {"late_after": 480}}, 'quote the time, e.g. late_after: "08:00"'),
        (
            {"pipelines": {"conversions": {"late_after": "06:30"}}},
            "must be at least 10 s after the daily run of conversions at 07:00",
        ),
        ({"pipelines": {"campaign": {}}}, "'campaign' is not in"),
        ({"pipelines": {"budgets": {"quality": False}}}, "did you mean 'quality_warn'?"),
        ({"notify": {"block": "x", "kind": "teams"}}, "must be one of: slack, email"),
        ({"notify": {"block": "x", "kind": "email"}}, "notify.email.to: list the recipients"),
    ],
)
def test_a_bad_alerts_file_names_each_problem(document: dict[str, Any], problem: str) -> None:
    base = {"notify": {"block": "bq-tableau-alerts", "kind": "slack"}}
    with pytest.raises(alerts.AlertsError, match="nothing was changed") as error:
        alerts.parse({**base, **document}, CATALOG)
    assert problem in str(error.value)


def test_a_wrong_secret_is_refused_without_repeating_it() -> None:
    config = alerts.parse({"notify": {"block": "b", "kind": "slack"}}, CATALOG)
    wrong = "https://example.com/hooks/not-slack-s3cr3t"
    with pytest.raises(alerts.ConfigError, match="not a Slack incoming webhook URL") as error:
        alerts.notification_block(config, wrong)
    assert "s3cr3t" not in str(error.value)
