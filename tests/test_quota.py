from __future__ import annotations

import threading
import time

import pytest

from github_collector.errors import NoUsableToken, QuotaExhausted
from github_collector.quota import QuotaState, QuotaStore, fingerprint

pytestmark = pytest.mark.integration


@pytest.fixture()
def store(redis_client, key_prefix):
    return QuotaStore(redis_client, prefix=key_prefix, reserve=10)


def headers(limit, remaining, reset, used=None, resource="core"):
    h = {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(reset),
        "x-ratelimit-resource": resource,
    }
    if used is not None:
        h["x-ratelimit-used"] = str(used)
    return h


def test_fingerprint_is_short_and_hides_token():
    fp = fingerprint("ghp_secretsecret")
    assert len(fp) == 12 and "secret" not in fp


def test_stale_response_never_overwrites_newer_state(store):
    reset = int(time.time()) + 100
    assert store.update_from_headers("a", headers(5000, 4000, reset, 1000), "core")
    # An older response of the same window (fewer used) arrives late: ignored.
    assert not store.update_from_headers("a", headers(5000, 4500, reset, 500), "core")
    assert store.state("a", "core").remaining == 4000
    # A new window always wins, even with more remaining.
    assert store.update_from_headers("a", headers(5000, 4999, reset + 3600, 1), "core")
    assert store.state("a", "core") == QuotaState(5000, 4999, 1, reset + 3600)
    # The old window's late response cannot bring it back.
    assert not store.update_from_headers("a", headers(5000, 3000, reset, 2000), "core")


def test_lease_takes_most_remaining_and_one_request_per_token(store):
    reset = int(time.time()) + 100
    store.set_state("a", "core", QuotaState(5000, 100, 4900, reset))
    store.set_state("b", "core", QuotaState(5000, 900, 4100, reset))
    first = store.lease(["a", "b"], "core")
    assert first.fingerprint == "b"
    second = store.lease(["a", "b"], "core")
    assert second.fingerprint == "a"  # b is busy
    assert store.lease(["a", "b"], "core") is None  # both busy: wait, never double up
    store.release(first)
    assert store.lease(["a", "b"], "core").fingerprint == "b"


def test_lease_keeps_reserve_and_reports_earliest_reset(store):
    now = time.time()
    store.set_state("a", "core", QuotaState(5000, 10, 4990, int(now) + 50))  # at reserve
    store.set_state("b", "core", QuotaState(5000, 5, 4995, int(now) + 20))
    with pytest.raises(QuotaExhausted) as err:
        store.lease(["a", "b"], "core", now=now)
    # reset + 1 s: reset headers are whole seconds, so nobody sends before the window turned
    assert err.value.reset_at == int(now) + 20 + store.reset_pad
    # After b's window resets it is full again.
    lease = store.lease(["a", "b"], "core", now=now + 21)
    assert lease.fingerprint == "b"


def test_cooldown_and_rejection(store):
    now = time.time()
    store.set_state("a", "core", QuotaState(5000, 4000, 1000, int(now) + 100))
    store.set_state("b", "core", QuotaState(5000, 3000, 2000, int(now) + 100))
    store.cool_down("a", now + 30)
    assert store.lease(["a", "b"], "core", now=now).fingerprint == "b"
    store.mark_rejected("b")
    with pytest.raises(QuotaExhausted) as err:
        store.lease(["a", "b"], "core", now=now)
    assert err.value.reset_at == pytest.approx(now + 30)
    store.mark_rejected("a")
    with pytest.raises(NoUsableToken):
        store.lease(["a", "b"], "core", now=now)


def test_prefer_picks_the_etag_owner(store):
    reset = int(time.time()) + 100
    store.set_state("a", "core", QuotaState(5000, 100, 4900, reset))
    store.set_state("b", "core", QuotaState(5000, 900, 4100, reset))
    assert store.lease(["a", "b"], "core", prefer="a").fingerprint == "a"


