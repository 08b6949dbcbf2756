"""`agentdeploy up | down | status | quickstart`: the local stack from the command line.

`quickstart` is what `make quickstart` runs after `agentdeploy up --detach`: a list of steps
(`QUICKSTART_STEPS`), each idempotent, so running it twice is harmless: demo data, both example
agents registered (once) and deployed (responder, then support_bot; a deployed version is
skipped), one question to support_bot with its answer, query endpoint and review app URL, the
payload row count, then how to get in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

from agentdeploy import stack
from agentdeploy.cli.output import console, err_console, errors_as_exit, table
from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import AgentDeployError, Unavailable
from agentdeploy.settings import Settings, get_settings
from agentdeploy.stack import configure_mlflow

__all__ = ["register", "QuickstartStep", "QUICKSTART_STEPS"]


def _show_services(status: stack.StackStatus) -> None:
    table(
        "agentdeploy stack",
        ["service", "URL", "health", "pid"],
        [(s.title, s.url, "ok" if s.healthy else "down", s.pid) for s in status.services],
    )


def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Run the stack in the background and return."),
) -> None:
    """Start the local stack (Prefect server, MLflow tracking server, agentdeploy server)."""
    settings = get_settings()
    if stack.is_running(settings):
        console.print(f"The stack of {settings.home_dir} is already up.")
        _show_services(stack.status(settings))
        return
    if detach:
        console.print(f"Starting the stack of {settings.home_dir} in the background "
                      f"(log: {settings.logs_dir / 'stack.log'}) ...")
        try:
            status = stack.up_detached(settings)
        except stack.StackError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        _show_services(status)
        console.print("The stack is up. 'agentdeploy down' stops it; "
                      "'agentdeploy quickstart' shows how to log in.")
        return

    def ready(supervisor: stack.Supervisor) -> None:
        _show_services(stack.status(settings))
        console.print("The stack is up. Ctrl-C stops it.")

    try:
        code = stack.up(settings, on_ready=ready)
    except stack.StackError as exc:  # lost a race with another `up`
        console.print(str(exc))
        return
    raise typer.Exit(code)


def down() -> None:
    """Stop the local stack started with `agentdeploy up --detach` (or in another terminal)."""
    settings = get_settings()
    if stack.down(settings):
        console.print(f"The stack of {settings.home_dir} is stopped.")
    else:
        console.print(f"The stack of {settings.home_dir} was not up.")


def status() -> None:
    """Each service's URL and health, the last run of each scheduled flow, each served entity's
    state (scale to zero and its last cold start) and the inference-log formatting lag; exit code 1
    when the stack is not up."""
    settings = get_settings()
    current = stack.status(settings)
    if not current.running:
        console.print(f"The stack of {settings.home_dir} is not up ('agentdeploy up' starts it).")
        if current.services:
            _show_services(current)
        raise typer.Exit(1)
    _show_services(current)
    console.print(f"supervisor pid {current.pid}, state {current.state}")
    if not current.up:
        raise typer.Exit(1)
    _show_scheduled(settings)
    _show_serving()
    _show_formatting_lag()


def _show_serving() -> None:
    """Each served entity's state; a scaled-to-zero one says so, with its last cold start."""
    rows: list[tuple[str, str, str, str]] = []
    try:
        client = AgentDeployClient.from_environment()
        for summary in client.get("/api/2.0/serving-endpoints").get("endpoints", []):
            endpoint = client.get(f"/api/2.0/serving-endpoints/{summary['name']}")
            for entity in (endpoint.get("config") or {}).get("served_entities", []):
                state = entity.get("state") or {}
                rows.append((endpoint["name"], entity["name"], state.get("deployment", "-"),
                             state.get("deployment_state_message", "")))
    except AgentDeployError as exc:
        console.print(f"serving endpoints: unknown ({exc.message})")
        return
    if not rows:
        console.print("serving endpoints: none")
        return
    table("serving endpoints", ["endpoint", "served entity", "state", "message"], rows)


def _when(iso: str | None) -> str:
    """An API timestamp as local-free UTC text with its age ("12:01:02 UTC, 8s ago")."""
    if not iso:
        return "-"
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    seconds = (datetime.now(UTC) - at).total_seconds()
    age = f"{abs(seconds):.0f}s {'ago' if seconds >= 0 else 'from now'}"
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({age})"


def _show_scheduled(settings: Settings) -> None:
    """The last run of each scheduled flow deployment, from the Prefect API."""
    try:
        runs = stack.scheduled_runs(settings)
    except AgentDeployError as exc:
        console.print(f"scheduled flows: unknown ({exc.message})")
        return
    if not runs:
        console.print("scheduled flows: none served yet")
        return
    table("scheduled flows", ["deployment", "last run", "state", "next run", "message"],
          [(r.deployment, _when(r.time), r.state or "not run yet", _when(r.next_run), r.message or "")
           for r in runs])


