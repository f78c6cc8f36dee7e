"""The catalog of pipelines: one file listing every view -> Tableau datasource of a data mart.

    deployments/pipelines.yaml
      schedule:  {hour: 6, minute: 0}       the daily runs' time, in defaults.timezone
      defaults:  {...}                      a PipelineConfig without its view and datasource
      pipelines:
        - {name: campaigns, view: p.d.v_campaign_daily, datasource: campaign_daily}

Each entry names its view, datasource and date column and may override a few settings
(`OVERRIDES`); everything else comes from the defaults, so a pipeline is a few lines. `load`
validates the whole file before anything deploys or runs and reports every problem at once.
`render_deployments` turns the catalog into prefect.yaml's deployments (two per pipeline and
one backfill), and `check_deployments`, a prefect.yaml build step, refuses a deploy whose
prefect.yaml no longer matches the catalog.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from flows.config import PipelineConfig
from flows.errors import ConfigError, FileProblemsError

DEFAULT_CATALOG: Final[Path] = Path(__file__).resolve().parents[1] / "deployments/pipelines.yaml"
"""The catalog beside the code: the repository's, or /app's in the image."""
CATALOG_VARIABLE: Final[str] = "PIPELINES_CATALOG"
"""An environment variable naming another catalog file (e.g. the stand-ins')."""
FLOW_NAME: Final[str] = "bq-view-to-tableau"  # flows.daily's flow
BACKFILL_DEPLOYMENT: Final[str] = "bq-view-to-tableau-backfill/backfill"
GENERATED_MARKER: Final[str] = "# --- Generated from deployments/pipelines.yaml"

# An entry's own keys -> where they go in its PipelineConfig. `name` and `schedule_hour` are
# the catalog's: the name also becomes the config's, the hour goes to the daily schedule.
OVERRIDES: Final[dict[str, tuple[str, ...]]] = {
    "view": ("bigquery", "view"),
    "datasource": ("tableau", "datasource"),
    "date_column": ("bigquery", "date_column"),
    "location": ("bigquery", "location"),
    "max_bytes_billed": ("bigquery", "max_bytes_billed"),
    "fingerprint_columns": ("bigquery", "fingerprint_columns"),
    "project": ("tableau", "project"),
    "mode": ("tableau", "mode"),
    "upsert_keys": ("tableau", "upsert_keys"),
    "lookback_days": ("lookback_days",),
    "earliest_date": ("earliest_date",),
    "empty_day": ("gcs", "empty_day"),
    "quality": ("quality",),  # merged key by key into the defaults' quality
}
ENTRY_KEYS: Final[tuple[str, ...]] = ("name", "description", *OVERRIDES, "schedule_hour")
REQUIRED_KEYS: Final[tuple[str, ...]] = ("name", "view", "datasource")
PER_PIPELINE: Final[tuple[tuple[str, ...], ...]] = (
    ("name",),
    ("bigquery", "view"),
    ("tableau", "datasource"),
)
"""Settings that only an entry may give: a default view or datasource would be shared."""


class CatalogError(FileProblemsError):
    """The catalog file is not valid; `problems` lists each problem, one line each."""

    consequence = "nothing was deployed or run"


@dataclass(frozen=True)
class Pipeline:
    """One catalog entry: its name, its full config and the hour of its daily run."""

    name: str
    config: PipelineConfig
    schedule_hour: int
    schedule_minute: int
    description: str = ""

    @property
    def daily_deployment(self) -> str:
        return f"{self.name}-daily"

    @property
    def per_date_deployment(self) -> str:
        return per_date_deployment(self.name)

    @property
    def cron(self) -> str:
        return f"{self.schedule_minute} {self.schedule_hour} * * *"

    @property
    def target(self) -> str:
        """`project/datasource` in Tableau."""
        return f"{self.config.tableau.project}/{self.config.tableau.datasource}"


def per_date_deployment(pipeline: str) -> str:
    """The full name of a pipeline's per-date deployment (reruns, backfill children)."""
    return f"{FLOW_NAME}/{pipeline}-per-date"


@dataclass(frozen=True)
class Catalog:
    """Every pipeline of the file, in its order."""

    pipelines: tuple[Pipeline, ...]
    source: str

    def get(self, name: str) -> Pipeline:
        """The pipeline `name`, or a ConfigError listing the names there are."""
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        names = [p.name for p in self.pipelines]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"No pipeline {name!r} in {self.source}; it has: {', '.join(names)}.{hint}",
            retryable=False,
        )