def test_reservations_never_overcommit_under_concurrency(store):
    reset = int(time.time()) + 100
    # Two tokens with 110 and 60 remaining, reserve 10 each: 150 usable units.
    store.set_state("a", "graphql", QuotaState(5000, 110, 4890, reset))
    store.set_state("b", "graphql", QuotaState(5000, 60, 4940, reset))
    granted: list[str] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        res = store.reserve_budget(["a", "b"], "graphql", 20, f"batch-{i}")
        if res.granted:
            with lock:
                granted.append(f"batch-{i}")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 7  # 7 * 20 = 140 <= 150 < 8 * 20
    # Spending releases held units; releasing frees the rest.
    store.spend_reservation(granted[0], "graphql", 20)
    assert store.reserve_budget(["a", "b"], "graphql", 20, "late").granted
    store.release_reservation("late")
    refused = store.reserve_budget(["a", "b"], "graphql", 20, "later")
    assert refused.granted  # 'late' was released, so its units are free again


def test_reservation_refused_reports_reset(store):
    reset = int(time.time()) + 100
    store.set_state("a", "core", QuotaState(5000, 15, 4985, reset))
    res = store.reserve_budget(["a"], "core", 10, "x")
    assert not res.granted and res.available == 5 and res.earliest_reset == reset


def test_missing_records(store):
    store.set_state("a", "core", QuotaState(5000, 1, 1, 1))
    store.set_state("a", "graphql", QuotaState(5000, 1, 1, 1))
    store.set_state("b", "core", QuotaState(5000, 1, 1, 1))
    assert store.missing(["a", "b", "c"]) == ["b", "c"]


def test_reservation_ends_at_the_window_reset_and_is_capped_to_capacity(store):
    now = time.time()
    reset = int(now) + 5
    store.set_state("a", "core", QuotaState(30, 30, 0, reset))  # 20 usable above the reserve of 10
    assert store.reserve_budget(["a"], "core", 15, "stalled-batch", now=now).granted
    blocked = store.reserve_budget(["a"], "core", 15, "next", now=now)
    assert not blocked.granted and blocked.earliest_reset == reset
    # After the reset the refill voids the stalled batch's hold.
    assert store.reserve_budget(["a"], "core", 15, "next", now=reset + 1).granted
    # Asking for more than the pool can ever hold is capped, not refused forever.
    store.release_reservation("next")
    assert store.reserve_budget(["a"], "core", 10_000, "huge", now=reset + 1).granted


def test_a_reserve_above_the_limit_is_a_clear_error_not_a_wait(store):
    from github_collector.errors import ConfigError

    store.set_state("a", "core", QuotaState(8, 8, 0, int(time.time()) + 100))  # reserve is 10
    with pytest.raises(ConfigError, match="reserve of 10"):
        store.lease(["a"], "core")


def test_pacing_keeps_each_token_under_its_requests_per_window(redis_client, key_prefix):
    # 60 per minute counted over 3 s windows: 3 requests per window and token.
    store = QuotaStore(redis_client, prefix=key_prefix, reserve=0, per_minute={"core": 60}, pace_window_s=3)
    now = time.time()
    for fp in ("a", "b"):
        store.set_state(fp, "core", QuotaState(5000, 5000, 0, int(now) + 100))
    used = []
    for i in range(6):
        lease = store.lease(["a", "b"], "core", now=now + i * 0.01)
        used.append(lease.fingerprint)
        store.release(lease)
    assert sorted(used) == ["a"] * 3 + ["b"] * 3  # a full token spills onto the other
    with pytest.raises(QuotaExhausted) as err:
        store.lease(["a", "b"], "core", now=now + 0.1)
    # usable again when the oldest request of the window leaves it
    assert err.value.reset_at == pytest.approx(now + 3, abs=0.02)
    again = store.lease(["a", "b"], "core", now=now + 3.005)
    assert again is not None
    store.release(again)
    # GraphQL is paced separately: the REST window says nothing about it
    store.set_state("a", "graphql", QuotaState(5000, 5000, 0, int(now) + 100))
    assert store.lease(["a"], "graphql", now=now + 0.2) is not None
    unpaced = QuotaStore(redis_client, prefix=key_prefix + "u:", reserve=0, per_minute={"core": 0})
    unpaced.set_state("a", "core", QuotaState(5000, 5000, 0, int(now) + 100))
    for _ in range(10):  # 0 turns pacing off
        lease = unpaced.lease(["a"], "core", now=now)
        assert lease is not None
        unpaced.release(lease)


