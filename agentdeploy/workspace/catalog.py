"""The catalog: every securable object, its owner and its properties.

Two families of securables share one table:

- Unity Catalog objects with dotted names: `catalog` (`main`), `schema` (`main.docs`), and
  `table`, `function`, `registered_model` (`main.docs.faq`). A child needs its parent to exist;
  privileges granted on a parent are inherited by its children (see `grants.py`).
- Workspace objects with a single free-form name and an `object_id`, the id the
  `/api/2.0/permissions/{object_type}/{object_id}` API uses: `serving_endpoint`, `sql_warehouse`,
  `vector_search_index`, `genie_space`, `connection`, `secret_scope`.

Every securable has exactly one owner (a principal id). `properties` is free JSON owned by whoever
registers the object: a table's storage location and columns, a warehouse's settings. The owner
column is deliberately not a foreign key: deleting a principal leaves what it owned in place
(shown with the stale id) rather than deleting data or blocking the deletion.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.errors import AlreadyExists, InvalidParameterValue, NotFound
from agentdeploy.workspace.db import Base, UTCDateTime, utcnow
from agentdeploy.workspace.names import check_full_name, check_name

__all__ = [
    "Securable",
    "UNITY_CATALOG_TYPES",
    "WORKSPACE_OBJECT_TYPES",
    "SECURABLE_TYPES",
    "NAME_PARTS",
    "normalize_type",
    "check_securable_name",
    "check_full_name_part",
    "parent_name",
    "describe",
    "register_securable",
    "get_securable",
    "find_securable",
    "find_by_object_id",
    "list_securables",
    "children_of",
    "delete_securable",
    "set_owner",
    "update_properties",
]

# Unity Catalog securables and how many dot-separated parts their names have.
NAME_PARTS: dict[str, int] = {"catalog": 1, "schema": 2, "table": 3, "function": 3, "registered_model": 3}
UNITY_CATALOG_TYPES: frozenset[str] = frozenset(NAME_PARTS)
WORKSPACE_OBJECT_TYPES: frozenset[str] = frozenset(
    {"serving_endpoint", "sql_warehouse", "vector_search_index", "genie_space", "connection", "secret_scope"}
)
SECURABLE_TYPES: frozenset[str] = UNITY_CATALOG_TYPES | WORKSPACE_OBJECT_TYPES

# Spellings clients send (the SDK's SecurableType enum is upper case; Databricks calls a
# registered model `model` or `function` in some APIs) -> ours.
_ALIASES: dict[str, str] = {
    "model": "registered_model",
    "registered-model": "registered_model",
    "warehouse": "sql_warehouse",
    "sql-warehouse": "sql_warehouse",
    "serving-endpoint": "serving_endpoint",
    "endpoint": "serving_endpoint",
    "vector-search-index": "vector_search_index",
    "genie": "genie_space",
    "genie-space": "genie_space",
    "scope": "secret_scope",
    "secret-scope": "secret_scope",
}


class Securable(Base):
    __tablename__ = "securables"
    __table_args__ = (
        UniqueConstraint("securable_type", "full_name", name="uq_securables_type_name"),
        UniqueConstraint("securable_type", "object_id", name="uq_securables_type_object_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    securable_type: Mapped[str] = mapped_column(String(32), index=True)
    full_name: Mapped[str] = mapped_column(String(512))
    object_id: Mapped[str] = mapped_column(String(64))
    # The catalog of a schema, the schema of a table/function/model; None otherwise. RESTRICT:
    # children are removed explicitly (delete_securable with force) so their grants go too.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("securables.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    owner_id: Mapped[int] = mapped_column(Integer, index=True)
    comment: Mapped[str] = mapped_column(String(1024), default="")
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def is_unity_catalog(self) -> bool:
        return self.securable_type in UNITY_CATALOG_TYPES

    @property
    def name(self) -> str:
        """The last part of a Unity Catalog name; the whole name of a workspace object."""
        return self.full_name.rsplit(".", 1)[-1] if self.is_unity_catalog else self.full_name

    def __repr__(self) -> str:
        return f"Securable({self.securable_type}, {self.full_name!r})"


def normalize_type(securable_type: object, *, field: str = "securable_type") -> str:
    """Our spelling of a securable type (case-insensitive, SDK aliases accepted), or 400."""
    if not isinstance(securable_type, str) or not securable_type:
        raise InvalidParameterValue(f"'{field}' must be a non-empty string.")
    key = securable_type.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SECURABLE_TYPES:
        raise InvalidParameterValue(
            f"'{field}': unknown securable type {securable_type[:80]!r}; expected one of "
            f"{', '.join(sorted(SECURABLE_TYPES))}."
        )
    return key


def check_securable_name(securable_type: str, full_name: object, *, field: str = "full_name") -> str:
    """The name, checked for its type's shape (three-level names for tables...), or 400.
    Unity Catalog names are case-insensitive and returned lower-cased (as Databricks stores them);
    workspace object names are kept as given."""
    if securable_type in NAME_PARTS:
        check_full_name(field, full_name, parts=NAME_PARTS[securable_type])
        assert isinstance(full_name, str)
        return full_name.lower()
    check_name(field, full_name)
    assert isinstance(full_name, str)
    return full_name


def check_full_name_part(field: str, value: object) -> str:
    """One Unity Catalog identifier (a catalog, schema or object name without dots), or 400."""
    return check_full_name(field, value, parts=1)[0].lower()


def parent_name(securable_type: str, full_name: str) -> tuple[str, str] | None:
    """(type, name) of the Unity Catalog parent: a schema's catalog, a table's schema."""
    if securable_type not in NAME_PARTS or securable_type == "catalog":
        return None
    head = full_name.rsplit(".", 1)[0]
    return ("catalog", head) if securable_type == "schema" else ("schema", head)


def describe(securable_type: str, full_name: str) -> str:
    """How messages name a securable: `table 'main.docs.faq'`, `sql warehouse 'w1'`."""
    return f"{securable_type.replace('_', ' ')} '{full_name}'"


def register_securable(
    session: Session,
    securable_type: str,
    full_name: str,
    *,
    owner_id: int,
    object_id: str | None = None,
    properties: dict[str, Any] | None = None,
    comment: str = "",
    created_by_id: int | None = None,
) -> Securable:
    """Add a securable owned by `owner_id`.

    400 on an unknown type or a malformed name (naming the field), 404 if a Unity Catalog
    parent is missing, 409 if the name (or the object id) is taken. `object_id` defaults to a
    new random id. Granting nothing: the owner holds every privilege on its own securable.
    """
    securable_type = normalize_type(securable_type)
    full_name = check_securable_name(securable_type, full_name)
    if comment and len(comment) > 1024:
        raise InvalidParameterValue("'comment' is longer than 1024 characters.")
    if object_id is not None:
        check_name("object_id", object_id)
        if len(object_id) > 64:
            raise InvalidParameterValue("'object_id' is longer than 64 characters.")
    parent_id: int | None = None
    parent = parent_name(securable_type, full_name)
    if parent is not None:
        parent_row = find_securable(session, *parent)
        if parent_row is None:
            raise NotFound(
                f"Cannot create {describe(securable_type, full_name)}: {describe(*parent)} does not exist."
            )
        parent_id = parent_row.id
    if find_securable(session, securable_type, full_name) is not None:
        raise AlreadyExists(f"{describe(securable_type, full_name).capitalize()} already exists.")
    if object_id is not None and find_by_object_id(session, securable_type, object_id) is not None:
        raise AlreadyExists(f"A {securable_type.replace('_', ' ')} with id {object_id!r} already exists.")
    now = utcnow()
    securable = Securable(
        securable_type=securable_type,
        full_name=full_name,
        object_id=object_id
        or (uuid.uuid4().hex[:16] if securable_type in WORKSPACE_OBJECT_TYPES else str(uuid.uuid4())),
        parent_id=parent_id,
        owner_id=int(owner_id),
        comment=comment,
        properties=dict(properties or {}),
        created_at=now,
        updated_at=now,
        created_by_id=created_by_id if created_by_id is not None else int(owner_id),
    )
    session.add(securable)
    session.flush()
    return securable


def find_securable(session: Session, securable_type: str, full_name: str) -> Securable | None:
    return session.scalars(
        select(Securable).where(Securable.securable_type == securable_type, Securable.full_name == full_name)
    ).first()


def get_securable(session: Session, securable_type: str, full_name: str) -> Securable:
    """The securable, or 404 naming it (400 for an unknown type or a malformed name)."""
    securable_type = normalize_type(securable_type)
    full_name = check_securable_name(securable_type, full_name)
    found = find_securable(session, securable_type, full_name)
    if found is None:
        raise NotFound(f"{describe(securable_type, full_name).capitalize()} does not exist.")
    return found


def find_by_object_id(session: Session, securable_type: str, object_id: str) -> Securable | None:
    securable_type = normalize_type(securable_type)
    return session.scalars(
        select(Securable).where(Securable.securable_type == securable_type, Securable.object_id == object_id)
    ).first()


def list_securables(session: Session, securable_type: str, *, parent: str | None = None) -> list[Securable]:
    """Securables of one type by name; `parent` narrows to a catalog's schemas or a schema's
    objects (a catalog name also narrows tables/functions/models to that catalog)."""
    securable_type = normalize_type(securable_type)
    query = select(Securable).where(Securable.securable_type == securable_type)
    if parent is not None:
        if securable_type == "catalog" or securable_type in WORKSPACE_OBJECT_TYPES:
            raise InvalidParameterValue(f"A {securable_type.replace('_', ' ')} has no parent to list by.")
        query = query.where(Securable.full_name.startswith(parent.lower() + ".", autoescape=True))
    return list(session.scalars(query.order_by(Securable.full_name)))


def children_of(session: Session, securable: Securable) -> list[Securable]:
    return list(session.scalars(select(Securable).where(Securable.parent_id == securable.id)))


def delete_securable(session: Session, securable: Securable, *, force: bool = False) -> list[Securable]:
    """Remove a securable and every grant on it. A catalog or schema that still holds objects
    is refused (400) unless `force`, which removes its children too. Returns what was removed."""
    from agentdeploy.workspace.grants import Grant  # grants depends on this module, not back

    children = children_of(session, securable)
    if children and not force:
        kinds = sorted({c.securable_type.replace("_", " ") for c in children})
        raise InvalidParameterValue(
            f"{describe(securable.securable_type, securable.full_name).capitalize()} is not empty "
            f"(it holds {len(children)} {'/'.join(kinds)} object(s)); delete them first or pass force=true."
        )
    removed: list[Securable] = []
    for child in children:
        removed += delete_securable(session, child, force=True)
    session.query(Grant).filter(Grant.securable_id == securable.id).delete(synchronize_session=False)
    session.delete(securable)
    session.flush()
    return [*removed, securable]


def set_owner(session: Session, securable: Securable, owner_id: int) -> Securable:
    securable.owner_id = int(owner_id)
    securable.updated_at = utcnow()
    session.flush()
    return securable


def update_properties(
    session: Session, securable: Securable, properties: dict[str, Any], *, comment: str | None = None
) -> Securable:
    """Merge `properties` into the securable's (a key set to None is removed)."""
    merged = dict(securable.properties or {})
    for key, value in properties.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    securable.properties = merged
    if comment is not None:
        securable.comment = comment[:1024]
    securable.updated_at = utcnow()
    session.flush()
    return securable
