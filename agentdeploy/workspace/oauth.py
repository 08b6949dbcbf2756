"""OAuth M2M for service principals: hashed client secrets and signed EdDSA access tokens.

`verify_access_token` is the one place a JWT is checked: the algorithm is pinned to EdDSA with our
key, `iss`, `aud`, `exp`, `nbf` and the token type are required and checked in one call; `jku`,
`x5u` and unknown `kid` headers are never followed. Principals get no refresh tokens.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.errors import InvalidParameterValue, NotFound, Unauthenticated
from agentdeploy.workspace.db import Base, UTCDateTime, utcnow
from agentdeploy.workspace.identity import Principal
from agentdeploy.workspace.tokens import keyed_hash

__all__ = [
    "OAuthSecret",
    "TokenIssuer",
    "IssuedToken",
    "create_oauth_secret",
    "list_oauth_secrets",
    "delete_oauth_secret",
    "verify_client_secret",
    "SECRET_PREFIX",
    "AUDIENCE",
    "TOKEN_TYPE",
]

SECRET_PREFIX = "dose"
AUDIENCE = "agentdeploy-workspace"
TOKEN_TYPE = "access"


class OAuthSecret(Base):
    __tablename__ = "oauth_secrets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def create_oauth_secret(
    session: Session, hash_key: bytes, principal: Principal, *, lifetime_seconds: int | None = None
) -> tuple[str, OAuthSecret]:
    if principal.kind != "service_principal":
        raise InvalidParameterValue("OAuth secrets exist only for service principals.")
    value = SECRET_PREFIX + secrets.token_hex(32)
    now = utcnow()
    record = OAuthSecret(
        id=uuid.uuid4().hex,
        principal_id=principal.id,
        secret_hash=keyed_hash(hash_key, value),
        created_at=now,
        expires_at=now + timedelta(seconds=lifetime_seconds) if lifetime_seconds else None,
    )
    session.add(record)
    session.flush()
    return value, record


def list_oauth_secrets(session: Session, principal: Principal) -> list[OAuthSecret]:
    return list(session.scalars(select(OAuthSecret).where(OAuthSecret.principal_id == principal.id)))


def delete_oauth_secret(session: Session, principal: Principal, secret_id: str) -> None:
    record = session.get(OAuthSecret, secret_id)
    if record is None or record.principal_id != principal.id:
        raise NotFound(f"No OAuth secret {secret_id[:80]!r} for service principal {principal.id}.")
    session.delete(record)
    session.flush()


def verify_client_secret(session: Session, hash_key: bytes, client_id: str, client_secret: str) -> Principal:
    """The active service principal whose application id is `client_id` and who owns the secret."""
    refused = Unauthenticated("Invalid client credentials.")
    principal = session.scalars(
        select(Principal).where(Principal.application_id == client_id, Principal.kind == "service_principal")
    ).first()
    if principal is None or not principal.active:
        raise refused
    record = session.scalars(
        select(OAuthSecret).where(OAuthSecret.secret_hash == keyed_hash(hash_key, client_secret))
    ).first()
    if record is None or record.principal_id != principal.id:
        raise refused
    if record.expires_at is not None and record.expires_at <= utcnow():
        raise refused
    return principal


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    expires_at: datetime


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Signs and verifies access tokens with one Ed25519 key."""

    def __init__(self, key: Ed25519PrivateKey, *, issuer: str, lifetime_s: int) -> None:
        self._key = key
        self._public = key.public_key()
        raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.kid = _b64url(raw)[:16]
        self._public_x = _b64url(raw)
        self.issuer = issuer
        self.lifetime_s = lifetime_s

    def issue(self, principal: Principal, *, lifetime_s: int | None = None, scope: str = "all-apis") -> IssuedToken:
        now = utcnow()
        lifetime = lifetime_s or self.lifetime_s
        expires_at = now + timedelta(seconds=lifetime)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": principal.application_id,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()) - 1,
            "exp": int(expires_at.timestamp()),
            "jti": uuid.uuid4().hex,
            "scope": scope,
            "token_type": TOKEN_TYPE,
        }
        token = jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"})
        return IssuedToken(access_token=token, expires_in=lifetime, expires_at=expires_at)

    def verify_access_token(self, token: str) -> dict[str, Any]:
        """The claims of a valid token, or Unauthenticated. Never trusts key hints in the header."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "EdDSA" or header.get("kid") != self.kid:
                raise Unauthenticated("Invalid access token.")
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=self.issuer,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The access token has expired; request a new one.") from None
        except jwt.PyJWTError:
            raise Unauthenticated("Invalid access token.") from None
        if claims.get("token_type") != TOKEN_TYPE:
            raise Unauthenticated("Invalid access token.")
        return claims

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": self._public_x, "kid": self.kid,
                          "alg": "EdDSA", "use": "sig"}]}
