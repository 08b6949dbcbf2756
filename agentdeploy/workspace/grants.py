"""Grants (principal x securable x privilege) and THE one authorization function, `decide`.

Every access check in agentdeploy ends in `decide` (through `Workspace.authorize`,
`Workspace.is_authorized`, `Workspace.missing_privileges` or `deps.require_admin`). It reads an
in-memory `AccessView` rebuilt after every committed change, so a check costs a few dict
lookups and no database read, and a revoke takes effect on the very next request.

Privileges by securable type (anything else is a 400 naming the privilege):

    metastore         CREATE_CATALOG, MANAGE                       (virtual; admins only)
    catalog           USE_CATALOG USE_SCHEMA SELECT MODIFY EXECUTE CREATE_SCHEMA CREATE_TABLE
                      CREATE_FUNCTION CREATE_MODEL MANAGE ALL_PRIVILEGES
    schema            the catalog's, less USE_CATALOG and CREATE_SCHEMA
    table             SELECT MODIFY MANAGE ALL_PRIVILEGES
    function          EXECUTE MANAGE ALL_PRIVILEGES
    registered_model  EXECUTE MANAGE ALL_PRIVILEGES
    connection        USE_CONNECTION MANAGE ALL_PRIVILEGES
    sql_warehouse     CAN_VIEW < CAN_USE < CAN_MANAGE
    serving_endpoint  CAN_VIEW < CAN_QUERY < CAN_REVIEW < CAN_MANAGE   (CAN_REVIEW: the review app's
                      reviewers, who see and rate everyone's requests)
    vector_search_index CAN_VIEW < CAN_USE < CAN_MANAGE
    genie_space       CAN_VIEW < CAN_RUN < CAN_EDIT < CAN_MANAGE
    secret_scope      READ < WRITE < MANAGE

`a < b` means holding b satisfies a check for a (object permission levels are a ladder).

The rule `decide` applies for a principal P (and every group P belongs to, nested groups
included) asking for privilege X on securable S:

1. Admins (members of `admins`) are metastore and workspace admins: they hold every metastore
   privilege (create catalogs; `require_admin`), the top level on every workspace object
   (CAN_MANAGE / MANAGE, hence every level below it), and MANAGE on every Unity Catalog object
   and connection. MANAGE lets them grant, revoke, change owners and drop, but reading or
   changing data (SELECT, MODIFY, EXECUTE, USE_*, CREATE_*) follows the same rules as anyone:
   an admin grants itself what it needs, and that grant is audited. This is Unity Catalog's own
   split between metastore admins and data access, and it keeps "no privilege escalation" honest.
2. The owner of S holds every privilege on S. Ownership is NOT inherited: the owner of a catalog
   does not read a table below it. But the owner of a catalog or schema may manage (MANAGE:
   grant, revoke, change owner, drop) everything below it, as in Unity Catalog.
3. A grant of X, or of ALL_PRIVILEGES (which covers everything but MANAGE, as in Databricks),
   on S or on any Unity Catalog parent of S (schema, catalog) satisfies X: privileges are
   inherited downward. MANAGE granted on a parent also covers the children.
4. Unity Catalog securables also need USE_CATALOG on their catalog and USE_SCHEMA on their
   schema (owning the catalog or schema counts), including a check on the catalog or schema
   itself (CREATE_SCHEMA on a catalog also needs USE_CATALOG). Managing (rule 1 and the owner
   part of rule 2) is exempt, so an owner can always repair the grants below it.

A denial names every missing privilege and its securable, e.g.
`User 'reviewer' does not have USE_SCHEMA on schema 'main.docs'.`
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.errors import InvalidParameterValue, NotFound, PermissionDenied
from agentdeploy.workspace import audit
from agentdeploy.workspace.catalog import (
    UNITY_CATALOG_TYPES,
    Securable,
    check_securable_name,
    describe,
    normalize_type,
)
from agentdeploy.workspace.db import Base, UTCDateTime, utcnow
from agentdeploy.workspace.identity import Identity

__all__ = [
    "Grant",
    "PRIVILEGES",
    "APPLICABLE",
    "LEVELS",
    "METASTORE",
    "manage_privilege",
    "normalize_privilege",
    "implied_by",
    "AccessView",
    "SecurableRef",
    "decide",
    "denial_message",
    "grant",
    "revoke",
    "privileges_of",
]

METASTORE = "metastore"  # the one virtual metastore securable (type and name)

_UC_DATA = ("SELECT", "MODIFY", "EXECUTE")
_UC_CREATE_IN_SCHEMA = ("CREATE_TABLE", "CREATE_FUNCTION", "CREATE_MODEL")
APPLICABLE: dict[str, frozenset[str]] = {
    METASTORE: frozenset({"CREATE_CATALOG", "MANAGE"}),
    "catalog": frozenset(
        {
            "USE_CATALOG",
            "USE_SCHEMA",
            *_UC_DATA,
            "CREATE_SCHEMA",
            *_UC_CREATE_IN_SCHEMA,
            "MANAGE",
            "ALL_PRIVILEGES",
        }
    ),
    "schema": frozenset({"USE_SCHEMA", *_UC_DATA, *_UC_CREATE_IN_SCHEMA, "MANAGE", "ALL_PRIVILEGES"}),
    "table": frozenset({"SELECT", "MODIFY", "MANAGE", "ALL_PRIVILEGES"}),
    "function": frozenset({"EXECUTE", "MANAGE", "ALL_PRIVILEGES"}),
    "registered_model": frozenset({"EXECUTE", "MANAGE", "ALL_PRIVILEGES"}),
    "connection": frozenset({"USE_CONNECTION", "MANAGE", "ALL_PRIVILEGES"}),
}
# Object permission levels, lowest first: each level satisfies every level before it.
LEVELS: dict[str, tuple[str, ...]] = {
    "sql_warehouse": ("CAN_VIEW", "CAN_USE", "CAN_MANAGE"),
    "serving_endpoint": ("CAN_VIEW", "CAN_QUERY", "CAN_REVIEW", "CAN_MANAGE"),
    "vector_search_index": ("CAN_VIEW", "CAN_USE", "CAN_MANAGE"),
    "genie_space": ("CAN_VIEW", "CAN_RUN", "CAN_EDIT", "CAN_MANAGE"),
    "secret_scope": ("READ", "WRITE", "MANAGE"),
}
for _type, _ladder in LEVELS.items():
    APPLICABLE[_type] = frozenset(_ladder)
PRIVILEGES: frozenset[str] = frozenset().union(*APPLICABLE.values())

# privilege -> the held privileges that satisfy it, per securable type (built once).
_IMPLIED_BY: dict[tuple[str, str], frozenset[str]] = {}
for _type, _privileges in APPLICABLE.items():
    for _privilege in _privileges:
        if _type in LEVELS:
            ladder = LEVELS[_type]
            _IMPLIED_BY[(_type, _privilege)] = frozenset(ladder[ladder.index(_privilege) :])
        elif _privilege in ("MANAGE", "ALL_PRIVILEGES"):
            _IMPLIED_BY[(_type, _privilege)] = frozenset({_privilege})
        else:
            _IMPLIED_BY[(_type, _privilege)] = frozenset({_privilege, "ALL_PRIVILEGES"})


def manage_privilege(securable_type: str) -> str:
    """The privilege that lets a principal change grants and owner: MANAGE or CAN_MANAGE."""
    return LEVELS[securable_type][-1] if securable_type in LEVELS else "MANAGE"


def implied_by(securable_type: str, privilege: str) -> frozenset[str]:
    return _IMPLIED_BY[(securable_type, privilege)]


def normalize_privilege(securable_type: str, privilege: object, *, field: str = "privilege") -> str:
    """The privilege in upper case if it applies to the securable type, else 400 naming it."""
    if not isinstance(privilege, str) or not privilege.strip():
        raise InvalidParameterValue(f"'{field}' must be a non-empty string.")
    # The SQL spelling `ALL PRIVILEGES` and `USE CATALOG` are accepted too.
    value = privilege.strip().upper().replace(" ", "_")
    if value not in PRIVILEGES:
        raise InvalidParameterValue(
            f"'{field}': unknown privilege {privilege[:80]!r}; "
            f"expected one of {', '.join(sorted(PRIVILEGES))}."
        )
    if value not in APPLICABLE[securable_type]:
        raise InvalidParameterValue(
            f"'{field}': {value} does not apply to a {securable_type.replace('_', ' ')}; "
            f"it takes {', '.join(sorted(APPLICABLE[securable_type]))}."
        )
    return value


@functools.lru_cache(maxsize=65536)
def _normalized(securable_type: str, full_name: str, privilege: str) -> tuple[str, str, str]:
    """(type, name, privilege) checked and in canonical form; cached, as the request path asks the
    same few questions over and over (a 400 is raised, never cached)."""
    stype = normalize_type(securable_type)
    return stype, check_securable_name(stype, full_name), normalize_privilege(stype, privilege)


class Grant(Base):
    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("securable_id", "principal_id", "privilege", name="uq_grants_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    securable_id: Mapped[int] = mapped_column(ForeignKey("securables.id", ondelete="CASCADE"), index=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), index=True)
    privilege: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    granted_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


# The in-memory view ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecurableRef:
    """What a decision needs to know of a securable (a row of `securables`, detached)."""

    id: int
    securable_type: str
    full_name: str
    object_id: str
    owner_id: int
    parent_id: int | None


@dataclass
class AccessView:
    """Securables by name and object id, and grants by securable then principal."""

    by_name: dict[tuple[str, str], SecurableRef] = field(default_factory=dict)
    by_object_id: dict[tuple[str, str], SecurableRef] = field(default_factory=dict)
    by_id: dict[int, SecurableRef] = field(default_factory=dict)
    grants: dict[int, dict[int, frozenset[str]]] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> AccessView:
        view = cls()
        for row in session.execute(
            select(
                Securable.id,
                Securable.securable_type,
                Securable.full_name,
                Securable.object_id,
                Securable.owner_id,
                Securable.parent_id,
            )
        ):
            ref = SecurableRef(*row)
            view.by_id[ref.id] = ref
            view.by_name[(ref.securable_type, ref.full_name)] = ref
            view.by_object_id[(ref.securable_type, ref.object_id)] = ref
        collected: dict[int, dict[int, set[str]]] = {}
        for securable_id, principal_id, privilege in session.execute(
            select(Grant.securable_id, Grant.principal_id, Grant.privilege)
        ):
            collected.setdefault(securable_id, {}).setdefault(principal_id, set()).add(privilege)
        view.grants = {s: {p: frozenset(v) for p, v in by_p.items()} for s, by_p in collected.items()}
        return view

    def find(self, securable_type: str, full_name: str) -> SecurableRef | None:
        return self.by_name.get((securable_type, full_name))

    def chain(self, ref: SecurableRef) -> list[SecurableRef]:
        """The securable, then its schema, then its catalog (as far as it has parents)."""
        out = [ref]
        while out[-1].parent_id is not None and out[-1].parent_id in self.by_id:
            out.append(self.by_id[out[-1].parent_id])
        return out

    def granted(self, ref: SecurableRef, principal_ids: Iterable[int]) -> set[str]:
        on = self.grants.get(ref.id, {})
        out: set[str] = set()
        for pid in principal_ids:
            out |= on.get(pid, frozenset())
        return out

    # The three questions routes ask (Workspace delegates to these).
    def authorize(self, caller: Identity, securable_type: str, full_name: str, privilege: str) -> None:
        missing = self._missing_one(caller, securable_type, full_name, privilege)
        if missing:
            raise PermissionDenied(denial_message(caller, missing))

    def is_authorized(self, caller: Identity, securable_type: str, full_name: str, privilege: str) -> bool:
        return not self._missing_one(caller, securable_type, full_name, privilege)

    def missing_privileges(self, principal: Identity, checks: Sequence[tuple[str, str, str]]) -> list[str]:
        """Every missing privilege across all checks, deduplicated, in order. A securable that
        does not exist is reported as missing (`... (it does not exist)`), not raised."""
        out: list[str] = []
        for securable_type, full_name, privilege in checks:
            stype, full_name, priv = _normalized(securable_type, full_name, privilege)
            ref = self.find(stype, full_name)
            found = (
                [f"{priv} on {describe(stype, full_name)} (it does not exist)"]
                if ref is None
                else decide(self, principal, ref, priv)
            )
            out += [m for m in found if m not in out]
        return out

    def _missing_one(
        self, caller: Identity, securable_type: str, full_name: str, privilege: str
    ) -> list[str]:
        stype, full_name, priv = _normalized(securable_type, full_name, privilege)
        ref = self.find(stype, full_name)
        if ref is None:
            raise NotFound(f"{describe(stype, full_name).capitalize()} does not exist.")
        return decide(self, caller, ref, priv)


def _holds(view: AccessView, ids: frozenset[int], chain: Sequence[SecurableRef], privilege: str) -> bool:
    """Owner of `chain[0]`, or a grant satisfying `privilege` on it or on a parent (inheritance);
    `chain` is the securable followed by its parents."""
    if chain[0].owner_id in ids:
        return True
    for node in chain:
        satisfying = _IMPLIED_BY.get((node.securable_type, privilege))
        if satisfying and view.granted(node, ids) & satisfying:
            return True
    return False


def decide(
    view: AccessView | None, principal: Identity, ref: SecurableRef | None, privilege: str
) -> list[str]:
    """THE authorization function: the privileges `principal` lacks for `privilege` on `ref`,
    as `PRIV on type 'name'` strings (empty: allowed). `ref=None` means the metastore, which
    needs no view. The rule is in this module's docstring."""
    if ref is None:  # the metastore: admins hold all of it, nobody else anything
        return [] if principal.is_admin else [f"{privilege} on the metastore (a member of 'admins')"]
    assert view is not None
    stype = ref.securable_type
    if principal.is_admin and (privilege == "MANAGE" or stype in LEVELS):
        return []  # rule 1: admins manage everything, and hold every workspace object level
    ids = principal.group_ids | {principal.id}
    chain = view.chain(ref)
    if privilege == manage_privilege(stype) and any(node.owner_id in ids for node in chain):
        return []  # rule 2: the owner of the securable or of a parent manages it
    missing: list[str] = []
    if stype in UNITY_CATALOG_TYPES:  # rule 4, top-down so the message reads catalog first
        for depth in range(len(chain) - 1, -1, -1):
            node = chain[depth]
            use = _CONTAINERS.get(node.securable_type)
            if use is None or (depth == 0 and privilege == use):
                continue
            if not _holds(view, ids, chain[depth:], use):
                missing.append(f"{use} on {describe(node.securable_type, node.full_name)}")
    if not _holds(view, ids, chain, privilege):
        missing.append(f"{privilege} on {describe(stype, ref.full_name)}")
    return missing


