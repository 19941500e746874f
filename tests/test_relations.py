"""Relations have a lifecycle, end to end through the collector: users leave a repository's
lists, incremental runs notice it from what they truly listed, a full refresh too,
and a user who comes back is current again. github_repo_user shows the current relations."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from e2e_harness import read_back
from fault_harness import ALL, InProcessRun, failures, set_connections
from support import diff_against_truth

from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.integration
TOKEN = "relations-token-5be3c0"


@pytest.fixture()
def world(fresh_db, key_prefix, monkeypatch):
    """A dataset of the test's own (it changes it), the emulator serving it, the connections."""
    dataset = build_dataset(DatasetSpec(seed=53, n_repos=3, n_users=300, max_per_repo=120))
    cfg = EmulatorConfig(tokens=[TokenConfig(name="t", token=TOKEN, collaborator_repos=("*",))])
    # The incremental mechanics alone: no scheduled re-listing (test_faults_months covers it).
    monkeypatch.setenv("GITHUB_REPO_USERS_RELIST_DAYS", "0")
    with EmulatorServer(dataset, cfg) as srv:
        set_connections(monkeypatch, github_url=srv.url, tokens=[TOKEN], pg_db=fresh_db[0], prefix=key_prefix)
        yield dataset, fresh_db[1]


def run(dataset, full_refresh: bool) -> None:
    conf = {"repositories": dataset.repo_names(), "batch_size": 2, "full_refresh": full_refresh}
    # Slots one after another: Airflow 2.11's operators do not run in threads.
    out = InProcessRun(f"rel-{uuid.uuid4().hex[:6]}", slots=2).run(conf, concurrent=False)
    assert out["commit"].state == "success", failures(out)


def current(dsn: str) -> tuple[dict, dict, dict]:
    """What is stored, with the users who still have a current relation (github_user keeps the
    profiles of users who left, whose relations say when)."""
    users, links, repos = read_back(dsn)
    related = {uid for _, uid, _ in links}
    return {u: p for u, p in users.items() if u in related}, links, repos


def lifecycle(dsn: str, repo_id: int, user_id: int, relation: str) -> tuple:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT first_seen_at, last_seen_at, removed_at FROM github_repo_user_relation"
            " WHERE repo_id = %s AND user_id = %s AND relation = %s",
            (repo_id, user_id, relation),
        ).fetchone()


def test_users_who_leave_are_removed_by_complete_listings_only_and_come_back(world):
    dataset, dsn = world
    run(dataset, full_refresh=False)
    assert diff_against_truth(dataset.truth(ALL, collaborator_repos=["*"]), *read_back(dsn)) == []

    repo = max((r for r in dataset.repos.values() if r.kind == "ok"), key=lambda r: len(r.stars))
    with dataset.lock:  # one stargazer unstars, one watcher unwatches
        starred = repo.stars.pop(0)
        watched = repo.watchers.pop(0)
    star_uid, watch_uid = starred[1], watched[1]

    # Incremental: stargazers are paged newest first down to the stored mark; no newcomer, yet
    # the count fell, so someone left and the list is read again in full. Watchers (a changed
    # count, no time to page by) are listed in full.
    seen_first = lifecycle(dsn, repo.id, star_uid, "stargazer")[0]
    run(dataset, full_refresh=False)
    links = current(dsn)[1]
    assert (repo.id, star_uid, "stargazer") not in links
    assert (repo.id, watch_uid, "watcher") not in links
    assert lifecycle(dsn, repo.id, watch_uid, "watcher")[2] is not None
    assert lifecycle(dsn, repo.id, star_uid, "stargazer")[2] is not None

    # A full refresh lists everything: the table is GitHub's current truth again.
    run(dataset, full_refresh=True)
    first, last, removed = lifecycle(dsn, repo.id, star_uid, "stargazer")
    assert removed is not None and last < removed and first == seen_first
    assert diff_against_truth(dataset.truth(ALL, collaborator_repos=["*"]), *current(dsn)) == []

    # The stargazer stars again: current again, first seen when it was first seen.
    with dataset.lock:
        repo.stars.append(starred)
    run(dataset, full_refresh=True)
    first, last, removed = lifecycle(dsn, repo.id, star_uid, "stargazer")
    assert (first, removed) == (seen_first, None) and last > first
    assert diff_against_truth(dataset.truth(ALL, collaborator_repos=["*"]), *current(dsn)) == []
