"""`rotate-credentials`: keep every agent's short-lived credentials fresh.

Scheduled (every 15 minutes by default; access tokens live an hour) and runnable by hand. For
each served entity with a service principal: mint a new token with the principal's OAuth secret
(from its block) and hand it to the server, which swaps the worker's file atomically; rotate the
OAuth secret itself on a longer period (daily by default). An entity whose rotation failed keeps
serving on its current token until it expires, and the run is FAILED so Prefect shows it.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from agentdeploy.deploy_spec import ADMIN_BLOCK
from blocks.workspace import WorkspaceCredentials
from tasks.rotation import RotationResult, list_agent_entities, rotate_entity

__all__ = ["rotate_credentials", "ROTATION_ARTIFACT"]

ROTATION_ARTIFACT = "credential-rotation"


def _report(results: list[RotationResult]) -> str:
    lines = ["# Credential rotation", "", "| served entity | endpoint | principal | token expires | secret rotated | error |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.served_entity_name} | {r.endpoint_name} | {r.principal} | {r.token_expires_at or '-'} "
                     f"| {'yes' if r.secret_rotated else 'no'} | {r.error or ''} |")
    if not results:
        lines.append("| (no agent entities) | | | | | |")
    return "\n".join(lines)


@flow(name="rotate-credentials", log_prints=False, persist_result=False)
def rotate_credentials(credentials_block: str = ADMIN_BLOCK, secret_rotation_period_s: float = 86400.0) -> int:
    """Rotate every served entity's token (and principals' OAuth secrets when due)."""
    logger = get_run_logger()
    api = WorkspaceCredentials.load(credentials_block).client()
    entities = list_agent_entities(api)
    futures = [(e, rotate_entity.submit(api, e, secret_rotation_period_s)) for e in entities]
    results: list[RotationResult] = []
    for entity, future in futures:
        future.wait()
        if future.state.is_completed():
            results.append(future.result())
        else:
            # One table cell: no line breaks or pipes from the exception text.
            message = " ".join(str(future.state.message or "failed").split()).replace("|", "/")[:300]
            results.append(RotationResult(served_entity_name=entity["served_entity_name"],
                                          endpoint_name=entity["endpoint_name"],
                                          principal=entity["display_name"], error=message))
    create_markdown_artifact(markdown=_report(results), key=ROTATION_ARTIFACT,
                             description="Agent credentials rotated by this run (no token or secret values).")
    failed = [r for r in results if r.error]
    logger.info("rotated %d of %d entities", len(results) - len(failed), len(results))
    if failed:
        raise RuntimeError(f"Rotation failed for {len(failed)} entit{'y' if len(failed) == 1 else 'ies'}: "
                           + ", ".join(r.served_entity_name for r in failed))
    return len(results)
