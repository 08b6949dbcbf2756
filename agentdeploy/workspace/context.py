"""The server's workspace: database, keys, token issuer and the in-memory identity index.

Writes go through `Workspace.change()`: one transaction, and once it commits, every in-memory
view (identities and tokens here; grants in `grants.py`) is rebuilt before the next request is
authorized. Reads on the request path use those views and never touch the database.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentdeploy.errors import Unauthenticated
from agentdeploy.settings import Settings
from agentdeploy.workspace import keys
from agentdeploy.workspace.db import Database, restrict_sqlite_file, upgrade_database, utcnow
from agentdeploy.workspace.grants import AccessView
from agentdeploy.workspace.identity import GroupMember, Identity, Principal
from agentdeploy.workspace.oauth import TokenIssuer
from agentdeploy.workspace.tokens import AccessToken, keyed_hash

__all__ = ["Workspace", "IdentityIndex"]


@dataclass(frozen=True, slots=True)
class _TokenEntry:
    principal_id: int
    expires_at: datetime | None


class IdentityIndex:
    """Principals by id and application id, PATs by keyed hash: rebuilt after every change."""

    def __init__(self) -> None:
        self.by_id: dict[int, Identity] = {}
        self.by_application_id: dict[str, Identity] = {}
        self.by_name: dict[tuple[str, str], Identity] = {}
        self.tokens: dict[str, _TokenEntry] = {}

    @classmethod
    def load(cls, session: Session) -> IdentityIndex:
        index = cls()
        principals = list(session.scalars(select(Principal)))
        names = {p.id: p.name for p in principals}
        direct: dict[int, set[int]] = {}
        for row in session.scalars(select(GroupMember)):
            direct.setdefault(row.member_id, set()).add(row.group_id)
        everyone = next((p.id for p in principals if p.kind == "group" and p.builtin and p.name == "account users"), None)
        for p in principals:
            groups: set[int] = set()
            frontier = set(direct.get(p.id, ()))
            while frontier:  # nested groups
                groups |= frontier
                frontier = {g for f in frontier for g in direct.get(f, ()) if g not in groups}
            if p.kind == "user" and everyone is not None:
                groups.add(everyone)
            identity = Identity(
                id=p.id,
                kind=p.kind,
                name=p.name,
                display_name=p.display_name,
                application_id=p.application_id,
                active=p.active,
                group_ids=frozenset(groups),
                group_names=frozenset(names[g] for g in groups if g in names),
            )
            index.by_id[p.id] = identity
            index.by_name[(p.kind, p.name)] = identity
            if p.application_id:
                index.by_application_id[p.application_id] = identity
        for t in session.scalars(select(AccessToken)):
            index.tokens[t.token_hash] = _TokenEntry(t.principal_id, t.expires_at)
        return index


class Workspace:
    """What every route needs: settings, database, keys and the in-memory views."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.home_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        upgrade_database(settings.sqlalchemy_url)
        self.db = Database(settings.sqlalchemy_url)
        with self.db.session():  # opens the WAL files so they can be restricted too
            pass
        restrict_sqlite_file(settings.sqlalchemy_url)
        self.hash_key = keys.token_hash_key(settings.keys_dir)
        self.issuer = TokenIssuer(
            keys.signing_key(settings.keys_dir),
            issuer=f"{settings.server_url}/oidc",
            lifetime_s=settings.access_token_lifetime_s,
        )
        self._write_lock = threading.RLock()
        self._listeners: list[Callable[[Session], None]] = []
        self.generation = 0
        self.identities = IdentityIndex()
        self.refresh()
        self.access = AccessView()  # securables and grants (grants.py), rebuilt like identities
        self.on_change(self._rebuild_access)

    # Views ------------------------------------------------------------------------------------
    def on_change(self, rebuild: Callable[[Session], None]) -> None:
        """Register a view to rebuild (from a fresh session) after every committed change."""
        self._listeners.append(rebuild)
        with self.db.session() as session:
            rebuild(session)

    def refresh(self) -> None:
        with self.db.session() as session:
            self.identities = IdentityIndex.load(session)
            for rebuild in self._listeners:
                rebuild(session)
        self.generation += 1

    @contextlib.contextmanager
    def change(self) -> Iterator[Session]:
        """One write transaction; the in-memory views are rebuilt once it has committed."""
        with self._write_lock:
            with self.db.session() as session:
                yield session
            self.refresh()

    def read(self) -> contextlib.AbstractContextManager[Session]:
        return self.db.session()

    # Authorization: every check goes through grants.decide on the in-memory AccessView -------
    def _rebuild_access(self, session: Session) -> None:
        self.access = AccessView.load(session)

    def authorize(self, caller: Identity, securable_type: str, full_name: str, privilege: str) -> None:
        """Raise PermissionDenied naming every missing privilege (404 if the securable is unknown)."""
        self.access.authorize(caller, securable_type, full_name, privilege)

    def is_authorized(self, caller: Identity, securable_type: str, full_name: str, privilege: str) -> bool:
        return self.access.is_authorized(caller, securable_type, full_name, privilege)

    def missing_privileges(self, principal: Identity, checks: Sequence[tuple[str, str, str]]) -> list[str]:
        """All privileges `principal` lacks for [(securable_type, full_name, privilege), ...] at once."""
        return self.access.missing_privileges(principal, checks)

    # Authentication ---------------------------------------------------------------------------
    def identify(self, token: str) -> Identity:
        """The active principal a PAT or access token belongs to, or Unauthenticated."""
        if token.count(".") == 2:
            claims = self.issuer.verify_access_token(token)
            identity = self.identities.by_application_id.get(str(claims.get("sub")))
        else:
            entry = self.identities.tokens.get(keyed_hash(self.hash_key, token))
            if entry is None:
                raise Unauthenticated("Invalid access token.")
            if entry.expires_at is not None and entry.expires_at <= utcnow():
                raise Unauthenticated("The access token has expired; create a new one.")
            identity = self.identities.by_id.get(entry.principal_id)
        if identity is None:
            raise Unauthenticated("The principal this token belongs to no longer exists.")
        if not identity.active:
            raise Unauthenticated(f"The principal {identity.name!r} is disabled.")
        return identity

    def close(self) -> None:
        self.db.dispose()
