"""The GitHub hook's connection parsing, and the RateLimitSensor against real Redis + emulator."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from github_collector.client import derive_graphql_url
from github_collector.errors import ConfigError
from github_collector.hook import GitHubHook, parse_settings
from github_collector.quota import QuotaState, QuotaStore, fingerprint
from github_collector.sensors import RateLimitSensor, estimate_cost, reservation_id
from github_collector.staging import Staging, run_namespace


@pytest.mark.unit
@pytest.mark.parametrize(
    ("base", "graphql"),
    [
        ("https://api.github.com", "https://api.github.com/graphql"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com/api/graphql"),
        ("http://127.0.0.1:8765/", "http://127.0.0.1:8765/graphql"),
    ],
)
def test_graphql_url_is_derived_from_the_rest_base(base, graphql):
    assert derive_graphql_url(base.rstrip("/")) == graphql


@pytest.mark.unit
def test_settings_from_connection_fields():
    s = parse_settings(
        "https://api.github.com", "tok-a", json.dumps({"tokens": ["tok-b", " "], "reserve": 7})
    )
    assert s["tokens"] == ["tok-a", "tok-b"] and s["reserve"] == 7
    assert (
        parse_settings("ghe.example.com", "t", None, schema="api/v3")["base_url"]
        == "https://ghe.example.com/api/v3"
    )
    assert parse_settings("", "t", "")["base_url"] == "https://api.github.com"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("ftp://x", "t", None), "ftp://x"),
        (("http://", "t", None), "http://"),
        (("https://api.github.com", None, None), "no token"),
        (("https://api.github.com", "t", "{not json"), "not valid JSON"),
        (("https://api.github.com", "t", {"reserve": "lots"}), "'lots'"),
        (("https://api.github.com", "t", {"timeout": 0}), "timeout"),
        (("https://api.github.com", "t", {"tokens": 5}), "'tokens'"),
    ],
)
def test_bad_connection_settings_are_named(args, named):
    with pytest.raises(ConfigError) as err:
        parse_settings(*args)
    assert named in str(err.value)


@pytest.mark.unit
def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as err:
        parse_settings("https://user:sekrit@api.github.com", "t", None)
    assert "sekrit" not in str(err.value)


@pytest.mark.unit
def test_missing_connection_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CONN", raising=False)
    with pytest.raises(ConfigError, match="'no_such_conn' is missing"):
        GitHubHook("no_such_conn").get_conn()


@pytest.mark.unit
def test_every_token_of_the_connection_is_masked_in_logs(monkeypatch):
    from airflow.providers.common.compat.sdk import redact

    extra = {"tokens": ["mask-test-extra-7f3a9c"]}
    monkeypatch.setenv(
        "AIRFLOW_CONN_MASK_TEST",
        json.dumps({"conn_type": "github_repo_users", "password": "mask-test-main-b21e", "extra": extra}),
    )
    assert GitHubHook("mask_test").settings["tokens"] == ["mask-test-main-b21e", "mask-test-extra-7f3a9c"]
    line = "tokens mask-test-main-b21e and mask-test-extra-7f3a9c"
    assert "mask-test" not in str(redact(line))


@pytest.mark.unit
def test_estimate_counts_contributor_pages_and_packed_graphql():
    assert estimate_cost(["a/b"] * 20, ["contributors", "forkers", "stargazers"]) == {
        "core": 20,
        "graphql": 5,
    }
    assert estimate_cost(["a/b"], ["forkers"]) == {"core": 0, "graphql": 1}


@pytest.mark.unit
def test_non_deferrable_sensor_reschedules():
    assert RateLimitSensor(task_id="g", slot=0, deferrable=False).mode == "reschedule"
    sensor = RateLimitSensor(task_id="g2", slot=1)
    assert sensor.deferrable and "slot" in sensor.template_fields


def _context(run_id: str, map_index: int = 0):
    return {
        "ti": SimpleNamespace(dag_id="github_repo_users", run_id=run_id, map_index=map_index, try_number=1)
    }


@pytest.mark.integration
def test_sensor_reserves_when_quota_covers_and_defers_to_the_reset_when_not(
    emu_server_factory, monkeypatch, key_prefix, redis_client
):
    from airflow.providers.common.compat.sdk import TaskDeferred

    from github_collector.emulator import TokenConfig

    token = "sensor-test-token-1"
    srv = emu_server_factory(tokens=[TokenConfig(name="s", token=token, core_limit=30, graphql_limit=30)])
    monkeypatch.setenv("GITHUB_REPO_USERS_REDIS_PREFIX", key_prefix)
    monkeypatch.setenv(
        "AIRFLOW_CONN_REDIS_DEFAULT", json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": 6379})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_GITHUB_DEFAULT",
        json.dumps(
            {"conn_type": "github_repo_users", "host": srv.url, "password": token, "extra": {"reserve": 5}}
        ),
    )
    ns = run_namespace(key_prefix, "github_repo_users", "run-1")
    Staging(redis_client, ns).save_plan(
        {"relations": ["contributors", "forkers"], "batches": [["a/b"] * 10] * 3}
    )
    # each batch needs 10 core + 2 graphql
    s0 = RateLimitSensor(task_id="g", slot=0)
    assert s0.poke(_context("run-1", 0)) is True  # seeded from /rate_limit, then reserved
    held = redis_client.hget(f"{key_prefix}reservations:core", reservation_id(_context("run-1", 0), 0))
    assert int(held) == 10
    assert RateLimitSensor(task_id="g", slot=1).poke(_context("run-1", 1)) is True  # 20 of 25 usable
    third = RateLimitSensor(task_id="g", slot=2)
    with pytest.raises(TaskDeferred) as deferred:
        third.execute(_context("run-1", 2))
    store = QuotaStore(redis_client, prefix=key_prefix)
    reset = store.state(fingerprint(token), "core").reset
    assert deferred.value.method_name == "execute_complete"
    assert abs(deferred.value.trigger.moment.timestamp() - (reset + 1)) < 1.5
    # Nothing half-reserved is left behind by the refused batch.
    assert (
        redis_client.hget(f"{key_prefix}reservations:core", reservation_id(_context("run-1", 2), 2)) is None
    )
    assert store.state(fingerprint(token), "core") == QuotaState(30, 30, 0, reset)  # the sensor spent nothing
    # Once other slots have claimed every batch, a slot has nothing to wait for: it is skipped.
    staging = Staging(redis_client, ns)
    assert [staging.next_batch(s, 3) for s in (0, 1, 2)] == [0, 1, 2]
    from airflow.providers.common.compat.sdk import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="slot 3"):
        RateLimitSensor(task_id="g", slot=3).poke(_context("run-1", 3))


@pytest.mark.integration
def test_the_plans_token_check_takes_each_tokens_lease(
    emu_server_factory, monkeypatch, key_prefix, redis_client
):
    """Workers of another run may be sending with the same tokens: the plan's GET /rate_limit
    waits for each token's lease, and leaves a token cooling down after a secondary limit alone."""
    import threading
    import time

    from github_collector.emulator import TokenConfig
    from github_collector.run_tasks import check_connections

    busy, cooling = "hook-lease-token-busy-1", "hook-lease-token-cooling-2"
    srv = emu_server_factory(
        tokens=[TokenConfig(name="busy", token=busy), TokenConfig(name="cooling", token=cooling)],
        secondary_max_concurrent=1,
    )
    monkeypatch.setenv("GITHUB_REPO_USERS_REDIS_PREFIX", key_prefix)
    monkeypatch.setenv(
        "AIRFLOW_CONN_REDIS_DEFAULT", json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": 6379})
    )
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", json.dumps({"conn_type": "postgres", "host": "x"}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_GITHUB_DEFAULT",
        json.dumps(
            {
                "conn_type": "github_repo_users",
                "host": srv.url,
                "password": busy,
                "extra": {"tokens": [cooling]},
            }
        ),
    )
    store = QuotaStore(redis_client, prefix=key_prefix)
    other = store.lease_token(fingerprint(busy), max_wait=0)  # another run's request in flight
    store.cool_down(fingerprint(cooling), time.time() + 30)
    check = threading.Thread(target=check_connections, args=("github_default", "postgres_default"))
    check.start()
    time.sleep(0.5)
    assert srv.request_log() == []  # waiting for the busy token's lease
    store.release(other)
    check.join(timeout=30)
    assert not check.is_alive()
    assert [(e["token"], e["path"]) for e in srv.request_log()] == [("busy", "/rate_limit")]
    assert srv.stats()["secondary_limit_hits"] == 0
    assert store.lease_token(fingerprint(busy), max_wait=0) is not None  # released after the check


