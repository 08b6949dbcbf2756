"""Review app sessions: a random id in an HttpOnly cookie, mapped here to a principal id.

The user's token is checked once at sign-in and then forgotten: the cookie holds only a random
session id (32 bytes, URL-safe), which this in-memory store maps to the principal's id and an
expiry. A server restart signs everyone out. Each request resolves the id to the principal's
*current* identity, so a deactivated or deleted principal loses access at once.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

__all__ = ["COOKIE_NAME", "SESSION_TTL_S", "ReviewSession", "SessionStore"]

COOKIE_NAME = "agentdeploy_review"
SESSION_TTL_S = 8 * 3600.0
_MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class ReviewSession:
    session_id: str
    principal_id: int
    expires_at: float  # time.monotonic()


class SessionStore:
    """Session id -> principal id, with an absolute expiry; thread-safe, bounded."""

    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, ReviewSession] = {}
        self._lock = threading.Lock()

    def create(self, principal_id: int) -> ReviewSession:
        now = time.monotonic()
        session = ReviewSession(secrets.token_urlsafe(32), principal_id, now + self.ttl_s)
        with self._lock:
            if len(self._sessions) >= _MAX_SESSIONS:
                self._prune(now)
            if len(self._sessions) >= _MAX_SESSIONS:  # still full: the oldest session goes
                oldest = min(self._sessions.values(), key=lambda s: s.expires_at)
                del self._sessions[oldest.session_id]
            self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> ReviewSession | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at <= time.monotonic():
                del self._sessions[session_id]
                return None
            return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]
