"""Our package loggers follow Prefect's log level and stay quiet outside runs."""

from __future__ import annotations

import logging
import warnings

import pytest
from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

import flows  # noqa: F401  (routes the `flows` logger)
from blocks.logs import RunLogHandler, send_to_prefect


@pytest.mark.parametrize("package", ["flows", "blocks"])
def test_package_loggers_log_info_by_default_and_not_debug(package: str) -> None:
    logger = logging.getLogger(f"{package}.anything")
    assert logger.isEnabledFor(logging.INFO)
    assert not logger.isEnabledFor(logging.DEBUG)
    handlers = [h for h in logging.getLogger(package).handlers if isinstance(h, RunLogHandler)]
    assert len(handlers) == 1


def test_the_level_is_the_one_the_user_gives_prefect() -> None:
    name = "bq-tableau-level-test"
    with temporary_settings({PREFECT_LOGGING_LEVEL: "WARNING"}):
        send_to_prefect(name)
        send_to_prefect(name)  # idempotent: one handler
    logger = logging.getLogger(name)
    assert not logger.isEnabledFor(logging.INFO)
    assert logger.isEnabledFor(logging.WARNING)
    assert sum(isinstance(h, RunLogHandler) for h in logger.handlers) == 1


def test_a_line_logged_outside_any_run_is_not_sent_and_does_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Prefect's own handler would warn here
        logging.getLogger("blocks.doctor").info("checking the ECS endpoint")
    assert "checking the ECS endpoint" in caplog.text  # still reaches the console handlers
