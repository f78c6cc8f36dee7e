"""The publish slot against a Prefect test server: turns, who waits for whom, and a holder that
dies. The kill -9 of a real flow run under `prefect server start` is in test_slot_recovery.py."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableCreate
from prefect.states import Crashed

import flows.publish_slot as slot
from flows.errors import PublishError
from flows.publish_slot import publish_slot

pytestmark = pytest.mark.prefect


@pytest.fixture
def name(prefect_server: None) -> Iterator[str]:
    key = f"tableau-pat-test-{uuid.uuid4().hex[:8]}"
    yield key
    with get_client(sync_client=True) as client, suppress(Exception):
        client.delete_global_concurrency_limit_by_name(key)


def _active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def _crashed_flow_run() -> tuple[uuid.UUID, str]:
    """A flow run the server knows as Crashed: what the ECS worker records for a killed task."""
    from prefect import flow

    @flow(name="slot-holder")
    def holder() -> None: ...

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(holder, name=f"killed-{uuid.uuid4().hex[:6]}")
        client.set_flow_run_state(run.id, Crashed(message="ECS task stopped (OOM)"), force=True)
    return run.id, run.name


def test_the_slot_is_created_held_and_given_back(name: str) -> None:
    with publish_slot(name, timeout_seconds=30) as hold:
        assert _active_slots(name) == 1
        assert hold.waited_seconds < 1
    assert _active_slots(name) == 0
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).limit == 1
        assert client.read_variable_by_name(f"{name}-holder") is None


def test_a_waiting_run_says_who_holds_the_slot_and_gets_it_after(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    holder_run = uuid.uuid4()
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with publish_slot(
            name, timeout_seconds=30, holder_run=holder_run, holder_name="ads-2026-11-19"
        ):
            inside.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    threading.Timer(3, leave.set).start()
    with (
        caplog.at_level(logging.INFO, logger="flows.publish_slot"),
        publish_slot(name, timeout_seconds=30) as hold_,
    ):
        assert _active_slots(name) == 1
    holder.join(30)

    assert hold_.waited_seconds >= 2
    waiting = [r.getMessage() for r in caplog.records if "Waiting for publish slot" in r.message]
    assert waiting, caplog.text
    assert f"held by flow run 'ads-2026-11-19' ({holder_run}) since 20" in waiting[0]
    assert any("Took publish slot" in r.getMessage() for r in caplog.records)
    assert _active_slots(name) == 0


def test_a_holder_whose_run_crashed_is_freed_at_once(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_id, run_name = _crashed_flow_run()
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:  # keeps beating: only the run's state says it is gone
        with publish_slot(name, timeout_seconds=30, holder_run=run_id, holder_name=run_name):
            inside.set()
            leave.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    try:
        started = time.monotonic()
        with (
            caplog.at_level(logging.INFO, logger="flows.publish_slot"),
            publish_slot(name, timeout_seconds=30),
        ):
            waited = time.monotonic() - started
    finally:
        leave.set()
        holder.join(30)

    assert waited < slot.STALE_AFTER_SECONDS
    freed = [r.getMessage() for r in caplog.records if "Freed publish slot" in r.message]
    assert freed == [
        f"Freed publish slot {name}: its holder flow run {run_name!r} ({run_id}) is gone "
        "(its flow run is Crashed)"
    ]
    assert _active_slots(name) == 0


def test_a_holder_whose_heartbeat_stopped_is_freed(
    name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A holder that died without a trace in Prefect: its slot taken, its heartbeat frozen.
    monkeypatch.setattr(slot, "STALE_AFTER_SECONDS", 3.0)
    with get_client(sync_client=True) as client:
        slot._create_limit(client, name)
        lease = client.increment_concurrency_slots_with_lease(
            names=[name], slots=1, mode="concurrency", lease_duration=slot.LEASE_SECONDS
        ).json()["lease_id"]
        client.create_variable(
            VariableCreate(
                name=f"{name}-holder",
                value={"lease_id": lease, "flow_run_id": "", "since": "2026-12-01", "beat": 7},
            )
        )
    with (
        caplog.at_level(logging.INFO, logger="flows.publish_slot"),
        publish_slot(name, timeout_seconds=slot.LEASE_SECONDS / 2) as hold,
    ):
        pass

    assert 3 <= hold.waited_seconds < slot.LEASE_SECONDS / 2  # not the lease running out
    assert any("heartbeat stopped" in r.getMessage() for r in caplog.records), caplog.text


def test_waiting_longer_than_the_timeout_names_the_slot_and_the_way_out(name: str) -> None:
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with publish_slot(name, timeout_seconds=30, holder_name="other"):
            inside.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    try:
        with (
            pytest.raises(PublishError, match=f"Waited 2 s for publish slot {name}") as info,
            publish_slot(name, timeout_seconds=2),
        ):
            pytest.fail("the slot is held")
    finally:
        leave.set()
        holder.join(30)
    assert info.value.retryable is False
    assert "its own token or a connected app" in str(info.value)


def test_a_busy_answer_is_retried_within_milliseconds_not_prefects_two_seconds() -> None:
    # Unit test of the error path: a server that answers 503 twice (two writes raced), then 200.
    answers = [503, 503, 200]
    sent: list[float] = []

    def send(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        return httpx.Response(answers[len(sent) - 1], request=request)

    request = httpx.Request("POST", "http://127.0.0.1/api/v2/concurrency_limits/increment")
    response = slot._retrying_busy(send)(request)

    assert response.status_code == 200 and len(sent) == 3
    assert sent[-1] - sent[0] < 1  # Prefect's client would have waited 2 s, then 4 s
    refused = slot._retrying_busy(lambda r: httpx.Response(423, request=r))(request)
    assert refused.status_code == 423  # "someone holds the slot" is an answer, not a retry
