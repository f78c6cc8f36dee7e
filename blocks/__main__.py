"""Command line of the blocks package.

    python -m blocks doctor --block NAME [--condition CEL] [--mapping KEY=EXPR ...] [--bucket B]
    python -m blocks doctor --config FILE --project P [...]
    python -m blocks doctor --tableau NAME [--tableau-project PATH [--datasource NAME]]
    python -m blocks save-credentials --config FILE --project P --name NAME [--overwrite]

`doctor` (either kind) exits 0 when every check passed, 1 when one failed, 3 when all passed
with a warning (e.g. the EC2 instance role instead of a task role, a token expiring soon), 2 on
bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from blocks.credentials import AwsWorkloadIdentityCredentials, save_credentials_block
from blocks.doctor import DoctorOptions, StepResult, diagnose, exit_code, render
from blocks.tableau import TableauServer
from blocks.tableau_doctor import DOCTOR_TITLE, TableauDoctorOptions, diagnose_tableau

_USAGE_ERROR = 2


def _mapping_entry(text: str) -> tuple[str, str]:
    key, sep, expression = text.partition("=")
    if not sep or not key.strip() or not expression.strip():
        raise argparse.ArgumentTypeError(
            f"--mapping {text!r} must be KEY=EXPR, e.g. attribute.aws_role=assertion.arn"
        )
    return key.strip(), expression.strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m blocks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    doctor = commands.add_parser(
        "doctor",
        help="check the AWS -> Google Workload Identity chain, or the Tableau side, step by step",
        description="Run inside the ECS task (e.g. via ECS Exec) when Google access fails; "
        "with --tableau, wherever the flow runs when Tableau refuses.",
    )
    source = doctor.add_mutually_exclusive_group(required=True)
    source.add_argument("--block", metavar="NAME", help="a saved credentials block")
    source.add_argument("--config", metavar="FILE", help="a credential configuration JSON file")
    source.add_argument("--tableau", metavar="NAME", help="a saved TableauServer block")
    doctor.add_argument(
        "--tableau-project",
        metavar="PATH",
        help="with --tableau: the Tableau project path, nested with / (Marketing/Ads)",
    )
    doctor.add_argument(
        "--datasource", metavar="NAME", help="with --tableau: the datasource in that project"
    )
    doctor.add_argument("--project", help="Google Cloud project (required with --config)")
    doctor.add_argument(
        "--condition", metavar="CEL", help="the provider's attribute condition to test"
    )
    doctor.add_argument(
        "--mapping",
        metavar="KEY=EXPR",
        action="append",
        type=_mapping_entry,
        help="the provider's attribute mapping, repeatable (default: Google's AWS mapping)",
    )
    doctor.add_argument("--bucket", help="list this bucket instead of a BigQuery dry run")
    doctor.add_argument(
        "--aws-sts-endpoint",
        metavar="URL",
        help="send the signed GetCallerIdentity here instead of https://sts.REGION.amazonaws.com",
    )
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")

    save = commands.add_parser(
        "save-credentials", help="save an AwsWorkloadIdentityCredentials block from a config file"
    )
    save.add_argument("--config", metavar="FILE", required=True)
    save.add_argument("--project", required=True)
    save.add_argument("--name", required=True)
    save.add_argument("--overwrite", action="store_true")
    save.add_argument("--token-lifetime-seconds", type=int)
    save.add_argument("--quota-project-id")
    return parser


def _load_block(args: argparse.Namespace) -> AwsWorkloadIdentityCredentials:
    if args.block:
        return AwsWorkloadIdentityCredentials.load(args.block)
    return AwsWorkloadIdentityCredentials.from_config_file(args.config, project=args.project)


_GOOGLE_ONLY = ("project", "condition", "mapping", "bucket", "aws_sts_endpoint")


def _print(results: list[StepResult], args: argparse.Namespace, **title: str | None) -> int:
    if args.json:
        payload = [
            {**asdict(r), "details": dict(r.details)} for r in results
        ]  # details as an object
        print(json.dumps({"exit_code": exit_code(results), "steps": payload}, indent=2))
    else:
        print(render(results, **title), end="")  # type: ignore[arg-type]
    return exit_code(results)


def _tableau_doctor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    given = [f"--{n.replace('_', '-')}" for n in _GOOGLE_ONLY if getattr(args, n)]
    if given:
        parser.error(f"{', '.join(given)} check Google access (--block/--config), not --tableau")
    if args.datasource and not args.tableau_project:
        parser.error("--datasource needs --tableau-project, the project it is in")
    try:
        block = TableauServer.load(args.tableau)
    except ValueError as exc:
        print(f"Cannot load TableauServer block {args.tableau!r}: {exc}", file=sys.stderr)
        return _USAGE_ERROR
    options = TableauDoctorOptions(project=args.tableau_project, datasource=args.datasource)
    results = diagnose_tableau(block, options)
    return _print(results, args, block_name=args.tableau, doctor=DOCTOR_TITLE)


def _doctor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.tableau:
        return _tableau_doctor(args, parser)
    if args.tableau_project or args.datasource:
        parser.error("--tableau-project and --datasource go with --tableau NAME")
    if args.config and not args.project:
        parser.error("--config needs --project")
    try:
        block = _load_block(args)
    except (ValueError, OSError) as exc:
        print(f"Cannot load the credentials: {exc}", file=sys.stderr)
        return _USAGE_ERROR
    options = DoctorOptions(
        condition=args.condition,
        bucket=args.bucket,
        aws_sts_endpoint=args.aws_sts_endpoint,
        **({"mapping": dict(args.mapping)} if args.mapping else {}),
    )
    return _print(diagnose(block, options), args, block_name=args.block)


def _save(args: argparse.Namespace) -> int:
    fields = {
        k: v
        for k, v in (
            ("token_lifetime_seconds", args.token_lifetime_seconds),
            ("quota_project_id", args.quota_project_id),
        )
        if v is not None
    }
    try:
        block_id = save_credentials_block(
            args.config, args.project, args.name, overwrite=args.overwrite, **fields
        )
    except ValueError as exc:
        print(f"Cannot save the block: {exc}", file=sys.stderr)
        return _USAGE_ERROR
    print(f"Saved aws-workload-identity-credentials/{args.name} ({block_id})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return _doctor(args, parser)
    return _save(args)


if __name__ == "__main__":
    sys.exit(main())