def test_a_killed_workers_lease_is_freed_on_this_host_only(store, redis_client, key_prefix):
    import subprocess
    import sys

    store.set_state("a", "core", QuotaState(5000, 5000, 0, int(time.time()) + 100))
    # A process leases the token, then dies without releasing it (as under SIGKILL).
    code = (
        "import os, redis, sys; sys.path.insert(0, 'plugins')\n"
        "from github_collector.quota import QuotaStore\n"
        f"s = QuotaStore(redis.Redis.from_url('redis://127.0.0.1:6379/0'), prefix={key_prefix!r}, reserve=10)\n"
        "assert s.lease(['a'], 'core') is not None\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert proc.returncode == -9
    assert store.lease(["a"], "core") is None  # still leased: its TTL has not run out
    assert store.reap_dead_leases(["a"]) == ["a"]
    mine = store.lease(["a"], "core")
    assert mine is not None
    assert store.reap_dead_leases(["a"]) == []  # a live process's lease stays
    store.release(mine)
    redis_client.set(store._k("lease", "a"), "another-host:1:x")
    assert store.reap_dead_leases(["a"]) == []  # other hosts wait for the TTL
    # A container sharing this host name (network_mode: host) has its own pids: a pid that
    # does not exist here may be alive there, so its lease waits for the TTL too.
    import socket

    dead_pid = 2**22 + 1  # above Linux's pid_max: no such process here
    for other_container in (socket.gethostname(), f"{socket.gethostname()}@1"):
        redis_client.set(store._k("lease", "a"), f"{other_container}:{dead_pid}:x")
        assert store.reap_dead_leases(["a"]) == [], other_container
    from github_collector.quota import _HOST

    redis_client.set(store._k("lease", "a"), f"{_HOST}:{dead_pid}:x")
    assert store.reap_dead_leases(["a"]) == ["a"]  # the same namespace's dead pid is freed


def test_settle_applies_headers_cool_down_and_release_at_once(store):
    reset = int(time.time()) + 100
    lease = store.lease(["a"], "core")
    state = QuotaStore.headers_state(headers(5000, 4321, reset, 679), "core")
    store.settle(lease, *state, cool_until=time.time() + 30)
    assert store.state("a", "core") == QuotaState(5000, 4321, 679, reset)
    with pytest.raises(QuotaExhausted):  # cooling down, and the lease is free
        store.lease(["a"], "core")
    # A lease another worker holds is not released by a settle with a stale owner.
    store.redis.delete(store._k("cooldown", "a"))
    mine = store.lease(["a"], "core")
    store.settle(lease, "core")
    assert store.lease(["a"], "core") is None
    store.settle(mine, "core")
    assert store.lease(["a"], "core") is not None


def test_a_waiting_worker_is_woken_when_the_lease_is_freed(store):
    held = store.lease(["a"], "core")
    woke: list[float] = []

    def waiter() -> None:
        t0 = time.monotonic()
        store.wait_for_release(["a"], 5.0)
        woke.append(time.monotonic() - t0)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    store.settle(held, "core")
    t.join(10)
    assert woke and woke[0] < 2.0  # woken by the release, not by the 5 s timeout
    assert store.lease(["a"], "core") is not None
