"""How the SDK and CLI reach the stack's Prefect server: its settings, the caller's credentials
block, and starting the `deploy-agent` deployment.

`agentdeploy` never imports `flows/`, `tasks/` or `blocks/` (they sit above it): blocks are saved
here through Prefect's API by their type slug; `agentdeploy up` registers the block types.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

from agentdeploy.errors import AgentDeployError, DeadlineExceeded, NotFound, Unavailable
from agentdeploy.settings import Settings, get_settings

__all__ = ["prefect_settings", "save_credentials_block", "delete_block", "user_block_name",
           "run_flow_deployment", "CREDENTIALS_BLOCK_TYPE", "PRINCIPAL_SECRET_BLOCK_TYPE"]

CREDENTIALS_BLOCK_TYPE = "agentdeploy-workspace-credentials"
PRINCIPAL_SECRET_BLOCK_TYPE = "agentdeploy-principal-secret"


@contextlib.contextmanager
def prefect_settings(settings: Settings | None = None) -> Iterator[None]:
    """Point Prefect's client at the stack's server (URL and API auth string) for this block."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from agentdeploy.stack import prefect_client_env

    env = prefect_client_env(settings or get_settings())
    updates: dict[Any, Any] = {PREFECT_API_URL: env["PREFECT_API_URL"]}
    if env.get("PREFECT_API_AUTH_STRING"):
        updates[PREFECT_API_AUTH_STRING] = env["PREFECT_API_AUTH_STRING"]
    with temporary_settings(updates=updates):
        yield


def user_block_name(user_name: str) -> str:
    """Block names allow lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9-]+", "-", user_name.lower()).strip("-")[:60] or "user"
    return f"agentdeploy-user-{slug}"


async def _save_block(name: str, host: str, token: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentCreate, BlockDocumentUpdate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            block_type = await client.read_block_type_by_slug(CREDENTIALS_BLOCK_TYPE)
        except ObjectNotFound:
            raise NotFound("The Prefect server has no agentdeploy block types yet: is `agentdeploy up` running?") from None
        schemas = await client.read_block_schemas()
        schema = next((s for s in schemas if s.block_type_id == block_type.id), None)
        if schema is None:
            raise NotFound("The agentdeploy credentials block schema is not registered on the Prefect server.")
        data = {"host": host, "token": token}
        try:
            existing = await client.read_block_document_by_name(name, block_type_slug=CREDENTIALS_BLOCK_TYPE)
        except ObjectNotFound:
            existing = None
        if existing is None:
            await client.create_block_document(BlockDocumentCreate(
                name=name, data=data, block_schema_id=schema.id, block_type_id=block_type.id))
        else:
            await client.update_block_document(existing.id, BlockDocumentUpdate(data=data, merge_existing_data=False))


def save_credentials_block(name: str, host: str, token: str, settings: Settings | None = None) -> None:
    """Save (or replace) a WorkspaceCredentials block; the token is stored encrypted by Prefect."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    with prefect_settings(settings):
        run_coro_as_sync(_save_block(name, host, token))


def delete_block(block_type_slug: str, name: str, settings: Settings | None = None) -> bool:
    """Delete a block document if it exists; returns whether one was deleted."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def delete() -> bool:
        async with get_client() as client:
            try:
                doc = await client.read_block_document_by_name(name, block_type_slug=block_type_slug)
            except ObjectNotFound:
                return False
            await client.delete_block_document(doc.id)
            return True

    with prefect_settings(settings):
        return bool(run_coro_as_sync(delete()))


def run_flow_deployment(
    deployment: str,
    parameters: dict[str, Any],
    *,
    timeout: float,
    on_step: Callable[[str, str, float | None], None] | None = None,
    settings: Settings | None = None,
) -> Any:
    """Start a run of a served deployment and wait for its end; returns the flow run.

    `on_step(task_name, state_name, seconds)` is called once per task run as it finishes (the
    CLI shows live progress with it)."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    with prefect_settings(settings):
        try:
            return run_coro_as_sync(_run_and_watch(deployment, parameters, timeout, on_step))
        except AgentDeployError:
            raise
        except TimeoutError:
            raise DeadlineExceeded(f"{deployment} did not finish within {timeout:.0f}s; "
                                   "its run goes on in the Prefect UI.") from None
        except Exception as exc:  # Prefect raises plain errors for an unreachable server
            raise Unavailable(f"Cannot run {deployment} on the stack's Prefect server: {exc}") from None


async def _run_and_watch(deployment: str, parameters: dict[str, Any], timeout: float,
                         on_step: Callable[[str, str, float | None], None] | None) -> Any:
    import asyncio
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import arun_deployment

    run = await arun_deployment(deployment, parameters=parameters, timeout=0)
    deadline = time.monotonic() + timeout
    reported: set[str] = set()
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(run.id)
            if on_step is not None:
                tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
                for task_run in sorted(tasks, key=lambda t: t.start_time or t.expected_start_time or 0):
                    if task_run.state is not None and task_run.state.is_final() and str(task_run.id) not in reported:
                        reported.add(str(task_run.id))
                        seconds = task_run.total_run_time.total_seconds() if task_run.total_run_time else None
                        on_step(task_run.task_key.split(".")[-1] if not task_run.name else task_run.name,
                                task_run.state.name, seconds)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.2)