def _show_formatting_lag() -> None:
    """How far each endpoint's request logs trail its payload table (SQL statements API)."""
    from agentdeploy.examples import find_demo_warehouse

    try:
        client = AgentDeployClient.from_environment()
        lags = stack.formatting_lags(client, find_demo_warehouse(client))
    except AgentDeployError as exc:
        console.print(f"formatting lag: unknown ({exc.message})")
        return
    if not lags:
        console.print("formatting lag: no deployed agents")
        return
    table("inference-log formatting", ["endpoint", "payload table", "newest payload row", "lag"],
          [(f.endpoint_name, f.payload_table, f.payload_rows_newest or "-",
            f"{f.lag_s:.1f}s" if f.lag_s is not None else f.note) for f in lags])


# quickstart ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuickstartStep:
    """One idempotent step of `agentdeploy quickstart`; `run` raises `typer.Exit` to stop."""

    name: str
    run: Callable[[Settings], None]


def _require_stack(settings: Settings) -> None:
    current = stack.status(settings)
    if not current.up:
        err_console.print(f"[red]error:[/red] the stack of {settings.home_dir} is not up and healthy; "
                          "start it with 'agentdeploy up --detach' (or 'make quickstart').")
        raise typer.Exit(1)
    _show_services(current)


def _show_access(settings: Settings) -> None:
    credentials = settings.credentials_path
    if not credentials.exists():
        err_console.print(f"[red]error:[/red] {credentials} does not exist: the agentdeploy server writes "
                          f"it on its first start; see {settings.logs_dir / 'server.log'}.")
        raise typer.Exit(1)
    host = settings.server_url
    token_cmd = f"python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"token\"])' {credentials}"
    console.print(f"""
[bold]Credentials[/bold]: {credentials} (mode 0600) holds the host and the admin's token.
The CLI and the SDK read it; AGENTDEPLOY_HOST / AGENTDEPLOY_TOKEN override it.

[bold]UIs[/bold]
  MLflow (models, traces)   {settings.mlflow_tracking_uri}
  Prefect (flows, runs)     {settings.prefect_api_url.removesuffix('/api')}
      it asks for the API auth string: cat {settings.prefect_auth_string_path}
  agentdeploy API docs      {host}/api/docs

[bold]CLI[/bold]
  agentdeploy status
  agentdeploy --help

[bold]Python SDK[/bold]
  from agentdeploy.client import AgentDeployClient
  client = AgentDeployClient.from_environment()
  client.get("/api/2.0/preview/scim/v2/Me")

[bold]databricks-sdk[/bold]
  import json, pathlib
  from databricks.sdk import WorkspaceClient
  creds = json.loads(pathlib.Path("{credentials}").read_text())
  w = WorkspaceClient(host=creds["host"], token=creds["token"])
  w.current_user.me().user_name

[bold]curl[/bold] (basic auth with the user name "token", as in the Databricks docs)
  export TOKEN=$({token_cmd})
  curl -u token:$TOKEN {host}/api/2.0/preview/scim/v2/Me

'agentdeploy down' stops the stack; 'make quickstart' again is harmless.""", highlight=False, soft_wrap=True)


# The demo: data, both example agents registered and deployed, one question answered. Each step
# finds what an earlier run made before making it, so a second run only asks the question again.

QUESTION = "How do I deploy an agent?"
ASK_WAIT_S = 180.0  # how long quickstart waits for a (re)starting support bot


def _client() -> AgentDeployClient:
    with errors_as_exit():
        return AgentDeployClient.from_environment()


def _demo_data(settings: Settings) -> None:
    from agentdeploy.demo import create_demo_data

    with errors_as_exit():
        demo = create_demo_data(_client())
    console.print(f"[bold]Demo data[/bold]: table {demo.table}, SQL warehouse {demo.warehouse_name!r} "
                  f"({demo.warehouse_id}), user {demo.reviewer_user_name!r}")


