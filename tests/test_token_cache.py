"""Recently checked tokens (control_plane.token_cache) in the account store: a repeated check reads nothing, and
logout, deleting the user and the token's own expiry end it at once all the same."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event

from control_plane.accounts import AccountStore
from control_plane.token_cache import TokenCache


class StatementCount:
    def __init__(self, engine):
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args) -> None:
        self.count += 1


def test_a_repeated_check_reads_nothing_and_logout_ends_it_at_once(engine):
    accounts = AccountStore(engine, timedelta(hours=1))
    accounts.create_user("cara", "cara-password")
    token, _, _ = accounts.login("cara", "cara-password")
    statements = StatementCount(engine)
    assert accounts.authenticate(token).username == "cara"
    read = statements.count
    assert read > 0
    assert accounts.authenticate(token).username == "cara"
    assert statements.count == read  # served from the cache
    accounts.logout(token)
    assert accounts.authenticate(token) is None


def test_deleting_the_user_ends_their_cached_tokens_and_no_others(engine):
    accounts = AccountStore(engine, timedelta(hours=1))
    accounts.create_user("dana", "dana-password")
    accounts.create_user("eli", "eli-password")
    danas, _, _ = accounts.login("dana", "dana-password")
    elis, _, _ = accounts.login("eli", "eli-password")
    assert accounts.authenticate(danas) and accounts.authenticate(elis)
    assert accounts.delete_user("dana")
    assert accounts.authenticate(danas) is None
    assert accounts.authenticate(elis).username == "eli"


def test_a_failed_check_is_not_kept():
    cache: TokenCache[str] = TokenCache(seconds=60)
    assert cache.get("nobody") is None
    cache.put("t", "principal", "fay", seconds_left=60, generation=cache.generation())
    assert cache.get("t") == "principal"


def test_an_entry_never_outlives_its_token_or_the_cache_lifetime():
    now = [100.0]
    cache: TokenCache[str] = TokenCache(seconds=2, clock=lambda: now[0])
    cache.put("short", "p", "gus", seconds_left=0.5, generation=cache.generation())
    cache.put("long", "p", "gus", seconds_left=3600, generation=cache.generation())
    cache.put("expired", "p", "gus", seconds_left=-1, generation=cache.generation())
    assert cache.get("short") == "p" and cache.get("long") == "p" and cache.get("expired") is None
    now[0] += 0.6
    assert cache.get("short") is None and cache.get("long") == "p"
    now[0] += 1.5
    assert cache.get("long") is None


def test_a_lookup_under_way_while_its_token_is_dropped_does_not_put_it_back():
    cache: TokenCache[str] = TokenCache(seconds=60)
    seen = cache.generation()  # a lookup starts and reads the row ...
    cache.forget("t")  # ... a logout deletes it meanwhile ...
    cache.put("t", "principal", "hal", seconds_left=60, generation=seen)  # ... and the lookup ends
    assert cache.get("t") is None
