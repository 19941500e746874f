"""The stored users stay true between full refreshes: scheduled complete re-listings notice
swaps and removals, stale profiles of every stored user are fetched again, fork counts are
the direct forks, repositories that stop answering say so on their own row, anonymous
contributors are counted, and a failed plan or failed batches fail the commit for the right
reason without retries."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest
from e2e_harness import read_back
from fault_harness import ALL, InProcessRun, failures, set_connections
from support import diff_against_truth

from github_collector.collector import relist_phase
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.integration
TOKEN = "stays-true-token-7d1e02"
EVERY = 7


@pytest.fixture()
def world(fresh_db, key_prefix, monkeypatch):
    dataset = build_dataset(
        DatasetSpec(seed=61, n_repos=3, n_users=300, max_per_repo=120, anon_rate=1.0, special_repos=False)
    )
    cfg = EmulatorConfig(tokens=[TokenConfig(name="t", token=TOKEN, collaborator_repos=("*",))])
    monkeypatch.setenv("GITHUB_REPO_USERS_RELIST_DAYS", str(EVERY))
    with EmulatorServer(dataset, cfg) as srv:
        set_connections(monkeypatch, github_url=srv.url, tokens=[TOKEN], pg_db=fresh_db[0], prefix=key_prefix)
        yield dataset, fresh_db[1]


def on(day: int) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromordinal(day), dt.time(), dt.UTC)


def run(dataset, day: int, repos: list[str] | None = None) -> dict:
    conf = {"repositories": repos or dataset.repo_names(), "batch_size": 2}
    out = InProcessRun(f"st-{uuid.uuid4().hex[:6]}", slots=2, logical_date=on(day)).run(
        conf, concurrent=False
    )
    assert out["commit"].state == "success", failures(out)
    return out


def current(dsn: str) -> tuple[dict, dict, dict]:
    users, links, repos = read_back(dsn)
    related = {uid for _, uid, _ in links}
    return {u: p for u, p in users.items() if u in related}, links, repos


def query(dsn: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute(sql, args).fetchall()


def biggest(dataset):
    return max(dataset.repos.values(), key=lambda r: len(r.stars) if r.parent_id is None else -1)


def test_swaps_are_noticed_by_the_scheduled_relisting_on_the_repositorys_day(world):
    dataset, dsn = world
    repo = biggest(dataset)
    name = dataset.full_name(repo)
    phase = relist_phase(repo.id, EVERY)
    start = dt.date(2026, 11, 2).toordinal()
    start += (phase + 1 - start) % EVERY  # the day after the repository's phase day
    run(dataset, start)
    truth = lambda: dataset.truth(ALL, collaborator_repos=["*"])  # noqa: E731
    assert diff_against_truth(truth(), *current(dsn)) == []

    # One stargazer and one watcher leave while another joins each: the counts do not move.
    left_star = dataset.remove_stargazers(name, 1)[0]
    left_watch = dataset.remove_watchers(name, 1)[0]
    dataset.add_stargazers(name, 1)
    dataset.add_watchers(name, 1)
    day = start + 1
    while (day - phase) % EVERY:  # every day before the repository's re-listing day
        run(dataset, day)
        links = current(dsn)[1]
        assert (repo.id, left_watch, "watcher") in links  # unchanged count: not listed again
        day += 1
    assert day - start < EVERY
    run(dataset, day)  # its day: listed in full, whatever the counts
    links = current(dsn)[1]
    assert (repo.id, left_star, "stargazer") not in links
    assert (repo.id, left_watch, "watcher") not in links
    assert diff_against_truth(truth(), *current(dsn)) == []
    # Repositories are spread over the days: not every one was re-listed on that day.
    state = query(dsn, "SELECT repo_id, relation_state FROM github_repository")
    listed = {rid: {s.get("listed") for s in st.values()} for rid, st in state}
    assert day in listed[repo.id]


def test_stale_profiles_of_every_relation_are_fetched_again(world):
    dataset, dsn = world
    repo = biggest(dataset)
    phase = relist_phase(repo.id, EVERY)
    start = dt.date(2026, 11, 2).toordinal()
    start += (phase + 1 - start) % EVERY
    run(dataset, start)
    contributors = {u for u, _ in dataset.linked_contributors(repo)}
    star = next(u for _, u in repo.stars if u not in contributors)
    watcher = next(u for _, u in repo.watchers if u not in contributors)
    forker = next(
        o
        for o in (dataset.repos[f].owner_id for _, f in repo.forks)
        if o not in contributors and o >= 3_000_000
    )
    for uid in (star, watcher, forker):
        dataset.touch_user(dataset.login(uid))
    # A week and a day later by the stored profiles' clock; no list changed.
    with psycopg.connect(dsn) as c:
        c.execute("UPDATE github_user SET profile_fetched_at = profile_fetched_at - interval '8 days'")
    run(dataset, start + 1)
    truth = dataset.truth(ALL, collaborator_repos=["*"])
    assert diff_against_truth(truth, *current(dsn)) == []  # the touched profiles included
    stale = query(
        dsn,
        "SELECT count(*) FROM github_user WHERE gone_at IS NULL AND profile_fetched_at < now() - interval '1 day'",
    )
    assert stale == [(0,)]


def test_fork_counts_are_direct_forks_and_a_fork_without_forks_is_empty(world):
    dataset, dsn = world
    root = next(
        r for r in dataset.repos.values() if r.parent_id is None and dataset.network_count(r) > len(r.forks)
    )
    fork = next(dataset.repos[f] for _, f in root.forks if not dataset.repos[f].forks)
    names = [dataset.full_name(root), dataset.full_name(fork)]
    run(dataset, dt.date(2026, 11, 2).toordinal(), names)
    rows = dict(
        query(
            dsn,
            "SELECT repo_id, fork_count FROM github_repository WHERE repo_id = ANY(%s)",
            [root.id, fork.id],
        )
    )
    assert rows == {root.id: len(root.forks), fork.id: 0}
    _, _, repos = read_back(dsn)
    got = repos[names[1].lower()]
    assert got["relation_status"]["forkers"] == "empty"
    assert "forkers" not in got["unavailable_relations"]


def test_a_repository_that_stops_answering_says_so_on_its_row(world):
    dataset, dsn = world
    day = dt.date(2026, 11, 2).toordinal()
    run(dataset, day)
    repo = next(r for r in dataset.repos.values() if r.parent_id is None)
    with dataset.lock:  # gone (deleted or made private): 404, GraphQL NOT_FOUND
        dataset._by_name.pop((repo.owner_id, repo.name.lower()))
    run(dataset, day + 1)
    assert query(dsn, "SELECT status FROM github_repository WHERE repo_id = %s", repo.id) == [("not_found",)]


def test_anonymous_contributors_are_counted_on_the_repository(world):
    dataset, dsn = world
    run(dataset, dt.date(2026, 11, 2).toordinal())
    want = {
        r.id: len(r.anonymous) + max(0, len(r.contributors) - 500)
        for r in dataset.repos.values()
        if r.parent_id is None and r.contributors
    }
    got = dict(query(dsn, "SELECT repo_id, anonymous_contributors FROM github_repository"))
    assert want and any(want.values())
    assert {rid: got[rid] for rid in want} == want


def test_a_failed_plan_is_named_by_the_commit_and_failed_batches_are_not_retried(world):
    from airflow.providers.common.compat.sdk import AirflowFailException

    dataset, _ = world
    harness = InProcessRun(f"pf-{uuid.uuid4().hex[:6]}", slots=1)
    assert harness.plan({"repositories": ["not a repository"]}).state == "failed"
    commit = harness.commit()
    assert commit.state == "failed"
    assert "plan" in str(commit.error) and "flushed" not in str(commit.error)
    assert isinstance(commit.error, AirflowFailException)  # a retry cannot make the plan succeed

    harness = InProcessRun(f"bf-{uuid.uuid4().hex[:6]}", slots=1)
    assert harness.plan({"repositories": dataset.repo_names()}).state == "success"
    commit = harness.commit()  # no slot ran: every batch unfinished
    assert commit.state == "failed" and "did not finish" in str(commit.error)
    assert isinstance(commit.error, AirflowFailException)


def test_a_departure_that_moves_the_count_is_noticed_the_same_day(world):
    dataset, dsn = world
    repo = biggest(dataset)
    name = dataset.full_name(repo)
    phase = relist_phase(repo.id, EVERY)
    start = dt.date(2026, 11, 2).toordinal()
    start += (phase + 1 - start) % EVERY  # the next day is not its re-listing day
    run(dataset, start)
    left = dataset.remove_stargazers(name, 1)[0]
    dataset.add_stargazers(name, 2)  # the count grows: newest first finds 2 new, 1 too many
    left_fork = dataset.remove_forks(name, 1)
    run(dataset, start + 1)
    links = current(dsn)[1]
    assert (repo.id, left, "stargazer") not in links
    assert all((repo.id, uid, "forker") not in links for uid in left_fork)
    assert diff_against_truth(dataset.truth(ALL, collaborator_repos=["*"]), *current(dsn)) == []
