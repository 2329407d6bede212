"""Users, passwords (argon2) and bearer tokens (random, stored as SHA-256, with an expiry). Failed logins are
limited by `control_plane.login_throttle`; API keys (`control_plane.api_keys`) are checked here too."""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from control_plane.api_keys import ApiKeyStore, delete_api_keys_of, is_api_key
from control_plane.login_throttle import LoginThrottle, TooManyAttempts
from control_plane.models import AuthToken, Task, User, utcnow
from control_plane.template_store import delete_templates_of
from control_plane.token_cache import TokenCache
from control_plane.webhook_store import delete_webhooks_of

__all__ = [
    "AccountError", "AccountStore", "BadCredentials", "Principal", "TooManyAttempts", "hash_token", "tombstone",
    "valid_username",
]

ROLES = ("admin", "user")
_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown user as slow as one with a wrong password.
_DUMMY_HASH = _hasher.hash("not a password")


class AccountError(Exception):
    pass


class BadCredentials(AccountError):
    def __init__(self) -> None:
        super().__init__("wrong username or password")


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    # An API key's caller: the key's scopes (control_plane.api_key_scopes) and id; None for a password session.
    scopes: frozenset[str] | None = None
    api_key_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def valid_username(username: str) -> bool:
    return bool(username) and username.replace("-", "").replace("_", "").replace(".", "").isalnum()


def tombstone(username: str) -> str:
    """The owner a deleted user's tasks pass to: ':' is in no username, and the random part makes each deletion's
    tombstone its own."""
    return f"deleted:{username}:{secrets.token_hex(4)}"


class AccountStore:
    def __init__(self, engine: Engine, token_ttl: timedelta, throttle: LoginThrottle | None = None):
        self.engine = engine
        self.token_ttl = token_ttl
        self.throttle = throttle or LoginThrottle(engine)
        self._recent_tokens: TokenCache[Principal] = TokenCache()
        self.api_keys = ApiKeyStore(engine, self._recent_tokens)

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def create_user(self, username: str, password: str, role: str = "user") -> User:
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        if not valid_username(username):
            raise AccountError("username must be letters, digits, '-', '_' or '.'")
        if len(password) < 8:
            raise AccountError("password must be at least 8 characters")
        with self._session() as session:
            if session.get(User, username) is not None:
                raise AccountError(f"user {username!r} already exists")
            user = User(username=username, password_hash=_hasher.hash(password), role=role)
            session.add(user)
            session.commit()
        return user

    def users(self) -> list[User]:
        with self._session() as session:
            return list(session.exec(select(User).order_by(col(User.username))).all())

    def has_users(self) -> bool:
        with self._session() as session:
            return session.exec(select(User).limit(1)).first() is not None

    def delete_user(self, username: str) -> bool:
        """In one transaction: the user, their tokens, API keys, webhooks, saved templates and login counters go, and
        their tasks pass to a tombstone owner (admins still see them; a new user of the same name does not inherit
        them)."""
        with self._session() as session:
            user = session.get(User, username)
            if user is None:
                return False
            session.execute(delete(AuthToken).where(col(AuthToken.username) == username))
            delete_api_keys_of(session, username)
            delete_webhooks_of(session, username)
            delete_templates_of(session, username)
            session.execute(update(Task).where(col(Task.owner) == username).values(owner=tombstone(username)))
            self.throttle.forget_user(session, username)
            session.delete(user)
            session.commit()
        self._recent_tokens.forget_user(username)
        return True

    def login(self, username: str, password: str, client_address: str = "") -> tuple[str, datetime, User]:
        """Returns (token, expires_at, user); raises BadCredentials, or TooManyAttempts before looking at the password.
        `client_address` is who is calling (login_throttle.client_address); "" for a caller inside the process."""
        reservation = self.throttle.reserve(username, client_address or "local")
        with self._session() as session:  # no name that could never be a user's reaches the database
            user = session.get(User, username) if valid_username(username) else None
        try:
            _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
        except VerificationError:
            user = None
        if user is None:
            raise BadCredentials()  # the reservation stands as the failure
        self.throttle.succeeded(reservation)
        token = secrets.token_urlsafe(32)
        expires_at = utcnow() + self.token_ttl
        with self._session() as session:
            session.add(AuthToken(token_hash=hash_token(token), username=username, expires_at=expires_at))
            session.commit()
        return token, expires_at, user

    def authenticate(self, token: str) -> Principal | None:
        if not token:
            return None
        token_hash = hash_token(token)
        principal = self._recent_tokens.get(token_hash)
        if principal is not None:
            return principal
        generation = self._recent_tokens.generation()
        if is_api_key(token):
            holder = self.api_keys.holder(token_hash)
            if holder is not None:
                principal = Principal(holder.username, holder.role, holder.scopes, holder.key_id)
                self._recent_tokens.put(token_hash, principal, holder.username, math.inf, generation)
                return principal
        with self._session() as session:
            row = session.get(AuthToken, token_hash)
            now = utcnow()
            if row is None or row.expires_at <= now:
                return None
            user = session.get(User, row.username)
        if user is None:
            return None
        principal = Principal(user.username, user.role)
        self._recent_tokens.put(token_hash, principal, user.username, (row.expires_at - now).total_seconds(),
                                generation)
        return principal

    def logout(self, token: str) -> None:
        token_hash = hash_token(token)
        with self._session() as session:
            session.execute(delete(AuthToken).where(col(AuthToken.token_hash) == token_hash))
            session.commit()
        self._recent_tokens.forget(token_hash)
