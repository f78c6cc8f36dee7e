"""The project's own log lines reach the operator: the console, and the run's logs in Prefect.

Prefect configures only its own loggers. A module's `logging.getLogger(__name__)` INFO lines are
dropped (the root logger is at WARNING), and `PREFECT_LOGGING_EXTRA_LOGGERS` attaches Prefect's
API handler but leaves the level at WARNING. So each of our package loggers (`flows`, `blocks`)
gets the level the user gives Prefect (`PREFECT_LOGGING_LEVEL`, INFO by default; DEBUG stays
off) and a handler that sends its records, inside a flow or task run, to that run's logs. The
records still propagate to the root logger, whose Prefect console handler prints them.
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_LOGGING_LEVEL


class RunLogHandler(APILogHandler):
    """Prefect's API log handler, for records of any logger, inside runs only.

    It tags each record with the current task or flow run, so the line shows under that task in
    the UI; outside a run (the doctor, a test) it sends nothing, instead of warning as Prefect's
    own handler does.
    """

    def emit(self, record: logging.LogRecord) -> None:
        task_run = TaskRunContext.get()
        flow_run = FlowRunContext.get()
        if task_run is not None:
            record.flow_run_id = task_run.task_run.flow_run_id
            record.task_run_id = task_run.task_run.id
        elif flow_run is not None and flow_run.flow_run is not None:
            record.flow_run_id = flow_run.flow_run.id
        else:
            return
        super().emit(record)


def send_to_prefect(package: str) -> None:
    """Route `package`'s loggers to the run's logs at Prefect's log level (idempotent)."""
    logger = logging.getLogger(package)
    logger.setLevel(PREFECT_LOGGING_LEVEL.value())
    if not any(isinstance(h, RunLogHandler) for h in logger.handlers):
        logger.addHandler(RunLogHandler())
