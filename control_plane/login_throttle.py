"""Limits on failed logins, kept in the store so that they hold across concurrent calls and restarts.

Three counters ("keys") watch every login: the (username, client address) pair, the client address across
usernames (one password sprayed over many accounts), and the username across addresses (a higher threshold: a
botnet guessing one account). A key that has reached its limit backs off: its next attempt is allowed only after a
delay that doubles with each further failure (base, 2*base, 4*base, ... up to a cap). A key quiet for a whole window
starts again from zero. There is no lock-out: the owner of an account, logging in from their own address, is only
ever slowed down by the per-username key, and only once attackers from many addresses have tried it.

An attempt is *reserved* before its password is verified: one transaction locks the three rows, refuses when any
key is backing off, and otherwise counts the attempt as a failure on all three. So N concurrent wrong logins verify
at most `limit` passwords. A success gives the reservation back: it clears the (username, address) key and returns
the one failure it had counted on the other two (never the other failures they hold, or an attacker with an
account of their own could reset an address's count by logging into it).

Times are seconds since the epoch (wall clock: the rows outlive the process).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from control_plane.models import LoginThrottle as Row
from protos.auth import CLIENT_ADDRESS_KEY

USER_ADDRESS, ADDRESS, USER = "user_address", "address", "user"
# Longer usernames are not valid ones; they are counted under their first characters.
_MAX_KEY_PART = 128
_PURGE_EVERY_SECONDS = 60.0
_table = Row.__table__
_PK = (_table.c.scope, _table.c.username, _table.c.address)


class TooManyAttempts(Exception):
    """A login refused, before its password was looked at, because a key is backing off."""

    def __init__(self, retry_after: float):
        self.retry_after = max(1, math.ceil(retry_after))  # whole seconds, as a Retry-After header wants
        super().__init__(f"too many failed login attempts; try again in {self.retry_after} s")


@dataclass(frozen=True)
class ThrottlePolicy:
    per_user_address: int = 5
    per_address: int = 20
    per_user: int = 30
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    quiet_window_seconds: float = 900.0

    @classmethod
    def from_settings(cls, settings: Any) -> "ThrottlePolicy":
        return cls(
            per_user_address=settings.login_limit_per_user_address,
            per_address=settings.login_limit_per_address,
            per_user=settings.login_limit_per_user,
            backoff_base_seconds=settings.login_backoff_base_seconds,
            backoff_max_seconds=settings.login_backoff_max_seconds,
            quiet_window_seconds=settings.login_quiet_window_seconds,
        )

    def limit(self, scope: str) -> int:
        return {USER_ADDRESS: self.per_user_address, ADDRESS: self.per_address, USER: self.per_user}[scope]

    def delay(self, failures: int, limit: int) -> float:
        """The wait after the `failures`-th failure: none below the limit, then base, 2*base, 4*base ... capped."""
        if failures < limit:
            return 0.0
        return min(self.backoff_max_seconds, self.backoff_base_seconds * 2.0 ** min(failures - limit, 64))


@dataclass(frozen=True)
class _Held:
    """One key's row as a reservation found it (decay applied) and as it left it."""

    key: tuple[str, str, str]
    before: tuple[int, float, float]  # failures, last_at, next_allowed_at
    version: int  # the version the reservation wrote


@dataclass(frozen=True)
class Reservation:
    username: str
    address: str
    held: tuple[_Held, ...]


