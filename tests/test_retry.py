"""The one retry policy: the transient statuses and the helper the inner retries share."""

from __future__ import annotations

import logging

import pytest

from blocks.retry import TRANSIENT_HTTP_STATUSES, RetriesExhausted, call_with_retries
from tests.plugins.aws_google import Sleeps


def _answers(*statuses: int | BaseException):
    """A `send` that answers with the given statuses (or raises the given errors) in turn."""
    calls: list[int | BaseException] = []

    def send() -> int:
        answer = statuses[len(calls)]
        calls.append(answer)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return send, calls


def _call(send, sleeps: Sleeps, attempts: int = 3) -> int:
    return call_with_retries(
        send,
        what="http://127.0.0.1/v1/token",
        status=lambda status: status,
        connection_errors=(ConnectionError,),
        attempts=attempts,
        backoff_seconds=0.5,
        sleep=sleeps,
    )


def test_the_one_set_of_transient_statuses() -> None:
    # Timeout and throttling, and the server errors that mean "try again" (not 501 or 505).
    assert {408, 429} | {500, 502, 503, 504} == TRANSIENT_HTTP_STATUSES


@pytest.mark.parametrize("status", sorted(TRANSIENT_HTTP_STATUSES))
def test_transient_statuses_are_retried_with_doubling_waits_and_logged(status, caplog) -> None:
    caplog.set_level(logging.INFO, logger="blocks.retry")
    send, calls = _answers(status, status, 200)
    sleeps = Sleeps()

    assert _call(send, sleeps) == 200

    assert calls == [status, status, 200]
    assert sleeps.calls == [0.5, 1.0]
    assert caplog.messages == [
        f"Transient HTTP {status} from http://127.0.0.1/v1/token; retrying in 0.5 s (attempt 1/3)",
        f"Transient HTTP {status} from http://127.0.0.1/v1/token; retrying in 1.0 s (attempt 2/3)",
    ]


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 423])
def test_other_answers_come_back_at_once(status) -> None:
    send, calls = _answers(status)
    sleeps = Sleeps()
    assert _call(send, sleeps) == status
    assert len(calls) == 1 and sleeps.calls == []


def test_persistent_failure_gives_up_after_the_attempts() -> None:
    send, calls = _answers(503, 503, 503, 200)
    sleeps = Sleeps()

    with pytest.raises(RetriesExhausted, match="HTTP 503 after 3 attempts") as caught:
        _call(send, sleeps)

    assert len(calls) == 3 and sleeps.calls == [0.5, 1.0]
    assert (caught.value.problem, caught.value.attempts) == ("HTTP 503", 3)
    assert caught.value.__cause__ is None


def test_connection_errors_are_retried_and_the_last_one_is_chained(caplog) -> None:
    caplog.set_level(logging.INFO, logger="blocks.retry")
    last = ConnectionResetError("reset by peer")
    send, calls = _answers(ConnectionRefusedError(), last)
    sleeps = Sleeps()

    with pytest.raises(RetriesExhausted, match=r"no answer \(ConnectionResetError\)") as caught:
        _call(send, sleeps, attempts=2)

    assert caught.value.__cause__ is last
    assert len(calls) == 2 and sleeps.calls == [0.5]
    assert caplog.messages == [
        "No answer (ConnectionRefusedError) from http://127.0.0.1/v1/token; retrying in 0.5 s "
        "(attempt 1/2)"
    ]


def test_other_errors_are_not_retried() -> None:
    send, calls = _answers(ValueError("a bug"), 200)
    sleeps = Sleeps()
    with pytest.raises(ValueError, match="a bug"):
        _call(send, sleeps)
    assert len(calls) == 1 and sleeps.calls == []


def test_one_attempt_means_no_retry() -> None:
    send, calls = _answers(503)
    sleeps = Sleeps()
    with pytest.raises(RetriesExhausted, match="after 1 attempts"):
        _call(send, sleeps, attempts=1)
    assert len(calls) == 1 and sleeps.calls == []
