"""`python -m flows`: the pipelines of the catalog from a terminal (docs/cli.md).

    python -m flows pipelines                 list the catalog's pipelines
    python -m flows catalog check|render      validate it; rewrite prefect.yaml's deployments
    python -m flows run --pipeline NAME       run its daily flow here, for yesterday or --date
    python -m flows plan --pipeline NAME      what a run would do, changing nothing
    python -m flows reconcile --pipeline NAME does Tableau hold what BigQuery holds, per date?

This module parses the command line and prints; the work of each command is a plain function
of its own module (flows.run, flows.plan, flows.reconcile) returning data.

Exit codes: 0 success; 1 the answer is no (a run failed, a plan was refused, a date
disagrees); 2 a bad command line or catalog; 3 a system could not be reached to answer.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

import httpx
from prefect.settings import PREFECT_API_URL
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from flows import catalog, progress
from flows.dates import default_run_date
from flows.errors import ConfigError, PipelineError
from flows.plan import cannot_answer, plan_run
from flows.progress import StepDisplay
from flows.reconcile import reconcile
from flows.report import human_bytes
from flows.run import run_pipeline

OK: Final[int] = 0
NO: Final[int] = 1
USAGE: Final[int] = 2
UNREACHABLE: Final[int] = 3

EXIT_CODES: Final[str] = """\
exit codes:
  0  success: the run completed, the run would proceed, every date agrees
  1  the answer is no: the run failed, the plan was refused, a date disagrees
  2  a bad command line or catalog (an unknown pipeline, a date in the future, ...)
  3  a system could not be reached to answer (credentials refused, no connection)

environment:
  PIPELINES_CATALOG  the catalog file when --catalog is not given
                     (default: deployments/pipelines.yaml beside the code)"""

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0), or a bad command line (2): argparse said why
        return exc.code if isinstance(exc.code, int) else USAGE
    try:
        return args.command(args)
    except ConfigError as exc:  # a bad catalog, pipeline name or date: nothing was done
        _error(exc)
        return USAGE
    except Exception as exc:
        if not cannot_answer(exc):
            raise
        _error(_unreachable(exc), prefix="could not get an answer: ")
        return UNREACHABLE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows",
        description="Run, plan or reconcile the pipelines of the catalog "
        "(deployments/pipelines.yaml).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help=f"the catalog file (default: ${catalog.CATALOG_VARIABLE}, else "
        "deployments/pipelines.yaml beside the code)",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    listing = commands.add_parser("pipelines", help="list the catalog's pipelines")
    listing.set_defaults(command=_pipelines)

    checking = commands.add_parser(
        "catalog", help="validate the catalog, or render prefect.yaml's deployments from it"
    )
    checking.add_argument("action", choices=("check", "render"))
    checking.add_argument(
        "--prefect-file", type=Path, default=Path("prefect.yaml"), help="default: %(default)s"
    )
    checking.set_defaults(command=_catalog)

    run = _pipeline_command(
        commands,
        "run",
        "run the pipeline's daily flow in this process, for one date (and its window)",
        "Runs the deployments' flow here, against the Prefect API of the profile or "
        "PREFECT_API_URL (its blocks are loaded from there; its report and history artifacts "
        "written there), and prints the run report.",
    )
    _date_options(run)
    run.add_argument(
        "--force", action="store_true", help="republish every date of the window, changed or not"
    )
    run.add_argument(
        "--accept-quality-failures",
        action="store_true",
        help="publish although a quality check set to fail did not pass (recorded in the report)",
    )
    run.set_defaults(command=_run)

    plan = _pipeline_command(
        commands,
        "plan",
        "show what a run would do, changing nothing",
        "Makes the run's checks (the dry run, the Tableau target, for a window the "
        "fingerprints against the record) without running it: no flow run, no export, no "
        "GCS or Tableau change.",
    )
    _date_options(plan)
    plan.set_defaults(command=_plan)

    check = _pipeline_command(
        commands,
        "reconcile",
        "compare each date's rows in BigQuery and in Tableau",
        "For each of the last --days dates ending on --end, BigQuery's rows (and digest, "
        "and sums) against Tableau's, read from the pipeline's record in GCS or from the "
        "published extract, with the next step for each date that disagrees.",
    )
    check.add_argument(
        "--days", type=int, default=7, help="how many dates, ending on --end (default: 7)"
    )
    check.add_argument(
        "--end", type=_date, help="the last date (default: yesterday in the pipeline's zone)"
    )
    check.add_argument(
        "--source",
        choices=("auto", "record", "extract"),
        default="auto",
        help="Tableau's side: the record of what was published (GCS, no download), the "
        "published extract (downloaded), or auto: the record when it holds every date "
        "(default: auto)",
    )
    check.set_defaults(command=_reconcile)
    return parser


def _pipeline_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    command = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("--pipeline", required=True, help="its name in the catalog")
    return command


def _date_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--date",
        type=_date,
        help="the run date, YYYY-MM-DD (default: yesterday in the pipeline's time zone)",
    )
    command.add_argument(
        "--lookback",
        type=int,
        help="days covered, ending on the date (default: the pipeline's lookback_days)",
    )


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD") from None


# -- output ---------------------------------------------------------------------------------


def _out() -> Console:
    """Standard output: the answer (progress and logs go to standard error); piped output is
    not wrapped at 80 columns."""
    return Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 200)


def _error(exc: BaseException | str, *, prefix: str = "") -> None:
    """An error's message on standard error, its first line in bold."""
    text = str(exc).strip() or type(exc).__name__
    first, _, rest = text.partition("\n")
    message = Text(f"error: {prefix}", style="red")
    message.append(first, style="bold")
    if rest:
        message.append(f"\n{rest}")
    Console(stderr=True, soft_wrap=True, highlight=False).print(message)


