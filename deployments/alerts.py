"""Alerts as code: Prefect automations that tell a person when a daily run fails, is late, or
publishes with a quality warning, from `deployments/alerts.yaml` and the catalog.

    python deployments/alerts.py save-block          the notification block (secret from env)
    python deployments/alerts.py send-test           one test message through that block
    python deployments/alerts.py apply [--dry-run]   create/update the automations, by name
    python deployments/alerts.py check               the file, the catalog and the block

Automations (all named `bq-view-to-tableau: ...`, so `apply` finds, updates and prunes its own):
- `daily run failed`: one for every pipeline's `<pipeline>-daily` deployment; a run that ends
  Failed, Crashed or TimedOut notifies at once.
- `<pipeline>-daily late`: one per pipeline; a proactive trigger opened by the run's Late,
  Pending or Running event that expects a terminal state within `late_after` minus the
  scheduled time (deployments/README.md, section 8, has the semantics and their limits).
- `quality warning`: the event `bq-tableau.quality.warned` that the daily flow emits when a
  check set to `warn` did not pass.

The messages are Jinja templates the Prefect server renders; the notification block (Prefect's
own `SlackWebhook` or `SendgridEmail`) holds the only secret, in a SecretStr field.

Exit codes: 0 done; 1 the server refused or the block is missing/unusable; 2 a bad file or
command line (nothing changed).
"""

from __future__ import annotations

import argparse
import difflib
import getpass
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import yaml
from prefect.blocks.notifications import SendgridEmail, SlackWebhook
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from flows import catalog as catalog_module
from flows.catalog import FLOW_NAME, Catalog
from flows.errors import ConfigError, FileProblemsError

