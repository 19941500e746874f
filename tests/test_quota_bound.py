"""Quota-bound work spends every budget there is: REST and GraphQL are separate budgets, so a
batch whose GraphQL budget is spent goes on with its REST contributor pages, and the other way
round, and waits only when neither can go on."""

from __future__ import annotations

import time

import pytest
from support import MemorySink, make_client

from github_collector.collector import Collector, new_batch_state
from github_collector.errors import QuotaExhausted
from github_collector.quota import QuotaState, fingerprint
from github_emulator import TokenConfig

pytestmark = pytest.mark.integration
TOKEN = "quota-bound-token-7d21"
PAGE = 2  # small pages: several of each list from the shared dataset


def _big_repos(dataset, n: int = 2) -> list[str]:
    """Repositories with several contributor pages and several fork pages (of PAGE items)."""
    names = set(dataset.repo_names())
    big = [
        dataset.full_name(r)
        for r in dataset.repos.values()
        if r.kind == "ok"
        and len(r.contributors) > PAGE
        and len(r.forks) > PAGE
        and dataset.full_name(r) in names
    ]
    assert len(big) >= n, "the dataset has no repository big enough for this test"
    return big[:n]


def _dry(store, fp: str, resource: str) -> float:
    """Spend a resource's window on paper: remaining 0 until a later window than the emulator's."""
    reset = int(time.time()) + 7200
    store.set_state(fp, resource, QuotaState(100, 0, 100, reset))
    return reset


def _started(
    emu_server_factory, redis_client, key_prefix, emu_dataset, relations=("contributors", "forkers")
):
    srv = emu_server_factory(tokens=[TokenConfig(name="t", token=TOKEN, collaborator_repos=("*",))])
    client = make_client(srv.url, [TOKEN], redis_client, key_prefix)
    repos = _big_repos(emu_dataset)
    state = new_batch_state(repos, list(relations))
    collector = Collector(client, MemorySink(), page_size=PAGE)
    collector.step(state)  # the repositories' summary (GraphQL)
    return srv, client, collector, state


def test_spent_graphql_goes_on_with_rest_contributor_pages(
    emu_server_factory, redis_client, key_prefix, emu_dataset
):
    srv, client, collector, state = _started(emu_server_factory, redis_client, key_prefix, emu_dataset)
    reset = _dry(client.quota, fingerprint(TOKEN), "graphql")
    before = len(srv.request_log())
    with pytest.raises(QuotaExhausted) as exhausted:
        for _ in range(100):
            collector.step(state)
    sent = srv.request_log()[before:]
    assert sent and {e["path"].split("?")[0].rsplit("/", 1)[-1] for e in sent} == {"contributors"}
    # every contributor page was read before waiting for GraphQL's reset
    assert all(r["streams"]["contributors"]["done"] for r in state["repos"].values())
    assert exhausted.value.resource == "graphql"
    assert exhausted.value.reset_at == reset + client.quota.reset_pad


def test_spent_rest_goes_on_with_graphql_profiles(emu_server_factory, redis_client, key_prefix, emu_dataset):
    """Contributor pages queue profile look-ups (GraphQL): with REST spent, those go out
    rather than waiting behind the next contributor page."""
    srv, client, collector, state = _started(
        emu_server_factory, redis_client, key_prefix, emu_dataset, relations=["contributors"]
    )
    collector.step(state)  # a first contributor page (REST): its users' profiles are queued
    assert state["pending_profiles"]
    reset = _dry(client.quota, fingerprint(TOKEN), "core")
    before = len(srv.request_log())
    with pytest.raises(QuotaExhausted) as exhausted:
        for _ in range(100):
            collector.step(state)
    sent = srv.request_log()[before:]
    assert sent and {e["path"] for e in sent} == {"/graphql"}
    assert state["pending_profiles"] == []
    assert not all(r["streams"]["contributors"]["done"] for r in state["repos"].values())
    assert exhausted.value.resource == "core"
    assert exhausted.value.reset_at == reset + client.quota.reset_pad


def test_contributor_pages_do_not_wait_for_the_summary(
    emu_server_factory, redis_client, key_prefix, emu_dataset
):
    """A contributors list needs only the repository's name: with GraphQL spent before a batch
    reads its summaries, the REST pages are read anyway. Their links wait in the state for the
    repository id the summary brings; no repository is recorded before its summary is read, and
    the links end up as those of a run that never waited."""
    srv = emu_server_factory(tokens=[TokenConfig(name="t", token=TOKEN, collaborator_repos=("*",))])
    client = make_client(srv.url, [TOKEN], redis_client, key_prefix)
    repos = _big_repos(emu_dataset)
    client.ensure_quota_records()
    _dry(client.quota, fingerprint(TOKEN), "graphql")
    sink = MemorySink()
    state = new_batch_state(repos, ["contributors"])
    collector = Collector(client, sink, page_size=PAGE)
    with pytest.raises(QuotaExhausted) as exhausted:
        for _ in range(100):
            collector.step(state)
    assert exhausted.value.resource == "graphql"
    assert srv.request_log() and not any(e["path"] == "/graphql" for e in srv.request_log())
    assert all(r["streams"]["contributors"]["done"] for r in state["repos"].values())
    assert all(r["repo_id"] is None for r in state["repos"].values())
    assert sink.links == {} and sink.repos == {}
    assert sink.users  # the contributors' list items are staged already

    # GraphQL back (a window later than the dry one: the store keeps the latest window)
    client.quota.set_state(fingerprint(TOKEN), "graphql", QuotaState(5000, 5000, 0, int(time.time()) + 10800))
    collector.run(state)
    assert all("early" not in r["streams"]["contributors"] for r in state["repos"].values())
    assert set(sink.repos) == set(repos)

    plain = MemorySink()
    Collector(client, plain, page_size=PAGE).run(new_batch_state(repos, ["contributors"]))
    assert sink.links and sink.links == plain.links
    assert {k: {**v, "listed_complete": sorted(v["listed_complete"])} for k, v in sink.repos.items()} == {
        k: {**v, "listed_complete": sorted(v["listed_complete"])} for k, v in plain.repos.items()
    }
