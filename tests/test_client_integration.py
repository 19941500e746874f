"""The GitHub client and collector against the in-process emulator, with real Redis."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time

import graphql
import pytest
from conftest import github_schema_real
from support import MemorySink, diff_against_truth, make_client

from github_collector.collector import Collector, is_finished, new_batch_state
from github_collector.errors import QuotaExhausted
from github_collector.queries import RELATIONS, sample_queries
from github_emulator import (
    SPECIAL_REPOS,
    DatasetSpec,
    EmulatorConfig,
    EmulatorServer,
    TokenConfig,
    build_dataset,
)

pytestmark = pytest.mark.integration
ALL = list(RELATIONS)
TOK1, TOK2 = "tok-integration-one-7f3a9c", "tok-integration-two-b81e2d"


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(DatasetSpec(seed=7, n_repos=10, n_users=1500, max_per_repo=450))


@pytest.fixture()
def emulator(dataset):
    names = dataset.repo_names()
    cfg = EmulatorConfig(
        tokens=[
            TokenConfig(name="t1", token=TOK1, collaborator_repos=tuple(names[:4])),
            TokenConfig(name="t2", token=TOK2),
        ]
    )
    srv = EmulatorServer(dataset, cfg).start()
    yield srv
    srv.stop()


def collect(client, repos, relations=ALL, previous=None, fresh=None):
    sink = MemorySink()
    state = new_batch_state(repos, relations, previous)
    Collector(client, sink, profile_is_fresh=fresh).run(state)
    assert is_finished(state)
    return sink, state


def test_full_collection_matches_ground_truth(emulator, dataset, redis_client, key_prefix):
    names = dataset.repo_names()
    client = make_client(emulator.url, [TOK1, TOK2], redis_client, key_prefix)
    sink, _ = collect(client, names)
    truth = dataset.truth(ALL, collaborator_repos=names[:4])
    assert diff_against_truth(truth, sink.users, sink.links, sink.repos) == []
    assert len(sink.users) > 300


def test_special_repos_yield_their_status_and_the_run_goes_on(emulator, redis_client, key_prefix):
    client = make_client(emulator.url, [TOK2], redis_client, key_prefix)
    sink, _ = collect(client, list(SPECIAL_REPOS.values()))
    got = {k: (v["status"], v["relation_status"]) for k, v in sink.repos.items()}
    assert got[SPECIAL_REPOS["renamed"]][0] == "moved"
    assert sink.repos[SPECIAL_REPOS["renamed"]]["full_name"] != SPECIAL_REPOS["renamed"]
    assert got[SPECIAL_REPOS["missing"]][0] == "not_found"
    assert got[SPECIAL_REPOS["blocked"]][0] == "blocked"
    assert got[SPECIAL_REPOS["tos"]][0] == "blocked"  # REST 403 with a block object
    assert sink.repos[SPECIAL_REPOS["tos"]]["detail"].startswith("HTTP 403: Repository access blocked")
    assert got[SPECIAL_REPOS["empty"]][1]["contributors"] == "empty"
    assert got[SPECIAL_REPOS["too_large"]][1]["contributors"] == "too_large"
    assert got[SPECIAL_REPOS["too_large"]][1]["forkers"] in ("ok", "empty")  # the rest still collected
    for key in ("restricted_404", "restricted_403", "restricted_empty"):
        status, rels = got[SPECIAL_REPOS[key]]
        assert status == "ok"
        assert rels["stargazers"] == rels["watchers"] == "restricted"
        assert {"stargazers", "watchers"} <= set(sink.repos[SPECIAL_REPOS[key]]["unavailable_relations"])
    # The other repos of the same batch were collected.
    assert any(lk[2] == "contributor" for lk in sink.links)


def _largest(dataset, relation_attr):
    best = max(dataset.repos_by_name().values(), key=lambda r: len(getattr(r, relation_attr)))
    return best


def test_cost_per_relation_is_at_most_pages_plus_points(emulator, dataset, redis_client, key_prefix):
    names = dataset.repo_names()
    collab = names[:4]
    for relation in ALL:
        truth = dataset.truth([relation], collaborator_repos=collab, repos=collab)
        before = emulator.stats()["cost_by_token"]
        lookups_before = sum(1 for e in emulator.request_log() if e["path"] == "/user" and e["token"] == "t1")
        client = make_client(emulator.url, [TOK1], redis_client, key_prefix + relation + ":")
        sink, _ = collect(client, collab, [relation])
        after = emulator.stats()["cost_by_token"]
        # GET /user names the token's account once per token (cached in Redis for a month): a
        # fixed unit per token, not part of what collecting costs
        user_lookups = sum(1 for e in emulator.request_log() if e["path"] == "/user" and e["token"] == "t1")
        assert user_lookups - lookups_before <= 1
        spent_core = (
            after["t1"]["core"] - before.get("t1", {}).get("core", 0) - (user_lookups - lookups_before)
        )
        spent_gql = after["t1"]["graphql"] - before.get("t1", {}).get("graphql", 0)
        per_repo = {}
        for (rid, _uid), _v in truth["repo_users"].items():
            per_repo[rid] = per_repo.get(rid, 0) + 1
        n_users = sum(per_repo.values())
        bound = sum(math.ceil(n / 100) for n in per_repo.values())
        summary = 1  # one query learns the ids, names and counts of up to 50 repos
        assert spent_core <= bound, (relation, spent_core, bound)
        assert spent_gql <= bound + summary, (relation, spent_gql, bound)
        assert n_users == len({(lk[0], lk[1]) for lk in sink.links})
        if n_users >= 200:
            assert (spent_core + spent_gql) / n_users <= 0.025, (relation, spent_core, spent_gql, n_users)


def test_second_collection_of_unchanged_repos_is_nearly_free(emulator, dataset, redis_client, key_prefix):
    names = dataset.repo_names()
    client = make_client(emulator.url, [TOK1], redis_client, key_prefix)
    first, _ = collect(client, names)
    before = emulator.stats()["cost_by_token"]["t1"]
    client2 = make_client(emulator.url, [TOK1], redis_client, key_prefix)
    second, _ = collect(client2, names, previous=first.repos, fresh=lambda ids: set(ids))
    after = emulator.stats()["cost_by_token"]["t1"]
    spent = after["core"] - before["core"] + after["graphql"] - before["graphql"]
    assert spent <= len(names) * len(ALL)  # the acceptance bound
    assert spent <= 2, spent  # what it really is: one summary query, 304s for contributors
    assert client2.stats.not_modified > 0
    # The unchanged contributor lists were still read (from the ETag cache) and staged again.
    assert {k for k in second.links if k[2] == "contributor"} == {
        k for k in first.links if k[2] == "contributor"
    }


def test_new_forks_are_fetched_newest_first_down_to_the_stored_mark(
    emulator, dataset, redis_client, key_prefix
):
    name = dataset.repo_names()[0]
    client = make_client(emulator.url, [TOK1], redis_client, key_prefix)
    first, _ = collect(client, [name], ["forkers"])
    dataset.add_forks(name, 3)
    before = emulator.stats()["cost_by_token"]["t1"]["graphql"]
    second, _ = collect(client, [name], ["forkers"], previous=first.repos)
    spent = emulator.stats()["cost_by_token"]["t1"]["graphql"] - before
    assert len(second.links) == 3
    assert not set(second.links) & set(first.links)
    assert spent <= 2  # summary + one page


def test_quota_exhaustion_raises_with_reset_and_resumes_without_refetching(dataset, redis_client, key_prefix):
    import time

    names = dataset.repo_names()
    cfg = EmulatorConfig(
        tokens=[
            TokenConfig(name="t1", token=TOK1, core_limit=4, graphql_limit=3, collaborator_repos=tuple(names))
        ],
        window_seconds=2,
    )
    with EmulatorServer(dataset, cfg) as srv:
        # max_inline_wait=0: every exhaustion is raised to the caller instead of slept through
        client = make_client(srv.url, [TOK1], redis_client, key_prefix, max_inline_wait=0)
        sink = MemorySink()
        state = new_batch_state(names, ALL)
        with pytest.raises(QuotaExhausted) as err:
            Collector(client, sink).run(state)
        windows = srv.stats()["tokens"]["t1"]
        # reset + 1 s (GitHub's reset is a whole second, as octokit pads it)
        pad = client.quota.reset_pad
        assert err.value.reset_at - pad in (windows["core"]["reset"], windows["graphql"]["reset"])
        assert err.value.reset_at > time.time() - 1
        assert sink.links and not is_finished(state)
        stops = 1
        for _ in range(500):  # resume from the stored state after each reset, as the deferred task does
            time.sleep(max(0.0, err.value.reset_at - time.time()) + 0.1)
            try:
                Collector(client, sink).run(state)
                break
            except QuotaExhausted as again:
                err = pytest.ExceptionInfo.from_exc_info((type(again), again, again.__traceback__))
                stops += 1
        assert is_finished(state) and stops > 2
        truth = dataset.truth(ALL, collaborator_repos=names)
        assert diff_against_truth(truth, sink.users, sink.links, sink.repos) == []
        ok_gets = [
            e["path"]
            for e in srv.request_log()
            if e["status"] == 200 and e["method"] == "GET" and e["path"] != "/rate_limit"  # free, re-read
        ]
        assert len(ok_gets) == len(set(ok_gets)), "a REST page was fetched twice"


def test_secondary_limit_retry_after_is_obeyed(dataset, redis_client, key_prefix):
    cfg = EmulatorConfig(
        tokens=[TokenConfig(name="t1", token=TOK1)],
        secondary_rest_points_per_minute=3,
        secondary_window_seconds=2,
        secondary_retry_after=2,
    )
    with EmulatorServer(dataset, cfg) as srv:
        client = make_client(srv.url, [TOK1], redis_client, key_prefix)
        client.rest(f"/users/{dataset.repo_names()[0].split('/')[0]}", conditional=False)
        for i in range(6):
            client.rest(f"/repos/{dataset.repo_names()[i % 3]}", conditional=False)
        log = [e for e in srv.request_log() if e["token"] == "t1"]
        hits = [i for i, e in enumerate(log) if e["status"] == 403]
        assert hits, "the test did not trigger the secondary limit"
        for i in hits:
            if i + 1 < len(log):
                assert log[i + 1]["t"] - log[i]["t"] >= 2.0 - 0.05, "retried before retry-after"
        assert client.stats.secondary_hits == len(hits)


def test_two_tokens_share_the_load_and_keep_their_reserve(dataset, redis_client, key_prefix, caplog):
    names = dataset.repo_names()
    cfg = EmulatorConfig(
        tokens=[
            TokenConfig(name="t1", token=TOK1, core_limit=30, graphql_limit=30, collaborator_repos=("*",)),
            TokenConfig(name="t2", token=TOK2, core_limit=30, graphql_limit=30, collaborator_repos=("*",)),
        ]
    )
    caplog.set_level(logging.DEBUG)
    with EmulatorServer(dataset, cfg) as srv:
        client = make_client(srv.url, [TOK1, TOK2], redis_client, key_prefix, reserve=10)
        sink = MemorySink()
        state = new_batch_state(names, ALL)
        with contextlib.suppress(QuotaExhausted):  # the point is where it stopped, not whether it finished
            Collector(client, sink).run(state)
        stats = srv.stats()
        for t in ("t1", "t2"):
            assert stats["cost_by_token"][t]["core"] + stats["cost_by_token"][t]["graphql"] > 0
            for res in ("core", "graphql"):
                assert stats["tokens"][t][res]["remaining"] >= 10, (t, res, stats["tokens"][t][res])
    # No token in any log line, Redis key or Redis value written by this test.
    text = caplog.text
    for key in redis_client.scan_iter(match=key_prefix + "*"):
        text += key.decode()
        kind = redis_client.type(key).decode()
        if kind == "string":
            text += redis_client.get(key).decode(errors="replace")
        elif kind == "hash":
            text += " ".join(
                v.decode(errors="replace") for v in redis_client.hvals(key) if not v.startswith(b"x")
            )
    assert TOK1 not in text and TOK2 not in text
    assert "integration" not in text


def test_every_query_the_client_sends_validates_against_githubs_schema(
    emulator, dataset, redis_client, key_prefix
):
    import json

    sent: list[dict] = []
    client = make_client(emulator.url, [TOK1, TOK2], redis_client, key_prefix)
    real_request = client.session.request

    def spy(method, url, **kw):
        if url.endswith("/graphql"):
            sent.append(json.loads(kw["data"]))
        return real_request(method, url, **kw)

    client.session.request = spy
    names = dataset.repo_names()
    collect(client, names)
    collect(client, names, previous=None)
    schema = github_schema_real()
    docs = {b["query"] for b in sent} | {q for q, _ in sample_queries()}
    assert len(docs) >= 5
    for doc in docs:
        errors = graphql.validate(schema, graphql.parse(doc))
        assert not errors, (errors[:3], doc[:300])


def test_rate_limit_reads_wait_for_the_tokens_lease_like_any_request(dataset, redis_client, key_prefix):
    """GET /rate_limit is free but still a request in flight: it waits while another worker
    (here: a lease taken directly) is sending with the same token, and skips a cooling token."""
    cfg = EmulatorConfig(
        tokens=[TokenConfig(name="t1", token=TOK1), TokenConfig(name="t2", token=TOK2)],
        secondary_max_concurrent=1,
    )
    with EmulatorServer(dataset, cfg) as srv:
        client = make_client(srv.url, [TOK1, TOK2], redis_client, key_prefix)
        fp1, fp2 = client.fingerprints
        other = client.quota.lease_token(fp1)  # another worker's request on t1
        assert other is not None and client.quota.lease_token(fp1, max_wait=0) is None
        client.quota.cool_down(fp2, time.time() + 30)  # t2 is resting after a secondary limit
        seeding = threading.Thread(target=client.ensure_quota_records)
        seeding.start()
        time.sleep(0.5)
        assert [e["token"] for e in srv.request_log()] == []  # t1 waits for its lease, t2 is skipped
        client.quota.release(other)
        seeding.join(timeout=30)
        assert not seeding.is_alive()
        # t1's account is learnt first (GET /user, under the same lease rule), then its record
        assert [(e["token"], e["path"]) for e in srv.request_log()] == [
            ("t1", "/user"),
            ("t1", "/rate_limit"),
        ]
        assert client.quota.state(fp1, "core") is not None and client.quota.state(fp2, "core") is None
        assert client.quota.lease_token(fp1, max_wait=0) is not None  # released once the record was stored
        assert srv.stats()["secondary_limit_hits"] == 0
