"""The server's key files: created once with mode 0600 under `AGENTDEPLOY_HOME/keys`, never in
the database (a copy of the database alone reveals no token, secret or signing key)."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["write_private_file", "read_or_create", "token_hash_key", "signing_key", "secrets_key"]


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600 (the directory becomes 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:  # O_EXCL: two processes starting at once agree on one key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return data


def token_hash_key(keys_dir: Path) -> bytes:
    """The HMAC key under which tokens and OAuth secrets are stored (keyed hash, not plain)."""
    return read_or_create(keys_dir / "token-hash.key", lambda: secrets.token_bytes(32))


def signing_key(keys_dir: Path) -> Ed25519PrivateKey:
    """The EdDSA key that signs OAuth access tokens."""

    def make() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    key = serialization.load_pem_private_key(read_or_create(keys_dir / "oauth-signing.pem", make), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def secrets_key(keys_dir: Path) -> bytes:
    """The Fernet key that encrypts secret-scope values at rest."""
    return read_or_create(keys_dir / "secrets.key", lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)))
