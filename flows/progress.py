"""Who is told that a step started, finished or failed: a listener set for a block of code.

The daily flow's steps (`flows.steps.TimedStep`) and the command line's own phases (the
BigQuery query and the Tableau download of `python -m flows reconcile`) run inside `step(name)`.
Nothing listens by default, so a deployment's run pays nothing; the command line sets a
listener (`listening(StepDisplay(...))`) that draws a spinner and the elapsed time of each step
while a person waits. A context variable, not a global: a listener set in one thread (or one
flow run) is not told about another's steps.

`StepDisplay` prints through the console of Prefect's own log handler, so the log lines the
steps write appear above the live display instead of through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Protocol

from prefect.logging.handlers import PrefectConsoleHandler
from rich.console import Console, RenderableType
from rich.default_styles import DEFAULT_STYLES
from rich.progress import Progress, ProgressColumn, Task, TextColumn
from rich.spinner import Spinner
from rich.table import Column
from rich.text import Text
from rich.theme import Theme

logger = logging.getLogger(__name__)


class StepListener(Protocol):
    """Told when a step starts and ends; its errors never reach the step."""

    def started(self, step: str) -> None: ...

    def finished(self, step: str, seconds: float) -> None: ...

    def failed(self, step: str, seconds: float, error: BaseException) -> None: ...


_listener: ContextVar[StepListener | None] = ContextVar("step_listener", default=None)


@contextmanager
def listening(listener: StepListener) -> Iterator[StepListener]:
    """Tell `listener` about every step run inside the block (in this context)."""
    token = _listener.set(listener)
    try:
        yield listener
    finally:
        _listener.reset(token)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Run the block as the step `name`: the listener, if any, is told it started and ended."""
    listener = _listener.get()
    if listener is None:
        yield
        return
    started = time.perf_counter()
    _tell(listener.started, name)
    try:
        yield
    except BaseException as exc:
        _tell(listener.failed, name, time.perf_counter() - started, exc)
        raise
    _tell(listener.finished, name, time.perf_counter() - started)


def _tell(call: Callable[..., None], *args: object) -> None:
    try:
        call(*args)
    except Exception as exc:  # a broken display must not fail a run
        logger.warning(
            "The progress display failed (%s: %s); the run goes on", type(exc).__name__, exc
        )


class _State(ProgressColumn):
    """A spinner while the step runs, then its mark (✓ or ✗)."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, width=1))
        self._spinner = Spinner("dots", style="cyan")

    def render(self, task: Task) -> RenderableType:
        if task.finished:
            return Text.from_markup(task.fields.get("mark", " "))
        return self._spinner.render(task.get_time())


class _Elapsed(ProgressColumn):
    """Seconds since the step started, frozen when it ends (an explicit style, not a theme's
    name: see StepDisplay.__enter__)."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        return Text(f"{elapsed or 0:5.1f} s", style="cyan")


class StepDisplay:
    """A live list of the steps as they run: a spinner while running, then ✓ or ✗, and the
    seconds each took. Use it as a context manager around the work, and as its listener.

    It draws on the console of Prefect's console log handler (stderr), so that the handler's
    log lines are printed above the display (rich moves the display down for them); two
    consoles on one terminal would overwrite each other's lines.
    """

    def __init__(self, console: Console | None = None) -> None:
        handlers = _prefect_console_handlers()
        self._handlers = handlers
        self.console = console or (handlers[0].console if handlers else Console(stderr=True))
        self._replaced: list[tuple[PrefectConsoleHandler, Console]] = []
        self._progress = Progress(
            _State(),
            # A narrow or piped console (80 columns) cuts a long label, never the seconds.
            TextColumn(
                "{task.description}",
                markup=False,
                table_column=Column(
                    no_wrap=True, overflow="ellipsis", max_width=max(20, self.console.width - 14)
                ),
            ),
            _Elapsed(table_column=Column(no_wrap=True, width=7)),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> StepDisplay:
        # Prefect's console has only its log styles (`inherit=False`); the display needs
        # rich's defaults too. Log styles are `log.*`, which the defaults do not redefine.
        self.console.push_theme(Theme(DEFAULT_STYLES))
        for handler in self._handlers:  # every log handler prints through the one console
            if handler.console is not self.console:
                self._replaced.append((handler, handler.console))
                handler.console = self.console
        return self  # the display starts with the first step: nothing to show until then

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._progress.live.is_started:
                self._progress.stop()
        finally:
            for handler, console in self._replaced:
                handler.console = console
            self._replaced.clear()
            self.console.pop_theme()

    def started(self, step: str) -> None:
        if not self._progress.live.is_started:
            self._progress.start()
        self._tasks[step] = self._progress.add_task(step, total=1, mark="")

    def finished(self, step: str, seconds: float) -> None:
        self._end(step, "[green]✓[/]")

    def failed(self, step: str, seconds: float, error: BaseException) -> None:
        self._end(step, "[red]✗[/]")

    def _end(self, step: str, mark: str) -> None:
        task = self._tasks.pop(step, None)
        if task is not None:
            self._progress.update(task, completed=1, mark=mark)


def _prefect_console_handlers() -> list[PrefectConsoleHandler]:
    """Prefect's console handlers on any logger (usually one instance, on the root)."""
    loggers = [logging.getLogger()] + [
        item
        for item in logging.Logger.manager.loggerDict.values()
        if isinstance(item, logging.Logger)
    ]
    found: dict[int, PrefectConsoleHandler] = {}
    for each in loggers:
        for handler in each.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                found.setdefault(id(handler), handler)
    return list(found.values())
