"""publish() against the fake Tableau REST server, with real extracts built from Parquet.

publish() and check_target() take the token's publish slot, so the session's Prefect test server
serves them too."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import types
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from tableauhyperapi import Connection, HyperProcess, TableName, Telemetry
from tableauserverclient.server.endpoint import datasources_endpoint, fileuploads_endpoint
from tableauserverclient.server.endpoint.exceptions import (
    InternalServerError,
    ServerResponseError,
)
from tableauserverclient.server.exceptions import EndpointUnavailableError

import flows.tableau
from flows.config import HyperConfig, TableauConfig
from flows.errors import ConfigError, PublishError, SchemaDriftError, is_retryable
from flows.hyper import HyperExtract, build_hyper, write_date_payload
from flows.publish_slot import publish_slot
from flows.tableau import (
    RUN_DATE_TABLE,
    check_target,
    parse_tds_columns,
    publish,
    replace_date_actions,
    schema_drift,
)

pytestmark = [pytest.mark.hyper, pytest.mark.prefect]

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)
D4, D5 = dt.date(2026, 11, 4), dt.date(2026, 11, 5)
_SCHEMA = pa.schema(
    [
        ("date", pa.date32()),
        ("campaign", pa.string()),
        ("clicks", pa.int64()),
        ("cost", pa.decimal128(38, 9)),
        ("ts", pa.timestamp("us", tz="UTC")),
    ]
)


@pytest.fixture(autouse=True)
def _slots(prefect_server: None) -> None:
    """The publish slot lives in Prefect's global concurrency limits."""


@pytest.fixture
def make_extract(tmp_path: Path):
    """Build a real extract from Parquet: `rows` rows of a day, or {day: rows} of several days
    (optionally another schema)."""
    counter = iter(range(1000))

    def make(
        day: dt.date | Mapping[dt.date, int],
        rows: int = 0,
        *,
        clicks: int = 1,
        extra: bool = False,
    ) -> HyperExtract:
        n = next(counter)
        per_day = day if isinstance(day, Mapping) else {day: rows}
        dates = [d for d, count in per_day.items() for _ in range(count)]
        rows = len(dates)
        columns = {
            "date": dates,
            "campaign": [f"キャンペーン{i}" if i % 3 else None for i in range(rows)],
            "clicks": [clicks] * rows,
            "cost": [Decimal("1.250000000")] * rows,
            "ts": [dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)] * rows,
        }
        schema = _SCHEMA
        if extra:
            columns["device"] = ["mobile"] * rows
            schema = schema.append(pa.field("device", pa.string()))
        parquet = tmp_path / f"part-{n}.parquet"
        pq.write_table(pa.table(columns, schema=schema), parquet)
        return build_hyper(
            [parquet],
            tmp_path / f"day-{n}.hyper",
            HyperConfig(),
            schema=schema,
            file_rows=rows,
            exported_rows=rows,
            log_dir=tmp_path / "logs",
        )

    return make


