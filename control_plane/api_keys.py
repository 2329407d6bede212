"""API keys: named, long-lived credentials of a user's, limited by scopes (control_plane.api_key_scopes).

A key is `bgk_` + 43 random URL-safe characters, recognisable in a config file or a secret scanner. It is shown to
its owner once, when made; only its SHA-256 is stored (as a session token's is), with its first characters to tell
keys apart in a list. Revoking a key, or deleting its owner, ends it at once (the shared token cache is told).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from control_plane.api_key_scopes import SCOPES, invalid_scopes
from control_plane.models import ApiKey, User, utcnow
from control_plane.token_cache import TokenCache

KEY_PREFIX = "bgk_"
SHOWN_PREFIX_CHARS = len(KEY_PREFIX) + 6  # enough to tell a user's keys apart, far too few to guess the rest
MAX_NAME_CHARS = 100
# The last-used time is a hint, not an audit log: written at most this often per key.
LAST_USED_EVERY = timedelta(minutes=1)


class ApiKeyRefused(Exception):
    """Bad input for a new key; `field` names it."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.message = message
        self.field = field


class ApiKeyNotFound(Exception):
    def __init__(self, key_id: str):
        super().__init__(f"API key {key_id!r} not found")


@dataclass(frozen=True)
class KeyHolder:
    """Who a valid key acts as, and within which scopes."""

    key_id: str
    username: str
    role: str
    scopes: frozenset[str]


def is_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def scopes_of(row: ApiKey) -> list[str]:
    return [scope for scope in row.scopes.split(",") if scope]


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ApiKeyRefused("'name' must not be empty", "name")
    if len(name) > MAX_NAME_CHARS:
        raise ApiKeyRefused(f"'name' must be at most {MAX_NAME_CHARS} characters (got {len(name)})", "name")
    if not name.isprintable():
        raise ApiKeyRefused("'name' must not hold control characters", "name")
    return name


def _checked_scopes(scopes: list[str]) -> list[str]:
    if not scopes:
        raise ApiKeyRefused(f"'scopes' must name at least one of {', '.join(SCOPES)}", "scopes")
    unknown = invalid_scopes(scopes)
    if unknown:
        raise ApiKeyRefused(f"unknown scope {unknown[0][:40]!r} in 'scopes'; allowed: {', '.join(SCOPES)}", "scopes")
    return [scope for scope in SCOPES if scope in scopes]


class ApiKeyStore:
    def __init__(self, engine: Engine, cache: TokenCache):
        self.engine = engine
        self._cache = cache  # the account store's: a revoked key must not outlive its cached check

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def create(self, owner: str, name: str, scopes: list[str]) -> tuple[str, ApiKey]:
        """Returns (the key, its record): the key itself is never readable again."""
        row_name, row_scopes = _checked_name(name), _checked_scopes(scopes)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(id=uuid.uuid4().hex, key_hash=key_hash(key), owner=owner, name=row_name,
                     scopes=",".join(row_scopes), prefix=key[:SHOWN_PREFIX_CHARS])
        with self._session() as session:
            session.add(row)
            session.commit()
        return key, row

    def list(self, owner: str) -> list[ApiKey]:
        with self._session() as session:
            query = select(ApiKey).where(col(ApiKey.owner) == owner).order_by(col(ApiKey.created_at).desc())
            return list(session.exec(query).all())

    def delete(self, owner: str, key_id: str) -> None:
        """Another user's key is as not found as a missing one."""
        with self._session() as session:
            row = session.get(ApiKey, key_id)
            if row is None or row.owner != owner:
                raise ApiKeyNotFound(key_id)
            session.delete(row)
            session.commit()
        self._cache.forget(row.key_hash)

    def holder(self, hashed: str) -> KeyHolder | None:
        """The owner a key (by its hash) acts as, or None; marks the key used (at most once a minute)."""
        now = utcnow()
        with self._session() as session:
            row = session.exec(select(ApiKey).where(col(ApiKey.key_hash) == hashed)).first()
            user = session.get(User, row.owner) if row is not None else None
            if row is None or user is None:
                return None
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
                # Conditional, so checks racing on other threads write it once.
                session.execute(
                    update(ApiKey)
                    .where(col(ApiKey.id) == row.id)
                    .where(or_(col(ApiKey.last_used_at).is_(None), col(ApiKey.last_used_at) <= now - LAST_USED_EVERY))
                    .values(last_used_at=now)
                )
                session.commit()
        return KeyHolder(row.id, user.username, user.role, frozenset(scopes_of(row)))


def delete_api_keys_of(session: Session, owner: str) -> None:
    """Within the caller's transaction (a deleted user): every key of `owner` goes."""
    session.execute(delete(ApiKey).where(col(ApiKey.owner) == owner))
