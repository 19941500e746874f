"""The scheduled re-listing of a watcher list reads its pages at once, from the page boundaries
its last complete listing stored, and still gives exactly what reading one page after another
would: watchers who left (a boundary item among them) and joined are seen, and a boundary
GitHub no longer takes falls back to reading page by page. Against the emulator, real Redis."""

from __future__ import annotations

import pytest
from support import MemorySink, make_client

from github_collector.collector import Collector, is_finished, new_batch_state
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.integration
TOK = "tok-ahead-7d20b4"
WATCHERS = 430  # five pages of 100
DAY = 740_000


@pytest.fixture()
def world():
    ds = build_dataset(DatasetSpec(seed=5, n_repos=4, n_users=900, max_per_repo=100, special_repos=False))
    name = ds.repo_names()[0]
    repo = ds.lookup_full_name(name)[0]
    ds.add_watchers(name, WATCHERS - len(repo.watchers))
    srv = EmulatorServer(
        ds, EmulatorConfig(tokens=[TokenConfig(name="t", token=TOK, collaborator_repos=("*",))])
    )
    srv.start()
    yield ds, name, repo, srv
    srv.stop()


def counting(client) -> list[int]:
    """The connection pages of every GraphQL query the client sends."""
    sent: list[int] = []
    send = client.graphql

    def graphql(build, **kw):
        def recorded(with_email: bool):
            query, variables = build(with_email)
            sent.append(sum(1 for k in variables if k.endswith("_a")))
            return query, variables

        return send(recorded, **kw)

    client.graphql = graphql
    return sent


def run(client, name: str, previous: dict | None = None, relist: bool = False) -> MemorySink:
    sink = MemorySink()
    state = new_batch_state([name], ["watchers"], previous, day=DAY, relist=[name] if relist else [])
    Collector(client, sink).run(state)
    assert is_finished(state)
    return sink


def stored(sink: MemorySink, name: str) -> dict:
    rec = sink.repos[name]
    return {
        name: {"status": rec["status"], "repo_id": rec["repo_id"], "relation_state": rec["relation_state"]}
    }


def watcher_ids(sink: MemorySink) -> set[int]:
    return {u for (_, u, rel) in sink.links if rel in ("watchers", "watcher")}


def test_a_relisting_reads_ahead_from_stored_boundaries_and_sees_who_left(world, redis_client, key_prefix):
    ds, name, repo, srv = world
    client = make_client(srv.url, [TOK], redis_client, key_prefix)
    sent = counting(client)
    first = run(client, name)
    bounds = first.repos[name]["relation_state"]["watchers"]["bounds"]
    assert len(bounds) == 4 and watcher_ids(first) == {u for _, u in repo.watchers}
    assert max(sent) == 1  # with nothing stored, a list's pages come one after another

    # Nothing changed: all five pages ride with the summary, one query.
    sent.clear()
    again = run(client, name, stored(first, name), relist=True)
    assert sent == [5] and watcher_ids(again) == {u for _, u in repo.watchers}
    assert "watchers" in again.repos[name]["listed_complete"]

    # Watchers leave, one of them the last item of the second page (a stored boundary), and
    # others join: the pages up to that boundary are kept, the rest is read page by page.
    with ds.lock:
        gone = {repo.watchers[10][1], repo.watchers[199][1], repo.watchers[350][1]}
        repo.watchers = [w for w in repo.watchers if w[1] not in gone]
    ds.add_watchers(name, 3)
    sent.clear()
    changed = run(client, name, stored(again, name), relist=True)
    assert watcher_ids(changed) == {u for _, u in repo.watchers} and not gone & watcher_ids(changed)
    assert "watchers" in changed.repos[name]["listed_complete"]
    assert len(sent) == 4  # the summary's ride (pages 1-2 kept), then pages 3, 4 and 5 one by one

    # A departure that is no boundary keeps every page read at once (the pages overlap by one).
    with ds.lock:
        gone = {repo.watchers[120][1]}
        repo.watchers = [w for w in repo.watchers if w[1] not in gone]
    sent.clear()
    later = run(client, name, stored(changed, name), relist=True)
    assert len(sent) == 1 and watcher_ids(later) == {u for _, u in repo.watchers}


def test_a_boundary_github_refuses_falls_back_to_reading_page_by_page(world, redis_client, key_prefix):
    _, name, repo, srv = world
    client = make_client(srv.url, [TOK], redis_client, key_prefix)
    first = run(client, name)
    previous = stored(first, name)
    previous[name]["relation_state"]["watchers"]["bounds"][1] = "not-a-cursor"
    sent = counting(client)
    again = run(client, name, previous, relist=True)
    assert watcher_ids(again) == {u for _, u in repo.watchers}
    assert "watchers" in again.repos[name]["listed_complete"]
    assert again.repos[name]["status"] == "ok" and len(sent) > 1
