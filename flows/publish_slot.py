"""The publish slot: one Tableau session per personal access token, held so that a dead holder
frees it within about a minute (the only module that takes Prefect concurrency slots).

A PAT allows one session at a time, so runs sharing one take turns through a Prefect global
concurrency limit of 1 named after the token (`TableauServer.concurrency_key`). Prefect's own
`concurrency()` takes a 300 s lease and waits silently, so a kill -9 of the holder (an OOM kill,
a Fargate Spot interruption) blocked every publish for five minutes. Here:

- the lease is Prefect's minimum (60 s), renewed every `HEARTBEAT_SECONDS` by the live holder;
- the holder also writes a heartbeat into the Prefect variable `<slot>-holder` (its run, since
  when, its lease id), which waiters read to say who holds the slot;
- a waiter releases the holder's lease itself when the holder's flow run is over (the ECS
  worker marks a killed task's run Crashed) or its heartbeat has not moved for
  `STALE_AFTER_SECONDS` of the waiter's own clock (no clock skew involved);
- a holder that never wrote a heartbeat is freed by the server when its lease runs out;
- while it waits, a run logs every `WAIT_LOG_SECONDS` the slot, its holder and since when.

Every call here retries a transient answer (`blocks.retry.TRANSIENT_HTTP_STATUSES`, e.g. 503)
after 50 ms, growing, instead of Prefect client's 2 s: a SQLite-backed server answers 503
whenever two writes race, which clears in milliseconds, and a publish makes several such writes.

Releasing someone else's lease is safe: a lease id names one acquisition, so a stale id only
gets a 404. A live holder cut off from Prefect for longer than the stale window may lose the
slot; the next sign-in then ends its Tableau session (401002, retried) and Tableau's atomic
batch keeps the datasource whole.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    VariableCreate,
    VariableUpdate,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from blocks.retry import TRANSIENT_HTTP_STATUSES
from flows.errors import PublishError

logger = logging.getLogger(__name__)

LEASE_SECONDS: Final[float] = 60
"""Prefect's shortest lease: how long a holder that never wrote a heartbeat can block."""
HEARTBEAT_SECONDS: Final[float] = 10
"""The holder renews its lease and its heartbeat this often."""
STALE_AFTER_SECONDS: Final[float] = 30
"""A heartbeat that has not moved this long (three missed beats) means the holder is gone."""
POLL_SECONDS: Final[float] = 2
"""The longest a waiter sleeps between attempts (Prefect's Retry-After can say up to 30 s)."""
WAIT_LOG_SECONDS: Final[float] = 30
"""A waiting run says so this often."""
_BUSY_RETRY_DELAYS: Final[tuple[float, ...]] = (0.05, 0.1, 0.2, 0.4, 0.8)


@dataclass(frozen=True)
class SlotHold:
    """What taking the slot cost, for the run report."""

    name: str
    waited_seconds: float
    overhead_seconds: float  # the API calls to take and release it, without the wait


@dataclass
class _Observed:
    """What a waiter has seen of the holder's heartbeat, on its own monotonic clock."""

    beat: tuple[Any, Any] | None = None
    since: float = 0.0


@contextmanager
def publish_slot(
    name: str, *, timeout_seconds: float, holder_run: UUID | None = None, holder_name: str = ""
) -> Iterator[SlotHold]:
    """Hold the one slot of the limit `name` (created with limit 1 if missing) while inside.

    Args:
        name: The limit's name (`TableauServer.concurrency_key`).
        timeout_seconds: Give up waiting after this long.
        holder_run: The flow run holding the slot, recorded on the lease and the heartbeat.
        holder_name: That run's name, for the waiting runs' log lines.

    Raises:
        PublishError: The slot stayed taken for `timeout_seconds` (not retryable).
    """
    holder = ConcurrencyLeaseHolder(type="flow_run", id=holder_run) if holder_run else None
    record = {"flow_run_id": str(holder_run or ""), "flow_run_name": holder_name}
    with _slot_client() as client:
        started = time.perf_counter()
        lease_id, waited = _acquire(client, name, timeout_seconds, holder)
        record |= {"lease_id": str(lease_id), "since": _utc_now(), "beat": 0}
        taken = time.perf_counter() - started - waited
        stop = threading.Event()
        beating = threading.Thread(  # in this context: Prefect's settings live in contextvars
            target=contextvars.copy_context().run,
            args=(_keep_alive, client, name, lease_id, record, stop),
            daemon=True,
        )
        beating.start()
        try:
            yield SlotHold(name, waited, taken)
        finally:
            stop.set()
            beating.join(timeout=HEARTBEAT_SECONDS)
            # The heartbeat goes first: once the lease is released the next holder writes its own.
            with suppress(Exception):
                client.delete_variable_by_name(_heartbeat_name(name))
            _release(client, lease_id, name)