def _days_text(days: Sequence[date]) -> str:
    if len(days) == 1:
        return f"1 date ({days[0]})"
    return f"{len(days)} dates ({', '.join(str(d) for d in days)})"


def _unreachable(exc: BaseException) -> str:
    """The error's message, saying which API it was when it was Prefect's."""
    if isinstance(exc, httpx.TransportError) or isinstance(exc.__cause__, httpx.TransportError):
        url = PREFECT_API_URL.value() or "the ephemeral server"
        return (
            f"cannot reach the Prefect API at {url} ({type(exc).__name__}: {exc}); check "
            "PREFECT_API_URL or the Prefect profile (the blocks and the run's artifacts are there)"
        )
    return str(exc)


def _pipeline_and_date(args: argparse.Namespace) -> tuple[catalog.Pipeline, date]:
    """The named pipeline, and --date or yesterday in its zone (saying which was taken)."""
    pipeline = catalog.load(args.catalog).get(args.pipeline)
    given = getattr(args, "date", None) or getattr(args, "end", None)
    if given is not None:
        return pipeline, given
    day = default_run_date(datetime.now(UTC), pipeline.config.timezone)
    _out().print(Text(f"Date: {day} (yesterday in {pipeline.config.timezone})", style="dim"))
    return pipeline, day


# -- commands -------------------------------------------------------------------------------


def _pipelines(args: argparse.Namespace) -> int:
    loaded = catalog.load(args.catalog)
    out = _out()
    out.print(f"{len(loaded.pipelines)} pipeline(s) in {loaded.source}")
    table = Table()
    for column in ("pipeline", "view", "Tableau datasource", "daily at", "days per run"):
        table.add_column(column)
    for p in loaded.pipelines:
        zone = p.config.timezone
        at = f"{p.schedule_hour:02d}:{p.schedule_minute:02d} {zone}"
        table.add_row(p.name, p.config.bigquery.view, p.target, at, str(p.config.lookback_days))
    out.print(table)
    return OK


def _catalog(args: argparse.Namespace) -> int:
    loaded = catalog.load(args.catalog)
    prefect_file: Path = args.prefect_file
    source = loaded.source
    current = prefect_file.read_text(encoding="utf-8")
    rendered = catalog.render_prefect_yaml(current, loaded)
    names = ", ".join(p.name for p in loaded.pipelines)
    if args.action == "render":
        prefect_file.write_text(rendered, encoding="utf-8")
        state = "rewritten" if rendered != current else "already up to date"
        print(f"{prefect_file}: {2 * len(loaded.pipelines) + 1} deployments ({state}) for {names}")
        return OK
    if rendered != current:
        print(
            f"error: {prefect_file}'s deployments do not match {source}: run "
            "`python -m flows catalog render`",
            file=sys.stderr,
        )
        return NO
    print(f"catalog OK: {len(loaded.pipelines)} pipeline(s) ({names}); {prefect_file} up to date")
    return OK


def _run(args: argparse.Namespace) -> int:

    pipeline, day = _pipeline_and_date(args)
    out = _out()
    out.print(
        Text(f"Running {pipeline.name} for {day}: {pipeline.config.bigquery.view} → Tableau ")
        + Text(pipeline.target, style="bold")
    )
    with StepDisplay() as display, progress.listening(display):
        outcome = run_pipeline(
            pipeline,
            day,
            lookback_days=args.lookback,
            force=args.force,
            accept_quality_failures=args.accept_quality_failures,
        )
    if outcome.report:
        out.print(Markdown(outcome.report))
    run = f"flow run {outcome.flow_run_name!r}" if outcome.flow_run_name else "the run"
    if outcome.completed:
        out.print(Text(f"✓ {run}: {outcome.state}", style="green"))
        return OK
    out.print(Text(f"✗ {run}: {outcome.state}", style="red"))
    _error(outcome.error or outcome.state)
    return USAGE if isinstance(outcome.error, ConfigError) else NO


