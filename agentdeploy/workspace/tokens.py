"""Personal access tokens: random, stored only as a keyed hash, optionally expiring, revocable.

The value is shown once, by the call that creates it. Lookups hash the presented value with the
server's HMAC key: no password-hash work per request (the values are 256-bit random).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.errors import InvalidParameterValue, NotFound
from agentdeploy.workspace.db import Base, UTCDateTime, utcnow
from agentdeploy.workspace.identity import Principal

__all__ = ["AccessToken", "keyed_hash", "create_token", "list_tokens", "revoke_token", "PAT_PREFIX"]

PAT_PREFIX = "dapi"
MAX_LIFETIME_S = 10 * 365 * 24 * 3600


class AccessToken(Base):
    __tablename__ = "access_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    comment: Mapped[str] = mapped_column(String(1024), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Who asked for it, when an admin creates a token on behalf of someone (on-behalf-of).
    created_by_id: Mapped[int | None] = mapped_column(nullable=True)


def keyed_hash(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def create_token(
    session: Session,
    hash_key: bytes,
    principal: Principal,
    *,
    comment: str = "",
    lifetime_seconds: int | None = None,
    created_by: Principal | None = None,
) -> tuple[str, AccessToken]:
    """Returns (value, record); the value is never stored."""
    if lifetime_seconds is not None:
        if not isinstance(lifetime_seconds, int) or isinstance(lifetime_seconds, bool):
            raise InvalidParameterValue("'lifetime_seconds' must be an integer number of seconds.")
        if lifetime_seconds > MAX_LIFETIME_S:
            raise InvalidParameterValue(f"'lifetime_seconds' may be at most {MAX_LIFETIME_S}.")
        if lifetime_seconds <= 0:
            lifetime_seconds = None  # Databricks: zero or negative means no expiry.
    if len(comment) > 1024:
        raise InvalidParameterValue("'comment' may be at most 1024 characters.")
    value = PAT_PREFIX + secrets.token_hex(32)
    now = utcnow()
    record = AccessToken(
        id=uuid.uuid4().hex,
        principal_id=principal.id,
        token_hash=keyed_hash(hash_key, value),
        comment=comment,
        created_at=now,
        expires_at=now + timedelta(seconds=lifetime_seconds) if lifetime_seconds else None,
        created_by_id=created_by.id if created_by else None,
    )
    session.add(record)
    session.flush()
    return value, record


def list_tokens(session: Session, principal: Principal | None = None) -> list[AccessToken]:
    query = select(AccessToken).order_by(AccessToken.created_at)
    if principal is not None:
        query = query.where(AccessToken.principal_id == principal.id)
    return list(session.scalars(query))


def revoke_token(session: Session, token_id: str, *, owner: Principal | None = None) -> AccessToken:
    record = session.get(AccessToken, token_id) if isinstance(token_id, str) else None
    if record is None or (owner is not None and record.principal_id != owner.id):
        raise NotFound(f"No token with id {str(token_id)[:80]!r}.")
    session.delete(record)
    session.flush()
    return record