def _config(**kw) -> TableauConfig:
    return TableauConfig(
        server_block="tableau", project=kw.pop("project", "default"), datasource="ads", **kw
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clicks_by_date(fake) -> dict[dt.date, set[int]]:
    found: dict[dt.date, set[int]] = {}
    for day, clicks in fake.rows("ads", '"date", clicks'):
        found.setdefault(dt.date(day.year, day.month, day.day), set()).add(int(clicks))
    return found


def test_first_publish_creates_the_datasource(tableau_fake, tableau_block, make_extract):
    result = publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")

    assert result.created and result.job_id is None and result.rows_sent == 3
    assert result.days == (D1,)
    assert result.datasource_id == tableau_fake.datasource("ads").id
    assert result.url and result.datasource_id in result.url
    assert tableau_fake.rows_by_date("ads") == {D1: 3}
    assert tableau_fake.rows("ads", "campaign", order_by="campaign")[0] == ["キャンペーン1"]


def test_replace_date_adds_a_new_day_in_one_batch(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    result = publish(tableau_block, make_extract(D2, 4), [D2], _config(), date_column="date")

    assert not result.created and result.job_id in tableau_fake.jobs
    assert tableau_fake.rows_by_date("ads") == {D1: 3, D2: 4}
    assert tableau_fake.update_batches == [replace_date_actions("date")]
    delete = tableau_fake.update_batches[0][0]
    assert delete["action"] == "delete" and delete["source-table"] == RUN_DATE_TABLE


def test_same_date_three_times_leaves_its_rows_once(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    for rows in (5, 5, 2):
        publish(tableau_block, make_extract(D2, rows), [D2], _config(), date_column="date")

    assert tableau_fake.rows_by_date("ads") == {D1: 3, D2: 2}
    # Every attempt used its own request id, so none was skipped as a duplicate.
    assert len(tableau_fake.request_ids) == 3


def test_backfilled_old_date_lands_between(tableau_fake, tableau_block, make_extract):
    for day, rows in ((D1, 1), (D3, 3), (D2, 2), (D2, 2)):
        publish(tableau_block, make_extract(day, rows), [day], _config(), date_column="date")

    assert tableau_fake.rows_by_date("ads") == {D1: 1, D2: 2, D3: 3}


def test_append_duplicates_on_rerun_and_warns(tableau_fake, tableau_block, make_extract, caplog):
    caplog.set_level(logging.WARNING, "flows.tableau")
    for _ in range(2):
        publish(
            tableau_block, make_extract(D1, 3), [D1], _config(mode="append"), date_column="date"
        )

    assert tableau_fake.rows_by_date("ads") == {D1: 6}
    assert "reruns" in caplog.text or "rerun" in caplog.text


def test_overwrite_replaces_everything(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    publish(tableau_block, make_extract(D2, 3), [D2], _config(), date_column="date")
    result = publish(
        tableau_block, make_extract(D3, 4), [D3], _config(mode="overwrite"), date_column="date"
    )

    assert not result.created
    assert tableau_fake.rows_by_date("ads") == {D3: 4}


def test_upsert_updates_matches_and_inserts_the_rest(tableau_fake, tableau_block, make_extract):
    config = _config(mode="upsert", upsert_keys=("date", "clicks"))
    publish(tableau_block, make_extract(D1, 2, clicks=1), [D1], config, date_column="date")
    publish(tableau_block, make_extract(D1, 3, clicks=1), [D1], config, date_column="date")
    publish(tableau_block, make_extract(D1, 1, clicks=7), [D1], config, date_column="date")

    clicks = sorted(int(c) for (c,) in tableau_fake.rows("ads", "clicks"))
    # The 2 first rows were replaced by the 3 matching ones; clicks=7 was inserted.
    assert clicks == [1, 1, 1, 7]
    assert tableau_fake.update_batches[0][0]["condition"]["op"] == "and"


def test_upsert_keys_must_be_columns(tableau_block, make_extract):
    config = _config(mode="upsert", upsert_keys=("order_id",))
    with pytest.raises(ConfigError, match="order_id"):
        publish(tableau_block, make_extract(D1, 1), [D1], config, date_column="date")


def test_schema_drift_is_refused_and_nothing_changes(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    before = _digest(tableau_fake.stored_file("ads"))

    with pytest.raises(SchemaDriftError) as info:
        publish(tableau_block, make_extract(D2, 3, extra=True), [D2], _config(), date_column="date")

    message = str(info.value)
    assert "+ device: TEXT" in message and "tableau.mode=overwrite" in message
    assert not info.value.retryable
    assert _digest(tableau_fake.stored_file("ads")) == before
    assert tableau_fake.update_batches == []
    assert tableau_fake.active_sessions == 0


def test_overwrite_is_the_way_out_of_drift(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    publish(
        tableau_block,
        make_extract(D2, 2, extra=True),
        [D2],
        _config(mode="overwrite"),
        date_column="date",
    )
    publish(tableau_block, make_extract(D3, 1, extra=True), [D3], _config(), date_column="date")

    assert tableau_fake.rows_by_date("ads") == {D2: 2, D3: 1}


# -- the preflight: check_target, before the export ------------------------------------------


def test_preflight_passes_a_view_whose_columns_match_and_changes_nothing(
    tableau_fake, tableau_block, make_extract
):
    extract = make_extract(D1, 3)
    first = check_target(tableau_block, _config(), extract.columns, date_column="date")
    assert first.datasource_id is None and "first publish creates it" in first.verdict
    publish(tableau_block, extract, [D1], _config(), date_column="date")
    before = _digest(tableau_fake.stored_file("ads"))

    check = check_target(tableau_block, _config(), extract.columns, date_column="date")

    assert check.datasource_id == tableau_fake.datasource("ads").id
    assert check.columns_compared == len(extract.columns)
    assert f"its {len(extract.columns)} published columns match" in check.verdict
    assert check.rest_version.startswith("3.")
    assert _digest(tableau_fake.stored_file("ads")) == before
    assert tableau_fake.update_batches == [] and tableau_fake.active_sessions == 0


def test_preflight_refuses_a_view_that_changed_shape(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    changed = [*make_extract(D2, 1).columns, ("device", "TEXT")]

    with pytest.raises(SchemaDriftError) as info:
        check_target(tableau_block, _config(), changed, date_column="date")

    assert "The view's columns differ from Tableau datasource 'ads'; nothing was exported" in str(
        info.value
    )
    assert "+ device: TEXT (new column)" in str(info.value)
    # overwrite replaces the datasource: nothing to compare, nothing refused
    check = check_target(tableau_block, _config(mode="overwrite"), changed, date_column="date")
    assert check.columns_compared == 0 and "columns not compared" in check.verdict


def test_preflight_refuses_an_update_mode_on_an_old_server(
    tableau_fake, tableau_block, make_extract, monkeypatch
):
    extract = make_extract(D1, 3)
    publish(tableau_block, extract, [D1], _config(), date_column="date")
    monkeypatch.setattr(tableau_fake, "rest_version", "3.12")  # Tableau Server 2021.2

    with pytest.raises(PublishError, match=r"needs REST API 3\.13\+ .* speaks 3\.12"):
        check_target(tableau_block, _config(), extract.columns, date_column="date")


def test_schema_drift_lists_every_column():
    published = [("date", "date"), ("clicks", "integer"), ("old", "string")]
    extract = [("date", "DATE"), ("clicks", "TEXT"), ("new", "NUMERIC(38,9)")]

    assert schema_drift(published, extract) == [
        "  + new: NUMERIC(38,9) (new column)",
        "  - old: string (missing from the extract)",
        "  ~ clicks: published integer, extract TEXT (string)",
    ]
    assert schema_drift([("date", "date")], [("date", "DATE")]) == []


def test_parse_tds_columns_reads_only_the_extract_table():
    tds = (
        b"<datasource><connection><metadata-records>"
        b"<metadata-record class='column'><remote-name>a</remote-name>"
        b"<parent-name>[Extract]</parent-name><local-type>integer</local-type></metadata-record>"
        b"<metadata-record class='column'><remote-name>b</remote-name>"
        b"<parent-name>[Other]</parent-name><local-type>string</local-type></metadata-record>"
        b"<metadata-record class='capability'><remote-name>c</remote-name></metadata-record>"
        b"</metadata-records></connection></datasource>"
    )
    assert parse_tds_columns(tds) == [("a", "integer")]


def test_failed_job_is_a_clear_error_and_changes_nothing(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    tableau_fake.fail_jobs("Column 'cost' could not be converted")

    with pytest.raises(PublishError, match="failed: Column 'cost' could not be converted") as info:
        publish(tableau_block, make_extract(D1, 5), [D1], _config(), date_column="date")

    assert not info.value.retryable
    assert tableau_fake.rows_by_date("ads") == {D1: 3}
    assert tableau_fake.active_sessions == 0


def test_transient_5xx_is_retryable_and_a_retry_succeeds(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    tableau_fake.fail("PATCH", r"/data$", 503)
    extract = make_extract(D2, 4)

    with pytest.raises(PublishError, match="HTTP 503") as info:
        publish(tableau_block, extract, [D2], _config(), date_column="date")
    assert info.value.retryable
    assert tableau_fake.rows_by_date("ads") == {D1: 3}

    publish(tableau_block, extract, [D2], _config(), date_column="date")  # what the task retry does
    assert tableau_fake.rows_by_date("ads") == {D1: 3, D2: 4}
    assert tableau_fake.active_sessions == 0 and tableau_fake.signins == tableau_fake.signouts


def test_permission_denied_says_which_role(tableau_fake, tableau_block, make_extract):
    tableau_fake.fail("POST", r"/datasources$", 403, code="403004")

    with pytest.raises(PublishError, match="Creator or Explorer") as info:
        publish(tableau_block, make_extract(D1, 1), [D1], _config(), date_column="date")
    assert not info.value.retryable


def test_nested_project_path_is_walked_by_parent(tableau_fake, tableau_block, make_extract):
    marketing = tableau_fake.add_project("Marketing")
    tableau_fake.add_project("Ads")  # same name at the top: must not be chosen
    ads = tableau_fake.add_project("Ads", marketing)

    publish(
        tableau_block,
        make_extract(D1, 1),
        [D1],
        _config(project="Marketing/Ads"),
        date_column="date",
    )

    assert tableau_fake.datasource("ads").project_id == ads


def test_missing_project_is_an_error(tableau_fake, tableau_block, make_extract):
    with pytest.raises(PublishError, match="'Marketing' not found on site 'acme'") as info:
        publish(
            tableau_block,
            make_extract(D1, 1),
            [D1],
            _config(project="Marketing/Ads"),
            date_column="date",
        )
    assert not info.value.retryable
    assert tableau_fake.datasources == {}


def test_missing_project_is_created_with_the_flag(tableau_fake, tableau_block, make_extract):
    config = _config(project="Marketing/Ads", create_project=True)
    publish(tableau_block, make_extract(D1, 1), [D1], config, date_column="date")
    publish(tableau_block, make_extract(D2, 1), [D2], config, date_column="date")

    ds = tableau_fake.datasource("ads")
    assert tableau_fake.project_path(ds.project_id) == "Marketing/Ads"
    assert len(tableau_fake.projects) == 3  # default + the two created once
    assert tableau_fake.rows_by_date("ads") == {D1: 1, D2: 1}


def test_extract_with_other_dates_is_refused(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 1), [D1], _config(), date_column="date")
    with pytest.raises(PublishError, match="other than 2026-11-02"):
        publish(tableau_block, make_extract(D1, 2), [D2], _config(), date_column="date")
    assert tableau_fake.rows_by_date("ads") == {D1: 1}


def test_replace_date_needs_a_date_column(tableau_block, make_extract):
    with pytest.raises(ConfigError, match="DATE column 'day'"):
        publish(tableau_block, make_extract(D1, 1), [D1], _config(), date_column="day")


def test_big_files_go_up_in_chunks_and_as_a_job(
    tableau_fake, tableau_block, make_extract, monkeypatch
):
    # TSC decides chunking by size in MB (a module constant); shrink its MB so a small file
    # takes the chunked path (initiate upload, PUT chunks, publish with the session id).
    monkeypatch.setattr(datasources_endpoint, "BYTES_PER_MB", 1024)
    monkeypatch.setattr(fileuploads_endpoint, "BYTES_PER_MB", 64)
    extract = make_extract(D1, 200)

    result = publish(
        tableau_block, extract, [D1], _config(), date_column="date", as_job_min_bytes=0
    )

    assert result.created and result.job_id in tableau_fake.jobs
    assert tableau_fake.chunks_received > 1
    assert tableau_fake.rows_by_date("ads") == {D1: 200}


class _FakeClock:
    """Stands in for TSC's polling clock: sleeping advances time instantly."""

    def __init__(self, on_sleep=None):
        self.now, self.sleeps, self.on_sleep = 1000.0, [], on_sleep

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep()


def test_slow_job_is_waited_for(tableau_fake, tableau_block, make_extract, monkeypatch):
    from tableauserverclient import exponential_backoff

    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    tableau_fake.hold_jobs()
    clock = _FakeClock(on_sleep=tableau_fake.release_jobs)
    monkeypatch.setattr(
        exponential_backoff, "time", types.SimpleNamespace(time=clock.time, sleep=clock.sleep)
    )

    publish(tableau_block, make_extract(D2, 2), [D2], _config(), date_column="date")

    assert clock.sleeps  # the job was still running at the first poll
    assert tableau_fake.rows_by_date("ads") == {D1: 3, D2: 2}


def test_job_timeout_is_retryable(tableau_fake, tableau_block, make_extract, monkeypatch):
    from tableauserverclient import exponential_backoff

    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")
    tableau_fake.hold_jobs()
    clock = _FakeClock()
    monkeypatch.setattr(
        exponential_backoff, "time", types.SimpleNamespace(time=clock.time, sleep=clock.sleep)
    )

    with pytest.raises(PublishError, match="did not finish within 60 s") as info:
        publish(
            tableau_block,
            make_extract(D2, 2),
            [D2],
            _config(job_timeout_seconds=60),
            date_column="date",
        )
    assert info.value.retryable
    assert tableau_fake.active_sessions == 0


def test_no_secret_in_logs_or_errors(tableau_fake, tableau_block, make_extract, caplog):
    caplog.set_level(logging.DEBUG)
    secret = tableau_block.token_secret.get_secret_value()
    publish(tableau_block, make_extract(D1, 1), [D1], _config(), date_column="date")
    tableau_fake.fail_signin("401001")
    with pytest.raises(PublishError) as info:
        publish(tableau_block, make_extract(D2, 1), [D2], _config(), date_column="date")

    texts = [caplog.text, str(info.value), repr(info.value), repr(tableau_block)]
    assert caplog.records and not any(secret in t or secret[:8] in t for t in texts)
    assert info.value.__cause__ is None  # the vendor error chains to the request with the secret


def test_create_race_is_retryable_and_the_retry_updates(tableau_fake, tableau_block, make_extract):
    tableau_fake.fail("POST", r"/datasources$", 403, code="403007")  # a concurrent run won
    extract = make_extract(D1, 2)
    with pytest.raises(PublishError, match="concurrent run created it") as info:
        publish(tableau_block, extract, [D1], _config(), date_column="date")
    assert info.value.retryable

    publish(tableau_block, extract, [D1], _config(), date_column="date")
    assert tableau_fake.rows_by_date("ads") == {D1: 2}


def test_publish_with_a_connected_app(tableau_fake, tableau_jwt_block, make_extract):
    publish(tableau_jwt_block, make_extract(D1, 2), [D1], _config(), date_column="date")
    result = publish(tableau_jwt_block, make_extract(D1, 2), [D1], _config(), date_column="date")

    assert tableau_fake.rows_by_date("ads") == {D1: 2}
    assert result.slot_wait_seconds is None  # connected-app sessions take no slot
    assert tableau_fake.active_sessions == 0


def test_fake_runs_a_request_id_once(tableau_fake, tableau_block, make_extract):
    import tableauserverclient as tsc

    publish(tableau_block, make_extract(D1, 2), [D1], _config(), date_column="date")
    extract = make_extract(D2, 3)
    insert = [replace_date_actions("date")[1]]
    with tableau_block.sign_in() as server:
        ds = server.datasources.get_by_id(tableau_fake.datasource("ads").id)
        jobs = [
            server.datasources.update_hyper_data(
                ds, request_id="same", actions=insert, payload=str(extract.path)
            )
            for _ in range(2)
        ]
        assert jobs[0].id == jobs[1].id
        for name in ("a", "b", "c"):
            tableau_fake.add_project(name)
        projects, page = server.projects.get(tsc.RequestOptions(pagenumber=2, pagesize=3))
    assert tableau_fake.rows_by_date("ads") == {D1: 2, D2: 3}
    assert [p.name for p in projects] == ["c"] and page.total_available == 4


def test_a_pat_publish_holds_the_tokens_slot_and_says_how_long_it_waited(
    tableau_fake, tableau_block, make_extract
):
    result = publish(tableau_block, make_extract(D1, 2), [D1], _config(), date_column="date")

    assert result.slot_wait_seconds is not None and 0 <= result.slot_wait_seconds < 1
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(tableau_block.concurrency_key)
    assert limit.limit == 1 and limit.active_slots == 0  # given back after the sign-out


def test_the_preflight_waits_for_the_tokens_slot_before_signing_in(
    tableau_fake, tableau_block, make_extract, monkeypatch
):
    monkeypatch.setattr(flows.tableau, "SLOT_WAIT_SECONDS", 1)
    extract = make_extract(D1, 1)
    signins = tableau_fake.signins
    with (
        publish_slot(tableau_block.concurrency_key, timeout_seconds=30),  # another run holds it
        pytest.raises(PublishError, match="Waited 1 s for publish slot tableau-pat-"),
    ):
        check_target(tableau_block, _config(), extract.columns, date_column="date")
    assert tableau_fake.signins == signins  # it never signed in: the holder's session is safe


def test_a_tsc_error_mid_publish_is_translated_once(tableau_fake, tableau_block, make_extract):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")

    tableau_fake.fail("PATCH", r"/data$", 403, code="403004")
    with pytest.raises(PublishError, match="Creator or Explorer") as denied:
        publish(tableau_block, make_extract(D2, 1), [D2], _config(), date_column="date")
    assert str(denied.value).startswith("Tableau refused to send the replace_date batch")
    assert not denied.value.retryable
    assert isinstance(denied.value.__context__, ServerResponseError)  # straight from TSC's error

    tableau_fake.fail("GET", r"/content$", 502)
    with pytest.raises(PublishError, match="HTTP 502 while trying to download") as down:
        publish(tableau_block, make_extract(D2, 1), [D2], _config(), date_column="date")
    assert down.value.retryable
    assert isinstance(down.value.__context__, InternalServerError)
    assert tableau_fake.rows_by_date("ads") == {D1: 3} and tableau_fake.active_sessions == 0


def test_an_endpoint_tsc_refuses_is_explained(
    tableau_fake, tableau_block, make_extract, monkeypatch
):
    publish(tableau_block, make_extract(D1, 3), [D1], _config(), date_column="date")

    def refuse(*args, **kwargs):
        raise EndpointUnavailableError("update_hyper_data is not available in API version 3.12")

    monkeypatch.setattr(datasources_endpoint.Datasources, "update_hyper_data", refuse)
    with pytest.raises(PublishError, match=r"use tableau\.mode=overwrite on older") as info:
        publish(tableau_block, make_extract(D2, 1), [D2], _config(), date_column="date")
    assert not info.value.retryable
    assert tableau_fake.rows_by_date("ads") == {D1: 3} and tableau_fake.active_sessions == 0


# -- a window of dates in one batch (issue 11) -----------------------------------------------


def test_a_window_replaces_exactly_its_dates_in_one_batch(
    tableau_fake, tableau_block, make_extract
):
    seed = {D1: 2, D2: 2, D3: 2, D4: 2, D5: 2}
    first = publish(tableau_block, make_extract(seed), list(seed), _config(), date_column="date")
    assert first.created and first.days == (D1, D2, D3, D4, D5)
    assert tableau_fake.rows_by_date("ads") == seed

    restated = make_extract({D2: 1, D3: 5, D4: 3}, clicks=9)
    result = publish(tableau_block, restated, [D4, D2, D3], _config(), date_column="date")

    assert not result.created and result.days == (D2, D3, D4) and result.rows_sent == 9
    assert tableau_fake.rows_by_date("ads") == {D1: 2, D2: 1, D3: 5, D4: 3, D5: 2}
    assert _clicks_by_date(tableau_fake) == {D1: {1}, D2: {9}, D3: {9}, D4: {9}, D5: {1}}
    assert tableau_fake.update_batches == [replace_date_actions("date")]  # one batch


def test_the_payload_holds_one_row_per_date(make_extract, tmp_path):
    extract = make_extract({D1: 1, D3: 2})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    payload, stray = write_date_payload(
        extract, [D3, D1, D2, D1], "date", tmp_path / "a", date_table=RUN_DATE_TABLE
    )
    _, stray_outside = write_date_payload(
        extract, [D1], "date", tmp_path / "b", date_table=RUN_DATE_TABLE
    )

    with (
        HyperProcess(Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU) as hyper,
        Connection(hyper.endpoint, payload) as conn,
    ):
        table = TableName("Extract", RUN_DATE_TABLE)
        dates = [str(d) for (d,) in conn.execute_list_query(f"SELECT * FROM {table} ORDER BY 1")]
        columns = [c.name.unescaped for c in conn.catalog.get_table_definition(table).columns]
    assert dates == ["2026-11-01", "2026-11-02", "2026-11-03"] and columns == ["date"]
    assert stray == 0 and stray_outside == 2


def test_a_date_without_rows_in_the_extract_is_deleted(tableau_fake, tableau_block, make_extract):
    seed = {D1: 2, D2: 3, D3: 1}
    publish(tableau_block, make_extract(seed), list(seed), _config(), date_column="date")

    publish(tableau_block, make_extract({D3: 4}), [D2, D3], _config(), date_column="date")
    assert tableau_fake.rows_by_date("ads") == {D1: 2, D3: 4}  # D2 restated to nothing

    result = publish(tableau_block, make_extract({}), [D1, D3], _config(), date_column="date")
    assert result.rows_sent == 0 and result.days == (D1, D3)
    assert tableau_fake.rows_by_date("ads") == {}
    assert tableau_fake.update_batches[-1] == replace_date_actions("date")[:1]  # the delete alone


def test_rows_outside_the_window_are_refused_before_anything_is_sent(
    tableau_fake, tableau_block, make_extract
):
    stray = make_extract({D1: 1, D2: 2, D4: 1})
    with pytest.raises(
        PublishError,
        match=r"1 of the extract's 4 rows have date other than 2026-11-01\.\.2026-11-02, "
        r"2026-11-05; .*nothing was sent",
    ) as info:
        publish(tableau_block, stray, [D5, D1, D2], _config(), date_column="date")
    assert not info.value.retryable
    # Checked before signing in, so even the first publish cannot plant the stray rows.
    assert tableau_fake.signins == 0 and tableau_fake.datasources == {}

    seed = {D1: 1, D2: 1, D3: 1}
    publish(tableau_block, make_extract(seed), list(seed), _config(), date_column="date")
    before, signins = _digest(tableau_fake.stored_file("ads")), tableau_fake.signins
    with pytest.raises(PublishError, match=r"other than 2026-11-01\.\.2026-11-03;"):
        publish(tableau_block, stray, [D1, D2, D3], _config(), date_column="date")
    assert _digest(tableau_fake.stored_file("ads")) == before
    assert tableau_fake.update_batches == [] and tableau_fake.signins == signins


@pytest.mark.parametrize(
    ("cancelled", "message", "retryable"),
    [
        # Tableau reports a batch that broke off as a failed job: TSC raises
        # JobFailedException, which a rerun of the same batch cannot be expected to fix.
        (
            False,
            r"failed: Backgrounder lost its node\. The batch is atomic, so the datasource "
            r"is unchanged",
            False,
        ),
        # An administrator cancelled it: JobCancelledException, worth a retry.
        (True, r"was cancelled; nothing was changed\. Rerun\.", True),
    ],
    ids=["failed", "cancelled"],
)
def test_a_fault_between_the_delete_and_the_insert_leaves_the_datasource_as_it_was(
    tableau_fake, tableau_block, make_extract, cancelled, message, retryable
):
    seed = {D1: 2, D2: 2, D3: 2}
    publish(tableau_block, make_extract(seed), list(seed), _config(), date_column="date")
    before = _digest(tableau_fake.stored_file("ads"))
    tableau_fake.fail_mid_batch(notes="Backgrounder lost its node", cancelled=cancelled)
    restated = make_extract({D2: 5, D3: 1}, clicks=9)

    with pytest.raises(PublishError, match=message) as info:
        publish(tableau_block, restated, [D2, D3], _config(), date_column="date")

    assert info.value.retryable is retryable and is_retryable(info.value) is retryable
    assert tableau_fake.discarded == [4]  # the delete of D2's and D3's rows ran, then was undone
    assert _digest(tableau_fake.stored_file("ads")) == before
    assert tableau_fake.rows_by_date("ads") == seed and tableau_fake.active_sessions == 0

    publish(tableau_block, restated, [D2, D3], _config(), date_column="date")  # the next run
    assert tableau_fake.rows_by_date("ads") == {D1: 2, D2: 5, D3: 1}
    assert _clicks_by_date(tableau_fake) == {D1: {1}, D2: {9}, D3: {9}}


@pytest.mark.parametrize("mode", ["append", "overwrite", "upsert"])
def test_other_modes_refuse_a_window(tableau_fake, tableau_block, make_extract, mode):
    config = _config(mode=mode, upsert_keys=("date",) if mode == "upsert" else ())
    extract = make_extract({D1: 1, D2: 1})

    with pytest.raises(
        ConfigError,
        match=rf"tableau\.mode={mode} publishes one date at a time, but the window holds 2 "
        r"\(2026-11-01\.\.2026-11-02\); a window of dates needs tableau\.mode=replace_date",
    ):
        publish(tableau_block, extract, [D1, D2], config, date_column="date")
    with pytest.raises(ConfigError, match="at least one date"):
        publish(tableau_block, extract, [], _config(), date_column="date")
    assert tableau_fake.signins == 0 and tableau_fake.datasources == {}
