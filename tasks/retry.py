"""When a task retries: transient HTTP failures only, never a denial or bad input."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from agentdeploy.errors import DeadlineExceeded, Unavailable

__all__ = ["retry_transient", "RETRY_DELAYS", "fail_if_injected", "undo_on_failure", "Shared"]

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("agentdeploy.tasks")

RETRY_DELAYS = [0.5, 1.0, 2.0]


class Shared:
    """A value kept in a Prefect transaction by reference. `Transaction.get` deep-copies what it
    returns, and a client (httpx pool: locks, sockets) cannot be copied: every rollback hook that
    read the client back failed with "cannot pickle '_thread.RLock' object"."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict[int, Any]) -> Shared:
        return self


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


def undo_on_failure(hook: Callable[[Any], None]) -> Callable[[F], F]:
    """Run the task's rollback hook when the task itself raises after changing something.

    Prefect stages a task's `on_rollback` hooks only when the task completes: a task that fails
    half-way (e.g. the secret block saved, then the token hand-over refused) would otherwise leave
    its own changes behind while the earlier tasks roll back. The hook reads what the task did
    from the transaction (`txn.set` right after each change), so it undoes exactly that; a retry
    then starts clean."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except BaseException:
                from prefect.transactions import get_transaction

                txn = get_transaction()
                if txn is not None:
                    try:
                        hook(txn)
                    except Exception:
                        log.exception("undoing the failed step %s failed", getattr(fn, "__name__", fn))
                raise

        return run  # type: ignore[return-value]

    return wrap
