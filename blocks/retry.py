"""The one retry policy: which HTTP statuses are transient, and how a cheap call is retried.

`TRANSIENT_HTTP_STATUSES` is the only definition in the tree. `flows.errors.is_retryable` reads
it to decide whether a step's task runs again, the publish slot's client to retry a busy Prefect
API, and `call_with_retries` below to retry one cheap, idempotent call inside an attempt: an AWS
metadata endpoint, the Google STS token exchange, IAM Credentials `generateAccessToken`.

`call_with_retries` is built on tenacity: a few tries with a short exponential backoff, on
connection errors and transient statuses only, each decision logged. Any other answer (a 4xx)
is returned at once for the caller to judge, so a refusal costs one request. `sleep` is
injectable: tests record the waits instead of sleeping. The README's "Retries" section gives the
attempt budget per step that these inner retries and the task retries add up to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import tenacity

logger = logging.getLogger(__name__)

TRANSIENT_HTTP_STATUSES: Final[frozenset[int]] = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses that a later attempt can get past (timeout, throttling, server trouble)."""


class RetriesExhausted(Exception):
    """Every try of a call failed transiently; chained from the last connection error, if any.

    Attributes:
        what: The call, as the caller named it (an endpoint; never a secret).
        problem: The last failure, e.g. `HTTP 503` or `no answer (ConnectTimeout)`.
        attempts: How many tries were made.
    """

    def __init__(self, what: str, problem: str, attempts: int) -> None:
        super().__init__(f"{what}: {problem} after {attempts} attempts")
        self.what = what
        self.problem = problem
        self.attempts = attempts


def call_with_retries[R](
    send: Callable[[], R],
    *,
    what: str,
    status: Callable[[R], int],
    connection_errors: tuple[type[BaseException], ...],
    attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> R:
    """Call `send` until its answer's status is not transient, at most `attempts` times.

    Args:
        send: Makes the request once; must be idempotent.
        what: Names the call in the log lines and the error.
        status: The HTTP status of an answer.
        connection_errors: What `send` raises when no answer came; retried like a 503.
        attempts: Tries in all (1: no retry).
        backoff_seconds: The first wait; it doubles after each try, without jitter (one caller
            per process, and the task retries on top are jittered).
        sleep: Waits between tries; tests pass a recorder.

    Returns:
        The first answer whose status is not in `TRANSIENT_HTTP_STATUSES`.

    Raises:
        RetriesExhausted: Every try met a connection error or a transient status.
    """

    def problem(outcome: tenacity.Future) -> str:
        if outcome.failed:
            return f"no answer ({type(outcome.exception()).__name__})"
        return f"HTTP {status(outcome.result())}"

    def transient(state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None  # tenacity asks only after an attempt
        if outcome.failed:
            return isinstance(outcome.exception(), connection_errors)
        return status(outcome.result()) in TRANSIENT_HTTP_STATUSES

    def log_retry(state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        said = problem(state.outcome)
        logger.info(
            "%s from %s; retrying in %.1f s (attempt %s/%s)",
            said[0].upper() + said[1:] if state.outcome.failed else f"Transient {said}",
            what,
            state.next_action.sleep,
            state.attempt_number,
            attempts,
        )

    def give_up(state: tenacity.RetryCallState) -> R:
        outcome = state.outcome
        assert outcome is not None
        raise RetriesExhausted(what, problem(outcome), state.attempt_number) from (
            outcome.exception() if outcome.failed else None
        )

    retrying = tenacity.Retrying(
        sleep=sleep,
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=backoff_seconds),
        retry=transient,
        before_sleep=log_retry,
        retry_error_callback=give_up,
    )
    return retrying(send)
