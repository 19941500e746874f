"""Every GitHub limit and failure answer, through the real client, the emulator and real Redis.

The emulator gives each answer on demand (``inject``) and records, per account, the wait
GitHub's procedure prescribes after it: a request of that account (any token, any resource)
before then is an ``early`` request. So the assertions are on what the client sent, never on
how fast a machine is: no early request, no token sent off the API host, no concurrent
requests of one account, and the data still comes back.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from types import SimpleNamespace

import pytest
from fault_harness import set_connections
from fixtures_emulator import *  # noqa: F403
from support import listed_repo, make_client

from github_collector import errors
from github_collector.errors import GitHubError, GitHubUnavailable, NoUsableToken
from github_collector.quota import QuotaStore, fingerprint
from github_emulator import SPECIAL_REPOS, TokenConfig

pytestmark = pytest.mark.integration

TOK_A, TOK_B, TOK_C = "lim-tok-a-5c1e0f2a", "lim-tok-b-93d7e4b1", "lim-tok-c-0a8f6d3c"
EMPTY = SPECIAL_REPOS["empty"]
VIEWER = ("query { viewer { login } }", {})


def viewer(with_email: bool) -> tuple[str, dict]:
    return VIEWER


def one_account(**kw: object) -> list[TokenConfig]:
    """Two tokens of one GitHub account, "octo": one budget, one request at a time."""
    return [
        TokenConfig(name="a", token=TOK_A, account="octo", collaborator_repos=("*",), **kw),
        TokenConfig(name="b", token=TOK_B, account="octo", collaborator_repos=("*",), **kw),
    ]


def api_log(srv) -> list[dict]:
    """The requests that count for GitHub's limits (GET /rate_limit is free and invited)."""
    return [e for e in srv.request_log() if e["path"] != "/rate_limit"]


# ---------------------------------------------------------------------- 1, 2: GraphQL primary forms
@pytest.mark.parametrize(
    "kind", ["graphql_rate_limited", "graphql_rate_limited_stale_header", "graphql_rate_limit_code"]
)
def test_graphql_primary_limit_keeps_the_account_off_until_reset_whatever_the_header_says(
    kind, emu_server_factory, redis_client, key_prefix
):
    srv = emu_server_factory(tokens=one_account(), window_seconds=2)
    client = make_client(srv.url, [TOK_A, TOK_B], redis_client, key_prefix, max_inline_wait=10)
    client.ensure_quota_records()
    srv.inject(kind)
    resp = client.graphql(viewer)
    assert resp.data and resp.data["viewer"]["login"]  # waited for the reset, then answered
    stats = srv.stats()
    assert stats["early_requests"] == 0, api_log(srv)  # neither token of the account sent early
    queries = [e for e in srv.request_log() if e["path"] == "/graphql"]
    assert [e["answer"] for e in queries] == [kind, None]  # one limit answer, one retry: no storm


def test_graphql_primary_limit_is_raised_for_deferral_when_the_wait_is_long(
    emu_server_factory, redis_client, key_prefix
):
    srv = emu_server_factory(tokens=one_account(), window_seconds=30)
    client = make_client(srv.url, [TOK_A, TOK_B], redis_client, key_prefix, max_inline_wait=1)
    client.ensure_quota_records()
    srv.inject("graphql_rate_limited_stale_header")
    with pytest.raises(errors.QuotaExhausted) as err:
        client.graphql(viewer)
    reset = srv.stats()["accounts"]["octo"]["graphql"]["reset"]
    assert err.value.reset_at >= reset  # defer until the reset (+1 s), not sooner
    assert len([e for e in srv.request_log() if e["path"] == "/graphql"]) == 1
    assert srv.stats()["early_requests"] == 0