def _acquire(
    client: SyncPrefectClient,
    name: str,
    timeout_seconds: float,
    holder: ConcurrencyLeaseHolder | None,
) -> tuple[UUID, float]:
    started = time.monotonic()
    observed, next_log, denied = _Observed(), started, False
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name],
                slots=1,
                mode="concurrency",
                lease_duration=LEASE_SECONDS,
                holder=holder,
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:  # 423 Locked: someone holds the slot
                raise
            retry_after = float(exc.response.headers.get("Retry-After") or POLL_SECONDS)
            denied = True
        else:
            body = response.json()
            if body.get("limits"):
                waited = time.monotonic() - started if denied else 0.0
                if denied:
                    logger.info("Took publish slot %s after waiting %.0f s", name, waited)
                return UUID(body["lease_id"]), waited
            _create_limit(client, name)  # Prefect skips a limit that does not exist
            continue
        now = time.monotonic()
        record = _read_heartbeat(client, name)
        if now - started >= timeout_seconds:
            raise PublishError(
                f"Waited {timeout_seconds:.0f} s for publish slot {name}, "
                f"{_describe_holder(record)}. Runs that share a Tableau token publish one "
                "at a time; give this deployment its own token or a connected app, or check "
                "the slot under Concurrency in the Prefect UI.",
                retryable=False,
            )
        if _free_if_holder_gone(client, name, record, observed, now):
            continue
        if now >= next_log:
            logger.info(
                "Waiting for publish slot %s (one Tableau session per token): %s; waited %.0f s",
                name, _describe_holder(record), now - started,
            )  # fmt: skip
            next_log = now + WAIT_LOG_SECONDS
        time.sleep(max(0.1, min(retry_after, POLL_SECONDS, started + timeout_seconds - now)))


def _free_if_holder_gone(
    client: SyncPrefectClient,
    name: str,
    record: dict[str, Any] | None,
    observed: _Observed,
    now: float,
) -> bool:
    """Release the holder's lease if its run is over or its heartbeat stopped; True if freed."""
    if record is None:
        return False  # an old-style or just-starting holder: its lease expiry frees the slot
    beat = (record.get("lease_id"), record.get("beat"))
    if beat != observed.beat:
        observed.beat, observed.since = beat, now
    why = None
    run_id = record.get("flow_run_id")
    if run_id:
        with suppress(ObjectNotFound, ValueError):
            state = client.read_flow_run(UUID(run_id)).state
            if state is not None and state.is_final():
                why = f"its flow run is {state.name}"
    if why is None and now - observed.since >= STALE_AFTER_SECONDS:
        why = f"its heartbeat stopped {now - observed.since:.0f} s ago"
    if why is None:
        return False
    lease_id = record.get("lease_id")
    with suppress(Exception):
        client.delete_variable_by_name(_heartbeat_name(name))
    try:
        client.release_concurrency_slots_with_lease(lease_id=UUID(str(lease_id)))
    except (httpx.HTTPStatusError, ValueError):
        return False  # that lease was already gone: someone else holds the slot now
    logger.warning("Freed publish slot %s: its holder %s is gone (%s)", name, _who(record), why)
    return True


def _keep_alive(
    client: SyncPrefectClient,
    name: str,
    lease_id: UUID,
    record: dict[str, Any],
    stop: threading.Event,
) -> None:
    """Write the heartbeat, then renew the lease and move the heartbeat until `stop`.

    Runs beside the publish (httpx clients are thread-safe), so the first write costs the
    publish nothing; a failed beat only warns.
    """
    try:
        _write_heartbeat(client, name, record)
    except Exception as exc:
        logger.warning("Could not write publish slot %s's heartbeat (%s)", name, exc)
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            client.renew_concurrency_lease(lease_id=lease_id, lease_duration=LEASE_SECONDS)
            record["beat"] += 1
            _write_heartbeat(client, name, record)
        except Exception as exc:
            logger.warning(
                "Could not renew publish slot %s (%s); if this lasts %.0f s another run "
                "may take the slot and end this run's Tableau session",
                name, exc, STALE_AFTER_SECONDS,
            )  # fmt: skip