class LoginThrottle:
    def __init__(self, engine: Engine, policy: ThrottlePolicy | None = None, clock: Callable[[], float] = time.time):
        self.engine = engine
        self.policy = policy or ThrottlePolicy()
        self._clock = clock
        self._insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert
        self._last_purge = 0.0
        self._purge_lock = threading.Lock()

    def keys(self, username: str, address: str) -> list[tuple[str, str, str]]:
        username, address = _key_part(username), _key_part(address)
        # Sorted: every transaction locks rows in the same order, so two of them never wait on each other.
        return sorted([(USER_ADDRESS, username, address), (ADDRESS, "", address), (USER, username, "")])

    def reserve(self, username: str, address: str) -> Reservation:
        """Counts one attempt against every key, or raises TooManyAttempts (counting nothing) if one is backing off."""
        now = self._clock()
        self._purge_now_and_then(now)
        held: list[_Held] = []
        waits: list[float] = []
        with self.engine.begin() as conn:
            for key in self.keys(username, address):
                failures, last_at, next_allowed_at, version = self._lock(conn, key, now)
                if now - last_at >= self.policy.quiet_window_seconds:
                    failures, next_allowed_at = 0, 0.0
                if next_allowed_at > now:
                    waits.append(next_allowed_at - now)
                held.append(_Held(key, (failures, last_at, next_allowed_at), version + 1))
            if waits:  # leaving the block by an exception rolls back: nothing counted
                raise TooManyAttempts(max(waits))
            for h in held:
                failures = h.before[0] + 1
                delay = self.policy.delay(failures, self.policy.limit(h.key[0]))
                conn.execute(
                    update(_table).where(*_key_clause(h.key)).values(
                        failures=failures, last_at=now, next_allowed_at=now + delay if delay else 0.0, version=h.version
                    )
                )
        return Reservation(username, address, tuple(held))

    def succeeded(self, reservation: Reservation) -> None:
        """The reserved attempt had the right password: clear its (username, address) key, give back its failure."""
        with self.engine.begin() as conn:
            for h in reservation.held:
                if h.key[0] == USER_ADDRESS:
                    conn.execute(delete(_table).where(*_key_clause(h.key)))
                    continue
                failures, last_at, next_allowed_at = h.before
                # Compare-and-set: untouched since the reservation, the row goes back exactly as it was ...
                restored = conn.execute(
                    update(_table).where(*_key_clause(h.key), _table.c.version == h.version).values(
                        failures=failures, last_at=last_at, next_allowed_at=next_allowed_at, version=h.version + 1
                    )
                ).rowcount
                if not restored:  # ... else others have counted since: only this attempt's failure comes off.
                    conn.execute(
                        update(_table).where(*_key_clause(h.key), _table.c.failures > 0)
                        .values(failures=_table.c.failures - 1, version=_table.c.version + 1)
                    )

    def forget_user(self, session: Session, username: str) -> None:
        """Within the caller's transaction (a deleted user): the counters of that username go."""
        mine = (_table.c.scope.in_((USER_ADDRESS, USER)), _table.c.username == _key_part(username))
        # Locked first in key order, as a reservation locks them, so that neither can wait on the other.
        session.execute(select(*_PK).where(*mine).order_by(*_PK).with_for_update()).all()
        session.execute(delete(_table).where(*mine))

    def state(self, scope: str, username: str = "", address: str = "") -> tuple[int, float] | None:
        """(failures, next_allowed_at) of one key as stored, or None: for tests and operators."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_table.c.failures, _table.c.next_allowed_at).where(*_key_clause((scope, username, address)))
            ).first()
        return (row[0], row[1]) if row else None

    def _lock(self, conn: Connection, key: tuple[str, str, str], now: float) -> tuple[int, float, float, int]:
        """The key's row, created if missing, locked until the transaction ends (an upsert takes the row lock on
        PostgreSQL and the database's write lock on SQLite)."""
        scope, username, address = key
        statement = (
            self._insert(_table)
            .values(
                scope=scope, username=username, address=address, failures=0, last_at=now, next_allowed_at=0.0, version=0
            )
            .on_conflict_do_update(index_elements=list(_PK), set_={"version": _table.c.version})
            .returning(_table.c.failures, _table.c.last_at, _table.c.next_allowed_at, _table.c.version)
        )
        failures, last_at, next_allowed_at, version = conn.execute(statement).one()
        return failures, last_at, next_allowed_at, version

    def _purge_now_and_then(self, now: float) -> None:
        """Rows quiet for a whole window count nothing any more: drop them, at most once a minute."""
        with self._purge_lock:
            if now - self._last_purge < _PURGE_EVERY_SECONDS:
                return
            self._last_purge = now
        cutoff = now - self.policy.quiet_window_seconds
        with self.engine.begin() as conn:
            conn.execute(delete(_table).where(_table.c.last_at < cutoff, _table.c.next_allowed_at < now))


def _key_part(text: str) -> str:
    # PostgreSQL text holds no NUL; a name holding one is no user's, and counting it as "\\0" keeps it counted.
    return text[:_MAX_KEY_PART].replace("\x00", "\\0")


def _key_clause(key: tuple[str, str, str]) -> tuple:
    return tuple(column == value for column, value in zip(_PK, key))


# --- who the client is ----------------------------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    """The peers (addresses or networks) whose `bugagaric-client-address` metadata is believed."""

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()):
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> "TrustedProxies":
        """Comma-separated addresses or CIDRs ("127.0.0.1,::1,10.0.0.0/8"); empty trusts nobody."""
        networks = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"BUGAGARIC_TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
        return cls(networks)

    def __contains__(self, address: IPAddress) -> bool:
        return any(address.version == network.version and address in network for network in self.networks)


def parse_ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_ip(peer: str) -> IPAddress | None:
    """The IP of a gRPC peer ("ipv4:127.0.0.1:5555", "ipv6:%5B::1%5D:5555" or "ipv6:[::1]:5555"); None for unix
    sockets and the like."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    rest = urllib.parse.unquote(rest)
    if rest.startswith("["):
        host = rest[1:rest.find("]")]
    elif kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    else:
        host = rest
    return parse_ip(host)


def address_key(address: IPAddress) -> str:
    """What an address is counted under. An IPv6 host usually holds a whole /64, so that is the unit."""
    if isinstance(address, ipaddress.IPv6Address) and not address.is_loopback:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_address(peer: str, metadata: Iterable[tuple[str, Any]] | None, trusted: TrustedProxies) -> str:
    """The client a call counts under: the address a trusted proxy forwarded, else the peer's own address."""
    ip = peer_ip(peer)
    if ip is not None and ip in trusted:
        for key, value in metadata or ():
            if key == CLIENT_ADDRESS_KEY and isinstance(value, str):
                forwarded = parse_ip(value)
                if forwarded is not None:
                    return address_key(forwarded)
                break
    return address_key(ip) if ip is not None else (peer or "unknown")