# ---------------------------------------------------------------------- 3: secondary limits
@pytest.mark.parametrize("form", ["present", "absent", "blank"])
@pytest.mark.parametrize(
    "kind", ["graphql_secondary_200", "graphql_secondary_403", "rest_secondary_403", "rest_secondary_429"]
)
def test_a_secondary_limit_rests_the_whole_account_as_github_prescribes(
    kind, form, emu_server_factory, redis_client, key_prefix
):
    srv = emu_server_factory(tokens=one_account(), secondary_default_wait=1.0)
    client = make_client(
        srv.url, [TOK_A, TOK_B], redis_client, key_prefix, max_inline_wait=10, secondary_default_wait=1.0
    )
    client.ensure_quota_records()
    srv.inject(kind, retry_after=form, wait=1)
    if kind.startswith("graphql"):
        assert client.graphql(viewer).data["viewer"]["login"]
    else:
        assert client.rest(f"/repos/{EMPTY}", conditional=False).status == 200
    stats = srv.stats()
    assert stats["answers"][kind] == 1
    assert stats["early_requests"] == 0, api_log(srv)  # the other token of the account waited too
    assert client.stats.secondary_hits == 1


def test_repeated_secondary_limits_double_the_default_wait_and_are_bounded(
    emu_server_factory, redis_client, key_prefix
):
    srv = emu_server_factory(tokens=one_account(), secondary_default_wait=0.5)
    client = make_client(
        srv.url, [TOK_A, TOK_B], redis_client, key_prefix, max_inline_wait=10, secondary_default_wait=0.5
    )
    client.ensure_quota_records()
    srv.inject("rest_secondary_403", count=2, retry_after="absent")
    assert client.rest(f"/repos/{EMPTY}", conditional=False).status == 200
    t = [e["t"] for e in api_log(srv) if e["path"] == f"/repos/{EMPTY}"]
    assert len(t) == 3
    assert t[2] - t[1] >= 2 * 0.5  # the second wait is doubled (a lower bound: never flaky)
    assert srv.stats()["early_requests"] == 0
    # A limit that never lifts: a few tries, then a clear failure (no endless loop).
    stubborn = make_client(
        srv.url,
        [TOK_A, TOK_B],
        redis_client,
        key_prefix,
        max_inline_wait=10,
        secondary_default_wait=0.1,
        max_secondary_tries=2,
    )
    srv.inject("rest_secondary_429", count=10, retry_after="present", wait=0)
    with pytest.raises(GitHubUnavailable, match="secondary rate limit persisted"):
        stubborn.rest(f"/repos/{EMPTY}", conditional=False)
    assert srv.stats()["answers"]["rest_secondary_429"] == 3


# ---------------------------------------------------------------------- 6: foreign origins
def test_a_redirect_to_another_host_never_gets_the_token(emu_server_factory, redis_client, key_prefix):
    srv = emu_server_factory()
    client = make_client(srv.url, [EMU_TOKEN_COLLAB], redis_client, key_prefix)  # noqa: F405
    client.ensure_quota_records()
    for status in (302, 307):
        srv.inject("foreign_redirect", status=status)
        with pytest.raises(GitHubError) as err:
            client.rest(f"/repos/{EMPTY}")
        assert type(err.value).__name__ == "ForeignHost"
        assert "localhost" in str(err.value) and EMU_TOKEN_COLLAB not in str(err.value)  # noqa: F405
    stats = srv.stats()
    assert stats["foreign_requests"] == 0 and stats["foreign_requests_with_token"] == 0


def test_a_next_link_to_another_host_never_gets_the_token(
    emu_server_factory, emu_dataset, redis_client, key_prefix
):
    srv = emu_server_factory()
    client = make_client(srv.url, [EMU_TOKEN_COLLAB], redis_client, key_prefix)  # noqa: F405
    client.ensure_quota_records()
    srv.inject("foreign_link")
    page = client.rest(f"/repos/{listed_repo(emu_dataset)}/forks", {"per_page": 2})
    assert page.status == 200 and page.next_url and "localhost" in page.next_url
    with pytest.raises(GitHubError) as err:
        client.rest(page.next_url)
    assert type(err.value).__name__ == "ForeignHost" and "localhost" in str(err.value)
    assert srv.stats()["foreign_requests_with_token"] == 0


# ---------------------------------------------------------------------- 7: 401
def test_one_401_is_checked_once_more_and_does_not_retire_the_token(
    emu_server_factory, redis_client, key_prefix, monkeypatch
):
    srv = emu_server_factory()
    client = make_client(srv.url, [EMU_TOKEN_COLLAB], redis_client, key_prefix)  # noqa: F405
    client.unauthorized_recheck_wait = 0.1  # the pause before the second look
    client.ensure_quota_records()
    srv.inject("unauthorized", token="collab")
    assert client.rest(f"/repos/{EMPTY}").status == 200
    fp = fingerprint(EMU_TOKEN_COLLAB)  # noqa: F405
    assert not client.quota.is_rejected(fp)
    assert [e["status"] for e in api_log(srv) if e["path"] == f"/repos/{EMPTY}"] == [401, 200]


