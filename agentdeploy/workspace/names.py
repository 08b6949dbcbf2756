"""Validation of the names users give things: one place, one message shape."""

from __future__ import annotations

import re

from agentdeploy.errors import InvalidParameterValue

__all__ = ["check_name", "check_full_name", "MAX_NAME_LENGTH"]

MAX_NAME_LENGTH = 255
_FORBIDDEN = ("/", "\\", "\x00")
_UC_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


def check_name(field: str, value: object) -> str:
    """A free-form display name: non-empty, at most 255 characters, no `/`, `\\`, `..` or NUL."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameterValue(f"'{field}' must be a non-empty string.")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidParameterValue(f"'{field}' is {len(value)} characters long; the limit is 255.")
    if any(ch in value for ch in _FORBIDDEN) or ".." in value or any(ord(c) < 32 for c in value):
        raise InvalidParameterValue(
            f"'{field}' may not contain '/', '\\', '..', NUL or control characters: {value[:80]!r}."
        )
    return value


def check_full_name(field: str, value: object, *, parts: int) -> tuple[str, ...]:
    """A Unity Catalog name of exactly `parts` dot-separated identifiers, e.g. `main.docs.faq`."""
    if not isinstance(value, str) or not value:
        raise InvalidParameterValue(f"'{field}' must be a non-empty string.")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidParameterValue(f"'{field}' is {len(value)} characters long; the limit is 255.")
    pieces = tuple(value.split("."))
    if len(pieces) != parts or not all(_UC_PART.match(p) for p in pieces):
        shape = ".".join(["catalog", "schema", "name"][:parts]) if parts <= 3 else "a.b.c"
        raise InvalidParameterValue(
            f"'{field}' must be {parts} part(s) of letters, digits, '_' or '-' joined by '.' "
            f"({shape}); got {value[:80]!r}."
        )
    return pieces