def _release(client: SyncPrefectClient, lease_id: UUID, name: str) -> None:
    try:
        client.release_concurrency_slots_with_lease(lease_id=lease_id)
    except Exception as exc:  # the publish's outcome matters more; the lease runs out anyway
        logger.warning(
            "Could not release publish slot %s (%s); it frees itself within %.0f s",
            name, exc, LEASE_SECONDS,
        )  # fmt: skip


def _create_limit(client: SyncPrefectClient, name: str) -> None:
    with suppress(ObjectAlreadyExists):  # another run created it first
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=1),
        )
        logger.info("Created the publish slot %s (a Prefect global concurrency limit of 1)", name)


def _slot_client() -> SyncPrefectClient:
    """A Prefect client whose requests retry a transient answer after 50 ms, growing.

    Prefect's client waits 2 s before its first retry, and a SQLite-backed Prefect server
    answers 503 whenever two writes race, which clears in milliseconds: a publish makes several
    such writes, so that wait was most of its overhead. The fast retries sit in the transport,
    under the client's own: if they run out, the client's slower retries still apply. Like
    Prefect itself (which sets its pool's retries there), this reaches into httpx's transport
    for the API URL; if httpx's internals change it quietly does nothing.
    """
    # Own httpx settings: a client of its own, not the run's shared one (whose transport this
    # would change for every Prefect call). trust_env=True is httpx's default.
    client = get_client(httpx_settings={"trust_env": True}, sync_client=True)
    http = client._client  # the httpx client Prefect built, proxies included
    transport_for_url = getattr(http, "_transport_for_url", None)
    if callable(transport_for_url):
        transport = transport_for_url(client.api_url)
        if isinstance(transport, httpx.BaseTransport):
            transport.handle_request = _retrying_busy(transport.handle_request)  # type: ignore[method-assign]
    return client


def _retrying_busy(
    send: Callable[[httpx.Request], httpx.Response],
) -> Callable[[httpx.Request], httpx.Response]:
    def handle_request(request: httpx.Request) -> httpx.Response:
        response = send(request)
        for delay in _BUSY_RETRY_DELAYS:
            if response.status_code not in TRANSIENT_HTTP_STATUSES:
                break
            response.close()
            time.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
            response = send(request)
        return response

    return handle_request


def _heartbeat_name(name: str) -> str:
    return f"{name}-holder"


def _write_heartbeat(client: SyncPrefectClient, name: str, record: dict[str, Any]) -> None:
    """Create the heartbeat on the first beat (it is normally gone), update it on later ones."""
    variable = _heartbeat_name(name)
    if record["beat"] == 0:
        try:
            client.create_variable(VariableCreate(name=variable, value=record))
            return
        except ObjectAlreadyExists:
            pass  # a dead holder's: ours replaces it
    try:
        client.update_variable(VariableUpdate(name=variable, value=record))
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
        with suppress(ObjectAlreadyExists):  # deleted meanwhile by a waiter that freed the slot
            client.create_variable(VariableCreate(name=variable, value=record))


def _read_heartbeat(client: SyncPrefectClient, name: str) -> dict[str, Any] | None:
    variable = client.read_variable_by_name(_heartbeat_name(name))
    return variable.value if variable is not None and isinstance(variable.value, dict) else None


def _describe_holder(record: dict[str, Any] | None) -> str:
    if record is None:
        return (
            "held by a run that left no heartbeat (Prefect frees it when its "
            f"{LEASE_SECONDS:.0f} s lease runs out)"
        )
    return f"held by {_who(record)} since {record.get('since', '?')}"


def _who(record: dict[str, Any]) -> str:
    run, run_id = record.get("flow_run_name"), record.get("flow_run_id")
    if run and run_id:
        return f"flow run {run!r} ({run_id})"
    return f"flow run {run_id}" if run_id else "(a run outside any flow)"


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
