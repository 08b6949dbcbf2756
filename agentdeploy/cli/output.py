"""How every command talks to the user: rich tables, and errors as one red line (exit 1)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import AgentDeployError

__all__ = ["console", "err_console", "table", "errors_as_exit", "connect"]

console = Console()
err_console = Console(stderr=True)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    out = Table(title=title)
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    console.print(out)


@contextlib.contextmanager
def errors_as_exit() -> Iterator[None]:
    try:
        yield
    except AgentDeployError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def connect() -> AgentDeployClient:
    with errors_as_exit():
        return AgentDeployClient.from_environment()
