"""What agent code running in a served entity uses to reach the workspace as itself.

    from agentdeploy.runtime import workspace_host, workspace_token

    httpx.post(f"{workspace_host()}/api/2.0/sql/statements",
               headers={"Authorization": f"Bearer {workspace_token()}"}, json={...})

The worker's environment names the workspace URL (`AGENTDEPLOY_HOST`) and the served entity's
token file (`AGENTDEPLOY_CREDENTIALS_FILE`, JSON `{"token": ..., "expires_at": ...}`). The server
replaces that file atomically when the token is rotated; `workspace_token()` re-reads it only
when its inode or mtime changed (one `stat` per call otherwise), so agent code should call it per
request rather than keep the token.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

__all__ = ["workspace_host", "workspace_token", "CredentialsUnavailable", "ENV_HOST", "ENV_CREDENTIALS_FILE"]

ENV_HOST = "AGENTDEPLOY_HOST"
ENV_CREDENTIALS_FILE = "AGENTDEPLOY_CREDENTIALS_FILE"


class CredentialsUnavailable(RuntimeError):
    """This process was not given workspace credentials (or their file is unreadable)."""


@dataclass(frozen=True)
class _Cached:
    key: tuple[int, int, int]  # (inode, mtime_ns, size): os.replace gives a new inode
    token: str
    expires_at: object


_lock = threading.Lock()
_cached: _Cached | None = None


def workspace_host() -> str:
    """The workspace URL (no trailing slash)."""
    host = os.environ.get(ENV_HOST)
    if not host:
        raise CredentialsUnavailable(f"{ENV_HOST} is not set: this code is not running in a served entity.")
    return host.rstrip("/")


def workspace_token() -> str:
    """The served entity's current token (re-read when the server has replaced the file)."""
    global _cached
    path = os.environ.get(ENV_CREDENTIALS_FILE)
    if not path:
        raise CredentialsUnavailable(
            f"{ENV_CREDENTIALS_FILE} is not set: no credentials were given to this entity."
        )
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CredentialsUnavailable(
            f"The credentials file cannot be read ({exc.strerror}); "
            "the server has not written a token for this entity yet."
        ) from None
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _cached
    if cached is not None and cached.key == key:
        return cached.token
    with _lock:
        try:
            with open(path, "rb") as f:
                # Key from the open file: the one we read, even if replaced again meanwhile.
                fst = os.fstat(f.fileno())
                stored = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise CredentialsUnavailable(
                f"The credentials file is unreadable: {type(exc).__name__}."
            ) from None
        token = stored.get("token") if isinstance(stored, dict) else None
        if not isinstance(token, str) or not token:
            raise CredentialsUnavailable("The credentials file holds no token.")
        _cached = _Cached((fst.st_ino, fst.st_mtime_ns, fst.st_size), token, stored.get("expires_at"))
        return token
