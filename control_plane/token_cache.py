"""Recently checked tokens, so that an authenticated call does not read two tables before doing its work.

An entry lives at most `seconds` (and never past the token's own expiry); the writes that end a token or change
who it belongs to (logout, deleting a user) drop the entries they affect at once, in this process — the control
plane is the only writer of users and tokens. Only tokens that passed are kept: random tokens cannot fill it.
A lookup that was under way while a token was dropped does not put it back (`generation`)."""

from __future__ import annotations

import threading
import time
from typing import Callable, Generic, Hashable, TypeVar

P = TypeVar("P")

DEFAULT_SECONDS = 2.0
MAX_ENTRIES = 10_000


class TokenCache(Generic[P]):
    def __init__(self, seconds: float = DEFAULT_SECONDS, clock: Callable[[], float] = time.monotonic):
        self._seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()  # token checks, logouts and user deletions run on different thread pools
        self._entries: dict[Hashable, tuple[P, str, float]] = {}  # key -> (principal, username, valid until)
        self._generation = 0  # counts drops

    def generation(self) -> int:
        """Read before looking a token up in the store; hand it to `put`."""
        with self._lock:
            return self._generation

    def get(self, key: Hashable) -> P | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[2] <= self._clock():
                del self._entries[key]
                return None
            return found[0]

    def put(self, key: Hashable, principal: P, username: str, seconds_left: float, generation: int) -> None:
        """`seconds_left`: until the token itself expires. Nothing is kept when a token was dropped since
        `generation` was read: the lookup may have seen a row that is gone now."""
        lifetime = min(self._seconds, seconds_left)
        if lifetime <= 0:
            return
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()  # rare (that many live sessions within seconds); they are re-read
            self._entries[key] = (principal, username, self._clock() + lifetime)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._generation += 1
            self._entries.pop(key, None)

    def forget_user(self, username: str) -> None:
        with self._lock:
            self._generation += 1
            for key in [k for k, (_, owner, _) in self._entries.items() if owner == username]:
                del self._entries[key]
