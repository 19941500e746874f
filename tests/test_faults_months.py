"""Thirty daily runs while users star, unstar, fork, delete forks, watch, stop watching and
change their profiles between runs. At the end the current relations and the profiles are
the emulator's truth exactly, and every removal was noticed within one re-listing period."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import psycopg
import pytest
from e2e_harness import read_back
from fault_harness import ALL, InProcessRun, failures, set_connections
from support import diff_against_truth

from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
TOKEN = "months-token-41c9aa"
DAYS = 30
EVERY = 7  # GITHUB_REPO_USERS_RELIST_DAYS
MAX_AGE_DAYS = 7  # GITHUB_REPO_USERS_PROFILE_MAX_AGE_HOURS / 24
# Activity stops this many days before the end: what changed last is then noticed too (a removal
# within one re-listing period, a profile once it is older than the max age).
QUIET = max(EVERY, MAX_AGE_DAYS) + 1
ROLE = {"contributors": "contributor", "forkers": "forker", "stargazers": "stargazer", "watchers": "watcher"}


@pytest.fixture()
def world(fresh_db, key_prefix, monkeypatch):
    dataset = build_dataset(
        DatasetSpec(
            seed=29, n_repos=6, n_users=400, max_per_repo=150, special_repos=False, deleted_accounts=0
        )
    )
    cfg = EmulatorConfig(tokens=[TokenConfig(name="t", token=TOKEN, collaborator_repos=("*",))])
    monkeypatch.setenv("GITHUB_REPO_USERS_RELIST_DAYS", str(EVERY))
    monkeypatch.setenv("GITHUB_REPO_USERS_PROFILE_MAX_AGE_HOURS", str(MAX_AGE_DAYS * 24))
    with EmulatorServer(dataset, cfg) as srv:
        set_connections(monkeypatch, github_url=srv.url, tokens=[TOKEN], pg_db=fresh_db[0], prefix=key_prefix)
        yield dataset, srv, fresh_db[1]


def current(dsn: str) -> tuple[dict, dict, dict]:
    users, links, repos = read_back(dsn)
    related = {uid for _, uid, _ in links}
    return {u: p for u, p in users.items() if u in related}, links, repos


def change(dataset, rng: random.Random, names: list[str]) -> list[tuple[int, int, str]]:
    """One day of activity on GitHub; returns the (repo_id, user_id, relation) links it ended."""
    ended: list[tuple[int, int, str]] = []
    for name in rng.sample(names, k=3):
        repo = dataset.lookup_full_name(name)[0]
        op = rng.choice(["star", "unstar", "swap", "fork", "unfork", "watch", "unwatch", "touch"])
        if op in ("star", "swap"):
            dataset.add_stargazers(name, rng.randint(1, 3))
        if op in ("unstar", "swap") and len(repo.stars) > 5:
            ended += [(repo.id, u, "stargazer") for u in dataset.remove_stargazers(name, 1)]
        if op == "fork":
            dataset.add_forks(name, 1)
        if op == "unfork" and len(repo.forks) > 2:
            ended += [(repo.id, u, "forker") for u in dataset.remove_forks(name, 1)]
        if op == "watch":
            dataset.add_watchers(name, 1)
        if op == "unwatch" and len(repo.watchers) > 2:
            ended += [(repo.id, u, "watcher") for u in dataset.remove_watchers(name, 1)]
        if op == "touch":
            members = [u for _, u in repo.stars] + [u for _, u in repo.watchers]
            for uid in rng.sample(members, k=min(3, len(members))):
                dataset.touch_user(dataset.login(uid))
    return ended


def removed_links(dsn: str) -> set[tuple[int, int, str]]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT repo_id, user_id, relation FROM github_repo_user_relation WHERE removed_at IS NOT NULL"
        ).fetchall()
    return {tuple(r) for r in rows}


def test_thirty_daily_runs_stay_true(world, figure):
    dataset, _, dsn = world
    rng = random.Random(7)
    names = dataset.repo_names()
    conf = {"repositories": names, "batch_size": 3}
    start = dt.date(2026, 11, 1)
    ended_on: dict[tuple[int, int, str], int] = {}
    noticed_on: dict[tuple[int, int, str], int] = {}
    units: list[int] = []
    for day in range(DAYS):
        if 0 < day < DAYS - QUIET:
            stored = set(current(dsn)[1])
            for key in change(dataset, rng, names):
                if key in stored:  # not one that joined and left between two runs
                    ended_on.setdefault(key, day)
        if day:  # a day passes for the stored profiles' age as it does on GitHub
            with psycopg.connect(dsn) as c:
                c.execute("UPDATE github_user SET profile_fetched_at = profile_fetched_at - interval '1 day'")
        when = dt.datetime.combine(start + dt.timedelta(days=day), dt.time(), dt.UTC)
        out = InProcessRun(f"m{day}-{uuid.uuid4().hex[:6]}", slots=2, logical_date=when).run(
            conf, concurrent=False
        )
        assert out["commit"].state == "success", failures(out)
        quota = out["commit"].result["quota"]  # what the fetches spent, as the client counted it
        units.append(int(quota.get("cost_core", 0)) + int(quota.get("cost_graphql", 0)))
        for key in removed_links(dsn) - set(noticed_on):
            noticed_on[key] = day

    truth = dataset.truth(ALL, collaborator_repos=["*"])
    problems = diff_against_truth(truth, *current(dsn))
    assert problems == [], "\n".join(problems)
    # Every link that ended and did not come back was noticed within one re-listing period.
    now_tied = {(r, u, ROLE[rel]) for (r, u), v in truth["repo_users"].items() for rel in v["relations"]}
    still_gone = set(ended_on) - now_tied
    late = {
        k: (ended_on[k], noticed_on.get(k))
        for k in still_gone
        if noticed_on.get(k, DAYS + EVERY) - ended_on[k] > EVERY
    }
    assert still_gone and late == {}
    lags = sorted(noticed_on[k] - ended_on[k] for k in still_gone)
    figure(
        "30 daily runs",
        repos=len(names),
        units_per_day=units,
        units_after_day_0=sum(units[1:]),
        removals=len(still_gone),
        removal_lag_days_max=max(lags),
        exact="yes",
    )
