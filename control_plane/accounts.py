"""Users, passwords (argon2) and bearer tokens (random, stored as SHA-256, with an expiry), and the per-user limit on
login attempts."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from control_plane.models import AuthToken, User, utcnow

ROLES = ("admin", "user")
_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown user as slow as one with a wrong password.
_DUMMY_HASH = _hasher.hash("not a password")


class AccountError(Exception):
    pass


class BadCredentials(AccountError):
    def __init__(self) -> None:
        super().__init__("wrong username or password")


class TooManyAttempts(AccountError):
    def __init__(self, username: str, retry_after: float):
        super().__init__(f"too many login attempts for {username!r}; try again in {retry_after:.0f} s")


@dataclass(frozen=True)
class Principal:
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginRateLimiter:
    """At most `attempts` failed logins per user per `window_seconds`; a success clears the user's count."""

    def __init__(self, attempts: int = 5, window_seconds: float = 60.0):
        self.attempts = attempts
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def check(self, username: str) -> None:
        failures = self._failures[username]
        now = time.monotonic()
        while failures and now - failures[0] > self.window:
            failures.popleft()
        if len(failures) >= self.attempts:
            raise TooManyAttempts(username, self.window - (now - failures[0]))

    def failed(self, username: str) -> None:
        self._failures[username].append(time.monotonic())

    def succeeded(self, username: str) -> None:
        self._failures.pop(username, None)


class AccountStore:
    def __init__(self, engine: Engine, token_ttl: timedelta, limiter: LoginRateLimiter | None = None):
        self.engine = engine
        self.token_ttl = token_ttl
        self.limiter = limiter or LoginRateLimiter()

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def create_user(self, username: str, password: str, role: str = "user") -> User:
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        if not username or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
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
        with self._session() as session:
            user = session.get(User, username)
            if user is None:
                return False
            session.execute(delete(AuthToken).where(col(AuthToken.username) == username))
            session.delete(user)
            session.commit()
        return True

    def login(self, username: str, password: str) -> tuple[str, datetime, User]:
        """Returns (token, expires_at, user); raises BadCredentials or TooManyAttempts."""
        self.limiter.check(username)
        with self._session() as session:
            user = session.get(User, username)
            try:
                _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
            except VerificationError:
                user = None
            if user is None:
                self.limiter.failed(username)
                raise BadCredentials()
            self.limiter.succeeded(username)
            token = secrets.token_urlsafe(32)
            expires_at = utcnow() + self.token_ttl
            session.add(AuthToken(token_hash=hash_token(token), username=username, expires_at=expires_at))
            session.commit()
        return token, expires_at, user

    def authenticate(self, token: str) -> Principal | None:
        if not token:
            return None
        with self._session() as session:
            row = session.get(AuthToken, hash_token(token))
            if row is None or row.expires_at <= utcnow():
                return None
            user = session.get(User, row.username)
        return Principal(user.username, user.role) if user else None

    def logout(self, token: str) -> None:
        with self._session() as session:
            session.execute(delete(AuthToken).where(col(AuthToken.token_hash) == hash_token(token)))
            session.commit()
