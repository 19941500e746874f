"""The GitHub hook's connection parsing, and the RateLimitSensor against real Redis + emulator."""

from __future__ import annotations

import json
import time
import zlib
from types import SimpleNamespace

import pytest

from github_collector.client import derive_graphql_url
from github_collector.errors import ConfigError
from github_collector.hook import GitHubHook, parse_settings
from github_collector.quota import QuotaState, QuotaStore, fingerprint
from github_collector.sensors import RateLimitSensor, estimate_cost
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
def test_sensor_starts_when_the_next_request_is_payable_and_defers_to_the_reset_when_not(
    emu_server_factory, monkeypatch, key_prefix, redis_client
):
    """The gate asks for the next request, not the batch's estimate: a slot starts with less
    left than its batch needs (it spends that before the reset), and holds nothing."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    from github_emulator import TokenConfig

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
    relations = ["contributors", "forkers", "stargazers"]
    Staging(redis_client, ns).save_plan({"relations": relations, "batches": [["a/b"] * 40] * 3})
    assert estimate_cost(["a/b"] * 40, relations) == {"core": 40, "graphql": 9}
    # the plan's token check learns each token's account first (GET /user: 1 core unit, once)
    from github_collector.hook import GitHubHook

    GitHubHook().check_tokens(quota=QuotaStore(redis_client, prefix=key_prefix))
    store = QuotaStore(redis_client, prefix=key_prefix)
    fp = fingerprint(token)
    reset = store.state(fp, "core").reset
    # 3 GraphQL units above the reserve, 3 REST ones: far below the batch's 9 + 40.
    store.set_state(fp, "core", QuotaState(30, 8, 22, reset))
    store.set_state(fp, "graphql", QuotaState(30, 8, 22, reset))
    assert RateLimitSensor(task_id="g", slot=0).poke(_context("run-1", 0)) is True
    assert RateLimitSensor(task_id="g", slot=1).poke(_context("run-1", 1)) is True  # nothing is held
    for r in ("core", "graphql"):
        assert redis_client.hlen(store._k("reservations", r)) == 0
    # GraphQL at the reserve: a batch not started needs GraphQL first (its repositories' summary),
    # so it waits for the reset + 1 s although REST units are left.
    store.set_state(fp, "graphql", QuotaState(30, 5, 25, reset))
    third = RateLimitSensor(task_id="g", slot=2)
    with pytest.raises(TaskDeferred) as deferred:
        third.execute(_context("run-1", 2))
    assert deferred.value.method_name == "execute_complete"
    # ... ending resume_lead (default 3 s) early: the resumed gate sleeps the rest (waiting.py)
    assert deferred.value.trigger.moment.timestamp() == reset + 1 - 3
    # A batch under way goes on with its REST work meanwhile.
    staging = Staging(redis_client, ns)
    redis_client.hset(staging.key("batch", 0, "state"), "state", zlib.compress(b"{}"))
    assert RateLimitSensor(task_id="g", slot=0).poke(_context("run-1", 0)) is True
    # Nothing payable for either: the started batch too waits for the reset.
    store.set_state(fp, "core", QuotaState(30, 5, 25, reset))
    assert RateLimitSensor(task_id="g", slot=0).poke(_context("run-1", 0)) is False
    # the gate spent nothing: the token check's GET /user, then free GET /rate_limit only
    assert {e["path"] for e in srv.request_log()} <= {"/user", "/rate_limit"}
    # Once other slots have claimed every batch, a slot has nothing to wait for: it is skipped.
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

    from github_collector.run_tasks import check_connections
    from github_emulator import TokenConfig

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
    # the busy token's account is learnt first (GET /user, once per token), under the same lease
    assert [(e["token"], e["path"]) for e in srv.request_log()] == [
        ("busy", "/user"),
        ("busy", "/rate_limit"),
    ]
    assert srv.stats()["secondary_limit_hits"] == 0
    assert store.lease_token(fingerprint(busy), max_wait=0) is not None  # released after the check


@pytest.mark.integration
def test_sensor_sleeps_through_a_short_wait_and_defers_a_long_one(
    emu_server_factory, monkeypatch, key_prefix, redis_client
):
    from airflow.providers.common.compat.sdk import TaskDeferred

    from github_collector.quota import QuotaStore
    from github_emulator import TokenConfig

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
    from github_collector.hook import GitHubHook

    GitHubHook().check_tokens(quota=QuotaStore(redis_client, prefix=key_prefix))  # as the plan does
    store = QuotaStore(redis_client, prefix=key_prefix)
    fp = fingerprint(token)
    redis_client.delete(*(store.quota_key(fp, r) for r in ("core", "graphql")))  # the records set below rule
    sleeps: list[float] = []
    monkeypatch.setattr("github_collector.sensors.time.sleep", lambda s: sleeps.append(s))
    # The GraphQL window (a new batch's first need) is dry for 3 more seconds: the gate waits
    # in the task, then lets the slot start.
    reset = int(time.time()) + 3
    store.set_state(fp, "graphql", QuotaState(30, 0, 30, reset))
    store.set_state(fp, "core", QuotaState(30, 30, 0, reset))
    clock = {"now": time.time()}
    monkeypatch.setattr("github_collector.sensors.time.time", lambda: clock["now"])
    real_poke = RateLimitSensor.poke

    def poke_after_reset(self, context):  # the second look comes after the wait
        if sleeps:
            store.set_state(fp, "graphql", QuotaState(30, 30, 0, reset + 3600))
        return real_poke(self, context)

    monkeypatch.setattr(RateLimitSensor, "poke", poke_after_reset)
    RateLimitSensor(task_id="g", slot=0).execute(_context("run-2", 0))
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 5
    # A wait beyond max_inline_wait defers instead.
    sleeps.clear()
    store.set_state(fp, "graphql", QuotaState(30, 0, 30, reset + 7200))
    monkeypatch.setattr(RateLimitSensor, "poke", real_poke)
    with pytest.raises(TaskDeferred):
        RateLimitSensor(task_id="g", slot=0).execute(_context("run-2", 0))
    assert sleeps == []


# --- the connection as Airflow's forms save it, and the UI's connection test ------------------


@pytest.mark.unit
def test_extras_saved_empty_by_the_connection_form_count_as_absent():
    """Airflow 3's form saves every untouched extra field as null (Airflow 2's as ''): defaults apply."""
    saved = {
        "tokens": None,
        "reserve": None,
        "timeout": "",
        "max_inline_wait": "  ",
        "rest_per_minute": None,
        "graphql_per_minute": "",
        "pace_window": None,
        "secondary_default_wait": "",
        "graphql_min_gap": None,
        "app_id": None,
        "installation_id": "",
        "private_key": None,
    }
    defaults = parse_settings("https://api.github.com", "tok-a", None)
    assert parse_settings("https://api.github.com", "tok-a", saved) == defaults
    assert parse_settings("https://api.github.com", "tok-a", json.dumps(saved)) == defaults
    assert defaults["reserve"] == 50 and defaults["timeout"] == 30 and defaults["tokens"] == ["tok-a"]
    # a value that is there still counts, and a bad one is still named
    filled = parse_settings("https://api.github.com", "tok-a", saved | {"reserve": 7, "timeout": "2.5"})
    assert filled["reserve"] == 7 and filled["timeout"] == 2.5
    with pytest.raises(ConfigError, match="'reserve'"):
        parse_settings("https://api.github.com", "tok-a", saved | {"reserve": "many"})


@pytest.mark.unit
def test_github_app_fields_make_a_connection_without_a_token():
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"
    app = {"app_id": "123", "installation_id": "456", "private_key": pem}
    alone = parse_settings("https://api.github.com", None, app)
    assert alone["tokens"] == [] and alone["app"].installation_ids == (456,)
    assert "BEGIN" not in repr(alone["app"])
    assert parse_settings("https://api.github.com", "tok-a", app)["tokens"] == ["tok-a"]
    with pytest.raises(ConfigError, match="'private_key'") as err:
        parse_settings("https://api.github.com", None, {"app_id": "123", "private_key": "BEGIN-nope"})
    assert "nope" not in str(err.value)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("conn", "base", "graphql"),
    [
        (
            {"conn_type": "github", "password": "tok-gh"},
            "https://api.github.com",
            "https://api.github.com/graphql",
        ),
        (
            {"conn_type": "github", "password": "tok-gh", "host": "https://ghe.example.com/api/v3"},
            "https://ghe.example.com/api/v3",
            "https://ghe.example.com/api/graphql",
        ),
        ("github://:tok-gh@", "https://api.github.com", "https://api.github.com/graphql"),
    ],
)
def test_a_connection_of_the_official_github_providers_type_works(monkeypatch, conn, base, graphql):
    """conn_type github, as apache-airflow-providers-github defines it: the token in the password,
    an optional GitHub Enterprise API URL in the host."""
    monkeypatch.setenv("AIRFLOW_CONN_OFFICIAL_GITHUB", json.dumps(conn) if isinstance(conn, dict) else conn)
    settings = GitHubHook("official_github").settings
    assert settings["base_url"] == base and settings["tokens"] == ["tok-gh"]
    assert derive_graphql_url(settings["base_url"]) == graphql


def _forbid_sleep(monkeypatch) -> None:
    def refuse(seconds: float) -> None:
        raise AssertionError(f"the connection test slept {seconds} s")

    monkeypatch.setattr("github_collector.hook.time.sleep", refuse)


@pytest.mark.integration
@pytest.mark.parametrize("conn_type", ["github_repo_users", "github"])
def test_connection_test_names_each_token_by_fingerprint_with_what_it_has_left(
    emu_server_factory, monkeypatch, conn_type
):
    from github_emulator import TokenConfig

    good, other, revoked = "conn-test-good-7d1e", "conn-test-other-52ab", "conn-test-revoked-c90f"
    srv = emu_server_factory(
        tokens=[
            TokenConfig(name="good", token=good, core_limit=900, graphql_limit=800),
            TokenConfig(name="other", token=other),
            TokenConfig(name="revoked", token=revoked, valid=False),
        ]
    )
    _forbid_sleep(monkeypatch)
    conn = {
        "conn_type": conn_type,
        "host": srv.url,
        "password": good,
        "extra": {"tokens": f"{other},{revoked}"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CONN_TEST", json.dumps(conn))
    ok, message = GitHubHook("conn_test").test_connection()
    assert ok is False  # one token does not work
    assert "2 of 3 token(s) work" in message
    assert f"token {fingerprint(good)} (" in message and "core 900 left, graphql 800 left" in message
    assert f"token {fingerprint(revoked)}: rejected (401 Bad credentials)" in message
    for token in (good, other, revoked):
        assert token not in message
    # one attempt per token: GET /rate_limit for each, GET /user for those that work
    asked = sorted((e["token"], e["path"]) for e in srv.request_log())
    assert asked == sorted(
        [
            ("good", "/rate_limit"),
            ("good", "/user"),
            ("other", "/rate_limit"),
            ("other", "/user"),
            ("revoked", "/rate_limit"),
        ]
    )
    conn["extra"] = {"tokens": [other]}
    monkeypatch.setenv("AIRFLOW_CONN_CONN_TEST", json.dumps(conn))
    ok, message = GitHubHook("conn_test").test_connection()
    assert ok is True and "2 of 2 token(s) work" in message


@pytest.mark.integration
@pytest.mark.parametrize(
    ("faults", "said"),
    [
        ({"fault_502_rate": 1.0}, "GET /rate_limit answered HTTP 502"),
        ({"fault_slow_rate": 1.0, "fault_slow_seconds": 5.0}, "no answer (ReadTimeout)"),
    ],
)
def test_connection_test_makes_one_short_attempt_and_never_sleeps(
    emu_server_factory, monkeypatch, faults, said
):
    from github_emulator import TokenConfig

    token = "conn-test-flaky-3e8a"
    srv = emu_server_factory(tokens=[TokenConfig(name="flaky", token=token)], fault_seed=5, **faults)
    _forbid_sleep(monkeypatch)
    monkeypatch.setattr("github_collector.hook.PROBE_TIMEOUT", (1.0, 0.3))
    monkeypatch.setenv(
        "AIRFLOW_CONN_CONN_TEST",
        json.dumps({"conn_type": "github_repo_users", "host": srv.url, "password": token}),
    )
    ok, message = GitHubHook("conn_test").test_connection()
    assert ok is False
    assert f"token {fingerprint(token)}: {said}" in message
    assert [e["path"] for e in srv.request_log()] == ["/rate_limit"]


@pytest.mark.unit
def test_the_gates_timeout_spans_its_own_deferrals(monkeypatch):
    """Each resume is a new execution: the timeout counts from the first look, carried in the
    deferral's kwargs, and a wait past its end resumes at that end to time out."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    from github_collector.sensors import AirflowSensorTimeout

    def dry(self, context):  # no token can pay for an hour
        self._next_check = time.time() + 3600
        return False

    monkeypatch.setattr(RateLimitSensor, "poke", dry)
    sensor = RateLimitSensor(task_id="g", slot=0, timeout=600)
    before = time.time()
    with pytest.raises(TaskDeferred) as first:
        sensor.execute(_context("run-t", 0))
    started = first.value.kwargs["started"]
    assert before <= started <= time.time()
    # not the reset an hour away (1 ms: the moment is kept in microseconds)
    assert first.value.trigger.moment.timestamp() <= started + 600 + 1e-3
    # resumed with the kwargs, still within the timeout: defers again with the same start
    with pytest.raises(TaskDeferred) as again:
        RateLimitSensor(task_id="g", slot=0, timeout=600).execute_complete(
            _context("run-t", 0), None, started
        )
    assert again.value.kwargs["started"] == started
    # resumed after the timeout's end: fails instead of deferring once more
    with pytest.raises(AirflowSensorTimeout):
        RateLimitSensor(task_id="g", slot=0, timeout=600).execute_complete(
            _context("run-t", 0), None, started=time.time() - 601
        )
