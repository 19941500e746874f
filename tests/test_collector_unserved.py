"""What GitHub will not serve is never dropped silently: deleted accounts, organisations
enforcing SAML, and GraphQL failures beside REST lists. Against the emulator, with real Redis."""

from __future__ import annotations

import itertools

import pytest
from support import MemorySink, diff_against_truth, make_client

from github_collector.collector import Collector, is_finished, new_batch_state
from github_collector.queries import RELATIONS
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset
from github_emulator import graphql_api as emulator_graphql
from github_emulator.encoding import iso

pytestmark = pytest.mark.integration
ALL = list(RELATIONS)
TOK = "tok-unserved-5c1e0a"


@pytest.fixture(scope="module")
def dataset():
    ds = build_dataset(DatasetSpec(seed=11, n_repos=8, n_users=900, max_per_repo=300))
    assert ds.deleted and ds.saml_orgs, "the dataset must hold deleted accounts and SAML organisations"
    return ds


@pytest.fixture()
def emulator(dataset):
    srv = EmulatorServer(
        dataset, EmulatorConfig(tokens=[TokenConfig(name="t", token=TOK, collaborator_repos=("*",))])
    )
    srv.start()
    yield srv
    srv.stop()


def spying(client) -> list[dict]:
    """Record the variables of every GraphQL query the client sends."""
    sent: list[dict] = []
    send = client.graphql

    def graphql(build, **kw):
        def recorded(with_email: bool):
            query, variables = build(with_email)
            sent.append(variables)
            return query, variables

        return send(recorded, **kw)

    client.graphql = graphql
    return sent


def collect(client, repos, relations=ALL, fresh=None):
    sink = MemorySink()
    state = new_batch_state(repos, relations)
    Collector(client, sink, profile_is_fresh=fresh).run(state)
    assert is_finished(state)
    return sink


def repos_with(dataset, pred) -> list[str]:
    return [
        n
        for n in dataset.repo_names()
        if (r := dataset.lookup_full_name(n)[0]) and r.kind == "ok" and pred(r)
    ]


def test_a_deleted_account_is_recorded_gone_once_and_not_asked_for_again(
    emulator, dataset, redis_client, key_prefix
):
    names = repos_with(dataset, lambda r: any(u in dataset.deleted for u, _ in r.contributors))
    client = make_client(emulator.url, [TOK], redis_client, key_prefix)
    sent = spying(client)
    sink = collect(client, names, ["contributors"])
    truth = dataset.truth(["contributors"], collaborator_repos=["*"], repos=names)
    assert truth["gone"]
    assert diff_against_truth(truth, sink.users, sink.links, sink.repos) == []
    for uid in truth["gone"]:
        assert sink.users[uid].get("gone") is True and sink.users[uid]["name"] is None
        node = sink.users[uid]["node_id"]
        asked = sum(node in ids for v in sent for k, ids in v.items() if k.startswith("ids"))
        assert asked == 1, f"deleted account {uid} asked {asked} times"  # NOT_FOUND is not transient
    assert all(s == "ok" for r in sink.repos.values() for s in r["relation_status"].values())

    # The next run does not ask again: the store says it is gone (as loader.fresh_profiles does).
    client2 = make_client(emulator.url, [TOK], redis_client, key_prefix)
    sent2 = spying(client2)
    collect(client2, names, ["contributors"], fresh=lambda ids: set(ids) & set(truth["gone"]))
    asked_again = {i for v in sent2 for k, ids in v.items() if k.startswith("ids") for i in ids}
    assert not asked_again & {sink.users[u]["node_id"] for u in truth["gone"]}


def test_forks_a_saml_organisation_owns_are_read_again_with_what_still_answers(
    emulator, dataset, redis_client, key_prefix
):
    names = repos_with(
        dataset, lambda r: any(dataset.repos[f].owner_id in dataset.saml_orgs for _, f in r.forks)
    )
    client = make_client(emulator.url, [TOK], redis_client, key_prefix)
    sink = collect(client, names, ["forkers"])
    truth = dataset.truth(["forkers"], collaborator_repos=["*"], repos=names)
    assert truth["saml_orgs"]
    # Every fork owner is there, the SAML organisations by id, login and type only.
    assert diff_against_truth(truth, sink.users, sink.links, sink.repos) == []
    for uid in truth["saml_orgs"]:
        assert sink.users[uid]["type"] == "Organization" and sink.users[uid]["login"]
        assert not sink.users[uid]["profile_complete"]
    for name in names:
        assert sink.repos[name]["relation_status"]["forkers"] == "ok"
        assert "forkers" in sink.repos[name]["listed_complete"]