def _plan(args: argparse.Namespace) -> int:

    pipeline, day = _pipeline_and_date(args)
    with StepDisplay() as display, progress.listening(display):
        plan = plan_run(pipeline, day, lookback_days=args.lookback)
    out = _out()
    out.print(Text(f"Plan of {plan.pipeline} for {plan.run_date} (nothing was changed)", "bold"))
    window = plan.window
    facts = [("view", plan.view)]
    facts.append(
        ("window", f"{window[0]}..{window[-1]} ({len(window)} dates)" if len(window) > 1 else "")
    )
    if plan.run_date_rows is not None:
        facts.append(("rows", f"{plan.run_date_rows:,} in BigQuery for {plan.run_date}"))
    if plan.dry_run is not None:
        facts.append(
            (
                "dry run",
                f"{human_bytes(plan.dry_run.estimated_bytes)} to scan for "
                f"{'the window' if len(window) > 1 else 'the date'}, "
                f"{len(plan.dry_run.schema)} columns",
            )
        )
    if plan.export_bytes is not None:
        facts.append(
            (
                "export",
                f"{_days_text(plan.export_days)}: estimated {human_bytes(plan.export_bytes)} "
                f"of bigquery.max_bytes_billed {human_bytes(plan.max_bytes_billed)}",
            )
        )
    elif plan.changes and not plan.export_days and plan.proceeds:
        facts.append(("export", "none: no date changed; the run would end after the fingerprint"))
    if plan.target_check is not None:
        facts.append(("Tableau", f"{plan.target} {plan.target_check.verdict}"))
    facts += [("note", note) for note in plan.notes]
    for key, value in facts:
        if value:
            out.print(f"  {key:<9}{value}")
    label = "dates"
    for change in reversed(plan.changes):  # newest first, as the run report
        before = "" if change.before is None else f"{change.before.rows:,} → "
        moved = ", ".join(f"{c} {d:+,.2f}" for c, d in change.sum_changes().items())
        line = f"{change.day}  {change.verdict:<9}  {before}{change.after.rows:,} rows"
        out.print(f"  {label:<9}{line}" + (f"; {moved}" if moved and change.before else ""))
        label = ""
    if plan.proceeds:
        out.print(Text("✓ the run would proceed", style="green"))
        return OK
    out.print(Text(f"✗ the run would be refused at its {plan.refused_at} step:", style="red"))
    _error(plan.refusal or "refused")
    return NO


def _reconcile(args: argparse.Namespace) -> int:

    pipeline, end = _pipeline_and_date(args)
    try:
        with StepDisplay() as display, progress.listening(display):
            result = reconcile(pipeline, end=end, days=args.days, source=args.source)
    except ConfigError:
        raise
    except PipelineError as exc:  # whatever the reason, the dates could not be compared
        _error(exc, prefix="could not check: ")
        return UNREACHABLE
    out = _out()
    first, last = result.dates[0].day, result.dates[-1].day
    out.print(
        Text(f"{result.pipeline}: {result.view} in BigQuery against Tableau ", style="bold")
        + Text(f"{result.target}, {first if first == last else f'{first}..{last}'}", "bold")
    )
    out.print(f"Tableau's side ({result.source}): {result.source_detail}")
    table = Table("date", "BigQuery rows", "Tableau rows", "agree")
    for column in table.columns[1:3]:
        column.justify = "right"
    for check in reversed(result.dates):  # newest first
        theirs = check.tableau.rows if check.tableau is not None else 0
        table.add_row(
            str(check.day),
            f"{check.bigquery.rows:,}",
            f"{theirs:,}",
            Text("yes", "green") if check.agrees else Text("NO", "bold red"),
        )
    out.print(table)
    if result.unsummed_columns:
        out.print(
            "Not in the published extract, so not compared: " + ", ".join(result.unsummed_columns)
        )
    if not result.disagreeing:
        out.print(Text(f"✓ all {len(result.dates)} date(s) agree", style="green"))
        return OK
    count = f"{len(result.disagreeing)} of {len(result.dates)} date(s) disagree"
    out.print(Text(f"✗ {count}:", style="red"))
    for check in result.disagreeing:
        out.print(f"  {check.day}  {'; '.join(check.differences)}")
        out.print(f"              next: {check.next_step}")
    return NO