def default_catalog() -> Path:
    """The catalog file `$PIPELINES_CATALOG` names, else the one beside the code."""
    return Path(os.environ.get(CATALOG_VARIABLE) or DEFAULT_CATALOG)


def load(path: Path | None = None) -> Catalog:
    """Read and validate the catalog file (default: `default_catalog()`).

    Raises:
        CatalogError: the file is missing, not YAML, or has invalid entries (all listed).
    """
    path = path or default_catalog()
    try:
        with path.open(encoding="utf-8") as stream:  # YAML errors then name the file
            document = yaml.safe_load(stream)
    except OSError as exc:
        raise CatalogError(str(path), [f"cannot read it: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise CatalogError(str(path), [f"not valid YAML: {exc}"]) from exc
    return parse(document, source=str(path))


def parse(document: object, *, source: str = "the catalog") -> Catalog:
    """Validate a catalog document (the file's YAML, as Python) into its pipelines.

    Raises:
        CatalogError: every problem found, each naming the entry and the key.
    """
    if not isinstance(document, Mapping):
        raise CatalogError(source, ["must be a mapping with 'defaults' and 'pipelines'"])
    problems = _unknown(document, ("schedule", "defaults", "pipelines"), "the file")
    defaults = document.get("defaults") or {}
    entries = document.get("pipelines")
    hour, minute, schedule_problems = _schedule(document.get("schedule") or {})
    problems += schedule_problems
    if not isinstance(defaults, Mapping):
        problems.append("defaults: must be a mapping of PipelineConfig settings")
        defaults = {}
    for path in PER_PIPELINE:
        if _get(defaults, path) is not None:
            problems.append(
                f"defaults.{'.'.join(path)}: is given per pipeline, not in the defaults"
            )
    if not isinstance(entries, list) or not entries:
        problems.append("pipelines: must list at least one pipeline")
        entries = []

    pipelines: list[Pipeline] = []
    for index, entry in enumerate(entries):
        pipeline, entry_problems = _pipeline(index, entry, defaults, hour, minute)
        problems += entry_problems
        if pipeline is not None:
            pipelines.append(pipeline)
    problems += _clashes(pipelines)
    if problems:
        raise CatalogError(source, problems)
    return Catalog(tuple(pipelines), source)


def _pipeline(
    index: int, entry: object, defaults: Mapping[str, Any], hour: int, minute: int
) -> tuple[Pipeline | None, list[str]]:
    label = f"pipelines[{index}]"
    if not isinstance(entry, Mapping):
        return None, [f"{label}: must be a mapping with name, view and datasource"]
    name = entry.get("name")
    if isinstance(name, str):
        label = f"pipelines[{index}] ({name})"
    problems = _unknown(entry, ENTRY_KEYS, label)
    problems += [f"{label}: '{key}' is required" for key in REQUIRED_KEYS if key not in entry]
    schedule_hour = entry.get("schedule_hour", hour)
    if not isinstance(schedule_hour, int) or isinstance(schedule_hour, bool):
        problems.append(f"{label}: schedule_hour must be an hour, 0-23")
    elif not 0 <= schedule_hour <= 23:
        problems.append(f"{label}: schedule_hour {schedule_hour} must be 0-23")
    if problems:
        return None, problems

    settings = _deep_copy(defaults)
    settings["name"] = name
    for key, path in OVERRIDES.items():
        if key in entry:
            _set(settings, path, entry[key])
    try:
        config = PipelineConfig.model_validate(settings)
    except ValidationError as exc:
        given = {path: key for key, path in OVERRIDES.items() if key in entry}
        return None, [f"{label}: {_describe(error, given)}" for error in exc.errors()]
    return Pipeline(
        str(name), config, schedule_hour, minute, str(entry.get("description") or "")
    ), []


def _clashes(pipelines: list[Pipeline]) -> list[str]:
    """Two entries with one name, or writing one datasource (they would replace each other's
    dates, and share one record of what was published)."""
    problems = []
    names: dict[str, int] = {}
    targets: dict[tuple[str, str, str], str] = {}
    for pipeline in pipelines:
        names[pipeline.name] = names.get(pipeline.name, 0) + 1
        tableau = pipeline.config.tableau
        project = "/".join(p.strip() for p in tableau.project.split("/") if p.strip())
        target = (tableau.server_block, project.casefold(), tableau.datasource.casefold())
        if target in targets and targets[target] != pipeline.name:
            problems.append(
                f"pipelines {targets[target]!r} and {pipeline.name!r} both write Tableau "
                f"datasource {project}/{tableau.datasource} (block {tableau.server_block!r}): "
                "each would replace the other's dates; give each its own datasource"
            )
        targets.setdefault(target, pipeline.name)
    problems += [
        f"pipeline name {name!r} is used {count} times: names must be unique (they name "
        "the deployments)"
        for name, count in names.items()
        if count > 1
    ]
    return problems


def _schedule(schedule: object) -> tuple[int, int, list[str]]:
    if not isinstance(schedule, Mapping):
        return 6, 0, ["schedule: must be a mapping like {hour: 6, minute: 0}"]
    problems = _unknown(schedule, ("hour", "minute"), "schedule")
    hour, minute = schedule.get("hour", 6), schedule.get("minute", 0)
    if not isinstance(hour, int) or isinstance(hour, bool) or not 0 <= hour <= 23:
        problems.append(f"schedule.hour {hour!r} must be 0-23")
        hour = 6
    if not isinstance(minute, int) or isinstance(minute, bool) or not 0 <= minute <= 59:
        problems.append(f"schedule.minute {minute!r} must be 0-59")
        minute = 0
    return hour, minute, problems


def _unknown(mapping: Mapping[Any, Any], allowed: tuple[str, ...], label: str) -> list[str]:
    problems = []
    for key in mapping:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.append(
            f"{label}: unknown key {key!r} ({hint}allowed: {', '.join(allowed)})"
            if label != "the file"
            else f"unknown top-level key {key!r} ({hint}allowed: {', '.join(allowed)})"
        )
    return problems


def _describe(error: Mapping[str, Any], given: Mapping[tuple[str, ...], str]) -> str:
    """A pydantic error as `key.path: message`, naming the entry's own key when the entry set
    it (`view (bigquery.view): ...`), in the catalog's words where they differ."""
    loc = tuple(str(part) for part in error["loc"])
    path = ".".join(loc)
    if loc in given and given[loc] != path:
        path = f"{given[loc]} ({path})"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting (see the configuration reference in README.md)"
    elif error["type"] == "missing":
        message = "is required (set it in defaults)"
    return f"{path}: {message}" if path else message


def _get(mapping: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = mapping
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _set(mapping: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set `path` to `value`; a mapping is merged key by key into the mapping already there
    (an entry's `quality: {sums: ...}` keeps the defaults' row_count)."""
    for part in path[:-1]:
        child = mapping.get(part)
        if not isinstance(child, dict):
            child = mapping[part] = {}
        mapping = child
    current = mapping.get(path[-1])
    if isinstance(value, Mapping) and isinstance(current, dict):
        for key, item in value.items():
            _set(current, (key,), item)
    else:
        mapping[path[-1]] = value


def _deep_copy(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _deep_copy(value) if isinstance(value, Mapping) else value
        for key, value in mapping.items()
    }


# -- prefect.yaml's deployments, from the catalog ------------------------------------------------

_DAILY: Final[str] = """\
  - name: {daily}
    description: {daily_description}
    entrypoint: flows/daily.py:daily_refresh
    tags: [{flow}, "pipeline:{name}"]
    schedules:
      - cron: "{cron}"
        timezone: {timezone}
        active: true
    concurrency_limit: # a run still going when the next is due waits instead of overlapping
      limit: 1
      collision_strategy: ENQUEUE
    enforce_parameter_schema: true
    parameters:
      config: &config-{name}
{config}
    work_pool: *ecs_pool
  - name: {per_date}
    description: {per_date_description}
    entrypoint: flows/daily.py:daily_refresh
    tags: [{flow}, "pipeline:{name}"]
    schedules: []
    concurrency_limit: # the backfill's default max_concurrency; publishes take turns anyway
      limit: 3
      collision_strategy: ENQUEUE
    enforce_parameter_schema: true
    parameters:
      config: *config-{name}
    work_pool: *ecs_pool
"""
_BACKFILL: Final[str] = """\
  - name: backfill
    description: {description}
    entrypoint: flows/backfill.py:backfill
    tags: [{flow}]
    schedules: []
    concurrency_limit: # two backfills at once would compete for the same per-date slots
      limit: 1
      collision_strategy: ENQUEUE
    enforce_parameter_schema: true
    work_pool: *backfill_pool
"""


def render_deployments(catalog: Catalog) -> str:
    """prefect.yaml's generated part: for each pipeline its scheduled daily deployment and its
    per-date deployment, then the one backfill deployment, which takes a pipeline's name.

    The text refers to the `*ecs_pool` and `*backfill_pool` anchors of prefect.yaml's
    hand-written part, above the marker.
    """
    names = ", ".join(p.name for p in catalog.pipelines)
    parts = [
        f"{GENERATED_MARKER} by `python -m flows catalog render`; edit the catalog, not this. ---",
        "deployments:",
    ]
    for pipeline in catalog.pipelines:
        config = pipeline.config
        dumped = yaml.safe_dump(
            config.model_dump(mode="json", exclude_defaults=True),
            sort_keys=False,
            allow_unicode=True,
            width=90,
        )
        view, zone = config.bigquery.view, config.timezone
        parts.append(f"  # {pipeline.name}: {view} -> Tableau {pipeline.target}")
        parts.append(
            _DAILY.format(
                flow=FLOW_NAME,
                name=pipeline.name,
                daily=pipeline.daily_deployment,
                per_date=f"{pipeline.name}-per-date",
                cron=pipeline.cron,
                timezone=zone,
                config="\n".join(f"        {line}" for line in dumped.splitlines()),
                daily_description=_quote(
                    pipeline.description
                    or f"Add yesterday ({zone}) of {view} to the Tableau datasource "
                    f"{pipeline.target}."
                ),
                per_date_description=_quote(
                    f"Process one given date (run_date) of {view} into {pipeline.target}; for "
                    "reruns and backfills."
                ),
            ).rstrip("\n")
        )
    parts.append(
        _BACKFILL.format(
            flow=f"{FLOW_NAME}",
            description=_quote(
                f"Run a pipeline's per-date deployment for a range or list of dates (pipeline: "
                f"one of {names})."
            ),
        ).rstrip("\n")
    )
    return "\n".join(parts) + "\n"


def _quote(text: str) -> str:
    return yaml.safe_dump(text, width=10_000, allow_unicode=True).removesuffix("\n...\n").strip()


def split_prefect_yaml(text: str) -> tuple[str, str]:
    """prefect.yaml as (its hand-written part, its generated part); the marker line starts
    the generated part.

    Raises:
        ConfigError: the file has no marker line.
    """
    head, marker, tail = text.partition(GENERATED_MARKER)
    if not marker:
        raise ConfigError(
            f"prefect.yaml has no line starting {GENERATED_MARKER!r}: its deployments are "
            "generated below that line from the catalog; restore the line at the end of the "
            "hand-written part and run `python -m flows catalog render`",
            retryable=False,
        )
    return head, marker + tail


def render_prefect_yaml(text: str, catalog: Catalog) -> str:
    """prefect.yaml's text with its generated part replaced by the catalog's deployments."""
    head, _ = split_prefect_yaml(text)
    return head + render_deployments(catalog)


def check_deployments(catalog: str = "", prefect_file: str = "prefect.yaml") -> dict[str, str]:
    """A prefect.yaml build step: refuse the deploy when the catalog (default:
    `default_catalog()`) is invalid, or when prefect.yaml's deployments are not the catalog's
    (edited since the last render).

    Raises:
        CatalogError: the catalog is invalid.
        ConfigError: prefect.yaml is out of date; the message says how to regenerate it.
    """
    loaded = load(Path(catalog) if catalog else None)
    current = Path(prefect_file).read_text(encoding="utf-8")
    if render_prefect_yaml(current, loaded) != current:
        raise ConfigError(
            f"{prefect_file}'s deployments do not match {loaded.source} (edited since the last "
            "render): run `python -m flows catalog render`, review the diff, then deploy",
            retryable=False,
        )
    names = ", ".join(p.name for p in loaded.pipelines)
    print(f"catalog OK: {len(loaded.pipelines)} pipeline(s) ({names}), prefect.yaml up to date")
    return {"pipelines": names}
