"""`python -m flows`: the pipelines of the catalog from a terminal.

    python -m flows pipelines                 list the catalog's pipelines
    python -m flows catalog check|render      validate it; rewrite prefect.yaml's deployments

Exit codes: 0 success; 1 the answer is no (a run failed, a plan was refused, a date
disagrees); 2 a bad command line or catalog; 3 a system could not be reached to answer.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from flows import catalog
from flows.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

OK: Final[int] = 0
NO: Final[int] = 1
USAGE: Final[int] = 2
UNREACHABLE: Final[int] = 3

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except ConfigError as exc:  # a bad catalog, pipeline name or date: nothing was done
        print(f"error: {exc}", file=sys.stderr)
        return USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows",
        description="Run, plan or reconcile the pipelines of the catalog "
        "(deployments/pipelines.yaml).",
        epilog="Exit codes: 0 success; 1 a run failed, a plan was refused or a date disagrees; "
        "2 a bad command line or catalog; 3 a system could not be reached.",
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
    return parser


def console() -> Console:
    """Rich's console on stdout; piped output is not wrapped at 80 columns."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _pipelines(args: argparse.Namespace) -> int:
    from rich.table import Table

    loaded = catalog.load(args.catalog)
    table = Table(title=f"{len(loaded.pipelines)} pipeline(s) in {loaded.source}")
    for column in ("pipeline", "view", "Tableau datasource", "daily at", "days per run"):
        table.add_column(column)
    for p in loaded.pipelines:
        zone = p.config.timezone
        at = f"{p.schedule_hour:02d}:{p.schedule_minute:02d} {zone}"
        table.add_row(p.name, p.config.bigquery.view, p.target, at, str(p.config.lookback_days))
    console().print(table)
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
