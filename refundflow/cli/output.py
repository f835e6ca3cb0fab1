"""How every ``refundflow`` command reports: results on stdout, errors on stderr as one line
``error <code>: <detail>`` (exit status 2), whatever the terminal's width."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def say_error(code: str, detail: str) -> None:
    # Details often quote a server or a file; they are printed as they are, never as markup.
    err_console.print(
        f"[red]error[/red] [bold]{escape(code)}[/bold]: {escape(detail)}",
        soft_wrap=True,
        highlight=False,
    )


def die(code: str, detail: str) -> NoReturn:
    say_error(code, detail)
    raise typer.Exit(code=2)
