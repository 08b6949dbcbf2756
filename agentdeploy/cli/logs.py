"""`agentdeploy logs format [ENDPOINT]`: format inference logs now instead of at the next tick.

It runs the served `format-inference-logs` deployment through Prefect's API (the same run the
schedule makes, visible and re-runnable in the Prefect UI) and shows its steps and its summary.
Running the scheduled job early grants nothing: when ENDPOINT is given, the caller must be able
to see that endpoint.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentdeploy.cli.output import connect, console, errors_as_exit
from agentdeploy.errors import AgentDeployError

__all__ = ["register", "FORMAT_DEPLOYMENT"]

FORMAT_DEPLOYMENT = "format-inference-logs/format-inference-logs"

logs_app = typer.Typer(help="Inference logs: request and assessment logs, traces in MLflow.",
                       no_args_is_help=True)


def _summary(flow_run_id: Any) -> str | None:
    """The run's markdown summary artifact, if the Prefect server has it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.utilities.asyncutils import run_coro_as_sync

    from agentdeploy.orchestration import prefect_settings

    async def read() -> str | None:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        return str(found[0].data) if found else None

    with prefect_settings():
        return run_coro_as_sync(read())


@logs_app.command("format")
def format_logs(
    endpoint: Annotated[str | None, typer.Argument(help="Only this endpoint (default: every endpoint "
                                                        "with inference tables).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the run.")] = 600.0,
) -> None:
    """Format the inference logs now (runs the format-inference-logs flow)."""
    from rich.markdown import Markdown

    from agentdeploy.orchestration import run_flow_deployment

    def on_step(name: str, state: str, seconds: float | None) -> None:
        mark = "[green]✓[/green]" if state == "Completed" else f"[red]{state}[/red]"
        console.print(f"  {mark} {name}" + (f" {seconds:.2f}s" if seconds is not None else ""))

    with errors_as_exit():
        if endpoint:
            connect().get(f"/api/2.0/serving-endpoints/{endpoint}")  # 404/403 before running anything
        scope = f" of [bold]{endpoint}[/bold]" if endpoint else ""
        console.print(f"Formatting inference logs{scope} ...")
        run = run_flow_deployment(FORMAT_DEPLOYMENT, {"endpoint_name": endpoint} if endpoint else {},
                                  timeout=timeout, on_step=on_step)
    try:
        summary = _summary(run.id)
    except (AgentDeployError, OSError, RuntimeError):
        summary = None
    if summary:
        console.print(Markdown(summary))
    if run.state is None or not run.state.is_completed():
        message = run.state.message if run.state is not None else "no state"
        state = run.state.name if run.state else ""
        console.print(f"[red]error:[/red] flow run {run.name} {state}: {message}")
        raise typer.Exit(1)
    console.print(f"[green]done[/green] (flow run {run.name})")


def register(app: typer.Typer) -> None:
    app.add_typer(logs_app, name="logs")
