"""(to be written) `agentdeploy` commands of this area."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
