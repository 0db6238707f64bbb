"""What every ``editscope`` command shares: the consoles and the one error path (a command group
class), so that command modules (:mod:`editscope.cli`, :mod:`editscope.cli_data`) need not import
each other."""

from __future__ import annotations

import os

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from .errors import EXIT_INTERRUPTED, describe
from .progress import stderr_console

console = Console()
err_console = stderr_console
_debug_flag = False


def set_debug(on: bool) -> None:
    """``--debug``: errors propagate with their traceback."""
    global _debug_flag
    _debug_flag = on


def debug_on() -> bool:
    """True under ``--debug`` or ``EDITSCOPE_DEBUG=1``."""
    return _debug_flag or os.environ.get("EDITSCOPE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


class OneErrorPath(TyperGroup):
    """Every command's errors leave through here: one or a few lines naming the culprit and the
    fix, exit code 2 for bad input and 1 for a failure during work (see :mod:`editscope.errors`);
    Ctrl-C says where it stopped (exit 130); a traceback only with ``--debug``."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException, click.exceptions.Exit, click.ClickException,
                click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            if debug_on():
                raise
            err_console.print("[yellow]interrupted[/]: nothing was left half-written (a run keeps every finished "
                              "unit; continue it with `editscope run CONFIG --out DIR --resume`)")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as e:  # noqa: BLE001 - the one place where any error becomes a message
            if debug_on():
                raise
            code, message = describe(e)
            err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
            raise typer.Exit(code) from None