_CONTAINERS = {"catalog": "USE_CATALOG", "schema": "USE_SCHEMA"}
_KIND = {"user": "User", "service_principal": "Service principal", "group": "Group"}


def denial_message(principal: Identity, missing: Sequence[str]) -> str:
    who = f"{_KIND.get(principal.kind, 'Principal')} '{principal.name}'"
    return f"{who} does not have {', '.join(missing)}."


# Changing grants --------------------------------------------------------------------------------


class _Named(Protocol):
    """A principal as grant/revoke need it: a `Principal` row, an `Identity`..."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...


def privileges_of(
    session: Session, securable: Securable, principal_id: int | None = None
) -> dict[int, set[str]]:
    """Direct grants on a securable: principal id -> privileges (from the database)."""
    query = select(Grant.principal_id, Grant.privilege).where(Grant.securable_id == securable.id)
    if principal_id is not None:
        query = query.where(Grant.principal_id == principal_id)
    out: dict[int, set[str]] = {}
    for pid, privilege in session.execute(query):
        out.setdefault(pid, set()).add(privilege)
    return out


def grant(
    session: Session,
    securable: Securable,
    principal: _Named,
    *,
    privileges: Iterable[str],
    actor: Any = None,
) -> list[str]:
    """Grant privileges (validated for the securable's type; 400 naming 'privileges');
    returns those newly granted. Audited as `updatePermissions` in the same transaction."""
    wanted = [normalize_privilege(securable.securable_type, p, field="privileges") for p in privileges]
    held = privileges_of(session, securable, principal.id).get(principal.id, set())
    added = sorted(set(wanted) - held)
    for privilege in added:
        session.add(
            Grant(
                securable_id=securable.id,
                principal_id=principal.id,
                privilege=privilege,
                created_at=utcnow(),
                granted_by_id=getattr(actor, "id", None),
            )
        )
    if added:
        session.flush()
        audit.record(
            session,
            actor=actor or "system",
            action="updatePermissions",
            securable_type=securable.securable_type,
            securable_name=securable.full_name,
            params={"principal": principal.name, "add": added},
        )
    return added


def revoke(
    session: Session,
    securable: Securable,
    principal: _Named,
    *,
    privileges: Iterable[str],
    actor: Any = None,
) -> list[str]:
    """Revoke privileges (unknown ones are a 400; ones not held are ignored); returns those
    removed. Audited as `updatePermissions` in the same transaction."""
    wanted = {normalize_privilege(securable.securable_type, p, field="privileges") for p in privileges}
    rows = list(
        session.scalars(
            select(Grant).where(
                Grant.securable_id == securable.id,
                Grant.principal_id == principal.id,
                Grant.privilege.in_(wanted),
            )
        )
    )
    removed = sorted(r.privilege for r in rows)
    for row in rows:
        session.delete(row)
    if removed:
        session.flush()
        audit.record(
            session,
            actor=actor or "system",
            action="updatePermissions",
            securable_type=securable.securable_type,
            securable_name=securable.full_name,
            params={"principal": principal.name, "remove": removed},
        )
    return removed
