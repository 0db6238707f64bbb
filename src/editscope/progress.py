"""Progress display shared by the CLI and the study runner (rich, on stderr)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

#: progress and status lines go to stderr, so that stdout keeps only results (tables, JSON)
stderr_console = Console(stderr=True)


@contextmanager
def working(what: str, enabled: bool = True) -> Iterator[None]:
    """A transient spinner with the elapsed time while a step that can take a while runs (loading
    or converting a model, key statistics, an edit, a perplexity pass); nothing when disabled."""
    if not enabled:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr_console,
                  transient=True) as bar:
        bar.add_task(what, total=None)
        yield


def counting_bar():
    """A progress bar with a count and the elapsed and remaining time, on stderr: ``with
    counting_bar() as bar: task = bar.add_task("what", total=n); bar.update(task, completed=k)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=stderr_console)


__all__ = ["counting_bar", "stderr_console", "working"]