ALERTS_FILE: Final[Path] = Path(__file__).resolve().with_name("alerts.yaml")
PREFIX: Final[str] = f"{FLOW_NAME}: "
"""Every automation this module owns starts with it: `apply` updates and prunes only those."""
QUALITY_EVENT: Final[str] = "bq-tableau.quality.warned"
KINDS: Final[dict[str, type[SlackWebhook | SendgridEmail]]] = {
    "slack": SlackWebhook,
    "email": SendgridEmail,
}
SECRET_VARIABLES: Final[dict[str, str]] = {
    "slack": "ALERTS_SLACK_WEBHOOK_URL",
    "email": "ALERTS_SENDGRID_API_KEY",
}
ALERT_KEYS: Final[tuple[str, ...]] = ("failed", "late_after", "quality_warn")
FAILED_EVENTS: Final[frozenset[str]] = frozenset(
    {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
)
# A late window opens when the run is marked Late (never picked up) or starts; it closes
# without an alert on any terminal state but Cancelled (failures have their own alert).
LATE_OPENERS: Final[frozenset[str]] = frozenset(
    {"prefect.flow-run.Late", "prefect.flow-run.Pending", "prefect.flow-run.Running"}
)
LATE_CLOSERS: Final[frozenset[str]] = frozenset({"prefect.flow-run.Completed", *FAILED_EVENTS})
MIN_WITHIN: Final[timedelta] = timedelta(seconds=10)  # Prefect's minimum for proactive triggers
_SLACK_URL: Final[re.Pattern[str]] = re.compile(
    r"^https://hooks\.slack(-gov)?\.com/services/[A-Z0-9]+/[A-Z0-9]+/[A-Z0-9]+/?$", re.I
)
_EMAIL: Final[re.Pattern[str]] = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AlertsError(FileProblemsError):
    """The alerts file is not valid; every problem is listed, one a line."""


@dataclass(frozen=True)
class PipelineAlerts:
    """Which alerts one pipeline gets; `late_after` is a clock time in the catalog's zone."""

    name: str
    failed: bool
    late_after: time | None
    quality_warn: bool


@dataclass(frozen=True)
class AlertsConfig:
    """The alerts file, validated against the catalog."""

    block: str
    kind: str
    email_from: str
    email_to: tuple[str, ...]
    pipelines: tuple[PipelineAlerts, ...]
    source: str


# -- the file -----------------------------------------------------------------------------------


def load(path: Path, catalog: Catalog) -> AlertsConfig:
    """Read and validate the alerts file against the catalog's pipelines.

    Raises:
        AlertsError: every problem at once (unknown keys and pipelines, bad times, ...).
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AlertsError(str(path), [f"cannot read it: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise AlertsError(str(path), [f"not valid YAML: {exc}"]) from exc
    return parse(document, catalog, source=str(path))


def parse(document: object, catalog: Catalog, *, source: str = "the alerts file") -> AlertsConfig:
    """Validate an alerts document (the file's YAML, as Python).

    Raises:
        AlertsError: every problem found.
    """
    if not isinstance(document, Mapping):
        raise AlertsError(source, ["must be a mapping with 'notify', 'defaults', 'pipelines'"])
    problems = _unknown(document, ("notify", "defaults", "pipelines"), "the file")
    notify = document.get("notify") or {}
    if not isinstance(notify, Mapping):
        notify = {}
        problems.append("notify: must be a mapping with 'block' and 'kind'")
    problems += _unknown(notify, ("block", "kind", "email"), "notify")
    block, kind = notify.get("block"), notify.get("kind")
    if not isinstance(block, str) or not block.strip():
        problems.append("notify.block: the notification block's name is required")
        block = ""
    if kind not in KINDS:
        problems.append(f"notify.kind: {kind!r} must be one of: {', '.join(KINDS)}")
    email = notify.get("email") or {}
    if not isinstance(email, Mapping):
        problems.append("notify.email: must be a mapping with 'from' and 'to'")
        email = {}
    problems += _unknown(email, ("from", "to"), "notify.email")
    sender, to = email.get("from", ""), email.get("to", [])
    if isinstance(to, str):
        to = [to]
    if kind == "email":
        if not isinstance(sender, str) or not _EMAIL.match(sender):
            problems.append(f"notify.email.from: {sender!r} is not an e-mail address")
        if not isinstance(to, list) or not to:
            problems.append("notify.email.to: list the recipients' addresses")
            to = []
        problems += [
            f"notify.email.to: {address!r} is not an e-mail address"
            for address in to
            if not isinstance(address, str) or not _EMAIL.match(address)
        ]

    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        problems.append("defaults: must be a mapping of " + ", ".join(ALERT_KEYS))
        defaults = {}
    problems += _unknown(defaults, ALERT_KEYS, "defaults")
    overrides = document.get("pipelines") or {}
    if not isinstance(overrides, Mapping):
        problems.append("pipelines: must map pipeline names to their overrides")
        overrides = {}
    names = [p.name for p in catalog.pipelines]
    for name in overrides:
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"pipelines: {name!r} is not in {catalog.source} ({hint}it has: {', '.join(names)})"
            )

    pipelines = []
    for pipeline in catalog.pipelines:
        own = overrides.get(pipeline.name) or {}
        label = f"pipelines.{pipeline.name}"
        if not isinstance(own, Mapping):
            problems.append(f"{label}: must be a mapping of " + ", ".join(ALERT_KEYS))
            own = {}
        problems += _unknown(own, ALERT_KEYS, label)
        settings = {"failed": True, "late_after": False, "quality_warn": True, **defaults, **own}
        for key in ("failed", "quality_warn"):
            if not isinstance(settings[key], bool):
                where = label if key in own else "defaults"
                problems.append(f"{where}.{key}: must be true or false")
        where = label if "late_after" in own else "defaults"
        late, problem = _late_after(settings["late_after"], pipeline, where)
        if problem:
            problems.append(problem)
        pipelines.append(
            PipelineAlerts(
                pipeline.name,
                settings["failed"] is True,
                late,
                settings["quality_warn"] is True,
            )
        )
    if problems:
        raise AlertsError(source, problems)
    return AlertsConfig(
        block=block.strip(),
        kind=str(kind),
        email_from=str(sender or ""),
        email_to=tuple(str(a) for a in to),
        pipelines=tuple(pipelines),
        source=source,
    )


def _late_after(
    value: object, pipeline: catalog_module.Pipeline, where: str
) -> tuple[time | None, str | None]:
    """`"HH:MM"` (or `"HH:MM:SS"`) after the pipeline's daily run, or false for no late alert."""
    if value is False or value is None:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 08:00 as the sexagesimal number 480.
        return None, f'{where}.late_after: quote the time, e.g. late_after: "08:00"'
    if not isinstance(value, str):
        return None, f'{where}.late_after: {value!r} must be a time like "08:00", or false'
    try:
        late = time.fromisoformat(value)
    except ValueError:
        return None, f'{where}.late_after: {value!r} is not a time like "08:00"'
    zone = pipeline.config.timezone
    scheduled = time(pipeline.schedule_hour, pipeline.schedule_minute)
    if late_window(late, pipeline) < MIN_WITHIN:
        return None, (
            f"{where}.late_after: {value} ({zone}) must be at least "
            f"{MIN_WITHIN.seconds} s after the daily run of {pipeline.name} at "
            f"{scheduled:%H:%M} (the same day; a window past midnight is not supported)"
        )
    return late, None


def late_window(late_after: time, pipeline: catalog_module.Pipeline) -> timedelta:
    """How long after its scheduled start a daily run must be finished: `late_after` minus
    the scheduled time of day (both in the catalog's zone, on the same day)."""
    start = pipeline.schedule_hour * 3600 + pipeline.schedule_minute * 60
    end = late_after.hour * 3600 + late_after.minute * 60 + late_after.second
    return timedelta(seconds=end - start)


def _unknown(mapping: Mapping[Any, Any], allowed: tuple[str, ...], label: str) -> list[str]:
    problems = []
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"{label}: unknown key {key!r} ({hint}allowed: {', '.join(allowed)})")
    return problems


# -- the automations ----------------------------------------------------------------------------

# The date a run processes: its own name when the flow has named it `<pipeline>-<date>`, else
# (a run that never started, or crashed before it named itself) the day before its scheduled
# start in the catalog's zone, as flows.dates.default_run_date takes it. <<SHIFT>> is the zone's
# UTC offset minus a day, in seconds.
_RUN_CONTEXT: Final[str] = """\
{%- set pipeline = deployment.name[:-6] -%}
{%- set t = flow_run.expected_start_time -%}
{%- set day = t.fromtimestamp(t.timestamp() + <<SHIFT>>, t.tzinfo).strftime('%Y-%m-%d') -%}
{%- if flow_run.name.startswith(pipeline ~ '-') and flow_run.name|length == pipeline|length + 11 -%}
{%- set day = flow_run.name[-10:] -%}
{%- endif -%}
{%- set link = flow_run|ui_url or ('flow run ' ~ flow_run.id ~ ' (set PREFECT_UI_URL on the server for a link)') -%}
{%- set rerun = "prefect deployment run '<<FLOW>>/" ~ pipeline ~ "-per-date' --param run_date=" ~ day -%}
"""
_FAILED_SUBJECT: Final[str] = (
    "[<<FLOW>>] {{ pipeline }} {{ day }}: daily run {{ flow_run.state.name }}"
)
_FAILED_BODY: Final[str] = """\
{%- set message = flow_run.state.message or 'no error message' -%}
{%- set error = (message.splitlines() or [message])|first -%}
{%- set error = error.replace('Flow run encountered an exception: ', '') -%}
The daily run of {{ pipeline }} for {{ day }} ended {{ flow_run.state.name }}.
Error: {{ error }}
What to do: fix what the error says (its fix is in the message), then rerun the date from the {{ pipeline }}-per-date deployment with run_date={{ day }} (UI: Deployments, {{ pipeline }}-per-date, Run, Custom run; or: {{ rerun }}). A transient outage needs only the rerun. The run's report (Artifacts tab) and logs have the details.
Run: {{ link }}"""
_LATE_SUBJECT: Final[str] = (
    "[<<FLOW>>] {{ pipeline }} {{ day }}: daily run not completed by <<LATE>> <<ZONE>>"
)
_LATE_BODY: Final[str] = """\
The daily run of {{ pipeline }} for {{ day }} (scheduled <<SCHEDULED>> <<ZONE>>) has not completed by <<LATE>> <<ZONE>>; it is {{ flow_run.state_name }}.
{% if flow_run.start_time -%}
It started but is still running: a long BigQuery export, a wait for the Tableau token's publish slot (its logs say which run holds it), or a hung step.
What to do: open the run's logs; if it is stuck, cancel it and rerun the date from the {{ pipeline }}-per-date deployment with run_date={{ day }} ({{ rerun }}).
{%- else -%}
It never started: no worker or push pool picked it up (the work pool is paused or its worker is down, or the ECS task could not start).
What to do: check the work pool of {{ pipeline }}-daily in the UI (Work Pools) and its worker; once it runs again, the run starts by itself, or rerun the date from the {{ pipeline }}-per-date deployment with run_date={{ day }} ({{ rerun }}).
{%- endif %}
Run: {{ link }}"""
_QUALITY_SUBJECT: Final[str] = (
    "[<<FLOW>>] {{ event.payload.pipeline }} {{ event.payload.run_date }}: quality warning"
)
_QUALITY_BODY: Final[str] = """\
{%- set link = flow_run|ui_url or ('flow run ' ~ flow_run.id ~ ' (set PREFECT_UI_URL on the server for a link)') -%}
The daily run of {{ event.payload.pipeline }} for {{ event.payload.run_date }} published, but a quality check set to warn did not pass.
Check: {{ event.payload.summary }}
What to do: {{ event.payload.fix }}
The run's report (Artifacts tab) has every check's value and band.
Run: {{ link }}"""


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(f"<<{key}>>", value)
    return template


def _daily_match(names: Sequence[str]) -> list[dict[str, str | list[str]]]:
    """The related resources of a flow-run event of these pipelines' daily deployments (the
    per-date reruns and backfill children run another deployment, so they never match)."""
    return [
        {"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},
        {
            "prefect.resource.role": "deployment",
            "prefect.resource.name": [f"{name}-daily" for name in names],
        },
    ]


def day_shift_seconds(zone: str, at: datetime | None = None) -> int:
    """The zone's UTC offset (now, or at `at`) minus one day, in seconds: added to a scheduled
    start, it gives the instant whose UTC date is the day the run processes."""
    offset = (at or datetime.now(UTC)).astimezone(ZoneInfo(zone)).utcoffset() or timedelta()
    return int(offset.total_seconds()) - 86_400


def automations(config: AlertsConfig, catalog: Catalog, block_id: Any) -> list[AutomationCore]:
    """The automations the file asks for, in a stable order, each sending through `block_id`."""
    by_name = {p.name: p for p in catalog.pipelines}
    zone = catalog.pipelines[0].config.timezone  # the catalog's defaults: one zone for all
    context = _fill(_RUN_CONTEXT, SHIFT=str(day_shift_seconds(zone)), FLOW=FLOW_NAME)
    result = []
    failed = [p.name for p in config.pipelines if p.failed]
    if failed:
        result.append(
            AutomationCore(
                name=f"{PREFIX}daily run failed",
                description=(
                    "A daily run of " + ", ".join(failed) + " ended Failed, Crashed or TimedOut "
                    "(from the alerts file; `python deployments/alerts.py apply` rewrites it)."
                ),
                trigger=EventTrigger(
                    expect=set(FAILED_EVENTS),
                    match={"prefect.resource.id": "prefect.flow-run.*"},
                    match_related=_daily_match(failed),
                    for_each={"prefect.resource.id"},
                    posture=Posture.Reactive,
                    threshold=1,
                    within=timedelta(0),
                ),
                actions=[
                    SendNotification(
                        block_document_id=block_id,
                        subject=context + _fill(_FAILED_SUBJECT, FLOW=FLOW_NAME),
                        body=context + _FAILED_BODY,
                    )
                ],
            )
        )
    for alerts in config.pipelines:
        if alerts.late_after is None:
            continue
        pipeline = by_name[alerts.name]
        window = late_window(alerts.late_after, pipeline)
        values = {
            "FLOW": FLOW_NAME,
            "LATE": alerts.late_after.isoformat(timespec="seconds").removesuffix(":00"),
            "ZONE": pipeline.config.timezone,
            "SCHEDULED": f"{pipeline.schedule_hour:02d}:{pipeline.schedule_minute:02d}",
        }
        result.append(
            AutomationCore(
                name=f"{PREFIX}{pipeline.daily_deployment} late",
                description=(
                    f"The daily run of {pipeline.name} (scheduled {values['SCHEDULED']} "
                    f"{values['ZONE']}) has not completed by {values['LATE']}: no terminal "
                    f"state within {window} of the run being marked Late or starting."
                ),
                trigger=EventTrigger(
                    after=set(LATE_OPENERS),
                    expect=set(LATE_CLOSERS),
                    match={"prefect.resource.id": "prefect.flow-run.*"},
                    match_related=_daily_match([pipeline.name]),
                    for_each={"prefect.resource.id"},
                    posture=Posture.Proactive,
                    threshold=1,
                    within=window,
                ),
                actions=[
                    SendNotification(
                        block_document_id=block_id,
                        subject=context + _fill(_LATE_SUBJECT, **values),
                        body=context + _fill(_LATE_BODY, **values),
                    )
                ],
            )
        )
    quality = [p.name for p in config.pipelines if p.quality_warn]
    if quality:
        result.append(
            AutomationCore(
                name=f"{PREFIX}quality warning",
                description=(
                    f"{QUALITY_EVENT} from a daily run of " + ", ".join(quality) + ": a quality "
                    "check set to warn did not pass; the day was published."
                ),
                trigger=EventTrigger(
                    expect={QUALITY_EVENT},
                    match={
                        "prefect.resource.id": [f"bq-tableau.pipeline.{name}" for name in quality]
                    },
                    match_related=_daily_match(quality),
                    posture=Posture.Reactive,
                    threshold=1,
                    within=timedelta(0),
                ),
                actions=[
                    SendNotification(
                        block_document_id=block_id,
                        subject=_fill(_QUALITY_SUBJECT, FLOW=FLOW_NAME),
                        body=_QUALITY_BODY,
                    )
                ],
            )
        )
    return result


def _comparable(automation: AutomationCore) -> Any:
    """The automation as JSON with its sets (dumped as lists in any order) sorted."""
    fields = set(AutomationCore.model_fields)
    return _sorted(json.loads(automation.model_dump_json(include=fields)))


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_sorted(item) for item in value]
        return sorted(items) if all(isinstance(i, str) for i in items) else items
    return value


# -- the server ---------------------------------------------------------------------------------


class BlockMissing(Exception):
    """The notification block is not saved (or is of another type than the file's kind)."""


def block_document_id(config: AlertsConfig) -> Any:
    """The id of the saved notification block the file names.

    Raises:
        BlockMissing: with the command that saves it.
    """
    slug = KINDS[config.kind].get_block_type_slug()
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(
                config.block, block_type_slug=slug, include_secrets=False
            )
        except ObjectNotFound:
            raise BlockMissing(
                f"no {KINDS[config.kind].get_block_type_name()} block named {config.block!r} on "
                f"the Prefect server: save it with `python deployments/alerts.py save-block` "
                f"(the secret from {SECRET_VARIABLES[config.kind]} or the prompt)"
            ) from None
    return document.id


@dataclass(frozen=True)
class Change:
    """One automation and what `apply` did (or, with --dry-run, would do) to it."""

    action: str  # created, updated, unchanged, deleted
    name: str
    detail: str


def apply(config: AlertsConfig, catalog: Catalog, *, dry_run: bool = False) -> list[Change]:
    """Make the server's `bq-view-to-tableau: ...` automations exactly the file's: create the
    missing ones, update those that differ (matched by name, so ids stay), delete the ones the
    file no longer asks for (and duplicates of a name). With `dry_run`, only read.

    Raises:
        BlockMissing: the notification block is not saved; nothing was changed.
    """
    block_id = block_document_id(config)
    wanted = automations(config, catalog, block_id)
    changes = []
    with get_client(sync_client=True) as client:
        existing: dict[str, list[Any]] = {}
        for automation in client.read_automations():
            if automation.name.startswith(PREFIX):
                existing.setdefault(automation.name, []).append(automation)
        for automation in wanted:
            detail = automation.trigger.describe_for_cli().strip()
            found = sorted(existing.pop(automation.name, []), key=lambda a: str(a.id))
            if not found:
                if not dry_run:
                    client.create_automation(automation)
                changes.append(Change("created", automation.name, detail))
                continue
            first, *duplicates = found
            if _comparable(first) == _comparable(automation):
                changes.append(Change("unchanged", automation.name, detail))
            else:
                if not dry_run:
                    client.update_automation(first.id, automation)
                changes.append(Change("updated", automation.name, detail))
            for duplicate in duplicates:
                if not dry_run:
                    client.delete_automation(duplicate.id)
                changes.append(Change("deleted", duplicate.name, f"duplicate {duplicate.id}"))
        for name, stale in sorted(existing.items()):
            for automation in stale:
                if not dry_run:
                    client.delete_automation(automation.id)
                changes.append(Change("deleted", name, "no longer in " + config.source))
    return changes


def read_secret(kind: str, environ: Mapping[str, str] | None = None) -> str:
    """The block's secret from its environment variable, else typed at a prompt (never echoed).

    Raises:
        ConfigError: unset and no terminal to ask on.
    """
    variable = SECRET_VARIABLES[kind]
    value = (environ if environ is not None else os.environ).get(variable, "").strip()
    if value:
        return value
    if not sys.stdin.isatty():
        raise ConfigError(f"set {variable} (or run this in a terminal to type it)", retryable=False)
    prompt = "Slack incoming webhook URL: " if kind == "slack" else "SendGrid API key: "
    return getpass.getpass(prompt).strip()


def notification_block(config: AlertsConfig, secret: str) -> SlackWebhook | SendgridEmail:
    """The block for the file's kind with `secret` in its SecretStr field.

    Raises:
        ConfigError: the secret is not of the expected shape (the message never repeats it).
    """
    if config.kind == "slack":
        if not _SLACK_URL.match(secret):
            raise ConfigError(
                f"{SECRET_VARIABLES['slack']} is not a Slack incoming webhook URL "
                "(https://hooks.slack.com/services/T.../B.../...; Slack: Apps, Incoming "
                "Webhooks, Add New Webhook); nothing was saved",
                retryable=False,
            )
        return SlackWebhook(url=secret, notify_type="warning")
    if not secret.startswith("SG."):
        raise ConfigError(
            f"{SECRET_VARIABLES['email']} is not a SendGrid API key (they start with 'SG.'; "
            "SendGrid: Settings, API Keys, with Mail Send access); nothing was saved",
            retryable=False,
        )
    return SendgridEmail(
        api_key=secret,
        sender_email=config.email_from,
        to_emails=list(config.email_to),
        notify_type="warning",
    )


# -- the command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python deployments/alerts.py",
        description="Alerts as code: the notification block and the automations of alerts.yaml.",
        epilog="exit codes: 0 done; 1 the server refused or the block is missing; 2 bad input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--file", type=Path, default=ALERTS_FILE, help="default: %(default)s")
    parser.add_argument(
        "--catalog", type=Path, default=None, help="default: $PIPELINES_CATALOG or pipelines.yaml"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate the file against the catalog; find the block")
    applying = commands.add_parser("apply", help="create or update the automations, by name")
    applying.add_argument("--dry-run", action="store_true", help="print, change nothing")
    commands.add_parser(
        "save-block", help="save the notification block; its secret from the env or a prompt"
    )
    commands.add_parser("send-test", help="send one test message through the saved block")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        catalog = catalog_module.load(args.catalog)
        config = load(args.file, catalog)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        return _run(args, config, catalog)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except BlockMissing as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except PrefectHTTPStatusError as exc:
        print(f"the Prefect server refused: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, config: AlertsConfig, catalog: Catalog) -> int:
    kind_name = KINDS[config.kind].get_block_type_name()
    if args.command == "save-block":
        block = notification_block(config, read_secret(config.kind))
        block.save(config.block, overwrite=True)
        print(f"saved {kind_name} block {config.block!r} ({config.kind})")
        return 0
    if args.command == "send-test":
        block_document_id(config)
        block = KINDS[config.kind].load(config.block)
        with block.raise_on_failure():
            try:
                block.notify(
                    "A test message from `python deployments/alerts.py send-test`: alerts of "
                    f"{', '.join(p.name for p in config.pipelines)} reach you here.",
                    subject=f"[{FLOW_NAME}] test alert",
                )
            except Exception as exc:
                # apprise's log lines, not the exception's text: that may hold the URL.
                log = getattr(exc, "log", "") or type(exc).__name__
                print(f"the {kind_name} block {config.block!r} could not send: {log}".strip())
                return 1
        print(f"sent a test message through {kind_name} block {config.block!r}")
        return 0
    if args.command == "check":
        block_document_id(config)
        late = [p for p in config.pipelines if p.late_after]
        print(
            f"alerts OK: {len(config.pipelines)} pipeline(s), {len(late)} with a late alert, "
            f"{kind_name} block {config.block!r} found"
        )
        return 0
    changes = apply(config, catalog, dry_run=args.dry_run)
    for change in changes:
        print(f"{change.action:9} {change.name}: {change.detail}")
    verb = "would change" if args.dry_run else "changed"
    touched = sum(change.action != "unchanged" for change in changes)
    print(f"alerts {'dry run' if args.dry_run else 'applied'}: {verb} {touched} automation(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