def test_a_second_401_rejects_for_an_hour_and_the_plans_check_clears_it(
    emu_server_factory, redis_client, key_prefix, monkeypatch
):
    from github_collector.hook import GitHubHook

    srv = emu_server_factory()
    client = make_client(srv.url, [EMU_TOKEN_COLLAB], redis_client, key_prefix)  # noqa: F405
    client.unauthorized_recheck_wait = 0.1  # the pause before the second look
    client.ensure_quota_records()
    srv.inject("unauthorized", count=2, token="collab")
    with pytest.raises(NoUsableToken):
        client.rest(f"/repos/{EMPTY}")
    fp = fingerprint(EMU_TOKEN_COLLAB)  # noqa: F405
    store = QuotaStore(redis_client, prefix=key_prefix)
    assert store.is_rejected(fp)
    assert 0 < redis_client.ttl(store._k("rejected", fp)) <= 3600
    # The plan's token check gets a 200 with it: the mark goes, and the next run works.
    set_connections(
        monkeypatch,
        github_url=srv.url,
        tokens=[EMU_TOKEN_COLLAB],  # noqa: F405
        pg_db="unused",
        prefix=key_prefix,
        github_extra={"reserve": 50},
    )
    assert GitHubHook().check_tokens(quota=store) == [fp]
    assert not store.is_rejected(fp)
    again = make_client(srv.url, [EMU_TOKEN_COLLAB], redis_client, key_prefix)  # noqa: F405
    assert again.rest(f"/repos/{EMPTY}").status == 200


# ---------------------------------------------------------------------- 8: dropped connections
def test_a_connection_dropped_mid_body_is_retried_like_a_502(
    emu_server_factory, emu_dataset, redis_client, key_prefix
):
    srv = emu_server_factory()
    client = make_client(srv.url, [EMU_TOKEN_COLLAB], redis_client, key_prefix)  # noqa: F405
    client.ensure_quota_records()
    srv.inject("dropped_connection", count=2)
    page = client.rest(f"/repos/{listed_repo(emu_dataset)}/forks", {"per_page": 2})
    assert page.status == 200 and len(page.data) == 2
    assert client.graphql(viewer).data["viewer"]["login"]
    assert srv.stats()["answers"]["dropped_connection"] == 2


def test_a_connection_that_keeps_dropping_fails_and_frees_the_account_at_once(
    emu_server_factory, emu_dataset, redis_client, key_prefix
):
    srv = emu_server_factory()
    client = make_client(srv.url, [EMU_TOKEN_COLLAB], redis_client, key_prefix, max_attempts=2)  # noqa: F405
    client.ensure_quota_records()
    srv.inject("dropped_connection", count=2)
    with pytest.raises(GitHubError):
        client.rest(f"/repos/{listed_repo(emu_dataset)}/forks")
    fp = fingerprint(EMU_TOKEN_COLLAB)  # noqa: F405
    assert not client.quota.is_leased(fp)  # no lease held until its TTL
    assert client.rest(f"/repos/{EMPTY}").status == 200


# ---------------------------------------------------------------------- 9: accounts
def test_tokens_of_one_account_are_one_budget_sent_one_request_at_a_time(
    emu_server_factory, emu_dataset, redis_client, key_prefix, product_log
):
    srv = emu_server_factory(tokens=one_account(), secondary_max_concurrent=1, latency_ms=20)
    client = make_client(srv.url, [TOK_A, TOK_B], redis_client, key_prefix)
    names = emu_dataset.repo_names()[:6]
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for name in names:
                client.rest(f"/repos/{name}", conditional=False)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    stats = srv.stats()
    assert stats["answers"]["secondary_concurrency"] == 0  # never two requests of the account at once
    assert stats["early_requests"] == 0
    fa, fb = fingerprint(TOK_A), fingerprint(TOK_B)
    assert client.quota.account_of(fa) == client.quota.account_of(fb) != fa
    assert client.quota.state(fa, "core") == client.quota.state(fb, "core")  # one record
    users = [e["token"] for e in srv.request_log() if e["path"] == "/user"]
    assert sorted(users) == ["a", "b"]  # GET /user once per token
    assert f"tokens {[fa, fb]} belong to one GitHub account" in product_log.text
    assert TOK_A not in product_log.text and TOK_B not in product_log.text
    # Another worker (or the next run) reads the accounts from Redis: no GET /user again.
    other = make_client(srv.url, [TOK_B, TOK_A], redis_client, key_prefix)
    other.ensure_quota_records()
    assert len([e for e in srv.request_log() if e["path"] == "/user"]) == 2
    assert other.quota.account_of(fa) == client.quota.account_of(fa)


