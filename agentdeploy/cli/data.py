"""(to be written) `agentdeploy` commands for tables, secrets and SQL."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