@pytest.mark.integration
def test_sensor_sleeps_through_a_short_wait_and_defers_a_long_one(
    emu_server_factory, monkeypatch, key_prefix, redis_client
):
    from airflow.providers.common.compat.sdk import TaskDeferred

    from github_collector.emulator import TokenConfig
    from github_collector.quota import QuotaStore

    token = "sensor-test-token-2"
    srv = emu_server_factory(tokens=[TokenConfig(name="s", token=token, core_limit=30, graphql_limit=30)])
    for k, v in {
        "GITHUB_REPO_USERS_REDIS_PREFIX": key_prefix,
        "AIRFLOW_CONN_REDIS_DEFAULT": json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": 6379}),
        "AIRFLOW_CONN_GITHUB_DEFAULT": json.dumps(
            {
                "conn_type": "github_repo_users",
                "host": srv.url,
                "password": token,
                "extra": {"max_inline_wait": 5, "reserve": 0},
            }
        ),
    }.items():
        monkeypatch.setenv(k, v)
    ns = run_namespace(key_prefix, "github_repo_users", "run-2")
    Staging(redis_client, ns).save_plan({"relations": ["contributors"], "batches": [["a/b"] * 10]})
    store = QuotaStore(redis_client, prefix=key_prefix)
    fp = fingerprint(token)
    sleeps: list[float] = []
    monkeypatch.setattr("github_collector.sensors.time.sleep", lambda s: sleeps.append(s))
    # The core window is dry for 3 more seconds: the gate waits in the task, then reserves.
    reset = int(time.time()) + 3
    store.set_state(fp, "core", QuotaState(30, 0, 30, reset))
    store.set_state(fp, "graphql", QuotaState(30, 30, 0, reset))
    clock = {"now": time.time()}
    monkeypatch.setattr("github_collector.sensors.time.time", lambda: clock["now"])
    real_poke = RateLimitSensor.poke

    def poke_after_reset(self, context):  # the second look comes after the wait
        if sleeps:
            store.set_state(fp, "core", QuotaState(30, 30, 0, reset + 3600))
        return real_poke(self, context)

    monkeypatch.setattr(RateLimitSensor, "poke", poke_after_reset)
    RateLimitSensor(task_id="g", slot=0).execute(_context("run-2", 0))
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 5
    # A wait beyond max_inline_wait defers instead.
    sleeps.clear()
    store.release_reservation(reservation_id(_context("run-2", 0), 0))
    store.set_state(fp, "core", QuotaState(30, 0, 30, reset + 7200))
    monkeypatch.setattr(RateLimitSensor, "poke", real_poke)
    with pytest.raises(TaskDeferred):
        RateLimitSensor(task_id="g", slot=0).execute(_context("run-2", 0))
    assert sleeps == []