def test_a_resting_account_holds_back_the_sensor_too(
    emu_server_factory, redis_client, key_prefix, monkeypatch
):
    from github_collector.sensors import RateLimitSensor
    from github_collector.staging import Staging, run_namespace

    srv = emu_server_factory(tokens=one_account())
    set_connections(
        monkeypatch,
        github_url=srv.url,
        tokens=[TOK_A, TOK_B],
        pg_db="unused",
        prefix=key_prefix,
        github_extra={"reserve": 50},
    )
    ns = run_namespace(key_prefix, "github_repo_users", "run-rest")
    Staging(redis_client, ns).save_plan({"relations": ["contributors", "forkers"], "batches": [["a/b"] * 2]})
    client = make_client(srv.url, [TOK_A, TOK_B], redis_client, key_prefix)
    client.ensure_quota_records()
    until = time.time() + 300
    client.quota.cool_down(fingerprint(TOK_B), until)  # a secondary limit met with the other token
    sensor = RateLimitSensor(task_id="g", slot=0)
    ctx = {"ti": SimpleNamespace(dag_id="github_repo_users", run_id="run-rest", map_index=0, try_number=1)}
    assert sensor.poke(ctx) is False  # the whole account rests: no batch starts into it
    assert sensor._next_check == pytest.approx(until, abs=1)


# ---------------------------------------------------------------------- 10: GraphQL spacing
def test_graphql_queries_of_an_account_are_spaced_by_their_duration(
    emu_server_factory, redis_client, key_prefix
):
    latency = 0.3
    srv = emu_server_factory(tokens=one_account(), latency_ms=latency * 1000)
    client = make_client(srv.url, [TOK_A, TOK_B], redis_client, key_prefix)
    client.ensure_quota_records()
    for _ in range(4):
        client.graphql(viewer)
    done = [e["t"] for e in srv.request_log() if e["path"] == "/graphql"]
    # each query lasts at least the latency, and the next may start only 0.18 x that after
    assert all(b - a >= latency * 1.18 for a, b in itertools.pairwise(done)), done
    # the pause is a mark in Redis, so every worker honours it
    acct = client.quota.account_of(fingerprint(TOK_A))
    mark = float(redis_client.get(client.quota._k("gap", acct, "graphql")))
    assert mark >= done[-1] + 0.18 * latency


def test_a_least_gap_keeps_the_account_inside_githubs_graphql_cpu_budget(
    emu_server_factory, redis_client, key_prefix
):
    # Each query books 100 ms of GitHub CPU; the account may book 0.6 s per 1 s window.
    srv = emu_server_factory(
        tokens=one_account(),
        graphql_cpu_ms_base=100,
        graphql_cpu_ms_per_node=0,
        graphql_cpu_seconds_per_minute=0.6,
        secondary_window_seconds=1,
    )
    client = make_client(srv.url, [TOK_A, TOK_B], redis_client, key_prefix)
    client.graphql_min_gap = 0.25  # the connection's extra graphql_min_gap
    client.ensure_quota_records()
    for _ in range(8):
        client.graphql(viewer)
    stats = srv.stats()
    assert stats["answers"]["secondary_cpu"] == 0 and stats["early_requests"] == 0


