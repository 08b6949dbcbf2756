"""When a task retries: transient HTTP failures only, never a denial or bad input."""

from __future__ import annotations

import os
from typing import Any

from agentdeploy.errors import DeadlineExceeded, Unavailable

__all__ = ["retry_transient", "RETRY_DELAYS", "fail_if_injected"]

RETRY_DELAYS = [0.5, 1.0, 2.0]


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except (Unavailable, DeadlineExceeded):
        return True
    except Exception:
        return False
    return False


def fail_if_injected(step: str) -> None:
    """Test hook: `AGENTDEPLOY_DEPLOY_FAIL_AT=<step>` makes that step fail after doing its work,
    so tests can prove the rollback of every step on the real parts."""
    if os.environ.get("AGENTDEPLOY_DEPLOY_FAIL_AT") == step:
        raise RuntimeError(f"failure injected after step {step!r} (AGENTDEPLOY_DEPLOY_FAIL_AT)")