def test_items_that_stay_unserved_make_their_list_partial_never_complete(
    emulator, dataset, redis_client, key_prefix, monkeypatch
):
    # An organisation that refuses even its login: the lean read cannot name the owner either.
    monkeypatch.setattr(emulator_graphql, "SAML_OPEN_FIELDS", frozenset({"__typename", "id"}))
    names = repos_with(
        dataset, lambda r: any(dataset.repos[f].owner_id in dataset.saml_orgs for _, f in r.forks)
    )
    client = make_client(emulator.url, [TOK], redis_client, key_prefix)
    sink = collect(client, names, ["forkers"])
    for name in names:
        repo = sink.repos[name]
        assert repo["relation_status"]["forkers"] == "partial"
        assert "forkers" in repo["unavailable_relations"] and "forkers" not in repo["listed_complete"]
        assert "SAML" in repo["detail"]
    # The forks GitHub did serve are all there.
    truth = dataset.truth(["forkers"], collaborator_repos=["*"], repos=names)
    want = {k for k in truth["repo_users"] if k[1] not in dataset.saml_orgs}
    assert want <= {(r, u) for r, u, _ in sink.links}


def test_a_graphql_failure_never_closes_a_rest_list(dataset, redis_client, key_prefix):
    # Every GraphQL answer loses one top-level field: the repositories' GraphQL lists end
    # unavailable, but the contributors come from REST and are read in full.
    cfg = EmulatorConfig(
        tokens=[TokenConfig(name="t", token=TOK, collaborator_repos=("*",))], fault_graphql_partial_rate=1.0
    )
    names = repos_with(dataset, lambda r: len(r.contributors) > 0)[:3]
    with EmulatorServer(dataset, cfg) as srv:
        client = make_client(srv.url, [TOK], redis_client, key_prefix)
        sink = collect(client, names, ALL)
    truth = dataset.truth(["contributors"], collaborator_repos=["*"], repos=names)
    got = {(r, u) for r, u, rel in sink.links if rel == "contributor"}
    assert got == set(truth["repo_users"])
    for name in names:
        status = sink.repos[name]["relation_status"]
        assert status["contributors"] == "ok", status
        assert {status[r] for r in ("forkers", "stargazers", "watchers")} <= {
            "unavailable",
            "ok",
            "empty",
            "unchanged",
        }


def test_resource_limits_make_the_next_query_smaller_and_the_collection_stays_exact(
    dataset, redis_client, key_prefix
):
    # GitHub nulls the expensive part of a query over its resource limits: asking the same
    # query again gets the same answer, a smaller one gets everything.
    cfg = EmulatorConfig(
        tokens=[TokenConfig(name="t", token=TOK, collaborator_repos=("*",))], resource_limit_nodes=300
    )
    names = dataset.repo_names()
    with EmulatorServer(dataset, cfg) as srv:
        client = make_client(srv.url, [TOK], redis_client, key_prefix)
        sent = spying(client)
        sink = collect(client, names)
        refused = srv.stats()["answers"].get("resource_limits", 0)
    truth = dataset.truth(ALL, collaborator_repos=["*"])
    assert diff_against_truth(truth, sink.users, sink.links, sink.repos) == []
    assert 1 <= refused <= 3, refused  # 1000 nodes, then 500, then 250: it fits
    repeats = sum(a == b for a, b in itertools.pairwise(sent))
    assert repeats == 0, "a query was sent again unchanged"


def test_a_hidden_list_is_read_to_its_end_by_the_token_that_sees_it(dataset, redis_client, key_prefix):
    # One token sees the stargazers of a few repositories, the other sees none. Which token
    # serves a page is up to the pool (the one with most quota left): a later page from the
    # one that cannot see the list comes back empty, which must never end the list.
    names = dataset.repo_names()
    seen_by_one = repos_with(dataset, lambda r: len(r.stars) > 100)[:3]
    tokens = [
        TokenConfig(name="sees", token=TOK, collaborator_repos=tuple(seen_by_one)),
        TokenConfig(name="blind", token=TOK + "-blind"),
    ]
    truth = dataset.truth(["stargazers"], collaborator_repos=seen_by_one, repos=names)
    with EmulatorServer(dataset, EmulatorConfig(tokens=tokens)) as srv:
        previous = None
        for full_refresh in (False, True):  # a full refresh starts with no token known blind
            client = make_client(srv.url, [TOK, TOK + "-blind"], redis_client, key_prefix)
            sink = MemorySink()
            state = new_batch_state(names, ["stargazers"], previous, full_refresh)
            Collector(client, sink).run(state)
            assert diff_against_truth(truth, sink.users, sink.links, sink.repos) == [], full_refresh
            for name in seen_by_one:
                repo = dataset.lookup_full_name(name)[0]
                stored = sink.repos[name]["relation_state"]["stargazers"]
                assert stored["status"] == "ok" and "stargazers" in sink.repos[name]["listed_complete"]
                assert stored["hwm"] == max(iso(t) for t, _ in repo.stars)
            previous = sink.repos