# ---------------------------------------------------------------------- query errors
def test_a_query_github_refuses_as_invalid_fails_loudly(emu_server_factory, redis_client, key_prefix):
    srv = emu_server_factory()
    client = make_client(srv.url, [EMU_TOKEN_COLLAB], redis_client, key_prefix)  # noqa: F405
    client.ensure_quota_records()
    srv.inject("validation_error")
    with pytest.raises(GitHubError) as err:
        client.graphql(viewer)
    assert type(err.value).__name__ == "GraphQLQueryError"
    assert "doesn't exist" in str(err.value)  # GitHub's own message
    ids = json.dumps([f"MDQ6VXNlcj{i}" for i in range(101)])
    with pytest.raises(GitHubError) as err:
        client.graphql(lambda e: (f"query {{ nodes(ids: {ids}) {{ id }} }}", {}))
    assert type(err.value).__name__ == "GraphQLQueryError" and "100" in str(err.value)
    assert len([e for e in srv.request_log() if e["path"] == "/graphql"]) == 2  # never retried


def test_partial_data_errors_stay_with_the_caller(emu_server_factory, emu_dataset, redis_client, key_prefix):
    srv = emu_server_factory()
    client = make_client(srv.url, [EMU_TOKEN_COLLAB], redis_client, key_prefix)  # noqa: F405
    client.ensure_quota_records()
    owner, name = listed_repo(emu_dataset).split("/")
    query = (
        f'query {{ repository(owner: "{owner}", name: "{name}") {{ name forks(first: 5) {{ nodes {{ id }} }} '
        "stargazers(first: 2) { nodes { login } } } }"
    )
    srv.inject("resource_limits")
    resp = client.graphql(lambda e: (query, {}))
    assert resp.data["repository"]["name"] == name
    assert {e.get("type") for e in resp.errors} == {"RESOURCE_LIMITS_EXCEEDED"}


def test_the_fetch_fails_without_retries_on_a_refused_query_or_a_foreign_host(monkeypatch):
    from airflow.providers.common.compat.sdk import AirflowFailException

    from github_collector.operators import FetchBatchOperator

    for exc in (
        errors.GraphQLQueryError("Field 'x' doesn't exist"),
        errors.ForeignHost("http://evil:80", "x"),
    ):

        def boom(self, context, exc=exc):
            raise exc

        monkeypatch.setattr(FetchBatchOperator, "_execute", boom)
        with pytest.raises(AirflowFailException, match=str(exc)[:30]):
            FetchBatchOperator(task_id="f", slot=0).execute({})


# ---------------------------------------------------------------------- all of it at once
def test_a_collection_under_random_limit_answers_is_exact_and_never_early(
    emu_server_factory, emu_dataset, redis_client, key_prefix
):
    from support import MemorySink, diff_against_truth

    from github_collector.collector import Collector, is_finished, new_batch_state
    from github_collector.queries import RELATIONS

    rates = {
        "graphql_rate_limited_stale_header": 0.05,
        "graphql_rate_limit_code": 0.05,
        "graphql_secondary_200": 0.08,
        "graphql_secondary_403": 0.08,
        "rest_secondary_403": 0.08,
        "rest_secondary_429": 0.08,
        "rest_primary": 0.05,
        "dropped_connection": 0.08,
    }
    srv = emu_server_factory(
        tokens=[*one_account(), TokenConfig(name="c", token=TOK_C, collaborator_repos=("*",))],
        answer_rates=rates,
        fault_seed=11,
        window_seconds=2,
        secondary_default_wait=0.5,
        secondary_retry_after=1,
        punish_early=True,  # a request sent too early gets a fresh secondary limit
    )
    client = make_client(
        srv.url,
        [TOK_A, TOK_B, TOK_C],
        redis_client,
        key_prefix,
        max_inline_wait=10,
        secondary_default_wait=0.5,
        max_secondary_tries=8,
    )
    names = emu_dataset.repo_names()
    sink = MemorySink()
    state = new_batch_state(names, list(RELATIONS))
    Collector(client, sink).run(state)
    assert is_finished(state)
    truth = emu_dataset.truth(list(RELATIONS), collaborator_repos=["*"], repos=names)
    assert diff_against_truth(truth, sink.users, sink.links, sink.repos) == []
    stats = srv.stats()
    assert sum(stats["answers"][k] for k in rates) >= 5  # the answers really came
    assert stats["early_requests"] == 0 and stats["answers"]["secondary_early"] == 0
    assert stats["foreign_requests_with_token"] == 0
