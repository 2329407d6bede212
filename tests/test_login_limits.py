"""Limits on failed logins: kept in the store (SQLite and PostgreSQL), atomic under concurrent attempts, keyed so that
an attacker elsewhere backs only themselves off; the client address a trusted gateway forwards; and token checks that
a flood of logins cannot starve. Store tests run on both databases; the rest against a real in-process control plane
spoken to over gRPC on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest

from control_plane.accounts import AccountStore, BadCredentials, TooManyAttempts
from control_plane.auth_service import TokenCheck
from control_plane.db import make_engine
from control_plane.login_throttle import LoginThrottle, ThrottlePolicy, TrustedProxies, client_address
from control_plane.server import start_control_plane
from control_plane.settings import ControlPlaneSettings
from protos import control_plane_pb2 as cp
from protos import control_plane_pb2_grpc
from protos.auth import CLIENT_ADDRESS_KEY, bearer_metadata

PASSWORD = "right-password"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def accounts_on(engine, clock=time.time, **policy) -> AccountStore:
    return AccountStore(engine, timedelta(hours=1), LoginThrottle(engine, ThrottlePolicy(**policy), clock=clock))


def attempt(accounts: AccountStore, username: str, password: str, address: str) -> str:
    """'ok', 'wrong' (the password was verified and wrong) or 'refused' (not verified)."""
    try:
        accounts.login(username, password, client_address=address)
    except BadCredentials:
        return "wrong"
    except TooManyAttempts:
        return "refused"
    return "ok"


def at_once(count: int, job) -> list:
    """`job(i)` on `count` threads released together."""
    barrier = threading.Barrier(count)

    def run(i):
        barrier.wait()
        return job(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


# --- the store ----------------------------------------------------------------------------------------------------


def test_concurrent_wrong_logins_verify_at_most_the_limit(engine):
    accounts = accounts_on(engine, per_user_address=5)
    accounts.create_user("victim", PASSWORD)

    def wrong(_):
        try:
            accounts.login("victim", "wrong-password")
        except BadCredentials:
            return "wrong"
        except TooManyAttempts:
            return "refused"

    outcomes = at_once(10, wrong)
    assert outcomes.count("wrong") == 5 and outcomes.count("refused") == 5, outcomes


def test_spraying_one_password_over_40_usernames_from_one_address_is_limited(engine):
    accounts = accounts_on(engine, per_address=20)
    outcomes = at_once(40, lambda i: attempt(accounts, f"user{i}", "Summer2026!", "203.0.113.7"))
    assert outcomes.count("wrong") == 20 and outcomes.count("refused") == 20
    # Another address is not held back by this one.
    assert attempt(accounts, "user0", "Summer2026!", "203.0.113.8") == "wrong"


def test_an_attacker_backs_off_only_their_own_address(engine):
    accounts = accounts_on(engine, per_user_address=5)
    accounts.create_user("victim", PASSWORD)
    assert [attempt(accounts, "victim", f"guess-{i}", "198.51.100.66") for i in range(6)] == ["wrong"] * 5 + ["refused"]
    # Refused attempts are not verified: even the right password gets nothing from the backed-off address ...
    assert attempt(accounts, "victim", PASSWORD, "198.51.100.66") == "refused"
    # ... while the owner, from their own address, logs in at once.
    assert attempt(accounts, "victim", PASSWORD, "192.0.2.10") == "ok"
    assert attempt(accounts, "victim", "typo-password", "192.0.2.10") == "wrong"
    assert attempt(accounts, "victim", PASSWORD, "192.0.2.10") == "ok"


def test_a_success_clears_its_pair_but_not_the_address_count(engine):
    clock = Clock()
    accounts = accounts_on(engine, clock, per_user_address=3, per_address=6)
    throttle = accounts.throttle
    accounts.create_user("mallory", PASSWORD)
    address = "203.0.113.50"
    assert [attempt(accounts, f"target{i}", "guess", address) for i in range(4)] == ["wrong"] * 4
    assert attempt(accounts, "mallory", "typo", address) == "wrong"
    assert throttle.state("address", "", address) == (5, 0.0)
    assert attempt(accounts, "mallory", PASSWORD, address) == "ok"
    assert throttle.state("user_address", "mallory", address) is None  # the pair is cleared
    assert throttle.state("address", "", address) == (5, 0.0)  # the others' failures stay; the success did not count
    assert throttle.state("user", "mallory") == (1, 0.0)
    assert attempt(accounts, "target9", "guess", address) == "wrong"  # the 6th failure: the address backs off
    assert attempt(accounts, "target10", "guess", address) == "refused"
    assert attempt(accounts, "mallory", PASSWORD, address) == "refused"  # logging in does not reset it


def test_back_off_doubles_is_capped_and_decays(engine):
    clock = Clock()
    accounts = accounts_on(
        engine, clock, per_user_address=3, backoff_base_seconds=1, backoff_max_seconds=8, quiet_window_seconds=600
    )
    throttle = accounts.throttle
    address = "198.51.100.9"
    assert [attempt(accounts, "u", "bad", address) for _ in range(3)] == ["wrong"] * 3
    waits = []
    for _ in range(6):
        with pytest.raises(TooManyAttempts) as refused:
            accounts.login("u", "bad", client_address=address)
        waits.append(refused.value.retry_after)
        assert str(refused.value) == f"too many failed login attempts; try again in {waits[-1]} s"
        clock.now += waits[-1] - 0.5
        assert attempt(accounts, "u", "bad", address) == "refused"  # not a moment early
        clock.now += 0.5
        assert attempt(accounts, "u", "bad", address) == "wrong"
    assert waits == [1, 2, 4, 8, 8, 8]
    assert throttle.state("user_address", "u", address)[0] == 9  # refused attempts do not count
    clock.now += 600  # a quiet window: the count starts again
    assert [attempt(accounts, "u", "bad", address) for _ in range(4)] == ["wrong"] * 3 + ["refused"]


def test_the_username_limit_across_addresses_backs_off_without_locking_out(engine):
    clock = Clock()
    accounts = accounts_on(engine, clock, per_user=30, backoff_base_seconds=1)
    accounts.create_user("victim", PASSWORD)
    assert [attempt(accounts, "victim", "guess", f"10.9.0.{i}") for i in range(30)] == ["wrong"] * 30
    assert attempt(accounts, "victim", PASSWORD, "192.0.2.10") == "refused"  # a botnet slows everyone down ...
    clock.now += 1
    assert attempt(accounts, "victim", PASSWORD, "192.0.2.10") == "ok"  # ... but never locks the owner out


def test_names_that_are_no_users_are_counted_not_crashed_on(engine):
    accounts = accounts_on(engine, per_user_address=2)
    for name in ("nul\x00name", "x" * 5000):
        assert [attempt(accounts, name, "bad", "192.0.2.3") for _ in range(3)] == ["wrong", "wrong", "refused"]


def test_counters_are_in_the_store(engine):
    clock = Clock()
    first = accounts_on(engine, clock, per_user_address=2)
    assert [attempt(first, "u", "bad", "192.0.2.1") for _ in range(2)] == ["wrong", "wrong"]
    again = accounts_on(engine, clock, per_user_address=2)  # as after a restart
    assert attempt(again, "u", "bad", "192.0.2.1") == "refused"


# --- the client address -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "peer, forwarded, expected",
    [
        ("ipv4:127.0.0.1:5555", "203.0.113.5", "203.0.113.5"),  # the gateway, trusted by default
        ("ipv6:%5B::1%5D:5555", "203.0.113.5", "203.0.113.5"),  # how grpc spells an IPv6 peer
        ("ipv6:[::1]:5555", "2001:db8:1:2:3::4", "2001:db8:1:2::/64"),  # an IPv6 client counts by its /64
        ("ipv4:127.0.0.1:5555", "::ffff:198.51.100.4", "198.51.100.4"),
        ("ipv4:127.0.0.1:5555", None, "127.0.0.1"),
        ("ipv4:127.0.0.1:5555", "not an address", "127.0.0.1"),
        ("ipv4:10.1.2.3:4000", "203.0.113.5", "10.1.2.3"),  # not a trusted proxy: its claim is ignored
        ("ipv6:%5B2001:db8::7%5D:4000", "203.0.113.5", "2001:db8::/64"),
        ("ipv4:172.16.5.5:4000", "203.0.113.5", "203.0.113.5"),  # inside a trusted CIDR
        ("unix:/run/cp.sock", "203.0.113.5", "unix:/run/cp.sock"),
    ],
)
def test_the_forwarded_client_address_is_believed_only_from_trusted_proxies(peer, forwarded, expected):
    trusted = TrustedProxies.parse("127.0.0.1, ::1, 172.16.0.0/12")
    metadata = [("authorization", "Bearer x")] + ([(CLIENT_ADDRESS_KEY, forwarded)] if forwarded else [])
    assert client_address(peer, metadata, trusted) == expected


def test_trusted_proxies_setting():
    assert client_address("ipv4:127.0.0.1:1", [(CLIENT_ADDRESS_KEY, "203.0.113.5")], TrustedProxies.parse("")) == "127.0.0.1"
    with pytest.raises(ValueError, match="BUGAGARIC_TRUSTED_PROXIES"):
        TrustedProxies.parse("127.0.0.1,localhost")
    assert ControlPlaneSettings().trusted_proxies == "127.0.0.1,::1"


# --- a real control plane -----------------------------------------------------------------------------------------


def run(coroutine):
    """On a loop of its own (with its own default executor, which one test blocks)."""
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(coroutine)


def settings_for(tmp_path, **overrides) -> ControlPlaneSettings:
    values = dict(
        database_url=f"sqlite:///{tmp_path / 'var' / 'cp.db'}", control_plane_host="127.0.0.1", control_plane_port=0,
        cluster_token="cluster-secret", admin_user="admin", admin_password="admin-password", workspace=tmp_path,
    )
    return ControlPlaneSettings(**{**values, **overrides})


async def login(stub, username: str, password: str, forwarded: str | None = None, timeout: float = 30):
    """(status code, trailing metadata as a dict, reply or None)."""
    metadata = ((CLIENT_ADDRESS_KEY, forwarded),) if forwarded else ()
    try:
        reply = await stub.Login(cp.LoginRequest(username=username, password=password), metadata=metadata, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), dict(exc.trailing_metadata() or ()), exc.details()
    return grpc.StatusCode.OK, {}, reply


def test_limits_survive_a_restart_and_refusals_carry_retry_after(tmp_path):
    settings = settings_for(tmp_path, login_limit_per_user_address=3, login_backoff_base_seconds=120)

    async def scenario():
        running = await start_control_plane(settings)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = control_plane_pb2_grpc.AuthServiceStub(channel)
            for _ in range(3):
                code, _, _ = await login(stub, "admin", "guess-password", forwarded="203.0.113.9")
                assert code == grpc.StatusCode.UNAUTHENTICATED
            code, trailers, message = await login(stub, "admin", "admin-password", forwarded="203.0.113.9")
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            retry_after = int(trailers["retry-after"])
            assert 100 <= retry_after <= 120 and f"try again in {retry_after} s" in message
        await running.stop()

        running = await start_control_plane(settings)  # a restart forgets nothing
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = control_plane_pb2_grpc.AuthServiceStub(channel)
            code, trailers, _ = await login(stub, "admin", "admin-password", forwarded="203.0.113.9")
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and 1 <= int(trailers["retry-after"]) <= 120
            # The gateway forwards another client's address: that client is not held back.
            code, _, reply = await login(stub, "admin", "admin-password", forwarded="192.0.2.44")
            assert code == grpc.StatusCode.OK and reply.user.username == "admin"
        await running.stop()

    run(scenario())


def test_a_caller_that_is_not_a_trusted_proxy_cannot_choose_its_address(tmp_path):
    settings = settings_for(tmp_path, login_limit_per_user_address=3, trusted_proxies="10.0.0.0/8")

    async def scenario():
        running = await start_control_plane(settings)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = control_plane_pb2_grpc.AuthServiceStub(channel)
            for i in range(3):  # a new claimed address each time: all count under 127.0.0.1
                code, _, _ = await login(stub, "admin", "guess-password", forwarded=f"203.0.113.{i}")
                assert code == grpc.StatusCode.UNAUTHENTICATED
            code, trailers, _ = await login(stub, "admin", "admin-password", forwarded="192.0.2.200")
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and trailers["retry-after"] == "1"
        await running.stop()

    run(scenario())


def test_token_checks_are_served_while_logins_flood_and_the_default_executor_is_stuck(tmp_path):
    settings = settings_for(tmp_path, password_threads=1)

    async def scenario():
        running = await start_control_plane(settings)
        loop = asyncio.get_running_loop()
        release = threading.Event()
        stuck = ThreadPoolExecutor(2)
        loop.set_default_executor(stuck)
        blockers = [loop.run_in_executor(None, release.wait) for _ in range(2)]
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                auth = control_plane_pb2_grpc.AuthServiceStub(channel)
                # A token from before the flood (logins have a pool of their own: this one gets through too).
                code, _, reply = await login(auth, "admin", "admin-password", timeout=20)
                assert code == grpc.StatusCode.OK
                flood = [
                    asyncio.ensure_future(login(auth, f"nobody{i}", "guess-password", forwarded=f"198.51.100.{i}", timeout=60))
                    for i in range(30)
                ]
                await asyncio.sleep(0.2)
                started = time.monotonic()
                for _ in range(5):
                    me = await auth.WhoAmI(cp.WhoAmIRequest(), metadata=bearer_metadata(reply.token), timeout=3)
                    assert me.username == "admin"
                assert time.monotonic() - started < 3
                assert sum(not task.done() for task in flood) > 10  # the flood was still being worked through
                for task in flood:
                    task.cancel()
                await asyncio.gather(*flood, return_exceptions=True)
        finally:
            release.set()
            await asyncio.gather(*blockers)
            await running.stop()

    run(scenario())


def test_the_token_check_probe_tells_whether_token_checks_are_served(tmp_path):
    accounts = AccountStore(make_engine(f"sqlite:///{tmp_path / 'a.db'}"), timedelta(hours=1))
    check = TokenCheck(accounts, "cluster-secret", threads=1)

    async def scenario():
        assert await check.probe(2.0) is True
        release = threading.Event()
        blocked = asyncio.ensure_future(check._pool.run(release.wait))  # the pool's one thread, taken
        try:
            assert await check.probe(0.3) is False
            assert await check.probe(0.3) is False  # a timed-out probe is dropped, never run later
        finally:
            release.set()
            await blocked
        assert await check.probe(2.0) is True
        assert await check("/bugagaric.finetune.v1.FinetuneService/ListTasks", "no-such-token") is None

    try:
        run(scenario())
    finally:
        check.close()