def _latest_versions() -> dict[str, int]:
    """The highest registered version of each example agent in the stack's MLflow registry."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from agentdeploy.examples import RESPONDER, SUPPORT_BOT

    registry = MlflowClient()
    found: dict[str, int] = {}
    for name in (RESPONDER, SUPPORT_BOT):
        try:
            numbers = [int(v.version) for v in registry.search_model_versions(f"name='{name}'")]
        except MlflowException:
            numbers = []
        if numbers:
            found[name] = max(numbers)
    return found


def _examples(settings: Settings) -> None:
    from agentdeploy.examples import RESPONDER, SUPPORT_BOT, register_examples

    configure_mlflow(settings)
    versions = _latest_versions()
    if RESPONDER in versions and SUPPORT_BOT in versions:
        console.print(f"[bold]Example agents[/bold]: already registered ({RESPONDER} version "
                      f"{versions[RESPONDER]}, {SUPPORT_BOT} version {versions[SUPPORT_BOT]})")
        return
    console.print("[bold]Example agents[/bold]: logging and registering them ...")
    with errors_as_exit():
        register_examples(_client(), settings, progress=lambda line: console.print(f"  {line}"))


def _deploy_examples(settings: Settings) -> None:
    from agentdeploy import agents
    from agentdeploy.examples import RESPONDER, SUPPORT_BOT

    configure_mlflow(settings)
    client = _client()
    versions = _latest_versions()

    def on_step(name: str, state: str, seconds: float | None) -> None:
        mark = "[green]✓[/green]" if state == "Completed" else f"[red]{state}[/red]"
        console.print(f"    {mark} {name}" + (f" {seconds:.2f}s" if seconds is not None else ""))

    # The responder first: the support bot declares (and calls) its endpoint.
    for name in (RESPONDER, SUPPORT_BOT):
        version = versions.get(name)
        if version is None:
            err_console.print(f"[red]error:[/red] {name} has no registered version.")
            raise typer.Exit(1)
        with errors_as_exit():
            if agents.get_deployments(name, version, client=client):
                console.print(f"[bold]Deploy[/bold] {name} version {version}: already deployed")
                continue
            console.print(f"[bold]Deploy[/bold] {name} version {version} ...")
            agents.deploy(name, version, client=client, on_step=on_step)


def _current_deployment(client: AgentDeployClient, model_name: str) -> Any:
    from agentdeploy import agents

    with errors_as_exit():
        found = agents.get_deployments(model_name, client=client)
    if not found:
        err_console.print(f"[red]error:[/red] {model_name} is not deployed.")
        raise typer.Exit(1)
    return max(found, key=lambda d: int(d.model_version))


def _ask(settings: Settings) -> None:
    from agentdeploy.examples import SUPPORT_BOT

    client = _client()
    deployment = _current_deployment(client, SUPPORT_BOT)
    # Just after `up` (or a server restart) the restored workers are still starting: the gateway
    # answers 503 with Retry-After until they are ready. Wait for them, within reason.
    deadline = time.monotonic() + ASK_WAIT_S
    waiting = False
    while True:
        try:
            answer = client.post(f"/serving-endpoints/{deployment.endpoint_name}/invocations",
                                 json={"input": [{"role": "user", "content": QUESTION}]})
            break
        except Unavailable as exc:
            pause = min(exc.retry_after or 1.0, 5.0)
            if time.monotonic() + pause > deadline:
                err_console.print(f"[red]error:[/red] {deployment.endpoint_name} did not answer within "
                                  f"{ASK_WAIT_S:.0f}s: {exc.message}")
                raise typer.Exit(1) from None
            if not waiting:
                console.print(f"{deployment.endpoint_name} is starting; waiting for it ({exc.message})")
                waiting = True
            time.sleep(pause)
        except AgentDeployError as exc:
            err_console.print(f"[red]error:[/red] {deployment.endpoint_name} did not answer: {exc.message}")
            raise typer.Exit(1) from None
    text = " ".join(part.get("text", "") for item in answer.get("output", []) if item.get("type") == "message"
                    for part in item.get("content", []) if isinstance(part, dict)).strip()
    sources = (answer.get("custom_outputs") or {}).get("sources") or []
    console.print(f"\n[bold]Asked[/bold] {deployment.endpoint_name}: {QUESTION}")
    lines = [f"[bold]Answer[/bold]: {text or '(no text)'}"]
    if sources:
        lines.append("[bold]Sources[/bold]: " + ", ".join(
            str(s.get("doc_uri", s) if isinstance(s, dict) else s) for s in sources))
    lines += [f"[bold]Query endpoint[/bold]: {deployment.query_endpoint}",
              f"[bold]Review app[/bold]:     {deployment.review_app_url}"]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def _payload_rows(settings: Settings) -> None:
    from agentdeploy.examples import SUPPORT_BOT, find_demo_warehouse

    client = _client()
    table_name = f"{SUPPORT_BOT}_payload"
    with errors_as_exit():
        count = stack.count_rows(client, table_name, find_demo_warehouse(client))
    if count is None:
        console.print(f"[bold]Payload rows[/bold]: {table_name} does not exist: "
                      "inference tables are off for this endpoint.")
    else:
        console.print(f"[bold]Payload rows[/bold]: {count} in {table_name} (rows land within seconds; "
                      "run 'agentdeploy quickstart' again to see the count grow)")


# Later parts insert their steps before the last one (`QUICKSTART_STEPS.insert(-1, ...)`).
QUICKSTART_STEPS: list[QuickstartStep] = [
    QuickstartStep("stack", _require_stack),
    QuickstartStep("demo data", _demo_data),
    QuickstartStep("examples", _examples),
    QuickstartStep("deploy", _deploy_examples),
    QuickstartStep("ask", _ask),
    QuickstartStep("payload rows", _payload_rows),
    QuickstartStep("access", _show_access),
]


def quickstart() -> None:
    """Bootstrap a running stack and show the URLs and how to authenticate (no secret printed)."""
    settings = get_settings()
    for step in QUICKSTART_STEPS:
        step.run(settings)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(quickstart)
